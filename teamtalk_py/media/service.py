"""The media service: the HTTP listener (8700), its I/O threads, and the sweeps.

Collaborators come in through the constructor: the store service (``read``/``write``),
the shared state, and the co-hosted msg service's failed-login lockout so that token
requests and PDU logins count against the same names; without msg in the process, a
lockout of its own over the shared state. ``MediaContext`` (``context.py``) is what
every HTTP handler receives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from teamtalk_py.auth.tokens import LoginAttempts, Tokens
from teamtalk_py.config import Config
from teamtalk_py.content.store import ContentStore
from teamtalk_py.disk.cloud_disk import CloudDisk
from teamtalk_py.disk.ranking import ranking_for
from teamtalk_py.media.context import MediaContext
from teamtalk_py.media.http import MediaSite
from teamtalk_py.media.library import MediaLibrary
from teamtalk_py.media.routes import ROUTES
from teamtalk_py.media.tus import sweep_expired
from teamtalk_py.msg.credentials import Credentials
from teamtalk_py.services import TeamTalkService

log = Logger(namespace="teamtalk.media")

#: Disk threads: every picture costs two fsyncs (its bytes, its blob directory), which
#: wait on the disk rather than the CPU; more threads let concurrent uploads overlap them.
IO_THREADS = 16
SWEEP_INTERVAL = 60.0
FREE_SPACE_INTERVAL = 5.0


def login_attempts(shared_state: Any, clock: Any) -> LoginAttempts:
    """The failed-login lockout: in the shared state when there is one (so PDU logins
    and token requests on every node count together), else this process's memory."""
    from teamtalk_py.msg.lockout import LoginLockout, SharedLoginLockout

    if shared_state is not None and getattr(shared_state, "shared", False):
        return SharedLoginLockout(shared_state, clock)
    return LoginLockout(clock)


class SignInService(TeamTalkService):
    """An HTTP service whose users sign in with their password (media, disk, admin): the
    failed-login lockout is the co-hosted msg service's (``attempts`` gives it) or, without
    msg here, one of its own over the shared state; the password's KDF runs on
    ``credentials``' threads, never on the reactor's."""

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: Any,
        shared_state: Any = None,
        attempts: LoginAttempts | None = None,
    ) -> None:
        super().__init__(reactor, config)
        self.store = store
        self.shared_state = shared_state
        self._attempts = attempts
        self.credentials = Credentials(reactor, store)

    def lockout(self) -> LoginAttempts:
        """The lockout every sign-in of this service counts in (the class docstring)."""
        if self._attempts is not None:
            return self._attempts
        return login_attempts(self.shared_state, self.reactor)

    async def start_tokens(self) -> Tokens:
        """The API tokens (``POST /api/v1/token``), issued through ``lockout()``."""
        self.credentials.start()
        tokens = Tokens(
            self.store,
            self.reactor,
            self.config.media.token_ttl,
            self.lockout(),
            self.credentials.check,
        )
        await tokens.start()
        return tokens


class MediaService(SignInService):
    name = "media"

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: Any,
        shared_state: Any = None,
        attempts: LoginAttempts | None = None,
    ) -> None:
        super().__init__(reactor, config, store, shared_state, attempts)
        self.pool = ThreadPool(minthreads=1, maxthreads=IO_THREADS, name="teamtalk-media-io")
        self.files = ContentStore(config.media_dir)
        self.library = MediaLibrary(
            config.media, self.files, store, self.io, reactor, self.public_url
        )
        self.context: MediaContext | None = None
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = reactor
        self._free_space = LoopingCall(self.refresh_free_space)
        self._free_space.clock = reactor

    def io(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """Run blocking disk work on the service's I/O threads."""
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)

    def public_url(self) -> str:
        """The base of every URL handed out (msfsPrior/msfsBackup), ending in ``/``."""
        port = self.bound_port() if self._ports else None
        return self.config.media_public_url(port)

    async def start(self) -> None:
        await self.store.ready
        self.pool.start()
        await self.io(self.files.prepare)
        await self.library.refresh_free_space()
        tokens = await self.start_tokens()
        disk = CloudDisk(
            self.store,
            self.library.blobs,
            ranking_for(self.store, self.shared_state),
            self.reactor,
            self.public_url,
            self.config.media.user_quota,
        )
        self.context = MediaContext(self.config.media, self.library, tokens, self.io, disk)
        await self.listen(
            self.config.media.listen,
            MediaSite.for_service(self, self.context, ROUTES),
        )
        log.info(
            "media store in {path}, public URL {url}",
            path=str(self.files.root),
            url=self.public_url(),
        )
        self._free_space.start(FREE_SPACE_INTERVAL, now=False)
        self._sweep.start(SWEEP_INTERVAL, now=False)

    async def stop(self) -> None:
        for loop in (self._sweep, self._free_space):
            if loop.running:
                loop.stop()
        self.library.blobs.stop()
        self.credentials.stop()
        if self.context is not None:
            await self.context.tus.close_all()
        self.pool.stop()

    def refresh_free_space(self) -> defer.Deferred:
        d = defer.ensureDeferred(self.library.refresh_free_space())
        d.addErrback(lambda f: log.failure("checking free disk space failed", f))
        return d

    def sweep(self) -> defer.Deferred:
        """Expired uploads, then unreferenced blobs; a failure is logged, the next runs."""
        return defer.ensureDeferred(self._sweep_once())

    async def _sweep_once(self) -> None:
        try:
            if self.context is not None:
                await sweep_expired(self.context)
            await self.library.sweep()
        except Exception:
            log.failure("media sweep failed")
