"""Checking a login's password without stalling the reactor.

``store.accounts.check_password`` is the rule (scrypt, or the reference's salted MD5 for
rows not yet upgraded) and takes tens of milliseconds for a scrypt record, so
``Credentials.check`` runs it on a small thread pool of its own (scrypt releases the GIL,
so the pool uses every core) and never on the store's reader threads, which other
requests need. A row still in the reference's form is rewritten as scrypt after its first
successful check here, off the login's path.

A process-local cache remembers the credentials it has already verified (a MAC, keyed
BLAKE2b, under a key that lives only in this process's memory, of the stored record and
the MD5 that matched it), so a reconnecting client costs one hash, not one KDF, for as long as the
process runs and the record is unchanged. A changed password changes the record and
misses the cache.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections import OrderedDict
from typing import Any

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from teamtalk_py.store import accounts
from teamtalk_py.store.accounts import PasswordRecord, UserRow

log = Logger(namespace="teamtalk.msg.credentials")

#: Verified credentials remembered (about 100 bytes each).
CACHE_SIZE = 50_000
#: What a scrypt check takes on a typical core, until checks have been timed here.
INITIAL_CHECK_SECONDS = 0.05


class Credentials:
    """``check(row, client_md5)``: the password check of a login, off the reactor."""

    def __init__(self, reactor: Any, store: Any, threads: int | None = None) -> None:
        self.reactor = reactor
        self.store = store
        size = threads or max(1, min(4, os.cpu_count() or 1))
        self.pool = ThreadPool(minthreads=0, maxthreads=size, name="teamtalk-kdf")
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        #: How long a password check takes lately (a moving average, seconds).
        self.check_seconds = INITIAL_CHECK_SECONDS
        #: Checks in progress, with the logins waiting for the same answer.
        self._running: dict[bytes, list[defer.Deferred[bool]]] = {}

    def start(self) -> None:
        self.pool.start()

    async def refuse_unknown(self) -> bool:
        """The answer for a name no account has: False, as late as a password check
        usually takes (so the answer's timing does not tell which names exist), without
        the work of one."""
        await deferLater(self.reactor, self.check_seconds, lambda: None)
        return False

    def stop(self) -> None:
        self.pool.stop()

    def _fingerprint(self, row: UserRow, client_md5_hex: str) -> bytes:
        material = "\0".join((row.password_hash, row.salt, client_md5_hex.lower()))
        # BLAKE2b in its keyed mode is a MAC by design, and one C call: a third of what
        # HMAC-SHA256 (two hash runs, and objects built in Python) cost every login.
        return hashlib.blake2b(
            material.encode("utf-8", "replace"), key=self._key, digest_size=32
        ).digest()

    async def check(self, row: UserRow | None, client_md5_hex: str) -> bool:
        """Whether ``client_md5_hex`` is the user's password (and upgrade an old row);
        for a user that does not exist (None), False as late as a check takes."""
        if row is None:
            return await self.refuse_unknown()
        fingerprint = self._fingerprint(row, client_md5_hex)
        if fingerprint in self._verified:
            self._verified.move_to_end(fingerprint)
            return True
        running = self._running.get(fingerprint)
        if running is not None:
            # The same credentials are being checked for another login (a client
            # retrying, two devices): share that KDF run instead of starting another.
            waiter: defer.Deferred[bool] = defer.Deferred()
            running.append(waiter)
            return await waiter
        self._running[fingerprint] = []
        started = self.reactor.seconds()
        try:
            ok = await deferToThreadPool(
                self.reactor, self.pool, accounts.check_password, row, client_md5_hex
            )
            self.check_seconds += (self.reactor.seconds() - started - self.check_seconds) / 8
        except BaseException:
            for waiter in self._running.pop(fingerprint):
                waiter.errback(Failure())
            raise
        for waiter in self._running.pop(fingerprint):
            waiter.callback(ok)
        if not ok:
            return False
        self._verified[fingerprint] = None
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        if accounts.password_needs_upgrade(row):
            self._upgrade(row, client_md5_hex)
        return True

    def _upgrade(self, row: UserRow, client_md5_hex: str) -> None:
        """Rewrite an old-form row as scrypt, off the login's path (it does not wait)."""
        defer.ensureDeferred(self._rewrite(row, client_md5_hex))

    async def _rewrite(self, row: UserRow, client_md5_hex: str) -> None:
        try:
            record: PasswordRecord = await deferToThreadPool(
                self.reactor, self.pool, accounts.hash_password, client_md5_hex
            )
            replaced = await self.store.write(
                accounts.replace_password, row.id, row.password_hash, record
            )
        except Exception as e:
            log.warn(
                "upgrading the password of user {user_id} failed: {error}",
                user_id=row.id,
                error=str(e),
            )
            return
        if replaced:
            log.info("password of user {user_id} upgraded to scrypt", user_id=row.id)
