"""Voice messages: the reference stored a clip's bytes on msfs and only its ``IMAudio`` id
in the message; teamtalk_py stores the bytes in the message.

The reference rebuilt a voice message at every read (storage.md §4.3): it downloaded the
clip's ``path`` (the full msfs URL), checked that the length equals ``IMAudio.size``, and
sent the 4-byte big-endian duration followed by the bytes; when anything failed, the
client got the decimal id instead. The importer does that rebuild once, so clients get
what they always got: the rebuilt bytes when the clip can be fetched, otherwise the
stored decimal id, exactly as the reference would have answered (and counted in the
report). Clips are fetched a page at a time on a few threads.
"""

from __future__ import annotations

import struct
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

FETCH_TIMEOUT = 10.0
FETCH_THREADS = 8


@dataclass(frozen=True, slots=True)
class Clip:
    id: int
    url: str
    size: int
    duration: int


def fetch_clip(clip: Clip) -> bytes | None:
    """The message bytes the reference would have sent for ``clip``, or None."""
    if not clip.url or clip.size <= 0 or clip.duration <= 0:
        return None  # the reference gives up on these without a request
    if not clip.url.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(clip.url, timeout=FETCH_TIMEOUT) as answer:  # noqa: S310
            if answer.status != 200:
                return None
            data = answer.read(clip.size + 1)
    except (OSError, ValueError):
        return None
    if len(data) != clip.size:
        return None
    return struct.pack(">I", clip.duration) + data


class ClipFetcher:
    """Fetches many clips at once; ``enabled=False`` keeps every decimal id."""

    def __init__(self, enabled: bool = True, threads: int = FETCH_THREADS) -> None:
        self.enabled = enabled
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="voice") if enabled else None

    def fetch(self, clips: Iterable[Clip]) -> dict[int, bytes]:
        """Clip id -> rebuilt bytes for the clips that could be fetched."""
        wanted = list(clips)
        if self._pool is None or not wanted:
            return {}
        found = {}
        for clip, data in zip(wanted, self._pool.map(fetch_clip, wanted), strict=True):
            if data is not None:
                found[clip.id] = data
        return found

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
