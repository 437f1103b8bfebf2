"""File transfer end to end over loopback with real TCP clients."""

from __future__ import annotations

import dataclasses
import random
import time
import uuid

from teamtalk_client import BlockSource, pull_file, send_state
from teamtalk_py.file.storage import HEADER_SIZE
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2
from teamtalk_py.store import files as offline_files
from tests.file_support import (
    DOWNLOAD,
    OFFLINE,
    ONLINE,
    RECEIVER,
    SENDER,
    UPLOAD,
    FileTestCase,
    payload,
)
from tests.msg_support import IOS, assert_nothing, closed_within, next_pdu, sleep
from tests.wire.test_strings import INVALID, MARK

MB = 1024 * 1024


class OnlineTransferTests(FileTestCase):
    async def test_online_transfer_of_10_mb_arrives_byte_identical(self):
        """A 10 MB file relayed between two connected clients arrives byte for byte."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        data = payload(10 * MB)
        answer = await self.request_file(alice, b, len(data), ONLINE)
        assert answer.result_code == 0
        assert answer.trans_mode == ONLINE
        assert [(x.ip, x.port) for x in answer.ip_addr_list] == [("127.0.0.1", self.file_port)]
        notify = (await next_pdu(bob.protocol, B.CID_FILE_NOTIFY)).message
        assert (notify.task_id, notify.from_user_id, notify.file_size) == (
            answer.task_id,
            a,
            len(data),
        )
        sender = await self.file_login(a, answer.task_id, SENDER)
        receiver = await self.file_login(b, answer.task_id, RECEIVER)
        ready = (await next_pdu(receiver, B.CID_FILE_STATE)).message
        assert (ready.state, ready.user_id) == (B.CLIENT_FILE_PEER_READY, a)
        BlockSource(sender, a, answer.task_id, data)
        got = await pull_file(receiver, b, answer.task_id, len(data), trans_mode=ONLINE, window=16)
        assert got == data
        send_state(receiver, B.CLIENT_FILE_DONE, answer.task_id, b)
        done = (await next_pdu(sender, B.CID_FILE_STATE)).message
        assert done.state == B.CLIENT_FILE_DONE
        assert await closed_within(sender, 3)
        assert await closed_within(receiver, 3)


class OfflineTransferTests(FileTestCase):
    async def test_offline_upload_then_download_after_restart(self):
        """An uploaded file survives a restart and downloads byte for byte."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        data = payload(3 * MB + 123)
        answer = await self.request_file(alice, b, len(data), OFFLINE)
        assert answer.result_code == 0 and answer.trans_mode == OFFLINE
        uploader = await self.file_login(a, answer.task_id, UPLOAD)
        source = BlockSource(uploader, a, answer.task_id, data)
        done = (await source.finished()).message
        assert done.state == B.CLIENT_FILE_DONE
        alice.protocol.send(
            B.CID_FILE_ADD_OFFLINE_REQ,
            File_pb2.IMFileAddOfflineReq(
                from_user_id=a,
                to_user_id=b,
                task_id=answer.task_id,
                file_name="f.bin",
                file_size=len(data),
            ),
        )
        ready = (await next_pdu(bob.protocol, B.CID_FILE_NOTIFY, 3)).message
        assert (ready.task_id, ready.offline_ready) == (answer.task_id, 0)
        ready = (await next_pdu(bob.protocol, B.CID_FILE_NOTIFY, 3)).message
        assert (ready.task_id, ready.offline_ready, ready.trans_mode) == (
            answer.task_id,
            1,
            OFFLINE,
        )
        await self.restart()
        bob = await self.login("bob")
        listed = await self.has_offline(bob)
        assert [(f.task_id, f.from_user_id, f.file_size) for f in listed.offline_file_list] == [
            (answer.task_id, a, len(data))
        ]
        downloader = await self.file_login(b, answer.task_id, DOWNLOAD)
        got = await pull_file(downloader, b, answer.task_id, len(data))
        assert got == data
        done = (await next_pdu(downloader, B.CID_FILE_STATE)).message
        assert done.state == B.CLIENT_FILE_DONE


