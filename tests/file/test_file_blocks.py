"""Download blocks framed around the file's bytes, read from the page cache when they are
there: the framing is protobuf's to the byte, and a stored file's bytes come back whole
whether they were cached or not."""

from __future__ import annotations

import os
import time

from teamtalk_py.file.blocks import BlockFramer, varint
from teamtalk_py.file.storage import FileHeader, OfflineFileStore
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2
from teamtalk_py.wire.protocol import encode
from tests.support import TestCase

TASK = "0a1b2c3d-0000-4000-8000-00000000000a"
NOW = 1_700_000_000


def drop_from_page_cache(path: os.PathLike[str]) -> bool:
    """Ask the kernel to forget the file's cached pages; True when it did (a file system
    that keeps them, such as tmpfs, answers the probe read from memory).

    The probe reads the file's last byte only, with read-ahead off: a miss still starts
    reading the page it asked for, and that must not be one a test reads first.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        last = os.fstat(fd).st_size - 1
        for _ in range(5):  # pages still under writeback are kept: ask again
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            try:
                os.preadv(fd, [bytearray(1)], last, os.RWF_NOWAIT)
            except BlockingIOError:
                return True
            except OSError:
                return False
            time.sleep(0.05)
        return False
    finally:
        os.close(fd)


class BlockFramerTests(TestCase):
    def test_varint_matches_protobuf(self):
        for value in (0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**32 - 1):
            # offset is field 4: tag 0x20, then the varint.
            message = File_pb2.IMFilePullDataReq(offset=value)
            assert message.SerializePartialToString() == b"\x20" + varint(value)
        assert varint(300) == b"\xac\x02"
        assert varint(2**63) == b"\x80" * 9 + b"\x01"

    def test_head_and_block_are_the_pdu_protobuf_builds(self):
        """Header + prefix + block, byte for byte what encoding the message gives, for
        small and large offsets, users, seqs, sizes and a non-ASCII task id."""
        for task_id in (TASK, "tâche"):
            framer = BlockFramer(task_id)
            for seq in (0, 1, 65535):
                for user_id in (0, 7, 2**32 - 1):
                    for offset in (0, 127, 128, 32768 * 1000, 2**32 - 1):
                        for size in (0, 1, 32768, 256 * 1024):
                            block = os.urandom(size)
                            expected = encode(
                                B.CID_FILE_PULL_DATA_RSP,
                                File_pb2.IMFilePullDataRsp(
                                    result_code=0,
                                    task_id=task_id,
                                    user_id=user_id,
                                    offset=offset,
                                    file_data=block,
                                ),
                                seq,
                            )
                            assert framer.head(seq, user_id, offset, size) + block == expected


class ReadCachedTests(TestCase):
    def stored_file(self, content: bytes):
        store = OfflineFileStore(self.tmp_path())
        store.create(FileHeader(TASK, 1, 2, NOW, "a", len(content)))
        opened = store.open(TASK, write=True)
        opened.append(0, [content])
        self.addCleanup(opened.close)
        return store, opened

    def test_cached_bytes_are_read_without_waiting(self):
        """A file just written is in the page cache: its bytes come back as a view."""
        content = os.urandom(100_000)
        _, opened = self.stored_file(content)
        view = opened.read_cached(1000, 50_000)
        if view is None:
            self.skipTest("the system cannot read without blocking (no RWF_NOWAIT)")
        assert bytes(view) == content[1000:51000]
        assert bytes(opened.read_cached(99_000, 1000)) == content[99_000:]

    def test_bytes_past_the_end_or_not_cached_are_left_to_the_io_threads(self):
        """Short (past the end), uncached, or closed: None, and ``read`` still has them."""
        content = os.urandom(200_000)
        store, opened = self.stored_file(content)
        assert opened.read_cached(199_000, 2000) is None
        path = store.path_for(TASK)
        if not drop_from_page_cache(path):
            self.skipTest("this file system keeps files in memory whatever we ask")
        # The probe saw the last page go; on a busy machine a page of the first block can
        # outlive one drop (under writeback, or read back by the kernel meanwhile): drop
        # again. A ``read_cached`` that waited for the disk would return it every time.
        for _ in range(5):
            if opened.read_cached(0, 32768) is None:
                break
            drop_from_page_cache(path)
        else:
            self.fail("the first block was read without waiting after five drops")
        assert opened.read(0, 32768) == content[:32768]
        opened.close()
        assert opened.read_cached(0, 10) is None
