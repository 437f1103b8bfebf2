"""Serving a stored file: ``HEAD``, ``ETag``/``If-None-Match``, one ``Range`` (206/416),
``Content-Disposition`` with the original name, read from disk on the I/O threads.

The ETag is the blob's SHA-256 (strong: equal tags mean equal bytes). Pictures are served
inline as the image type sniffed when they were stored; anything else as
``application/octet-stream``, as an attachment. Every answer carries
``X-Content-Type-Options: nosniff`` so a browser never second-guesses the type.
The file is read in chunks only while the client keeps up (the response is a push
producer paused by the transport), so a slow reader costs one chunk of memory.
"""

from __future__ import annotations

import re
from typing import IO, Any, Protocol
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from teamtalk_py.media.http import HttpError, MediaRequest
from teamtalk_py.media.sniff import is_inline

log = Logger(namespace="teamtalk.media.downloads")


class StoredFile(Protocol):
    """What a download needs of a row that refers to a blob (a media file, a file of
    the cloud disk)."""

    @property
    def file_id(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def content_type(self) -> str:
        """The sniffed type; empty (or not an image) means an attachment."""
        ...


CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


def parse_range(header: bytes | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a single satisfiable byte range; None to send everything.

    Several ranges, or a header we do not understand, are answered with the whole file
    (RFC 9110 allows ignoring Range); an unsatisfiable one raises 416."""
    if header is None:
        return None
    found = _RANGE.match(header.decode("latin-1").strip())
    if found is None:
        return None
    first_text, last_text = found.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(last, size - 1)


def _unsatisfiable(size: int) -> HttpError:
    return HttpError(416, headers={b"Content-Range": b"bytes */%d" % size})


def content_disposition(file: StoredFile, inline: bool) -> bytes:
    kind = "inline" if inline else "attachment"
    name = file.name or file.file_id
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}".encode()


def _etag_matches(header: bytes | None, etag: bytes) -> bool:
    if header is None:
        return False
    tags = [t.strip() for t in header.split(b",")]
    return b"*" in tags or etag in tags or b"W/" + etag in tags


async def serve(
    context: Any, request: MediaRequest, file: StoredFile, extra: dict[bytes, bytes] | None = None
) -> None:
    """Answer ``request`` (GET or HEAD) with ``file``'s bytes."""
    etag = b'"' + file.sha256.encode() + b'"'
    inline = is_inline(file.content_type)
    headers = {
        b"ETag": etag,
        b"Accept-Ranges": b"bytes",
        b"Cache-Control": b"private, max-age=31536000, immutable",
        b"X-Content-Type-Options": b"nosniff",
        b"Content-Type": (file.content_type if inline else "application/octet-stream").encode(),
        b"Content-Disposition": content_disposition(file, inline),
    }
    headers.update(extra or {})
    for name, value in headers.items():
        request.setHeader(name, value)
    if _etag_matches(request.header(b"if-none-match"), etag):
        request.setResponseCode(304)
        request.finish()
        return
    first, last = 0, file.size - 1
    wanted = None
    if_range = request.header(b"if-range")
    if if_range is None or if_range.strip() == etag:
        wanted = parse_range(request.header(b"range"), file.size)
    if wanted is not None:
        first, last = wanted
        request.setResponseCode(206)
        request.setHeader(b"Content-Range", b"bytes %d-%d/%d" % (first, last, file.size))
    length = max(0, last - first + 1)
    request.setHeader(b"Content-Length", b"%d" % length)
    if request.method == b"HEAD" or length == 0:
        request.write(b"")
        request.finish()
        return
    try:
        handle = await context.io(open, context.library.files.path_of(file.sha256), "rb")
    except FileNotFoundError:
        log.error(
            "blob {sha256} of file {file_id} is missing", sha256=file.sha256, file_id=file.file_id
        )
        raise HttpError(500, "stored bytes are missing") from None
    producer = FileRangeProducer(context.io, handle, first, length, request)
    await producer.run()


@implementer(IPushProducer)
class FileRangeProducer:
    """Reads ``length`` bytes from ``first`` on the I/O threads while the client reads."""

    def __init__(self, io: Any, handle: IO[bytes], first: int, length: int, request: MediaRequest):
        self.io = io
        self.handle = handle
        self.position = first
        self.remaining = length
        self.request = request
        self.paused = False
        self.stopped = False
        self._resumed: defer.Deferred[None] | None = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self._resumed is not None:
            d, self._resumed = self._resumed, None
            d.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()

    def _read(self, size: int) -> bytes:
        self.handle.seek(self.position)
        return self.handle.read(size)

    async def run(self) -> None:
        request = self.request
        request.registerProducer(self, True)
        try:
            while self.remaining > 0 and not self.stopped:
                if self.paused:
                    self._resumed = defer.Deferred()
                    await self._resumed
                    continue
                data = await self.io(self._read, min(CHUNK, self.remaining))
                if not data:
                    raise OSError("stored file is shorter than recorded")
                self.position += len(data)
                self.remaining -= len(data)
                if self.stopped:
                    break
                request.write(data)
        finally:
            await self.io(self.handle.close)
            if not request._disconnected and not request.finished:
                request.unregisterProducer()
                if self.remaining == 0:
                    request.finish()
                else:
                    request.loseConnection()
