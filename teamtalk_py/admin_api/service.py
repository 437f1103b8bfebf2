"""The admin service: the admin REST API and the web console on their own listener.

The listener (``admin.listen``, ``--admin-listen``; port 8900) binds 127.0.0.1 unless
the config names another interface, whatever ``server.advertise`` says: the API can
create users and read who is online, so reaching it from elsewhere is a deliberate
choice (an SSH tunnel, or a TLS reverse proxy in front of an explicit endpoint).

Collaborators come in through the constructor: the store service, the co-hosted msg
service's failed-login lockout so console sign-ins count against the same names as PDU
logins, and the co-hosted msg, route and login services, which ``ServerLive`` reaches.
``AdminContext`` (``context.py``) is what every handler receives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from teamtalk_py.admin_api.auth import AdminAuth
from teamtalk_py.admin_api.context import AdminContext
from teamtalk_py.admin_api.directory import AdminDirectory
from teamtalk_py.admin_api.live import ServerLive
from teamtalk_py.admin_api.routes import ROUTES
from teamtalk_py.admin_api.static import ConsoleFiles
from teamtalk_py.auth.tokens import LoginAttempts
from teamtalk_py.config import Config
from teamtalk_py.media.http import MediaSite
from teamtalk_py.media.service import SignInService

if TYPE_CHECKING:
    from teamtalk_py.login.service import LoginService
    from teamtalk_py.msg.service import MsgService
    from teamtalk_py.route.service import RouteService

log = Logger(namespace="teamtalk.admin")


class AdminService(SignInService):
    name = "admin"

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: Any,
        shared_state: Any = None,
        attempts: LoginAttempts | None = None,
        *,
        msg: MsgService | None = None,
        route: RouteService | None = None,
        login: LoginService | None = None,
    ) -> None:
        super().__init__(reactor, config, store, shared_state, attempts)
        self.msg = msg
        self.route = route
        self.login = login
        self.context: AdminContext | None = None

    async def start(self) -> None:
        await self.store.ready
        self.credentials.start()
        auth = AdminAuth(self.store, self.reactor, self.lockout(), self.credentials.check)
        live = ServerLive(self.collection, self.msg, self.route, self.login)
        directory = AdminDirectory(self.store, self.reactor, live, self.credentials.pool)
        console = await deferToThread(ConsoleFiles.load)
        self.context = AdminContext(self.store, self.reactor, auth, directory, console)
        await self.listen(
            self.config.admin.listen,
            MediaSite.for_service(self, self.context, ROUTES),
        )
        log.info(
            "admin API at /admin/api/v1/, console at /admin/ ({files} files)",
            files=len(console.files),
        )

    async def stop(self) -> None:
        self.credentials.stop()
