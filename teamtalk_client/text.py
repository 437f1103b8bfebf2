"""Chat text encryption as the shipped clients do it (wire.md section 6.1).

Every client encrypts the text of a message with AES-256-ECB under the `aesKey` of its
config (the same for every client of a site), after a padding of its own, and sends the
base64 of the result as `msg_data`. The block cipher is the `cryptography` package's.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["DEFAULT_AES_KEY", "decrypt_text", "encrypt_text"]


#: The `aesKey` shipped in every config and compiled into the clients.
DEFAULT_AES_KEY = b"12345678901234567890123456789012"


def _key_bytes(key: bytes | str) -> bytes:
    raw = key.encode("ascii") if isinstance(key, str) else bytes(key)
    if len(raw) != 32:
        raise ValueError(f"the AES key must be 32 bytes, got {len(raw)}")
    return raw


def encrypt_text(text: str, key: bytes | str = DEFAULT_AES_KEY) -> bytes:
    """Encrypt chat text the way the clients do, giving the base64 `msg_data` bytes:
    zero-pad to 16-byte blocks (adding a block when fewer than 4 bytes are left), put the
    text length big-endian in the last 4 bytes, AES-256-ECB, base64."""
    plain = text.encode("utf-8")
    size = len(plain)
    blocks = -(-size // 16)
    if size % 16 == 0 or size % 16 > 12:
        blocks += 1
    buffer = bytearray(plain.ljust(blocks * 16, b"\0"))
    buffer[-4:] = size.to_bytes(4, "big")
    return base64.b64encode(_ecb(_key_bytes(key), bytes(buffer), decrypt=False))


def decrypt_text(data: bytes | str, key: bytes | str = DEFAULT_AES_KEY) -> str:
    """Reverse `encrypt_text`; `ValueError` on anything the servers would also refuse
    (bad base64, not whole blocks, a length larger than the buffer)."""
    if isinstance(data, str):
        data = data.encode("ascii")
    cleaned = bytes(c for c in data if c not in b" \t\r\n\v\f=")
    cleaned += b"=" * (-len(cleaned) % 4)
    try:
        cipher = base64.b64decode(cleaned, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"encrypted text is not base64: {exc}") from exc
    if not cipher or len(cipher) % 16:
        raise ValueError(f"encrypted text is {len(cipher)} bytes, not whole AES blocks")
    plain = _ecb(_key_bytes(key), cipher, decrypt=True)
    size = int.from_bytes(plain[-4:], "big")
    if size > len(plain):
        raise ValueError(f"encrypted text announces {size} bytes in a {len(plain)}-byte buffer")
    return plain[:size].decode("utf-8")


def _ecb(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()
