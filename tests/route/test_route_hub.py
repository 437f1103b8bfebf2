"""The route rules (commands.md §2.2) on ``RouteHub``, with in-process links that keep what
they are sent, and Twisted's test clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from teamtalk_py.msg.route_client import LocalLink
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import (
    Buddy_pb2,
    File_pb2,
    Group_pb2,
    Message_pb2,
    Server_pb2,
    SwitchService_pb2,
)
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.protocol import registry
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader, pack_pdu
from teamtalk_py.route import rooms as room_handlers
from teamtalk_py.route.hub import CID_DELIVERED_UPTO, CID_NODE_LOST, RouteHub, relay_rule
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import encode
from tests.support import TestCase

ON, OFF = B.USER_STATUS_ONLINE, B.USER_STATUS_OFFLINE
WIN, MAC, IOS = B.CLIENT_TYPE_WINDOWS, B.CLIENT_TYPE_MAC, B.CLIENT_TYPE_IOS


class Link(LocalLink):
    """A msg node as the hub sees it: the in-process link, handing every PDU to a list."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pdus: list[bytes] = []
        super().__init__(self.pdus.append)

    def received(self, command_id: int | None = None) -> list:
        result = []
        for pdu in self.pdus:
            cid = PduHeader.unpack_from(pdu).command_id
            if command_id is None or cid == command_id:
                message = registry.message_class(cid)()
                message.ParseFromString(pdu[16:])
                result.append(message)
        return result

    def status_notifies(self) -> list[tuple[int, int]]:
        return [
            (m.user_stat.user_id, m.user_stat.status)
            for m in self.received(B.CID_BUDDY_LIST_STATUS_NOTIFY)
        ]

    def login_notifies(self) -> list[tuple[int, int]]:
        return [(m.user_id, m.login_status) for m in self.received(B.CID_OTHER_LOGIN_STATUS_NOTIFY)]

    def clear(self) -> None:
        self.pdus.clear()

    def __repr__(self) -> str:
        return f"<Link {self.name}>"


def hub_with(*names: str, clock: Clock | None = None) -> tuple[RouteHub, list[Link]]:
    hub = RouteHub(clock=clock)
    links = [Link(n) for n in names]
    for link in links:
        hub.attach(link)
    return hub, links


def single(from_id: int, to_id: int, msg_id: int = 1) -> Message_pb2.IMMsgData:
    return Message_pb2.IMMsgData(
        from_user_id=from_id,
        to_session_id=to_id,
        msg_id=msg_id,
        create_time=1,
        msg_type=B.MSG_TYPE_SINGLE_TEXT,
        msg_data=b"x",
    )


def relay(hub: RouteHub, origin: Link, command_id: int, message) -> bytes:
    pdu = encode(command_id, message)
    assert hub.relay_packet(origin, command_id, message, pdu)
    return pdu


