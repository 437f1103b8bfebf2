"""Message commands besides sending: delivery and read acks, unread counts, history,
P2P commands, server time (commands.md §2.1.11). Sending (``CID_MSG_DATA``) is handed
to the intake (``intake.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2
from teamtalk_py.store import messages
from teamtalk_py.store.messages import StoredMessage
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import encode

log = Logger(namespace="teamtalk.msg.chat")

MAX_HISTORY_PAGE = 200
MAX_BY_ID = 100


def handle_msg_data(conn: MsgConnection, request: Request) -> defer.Deferred[None]:
    """A chat message, one-to-one or group: the intake takes it from here."""
    intake = conn.ctx.intake
    assert intake is not None, "messages are dispatched only once the service started"
    return defer.ensureDeferred(intake.receive(conn, request))


def handle_msg_data_ack(conn: MsgConnection, request: Request) -> None:
    """A receiver confirms delivery; the reference only uses it for statistics."""


async def handle_read_ack(conn: MsgConnection, request: Request) -> None:
    req: Message_pb2.IMMsgDataReadAck = request.message
    ctx = conn.ctx
    if req.session_type == B.SESSION_TYPE_SINGLE:
        await ctx.store.write(messages.mark_single_read, conn.user_id, req.session_id)
    elif req.session_type == B.SESSION_TYPE_GROUP:
        if not await ctx.groups.mark_read(conn.user_id, req.session_id, req.msg_id):
            return
    notify = encode(
        B.CID_MSG_READ_NOTIFY,
        Message_pb2.IMMsgDataReadNotify(
            user_id=conn.user_id,
            session_id=req.session_id,
            msg_id=req.msg_id,
            session_type=req.session_type,
        ),
    )
    ctx.online.send_to_users([conn.user_id], notify, exclude=conn)
    ctx.route.relay(notify, [conn.user_id])


def handle_time(conn: MsgConnection, request: Request) -> None:
    conn.send(
        B.CID_MSG_TIME_RESPONSE,
        Message_pb2.IMClientTimeRsp(server_time=conn.ctx.now()),
        request.seq,
    )


async def handle_unread_count(conn: MsgConnection, request: Request) -> None:
    ctx = conn.ctx
    # Through the writer, not a reader: a read ack has no answer, so a client may ask at
    # once, and the writer runs this only after that ack's write (and every earlier one,
    # group read acks included) is committed.
    entries = list(await ctx.store.write(messages.unread_counts, conn.user_id))
    entries += await ctx.groups.unread_counts(conn.user_id)
    answer = Message_pb2.IMUnreadMsgCntRsp(user_id=conn.user_id, total_cnt=0)
    for e in entries:
        answer.unreadinfo_list.add(
            session_id=e.peer_id,
            session_type=e.session_type,
            unread_cnt=e.count,
            latest_msg_id=e.latest_msg_id,
            latest_msg_data=e.latest_msg_data,
            latest_msg_type=e.latest_msg_type,
            latest_msg_from_user_id=e.latest_msg_from_id,
        )
        answer.total_cnt += e.count
    conn.send(B.CID_MSG_UNREAD_CNT_RESPONSE, answer, request.seq)


def _fill(target: Any, rows: Iterable[StoredMessage]) -> None:
    for row in rows:
        target.add(
            msg_id=row.msg_id,
            from_session_id=row.from_id,
            create_time=row.created,
            msg_type=row.msg_type,
            msg_data=row.content,
        )


async def handle_msg_list(conn: MsgConnection, request: Request) -> None:
    req: Message_pb2.IMGetMsgListReq = request.message
    ctx = conn.ctx
    count = min(req.msg_cnt, MAX_HISTORY_PAGE)
    if req.session_type == B.SESSION_TYPE_SINGLE:
        rows = await ctx.store.read(
            messages.single_history, conn.user_id, req.session_id, req.msg_id_begin, count
        )
    else:
        rows = await ctx.groups.history(conn.user_id, req.session_id, req.msg_id_begin, count)
    answer = Message_pb2.IMGetMsgListRsp(
        user_id=conn.user_id,
        session_type=req.session_type,
        session_id=req.session_id,
        msg_id_begin=req.msg_id_begin,
    )
    _fill(answer.msg_list, rows)
    conn.send(B.CID_MSG_LIST_RESPONSE, answer, request.seq)


async def handle_latest_msg_id(conn: MsgConnection, request: Request) -> None:
    req: Message_pb2.IMGetLatestMsgIdReq = request.message
    ctx = conn.ctx
    if req.session_type == B.SESSION_TYPE_SINGLE:
        latest = await ctx.store.read(messages.latest_single_msg_id, conn.user_id, req.session_id)
    else:
        latest = await ctx.groups.latest_msg_id(conn.user_id, req.session_id)
    conn.send(
        B.CID_MSG_GET_LATEST_MSG_ID_RSP,
        Message_pb2.IMGetLatestMsgIdRsp(
            user_id=conn.user_id,
            session_type=req.session_type,
            session_id=req.session_id,
            latest_msg_id=latest,
        ),
        request.seq,
    )


async def handle_msg_by_id(conn: MsgConnection, request: Request) -> None:
    req: Message_pb2.IMGetMsgByIdReq = request.message
    ctx = conn.ctx
    ids = list(dict.fromkeys(req.msg_id_list))[:MAX_BY_ID]
    if req.session_type == B.SESSION_TYPE_SINGLE:
        rows = await ctx.store.read(
            messages.single_messages_by_ids, conn.user_id, req.session_id, ids
        )
    else:
        rows = await ctx.groups.messages_by_ids(conn.user_id, req.session_id, ids)
    answer = Message_pb2.IMGetMsgByIdRsp(
        user_id=conn.user_id, session_type=req.session_type, session_id=req.session_id
    )
    _fill(answer.msg_list, rows)
    conn.send(B.CID_MSG_GET_BY_MSG_ID_RES, answer, request.seq)


def handle_p2p(conn: MsgConnection, request: Request) -> None:
    """Relayed verbatim to the peer's and our other connections; never stored.

    The reference relays whatever ``from_user_id`` says; we drop a command that claims
    another sender, so nobody can shake a window or fake typing in someone else's name.
    """
    req = request.message
    ctx = conn.ctx
    if req.from_user_id != conn.user_id:
        log.info(
            "dropping P2P command from {user_id} claiming to be {claimed}",
            user_id=conn.user_id,
            claimed=req.from_user_id,
        )
        return
    ctx.online.send_to_users([conn.user_id], request.pdu, exclude=conn)
    if req.to_user_id != conn.user_id:
        ctx.online.send_to_users([req.to_user_id], request.pdu)
    ctx.route.relay(request.pdu, [conn.user_id, req.to_user_id])
