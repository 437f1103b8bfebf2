"""The file service's state machine on fake transports and a fake clock: login order,
relaying with seqs, flow control, asking ahead, expiry."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from teamtalk_client import encode_pdu, unpack_header
from teamtalk_py.file.connection import FileClientConnection, FileClientFactory
from teamtalk_py.file.handlers import build_client_table
from teamtalk_py.file.storage import OfflineFileStore
from teamtalk_py.file.tasks import BLOCK_SIZE, State
from teamtalk_py.file.transfers import FileTransfers, Limits
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2
from teamtalk_py.protocol.registry import message_class
from tests.support import TestCase

ALICE, BOB = 11, 22


def sync_io(fn, *args, **kwargs) -> defer.Deferred:
    return defer.maybeDeferred(fn, *args, **kwargs)


def sent(transport: StringTransport) -> list[tuple[int, int, object]]:
    """(command id, seq, message) of every PDU written since the last call."""
    data, out = transport.value(), []
    transport.clear()
    while data:
        length, _, _, _, cid, seq, _ = unpack_header(data)
        message = message_class(cid)()
        message.ParseFromString(data[16:length])
        out.append((cid, seq, message))
        data = data[length:]
    return out


class FileTaskTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.transfers = FileTransfers(
            self.clock,
            OfflineFileStore(self.tmp_path()),
            sync_io,
            limits=Limits(min_free_disk=0, pulls_in_flight=4),
        )
        self.factory = FileClientFactory(
            self.transfers, clock=self.clock, table=build_client_table()
        )

    def connect(self) -> tuple[FileClientConnection, StringTransport]:
        conn = self.factory.buildProtocol(None)
        transport = StringTransport()
        conn.makeConnection(transport)
        return conn, transport

    def create(self, size: int, mode: int):
        return self.successResultOf(
            defer.ensureDeferred(self.transfers.create_task(ALICE, BOB, "f", size, mode))
        )

    def login(self, task, user_id: int, role: int, seq: int = 1):
        conn, transport = self.connect()
        conn.dataReceived(
            encode_pdu(
                B.CID_FILE_LOGIN_REQ,
                File_pb2.IMFileLoginReq(
                    user_id=user_id, task_id=task.task_id, file_role=role
                ).SerializeToString(),
                seq_num=seq,
            )
        )
        return conn, transport

    def test_online_login_order_and_peer_ready_goes_to_the_receiver(self):
        """Receiver first, then sender: both answered, and the receiver hears PEER_READY."""
        task = self.create(100, B.FILE_TYPE_ONLINE)
        receiver, r_out = self.login(task, BOB, B.CLIENT_REALTIME_RECVER, seq=5)
        assert task.state == State.WAITING_SENDER
        [(cid, seq, answer)] = sent(r_out)
        assert (cid, seq, answer.result_code) == (B.CID_FILE_LOGIN_RES, 5, 0)
        sender, s_out = self.login(task, ALICE, B.CLIENT_REALTIME_SENDER)
        assert task.state == State.WAITING_TRANSFER
        assert [c for c, _, _ in sent(s_out)] == [B.CID_FILE_LOGIN_RES]
        [(cid, seq, ready)] = sent(r_out)
        assert (cid, seq, ready.state, ready.user_id) == (
            B.CID_FILE_STATE,
            0,
            B.CLIENT_FILE_PEER_READY,
            ALICE,
        )
        _, again = self.login(task, ALICE, B.CLIENT_REALTIME_SENDER)
        assert sent(again)[0][2].result_code == 1

    def test_pipelined_online_pulls_get_their_own_seqs_back(self):
        """Blocks answered out of order still reach the receiver with their pull's seq."""
        task = self.create(100, B.FILE_TYPE_ONLINE)
        sender, s_out = self.login(task, ALICE, B.CLIENT_REALTIME_SENDER)
        receiver, r_out = self.login(task, BOB, B.CLIENT_REALTIME_RECVER)
        sent(s_out), sent(r_out)
        for seq, offset in ((7, 0), (9, 10)):
            receiver.dataReceived(
                encode_pdu(
                    B.CID_FILE_PULL_DATA_REQ,
                    File_pb2.IMFilePullDataReq(
                        task_id=task.task_id,
                        user_id=BOB,
                        trans_mode=B.FILE_TYPE_ONLINE,
                        offset=offset,
                        data_size=10,
                    ).SerializeToString(),
                    seq_num=seq,
                )
            )
        assert [(seq, m.offset) for _, seq, m in sent(s_out)] == [(7, 0), (9, 10)]
        for offset in (10, 0):
            sender.dataReceived(
                encode_pdu(
                    B.CID_FILE_PULL_DATA_RSP,
                    File_pb2.IMFilePullDataRsp(
                        result_code=0,
                        task_id=task.task_id,
                        user_id=ALICE,
                        offset=offset,
                        file_data=b"x" * 10,
                    ).SerializeToString(),
                    seq_num=1234,
                )
            )
        assert [(seq, m.offset) for _, seq, m in sent(r_out)] == [(9, 10), (7, 0)]

    def test_a_receiver_that_stops_reading_holds_the_sender(self):
        """While the receiver's socket is full we stop reading the sender's blocks."""
        task = self.create(100, B.FILE_TYPE_ONLINE)
        sender, s_out = self.login(task, ALICE, B.CLIENT_REALTIME_SENDER)
        receiver, _ = self.login(task, BOB, B.CLIENT_REALTIME_RECVER)
        receiver.pauseProducing()
        assert s_out.producerState == "paused"
        receiver.resumeProducing()
        assert s_out.producerState == "producing"

    def test_offline_upload_keeps_the_window_of_pulls_full(self):
        """The uploader is asked for ``pulls_in_flight`` blocks at once, and for one more
        as each block is stored."""
        task = self.create(10 * BLOCK_SIZE, B.FILE_TYPE_OFFLINE)
        uploader, out = self.login(task, ALICE, B.CLIENT_OFFLINE_UPLOAD)
        messages = sent(out)
        assert messages[0][0] == B.CID_FILE_LOGIN_RES
        assert [m.offset // BLOCK_SIZE for _, _, m in messages[1:]] == [0, 1, 2, 3]
        uploader.dataReceived(
            encode_pdu(
                B.CID_FILE_PULL_DATA_RSP,
                File_pb2.IMFilePullDataRsp(
                    result_code=0,
                    task_id=task.task_id,
                    user_id=ALICE,
                    offset=0,
                    file_data=bytes(BLOCK_SIZE),
                ).SerializeToString(),
            )
        )
        assert [m.offset // BLOCK_SIZE for _, _, m in sent(out)] == [4]
        assert task.stored == BLOCK_SIZE

    def test_empty_offline_upload_finishes_at_once(self):
        """A zero-byte offline file is done right after login (the reference hung)."""
        task = self.create(0, B.FILE_TYPE_OFFLINE)
        _, out = self.login(task, ALICE, B.CLIENT_OFFLINE_UPLOAD)
        cids = [(c, getattr(m, "state", None)) for c, _, m in sent(out)]
        assert cids == [(B.CID_FILE_LOGIN_RES, None), (B.CID_FILE_STATE, B.CLIENT_FILE_DONE)]
        assert out.disconnecting

    def test_idle_tasks_leave_memory_after_the_task_timeout(self):
        """Unused tasks go after ``task_timeout`` s; a task with a connection stays."""
        idle = self.create(10, B.FILE_TYPE_ONLINE)
        busy = self.create(10, B.FILE_TYPE_ONLINE)
        self.login(busy, ALICE, B.CLIENT_REALTIME_SENDER)
        self.clock.advance(59)
        assert self.transfers.expire_idle() == []
        self.clock.advance(2)
        assert self.transfers.expire_idle() == [idle]
        assert list(self.transfers.tasks) == [busy.task_id]
