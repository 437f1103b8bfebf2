"""Offline files on disk: one file per task, a 960-byte header, then the file's bytes.

Layout (commands.md §2.5.8, kept so files written by the reference stay readable): the
file lives at ``<data_dir>/offline_file/<first two characters of the task id>/<task id>``
and starts with NUL-padded ASCII fields:

======  ====  =============  =====================================================
offset  size  field          content
======  ====  =============  =====================================================
0       128   task_id        task id text
128     64    from_user_id   decimal text
192     64    to_user_id     decimal text
256     128   create_time    Unix time, decimal text
384     512   file_name      UTF-8 (the reference always left it empty)
896     64    file_size      decimal text
======  ====  =============  =====================================================

The name on disk is always the task id the service generated (a UUID, checked against a
strict pattern before any path is built), never anything derived from a client's file
name. The bytes after the header are the truth about an upload's progress: they are
written at explicit offsets and fsynced before the service asks for more, so after a crash
or restart ``stored`` (file length minus header) is where the upload continues.

Every method here blocks; ``FileTransfers`` runs them on the file service's I/O threads.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

HEADER_SIZE = 960
#: (field, offset, size) of the header, in order.
HEADER_FIELDS = (
    ("task_id", 0, 128),
    ("from_user_id", 128, 64),
    ("to_user_id", 192, 64),
    ("create_time", 256, 128),
    ("file_name", 384, 512),
    ("file_size", 896, 64),
)
DIRECTORY = "offline_file"

#: Most buffers one ``pwritev`` takes (Linux's IOV_MAX is 1024).
_IOV_MAX = 1024
#: ``preadv`` flag: read only what the page cache holds (Linux 4.14+); None elsewhere.
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
#: False once a file system answered that it does not support ``RWF_NOWAIT``.
_nowait_works = True


def _nowait_unsupported() -> None:
    global _nowait_works
    _nowait_works = False


_TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class BadHeader(ValueError):
    """A stored file's header is short or unreadable."""


def is_task_id(value: str) -> bool:
    """Whether ``value`` has the form of the task ids we generate (lower-case UUID text)."""
    return _TASK_ID.fullmatch(value) is not None


def _fit_utf8(text: str, size: int) -> bytes:
    """``text`` encoded in at most ``size - 1`` bytes, cut at a character boundary."""
    data = text.encode("utf-8")[: size - 1]
    return data.decode("utf-8", "ignore").encode("utf-8")


@dataclass(frozen=True, slots=True)
class FileHeader:
    task_id: str
    from_id: int
    to_id: int
    created: int
    file_name: str
    file_size: int

    def pack(self) -> bytes:
        values = {
            "task_id": self.task_id.encode("ascii"),
            "from_user_id": str(self.from_id).encode("ascii"),
            "to_user_id": str(self.to_id).encode("ascii"),
            "create_time": str(self.created).encode("ascii"),
            "file_name": _fit_utf8(self.file_name, 512),
            "file_size": str(self.file_size).encode("ascii"),
        }
        out = bytearray(HEADER_SIZE)
        for name, offset, size in HEADER_FIELDS:
            value = values[name][: size - 1]
            out[offset : offset + len(value)] = value
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes) -> FileHeader:
        if len(data) < HEADER_SIZE:
            raise BadHeader(f"header of {len(data)} bytes, expected {HEADER_SIZE}")
        raw = {
            name: data[offset : offset + size].split(b"\0", 1)[0]
            for name, offset, size in HEADER_FIELDS
        }
        try:
            return cls(
                task_id=raw["task_id"].decode("ascii"),
                from_id=int(raw["from_user_id"] or b"0"),
                to_id=int(raw["to_user_id"] or b"0"),
                created=int(raw["create_time"] or b"0"),
                file_name=raw["file_name"].decode("utf-8", "replace"),
                file_size=int(raw["file_size"]),
            )
        except (UnicodeDecodeError, ValueError) as e:
            raise BadHeader(str(e)) from None


