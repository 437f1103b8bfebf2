"""``CloudDisk``: each user's files, the public list, downloads counted; no HTTP here.

Both HTTP faces translate requests into calls on this object: the seed system's API
(``disk.seed``, the disk service) and the JSON API under ``/api/v1/disk/`` of the media
service (``disk.api``). The caller is always a user id taken from a verified token, never
a name a request carries.

What the seed system got wrong, and what this does instead:

* Instant upload handed any file to anyone who knew its MD5. Here a file is added
  without its bytes only when bytes with that MD5 are already readable by the caller: in
  one of their own files or in the public list. Otherwise the caller uploads, and the
  content store keeps identical bytes once anyway.
* Reference counts and list rows changed in separate statements. Here every row that
  refers to a blob is inserted or deleted in the transaction that counts the reference
  (``content.blobs.Blobs``), and the last reference gone frees the bytes.
* Download counts were read, incremented and written back. Here ``pv = pv + 1`` runs in
  the database.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime

from teamtalk_py.content.blobs import Blobs
from teamtalk_py.content.store import IncomingFile
from teamtalk_py.disk.ranking import Ranking
from teamtalk_py.store import disk as rows
from teamtalk_py.store import media as media_rows
from teamtalk_py.store.disk import Deleted, DiskFileRow, Order, SharedFileRow
from teamtalk_py.store.media import FileKind, bytes_used
from teamtalk_py.store.txn import DuplicateError, Txn

#: Longest file name, in characters (the column is VARCHAR(255)).
MAX_NAME = 255
#: Most entries one list answer carries.
MAX_PAGE = 100
FILES_PATH = "api/v1/disk/files/"
SHARED_PATH = "api/v1/disk/shared/"


class DiskError(Exception):
    """A request the disk cannot carry out (each subclass says why)."""


class BadRequest(DiskError):
    """A name or digest that is not acceptable."""


class NoSuchFile(DiskError):
    """No such file of the caller's (or no such entry in the public list)."""


class AlreadyShared(DiskError):
    """A file with this MD5 and name is in the public list already."""


class NotReadable(DiskError):
    """No bytes with this MD5 that the caller may read: upload them."""


class OverQuota(DiskError):
    """The caller's files would go past ``media.user_quota``."""


def new_id() -> str:
    """128 random bits, hex: file and share ids (they are download URLs)."""
    return secrets.token_hex(16)


def check_name(name: object) -> str:
    """A file name as the disk keeps it (data, never a path): 1 to 255 characters, no
    control characters."""
    if not isinstance(name, str) or not name:
        raise BadRequest("a file name is needed")
    if len(name) > MAX_NAME:
        raise BadRequest(f"a file name has at most {MAX_NAME} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise BadRequest("a file name must not contain control characters")
    return name


def check_md5(value: object) -> str:
    if not isinstance(value, str) or len(value) != 32:
        raise BadRequest("md5 must be 32 hex digits")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise BadRequest("md5 must be 32 hex digits") from None
    return value.lower()


_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,16})\Z")


def file_type(name: str) -> str:
    """What the seed's clients show as the type: the extension, lower case ("" for
    none)."""
    found = _EXTENSION.search(name)
    return found.group(1).lower() if found else ""


