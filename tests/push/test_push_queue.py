"""The push queue on each backend: the store's table (SQLite, MariaDB) and Redis Streams.
Hand-off once per outbox row, leases, retries when due, the dead letter."""

from __future__ import annotations

from twisted.internet import reactor

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.push import store as push_store
from teamtalk_py.push.queue import GROUP, StoreQueue, StreamQueue
from teamtalk_py.shared_state import RedisBackend, SharedStateUnavailable
from teamtalk_py.store import accounts
from teamtalk_py.store.messages import NewMessage
from teamtalk_testing.faults import TcpProxy
from tests.cluster_support import scratch_redis, wait_until
from tests.msg_support import sleep
from tests.push.test_push_senders import job as make_job
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase

#: The Redis stream's lease is kept by Redis's own clock (XAUTOCLAIM's idle time), so
#: its tests wait in real time: a short lease.
STREAM_LEASE = 1.0
#: The store queue's lease and due times are read from the clock it is given: a lease
#: no loaded machine outlasts, and time moved on by the test instead of waited for.
STORE_LEASE = 60.0
JOB = make_job(created=1_700_000_000.0)


class ShiftedClock:
    """The reactor's time plus what the test has moved it on by."""

    def __init__(self) -> None:
        self.shift = 0.0

    def seconds(self) -> float:
        return reactor.seconds() + self.shift


