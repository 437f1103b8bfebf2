"""The msg service: the client listener and the state of who is online on this node.

Handlers (``teamtalk_py.msg.handlers``) do the per-command work; this class owns what
they share: the online users, the link to route, the login lockout, the message intake
and the store.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.login.nodes import MsgNode
from teamtalk_py.metrics import one
from teamtalk_py.msg.batching import SingleMessageQueue
from teamtalk_py.msg.connection import MsgConnection, MsgFactory
from teamtalk_py.msg.credentials import Credentials
from teamtalk_py.msg.file_link import FileServers, RemoteFileServer
from teamtalk_py.msg.groups import Groups
from teamtalk_py.msg.handlers import build_route_table, build_table
from teamtalk_py.msg.intake import MessageIntake, SingleTopic, basic_checks
from teamtalk_py.msg.limits import MessageLimits, WindowLimit
from teamtalk_py.msg.lockout import LoginLockout, SharedLoginLockout
from teamtalk_py.msg.login_reporter import LoginReporter, login_addresses
from teamtalk_py.msg.online import OnlineUsers
from teamtalk_py.msg.route_client import InProcessRoute, LinkedRoute
from teamtalk_py.msg.session_watch import SessionWatch
from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol import registry
from teamtalk_py.protocol.header import PduHeader
from teamtalk_py.route.hub import RouteHub
from teamtalk_py.services import TeamTalkService
from teamtalk_py.store import accounts
from teamtalk_py.store import groups as group_store
from teamtalk_py.wire.link import ServerLink

log = Logger(namespace="teamtalk.msg")


def client_type_name(client_type: int) -> str:
    """``windows``, ``mac``, ``ios``, ``android`` (the number for anything else)."""
    try:
        return B.ClientType.Name(client_type).removeprefix("CLIENT_TYPE_").lower()
    except ValueError:
        return str(client_type)


def message_limit_settings(config) -> dict[str, Any]:
    msg = config.msg
    return {
        "rate": msg.message_rate,
        "burst": msg.message_burst,
        "bytes_per_day": msg.max_bytes_per_day,
    }


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
        self.route_table = build_route_table()
        self.online = OnlineUsers()
        self.lockout = LoginLockout(reactor)
        self.message_limits = MessageLimits(reactor, **message_limit_settings(config))
        self.group_creations = WindowLimit(
            "group creations", config.msg.group_creations_per_hour, 3600.0
        )
        #: Connections closed for exceeding their limits again and again (a metric).
        self.connections_closed_for_limits = 0
        self.groups = Groups(self)
        #: Password checks off the reactor (set up at start, once the store is known).
        self.credentials: Credentials | None = None
        self.session_watch = SessionWatch(self)
        self.single_messages: SingleMessageQueue | None = None
        #: The push service when push is configured: messages are then stored with an
        #: outbox row (in their own transaction) and each commit kicks the push worker.
        self.push = None
        self.store_group_message = group_store.store_group_message
        #: Every chat message's way in (set up at start, with the store and route), and
        #: the queue its 1:1 messages are batched in.
        self.intake: MessageIntake | None = None
        self.single_messages: SingleMessageQueue | None = None
        #: The file services this node creates transfer tasks on (set up at start).
        self.files = FileServers([])
        self.route: InProcessRoute | LinkedRoute | None = None
        #: Reports address and load to login services in other processes (--login-server).
        self.login_reporter: LoginReporter | None = None
        self._known_users: set[int] = set()
        self.port = 0
        #: The media service's public URL, which avatar URLs must start with (the
        #: co-hosted media service's, with its bound port, when there is one: tap.py).
        self.media_url: Callable[[], str] = config.media_public_url

    # -- collaborators -----------------------------------------------------------------

    @property
    def store(self):
        return self.sibling("store")

    def now(self) -> int:
        return int(self.reactor.seconds())

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        store = self.store
        await store.ready
        self.push = self.sibling("push")
        if self.push is not None:
            self.single_messages = SingleMessageQueue(
                self.reactor, store, self.push.store_single_messages, self.push.kick
            )
            self.store_group_message = self.push.store_group_message
        else:
            self.single_messages = SingleMessageQueue(self.reactor, store)
        self.credentials = Credentials(self.reactor, store)
        self.credentials.start()
        await self.session_watch.start()
        shared = self.sibling("redis")
        self.group_creations.state = shared
        if shared is not None and shared.shared:
            self.lockout = SharedLoginLockout(shared, self.reactor, store)
        # Co-hosted services talk in-process; otherwise TeamTalk's links (wire.md §7.1).
        route_service = self.sibling("route")
        if route_service is None and self.config.msg.route_server:
            self.route = LinkedRoute(
                self.reactor, self.config.msg.route_server, self, self.link_auth
            )
        else:
            hub = route_service.hub if route_service is not None else RouteHub()
            self.route = InProcessRoute(hub, self.route_pdu_received)
        self.route.start()
        single = SingleTopic(
            self.single_messages,
            self.online,
            self.route,
            self.is_known_user,
            self.user_exists,
        )
        self.intake = MessageIntake(
            self.reactor,
            store,
            self.factory.connection_ids,
            basic_checks(self.config.msg, self.message_limits),
            single,
            self.groups,
            self.metrics.messages,
        )
        self.intake.start()
        self.files = FileServers.for_service(self)
        self.files.start()
        port = await self.listen(self.config.msg.listen, self.factory)
        self.port = port.getHost().port
        login = self.sibling("login")
        if login is not None:
            login.register_local_node(self, self.node_info())
        elif self.config.msg.login_server:
            self.login_reporter = LoginReporter(
                self.reactor,
                login_addresses(self.config.msg.login_server),
                self.node_info,
                self.link_auth,
            )
            self.login_reporter.start()
        self.register_metrics()

    def register_metrics(self) -> None:
        """Connections, the message queue and this node's links, read at scrape time."""
        metrics = self.metrics
        metrics.gauges(
            "teamtalk_connections",
            "Logged-in msg connections by client type.",
            ["client_type"],
            lambda: [
                ((client_type_name(t),), n) for t, n in self.online.by_client_type.items() if n
            ],
        )
        metrics.gauges(
            "teamtalk_msg_sockets",
            "Open TCP connections to the msg service, logged in or not.",
            [],
            lambda: one(len(self.factory.connections)),
        )
        metrics.gauges(
            "teamtalk_message_queue",
            "One-to-one messages waiting for their store batch.",
            [],
            lambda: one(self.single_messages.depth if self.single_messages else 0),
        )
        metrics.counters(
            "teamtalk_limit_refusals",
            "Requests refused for the sender's limits (msg/limits.py), by limit.",
            ["limit"],
            lambda: [
                *(((kind,), n) for kind, n in self.message_limits.refused.items()),
                (("group creations",), self.group_creations.refused),
            ],
        )
        metrics.counters(
            "teamtalk_connections_closed_for_limits",
            "msg connections closed for exceeding their limits again and again.",
            [],
            lambda: one(self.connections_closed_for_limits),
        )
        metrics.gauges(
            "teamtalk_route_backlog",
            "Packets kept for route while the route link is down (bounded).",
            [],
            lambda: one(self.route.backlog_size if isinstance(self.route, LinkedRoute) else 0),
        )
        metrics.gauges(
            "teamtalk_link_up",
            "1 while this node's link to a route, login or file service is up.",
            ["link", "peer"],
            lambda: [((link.name, link.address), int(link.connected)) for link in self.links()],
        )

    def links(self) -> list[ServerLink]:
        """This node's links to services in other processes."""
        links = []
        if isinstance(self.route, LinkedRoute):
            links.append(self.route.link)
        if self.login_reporter is not None:
            links.extend(self.login_reporter.links)
        links.extend(s.link for s in self.files.servers if isinstance(s, RemoteFileServer))
        return links

    async def health(self) -> dict[str, Any]:
        """Up while started; ``degraded`` (still ready: it serves its own clients, stores
        and acks) while a link to route, login or file in another process is down, each
        link's state listed (``"route 10.0.0.1:8200": "up"``)."""
        links = {f"{link.name} {link.address}": "up" if link.connected else "down"
                 for link in self.links()}  # fmt: skip
        part: dict[str, Any] = {"ok": bool(self.is_started and self.running)}
        if links:
            part["links"] = links
        if "down" in links.values():
            part["degraded"] = True
        return part

    def node_name(self) -> str:
        """How operators tell this msg node from others: its advertised address:port."""
        return f"{self.config.server.advertise}:{self.port}"

    def online_report(self) -> list[dict[str, object]]:
        """Every logged-in connection of this node (for /online)."""
        return [
            {
                "user_id": conn.user_id,
                "name": getattr(conn, "login_name", ""),
                "client_type": client_type_name(conn.client_type),
                "since": getattr(conn, "logged_in_at", 0),
                "peer": getattr(conn, "peer", ""),
            }
            for conn in self.online.all_connections()
        ]

    def reconfigure(self, config) -> None:
        super().reconfigure(config)
        self.factory.max_pdu_size = config.msg.max_pdu_size
        self.factory.max_outbuf = config.msg.max_outbuf
        self.message_limits.configure(**message_limit_settings(config))
        self.group_creations.limit = config.msg.group_creations_per_hour
        self.session_watch.reconfigure(config.msg.account_check_interval)
        if not self.is_started:
            return
        # The advertised address or the connection limit may have changed.
        login = self.sibling("login")
        if login is not None:
            login.register_local_node(self, self.node_info())
        elif self.login_reporter is not None:
            self.login_reporter.announce()

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
        return self.online.connection_count

    async def stop(self) -> None:
        login = self.sibling("login")
        if login is not None:
            login.unregister_local_node(self)
        for conn in list(self.factory.connections):
            conn.transport.loseConnection()
        if self.intake is not None:
            self.intake.stop()
        if self.login_reporter is not None:
            await self.login_reporter.stop()
        if self.route is not None:
            await defer.maybeDeferred(self.route.stop)
        await self.files.stop()
        self.session_watch.stop()
        if self.credentials is not None:
            self.credentials.stop()

    # -- connections -------------------------------------------------------------------

    def connection_opened(self, conn: MsgConnection) -> None:
        """Login succeeded: the connection now counts as online everywhere."""
        self.online.add(conn)
        self.route.status_update(conn.user_id, B.USER_STATUS_ONLINE, conn.client_type)
        if self.login_reporter is not None:
            self.login_reporter.connection_opened(conn.user_id)

    def connection_closed(self, conn: MsgConnection) -> None:
        if conn.logged_in and self.online.remove(conn) is not None:
            if self.route is not None:
                self.route.status_update(conn.user_id, B.USER_STATUS_OFFLINE, conn.client_type)
            if self.login_reporter is not None:
                self.login_reporter.connection_closed(conn.user_id)

    # -- users -------------------------------------------------------------------------

    def is_known_user(self, user_id: int) -> bool:
        """The cheap check: a user already seen (online here, or found before)."""
        return user_id in self._known_users or user_id in self.online

    async def user_exists(self, user_id: int) -> bool:
        """Whether ``user_id`` is an account; positive answers are cached (ids are never
        reused, and disabled accounts still exist for history)."""
        if user_id in self._known_users or user_id in self.online:
            return True
        if user_id == 0:
            return False
        rows = await self.store.read(accounts.get_users_by_ids, [user_id])
        if rows:
            self._known_users.add(user_id)
            return True
        return False

    # -- packets from route ------------------------------------------------------------

    def route_pdu_received(self, pdu: bytes) -> None:
        """A PDU from the route service (in-process or over a link): dispatch it."""
        header = PduHeader.unpack_from(pdu)
        entry = self.route_table.get(header.command_id)
        if entry is None:
            log.info("ignoring {command} from route", command=registry.name_of(header.command_id))
            return
        message = registry.message_class(header.command_id)()
        message.ParseFromString(pdu[16:])
        result = entry.handler(self, header, pdu, message)
        if inspect.iscoroutine(result):
            result = defer.ensureDeferred(result)
        if isinstance(result, defer.Deferred):
            result.addErrback(lambda f: log_failure(log, "route handler failed", f))
