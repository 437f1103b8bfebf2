"""``CID_FILE_PULL_DATA_RSP`` framed around a block's bytes without copying them.

A downloader pulls one block at a time (the clients' way), so each answer's latency is
the transfer rate, and building the answer through protobuf costs three copies of the
block (the message's field, its serialisation, the PDU's concatenation). Protobuf writes
fields in number order and ``file_data`` is the last field (5) of ``IMFilePullDataRsp``,
so an answer is always: the 16-byte PDU header, a short prefix (result code, task id,
user id, offset, and the block's length), then the block itself. ``BlockFramer`` builds
the header and prefix; the block goes out as a ``memoryview`` beside them (one
``sendmsg``, ``PduProtocol.send_parts``). ``tests/file/test_file_blocks.py`` checks the
bytes against protobuf's own serialisation.
"""

from __future__ import annotations

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol import registry
from teamtalk_py.protocol.header import HEADER, HEADER_SIZE, SERVER_VERSION

_SERVICE = registry.service_of(B.CID_FILE_PULL_DATA_RSP)
_COMMAND = B.CID_FILE_PULL_DATA_RSP


def varint(value: int) -> bytes:
    """``value`` (0 .. 2**64-1) as a protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class BlockFramer:
    """Answers carrying blocks of one task: ``head(...) + block`` is the whole PDU."""

    __slots__ = ("_task_field", "_user_id", "_user_field", "_size", "_size_field")

    def __init__(self, task_id: str) -> None:
        task = task_id.encode("utf-8")
        # result_code = 0 (field 1, varint), task_id (field 2, length-delimited).
        self._task_field = b"\x08\x00\x12" + varint(len(task)) + task
        # The fields up to user_id (field 3) for the last user answered: a download's
        # pulls all carry the same one.
        self._user_id = -1
        self._user_field = b""
        # The same for the block's length (field 5's tag and length): blocks are one size.
        self._size = -1
        self._size_field = b""

    def head(self, seq: int, user_id: int, offset: int, size: int) -> bytes:
        """PDU header and body up to the first byte of a ``size``-byte block at
        ``offset``, answering the pull that carried ``seq``."""
        if user_id != self._user_id:
            self._user_field = self._task_field + b"\x18" + varint(user_id)
            self._user_id = user_id
        if size != self._size:
            self._size_field = b"\x2a" + varint(size)  # file_data (field 5)
            self._size = size
        # offset is field 4.
        prefix = self._user_field + b"\x20" + varint(offset) + self._size_field
        length = HEADER_SIZE + len(prefix) + size
        return HEADER.pack(length, SERVER_VERSION, 0, _SERVICE, _COMMAND, seq, 0) + prefix
