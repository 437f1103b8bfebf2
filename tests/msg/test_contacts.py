"""Contacts (docs/EXTENSION.md §2.2) end to end: real sockets, one in-process server.

The rules the seed system broke are the ones tested hardest: the acting user is always
the connection's user, an accept needs a pending request addressed to the caller, and a
request or answer for someone away is stored and delivered at their next hello.
"""

from __future__ import annotations

from typing import Any

from teamtalk_client import ExtensionClient, TeamTalkSession
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.store import contacts as contacts_store
from tests.msg_support import IOS, MsgTestCase, assert_nothing, next_pdu, sleep


class ContactsCase(MsgTestCase):
    overrides = {"contacts.mode": "contacts"}

    async def opted_in(
        self, name: str, client_type: int = B.CLIENT_TYPE_WINDOWS
    ) -> tuple[TeamTalkSession, ExtensionClient]:
        """A new connection of ``name`` that said hello asking for contacts."""
        session = await self.login(name, client_type=client_type)
        extension = ExtensionClient(session)
        answer = await extension.hello(["contacts"])
        assert list(answer.features) == ["contacts"], answer
        return session, extension

    async def delivered(self, user_id: int) -> None:
        """Wait until the store marks everything of ``user_id``'s delivered (the mark is
        written right after the notifies; a hello racing it may get them twice)."""
        store = self.server.service("store")
        for _ in range(100):
            requests, answers = await store.read(contacts_store.undelivered, user_id)
            if not requests and not answers:
                return
            await sleep(0.02)
        raise AssertionError(f"still undelivered for {user_id}: {requests} {answers}")

    async def friends_of(self, extension: ExtensionClient) -> dict[int, str]:
        answer = await extension.friends()
        assert answer.result_code == X.EXT_RESULT_OK
        return {f.user.user_id: f.remark for f in answer.friends}


