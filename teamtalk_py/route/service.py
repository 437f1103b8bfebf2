"""The route service: the TCP listener msg nodes link to, in front of ``RouteHub``.

Each accepted connection is a ``RouteLink`` (``link.py``): it attaches itself to the hub
when it opens (it has ``send_raw``, which is all the hub needs) and detaches when it
closes, which marks the node's users offline everywhere. What the link understands
(commands.md §2.2):

* ``CID_OTHER_ONLINE_USER_INFO``: the node's full list of connections, sent on every
  (re)connect; ``CID_OTHER_USER_STATUS_UPDATE``: one connection came or went.
* ``CID_BUDDY_LIST_USERS_STATUS_REQUEST``: answered on the same link with the request's
  seq and ``attach_data`` echoed, for users on any node.
* The relayed kinds (``hub.RELAYED_COMMANDS``), forwarded verbatim by ``relay_rule``.
* ``CID_OTHER_ROLE_SET`` (remembered, no effect) and heartbeats (liveness only).
* The chat-room packets of the extension (``route/rooms.py``): admitting members, each
  node's member counts, and posts forwarded only to nodes with members.
* ``hub.CID_DELIVERED_UPTO``: a node's delivery marker, relayed verbatim to every other
  node (``msg/catch_up.py``); the last one of a link goes out again as ``CID_NODE_LOST``
  when the link closes.

A link is attached to the hub only once it has proven the cluster secret (``link_auth``);
before that it can neither relay nor kick. A co-hosted msg service skips all of this and
uses the same hub in-process; the route port is then only opened when ``route.listen``
names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from teamtalk_py.metrics import one
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2
from teamtalk_py.protocol import registry
from teamtalk_py.route.hub import CID_DELIVERED_UPTO, RELAYED_COMMANDS, RouteHub
from teamtalk_py.route.link import RouteFactory, RouteLink
from teamtalk_py.route.rooms import ROOM_LINK_HANDLERS
from teamtalk_py.services import TeamTalkService
from teamtalk_py.wire import CommandTable, Request
from teamtalk_py.wire.link import ignore_heartbeat

if TYPE_CHECKING:
    from teamtalk_py.config import Config

log = Logger(namespace="teamtalk.route")

#: A node's online-user list can be large (one entry per connection).
MAX_LINK_PDU_SIZE = 64 * 1024 * 1024


def user_status_update(link: RouteLink, request: Request) -> None:
    m = request.message
    link.hub.user_status(link, m.user_id, m.user_status, m.client_type)


def online_user_info(link: RouteLink, request: Request) -> None:
    stats = [(s.user_id, s.status, s.client_type) for s in request.message.user_stat_list]
    link.hub.online_user_info(link, stats)
    log.info("msg node {peer} registered {count} connections", peer=link.peer, count=len(stats))


def role_set(link: RouteLink, request: Request) -> None:
    link.master = bool(request.message.master)


def users_status(link: RouteLink, request: Request) -> None:
    req: Buddy_pb2.IMUsersStatReq = request.message
    answer = Buddy_pb2.IMUsersStatRsp(user_id=req.user_id)
    for user_id, status in link.hub.users_status(list(req.user_id_list)):
        answer.user_stat_list.add(user_id=user_id, status=status)
    if req.HasField("attach_data"):
        answer.attach_data = req.attach_data
    link.send(B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE, answer, request.seq)


def relay(link: RouteLink, request: Request) -> None:
    if not link.hub.relay_packet(link, request.command_id, request.message, request.pdu):
        log.info(
            "not relaying {command} from {peer}",
            command=registry.name_of(request.command_id),
            peer=link.peer,
        )


def delivered_upto(link: RouteLink, request: Request) -> None:
    """Markers need no decoding here: every other node gets the bytes."""
    link.hub.marker(link, request.pdu)


def build_table() -> CommandTable[RouteLink]:
    table: CommandTable[RouteLink] = CommandTable()
    table.register(B.CID_OTHER_HEARTBEAT, ignore_heartbeat, decode=False)
    table.register(B.CID_OTHER_USER_STATUS_UPDATE, user_status_update)
    table.register(B.CID_OTHER_ONLINE_USER_INFO, online_user_info)
    table.register(B.CID_OTHER_ROLE_SET, role_set)
    table.register(B.CID_BUDDY_LIST_USERS_STATUS_REQUEST, users_status)
    for command_id in RELAYED_COMMANDS:
        table.register(command_id, relay)
    for room_command, handler in ROOM_LINK_HANDLERS.items():
        table.register(room_command, handler)
    table.register(CID_DELIVERED_UPTO, delivered_upto, decode=False)
    return table


def room_limits(config: Config) -> dict[str, int]:
    """The cluster-wide chat-room limits route holds (``[rooms]``)."""
    return {"max_rooms": config.rooms.max_rooms, "max_members": config.rooms.max_members}


class RouteService(TeamTalkService):
    name = "route"

    def __init__(self, reactor: Any, config: Config) -> None:
        super().__init__(reactor, config)
        self.hub = RouteHub(clock=reactor)
        self.hub.rooms.configure(**room_limits(config))
        self.factory: RouteFactory | None = None

    def reconfigure(self, config: Config) -> None:
        super().reconfigure(config)
        self.hub.rooms.configure(**room_limits(config))

    async def start(self) -> None:
        self.metrics.gauges(
            "teamtalk_route_links",
            "msg nodes linked to this route service over TCP.",
            [],
            lambda: one(len(self.factory.connections) if self.factory is not None else 0),
        )
        self.metrics.gauges(
            "teamtalk_route_parked",
            "One-to-one packets parked for a node that has not re-registered yet.",
            [],
            lambda: one(self.hub.parked_count),
        )
        hub = self.hub
        self.metrics.counters(
            "teamtalk_route_pdus_in",
            "Packets msg nodes handed this route service: relays and status changes.",
            [],
            lambda: one(hub.pdus_in),
        )
        self.metrics.counters(
            "teamtalk_route_pdus_out",
            "Copies of packets this route service sent to msg nodes.",
            [],
            lambda: one(hub.pdus_out),
        )
        rooms = self.hub.rooms
        self.metrics.gauges(
            "teamtalk_rooms",
            "Chat rooms with members, across the nodes linked to this route service.",
            [],
            lambda: one(rooms.room_count),
        )
        self.metrics.counters(
            "teamtalk_room_relays",
            "Room posts forwarded to another msg node (only nodes with members get one).",
            [],
            lambda: one(rooms.relayed),
        )
        self.metrics.counters(
            "teamtalk_room_joins_refused",
            "Room joins refused for rooms.max_members or rooms.max_rooms.",
            [],
            lambda: one(rooms.refused),
        )
        if not self.config.route.listen:
            return  # only a co-hosted msg service uses this hub
        self.factory = RouteFactory(
            self.hub,
            auth=self.link_auth,
            purpose="route",
            clock=self.reactor,
            table=build_table(),
            max_pdu_size=MAX_LINK_PDU_SIZE,
        )
        await self.listen_internal(self.config.route.listen, self.factory)

    def online_report(self) -> list[dict[str, object]]:
        """For /online: each node's connections as this route service knows them."""
        return [
            {
                "link": getattr(link, "peer", "in-process"),
                "connections": [
                    {"user_id": user_id, "client_type": client_type}
                    for user_id, client_type in self.hub.presence.connections_on(link)
                ],
            }
            for link in self.hub.links
        ]

    async def stop(self) -> None:
        if self.factory is not None:
            for conn in list(self.factory.connections):
                conn.close("stopping")