class PresenceTests(TestCase):
    def test_pc_login_is_announced_to_every_node_including_the_origin(self):
        """A PC connection coming online sends the login-status and status notifies to all."""
        hub, (a, b) = hub_with("a", "b")
        hub.user_status(a, 7, ON, WIN)
        for link in (a, b):
            assert link.status_notifies() == [(7, ON)]
            assert link.login_notifies() == [(7, 1)]

    def test_mobile_login_produces_no_status_notify(self):
        """Mobile clients never change the buddy status; a mobile-only user is OFFLINE."""
        hub, (a, b) = hub_with("a", "b")
        hub.user_status(a, 7, ON, IOS)
        assert b.status_notifies() == []
        assert b.login_notifies() == []
        assert hub.users_status([7]) == [(7, OFF)]

    def test_second_pc_going_offline_keeps_the_user_online(self):
        """OFFLINE from one PC while another PC of the user is on another node: no notify."""
        hub, (a, b) = hub_with("a", "b")
        hub.user_status(a, 7, ON, WIN)
        hub.user_status(b, 7, ON, MAC)
        a.clear()
        hub.user_status(a, 7, OFF, WIN)
        assert a.status_notifies() == []
        assert hub.users_status([7]) == [(7, ON)]

    def test_offline_from_a_link_not_holding_the_user_is_ignored(self):
        """A stray OFFLINE (the user is on another node) changes nothing."""
        hub, (a, b) = hub_with("a", "b")
        hub.user_status(a, 7, ON, WIN)
        a.clear()
        hub.user_status(b, 7, OFF, WIN)
        assert a.pdus == []
        assert hub.users_status([7]) == [(7, ON)]

    def test_users_status_covers_users_on_every_node(self):
        """The query answer is per requested id, in order; unknown ids are OFFLINE."""
        hub, (a, b) = hub_with("a", "b")
        hub.user_status(a, 1, ON, WIN)
        hub.user_status(b, 2, ON, MAC)
        assert hub.users_status([2, 3, 1]) == [(2, ON), (3, OFF), (1, ON)]

    def test_lost_node_marks_its_users_offline_everywhere(self):
        """Detach is an OFFLINE update for each of the node's connections, with notifies."""
        hub, (a, b) = hub_with("a", "b")
        hub.user_status(a, 7, ON, WIN)
        hub.user_status(a, 8, ON, IOS)
        b.clear()
        hub.detach(a)
        assert b.status_notifies() == [(7, OFF)]
        assert b.login_notifies() == [(7, 0)]
        assert hub.users_status([7, 8]) == [(7, OFF), (8, OFF)]
        assert a not in hub.links

    def test_lost_node_is_named_to_the_others_with_its_last_marker(self):
        """A link that sent delivery markers: its loss is a CID_NODE_LOST to every other
        node, after everything relayed from it, with the body of its last marker (its
        run, for ``msg/catch_up.py``); a link that never marked is lost silently."""
        hub, (a, b, c) = hub_with("a", "b", "c")
        hub.marker(a, pack_pdu(B.SID_OTHER, CID_DELIVERED_UPTO, b"first"))
        hub.marker(a, pack_pdu(B.SID_OTHER, CID_DELIVERED_UPTO, b"last"))
        chat = Message_pb2.IMMsgData(
            from_user_id=7, to_session_id=8, msg_id=1, create_time=1,
            msg_type=B.MSG_TYPE_GROUP_TEXT, msg_data=b"x",
        )  # fmt: skip
        hub.relay(a, encode(B.CID_MSG_DATA, chat), None)
        assert a.pdus == []
        hub.detach(a)
        for other in (b, c):
            commands = [PduHeader.unpack_from(pdu).command_id for pdu in other.pdus]
            assert commands == [CID_DELIVERED_UPTO, CID_DELIVERED_UPTO, B.CID_MSG_DATA,
                                CID_NODE_LOST], commands  # fmt: skip
            assert other.pdus[-1][HEADER_SIZE:] == b"last"
        b.clear()
        hub.detach(c)
        assert b.pdus == []

    def test_reregistration_after_a_dropped_link_announces_users_back(self):
        """Users announced offline when their node's link dropped are announced online
        again when the node re-registers them."""
        hub, (a, b) = hub_with("a", "b")
        hub.user_status(a, 7, ON, WIN)
        hub.detach(a)
        b.clear()
        a2 = Link("a2")
        hub.attach(a2)
        hub.online_user_info(a2, [(7, ON, WIN)])
        assert b.status_notifies() == [(7, ON)]
        assert b.login_notifies() == [(7, 1)]
        assert hub.users_status([7]) == [(7, ON)]

    def test_registration_on_a_fresh_route_is_silent(self):
        """A restarted route learns the nodes' users without notifying anybody."""
        hub, (a, b) = hub_with("a", "b")
        hub.online_user_info(a, [(7, ON, WIN), (8, ON, IOS)])
        assert a.pdus == [] and b.pdus == []
        assert hub.users_status([7, 8]) == [(7, ON), (8, OFF)]


