"""Invalid UTF-8 and over-long strings in every client string field, over real sockets:
each request gets its command's error answer (or, where the protocol has none, is dropped
with a log line), nothing is stored, the connection keeps working where the command
allows it, and the server logs no traceback. On SQLite and on MariaDB.

The bad bytes are put into a body that is otherwise what a client sends: the field is
set to a marker of the same length, and the marker's bytes are replaced in the encoded
body, so the length prefixes stay right.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from twisted.logger import LogLevel, globalLogPublisher

from teamtalk_client import TeamTalkSession
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, File_pb2, Group_pb2, Login_pb2, SwitchService_pb2
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.protocol.strings import FIELD_LIMITS, string_problem
from teamtalk_py.store import accounts
from teamtalk_testing.scratch import ScratchDatabase, Unreachable
from tests.msg_support import IOS, PC, MsgTestCase, assert_nothing, closed_within
from tests.store_support import mysql_server
from tests.support import TestCase, server_unreachable

MARK = "\x01BAD\x01"
#: Not UTF-8 in any position: a lone continuation byte and bytes UTF-8 never uses.
INVALID = b"\xff\xfe\x80\xc0\xc1"
assert len(INVALID) == len(MARK.encode())


def with_invalid(message: Message) -> bytes:
    """``message`` encoded, with every ``MARK`` replaced by bytes that are not UTF-8."""
    body = message.SerializeToString()
    assert MARK.encode() in body
    return body.replace(MARK.encode(), INVALID)


class StringProblemTests(TestCase):
    def test_a_string_that_is_not_utf8_is_named_at_any_depth(self):
        """Top-level and nested string fields (a repeated message's too) are checked."""
        ok = B.OfflineFileInfo(from_user_id=1, task_id="t", file_name="f", file_size=1)
        rsp = File_pb2.IMFileHasOfflineRsp(user_id=1, offline_file_list=[ok, ok])
        assert string_problem(B.CID_FILE_HAS_OFFLINE_RES, rsp) is None
        rsp.offline_file_list[1].file_name = MARK
        parsed = File_pb2.IMFileHasOfflineRsp()
        parsed.ParseFromString(with_invalid(rsp))
        assert string_problem(B.CID_FILE_HAS_OFFLINE_RES, parsed) == (
            "offline_file_list.file_name is not UTF-8"
        )

    def test_limits_are_the_store_columns(self):
        """A field one character over its column's width is refused, at the width not."""
        limit = FIELD_LIMITS[B.CID_GROUP_CREATE_REQUEST]["group_name"]
        req = Group_pb2.IMGroupCreateReq(
            user_id=1, group_type=B.GROUP_TYPE_TMP, group_name="名" * limit, group_avatar=""
        )
        assert string_problem(B.CID_GROUP_CREATE_REQUEST, req) is None
        req.group_name += "x"
        assert "longer than 256" in (string_problem(B.CID_GROUP_CREATE_REQUEST, req) or "")


class InvalidStringTests(MsgTestCase):
    """Each client string field with bytes that are not UTF-8, on the embedded store."""

    overrides = {"server.services": "msg,route,login,file"}

    def setUp(self):
        self.log_events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_failure") is not None or event.get("log_level") in (
                LogLevel.error,
                LogLevel.critical,
            ):
                self.log_events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return super().setUp()

    def assert_no_traceback(self) -> None:
        assert not self.log_events, [e.get("log_format") for e in self.log_events]

    async def user_row(self, name: str) -> Any:
        return await self.server.service("store").read(accounts.get_user_by_name, name)

    async def still_answers(self, session: TeamTalkSession) -> None:
        """The connection is open and the user still logged in: a request is answered."""
        answer = await session.protocol.request(
            B.CID_BUDDY_LIST_USERS_STATUS_REQUEST,
            Buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=[1]),
        )
        assert answer.command_id == B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE

    async def test_login_name_or_password_not_utf8_is_refused(self):
        """A login whose name or password is not UTF-8 gets a refused login answer and
        the connection is closed; so does a name longer than any account's."""
        await self.add_user("alice")
        for field in ("user_name", "password", "client_version"):
            req = Login_pb2.IMLoginReq(
                user_name="alice",
                password="0" * 32,
                online_status=B.USER_STATUS_ONLINE,
                client_type=PC,
                client_version="1.0",
            )
            setattr(req, field, MARK)
            protocol = await self.connect()
            answer = await protocol.request(B.CID_LOGIN_REQ_USERLOGIN, with_invalid(req))
            assert answer.message.result_code == B.REFUSE_REASON_DB_VALIDATE_FAILED, field
            assert await closed_within(protocol, 2.0), field
        answer, _ = await self.attempt("a" * 65)
        assert answer.result_code == B.REFUSE_REASON_DB_VALIDATE_FAILED
        await self.login("alice")  # the real account is not locked by any of it
        self.assert_no_traceback()

    async def test_signature_not_utf8_gets_result_1_and_changes_nothing(self):
        """CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST: result 1, signature unchanged."""
        await self.add_user("alice")
        session = await self.login("alice")
        req = Buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info=MARK)
        answer = await session.protocol.request(
            B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST, with_invalid(req)
        )
        assert answer.message.result_code == 1
        assert (await self.user_row("alice")).sign_info == ""
        await self.still_answers(session)
        self.assert_no_traceback()

    async def test_avatar_url_not_utf8_gets_result_1_and_changes_nothing(self):
        """CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST: result 1, avatar unchanged."""
        await self.add_user("alice")
        session = await self.login("alice")
        req = Buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url=MARK)
        answer = await session.protocol.request(
            B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST, with_invalid(req)
        )
        assert answer.message.result_code == 1
        assert (await self.user_row("alice")).avatar == ""
        await self.still_answers(session)
        self.assert_no_traceback()

    async def test_group_name_or_avatar_not_utf8_gets_result_1_and_no_group(self):
        """CID_GROUP_CREATE_REQUEST with a bad name, then a bad avatar: result 1 each,
        and the user is in no group afterwards."""
        alice = await self.add_user("alice")
        bob = await self.add_user("bob")
        session = await self.login("alice")
        for field in ("group_name", "group_avatar"):
            req = Group_pb2.IMGroupCreateReq(
                user_id=0,
                group_type=B.GROUP_TYPE_TMP,
                group_name="team",
                group_avatar="",
                member_id_list=[alice, bob],
            )
            setattr(req, field, MARK)
            answer = await session.protocol.request(B.CID_GROUP_CREATE_REQUEST, with_invalid(req))
            assert answer.message.result_code != 0, field
        groups = await session.protocol.request(
            B.CID_GROUP_NORMAL_LIST_REQUEST, Group_pb2.IMNormalGroupListReq(user_id=0)
        )
        assert len(groups.message.group_version_list) == 0
        self.assert_no_traceback()

    async def test_file_name_not_utf8_gets_result_1_and_no_task(self):
        """CID_FILE_REQUEST (online and offline) with a bad file name: result 1, no task
        id, and the receiver is told nothing."""
        await self.add_user("alice")
        bob = await self.add_user("bob")
        session = await self.login("alice")
        receiver = await self.login("bob")
        for mode in (B.FILE_TYPE_ONLINE, B.FILE_TYPE_OFFLINE):
            req = File_pb2.IMFileReq(
                from_user_id=0, to_user_id=bob, file_name=MARK, file_size=10, trans_mode=mode
            )
            answer = await session.protocol.request(B.CID_FILE_REQUEST, with_invalid(req))
            assert answer.message.result_code == 1
            assert answer.message.task_id == ""
        await assert_nothing(receiver.protocol, B.CID_FILE_NOTIFY)
        self.assert_no_traceback()

    async def test_offline_file_add_not_utf8_is_dropped_and_nothing_stored(self):
        """CID_FILE_ADD_OFFLINE_REQ (no answer in the protocol) with a bad file name or
        task id is dropped: the receiver has no offline file, the sender stays online."""
        await self.add_user("alice")
        bob = await self.add_user("bob")
        session = await self.login("alice")
        for field in ("file_name", "task_id"):
            req = File_pb2.IMFileAddOfflineReq(
                from_user_id=0, to_user_id=bob, task_id="t-1", file_name="a.txt", file_size=10
            )
            setattr(req, field, MARK)
            session.protocol.send(B.CID_FILE_ADD_OFFLINE_REQ, with_invalid(req))
        await self.still_answers(session)
        receiver = await self.login("bob")
        offline = await receiver.protocol.request(
            B.CID_FILE_HAS_OFFLINE_REQ, File_pb2.IMFileHasOfflineReq(user_id=0)
        )
        assert len(offline.message.offline_file_list) == 0
        self.assert_no_traceback()

    async def test_device_token_not_utf8_is_dropped_and_not_stored(self):
        """CID_LOGIN_REQ_DEVICETOKEN (its answer has no result code) with a bad token is
        dropped: no token is stored and the connection keeps working."""
        alice = await self.add_user("alice")
        session = await self.login("alice", client_type=IOS)
        req = Login_pb2.IMDeviceTokenReq(user_id=0, device_token=MARK)
        session.protocol.send(B.CID_LOGIN_REQ_DEVICETOKEN, with_invalid(req))
        # A store write answered after its commit: writes are committed in order, so a
        # token stored from the bad request would be there by now.
        shield = await session.protocol.request(
            B.CID_LOGIN_REQ_PUSH_SHIELD, Login_pb2.IMPushShieldReq(user_id=0, shield_status=0)
        )
        assert shield.message.result_code == 0
        tokens = await self.server.service("store").read(accounts.get_device_tokens, [alice])
        assert not tokens
        # A good token afterwards is stored: the check refuses only the bad one.
        await session.protocol.request(
            B.CID_LOGIN_REQ_DEVICETOKEN,
            Login_pb2.IMDeviceTokenReq(user_id=0, device_token="ab" * 32),
        )
        tokens = await self.server.service("store").read(accounts.get_device_tokens, [alice])
        assert len(tokens) == 1
        self.assert_no_traceback()

    async def test_p2p_command_not_utf8_is_not_relayed(self):
        """CID_SWITCH_P2P_CMD (no answer in the protocol) with bad data never reaches
        the peer."""
        alice = await self.add_user("alice")
        bob = await self.add_user("bob")
        session = await self.login("alice")
        receiver = await self.login("bob")
        req = SwitchService_pb2.IMP2PCmdMsg(from_user_id=alice, to_user_id=bob, cmd_msg_data=MARK)
        session.protocol.send(B.CID_SWITCH_P2P_CMD, with_invalid(req))
        await assert_nothing(receiver.protocol, B.CID_SWITCH_P2P_CMD)
        await self.still_answers(session)
        self.assert_no_traceback()

    async def test_file_login_with_a_task_id_not_utf8_is_refused(self):
        """CID_FILE_LOGIN_REQ to the file service with a bad task id: result 1, closed."""
        from twisted.internet import reactor

        from teamtalk_client import connect

        port = self.server.service("file").bound_port()
        protocol = await connect(reactor, "127.0.0.1", port)
        self._clients.append(protocol)
        req = File_pb2.IMFileLoginReq(user_id=1, task_id=MARK, file_role=B.CLIENT_REALTIME_SENDER)
        answer = await protocol.request(B.CID_FILE_LOGIN_REQ, with_invalid(req))
        assert answer.message.result_code == 1
        assert await closed_within(protocol, 2.0)
        self.assert_no_traceback()


