"""Limits on by default: messages per user (a burst, then a sustained rate), bytes stored
per day, group creations per hour, offline-file bytes and transfer tasks; connections
that keep exceeding them are closed; per-connection work is bounded per reactor turn."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from teamtalk_py.msg.limits import DAY, MessageLimits, RefusalBudget, TokenBucket
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Group_pb2
from teamtalk_py.protocol.header import pack_pdu
from teamtalk_py.wire import CommandTable, PduFactory
from teamtalk_py.wire.protocol import PDUS_PER_TURN, echo_heartbeat
from tests.file_support import OFFLINE, ONLINE, FileTestCase
from tests.msg_support import MsgTestCase, closed_within, msg_data, next_pdu
from tests.server.test_ops import samples
from tests.support import TestCase

HEARTBEAT = pack_pdu(B.SID_OTHER, B.CID_OTHER_HEARTBEAT, b"")


class TokenBucketTests(TestCase):
    def test_a_burst_then_the_sustained_rate(self):
        """Defaults: 100 at once, then 20 a second, never more than the burst saved up."""
        limits = MessageLimits(Clock(), rate=20.0, burst=100, bytes_per_day=0)
        assert [limits.check(7, 10) for _ in range(100)] == [None] * 100
        assert limits.check(7, 10) is not None
        limits.clock.advance(1.0)
        assert sum(limits.check(7, 10) is None for _ in range(40)) == 20
        limits.clock.advance(3600)
        assert sum(limits.check(7, 10) is None for _ in range(300)) == 100
        assert limits.refused["rate"] == 1 + 20 + 200

    def test_users_have_their_own_allowance(self):
        """One user's flood leaves another user's bucket full."""
        limits = MessageLimits(Clock(), rate=20.0, burst=100, bytes_per_day=0)
        for _ in range(500):
            limits.check(1, 10)
        assert limits.check(2, 10) is None

    def test_bytes_stored_per_day_reset_at_midnight_utc(self):
        """Past max_bytes_per_day the rest of the day is refused; the next day starts
        over, and senders with nothing left to remember are forgotten."""
        clock = Clock()
        clock.advance(DAY * 100 + 3600)
        limits = MessageLimits(clock, rate=0, burst=0, bytes_per_day=1000)
        assert limits.check(1, 600) is None
        assert limits.check(1, 600) == "over 1000 bytes stored today"
        assert limits.check(1, 400) is None
        clock.advance(DAY)
        assert limits.check(2, 10) is None
        assert len(limits) == 1  # user 1 is forgotten
        assert limits.check(1, 1000) is None

    def test_refusal_budget_refills_one_a_second(self):
        bucket = TokenBucket(3, 1.0, 0.0)
        assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
        budget = RefusalBudget(2, 0.0)
        assert budget.spend(0.0) and budget.spend(0.0) and not budget.spend(0.0)
        assert budget.spend(1.0)


class FairnessTests(TestCase):
    def connection(self, table: CommandTable, **kwargs):
        clock = Clock()
        factory = PduFactory(clock=clock, table=table, **kwargs)
        conn = factory.buildProtocol(None)
        transport = StringTransport()
        conn.makeConnection(transport)
        return clock, conn, transport

    def test_one_connection_gets_a_bounded_number_of_pdus_per_turn(self):
        """200 pipelined heartbeats: PDUS_PER_TURN are answered this turn, reading
        pauses, and the rest follow on later turns."""
        table = CommandTable()
        table.register(B.CID_OTHER_HEARTBEAT, echo_heartbeat, before_login=True, decode=False)
        clock, conn, transport = self.connection(table)
        conn.dataReceived(HEARTBEAT * 200)
        assert len(transport.value()) == 16 * PDUS_PER_TURN
        assert transport.producerState == "paused"
        while clock.getDelayedCalls():
            clock.advance(0)
        assert len(transport.value()) == 16 * 200
        assert transport.producerState == "producing"

    def test_unfinished_requests_hold_the_connection_input(self):
        """Past max_in_flight unanswered requests the connection is not read (nor are
        PDUs already read handled) until one finishes."""
        waiting: list[defer.Deferred] = []

        def slow(conn, request):
            d: defer.Deferred = defer.Deferred()
            waiting.append(d)
            return d

        table = CommandTable()
        table.register(B.CID_OTHER_HEARTBEAT, slow, before_login=True, decode=False)
        clock, conn, transport = self.connection(table, max_in_flight=4)
        conn.dataReceived(HEARTBEAT * 10)
        assert len(waiting) == 4
        assert transport.producerState == "paused"
        waiting[0].callback(None)
        clock.advance(0)
        assert len(waiting) == 5
        for d in waiting[1:]:
            d.callback(None)
        clock.advance(0)
        assert len(waiting) == 9  # four more in flight: held again
        assert transport.producerState == "paused"
        for d in waiting[5:]:
            d.callback(None)
        clock.advance(0)
        assert len(waiting) == 10
        waiting[9].callback(None)
        assert transport.producerState == "producing"


class MessageLimitTests(MsgTestCase):
    overrides = {"msg.message_burst": 5, "msg.message_rate": 1.0, "msg.max_refusals": 5}

    async def test_messages_over_the_allowance_get_no_ack(self):
        """A burst of 8 with a burst allowance of 5 at 1/s: 5 (or 6 if a second passes)
        get ids, the rest get no answer (like every refusal, see README); only the
        accepted ones are delivered."""
        b = await self.add_user("bob")
        await self.add_user("alice")
        alice = await self.login("alice")
        bob = await self.login("bob")
        pending = [
            alice.protocol.request(
                B.CID_MSG_DATA, msg_data(b, b"burst %d" % i, 1000 + i), timeout=2.0
            )
            for i in range(8)
        ]
        results = await defer.DeferredList(pending, consumeErrors=True)
        accepted = [pdu.message.msg_id for ok, pdu in results if ok]
        assert 5 <= len(accepted) <= 6, accepted
        assert accepted == list(range(1, len(accepted) + 1))
        assert all(f.check(TimeoutError) for ok, f in results if not ok)
        for _ in accepted:
            await next_pdu(bob.protocol, B.CID_MSG_DATA)
        assert self.server.service("msg").message_limits.refused["rate"] == 8 - len(accepted)

    async def test_a_connection_that_keeps_exceeding_its_limits_is_closed(self):
        """Refused after refused: past max_refusals the connection is closed; the user may
        log in again."""
        b = await self.add_user("bob")
        await self.add_user("alice")
        alice = await self.login("alice")
        pending = [
            alice.protocol.request(B.CID_MSG_DATA, msg_data(b, b"flood %d" % i, i))
            for i in range(40)
        ]
        results = await defer.DeferredList(pending, consumeErrors=True)
        acks = [r.message.msg_id for ok, r in results if ok]
        assert 5 <= len(acks) <= 7 and all(acks), acks  # the allowance, nothing refused
        assert await closed_within(alice.protocol, 2.0)
        assert self.server.service("msg").connections_closed_for_limits == 1
        scraped = samples(self.server.collection.metrics.exposition().decode())
        assert scraped[("teamtalk_connections_closed_for_limits_total", ())] == 1
        assert scraped[("teamtalk_limit_refusals_total", (("limit", "rate"),))] >= 5
        again = await self.login("alice")
        assert again.protocol.transport.connected


class DailyBytesTests(MsgTestCase):
    overrides = {"msg.max_bytes_per_day": 3000}

    async def test_bytes_stored_per_day_are_limited(self):
        """Three 1000-byte messages fit into 3000 bytes a day, the fourth is refused (no
        ack)."""
        b = await self.add_user("bob")
        await self.add_user("alice")
        alice = await self.login("alice")
        text = B.MSG_TYPE_SINGLE_TEXT
        acks = [
            (await alice.send_message(b, text, b"%d" % i + b"x" * 999)).msg_id for i in range(3)
        ]
        assert acks == [1, 2, 3]
        fourth = msg_data(b, b"3" + b"x" * 999, 0, text)
        with self.assertRaises(TimeoutError):
            await alice.protocol.request(B.CID_MSG_DATA, fourth, timeout=1.0)


class GroupCreationLimitTests(MsgTestCase):
    overrides = {"msg.group_creations_per_hour": 2}

    async def test_group_creations_per_hour_are_limited(self):
        """The third temporary group within the hour is answered with result_code 1."""
        b = await self.add_user("bob")
        await self.add_user("alice")
        alice = await self.login("alice")
        codes = []
        for n in range(3):
            answer = await alice.get(
                B.CID_GROUP_CREATE_REQUEST,
                Group_pb2.IMGroupCreateReq(
                    user_id=0, group_type=B.GROUP_TYPE_TMP, group_name=f"g{n}",
                    group_avatar="", member_id_list=[b],
                ),
            )  # fmt: skip
            codes.append(answer.result_code)
        assert codes == [0, 0, 1]
        assert self.server.service("msg").group_creations.refused == 1


class FileLimitTests(FileTestCase):
    overrides = {
        **FileTestCase.overrides,
        "file.max_tasks_per_user": 2,
        "file.max_user_offline_bytes": 1000,
        "file.max_offline_bytes": 1300,
    }

    async def test_transfer_tasks_in_flight_per_user_are_limited(self):
        """Two open tasks per sender; the third request gets result 1, another sender
        is not affected."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        first = await self.request_file(alice, b, 10, ONLINE)
        second = await self.request_file(alice, b, 10, ONLINE)
        third = await self.request_file(alice, b, 10, ONLINE)
        assert (first.result_code, second.result_code, third.result_code) == (0, 0, 1)
        assert (await self.request_file(bob, a, 10, ONLINE)).result_code == 0
        assert self.server.service("file").transfers.refused["tasks"] == 1

    async def test_offline_bytes_per_user_and_in_total_are_limited(self):
        """Offline files count at their full size from the request on: past the sender's
        1000 bytes, then past 1300 bytes for everybody, requests get result 1."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        assert (await self.request_file(alice, b, 800, OFFLINE)).result_code == 0
        assert (await self.request_file(alice, b, 300, OFFLINE)).result_code == 1
        assert (await self.request_file(bob, a, 600, OFFLINE)).result_code == 1
        assert (await self.request_file(bob, a, 500, OFFLINE)).result_code == 0
        refused = self.server.service("file").transfers.refused
        assert (refused["user offline bytes"], refused["offline bytes"]) == (1, 1)
