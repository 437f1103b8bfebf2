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
* chat messages are not kept: every one was stored before it was acked, and the other
  nodes read what they missed from the store once the link is back (``catch_up.py``,
  which also covers what was lost in flight before the link was noticed down);
* other relayed packets (read notifies, P2P, notifications) are kept in a bounded
  backlog (``BACKLOG_MAX`` packets, ``BACKLOG_MAX_AGE`` seconds) and sent after the
  online-user list on reconnect; when it overflows the oldest go, counted and logged
  once per outage, and the memory is given back at reconnect;
* kicks are not queued: a late kick could hit a connection that logged in after it;
* users-status queries are answered from this node's own knowledge;
* chat rooms are live only: a join is refused (route admits every join, and cannot be
  asked), a post reaches this node's members only (and is acked at once), leaves are not
  sent (the room list sent on reconnect replaces this node's counts on route).

A room post's relay is a request (``room_relay``): route answers it once it has forwarded
the post, and the poster's ack waits for that answer, so a join that route admits after
the ack never gets the post (route is where every node's joins and posts meet; two
links to it are read in no particular order).

Each time the link comes up its ``epoch`` grows: delivery markers carry it, so other
nodes can tell that a range of this node's relays may have been lost. A marker goes out
as soon as the link is up (``when_up``), so route knows which node run the link is from
(for ``CID_NODE_LOST``) before the run's first relay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, cast

from google.protobuf.message import Message
from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Server_pb2
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.protocol.header import PduHeader
from teamtalk_py.route.hub import CID_DELIVERED_UPTO, CID_NODE_LOST, RouteHub
from teamtalk_py.wire import CommandTable, Request
from teamtalk_py.wire.link import LinkProtocol, ServerLink, ignore_heartbeat, parse_host_port
from teamtalk_py.wire.link_auth import LinkAuth
from teamtalk_py.wire.protocol import encode

log = Logger(namespace="teamtalk.msg.route")

DEFAULT_ROUTE_PORT = 8200
#: Relayed packets (not chat messages) kept while the route link is down.
BACKLOG_MAX = 10000
#: Seconds a kept packet stays worth sending live; older ones are left to unread/history.
BACKLOG_MAX_AGE = 300.0
#: Seconds to wait for route to answer a users-status query before answering locally.
STATUS_TIMEOUT = 5.0
#: A node's online-user list can be large (one entry per connection).
MAX_LINK_PDU_SIZE = 64 * 1024 * 1024


def kick_of(user_id: int, client_type: int, reason: int) -> Server_pb2.IMServerKickUser:
    """The kick another node's connections of ``user_id`` in that category get."""
    return Server_pb2.IMServerKickUser(
        user_id=user_id, client_type=cast(B.ClientType.ValueType, client_type), reason=reason
    )


def room_relay_pdu(room_id: int, pdu: bytes) -> bytes:
    """A room post notify wrapped for route, which forwards it to nodes with members."""
    return encode(X.CID_EXT_ROOM_RELAY, X.IMExtRoomRelay(room_id=room_id, pdu=pdu))


def _done(result: object) -> None:
    """Whatever came (the answer, a timeout, a lost link): the wait is over."""
    return None


def room_list(rooms: list[tuple[int, int]]) -> X.IMExtRoomNodeList:
    """This node's rooms and members in each, as route wants them on every (re)connect."""
    message = X.IMExtRoomNodeList()
    for room_id, members in rooms:
        message.rooms.add(room_id=room_id, members=members)
    return message


class LocalLink:
    """The hub's view of this node: PDUs it sends us are handed straight to the node,
    and the hub's own notifies with the message they were encoded from
    (``deliver_message(pdu, message)``, when given: nothing to decode)."""

    def __init__(
        self,
        deliver: Callable[[bytes], None],
        deliver_message: Callable[[bytes, Message], None] | None = None,
    ) -> None:
        self._deliver = deliver
        self._deliver_message = deliver_message

    def send_raw(self, pdu: bytes) -> None:
        self._deliver(pdu)

    def send_message(self, pdu: bytes, message: Message) -> None:
        if self._deliver_message is None:
            self._deliver(pdu)
        else:
            self._deliver_message(pdu, message)


class InProcessRoute:
    #: The in-process link never breaks.
    epoch = 1

    def __init__(
        self,
        hub: RouteHub,
        deliver: Callable[[bytes], None],
        deliver_message: Callable[[bytes, Message], None] | None = None,
    ) -> None:
        self.hub = hub
        self.link = LocalLink(deliver, deliver_message)

    def start(self) -> None:
        self.hub.attach(self.link)

    def stop(self) -> None:
        self.hub.detach(self.link)

    def status_update(
        self, user_id: int, status: B.UserStatType.ValueType, client_type: int
    ) -> None:
        self.hub.user_status(self.link, user_id, status, client_type)

    def kick(self, user_id: int, client_type: int, reason: int) -> None:
        """The kick for the user's connections on the other nodes. With none linked there
        is nobody to tell (every login asks), so nothing is built: the user is online here,
        so the hub would neither send nor park it."""
        if not self.has_peers:
            return
        kick = kick_of(user_id, client_type, reason)
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

    def send_marker(self, pdu: bytes) -> None:
        """A delivery marker to every other node (``catch_up.py``)."""
        if self.has_peers:
            self.hub.marker(self.link, pdu)

    def users_status(self, user_ids: list[int]) -> defer.Deferred[list[tuple[int, int]]]:
        return defer.succeed(self.hub.users_status(user_ids))

    def room_admit(self, room_id: int) -> defer.Deferred[tuple[int, int]]:
        return defer.succeed(self.hub.rooms.admit(self.link, room_id))

    def room_leave(self, room_ids: list[int]) -> None:
        self.hub.rooms.leave(self.link, room_ids)

    def room_relay(self, room_id: int, pdu: bytes) -> defer.Deferred[None]:
        """To the other nodes with members in the room, if there are any; done when
        this returns (the hub is in this process)."""
        rooms = self.hub.rooms
        if any(link is not self.link for link in rooms.nodes_in(room_id)):
            rooms.relay(self.link, room_id, room_relay_pdu(room_id, pdu))
        return defer.succeed(None)


class LinkedRoute:
    """The route verbs over a reconnecting TCP link to a route service elsewhere.

    ``service`` is the ``MsgService``: its ``online`` users are what we register, its
    ``route_table`` says which commands route may send us, and every such packet goes to
    its ``route_pdu_received``, exactly like the in-process hub's packets.
    """

    def __init__(
        self,
        reactor: Any,
        address: str,
        service: Any,
        auth: LinkAuth,
        *,
        backlog_max: int = BACKLOG_MAX,
        backlog_max_age: float = BACKLOG_MAX_AGE,
    ) -> None:
        host, port = parse_host_port(address, DEFAULT_ROUTE_PORT)
        self.reactor = reactor
        self.service = service
        table: CommandTable[LinkProtocol] = CommandTable()
        table.register(B.CID_OTHER_HEARTBEAT, ignore_heartbeat, decode=False)
        # An answer that arrives after its query timed out is not an error.
        table.register(B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE, ignore_heartbeat, decode=False)
        table.register(X.CID_EXT_ROOM_ADMIT_RSP, ignore_heartbeat, decode=False)
        table.register(X.CID_EXT_ROOM_RELAY_ACK, ignore_heartbeat, decode=False)
        for command_id in (*service.route_table.command_ids(), CID_DELIVERED_UPTO, CID_NODE_LOST):
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
        #: The backlog's bounds, read at each use (a test lowers them on a running node).
        self.backlog_max = backlog_max
        self.backlog_max_age = backlog_max_age
        self._backlog: deque[tuple[float, bytes]] = deque()
        #: How many times the link came up (delivery markers carry it).
        self.epoch = 0
        #: Packets the backlog had no room for, this outage (logged once, at the first).
        self.overflow = 0
        #: Chat messages not relayed while the link was down (the catch-up's to deliver).
        self.messages_not_relayed = 0
        #: Called each time the link is up and registered (the catch-up's marker).
        self.when_up: Callable[[], None] = lambda: None

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
        self.epoch += 1
        conn.send(B.CID_OTHER_ROLE_SET, Server_pb2.IMRoleSet(master=1))
        info = Server_pb2.IMOnlineUserInfo()
        for client in self.service.online.all_connections():
            info.user_stat_list.add(
                user_id=client.user_id, status=B.USER_STATUS_ONLINE, client_type=client.client_type
            )
        conn.send(B.CID_OTHER_ONLINE_USER_INFO, info)
        rooms = self.service.rooms.counts() if self.service.rooms is not None else []
        conn.send(X.CID_EXT_ROOM_NODE_LIST, room_list(rooms))
        backlog, self._backlog = self._backlog, deque()
        horizon = self.reactor.seconds() - self.backlog_max_age
        sent = 0
        for kept_at, pdu in backlog:
            if kept_at >= horizon:
                conn.send_raw(pdu)
                sent += 1
        log.info(
            "registered {count} connections with route; sent {sent} kept packets "
            "({overflow} dropped for room; {messages} messages left to the catch-up)",
            count=len(info.user_stat_list),
            sent=sent,
            overflow=self.overflow,
            messages=self.messages_not_relayed,
        )
        self.overflow = self.messages_not_relayed = 0
        self.when_up()

    def _from_route(self, conn: LinkProtocol, request: Request) -> None:
        self.service.route_pdu_received(request.pdu)

    def _send_or_keep(self, pdu: bytes) -> None:
        if self.link.send_raw(pdu):
            return
        if PduHeader.unpack_from(pdu).command_id == B.CID_MSG_DATA:
            self.messages_not_relayed += 1  # stored: the other nodes catch up from the store
            return
        if len(self._backlog) >= self.backlog_max:
            if not self.overflow:
                log.warn(
                    "route backlog full ({max} packets): dropping the oldest read notifies "
                    "and notifications until route is back",
                    max=self.backlog_max,
                )
            self.overflow += 1
            self._backlog.popleft()
        self._backlog.append((self.reactor.seconds(), pdu))

    def send_marker(self, pdu: bytes) -> None:
        """A delivery marker: sent now or never (a later one says more)."""
        self.link.send_raw(pdu)

    # -- the route verbs ---------------------------------------------------------------

    def status_update(
        self, user_id: int, status: B.UserStatType.ValueType, client_type: int
    ) -> None:
        self.link.send(
            B.CID_OTHER_USER_STATUS_UPDATE,
            Server_pb2.IMUserStatusUpdate(
                user_status=status,
                user_id=user_id,
                client_type=cast(B.ClientType.ValueType, client_type),
            ),
        )

    def kick(self, user_id: int, client_type: int, reason: int) -> None:
        self.link.send(B.CID_OTHER_SERVER_KICK_USER, kick_of(user_id, client_type, reason))

    def relay(self, pdu: bytes, user_ids: list[int] | None) -> None:
        """To the other nodes holding the users the packet names (route decides)."""
        self._send_or_keep(pdu)

    def broadcast(self, pdu: bytes) -> None:
        """To every node, this one included (route sends it back to us)."""
        self._send_or_keep(pdu)

    def users_status(self, user_ids: list[int]) -> defer.Deferred[list[tuple[int, int]]]:
        if not self.link.connected:
            return defer.succeed(self._local_status(user_ids))
        return defer.ensureDeferred(self._users_status(user_ids))

    async def _users_status(self, user_ids: list[int]) -> list[tuple[int, int]]:
        d = self.link.request(
            B.CID_BUDDY_LIST_USERS_STATUS_REQUEST,
            Buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=user_ids),
            answer_id=B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE,
        )
        d.addTimeout(STATUS_TIMEOUT, self.reactor)
        try:
            answer: Request = await d
        except Exception as e:
            log.info(
                "users status from route failed ({error}); answering locally",
                error=str(e) or type(e).__name__,
            )
            return self._local_status(user_ids)
        return [(s.user_id, s.status) for s in answer.message.user_stat_list]

    def room_admit(self, room_id: int) -> defer.Deferred[tuple[int, int]]:
        """Route's answer (result code, members) to one more member here; fails while
        the link is down or route does not answer within ``STATUS_TIMEOUT``."""
        if not self.link.connected:
            return defer.fail(ConnectionError("route link is down"))
        d = self.link.request(
            X.CID_EXT_ROOM_ADMIT_REQ,
            X.IMExtRoomAdmitReq(room_id=room_id),
            answer_id=X.CID_EXT_ROOM_ADMIT_RSP,
        )
        d.addTimeout(STATUS_TIMEOUT, self.reactor)
        return d.addCallback(lambda a: (a.message.result_code, a.message.member_count))

    def room_leave(self, room_ids: list[int]) -> None:
        self.link.send(X.CID_EXT_ROOM_NODE_LEAVE, X.IMExtRoomNodeLeave(room_ids=room_ids))

    def room_relay(self, room_id: int, pdu: bytes) -> defer.Deferred[None]:
        """To route, which knows the nodes with members; live only, never kept.

        Fires once route has answered that it forwarded the post, at once while the link
        is down (the post is not relayed), or after ``STATUS_TIMEOUT`` (or the link lost
        meanwhile). It never fails: the post was delivered here already; the wait only
        puts the poster's ack after route's forwarding.
        """
        if not self.link.connected:
            return defer.succeed(None)
        d = self.link.request(
            X.CID_EXT_ROOM_RELAY,
            X.IMExtRoomRelay(room_id=room_id, pdu=pdu),
            answer_id=X.CID_EXT_ROOM_RELAY_ACK,
        )
        d.addTimeout(STATUS_TIMEOUT, self.reactor)
        return d.addBoth(_done)

    def _local_status(self, user_ids: list[int]) -> list[tuple[int, int]]:
        """What this node knows: ONLINE when a PC client is here or route said so."""
        result: list[tuple[int, int]] = []
        for user_id in user_ids:
            user = self.service.online.get(user_id)
            online = user is not None and (user.pc_connections() or user.pc_online_anywhere)
            result.append((user_id, B.USER_STATUS_ONLINE if online else B.USER_STATUS_OFFLINE))
        return result
