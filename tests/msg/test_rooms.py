"""Chat rooms on one node, over real sockets (docs/EXTENSION.md §2.3): join, post, leave,
late joiners, disconnects, limits, refusals, slow members, and connections that did not
opt in. The cluster cases are in ``test_rooms_cluster.py``."""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.defer import ensureDeferred

from teamtalk_client import TeamTalkSession
from teamtalk_client.rooms import RoomRefused, Rooms
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Extension_pb2 as X
from tests.client.test_client_cli import CliTestCase
from tests.msg_support import IOS, MsgTestCase, assert_nothing, next_pdu, sleep

ROOM = 4242


def queued_bytes(conn) -> int:
    """What the server's transport holds for a connection and has not written yet."""
    t = conn.transport
    return len(t.dataBuffer) - t.offset + t._tempDataLen


class RoomTestCase(MsgTestCase):
    overrides = {"msg.message_rate": 0}

    async def member(self, name: str, *rooms: int, client_type: int = B.CLIENT_TYPE_WINDOWS):
        """A logged-in connection of ``name`` that opted in to rooms and joined ``rooms``."""
        session = await self.login(name, client_type=client_type)
        member = Rooms(session)
        await member.opt_in()
        for room_id in rooms:
            await member.join(room_id)
        return member

    @property
    def node_rooms(self):
        return self.server.service("msg").rooms

    @property
    def route_rooms(self):
        return self.server.service("route").hub.rooms

    def server_connection(self, session: TeamTalkSession):
        (conn,) = [
            c
            for c in self.server.service("msg").online.connections_of(session.user_id)
            if c.peer.endswith(f":{session.protocol.transport.getHost().port}")
        ]
        return conn