class FriendRequestTests(ContactsCase):
    async def test_request_and_accept_between_online_users(self) -> None:
        """The asked user gets the request live with the asker's public profile; the
        accept makes both friends with each side's remark; the asker is told."""
        alice_id = await self.add_user("alice", nick="Al")
        bob_id = await self.add_user("bob")
        alice_session, alice = await self.opted_in("alice")
        bob_session, bob = await self.opted_in("bob")
        asked = await alice.request(bob_id, note="hi, it's Alice", remark="Bobby")
        assert asked.result_code == X.EXT_RESULT_OK and asked.request_id > 0
        notify = (await next_pdu(bob_session.protocol, X.CID_EXT_FRIEND_REQUEST_NOTIFY)).message
        request = notify.request
        assert (request.request_id, request.from_user_id, request.to_user_id) == (
            asked.request_id, alice_id, bob_id,
        )  # fmt: skip
        assert request.note == "hi, it's Alice" and request.state == X.EXT_REQUEST_PENDING
        assert (request.peer.user_id, request.peer.nick_name) == (alice_id, "Al")
        accepted = await bob.accept(asked.request_id, remark="Ally")
        assert accepted.result_code == X.EXT_RESULT_OK
        assert (accepted.new_friend.user.user_id, accepted.new_friend.remark) == (alice_id, "Ally")
        answered = await next_pdu(alice_session.protocol, X.CID_EXT_FRIEND_ANSWER_NOTIFY)
        assert answered.message.request.state == X.EXT_REQUEST_ACCEPTED
        assert answered.message.request.peer.user_id == bob_id
        assert await self.friends_of(alice) == {bob_id: "Bobby"}
        assert await self.friends_of(bob) == {alice_id: "Ally"}
        assert (await alice.requests()).outgoing == []
        assert (await bob.requests()).incoming == []

    async def test_request_to_offline_user_is_delivered_at_their_next_hello(self) -> None:
        """A request to someone offline, and the answer to an asker gone offline, are
        each delivered once: at the receiver's next hello, not again after that."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        alice_session, alice = await self.opted_in("alice")
        asked = await alice.request(bob_id, note="are you there?")
        assert asked.result_code == X.EXT_RESULT_OK
        alice_session.protocol.transport.loseConnection()
        await alice_session.protocol.closed
        bob_session = await self.login("bob")
        bob = ExtensionClient(bob_session)
        await bob.hello(["contacts"])
        pending = await next_pdu(bob_session.protocol, X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        assert pending.message.request.request_id == asked.request_id
        assert pending.message.request.note == "are you there?"
        assert (await bob.accept(asked.request_id)).result_code == X.EXT_RESULT_OK
        await self.delivered(bob_id)
        again = await self.login("bob", client_type=IOS)
        await ExtensionClient(again).hello(["contacts"])
        await assert_nothing(again.protocol, X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        alice_session = await self.login("alice")
        await ExtensionClient(alice_session).hello(["contacts"])
        answer = await next_pdu(alice_session.protocol, X.CID_EXT_FRIEND_ANSWER_NOTIFY)
        assert answer.message.request.state == X.EXT_REQUEST_ACCEPTED
        await self.delivered(alice_session.user_id or 0)
        later = await self.login("alice", client_type=IOS)
        await ExtensionClient(later).hello(["contacts"])
        await assert_nothing(later.protocol, X.CID_EXT_FRIEND_ANSWER_NOTIFY)

    async def test_decline_tells_the_asker_and_allows_asking_again(self) -> None:
        """A declined request makes no friends, is reported to the asker, and the asker
        may ask again."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        alice_session, alice = await self.opted_in("alice")
        _, bob = await self.opted_in("bob")
        first = await alice.request(bob_id)
        assert (await bob.decline(first.request_id)).result_code == X.EXT_RESULT_OK
        told = await next_pdu(alice_session.protocol, X.CID_EXT_FRIEND_ANSWER_NOTIFY)
        assert told.message.request.state == X.EXT_REQUEST_DECLINED
        assert await self.friends_of(alice) == {}
        second = await alice.request(bob_id)
        assert second.result_code == X.EXT_RESULT_OK
        assert second.request_id != first.request_id

    async def test_refused_requests(self) -> None:
        """To yourself, to nobody, twice while pending, and to a friend: each refused
        with its own code and nothing stored."""
        alice_id = await self.add_user("alice")
        bob_id = await self.add_user("bob")
        _, alice = await self.opted_in("alice")
        _, bob = await self.opted_in("bob")
        assert (await alice.request(alice_id)).result_code == X.EXT_RESULT_BAD_REQUEST
        assert (await alice.request(99999)).result_code == X.EXT_RESULT_NO_SUCH_USER
        assert (await alice.request(bob_id, note="x" * 201)).result_code == (
            X.EXT_RESULT_BAD_REQUEST
        )
        first = await alice.request(bob_id)
        twice = await alice.request(bob_id)
        assert twice.result_code == X.EXT_RESULT_REQUEST_PENDING
        assert twice.request_id == first.request_id
        assert len((await bob.requests()).incoming) == 1
        await bob.accept(first.request_id)
        assert (await alice.request(bob_id)).result_code == X.EXT_RESULT_ALREADY_FRIENDS

    async def test_accepting_either_of_two_crossed_requests_answers_both(self) -> None:
        """Alice and Bob asked each other; Bob's accept leaves nothing pending either way."""
        alice_id = await self.add_user("alice")
        bob_id = await self.add_user("bob")
        _, alice = await self.opted_in("alice")
        _, bob = await self.opted_in("bob")
        to_bob = await alice.request(bob_id)
        assert (await bob.request(alice_id)).result_code == X.EXT_RESULT_OK
        assert (await bob.accept(to_bob.request_id)).result_code == X.EXT_RESULT_OK
        for side in (alice, bob):
            pending = await side.requests()
            assert (list(pending.incoming), list(pending.outgoing)) == ([], [])
        assert list(await self.friends_of(alice)) == [bob_id]

    async def test_remove_ends_the_friendship_on_both_sides(self) -> None:
        """Removal deletes both sides and tells the former friend; removing again is
        NOT_FRIENDS."""
        alice_id = await self.add_user("alice")
        bob_id = await self.add_user("bob")
        _, alice = await self.opted_in("alice")
        bob_session, bob = await self.opted_in("bob")
        await bob.accept((await alice.request(bob_id)).request_id)
        assert (await alice.remove(bob_id)).result_code == X.EXT_RESULT_OK
        gone = await next_pdu(bob_session.protocol, X.CID_EXT_FRIEND_REMOVED_NOTIFY)
        assert gone.message.user_id == alice_id
        assert await self.friends_of(bob) == {}
        assert (await alice.remove(bob_id)).result_code == X.EXT_RESULT_NOT_FRIENDS


