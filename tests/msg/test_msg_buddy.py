"""Buddy-list commands end to end over loopback: the directory and its incremental sync,
departments, user info, recent sessions and their removal, presence (users status, status
notify, PC-login-status notify), avatar and signature changes with their notifications."""

from __future__ import annotations

import time

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2
from teamtalk_py.store import accounts
from tests.msg_support import (
    IOS,
    PC,
    MsgTestCase,
    assert_nothing,
    next_pdu,
)


async def all_users(session, since: int):
    return await session.get(
        B.CID_BUDDY_LIST_ALL_USER_REQUEST,
        Buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=since),
    )


async def departments(session, since: int):
    return await session.get(
        B.CID_BUDDY_LIST_DEPARTMENT_REQUEST,
        Buddy_pb2.IMDepartmentReq(user_id=0, latest_update_time=since),
    )


async def recent(session, since: int = 0):
    return await session.get(
        B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
        Buddy_pb2.IMRecentContactSessionReq(user_id=0, latest_update_time=since),
    )


async def statuses(session, ids):
    answer = await session.get(
        B.CID_BUDDY_LIST_USERS_STATUS_REQUEST,
        Buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=ids),
    )
    return [(s.user_id, s.status) for s in answer.user_stat_list]


class DirectoryTests(MsgTestCase):
    async def test_full_directory_lists_every_active_user_with_the_newest_update_time(self):
        """latest_update_time 0 returns all users who have not left, with their profiles."""
        dept = await self.add_department("Eng")
        a = await self.add_user("alice", nick="Alice", department_id=dept, now=1000)
        b = await self.add_user("bob", email="b@x.org", now=3000)
        gone = await self.add_user("carol", now=2000)
        store = self.server.service("store")
        await store.write(accounts.set_user_status, gone, accounts.USER_STATUS_LEFT, now=2500)
        alice = await self.login("alice")
        answer = await all_users(alice, 0)
        assert answer.user_id == a
        assert answer.latest_update_time == 3000
        by_id = {u.user_id: u for u in answer.user_list}
        assert sorted(by_id) == [a, b]
        assert (by_id[a].user_nick_name, by_id[a].department_id) == ("Alice", dept)
        assert by_id[b].email == "b@x.org"

    async def test_incremental_directory_returns_users_changed_since_the_watermark(self):
        """A non-zero watermark returns users with updated >= it (inclusive, as the reference),
        including users who left, so clients can hide them."""
        await self.add_user("alice", now=1000)
        b = await self.add_user("bob", now=2000)
        c = await self.add_user("carol", now=3000)
        alice = await self.login("alice")
        answer = await all_users(alice, 2000)
        assert sorted(u.user_id for u in answer.user_list) == [b, c]
        again = await all_users(alice, 3000)
        assert [u.user_id for u in again.user_list] == [c]
        assert again.latest_update_time == 3000
        store = self.server.service("store")
        await store.write(accounts.set_user_status, b, accounts.USER_STATUS_LEFT, now=4000)
        later = await all_users(alice, 3000)
        left = {u.user_id: u.status for u in later.user_list}
        assert left[b] == accounts.USER_STATUS_LEFT
        assert later.latest_update_time == 4000

    async def test_directory_watermark_newer_than_everything_returns_no_users(self):
        """Nothing changed since the watermark: an empty list echoing the request's time."""
        await self.add_user("alice", now=1000)
        alice = await self.login("alice")
        answer = await all_users(alice, 5000)
        assert list(answer.user_list) == []
        assert answer.latest_update_time == 5000

    async def test_departments_full_and_incremental(self):
        """Departments changed strictly after the watermark, with the newest update time."""
        d1 = await self.add_department("Eng", now=1000)
        d2 = await self.add_department("Sales", now=2000)
        await self.add_user("alice", department_id=d1)
        alice = await self.login("alice")
        full = await departments(alice, 0)
        assert [(d.dept_id, d.dept_name) for d in full.dept_list] == [(d1, "Eng"), (d2, "Sales")]
        assert full.latest_update_time == 2000
        newer = await departments(alice, 1000)
        assert [d.dept_id for d in newer.dept_list] == [d2]
        none = await departments(alice, 2000)
        assert list(none.dept_list) == []
        assert none.latest_update_time == 2000

    async def test_user_info_returns_known_ids_once_and_skips_unknown_ones(self):
        """Unknown ids are silently missing; a repeated id is answered once."""
        a = await self.add_user("alice", nick="Alice")
        b = await self.add_user("bob", nick="Bob")
        alice = await self.login("alice")
        answer = await alice.get(
            B.CID_BUDDY_LIST_USER_INFO_REQUEST,
            Buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[b, 999999, b, a, 0]),
        )
        assert answer.user_id == a
        assert sorted((u.user_id, u.user_nick_name) for u in answer.user_info_list) == [
            (a, "Alice"),
            (b, "Bob"),
        ]


