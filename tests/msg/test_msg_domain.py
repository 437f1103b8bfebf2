"""The msg and route domain classes on their own, with Twisted's test clock, connections on
in-memory transports and in-process route links:
``LoginLockout``, the send key of the resend rule, connection ids, ``OnlineUsers``, and the route
rules of commands.md §2.2.2-§2.2.3 in ``PresenceTable`` and ``RouteHub``."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.msg.intake import send_key
from teamtalk_py.msg.online import OnlineUsers, PresenceBatch, same_category
from teamtalk_py.msg.route_client import LocalLink
from teamtalk_py.msg.run import ConnectionIds
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Message_pb2, Server_pb2
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader, pack_pdu
from teamtalk_py.route.hub import PresenceTable, RouteHub
from teamtalk_py.wire import CommandTable, PduFactory
from teamtalk_py.wire.protocol import dispatch
from tests.support import TestCase

PC, MAC, IOS, ANDROID = (
    B.CLIENT_TYPE_WINDOWS,
    B.CLIENT_TYPE_MAC,
    B.CLIENT_TYPE_IOS,
    B.CLIENT_TYPE_ANDROID,
)
ONLINE, OFFLINE = B.USER_STATUS_ONLINE, B.USER_STATUS_OFFLINE
MINUTE = 60.0


def data(to_id: int, payload: bytes, create_time: int = 1000, msg_type: int = 0):
    return Message_pb2.IMMsgData(
        from_user_id=0,
        to_session_id=to_id,
        msg_id=0,
        create_time=create_time,
        msg_type=msg_type or B.MSG_TYPE_SINGLE_TEXT,
        msg_data=payload,
    )


class SendKeyTests(TestCase):
    def key(self, conn, message, session_type=B.SESSION_TYPE_SINGLE):
        return send_key(conn, session_type, message)

    def test_what_a_resend_repeats_makes_the_digest_and_the_connection_does_not(self):
        """Two connections of one user and category give one digest for the same
        message; any other sender, category, session, type, time or payload another."""
        first, again = Recorded(7, PC), Recorded(7, MAC)
        k1, k2 = self.key(first, data(2, b"hi")), self.key(again, data(2, b"hi"))
        assert k1.digest == k2.digest and k1.connection != k2.connection
        for other in (
            self.key(Recorded(8, PC), data(2, b"hi")),
            self.key(Recorded(7, IOS), data(2, b"hi")),
            self.key(first, data(3, b"hi")),
            self.key(first, data(2, b"hi"), session_type=B.SESSION_TYPE_GROUP),
            self.key(first, data(2, b"hi", msg_type=B.MSG_TYPE_SINGLE_AUDIO)),
            self.key(first, data(2, b"hi", create_time=1001)),
            self.key(first, data(2, b"ho")),
        ):
            assert other.digest != k1.digest

    def test_messages_without_create_time_have_no_key(self):
        """create_time 0: never deduplicated."""
        assert self.key(Recorded(7, PC), data(2, b"hi", create_time=0)) is None


class ConnectionIdTests(TestCase):
    def test_ids_are_unique_and_tell_their_run(self):
        """Ids of one run differ and are recognised as this run's; another run's are not."""
        ids, other = ConnectionIds(run_id=5), ConnectionIds(run_id=6)
        mine = [ids.next() for _ in range(3)]
        assert len(set(mine)) == 3 and all(ids.is_this_run(i) for i in mine)
        assert not ids.is_this_run(other.next())
        assert 0 < max(mine) < 2**63


class Recorded(MsgConnection):
    """A real ``MsgConnection`` on a ``StringTransport``; ``sent`` lists what it was given.

    Each PDU is recorded as written, so tests can compare whole lists of deliveries.
    """

    def __init__(self, user_id: int, client_type: int) -> None:
        super().__init__()
        self.factory = PduFactory(clock=Clock(), table=CommandTable())
        self.factory.connection_ids = ConnectionIds()  # type: ignore[attr-defined]
        self.makeConnection(StringTransport())
        self.user_id = user_id
        self.client_type = client_type
        self.sent: list[bytes] = []

    def send_raw(self, pdu: bytes) -> None:
        self.sent.append(pdu)
        super().send_raw(pdu)


class OnlineUsersTests(TestCase):
    def test_client_categories(self):
        """Windows and Mac are one category, iOS and Android the other."""
        assert same_category(PC, MAC) and same_category(IOS, ANDROID)
        assert not same_category(PC, IOS) and not same_category(MAC, ANDROID)

    def test_add_and_remove_keep_counts_and_drop_empty_users(self):
        """A user record lives as long as one of its connections."""
        online = OnlineUsers()
        pc, phone = Recorded(1, PC), Recorded(1, IOS)
        online.add(pc)
        online.add(phone)
        assert online.connection_count == 2 and 1 in online
        assert online.remove(pc)
        assert not online.remove(pc)  # already gone
        assert 1 in online
        online.remove(phone)
        assert 1 not in online and online.connection_count == 0
        assert online.connections_of(1) == []

    def test_first_in_category_is_the_oldest_of_that_category(self):
        """Kicks pick the oldest same-category connection, optionally excluding one."""
        online = OnlineUsers()
        phone, pc1, pc2 = (
            Recorded(1, IOS),
            Recorded(1, PC),
            Recorded(1, MAC),
        )
        for conn in (phone, pc1, pc2):
            online.add(conn)
        user = online.get(1)
        assert user.first_in_category(MAC) is pc1
        assert user.first_in_category(PC, exclude=pc1) is pc2
        assert user.first_in_category(ANDROID) is phone
        assert user.pc_connections() == [pc1, pc2] and user.mobile_connections() == [phone]

    def test_send_to_users_reaches_every_connection_but_the_excluded_one(self):
        """Each connection of each listed user gets the bytes once; unknown ids are
        skipped; the count says how many were written."""
        online = OnlineUsers()
        a1, a2, b1 = (
            Recorded(1, PC),
            Recorded(1, IOS),
            Recorded(2, PC),
        )
        for conn in (a1, a2, b1):
            online.add(conn)
        pdu = pack_pdu(1, B.CID_OTHER_HEARTBEAT, b"", 0)
        assert online.send_to_users([1, 2, 99], pdu, exclude=a1) == 2
        assert (a1.sent, a2.sent, b1.sent) == ([], [pdu], [pdu])

    def test_send_to_all_can_skip_mobiles(self):
        """Presence notifies go to PC connections only."""
        online = OnlineUsers()
        pc, phone = Recorded(1, PC), Recorded(2, ANDROID)
        online.add(pc)
        online.add(phone)
        x, y = (pack_pdu(1, B.CID_OTHER_HEARTBEAT, b"", seq) for seq in (1, 2))
        assert online.send_to_all(x, pc_only=True) == 1
        assert (pc.sent, phone.sent) == ([x], [])
        assert online.send_to_all(y) == 2

    def test_send_now_to_pc_reaches_pc_connections_only(self):
        """The presence batch's way out: every PC connection once, mobiles never, and a
        connection gone offline no more."""
        online = OnlineUsers()
        pc, mac, phone = Recorded(1, PC), Recorded(2, MAC), Recorded(3, ANDROID)
        for conn in (pc, mac, phone):
            online.add(conn)
        notify = pack_pdu(2, B.CID_BUDDY_LIST_STATUS_NOTIFY, b"", 0)
        assert online.send_now_to_pc(notify) == 2
        online.remove(mac)
        assert online.send_now_to_pc(notify) == 1
        assert (pc.sent, mac.sent, phone.sent) == ([notify, notify], [notify], [])

    def test_only_a_lone_presence_batch_is_shared_with_helper_threads(self):
        """A batch with none in the STORM_GAP before it may share its sends with the
        helper threads; the batches of a storm (one every turn) may not."""
        shared: list[bool] = []

        def record(conns: list, data: bytes, share: bool) -> int:
            shared.append(share)
            return len(conns)

        clock = Clock()
        online = OnlineUsers(record)
        online.add(Recorded(1, PC))
        batch = PresenceBatch(clock, online)
        notify = pack_pdu(2, B.CID_BUDDY_LIST_STATUS_NOTIFY, b"", 0)
        for _ in range(3):  # a storm: a batch every turn
            batch.add(notify)
            clock.advance(0.01)
        clock.advance(PresenceBatch.STORM_GAP)
        batch.add(notify)  # alone again
        clock.advance(0)
        assert shared == [True, False, False, True]
        assert batch.lone_batches == 2

    def test_presence_batches_of_a_storm_are_min_interval_apart(self):
        """A notify after a quiet spell goes out at the end of its turn; those of the
        next turns, within MIN_INTERVAL of that batch, wait and go out as one."""
        sent: list[bytes] = []

        def record(conns: list, data: bytes, share: bool) -> int:
            sent.append(data)
            return len(conns)

        clock = Clock()
        online = OnlineUsers(record)
        online.add(Recorded(1, PC))
        batch = PresenceBatch(clock, online)
        a, b, c = (pack_pdu(2, B.CID_BUDDY_LIST_STATUS_NOTIFY, bytes([i]), 0) for i in range(3))
        batch.add(a)
        clock.advance(0)
        assert sent == [a]
        batch.add(b)
        clock.advance(0)  # the next turn, at once
        batch.add(c)
        clock.advance(PresenceBatch.MIN_INTERVAL / 2)
        assert sent == [a]
        clock.advance(PresenceBatch.MIN_INTERVAL / 2)
        assert sent == [a, b + c]
        assert (batch.batches, batch.notifies) == (2, 3)
        clock.advance(1.0)
        batch.add(a)
        clock.advance(0)
        assert sent == [a, b + c, a]

    def test_a_user_with_one_connection_is_held_as_that_connection(self):
        """Most accounts have one connection: it is the user's whole record (no
        ``OnlineUser`` and list of its own), and a second connection makes one, which
        goes again when the user is back to one."""
        online = OnlineUsers()
        pc, phone = Recorded(1, PC), Recorded(1, IOS)
        online.add(pc)
        assert online._users[1] is pc
        user = online.get(1)
        assert user.user_id == 1 and user.connections == [pc] and user.pc_online_anywhere
        assert user.first_in_category(MAC) is pc and user.mobile_connections() == []
        assert online.set_pc_online_anywhere(1, True).pc_online_anywhere  # as route says
        assert online._users[1] is pc
        online.add(phone)
        assert online.get(1).connections == [pc, phone]
        assert online.connections_of(1) == [pc, phone]
        assert list(online.all_connections()) == [pc, phone]
        online.remove(pc)
        assert online.connections_of(1) == [phone] and online.connection_count == 1
        # Until route says the PC is offline everywhere, it may be online elsewhere.
        assert online.get(1).pc_online_anywhere
        online.set_pc_online_anywhere(1, False)
        assert online._users[1] is phone and online.connections_of(1) == [phone]

    def test_what_route_says_of_the_pc_is_kept_while_the_user_has_a_connection(self):
        """What route says of the user's PC on another node is kept with a lone mobile
        connection, stays when a second connection comes and goes, is forgotten with
        the last connection, and is never recorded for a user with none here; a lone PC
        connection is a PC online until route says otherwise."""
        online = OnlineUsers()
        assert online.set_pc_online_anywhere(1, True) is None and 1 not in online
        phone, pad = Recorded(1, IOS), Recorded(1, ANDROID)
        online.add(phone)
        assert online.set_pc_online_anywhere(1, True).mobile_connections() == [phone]
        assert online.get(1).pc_online_anywhere
        online.add(pad)
        online.remove(pad)
        assert online.get(1).pc_online_anywhere and online.connections_of(1) == [phone]
        assert not online.set_pc_online_anywhere(1, False).pc_online_anywhere
        assert not online.get(1).pc_online_anywhere and online._users[1] is phone
        online.set_pc_online_anywhere(1, True)
        online.remove(phone)
        assert 1 not in online
        online.add(phone)
        assert not online.get(1).pc_online_anywhere
        pc = Recorded(2, PC)
        online.add(pc)
        assert online.get(2).pc_online_anywhere
        assert not online.set_pc_online_anywhere(2, False).pc_online_anywhere
        assert not online.get(2).pc_online_anywhere
        online.add(phone2 := Recorded(2, ANDROID))
        online.remove(phone2)
        assert not online.get(2).pc_online_anywhere
        online.set_pc_online_anywhere(2, True)
        assert online._users[2] is pc


def decode(pdu: bytes):
    header = PduHeader.unpack_from(pdu)
    if header.command_id == B.CID_BUDDY_LIST_STATUS_NOTIFY:
        body = Buddy_pb2.IMUserStatNotify.FromString(pdu[HEADER_SIZE:])
        return ("status", body.user_stat.user_id, body.user_stat.status)
    if header.command_id == B.CID_OTHER_LOGIN_STATUS_NOTIFY:
        body = Server_pb2.IMServerPCLoginStatusNotify.FromString(pdu[HEADER_SIZE:])
        return ("pc_login", body.user_id, body.login_status)
    return ("other", header.command_id)


class Link(LocalLink):
    """A msg node as the hub sees it: the in-process link, keeping what it is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        super().__init__(self.sent.append)

    def take(self) -> list[tuple]:
        sent = list(self.sent)
        self.sent.clear()
        return [decode(p) for p in sent]


