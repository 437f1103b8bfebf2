"""The login service's internal listener: msg nodes in other processes report to it.

A msg node links here (default port 8100) and sends ``CID_OTHER_MSG_SERV_INFO`` on every
(re)connect (its client address, limit and current connection count), then
``CID_OTHER_USER_CNT_UPDATE`` for each login (+1) and each closed logged-in connection
(-1). The node is offered by ``/msg_server`` while its link is up; when the link closes
or goes silent for 30 s, it is no longer offered (commands.md §2.4).

Unlike the reference, a link counts only once it has proven the cluster secret
(``link_auth``), and a registration whose addresses ``cluster.node_addresses`` does not
allow is refused and the link closed: whoever can register decides where every new client
sends its password hash.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.login.nodes import MsgNode, MsgNodeRegistry, NodeAddressPolicy
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Server_pb2
from teamtalk_py.wire import CommandTable, Request
from teamtalk_py.wire.link import InboundLinkFactory, InboundLinkProtocol, ignore_heartbeat

log = Logger(namespace="teamtalk.login")

USER_LOGIN = 1


class MsgNodeLink(InboundLinkProtocol):
    """One msg node's link; the link itself is the node's key in the registry."""

    factory: MsgNodeLinkFactory

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        node = self.factory.nodes.get(self)
        if node is not None:
            self.factory.nodes.unregister(self)
            log.info(
                "msg node {ip}:{port} unregistered (link from {peer} closed)",
                ip=node.ip1,
                port=node.port,
                peer=self.peer,
            )


def msg_serv_info(link: MsgNodeLink, request: Request) -> None:
    info: Server_pb2.IMMsgServInfo = request.message
    link_host = link.transport.getPeer().host
    policy = link.factory.addresses
    refused = [a for a in dict.fromkeys((info.ip1, info.ip2)) if not policy.allows(a, link_host)]
    if refused:
        link.factory.auth_failures += 1
        log.warn(
            "msg node linked from {peer} may not send clients to {addresses} "
            "(allowed: {allowed}); registration refused",
            peer=link.peer,
            addresses=", ".join(refused),
            allowed=", ".join(policy.entries) or f"only {link_host}, its link's address",
        )
        link.close("registration with a disallowed address")
        return
    link.factory.nodes.register(
        link,
        MsgNode(
            ip1=info.ip1,
            ip2=info.ip2,
            port=info.port,
            max_conn_cnt=info.max_conn_cnt,
            host_name=info.host_name,
            cur_conn_cnt=info.cur_conn_cnt,
        ),
    )
    log.info(
        "msg node {ip}:{port} ({host}) registered with {count}/{limit} connections",
        ip=info.ip1,
        port=info.port,
        host=info.host_name,
        count=info.cur_conn_cnt,
        limit=info.max_conn_cnt,
    )


def user_cnt_update(link: MsgNodeLink, request: Request) -> None:
    node = link.factory.nodes.get(link)
    if node is None:
        return  # counts before registration mean nothing; the info will carry the total
    if request.message.user_action == USER_LOGIN:
        node.cur_conn_cnt += 1
    elif node.cur_conn_cnt > 0:
        node.cur_conn_cnt -= 1


def build_table() -> CommandTable[MsgNodeLink]:
    table: CommandTable[MsgNodeLink] = CommandTable()
    table.register(B.CID_OTHER_HEARTBEAT, ignore_heartbeat, decode=False)
    table.register(B.CID_OTHER_MSG_SERV_INFO, msg_serv_info)
    table.register(B.CID_OTHER_USER_CNT_UPDATE, user_cnt_update)
    return table


class MsgNodeLinkFactory(InboundLinkFactory):
    protocol = MsgNodeLink

    def __init__(self, nodes: MsgNodeRegistry, addresses: NodeAddressPolicy, **kwargs: Any) -> None:
        super().__init__(table=build_table(), purpose="login", **kwargs)
        self.nodes = nodes
        self.addresses = addresses
