"""What stored bytes are, judged from their first bytes, never from a name or a header.

Only the picture formats TeamTalk clients display are served inline (``image/...``);
everything else is served as ``application/octet-stream`` for download. The decision is a
security one (a file named ``x.jpg`` holding HTML must not render as a page from our
origin), so it rests on these few well-known signatures rather than on a general-purpose
guesser that knows hundreds of formats we never want inline.
"""

from __future__ import annotations

OCTET_STREAM = "application/octet-stream"

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
)


def sniff_content_type(head: bytes) -> str:
    """The MIME type of a picture format we serve inline, else ``application/octet-stream``."""
    for magic, offset, mime in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return OCTET_STREAM


def is_inline(content_type: str) -> bool:
    return content_type.startswith("image/")