class RelayTests(TestCase):
    def test_single_message_goes_only_to_nodes_holding_sender_or_receiver(self):
        """1:1 messages reach the receiver's and the sender's other nodes, not the origin
        and not uninvolved nodes."""
        hub, (a, b, c, d) = hub_with("a", "b", "c", "d")
        hub.user_status(a, 1, ON, WIN)
        hub.user_status(b, 2, ON, WIN)
        hub.user_status(c, 1, ON, IOS)
        for link in (a, b, c, d):
            link.clear()
        pdu = relay(hub, a, B.CID_MSG_DATA, single(1, 2))
        assert b.pdus == [pdu]
        assert c.pdus == [pdu]
        assert a.pdus == [] and d.pdus == []

    def test_group_message_and_member_change_go_to_every_other_node(self):
        """Route does not know group membership: group kinds go to all but the origin."""
        hub, (a, b, c) = hub_with("a", "b", "c")
        group = Message_pb2.IMMsgData(
            from_user_id=1,
            to_session_id=50,
            msg_id=1,
            create_time=1,
            msg_type=B.MSG_TYPE_GROUP_TEXT,
            msg_data=b"x",
        )
        pdu = relay(hub, a, B.CID_MSG_DATA, group)
        change = relay(hub, a, B.CID_GROUP_CHANGE_MEMBER_NOTIFY, member_change())
        assert b.pdus == [pdu, change] and c.pdus == [pdu, change]
        assert a.pdus == []

    def test_signature_change_goes_to_every_node_including_the_origin(self):
        """Sign-info (and avatar) changes come back to the origin too."""
        hub, (a, b) = hub_with("a", "b")
        pdu = relay(
            hub,
            a,
            B.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY,
            Buddy_pb2.IMSignInfoChangedNotify(changed_user_id=1, sign_info="hi"),
        )
        assert a.pdus == [pdu] and b.pdus == [pdu]

    def test_one_to_one_kinds_name_the_right_users(self):
        """Read notifies, kicks, removed sessions, file notifies and P2P name their users."""
        read = Message_pb2.IMMsgDataReadNotify(
            user_id=3, session_id=4, msg_id=1, session_type=B.SESSION_TYPE_SINGLE
        )
        kick = Server_pb2.IMServerKickUser(user_id=5, client_type=WIN, reason=1)
        p2p = SwitchService_pb2.IMP2PCmdMsg(from_user_id=6, to_user_id=7, cmd_msg_data="typing")
        file_notify = file_notify_for(9)
        assert relay_rule(B.CID_MSG_READ_NOTIFY, read) == ("holders", [3])
        assert relay_rule(B.CID_OTHER_SERVER_KICK_USER, kick) == ("holders", [5])
        assert relay_rule(B.CID_SWITCH_P2P_CMD, p2p) == ("holders", [6, 7])
        assert relay_rule(B.CID_FILE_NOTIFY, file_notify) == ("holders", [9])
        assert relay_rule(B.CID_MSG_DATA, single(1, 2)) == ("holders", [2, 1])

    def test_kick_reaches_the_other_node_of_the_user(self):
        """A duplicate login on one node is relayed as a kick to the node holding the user."""
        hub, (a, b) = hub_with("a", "b")
        hub.user_status(a, 5, ON, WIN)
        a.clear()
        b.clear()
        kick = Server_pb2.IMServerKickUser(user_id=5, client_type=MAC, reason=1)
        pdu = relay(hub, b, B.CID_OTHER_SERVER_KICK_USER, kick)
        assert a.pdus == [pdu]
        assert b.pdus == []

    def test_other_commands_are_not_relayed(self):
        """Anything outside §2.2.5 is refused (logged by the service)."""
        hub, (a, b) = hub_with("a", "b")
        message = Message_pb2.IMClientTimeReq()
        assert not hub.relay_packet(a, B.CID_MSG_TIME_REQUEST, message, b"")
        assert b.pdus == []


class ParkingTests(TestCase):
    def test_message_for_a_node_not_yet_reregistered_is_handed_over_on_registration(self):
        """Right after a route restart, a 1:1 message for a user whose node has not
        re-registered yet is delivered once that node's online-user list arrives."""
        clock = Clock()
        hub, (a, b) = hub_with("a", "b", clock=clock)
        hub.online_user_info(a, [(1, ON, WIN)])
        clock.advance(10)
        pdu = relay(hub, a, B.CID_MSG_DATA, single(1, 2))
        assert b.pdus == []
        hub.online_user_info(b, [(2, ON, WIN)])
        assert b.pdus == [pdu]
        hub.online_user_info(Link("c"), [(2, ON, MAC)])  # delivered once only
        assert hub.parked_count == 0

    def test_nothing_is_parked_after_the_start_up_window(self):
        """Once every node had time to re-register, an unknown user is simply offline."""
        clock = Clock()
        hub, (a, b) = hub_with("a", "b", clock=clock)
        clock.advance(1000)
        relay(hub, a, B.CID_MSG_DATA, single(1, 2))
        hub.online_user_info(b, [(2, ON, WIN)])
        assert b.pdus == []
        assert hub.parked_count == 0

    def test_hub_without_clock_never_parks(self):
        """The private hub of a lone msg node has no start-up window."""
        hub, (a,) = hub_with("a")
        relay(hub, a, B.CID_MSG_DATA, single(1, 2))
        assert hub.parked_count == 0


