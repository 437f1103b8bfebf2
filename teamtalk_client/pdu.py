"""PDUs as the client sees them: the 16-byte header, `Pdu`, command names and which
command answers which request.

Written from wire.md section 2 and commands.md part 1, independently of the server's codec
(`teamtalk_py.protocol.header`): a bug shared by both sides would be invisible to every
test.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from google.protobuf.message import DecodeError, Message

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.protocol.registry import message_class

__all__ = [
    "ANSWER_CID",
    "DEFAULT_MAX_PDU_SIZE",
    "HEADER_SIZE",
    "Pdu",
    "answer_cid",
    "command_name",
    "encode_pdu",
    "pack_header",
    "unpack_header",
]

# --------------------------------------------------------------------------------------
# Header and PDUs (wire.md section 2)
# --------------------------------------------------------------------------------------

#: length u32, version u16, flag u16, service_id u16, command_id u16, seq_num u16,
#: reserved u16; all big-endian.
_HEADER = struct.Struct(">IHHHHHH")
HEADER_SIZE = _HEADER.size
assert HEADER_SIZE == 16

#: Upper bound on an incoming PDU. The protocol has none; a client that believed any
#: announced length would wait forever on a corrupt stream instead of failing the test.
DEFAULT_MAX_PDU_SIZE = 64 * 1024 * 1024


def pack_header(
    length: int,
    version: int,
    flag: int,
    service_id: int,
    command_id: int,
    seq_num: int,
    reserved: int,
) -> bytes:
    """Return the 16-byte header; `length` counts the whole PDU, header included."""
    return _HEADER.pack(length, version, flag, service_id, command_id, seq_num, reserved)


def unpack_header(
    data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[int, int, int, int, int, int, int]:
    """Parse the 16 bytes at `offset` into (length, version, flag, service_id,
    command_id, seq_num, reserved)."""
    return _HEADER.unpack_from(data, offset)


def encode_pdu(
    command_id: int,
    body: bytes = b"",
    *,
    seq_num: int = 0,
    service_id: int | None = None,
    version: int = 1,
    flag: int = 0,
    reserved: int = 0,
) -> bytes:
    """Build one PDU. The service id defaults to the command id's high byte, which the
    protocol guarantees equals the service id of every command (messages.md)."""
    if service_id is None:
        service_id = command_id >> 8
    header = pack_header(
        HEADER_SIZE + len(body), version, flag, service_id, command_id, seq_num, reserved
    )
    return header + body


def _build_command_names() -> dict[int, str]:
    names: dict[int, str] = {}
    enums = [*B.DESCRIPTOR.enum_types_by_name.values(), X.ExtCmdID.DESCRIPTOR]
    for enum in enums:
        if enum.name.endswith("CmdID"):
            for value in enum.values:
                names.setdefault(value.number, value.name)
    return names


_COMMAND_NAMES = _build_command_names()


def command_name(command_id: int) -> str:
    """The protocol name of a command id, for error messages (`0x....` if unknown)."""
    return _COMMAND_NAMES.get(command_id, f"0x{command_id:04x}")


def _decode_body(command_id: int, body: bytes, *, partial: bool) -> Message:
    message = message_class(command_id)()  # KeyError for commands TeamTalk lacks
    if partial:
        message.MergeFromString(body)
    else:
        message.ParseFromString(body)
        if not message.IsInitialized():
            # Some runtimes accept a missing required field; the servers do not, and a
            # test should notice a server that sends such a message.
            raise DecodeError(
                f"{command_name(command_id)}: missing required fields "
                f"{message.FindInitializationErrors()}"  # type: ignore[attr-defined]
            )
    return message


@dataclass(frozen=True)
class Pdu:
    """One received (or built) PDU: the header fields as they were on the wire, the raw
    body, and the body decoded on first access of `message`."""

    command_id: int
    seq_num: int = 0
    body: bytes = b""
    service_id: int | None = None
    version: int = 1
    flag: int = 0
    reserved: int = 0
    #: The `length` field as announced on the wire (None for PDUs built locally).
    announced_length: int | None = field(default=None, compare=False)

    @property
    def length(self) -> int:
        """The size of the whole PDU, header included."""
        return HEADER_SIZE + len(self.body)

    @cached_property
    def message(self) -> Any:
        """The body parsed strictly (required fields must be present) with the message
        class the registry names for `command_id`; raises `DecodeError` otherwise."""
        return _decode_body(self.command_id, self.body, partial=False)

    def decode_partial(self) -> Any:
        """The body parsed without the required-field check, for inspecting packets the
        original servers send with required fields unset."""
        return _decode_body(self.command_id, self.body, partial=True)

    def to_bytes(self) -> bytes:
        """Encode this PDU back to wire bytes."""
        return encode_pdu(
            self.command_id,
            self.body,
            seq_num=self.seq_num,
            service_id=self.service_id,
            version=self.version,
            flag=self.flag,
            reserved=self.reserved,
        )


# --------------------------------------------------------------------------------------
# Request -> answer command table (commands.md part 1)
# --------------------------------------------------------------------------------------

#: The command that answers each request. Written out in full rather than computed as
#: "cid + 1": several commands have no answer at all (read acks, offline-file records, P2P
#: commands) and "+ 1" would silently wait for an unrelated notification instead.
ANSWER_CID: Mapping[int, int] = {
    # SID_LOGIN
    B.CID_LOGIN_REQ_MSGSERVER: B.CID_LOGIN_RES_MSGSERVER,
    B.CID_LOGIN_REQ_USERLOGIN: B.CID_LOGIN_RES_USERLOGIN,
    B.CID_LOGIN_REQ_LOGINOUT: B.CID_LOGIN_RES_LOGINOUT,
    B.CID_LOGIN_REQ_DEVICETOKEN: B.CID_LOGIN_RES_DEVICETOKEN,
    B.CID_LOGIN_REQ_KICKPCCLIENT: B.CID_LOGIN_RES_KICKPCCLIENT,
    B.CID_LOGIN_REQ_PUSH_SHIELD: B.CID_LOGIN_RES_PUSH_SHIELD,
    B.CID_LOGIN_REQ_QUERY_PUSH_SHIELD: B.CID_LOGIN_RES_QUERY_PUSH_SHIELD,
    # SID_BUDDY_LIST
    B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST: (
        B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE
    ),
    B.CID_BUDDY_LIST_USER_INFO_REQUEST: B.CID_BUDDY_LIST_USER_INFO_RESPONSE,
    B.CID_BUDDY_LIST_REMOVE_SESSION_REQ: B.CID_BUDDY_LIST_REMOVE_SESSION_RES,
    B.CID_BUDDY_LIST_ALL_USER_REQUEST: B.CID_BUDDY_LIST_ALL_USER_RESPONSE,
    B.CID_BUDDY_LIST_USERS_STATUS_REQUEST: B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE,
    B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST: B.CID_BUDDY_LIST_CHANGE_AVATAR_RESPONSE,
    B.CID_BUDDY_LIST_DEPARTMENT_REQUEST: B.CID_BUDDY_LIST_DEPARTMENT_RESPONSE,
    B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST: B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE,
    # SID_MSG
    B.CID_MSG_DATA: B.CID_MSG_DATA_ACK,
    B.CID_MSG_TIME_REQUEST: B.CID_MSG_TIME_RESPONSE,
    B.CID_MSG_UNREAD_CNT_REQUEST: B.CID_MSG_UNREAD_CNT_RESPONSE,
    B.CID_MSG_LIST_REQUEST: B.CID_MSG_LIST_RESPONSE,
    B.CID_MSG_GET_LATEST_MSG_ID_REQ: B.CID_MSG_GET_LATEST_MSG_ID_RSP,
    B.CID_MSG_GET_BY_MSG_ID_REQ: B.CID_MSG_GET_BY_MSG_ID_RES,
    # SID_GROUP
    B.CID_GROUP_NORMAL_LIST_REQUEST: B.CID_GROUP_NORMAL_LIST_RESPONSE,
    B.CID_GROUP_INFO_REQUEST: B.CID_GROUP_INFO_RESPONSE,
    B.CID_GROUP_CREATE_REQUEST: B.CID_GROUP_CREATE_RESPONSE,
    B.CID_GROUP_CHANGE_MEMBER_REQUEST: B.CID_GROUP_CHANGE_MEMBER_RESPONSE,
    B.CID_GROUP_SHIELD_GROUP_REQUEST: B.CID_GROUP_SHIELD_GROUP_RESPONSE,
    # SID_FILE
    B.CID_FILE_LOGIN_REQ: B.CID_FILE_LOGIN_RES,
    B.CID_FILE_PULL_DATA_REQ: B.CID_FILE_PULL_DATA_RSP,
    B.CID_FILE_REQUEST: B.CID_FILE_RESPONSE,
    B.CID_FILE_HAS_OFFLINE_REQ: B.CID_FILE_HAS_OFFLINE_RES,
    # SID_OTHER: the heartbeat is answered by its own echo; the rest are server links.
    B.CID_OTHER_HEARTBEAT: B.CID_OTHER_HEARTBEAT,
    B.CID_OTHER_VALIDATE_REQ: B.CID_OTHER_VALIDATE_RSP,
    B.CID_OTHER_GET_DEVICE_TOKEN_REQ: B.CID_OTHER_GET_DEVICE_TOKEN_RSP,
    B.CID_OTHER_PUSH_TO_USER_REQ: B.CID_OTHER_PUSH_TO_USER_RSP,
    B.CID_OTHER_GET_SHIELD_REQ: B.CID_OTHER_GET_SHIELD_RSP,
    B.CID_OTHER_FILE_TRANSFER_REQ: B.CID_OTHER_FILE_TRANSFER_RSP,
    B.CID_OTHER_FILE_SERVER_IP_REQ: B.CID_OTHER_FILE_SERVER_IP_RSP,
    # SID_EXTENSION (teamtalk_py's own, docs/EXTENSION.md)
    X.CID_EXT_HELLO_REQ: X.CID_EXT_HELLO_RSP,
    X.CID_EXT_USER_SEARCH_REQ: X.CID_EXT_USER_SEARCH_RSP,
    X.CID_EXT_FRIEND_REQUEST_REQ: X.CID_EXT_FRIEND_REQUEST_RSP,
    X.CID_EXT_FRIEND_REQUEST_LIST_REQ: X.CID_EXT_FRIEND_REQUEST_LIST_RSP,
    X.CID_EXT_FRIEND_ANSWER_REQ: X.CID_EXT_FRIEND_ANSWER_RSP,
    X.CID_EXT_FRIEND_REMOVE_REQ: X.CID_EXT_FRIEND_REMOVE_RSP,
    X.CID_EXT_FRIEND_LIST_REQ: X.CID_EXT_FRIEND_LIST_RSP,
    X.CID_EXT_ROOM_JOIN_REQ: X.CID_EXT_ROOM_JOIN_RSP,
    X.CID_EXT_ROOM_LEAVE_REQ: X.CID_EXT_ROOM_LEAVE_RSP,
    X.CID_EXT_ROOM_POST_REQ: X.CID_EXT_ROOM_POST_ACK,
}


def answer_cid(command_id: int) -> int:
    """The command that answers `command_id`; `ValueError` for commands without one."""
    try:
        return ANSWER_CID[command_id]
    except KeyError:
        raise ValueError(
            f"{command_name(command_id)} has no answer: use send(), or pass response_cid="
        ) from None