class MariaDBInvalidStringTests(InvalidStringTests):
    """The same on MariaDB, where the driver raised on such bytes before."""

    def setUp(self):
        try:
            self.database = ScratchDatabase(mysql_server(), "tt_strings")
        except Unreachable as e:
            server_unreachable(str(e))
        self.addCleanup(self.database.drop)
        self.overrides = {**InvalidStringTests.overrides, "store.db": self.database.url}
        return super().setUp()


class InvalidExtensionStringTests(MsgTestCase):
    """teamtalk_py's extension requests with strings that are not UTF-8 get their answer
    with ``EXT_RESULT_BAD_REQUEST`` (docs/EXTENSION.md)."""

    overrides = {"contacts.mode": "both"}

    async def test_each_extension_string_field_gets_bad_request(self):
        """hello (features), user search (query), friend request (note, remark) and
        friend answer (remark): each answered BAD_REQUEST, nothing stored."""
        await self.add_user("alice")
        bob = await self.add_user("bob")
        session = await self.login("alice")
        hello = X.IMExtHelloReq(features=["contacts", MARK])
        answer = await session.protocol.request(X.CID_EXT_HELLO_REQ, with_invalid(hello))
        assert answer.message.result_code == X.EXT_RESULT_BAD_REQUEST
        answer = await session.protocol.request(
            X.CID_EXT_HELLO_REQ, X.IMExtHelloReq(features=["contacts"])
        )
        assert list(answer.message.features) == ["contacts"]
        requests = [
            (X.CID_EXT_USER_SEARCH_REQ, X.IMExtUserSearchReq(query=MARK)),
            (X.CID_EXT_FRIEND_REQUEST_REQ, X.IMExtFriendRequestReq(to_user_id=bob, note=MARK)),
            (X.CID_EXT_FRIEND_REQUEST_REQ, X.IMExtFriendRequestReq(to_user_id=bob, remark=MARK)),
            (
                X.CID_EXT_FRIEND_ANSWER_REQ,
                X.IMExtFriendAnswerReq(request_id=1, accept=True, remark=MARK),
            ),
        ]
        for command_id, message in requests:
            answer = await session.protocol.request(command_id, with_invalid(message))
            assert answer.message.result_code == X.EXT_RESULT_BAD_REQUEST, command_id
        listed = await session.protocol.request(
            X.CID_EXT_FRIEND_REQUEST_LIST_REQ, X.IMExtFriendRequestListReq()
        )
        assert listed.message.result_code == X.EXT_RESULT_OK
        assert len(listed.message.outgoing) == 0
