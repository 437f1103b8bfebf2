"""Message commands: send, acks, read receipts, unread counts, history, P2P, server time
(commands.md §2.1.11).

Unlike the reference, nothing is dropped silently: a message is acked with its stored id
only once it is durable, and a message we refuse (empty, too big, to yourself, to an
unknown user, over the sender's limits in ``msg/limits.py``, or a failed write) is acked
with ``msg_id = 0``, the value the reference uses internally for "not stored".
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.msg.dedup import message_key
from teamtalk_py.msg.limits import OverLimit
from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2
from teamtalk_py.store import messages
from teamtalk_py.store.messages import NewMessage, StoredMessage
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import encode

log = Logger(namespace="teamtalk.msg.chat")

SINGLE_TYPES = (B.MSG_TYPE_SINGLE_TEXT, B.MSG_TYPE_SINGLE_AUDIO)
GROUP_TYPES = (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO)
MAX_HISTORY_PAGE = 200
MAX_BY_ID = 100


SESSION_TYPE_NAMES = {B.SESSION_TYPE_SINGLE: "single", B.SESSION_TYPE_GROUP: "group"}


def _ack(conn: MsgConnection, seq: int, to_id: int, msg_id: int, session_type: int) -> None:
    """Every message gets exactly one ack: its id once durable, or 0 when refused."""
    conn.service.metrics.messages.labels(
        session_type=SESSION_TYPE_NAMES.get(session_type, str(session_type)),
        outcome="acked" if msg_id else "refused",
    ).inc()
    conn.send(
        B.CID_MSG_DATA_ACK,
        Message_pb2.IMMsgDataAck(
            user_id=conn.user_id, session_id=to_id, msg_id=msg_id, session_type=session_type
        ),
        seq,
    )


def refusal(conn: MsgConnection, msg: Message_pb2.IMMsgData) -> str | None:
    """Why this message cannot be accepted, or None when it can. Every message counts
    against the sender's limits first, so a flood of bad messages is throttled too."""
    config = conn.service.config.msg
    over_limit = conn.service.message_limits.check(conn.user_id, len(msg.msg_data))
    if over_limit is not None:
        conn.limit_refused()
        return over_limit
    if not msg.msg_data:
        return "empty message"
    if len(msg.msg_data) > config.max_message_size:
        return f"message of {len(msg.msg_data)} bytes over the {config.max_message_size} limit"
    if msg.msg_type in SINGLE_TYPES and msg.to_session_id == conn.user_id:
        return "message to yourself"
    return None


def log_refusal(what: str, user_id: int, reason: str) -> None:
    """One line per refused message, except for limits (``limits.py`` logs those)."""
    if not isinstance(reason, OverLimit):
        log.info(
            "refusing {what} from {user_id}: {reason}", what=what, user_id=user_id, reason=reason
        )


def handle_msg_data(conn: MsgConnection, request: Request) -> defer.Deferred | None:
    msg: Message_pb2.IMMsgData = request.message
    if msg.msg_type in GROUP_TYPES:
        return defer.ensureDeferred(conn.service.groups.handle_group_message(conn, request))
    return send_single(conn, request.seq, msg)


def send_single(conn: MsgConnection, seq: int, msg: Message_pb2.IMMsgData) -> defer.Deferred | None:
    """Store, ack and deliver one 1:1 message.

    This is the hottest path of the server, so it avoids coroutines: the common case
    (a known receiver, no resend) is plain calls plus one Deferred from the store.
    """
    reason = refusal(conn, msg)
    if reason is None and not conn.service.is_known_user(msg.to_session_id):
        return defer.ensureDeferred(_send_after_user_lookup(conn, seq, msg))
    return _accept_single(conn, seq, msg, reason)


async def _send_after_user_lookup(
    conn: MsgConnection, seq: int, msg: Message_pb2.IMMsgData
) -> None:
    to_id = msg.to_session_id
    reason = None if await conn.service.user_exists(to_id) else f"unknown user {to_id}"
    pending = _accept_single(conn, seq, msg, reason)
    if pending is not None:
        await pending


