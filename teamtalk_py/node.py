"""``Node``: every service of one ``twistd teamtalk`` process, as typed attributes.

``tap.build_node`` builds it once (Synapse's ``HomeServer`` is the model): each service
receives the collaborators it needs in its constructor, so nothing looks a sibling up
by name at run time and each attribute's type says what it offers. An attribute is None
when this process does not host that service (``server.services``).

The order services start in is ``Node.services()``, written out below with the reason
for each place; ``ServiceCollection`` stops them in the reverse order, each waiting for
the one after it, so the store outlives everything that may still write to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from teamtalk_py.services import ServiceCollection

if TYPE_CHECKING:
    from teamtalk_py.admin_api.service import AdminService
    from teamtalk_py.auth.tokens import LoginAttempts
    from teamtalk_py.config import Config
    from teamtalk_py.disk.service import DiskService
    from teamtalk_py.file.service import FileService
    from teamtalk_py.login.service import LoginService
    from teamtalk_py.media.service import MediaService
    from teamtalk_py.msg.service import MsgService
    from teamtalk_py.ops import OpsService
    from teamtalk_py.push.service import PushOutbox, PushService
    from teamtalk_py.route.service import RouteService
    from teamtalk_py.services import TeamTalkService
    from teamtalk_py.shared_state import SharedState
    from teamtalk_py.store.service import StoreService


@dataclass
class Node:
    """The services of this process (None where not hosted) and what they share."""

    reactor: Any
    config: Config
    ops: OpsService
    store: StoreService | None = None
    #: Redis with ``--redis``, else this process's memory (``shared_state.py``).
    shared: SharedState | None = None
    route: RouteService | None = None
    login: LoginService | None = None
    files: FileService | None = None
    msg: MsgService | None = None
    media: MediaService | None = None
    disk: DiskService | None = None
    admin: AdminService | None = None
    push: PushService | None = None
    #: Push's outbox, which msg stores through (when push is configured).
    outbox: PushOutbox | None = None
    #: The failed-login lockout PDU logins and token requests share (when msg is hosted).
    lockout: LoginAttempts | None = None
    #: What ``twistd`` runs: the services in ``services()`` order (``tap.build_node``).
    collection: ServiceCollection = field(init=False)

    def __post_init__(self) -> None:
        self.collection = ServiceCollection(self.reactor, self.config)

    def services(self) -> list[TeamTalkService]:
        """The hosted services in the order they start (and, reversed, stop)."""
        ordered: list[TeamTalkService | None] = [
            # First, so /health answers and /ready says "starting" while the rest start.
            self.ops,
            # Everything below reads or writes it; it stops last.
            self.store,
            self.shared,
            # route and login accept links (and in-process registrations) before msg
            # reports to them; file takes transfer requests before msg makes any.
            self.route,
            self.login,
            self.files,
            self.msg,
            self.media,
            self.disk,
            # After msg and route: it kicks their sessions and relays their notifications.
            self.admin,
            # After msg: pushes are decided on the node that stored the message, and
            # push stops first, before msg stops storing.
            self.push,
        ]
        return [service for service in ordered if service is not None]
