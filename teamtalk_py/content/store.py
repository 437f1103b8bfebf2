"""The content store on disk: every blob once, named by the SHA-256 of its bytes.

Layout under the store's root (one directory; the nodes of a cluster mount the same one)::

    blobs/<first two hex digits>/<sha256>   finished blobs, never modified
    incoming/<random>                       bytes being received (one file per upload)

Bytes are written to a file in ``incoming/`` while their SHA-256 is computed, fsynced,
and then hard-linked to their blob name in the same transaction that counts the
reference (``teamtalk_py.content.blobs``); a second upload of the same bytes finds the
name taken and stores nothing new. Links and renames need ``incoming/`` and ``blobs/``
on one filesystem, which is why both live under one root.

Every method here blocks (disk I/O): callers run them on an I/O thread.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path

BLOBS = "blobs"
INCOMING = "incoming"
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Bytes of a blob kept in memory for type sniffing.
HEAD_SIZE = 64


class ContentError(Exception):
    """A blob name is malformed or the store's disk refused an operation."""


def is_sha256(value: str) -> bool:
    return _SHA256.fullmatch(value) is not None


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (a new link, a removal) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IncomingFile:
    """Bytes being received: appended to a file under ``incoming/`` and hashed on the way.

    ``size`` and ``sha256`` describe what was written; ``sync`` makes it durable. The
    file may also be re-opened (a resumed upload, perhaps on another node); its hash is
    then recomputed from the bytes already on disk.
    """

    def __init__(self, path: Path, *, existing: bool = False, md5: bool = False) -> None:
        self.path = path
        self._hash = hashlib.sha256()
        # The cloud disk's clients name files by MD5 (its "instant upload"), so it asks
        # for that digest too; the content store itself only ever trusts the SHA-256.
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self.head = b""
        self.size = 0
        # An existing file is opened as it is: ``lock`` it, then ``reset_to`` the size
        # recorded as durable (which also recomputes the hash).
        mode = "r+b" if existing else "xb"
        self._file = open(path, mode)  # noqa: SIM115 - closed by close()/discard()

    def _account(self, data: bytes) -> None:
        self._hash.update(data)
        if self._md5 is not None:
            self._md5.update(data)
        if len(self.head) < HEAD_SIZE:
            self.head += data[: HEAD_SIZE - len(self.head)]
        self.size += len(data)

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._account(data)

    def sync(self) -> None:
        """Flush and fsync: everything written so far survives a crash."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def reset_to(self, size: int) -> None:
        """Keep the first ``size`` bytes, forget the rest (bytes never recorded as
        durable, or a chunk that failed its checksum)."""
        self._file.flush()
        self._file.truncate(size)
        self._rehash(size)

    def _rehash(self, size: int) -> None:
        """Recompute size, head and hash from the first ``size`` bytes on disk, through
        this file's own descriptor (a second descriptor closing would drop its lock)."""
        self._hash = hashlib.sha256()
        if self._md5 is not None:
            self._md5 = hashlib.md5(usedforsecurity=False)
        self.head = b""
        self.size = 0
        self._file.seek(0)
        while self.size < size:
            chunk = self._file.read(min(1 << 20, size - self.size))
            if not chunk:
                raise ContentError(f"{self.path.name}: shorter than the {size} bytes recorded")
            self._account(chunk)
        self._file.seek(size)

    def lock(self) -> bool:
        """Take the exclusive lock of this upload (across processes and, on a shared
        filesystem with locking, across nodes); False when someone else holds it."""
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def md5(self) -> str:
        """The MD5 hex of what was written (only for a file opened with ``md5=True``)."""
        if self._md5 is None:
            raise ContentError("this incoming file does not compute an MD5")
        return self._md5.hexdigest()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def discard(self) -> None:
        """Close and delete the file (an upload refused or abandoned)."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class ContentStore:
    """The directory of blobs; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / BLOBS
        self.incoming = self.root / INCOMING

    def prepare(self) -> None:
        """Create the directories (all 256 blob fan-out directories, once)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)
        created = False
        for i in range(256):
            sub = self.blobs / f"{i:02x}"
            if not sub.is_dir():
                sub.mkdir(exist_ok=True)
                created = True
        if created:
            fsync_directory(self.blobs)

    # -- receiving ---------------------------------------------------------------------

    def incoming_path(self, name: str | None = None) -> Path:
        """Where an upload's bytes are received (``name`` must be a plain token)."""
        name = name or secrets.token_hex(16)
        if not re.fullmatch(r"[0-9A-Za-z_-]{8,64}", name):
            raise ContentError(f"bad incoming name {name!r}")
        return self.incoming / name

    def receive(self, name: str | None = None, *, md5: bool = False) -> IncomingFile:
        """A new file in ``incoming/`` to write an upload to (``md5``: also compute the
        MD5 of what is written)."""
        return IncomingFile(self.incoming_path(name), md5=md5)

    def reopen(self, name: str) -> IncomingFile:
        """Re-open an upload's file as it is (then ``lock`` and ``reset_to``)."""
        return IncomingFile(self.incoming_path(name), existing=True)

    def create_empty(self, name: str) -> None:
        """An upload's file, empty and durable (so any node can resume it)."""
        path = self.incoming_path(name)
        with open(path, "xb") as f:
            os.fsync(f.fileno())
        fsync_directory(self.incoming)

    def remove_incoming(self, name: str) -> None:
        try:
            self.incoming_path(name).unlink()
        except FileNotFoundError:
            pass

    def incoming_files(self) -> list[tuple[str, float]]:
        """``(name, mtime)`` of every file under ``incoming/`` (for the sweep)."""
        result = []
        for entry in os.scandir(self.incoming):
            try:
                result.append((entry.name, entry.stat().st_mtime))
            except FileNotFoundError:
                continue
        return result

    # -- blobs -------------------------------------------------------------------------

    def path_of(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ContentError(f"not a SHA-256 name: {sha256!r}")
        return self.blobs / sha256[:2] / sha256

    def link(self, incoming: IncomingFile | Path, sha256: str) -> bool:
        """Give received bytes their blob name; False when the blob exists already.

        A hard link, not a rename: the incoming file stays until the reference is
        committed, so a blob that a concurrent sweep removed can be linked again.
        """
        source = incoming.path if isinstance(incoming, IncomingFile) else incoming
        target = self.path_of(sha256)
        try:
            os.link(source, target)
        except FileExistsError:
            return False
        fsync_directory(target.parent)
        return True

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def remove(self, sha256: str) -> bool:
        """Delete a blob's bytes; False when they were gone already."""
        try:
            self.path_of(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def size_of(self, sha256: str) -> int:
        return self.path_of(sha256).stat().st_size

    # -- limits ------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Space left on the store's filesystem for an unprivileged writer."""
        try:
            return shutil.disk_usage(self.root).free
        except OSError as e:
            if e.errno == errno.ENOENT:
                return 0
            raise
