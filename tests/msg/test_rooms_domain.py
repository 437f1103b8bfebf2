"""The rooms domain without sockets: a node's memberships and fan-out (``NodeRooms``),
route's per-node counts and limits (``RoomDirectory``), wired together the way an
in-process route wires them."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader
from teamtalk_py.rooms.directory import RoomDirectory
from teamtalk_py.rooms.membership import NodeRooms
from teamtalk_py.wire.protocol import encode


class FakeMember:
    """A member connection: records what it is sent; ``output_backlog`` is set by tests."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.sent: list[bytes] = []
        self.output_backlog = 0

    def send_raw(self, pdu: bytes) -> None:
        self.sent.append(pdu)

    def commands(self) -> list[int]:
        return [PduHeader.unpack_from(p).command_id for p in self.sent]

    def posts(self) -> list[bytes]:
        out = []
        for pdu in self.sent:
            if PduHeader.unpack_from(pdu).command_id == X.CID_EXT_ROOM_POST_NOTIFY:
                out.append(X.IMExtRoomPostNotify.FromString(pdu[HEADER_SIZE:]).content)
        return out


class FakeNodeLink:
    """A node as route sees it; relayed PDUs are handed to that node's ``NodeRooms``."""

    def __init__(self) -> None:
        self.rooms: NodeRooms | None = None
        self.relayed: list[bytes] = []

    def send_raw(self, pdu: bytes) -> None:
        self.relayed.append(pdu)
        assert self.rooms is not None
        relay = X.IMExtRoomRelay.FromString(pdu[HEADER_SIZE:])
        self.rooms.deliver(relay.room_id, relay.pdu)


class DirectRoute:
    """What ``InProcessRoute`` does for rooms: straight calls on a shared directory."""

    def __init__(self, directory: RoomDirectory, link: FakeNodeLink) -> None:
        self.directory = directory
        self.link = link

    def room_admit(self, room_id: int) -> defer.Deferred[tuple[int, int]]:
        return defer.succeed(self.directory.admit(self.link, room_id))

    def room_leave(self, room_ids: list[int]) -> None:
        self.directory.leave(self.link, room_ids)

    def room_relay(self, room_id: int, pdu: bytes) -> defer.Deferred[None]:
        relay = encode(X.CID_EXT_ROOM_RELAY, X.IMExtRoomRelay(room_id=room_id, pdu=pdu))
        self.directory.relay(self.link, room_id, relay)
        return defer.succeed(None)


class Cluster:
    def __init__(self, nodes: int = 2, **limits: int) -> None:
        self.directory = RoomDirectory(**limits)
        self.links = [FakeNodeLink() for _ in range(nodes)]
        self.nodes = []
        for link in self.links:
            link.rooms = NodeRooms(DirectRoute(self.directory, link), member_backlog=1000)
            self.nodes.append(link.rooms)


def joined(d: defer.Deferred) -> tuple[int, int]:
    result = []
    d.addCallback(result.append)
    (outcome,) = result
    return outcome.result, outcome.members


