"""``DiskContext``: what every handler of the disk service's seed API receives.

A leaf of the package: the handlers (``seed.py``) and the service that builds the context
(``service.py``) import it; it imports neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter
from twisted.internet import defer

from teamtalk_py.auth.tokens import Tokens
from teamtalk_py.config import MediaConfig
from teamtalk_py.content.store import ContentStore
from teamtalk_py.disk.cloud_disk import CloudDisk
from teamtalk_py.disk.registration import Registration
from teamtalk_py.media.library import StorageFull


@dataclass
class DiskContext:
    media: MediaConfig
    disk: CloudDisk
    tokens: Tokens
    registration: Registration
    files: ContentStore
    io: Callable[..., defer.Deferred]
    answers: Counter | None = None

    def count_answer(self, route: str, code: str) -> None:
        if self.answers is not None:
            self.answers.labels(route, code).inc()

    async def check_room(self, size: int) -> None:
        """``StorageFull`` unless ``size`` more bytes leave ``media.min_free_disk``."""
        free = await self.io(self.files.free_bytes)
        if free - size < self.media.min_free_disk:
            raise StorageFull(f"not enough disk space for {size} bytes")