class RoomTests(RoomTestCase):
    async def test_post_reaches_the_other_members_with_its_fields(self):
        """Every other member gets room, sender, time, type and content; the poster gets
        the ack (with the time) and no notify; a non-member gets nothing."""
        alice_id = await self.add_user("alice")
        for name in ("bob", "carol", "dave"):
            await self.add_user(name)
        alice = await self.member("alice", ROOM)
        bob = await self.member("bob", ROOM)
        carol = await self.member("carol", ROOM)
        dave = await self.member("dave")
        ack = await alice.post(ROOM, b"\x01secret bytes", msg_type=7, client_seq=99)
        assert (ack.result_code, ack.room_id, ack.client_seq) == (X.EXT_RESULT_OK, ROOM, 99)
        assert ack.create_time > 0
        for member in (bob, carol):
            post = await member.next_post()
            assert (post.room_id, post.from_user_id, post.msg_type) == (ROOM, alice_id, 7)
            assert (post.content, post.create_time) == (b"\x01secret bytes", ack.create_time)
        await assert_nothing(alice.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)
        await assert_nothing(dave.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)

    async def test_same_words_twice_are_two_posts(self):
        """Repeating the same encrypted text is two posts, never merged."""
        await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.member("alice", ROOM)
        bob = await self.member("bob", ROOM)
        await alice.post_text(ROOM, "hi")
        await alice.post_text(ROOM, "hi")
        texts = [bob.text_of(await bob.next_post()) for _ in range(2)]
        assert texts == ["hi", "hi"]

    async def test_posts_go_to_the_posters_other_joined_connections(self):
        """Membership is per connection: the poster's phone in the room gets the post,
        and a connection of the same user that did not join gets nothing."""
        await self.add_user("alice")
        pc = await self.member("alice", ROOM)
        phone = await self.member("alice", ROOM, client_type=IOS)
        await pc.post_text(ROOM, "from my pc")
        assert phone.text_of(await phone.next_post()) == "from my pc"

    async def test_late_joiner_sees_only_later_posts(self):
        await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.member("alice", ROOM)
        bob = await self.member("bob")
        await alice.post_text(ROOM, "before")
        joined = await bob.join(ROOM)
        assert joined.member_count == 2
        await alice.post_text(ROOM, "after")
        assert bob.text_of(await bob.next_post()) == "after"
        await assert_nothing(bob.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)

    async def test_leaving_stops_posts_and_frees_the_place(self):
        await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.member("alice", ROOM)
        bob = await self.member("bob", ROOM)
        await bob.leave(ROOM)
        assert self.route_rooms.members(ROOM) == 1
        await alice.post_text(ROOM, "anyone?")
        await assert_nothing(bob.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)
        with self.assertRaises(RoomRefused) as caught:
            await bob.leave(ROOM)
        assert caught.exception.result_code == X.EXT_RESULT_NOT_IN_ROOM
        with self.assertRaises(RoomRefused) as caught:
            await bob.post_text(ROOM, "let me in")
        assert caught.exception.result_code == X.EXT_RESULT_NOT_IN_ROOM

    async def test_disconnected_member_leaves_every_room(self):
        """Closing the connection takes it out of all its rooms, here and on route."""
        await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.member("alice", ROOM)
        bob = await self.member("bob", ROOM, ROOM + 1)
        assert (self.route_rooms.members(ROOM), self.route_rooms.members(ROOM + 1)) == (2, 1)
        bob.session.protocol.transport.loseConnection()
        await bob.session.protocol.closed
        await self._until(lambda: self.route_rooms.members(ROOM) == 1)
        assert self.route_rooms.members(ROOM + 1) == 0
        assert self.route_rooms.room_count == 1
        assert len(self.node_rooms.members_here(ROOM)) == 1
        ack = await alice.post_text(ROOM, "still here")
        assert ack.result_code == X.EXT_RESULT_OK

    async def _until(self, predicate, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if predicate():
                return
            await sleep(0.02)
        raise AssertionError("condition not met")

    async def test_requests_naming_another_user_are_refused(self):
        """The acting user is the connection's: another user's id in ``user_id`` is
        refused and nothing is done."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        alice = await self.member("alice")
        answer = await alice.session.get(
            X.CID_EXT_ROOM_JOIN_REQ, X.IMExtRoomJoinReq(user_id=bob_id, room_id=ROOM)
        )
        assert answer.result_code == X.EXT_RESULT_FORBIDDEN
        assert self.route_rooms.members(ROOM) == 0
        await alice.join(ROOM)
        answer = await alice.session.get(
            X.CID_EXT_ROOM_POST_REQ,
            X.IMExtRoomPostReq(user_id=bob_id, room_id=ROOM, content=b"as bob"),
        )
        assert answer.result_code == X.EXT_RESULT_FORBIDDEN

    async def test_bad_requests_are_refused(self):
        await self.add_user("alice")
        alice = await self.member("alice", ROOM)
        for call, code in (
            (alice.join(0), X.EXT_RESULT_BAD_REQUEST),
            (alice.post(ROOM, b""), X.EXT_RESULT_BAD_REQUEST),
            (alice.post(ROOM, b"x" * 4097), X.EXT_RESULT_BAD_REQUEST),
            (alice.post(ROOM + 1, b"x"), X.EXT_RESULT_NOT_IN_ROOM),
        ):
            with self.assertRaises(RoomRefused) as caught:
                await call
            assert caught.exception.result_code == code
        ack = await alice.post(ROOM, b"x" * 4096)
        assert ack.result_code == X.EXT_RESULT_OK

    async def test_connection_that_did_not_opt_in_gets_no_extension_packet(self):
        """A connection that never said hello gets no answer to room requests and no
        post, though its user is in the room on another connection."""
        await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.member("alice", ROOM)
        plain = await self.login("bob", client_type=IOS)
        bob = await self.member("bob", ROOM)
        plain.protocol.send(X.CID_EXT_ROOM_JOIN_REQ, X.IMExtRoomJoinReq(room_id=ROOM))
        plain.protocol.send(X.CID_EXT_ROOM_POST_REQ, X.IMExtRoomPostReq(room_id=ROOM, content=b"x"))
        await alice.post_text(ROOM, "hello room")
        assert bob.text_of(await bob.next_post()) == "hello room"
        await assert_nothing(plain.protocol)
        assert self.route_rooms.members(ROOM) == 2

    async def test_hello_without_rooms_is_not_enabled(self):
        """A connection that said hello without asking for rooms is refused (it may
        receive answers, but not posts)."""
        await self.add_user("alice")
        session = await self.login("alice")
        await session.get(X.CID_EXT_HELLO_REQ, X.IMExtHelloReq(features=["contacts"]))
        answer = await session.get(X.CID_EXT_ROOM_JOIN_REQ, X.IMExtRoomJoinReq(room_id=ROOM))
        assert answer.result_code == X.EXT_RESULT_NOT_ENABLED

    async def test_hello_without_rooms_leaves_the_rooms(self):
        """A connection that says hello again without rooms is out of its rooms (it
        could not ask to leave them any more)."""
        await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.member("alice", ROOM)
        bob = await self.member("bob", ROOM)
        await bob.session.get(X.CID_EXT_HELLO_REQ, X.IMExtHelloReq(features=["contacts"]))
        assert self.route_rooms.members(ROOM) == 1
        await alice.post_text(ROOM, "gone?")
        await assert_nothing(bob.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)


class RoomLimitTests(RoomTestCase):
    overrides = {
        "msg.message_rate": 0,
        "rooms.max_members": 2,
        "rooms.max_rooms": 2,
        "rooms.max_joined": 2,
    }

    async def refused(self, call) -> int:
        with self.assertRaises(RoomRefused) as caught:
            await call
        return caught.exception.result_code

    async def test_room_full(self):
        for name in ("alice", "bob", "carol"):
            await self.add_user(name)
        await self.member("alice", 1)
        await self.member("bob", 1)
        carol = await self.member("carol")
        assert await self.refused(carol.join(1)) == X.EXT_RESULT_LIMIT
        assert self.route_rooms.members(1) == 2

    async def test_too_many_rooms_and_too_many_joined(self):
        await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.member("alice", 1, 2)
        assert await self.refused(alice.join(3)) == X.EXT_RESULT_LIMIT
        bob = await self.member("bob")
        assert await self.refused(bob.join(3)) == X.EXT_RESULT_LIMIT
        assert (await bob.join(2)).member_count == 2


class RoomRateTests(RoomTestCase):
    overrides = {"msg.message_rate": 1, "msg.message_burst": 2}

    async def test_posts_share_the_message_rate(self):
        await self.add_user("alice")
        alice = await self.member("alice", ROOM)
        await alice.post(ROOM, b"1")
        await alice.post(ROOM, b"2")
        with self.assertRaises(RoomRefused) as caught:
            await alice.post(ROOM, b"3")
        assert caught.exception.result_code == X.EXT_RESULT_LIMIT


class SlowMemberTests(RoomTestCase):
    overrides = {"msg.message_rate": 0, "rooms.member_backlog": 65536}

    async def test_slow_member_is_dropped_and_memory_stays_bounded(self):
        """A member that stops reading is dropped from the room once 64 KiB wait for it;
        what the server holds for it stays bounded however much more is posted; the
        others get every post; it is told, and its connection still works."""
        for name in ("alice", "bob", "carol"):
            await self.add_user(name)
        alice = await self.member("alice", ROOM)
        bob = await self.member("bob", ROOM)
        carol = await self.member("carol", ROOM)
        carol_got = []
        carol.session.protocol.on(X.CID_EXT_ROOM_POST_NOTIFY, carol_got.append)
        bob.session.protocol.transport.pauseProducing()  # bob stops reading
        bob_conn = self.server_connection(bob.session)
        rooms = self.node_rooms
        content = b"p" * 4000
        posted = 0
        most_queued = 0

        async def post_batch(n: int) -> None:
            nonlocal posted, most_queued
            acks = [alice.post(ROOM, content) for _ in range(n)]
            await defer.gatherResults(acks)
            posted += n
            most_queued = max(most_queued, queued_bytes(bob_conn))

        while rooms.is_member(bob_conn, ROOM):
            assert posted < 4000, f"not dropped after {posted} posts"
            await post_batch(16)
        dropped_after = posted
        for _ in range(40):  # 2.5 MB more
            await post_batch(16)
        # The transport's own buffer (64 KiB) plus the member's bound, plus one post.
        assert most_queued <= 65536 + 65536 + 4100, most_queued
        assert self.route_rooms.members(ROOM) == 2
        await self._drain(lambda: len(carol_got) == posted)
        bob.session.protocol.transport.resumeProducing()
        removed = await next_pdu(bob.session.protocol, X.CID_EXT_ROOM_REMOVED_NOTIFY, 10)
        assert (removed.message.room_id, removed.message.reason) == (
            ROOM,
            X.EXT_ROOM_DROPPED_SLOW,
        )
        received = 0
        while True:
            try:
                await bob.session.protocol.wait_for(X.CID_EXT_ROOM_POST_NOTIFY, timeout=0.3)
            except TimeoutError:
                break
            received += 1
        assert 0 < received < dropped_after
        assert (await bob.join(ROOM)).member_count == 3  # still connected, may come back

    async def _drain(self, predicate, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if predicate():
                return
            await sleep(0.02)
        raise AssertionError("not all posts arrived")


class RoomCliTests(CliTestCase):
    """``teamtalk-client room-post``, ``room-listen`` and the ``room`` shell."""

    overrides = {"msg.message_rate": 0}

    async def test_room_post_reaches_a_member_and_prints_the_time(self):
        """The post is encrypted as messages are; the CLI prints the server's time."""
        bob = Rooms(await self.login("bob"))
        await bob.opt_in()
        await bob.join(ROOM)
        out = await self.ok("room-post", str(ROOM), "hello", "room", user="alice")
        post = await bob.next_post()
        assert (post.from_user_id, bob.text_of(post)) == (self.alice, "hello room")
        assert out == f"{post.create_time}\n"

    async def test_room_listen_prints_posts_with_the_senders_name(self):
        alice = Rooms(await self.login("alice"))
        await alice.opt_in()
        listening = ensureDeferred(
            self.cli("--json", "room-listen", str(ROOM), "--count", "1", user="bob")
        )
        route = self.server.service("route").hub.rooms
        for _ in range(250):
            if route.members(ROOM) == 1:
                break
            await sleep(0.02)
        await alice.join(ROOM)
        await alice.post_text(ROOM, "for the listener")
        status, out, err = await listening
        assert (status, err) == (0, "")
        joined, post = (json.loads(line) for line in out.splitlines())
        assert (joined["event"], joined["room_id"], joined["members"]) == ("joined", ROOM, 1)
        assert (post["sender"], post["text"], post["room_id"]) == (
            "alice",
            "for the listener",
            ROOM,
        )

    async def test_room_shell_joins_posts_leaves_and_reports_refusals(self):
        bob = Rooms(await self.login("bob"))
        await bob.opt_in()
        await bob.join(ROOM)
        script = f"join {ROOM}\npost {ROOM} from the shell\nleave {ROOM}\npost {ROOM} late\nfly\n"
        out = await self.ok("room", user="alice", stdin=script)
        assert bob.text_of(await bob.next_post()) == "from the shell"
        lines = [line.split("\t") for line in out.splitlines()]
        assert lines[0] == ["joined", str(ROOM), "2"]
        assert lines[1][:2] == ["posted", str(ROOM)]
        assert lines[2] == ["left", str(ROOM)]
        assert lines[3][0] == "error" and "EXT_RESULT_NOT_IN_ROOM" in lines[3][2]
        assert lines[4][0] == "error"
        await assert_nothing(bob.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)

    async def test_room_commands_on_a_server_without_rooms_exit_1(self):
        await self.restart_with_rooms_off()
        status, _, err = await self.cli("room-post", str(ROOM), "hi", user="alice")
        assert status == 1 and "not offered" in err

    async def restart_with_rooms_off(self) -> None:
        await self.stop_server(self.server)
        self.server = await self.start_server(**{"rooms.enabled": False})
