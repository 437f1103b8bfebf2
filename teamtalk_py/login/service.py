"""The login service: HTTP discovery plus the registry of msg nodes it chooses from."""

from __future__ import annotations

from twisted.web.server import Site

from teamtalk_py.login.http import LoginRoot
from teamtalk_py.login.nodes import MsgNode, MsgNodeRegistry
from teamtalk_py.services import TeamTalkService


class LoginService(TeamTalkService):
    name = "login"

    def __init__(self, reactor, config) -> None:
        super().__init__(reactor, config)
        self.nodes = MsgNodeRegistry()

    async def start(self) -> None:
        site = Site(LoginRoot(self.nodes, self.config.login))
        site.displayTracebacks = False
        site.noisy = False
        await self.listen(self.config.login.http_listen, site)

    def register_local_node(self, key: object, node: MsgNode) -> None:
        """A co-hosted msg service reports itself in-process, with its live count."""
        self.nodes.register(key, node)

    def unregister_local_node(self, key: object) -> None:
        self.nodes.unregister(key)
