"""Login-service commands end to end over loopback: login answers, duplicate-login kicks,
the mobile's "kick my PC", logout, device token, push shield, lockout, the login and idle
deadlines, and what a connection gets before it has logged in (nothing but heartbeats)."""

from __future__ import annotations

import hashlib
import time

from twisted.logger import formatEvent, globalLogPublisher

from teamtalk_client import TeamTalkSession, encode_pdu
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Login_pb2, Message_pb2
from teamtalk_py.store import accounts
from tests.msg_support import (
    ANDROID,
    IOS,
    MAC,
    PASSWORD,
    PC,
    MsgTestCase,
    assert_nothing,
    closed_within,
    next_pdu,
)
from tests.node_support import NodeTestCase

WRONG = "用户名/密码错误"
DISABLED = "账号已停用"
TOO_MANY = "用户名/密码错误次数太多"


async def kicked(session: TeamTalkSession, reason: int) -> None:
    """Assert the server kicked this connection for ``reason`` and closed it."""
    pdu = await next_pdu(session.protocol, B.CID_LOGIN_KICK_USER)
    assert pdu.seq_num == 0
    assert pdu.message.user_id == session.user_id
    assert pdu.message.kick_reason == reason
    assert await closed_within(session.protocol, 2)


class LoginTests(MsgTestCase):
    async def test_login_answers_success_with_full_user_info_and_requested_status(self):
        """A good login gets result 0, "成功", the requested status, server time and the
        account's profile."""
        dept = await self.add_department("Engineering")
        uid = await self.add_user(
            "alice", nick="Alice", department_id=dept, sex=2, phone="555", email="a@x.org"
        )
        before = int(time.time())
        answer, session = await self.attempt("alice", PASSWORD, online_status=B.USER_STATUS_LEAVE)
        assert answer.result_code == B.REFUSE_REASON_NONE
        assert answer.result_string == "成功"
        assert answer.online_status == B.USER_STATUS_LEAVE
        assert before <= answer.server_time <= int(time.time()) + 1
        info = answer.user_info
        assert (info.user_id, info.user_real_name, info.user_nick_name) == (uid, "alice", "Alice")
        assert (info.department_id, info.user_gender) == (dept, 2)
        assert (info.user_tel, info.email) == ("555", "a@x.org")
        assert info.status == 0
        assert session.user_id == uid

    async def test_a_login_is_logged_with_its_peer(self):
        """A login (while logins are few) is one line naming user, name, client type and
        the connection's host:port (the peer is made into text only for a written line)."""
        uid = await self.add_user("alice")
        lines: list[str] = []
        observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        answer, session = await self.attempt("alice", PASSWORD)
        assert answer.result_code == B.REFUSE_REASON_NONE
        port = session.protocol.transport.getHost().port
        logins = [line for line in lines if line.startswith(f"login {uid} ")]
        assert logins == [f"login {uid} ('alice') client type 1 from 127.0.0.1:{port}"]

    async def test_wrong_password_and_unknown_name_get_code_6_and_are_closed(self):
        """Both get the same refusal (code 6, the reference's text) and a closed socket."""
        await self.add_user("alice")
        for name, password in (("alice", "wrong"), ("nobody", PASSWORD)):
            answer, session = await self.attempt(name, password)
            assert answer.result_code == B.REFUSE_REASON_DB_VALIDATE_FAILED
            assert answer.result_string == WRONG
            assert not answer.HasField("user_info")
            assert await closed_within(session.protocol, 2)

    async def test_disabled_account_is_told_so_and_every_refusal_is_logged(self):
        """A disabled account with its right password is told it is disabled (with a
        wrong one, only that the password is wrong); each refusal is one log line with
        the name tried and the reason, and never the password."""
        uid = await self.add_user("alice")
        await self.server.service("store").write(
            accounts.set_user_status, uid, accounts.USER_STATUS_LEFT, now=int(time.time())
        )
        lines: list[str] = []
        observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        answer, _ = await self.attempt("alice", PASSWORD)
        assert answer.result_code == B.REFUSE_REASON_DB_VALIDATE_FAILED
        assert answer.result_string == DISABLED
        answer, _ = await self.attempt("alice", "wrong")
        assert answer.result_string == WRONG
        answer, _ = await self.attempt("nobody\nforged", "x")
        refusals = [line for line in lines if line.startswith("login refused for ")]
        assert len(refusals) == 3, lines
        assert refusals[0].startswith("login refused for 'alice' from 127.0.0.1:")
        assert refusals[0].endswith(": disabled")
        assert refusals[1].endswith(": wrong_password")
        assert refusals[2].startswith("login refused for 'nobody\\nforged' from 127.0.0.1:")
        assert refusals[2].endswith(": unknown_user")
        md5 = hashlib.md5(PASSWORD.encode()).hexdigest()
        assert not [line for line in lines if PASSWORD in line or md5 in line]

    async def test_password_digest_is_accepted_in_upper_case(self):
        """Clients send hex MD5; an upper-case digest is the same password."""
        await self.add_user("alice")
        digest = hashlib.md5(PASSWORD.encode()).hexdigest().upper()
        answer = await TeamTalkSession(await self.connect()).login("alice", password_md5=digest)
        assert answer.result_code == B.REFUSE_REASON_NONE

    async def test_second_login_request_on_one_connection_is_ignored(self):
        """Only the first login request of a connection is answered."""
        await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.login("alice")
        req = Login_pb2.IMLoginReq(
            user_name="bob",
            password=hashlib.md5(PASSWORD.encode()).hexdigest(),
            online_status=B.USER_STATUS_ONLINE,
            client_type=PC,
        )
        with self.assertRaises(TimeoutError):
            await alice.protocol.request(B.CID_LOGIN_REQ_USERLOGIN, req, timeout=0.3)
        users = await alice.get(
            B.CID_BUDDY_LIST_ALL_USER_REQUEST,
            Buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=0),
        )
        assert users.user_id == alice.user_id  # still logged in, as alice

    async def test_malformed_login_body_is_dropped_and_a_valid_login_still_works(self):
        """An unparseable login is ignored; the connection may then log in properly."""
        await self.add_user("alice")
        protocol = await self.connect()
        protocol.send(B.CID_LOGIN_REQ_USERLOGIN, b"\xff\xff\xff")
        partial = Login_pb2.IMLoginReq(user_name="alice").SerializePartialToString()
        protocol.send(B.CID_LOGIN_REQ_USERLOGIN, partial)  # required fields missing
        await assert_nothing(protocol)
        answer = await TeamTalkSession(protocol).login("alice", PASSWORD)
        assert answer.result_code == B.REFUSE_REASON_NONE


