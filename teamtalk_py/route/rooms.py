"""What the route service does with the chat-room packets of a linked msg node.

The rules are ``RouteHub.rooms`` (``rooms/directory.py``); these handlers only decode and
answer. Only authenticated links reach them (``route/service.py``), so no peer can count
members into a room or post into one without the cluster secret.

* ``CID_EXT_ROOM_ADMIT_REQ``: one more member of a room on the asking node, answered with
  ``CID_EXT_ROOM_ADMIT_RSP`` on the same seq (OK, or LIMIT for a full room or too many rooms).
* ``CID_EXT_ROOM_NODE_LEAVE``: one member fewer per listed room.
* ``CID_EXT_ROOM_NODE_LIST``: the node's whole set, on every (re)connect.
* ``CID_EXT_ROOM_RELAY``: a post, forwarded verbatim to every other node with members in
  the room, and to no other; then answered with ``CID_EXT_ROOM_RELAY_ACK`` on its seq (a
  relay with seq 0 has nobody waiting, and gets none). The posting node acks the poster
  only after that answer: route is the one place every node's joins and posts meet, so a
  join admitted after the answer can never be sent the post (docs/EXTENSION.md §2.3).
"""

from __future__ import annotations

from typing import Any

from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.route.link import RouteLink
from teamtalk_py.wire import Request


def admit(link: RouteLink, request: Request) -> None:
    req: X.IMExtRoomAdmitReq = request.message
    result, members = link.hub.rooms.admit(link, req.room_id)
    link.send(
        X.CID_EXT_ROOM_ADMIT_RSP,
        X.IMExtRoomAdmitRsp(result_code=result, room_id=req.room_id, member_count=members),
        request.seq,
    )


def node_leave(link: RouteLink, request: Request) -> None:
    link.hub.rooms.leave(link, list(request.message.room_ids))


def node_list(link: RouteLink, request: Request) -> None:
    rooms = [(r.room_id, r.members) for r in request.message.rooms]
    link.hub.rooms.replace(link, rooms)


def relay(link: RouteLink, request: Request) -> None:
    room_id = request.message.room_id
    link.hub.rooms.relay(link, room_id, request.pdu)
    if request.seq:
        link.send(X.CID_EXT_ROOM_RELAY_ACK, X.IMExtRoomRelayAck(room_id=room_id), request.seq)


ROOM_LINK_HANDLERS: dict[int, Any] = {
    X.CID_EXT_ROOM_ADMIT_REQ: admit,
    X.CID_EXT_ROOM_NODE_LEAVE: node_leave,
    X.CID_EXT_ROOM_NODE_LIST: node_list,
    X.CID_EXT_ROOM_RELAY: relay,
}
