"""Contacts commands (docs/EXTENSION.md §2.2): one handler per command.

Every handler goes through ``_answer``: the request is checked with ``refusal`` (the
connection was granted contacts, and ``user_id``, if set, is the connection's own user),
then the handler's work runs on ``Contacts`` with the connection's user as the acting user,
and the answer is sent with its result code. A store failure is answered
``EXT_RESULT_SERVER_ERROR`` (the store changed nothing) and logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.logger import Logger

from teamtalk_py.contacts.contacts import Contacts
from teamtalk_py.extension import CONTACTS
from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.msg.extension import refusal
from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import Handler

log = Logger(namespace="teamtalk.msg.contacts")

#: A handler's work: fills the answer, returns its result code.
Work = Callable[[Contacts], Awaitable[int]]


async def _answer(
    conn: MsgConnection, request: Request, command_id: int, answer: Any, work: Work
) -> None:
    code = refusal(conn, request.message, CONTACTS)
    if code is None:
        contacts = conn.ctx.contacts
        assert contacts is not None, "contacts is granted only where the service has it"
        try:
            code = await work(contacts)
        except Exception:
            log_failure(
                log,
                "{command:#06x} for user {user_id} failed",
                command=request.command_id,
                user_id=conn.user_id,
            )
            code = X.EXT_RESULT_SERVER_ERROR
    answer.result_code = code
    conn.send(command_id, answer, request.seq)


async def handle_search(conn: MsgConnection, request: Request) -> None:
    req: X.IMExtUserSearchReq = request.message
    answer = X.IMExtUserSearchRsp(result_code=X.EXT_RESULT_OK, query=req.query)

    async def work(contacts: Contacts) -> int:
        code, users = await contacts.search(conn.user_id, req.query, req.limit)
        answer.users.extend(users)
        return code

    await _answer(conn, request, X.CID_EXT_USER_SEARCH_RSP, answer, work)


async def handle_friend_request(conn: MsgConnection, request: Request) -> None:
    req: X.IMExtFriendRequestReq = request.message
    answer = X.IMExtFriendRequestRsp(result_code=X.EXT_RESULT_OK, to_user_id=req.to_user_id)

    async def work(contacts: Contacts) -> int:
        code, request_id = await contacts.ask(conn.user_id, req.to_user_id, req.note, req.remark)
        if request_id:
            answer.request_id = request_id
        return code

    await _answer(conn, request, X.CID_EXT_FRIEND_REQUEST_RSP, answer, work)


async def handle_request_list(conn: MsgConnection, request: Request) -> None:
    answer = X.IMExtFriendRequestListRsp(result_code=X.EXT_RESULT_OK)

    async def work(contacts: Contacts) -> int:
        incoming, outgoing = await contacts.pending(conn.user_id)
        answer.incoming.extend(incoming)
        answer.outgoing.extend(outgoing)
        return X.EXT_RESULT_OK

    await _answer(conn, request, X.CID_EXT_FRIEND_REQUEST_LIST_RSP, answer, work)


async def handle_answer(conn: MsgConnection, request: Request) -> None:
    req: X.IMExtFriendAnswerReq = request.message
    answer = X.IMExtFriendAnswerRsp(result_code=X.EXT_RESULT_OK, request_id=req.request_id)

    async def work(contacts: Contacts) -> int:
        code, new_friend = await contacts.answer(
            conn.user_id, req.request_id, req.accept, req.remark
        )
        if new_friend is not None:
            answer.new_friend.CopyFrom(new_friend)
        return code

    await _answer(conn, request, X.CID_EXT_FRIEND_ANSWER_RSP, answer, work)


async def handle_remove(conn: MsgConnection, request: Request) -> None:
    req: X.IMExtFriendRemoveReq = request.message
    answer = X.IMExtFriendRemoveRsp(result_code=X.EXT_RESULT_OK, friend_id=req.friend_id)

    async def work(contacts: Contacts) -> int:
        return await contacts.remove(conn.user_id, req.friend_id)

    await _answer(conn, request, X.CID_EXT_FRIEND_REMOVE_RSP, answer, work)


async def handle_friend_list(conn: MsgConnection, request: Request) -> None:
    answer = X.IMExtFriendListRsp(result_code=X.EXT_RESULT_OK)

    async def work(contacts: Contacts) -> int:
        answer.friends.extend(await contacts.friends(conn.user_id))
        return X.EXT_RESULT_OK

    await _answer(conn, request, X.CID_EXT_FRIEND_LIST_RSP, answer, work)


CONTACTS_HANDLERS: dict[int, Handler[MsgConnection]] = {
    X.CID_EXT_USER_SEARCH_REQ: handle_search,
    X.CID_EXT_FRIEND_REQUEST_REQ: handle_friend_request,
    X.CID_EXT_FRIEND_REQUEST_LIST_REQ: handle_request_list,
    X.CID_EXT_FRIEND_ANSWER_REQ: handle_answer,
    X.CID_EXT_FRIEND_REMOVE_REQ: handle_remove,
    X.CID_EXT_FRIEND_LIST_REQ: handle_friend_list,
}