class KickTests(MsgTestCase):
    async def test_second_login_of_the_same_category_kicks_the_first(self):
        """PC kicks PC (Windows/Mac alike) and mobile kicks mobile (iOS/Android alike); the
        kicked connection is told why and closed, the newcomer works."""
        bob = None
        for first, second in ((PC, MAC), (MAC, PC), (IOS, ANDROID), (ANDROID, ANDROID)):
            name = f"user{first}_{second}"
            await self.add_user(name)
            old = await self.login(name, client_type=first)
            new = await self.login(name, client_type=second)
            await kicked(old, B.KICK_REASON_DUPLICATE_USER)
            if bob is None:
                await self.add_user("bob")
                bob = await self.login("bob")
            ack = await bob.send_text(new.user_id, "hi")
            assert ack.msg_id == 1
            delivered = await next_pdu(new.protocol, B.CID_MSG_DATA)
            assert delivered.message.msg_id == 1

    async def test_pc_and_mobile_of_one_account_stay_logged_in_together(self):
        """A mobile login does not kick the PC one, nor the other way round."""
        await self.add_user("alice")
        pc = await self.login("alice", client_type=PC)
        phone = await self.login("alice", client_type=IOS)
        mac = await self.login("alice", client_type=MAC)
        await kicked(pc, B.KICK_REASON_DUPLICATE_USER)
        await assert_nothing(phone.protocol, B.CID_LOGIN_KICK_USER)
        await assert_nothing(mac.protocol, B.CID_LOGIN_KICK_USER, within=0.01)
        assert not phone.protocol.closed.called and not mac.protocol.closed.called

    async def test_kicked_connection_gets_no_more_deliveries(self):
        """After a duplicate-login kick, messages go to the new connection only."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        old = await self.login("bob")
        new = await self.login("bob")
        await next_pdu(old.protocol, B.CID_LOGIN_KICK_USER)
        alice = await self.login("alice")
        await alice.send_text(bob_id, "after the kick")
        await next_pdu(new.protocol, B.CID_MSG_DATA)
        await assert_nothing(old.protocol, B.CID_MSG_DATA)

    async def test_duplicate_login_does_not_announce_the_user_offline(self):
        """Replacing a PC login is no logout: watchers and the user's phone never see the
        user's PC go offline in between."""
        uid = await self.add_user("alice")
        await self.add_user("bob")
        watcher = await self.login("bob", client_type=PC)
        phone = await self.login("alice", client_type=IOS)
        old = await self.login("alice", client_type=PC)
        await next_pdu(phone.protocol, B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY)
        await self.login("alice", client_type=MAC)
        await kicked(old, B.KICK_REASON_DUPLICATE_USER)

        def alice_offline(pdu) -> bool:
            stat = pdu.message.user_stat
            return (stat.user_id, stat.status) == (uid, B.USER_STATUS_OFFLINE)

        with self.assertRaises(TimeoutError):
            await watcher.protocol.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, alice_offline, 0.2)
        with self.assertRaises(TimeoutError):
            await phone.protocol.wait_for(
                B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY,
                lambda pdu: pdu.message.login_stat == B.USER_STATUS_OFFLINE,
                0.01,
            )

    async def test_mobile_kick_pc_client_kicks_the_pc_and_answers(self):
        """A mobile's "kick my PC" kicks the PC login with reason 2 and answers result 0."""
        uid = await self.add_user("alice")
        pc = await self.login("alice", client_type=MAC)
        phone = await self.login("alice", client_type=ANDROID)
        answer = await phone.get(
            B.CID_LOGIN_REQ_KICKPCCLIENT, Login_pb2.IMKickPCClientReq(user_id=0)
        )
        assert (answer.user_id, answer.result_code) == (uid, 0)
        await kicked(pc, B.KICK_REASON_MOBILE_KICK)
        assert not phone.protocol.closed.called

    async def test_kick_pc_client_from_a_pc_is_ignored(self):
        """Only a mobile connection may ask; a PC asking gets no answer and kicks nobody."""
        await self.add_user("alice")
        pc = await self.login("alice", client_type=PC)
        phone = await self.login("alice", client_type=IOS)
        with self.assertRaises(TimeoutError):
            await pc.protocol.request(
                B.CID_LOGIN_REQ_KICKPCCLIENT, Login_pb2.IMKickPCClientReq(user_id=0), timeout=0.3
            )
        assert not pc.protocol.closed.called and not phone.protocol.closed.called


