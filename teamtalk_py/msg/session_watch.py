"""Ending live sessions that an account change took away, on every msg node.

Disabling or deleting a user, changing their password, or ``teamtalk-admin user kick``
changes ``users.session_epoch`` and stamps ``users.session_changed`` (store/accounts.py),
whatever process made the change (the admin CLI, another node, an import). Every
``msg.account_check_interval`` seconds each msg node asks the shared database for the
users stamped since it last looked, and kicks its own connections of those users
(``CID_LOGIN_KICK_USER``, then closes them) when the account may no longer log in or the
epoch differs from the one their login saw.

The check is idempotent (a connection whose epoch matches stays), so each query looks
``OVERLAP`` seconds further back than the newest stamp it has seen: a change committed
late, or stamped by a machine whose clock lags a little, is still found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.msg.session import kick_connection
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import accounts

if TYPE_CHECKING:
    from teamtalk_py.msg.context import MsgContext

log = Logger(namespace="teamtalk.msg.sessions")

#: Seconds each query reaches back before the newest stamp already seen.
OVERLAP = 10


class SessionWatch:
    """Polls for users whose sessions must end and kicks them on this node."""

    def __init__(self, clock: IReactorTime, ctx: MsgContext) -> None:
        self.ctx = ctx
        self.since = 0
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._failing = False

    async def start(self) -> None:
        ctx = self.ctx
        self.since = await ctx.store.read(accounts.last_session_change)
        self._loop.start(ctx.config.msg.account_check_interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def reconfigure(self, interval: float) -> None:
        if self._loop.running and self._loop.interval != interval:
            self._loop.stop()
            self._loop.start(interval, now=False)

    def check(self) -> defer.Deferred[None]:
        """One poll; a failing store is logged once and retried at the next tick."""
        d = defer.ensureDeferred(self._check())

        def failed(failure: Any) -> None:
            if not self._failing:
                log.warn(
                    "checking for ended sessions failed: {error}",
                    error=failure.getErrorMessage(),
                )
            self._failing = True

        return d.addErrback(failed)

    async def _check(self) -> None:
        changes = await self.ctx.store.read(accounts.session_changes, self.since - OVERLAP)
        self._failing = False
        for change in changes:
            self.since = max(self.since, change.session_changed)
            self.apply(change)

    def apply(self, change: accounts.SessionChange) -> int:
        """Kick this node's connections of ``change.user_id`` whose session has ended."""
        user = self.ctx.online.get(change.user_id)
        if user is None:
            return 0
        cause = "disabled" if change.status != accounts.USER_STATUS_NORMAL else "ended"
        kicked = 0
        # Only the msg service's own connections are online on this node.
        for conn in cast(list[MsgConnection], list(user.connections)):
            if cause == "ended" and conn.session_epoch == change.session_epoch:
                continue
            kick(self.ctx, conn, cause)
            kicked += 1
        return kicked


def kick(ctx: MsgContext, conn: MsgConnection, cause: str) -> None:
    """End one connection whose session was taken away.

    The clients know two kick reasons; "logged in elsewhere" (1) is the one that makes
    them stop and tell the user instead of reconnecting at once (a disabled user's next
    login is refused with a text saying so).
    """
    log.info(
        "kicking user {user_id} ({name!r}) from {peer}: session {cause}",
        user_id=conn.user_id,
        name=conn.login_name,
        peer=conn.peer,
        cause=cause,
    )
    kick_connection(ctx, conn, B.KICK_REASON_DUPLICATE_USER, cause)
