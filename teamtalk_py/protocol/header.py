"""The 16-byte TeamTalk PDU header (wire.md §2).

Every packet on every TeamTalk TCP link is this header followed by a protobuf body. All
fields are unsigned big-endian; ``length`` counts the whole PDU, header included.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct(">IHHHHHH")
HEADER_SIZE = HEADER.size  # 16

#: What packets the server builds itself carry in ``version`` (wire.md §2.1).
SERVER_VERSION = 1


class PduHeader(NamedTuple):
    """A decoded header. ``length`` is the whole PDU length as announced by the peer.

    A NamedTuple rather than a dataclass: one is built for every PDU received, and a
    tuple is the cheapest immutable record Python has.
    """

    length: int
    version: int
    flag: int
    service_id: int
    command_id: int
    seq_num: int
    reserved: int

    @classmethod
    def unpack_from(cls, buffer: bytes | bytearray | memoryview, offset: int = 0) -> PduHeader:
        return cls._make(HEADER.unpack_from(buffer, offset))

    def pack(self) -> bytes:
        return HEADER.pack(*self)


def pack_pdu(service_id: int, command_id: int, body: bytes, seq_num: int = 0) -> bytes:
    """Build a server-originated PDU: version 1, flag and reserved 0 (wire.md §2.1)."""
    return (
        HEADER.pack(HEADER_SIZE + len(body), SERVER_VERSION, 0, service_id, command_id, seq_num, 0)
        + body
    )


def with_seq(pdu: bytes, seq_num: int) -> bytes:
    """Return ``pdu`` with its ``seq_num`` replaced, everything else byte for byte."""
    return pdu[:12] + struct.pack(">H", seq_num) + pdu[14:]
