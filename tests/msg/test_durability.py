"""An acked message survives whatever dies, and a resend after a lost ack is never stored
twice: ``kill -9`` of a ``twistd teamtalk`` process under load (SQLite and MariaDB, several
trials), and a store that stops taking writes mid-stream (SQLite made read-only, MariaDB
cut off behind a proxy). The clients behave like real ones (``resend_support``): a window
of messages in flight, and after a lost connection a reconnect and a resend of the same
bytes for every message whose ack they never read.
"""

from __future__ import annotations

import sqlite3
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from teamtalk_client import TeamTalkSession, connect
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import accounts
from teamtalk_py.store import groups as group_store
from teamtalk_py.store.database import open_database
from teamtalk_py.store.engines.sqlite import DEFAULT_SQLITE_NAME
from teamtalk_testing import StandaloneServer
from teamtalk_testing.faults import TcpProxy
from teamtalk_testing.metrics import metric_value
from tests.cluster_support import scratch_database, wait_until
from tests.msg_support import BASE, PC, MsgTestCase
from tests.resend_support import (
    NO_RATE_LIMIT,
    Sender,
    audit,
    history,
    lose_acks,
    no_rate_limit_config,
)
from tests.support import TestCase

PASSWORD = "secret"
SINGLE, GROUP = B.SESSION_TYPE_SINGLE, B.SESSION_TYPE_GROUP
NOW = 1_700_000_000
MESSAGES = 150


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def log_in(port: int, name: str) -> TeamTalkSession:
    session = TeamTalkSession(await connect(reactor, "127.0.0.1", port))
    answer = await session.login(name, PASSWORD, client_type=PC)
    assert answer.result_code == 0, answer
    return session


def messages_stored(server: StandaloneServer) -> int:
    """New message rows the running server has stored (``teamtalk_messages_total``
    with outcome "stored", both session types), from its /metrics."""
    return int(metric_value(server.ops_port, "teamtalk_messages_total", outcome="stored") or 0)


async def stored_beyond(server: StandaloneServer, senders: list, base: int, _pause: float) -> None:
    """``lose_acks``'s pause: wait (up to 30 s, not ``_pause``) until the server has
    stored more of this trial's messages than the senders have read acks for."""
    deadline = time.monotonic() + 30
    while True:
        stored = await deferToThread(messages_stored, server) - base
        if stored > sum(len(s.acked) for s in senders):
            return
        assert time.monotonic() < deadline, "nothing stored beyond the acks read"
        await sleep(0.02)


def create_accounts(db_url: str | None, data_dir: Path) -> tuple[dict[str, int], int]:
    """Users (and a group of erin and frank) straight in the store, as teamtalk-admin
    does; their ids and the group's."""
    db = open_database(db_url, data_dir, reactor)
    db.migrate()
    with db.sync_transaction() as txn:
        ids = {
            name: accounts.add_user(txn, name, PASSWORD, now=NOW)
            for name in ("alice", "bob", "carol", "dave", "erin", "frank")
        }
        group, _ = group_store.create_group(
            txn, "crash", ids["erin"], [ids["frank"]], group_store.GROUP_NORMAL, now=NOW
        )
    return ids, group.id


class KillUnderLoad:
    """kill -9 while three clients stream messages (two 1:1, one group), restart on the
    same data, resend what had no ack, audit the history."""

    db_url: str | None = None
    trials = 3

    async def test_acked_messages_survive_kill_9_and_resends_are_not_stored_twice(self):
        """Each trial kills the server with messages in flight and acks unread; after the
        restart every acked message is in history under its id, every message is there
        exactly once, and the resends of messages stored before the kill got their ids."""
        root = self.tmp_path()
        ids, group_id = create_accounts(self.db_url, root / "var")
        args = ["--config", str(no_rate_limit_config(root))]
        if self.db_url:
            args += ["--db", self.db_url]
        server = StandaloneServer(root, args)
        await deferToThread(server.start)
        self.addCleanup(server.stop)
        recognised = 0
        for trial in range(self.trials):
            senders = [
                Sender(f"alice-{trial}", ids["alice"], ids["bob"], SINGLE, MESSAGES),
                Sender(f"carol-{trial}", ids["carol"], ids["dave"], SINGLE, MESSAGES),
                Sender(f"erin-{trial}", ids["erin"], group_id, GROUP, MESSAGES),
            ]
            users = ("alice", "carol", "erin")
            base = await deferToThread(messages_stored, server)
            sessions = [await log_in(server.msg_port, user) for user in users]
            protocols = [s.protocol for s in sessions]
            sending = [
                defer.ensureDeferred(sender.send(p, sender.outgoing))
                for sender, p in zip(senders, protocols, strict=True)
            ]
            # Kill at a different point of the stream in each trial.
            threshold = (0.2 + 0.25 * trial) * MESSAGES * len(senders)
            deadline = time.monotonic() + 30
            while sum(len(s.acked) for s in senders) < threshold:
                assert time.monotonic() < deadline, "the stream stalled before the kill"
                await sleep(0.005)
            # Kill only once the server has stored a message whose ack the client has not
            # read (a fixed pause stored nothing on a loaded box: nothing to recognise).
            await lose_acks(
                protocols, server.process.kill, partial(stored_beyond, server, senders, base)
            )
            await defer.DeferredList(sending)
            assert any(s.unacked for s in senders)
            await deferToThread(server.start)
            readers = {
                "bob": await log_in(server.msg_port, "bob"),
                "dave": await log_in(server.msg_port, "dave"),
                "frank": await log_in(server.msg_port, "frank"),
            }
            views = [
                (readers["bob"], SINGLE, ids["alice"]),
                (readers["dave"], SINGLE, ids["carol"]),
                (readers["frank"], GROUP, group_id),
            ]
            again = [await log_in(server.msg_port, user) for user in users]
            for sender, session, (reader, kind, peer) in zip(senders, again, views, strict=True):
                stored_before = await reader.latest_msg_id(peer, kind)
                resent = sender.unacked
                await sender.resend_unacked(session.protocol)
                # Resends answered with an id stored before the restart were recognised.
                recognised += sum(1 for item in resent if (item.msg_id or 0) <= stored_before)
            for sender, (reader, kind, peer) in zip(senders, views, strict=True):
                assert not sender.unacked, f"{sender.name}: resends not acked"
                audit(sender, await history(reader, kind, peer))
            for session in (*again, *readers.values()):
                session.protocol.transport.loseConnection()
                await session.protocol.closed
        # The acks read nothing for a while before each kill: some stored messages lost
        # theirs, and their resends must have been recognised.
        assert recognised > 0