class AccountChangeTests(NodeTestCase):
    """Disabling, a password change or an admin's kick end live sessions; an old
    md5(md5 + salt) row logs in and is rewritten as scrypt. On the node's fake clock: each
    check interval passes when the test says so."""

    overrides = {"msg.account_check_interval": 0.05}

    def change(self, fn, *args) -> None:
        assert self.node.store is not None
        now = int(self.reactor.seconds())
        self.get_success(self.node.store.write(fn, *args, now=now))

    def kicked(self, session: TeamTalkSession, reason: int) -> None:
        """Within the next check interval the server kicked this connection for
        ``reason`` and closed it."""
        self.advance(0.1)
        pdu = self.get_success(session.protocol.wait_for(B.CID_LOGIN_KICK_USER, timeout=1))
        assert pdu.seq_num == 0
        assert pdu.message.user_id == session.user_id
        assert pdu.message.kick_reason == reason
        assert self.is_closed(session.protocol)

    def not_kicked(self, session: TeamTalkSession) -> None:
        """Six more check intervals pass without a kick."""
        self.advance(0.3)
        pending = [p.command_id for p in session.protocol.notifications.pending]
        assert B.CID_LOGIN_KICK_USER not in pending
        assert not self.is_closed(session.protocol)

    def test_disabling_kicks_every_live_session_of_that_user_only(self):
        """alice's PC and phone are kicked and closed within the check interval; bob
        stays; alice's next login is told the account is disabled."""
        alice = self.add_user("alice")
        self.add_user("bob")
        pc = self.login("alice", client_type=PC)
        phone = self.login("alice", client_type=IOS)
        bob = self.login("bob")
        self.change(accounts.set_user_status, alice, accounts.USER_STATUS_LEFT)
        self.kicked(pc, B.KICK_REASON_DUPLICATE_USER)
        self.kicked(phone, B.KICK_REASON_DUPLICATE_USER)
        assert not self.is_closed(bob.protocol)
        answer, _ = self.attempt("alice", PASSWORD)
        assert answer.result_string == DISABLED

    def test_password_change_and_admin_kick_end_sessions_but_new_logins_stay(self):
        """After a password change the old session is kicked and the new password logs
        in and stays; end_sessions (teamtalk-admin user kick) kicks that one too."""
        alice = self.add_user("alice")
        old = self.login("alice")
        self.change(accounts.set_password, alice, "n3w-secret")
        self.kicked(old, B.KICK_REASON_DUPLICATE_USER)
        new = self.login("alice", "n3w-secret")
        self.not_kicked(new)
        self.change(accounts.end_sessions, alice)
        self.kicked(new, B.KICK_REASON_DUPLICATE_USER)
        again = self.login("alice", "n3w-secret")
        self.not_kicked(again)

    def test_an_old_md5_row_logs_in_and_is_rewritten_as_scrypt(self):
        """A row in the reference's md5(md5(pw) + salt) form (an imported TeamTalk user)
        logs in with the same password, is rewritten as scrypt without ending the session,
        and still logs in afterwards."""
        store = self.node.store
        assert store is not None
        uid = self.add_user("legacy")
        md5 = hashlib.md5(b"teamtalk-pw").hexdigest()
        legacy = hashlib.md5((md5 + "4711").encode()).hexdigest()
        self.get_success(store.write(set_raw_password, uid, legacy, "4711"))
        session = self.login("legacy", "teamtalk-pw")

        def rewritten() -> bool:
            (row,) = self.get_success(store.read(accounts.get_users_by_ids, [uid]))
            return row.password_hash.startswith("scrypt$")

        self.wait_until(rewritten, "the md5 row rewritten as scrypt")
        self.not_kicked(session)
        self.login("legacy", "teamtalk-pw")
        answer, _ = self.attempt("legacy", "wrong")
        assert answer.result_string == WRONG


