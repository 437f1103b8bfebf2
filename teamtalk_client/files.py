"""The client side of TeamTalk file transfer, for tests and the benchmark.

Built on ``teamtalk_client`` (its own framing, none of the server's code): log in to a
file service by role (``file_login``), answer the server's pull requests with blocks of
a file (``BlockSource``: an offline uploader or an online sender), and pull a file with
several requests in flight (``pull_file``: an offline downloader or an online receiver).
Cutting a transfer at a chosen byte count is built in, to test resuming.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost

from teamtalk_client.pdu import Pdu
from teamtalk_client.protocol import TeamTalkClientProtocol, connect
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2

BLOCK_SIZE = 32768

__all__ = [
    "BLOCK_SIZE",
    "BlockSource",
    "FileLoginRefused",
    "TransferFailed",
    "file_login",
    "pull_file",
    "send_state",
]


class FileLoginRefused(Exception):
    """The file service answered the login with a non-zero result code."""


class TransferFailed(Exception):
    """A block came back with an error, at the wrong offset or with the wrong size."""


async def file_login(
    reactor: Any,
    host: str,
    port: int,
    user_id: int,
    task_id: str,
    role: B.ClientFileRole.ValueType,
    *,
    timeout: float = 10.0,
    **options: Any,
) -> TeamTalkClientProtocol:
    """A new connection to a file service, logged in to ``task_id`` as ``role``; raises
    ``FileLoginRefused`` (after the server closes the connection) when it says no."""
    protocol = await connect(reactor, host, port, **options)
    answer = await protocol.request(
        B.CID_FILE_LOGIN_REQ,
        File_pb2.IMFileLoginReq(user_id=user_id, task_id=task_id, file_role=role),
        timeout=timeout,
    )
    if answer.message.result_code != 0:
        raise FileLoginRefused(f"file login of {user_id} to {task_id} refused")
    return protocol


def send_state(
    protocol: TeamTalkClientProtocol, state: B.ClientFileState.ValueType, task_id: str, user_id: int
) -> int:
    """Send ``CID_FILE_STATE`` (cancel, refuse, done); the server closes us afterwards."""
    return protocol.send(
        B.CID_FILE_STATE, File_pb2.IMFileState(state=state, task_id=task_id, user_id=user_id)
    )


class BlockSource:
    """Answers every ``CID_FILE_PULL_DATA_REQ`` on ``protocol`` with that slice of ``data``.

    ``offsets`` lists the requested offsets in order; with ``cut_after`` the connection is
    cut once that many bytes were sent (and later requests are ignored): aborted, which
    drops whatever the socket had not sent yet, or with ``abort=False`` half-closed, so
    everything sent so far reaches the server (which then closes the connection).
    """

    def __init__(
        self,
        protocol: TeamTalkClientProtocol,
        user_id: int,
        task_id: str,
        data: bytes,
        *,
        cut_after: int | None = None,
        abort: bool = True,
    ) -> None:
        self.protocol = protocol
        self.abort = abort
        self.user_id = user_id
        self.task_id = task_id
        self.data = data
        self.cut_after = cut_after
        self.sent = 0
        self.offsets: list[int] = []
        self.cut = False
        self._arm()

    def _arm(self) -> None:
        if self.cut:
            return
        d = self.protocol.wait_for(B.CID_FILE_PULL_DATA_REQ, timeout=None)
        d.addCallback(self._pull)
        d.addErrback(lambda f: f.trap(ConnectionLost, CancelledError))

    def _pull(self, pdu: Pdu) -> None:
        request = pdu.message
        self.offsets.append(request.offset)
        block = self.data[request.offset : request.offset + request.data_size]
        self.protocol.send(
            B.CID_FILE_PULL_DATA_RSP,
            File_pb2.IMFilePullDataRsp(
                result_code=0,
                task_id=self.task_id,
                user_id=self.user_id,
                offset=request.offset,
                file_data=block,
            ),
            seq=pdu.seq_num or None,
        )
        self.sent += len(block)
        if self.cut_after is not None and self.sent >= self.cut_after:
            self.cut = True
            if self.abort:
                self.protocol.transport.abortConnection()
            else:
                # Half-close: a full close with requests still arriving would answer
                # them with a reset, which can destroy blocks the server has not read.
                self.protocol.transport.loseWriteConnection()
            return
        self._arm()

    def finished(self, timeout: float = 30.0) -> Deferred[Pdu]:
        """Fires with the server's ``CID_FILE_STATE`` (DONE when the upload is stored)."""
        return self.protocol.wait_for(B.CID_FILE_STATE, timeout=timeout)


async def pull_file(
    protocol: TeamTalkClientProtocol,
    user_id: int,
    task_id: str,
    file_size: int,
    *,
    trans_mode: B.TransferFileType.ValueType = B.FILE_TYPE_OFFLINE,
    start: int = 0,
    window: int = 8,
    block: int = BLOCK_SIZE,
    stop_after: int | None = None,
    timeout: float = 10.0,
) -> bytes:
    """Pull ``[start, file_size)`` with ``window`` requests in flight and return the bytes.
    With ``stop_after`` the connection is aborted once that many bytes arrived, and what
    arrived is returned (for resume tests)."""
    received = bytearray()
    in_flight: deque[tuple[int, int, Deferred[Pdu]]] = deque()
    next_offset = start

    def abandon() -> None:
        for _, _, d in in_flight:
            d.addErrback(lambda f: f.trap(ConnectionLost, TimeoutError))
        in_flight.clear()

    try:
        while next_offset < file_size or in_flight:
            while len(in_flight) < window and next_offset < file_size:
                size = min(block, file_size - next_offset)
                d = protocol.request(
                    B.CID_FILE_PULL_DATA_REQ,
                    File_pb2.IMFilePullDataReq(
                        task_id=task_id,
                        user_id=user_id,
                        trans_mode=trans_mode,
                        offset=next_offset,
                        data_size=size,
                    ),
                    timeout=timeout,
                )
                in_flight.append((next_offset, size, d))
                next_offset += size
            offset, size, d = in_flight.popleft()
            answer = (await d).message
            if answer.result_code != 0:
                raise TransferFailed(f"block at {offset}: result {answer.result_code}")
            if answer.offset != offset or len(answer.file_data) != size:
                raise TransferFailed(
                    f"asked {size} bytes at {offset}, got {len(answer.file_data)} at "
                    f"{answer.offset}"
                )
            received += answer.file_data
            if stop_after is not None and len(received) >= stop_after:
                abandon()
                protocol.transport.abortConnection()
                break
    finally:
        abandon()
    return bytes(received)
