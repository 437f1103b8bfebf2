"""Presence fan-out and login batching (issue 19): what a login storm costs the server.

Real servers and sockets on 127.0.0.1: the status notifies of one reactor turn leave as
one batch (in order, none lost), ``send_now`` never reorders bytes behind what Twisted
still has queued, the user rows of one turn's logins are read in one store job, and the
per-login log line turns into one summary a second under load.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from teamtalk_client import TeamTalkSession
from teamtalk_py.logs import QuietUnderLoad
from teamtalk_py.msg.user_lookup import UserLookups
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol.header import pack_pdu
from teamtalk_py.store.database import StoreClosedError, open_database
from tests.msg_support import PASSWORD, PC, MsgTestCase, next_pdu, sleep
from tests.support import TestCase

ONLINE, OFFLINE = B.USER_STATUS_ONLINE, B.USER_STATUS_OFFLINE


class FanoutTests(MsgTestCase):
    async def test_login_storm_notifies_arrive_in_order_in_fewer_batches(self):
        """Twelve PC logins at once: a watcher gets every ONLINE notify exactly once,
        then every OFFLINE one after its ONLINE; the server sent them in fewer batches
        than notifies and read the twelve rows in fewer store jobs than logins (each
        login waits up to 30 s: a password check is a scrypt run, slow on a busy
        machine)."""
        await self.add_user("watcher")
        ids = {await self.add_user(f"u{i}"): f"u{i}" for i in range(12)}
        watcher = await self.login("watcher")
        msg = self.server.service("msg")
        batches, notifies = msg.presence.batches, msg.presence.notifies
        jobs = msg.user_lookups.jobs
        protocols = [await self.connect() for _ in ids]
        sessions = [TeamTalkSession(protocol, timeout=30.0) for protocol in protocols]
        answers = await defer.gatherResults(
            [
                defer.ensureDeferred(s.login(name, PASSWORD))
                for s, name in zip(sessions, ids.values(), strict=True)
            ]
        )
        assert all(a.result_code == B.REFUSE_REASON_NONE for a in answers)
        for session in sessions:
            session.protocol.transport.loseConnection()
        seen: list[tuple[int, int]] = []
        while len(seen) < 2 * len(ids):
            pdu = await next_pdu(watcher.protocol, B.CID_BUDDY_LIST_STATUS_NOTIFY)
            stat = pdu.message.user_stat
            if stat.user_id in ids:  # not the watcher's own login
                seen.append((stat.user_id, stat.status))
        assert sorted(seen) == sorted([(uid, s) for uid in ids for s in (ONLINE, OFFLINE)])
        for uid in ids:
            assert seen.index((uid, ONLINE)) < seen.index((uid, OFFLINE))
        sent = msg.presence.notifies - notifies
        assert sent == 2 * len(ids)
        assert msg.presence.batches - batches < sent
        assert 0 < msg.user_lookups.jobs - jobs < len(ids)

    async def test_send_now_keeps_order_behind_queued_bytes(self):
        """Bytes Twisted still holds for a connection go out before ``send_now``'s, which
        goes straight to the socket only when nothing is queued."""
        await self.add_user("alice")
        alice = await self.login("alice", client_type=PC)
        msg = self.server.service("msg")
        (conn,) = msg.online.connections_of(next(iter(msg.online._users)))
        first = pack_pdu(1, B.CID_OTHER_HEARTBEAT, b"", 1)
        second = pack_pdu(1, B.CID_OTHER_HEARTBEAT, b"", 2)
        third = pack_pdu(1, B.CID_OTHER_HEARTBEAT, b"", 3)
        conn.send_raw(first)  # queued by Twisted until the next poll
        assert conn.transport._tempDataLen
        conn.send_now(second)  # must queue behind it
        await sleep(0.05)
        assert not conn.transport._tempDataLen and not conn.transport.dataBuffer
        conn.send_now(third)  # straight to the socket
        assert not conn.transport._tempDataLen
        received = []
        for _ in range(3):
            received.append(await alice.protocol.wait_for(B.CID_OTHER_HEARTBEAT, timeout=5))
        assert [p.seq_num for p in received] == [1, 2, 3]


class UserLookupTests(TestCase):
    def test_a_failed_batch_fails_every_login_in_it(self):
        """A store that cannot read fails each waiting login (they answer "no db
        server"), the same name asked twice included."""
        db = open_database(None, self.tmp_path(), Clock())
        lookups = UserLookups(Clock(), db)
        clock = lookups.clock
        waiting = [lookups.by_name(n) for n in ("a", "b", "a")]
        clock.advance(0)
        assert lookups.jobs == 1 and lookups.names == 2
        for d in waiting:
            self.failureResultOf(d, StoreClosedError)


class QuietUnderLoadTests(TestCase):
    def test_lines_past_the_limit_become_one_summary(self):
        """Within one second the first N events are logged, the rest counted, and one
        summary line follows within a second."""
        lines: list[dict[str, Any]] = []

        class Log:
            def info(self, fmt: str, **kwargs: Any) -> None:
                lines.append({"format": fmt, **kwargs})

        clock = Clock()
        clock.advance(100.2)
        quiet = QuietUnderLoad(Log(), clock, "logins", per_second=5)
        for i in range(12):
            quiet.info("login {n}", n=i)
        assert [line["n"] for line in lines] == [0, 1, 2, 3, 4]
        clock.advance(1.0)
        assert lines[-1]["count"] == 7 and "not logged one by one" in lines[-1]["format"]
        quiet.info("login {n}", n=99)  # a quiet second again: logged as it comes
        assert lines[-1]["n"] == 99 and len(lines) == 7