def set_raw_password(txn, user_id: int, password_hash: str, salt: str) -> None:
    txn.execute(
        "UPDATE users SET password_hash = ?, salt = ? WHERE id = ?", (password_hash, salt, user_id)
    )


class LogoutAndSettingsTests(MsgTestCase):
    async def test_logout_answers_then_closes_and_the_user_goes_offline(self):
        """Logout gets result 0, the connection closes and the user is reported offline."""
        uid = await self.add_user("alice")
        await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        answer = await alice.logout()
        assert answer.result_code == 0
        assert await closed_within(alice.protocol, 2)
        status = await bob.get(
            B.CID_BUDDY_LIST_USERS_STATUS_REQUEST,
            Buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=[uid]),
        )
        assert [(s.user_id, s.status) for s in status.user_stat_list] == [
            (uid, B.USER_STATUS_OFFLINE)
        ]

    async def tokens(self, uid: int):
        return await self.server.service("store").read(accounts.get_device_tokens, [uid])

    async def test_mobile_device_token_is_stored_answered_and_cleared_on_logout(self):
        """A phone's token is answered with its user id and stored; logout forgets it."""
        uid = await self.add_user("alice")
        phone = await self.login("alice", client_type=IOS)
        answer = await phone.get(
            B.CID_LOGIN_REQ_DEVICETOKEN,
            Login_pb2.IMDeviceTokenReq(user_id=0, device_token="ab" * 32),
        )
        assert answer.user_id == uid
        [row] = await self.tokens(uid)
        assert (row.token, row.client_type) == ("ab" * 32, IOS)
        await phone.logout()
        assert await self.tokens(uid) == []

    async def test_device_token_from_a_pc_is_ignored(self):
        """PC clients have no push token: no answer and nothing stored."""
        uid = await self.add_user("alice")
        pc = await self.login("alice", client_type=PC)
        with self.assertRaises(TimeoutError):
            await pc.protocol.request(
                B.CID_LOGIN_REQ_DEVICETOKEN,
                Login_pb2.IMDeviceTokenReq(user_id=0, device_token="tok"),
                timeout=0.3,
            )
        assert await self.tokens(uid) == []

    async def test_push_shield_is_set_and_queried_back(self):
        """Setting push shield 1 answers it back; the query returns the stored value."""
        uid = await self.add_user("alice")
        phone = await self.login("alice", client_type=IOS)
        query = Login_pb2.IMQueryPushShieldReq(user_id=0)
        before = await phone.get(B.CID_LOGIN_REQ_QUERY_PUSH_SHIELD, query)
        assert (before.user_id, before.result_code, before.shield_status) == (uid, 0, 0)
        answer = await phone.get(
            B.CID_LOGIN_REQ_PUSH_SHIELD, Login_pb2.IMPushShieldReq(user_id=0, shield_status=1)
        )
        assert (answer.user_id, answer.result_code, answer.shield_status) == (uid, 0, 1)
        after = await phone.get(B.CID_LOGIN_REQ_QUERY_PUSH_SHIELD, query)
        assert (after.result_code, after.shield_status) == (0, 1)

    async def test_push_shield_with_an_unknown_value_is_refused(self):
        """Shield values other than 0 and 1 answer result 1 and change nothing."""
        await self.add_user("alice")
        phone = await self.login("alice", client_type=IOS)
        answer = await phone.get(
            B.CID_LOGIN_REQ_PUSH_SHIELD, Login_pb2.IMPushShieldReq(user_id=0, shield_status=7)
        )
        assert answer.result_code == 1
        after = await phone.get(
            B.CID_LOGIN_REQ_QUERY_PUSH_SHIELD, Login_pb2.IMQueryPushShieldReq(user_id=0)
        )
        assert after.shield_status == 0


