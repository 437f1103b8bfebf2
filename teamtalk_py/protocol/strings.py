"""Every string field of a received PDU, checked once, where the body is decoded.

TeamTalk's ``.proto`` files are proto2, whose runtime does not check that a ``string``
field is UTF-8: the Python runtime (upb) hands a handler ``bytes`` instead of ``str`` for
one that is not, and whatever used it next (the store, a notify, the log) raised. So
``PduProtocol.decode_body`` asks :func:`string_problem` about every decoded body, and a
body with a bad string never reaches its handler: the command's error answer is sent
instead (``CommandTable.register(..., refuse=...)``), or, for commands the protocol gives
no answer, it is dropped with a log line.

Two rules, for every command:

* every ``string`` field, at any depth, is valid UTF-8;
* the fields named in :data:`FIELD_LIMITS` are at most that many characters: the width
  of the column they are stored in (MariaDB ``VARCHAR(n)`` counts characters), so a
  value that fits on SQLite never fails on MariaDB, and values that are not stored get a
  bound that real clients never reach.

The check costs nothing for message types without string fields (chat messages carry
their text as ``bytes``): which fields to look at is worked out once per message type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from teamtalk_py.pb.IM import BaseDefine_pb2 as B

#: Longest login name, password and client version (users.name VARCHAR(64); the
#: password is the client's 32-digit MD5, the version a short label).
NAME_CHARS = 64
#: Longest task id (offline_files.task_id VARCHAR(64); ours are 36-character UUIDs).
TASK_ID_CHARS = 64
#: Longest file name (offline_files.file_name VARCHAR(512)).
FILE_NAME_CHARS = 512
#: Longest avatar URL (users.avatar and im_groups.avatar VARCHAR(512)).
AVATAR_CHARS = 512

#: Command id -> {top-level field name: most characters}. Strings of other fields (and of
#: other commands) are only checked for UTF-8.
FIELD_LIMITS: Mapping[int, Mapping[str, int]] = {
    B.CID_LOGIN_REQ_USERLOGIN: {
        "user_name": NAME_CHARS,
        "password": NAME_CHARS,
        "client_version": NAME_CHARS,
    },
    # device_tokens.token VARCHAR(255)
    B.CID_LOGIN_REQ_DEVICETOKEN: {"device_token": 255},
    B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST: {"avatar_url": AVATAR_CHARS},
    # users.sign_info VARCHAR(128)
    B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST: {"sign_info": 128},
    # im_groups.name VARCHAR(256)
    B.CID_GROUP_CREATE_REQUEST: {"group_name": 256, "group_avatar": AVATAR_CHARS},
    B.CID_FILE_REQUEST: {"file_name": FILE_NAME_CHARS},
    B.CID_FILE_ADD_OFFLINE_REQ: {"task_id": TASK_ID_CHARS, "file_name": FILE_NAME_CHARS},
    B.CID_FILE_DEL_OFFLINE_REQ: {"task_id": TASK_ID_CHARS},
    B.CID_FILE_LOGIN_REQ: {"task_id": TASK_ID_CHARS},
    B.CID_FILE_STATE: {"task_id": TASK_ID_CHARS},
    B.CID_FILE_PULL_DATA_REQ: {"task_id": TASK_ID_CHARS},
    B.CID_FILE_PULL_DATA_RSP: {"task_id": TASK_ID_CHARS},
}

_NO_LIMITS: Mapping[str, int] = {}


@cache
def _string_paths(descriptor: Descriptor) -> tuple[tuple[FieldDescriptor, bool], ...]:
    """The fields of a message type worth looking at: ``(field, is_message)`` for each
    string field and each message field whose type holds strings somewhere."""
    found = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            found.append((field, False))
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not descriptor:
            if _string_paths(field.message_type):
                found.append((field, True))
    return tuple(found)


def _values(message: Message, field: FieldDescriptor) -> Iterable[Any]:
    value = getattr(message, field.name)
    return value if field.is_repeated else (value,)


def _problem_in(message: Message, limits: Mapping[str, int], prefix: str) -> str | None:
    for field, is_message in _string_paths(message.DESCRIPTOR):
        if is_message:
            for nested in _values(message, field):
                problem = _problem_in(nested, _NO_LIMITS, f"{prefix}{field.name}.")
                if problem:
                    return problem
            continue
        limit = limits.get(field.name)
        for value in _values(message, field):
            if not isinstance(value, str):
                return f"{prefix}{field.name} is not UTF-8"
            if limit is not None and len(value) > limit:
                return f"{prefix}{field.name} is longer than {limit} characters"
    return None


def string_problem(command_id: int, message: Message) -> str | None:
    """Why ``message`` (the decoded body of ``command_id``) has a string no handler may
    see, or None when every string is fine."""
    return _problem_in(message, FIELD_LIMITS.get(command_id, _NO_LIMITS), "")
