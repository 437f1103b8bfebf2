"""Message commands besides sending: delivery and read acks, unread counts, history,
P2P commands, server time (commands.md §2.1.11). Sending (``CID_MSG_DATA``) is the
intake's (``intake.py``)."""

from __future__ import annotations

from twisted.logger import Logger

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2
from teamtalk_py.store import messages
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import encode

log = Logger(namespace="teamtalk.msg.chat")

MAX_HISTORY_PAGE = 200
MAX_BY_ID = 100


def handle_msg_data_ack(conn: MsgConnection, request: Request) -> None:
    """A receiver confirms delivery; the reference only uses it for statistics."""


async def handle_read_ack(conn: MsgConnection, request: Request) -> None:
    req: Message_pb2.IMMsgDataReadAck = request.message
    service = conn.service
    if req.session_type == B.SESSION_TYPE_SINGLE:
        await service.store.write(messages.mark_single_read, conn.user_id, req.session_id)
    elif req.session_type == B.SESSION_TYPE_GROUP:
        if not await service.groups.mark_read(conn.user_id, req.session_id, req.msg_id):
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
    service.online.send_to_users([conn.user_id], notify, exclude=conn)
    service.route.relay(notify, [conn.user_id])


def handle_time(conn: MsgConnection, request: Request) -> None:
    conn.send(
        B.CID_MSG_TIME_RESPONSE,
        Message_pb2.IMClientTimeRsp(server_time=conn.service.now()),
        request.seq,
    )


async def handle_unread_count(conn: MsgConnection, request: Request) -> None:
    service = conn.service
    # Through the writer, not a reader: a read ack has no answer, so a client may ask at
    # once, and the writer runs this only after that ack's write (and every earlier one,
    # group read acks included) is committed.
    entries = list(await service.store.write(messages.unread_counts, conn.user_id))
    entries += await service.groups.unread_counts(conn.user_id)
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


def _fill(target, rows) -> None:
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
    service = conn.service
    count = min(req.msg_cnt, MAX_HISTORY_PAGE)
    if req.session_type == B.SESSION_TYPE_SINGLE:
        rows = await service.store.read(
            messages.single_history, conn.user_id, req.session_id, req.msg_id_begin, count
        )
    else:
        rows = await service.groups.history(conn.user_id, req.session_id, req.msg_id_begin, count)
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
    service = conn.service
    if req.session_type == B.SESSION_TYPE_SINGLE:
        latest = await service.store.read(
            messages.latest_single_msg_id, conn.user_id, req.session_id
        )
    else:
        latest = await service.groups.latest_msg_id(conn.user_id, req.session_id)
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
    service = conn.service
    ids = list(dict.fromkeys(req.msg_id_list))[:MAX_BY_ID]
    if req.session_type == B.SESSION_TYPE_SINGLE:
        rows = await service.store.read(
            messages.single_messages_by_ids, conn.user_id, req.session_id, ids
        )
    else:
        rows = await service.groups.messages_by_ids(conn.user_id, req.session_id, ids)
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
    service = conn.service
    if req.from_user_id != conn.user_id:
        log.info(
            "dropping P2P command from {user_id} claiming to be {claimed}",
            user_id=conn.user_id,
            claimed=req.from_user_id,
        )
        return
    service.online.send_to_users([conn.user_id], request.pdu, exclude=conn)
    if req.to_user_id != conn.user_id:
        service.online.send_to_users([req.to_user_id], request.pdu)
    service.route.relay(request.pdu, [conn.user_id, req.to_user_id])
