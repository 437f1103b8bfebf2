"""``MultipartFile``: a ``multipart/form-data`` body parsed as it streams, its file to disk.

The first part whose ``Content-Disposition`` names a ``filename`` is the file: its bytes go
to an incoming file of the content store through a ``DiskWriter`` (hashed on the way,
never held whole in memory); other parts are skipped. Before the first byte of the file
is written, ``accept`` sees the file name and every parameter of the part's
``Content-Disposition`` and may refuse the file, or check something first (a token, a
quota) while the connection is held. Used by msfs picture uploads and the cloud disk's
``/upload``, which differ only in what they accept and how they answer.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from twisted.internet import defer
from twisted.python.failure import Failure

from teamtalk_py.media.http import StreamedBody
from teamtalk_py.media.writer import DiskWriter, Writable


class Problem(enum.Enum):
    NO_DISPOSITION = "no part has a Content-Disposition"
    NO_FILENAME = "no part has a file name"
    BAD_BODY = "the body is not valid multipart/form-data"
    UNTERMINATED = "the file part is not terminated"
    TOO_LARGE = "the file is too large"


class MultipartError(Exception):
    """The body is not a usable multipart upload (``problem`` says why)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.value)
        self.problem = problem


@dataclass
class ReceivedFile:
    writer: DiskWriter
    filename: str
    #: Every parameter of the file part's Content-Disposition (``filename`` included).
    options: dict[bytes, bytes]


def header_text(raw: bytes) -> str:
    """A header parameter as text: clients send UTF-8 in headers, which arrive as bytes."""
    return raw.decode("utf-8", "replace")


class MultipartFile:
    """Body consumer (``http.BodyConsumer``); its outcome is a ``ReceivedFile``, or the
    ``MultipartError`` (or whatever ``accept`` raised) that refused the body."""

    def __init__(
        self,
        io: Callable[..., defer.Deferred],
        open_file: Callable[[], Writable],
        body: StreamedBody,
        boundary: bytes,
        max_size: int,
    ) -> None:
        self.io = io
        self.open_file = open_file
        self.body = body
        self.max_size = max_size
        self.boundary = boundary
        #: The last bytes of the body (is it closed by a bare boundary?).
        self._tail = b""
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )
        self.error: BaseException | None = None
        self.saw_disposition = False
        self.writer: DiskWriter | None = None
        self.filename = ""
        self.options: dict[bytes, bytes] = {}
        self.file_bytes = 0
        self._file_seen = False
        self._in_file_part = False
        self._file_done = False
        #: File bytes that arrived while ``accept`` was still deciding.
        self._held: list[bytes] | None = None
        self._accepting: defer.Deferred[None] | None = None
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}

    def accept(self, filename: str, options: dict[bytes, bytes]) -> Awaitable[None] | None:
        """Decide on the file part before its bytes are written: raise to refuse it, or
        return an awaitable (the connection is held until it is done, and it may raise)."""
        return None

    # parser callbacks
    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None or self._file_seen:
            return
        self.saw_disposition = True
        _, options = parse_options_header(disposition)
        raw = options.get(b"filename")
        if raw is None:
            return
        self._file_seen = self._in_file_part = True
        self.filename = header_text(raw)
        self.options = dict(options)
        try:
            waiting = self.accept(self.filename, self.options)
        except Exception as e:
            self.error = e
            return
        if waiting is None:
            self._open()
            return
        self._held = []
        self.body.hold()
        self._accepting = defer.ensureDeferred(_wait(waiting))
        self._accepting.addCallbacks(self._accepted, self._refused)

    def _open(self) -> None:
        self.writer = DiskWriter(self.io, self.open_file, self.body)

    def _accepted(self, _: object) -> None:
        held, self._held = self._held or [], None
        if self.error is None:
            self._open()
            assert self.writer is not None
            for chunk in held:
                self.writer.write(chunk)
        self.body.release()

    def _refused(self, failure: Failure) -> None:
        self._held = None
        if self.error is None:
            self.error = failure.value
        self.body.release()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file_part or self.error is not None:
            return
        self.file_bytes += end - start
        if self.max_size and self.file_bytes > self.max_size:
            self.error = MultipartError(Problem.TOO_LARGE)
            return
        if self._held is not None:
            self._held.append(data[start:end])
        elif self.writer is not None:
            self.writer.write(data[start:end])

    def _part_end(self) -> None:
        if self._in_file_part:
            self._in_file_part = False
            self._file_done = True

    # BodyConsumer
    def write(self, data: bytes) -> None:
        if self.error is not None:
            return
        self._tail = (self._tail + data[-(len(self.boundary) + 8) :])[-(len(self.boundary) + 8) :]
        try:
            self.parser.write(data)
        except MultipartParseError:
            self.error = MultipartError(Problem.BAD_BODY)

    def finish(self) -> defer.Deferred[ReceivedFile]:
        return defer.ensureDeferred(self._finish())

    async def _finish(self) -> ReceivedFile:
        if self._accepting is not None:
            await self._accepting
        if self.error is None:
            if not self._file_seen:
                problem = Problem.NO_FILENAME if self.saw_disposition else Problem.NO_DISPOSITION
                self.error = MultipartError(problem)
            elif not self._file_done and not self._closed_by_bare_boundary():
                self.error = MultipartError(Problem.UNTERMINATED)
        if self.error is not None:
            if self.writer is not None:
                await self.writer.discard()
            raise self.error
        assert self.writer is not None
        await self.writer.drain()
        return ReceivedFile(self.writer, self.filename, self.options)

    def _closed_by_bare_boundary(self) -> bool:
        """The seed's clients end the body with the boundary alone (no ``--``): the
        file's bytes are all there, only the parser is still waiting."""
        return self._in_file_part and self._tail.rstrip(b"\r\n").endswith(b"\r\n--" + self.boundary)

    def abort(self) -> None:
        if self.error is None:
            self.error = MultipartError(Problem.UNTERMINATED)
        if self.writer is not None:
            defer.ensureDeferred(self.writer.discard())


async def _wait(awaitable: Awaitable[None]) -> None:
    await awaitable
