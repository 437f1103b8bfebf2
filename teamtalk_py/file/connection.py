"""The file service's connections: clients (port 8600) and msg nodes (port 8601).

``FileClientConnection`` frames and dispatches; it is the ``Peer`` the tasks send to. Its
one addition to ``PduProtocol`` is flow control in both directions: when its peer stops
reading, the task hears of it (a downloader's pump stops, an online sender is held), and a
task may *hold* this connection's input (stop reading from the socket) for as long as it
needs, whatever the connection's own output state.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.message import DecodeError
from twisted.python.failure import Failure

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2, Server_pb2
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader
from teamtalk_py.wire import PduFactory, PduProtocol, Request
from teamtalk_py.wire.link import InboundLinkFactory, InboundLinkProtocol

if TYPE_CHECKING:
    from teamtalk_py.file.tasks import Task
    from teamtalk_py.file.transfers import FileTransfers


SOCKET_BUFFER = 128 * 1024

#: The commands of a transfer's blocks, and the message each carries.
_BLOCK_MESSAGES: dict[int, type[File_pb2.IMFilePullDataReq | File_pb2.IMFilePullDataRsp]] = {
    B.CID_FILE_PULL_DATA_REQ: File_pb2.IMFilePullDataReq,
    B.CID_FILE_PULL_DATA_RSP: File_pb2.IMFilePullDataRsp,
}


class FileClientConnection(PduProtocol):
    """One client connection; it serves exactly one task once logged in."""

    factory: FileClientFactory
    #: Seconds without a byte before the sweep closes us (wire.md §7).
    idle_timeout = 120.0
    #: The reference has no login deadline; a minute is generous for any client.
    login_deadline = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.user_id = 0
        self.role = 0
        self.task: Task | None = None

    @property
    def transfers(self) -> FileTransfers:
        return self.factory.transfers

    def connectionMade(self) -> None:
        super().connectionMade()
        # The reference gives file clients 128 KiB socket buffers (commands.md §2.5.1).
        get_handle = getattr(self.transport, "getHandle", None)
        sock = get_handle() if get_handle is not None else None
        if isinstance(sock, socket.socket):
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                except OSError:
                    pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closing = True
        super().connectionLost(reason)
        self.transfers.peer_lost(self)

    def dataReceived(self, data: bytes) -> None:
        self.factory.bytes_in += len(data)
        super().dataReceived(data)

    def pduReceived(self, header: PduHeader, pdu: bytes, more: bool = False) -> None:
        """A pull or a block of this connection's task goes straight to the transfer.

        With one pull in flight every block is a round trip through here, and the
        general ``dispatch`` (table look-up, log peer, string checks) was a fifth of the
        server's Python work per block. Its checks still hold: the body decodes whole
        (proto2 required fields), and a task id equal to the task's own is valid UTF-8
        within ``TASK_ID_CHARS``. Anything else (not logged in, no task, another task
        id, a bad body) takes ``dispatch`` and gets its answers and log lines.
        """
        cls = _BLOCK_MESSAGES.get(header.command_id)
        task = self.task
        if cls is not None and task is not None and self.logged_in:
            message = cls()
            try:
                # A view of the body, as decode_body does (protobuf takes any buffer).
                message.ParseFromString(memoryview(pdu)[HEADER_SIZE:])  # type: ignore[arg-type]
            except DecodeError:
                pass
            else:
                if message.task_id == task.task_id and message.IsInitialized():
                    request = Request(header, pdu, message, more)
                    if cls is File_pb2.IMFilePullDataReq:
                        self.transfers.pull_request(self, request)
                    else:
                        self.transfers.pull_response(self, request)
                    return
        super().pduReceived(header, pdu, more)

    def send_raw(self, pdu: bytes) -> None:
        if not self.closing and self.transport is not None:
            self.factory.bytes_out += len(pdu)
        super().send_raw(pdu)

    def send_parts(self, parts: Sequence[bytes | memoryview], now: bool = True) -> None:
        if not self.closing and self.transport is not None:
            self.factory.bytes_out += sum(map(len, parts))
        super().send_parts(parts, now)

    # -- flow control (hold_input / release_input come from PduProtocol) -----------------

    def output_paused(self) -> None:
        self.transfers.output_paused(self)

    def output_resumed(self) -> None:
        self.transfers.output_resumed(self)


class FileClientFactory(PduFactory):
    protocol = FileClientConnection

    def __init__(self, transfers: FileTransfers, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transfers = transfers
        #: Bytes read from and written to client sockets (metrics).
        self.bytes_in = 0
        self.bytes_out = 0


class FileInternalConnection(InboundLinkProtocol):
    """A msg node's link to us: trusted once it proved the cluster secret (``link_auth``);
    silent for 30 s means dead (wire.md §7)."""

    factory: FileInternalFactory


class NodeRequests(Protocol):
    """What msg nodes ask of the file service over their links (``FileService``)."""

    def client_addresses(self) -> list[tuple[str, int]]: ...

    async def transfer_request(
        self, request: Server_pb2.IMFileTransferReq
    ) -> Server_pb2.IMFileTransferRsp: ...

    async def permit(self, task_id: str, user_id: int, addresses: list[str]) -> None: ...


class FileInternalFactory(InboundLinkFactory):
    protocol = FileInternalConnection

    def __init__(self, service: NodeRequests, **kwargs: Any) -> None:
        super().__init__(purpose="file", **kwargs)
        self.service = service


__all__ = [
    "FileClientConnection",
    "FileClientFactory",
    "FileInternalConnection",
    "FileInternalFactory",
]