class PresenceTableTests(TestCase):
    def test_online_needs_a_pc_connection(self):
        """Mobile-only users are OFFLINE; unknown users too (§2.2.2)."""
        table, link = PresenceTable(), Link()
        table.online(link, 1, IOS)
        assert table.status(1) == OFFLINE
        table.online(link, 1, MAC)
        assert table.status(1) == ONLINE
        assert table.status(2) == OFFLINE

    def test_offline_counts_connections_per_type_and_link(self):
        """Two PC connections need two offline updates; the user is forgotten after the
        last; an offline update from a link that does not hold the user is ignored."""
        table, one, two = PresenceTable(), Link(), Link()
        table.online(one, 1, PC)
        table.online(one, 1, PC)
        table.online(two, 1, IOS)
        assert not table.offline(two, 1, PC)
        assert table.offline(one, 1, PC)
        assert table.status(1) == ONLINE
        assert table.offline(one, 1, PC)
        assert table.status(1) == OFFLINE
        assert table.links_of(1) == [two]
        assert table.connections_on(two) == [(1, IOS)]
        assert table.offline(two, 1, IOS)
        assert table.links_of(1) == []

    def test_one_connection_users_and_back_from_several(self):
        """A user with one connection, then three (two kinds, two links), then one again
        counts exactly as before at every step; an update naming another link or client
        type than the one connection is ignored."""
        table, one, two = PresenceTable(), Link(), Link()
        table.online(one, 1, IOS)
        assert not table.offline(one, 1, PC) and not table.offline(two, 1, IOS)
        assert table.status(1) == OFFLINE and table.connections_on(one) == [(1, IOS)]
        table.online(one, 1, IOS)
        table.online(two, 1, PC)
        assert sorted(table.connections_on(one)) == [(1, IOS), (1, IOS)]
        assert table.links_of(1) == [one, two] and table.status(1) == ONLINE
        assert table.offline(two, 1, PC) and table.offline(one, 1, IOS)
        assert table.connections_on(one) == [(1, IOS)] and table.connections_on(two) == []
        assert table.status(1) == OFFLINE and table.links_of(1) == [one]
        table.forget_link(one)  # the key is made anew: still the same connection
        table.online(one, 1, IOS)
        assert table.connections_on(one) == [(1, IOS), (1, IOS)]
        assert table.offline(one, 1, IOS) and table.offline(one, 1, IOS)
        assert not table.offline(one, 1, IOS) and table.links_of(1) == []