class RecentSessionTests(MsgTestCase):
    async def test_recent_sessions_list_both_sides_newest_first_with_the_last_message(self):
        """After chatting, each side sees the session with the newest message and its sender;
        a watermark returns only sessions updated after it."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        carol = await self.login("carol")
        assert list((await recent(alice)).contact_session_list) == []
        await alice.send_text(b, "to bob")
        await bob.send_text(a, "reply")
        await carol.send_text(a, "from carol")
        mine = (await recent(alice)).contact_session_list
        assert [s.session_id for s in mine] == [c, b] or [s.session_id for s in mine] == [b, c]
        by_peer = {s.session_id: s for s in mine}
        assert by_peer[b].latest_msg_id == 2
        assert by_peer[b].latest_msg_from_user_id == b
        assert by_peer[b].session_type == B.SESSION_TYPE_SINGLE
        assert by_peer[b].session_status == B.SESSION_STATUS_OK
        assert by_peer[c].latest_msg_id == 1
        assert [s.updated_time for s in mine] == sorted(
            (s.updated_time for s in mine), reverse=True
        )
        newest = max(s.updated_time for s in mine)
        assert list((await recent(alice, newest)).contact_session_list) == []
        theirs = (await recent(bob)).contact_session_list
        assert [(s.session_id, s.latest_msg_id) for s in theirs] == [(a, 2)]

    async def test_remove_session_hides_it_clears_unread_and_tells_other_devices(self):
        """Removing a session answers 0, hides it, clears its unread count and notifies the
        user's other connections (not the requesting one, not the peer)."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob_pc = await self.login("bob", client_type=PC)
        bob_phone = await self.login("bob", client_type=IOS)
        await alice.send_text(b, "hello")
        await next_pdu(bob_phone.protocol, B.CID_MSG_DATA)
        await next_pdu(bob_pc.protocol, B.CID_MSG_DATA)
        answer = await bob_pc.get(
            B.CID_BUDDY_LIST_REMOVE_SESSION_REQ,
            Buddy_pb2.IMRemoveSessionReq(
                user_id=0, session_type=B.SESSION_TYPE_SINGLE, session_id=a
            ),
        )
        assert (answer.user_id, answer.result_code, answer.session_id) == (b, 0, a)
        notify = await next_pdu(bob_phone.protocol, B.CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY)
        assert (notify.message.user_id, notify.message.session_id) == (b, a)
        await assert_nothing(bob_pc.protocol, B.CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY)
        await assert_nothing(alice.protocol, B.CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY, within=0.02)
        assert list((await recent(bob_pc)).contact_session_list) == []
        assert (await bob_pc.unread_counts()).total_cnt == 0
        assert [s.session_id for s in (await recent(alice)).contact_session_list] == [b]

    async def test_removing_a_missing_session_answers_1_and_a_new_message_shows_it_again(self):
        """No visible session: result 1. A later message brings a removed session back."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        remove = Buddy_pb2.IMRemoveSessionReq(
            user_id=0, session_type=B.SESSION_TYPE_SINGLE, session_id=a
        )
        assert (await bob.get(B.CID_BUDDY_LIST_REMOVE_SESSION_REQ, remove)).result_code == 1
        await alice.send_text(b, "one")
        assert (await bob.get(B.CID_BUDDY_LIST_REMOVE_SESSION_REQ, remove)).result_code == 0
        assert (await bob.get(B.CID_BUDDY_LIST_REMOVE_SESSION_REQ, remove)).result_code == 1
        await alice.send_text(b, "two")
        sessions = (await recent(bob)).contact_session_list
        assert [(s.session_id, s.latest_msg_id) for s in sessions] == [(a, 2)]


class PresenceTests(MsgTestCase):
    async def test_users_status_is_online_only_with_a_pc_client(self):
        """ONLINE needs a PC connection (the reference's rule); mobile-only, offline and
        unknown users are OFFLINE, in the requested order."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice", client_type=PC)
        await self.login("bob", client_type=IOS)
        assert await statuses(alice, [c, b, a, 424242]) == [
            (c, B.USER_STATUS_OFFLINE),
            (b, B.USER_STATUS_OFFLINE),
            (a, B.USER_STATUS_ONLINE),
            (424242, B.USER_STATUS_OFFLINE),
        ]

    async def test_pc_login_and_logout_are_announced_to_every_pc_connection(self):
        """A PC login or logout sends a status notify to every PC connection (the subject's
        own included) and never to mobiles; a mobile login announces nothing."""
        await self.add_user("alice")
        b = await self.add_user("bob")
        alice_pc = await self.login("alice", client_type=PC)
        alice_phone = await self.login("alice", client_type=IOS)
        own = await next_pdu(alice_pc.protocol, B.CID_BUDDY_LIST_STATUS_NOTIFY)
        assert own.message.user_stat.user_id == alice_pc.user_id
        await self.login("bob", client_type=IOS)
        await assert_nothing(alice_pc.protocol, B.CID_BUDDY_LIST_STATUS_NOTIFY)
        bob = await self.login("bob", client_type=PC)
        online = await next_pdu(alice_pc.protocol, B.CID_BUDDY_LIST_STATUS_NOTIFY)
        assert online.seq_num == 0
        assert (online.message.user_stat.user_id, online.message.user_stat.status) == (
            b,
            B.USER_STATUS_ONLINE,
        )
        await bob.logout()
        offline = await next_pdu(alice_pc.protocol, B.CID_BUDDY_LIST_STATUS_NOTIFY)
        assert (offline.message.user_stat.user_id, offline.message.user_stat.status) == (
            b,
            B.USER_STATUS_OFFLINE,
        )
        await assert_nothing(alice_phone.protocol, B.CID_BUDDY_LIST_STATUS_NOTIFY)

    async def test_mobile_is_told_when_its_pc_client_logs_in_and_out(self):
        """The user's phone gets PC-login-status ONLINE when the PC logs in, OFFLINE after."""
        a = await self.add_user("alice")
        phone = await self.login("alice", client_type=IOS)
        pc = await self.login("alice", client_type=PC)
        notify = await next_pdu(phone.protocol, B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY)
        assert (notify.message.user_id, notify.message.login_stat) == (a, B.USER_STATUS_ONLINE)
        await pc.logout()
        notify = await next_pdu(phone.protocol, B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY)
        assert (notify.message.user_id, notify.message.login_stat) == (a, B.USER_STATUS_OFFLINE)
        await assert_nothing(phone.protocol, B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY)