class HandlerLink(Link):
    """A node's link as route's link handlers see it (``route/rooms.py``): the hub, and
    ``send``; what every such link is sent goes to one list, in order."""

    def __init__(self, name: str, hub: RouteHub, sent: list[tuple[str, int, int]]) -> None:
        super().__init__(name)
        self.hub = hub
        self.sent = sent
        hub.attach(self)

    def send_raw(self, pdu: bytes) -> None:
        header = PduHeader.unpack_from(pdu)
        self.sent.append((self.name, header.command_id, header.seq_num))
        super().send_raw(pdu)

    def send(self, command_id: int, message, seq: int = 0) -> None:
        self.send_raw(encode(command_id, message, seq))


def room_relay_request(room_id: int, seq: int) -> Request:
    message = X.IMExtRoomRelay(room_id=room_id, pdu=b"a post notify")
    pdu = encode(X.CID_EXT_ROOM_RELAY, message, seq)
    return Request(PduHeader.unpack_from(pdu), pdu, message)


class RoomLinkHandlerTests(TestCase):
    """Route's chat-room link handlers on a hub, with links that record what they are sent."""

    def test_room_relay_is_answered_on_its_seq_once_forwarded(self):
        """A relay from node a goes to b (members there), not to c (none), and only then
        is a answered with ``CID_EXT_ROOM_RELAY_ACK`` on the relay's seq."""
        hub, sent = RouteHub(), []
        a, b, c = (HandlerLink(name, hub, sent) for name in "abc")
        hub.rooms.admit(a, 7)
        hub.rooms.admit(b, 7)
        room_handlers.relay(a, room_relay_request(7, seq=41))
        assert sent == [("b", X.CID_EXT_ROOM_RELAY, 41), ("a", X.CID_EXT_ROOM_RELAY_ACK, 41)]
        assert [m.room_id for m in a.received(X.CID_EXT_ROOM_RELAY_ACK)] == [7]

    def test_room_relay_to_nobody_is_answered_too(self):
        """With no member on any other node nothing is forwarded, and the relay is
        still answered (the poster's ack waits for it)."""
        hub, sent = RouteHub(), []
        a, _ = (HandlerLink(name, hub, sent) for name in "ab")
        hub.rooms.admit(a, 7)
        room_handlers.relay(a, room_relay_request(7, seq=5))
        assert sent == [("a", X.CID_EXT_ROOM_RELAY_ACK, 5)]

    def test_room_relay_without_a_seq_is_not_answered(self):
        """Seq 0: nobody waits for the answer, so none is sent."""
        hub, sent = RouteHub(), []
        a, b = (HandlerLink(name, hub, sent) for name in "ab")
        hub.rooms.admit(b, 7)
        room_handlers.relay(a, room_relay_request(7, seq=0))
        assert sent == [("b", X.CID_EXT_ROOM_RELAY, 0)]


def member_change() -> Group_pb2.IMGroupChangeMemberNotify:
    return Group_pb2.IMGroupChangeMemberNotify(
        user_id=1, change_type=B.GROUP_MODIFY_TYPE_ADD, group_id=50, cur_user_id_list=[1, 2]
    )


def file_notify_for(to_id: int) -> File_pb2.IMFileNotify:
    return File_pb2.IMFileNotify(
        from_user_id=1,
        to_user_id=to_id,
        file_name="a.txt",
        file_size=3,
        task_id="t",
        trans_mode=B.FILE_TYPE_ONLINE,
        offline_ready=0,
    )
