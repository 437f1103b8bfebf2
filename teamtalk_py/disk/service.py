"""The disk service: the seed system's cloud-disk API on its own listener (8800).

Collaborators come in through the constructor: the store service, the shared state (the
ranking's sorted set and the registration counts in a cluster), the co-hosted msg
service's failed-login lockout and the media
service's public URL (downloads are served there). The files live in the media content
store (``media.store_dir``), each referenced in the database like any media file, so the
disk works with or without the media service in the same process. ``DiskContext``
(``context.py``) is what every handler receives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from teamtalk_py.auth.tokens import LoginAttempts
from teamtalk_py.config import Config
from teamtalk_py.content.blobs import Blobs
from teamtalk_py.content.store import ContentStore
from teamtalk_py.disk.cloud_disk import CloudDisk
from teamtalk_py.disk.context import DiskContext
from teamtalk_py.disk.ranking import ranking_for
from teamtalk_py.disk.registration import Registration
from teamtalk_py.disk.routes import ROUTES
from teamtalk_py.media.http import MediaSite
from teamtalk_py.media.service import SignInService

log = Logger(namespace="teamtalk.disk")

IO_THREADS = 8
SWEEP_INTERVAL = 60.0


class DiskService(SignInService):
    name = "disk"

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: Any,
        shared_state: Any = None,
        attempts: LoginAttempts | None = None,
        media_url: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(reactor, config, store, shared_state, attempts)
        self.pool = ThreadPool(minthreads=1, maxthreads=IO_THREADS, name="teamtalk-disk-io")
        self.files = ContentStore(config.media_dir)
        self.blobs = Blobs(self.files, store, self.io, reactor, config.media.unreferenced_grace)
        self.disk = CloudDisk(
            store,
            self.blobs,
            ranking_for(store, shared_state),
            reactor,
            media_url or (lambda: self.config.media_public_url()),
            config.media.user_quota,
        )
        self.context: DiskContext | None = None
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = reactor

    def io(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """Run blocking disk work on the service's I/O threads."""
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)

    async def start(self) -> None:
        await self.store.ready
        self.pool.start()
        await self.io(self.files.prepare)
        tokens = await self.start_tokens()
        registration = Registration(
            self.store, self.reactor, self.shared_state, lambda: self.config.disk, self.io
        )
        answers = Counter(
            "teamtalk_disk_answers",
            "Answers of the cloud disk's seed API by route and code.",
            ["route", "code"],
            registry=self.metrics.registry,
        )
        self.context = DiskContext(
            self.config.media, self.disk, tokens, registration, self.files, self.io, answers
        )
        await self.listen(
            self.config.disk.listen,
            MediaSite.for_service(self, self.context, ROUTES),
        )
        log.info(
            "cloud disk: files in {path}, downloads at {url}, registration {registration}",
            path=str(self.files.root),
            url=self.disk.public_url(),
            registration="on" if self.config.disk.allow_registration else "off",
        )
        self._sweep.start(SWEEP_INTERVAL, now=False)

    async def stop(self) -> None:
        if self._sweep.running:
            self._sweep.stop()
        self.blobs.stop()
        self.credentials.stop()
        self.pool.stop()

    def sweep(self) -> defer.Deferred:
        """Blobs nobody refers to any more, past their grace period (the media service
        sweeps the same store; the two never delete a blob in use)."""
        d = defer.ensureDeferred(self.blobs.sweep(self.config.media.unreferenced_grace))
        d.addErrback(lambda f: log.failure("disk sweep failed", f))
        return d
