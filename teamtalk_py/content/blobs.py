"""``Blobs``: the content store as the rest of the server uses it (asynchronous).

Three operations keep the bytes on disk and the reference counts in the database in step:

* :meth:`Blobs.commit` — received bytes (already hashed) become a referenced blob: they
  are fsynced and hard-linked to their blob name (a blob that exists already is reused,
  so identical bytes are stored once), then one database transaction counts the
  reference, runs the caller's own changes (the row that refers to the blob) and makes
  sure the name still exists. The incoming file is removed afterwards.
* :meth:`Blobs.reuse` — one more reference to a blob that a row of the caller's already
  refers to (the cloud disk's instant upload and "save"), counted in the transaction
  that inserts the new row; no bytes move.
* :meth:`Blobs.release` — the caller's change (deleting its row) and one reference fewer,
  in one transaction. Dropping the last reference arms a sweep for when the grace period
  of that blob ends, so deleted bytes go then rather than at the next periodic sweep.
* :meth:`Blobs.sweep` — blobs unreferenced for longer than the grace period are deleted:
  row and bytes, inside one transaction that holds the row's lock, so a concurrent
  :meth:`commit` of the same bytes either counts its reference first (the sweep then
  spares the blob) or runs after the delete and links its own copy back.

Callers pass plain ``fn(txn)`` functions for their own rows; ``store`` is anything with
the store service's ``read``/``write``; ``io`` runs blocking calls on an I/O thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from teamtalk_py.content.store import ContentStore, IncomingFile
from teamtalk_py.store import content as refs
from teamtalk_py.store.txn import Txn

log = Logger(namespace="teamtalk.content")

T = TypeVar("T")
IO = Callable[..., Deferred]


def commit_job(
    files: ContentStore, incoming: IncomingFile, now: int, reference: Callable[[Txn], T]
) -> Callable[[Txn], T]:
    """The transaction of a commit (synced ``incoming`` -> referenced blob), for the store's
    writer or a synchronous transaction (the admin CLI)."""

    def job(txn: Txn) -> T:
        refs.add_reference(txn, incoming.sha256, incoming.size, now=now)
        result = reference(txn)
        # Last, so that a failure above leaves nothing on disk to clean up.
        files.link(incoming, incoming.sha256)
        return result

    return job


def reuse_job(
    sha256: str, size: int, now: int, reference: Callable[[Txn], T | None]
) -> Callable[[Txn], T | None]:
    """The transaction of :meth:`Blobs.reuse`: ``reference(txn)`` inserts the caller's row
    (None: nothing to add, nothing counted), then the reference is counted."""

    def job(txn: Txn) -> T | None:
        result = reference(txn)
        if result is not None:
            refs.add_reference(txn, sha256, size, now=now)
        return result

    return job


class Blobs:
    def __init__(
        self,
        files: ContentStore,
        store: Any,
        io: IO,
        clock: IReactorTime,
        grace: float | None = None,
    ) -> None:
        self.files = files
        self.store = store
        self.io = io
        self.clock = clock
        #: Seconds an unreferenced blob is kept; None: only the caller's periodic sweeps.
        self.grace = grace
        self._sweep_call: IDelayedCall | None = None

    def now(self) -> int:
        return int(self.clock.seconds())

    async def commit(self, incoming: IncomingFile, reference: Callable[[Txn], T]) -> T:
        """Make ``incoming`` (complete, not yet synced) a blob referenced by the row
        ``reference(txn)`` writes; its result. On failure nothing is counted and the
        incoming file is left to the caller."""
        await self.io(incoming.sync)
        await self.io(incoming.close)
        # Linked (and the directory fsynced) here, on an I/O thread, so that concurrent
        # commits sync in parallel; the transaction links again, which normally finds
        # the name taken (cheap) and re-creates it only if a sweep removed it meanwhile.
        created = await self.io(self.files.link, incoming, incoming.sha256)
        try:
            result = await self.store.write(commit_job(self.files, incoming, self.now(), reference))
        except Exception:
            if created:
                # Nothing counts the name this commit created: no sweep would find it.
                try:
                    await self.store.write(self._remove_if_unknown, incoming.sha256)
                except Exception:
                    log.failure("removing the bytes of a failed commit failed")
            raise
        await self.io(incoming.discard)
        return result

    def _remove_if_unknown(self, txn: Txn, sha256: str) -> None:
        """Delete a blob's bytes if no row counts it (under the row's lock, so a commit of
        the same bytes either counted first or links its own copy back afterwards)."""
        if refs.refcount(txn, sha256, lock=True) is None:
            self.files.remove(sha256)

    async def reuse(self, sha256: str, size: int, reference: Callable[[Txn], T | None]) -> T | None:
        """Count one more reference to the blob ``sha256`` for the row ``reference(txn)``
        inserts; its result (None: it added nothing, and nothing is counted).

        ``reference`` must make sure, in its transaction, that a row of the caller's still
        refers to ``sha256`` and lock it (``SELECT ... FOR UPDATE``), so the blob cannot
        lose its last reference (and its bytes) before this one is counted."""
        return await self.store.write(reuse_job(sha256, size, self.now(), reference))

    async def release(self, sha256: str, unreference: Callable[[Txn], bool]) -> bool:
        """Run ``unreference(txn)`` (deleting the caller's row; False if there was none)
        and, when it did, count one reference fewer, in one transaction."""

        def job(txn: Txn) -> int | None:
            if not unreference(txn):
                return None
            return refs.drop_reference(txn, sha256, now=self.now())

        left = await self.store.write(job)
        if left == 0:
            self._sweep_after_grace()
        return left is not None

    def _sweep_after_grace(self) -> None:
        """Sweep once the grace of a blob unreferenced now has passed (one timer for all:
        an earlier one armed already covers this blob too)."""
        if self.grace is None:
            return
        # The sweep compares whole seconds: a blob released at second S is due after
        # S + grace, so one second more.
        delay = self.grace + 1.0
        due = self.clock.seconds() + delay
        call = self._sweep_call
        if call is not None and call.active():
            if call.getTime() <= due:
                return
            call.cancel()
        self._sweep_call = self.clock.callLater(delay, self._scheduled_sweep)

    def _scheduled_sweep(self) -> None:
        self._sweep_call = None
        assert self.grace is not None
        d = defer.ensureDeferred(self.sweep(self.grace))
        d.addErrback(lambda f: log.failure("content sweep failed", f))

    def stop(self) -> None:
        """Cancel an armed sweep (the service is stopping; the next start sweeps)."""
        if self._sweep_call is not None and self._sweep_call.active():
            self._sweep_call.cancel()
        self._sweep_call = None

    async def sweep(self, grace: float, limit: int = 500) -> int:
        """Delete blobs unreferenced for more than ``grace`` seconds; how many went."""
        before = self.now() - int(grace)
        candidates = await self.store.read(refs.unreferenced, before, limit)
        files = self.files
        removed = 0
        for sha256 in candidates:

            def job(txn: Txn, sha256: str = sha256) -> bool:
                if not refs.lock_unreferenced(txn, sha256, before):
                    return False
                files.remove(sha256)
                return True

            if await self.store.write(job):
                removed += 1
        if removed:
            log.info("content sweep deleted {count} unreferenced blobs", count=removed)
        return removed

    def path_of(self, sha256: str) -> Path:
        return self.files.path_of(sha256)
