"""The push queue on each backend: the store's table (SQLite, MariaDB) and Redis Streams.
Hand-off once per outbox row, leases, retries when due, the dead letter."""

from __future__ import annotations

from twisted.internet import reactor

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.push import store as push_store
from teamtalk_py.push.queue import StoreQueue, StreamQueue
from teamtalk_py.shared_state import RedisBackend
from teamtalk_py.store import accounts
from teamtalk_py.store.messages import NewMessage
from tests.cluster_support import scratch_redis
from tests.msg_support import sleep
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase
from tests.test_push_senders import job as make_job

LEASE = 1.0
JOB = make_job(created=1_700_000_000.0)


class QueueTests:
    """Mixin: ``self.make_queue(consumer)`` gives a queue on this case's backend."""

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
        await sleep(LEASE + 0.1)
        (taken,) = await second.claim(10)
        await second.settle([taken], [], [])
        self.assertEqual(await first.depth(), 0)

    async def test_a_retry_comes_back_when_due_with_its_attempt_count(self):
        queue = self.make_queue("a")
        (claimed,) = await self.take(queue, [JOB])
        await queue.settle([], [(claimed, 1.0, "429 TooManyRequests")], [])
        self.assertEqual(await queue.claim(10), [])
        self.assertEqual(await queue.depth(), 1)
        await sleep(1.1)
        (again,) = await queue.claim(10)
        self.assertEqual((again.job, again.attempts), (JOB, 1))

    async def test_a_dead_job_leaves_the_queue_for_the_dead_letter(self):
        queue = self.make_queue("a")
        first, second = await self.take(queue, [JOB, make_job(key="other")])
        await queue.settle([first], [], [(second, "400 BadTopic")])
        self.assertEqual(await queue.depth(), 0)
        self.assertEqual(await self.dead_letters(), ["other"])


class StoreQueueTests(QueueTests):
    def make_queue(self, consumer: str) -> StoreQueue:
        return StoreQueue(self.database, reactor, LEASE)

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

    def make_queue(self, consumer: str) -> StreamQueue:
        return StreamQueue(self.redis, self.database, reactor, LEASE, consumer)

    async def dead_letters(self) -> list[str]:
        entries = self.scratch_redis.redis.xrange(self.redis.key("push:dead"))
        return [
            job_json.decode().split('"key":"')[1].split('"')[0]
            for _, fields in entries
            for name, job_json in fields.items()
            if name == b"job"
        ]