class RouteHubTests(TestCase):
    def setUp(self) -> None:
        self.hub = RouteHub()
        self.one, self.two = Link(), Link()
        self.hub.attach(self.one)
        self.hub.attach(self.two)

    def test_pc_login_notifies_every_link_including_the_origin(self):
        """A PC going online: PC-login status 1 and a status notify ONLINE, to all links."""
        self.hub.user_status(self.one, 1, ONLINE, PC)
        expected = [("pc_login", 1, 1), ("status", 1, ONLINE)]
        assert self.one.take() == expected
        assert self.two.take() == expected

    def test_a_local_link_gets_the_hubs_notifies_with_their_messages(self):
        """A link in the hub's process is handed each notify of the hub's own with the
        message it was encoded from (its node does not decode it again): the same
        message the bytes hold. Relayed packets stay bytes only."""
        raw: list[bytes] = []
        decoded: list[tuple[bytes, object]] = []
        local = LocalLink(raw.append, lambda pdu, message: decoded.append((pdu, message)))
        self.hub.attach(local)
        self.hub.user_status(self.one, 1, ONLINE, PC)
        assert raw == [] and len(decoded) == 2
        for pdu, message in decoded:
            header = PduHeader.unpack_from(pdu)
            assert type(message).FromString(pdu[HEADER_SIZE:]) == message
            assert header.command_id in (
                B.CID_OTHER_LOGIN_STATUS_NOTIFY,
                B.CID_BUDDY_LIST_STATUS_NOTIFY,
            )
        assert [d[0] for d in decoded] == self.two.sent
        self.hub.relay(self.one, pack_pdu(1, B.CID_OTHER_HEARTBEAT, b"", 0), None)
        assert len(raw) == 1 and len(decoded) == 2

    def test_dispatch_takes_a_message_already_decoded(self):
        """``dispatch(..., message=)`` hands the handler that message and decodes
        nothing (the bytes here are no valid body)."""
        seen = []
        table: CommandTable[object] = CommandTable()
        table.register(B.CID_OTHER_LOGIN_STATUS_NOTIFY, lambda subject, req: seen.append(req))
        message = Server_pb2.IMServerPCLoginStatusNotify(user_id=7, login_status=1)
        pdu = pack_pdu(7, B.CID_OTHER_LOGIN_STATUS_NOTIFY, b"\xff\xff", 0)
        header = PduHeader.unpack_from(pdu)
        assert dispatch(table, None, header, pdu, True, "route", message=message) is None
        assert seen[0].message is message
        assert dispatch(table, None, header, pdu, True, "route") is None  # undecodable
        assert len(seen) == 1

    def test_mobile_login_only_reports_the_pc_login_state_when_a_pc_is_on(self):
        """Mobile updates never produce status notifies; a mobile login while a PC is on
        repeats PC-login status 1, without a PC it says nothing."""
        self.hub.user_status(self.one, 1, ONLINE, IOS)
        assert self.two.take() == []
        self.hub.user_status(self.one, 1, ONLINE, PC)
        self.two.take()
        self.hub.user_status(self.two, 1, ONLINE, ANDROID)
        assert self.two.take() == [("pc_login", 1, 1)]
        self.hub.user_status(self.two, 1, OFFLINE, ANDROID)
        assert self.two.take() == []

    def test_pc_logout_is_announced_only_when_the_last_pc_goes(self):
        """With another PC still on, a PC logout is silent; the last one sends PC-login
        status 0 and a status notify OFFLINE."""
        self.hub.user_status(self.one, 1, ONLINE, PC)
        self.hub.user_status(self.two, 1, ONLINE, MAC)
        self.one.take()
        self.hub.user_status(self.one, 1, OFFLINE, PC)
        assert self.one.take() == []
        self.hub.user_status(self.two, 1, OFFLINE, MAC)
        assert self.one.take() == [("pc_login", 1, 0), ("status", 1, OFFLINE)]

    def test_offline_from_a_link_not_holding_the_user_is_ignored(self):
        """No table change and no notification."""
        self.hub.user_status(self.one, 1, ONLINE, PC)
        self.one.take()
        self.hub.user_status(self.two, 1, OFFLINE, PC)
        assert self.one.take() == []
        assert self.hub.users_status([1]) == [(1, ONLINE)]

    def test_users_status_answers_in_request_order(self):
        """Unknown and mobile-only users are OFFLINE."""
        self.hub.user_status(self.one, 1, ONLINE, PC)
        self.hub.user_status(self.one, 2, ONLINE, IOS)
        assert self.hub.users_status([3, 2, 1]) == [(3, OFFLINE), (2, OFFLINE), (1, ONLINE)]

    def test_lost_link_takes_its_users_offline_with_notifications(self):
        """Unlike the reference, a dropped node's users go offline for everybody."""
        self.hub.user_status(self.one, 1, ONLINE, PC)
        self.two.take()
        self.hub.detach(self.one)
        assert self.two.take() == [("pc_login", 1, 0), ("status", 1, OFFLINE)]
        assert self.hub.users_status([1]) == [(1, OFFLINE)]

    def test_online_user_info_is_applied_silently(self):
        """A node's list on (re)connect updates the table without notifications."""
        self.hub.online_user_info(self.one, [(1, ONLINE, PC), (2, OFFLINE, PC)])
        assert self.one.take() == [] and self.two.take() == []
        assert self.hub.users_status([1, 2]) == [(1, ONLINE), (2, OFFLINE)]

    def test_relay_goes_to_other_links_holding_the_users(self):
        """One-to-one packets reach only the other links holding a named user; without
        users they reach every other link; broadcasts include the origin."""
        three = Link()
        self.hub.attach(three)
        self.hub.user_status(self.one, 1, ONLINE, PC)
        self.hub.user_status(self.two, 2, ONLINE, PC)
        for link in (self.one, self.two, three):
            link.take()
        self.hub.relay(self.one, b"to-1-and-2", [1, 2])
        assert (self.one.sent, self.two.sent, three.sent) == ([], [b"to-1-and-2"], [])
        self.two.sent.clear()
        self.hub.relay(self.one, b"everyone-else", None)
        assert (self.one.sent, self.two.sent, three.sent) == (
            [],
            [b"everyone-else"],
            [b"everyone-else"],
        )
        self.hub.broadcast(b"all")
        assert self.one.sent == [b"all"]
