"""What a msg node adds to a message it relays to the others: ``attach_data`` carrying the
message's origin (``store/origins.py``, for ``catch_up.py``) and, for a group message,
the group version it was stored at (``groups.py``). The receiving node takes it off
before its clients see the message.
"""

from __future__ import annotations

import struct

from teamtalk_py.pb.IM import Message_pb2

# attach_data of a message relayed between our nodes: magic, group version (0: none), origin.
_TAG = struct.Struct(">4sIQ")
_TAG_MAGIC = b"TTo1"
# The earlier form (group version only), still read from nodes not yet upgraded.
_VERSION_TAG = struct.Struct(">4sI")
_VERSION_MAGIC = b"TTgv"


def relay_tag(origin: int, version: int | None = None) -> bytes:
    return _TAG.pack(_TAG_MAGIC, version or 0, origin)


def take_tag(message: Message_pb2.IMMsgData) -> tuple[int, int | None]:
    """(origin, group version) of a relayed message, removed from it; 0 / None if absent."""
    if not message.HasField("attach_data"):
        return 0, None
    blob = message.attach_data
    message.ClearField("attach_data")
    if len(blob) == _TAG.size:
        magic, version, origin = _TAG.unpack(blob)
        if magic == _TAG_MAGIC:
            return origin, version or None
    elif len(blob) == _VERSION_TAG.size:
        magic, version = _VERSION_TAG.unpack(blob)
        if magic == _VERSION_MAGIC:
            return 0, version
    return 0, None
