"""Chat-room commands of the extension (docs/EXTENSION.md §2.3): join, leave, post.

Each handler checks the request (``refusal``: the connection opted in to rooms and acts
as its own user), makes one call on the node's ``NodeRooms`` (``rooms/membership.py``)
and answers. ``ROOM_ROUTE_HANDLERS`` takes posts other nodes relayed through route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from teamtalk_py.extension import ROOMS
from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.msg.extension import refusal
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.rooms.membership import NodeRooms
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import Handler

if TYPE_CHECKING:
    from teamtalk_py.msg.context import MsgContext


def _rooms(conn: MsgConnection) -> NodeRooms:
    rooms = conn.ctx.rooms
    assert rooms is not None, "rooms are set up before the msg port opens"
    return rooms


async def handle_join(conn: MsgConnection, request: Request) -> None:
    req: X.IMExtRoomJoinReq = request.message
    answer = X.IMExtRoomJoinRsp(room_id=req.room_id)
    refused = refusal(conn, req, ROOMS)
    if refused is None and req.room_id == 0:
        refused = X.EXT_RESULT_BAD_REQUEST
    if refused is not None:
        answer.result_code = refused
    else:
        joined = await _rooms(conn).join(conn, req.room_id)
        answer.result_code = joined.result
        if joined.members:
            answer.member_count = joined.members
    conn.send(X.CID_EXT_ROOM_JOIN_RSP, answer, request.seq)


def handle_leave(conn: MsgConnection, request: Request) -> None:
    req: X.IMExtRoomLeaveReq = request.message
    refused = refusal(conn, req, ROOMS)
    if refused is None and not _rooms(conn).leave(conn, req.room_id):
        refused = X.EXT_RESULT_NOT_IN_ROOM
    answer = X.IMExtRoomLeaveRsp(result_code=refused or X.EXT_RESULT_OK, room_id=req.room_id)
    conn.send(X.CID_EXT_ROOM_LEAVE_RSP, answer, request.seq)


async def handle_post(conn: MsgConnection, request: Request) -> None:
    """Refusals first (cheapest first: a non-member costs no rate token), then the
    fan-out, then the ack, once route has forwarded the post (``NodeRooms.post``)."""
    req: X.IMExtRoomPostReq = request.message
    ctx = conn.ctx
    rooms = _rooms(conn)
    answer = X.IMExtRoomPostAck(room_id=req.room_id)
    if req.HasField("client_seq"):
        answer.client_seq = req.client_seq
    result = refusal(conn, req, ROOMS)
    if result is None and not 0 < len(req.content) <= ctx.config.rooms.max_post_size:
        result = X.EXT_RESULT_BAD_REQUEST
    if result is None and not rooms.is_member(conn, req.room_id):
        result = X.EXT_RESULT_NOT_IN_ROOM
    if result is None and ctx.message_limits.check(conn.user_id, 0) is not None:
        result = X.EXT_RESULT_LIMIT
        conn.limit_refused()
    if result is None:
        now = ctx.now()
        result = await rooms.post(conn, req.room_id, req.msg_type, req.content, now)
        answer.create_time = now
    answer.result_code = result
    conn.send(X.CID_EXT_ROOM_POST_ACK, answer, request.seq)


ROOM_HANDLERS: dict[int, Handler[MsgConnection]] = {
    X.CID_EXT_ROOM_JOIN_REQ: handle_join,
    X.CID_EXT_ROOM_LEAVE_REQ: handle_leave,
    X.CID_EXT_ROOM_POST_REQ: handle_post,
}


def room_post_from_route(ctx: MsgContext, request: Request) -> None:
    """A post made on another node, for this node's members of the room."""
    message: X.IMExtRoomRelay = request.message
    if ctx.rooms is not None:
        ctx.rooms.deliver(message.room_id, message.pdu)


ROOM_ROUTE_HANDLERS: dict[int, Handler[MsgContext]] = {
    X.CID_EXT_ROOM_RELAY: room_post_from_route,
}
