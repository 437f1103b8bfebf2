"""``DiskWriter``: bytes appended in order on I/O threads, fsync checkpoints, back-pressure,
and a failing disk reported to whoever waits (a real file in a scratch directory)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import threads

from teamtalk_py.media.writer import HIGH_WATER, DiskWriter
from tests.support import TestCase


def io(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return threads.deferToThread(fn, *args, **kwargs)


class File:
    """An append-only file; ``sync`` is a real fsync unless the disk is made to fail."""

    def __init__(self, path: Path, fail_sync: bool = False) -> None:
        self.handle = path.open("ab")
        self.fail_sync = fail_sync

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def sync(self) -> None:
        self.handle.flush()
        if self.fail_sync:
            raise OSError(28, "No space left on device")
        os.fsync(self.handle.fileno())


class Flow:
    """The connection's side of back-pressure: how often it was held and released."""

    def __init__(self) -> None:
        self.holds = 0
        self.releases = 0

    def hold(self) -> None:
        self.holds += 1

    def release(self) -> None:
        self.releases += 1


class DiskWriterTests(TestCase):
    def setUp(self) -> None:
        self.path = self.tmp_path() / "incoming"
        self.files: list[File] = []
        self.addCleanup(lambda: [f.handle.close() for f in self.files])

    def open_file(self, fail_sync: bool = False) -> Any:
        def opened() -> File:
            file = File(self.path, fail_sync)
            self.files.append(file)
            return file

        return opened

    async def test_chunks_land_in_order_and_a_checkpoint_counts_what_came_before_it(self):
        """A checkpoint fires with the bytes queued before it, durable; drain waits for all."""
        writer = DiskWriter(io, self.open_file())
        writer.write(b"first ")
        writer.write(b"second ")
        durable = writer.checkpoint()
        writer.write(b"third")
        assert await durable == len(b"first second ")
        file = await writer.drain()
        file.handle.flush()
        assert self.path.read_bytes() == b"first second third"
        assert writer.written == len(b"first second third")

    async def test_a_failed_fsync_fails_its_checkpoint_and_the_drain(self):
        """The disk refusing an fsync reaches the checkpoint's waiter (it does not wait
        for ever) and every later drain; nothing more is written."""
        writer = DiskWriter(io, self.open_file(fail_sync=True))
        writer.write(b"bytes")
        with self.assertRaises(OSError):
            await writer.checkpoint()
        with self.assertRaises(OSError):
            await writer.drain()
        writer.write(b"ignored")
        assert writer.written == len(b"bytes")

    async def test_more_than_the_high_water_mark_holds_the_body_until_written(self):
        """Past ``HIGH_WATER`` queued bytes the connection is held, and released once the
        writes caught up."""
        flow = Flow()
        writer = DiskWriter(io, self.open_file(), flow)
        chunk = b"x" * (256 * 1024)
        for _ in range(HIGH_WATER // len(chunk) + 2):
            writer.write(chunk)
        assert flow.holds == 1
        await writer.drain()
        assert flow.releases == 1
        assert writer.written == (HIGH_WATER // len(chunk) + 2) * len(chunk)