def md5_of(path: Path) -> str:
    """The MD5 hex of a file's bytes (blocking: on an I/O thread)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def page_bounds(start: object, count: object) -> tuple[int, int]:
    """``start`` and ``count`` of a list request, as numbers the database may take."""
    try:
        first, size = int(start), int(count)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise BadRequest("start and count must be numbers") from None
    if first < 0 or size < 0:
        raise BadRequest("start and count must not be negative")
    return min(first, 2**62), min(size, MAX_PAGE)


class CloudDisk:
    def __init__(
        self,
        store: Any,
        blobs: Blobs,
        ranking: Ranking,
        clock: IReactorTime,
        public_url: Callable[[], str],
        quota: int,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.ranking = ranking
        self.clock = clock
        #: The media service's public base URL (downloads are served there).
        self.public_url = public_url
        self.quota = quota

    def now(self) -> int:
        return int(self.clock.seconds())

    def file_url(self, file: DiskFileRow) -> str:
        """Where the owner (or anyone they give it to) downloads the file."""
        return f"{self.public_url()}{FILES_PATH}{file.file_id}/content"

    def share_url(self, share: SharedFileRow) -> str:
        """Where anyone downloads a shared file while it is shared."""
        return f"{self.public_url()}{SHARED_PATH}{share.share_id}/content"

    # -- a user's files ------------------------------------------------------------------

    async def count_files(self, user_id: int) -> int:
        return await self.store.read(rows.count_files, user_id)

    async def files(self, user_id: int, order: Order, start: int, count: int) -> list[DiskFileRow]:
        return await self.store.read(rows.list_files, user_id, order, start, count)

    async def file(self, user_id: int, file_id: str) -> DiskFileRow:
        file = await self.store.read(rows.get_file, user_id, file_id)
        if file is None:
            raise NoSuchFile("no such file")
        return file

    async def find(self, user_id: int, md5: str, name: str) -> DiskFileRow:
        """The caller's file with this MD5 and name (how the seed's clients name one)."""
        file = await self.store.read(rows.find_file, user_id, check_md5(md5), name)
        if file is None:
            raise NoSuchFile("no such file")
        return file

    async def downloadable(self, file_id: str) -> DiskFileRow | None:
        """The file whose download URL this is, whoever asks (the id is the secret)."""
        return await self.store.read(rows.get_file_by_id, file_id)

    async def check_quota(self, user_id: int, size: int) -> None:
        if self.quota and await self.store.read(bytes_used, user_id) + size > self.quota:
            raise OverQuota(f"{size} bytes more would exceed the quota of {self.quota}")

    async def add_received(
        self, incoming: IncomingFile, user_id: int, name: str
    ) -> tuple[DiskFileRow, bool]:
        """Received bytes (hashed, MD5 included) become the caller's file ``name``; the
        file and whether it is new (False: they had these bytes under this name). The
        incoming file is used up either way."""
        try:
            check_name(name)
            existing = await self.store.read(rows.find_file, user_id, incoming.md5, name)
            if existing is not None:
                await self.blobs.io(incoming.discard)
                return existing, False
            await self.check_quota(user_id, incoming.size)
            row = DiskFileRow(
                new_id(), user_id, name, incoming.md5, incoming.sha256, incoming.size, 0,
                self.now(),
            )  # fmt: skip
            return await self.blobs.commit(incoming, _inserting(row)), True
        except DuplicateError:
            await self.blobs.io(incoming.discard)
            return await self.find(user_id, incoming.md5, name), False
        except Exception:
            await self.blobs.io(incoming.discard)
            raise

    async def add_known(self, user_id: int, md5: object, name: object) -> tuple[DiskFileRow, bool]:
        """Instant upload: the file ``name`` made of bytes with this MD5 that the caller
        may already read; the file and whether it is new (False: they had it).
        ``NotReadable`` when there are none: then the caller uploads the bytes."""
        md5, name = check_md5(md5), check_name(name)
        readable = await self.store.read(rows.readable_blob, user_id, md5)
        if readable is None:
            if (existing := await self.store.read(rows.find_file, user_id, md5, name)) is None:
                raise NotReadable(f"no file with MD5 {md5} is readable here: upload it")
            return existing, False
        sha256, size = readable

        def still_readable(txn: Txn) -> bool:
            return rows.readable_blob(txn, user_id, md5, lock=True) == readable

        added = await self.add_reference(user_id, name, md5, sha256, size, still_readable)
        if added is None:
            raise NotReadable(f"no file with MD5 {md5} is readable here: upload it")
        return added

    async def add_reference(
        self, user_id: int, name: str, md5: str, sha256: str, size: int,
        still_there: Callable[[Txn], bool],
    ) -> tuple[DiskFileRow, bool] | None:  # fmt: skip
        """The caller's file ``name`` made of a blob that a row already refers to (no bytes
        move); the file and whether it is new (False: they had it). ``still_there(txn)``
        must lock that row and say whether it still refers to the blob; None when not."""
        existing = await self.store.read(rows.find_file, user_id, md5, name)
        if existing is not None:
            return existing, False
        await self.check_quota(user_id, size)
        row = DiskFileRow(new_id(), user_id, name, md5, sha256, size, 0, self.now())

        def reference(txn: Txn) -> DiskFileRow | None:
            # Locked by still_there: the blob keeps a reference until this one counts.
            return rows.insert_file(txn, row) if still_there(txn) else None

        try:
            added = await self.blobs.reuse(sha256, size, reference)
        except DuplicateError:
            return await self.find(user_id, md5, name), False
        return None if added is None else (added, True)

    async def add_upload(
        self, user_id: int, file_id: str, name: object
    ) -> tuple[DiskFileRow, bool]:
        """A finished resumable upload (a media file of the caller's) also becomes one of
        their files of the disk, under ``name`` (default: the upload's). Its MD5 is
        computed here, reading the bytes once."""
        upload = await self.store.read(media_rows.get_file, file_id)
        if upload is None or upload.owner_id != user_id or upload.kind != FileKind.UPLOAD:
            raise NoSuchFile("no such finished upload of yours")
        name = check_name(name if name is not None else upload.name)
        md5 = await self.blobs.io(md5_of, self.blobs.path_of(upload.sha256))

        def still_there(txn: Txn) -> bool:
            return media_rows.lock_file(txn, file_id, user_id) == upload.sha256

        added = await self.add_reference(
            user_id, name, md5, upload.sha256, upload.size, still_there
        )
        if added is None:
            raise NoSuchFile("no such finished upload of yours")
        return added

    async def delete(self, user_id: int, file_id: str) -> None:
        """Delete the caller's file (and take it out of the public list); its bytes go
        once no file refers to them."""
        file = await self.file(user_id, file_id)
        outcome: list[Deleted] = []

        def unreference(txn: Txn) -> bool:
            deleted = rows.delete_file(txn, user_id, file_id)
            outcome[:] = [deleted] if deleted is not None else []
            return deleted is not None

        if not await self.blobs.release(file.sha256, unreference):
            raise NoSuchFile("no such file")
        if outcome and outcome[0].share_id is not None:
            await self.ranking.removed(outcome[0].share_id)

    async def count_download(self, user_id: int, file_id: str) -> DiskFileRow:
        """One more download of the caller's file (``pv``); the file as it is now."""
        if await self.store.write(rows.count_download, user_id, file_id) is None:
            raise NoSuchFile("no such file")
        return await self.file(user_id, file_id)

    # -- the public list -----------------------------------------------------------------

    async def publish(self, user_id: int, file_id: str) -> SharedFileRow:
        """Put the caller's file in the public list."""
        share_id = new_id()
        try:
            shared = await self.store.write(
                rows.share_file, user_id, file_id, share_id, now=self.now()
            )
        except DuplicateError:
            raise AlreadyShared("a file of this MD5 and name is shared already") from None
        if not shared:
            raise NoSuchFile("no such file")
        await self.ranking.counted(share_id, 0)
        return await self.share(share_id)

    async def unpublish(self, user_id: int, share_id: str) -> None:
        """Take the caller's file out of the public list (only its owner may)."""
        if not await self.store.write(rows.unshare, user_id, share_id):
            raise NoSuchFile("no such shared file of yours")
        await self.ranking.removed(share_id)

    async def share(self, share_id: str) -> SharedFileRow:
        share = await self.store.read(rows.get_share, share_id)
        if share is None:
            raise NoSuchFile("no such shared file")
        return share

    async def find_share(self, md5: str, name: str) -> SharedFileRow:
        share = await self.store.read(rows.find_share, check_md5(md5), name)
        if share is None:
            raise NoSuchFile("no such shared file")
        return share

    async def count_shares(self) -> int:
        return await self.store.read(rows.count_shares)

    async def shares(self, order: Order, start: int, count: int) -> list[SharedFileRow]:
        """A page of the public list, as shared or by downloads (the ranking)."""
        return await self.ranking.page(order, start, count)

    async def save(self, user_id: int, share_id: str) -> tuple[DiskFileRow, bool]:
        """Copy a shared file into the caller's files; the file and whether it is new
        (False: they had these bytes under this name). No bytes move."""
        share = await self.share(share_id)

        def still_shared(txn: Txn) -> bool:
            return rows.shared_blob(txn, share_id, lock=True) == share.sha256

        added = await self.add_reference(
            user_id, share.name, share.md5, share.sha256, share.size, still_shared
        )
        if added is None:
            raise NoSuchFile("no such shared file")
        return added

    async def count_share_download(self, share_id: str) -> SharedFileRow:
        """One more download of a shared file (its rank); the entry as it is now."""
        pv = await self.store.write(rows.count_share_download, share_id)
        if pv is None:
            raise NoSuchFile("no such shared file")
        await self.ranking.counted(share_id, pv)
        return await self.share(share_id)

    async def downloadable_share(self, share_id: str) -> SharedFileRow | None:
        return await self.store.read(rows.get_share, share_id)


def _inserting(row: DiskFileRow) -> Callable[[Txn], DiskFileRow]:
    return lambda txn: rows.insert_file(txn, row)
