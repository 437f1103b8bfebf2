"""teamtalk_py's protocol extension from the client side (docs/EXTENSION.md): hello, and
the contacts requests. Each method sends one request and returns the decoded answer,
whatever its ``result_code``; callers decide what a refusal means to them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred

from teamtalk_client.deferreds import returns_deferred
from teamtalk_client.session import TeamTalkSession
from teamtalk_py.pb.IM import Extension_pb2 as X

__all__ = ["ExtensionClient", "result_name"]


def result_name(code: int) -> str:
    """``EXT_RESULT_NOT_FRIENDS`` for 8 (the number for codes this client does not know)."""
    try:
        return X.ExtResultCode.Name(code)  # type: ignore[arg-type]
    except ValueError:
        return str(code)


class ExtensionClient:
    """The extension's requests on a logged-in session."""

    def __init__(self, session: TeamTalkSession) -> None:
        self.session = session

    @returns_deferred
    async def hello(self, features: Iterable[str]) -> Any:
        """Opt this connection in; the answer names the features granted."""
        return await self.session.get(
            X.CID_EXT_HELLO_REQ, X.IMExtHelloReq(features=list(features), version=1)
        )

    @returns_deferred
    async def search(self, query: str, limit: int = 0) -> Any:
        return await self.session.get(
            X.CID_EXT_USER_SEARCH_REQ, X.IMExtUserSearchReq(query=query, limit=limit)
        )

    @returns_deferred
    async def request(self, to_user_id: int, note: str = "", remark: str = "") -> Any:
        return await self.session.get(
            X.CID_EXT_FRIEND_REQUEST_REQ,
            X.IMExtFriendRequestReq(to_user_id=to_user_id, note=note, remark=remark),
        )

    @returns_deferred
    async def requests(self) -> Any:
        """The pending requests: ``incoming`` and ``outgoing``."""
        return await self.session.get(
            X.CID_EXT_FRIEND_REQUEST_LIST_REQ, X.IMExtFriendRequestListReq()
        )

    @returns_deferred
    async def answer(self, request_id: int, accept: bool, remark: str = "") -> Any:
        return await self.session.get(
            X.CID_EXT_FRIEND_ANSWER_REQ,
            X.IMExtFriendAnswerReq(request_id=request_id, accept=accept, remark=remark),
        )

    def accept(self, request_id: int, remark: str = "") -> Deferred[Any]:
        return self.answer(request_id, True, remark)

    def decline(self, request_id: int) -> Deferred[Any]:
        return self.answer(request_id, False)

    @returns_deferred
    async def remove(self, friend_id: int) -> Any:
        return await self.session.get(
            X.CID_EXT_FRIEND_REMOVE_REQ, X.IMExtFriendRemoveReq(friend_id=friend_id)
        )

    @returns_deferred
    async def friends(self) -> Any:
        return await self.session.get(X.CID_EXT_FRIEND_LIST_REQ, X.IMExtFriendListReq())
