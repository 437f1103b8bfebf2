"""Offline file records in the store (SQLite and MariaDB) and the on-disk file format."""

from __future__ import annotations

from teamtalk_py.file.storage import (
    HEADER_FIELDS,
    HEADER_SIZE,
    FileHeader,
    OfflineFileStore,
    is_task_id,
)
from teamtalk_py.store import files
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase
from tests.support import TestCase

NOW = 1_700_000_000
TASK = "0a1b2c3d-0000-4000-8000-00000000000a"
OTHER = "0a1b2c3d-0000-4000-8000-00000000000b"
ALICE, BOB, CAROL = 11, 22, 33


def upload(db, task_id: str = TASK, size: int = 100, at: int = NOW):
    return db.write(files.create_upload, task_id, ALICE, BOB, "a.txt", size, now=at)


class OfflineFileTests:
    """The offline-file repository tests, on ``self.database``."""

    async def test_upload_progress_is_recorded_and_readable(self):
        """Progress is kept per task; the last byte turns UPLOADING into UPLOADED."""
        await upload(self.database)
        assert await self.database.read(files.progress, TASK) == (0, 100)
        await self.database.write(files.record_progress, TASK, 40, now=NOW + 1)
        row = await self.database.read(files.get, TASK)
        assert (row.uploaded, row.status, row.updated) == (40, files.UPLOADING, NOW + 1)
        await self.database.write(files.record_progress, TASK, 100, now=NOW + 2)
        assert (await self.database.read(files.get, TASK)).status == files.UPLOADED
        assert await self.database.read(files.progress, OTHER) is None

    async def test_only_a_finished_upload_of_the_sender_is_offered(self):
        """add-offline needs the right sender, receiver and a complete upload; listing shows
        offered files only, oldest first."""
        await upload(self.database)
        assert await self.database.write(files.offer, TASK, ALICE, BOB, "x", 1, now=NOW) is None
        await self.database.write(files.record_progress, TASK, 100, now=NOW)
        assert await self.database.write(files.offer, TASK, CAROL, BOB, "x", 1, now=NOW) is None
        assert await self.database.write(files.offer, TASK, ALICE, CAROL, "x", 1, now=NOW) is None
        assert await self.database.read(files.offered_to, BOB) == []
        row = await self.database.write(files.offer, TASK, ALICE, BOB, "x", 1, now=NOW + 5)
        assert (row.status, row.file_name, row.file_size) == (files.OFFERED, "a.txt", 100)
        # Without a file-service record (another database), the reference's insert.
        await self.database.write(files.offer, OTHER, CAROL, BOB, "b.txt", 7, now=NOW - 1)
        listed = await self.database.read(files.offered_to, BOB)
        assert [(f.task_id, f.from_id) for f in listed] == [(OTHER, CAROL), (TASK, ALICE)]

    async def test_withdraw_needs_sender_or_receiver_and_the_sweep_finds_deleted_and_old(self):
        """del-offline by a stranger changes nothing; withdrawn and idle rows are due."""
        await upload(self.database)
        await upload(self.database, OTHER, at=NOW - 1000)
        assert not await self.database.write(files.withdraw, TASK, ALICE, BOB, CAROL, now=NOW)
        assert await self.database.read(files.sweepable, expired_before=NOW - 500) == [OTHER]
        assert await self.database.write(files.withdraw, TASK, ALICE, BOB, BOB, now=NOW)
        due = await self.database.read(files.sweepable, expired_before=NOW - 500)
        assert sorted(due) == sorted([TASK, OTHER])
        await self.database.write(files.forget, due)
        assert await self.database.read(files.get, TASK) is None


class SQLiteOfflineFileTests(OfflineFileTests, SQLiteStoreCase):
    """On SQLite."""


class MariaDBOfflineFileTests(OfflineFileTests, MariaDBStoreCase):
    """On MariaDB."""


class StoredFileTests(TestCase):
    def test_header_keeps_the_reference_layout(self):
        """960 bytes of NUL-padded fields at the reference's offsets, real name included."""
        header = FileHeader(TASK, ALICE, BOB, NOW, "résumé.pdf", 123456)
        raw = header.pack()
        assert len(raw) == HEADER_SIZE == 960
        offsets = {name: offset for name, offset, _ in HEADER_FIELDS}
        assert raw[0:36] == TASK.encode() and raw[36:128] == bytes(92)
        assert raw[128:130] == b"11" and raw[192:194] == b"22"
        assert raw[384:396].decode() == "résumé.pdf"
        assert raw[offsets["file_size"] :].rstrip(b"\0") == b"123456"
        assert FileHeader.unpack(raw) == header
        # A header written by the reference (empty name) reads back too.
        legacy = bytearray(raw)
        legacy[384:896] = bytes(512)
        assert FileHeader.unpack(bytes(legacy)).file_name == ""

    def test_stored_file_is_named_by_task_id_only(self):
        """Paths come from validated task ids; anything else is refused."""
        root = self.tmp_path()
        store = OfflineFileStore(root)
        assert store.path_for(TASK) == root / TASK[:2] / TASK
        for bad in ("../../etc/passwd", TASK.upper(), TASK + "/x", ""):
            assert not is_task_id(bad)
            with self.assertRaises(ValueError):
                store.path_for(bad)

    def test_append_read_and_reopen(self):
        """Bytes written at explicit offsets survive a reopen; the length is the progress."""
        store = OfflineFileStore(self.tmp_path())
        store.create(FileHeader(TASK, ALICE, BOB, NOW, "a", 10))
        opened = store.open(TASK, write=True)
        assert opened.stored == 0
        opened.append(0, [b"0123", b"45"])
        opened.close()
        again = store.open(TASK)
        assert (again.stored, again.complete, again.read(2, 3)) == (6, False, b"234")
        again.close()
        assert store.remove(TASK) and not store.remove(TASK)
        assert store.open(TASK) is None