class RoomsDomainTests(SynchronousTestCase):
    def join(self, node: NodeRooms, member: FakeMember, room_id: int) -> tuple[int, int]:
        return joined(defer.ensureDeferred(node.join(member, room_id)))

    def post(
        self,
        node: NodeRooms,
        member: FakeMember,
        room_id: int,
        msg_type: int,
        content: bytes,
        now: int,
    ) -> int:
        """The post's result code (route answers at once here)."""
        d = defer.ensureDeferred(node.post(member, room_id, msg_type, content, now))
        return self.successResultOf(d)

    def test_post_reaches_members_on_both_nodes_but_not_the_poster(self):
        """One post: every member connection on either node gets it once, the poster not."""
        c = Cluster()
        a, b, d = FakeMember(1), FakeMember(2), FakeMember(3)
        self.assertEqual(self.join(c.nodes[0], a, 7), (X.EXT_RESULT_OK, 1))
        self.assertEqual(self.join(c.nodes[0], b, 7), (X.EXT_RESULT_OK, 2))
        self.assertEqual(self.join(c.nodes[1], d, 7), (X.EXT_RESULT_OK, 3))
        self.assertEqual(self.post(c.nodes[0], a, 7, 1, b"hi", now=100), X.EXT_RESULT_OK)
        self.assertEqual((a.posts(), b.posts(), d.posts()), ([], [b"hi"], [b"hi"]))
        self.assertEqual(len(c.links[1].relayed), 1)

    def test_post_goes_only_to_nodes_with_members(self):
        """A room whose members are all on one node sends nothing towards the other."""
        c = Cluster()
        a, b = FakeMember(1), FakeMember(2)
        self.join(c.nodes[0], a, 7)
        self.join(c.nodes[0], b, 7)
        self.post(c.nodes[0], a, 7, 1, b"hi", now=100)
        self.assertEqual(c.links[1].relayed, [])
        self.assertEqual(c.links[0].relayed, [])

    def test_non_member_cannot_post(self):
        c = Cluster()
        a, b = FakeMember(1), FakeMember(2)
        self.join(c.nodes[0], a, 7)
        self.assertEqual(self.post(c.nodes[0], b, 7, 1, b"x", now=1), X.EXT_RESULT_NOT_IN_ROOM)
        self.assertEqual(a.sent, [])

    def test_late_joiner_sees_only_later_posts(self):
        c = Cluster()
        a, late = FakeMember(1), FakeMember(2)
        self.join(c.nodes[0], a, 7)
        self.post(c.nodes[0], a, 7, 1, b"before", now=1)
        self.join(c.nodes[1], late, 7)
        self.post(c.nodes[0], a, 7, 1, b"after", now=2)
        self.assertEqual(late.posts(), [b"after"])

    def test_leave_and_disconnect_remove_membership_everywhere(self):
        """After leaving or disconnecting, route counts nobody and posts stop."""
        c = Cluster()
        a, b, d = FakeMember(1), FakeMember(2), FakeMember(3)
        self.join(c.nodes[0], a, 7)
        self.join(c.nodes[1], b, 7)
        self.join(c.nodes[1], b, 8)
        self.join(c.nodes[1], d, 7)
        self.assertTrue(c.nodes[1].leave(d, 7))
        self.assertFalse(c.nodes[1].leave(d, 7))
        c.nodes[1].disconnected(b)
        self.assertEqual((c.directory.members(7), c.directory.members(8)), (1, 0))
        self.assertEqual(c.directory.nodes_in(7), [c.links[0]])
        self.assertEqual(c.directory.room_count, 1)
        self.post(c.nodes[0], a, 7, 1, b"anyone?", now=1)
        self.assertEqual((b.posts(), d.posts()), ([], []))
        self.assertEqual(c.links[1].relayed, [])

    def test_member_limit_holds_across_nodes(self):
        c = Cluster(max_members=2)
        self.join(c.nodes[0], FakeMember(1), 7)
        self.join(c.nodes[1], FakeMember(2), 7)
        self.assertEqual(self.join(c.nodes[1], FakeMember(3), 7), (X.EXT_RESULT_LIMIT, 2))
        self.assertEqual(c.nodes[1].members_here(7).__len__(), 1)

    def test_room_limit_holds_across_nodes(self):
        c = Cluster(max_rooms=1)
        self.join(c.nodes[0], FakeMember(1), 7)
        self.assertEqual(self.join(c.nodes[1], FakeMember(2), 8)[0], X.EXT_RESULT_LIMIT)
        # joining the existing room is still possible
        self.assertEqual(self.join(c.nodes[1], FakeMember(2), 7)[0], X.EXT_RESULT_OK)

    def test_rooms_per_connection_are_limited(self):
        c = Cluster()
        node = c.nodes[0]
        node.configure(max_joined=2, member_backlog=1000)
        a = FakeMember(1)
        self.join(node, a, 1)
        self.join(node, a, 2)
        self.assertEqual(self.join(node, a, 3)[0], X.EXT_RESULT_LIMIT)

    def test_repeated_join_is_ok_and_counted_once(self):
        c = Cluster()
        a = FakeMember(1)
        self.join(c.nodes[0], a, 7)
        self.assertEqual(self.join(c.nodes[0], a, 7)[0], X.EXT_RESULT_OK)
        self.assertEqual(c.directory.members(7), 1)

    def test_slow_member_is_dropped_and_told(self):
        """A member whose backlog would pass the bound gets no more posts, one removal
        notify, and route no longer counts it; the others still get every post."""
        c = Cluster()
        a, slow, ok = FakeMember(1), FakeMember(2), FakeMember(3)
        for m in (a, slow, ok):
            self.join(c.nodes[0], m, 7)
        self.post(c.nodes[0], a, 7, 1, b"one", now=1)
        slow.output_backlog = 990
        self.post(c.nodes[0], a, 7, 1, b"two", now=2)
        self.post(c.nodes[0], a, 7, 1, b"three", now=3)
        self.assertEqual(slow.posts(), [b"one"])
        self.assertEqual(slow.commands()[-1], X.CID_EXT_ROOM_REMOVED_NOTIFY)
        removed = X.IMExtRoomRemovedNotify.FromString(slow.sent[-1][HEADER_SIZE:])
        self.assertEqual((removed.room_id, removed.reason), (7, X.EXT_ROOM_DROPPED_SLOW))
        self.assertEqual(ok.posts(), [b"one", b"two", b"three"])
        self.assertEqual(c.directory.members(7), 2)
        self.assertEqual(c.nodes[0].dropped_slow, 1)

    def test_lost_node_leaves_every_room_on_route_and_comes_back_with_its_list(self):
        c = Cluster()
        a, b = FakeMember(1), FakeMember(2)
        self.join(c.nodes[0], a, 7)
        self.join(c.nodes[1], b, 7)
        c.directory.drop_node(c.links[1])
        self.assertEqual(c.directory.members(7), 1)
        self.post(c.nodes[0], a, 7, 1, b"while away", now=1)
        self.assertEqual(b.posts(), [])
        c.directory.replace(c.links[1], c.nodes[1].counts())
        self.post(c.nodes[0], a, 7, 1, b"back", now=2)
        self.assertEqual(b.posts(), [b"back"])
        self.assertEqual(c.directory.members(7), 2)

    def test_connection_closed_during_admit_gives_the_place_back(self):
        """A join answered by route after the connection closed is undone on route."""
        directory = RoomDirectory()
        link = FakeNodeLink()
        waiting: defer.Deferred[tuple[int, int]] = defer.Deferred()

        class SlowRoute(DirectRoute):
            def room_admit(self, room_id):
                self.directory.admit(self.link, room_id)
                return waiting

        node = NodeRooms(SlowRoute(directory, link))
        link.rooms = node
        a = FakeMember(1)
        d = defer.ensureDeferred(node.join(a, 7))
        node.disconnected(a)
        waiting.callback((X.EXT_RESULT_OK, 1))
        self.assertEqual(joined(d)[0], X.EXT_RESULT_SERVER_ERROR)
        self.assertEqual(directory.members(7), 0)
        self.assertFalse(node.is_member(a, 7))

    def test_join_while_route_cannot_be_asked_is_a_server_error(self):
        """Route unreachable (its link down, no answer): SERVER_ERROR and nothing joined;
        a later join works."""
        directory = RoomDirectory()
        link = FakeNodeLink()

        class DownRoute(DirectRoute):
            down = True

            def room_admit(self, room_id):
                if self.down:
                    return defer.fail(ConnectionError("route link is down"))
                return super().room_admit(room_id)

        route = DownRoute(directory, link)
        node = NodeRooms(route)
        a = FakeMember(1)
        self.assertEqual(self.join(node, a, 7)[0], X.EXT_RESULT_SERVER_ERROR)
        self.assertFalse(node.is_member(a, 7))
        route.down = False
        self.assertEqual(self.join(node, a, 7), (X.EXT_RESULT_OK, 1))

    def test_post_finishes_only_once_route_has_forwarded_it(self):
        """The members here get the post at once, but ``post`` (so the poster's ack)
        finishes only when route answers the relay."""
        directory = RoomDirectory()
        link = FakeNodeLink()
        answer: defer.Deferred[None] = defer.Deferred()

        class HeldRoute(DirectRoute):
            def room_relay(self, room_id, pdu):
                super().room_relay(room_id, pdu)
                return answer

        node = NodeRooms(HeldRoute(directory, link))
        link.rooms = node
        a, b = FakeMember(1), FakeMember(2)
        self.join(node, a, 7)
        self.join(node, b, 7)
        d = defer.ensureDeferred(node.post(a, 7, 1, b"held", now=1))
        self.assertEqual(b.posts(), [b"held"])
        self.assertNoResult(d)
        answer.callback(None)
        self.assertEqual(self.successResultOf(d), X.EXT_RESULT_OK)