def _accept_single(
    conn: MsgConnection, seq: int, msg: Message_pb2.IMMsgData, reason: str | None
) -> defer.Deferred | None:
    service = conn.service
    to_id = msg.to_session_id
    if reason is not None:
        log_refusal("message", conn.user_id, reason)
        _ack(conn, seq, to_id, 0, B.SESSION_TYPE_SINGLE)
        return None
    key = message_key(
        conn.user_id,
        B.SESSION_TYPE_SINGLE,
        to_id,
        msg.msg_type,
        msg.create_time,
        seq,
        msg.msg_data,
    )
    earlier = service.recent.lookup(key)
    if earlier is not None:
        if isinstance(earlier, int):
            _ack(conn, seq, to_id, earlier, B.SESSION_TYPE_SINGLE)
            return None
        # The first copy is still being written: answer with its id once it is durable
        # (0 if its write failed, since it got no answer either).
        return earlier.addCallbacks(
            lambda msg_id: _ack(conn, seq, to_id, msg_id, B.SESSION_TYPE_SINGLE),
            lambda _: _ack(conn, seq, to_id, 0, B.SESSION_TYPE_SINGLE),
        )
    if service.shared_resends is not None:
        return defer.ensureDeferred(_store_unless_sent_to_another_node(conn, seq, msg, key))
    return _store_single(conn, seq, msg, key)


async def _store_unless_sent_to_another_node(
    conn: MsgConnection, seq: int, msg: Message_pb2.IMMsgData, key
) -> None:
    """Cluster: the first copy may have been stored by another node."""
    service = conn.service
    msg_id = await service.shared_resends.lookup(key)
    if msg_id is not None:
        service.recent.stored(key, msg_id)
        _ack(conn, seq, msg.to_session_id, msg_id, B.SESSION_TYPE_SINGLE)
        return
    earlier = service.recent.lookup(key)  # a copy may have arrived here meanwhile
    if earlier is not None:
        try:
            msg_id = earlier if isinstance(earlier, int) else await earlier
        except Exception:
            msg_id = 0  # the first copy's write failed: refuse the resend too
        _ack(conn, seq, msg.to_session_id, msg_id, B.SESSION_TYPE_SINGLE)
        return
    await _store_single(conn, seq, msg, key)


def _store_single(conn: MsgConnection, seq: int, msg: Message_pb2.IMMsgData, key):
    service = conn.service
    service.recent.pending(key)
    d = service.single_messages.store_message(
        NewMessage(conn.user_id, msg.to_session_id, msg.msg_type, msg.msg_data, service.now())
    )
    d.addCallbacks(
        _single_stored,
        _single_failed,
        callbackArgs=(conn, seq, msg, key),
        errbackArgs=(conn, seq, key),
    )
    return d


def _single_stored(
    stored: StoredMessage, conn: MsgConnection, seq: int, msg: Message_pb2.IMMsgData, key
) -> None:
    service = conn.service
    to_id = msg.to_session_id
    service.metrics.messages.labels(session_type="single", outcome="stored").inc()
    service.recent.stored(key, stored.msg_id)
    if service.shared_resends is not None:
        service.shared_resends.remember(key, stored.msg_id)
    _ack(conn, seq, to_id, stored.msg_id, B.SESSION_TYPE_SINGLE)
    delivery = Message_pb2.IMMsgData(
        from_user_id=conn.user_id,
        to_session_id=to_id,
        msg_id=stored.msg_id,
        create_time=stored.created,
        msg_type=msg.msg_type,
        msg_data=msg.msg_data,
    )
    service.online.send_to_users(
        (to_id, conn.user_id), encode(B.CID_MSG_DATA, delivery), exclude=conn
    )
    if service.route.has_peers:
        service.route.relay(encode(B.CID_MSG_DATA, delivery, seq), [to_id, conn.user_id])


def _single_failed(failure: Failure, conn: MsgConnection, seq: int, key) -> None:
    log_failure(log, "storing a message from {user_id} failed", failure, user_id=conn.user_id)
    conn.service.recent.failed(key, failure)
    _ack(conn, seq, key[2], 0, B.SESSION_TYPE_SINGLE)


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
