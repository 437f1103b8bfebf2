"""How a msg node talks to the route service.

The msg side only needs a handful of verbs (presence changes, kicks, relays, status
queries). ``InProcessRoute`` carries them to a ``RouteHub`` in this process: the route
service's hub when it is co-hosted, or a private one for a node that runs alone. Either way
the hub answers with PDUs, which come back through ``MsgService.route_pdu_received``
exactly as they would over a TCP link.

``LinkedRoute`` carries the same verbs over a TCP link (``ServerLink``) to a route service
in another process, as TeamTalk's own inter-server PDUs (wire.md §7.1): on every
(re)connect it sends ``CID_OTHER_ROLE_SET`` and ``CID_OTHER_ONLINE_USER_INFO`` with every
logged-in connection of this node, then per-connection ``CID_OTHER_USER_STATUS_UPDATE``.

While the link is down:

* presence changes are not queued: the full list sent on reconnect replaces them;
* relayed packets (messages, read notifies, P2P, notifications) are kept in a bounded
  backlog (``BACKLOG_MAX`` packets, ``BACKLOG_MAX_AGE`` seconds) and sent after the
  online-user list on reconnect, so live delivery survives a short outage. Every chat
  message was stored before it was acked, so one that falls out of the backlog is not
  lost: the receiver gets it from its unread count and history;
* kicks are not queued: a late kick could hit a connection that logged in after it;
* users-status queries are answered from this node's own knowledge.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Server_pb2
from teamtalk_py.route.hub import RouteHub
from teamtalk_py.wire import CommandTable, Request
from teamtalk_py.wire.link import LinkProtocol, ServerLink, ignore_heartbeat, parse_host_port
from teamtalk_py.wire.link_auth import LinkAuth
from teamtalk_py.wire.protocol import encode

log = Logger(namespace="teamtalk.msg.route")

DEFAULT_ROUTE_PORT = 8200
#: Relayed packets kept while the route link is down.
BACKLOG_MAX = 10000
#: Seconds a kept packet stays worth sending live; older ones are left to unread/history.
BACKLOG_MAX_AGE = 300.0
#: Seconds to wait for route to answer a users-status query before answering locally.
STATUS_TIMEOUT = 5.0
#: A node's online-user list can be large (one entry per connection).
MAX_LINK_PDU_SIZE = 64 * 1024 * 1024


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


class LinkedRoute:
    """The route verbs over a reconnecting TCP link to a route service elsewhere.

    ``service`` is the ``MsgService``: its ``online`` users are what we register, its
    ``route_table`` says which commands route may send us, and every such packet goes to
    its ``route_pdu_received``, exactly like the in-process hub's packets.
    """

    def __init__(self, reactor: Any, address: str, service: Any, auth: LinkAuth) -> None:
        host, port = parse_host_port(address, DEFAULT_ROUTE_PORT)
        self.reactor = reactor
        self.service = service
        table = CommandTable()
        table.register(B.CID_OTHER_HEARTBEAT, ignore_heartbeat, decode=False)
        # An answer that arrives after its query timed out is not an error.
        table.register(B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE, ignore_heartbeat, decode=False)
        for command_id in service.route_table.command_ids():
            table.register(command_id, self._from_route, decode=False)
        self.link = ServerLink(
            reactor,
            "route",
            host,
            port,
            table,
            on_connect=self._connected,
            max_pdu_size=MAX_LINK_PDU_SIZE,
            auth=auth,
        )
        self._backlog: deque[tuple[float, bytes]] = deque(maxlen=BACKLOG_MAX)

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def backlog_size(self) -> int:
        """Packets kept while the link is down (a metric)."""
        return len(self._backlog)

    @property
    def has_peers(self) -> bool:
        """Always: only route knows the other nodes, and a down link keeps a backlog."""
        return True

    def start(self) -> None:
        self.link.start()

    def stop(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self.link.stop())

    # -- link events -----------------------------------------------------------------

    def _connected(self, conn: LinkProtocol) -> None:
        conn.send(B.CID_OTHER_ROLE_SET, Server_pb2.IMRoleSet(master=1))
        info = Server_pb2.IMOnlineUserInfo()
        for client in self.service.online.all_connections():
            info.user_stat_list.add(
                user_id=client.user_id, status=B.USER_STATUS_ONLINE, client_type=client.client_type
            )
        conn.send(B.CID_OTHER_ONLINE_USER_INFO, info)
        backlog, self._backlog = self._backlog, deque(maxlen=BACKLOG_MAX)
        horizon = self.reactor.seconds() - BACKLOG_MAX_AGE
        sent = 0
        for kept_at, pdu in backlog:
            if kept_at >= horizon:
                conn.send_raw(pdu)
                sent += 1
        log.info(
            "registered {count} connections with route; sent {sent} kept packets",
            count=len(info.user_stat_list),
            sent=sent,
        )

    def _from_route(self, conn: LinkProtocol, request: Request) -> None:
        self.service.route_pdu_received(request.pdu)

    def _send_or_keep(self, pdu: bytes) -> None:
        if not self.link.send_raw(pdu):
            self._backlog.append((self.reactor.seconds(), pdu))

    # -- the route verbs ---------------------------------------------------------------

    def status_update(self, user_id: int, status: int, client_type: int) -> None:
        self.link.send(
            B.CID_OTHER_USER_STATUS_UPDATE,
            Server_pb2.IMUserStatusUpdate(
                user_status=status, user_id=user_id, client_type=client_type
            ),
        )

    def kick(self, user_id: int, client_type: int, reason: int) -> None:
        kick = Server_pb2.IMServerKickUser(user_id=user_id, client_type=client_type, reason=reason)
        self.link.send(B.CID_OTHER_SERVER_KICK_USER, kick)

    def relay(self, pdu: bytes, user_ids: list[int] | None) -> None:
        """To the other nodes holding the users the packet names (route decides)."""
        self._send_or_keep(pdu)

    def broadcast(self, pdu: bytes) -> None:
        """To every node, this one included (route sends it back to us)."""
        self._send_or_keep(pdu)

    def users_status(self, user_ids: list[int]) -> defer.Deferred[list[tuple[int, int]]]:
        if not self.link.connected:
            return defer.succeed(self._local_status(user_ids))
        d = self.link.request(
            B.CID_BUDDY_LIST_USERS_STATUS_REQUEST,
            Buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=user_ids),
            answer_id=B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE,
        )
        d.addTimeout(STATUS_TIMEOUT, self.reactor)

        def answered(answer: Request) -> list[tuple[int, int]]:
            return [(s.user_id, s.status) for s in answer.message.user_stat_list]

        def failed(failure) -> list[tuple[int, int]]:
            log.info(
                "users status from route failed ({error}); answering locally",
                error=failure.getErrorMessage(),
            )
            return self._local_status(user_ids)

        return d.addCallbacks(answered, failed)

    def _local_status(self, user_ids: list[int]) -> list[tuple[int, int]]:
        """What this node knows: ONLINE when a PC client is here or route said so."""
        result = []
        for user_id in user_ids:
            user = self.service.online.get(user_id)
            online = user is not None and (user.pc_connections() or user.pc_online_anywhere)
            result.append((user_id, B.USER_STATUS_ONLINE if online else B.USER_STATUS_OFFLINE))
        return result
