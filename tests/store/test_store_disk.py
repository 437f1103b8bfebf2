"""The cloud disk's rows (``store/disk.py``) with the content store's reference counts, on
SQLite and MariaDB: what ``CloudDisk`` relies on, each in one transaction."""

from __future__ import annotations

import secrets
from pathlib import Path

from twisted.internet import reactor, threads

from teamtalk_py.content.blobs import Blobs
from teamtalk_py.content.store import ContentStore
from teamtalk_py.disk.cloud_disk import AlreadyShared, CloudDisk, NoSuchFile, NotReadable
from teamtalk_py.disk.ranking import SqlRanking
from teamtalk_py.store import content, disk
from teamtalk_py.store.disk import Order
from teamtalk_py.store.txn import DuplicateError
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase


def io(fn, *args, **kwargs):
    return threads.deferToThread(fn, *args, **kwargs)


class DiskStoreTests:
    database: object
    data_dir: Path

    async def make_disk(self) -> CloudDisk:
        files = ContentStore(self.data_dir / "media")
        await io(files.prepare)
        self.files = files
        blobs = Blobs(files, self.database, io, reactor)
        return CloudDisk(self.database, blobs, SqlRanking(self.database), reactor,
                         lambda: "http://media/", 0)  # fmt: skip

    async def receive(self, data: bytes):
        incoming = await io(self.files.receive, md5=True)
        await io(incoming.write, data)
        return incoming

    async def refcount(self, data: bytes) -> int | None:
        import hashlib

        return await self.database.read(content.refcount, hashlib.sha256(data).hexdigest())

    async def test_files_shares_and_their_reference_counts(self):
        """Uploads, instant uploads and saves count one reference each (the same bytes
        stored once); (owner, MD5, name) is unique; the public list is unique per (MD5,
        name); deleting counts down and takes the share with it."""
        cloud = await self.make_disk()
        data = secrets.token_bytes(5000)
        first, added = await cloud.add_received(await self.receive(data), 1, "a.bin")
        assert added and first.md5 and first.sha256 and first.size == 5000
        again, added = await cloud.add_received(await self.receive(data), 1, "a.bin")
        assert not added and again.file_id == first.file_id
        with self.assertRaises(NotReadable):
            await cloud.add_known(2, first.md5, "b.bin")  # user 2 cannot read user 1's file
        copy, added = await cloud.add_known(1, first.md5, "copy.bin")
        assert added and copy.sha256 == first.sha256
        assert await self.refcount(data) == 2
        share = await cloud.publish(1, first.file_id)
        with self.assertRaises(AlreadyShared):
            await cloud.publish(1, first.file_id)
        assert (await cloud.publish(1, copy.file_id)).name == "copy.bin"  # another name
        theirs, added = await cloud.add_known(2, first.md5, "a.bin")  # readable: shared now
        assert added
        with self.assertRaises(AlreadyShared):
            await cloud.publish(2, theirs.file_id)  # (MD5, name) is in the list already
        saved, added = await cloud.save(3, share.share_id)
        assert added and saved.name == "a.bin"
        assert not (await cloud.save(3, share.share_id))[1]
        assert not (await cloud.save(2, share.share_id))[1]  # they had it
        assert await self.refcount(data) == 4
        for _ in range(3):
            await cloud.count_share_download(share.share_id)
        assert (await cloud.count_download(1, first.file_id)).pv == 1
        assert [s.pv for s in await cloud.shares(Order.PV_DESC, 0, 10)] == [3, 0]
        listed = await cloud.files(1, Order.NORMAL, 0, 10)
        assert [(f.name, f.share_id is not None) for f in listed] == [
            ("a.bin", True), ("copy.bin", True),
        ]  # fmt: skip
        await cloud.delete(1, first.file_id)
        with self.assertRaises(NoSuchFile):
            await cloud.share(share.share_id)
        with self.assertRaises(NoSuchFile):
            await cloud.delete(1, first.file_id)
        with self.assertRaises(NoSuchFile):
            await cloud.delete(2, copy.file_id)  # not theirs
        assert await self.refcount(data) == 3
        for user_id, file in ((1, copy), (2, theirs), (3, saved)):
            await cloud.delete(user_id, file.file_id)
        assert await self.refcount(data) == 0
        assert await cloud.count_files(1) == 0 and await cloud.count_shares() == 0

    async def test_a_failed_commit_leaves_no_bytes_behind(self):
        """A commit whose row cannot be written removes the blob it created (nothing
        else counts it), and keeps a blob another row refers to."""
        cloud = await self.make_disk()
        data = secrets.token_bytes(3000)
        incoming = await self.receive(data)
        row = disk.DiskFileRow("f" * 32, 1, "a", incoming.md5, incoming.sha256, 3000, 0, 0)
        await self.database.write(disk.insert_file, row)  # the file id is taken now
        with self.assertRaises(DuplicateError):
            await cloud.blobs.commit(incoming, lambda txn: disk.insert_file(txn, row))
        assert not self.files.exists(incoming.sha256)
        assert await self.refcount(data) is None
        kept, _ = await cloud.add_received(await self.receive(data), 1, "b")
        incoming = await self.receive(data)
        with self.assertRaises(DuplicateError):
            await cloud.blobs.commit(incoming, lambda txn: disk.insert_file(txn, row))
        assert self.files.exists(kept.sha256) and await self.refcount(data) == 1


class SQLiteDiskStoreTests(DiskStoreTests, SQLiteStoreCase):
    pass


class MariaDBDiskStoreTests(DiskStoreTests, MariaDBStoreCase):
    pass
