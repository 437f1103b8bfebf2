"""The push worker's limits end to end: a message stored by the running server, its push
through the worker to the local APNs stand-in (tests/push_support.py), while that
stand-in throttles, fails or does not answer yet:

* ``push.max_age``: a push still unsent at that age is expired (counted, logged, gone
  from the queue), never sent;
* ``push.max_queue``: past it new pushes wait in the outbox (none dropped, one log line)
  and each arrives once when APNs answers again;
* ``push.max_attempts``: a push that fails that often goes to the dead letter (the
  ``push_queue`` table's dead state; Redis Streams' ``push:dead``) and is not sent again.
"""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.task import LoopingCall

from teamtalk_client import encrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.push import store as push_store
from teamtalk_py.push.jobs import PushJob
from teamtalk_py.push.worker import TICK
from teamtalk_py.store.messages import NewMessage
from tests.cluster_support import scratch_redis, wait_until
from tests.msg_support import IOS, sleep
from tests.push.test_push import BOB_TOKEN, SETTLE, PushTestCase
from tests.push.test_push_queue import ShiftedClock
from tests.server.test_shared_state import LogLines

MAX_AGE = 600.0
#: Long enough for a retry that should not come to have come (retry_cap is 0.5 s) and
#: for a tick of the worker to have run.
NO_MORE = SETTLE + 2 * TICK
#: Every request answered with an error, for the rest of the test.
FOREVER = 10**9


