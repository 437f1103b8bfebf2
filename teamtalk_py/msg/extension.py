"""The extension's hello, its shared request checks, and its delivery to users anywhere.

A connection opts in with ``CID_EXT_HELLO_REQ``, naming the features it wants; the
server grants those it offers (``offered_features``) and answers with what was granted.
Until then the connection is sent nothing of the extension (``MsgConnection.send_raw``
enforces it for every packet). The feature handlers (contacts, rooms) start with
``refusal`` and deliver notifies with ``notify_users``, which reaches users on other
nodes through route as ``CID_EXT_USER_RELAY``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from teamtalk_py.extension import CONTACTS, FEATURES, ROOMS, VERSION
from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.protocol import registry
from teamtalk_py.protocol.header import PduHeader
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import Handler, encode

if TYPE_CHECKING:
    from teamtalk_py.msg.context import MsgContext

log = Logger(namespace="teamtalk.msg.extension")


def offered_features(config: Any) -> tuple[str, ...]:
    """What this deployment offers: contacts unless it is a plain company directory,
    rooms unless turned off."""
    offered = []
    if config.contacts.mode != "directory":
        offered.append(CONTACTS)
    if config.rooms.enabled:
        offered.append(ROOMS)
    return tuple(offered)


def refuse_bad_request(conn: MsgConnection, request: Request) -> None:
    """An extension request with a string that is not UTF-8 (``protocol/strings.py``):
    its answer (the next command id) with ``EXT_RESULT_BAD_REQUEST``, the request's ids
    echoed and its strings left empty. A refused hello still counts as one (with the
    features the connection had), so that its answer may be sent."""
    if request.command_id == X.CID_EXT_HELLO_REQ:
        conn.extension_features = conn.extension_features or frozenset()
    answer_id = request.command_id + 1
    answer = registry.message_class(answer_id)(result_code=X.EXT_RESULT_BAD_REQUEST)
    for field in answer.DESCRIPTOR.fields:
        if not field.is_required or field.name == "result_code":
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            setattr(answer, field.name, "")
        else:
            setattr(answer, field.name, getattr(request.message, field.name, 0))
    conn.send(answer_id, answer, request.seq)


def handle_hello(conn: MsgConnection, request: Request) -> Deferred[None] | None:
    """Opt this connection in: the granted features replace any earlier hello's."""
    req: X.IMExtHelloReq = request.message
    config = conn.ctx.config
    answer = X.IMExtHelloRsp(
        result_code=X.EXT_RESULT_OK,
        version=VERSION,
        contacts_mode=config.contacts.mode,
        room_max_members=config.rooms.max_members,
        room_max_post_size=config.rooms.max_post_size,
    )
    if req.HasField("user_id") and req.user_id != conn.user_id:
        conn.extension_features = conn.extension_features or frozenset()
        answer.result_code = X.EXT_RESULT_FORBIDDEN
        answer.features.extend(sorted(conn.extension_features))
        conn.send(X.CID_EXT_HELLO_RSP, answer, request.seq)
        return None
    offered = offered_features(config)
    granted = [f for f in FEATURES if f in req.features and f in offered]
    previous = conn.extension_features or frozenset()
    conn.extension_features = frozenset(granted)
    answer.features.extend(granted)
    conn.send(X.CID_EXT_HELLO_RSP, answer, request.seq)
    log.info(
        "user {user_id} opted in to {features} from {peer}",
        user_id=conn.user_id,
        features=",".join(granted) or "nothing",
        peer=conn.peer,
    )
    return _granted(conn, previous)


def _granted(conn: MsgConnection, previous: frozenset[str]) -> Deferred[None] | None:
    """The features changed from ``previous``: newly granted contacts get what the user
    has not had yet; a connection that no longer asks for rooms leaves the rooms it was
    in (it could not leave them after)."""
    features = conn.extension_features or frozenset()
    rooms = conn.ctx.rooms
    if ROOMS not in features and rooms is not None:
        rooms.disconnected(conn)
    if CONTACTS in features and CONTACTS not in previous:
        return ensureDeferred(_deliver_contacts(conn))
    return None


async def _deliver_contacts(conn: MsgConnection) -> None:
    """After a hello that granted contacts: what the user has not had yet."""
    contacts = conn.ctx.contacts
    if contacts is None:
        return

    def send(command_id: int, message: Message) -> None:
        conn.send(command_id, message)

    try:
        await contacts.deliver_pending(conn.user_id, send)
    except Exception:
        log_failure(log, "delivering contacts notifies to user {user_id} failed",
                    user_id=conn.user_id)  # fmt: skip


def refusal(conn: MsgConnection, req: Any, feature: str) -> int | None:
    """The result code refusing an extension request, or None when it may proceed.

    The acting user is always the connection's user: a request naming anyone else in
    its ``user_id`` field is refused, never carried out on their behalf.
    """
    features = conn.extension_features
    if features is None:
        log.info(
            "{feature} request from user {user_id} before hello ({peer}): not answered",
            feature=feature,
            user_id=conn.user_id,
            peer=conn.peer,
        )
        return X.EXT_RESULT_NOT_ENABLED
    if feature not in features:
        return X.EXT_RESULT_NOT_ENABLED
    if req.HasField("user_id") and req.user_id != conn.user_id:
        log.info(
            "refusing {feature} request from user {user_id} naming user {named} ({peer})",
            feature=feature,
            user_id=conn.user_id,
            named=req.user_id,
            peer=conn.peer,
        )
        return X.EXT_RESULT_FORBIDDEN
    return None


def notify_users(
    ctx: MsgContext, user_ids: list[int], feature: str, command_id: int, message: Message
) -> int:
    """Send a notify to every connection of ``user_ids`` that opted in to ``feature``:
    this node's directly, other nodes' through route. Returns how many were local."""
    pdu = encode(command_id, message)
    sent = ctx.online.send_to_feature(user_ids, feature, pdu)
    if ctx.route.has_peers:
        relay = X.IMExtUserRelay(user_ids=user_ids, feature=feature, pdu=pdu)
        ctx.route.relay(encode(X.CID_EXT_USER_RELAY, relay), list(user_ids))
    return sent


def user_relay_from_route(ctx: MsgContext, request: Request) -> None:
    """Another node's notify for users that may be here (``CID_EXT_USER_RELAY``);
    contacts records the notifies that reached somebody here."""
    message: X.IMExtUserRelay = request.message
    inner = message.pdu
    sent = ctx.online.send_to_feature(list(message.user_ids), message.feature, inner)
    if sent and message.feature == CONTACTS and ctx.contacts is not None:
        inner_command = PduHeader.unpack_from(inner).command_id
        done = ensureDeferred(ctx.contacts.delivered_elsewhere(inner_command, inner[16:]))
        done.addErrback(lambda f: log_failure(log, "recording a relayed delivery failed", f))


EXTENSION_HANDLERS: dict[int, Handler[MsgConnection]] = {
    X.CID_EXT_HELLO_REQ: handle_hello,
}
