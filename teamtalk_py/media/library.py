"""``MediaLibrary``: what the media service stores and who may read it; no HTTP here.

The HTTP handlers (``msfs``, ``tus``, ``api``, ``downloads``) translate requests into
calls on this object. It owns the content store (``Blobs``), the free-disk check, the
per-IP upload limits and the sweeps; the store and the I/O threads are passed in.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from teamtalk_py.config import MediaConfig
from teamtalk_py.content.blobs import Blobs
from teamtalk_py.content.store import ContentStore, IncomingFile
from teamtalk_py.media.limits import UploadLimits
from teamtalk_py.media.sniff import sniff_content_type
from teamtalk_py.store import media as rows
from teamtalk_py.store.media import FileKind, MediaFileRow
from teamtalk_py.store.txn import Txn

log = Logger(namespace="teamtalk.media")


def new_id() -> str:
    """128 random bits, hex: file and upload ids (they are URLs; never guessable)."""
    return secrets.token_hex(16)


def file_row(
    incoming: IncomingFile, kind: FileKind, owner_id: int, name: str, file_id: str, path: str,
    now: int,
) -> MediaFileRow:  # fmt: skip
    """The row of a file made of received bytes (type sniffed from its first bytes)."""
    return MediaFileRow(
        file_id=file_id,
        kind=int(kind),
        owner_id=owner_id,
        sha256=incoming.sha256,
        size=incoming.size,
        name=name,
        content_type=sniff_content_type(incoming.head),
        path=path,
        created=now,
    )


class StorageFull(Exception):
    """Accepting this many bytes would leave less than ``min_free_disk`` free."""


class MediaLibrary:
    def __init__(
        self,
        config: MediaConfig,
        files: ContentStore,
        store: Any,
        io: Callable[..., defer.Deferred],
        clock: IReactorTime,
        public_url: Callable[[], str],
    ) -> None:
        self.config = config
        self.files = files
        self.store = store
        self.io = io
        self.clock = clock
        self.public_url = public_url
        self.blobs = Blobs(files, store, io, clock, config.unreferenced_grace)
        self.limits = UploadLimits(clock, config.uploads_per_minute, config.upload_bytes_per_hour)
        #: Free bytes on the store's filesystem, refreshed by ``refresh_free_space``.
        self.free_bytes: int | None = None
        #: Bytes promised to uploads in progress on this node (not yet on disk).
        self.reserved = 0

    def now(self) -> int:
        return int(self.clock.seconds())

    # -- disk space --------------------------------------------------------------------

    async def refresh_free_space(self) -> int:
        self.free_bytes = await self.io(self.files.free_bytes)
        return self.free_bytes

    def check_room(self, size: int) -> None:
        """Raise ``StorageFull`` unless ``size`` more bytes leave ``min_free_disk`` free."""
        if self.free_bytes is None:
            return
        if self.free_bytes - self.reserved - size < self.config.min_free_disk:
            raise StorageFull(f"not enough disk space for {size} bytes")

    # -- files -------------------------------------------------------------------------

    async def add_file(
        self,
        incoming: IncomingFile,
        *,
        kind: FileKind,
        owner_id: int,
        name: str,
        file_id: str | None = None,
        path: str = "",
        also: Callable[[Txn], object] | None = None,
    ) -> MediaFileRow:
        """Store received bytes as a file (deduplicated); ``also(txn)`` runs in the same
        transaction (finishing an upload deletes its row there)."""
        row = file_row(incoming, kind, owner_id, name, file_id or new_id(), path, self.now())

        def reference(txn: Txn) -> MediaFileRow:
            rows.insert_file(txn, row)
            if also is not None:
                also(txn)
            return row

        return await self.blobs.commit(incoming, reference)

    async def get_file(self, file_id: str) -> MediaFileRow | None:
        return await self.store.read(rows.get_file, file_id)

    async def delete_file(self, file: MediaFileRow) -> bool:
        return await self.blobs.release(
            file.sha256, lambda txn: rows.delete_file(txn, file.file_id)
        )

    # -- links -------------------------------------------------------------------------

    async def create_link(self, file: MediaFileRow) -> str:
        link_id = secrets.token_urlsafe(24)
        await self.store.write(
            rows.create_link, link_id, file.file_id, file.owner_id, now=self.now()
        )
        return link_id

    async def resolve_link(self, link_id: str) -> MediaFileRow | None:
        return await self.store.read(rows.resolve_link, link_id)

    async def revoke_link(self, link_id: str, owner_id: int) -> bool:
        return await self.store.write(rows.revoke_link, link_id, owner_id)

    # -- sweeps ------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Unreferenced blobs past their grace period; also refreshes the free space."""
        await self.refresh_free_space()
        await self.blobs.sweep(self.config.unreferenced_grace)