class LimitsTestCase(PushTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.push = self.server.service("push")
        self.log = LogLines(self, "teamtalk.push")
        await self.token("bob", IOS, BOB_TOKEN)

    def count(self, outcome: str) -> int:
        return self.push.counters.get("apns", outcome)

    async def queue_emptied(self) -> None:
        """The queue holds no job (the last settle may still be on its way)."""
        for _ in range(100):
            if await self.push.queue.depth() == 0:
                return
            await sleep(0.05)
        self.assertEqual(await self.push.queue.depth(), 0)


class ExpiryTests(LimitsTestCase):
    # Attempts enough that only the age can end the retries.
    push_overrides = {"push.max_age": MAX_AGE, "push.max_attempts": FOREVER}

    async def test_a_push_retried_past_max_age_expires_unsent(self):
        """APNs throttles every request: the push is retried while younger than max_age;
        once the worker's clock is past it, it is expired with a log line, counted,
        leaves the queue and is never tried again."""
        clock = ShiftedClock()
        self.push.worker.clock = clock
        self.apns.throttle = FOREVER
        alice = await self.login("alice")
        await alice.send_text(self.ids["bob"], "still there?")
        await wait_until(lambda: self.count("retried") >= 2, 10, "two retries")
        self.assertEqual(self.count("expired"), 0)  # younger than max_age: kept
        self.assertEqual(await self.push.queue.depth(), 1)
        clock.shift += MAX_AGE + 1
        await wait_until(lambda: self.count("expired") == 1, 10, "the expiry")
        tried = len(self.apns.accepted)
        await sleep(NO_MORE)
        self.assertEqual(len(self.apns.accepted), tried)  # not tried again
        self.assertEqual({n.status for n in self.apns.accepted}, {429})
        self.assertEqual(self.apns.delivered(), [])
        await self.queue_emptied()
        self.assertEqual((self.count("sent"), self.count("failed"), self.count("expired")),
                         (0, 0, 1))  # fmt: skip
        (line,) = self.log.matching(" expired after ")
        self.assertIn(f"to user {self.ids['bob']} via apns expired after", line)

    async def test_a_message_older_than_max_age_when_the_worker_gets_to_it_is_not_pushed(self):
        """An outbox row the worker reaches only after max_age (its node was down that
        long, and another takes its rows over): decided, expired at once, never sent."""
        aes_key = self.server.config.msg.aes_key
        old = int(time.time() - MAX_AGE - 60)
        message = NewMessage(self.ids["alice"], self.ids["bob"], B.MSG_TYPE_SINGLE_TEXT,
                             encrypt_text("old news", aes_key), old)  # fmt: skip
        await self.store().write(self.push.outbox.store_single_messages, [message])
        self.push.outbox.kick()
        await wait_until(lambda: self.count("expired") == 1, 10, "the expiry")
        await sleep(NO_MORE)
        self.assertEqual(self.apns.accepted, [])
        self.assertEqual((self.count("queued"), self.count("sent")), (1, 0))
        await self.queue_emptied()
        self.assertEqual(await self.store().read(push_store.outbox_size), 0)
        self.assertEqual(len(self.log.matching(" expired after ")), 1)


class BackPressureTests(LimitsTestCase):
    # Every message pushed (no coalescing), so each one can be counted.
    push_overrides = {"push.max_queue": 2, "push.coalesce_window": 0}

    async def test_past_max_queue_pushes_wait_in_the_outbox_and_each_arrives_once(self):
        """APNs takes the requests but does not answer: two pushes are queued (being
        sent), the other four wait in the outbox, the queue never holds more than two,
        one log line says so; once APNs answers, all six arrive, each once."""
        depths: list[int] = []

        def sample() -> None:
            self.push.queue.depth().addCallback(depths.append)

        sampler = LoopingCall(sample)
        sampler.clock = reactor
        sampler.start(0.02)
        self.addCleanup(lambda: sampler.running and sampler.stop())
        self.apns.hold = True
        alice = await self.login("alice")
        texts = [f"message {i}" for i in range(6)]
        for text in texts:
            ack = await alice.send_text(self.ids["bob"], text)
            self.assertGreater(ack.msg_id, 0)
        await wait_until(lambda: len(self.apns.held) == 2, 10, "two pushes at APNs")
        await wait_until(lambda: self.log.matching("the limit"), 10, "the hold-back line")
        await sleep(NO_MORE)  # ticks go by: nothing more is fed while APNs is silent
        self.assertEqual(len(self.apns.held), 2)
        self.assertEqual(await self.push.queue.depth(), 2)
        self.assertEqual(await self.store().read(push_store.outbox_size), 4)
        self.assertEqual(self.count("queued"), 2)

        self.assertEqual(self.apns.release(), 2)
        delivered = await self.pushes(self.apns, 6, timeout=30)
        sampler.stop()
        self.assertEqual(sorted(n.body["aps"]["alert"]["body"] for n in delivered),
                         sorted(f"Alice:{text}" for text in texts))  # fmt: skip
        self.assertEqual(len({n.headers["apns-id"] for n in delivered}), 6)
        self.assertEqual(len(self.apns.accepted), 6)  # none sent twice
        await wait_until(lambda: self.count("sent") == 6, 10, "six settled")
        self.assertEqual((self.count("queued"), self.count("failed")), (6, 0))
        await self.queue_emptied()
        self.assertEqual(await self.store().read(push_store.outbox_size), 0)
        self.assertTrue(depths)
        self.assertLessEqual(max(depths), 2, depths)
        # The end of the hold-back is said by the next round that finds the outbox empty.
        caught_up = "held back in the outbox are all queued"
        await wait_until(lambda: self.log.matching(caught_up), 10, "the caught-up line")
        self.assertEqual(len(self.log.matching("the limit")), 1, self.log.lines)
        self.assertEqual(len(self.log.matching(caught_up)), 1, self.log.lines)


class DeadLetterTests(LimitsTestCase):
    push_overrides = {"push.max_attempts": 2}

    async def dead_letters(self) -> list[tuple[PushJob, int, str]]:
        """(job, attempts, last error) of each dead-lettered push."""
        rows = await self.store().read(push_store.dead_letters)
        return [(PushJob.from_json(job), attempts, error) for _, job, attempts, error in rows]

    async def test_a_push_failing_max_attempts_times_is_dead_lettered_and_not_sent_again(self):
        """APNs answers 503 to every request: after max_attempts (2) tries the push is in
        the dead letter with its attempts and last error, counted failed, logged, out of
        the queue, and never tried a third time."""
        self.apns.unavailable = FOREVER
        alice = await self.login("alice")
        await alice.send_text(self.ids["bob"], "anyone?")
        await wait_until(lambda: self.count("failed") == 1, 10, "the dead letter")
        await sleep(NO_MORE)
        self.assertEqual([n.status for n in self.apns.accepted], [503, 503])
        self.assertEqual(len({n.headers["apns-id"] for n in self.apns.accepted}), 1)
        self.assertEqual(
            {k: self.count(k) for k in ("queued", "sent", "retried", "failed", "expired")},
            {"queued": 1, "sent": 0, "retried": 1, "failed": 1, "expired": 0},
        )
        await self.queue_emptied()
        ((job, attempts, error),) = await self.dead_letters()
        self.assertEqual((job.token, job.user_id, job.flash), (BOB_TOKEN, self.ids["bob"],
                                                               "Alice:anyone?"))  # fmt: skip
        self.assertEqual((attempts, error), (2, "503 ServiceUnavailable"))
        (line,) = self.log.matching("moved to the dead letter")
        self.assertIn("failed after 2 attempts (503 ServiceUnavailable)", line)


class RedisStreamsDeadLetterTests(DeadLetterTests):
    """The same with the queue in Redis Streams: the dead letter is ``push:dead``."""

    async def _set_up(self) -> None:
        self.redis = scratch_redis()
        self.addCleanup(self.redis.drop)
        self.push_overrides = {**DeadLetterTests.push_overrides, "store.redis": self.redis.url}
        await super()._set_up()
        self.assertEqual(self.push.queue.name, "redis")

    async def dead_letters(self) -> list[tuple[PushJob, int, str]]:
        entries = self.redis.redis.xrange(self.push.queue.dead)
        dead = []
        for _, raw in entries:
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            dead.append((PushJob.from_json(fields["job"]), int(fields["attempts"]),
                         fields["error"]))  # fmt: skip
        return dead