KB = 1024
BLOCK = 32768


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll ``predicate()`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await sleep(0.01)


class OnlineStateTests(FileTestCase):
    async def online_pair(self, size: int):
        """Alice offers bob an online file; both logged in to the file service, ready."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        await self.login("bob")
        answer = await self.request_file(alice, b, size, ONLINE)
        assert answer.result_code == 0 and answer.trans_mode == ONLINE
        sender = await self.file_login(a, answer.task_id, SENDER)
        receiver = await self.file_login(b, answer.task_id, RECEIVER)
        await next_pdu(receiver, B.CID_FILE_STATE)  # peer ready
        return a, b, answer.task_id, sender, receiver

    async def test_receiver_refuses(self):
        """A refusal reaches the sender; both file connections are then closed."""
        a, b, task_id, sender, receiver = await self.online_pair(1000)
        send_state(receiver, B.CLIENT_FILE_REFUSE, task_id, b)
        state = (await next_pdu(sender, B.CID_FILE_STATE)).message
        assert (state.state, state.user_id, state.task_id) == (B.CLIENT_FILE_REFUSE, b, task_id)
        assert await closed_within(receiver, 3)
        assert await closed_within(sender, 3)

    async def test_sender_cancels_mid_transfer(self):
        """A cancel in the middle of a transfer reaches the receiver; both are closed."""
        a, b, task_id, sender, receiver = await self.online_pair(MB)
        BlockSource(sender, a, task_id, payload(MB))
        part = await pull_file(receiver, b, task_id, 256 * KB, trans_mode=ONLINE)
        assert len(part) == 256 * KB
        send_state(sender, B.CLIENT_FILE_CANCEL, task_id, a)
        state = (await next_pdu(receiver, B.CID_FILE_STATE)).message
        assert (state.state, state.user_id) == (B.CLIENT_FILE_CANCEL, a)
        assert await closed_within(sender, 3)
        assert await closed_within(receiver, 3)

    async def test_online_request_to_receiver_without_pc_becomes_offline(self):
        """Receivers online only on mobile, or not at all, get an offline transfer; a
        mobile-only receiver hears nothing (offers go to PC connections)."""
        await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        bob_phone = await self.login("bob", client_type=IOS)
        for to_id in (b, c):
            answer = await self.request_file(alice, to_id, 10, ONLINE)
            assert (answer.result_code, answer.trans_mode) == (0, OFFLINE)
        await assert_nothing(bob_phone.protocol, B.CID_FILE_NOTIFY)

    async def test_request_without_file_service_or_to_unknown_user_fails(self):
        """No file service, or an unknown receiver: result 1 and no task id."""
        await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        answer = await self.request_file(alice, 9999, 10, OFFLINE)
        assert (answer.result_code, answer.task_id) == (1, "")
        self.server.service("msg").files.servers = []
        answer = await self.request_file(alice, b, 10, OFFLINE)
        assert (answer.result_code, answer.task_id, len(answer.ip_addr_list)) == (1, "", 0)


class OfflineResumeTests(FileTestCase):
    async def offer(self, size: int, seed: int = 1):
        """Alice's offline request to bob, who is online to be told of it (so the file
        service lets him log in to it from his address): (a, b, alice, task_id, data)."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        await self.login("bob")
        data = payload(size, seed)
        answer = await self.request_file(alice, b, size, OFFLINE)
        assert answer.result_code == 0
        return a, b, alice, answer.task_id, data

    def upload_settled(self, task_id: str) -> bool:
        task = self.server.service("file").transfers.tasks.get(task_id)
        return task is None or (
            task.uploader is None and (task.upload is None or task.upload.settled)
        )

    async def stored_bytes(self, task_id: str) -> int:
        path = self.offline_files.path_for(task_id)
        return path.stat().st_size - HEADER_SIZE

    async def test_upload_cut_at_random_offset_continues_from_stored_bytes(self):
        """An upload cut at a random offset continues where the bytes on disk end, not
        from 0; the store knows the progress; the result is byte-identical."""
        a, b, alice, task_id, data = await self.offer(2 * MB + 777, seed=7)
        cut = random.Random(7).randrange(BLOCK, len(data) - BLOCK)
        first = await self.file_login(a, task_id, UPLOAD)
        cut_source = BlockSource(first, a, task_id, data, cut_after=cut)
        await first.closed
        await wait_until(lambda: self.upload_settled(task_id))
        durable = await self.stored_bytes(task_id)
        assert 0 <= durable <= cut_source.sent
        store = self.server.service("store")
        progress = None
        for _ in range(100):
            progress = await store.read(offline_files.progress, task_id)
            if progress == (durable, len(data)):
                break
            await sleep(0.02)
        assert progress == (durable, len(data))
        assert await self.server.service("file").progress(task_id) == (durable, len(data))
        second = await self.file_login(a, task_id, UPLOAD)
        source = BlockSource(second, a, task_id, data)
        assert (await source.finished()).message.state == B.CLIENT_FILE_DONE
        assert source.offsets[0] == durable
        assert source.sent == len(data) - durable
        downloader = await self.file_login(b, task_id, DOWNLOAD)
        assert await pull_file(downloader, b, task_id, len(data)) == data

    async def test_upload_cut_by_a_clean_close_loses_nothing_that_was_sent(self):
        """Every block that reached the server before the uploader left is kept."""
        a, b, alice, task_id, data = await self.offer(MB, seed=3)
        first = await self.file_login(a, task_id, UPLOAD)
        source = BlockSource(first, a, task_id, data, cut_after=10 * BLOCK, abort=False)
        await first.closed
        await wait_until(lambda: self.upload_settled(task_id))
        assert await self.stored_bytes(task_id) == source.sent
        second = await self.file_login(a, task_id, UPLOAD)
        resumed = BlockSource(second, a, task_id, data)
        await resumed.finished()
        assert resumed.offsets[0] == source.sent

    async def test_upload_resumes_after_a_restart(self):
        """An upload cut off, then a server restart: the upload continues and completes."""
        a, b, alice, task_id, data = await self.offer(MB + 5, seed=11)
        first = await self.file_login(a, task_id, UPLOAD)
        BlockSource(first, a, task_id, data, cut_after=MB // 2)
        await first.closed
        await wait_until(lambda: self.upload_settled(task_id))
        durable = await self.stored_bytes(task_id)
        await self.restart()
        second = await self.file_login(a, task_id, UPLOAD)
        source = BlockSource(second, a, task_id, data)
        assert (await source.finished()).message.state == B.CLIENT_FILE_DONE
        assert source.offsets[0] == durable
        downloader = await self.file_login(b, task_id, DOWNLOAD)
        assert await pull_file(downloader, b, task_id, len(data)) == data

    async def test_download_cut_and_resumed(self):
        """A download cut at a random offset continues from there on a new connection."""
        a, b, alice, task_id, data = await self.offer(MB + 999, seed=5)
        uploader = await self.file_login(a, task_id, UPLOAD)
        await BlockSource(uploader, a, task_id, data).finished()
        cut = random.Random(5).randrange(1, len(data))
        first = await self.file_login(b, task_id, DOWNLOAD)
        part = await pull_file(first, b, task_id, len(data), stop_after=cut)
        assert cut <= len(part) < len(data)
        second = await self.file_login(b, task_id, DOWNLOAD)
        rest = await pull_file(second, b, task_id, len(data), start=len(part))
        assert part + rest == data


class FileSafetyTests(FileTestCase):
    async def uploaded(self, size: int = 100 * KB):
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        await self.login("bob")  # told of the file, so he may log in to it
        data = payload(size)
        answer = await self.request_file(alice, b, size, OFFLINE)
        uploader = await self.file_login(a, answer.task_id, UPLOAD)
        await BlockSource(uploader, a, answer.task_id, data).finished()
        return a, b, c, alice, answer.task_id, data

    async def test_wrong_user_or_role_is_refused(self):
        """Only the task's sender and receiver, each in the matching role, may log in."""
        a, b, c, alice, task_id, data = await self.uploaded()
        for user_id, role in [
            (c, UPLOAD),
            (c, DOWNLOAD),
            (b, UPLOAD),
            (a, DOWNLOAD),
            (a, SENDER),
            (b, RECEIVER),
        ]:
            await self.assert_refused(user_id, task_id, role)
        online = await self.request_file(alice, b, 10, OFFLINE)
        await self.login("bob")
        online = await self.request_file(alice, b, 10, ONLINE)
        assert online.trans_mode == ONLINE
        for user_id, role in [(b, SENDER), (a, RECEIVER), (a, UPLOAD), (c, RECEIVER)]:
            await self.assert_refused(user_id, online.task_id, role)
        await self.file_login(a, online.task_id, SENDER)
        await self.assert_refused(a, online.task_id, SENDER)  # a second sender
        await self.assert_refused(b, str(uuid.uuid4()), DOWNLOAD)
        await self.assert_refused(b, "../../../etc/passwd", DOWNLOAD)

    async def test_download_before_the_upload_finished_is_refused(self):
        """A half-uploaded file cannot be downloaded."""
        await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        answer = await self.request_file(alice, b, MB, OFFLINE)
        await self.assert_refused(b, answer.task_id, DOWNLOAD)

    async def test_bad_download_offsets_are_rejected(self):
        """Pulls past the end or of no bytes get an error answer and the connection closes."""
        a, b, c, alice, task_id, data = await self.uploaded()
        for offset, size in [(len(data), 1), (len(data) - 10, 11), (0, 0), (0, 10 * MB)]:
            downloader = await self.file_login(b, task_id, DOWNLOAD)
            answer = await downloader.request(
                B.CID_FILE_PULL_DATA_REQ,
                File_pb2.IMFilePullDataReq(
                    task_id=task_id, user_id=b, trans_mode=OFFLINE, offset=offset, data_size=size
                ),
            )
            assert answer.message.result_code != 0, (offset, size)
            assert answer.message.file_data == b""
            assert await closed_within(downloader, 3)

    async def test_pulls_with_a_bad_or_foreign_task_id_leave_the_block_path(self):
        """A downloader's pull whose task id is not UTF-8 gets result 1 and the
        connection serves on (the pull is no block of its task); a pull naming another
        task closes it. Pulls of the task in between are answered with its bytes."""
        a, b, c, alice, task_id, data = await self.uploaded()
        downloader = await self.file_login(b, task_id, DOWNLOAD)

        def pull(task: str, offset: int, size: int) -> File_pb2.IMFilePullDataReq:
            return File_pb2.IMFilePullDataReq(
                task_id=task, user_id=b, trans_mode=OFFLINE, offset=offset, data_size=size
            )

        body = pull(MARK, 0, 10).SerializeToString().replace(MARK.encode(), INVALID)
        refused = await downloader.request(B.CID_FILE_PULL_DATA_REQ, body)
        assert (refused.message.result_code, refused.message.task_id) == (1, "")
        answer = await downloader.request(B.CID_FILE_PULL_DATA_REQ, pull(task_id, 5, 10))
        assert (answer.message.result_code, answer.message.offset) == (0, 5)
        assert answer.message.file_data == data[5:15]
        downloader.send(B.CID_FILE_PULL_DATA_REQ, pull(str(uuid.uuid4()), 0, 10))
        assert await closed_within(downloader, 3)

    async def test_upload_block_at_the_wrong_offset_closes_the_uploader(self):
        """A block that is not the one asked for is not stored and ends the connection."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        answer = await self.request_file(alice, b, MB, OFFLINE)
        uploader = await self.file_login(a, answer.task_id, UPLOAD)
        pull = (await next_pdu(uploader, B.CID_FILE_PULL_DATA_REQ)).message
        assert (pull.offset, pull.data_size) == (0, BLOCK)
        uploader.send(
            B.CID_FILE_PULL_DATA_RSP,
            File_pb2.IMFilePullDataRsp(
                result_code=0, task_id=answer.task_id, user_id=a, offset=BLOCK,
                file_data=b"x" * BLOCK,
            ),
        )  # fmt: skip
        assert await closed_within(uploader, 3)
        path = self.offline_files.path_for(answer.task_id)
        assert path.stat().st_size == HEADER_SIZE

    async def test_bad_online_pulls_and_unasked_blocks_are_rejected(self):
        """Online: a pull past the end is refused; a block nobody asked for closes the
        sender."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        await self.login("bob")
        answer = await self.request_file(alice, b, 1000, ONLINE)
        sender = await self.file_login(a, answer.task_id, SENDER)
        receiver = await self.file_login(b, answer.task_id, RECEIVER)
        rejected = await receiver.request(
            B.CID_FILE_PULL_DATA_REQ,
            File_pb2.IMFilePullDataReq(
                task_id=answer.task_id, user_id=b, trans_mode=ONLINE, offset=990, data_size=20
            ),
        )
        assert rejected.message.result_code != 0
        assert await closed_within(receiver, 3)
        assert await closed_within(sender, 3)

        answer = await self.request_file(alice, b, 1000, ONLINE)
        sender = await self.file_login(a, answer.task_id, SENDER)
        await self.file_login(b, answer.task_id, RECEIVER)
        sender.send(
            B.CID_FILE_PULL_DATA_RSP,
            File_pb2.IMFilePullDataRsp(
                result_code=0, task_id=answer.task_id, user_id=a, offset=0, file_data=b"x"
            ),
        )
        assert await closed_within(sender, 3)

    async def test_quota_on_file_size_and_free_disk(self):
        """Too big a file, or too little disk left: result 1 at once, nothing on disk."""
        await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        transfers = self.server.service("file").transfers
        transfers.limits = dataclasses.replace(transfers.limits, max_file_size=MB)
        answer = await self.request_file(alice, b, MB + 1, OFFLINE)
        assert (answer.result_code, answer.task_id) == (1, "")
        transfers.limits = dataclasses.replace(transfers.limits, min_free_disk=2**62)
        answer = await self.request_file(alice, b, 10, OFFLINE)
        assert (answer.result_code, answer.task_id) == (1, "")
        assert not list(self.offline_files.root.glob("*/*"))


class OfflineRecordTests(FileTestCase):
    async def test_has_offline_lists_only_offered_files(self):
        """Uploads in progress, or finished but not yet offered, are not listed; an
        add-offline by someone else's account is ignored."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        await self.add_user("carol")
        alice = await self.login("alice")
        carol = await self.login("carol")
        bob = await self.login("bob")
        pending = await self.request_file(alice, b, MB, OFFLINE)
        finished = await self.request_file(alice, b, 10, OFFLINE)
        uploader = await self.file_login(a, finished.task_id, UPLOAD)
        await BlockSource(uploader, a, finished.task_id, b"0123456789").finished()
        carol.protocol.send(
            B.CID_FILE_ADD_OFFLINE_REQ,
            File_pb2.IMFileAddOfflineReq(
                from_user_id=a, to_user_id=b, task_id=finished.task_id,
                file_name="f.bin", file_size=10,
            ),
        )  # fmt: skip
        assert (await self.has_offline(bob)).offline_file_list == []
        alice.protocol.send(
            B.CID_FILE_ADD_OFFLINE_REQ,
            File_pb2.IMFileAddOfflineReq(
                from_user_id=a, to_user_id=b, task_id=finished.task_id,
                file_name="f.bin", file_size=10,
            ),
        )  # fmt: skip
        await next_pdu(bob.protocol, B.CID_FILE_NOTIFY)  # the offer of "pending"
        await next_pdu(bob.protocol, B.CID_FILE_NOTIFY)  # the offer of "finished"
        notify = (await next_pdu(bob.protocol, B.CID_FILE_NOTIFY)).message
        assert (notify.task_id, notify.offline_ready) == (finished.task_id, 1)
        listed = await self.has_offline(bob)
        assert [f.task_id for f in listed.offline_file_list] == [finished.task_id]
        assert [(x.ip, x.port) for x in listed.ip_addr_list] == [("127.0.0.1", self.file_port)]
        assert pending.task_id not in [f.task_id for f in listed.offline_file_list]

    async def test_sweep_deletes_withdrawn_cancelled_and_expired_files(self):
        """The sweep removes files the receiver withdrew, the uploader cancelled, or that
        outlived the offline TTL, from disk and from the store; others stay. A withdrawn
        file cannot be downloaded any more."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        tasks = {}
        for name in ("withdrawn", "expired", "kept"):
            answer = await self.request_file(alice, b, 10, OFFLINE, name=name)
            uploader = await self.file_login(a, answer.task_id, UPLOAD)
            await BlockSource(uploader, a, answer.task_id, b"0123456789").finished()
            alice.protocol.send(
                B.CID_FILE_ADD_OFFLINE_REQ,
                File_pb2.IMFileAddOfflineReq(
                    from_user_id=a, to_user_id=b, task_id=answer.task_id,
                    file_name=name, file_size=10,
                ),
            )  # fmt: skip
            tasks[name] = answer.task_id
        cancelled = await self.request_file(alice, b, MB, OFFLINE, name="cancelled")
        uploader = await self.file_login(a, cancelled.task_id, UPLOAD)
        send_state(uploader, B.CLIENT_FILE_CANCEL, cancelled.task_id, a)
        assert await closed_within(uploader, 3)
        tasks["cancelled"] = cancelled.task_id

        async def listed_count(count: int) -> None:
            for _ in range(100):
                if len((await self.has_offline(bob)).offline_file_list) == count:
                    return
                await sleep(0.02)
            raise AssertionError(f"never {count} files listed")

        await listed_count(3)
        bob.protocol.send(
            B.CID_FILE_DEL_OFFLINE_REQ,
            File_pb2.IMFileDelOfflineReq(from_user_id=a, to_user_id=b, task_id=tasks["withdrawn"]),
        )
        store = self.server.service("store")

        def age(txn, task_id):
            txn.execute("UPDATE offline_files SET updated = 1 WHERE task_id = ?", (task_id,))

        await store.write(age, tasks["expired"])
        await listed_count(2)
        _, refused = await self.file_attempt(b, tasks["withdrawn"], DOWNLOAD)
        assert refused.result_code == 1  # withdrawn: not downloadable even before the sweep
        for _ in range(100):
            row = await store.read(offline_files.get, tasks["cancelled"])
            if row.status == offline_files.DELETED:
                break
            await sleep(0.02)
        removed = await self.server.service("file").sweep()
        assert sorted(removed) == sorted(tasks[n] for n in ("withdrawn", "expired", "cancelled"))
        for name, task_id in tasks.items():
            exists = self.offline_files.path_for(task_id).exists()
            row = await store.read(offline_files.get, task_id)
            assert exists == (name == "kept"), name
            assert (row is not None) == (name == "kept"), name
        listed = await self.has_offline(bob)
        assert [f.task_id for f in listed.offline_file_list] == [tasks["kept"]]
