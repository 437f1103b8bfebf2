"""The media service: the HTTP listener (8700), its I/O threads, and the sweeps.

Collaborators come in through the constructor: the store service (``read``/``write``),
the shared state, and the co-hosted msg service's failed-login lockout (a function giving
it, read at start) so that token requests and PDU logins count against the same names;
without msg in the process, a lockout of its own over the shared state. ``MediaContext``
is what every HTTP handler receives: the library, tokens, the uploads in progress and the
authentication helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from teamtalk_py.auth.tokens import InvalidToken, LoginAttempts, Tokens
from teamtalk_py.config import Config, MediaConfig
from teamtalk_py.content.store import ContentStore
from teamtalk_py.disk.cloud_disk import CloudDisk
from teamtalk_py.disk.ranking import ranking_for
from teamtalk_py.media.http import HttpError, MediaRequest, MediaSite
from teamtalk_py.media.library import MediaLibrary
from teamtalk_py.media.routes import ROUTES
from teamtalk_py.media.tus import Uploads, sweep_expired
from teamtalk_py.msg.credentials import Credentials
from teamtalk_py.services import TeamTalkService
from teamtalk_py.store.media import MediaFileRow

log = Logger(namespace="teamtalk.media")

#: Disk threads: every picture costs two fsyncs (its bytes, its blob directory), which
#: wait on the disk rather than the CPU; more threads let concurrent uploads overlap them.
IO_THREADS = 16
SWEEP_INTERVAL = 60.0
FREE_SPACE_INTERVAL = 5.0


@dataclass
class MediaContext:
    config: MediaConfig
    library: MediaLibrary
    tokens: Tokens
    io: Any
    #: The cloud disk's files (its JSON API, ``disk/api.py``).
    disk: CloudDisk | None = None
    tus: Uploads = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.tus is None:
            self.tus = Uploads(self)

    async def optional_user(self, request: MediaRequest) -> int | None:
        """The bearer token's user, None without one; 401 for a token that is not valid."""
        header = request.header(b"authorization")
        if header is None:
            return None
        scheme, _, value = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("expected Authorization: Bearer TOKEN")
        try:
            return await self.tokens.verify(value.strip())
        except InvalidToken as e:
            raise _unauthorized(str(e)) from None

    async def required_user(
        self, request: MediaRequest, headers: dict[bytes, bytes] | None = None
    ) -> int:
        try:
            user_id = await self.optional_user(request)
        except HttpError as e:
            e.headers.update(headers or {})
            raise
        if user_id is None:
            error = _unauthorized("Authorization: Bearer TOKEN required (POST /api/v1/token)")
            error.headers.update(headers or {})
            raise error
        request.owner_id = user_id
        return user_id

    async def owned_file(
        self, request: MediaRequest, file_id: str, user_id: int | None
    ) -> MediaFileRow:
        """The file ``file_id`` if ``user_id`` owns it; 404 otherwise (as if absent)."""
        file = await self.library.get_file(file_id)
        if file is None or user_id is None or file.owner_id != user_id:
            raise HttpError(404, "no such file")
        return file


def _unauthorized(message: str) -> HttpError:
    return HttpError(401, message, headers={b"WWW-Authenticate": b'Bearer realm="teamtalk"'})


def login_attempts(shared_state: Any, clock: Any) -> LoginAttempts:
    """The failed-login lockout: in the shared state when there is one (so PDU logins
    and token requests on every node count together), else this process's memory."""
    from teamtalk_py.msg.lockout import LoginLockout, SharedLoginLockout

    if shared_state is not None and getattr(shared_state, "shared", False):
        return SharedLoginLockout(shared_state, clock)
    return LoginLockout(clock)


async def start_tokens(
    store: Any,
    clock: Any,
    config: Config,
    shared_state: Any,
    attempts: Callable[[], LoginAttempts] | None,
    credentials: Credentials,
) -> Tokens:
    """The API tokens, issued through the co-hosted msg service's lockout (``attempts``
    gives it) or, without msg here, a lockout of their own over the shared state; the
    password's KDF runs on ``credentials``' threads, never on the reactor's."""
    lockout = attempts() if attempts is not None else login_attempts(shared_state, clock)
    credentials.start()
    tokens = Tokens(store, clock, config.media.token_ttl, lockout, credentials.check)
    await tokens.start()
    return tokens


class MediaService(TeamTalkService):
    name = "media"

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: Any,
        shared_state: Any = None,
        attempts: Callable[[], LoginAttempts] | None = None,
    ) -> None:
        super().__init__(reactor, config)
        self.store = store
        self.shared_state = shared_state
        self.pool = ThreadPool(minthreads=1, maxthreads=IO_THREADS, name="teamtalk-media-io")
        self.files = ContentStore(config.media_dir)
        self.library = MediaLibrary(
            config.media, self.files, store, self.io, reactor, self.public_url
        )
        self._attempts = attempts
        self.credentials = Credentials(reactor, store)
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
        tokens = await start_tokens(
            self.store,
            self.reactor,
            self.config,
            self.shared_state,
            self._attempts,
            self.credentials,
        )
        disk = CloudDisk(
            self.store,
            self.library.blobs,
            ranking_for(self.store, self.shared_state),
            self.reactor,
            self.public_url,
            self.config.media.user_quota,
        )
        self.context = MediaContext(self.config.media, self.library, tokens, self.io, disk)
        await self.listen(self.config.media.listen, MediaSite(self.context, ROUTES))
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
