"""API tokens: what ``POST /api/v1/token`` hands out and ``Authorization: Bearer`` carries.

A token is ``v1.<user id>.<expires>.<password stamp>.<signature>``: an HMAC-SHA256, under a
secret every node reads from the shared database (``server_secrets``; the first node to
start creates it), of the fields before it. Any node can check one without a lookup
table, and checking costs one read of the user's row, which is what revokes tokens:

* a disabled user (status other than normal) is refused at once;
* a password change refuses every older token (the stamp is derived from the stored
  password hash and salt, which a change replaces).

Issuing goes through the same failed-login lockout as PDU logins (:class:`LoginAttempts`
is the narrow interface that both accept), so password guessing over HTTP counts against
the same name. Used by the media service today, and meant for the cloud disk and the
admin API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from teamtalk_py.settle import settled
from teamtalk_py.store import accounts
from teamtalk_py.store.media import get_or_create_secret

SECRET_NAME = "api_token_hmac"
PREFIX = "v1"


class LoginAttempts(Protocol):
    """The lockout as token issuing uses it (the msg service's lockout classes fit);
    each method may return a plain value or a Deferred."""

    def is_locked(self, name: str, address: str) -> Any: ...

    def record_failure(self, name: str, address: str) -> Any: ...

    def clear(self, name: str, address: str) -> Any: ...


class TokenRefused(Exception):
    """Credentials wrong (``locked`` False) or the name locked out (``locked`` True)."""

    def __init__(self, locked: bool) -> None:
        super().__init__("locked out" if locked else "wrong user name or password")
        self.locked = locked


class InvalidToken(Exception):
    """Malformed, forged, expired, or no longer valid for its user."""


@dataclass(frozen=True)
class Token:
    value: str
    user_id: int
    expires_at: int


def password_stamp(user: accounts.UserRow) -> str:
    """Short digest of the stored password hash and salt: changes with the password."""
    digest = hashlib.sha256(f"{user.salt}:{user.password_hash}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode()


#: Whether a client's MD5 is a user's password (``msg.credentials.Credentials.check``
#: runs the slow KDF on threads of its own).
#: A user that does not exist (None) is False, as late as a real check would answer.
PasswordCheck = Callable[[accounts.UserRow | None, str], Awaitable[bool]]


async def _check_here(user: accounts.UserRow | None, password_md5: str) -> bool:
    return user is not None and accounts.check_password(user, password_md5)


class Tokens:
    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        ttl: float,
        attempts: LoginAttempts,
        check: PasswordCheck | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self.attempts = attempts
        #: Without one, the password is checked on the calling thread (tests).
        self.check = check or _check_here
        self._secret: bytes | None = None

    async def start(self) -> None:
        """Read (or create) the shared signing secret."""
        value = await self.store.write(
            get_or_create_secret, SECRET_NAME, secrets.token_hex(32), now=self._now()
        )
        self._secret = bytes.fromhex(value)

    def _now(self) -> int:
        return int(self.clock.seconds())

    def _sign(self, text: str) -> str:
        assert self._secret is not None, "Tokens.start() has not run"
        mac = hmac.new(self._secret, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def issue(self, user: accounts.UserRow) -> Token:
        expires = self._now() + int(self.ttl)
        body = f"{PREFIX}.{user.id}.{expires}.{password_stamp(user)}"
        return Token(f"{body}.{self._sign(body)}", user.id, expires)

    async def issue_for_password(self, name: str, password_md5: str, address: str) -> Token:
        """A token for ``name`` if ``password_md5`` (the client's MD5 hex) is right
        (``address``: where the request came from, what failures are counted under)."""
        attempts = self.attempts
        if await settled(attempts.is_locked(name, address)):
            raise TokenRefused(locked=True)
        user = await self.store.read(accounts.get_user_by_name, name, only_active=True)
        if not await self.check(user, password_md5) or user is None:
            await settled(attempts.record_failure(name, address))
            locked = await settled(attempts.is_locked(name, address))
            raise TokenRefused(locked=bool(locked))
        await settled(attempts.clear(name, address))
        return self.issue(user)

    async def verify(self, value: str) -> int:
        """The user id a token stands for; ``InvalidToken`` otherwise."""
        return (await self.verify_user(value)).id

    async def verify_user(self, value: str) -> accounts.UserRow:
        """The user a token stands for (their row as it is now); ``InvalidToken``
        otherwise."""
        parts = value.split(".")
        if len(parts) != 5 or parts[0] != PREFIX:
            raise InvalidToken("malformed token")
        body = ".".join(parts[:4])
        if not hmac.compare_digest(self._sign(body).encode(), parts[4].encode()):
            raise InvalidToken("bad signature")
        try:
            user_id, expires = int(parts[1]), int(parts[2])
        except ValueError:
            raise InvalidToken("malformed token") from None
        if expires < self._now():
            raise InvalidToken("token expired")
        users = await self.store.read(accounts.get_users_by_ids, [user_id])
        user = users[0] if users else None
        if user is None or not user.can_log_in:
            raise InvalidToken("user disabled")
        if not hmac.compare_digest(password_stamp(user).encode(), parts[3].encode()):
            raise InvalidToken("password changed")
        return user
