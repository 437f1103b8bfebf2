"""Self-registration (the cloud disk's ``POST /reg``): a TeamTalk account, made on request.

Off unless ``disk.allow_registration`` is set: TeamTalk companies create accounts with
``teamtalk-admin``. A registered user is an ordinary row of ``users``, created by the
same ``accounts.add_user`` the admin CLI uses (the same password record,
``accounts.hash_password`` of the MD5 clients send), in the department
``disk.department`` (created at the first registration), so they log in with the TeamTalk
clients too. Each client address may register ``disk.registrations_per_hour`` accounts an
hour (counted in the shared state, so across a cluster).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from teamtalk_py.config import DiskConfig
from teamtalk_py.shared_state import MemoryBackend
from teamtalk_py.store import accounts
from teamtalk_py.store.txn import DuplicateError, Txn

log = Logger(namespace="teamtalk.disk.registration")

_MD5_HEX = re.compile(r"[0-9A-Fa-f]{32}")
HOUR = 3600.0


class Registered(enum.Enum):
    CREATED = "created"
    TAKEN = "taken"
    REFUSED = "refused"


def client_md5(password: str) -> str:
    """The password as TeamTalk clients send it: the seed's clients send the MD5 hex
    already; a plain password (anything else) is hashed here the same way."""
    if _MD5_HEX.fullmatch(password):
        return password.lower()
    return accounts.md5_hex(password)


def _acceptable(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


class Registration:
    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        shared_state: Any,
        settings: Callable[[], DiskConfig],
        io: Callable[..., Deferred],
    ) -> None:
        self.store = store
        self.clock = clock
        self.shared_state = shared_state
        #: Runs blocking work (the password's KDF) off the reactor thread.
        self.io = io
        #: The disk's config as it is now (SIGHUP may change it).
        self.settings = settings
        #: Counts registrations while the shared state does not answer.
        self._local = MemoryBackend(clock)

    async def register(
        self, name: str, nick: str, password: str, phone: str, email: str, address: str
    ) -> Registered:
        settings = self.settings()
        if not settings.allow_registration:
            return Registered.REFUSED
        name = name.strip()
        if not name or not password or not all(map(_acceptable, (name, nick, phone, email))):
            return Registered.REFUSED
        if not await self._within_rate(address, settings.registrations_per_hour):
            log.info("registration from {address} refused: rate", address=address)
            return Registered.REFUSED
        # The slow KDF (store/accounts.py) on the disk's threads, never in the writer.
        record = await self.io(accounts.hash_password, client_md5(password))
        now = int(self.clock.seconds())
        department_id = await self._department(settings.department, now)

        def create(txn: Txn) -> int:
            return accounts.add_user(
                txn,
                name,
                "",
                nick=nick or name,
                department_id=department_id,
                phone=phone,
                email=email,
                now=now,
                record=record,
            )

        try:
            user_id = await self.store.write(create)
        except DuplicateError:
            return Registered.TAKEN
        except (TypeError, ValueError) as e:  # a field longer than its column
            log.info("registration of {name!r} refused: {error}", name=name, error=str(e))
            return Registered.REFUSED
        log.info("user {name} ({user_id}) registered from {address}", name=name,
                 user_id=user_id, address=address)  # fmt: skip
        return Registered.CREATED

    async def _department(self, name: str, now: int) -> int:
        """The id of the department registered users join, created if it is missing."""

        def get_or_add(txn: Txn) -> int:
            department = accounts.get_department_by_name(txn, name)
            return department.id if department else accounts.add_department(txn, name, now=now)

        try:
            return await self.store.write(get_or_add)
        except DuplicateError:  # another node created it just now
            department = await self.store.read(accounts.get_department_by_name, name)
            assert department is not None
            return department.id

    async def _within_rate(self, address: str, per_hour: int) -> bool:
        if not per_hour:
            return True
        key = f"disk:registrations:{address}"
        try:
            count = await self.shared_state.record_event(key, HOUR)
        except Exception:
            count = await self._local.record_event(key, HOUR)
        return int(count) <= per_hour
