"""Groups end to end over loopback with the client library: creating temporary groups,
member changes and their notifies, fixed group lists and infos, shield, group messages to
every member device, refusals left without an ack, unread, history, latest id, get by id,
recent sessions, a restart, packets from other nodes; and the one-encode fan-out to a
thousand members, whose connections sit on in-memory transports."""

from __future__ import annotations

import time

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from teamtalk_client import TeamTalkSession, decrypt_text, encode_pdu, encrypt_text
from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.msg.relay_tag import relay_tag, take_tag
from teamtalk_py.msg.route_client import LocalLink
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Group_pb2, Login_pb2, Message_pb2
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader
from teamtalk_py.store import accounts
from teamtalk_py.store import groups as group_store
from teamtalk_py.store.accounts import md5_hex
from teamtalk_py.wire.protocol import encode
from tests.msg_support import (
    IOS,
    PASSWORD,
    PC,
    MsgTestCase,
    assert_nothing,
    msg_data,
    next_pdu,
    send_windowed,
    sleep,
)
from tests.store_support import Gate

GROUP = B.SESSION_TYPE_GROUP
TEXT = B.MSG_TYPE_GROUP_TEXT
AUDIO = B.MSG_TYPE_GROUP_AUDIO
ADD = B.GROUP_MODIFY_TYPE_ADD
DEL = B.GROUP_MODIFY_TYPE_DEL
NOTIFY = B.CID_GROUP_CHANGE_MEMBER_NOTIFY


async def create(session: TeamTalkSession, name: str, members, kind=B.GROUP_TYPE_TMP):
    return await session.get(
        B.CID_GROUP_CREATE_REQUEST,
        Group_pb2.IMGroupCreateReq(
            user_id=0, group_type=kind, group_name=name, group_avatar="", member_id_list=members
        ),
    )


async def change(session: TeamTalkSession, group_id: int, kind: int, members):
    return await session.get(
        B.CID_GROUP_CHANGE_MEMBER_REQUEST,
        Group_pb2.IMGroupChangeMemberReq(
            user_id=0, change_type=kind, group_id=group_id, member_id_list=members
        ),
    )


async def infos(session: TeamTalkSession, known: dict[int, int]):
    req = Group_pb2.IMGroupInfoListReq(user_id=0)
    for group_id, version in known.items():
        req.group_version_list.add(group_id=group_id, version=version)
    return (await session.get(B.CID_GROUP_INFO_REQUEST, req)).group_info_list


async def history(session: TeamTalkSession, group_id: int, begin: int = 0, count: int = 50):
    answer = await session.message_list(group_id, GROUP, begin=begin, count=count)
    return [(m.msg_id, m.from_session_id, decrypt_text(m.msg_data)) for m in answer.msg_list]


async def by_ids(session: TeamTalkSession, group_id: int, ids: list[int]) -> list[int]:
    answer = await session.get(
        B.CID_MSG_GET_BY_MSG_ID_REQ,
        Message_pb2.IMGetMsgByIdReq(
            user_id=0, session_type=GROUP, session_id=group_id, msg_id_list=ids
        ),
    )
    return [m.msg_id for m in answer.msg_list]


async def sessions(session: TeamTalkSession):
    answer = await session.get(
        B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
        Buddy_pb2.IMRecentContactSessionReq(user_id=0, latest_update_time=0),
    )
    return [(s.session_id, s.session_type) for s in answer.contact_session_list]


def group_unread(answer) -> dict[int, int]:
    return {u.session_id: u.unread_cnt for u in answer.unreadinfo_list if u.session_type == GROUP}


def group_message(from_id: int, group_id: int, data: bytes, create_time: int = 0):
    return msg_data(group_id, data, create_time, msg_type=TEXT, from_id=from_id)


def say(session: TeamTalkSession, group_id: int, text: str):
    return session.send_text(group_id, text, session_type=GROUP)


class GroupTestCase(MsgTestCase):
    async def users(self, *names: str) -> list[int]:
        return [await self.add_user(name) for name in names]

    async def store_group(self, name: str, creator: int, members, kind) -> int:
        group, _ = await self.server.service("store").write(
            group_store.create_group, name, creator, members, kind, now=int(time.time())
        )
        return group.id


