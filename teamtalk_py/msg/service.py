"""The msg service: the client listener and the state of who is online on this node.

Handlers (``teamtalk_py.msg.handlers``) do the per-command work; this class owns what
they share: the online users, the link to route, the login lockout, the message intake
and the store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Collection
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import Message
from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.contacts.contacts import Contacts
from teamtalk_py.extension import CONTACTS
from teamtalk_py.login.nodes import MsgNode
from teamtalk_py.logs import QuietUnderLoad
from teamtalk_py.metrics import one
from teamtalk_py.msg.batching import SingleMessageQueue
from teamtalk_py.msg.catch_up import CID_DELIVERED_UPTO, CatchUp, deliver_stored
from teamtalk_py.msg.connection import MsgFactory
from teamtalk_py.msg.credentials import Credentials
from teamtalk_py.msg.extension import notify_users
from teamtalk_py.msg.file_link import FileServers, RemoteFileServer
from teamtalk_py.msg.groups import Groups
from teamtalk_py.msg.handlers import build_route_table, build_table
from teamtalk_py.msg.intake import MessageIntake, SingleTopic, basic_checks
from teamtalk_py.msg.limits import MessageLimits, WindowLimit
from teamtalk_py.msg.lockout import LoginLockout
from teamtalk_py.msg.login_reporter import LoginReporter, login_addresses
from teamtalk_py.msg.online import OnlineUsers, PresenceBatch
from teamtalk_py.msg.realm import LoginRealm
from teamtalk_py.msg.route_client import InProcessRoute, LinkedRoute
from teamtalk_py.msg.run import Origins
from teamtalk_py.msg.session_watch import SessionWatch
from teamtalk_py.msg.user_lookup import UserLookups
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol.header import PduHeader
from teamtalk_py.rooms.membership import NodeRooms
from teamtalk_py.route.hub import CID_NODE_LOST, RouteHub
from teamtalk_py.route.service import room_limits
from teamtalk_py.services import TeamTalkService
from teamtalk_py.settle import settled
from teamtalk_py.store import accounts
from teamtalk_py.store import groups as group_store
from teamtalk_py.wire.link import ServerLink
from teamtalk_py.wire.protocol import FanoutHelpers, dispatch
from teamtalk_py.wire.transport import slim_transports

if TYPE_CHECKING:
    from teamtalk_py.auth.tokens import LoginAttempts
    from teamtalk_py.config import Config
    from teamtalk_py.file.service import FileService
    from teamtalk_py.login.service import LoginService
    from teamtalk_py.msg.context import Client
    from teamtalk_py.push.service import PushOutbox
    from teamtalk_py.route.service import RouteService
    from teamtalk_py.shared_state import SharedState
    from teamtalk_py.store.service import StoreService

log = Logger(namespace="teamtalk.msg")


def client_type_name(client_type: int) -> str:
    """``windows``, ``mac``, ``ios``, ``android`` (the number for anything else)."""
    try:
        return (
            B.ClientType.Name(cast(B.ClientType.ValueType, client_type))
            .removeprefix("CLIENT_TYPE_")
            .lower()
        )
    except ValueError:
        return str(client_type)


def message_limit_settings(config: Config) -> dict[str, Any]:
    msg = config.msg
    return {
        "rate": msg.message_rate,
        "burst": msg.message_burst,
        "bytes_per_day": msg.max_bytes_per_day,
    }


def node_room_limits(config: Config) -> dict[str, int]:
    """What a msg node holds of ``[rooms]`` for its own connections."""
    return {
        "max_joined": config.rooms.max_joined,
        "member_backlog": config.rooms.member_backlog,
    }


class MsgService(TeamTalkService):
    """The msg node. Its collaborators come in through the constructor (``tap.py`` builds
    them): the store, the shared state, and whichever of route, login and file this
    process co-hosts (None: reached over links, or not at all), push's outbox when push
    is configured, and the failed-login lockout it shares with the token endpoints.
    It is the ``MsgContext`` its handlers see (``context.py``)."""

    name = "msg"

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: StoreService,
        *,
        shared: SharedState | None = None,
        route: RouteService | None = None,
        login: LoginService | None = None,
        files: FileService | None = None,
        outbox: PushOutbox | None = None,
        lockout: LoginAttempts | None = None,
        media_url: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(reactor, config)
        self.store = store
        self.shared = shared
        self.route_service = route
        self.login_service = login
        self.file_service = files
        self.factory = MsgFactory(
            self,
            clock=reactor,
            table=build_table(),
            max_pdu_size=config.msg.max_pdu_size,
            max_outbuf=config.msg.max_outbuf,
        )
        self.factory.fanout_helpers = FanoutHelpers(config.msg.fanout_threads)
        self.route_table = build_route_table()
        self.online = OnlineUsers(self.factory.send_now_to_each)
        self.presence = PresenceBatch(reactor, self.online)
        self.lockout: LoginAttempts = lockout if lockout is not None else LoginLockout(reactor)
        self.message_limits = MessageLimits(reactor, **message_limit_settings(config))
        self.group_creations = WindowLimit(
            "group creations", config.msg.group_creations_per_hour, 3600.0
        )
        #: Connections closed for exceeding their limits again and again (a metric).
        self.connections_closed_for_limits = 0
        #: Extension packets withheld from connections that did not opt in (a metric;
        #: ``MsgConnection.send_raw``).
        self.extension_packets_withheld = 0
        self.groups = Groups(self)
        #: Password checks off the reactor, and the realm that decides logins with them
        #: (set up at start, once the store is known).
        self.credentials: Credentials | None = None
        self.realm: LoginRealm | None = None
        self.session_watch = SessionWatch(reactor, self)
        #: The user rows of logins, one store job per reactor turn (set up at start).
        self.user_lookups: UserLookups | None = None
        #: Successful logins, one line each unless there are more than 50 a second.
        self.login_log = QuietUnderLoad(Logger(namespace="teamtalk.msg.session"), reactor, "logins")
        #: Push's outbox when push is configured: messages are then stored with an
        #: outbox row (in their own transaction) and each commit kicks the push worker.
        self.push = outbox
        self.store_group_message = (
            outbox.store_group_message if outbox is not None else group_store.store_group_message
        )
        #: Every chat message's way in (set up at start, with the store and route), and
        #: the queue its 1:1 messages are batched in.
        self.intake: MessageIntake | None = None
        self.single_messages: SingleMessageQueue | None = None
        #: The contacts extension, unless the deployment is a plain company directory
        #: (``contacts.mode``; set up at start, with the store).
        self.contacts: Contacts | None = None
        #: The file services this node creates transfer tasks on (set up at start).
        self.files = FileServers([])
        self._route: InProcessRoute | LinkedRoute | None = None
        #: This node's chat rooms (set up at start, with the route they are admitted by).
        self.rooms: NodeRooms | None = None
        #: This run's message origins and the catch-up after route outages (at start).
        self.origins = Origins(reactor)
        self.catch_up: CatchUp | None = None
        #: Reports address and load to login services in other processes (--login-server).
        self.login_reporter: LoginReporter | None = None
        self._known_users: set[int] = set()
        self._now = 0
        self.port = 0
        #: The media service's public URL, which avatar URLs must start with (the
        #: co-hosted media service's, with its bound port, when there is one: tap.py).
        self.media_url: Callable[[], str] = media_url or config.media_public_url

    @property
    def route(self) -> InProcessRoute | LinkedRoute:
        """This node's way to the route service (set up at start: before any connection
        or message exists)."""
        assert self._route is not None, "the msg service has not started"
        return self._route

    def now(self) -> int:
        """Unix seconds; the same int object all through a second, so what keeps it
        (every login's ``logged_in_at``) shares it instead of a 32-byte int each."""
        now = int(self.reactor.seconds())
        if now != self._now:
            self._now = now
        return self._now

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        store = self.store
        await store.ready
        if self.push is not None:
            self.single_messages = SingleMessageQueue(
                self.reactor, store, self.push.store_single_messages, self.push.kick
            )
        else:
            self.single_messages = SingleMessageQueue(self.reactor, store)
        self.user_lookups = UserLookups(self.reactor, store)
        self.credentials = Credentials(self.reactor, store)
        self.credentials.start()
        self.realm = LoginRealm(
            self.reactor,
            store,
            self.credentials,
            self.lockout,
            self.metrics.logins,
            self.user_lookups,
        )
        self.factory.realm = self.realm
        if self.factory.fanout_helpers is not None and self.factory.fanout_helpers.threads:
            self.factory.fanout_helpers.start()
        await self.session_watch.start()
        self.group_creations.state = self.shared
        # Co-hosted services talk in-process; otherwise TeamTalk's links (wire.md §7.1).
        route_service = self.route_service
        if route_service is None and self.config.msg.route_server:
            self._route = LinkedRoute(
                self.reactor, self.config.msg.route_server, self, self.link_auth
            )
        else:
            if route_service is not None:
                hub = route_service.hub
            else:
                hub = RouteHub()
                hub.rooms.configure(**room_limits(self.config))
            self._route = InProcessRoute(hub, self.route_pdu_received, self.route_message_received)
        self.rooms = NodeRooms(self._route, **node_room_limits(self.config))
        self._route.start()
        if self.config.contacts.mode != "directory":
            self.contacts = Contacts(
                store, self.reactor, self.config.contacts, self.notify_contacts
            )
        await self.origins.register(store, f"{socket.gethostname()}:{os.getpid()}")
        route = self.route
        self.catch_up = CatchUp(
            self.reactor,
            store,
            self.origins,
            lambda: route.epoch,
            route.send_marker,
            partial(deliver_stored, self.online, self.groups),
        )
        self.catch_up.start()
        # Route learns which run our link is as soon as it is up (its lost notice).
        if isinstance(route, LinkedRoute):
            route.when_up = self.catch_up.mark
        self.catch_up.mark()
        single = SingleTopic(
            self.single_messages,
            self.online,
            self.route,
            self.is_known_user,
            self.user_exists,
            self.contacts.are_friends if self.contacts and self.contacts.friends_only else None,
            origins=self.origins,
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
        self.files = FileServers.for_service(self, self.file_service)
        self.files.start()
        # Tens of thousands of mostly idle connections: each in a slotted transport.
        slim_transports(await self.listen(self.config.msg.listen, self.factory))
        self.port = self.bound_port()
        login = self.login_service
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
            "teamtalk_presence_batches",
            "Status-notify batches sent to every PC connection (one per reactor turn that "
            "had any: msg/online.py PresenceBatch), and the notifies joined in them.",
            ["what"],
            lambda: [
                (("batches",), self.presence.batches),
                (("notifies",), self.presence.notifies),
            ],
        )
        metrics.counters(
            "teamtalk_login_lookups",
            "Store jobs reading the account rows of logins (msg/user_lookup.py: one per "
            "reactor turn), and the names they read.",
            ["what"],
            lambda: [
                (("jobs",), self.user_lookups.jobs if self.user_lookups else 0),
                (("names",), self.user_lookups.names if self.user_lookups else 0),
            ],
        )
        metrics.counters(
            "teamtalk_connections_closed_for_limits",
            "msg connections closed for exceeding their limits again and again.",
            [],
            lambda: one(self.connections_closed_for_limits),
        )
        metrics.counters(
            "teamtalk_extension_withheld",
            "Extension packets withheld from connections that did not opt in to them.",
            [],
            lambda: one(self.extension_packets_withheld),
        )
        rooms = self.rooms
        if rooms is not None:
            metrics.gauges(
                "teamtalk_room_memberships",
                "Connections of this node in chat rooms (one per room each is in).",
                [],
                lambda: one(rooms.membership_count),
            )
            metrics.counters(
                "teamtalk_room_posts", "Room posts made on this node.", [], lambda: one(rooms.posts)
            )
            metrics.counters(
                "teamtalk_room_deliveries",
                "Room posts written to member connections of this node.",
                [],
                lambda: one(rooms.deliveries),
            )
            metrics.counters(
                "teamtalk_room_members_dropped",
                "Members dropped from a room for reading too slowly (rooms.member_backlog).",
                [],
                lambda: one(rooms.dropped_slow),
            )
        metrics.gauges(
            "teamtalk_route_backlog",
            "Packets (not chat messages) kept for route while the route link is down.",
            [],
            lambda: one(self.route.backlog_size if isinstance(self.route, LinkedRoute) else 0),
        )
        metrics.counters(
            "teamtalk_caught_up_deliveries",
            "Messages delivered from the store after a route outage (msg/catch_up.py).",
            [],
            lambda: one(self.catch_up.caught_up if self.catch_up else 0),
        )
        metrics.gauges(
            "teamtalk_catch_up_held",
            "Origins of other nodes' messages remembered until their next marker.",
            [],
            lambda: one(self.catch_up.held if self.catch_up else 0),
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
        if isinstance(self._route, LinkedRoute):
            links.append(self._route.link)
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

    def reconfigure(self, config: Config) -> None:
        super().reconfigure(config)
        self.factory.max_pdu_size = config.msg.max_pdu_size
        self.factory.max_outbuf = config.msg.max_outbuf
        self.message_limits.configure(**message_limit_settings(config))
        self.group_creations.limit = config.msg.group_creations_per_hour
        self.session_watch.reconfigure(config.msg.account_check_interval)
        if self.rooms is not None:
            self.rooms.configure(**node_room_limits(config))
        if isinstance(self._route, InProcessRoute) and self.route_service is None:
            self._route.hub.rooms.configure(**room_limits(config))
        if not self.is_started:
            return
        # The advertised address or the connection limit may have changed.
        login = self.login_service
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
        login = self.login_service
        if login is not None:
            login.unregister_local_node(self)
        self.presence.flush()
        if self.factory.fanout_helpers is not None:
            self.factory.fanout_helpers.stop()
        for conn in list(self.factory.connections):
            conn.transport.loseConnection()
        if self.intake is not None:
            self.intake.stop()
        if self.catch_up is not None:
            self.catch_up.stop()
        if self.login_reporter is not None:
            await self.login_reporter.stop()
        if self._route is not None:
            await settled(self._route.stop())
        await self.files.stop()
        self.session_watch.stop()
        if self.credentials is not None:
            self.credentials.stop()
        self.login_log.stop()

    # -- connections -------------------------------------------------------------------

    def connection_opened(self, conn: Client) -> None:
        """Login succeeded: the connection now counts as online everywhere."""
        self.online.add(conn)
        self.route.status_update(conn.user_id, B.USER_STATUS_ONLINE, conn.client_type)
        if self.login_reporter is not None:
            self.login_reporter.connection_opened(conn.user_id)

    def connection_closed(self, conn: Client) -> None:
        if self.rooms is not None:
            self.rooms.disconnected(conn)
        if conn.logged_in and self.online.remove(conn):
            if self._route is not None:
                self._route.status_update(conn.user_id, B.USER_STATUS_OFFLINE, conn.client_type)
            if self.login_reporter is not None:
                self.login_reporter.connection_closed(conn.user_id)

    # -- the extension -------------------------------------------------------------------

    def notify_contacts(self, user_ids: list[int], command_id: int, message: Message) -> int:
        """A contacts notify to users on any node (``Contacts``' way out)."""
        return notify_users(self, user_ids, CONTACTS, command_id, message)

    def pc_online(self, user_ids: list[int]) -> defer.Deferred[Collection[int]]:
        """Which of ``user_ids`` have a PC client online anywhere in the cluster (route's
        presence): push sends those a silent push (``push.service.Presence``)."""
        return defer.ensureDeferred(self._pc_online(user_ids))

    async def _pc_online(self, user_ids: list[int]) -> Collection[int]:
        statuses = await self.route.users_status(user_ids)
        return {u for u, status in statuses if status == B.USER_STATUS_ONLINE}

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
        """A PDU from the route service (in-process or over a link): dispatched the way a
        client's are (``wire.dispatch``), to ``msg/from_route.py``'s handlers; delivery
        markers and route's lost-node notices go to the catch-up."""
        header = PduHeader.unpack_from(pdu)
        if header.command_id == CID_DELIVERED_UPTO:
            if self.catch_up is not None:
                self.catch_up.marker_received(pdu)
            return
        if header.command_id == CID_NODE_LOST:
            if self.catch_up is not None:
                self.catch_up.node_lost(pdu)
            return
        dispatch(self.route_table, self, header, pdu, True, "route")

    def route_message_received(self, pdu: bytes, message: Message) -> None:
        """A notify of the co-hosted route hub, with the message it was encoded from:
        dispatched like ``route_pdu_received``'s, without decoding it again."""
        dispatch(
            self.route_table, self, PduHeader.unpack_from(pdu), pdu, True, "route", message=message
        )
