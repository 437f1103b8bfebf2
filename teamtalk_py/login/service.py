"""The login service: HTTP discovery plus the registry of msg nodes it chooses from.

A co-hosted msg service registers in-process with its live count; msg nodes in other
processes link to the internal listener (``login.internal_listen``, see ``links``), which
is only opened when configured (by default: in a process without a msg service).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from teamtalk_py.login.http import LoginRoot
from teamtalk_py.login.links import MsgNodeLinkFactory
from teamtalk_py.login.nodes import MsgNode, MsgNodeRegistry, NodeAddressPolicy
from teamtalk_py.metrics import one
from teamtalk_py.services import ServiceCollection, TeamTalkService
from teamtalk_py.web import GuardedSite

if TYPE_CHECKING:
    from teamtalk_py.config import Config


class LoginService(TeamTalkService):
    name = "login"

    def __init__(
        self, reactor: Any, config: Config, media_url: Callable[[], str] | None = None
    ) -> None:
        super().__init__(reactor, config)
        #: What clients are told as msfsPrior/msfsBackup: ``login.msfs`` if set, else
        #: the media service's public URL (the co-hosted one's, see tap.py).
        self.media_url: Callable[[], str] = media_url or config.media_public_url
        self.nodes = MsgNodeRegistry()
        self.link_factory: MsgNodeLinkFactory | None = None
        self.root: LoginRoot | None = None

    def msfs(self) -> str:
        """msfsPrior/msfsBackup: ``login.msfs`` (read at every request, so a reload
        applies) or the media service's public URL."""
        return self.config.login.msfs or self.media_url()

    async def start(self) -> None:
        ops = None
        if self.config.ops.on_http and isinstance(self.parent, ServiceCollection):
            from teamtalk_py.ops import OpsRoot

            ops = OpsRoot(self.parent)
        self.root = LoginRoot(self.nodes, self.config.login, self.msfs, ops)
        site = GuardedSite(
            self.root, reactor=self.reactor, header_timeout=self.config.server.http_header_timeout
        )
        await self.listen(self.config.login.http_listen, site)
        if self.config.login.internal_listen:
            self.link_factory = MsgNodeLinkFactory(
                self.nodes,
                NodeAddressPolicy(self.config.cluster.node_addresses),
                auth=self.link_auth,
                clock=self.reactor,
            )
            await self.listen_internal(self.config.login.internal_listen, self.link_factory)
        self.metrics.gauges(
            "teamtalk_login_msg_nodes",
            "msg nodes /msg_server chooses from (linked or in-process).",
            [],
            lambda: one(len(self.nodes)),
        )

    async def stop(self) -> None:
        if self.link_factory is not None:
            for conn in list(self.link_factory.connections):
                conn.close("stopping")

    def reconfigure(self, config: Config) -> None:
        super().reconfigure(config)
        if self.root is not None:
            self.root.msg_server.config = config.login

    def register_local_node(self, key: object, node: MsgNode) -> None:
        """A co-hosted msg service reports itself in-process, with its live count."""
        self.nodes.register(key, node)

    def unregister_local_node(self, key: object) -> None:
        self.nodes.unregister(key)