class OpenFile:
    """An open stored file: the header and how many file bytes are on disk.

    Writes go to explicit offsets (``pwrite``) and are fsynced before they return, so a
    failed or repeated write never leaves a gap or a duplicate. Reads, writes and the close
    may run on different I/O threads; a lock orders them, so none of them can ever use the
    descriptor number after it was closed (and perhaps reused for a socket).
    """

    def __init__(self, path: Path, fd: int, header: FileHeader, stored: int) -> None:
        self.path = path
        self.fd = fd
        self.header = header
        self.stored = stored
        self._lock = threading.Lock()
        #: What ``read_cached`` reads into (allocated on first use, then reused).
        self._buffer: bytearray | None = None

    def _open_fd(self) -> int:
        if self.fd < 0:
            raise OSError(errno.EBADF, f"{self.path} is closed")
        return self.fd

    @property
    def complete(self) -> bool:
        return self.stored == self.header.file_size

    def append(self, offset: int, chunks: list[bytes]) -> int:
        """Write ``chunks`` at file offset ``offset`` and fsync; returns the bytes written.
        On failure the file is cut back to ``offset`` so it never holds a torn block."""
        size = sum(len(chunk) for chunk in chunks)
        position = HEADER_SIZE + offset
        with self._lock:
            fd = self._open_fd()
            try:
                # The blocks as they came (no join) in one pwritev; a short write, rare,
                # finishes from a joined copy.
                written = os.pwritev(fd, chunks, position) if len(chunks) <= _IOV_MAX else 0
                if written < size:
                    view = memoryview(b"".join(chunks))[written:]
                    position += written
                    while view:
                        written = os.pwrite(fd, view, position)
                        view = view[written:]
                        position += written
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, HEADER_SIZE + offset)
                except OSError:
                    pass
                raise
            self.stored = max(self.stored, offset + size)
        return size

    def read_cached(self, offset: int, size: int) -> memoryview | None:
        """``size`` file bytes from ``offset`` when all of them are in the page cache,
        without waiting for the disk: safe on the reactor thread. None when some would
        need the disk (``RWF_NOWAIT`` said ``EAGAIN``), the file is shorter, another
        thread holds the descriptor, or the system cannot tell (not Linux, or a file
        system without ``RWF_NOWAIT``): then ``read`` on an I/O thread is the way.

        The view is of a buffer this file reuses: valid until the next call.
        """
        if _NOWAIT is None or not _nowait_works:
            return None
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self.fd < 0:
                return None
            buffer = self._buffer
            if buffer is None or len(buffer) < size:
                buffer = self._buffer = bytearray(size)
            view = memoryview(buffer)[:size]
            try:
                got = os.preadv(self.fd, [view], HEADER_SIZE + offset, _NOWAIT)
            except BlockingIOError:
                return None
            except OSError as e:
                if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    _nowait_unsupported()
                return None
        finally:
            self._lock.release()
        return view if got == size else None

    def read(self, offset: int, size: int) -> bytes:
        """``size`` file bytes from ``offset`` (fewer only at the end of what is stored)."""
        parts = []
        position = HEADER_SIZE + offset
        with self._lock:
            fd = self._open_fd()
            while size > 0:
                chunk = os.pread(fd, size, position)
                if not chunk:
                    break
                parts.append(chunk)
                size -= len(chunk)
                position += len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Close the descriptor (once; later calls do nothing)."""
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class OfflineFileStore:
    """Offline files under ``root`` (normally ``<data_dir>/offline_file``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, task_id: str) -> Path:
        if not is_task_id(task_id):
            raise ValueError(f"not a task id: {task_id!r}")
        return self.root / task_id[:2] / task_id

    def free_bytes(self) -> int:
        """Free space on the file system holding the files (for the disk quota)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free

    def create(self, header: FileHeader) -> None:
        """Create the file with its header, durably (file and directory entry fsynced)."""
        path = self.path_for(header.task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, header.pack())
            os.fsync(fd)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        _fsync_directory(path.parent)

    def open(self, task_id: str, *, write: bool = False) -> OpenFile | None:
        """The stored file of ``task_id``, or None when there is none (or it is unreadable).
        More bytes than the header announces also count as unreadable."""
        path = self.path_for(task_id)
        try:
            fd = os.open(path, os.O_RDWR if write else os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            header = FileHeader.unpack(os.pread(fd, HEADER_SIZE, 0))
            stored = os.fstat(fd).st_size - HEADER_SIZE
            if header.task_id != task_id or stored > header.file_size:
                raise BadHeader(f"{path} does not belong to {task_id} or is too long")
        except (BadHeader, OSError):
            os.close(fd)
            return None
        return OpenFile(path, fd, header, stored)

    def remove(self, task_id: str) -> bool:
        """Delete the stored file of ``task_id``; False when there was none."""
        path = self.path_for(task_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        try:
            path.parent.rmdir()
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
        return True


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
