"""A backlog of pushes bigger than one decision round, piled up while TeamTalk's
push_server is down, reaches it exactly once when it comes back: on SQLite, on MariaDB,
and on MariaDB with the queue in Redis Streams.

The push_server sender answers "retry" at once while its link is down, so a round of a
few hundred leased jobs is tried and put back in one go. That once recursed per job,
overflowed the stack, and left the jobs caught in it marked as being sent for good: the
bench's drain of 5000 piled-up pushes stopped short (issue 15).
"""

from __future__ import annotations

import json
import time
from collections import Counter

from twisted.internet import reactor

from teamtalk_client import encrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.push import store as push_store
from teamtalk_py.push.worker import OUTBOX_BATCH
from teamtalk_py.store import accounts
from teamtalk_py.store.messages import NewMessage
from tests.cluster_support import scratch_database, scratch_redis, wait_until
from tests.msg_support import IOS, MsgTestCase, sleep
from tests.push_support import FakePushServer

SENDERS = ("alice", "bob", "carol")
RECEIVERS = ("dave", "erin")
#: More than two decision rounds; the same few words again and again, as people write.
MESSAGES = 2 * OUTBOX_BATCH + 200
WORDS = ("ok", "on my way", "ok", "see you at 6", "👍")


class BacklogTests:
    """Mixin: ``backend_overrides()`` names the store (and Redis) of the server."""

    queue_name = "store"

    def backend_overrides(self) -> dict:
        return {}

    async def _set_up(self) -> None:
        self.push_server = FakePushServer()
        # A port for the push_server, closed until the backlog has piled up.
        self.push_server.listen(reactor)
        self.push_port = self.push_server.port.getHost().port
        await self.push_server.port.stopListening()
        self.addCleanup(lambda: self.push_server.port.stopListening())
        self.overrides = {
            **self.backend_overrides(),
            "push.push_server": f"127.0.0.1:{self.push_port}",
            "push.coalesce_window": 0,  # every message pushed: each one is counted
            "push.retry_base": 0.1,
            "push.retry_cap": 0.5,
            "push.max_in_flight": 64,
        }
        await super()._set_up()
        self.ids = {name: await self.add_user(name, nick=name.capitalize()) for name in SENDERS}
        store = self.server.service("store")
        for name in RECEIVERS:
            self.ids[name] = await self.add_user(name)
            token = f"{self.ids[name]:064x}"
            await store.write(accounts.set_device_token, self.ids[name], IOS, token)

    async def test_a_backlog_bigger_than_a_round_is_pushed_once_each(self):
        push = self.server.service("push")
        expected: Counter[tuple[int, int, str]] = Counter()
        batch = []
        now = int(time.time())
        for i in range(MESSAGES):
            sender, receiver = SENDERS[i % len(SENDERS)], RECEIVERS[i % len(RECEIVERS)]
            text = WORDS[i % len(WORDS)]
            content = encrypt_text(text, self.server.config.msg.aes_key)
            batch.append(
                NewMessage(self.ids[sender], self.ids[receiver], B.MSG_TYPE_SINGLE_TEXT,
                           content, now)
            )  # fmt: skip
            expected[(self.ids[sender], self.ids[receiver], f"{sender.capitalize()}:{text}")] += 1
        # One group commit of them all, as the writer makes under load, through the store
        # function the msg service uses (messages and outbox rows in one transaction).
        await self.server.service("store").write(push.outbox.store_single_messages, batch)
        push.outbox.kick()
        await wait_until(
            lambda: push.counters.get("push_server", "retried") >= MESSAGES,
            30,
            "every push tried once while push_server is down",
        )
        self.assertEqual(push.counters.get("push_server", "sent"), 0)
        self.push_server.listen(reactor, self.push_port)
        # The link comes back after the reference's back-off (2, 4, 8 … s).
        await wait_until(lambda: len(self.push_server.requests) >= MESSAGES, 90, "every push")
        await sleep(1.0)  # anything sent twice would have come by now
        got = Counter(
            (json.loads(r.data)["from_id"], info.user_id, r.flash)
            for r in self.push_server.requests
            for info in r.user_token_list
        )
        self.assertEqual(sum(got.values()), MESSAGES)
        self.assertEqual(got, expected)
        await wait_until(
            lambda: push.counters.get("push_server", "sent") >= MESSAGES, 10, "settled"
        )
        self.assertEqual(push.counters.get("push_server", "sent"), MESSAGES)
        self.assertEqual(push.counters.get("push_server", "failed"), 0)
        self.assertEqual(push.worker.in_flight, 0)
        for _ in range(100):  # the last settle may still be on its way to the store
            if await push.queue.depth() == 0:
                break
            await sleep(0.1)
        self.assertEqual(await push.queue.depth(), 0)
        self.assertEqual(await self.server.service("store").read(push_store.outbox_size), 0)
        self.assertEqual(push.queue.name, self.queue_name)


class SQLiteBacklogTests(BacklogTests, MsgTestCase):
    pass


class MariaDBBacklogTests(BacklogTests, MsgTestCase):
    def backend_overrides(self) -> dict:
        self.database = scratch_database()
        self.addCleanup(self.database.drop)
        return {"store.db": self.database.url}


class RedisStreamsBacklogTests(MariaDBBacklogTests):
    queue_name = "redis"

    def backend_overrides(self) -> dict:
        redis = scratch_redis()
        self.addCleanup(redis.drop)
        return {**super().backend_overrides(), "store.redis": redis.url}
