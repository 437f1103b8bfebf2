"""`TeamTalkSession`: what a chat client does on top of a connection (log in, send and
acknowledge messages, log out). Deliberately thin: tests use `protocol.request` for the
rest.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred

from teamtalk_client.deferreds import returns_deferred
from teamtalk_client.pdu import Pdu
from teamtalk_client.protocol import Body, TeamTalkClientProtocol
from teamtalk_client.text import DEFAULT_AES_KEY, encrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2, Message_pb2

__all__ = ["TeamTalkSession"]


class TeamTalkSession:
    """What a chat client does on top of a connection: log in, send and acknowledge
    messages, log out. Deliberately thin; tests use `protocol.request` for the rest."""

    def __init__(
        self,
        protocol: TeamTalkClientProtocol,
        *,
        aes_key: bytes | str = DEFAULT_AES_KEY,
        timeout: float = 10.0,
    ) -> None:
        self.protocol = protocol
        self.aes_key = aes_key
        self.timeout = timeout
        #: The logged-in user's id, known after a successful `login()`.
        self.user_id: int | None = None

    @returns_deferred
    async def get(self, command_id: int, message: Body = None) -> Any:
        """Send a request and return the decoded answer message."""
        pdu = await self.protocol.request(command_id, message, timeout=self.timeout)
        return pdu.message

    @returns_deferred
    async def login(
        self,
        user_name: str,
        password_plain: str | None = None,
        *,
        password_md5: str | None = None,
        client_type: B.ClientType.ValueType = B.CLIENT_TYPE_WINDOWS,
        online_status: B.UserStatType.ValueType = B.USER_STATUS_ONLINE,
        client_version: str = "teamtalk_py-client",
    ) -> Any:
        """Log in and return the `IMLoginRes` whatever its result code. Like real
        clients, send the lower-case hex MD5 of the plain password (or `password_md5`
        as given, to test what servers do with odd values)."""
        if (password_plain is None) == (password_md5 is None):
            raise ValueError("give exactly one of password_plain and password_md5")
        if password_md5 is None:
            assert password_plain is not None
            password_md5 = hashlib.md5(password_plain.encode("utf-8")).hexdigest()
        request = Login_pb2.IMLoginReq(
            user_name=user_name,
            password=password_md5,
            online_status=online_status,
            client_type=client_type,
            client_version=client_version,
        )
        answer = await self.get(B.CID_LOGIN_REQ_USERLOGIN, request)
        if answer.result_code == B.REFUSE_REASON_NONE and answer.HasField("user_info"):
            self.user_id = answer.user_info.user_id
        return answer

    @returns_deferred
    async def send_message(self, to_id: int, msg_type: B.MsgType.ValueType, data: bytes) -> Any:
        """Send `CID_MSG_DATA` with the payload as given and return the `IMMsgDataAck`.
        `from_user_id`, `msg_id` and `create_time` are filled as clients do; the server
        overwrites them."""
        message = Message_pb2.IMMsgData(
            from_user_id=self.user_id or 0,
            to_session_id=to_id,
            msg_id=0,
            create_time=int(self.protocol.clock.seconds()),
            msg_type=msg_type,
            msg_data=data,
        )
        return await self.get(B.CID_MSG_DATA, message)

    def send_text(
        self,
        to_id: int,
        text: str,
        session_type: B.SessionType.ValueType = B.SESSION_TYPE_SINGLE,
    ) -> Deferred[Any]:
        """Encrypt `text` as clients do and send it as a single or group text message."""
        msg_type = (
            B.MSG_TYPE_GROUP_TEXT
            if session_type == B.SESSION_TYPE_GROUP
            else B.MSG_TYPE_SINGLE_TEXT
        )
        return self.send_message(to_id, msg_type, encrypt_text(text, self.aes_key))

    def read_ack(
        self,
        session_id: int,
        msg_id: int,
        session_type: B.SessionType.ValueType = B.SESSION_TYPE_SINGLE,
    ) -> int:
        """Mark a session read up to `msg_id` (no answer exists); returns the seq used."""
        ack = Message_pb2.IMMsgDataReadAck(
            user_id=self.user_id or 0,
            session_id=session_id,
            msg_id=msg_id,
            session_type=session_type,
        )
        return self.protocol.send(B.CID_MSG_READ_ACK, ack)

    def delivery_ack(self, delivered: Pdu) -> int:
        """Confirm a received `CID_MSG_DATA` with `CID_MSG_DATA_ACK`, as receivers do so
        the server drops it from the connection's pending list; returns the seq used."""
        data = delivered.message
        group = data.msg_type in (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO)
        ack = Message_pb2.IMMsgDataAck(
            user_id=self.user_id or 0,
            session_id=data.to_session_id if group else data.from_user_id,
            msg_id=data.msg_id,
            session_type=B.SESSION_TYPE_GROUP if group else B.SESSION_TYPE_SINGLE,
        )
        return self.protocol.send(B.CID_MSG_DATA_ACK, ack)

    def message_list(
        self,
        session_id: int,
        session_type: B.SessionType.ValueType = B.SESSION_TYPE_SINGLE,
        *,
        begin: int = 0,
        count: int = 20,
    ) -> Deferred[Any]:
        """A page of a session's history: the `IMGetMsgListRsp` of up to `count`
        messages, newest first, from `begin` down (0: from the newest)."""
        request = Message_pb2.IMGetMsgListReq(
            user_id=self.user_id or 0,
            session_type=session_type,
            session_id=session_id,
            msg_id_begin=begin,
            msg_cnt=count,
        )
        return self.get(B.CID_MSG_LIST_REQUEST, request)

    def unread_counts(self) -> Deferred[Any]:
        """The `IMUnreadMsgCntRsp`: the total and each session's unread count."""
        request = Message_pb2.IMUnreadMsgCntReq(user_id=self.user_id or 0)
        return self.get(B.CID_MSG_UNREAD_CNT_REQUEST, request)

    @returns_deferred
    async def latest_msg_id(
        self, session_id: int, session_type: B.SessionType.ValueType = B.SESSION_TYPE_SINGLE
    ) -> int:
        """The id of the newest message of a session (0 when it has none)."""
        request = Message_pb2.IMGetLatestMsgIdReq(
            user_id=self.user_id or 0, session_type=session_type, session_id=session_id
        )
        answer = await self.get(B.CID_MSG_GET_LATEST_MSG_ID_REQ, request)
        return int(answer.latest_msg_id)

    @returns_deferred
    async def logout(self) -> Any:
        """Send `CID_LOGIN_REQ_LOGINOUT` and return the `IMLogoutRsp` (the server then
        closes the connection)."""
        return await self.get(B.CID_LOGIN_REQ_LOGINOUT, Login_pb2.IMLogoutReq())
