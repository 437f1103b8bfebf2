"""Who is calling the admin API: an admin token, or an admin user signed in to the console.

* **Admin tokens** (``teamtalk-admin admin-token create NAME``) are sent as
  ``Authorization: Bearer tta_...``; the store keeps their SHA-256 only. The audit log
  names the caller ``token:NAME``.
* **Console sessions**: a user with the admin flag signs in with name and password
  (``POST /admin/api/v1/session``, counted by the same failed-login lockout as PDU
  logins) and gets an ``HttpOnly; SameSite=Strict`` cookie plus a CSRF token. Every call
  that changes something must repeat the CSRF token in the ``X-CSRF-Token`` header
  (a header a cross-site form cannot set, compared with the one stored with the session),
  so the cookie alone never authorises a change. Sessions live in the database, so any
  node serving the API accepts them and signing out ends them everywhere. The audit log
  names the caller by user name.

Bearer calls need no CSRF token: a browser never adds an ``Authorization`` header on
its own.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from teamtalk_py.auth.tokens import LoginAttempts, PasswordCheck
from teamtalk_py.media.http import HttpError, MediaRequest
from teamtalk_py.settle import settled
from teamtalk_py.store import accounts
from teamtalk_py.store import admin as admin_store

COOKIE = b"tt_admin_session"
CSRF_HEADER = b"x-csrf-token"
#: How long a console sign-in lasts (seconds).
SESSION_TTL = 12 * 3600
#: A token's ``last_used`` is written at most this often (seconds).
TOUCH_INTERVAL = 60
SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")


@dataclass(frozen=True)
class Admin:
    """The caller of one admin API request."""

    name: str
    #: The signed-in user (0 for an admin token).
    user_id: int = 0
    #: The console session's CSRF token ("" for an admin token).
    csrf_token: str = ""
    expires_at: int = 0


def unauthorized(message: str) -> HttpError:
    return HttpError(401, message, headers={b"WWW-Authenticate": b'Bearer realm="teamtalk-admin"'})


class AdminAuth:
    """Checks admin tokens and console sessions, and signs admins in and out."""

    def __init__(
        self, store: Any, clock: IReactorTime, attempts: LoginAttempts, check: PasswordCheck
    ) -> None:
        self.store = store
        self.clock = clock
        self.attempts = attempts
        self.check = check

    def _now(self) -> int:
        return int(self.clock.seconds())

    async def caller(self, request: MediaRequest) -> Admin:
        """The admin behind ``request``; 401 without valid credentials, 403 for an unsafe
        cookie-authenticated call without the session's CSRF token."""
        header = request.header(b"authorization")
        if header is not None:
            scheme, _, value = header.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise unauthorized("expected Authorization: Bearer TOKEN")
            return await self.token_admin(value.strip())
        cookie = request.getCookie(COOKIE)
        if not cookie:
            raise unauthorized("sign in (POST /admin/api/v1/session) or send a bearer token")
        admin = await self.session_admin(cookie.decode("latin-1"))
        if request.method not in SAFE_METHODS:
            sent = request.header(CSRF_HEADER) or b""
            if not hmac.compare_digest(sent, admin.csrf_token.encode()):
                raise HttpError(403, "missing or wrong X-CSRF-Token header")
        return admin

    async def token_admin(self, token: str) -> Admin:
        row = await self.store.read(admin_store.find_admin_token, token)
        if row is None:
            raise unauthorized("unknown or revoked admin token")
        now = self._now()
        if now - row.last_used >= TOUCH_INTERVAL:
            await self.store.write(admin_store.touch_admin_token, row.id, now=now)
        return Admin(name=f"token:{row.name}")

    async def session_admin(self, session: str) -> Admin:
        row = await self.store.read(admin_store.find_admin_session, session, now=self._now())
        if row is None:
            raise unauthorized("signed out or session expired")
        user = await self._admin_user(row.user_id)
        if user is None:
            raise unauthorized("no longer an admin")
        return Admin(user.name, user.id, row.csrf_token, row.expires)

    async def _admin_user(self, user_id: int) -> accounts.UserRow | None:
        users = await self.store.read(accounts.get_users_by_ids, [user_id])
        if not users or not users[0].can_log_in:
            return None
        if not await self.store.read(admin_store.is_admin, user_id):
            return None
        return users[0]

    async def sign_in(self, name: str, password: str, address: str) -> tuple[str, Admin]:
        """(the session cookie, the admin) for an admin user's name and password; 401 for
        wrong credentials or a user without the admin flag, 429 once locked out."""
        attempts = self.attempts
        if await settled(attempts.is_locked(name, address)):
            raise HttpError(429, "too many failed sign-ins; try again later")
        user = await self.store.read(accounts.get_user_by_name, name, only_active=True)
        ok = await self.check(user, accounts.md5_hex(password))
        if not ok or user is None or not await self.store.read(admin_store.is_admin, user.id):
            await settled(attempts.record_failure(name, address))
            raise unauthorized("wrong name or password, or not an admin")
        await settled(attempts.clear(name, address))
        session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self._now()
        expires = now + SESSION_TTL
        await self.store.write(
            admin_store.add_admin_session, session, user.id, csrf, now=now, expires=expires
        )
        return session, Admin(user.name, user.id, csrf, expires)

    async def sign_out(self, session: str) -> None:
        await self.store.write(admin_store.end_admin_session, session)
