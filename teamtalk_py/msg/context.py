"""``MsgContext``: what the msg node offers its command handlers, as one typed interface.

A handler gets its connection and the request; through ``conn.ctx`` it reaches the
node's collaborators listed here and nothing else (packets from route are handled with
the context itself in the connection's place: ``from_route.py``). ``MsgService`` is the
one implementation; it builds these collaborators and hands itself to its connection
factory as the context. Keeping the interface here, apart from the service, lets the
handler modules depend on it while the service depends on them, never the reverse
(twisted.words keeps its interfaces apart from the protocols the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from teamtalk_py.msg.online import Mind
from teamtalk_py.rooms.membership import Member

if TYPE_CHECKING:
    from teamtalk_py.config import Config
    from teamtalk_py.contacts.contacts import Contacts
    from teamtalk_py.logs import QuietUnderLoad
    from teamtalk_py.metrics import Metrics
    from teamtalk_py.msg.catch_up import CatchUp
    from teamtalk_py.msg.file_link import FileServers
    from teamtalk_py.msg.groups import Groups
    from teamtalk_py.msg.intake import MessageIntake
    from teamtalk_py.msg.limits import MessageLimits, WindowLimit
    from teamtalk_py.msg.online import OnlineUsers, PresenceBatch
    from teamtalk_py.msg.route_client import InProcessRoute, LinkedRoute
    from teamtalk_py.rooms.membership import NodeRooms
    from teamtalk_py.store.service import StoreService


class Client(Mind, Member, Protocol):
    """A client connection as the node counts it online and offline."""

    logged_in: bool


class MsgContext(Protocol):
    """The msg node's collaborators, as its handlers use them."""

    config: Config
    store: StoreService
    #: Who is logged in here, and their connections.
    online: OnlineUsers
    #: Presence notifies for this node's PC connections, batched per reactor turn.
    presence: PresenceBatch
    groups: Groups
    #: None where the deployment is a plain company directory (``contacts.mode``).
    contacts: Contacts | None
    #: None until the node started.
    rooms: NodeRooms | None
    intake: MessageIntake | None
    catch_up: CatchUp | None
    #: The file services transfer tasks are created on.
    files: FileServers
    message_limits: MessageLimits
    group_creations: WindowLimit
    #: Successful logins, one line each unless there are too many.
    login_log: QuietUnderLoad
    #: The media service's public URL, which avatar URLs must start with.
    media_url: Callable[[], str]
    #: Metrics the connections count into.
    connections_closed_for_limits: int
    extension_packets_withheld: int

    @property
    def route(self) -> InProcessRoute | LinkedRoute:
        """The way to the route service: other nodes, cluster presence, kicks."""

    @property
    def metrics(self) -> Metrics: ...

    def now(self) -> int:
        """Unix seconds, from the node's clock."""

    async def user_exists(self, user_id: int) -> bool:
        """Whether ``user_id`` is an account."""

    def connection_opened(self, conn: Client) -> None:
        """A login succeeded: ``conn`` counts as online everywhere."""

    def connection_closed(self, conn: Client) -> None:
        """``conn`` closed, or was kicked: it is online no more."""