class BeforeLoginTests(MsgTestCase):
    async def test_commands_before_login_get_nothing_but_heartbeat_echoes(self):
        """Before login every request other than login is ignored (no data leaks, nothing
        is stored); heartbeats are echoed."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        bob = await self.login("bob")
        protocol = await self.connect()
        requests = [
            Buddy_pb2.IMAllUserReq(user_id=bob_id, latest_update_time=0),
            Buddy_pb2.IMDepartmentReq(user_id=bob_id, latest_update_time=0),
            Buddy_pb2.IMUsersInfoReq(user_id=bob_id, user_id_list=[bob_id]),
            Buddy_pb2.IMRecentContactSessionReq(user_id=bob_id, latest_update_time=0),
            Buddy_pb2.IMUsersStatReq(user_id=bob_id, user_id_list=[bob_id]),
            Buddy_pb2.IMChangeSignInfoReq(user_id=bob_id, sign_info="hacked"),
            Message_pb2.IMUnreadMsgCntReq(user_id=bob_id),
            Message_pb2.IMGetMsgListReq(
                user_id=bob_id,
                session_type=B.SESSION_TYPE_SINGLE,
                session_id=1,
                msg_id_begin=0,
                msg_cnt=10,
            ),
            Message_pb2.IMMsgData(
                from_user_id=1,
                to_session_id=bob_id,
                msg_id=0,
                create_time=0,
                msg_type=B.MSG_TYPE_SINGLE_TEXT,
                msg_data=b"spoofed",
            ),
            Message_pb2.IMClientTimeReq(),
            Login_pb2.IMQueryPushShieldReq(user_id=bob_id),
            Login_pb2.IMLogoutReq(),
        ]
        commands = [
            B.CID_BUDDY_LIST_ALL_USER_REQUEST,
            B.CID_BUDDY_LIST_DEPARTMENT_REQUEST,
            B.CID_BUDDY_LIST_USER_INFO_REQUEST,
            B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
            B.CID_BUDDY_LIST_USERS_STATUS_REQUEST,
            B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST,
            B.CID_MSG_UNREAD_CNT_REQUEST,
            B.CID_MSG_LIST_REQUEST,
            B.CID_MSG_DATA,
            B.CID_MSG_TIME_REQUEST,
            B.CID_LOGIN_REQ_QUERY_PUSH_SHIELD,
            B.CID_LOGIN_REQ_LOGINOUT,
        ]
        for command_id, message in zip(commands, requests, strict=True):
            protocol.send(command_id, message)
        protocol.send_raw(encode_pdu(B.CID_OTHER_HEARTBEAT, seq_num=4242))
        echo = await next_pdu(protocol, None)
        assert (echo.command_id, echo.seq_num) == (B.CID_OTHER_HEARTBEAT, 4242)
        await assert_nothing(protocol)
        assert not protocol.closed.called
        await assert_nothing(bob.protocol, B.CID_MSG_DATA, within=0.01)
        unread = await bob.get(
            B.CID_MSG_UNREAD_CNT_REQUEST, Message_pb2.IMUnreadMsgCntReq(user_id=0)
        )
        assert unread.total_cnt == 0
        (row,) = await self.server.service("store").read(accounts.get_users_by_ids, [bob_id])
        assert row.sign_info == ""


class DeadlineTests(NodeTestCase):
    """On the node's fake clock: deadlines are checked to the second, without sleeping."""

    overrides = {
        "msg.login_deadline": 0.5,
        "msg.pc_idle_timeout": 1.0,
        "msg.mobile_idle_timeout": 30.0,
    }

    def test_connection_that_never_logs_in_is_closed_at_the_login_deadline(self):
        """No login within msg.login_deadline closes the connection, heartbeats or not."""
        protocol = self.connect()
        protocol.send(B.CID_OTHER_HEARTBEAT)
        self.advance(0.4)
        assert not self.is_closed(protocol)
        # The factory's once-a-second sweep closes it at its first look past the deadline.
        self.advance(1.0)
        assert self.is_closed(protocol)

    def test_idle_pc_connection_is_closed_and_heartbeats_keep_it_open(self):
        """A PC connection silent for msg.pc_idle_timeout is closed; one that heartbeats is
        not; mobiles have their own, longer timeout."""
        self.add_user("alice")
        self.add_user("bob")
        beating = self.login("alice", client_type=PC)
        silent = self.login("bob", client_type=PC)
        phone = self.login("bob", client_type=IOS)
        for _ in range(10):
            beating.protocol.send(B.CID_OTHER_HEARTBEAT)
            self.advance(0.25)
        assert self.is_closed(silent.protocol)
        assert not self.is_closed(beating.protocol)
        assert not self.is_closed(phone.protocol)
        self.advance(2.5)
        assert self.is_closed(beating.protocol)
        assert not self.is_closed(phone.protocol)
        self.advance(30.0)
        assert self.is_closed(phone.protocol)