class ProfileChangeTests(MsgTestCase):
    overrides = {"media.avatar_hosts": "img.example"}

    async def test_change_avatar_is_stored_answered_and_announced_to_everybody(self):
        """The avatar is stored, answered with result 0 and announced to every connection."""
        a = await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.login("alice")
        bob_phone = await self.login("bob", client_type=IOS)
        url = "http://img.example/alice.png"
        answer = await alice.get(
            B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST,
            Buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url=url),
        )
        assert (answer.user_id, answer.result_code) == (a, 0)
        for session in (alice, bob_phone):
            notify = await next_pdu(session.protocol, B.CID_BUDDY_LIST_AVATAR_CHANGED_NOTIFY)
            assert (notify.message.changed_user_id, notify.message.avatar_url) == (a, url)
        info = await bob_phone.get(
            B.CID_BUDDY_LIST_USER_INFO_REQUEST,
            Buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[a]),
        )
        assert info.user_info_list[0].avatar_url == url

    async def test_oversize_avatar_url_is_refused_with_result_1(self):
        """An avatar URL the store cannot hold gets result 1 and no notification."""
        await self.add_user("alice")
        alice = await self.login("alice")
        answer = await alice.get(
            B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST,
            Buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url="x" * 5000),
        )
        assert answer.result_code == 1
        await assert_nothing(alice.protocol, B.CID_BUDDY_LIST_AVATAR_CHANGED_NOTIFY)

    async def test_change_sign_info_is_announced_to_every_connection_and_synced(self):
        """A new signature answers 0 with the text, reaches every PC and mobile connection
        (the author's included) and shows up in the incremental directory."""
        a = await self.add_user("alice", now=1000)
        await self.add_user("bob", now=1000)
        alice = await self.login("alice", client_type=PC)
        bob_pc = await self.login("bob", client_type=PC)
        bob_phone = await self.login("bob", client_type=IOS)
        before = int(time.time())
        answer = await alice.get(
            B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST,
            Buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info="在开会"),
        )
        assert (answer.user_id, answer.result_code, answer.sign_info) == (a, 0, "在开会")
        for session in (alice, bob_pc, bob_phone):
            notify = await next_pdu(session.protocol, B.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY)
            assert (notify.message.changed_user_id, notify.message.sign_info) == (a, "在开会")
        changed = await all_users(bob_pc, 1001)
        assert [(u.user_id, u.sign_info) for u in changed.user_list] == [(a, "在开会")]
        assert changed.latest_update_time >= before

    async def test_signature_over_128_bytes_is_refused_without_notification(self):
        """More than 128 UTF-8 bytes: result 1, nothing stored, nobody notified."""
        a = await self.add_user("alice")
        alice = await self.login("alice")
        answer = await alice.get(
            B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST,
            Buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info="签" * 43),  # 129 bytes
        )
        assert answer.result_code == 1
        assert not answer.HasField("sign_info")
        await assert_nothing(alice.protocol, B.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY)
        (row,) = await self.server.service("store").read(accounts.get_users_by_ids, [a])
        assert row.sign_info == ""
