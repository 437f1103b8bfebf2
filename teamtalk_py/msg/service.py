"""The msg service: owns the client listener and the state of who is online here."""

from __future__ import annotations

import socket

from twisted.logger import Logger

from teamtalk_py.login.nodes import MsgNode
from teamtalk_py.msg.connection import MsgConnection, MsgFactory
from teamtalk_py.msg.handlers import build_table
from teamtalk_py.services import TeamTalkService

log = Logger(namespace="teamtalk.msg")


class MsgService(TeamTalkService):
    name = "msg"

    def __init__(self, reactor, config) -> None:
        super().__init__(reactor, config)
        self.factory = MsgFactory(
            self,
            clock=reactor,
            table=build_table(),
            max_pdu_size=config.msg.max_pdu_size,
            max_outbuf=config.msg.max_outbuf,
        )
        self.port = 0

    @property
    def store(self):
        return self.sibling("store")

    async def start(self) -> None:
        store = self.store
        if store is not None:
            await store.ready
        port = await self.listen(self.config.msg.listen, self.factory)
        self.port = port.getHost().port
        login = self.sibling("login")
        if login is not None:
            login.register_local_node(self, self.node_info())

    def node_info(self) -> MsgNode:
        advertise = self.config.server.advertise
        return MsgNode(
            ip1=advertise,
            ip2=advertise,
            port=self.port,
            max_conn_cnt=self.config.msg.max_connections,
            host_name=socket.gethostname(),
            live_count=self.connection_count,
        )

    def connection_count(self) -> int:
        return sum(1 for c in self.factory.connections if c.logged_in)

    async def stop(self) -> None:
        login = self.sibling("login")
        if login is not None:
            login.unregister_local_node(self)
        for conn in list(self.factory.connections):
            conn.transport.loseConnection()

    def connection_closed(self, conn: MsgConnection) -> None:
        """Forget a closed connection (presence updates come with the login issue)."""