class QueueTests:
    """Mixin: ``self.make_queue(consumer)`` gives a queue on this case's backend;
    ``self.lease`` is its lease and ``self.pass_time(s)`` lets ``s`` seconds go by."""

    lease: float

    async def outbox_row(self, node: str = "n1") -> int:
        """A stored message to user 2, who has a device token: its outbox row's id."""
        await self.database.write(accounts.set_device_token, 2, B.CLIENT_TYPE_IOS, "a1" * 32)
        await self.database.write(
            push_store.store_single_messages,
            [NewMessage(1, 2, B.MSG_TYPE_SINGLE_TEXT, b"x", 100)],
            node=node,
        )
        rows = await self.database.read(push_store.pending_outbox, node, 0, 10)
        return rows[-1].id

    async def test_a_round_reads_the_content_of_the_rows_it_decides_only(self):
        for user in (1, 2):
            await self.database.write(
                accounts.set_device_token, user, B.CLIENT_TYPE_IOS, f"{user}a" * 32
            )
        await self.database.write(
            push_store.store_single_messages,
            [
                NewMessage(1, 2, B.MSG_TYPE_SINGLE_TEXT, b"one", 100),
                NewMessage(2, 1, B.MSG_TYPE_SINGLE_TEXT, b"back", 100),
                NewMessage(1, 2, B.MSG_TYPE_SINGLE_TEXT, b"two", 101),
            ],
            node="n1",
        )
        full = await self.database.read(push_store.pending_outbox, "n1", 0, 10)
        self.assertEqual([r.content for r in full], [b"one", b"back", b"two"])
        coalesced = await self.database.read(push_store.outbox_round, "n1", 0, 10, True)
        self.assertEqual(coalesced.ids, [r.id for r in full])
        self.assertEqual(coalesced.decide, [full[1], full[2]])
        self.assertEqual(coalesced.facts.targets, {full[1].id: (1,), full[2].id: (2,)})
        self.assertIsNone(coalesced.queue_depth)  # not asked to count the queue
        every = await self.database.read(push_store.outbox_round, "n1", 0, 10, False)
        self.assertEqual(every.decide, full)
        self.assertEqual(set(every.facts.targets), {r.id for r in full})
        await self.database.write(push_store.delete_outbox, [r.id for r in full])
        empty = await self.database.read(push_store.outbox_round, "n1", 0, 10, True)
        self.assertEqual((empty.ids, empty.decide), ([], []))

    async def test_a_coalescing_batch_writes_the_newest_row_of_each_conversation(self):
        """With ``coalesce`` a 1:1 batch writes one outbox row per conversation, its
        newest message (the round would push only that one); without, one per message."""
        for user in (1, 2):
            await self.database.write(
                accounts.set_device_token, user, B.CLIENT_TYPE_IOS, f"{user}a" * 32
            )
        batch = [
            NewMessage(1, 2, B.MSG_TYPE_SINGLE_TEXT, b"one", 100),
            NewMessage(2, 1, B.MSG_TYPE_SINGLE_TEXT, b"back", 100),
            NewMessage(1, 2, B.MSG_TYPE_SINGLE_TEXT, b"two", 101),
            NewMessage(1, 3, B.MSG_TYPE_SINGLE_TEXT, b"no token", 101),
        ]
        accepted = await self.database.write(
            push_store.store_single_messages, batch, node="n1", coalesce=True
        )
        self.assertEqual(len(accepted), 4)  # every message stored
        rows = await self.database.read(push_store.pending_outbox, "n1", 0, 10)
        self.assertEqual(
            sorted((r.from_id, r.to_id, r.msg_id, r.content) for r in rows),
            [(1, 2, 3, b"two"), (2, 1, 2, b"back")],  # ids per user pair
        )
        await self.database.write(push_store.delete_outbox, [r.id for r in rows])
        await self.database.write(push_store.store_single_messages, batch, node="n1")
        every = await self.database.read(push_store.pending_outbox, "n1", 0, 10)
        self.assertEqual([r.content for r in every], [b"one", b"back", b"two"])

    async def test_a_round_counts_the_store_queue_and_takes_only_what_fits(self):
        """Asked with the queue's limit, the round's read counts the ``push_queue`` jobs
        waiting and takes only as many outbox rows as fit under the limit; none once the
        limit is reached."""
        await self.database.write(accounts.set_device_token, 2, B.CLIENT_TYPE_IOS, "a1" * 32)
        await self.database.write(
            push_store.store_single_messages,
            [NewMessage(1, 2, B.MSG_TYPE_SINGLE_TEXT, f"m{i}".encode(), 100) for i in range(3)],
            node="n1",
        )
        ids = [r.id for r in await self.database.read(push_store.pending_outbox, "n1", 0, 10)]
        first = await self.database.read(push_store.outbox_round, "n1", 0, 10, False, 2)
        self.assertEqual((first.queue_depth, first.ids), (0, ids[:2]))
        await self.database.write(
            push_store.hand_off_to_queue, [(ids[0], [("apns", JOB.to_json())])], 0, 0
        )
        second = await self.database.read(push_store.outbox_round, "n1", 0, 10, False, 2)
        self.assertEqual((second.queue_depth, second.ids), (1, ids[1:2]))
        await self.database.write(
            push_store.hand_off_to_queue, [(ids[1], [("apns", JOB.to_json())])], 0, 0
        )
        full = await self.database.read(push_store.outbox_round, "n1", 0, 10, False, 2)
        self.assertEqual((full.queue_depth, full.ids, full.decide), (2, [], []))

    async def take(self, queue, jobs) -> list:
        """Hand a new outbox row's jobs off; the jobs as ``queue`` gets them to send
        (leased by the hand-off itself, or claimed from the stream)."""
        handed = await queue.hand_off([(await self.outbox_row(), jobs)])
        return handed.leased or await queue.claim(10)

    async def test_an_outbox_row_is_queued_once_even_if_two_nodes_hand_it_off(self):
        first, second = self.make_queue("a"), self.make_queue("b")
        outbox_id = await self.outbox_row()
        handed = await first.hand_off([(outbox_id, [JOB])])
        self.assertEqual(handed.queued, [outbox_id])
        self.assertEqual((await second.hand_off([(outbox_id, [JOB])])).queued, [])
        self.assertEqual(await self.database.read(push_store.outbox_size), 0)
        self.assertEqual(await first.depth(), 1)
        (claimed,) = handed.leased or await first.claim(10)
        self.assertEqual((claimed.job, claimed.attempts), (JOB, 0))
        self.assertEqual(await second.claim(10), [])

    async def test_a_job_held_past_its_lease_is_taken_over(self):
        first, second = self.make_queue("a"), self.make_queue("b")
        self.assertEqual(len(await self.take(first, [JOB])), 1)
        self.assertEqual(await second.claim(10), [])
        await self.pass_time(self.lease + 0.1)
        (taken,) = await second.claim(10)
        await second.settle([taken], [], [])
        self.assertEqual(await first.depth(), 0)

    async def test_a_retry_comes_back_when_due_with_its_attempt_count(self):
        queue = self.make_queue("a")
        (claimed,) = await self.take(queue, [JOB])
        await queue.settle([], [(claimed, self.lease, "429 TooManyRequests")], [])
        self.assertEqual(await queue.claim(10), [])
        self.assertEqual(await queue.depth(), 1)
        await self.pass_time(self.lease + 0.1)
        (again,) = await queue.claim(10)
        self.assertEqual((again.job, again.attempts), (JOB, 1))

    async def test_a_dead_job_leaves_the_queue_for_the_dead_letter(self):
        queue = self.make_queue("a")
        first, second = await self.take(queue, [JOB, make_job(key="other")])
        await queue.settle([first], [], [(second, "400 BadTopic")])
        self.assertEqual(await queue.depth(), 0)
        self.assertEqual(await self.dead_letters(), ["other"])