class CreateTests(GroupTestCase):
    async def test_client_creates_a_temporary_group_with_itself_in_it(self):
        """The answer has the new id and the members ascending, the creator included; the
        members are not notified; group info describes it at version 1."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        answer = await create(alice, "lunch", [c, b, b])
        assert answer.result_code == 0 and answer.group_name == "lunch"
        assert list(answer.user_id_list) == sorted((a, b, c))
        await assert_nothing(bob.protocol, NOTIFY)
        (info,) = await infos(alice, {answer.group_id: 0})
        assert (info.group_id, info.version, info.group_name) == (answer.group_id, 1, "lunch")
        assert (info.group_creator_id, info.group_type) == (a, B.GROUP_TYPE_TMP)
        assert sorted(info.group_member_list) == sorted((a, b, c))

    async def test_fixed_groups_and_nameless_groups_are_refused_with_result_1(self):
        """Clients may not create fixed groups, nor groups without a name: result 1."""
        _, bob_id = await self.users("alice", "bob")
        alice = await self.login("alice")
        fixed = await create(alice, "fixed", [bob_id], kind=B.GROUP_TYPE_NORMAL)
        nameless = await create(alice, "", [bob_id])
        assert (fixed.result_code, nameless.result_code) == (1, 1)
        assert not fixed.HasField("group_id")


class MemberTests(GroupTestCase):
    async def test_adding_members_notifies_added_and_current_members_on_every_device(self):
        """The requester gets the answer, everybody else in both lists (the requester's
        other devices included) gets one notify; outsiders get nothing; the version grows."""
        a, b, c, d = await self.users("alice", "bob", "carol", "dave")
        alice = await self.login("alice")
        alice_phone = await self.login("alice", client_type=IOS)
        bob = await self.login("bob")
        carol = await self.login("carol")
        dave = await self.login("dave")
        group_id = (await create(alice, "g", [b])).group_id
        answer = await change(alice, group_id, ADD, [c, b])
        assert answer.result_code == 0
        assert (list(answer.chg_user_id_list), list(answer.cur_user_id_list)) == (
            [c],
            sorted((a, b, c)),
        )
        for who in (alice_phone, bob, carol):
            notify = (await next_pdu(who.protocol, NOTIFY)).message
            assert (notify.user_id, notify.change_type, notify.group_id) == (a, ADD, group_id)
            assert list(notify.chg_user_id_list) == [c]
            assert sorted(notify.cur_user_id_list) == sorted((a, b, c))
            await assert_nothing(who.protocol, NOTIFY)
        await assert_nothing(alice.protocol, NOTIFY)
        await assert_nothing(dave.protocol, NOTIFY)
        (info,) = await infos(bob, {group_id: 1})
        assert info.version == 2
        assert await infos(bob, {group_id: 2}) == []

    async def test_removed_member_is_notified_and_gets_no_more_messages(self):
        """The creator removes bob: bob and the rest are told; later messages skip bob,
        and his history and unread are gone."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        carol = await self.login("carol")
        group_id = (await create(alice, "g", [b, c])).group_id
        await say(alice, group_id, "before")
        await next_pdu(bob.protocol, B.CID_MSG_DATA)
        await next_pdu(carol.protocol, B.CID_MSG_DATA)
        answer = await change(alice, group_id, DEL, [b])
        assert (answer.result_code, list(answer.chg_user_id_list)) == (0, [b])
        for who in (bob, carol):
            notify = (await next_pdu(who.protocol, NOTIFY)).message
            assert (notify.change_type, list(notify.chg_user_id_list)) == (DEL, [b])
            assert sorted(notify.cur_user_id_list) == sorted((a, c))
        await say(alice, group_id, "after")
        assert (await next_pdu(carol.protocol, B.CID_MSG_DATA)).message.msg_id == 2
        await assert_nothing(bob.protocol, B.CID_MSG_DATA)
        assert await history(bob, group_id) == []
        assert group_unread(await bob.unread_counts()) == {}
        bob.protocol.send(B.CID_MSG_DATA, group_message(b, group_id, encrypt_text("still here?")))
        await assert_nothing(bob.protocol, B.CID_MSG_DATA_ACK)
        await assert_nothing(carol.protocol, B.CID_MSG_DATA, within=0.01)

    async def test_outsiders_and_ordinary_members_may_not_change_what_they_may_not(self):
        """A non-member may not add (not even to a temporary group), a member may not
        remove, a missing group fails: result 1 and nobody is notified."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        carol = await self.login("carol")
        group_id = (await create(alice, "g", [b])).group_id
        assert (await change(carol, group_id, ADD, [c])).result_code == 1
        assert (await change(bob, group_id, DEL, [a])).result_code == 1
        assert (await change(alice, 987_654, ADD, [c])).result_code == 1
        assert (await change(alice, group_id, ADD, [b])).result_code == 1  # nobody new
        for who in (alice, bob, carol):
            await assert_nothing(who.protocol, NOTIFY)
        member_add = await change(bob, group_id, ADD, [c])
        assert (member_add.result_code, list(member_add.chg_user_id_list)) == (0, [c])

    async def test_creator_leaving_hands_the_group_to_the_earliest_member(self):
        """The creator may remove themselves; the member who joined first is the new
        creator (group info says so) and may remove members."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        group_id = (await create(alice, "g", [b])).group_id
        await change(alice, group_id, ADD, [c])
        assert (await change(alice, group_id, DEL, [a])).result_code == 0
        (info,) = await infos(bob, {group_id: 0})
        assert info.group_creator_id == b
        assert (await change(bob, group_id, DEL, [c])).result_code == 0

    async def test_group_info_answers_only_members(self):
        """Outsiders learn nothing about a group, not even its members."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        carol = await self.login("carol")
        group_id = (await create(alice, "g", [b])).group_id
        assert await infos(carol, {group_id: 0}) == []


class FixedGroupTests(GroupTestCase):
    async def test_normal_group_list_has_fixed_groups_with_versions(self):
        """Fixed groups of the user are listed with their versions; temporary groups
        and other people's groups are not."""
        a, b, c = await self.users("alice", "bob", "carol")
        fixed = await self.store_group("eng", 0, [a, b], group_store.GROUP_NORMAL)
        await self.store_group("ops", 0, [c], group_store.GROUP_NORMAL)
        await self.store_group("tmp", a, [b], group_store.GROUP_TMP)
        bob = await self.login("bob")
        answer = await bob.get(
            B.CID_GROUP_NORMAL_LIST_REQUEST, Group_pb2.IMNormalGroupListReq(user_id=0)
        )
        assert answer.user_id == b
        assert [(v.group_id, v.version) for v in answer.group_version_list] == [(fixed, 1)]

    async def test_only_the_creator_changes_a_fixed_group(self):
        """Members of a fixed group may not add people; its creator may."""
        a, b, c = await self.users("alice", "bob", "carol")
        fixed = await self.store_group("eng", a, [b], group_store.GROUP_NORMAL)
        alice = await self.login("alice")
        bob = await self.login("bob")
        assert (await change(bob, fixed, ADD, [c])).result_code == 1
        assert (await change(alice, fixed, ADD, [c])).result_code == 0


