"""teamtalk_py's opt-in extension of the TeamTalk protocol (``SID_EXTENSION``).

The extension's messages are in ``proto/IM.Extension.proto`` and documented in
``docs/EXTENSION.md``. A connection speaks it only after it said hello
(``CID_EXT_HELLO_REQ``), naming the features it wants; until then the server sends it
nothing of the extension, so TeamTalk's own clients see no difference. ``may_send`` is the
rule, and ``MsgConnection.send_raw`` is the one place that applies it to every packet.
"""

from __future__ import annotations

import struct

from teamtalk_py.pb.IM import Extension_pb2 as X

#: Feature names a client asks for in hello.
CONTACTS = "contacts"
ROOMS = "rooms"
FEATURES = (CONTACTS, ROOMS)

#: The extension's version, answered in hello.
VERSION = 1

#: Packets the server sends on its own (not answers): each needs its feature granted.
NOTIFY_FEATURE: dict[int, str] = {
    X.CID_EXT_FRIEND_REQUEST_NOTIFY: CONTACTS,
    X.CID_EXT_FRIEND_ANSWER_NOTIFY: CONTACTS,
    X.CID_EXT_FRIEND_REMOVED_NOTIFY: CONTACTS,
    X.CID_EXT_ROOM_POST_NOTIFY: ROOMS,
    X.CID_EXT_ROOM_REMOVED_NOTIFY: ROOMS,
}

#: Server-to-server commands (msg <-> route) start here; never sent to a client.
FIRST_SERVER_COMMAND = X.CID_EXT_USER_RELAY

_SERVICE_AND_COMMAND = struct.Struct(">HH")


def is_extension_pdu(pdu: bytes) -> bool:
    """Whether ``pdu``'s header names ``SID_EXTENSION`` (bytes 8-9 of the header)."""
    return pdu[9] == X.SID_EXTENSION and pdu[8] == 0


def may_send(features: frozenset[str] | None, pdu: bytes) -> bool:
    """Whether a client connection that opted in to ``features`` may receive ``pdu``.

    ``features`` is None for a connection that never said hello: it gets no extension
    packet at all. After hello it gets answers to its requests, and notifies of the
    features it was granted; never a server-to-server packet.
    """
    if not is_extension_pdu(pdu):
        return True
    if features is None:
        return False
    _, command_id = _SERVICE_AND_COMMAND.unpack_from(pdu, 8)
    if command_id >= FIRST_SERVER_COMMAND:
        return False
    feature = NOTIFY_FEATURE.get(command_id)
    return feature is None or feature in features
