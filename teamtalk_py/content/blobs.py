"""``Blobs``: the content store as the rest of the server uses it (asynchronous).

Three operations keep the bytes on disk and the reference counts in the database in step:

* :meth:`Blobs.commit` — received bytes (already hashed) become a referenced blob: they
  are fsynced and hard-linked to their blob name (a blob that exists already is reused,
  so identical bytes are stored once), then one database transaction counts the
  reference, runs the caller's own changes (the row that refers to the blob) and makes
  sure the name still exists. The incoming file is removed afterwards.
* :meth:`Blobs.release` — the caller's change (deleting its row) and one reference fewer,
  in one transaction.
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

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
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


class Blobs:
    def __init__(self, files: ContentStore, store: Any, io: IO, clock: IReactorTime) -> None:
        self.files = files
        self.store = store
        self.io = io
        self.clock = clock

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
        await self.io(self.files.link, incoming, incoming.sha256)
        result = await self.store.write(commit_job(self.files, incoming, self.now(), reference))
        await self.io(incoming.discard)
        return result

    async def release(self, sha256: str, unreference: Callable[[Txn], bool]) -> bool:
        """Run ``unreference(txn)`` (deleting the caller's row; False if there was none)
        and, when it did, count one reference fewer, in one transaction."""

        def job(txn: Txn) -> bool:
            if not unreference(txn):
                return False
            refs.drop_reference(txn, sha256, now=self.now())
            return True

        return await self.store.write(job)

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