class StoreQueueTests(QueueTests):
    lease = STORE_LEASE

    def make_queue(self, consumer: str) -> StoreQueue:
        if not hasattr(self, "clock"):
            self.clock = ShiftedClock()
        return StoreQueue(self.database, self.clock, self.lease)

    async def pass_time(self, seconds: float) -> None:
        self.clock.shift += seconds

    async def dead_letters(self) -> list[str]:
        rows = await self.database.read(push_store.dead_letters)
        return [job_json.split('"key":"')[1].split('"')[0] for _, job_json, _, _ in rows]


class SQLiteStoreQueueTests(StoreQueueTests, SQLiteStoreCase):
    pass


class MariaDBStoreQueueTests(StoreQueueTests, MariaDBStoreCase):
    pass


class RedisStreamQueueTests(QueueTests, SQLiteStoreCase):
    async def setUp(self) -> None:
        await super().setUp()
        self.scratch_redis = scratch_redis()
        self.addCleanup(self.scratch_redis.drop)
        self.redis = RedisBackend(reactor, self.scratch_redis.url)
        await self.redis.start()
        self.addCleanup(self.redis.stop)
        await self.make_queue("setup").start()

    lease = STREAM_LEASE

    def make_queue(self, consumer: str) -> StreamQueue:
        return StreamQueue(self.redis, self.database, reactor, self.lease, consumer)

    async def pass_time(self, seconds: float) -> None:
        await sleep(seconds)

    async def dead_letters(self) -> list[str]:
        entries = self.scratch_redis.redis.xrange(self.redis.key("push:dead"))
        return [
            job_json.decode().split('"key":"')[1].split('"')[0]
            for _, fields in entries
            for name, job_json in fields.items()
            if name == b"job"
        ]

    async def test_a_claim_whose_reply_was_lost_is_taken_back_at_once(self):
        """The claim's XREADGROUP reached Redis but its reply did not come back (the
        connection went, or the shared state's deadline passed first): the entries are
        pending to this consumer and nobody sends them. The next claim takes them back
        from the consumer's own pending list, not after the lease (a minute here)."""
        scratch = self.scratch_redis
        proxy = TcpProxy(scratch.host, scratch.port)
        proxy.open()
        self.addCleanup(proxy.stop)
        backend = RedisBackend(reactor, f"redis://127.0.0.1:{proxy.port}/0?prefix={scratch.prefix}")
        await backend.start()
        self.addCleanup(backend.stop)
        queue = StreamQueue(backend, self.database, reactor, 60.0, "a")
        await queue.hand_off([(await self.outbox_row(), [JOB])])
        # What a delivered claim leaves in Redis: the entry pending to consumer "a" ...
        scratch.redis.xreadgroup(GROUP, "a", {self.redis.key("push:jobs"): ">"}, count=10)
        # ... and a claim of "a" that fails with the connection instead of answering.
        proxy.close()
        with self.assertRaises(SharedStateUnavailable):
            await queue.claim(10)
        proxy.open()
        await wait_until(lambda: backend.healthy, 10, "Redis through the proxy again")
        (again,) = await queue.claim(10)
        self.assertEqual((again.job, again.attempts), (JOB, 0))
        self.assertEqual(await queue.claim(10), [])  # given to the worker once
        await queue.settle([again], [], [])
        self.assertEqual(await queue.depth(), 0)
        self.assertEqual(await queue.claim(10), [])
        self.flushLoggedErrors()
