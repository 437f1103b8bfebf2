"""What a push says: the alert text ("flash") and the custom data (commands.md §2.1.14).

The rules are the reference msg_server's:

* text messages are decrypted with the shared AES key (wire.md §6.1); a text that does not
  decrypt gets no push at all;
* a picture (the start marker before the end marker) says ``您收到了一条消息``;
* a voice message says ``N在群聊中发送了一条语音消息`` (group) or ``N给您发送了一条语音消息``;
* anything else says ``N:text``; every text built from a nick is cut to its first 37 bytes
  followed by ``...`` when longer. The reference cut bytes and could split a UTF-8
  character; we cut at the last whole character within the 37 bytes.

``N`` is the sender's nick (the account name when the nick is empty; the reference sent
``您收到了一条消息`` for a sender it did not know). The plain text is never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from teamtalk_py.pb.IM import BaseDefine_pb2 as B

GENERIC = "您收到了一条消息"
GROUP_VOICE = "在群聊中发送了一条语音消息"
SINGLE_VOICE = "给您发送了一条语音消息"
PICTURE_START = "&$#@~^@[{:"
PICTURE_END = ":}]&$~@#@"
#: The reference's IOS_PUSH_FLASH_MAX_LENGTH (40) less the three dots.
MAX_FLASH_BYTES = 37

TEXT_TYPES = (B.MSG_TYPE_SINGLE_TEXT, B.MSG_TYPE_GROUP_TEXT)
GROUP_TYPES = (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO)


class UndecryptableText(ValueError):
    """A text message whose payload is not the clients' AES scheme: no push."""


@functools.lru_cache(maxsize=4)
def _cipher(key: bytes) -> Cipher[modes.ECB]:
    """The key's cipher, built once (building it cost more than decrypting a text)."""
    return Cipher(algorithms.AES(key), modes.ECB())


def decrypt_text(data: bytes, key: bytes) -> str:
    """The plain text of a client-encrypted text message (wire.md §6.1)."""
    try:
        cipher_text = base64.b64decode(b"".join(data.split()), validate=False)
    except (binascii.Error, ValueError) as e:
        raise UndecryptableText("not base64") from e
    if not cipher_text or len(cipher_text) % 16:
        raise UndecryptableText("not whole AES blocks")
    decryptor = _cipher(key).decryptor()
    plain = decryptor.update(cipher_text) + decryptor.finalize()
    (length,) = struct.unpack(">I", plain[-4:])
    if length > len(plain):
        raise UndecryptableText("length past the buffer")
    return plain[:length].decode("utf-8", errors="replace")


def cut(text: str, limit: int = MAX_FLASH_BYTES) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore") + "..."


def flash(msg_type: int, content: bytes, sender_nick: str | None, aes_key: bytes) -> str:
    """The alert text; raises ``UndecryptableText`` when a text message does not decrypt."""
    plain = decrypt_text(content, aes_key) if msg_type in TEXT_TYPES else ""
    start = plain.find(PICTURE_START)
    if start != -1 and start < plain.find(PICTURE_END):
        return GENERIC
    if sender_nick is None:
        return GENERIC
    if msg_type == B.MSG_TYPE_GROUP_AUDIO:
        return cut(sender_nick + GROUP_VOICE)
    if msg_type == B.MSG_TYPE_SINGLE_AUDIO:
        return cut(sender_nick + SINGLE_VOICE)
    return cut(f"{sender_nick}:{plain}")


def custom_data(msg_type: int, from_id: int, to_id: int) -> str:
    """The reference's custom JSON: msg_type, from_id and, for groups, group_id."""
    data = {"msg_type": msg_type, "from_id": from_id}
    if msg_type in GROUP_TYPES:
        data["group_id"] = to_id
    return json.dumps(data, separators=(",", ":"))
