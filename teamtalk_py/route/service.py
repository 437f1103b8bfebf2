"""The route service's listener for msg-node links.

The presence and relay rules live in ``RouteHub``; a co-hosted msg service attaches to it
in-process. Links from remote msg nodes (the cluster issue) will attach the same way; for
now the listener accepts links and keeps them alive with heartbeats.
"""

from __future__ import annotations

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.route.hub import RouteHub
from teamtalk_py.services import TeamTalkService
from teamtalk_py.wire import CommandTable, PduFactory, PduProtocol


class RouteLink(PduProtocol):
    """A msg node's link to us. Server links time out after 30 s of silence (wire.md §7)."""

    logged_in = True
    idle_timeout = 30.0


def _note_liveness(conn: PduProtocol, request) -> None:
    """Heartbeats on server links only prove liveness; the receive clock already moved."""


def build_table() -> CommandTable:
    table = CommandTable()
    table.register(B.CID_OTHER_HEARTBEAT, _note_liveness, decode=False)
    return table


class RouteService(TeamTalkService):
    name = "route"

    def __init__(self, reactor, config) -> None:
        super().__init__(reactor, config)
        self.hub = RouteHub()
        self.factory = PduFactory(clock=reactor, table=build_table())
        self.factory.protocol = RouteLink

    async def start(self) -> None:
        await self.listen(self.config.route.listen, self.factory)
