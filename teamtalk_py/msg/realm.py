"""The login realm of the msg service, the way twisted.words has one.

``LoginRealm.login(name, password_md5, client_type, address)`` is the whole decision of
a PDU login: the failed-login lockout (per name and address), the batched account lookup,
the password check (on the KDF threads of ``Credentials``), the account state. It
returns the avatar, a ``LoggedInUser``: what this user may do with their own account
from then on (log out, device token, push shield). A refusal is a ``LoginRefused``
naming the reason (what the log line, the ``teamtalk_logins`` metric and the client's
text are made from); an unreachable store is ``LoginUnavailable``. The connection
(``msg/session.py``) only decodes, asks the realm, and answers; it never reaches into the
store or the lockout itself.

``login_lockout`` picks the lockout this node's PDU logins and API token requests share:
counted in the shared state when other nodes see it (``--redis``), with the database's
rows behind it, else in this process's memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from teamtalk_py.msg.credentials import Credentials
from teamtalk_py.msg.lockout import LoginLockout, SharedLoginLockout
from teamtalk_py.msg.user_lookup import UserLookups
from teamtalk_py.outage import log_failure
from teamtalk_py.settle import settled
from teamtalk_py.store import accounts
from teamtalk_py.store.accounts import UserRow

if TYPE_CHECKING:
    from prometheus_client import Counter

    from teamtalk_py.auth.tokens import LoginAttempts
    from teamtalk_py.shared_state import SharedState
    from teamtalk_py.store.service import StoreService

log = Logger(namespace="teamtalk.msg.realm")


def login_lockout(
    clock: Any, shared: SharedState | None, store: StoreService | None
) -> LoginAttempts:
    """The lockout for logins on this node (module docstring)."""
    if shared is not None and shared.shared:
        return SharedLoginLockout(shared, clock, store)
    return LoginLockout(clock)


class LoginRefused(Exception):
    """The login is refused: ``reason`` is ``locked_out``, ``unknown_user``,
    ``wrong_password`` or ``disabled``; ``locked`` says the name is locked out now
    (the client is told "too many failures" then, whatever the reason)."""

    def __init__(self, reason: str, locked: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.locked = locked


class LoginUnavailable(Exception):
    """The account could not be looked up (the store is unreachable)."""


class LoggedInUser:
    """The avatar: one logged-in user on one connection, and what they may do with their
    own account. Handlers of the login-service commands call it.

    Light enough to make when asked: a connection keeps its user id and client type, not
    an avatar (``MsgConnection.user`` asks ``LoginRealm.avatar`` for one); only the one
    ``login`` returns carries the account row it read."""

    __slots__ = ("_row", "user_id", "client_type", "store", "clock")

    def __init__(
        self,
        user_id: int,
        client_type: int,
        store: StoreService,
        clock: IReactorTime,
        row: UserRow | None = None,
    ) -> None:
        self._row = row
        self.user_id = user_id
        self.client_type = client_type
        self.store = store
        self.clock = clock

    def take_row(self) -> UserRow:
        """The account row the login read, once, for the login answer (and the
        connection's ``session_epoch``); the avatar then forgets it."""
        row, self._row = self._row, None
        assert row is not None, "the login answer is made once"
        return row

    async def forget_device_token(self) -> None:
        """A mobile client logged out: no more pushes to this device."""
        await self.store.write(accounts.clear_device_token, self.user_id)

    async def set_device_token(self, token: str) -> None:
        await self.store.write(accounts.set_device_token, self.user_id, self.client_type, token)

    async def set_push_shield(self, status: int) -> bool:
        """Mute (1) or unmute (0) pushes; False for any other value."""
        if status not in (0, 1):
            return False
        now = int(self.clock.seconds())
        await self.store.write(accounts.set_push_shield, self.user_id, status, now=now)
        return True

    async def push_shield(self) -> int | None:
        status: int | None = await self.store.read(accounts.get_push_shield, self.user_id)
        return status


class LoginRealm:
    """Checks a login and returns its avatar (module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        store: StoreService,
        credentials: Credentials,
        lockout: LoginAttempts,
        logins: Counter,
        users: UserLookups,
    ) -> None:
        self.clock = clock
        self.store = store
        #: The account rows, read for a whole reactor turn of logins at once.
        self.users = users
        self.credentials = credentials
        self.lockout = lockout
        #: ``teamtalk_logins`` by result.
        self.logins = logins
        #: Its "ok" child, looked up once (``labels`` takes a lock and builds a key).
        self._logins_ok = logins.labels(result="ok")

    async def login(
        self,
        name: str,
        password_md5: str,
        client_type: int,
        address: str,
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> LoggedInUser | None:
        """The avatar of ``name`` when ``password_md5`` is theirs and they may log in from
        ``address``; ``LoginRefused`` or ``LoginUnavailable`` otherwise (each counted).
        None when ``still_wanted()`` says the asking connection went away meanwhile:
        nobody is answered, and a password not yet checked counts for nothing."""
        lockout = self.lockout
        if await settled(lockout.is_locked(name, address)):
            raise self.refusal("locked_out", locked=True)
        try:
            row: UserRow | None = await self.users.by_name(name)
        except Exception as e:
            log_failure(log, "login lookup failed for {name!r}", name=name)
            self.logins.labels(result="store_error").inc()
            raise LoginUnavailable(name) from e
        if not still_wanted():
            return None
        # An unknown name (None) is refused as late as a password check takes.
        if not await self.credentials.check(row, password_md5) or row is None:
            # Unknown names and wrong passwords count alike (msg/lockout.py).
            await settled(lockout.record_failure(name, address))
            locked = bool(await settled(lockout.is_locked(name, address)))
            raise self.refusal("unknown_user" if row is None else "wrong_password", locked)
        if not row.can_log_in:
            raise self.refusal("disabled")
        await settled(lockout.clear(name, address))
        if not still_wanted():
            return None
        self._logins_ok.inc()
        return LoggedInUser(row.id, client_type, self.store, self.clock, row)

    def avatar(self, user_id: int, client_type: int) -> LoggedInUser:
        """The avatar of a user already logged in (``MsgConnection.user``)."""
        return LoggedInUser(user_id, client_type, self.store, self.clock)

    def refusal(self, reason: str, locked: bool = False) -> LoginRefused:
        """A counted refusal (also for a request refused before the realm saw it)."""
        self.logins.labels(result=reason).inc()
        return LoginRefused(reason, locked)