class ActingUserTests(ContactsCase):
    """Impersonation attempts: another user's id where the caller's belongs."""

    async def test_requests_naming_another_user_are_refused(self) -> None:
        """Every contacts request with someone else's id in user_id is refused and
        changes nothing."""
        alice_id = await self.add_user("alice")
        bob_id = await self.add_user("bob")
        carol_id = await self.add_user("carol")
        alice_session, alice = await self.opted_in("alice")
        _, carol = await self.opted_in("carol")
        asked = await carol.request(bob_id)
        forged: list[tuple[int, Any, int]] = [
            (X.CID_EXT_FRIEND_REQUEST_REQ,
             X.IMExtFriendRequestReq(user_id=bob_id, to_user_id=carol_id), 0),
            (X.CID_EXT_FRIEND_ANSWER_REQ,
             X.IMExtFriendAnswerReq(user_id=bob_id, request_id=asked.request_id, accept=True), 0),
            (X.CID_EXT_FRIEND_LIST_REQ, X.IMExtFriendListReq(user_id=bob_id), 0),
            (X.CID_EXT_FRIEND_REQUEST_LIST_REQ, X.IMExtFriendRequestListReq(user_id=bob_id), 0),
            (X.CID_EXT_FRIEND_REMOVE_REQ,
             X.IMExtFriendRemoveReq(user_id=bob_id, friend_id=carol_id), 0),
            (X.CID_EXT_USER_SEARCH_REQ, X.IMExtUserSearchReq(user_id=bob_id, query="b"), 0),
        ]  # fmt: skip
        for command_id, request, _ in forged:
            answer = await alice_session.get(command_id, request)
            assert answer.result_code == X.EXT_RESULT_FORBIDDEN, (command_id, answer)
        pending = await carol.requests()
        assert [r.request_id for r in pending.outgoing] == [asked.request_id]
        assert await self.friends_of(carol) == {}
        assert (await alice.requests()).outgoing == []
        # The caller's own id in user_id is fine.
        own = await alice_session.get(
            X.CID_EXT_FRIEND_LIST_REQ, X.IMExtFriendListReq(user_id=alice_id)
        )
        assert own.result_code == X.EXT_RESULT_OK

    async def test_answering_a_request_addressed_to_someone_else_is_refused(self) -> None:
        """Alice cannot accept (or decline) Carol's request to Bob; it stays pending."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        await self.add_user("carol")
        _, alice = await self.opted_in("alice")
        _, carol = await self.opted_in("carol")
        asked = await carol.request(bob_id)
        assert (await alice.accept(asked.request_id)).result_code == X.EXT_RESULT_NO_SUCH_REQUEST
        assert (await alice.decline(asked.request_id)).result_code == (X.EXT_RESULT_NO_SUCH_REQUEST)
        assert (await carol.accept(asked.request_id)).result_code == X.EXT_RESULT_NO_SUCH_REQUEST
        assert [r.request_id for r in (await carol.requests()).outgoing] == [asked.request_id]
        assert await self.friends_of(carol) == {}

    async def test_removing_someone_elses_friendship_is_refused(self) -> None:
        """Alice naming Bob (Carol's friend, not hers) removes nothing."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        carol_id = await self.add_user("carol")
        _, alice = await self.opted_in("alice")
        _, bob = await self.opted_in("bob")
        _, carol = await self.opted_in("carol")
        await bob.accept((await carol.request(bob_id)).request_id)
        assert (await alice.remove(bob_id)).result_code == X.EXT_RESULT_NOT_FRIENDS
        assert (await alice.remove(carol_id)).result_code == X.EXT_RESULT_NOT_FRIENDS
        assert list(await self.friends_of(carol)) == [bob_id]
        assert list(await self.friends_of(bob)) == [carol_id]

    async def test_accept_without_a_request_is_refused(self) -> None:
        """An unknown request id, and a request accepted already, are NO_SUCH_REQUEST."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        _, alice = await self.opted_in("alice")
        _, bob = await self.opted_in("bob")
        assert (await bob.accept(12345)).result_code == X.EXT_RESULT_NO_SUCH_REQUEST
        asked = await alice.request(bob_id)
        assert (await bob.accept(asked.request_id)).result_code == X.EXT_RESULT_OK
        assert (await bob.accept(asked.request_id)).result_code == X.EXT_RESULT_NO_SUCH_REQUEST
        assert (await bob.decline(asked.request_id)).result_code == X.EXT_RESULT_NO_SUCH_REQUEST


class SearchTests(ContactsCase):
    async def test_search_finds_by_any_name_with_relations_and_no_secrets(self) -> None:
        """Login name, nickname and domain match case-insensitively; LIKE wildcards are
        literal; disabled users are not found; results say how each relates to the
        asker and carry no phone, e-mail or password."""
        alice_id = await self.add_user("alice", nick="Wonderland")
        bob_id = await self.add_user("bob", nick="Builder", phone="555", email="b@x.org")
        carol_id = await self.add_user("carol", domain="caroline_w")
        await self.add_user("100%real")
        _, alice = await self.opted_in("alice")
        await alice.request(bob_id)
        found = await alice.search("BUILD")
        assert [(u.user_id, u.real_name, u.relation) for u in found.users] == [
            (bob_id, "bob", X.EXT_RELATION_REQUEST_SENT)
        ]
        sent_fields = {f.name for f, _ in found.users[0].ListFields()}
        assert sent_fields <= {"user_id", "nick_name", "real_name", "avatar_url", "gender",
                               "relation"}  # fmt: skip
        assert [u.user_id for u in (await alice.search("line_")).users] == [carol_id]
        assert [u.real_name for u in (await alice.search("0%r")).users] == ["100%real"]
        assert (await alice.search("%")).users[0].real_name == "100%real"
        me = (await alice.search("wonder")).users
        assert [(u.user_id, u.relation) for u in me] == [(alice_id, X.EXT_RELATION_SELF)]
        assert (await alice.search("   ")).result_code == X.EXT_RESULT_BAD_REQUEST


class FriendsOnlyModeTests(ContactsCase):
    """``contacts`` mode: the buddy list is friends only and 1:1 messages need friendship."""

    async def test_one_to_one_messages_need_friendship(self) -> None:
        """To a stranger: no ack, nothing delivered (a refusal like the others); once
        friends: acked and delivered; after removal: refused again."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        alice_session, alice = await self.opted_in("alice")
        bob_session, bob = await self.opted_in("bob")
        alice_session.timeout = 1.0
        with self.assertRaises(TimeoutError):
            await alice_session.send_text(bob_id, "hello stranger")
        await assert_nothing(bob_session.protocol, B.CID_MSG_DATA)
        await bob.accept((await alice.request(bob_id)).request_id)
        ack = await alice_session.send_text(bob_id, "hello friend")
        assert ack.msg_id > 0
        got = await next_pdu(bob_session.protocol, B.CID_MSG_DATA)
        assert got.message.msg_id == ack.msg_id
        await alice.remove(bob_id)
        with self.assertRaises(TimeoutError):
            await alice_session.send_text(bob_id, "still there?")

    async def test_buddy_list_shows_self_and_friends_only(self) -> None:
        """The all-users and department answers hold the user, their friends and those
        people's departments, also for an incremental sync after a new friendship."""
        sales = await self.add_department("sales")
        dev = await self.add_department("dev")
        await self.add_department("legal")
        alice_id = await self.add_user("alice", department_id=sales)
        bob_id = await self.add_user("bob", department_id=dev)
        await self.add_user("carol")
        alice_session, alice = await self.opted_in("alice")
        _, bob = await self.opted_in("bob")

        async def directory(since: int = 0) -> tuple[list[int], list[int]]:
            users = await alice_session.get(
                B.CID_BUDDY_LIST_ALL_USER_REQUEST,
                Buddy_pb2.IMAllUserReq(user_id=alice_id, latest_update_time=since),
            )
            departments = await alice_session.get(
                B.CID_BUDDY_LIST_DEPARTMENT_REQUEST,
                Buddy_pb2.IMDepartmentReq(user_id=alice_id, latest_update_time=since),
            )
            return (
                sorted(u.user_id for u in users.user_list),
                sorted(d.dept_id for d in departments.dept_list),
            )

        assert await directory() == ([alice_id], [sales])
        await bob.accept((await alice.request(bob_id)).request_id)
        assert await directory(since=2**31) == ([alice_id, bob_id], sorted([sales, dev]))


class BothModeTests(ContactsCase):
    overrides = {"contacts.mode": "both"}

    async def test_both_mode_keeps_the_directory_and_free_messaging(self) -> None:
        """In ``both`` mode friend requests work, everybody is listed and strangers can
        chat, as in TeamTalk."""
        alice_id = await self.add_user("alice")
        bob_id = await self.add_user("bob")
        alice_session, alice = await self.opted_in("alice")
        users = await alice_session.get(
            B.CID_BUDDY_LIST_ALL_USER_REQUEST,
            Buddy_pb2.IMAllUserReq(user_id=alice_id, latest_update_time=0),
        )
        assert sorted(u.user_id for u in users.user_list) == [alice_id, bob_id]
        assert (await alice_session.send_text(bob_id, "hi")).msg_id > 0
        assert (await alice.request(bob_id)).result_code == X.EXT_RESULT_OK


class OptInTests(ContactsCase):
    async def test_connection_that_did_not_opt_in_sees_nothing_of_a_whole_flow(self) -> None:
        """Bob's plain TeamTalk connection gets no extension packet while his opted-in
        phone gets the request, and none after his own answer."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        alice_session, alice = await self.opted_in("alice")
        plain = await self.login("bob")
        phone, bob = await self.opted_in("bob", client_type=IOS)
        asked = await alice.request(bob_id, note="hello")
        await next_pdu(phone.protocol, X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        await bob.accept(asked.request_id)
        await next_pdu(alice_session.protocol, X.CID_EXT_FRIEND_ANSWER_NOTIFY)
        await alice.remove(bob_id)
        await next_pdu(phone.protocol, X.CID_EXT_FRIEND_REMOVED_NOTIFY)
        ext = lambda pdu: pdu.service_id == X.SID_EXTENSION  # noqa: E731
        try:
            pdu = await plain.protocol.wait_for(None, ext, timeout=0.3)
        except TimeoutError:
            pdu = None
        assert pdu is None, pdu
        msg = self.server.service("msg")
        assert msg.extension_packets_withheld == 0  # chosen by feature, never even tried

    async def test_contacts_requests_without_the_feature_are_not_enabled(self) -> None:
        """A connection that asked only for rooms is answered NOT_ENABLED."""
        await self.add_user("alice")
        session = await self.login("alice")
        extension = ExtensionClient(session)
        assert list((await extension.hello(["rooms"])).features) == ["rooms"]
        assert (await extension.friends()).result_code == X.EXT_RESULT_NOT_ENABLED