class ShieldTests(GroupTestCase):
    async def test_members_shield_a_group_which_still_counts_unread(self):
        """A member's shield is answered 0 and shows in their group info; a non-member's
        is answered 1; a shielded group's messages are still delivered and counted."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        carol = await self.login("carol")
        group_id = (await create(alice, "g", [b])).group_id

        async def shield(session, status):
            return await session.get(
                B.CID_GROUP_SHIELD_GROUP_REQUEST,
                Group_pb2.IMGroupShieldReq(user_id=0, group_id=group_id, shield_status=status),
            )

        answer = await shield(bob, 1)
        assert (answer.user_id, answer.group_id, answer.result_code) == (b, group_id, 0)
        assert (await shield(carol, 1)).result_code == 1
        (info,) = await infos(bob, {group_id: 0})
        assert info.shield_status == 1
        await say(alice, group_id, "hello")
        assert (await next_pdu(bob.protocol, B.CID_MSG_DATA)).message.msg_id == 1
        assert group_unread(await bob.unread_counts()) == {group_id: 1}
        assert (await shield(bob, 0)).result_code == 0
        (info,) = await infos(bob, {group_id: 0})
        assert info.shield_status == 0


class MessageTests(GroupTestCase):
    async def test_message_reaches_every_member_device_but_the_sending_connection(self):
        """Acked with id 1 once stored; the sender's phone and every other member get
        the same message (seq 0, real sender, server time); outsiders get nothing."""
        a, b, c, d = await self.users("alice", "bob", "carol", "dave")
        alice = await self.login("alice")
        alice_phone = await self.login("alice", client_type=IOS)
        bob = await self.login("bob")
        bob_phone = await self.login("bob", client_type=IOS)
        dave = await self.login("dave")
        group_id = (await create(alice, "g", [b, c])).group_id
        before = int(time.time())
        ack = await say(alice, group_id, "hello all")
        assert (ack.user_id, ack.session_id, ack.msg_id, ack.session_type) == (
            a,
            group_id,
            1,
            GROUP,
        )
        for who in (alice_phone, bob, bob_phone):
            pdu = await next_pdu(who.protocol, B.CID_MSG_DATA)
            m = pdu.message
            assert pdu.seq_num == 0
            assert (m.from_user_id, m.to_session_id, m.msg_id, m.msg_type) == (
                a,
                group_id,
                1,
                TEXT,
            )
            assert decrypt_text(m.msg_data) == "hello all" and m.create_time >= before
            assert not m.HasField("attach_data")
        await assert_nothing(alice.protocol, B.CID_MSG_DATA)
        await assert_nothing(dave.protocol, B.CID_MSG_DATA)

    async def test_audio_is_delivered_and_stored_like_text(self):
        """A group voice message keeps its payload byte for byte."""
        a, b = await self.users("alice", "bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        group_id = (await create(alice, "g", [b])).group_id
        voice = b"\x00\x00\x00\x03" + bytes(range(256))
        ack = await alice.send_message(group_id, AUDIO, voice)
        assert ack.msg_id == 1
        delivered = (await next_pdu(bob.protocol, B.CID_MSG_DATA)).message
        assert (delivered.msg_type, delivered.msg_data) == (AUDIO, voice)

    async def test_outsiders_and_bad_messages_get_no_ack_and_are_not_delivered(self):
        """A non-member, a missing group and an empty message get no ack (the shipped
        clients time out and offer a resend); no member receives anything and no id is
        used up."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        carol = await self.login("carol")
        group_id = (await create(alice, "g", [b])).group_id
        for sender, group, data in (
            (carol, group_id, encrypt_text("let me in")),
            (alice, 987_654, encrypt_text("anyone?")),
            (alice, group_id, b""),
        ):
            sender.protocol.send(B.CID_MSG_DATA, group_message(sender.user_id, group, data))
            await assert_nothing(sender.protocol, B.CID_MSG_DATA_ACK)
        await assert_nothing(bob.protocol, B.CID_MSG_DATA, within=0.01)
        assert (await say(alice, group_id, "real")).msg_id == 1
        assert a and c

    async def test_identical_messages_on_one_connection_are_all_stored(self):
        """Fifty messages with the same text and create_time on one connection, sixteen
        in flight: fifty ids, fifty deliveries to each member, fifty rows in history."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        carol = await self.login("carol")
        group_id = (await create(alice, "g", [b, c])).group_id
        message = group_message(a, group_id, encrypt_text("ok"), create_time=1_700_000_000)
        ids = await send_windowed(alice, [message] * 50, window=16)
        assert sorted(ids) == list(range(1, 51))
        for member in (bob, carol):
            got = [(await next_pdu(member.protocol, B.CID_MSG_DATA)).message for _ in ids]
            assert sorted(m.msg_id for m in got) == list(range(1, 51))
            await assert_nothing(member.protocol, B.CID_MSG_DATA)
        rows = await history(bob, group_id, count=100)
        assert sorted(r[0] for r in rows) == list(range(1, 51))
        assert {r[2] for r in rows} == {"ok"}

    async def test_resend_after_lost_ack_is_not_duplicated(self):
        """The same message (same create_time and payload) sent again on a new
        connection after the first one closed gets the same id and is delivered once."""
        a, b = await self.users("alice", "bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        group_id = (await create(alice, "g", [b])).group_id
        message = group_message(a, group_id, encrypt_text("once"), create_time=1_700_000_123)
        alice.protocol.send(B.CID_MSG_DATA, message)  # the ack is never read...
        await next_pdu(bob.protocol, B.CID_MSG_DATA)
        alice.protocol.transport.abortConnection()  # ...and lost with the connection
        again = await self.login("alice")
        assert (await again.get(B.CID_MSG_DATA, message)).msg_id == 1
        await assert_nothing(bob.protocol, B.CID_MSG_DATA)
        assert [m[0] for m in await history(bob, group_id)] == [1]
        assert (await say(again, group_id, "next")).msg_id == 2

    async def test_posts_from_several_members_with_some_offline(self):
        """Online members get each message as it is sent; an offline member finds exact
        unread counts, history and the group session when they log in, and a read ack
        clears the count and is synced to their other device."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        group_id = (await create(alice, "g", [b, c])).group_id
        await say(alice, group_id, "a1")
        await say(bob, group_id, "b1")
        await say(alice, group_id, "a2")
        got = [(await next_pdu(bob.protocol, B.CID_MSG_DATA)).message.msg_id for _ in range(2)]
        assert got == [1, 3]
        assert group_unread(await bob.unread_counts()) == {group_id: 1}  # alice's a2
        assert group_unread(await alice.unread_counts()) == {}  # posting a2 read b1 too
        carol = await self.login("carol")
        carol_phone = await self.login("carol", client_type=IOS)
        counts = await carol.unread_counts()
        (entry,) = counts.unreadinfo_list
        assert (entry.session_id, entry.session_type, entry.unread_cnt) == (group_id, GROUP, 3)
        assert (entry.latest_msg_id, entry.latest_msg_from_user_id) == (3, a)
        assert counts.total_cnt == 3
        assert await history(carol, group_id) == [(3, a, "a2"), (2, b, "b1"), (1, a, "a1")]
        assert await history(carol, group_id, begin=2, count=1) == [(2, b, "b1")]
        assert await sessions(carol) == [(group_id, GROUP)]
        carol.read_ack(group_id, 2, GROUP)
        notify = (await next_pdu(carol_phone.protocol, B.CID_MSG_READ_NOTIFY)).message
        assert (notify.user_id, notify.session_id, notify.session_type) == (c, group_id, GROUP)
        assert group_unread(await carol.unread_counts()) == {group_id: 1}
        carol.read_ack(group_id, 3, GROUP)
        await next_pdu(carol_phone.protocol, B.CID_MSG_READ_NOTIFY)
        assert group_unread(await carol.unread_counts()) == {}

    async def test_latest_id_and_get_by_id_respect_membership_and_join(self):
        """Members get the latest id and their messages by id; a member added later sees
        only what came after; outsiders get 0 and nothing."""
        a, b, c, d = await self.users("alice", "bob", "carol", "dave")
        alice = await self.login("alice")
        dave = await self.login("dave")
        group_id = (await create(alice, "g", [b])).group_id
        for i in range(3):
            await say(alice, group_id, f"m{i}")
        assert await alice.latest_msg_id(group_id, GROUP) == 3
        assert await by_ids(alice, group_id, [1, 3, 99]) == [3, 1]
        assert await dave.latest_msg_id(group_id, GROUP) == 0
        assert await by_ids(dave, group_id, [1, 2, 3]) == []
        await change(alice, group_id, ADD, [d])
        assert await dave.latest_msg_id(group_id, GROUP) == 0
        assert await history(dave, group_id) == []
        await say(alice, group_id, "welcome")
        assert await by_ids(dave, group_id, [1, 2, 3, 4]) == [4]
        assert await history(dave, group_id) == [(4, a, "welcome")]

    async def test_removed_group_session_comes_back_only_when_you_post(self):
        """A member who removed the group session does not see it again for others'
        messages; posting shows it again."""
        a, b = await self.users("alice", "bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        group_id = (await create(alice, "g", [b])).group_id
        await say(alice, group_id, "one")
        assert await sessions(bob) == [(group_id, GROUP)]
        removed = await bob.get(
            B.CID_BUDDY_LIST_REMOVE_SESSION_REQ,
            Buddy_pb2.IMRemoveSessionReq(user_id=0, session_type=GROUP, session_id=group_id),
        )
        assert removed.result_code == 0
        assert group_unread(await bob.unread_counts()) == {}
        await say(alice, group_id, "two")
        assert await sessions(bob) == []
        await say(bob, group_id, "back")
        assert await sessions(bob) == [(group_id, GROUP)]


class RestartTests(GroupTestCase):
    async def test_group_unread_history_and_ids_survive_a_restart(self):
        """After a restart on the same data dir: the same members, unread counts, history
        and sessions; ids continue; the shield flag is kept."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        group_id = (await create(alice, "g", [b, c])).group_id
        await bob.get(
            B.CID_GROUP_SHIELD_GROUP_REQUEST,
            Group_pb2.IMGroupShieldReq(user_id=0, group_id=group_id, shield_status=1),
        )
        await say(alice, group_id, "a1")
        await say(bob, group_id, "b1")
        await say(alice, group_id, "a2")
        bob.read_ack(group_id, 2, GROUP)
        await say(alice, group_id, "a3")  # read acks and messages share the writer queue

        await self.restart()

        carol = await self.login("carol")
        bob = await self.login("bob")
        assert group_unread(await carol.unread_counts()) == {group_id: 4}
        assert group_unread(await bob.unread_counts()) == {group_id: 2}
        assert [m[0] for m in await history(carol, group_id)] == [4, 3, 2, 1]
        assert await sessions(carol) == [(group_id, GROUP)]
        (info,) = await infos(bob, {group_id: 0})
        assert sorted(info.group_member_list) == sorted((a, b, c)) and info.shield_status == 1
        alice = await self.login("alice")
        assert (await say(alice, group_id, "after")).msg_id == 5
        assert (await next_pdu(carol.protocol, B.CID_MSG_DATA)).message.msg_id == 5


class OtherNodeTests(GroupTestCase):
    """Packets as another msg node sharing the database would send them through route."""

    async def test_message_from_another_node_reaches_all_local_member_devices(self):
        """Every connection of the members here gets it, the sender's included, with the
        routing blob removed; a member who joined after it does not."""
        a, b, d = await self.users("alice", "bob", "dave")
        store = self.server.service("store")
        group_id = await self.store_group("g", a, [b], group_store.GROUP_TMP)
        stored = await store.write(
            group_store.store_group_message, group_id, a, TEXT, encrypt_text("remote"), 1
        )
        await store.write(group_store.change_members, group_id, 0, ADD, [d], now=2)
        alice = await self.login("alice")
        bob = await self.login("bob")
        dave = await self.login("dave")
        relayed = Message_pb2.IMMsgData(
            from_user_id=a,
            to_session_id=group_id,
            msg_id=stored.message.msg_id,
            create_time=1,
            msg_type=TEXT,
            msg_data=encrypt_text("remote"),
            attach_data=relay_tag(0, stored.version),
        )
        self.server.service("msg").route_pdu_received(encode(B.CID_MSG_DATA, relayed))
        for who in (alice, bob):
            m = (await next_pdu(who.protocol, B.CID_MSG_DATA)).message
            assert (m.msg_id, decrypt_text(m.msg_data)) == (1, "remote")
            assert not m.HasField("attach_data")
        await assert_nothing(dave.protocol, B.CID_MSG_DATA)

    async def test_change_notify_from_another_node_is_delivered_once_and_refreshes_members(
        self,
    ):
        """Users in both lists get the notify once; the next local message goes to the
        members after that change."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        carol = await self.login("carol")
        group_id = (await create(alice, "g", [b])).group_id
        await say(alice, group_id, "warm the cache")
        await next_pdu(bob.protocol, B.CID_MSG_DATA)
        store = self.server.service("store")
        change_ = await store.write(group_store.change_members, group_id, 0, ADD, [c], now=1)
        notify = Group_pb2.IMGroupChangeMemberNotify(
            user_id=0,
            change_type=ADD,
            group_id=group_id,
            cur_user_id_list=change_.current,
            chg_user_id_list=change_.changed,
        )
        self.server.service("msg").route_pdu_received(encode(NOTIFY, notify))
        for who in (alice, bob, carol):
            await next_pdu(who.protocol, NOTIFY)
        await assert_nothing(carol.protocol, NOTIFY)
        await say(alice, group_id, "hi carol")
        assert (await next_pdu(carol.protocol, B.CID_MSG_DATA)).message.msg_id == 2

    async def test_admin_changes_are_picked_up_at_the_next_message(self):
        """Members added or removed directly in the store (teamtalk-admin) without any
        notify: the version stored with the next message makes the node reload."""
        a, b, c = await self.users("alice", "bob", "carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        carol = await self.login("carol")
        group_id = (await create(alice, "g", [b])).group_id
        await say(alice, group_id, "one")
        await next_pdu(bob.protocol, B.CID_MSG_DATA)
        store = self.server.service("store")
        await store.write(group_store.change_members, group_id, 0, ADD, [c], now=1)
        await store.write(group_store.change_members, group_id, 0, DEL, [b], now=1)
        await say(alice, group_id, "two")
        assert (await next_pdu(carol.protocol, B.CID_MSG_DATA)).message.msg_id == 2
        await assert_nothing(bob.protocol, B.CID_MSG_DATA)


# --------------------------------------------------------------------------------------
# Fan-out mechanics: many members, on in-memory transports


class RecordingTransport(StringTransport):
    """Twisted's in-memory transport that also keeps every written bytes object, by
    command id, so a test can tell one encoding written to many connections from copies."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 0))
        self.writes: dict[int, list[bytes]] = {}

    def write(self, data: bytes) -> None:
        self.writes.setdefault(PduHeader.unpack_from(data).command_id, []).append(data)
        super().write(data)

    def pdus(self, command_id: int) -> list[bytes]:
        return self.writes.get(command_id, [])


def message_pdu(sender: int, group_id: int, text: str, seq: int) -> bytes:
    body = Message_pb2.IMMsgData(
        from_user_id=sender,
        to_session_id=group_id,
        msg_id=0,
        create_time=0,
        msg_type=TEXT,
        msg_data=encrypt_text(text),
    )
    return encode_pdu(B.CID_MSG_DATA, body.SerializeToString(), seq_num=seq)


def body(pdu: bytes) -> Message_pb2.IMMsgData:
    return Message_pb2.IMMsgData.FromString(pdu[HEADER_SIZE:])


async def wait_until(predicate, what: str, timeout: float = 5.0) -> None:
    """Let the reactor run until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.01)


class FanOutTests(GroupTestCase):
    """Group fan-out through the running server's msg service, store and route hub.

    Each member connection is a ``MsgConnection`` of the server's own factory on an
    in-memory transport, logged in through the login handler, so hundreds of them cost
    no sockets; group messages enter through the same connections.
    """

    async def _set_up(self) -> None:
        await super()._set_up()
        self.msg = self.server.service("msg")
        self.store = self.server.service("store")
        self.local: list[MsgConnection] = []
        self.addCleanup(self._close_local)

    def _close_local(self) -> None:
        for conn in self.local:
            conn.connectionLost(Failure(ConnectionDone()))

    async def add_users(self, names: list[str]) -> list[int]:
        # One password record for all: the KDF is slow on purpose, and a thousand of
        # them would be what this test measures.
        record = accounts.password_record(PASSWORD)

        def add(txn, now: int) -> list[int]:
            return [
                accounts.add_user(txn, name, PASSWORD, now=now, record=record) for name in names
            ]

        return await self.store.write(add, int(time.time()))

    async def log_in_locally(
        self, names: list[str], client_type: int = PC
    ) -> list[tuple[MsgConnection, RecordingTransport]]:
        """A logged-in connection on an in-memory transport for each name."""
        opened = []
        for name in names:
            conn = self.msg.factory.buildProtocol(None)
            transport = RecordingTransport()
            conn.makeConnection(transport)
            self.local.append(conn)
            login = Login_pb2.IMLoginReq(
                user_name=name,
                password=md5_hex(PASSWORD),
                online_status=B.USER_STATUS_ONLINE,
                client_type=client_type,
                client_version="test",
            )
            conn.dataReceived(
                encode_pdu(B.CID_LOGIN_REQ_USERLOGIN, login.SerializeToString(), seq_num=1)
            )
            opened.append((conn, transport))
        await wait_until(lambda: all(c.logged_in for c, _ in opened), "the logins")
        return opened

    def reads_of(self, fn) -> list[tuple]:
        """The arguments of every read of ``fn`` through the store from now on: the store
        service's own ``read`` is still what runs, it is only watched."""
        calls: list[tuple] = []
        real_read = self.store.read

        def read(read_fn, *args, **kwargs):
            if read_fn is fn:
                calls.append(args)
            return real_read(read_fn, *args, **kwargs)

        self.patch(self.store, "read", read)
        return calls

    def other_node(self) -> list[bytes]:
        """What a second msg node linked to the route hub receives."""
        received: list[bytes] = []
        hub = self.server.service("route").hub
        link = LocalLink(received.append)
        hub.attach(link)
        self.addCleanup(hub.detach, link)
        return received

    async def test_one_encoding_is_written_to_every_member_connection(self):
        """1000 members, 500 online: every online connection but the sender's gets the
        very same bytes object; other nodes get one relayed copy; one member read."""
        ids = await self.add_users([f"user{i:03}" for i in range(1000)] + ["outsider"])
        members, sender_id = ids[:1000], ids[0]
        group_id = await self.store_group("big", sender_id, members, group_store.GROUP_TMP)
        online = [f"user{i:03}" for i in range(0, 1000, 2)]
        (sender, sender_wire), *others = await self.log_in_locally(online)
        (_, phone_wire), *_ = await self.log_in_locally([online[0]], client_type=IOS)
        (_, outsider_wire), *_ = await self.log_in_locally(["outsider"])
        receivers = [phone_wire] + [wire for _, wire in others]
        relayed = self.other_node()
        member_reads = self.reads_of(group_store.group_members)

        for n, text in enumerate(("first", "second"), 1):
            sender.dataReceived(message_pdu(sender_id, group_id, text, seq=n))
            await wait_until(
                lambda n=n: all(len(w.pdus(B.CID_MSG_DATA)) >= n for w in receivers),
                f"message {n} at every member connection",
            )

        acks = [body(p) for p in sender_wire.pdus(B.CID_MSG_DATA_ACK)]
        assert [a.msg_id for a in acks] == [1, 2]
        assert sender_wire.pdus(B.CID_MSG_DATA) == []
        assert outsider_wire.pdus(B.CID_MSG_DATA) == []
        counts = {len(w.pdus(B.CID_MSG_DATA)) for w in receivers}
        assert counts == {2}, counts
        for k, text in enumerate(("first", "second")):
            first = receivers[0].pdus(B.CID_MSG_DATA)[k]
            copies = [i for i, w in enumerate(receivers) if w.pdus(B.CID_MSG_DATA)[k] is not first]
            assert copies == [], (
                f"message {k + 1}: {len(copies)} receivers got another bytes object"
            )
            assert PduHeader.unpack_from(first).seq_num == 0
            m = body(first)
            assert (m.from_user_id, m.to_session_id, m.msg_id) == (sender_id, group_id, k + 1)
            assert decrypt_text(m.msg_data) == text and not m.HasField("attach_data")
        elsewhere = [
            body(p) for p in relayed if PduHeader.unpack_from(p).command_id == B.CID_MSG_DATA
        ]
        tags = [(m.msg_id, take_tag(m)) for m in elsewhere]
        assert [(msg_id, version) for msg_id, (_, version) in tags] == [(1, 1), (2, 1)]
        first_origin, second_origin = (origin for _, (origin, _) in tags)
        assert 0 < first_origin < second_origin, tags  # where each was stored, in order
        assert member_reads == [(group_id,)]

    async def test_a_newer_member_list_skips_members_who_joined_after_the_message(self):
        """A member added in the same commit as a message is in the member list the
        fan-out loads, newer than the message; their join watermark keeps it from them,
        and the next message reaches them."""
        a, b, d = await self.add_users(["alice", "bob", "dave"])
        group_id = await self.store_group("g", a, [b], group_store.GROUP_TMP)
        (alice, alice_wire), (_, bob_wire), (_, dave_wire) = await self.log_in_locally(
            ["alice", "bob", "dave"]
        )
        gate = Gate()
        gated = self.store.write(gate)
        await wait_until(gate.entered.is_set, "the writer to hold")
        alice.dataReceived(message_pdu(a, group_id, "before dave", seq=1))
        joined = self.store.write(group_store.change_members, group_id, a, ADD, [d], now=1)
        gate.release.set()
        await gated
        assert (await joined).version == 2
        await wait_until(lambda: bob_wire.pdus(B.CID_MSG_DATA), "the message at bob")

        assert [body(p).msg_id for p in alice_wire.pdus(B.CID_MSG_DATA_ACK)] == [1]
        cached = self.msg.groups.cache.get(group_id)
        assert cached is not None and cached.version == 2, cached  # the list with dave in it
        assert dave_wire.pdus(B.CID_MSG_DATA) == []
        alice.dataReceived(message_pdu(a, group_id, "hi dave", seq=2))
        await wait_until(lambda: dave_wire.pdus(B.CID_MSG_DATA), "the next message at dave")
        assert [body(p).msg_id for p in dave_wire.pdus(B.CID_MSG_DATA)] == [2]
        assert [body(p).msg_id for p in bob_wire.pdus(B.CID_MSG_DATA)] == [1, 2]
