"""Chat rooms from a client: opt in, join, leave, post, and read the posts that arrive.

Rooms belong to teamtalk_py's opt-in extension (``docs/EXTENSION.md`` §2.3): a connection
says hello with the ``rooms`` feature first, and membership is per connection, so a room
is left when the connection closes. Text posts are encrypted with the site's AES key as
messages are (the server never reads a post), and ``text_of`` decrypts them.
"""

from __future__ import annotations

from typing import Any

from teamtalk_client.deferreds import returns_deferred
from teamtalk_client.extension import ExtensionClient, result_name
from teamtalk_client.session import TeamTalkSession
from teamtalk_client.text import decrypt_text, encrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Extension_pb2 as X

__all__ = ["RoomRefused", "Rooms", "TEXT_POST"]

#: ``msg_type`` of a text post (the group text type of TeamTalk's messages).
TEXT_POST = B.MSG_TYPE_GROUP_TEXT


class RoomRefused(Exception):
    """The server answered a rooms request with a result code other than OK."""

    def __init__(self, what: str, result_code: int) -> None:
        super().__init__(f"{what} refused: {result_name(result_code)}")
        self.result_code = result_code


class Rooms:
    """The rooms of one logged-in session's connection."""

    def __init__(self, session: TeamTalkSession) -> None:
        self.session = session

    @returns_deferred
    async def opt_in(self) -> Any:
        """Say hello asking for ``rooms``; the ``IMExtHelloRsp`` (raises if not granted)."""
        answer = await ExtensionClient(self.session).hello(["rooms"])
        if "rooms" not in answer.features:
            raise RoomRefused("rooms (not offered by this server)", answer.result_code)
        return answer

    @returns_deferred
    async def join(self, room_id: int) -> Any:
        """Join ``room_id``; the ``IMExtRoomJoinRsp`` (raises ``RoomRefused``)."""
        request = X.IMExtRoomJoinReq(room_id=room_id)
        answer = await self.session.get(X.CID_EXT_ROOM_JOIN_REQ, request)
        _check(f"joining room {room_id}", answer)
        return answer

    @returns_deferred
    async def leave(self, room_id: int) -> Any:
        answer = await self.session.get(
            X.CID_EXT_ROOM_LEAVE_REQ, X.IMExtRoomLeaveReq(room_id=room_id)
        )
        _check(f"leaving room {room_id}", answer)
        return answer

    @returns_deferred
    async def post(
        self, room_id: int, content: bytes, msg_type: int = TEXT_POST, client_seq: int = 0
    ) -> Any:
        """Post raw ``content``; the ``IMExtRoomPostAck`` (raises ``RoomRefused``)."""
        request = X.IMExtRoomPostReq(
            room_id=room_id, content=content, msg_type=msg_type, client_seq=client_seq
        )
        answer = await self.session.get(X.CID_EXT_ROOM_POST_REQ, request)
        _check(f"posting to room {room_id}", answer)
        return answer

    def post_text(self, room_id: int, text: str) -> Any:
        """Post ``text`` encrypted as clients encrypt messages."""
        return self.post(room_id, encrypt_text(text, self.session.aes_key))

    @returns_deferred
    async def next_post(self, timeout: float | None = None) -> Any:
        """The next ``IMExtRoomPostNotify`` to arrive (raises TimeoutError after
        ``timeout`` seconds; the session's timeout when None)."""
        pdu = await self.session.protocol.wait_for(
            X.CID_EXT_ROOM_POST_NOTIFY,
            timeout=self.session.timeout if timeout is None else timeout,
        )
        return pdu.message

    def text_of(self, post: Any) -> str:
        """A post's content as a person reads it."""
        if post.msg_type != TEXT_POST:
            return f"[{len(post.content)} bytes of type {post.msg_type}]"
        try:
            return decrypt_text(post.content, self.session.aes_key)
        except (ValueError, UnicodeDecodeError):
            return f"[{len(post.content)} bytes, not text under this AES key]"


def _check(what: str, answer: Any) -> None:
    if answer.result_code != X.EXT_RESULT_OK:
        raise RoomRefused(what, answer.result_code)