class SQLiteKillUnderLoadTests(KillUnderLoad, TestCase):
    """Three kill -9 trials on the embedded SQLite store."""


class MariaDBKillUnderLoadTests(KillUnderLoad, TestCase):
    """Two kill -9 trials on MariaDB."""

    trials = 2

    def setUp(self) -> None:
        database = scratch_database()
        self.addCleanup(database.drop)
        self.db_url = database.url


class OutageStream:
    """A client streams messages while the store stops taking writes and comes back;
    nothing unstored is acked, and its resends after the outage are stored once."""

    overrides = NO_RATE_LIMIT

    async def outage_start(self) -> None:
        raise NotImplementedError

    async def outage_end(self) -> None:
        raise NotImplementedError

    async def test_store_outage_mid_stream_acks_nothing_unstored_and_the_client_retries(self):
        """Sent before, during and after the outage: those sent during it get no ack (the
        shipped clients show them failed); resent afterwards they are stored once, and
        every ack names the message it acked."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        sender = Sender("alice", a, b, SINGLE, 30, window=4)
        await sender.send(alice.protocol, sender.outgoing[:10])
        assert len(sender.acked) == 10
        await self.outage_start()
        outage_began = time.monotonic()
        await sender.send(alice.protocol, sender.outgoing[10:20], timeout=1.0)
        await deferLater(reactor, 0.1, lambda: None)  # read what the server wrote meanwhile
        outage_ended = time.monotonic()
        await self.outage_end()
        await sender.send(alice.protocol, sender.outgoing[20:])
        # A starved server may handle some of #10-19 only once the database is back: it
        # stores and acks them after the client's 1 s timeout, and the client keeps that
        # late ack. The server commits one connection's messages in order, so once #20-29
        # are acked every answer to #10-19 has come.
        after = sender.outgoing[20:]
        await wait_until(lambda: all(o.msg_id for o in after), 30.0, "acks of #20-29")
        during = [
            item.index
            for item in sender.acked
            if item.acked_at is not None and outage_began <= item.acked_at < outage_ended
        ]
        refused = [item.index for item in sender.unacked]
        assert during == [], f"acked while the database was away: {during}"
        assert refused and all(10 <= index < 20 for index in refused), refused
        await sender.resend_unacked(alice.protocol)  # the user presses "resend"
        assert not sender.unacked
        audit(sender, await history(bob, SINGLE, a))
        self.flushLoggedErrors()


class SQLiteLockedTests(OutageStream, MsgTestCase):
    """Another process holds the SQLite database's write lock (as a stuck writer or a long
    admin job would): every write of the server fails with "database is locked". The
    server's busy timeout is shortened first (a real pragma on its write connection), so
    that a write fails in a tenth of a second instead of after two 10 s waits."""

    async def outage_start(self) -> None:
        def short_busy_timeout(txn) -> None:
            txn.execute("PRAGMA busy_timeout = 100")

        await self.server.service("store").write(short_busy_timeout)
        path = self.data_dir / DEFAULT_SQLITE_NAME
        self.holder = sqlite3.connect(str(path), isolation_level=None)
        self.holder.execute("BEGIN IMMEDIATE")

    async def outage_end(self) -> None:
        self.holder.execute("ROLLBACK")
        self.holder.close()


class MariaDBUnreachableTests(OutageStream, MsgTestCase):
    """MariaDB behind a proxy that is cut off (as if the server stopped) and restored.
    The store's MariaDB outage is logged once, not per message (``outage.py``)."""

    async def _set_up(self) -> None:
        self.database = scratch_database()
        server = urlsplit(self.database.server)
        self.proxy = TcpProxy(server.hostname or "127.0.0.1", server.port or 3306)
        self.proxy.open()
        credentials = server.netloc.rpartition("@")[0]
        self.overrides = {
            **BASE,
            **NO_RATE_LIMIT,
            "store.db": f"mysql://{credentials}@127.0.0.1:{self.proxy.port}/{self.database.name}",
        }
        await super()._set_up()

    async def _tear_down(self) -> None:
        await super()._tear_down()
        self.proxy.stop()
        self.database.drop()

    async def outage_start(self) -> None:
        self.proxy.close()

    async def outage_end(self) -> None:
        self.proxy.open()
