"""``DiskWriter``: received bytes appended to an incoming file on I/O threads, in order.

The HTTP connection delivers chunks on the reactor thread; the writes (and the SHA-256
computed on the way, ``IncomingFile.write``) run on the media service's I/O threads, a
batch at a time, so the reactor never waits for the disk. While more than
``HIGH_WATER`` bytes wait to be written the body is held (the connection stops reading),
so a client faster than the disk costs a bounded amount of memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.python.failure import Failure

from teamtalk_py.media.http import HttpError

HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
BATCH = 1024 * 1024


class FlowControl(Protocol):
    def hold(self) -> None: ...

    def release(self) -> None: ...


class Writable(Protocol):
    def write(self, data: bytes) -> None: ...

    def sync(self) -> None: ...


class _Sync:
    """A queued fsync: fires with the bytes written before it, once they are durable."""

    def __init__(self) -> None:
        self.done: defer.Deferred[int] = defer.Deferred()


class DiskWriter:
    def __init__(
        self,
        io: Callable[..., defer.Deferred],
        open_file: Callable[[], Writable],
        flow: FlowControl | None = None,
    ) -> None:
        self.io = io
        self.flow = flow
        self.file: Any = None
        self.written = 0
        self.failure: Failure | None = None
        self._pending: list[bytes | _Sync] = []
        self._pending_bytes = 0
        self._busy = True
        self._held = False
        self._idle: list[defer.Deferred[None]] = []
        defer.ensureDeferred(self._open(open_file))

    async def _open(self, open_file: Callable[[], Writable]) -> None:
        try:
            self.file = await self.io(open_file)
        except Exception:
            self._fail(Failure())
        await self._run()

    def write(self, data: bytes) -> None:
        if self.failure is not None or not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > HIGH_WATER and self.flow is not None and not self._held:
            self._held = True
            self.flow.hold()
        self._kick()

    def checkpoint(self) -> defer.Deferred[int]:
        """Fsync after what was written so far; fires with that byte count."""
        marker = _Sync()
        if self.failure is not None:
            marker.done.errback(self.failure)
            return marker.done
        self._pending.append(marker)
        self._kick()
        return marker.done

    def _kick(self) -> None:
        if not self._busy:
            self._busy = True
            defer.ensureDeferred(self._run())

    async def _run(self) -> None:
        """Write what is queued, a batch (or an fsync) at a time, until nothing is left or
        a write failed; then wake whoever waits in ``drain``."""
        while self._pending and self.failure is None:
            first = self._pending[0]
            try:
                if isinstance(first, _Sync):
                    self._pending.pop(0)
                    written = self.written
                    try:
                        await self.io(self.file.sync)
                    except Exception:
                        first.done.errback()
                        raise
                    first.done.callback(written)
                else:
                    size = await self._write_batch()
                    self._written(size)
            except Exception:
                self._fail(Failure())
        self._busy = False
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    async def _write_batch(self) -> int:
        """The queued chunks up to the next fsync, ``BATCH`` bytes or so, in one write."""
        batch: list[bytes] = []
        size = 0
        while self._pending and size < BATCH and not isinstance(self._pending[0], _Sync):
            chunk = self._pending.pop(0)
            assert isinstance(chunk, bytes)
            batch.append(chunk)
            size += len(chunk)
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        await self.io(self.file.write, data)
        return size

    def _written(self, size: int) -> None:
        self._pending_bytes -= size
        self.written += size
        if self._held and self._pending_bytes < LOW_WATER and self.flow is not None:
            self._held = False
            self.flow.release()

    def _fail(self, failure: Failure) -> None:
        self.failure = failure
        for item in self._pending:
            if isinstance(item, _Sync):
                item.done.errback(failure)
        self._pending = []
        self._pending_bytes = 0
        if self._held and self.flow is not None:
            self._held = False
            self.flow.release()

    async def drain(self) -> Any:
        """Wait until everything queued so far is in the file; the file (raises the
        write's error if one failed)."""
        if self._busy:
            d: defer.Deferred[None] = defer.Deferred()
            self._idle.append(d)
            await d
        if self.failure is not None:
            self.failure.raiseException()
        return self.file

    def drop_pending(self) -> None:
        """Forget what is queued and not yet written (a refused or cut-off body)."""
        for item in self._pending:
            if isinstance(item, _Sync):
                item.done.errback(Failure(RuntimeError("upload abandoned")))
        self._pending = []
        self._pending_bytes = 0

    async def discard(self) -> None:
        """Stop writing and delete the file (an upload refused or cut off)."""
        self.drop_pending()
        if self._busy:
            d: defer.Deferred[None] = defer.Deferred()
            self._idle.append(d)
            await d
        if self.file is not None:
            await self.io(self.file.discard)


class RawFile:
    """Body consumer of a request whose whole body is one file: written to an incoming
    file through a ``DiskWriter``; past ``max_size`` bytes (0: no limit) the rest is
    dropped and the outcome is a 413. The outcome is the writer (its file complete)."""

    def __init__(
        self,
        io: Callable[..., defer.Deferred],
        open_file: Callable[[], Writable],
        flow: FlowControl,
        max_size: int,
    ) -> None:
        self.writer = DiskWriter(io, open_file, flow)
        self.max_size = max_size
        self.received = 0
        self.too_large = False

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.max_size and self.received > self.max_size:
            if not self.too_large:
                self.too_large = True
                self.writer.drop_pending()
            return
        self.writer.write(data)

    def finish(self) -> defer.Deferred[DiskWriter]:
        return defer.ensureDeferred(self._finish())

    async def _finish(self) -> DiskWriter:
        if self.too_large:
            await self.writer.discard()
            raise HttpError(413, f"the body is larger than {self.max_size} bytes")
        await self.writer.drain()
        return self.writer

    def abort(self) -> None:
        defer.ensureDeferred(self.writer.discard())
