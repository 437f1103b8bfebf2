"""How a msg node talks to the route service.

The msg side only needs a handful of verbs (presence changes, kicks, relays, status
queries). ``InProcessRoute`` carries them to a ``RouteHub`` in this process: the route
service's hub when it is co-hosted, or a private one for a node that runs alone. Either way
the hub answers with PDUs, which come back through ``MsgService.route_pdu_received``
exactly as they would over a TCP link.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Server_pb2
from teamtalk_py.route.hub import RouteHub
from teamtalk_py.wire.protocol import encode


class LocalLink:
    """The hub's view of this node: PDUs it sends us are handed straight to the node."""

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self._deliver = deliver

    def send_raw(self, pdu: bytes) -> None:
        self._deliver(pdu)


class InProcessRoute:
    def __init__(self, hub: RouteHub, deliver: Callable[[bytes], None]) -> None:
        self.hub = hub
        self.link = LocalLink(deliver)

    def start(self) -> None:
        self.hub.attach(self.link)

    def stop(self) -> None:
        self.hub.detach(self.link)

    def status_update(self, user_id: int, status: int, client_type: int) -> None:
        self.hub.user_status(self.link, user_id, status, client_type)

    def kick(self, user_id: int, client_type: int, reason: int) -> None:
        kick = Server_pb2.IMServerKickUser(user_id=user_id, client_type=client_type, reason=reason)
        self.hub.relay(self.link, encode(B.CID_OTHER_SERVER_KICK_USER, kick), [user_id])

    @property
    def has_peers(self) -> bool:
        """Whether any other msg node is linked (else relaying has nobody to reach)."""
        return len(self.hub.links) > 1

    def relay(self, pdu: bytes, user_ids: list[int] | None) -> None:
        """To the other nodes holding ``user_ids`` (every other node when None)."""
        self.hub.relay(self.link, pdu, user_ids)

    def broadcast(self, pdu: bytes) -> None:
        """To every node, this one included."""
        self.hub.broadcast(pdu)

    def users_status(self, user_ids: list[int]) -> defer.Deferred[list[tuple[int, int]]]:
        return defer.succeed(self.hub.users_status(user_ids))
