"""How a msg node tells login services in other processes where it is and how loaded.

One ``ServerLink`` per login service address (the reference reports to every login
server). On every (re)connect the node sends ``CID_OTHER_MSG_SERV_INFO`` with its client
address, its limit and its current number of logged-in connections; after that one
``CID_OTHER_USER_CNT_UPDATE`` per login (+1) and per closed logged-in connection (-1)
(commands.md §2.1.6, §2.4). Changes made while a link is down are not queued: the info
sent on reconnect carries the current count.

A login service in this process does not need any of this: the msg service registers
with it directly and it reads the live count (``LoginService.register_local_node``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from teamtalk_py.login.nodes import MsgNode
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Server_pb2
from teamtalk_py.wire import CommandTable
from teamtalk_py.wire.link import LinkProtocol, ServerLink, ignore_heartbeat, parse_host_port
from teamtalk_py.wire.link_auth import LinkAuth

DEFAULT_LOGIN_PORT = 8100
USER_LOGIN = 1
USER_LOGOUT = 2


def login_addresses(value: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]``: every login service the node reports to."""
    return [part.strip() for part in value.split(",") if part.strip()]


class LoginReporter:
    """Keeps every configured login service informed of this node's address and load."""

    def __init__(
        self,
        reactor: Any,
        addresses: list[str],
        node_info: Callable[[], MsgNode],
        auth: LinkAuth,
    ) -> None:
        self.node_info = node_info
        table: CommandTable[LinkProtocol] = CommandTable()
        table.register(B.CID_OTHER_HEARTBEAT, ignore_heartbeat, decode=False)
        self.links = []
        for address in addresses:
            host, port = parse_host_port(address, DEFAULT_LOGIN_PORT)
            self.links.append(
                ServerLink(
                    reactor, "login", host, port, table, on_connect=self._connected, auth=auth
                )
            )

    def start(self) -> None:
        for link in self.links:
            link.start()

    def stop(self) -> defer.Deferred[Any]:
        return defer.gatherResults(
            [defer.ensureDeferred(link.stop()) for link in self.links], consumeErrors=True
        )

    def announce(self) -> None:
        """Send this node's address, limit and load again (after a config reload)."""
        for link in self.links:
            if link.connected and link.connection is not None:
                self._connected(link.connection)

    def _connected(self, conn: LinkProtocol) -> None:
        node = self.node_info()
        conn.send(
            B.CID_OTHER_MSG_SERV_INFO,
            Server_pb2.IMMsgServInfo(
                ip1=node.ip1,
                ip2=node.ip2,
                port=node.port,
                max_conn_cnt=node.max_conn_cnt,
                cur_conn_cnt=node.load(),
                host_name=node.host_name,
            ),
        )

    def connection_opened(self, user_id: int) -> None:
        self._count(USER_LOGIN, user_id)

    def connection_closed(self, user_id: int) -> None:
        self._count(USER_LOGOUT, user_id)

    def _count(self, action: int, user_id: int) -> None:
        update = Server_pb2.IMUserCntUpdate(user_action=action, user_id=user_id)
        for link in self.links:
            link.send(B.CID_OTHER_USER_CNT_UPDATE, update)
