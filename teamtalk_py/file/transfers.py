"""``FileTransfers``: the file service's realm of tasks.

It creates tasks (for the msg service, in-process or over the internal link), logs client
connections in to them, hands their packets to the right task, and cleans up: idle tasks
leave memory after ``task_timeout``, and the offline-file sweep deletes cancelled,
withdrawn and expired files from disk and then from the store.

Disk work runs through ``io`` (the file service's thread pool; a synchronous stand-in in
unit tests); the store is optional so the state machine can be tested without one.
Progress of uploads goes to ``progress_sinks``: the store always, and the cluster's shared
state (Redis, a key per task with an expiry) when one is configured; any object with a
``record(task_id, uploaded, file_size)`` method can be added.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.addresses import address_key
from teamtalk_py.file.permits import LoginPermits
from teamtalk_py.file.storage import OfflineFileStore, is_task_id
from teamtalk_py.file.tasks import (
    Executor,
    Limits,
    OfflineTask,
    OnlineTask,
    Peer,
    PullRejected,
    Refused,
    State,
    Task,
)
from teamtalk_py.outage import is_outage_failure
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2
from teamtalk_py.settle import settled
from teamtalk_py.store import file_permits
from teamtalk_py.store import files as offline_files

log = Logger(namespace="teamtalk.file")

OFFLINE_ROLES = (B.CLIENT_OFFLINE_UPLOAD, B.CLIENT_OFFLINE_DOWNLOAD)


class ProgressSink(Protocol):
    def record(self, task_id: str, uploaded: int, file_size: int) -> defer.Deferred[Any] | None:
        """Remember that ``uploaded`` bytes of ``task_id`` are durable."""


class StoreProgress:
    """Upload progress in the ``offline_files`` row, so every node can read it."""

    def __init__(self, store: Any, clock: IReactorTime) -> None:
        self.store = store
        self.clock = clock

    def record(self, task_id: str, uploaded: int, file_size: int) -> defer.Deferred[Any]:
        return self.store.write(
            offline_files.record_progress, task_id, uploaded, now=int(self.clock.seconds())
        )


class SharedStateProgress:
    """Upload progress in the cluster's shared state (Redis), expiring by itself."""

    def __init__(self, shared: Any, ttl: float) -> None:
        self.shared = shared
        self.ttl = ttl

    def record(self, task_id: str, uploaded: int, file_size: int) -> defer.Deferred[Any]:
        state = {"offset": uploaded, "size": file_size, "mode": B.FILE_TYPE_OFFLINE}
        return self.shared.save_transfer(task_id, state, ttl=self.ttl)


async def _record(sink: ProgressSink, task: Task, uploaded: int) -> None:
    """One sink's record of an upload's progress (a sink may answer at once)."""
    await settled(sink.record(task.task_id, uploaded, task.file_size))


class FileTransfers:
    def __init__(
        self,
        clock: IReactorTime,
        files: OfflineFileStore,
        io: Executor,
        *,
        limits: Limits | None = None,
        store: Any = None,
        bind_logins: bool = True,
    ) -> None:
        self.clock = clock
        self.files = files
        self.io = io
        self.limits = limits or Limits()
        #: Where each user may log in to a task from (file/permits.py), when enforced.
        self.permits = LoginPermits(clock)
        self.bind_logins = bind_logins
        self.store: Any = None
        self.tasks: dict[str, Task] = {}
        self.progress_sinks: list[ProgressSink] = []
        #: Requests refused for a limit, by kind (a metric hook).
        self.refused: Counter[str] = Counter()
        #: Download blocks answered from the page cache on the reactor thread, and from
        #: reads on an I/O thread (a metric hook).
        self.blocks_from_cache = 0
        self.blocks_read_off_reactor = 0
        if store is not None:
            self.attach_store(store)

    def attach_store(self, store: Any) -> None:
        """Keep offline records and upload progress in ``store`` from now on."""
        self.store = store
        self.progress_sinks.append(StoreProgress(store, self.clock))

    # -- tasks -------------------------------------------------------------------------

    def _new_task_id(self) -> str:
        while True:
            task_id = str(uuid.uuid4())
            if task_id not in self.tasks:
                return task_id

    async def create_task(
        self, from_id: int, to_id: int, file_name: str, file_size: int, mode: int
    ) -> Task:
        """A new task (commands.md §2.5.2); raises ``Refused`` with the reason otherwise.
        An offline task gets its stored file (header only) and its store row at once, so
        the quota is checked before anything is uploaded."""
        now = int(self.clock.seconds())
        task_id = self._new_task_id()
        args = (self, task_id, from_id, to_id, file_name, file_size, now)
        self._check_open_tasks(from_id)
        if mode == B.FILE_TYPE_ONLINE:
            task: Task = OnlineTask(*args)
        elif mode == B.FILE_TYPE_OFFLINE:
            limit = self.limits.max_file_size
            if file_size > limit:
                raise Refused(f"file of {file_size} bytes is over the {limit}-byte limit")
            await self._check_stored_bytes(from_id, file_size)
            await self.check_disk(file_size)
            task = OfflineTask(*args)
            try:
                await self.io(self.files.create, task.header())
            except OSError as e:
                raise Refused(f"cannot create the stored file: {e.strerror}") from None
            if self.store is not None:
                try:
                    await self.store.write(
                        offline_files.create_upload,
                        task_id,
                        from_id,
                        to_id,
                        file_name,
                        file_size,
                        now=now,
                    )
                except Exception as e:
                    await self.io(self.files.remove, task_id)
                    raise Refused(f"cannot record the offline file: {e}") from None
        else:
            raise Refused(f"unknown transfer mode {mode}")
        self.tasks[task_id] = task
        log.info(
            "task {task_id}: {from_id} -> {to_id}, {size} bytes, {mode}",
            task_id=task_id,
            from_id=from_id,
            to_id=to_id,
            size=file_size,
            mode="online" if mode == B.FILE_TYPE_ONLINE else "offline",
        )
        return task

    def _check_open_tasks(self, user_id: int) -> None:
        limit = self.limits.max_tasks_per_user
        if (
            limit
            and sum(1 for t in self.tasks.values() if t.from_id == user_id and t.in_flight) >= limit
        ):
            self._over_limit("tasks")
            raise Refused(f"user {user_id} already has {limit} transfers in flight")

    async def _check_stored_bytes(self, user_id: int, file_size: int) -> None:
        """Offline bytes per sender and in total, as the store records them."""
        if self.store is None:
            return
        limits = self.limits
        if limits.max_user_offline_bytes:
            mine = await self.store.read(offline_files.stored_bytes, user_id)
            if mine + file_size > limits.max_user_offline_bytes:
                self._over_limit("user offline bytes")
                raise Refused(
                    f"user {user_id} keeps {mine} offline bytes; {file_size} more would pass "
                    f"the {limits.max_user_offline_bytes}-byte limit"
                )
        if limits.max_offline_bytes:
            total = await self.store.read(offline_files.stored_bytes)
            if total + file_size > limits.max_offline_bytes:
                self._over_limit("offline bytes")
                raise Refused(
                    f"offline files take {total} bytes; {file_size} more would pass the "
                    f"{limits.max_offline_bytes}-byte limit"
                )

    def _over_limit(self, kind: str) -> None:
        self.refused[kind] += 1

    def forget(self, task: Task) -> None:
        if self.tasks.get(task.task_id) is task:
            del self.tasks[task.task_id]

    async def _load(self, task_id: str) -> Task | None:
        """An offline task from its stored file (after a restart, or once it left memory)."""
        try:
            opened = await self.io(self.files.open, task_id)
        except OSError as e:
            raise Refused(f"cannot read the stored file: {e.strerror}") from None
        if opened is None:
            return None
        await self.io(opened.close)
        row = None
        if self.store is not None:
            row = await self.store.read(offline_files.get, task_id)
            if row is not None and row.status == offline_files.DELETED:
                return None
        existing = self.tasks.get(task_id)
        if existing is not None:
            return existing
        header = opened.header
        task = OfflineTask(
            self,
            task_id,
            header.from_id,
            header.to_id,
            header.file_name or (row.file_name if row is not None else ""),
            header.file_size,
            header.created,
            stored=opened.stored,
        )
        task.state = State.UPLOAD_END if task.complete else State.WAITING_UPLOAD
        self.tasks[task_id] = task
        return task

    async def check_disk(self, needed: int, exclude: Task | None = None) -> None:
        """Refuse when storing ``needed`` more bytes would leave less than the configured
        free space, counting what unfinished uploads may still write."""
        free = await self.io(self.files.free_bytes)
        reserved = sum(
            t.file_size - t.stored
            for t in self.tasks.values()
            if isinstance(t, OfflineTask) and t is not exclude and not t.complete
        )
        minimum = self.limits.min_free_disk
        if free - reserved - needed < minimum:
            raise Refused(
                f"not enough disk: {needed} bytes wanted, {free} free, {reserved} promised, "
                f"{minimum} kept free"
            )

    # -- connections -------------------------------------------------------------------

    async def login(self, peer: Peer, seq: int, msg: File_pb2.IMFileLoginReq) -> None:
        """``CID_FILE_LOGIN_REQ`` (commands.md §2.5.4): answer, then the follow-ups."""
        try:
            task = await self._login(peer, msg)
        except Refused as e:
            log.info(
                "file login of {user_id} to {task_id} refused: {reason}",
                user_id=msg.user_id,
                task_id=msg.task_id,
                reason=str(e),
            )
            peer.send(
                B.CID_FILE_LOGIN_RES,
                File_pb2.IMFileLoginRsp(result_code=1, task_id=msg.task_id),
                seq,
            )
            peer.close(f"file login refused: {e}")
            return
        peer.send(
            B.CID_FILE_LOGIN_RES, File_pb2.IMFileLoginRsp(result_code=0, task_id=task.task_id), seq
        )
        task.after_login(peer)

    async def permit(self, task_id: str, user_id: int, addresses: Iterable[str]) -> None:
        """A msg node says ``user_id`` has connections at ``addresses`` and was told of
        ``task_id``: file logins for it are accepted from there (file/permits.py); kept in
        the store too when there is one (returns once it is durable)."""
        keys = sorted({address_key(a) for a in addresses if a})
        self.permits.grant(task_id, user_id, keys)
        if self.store is not None and keys:
            now = int(self.clock.seconds())
            ttl = int(self.permits.ttl)
            await self.store.write(file_permits.grant, task_id, user_id, keys, now, ttl)

    async def _login_permitted(self, task_id: str, user_id: int, address: str) -> bool:
        if not self.bind_logins or self.permits.allows(task_id, user_id, address):
            return True
        if self.store is None:
            return False
        since = int(self.clock.seconds() - self.permits.ttl)
        key = address_key(address)
        return bool(await self.store.read(file_permits.allows, task_id, user_id, key, since))

    async def _login(self, peer: Peer, msg: File_pb2.IMFileLoginReq) -> Task:
        if peer.task is not None:
            raise Refused("this connection is already logged in to a task")
        task_id, role = msg.task_id, msg.file_role
        if not await self._login_permitted(task_id, msg.user_id, peer.peer_host):
            raise Refused(
                f"{peer.peer_host} is not the address of a connection of user {msg.user_id} "
                "that was told of this task"
            )
        task = self.tasks.get(task_id) if is_task_id(task_id) else None
        if task is None and role in OFFLINE_ROLES and is_task_id(task_id):
            task = await self._load(task_id)
        if task is None:
            raise Refused("unknown task")
        task.check_login(msg.user_id, role)
        if role == B.CLIENT_OFFLINE_DOWNLOAD and self.store is not None:
            row = await self.store.read(offline_files.get, task_id)
            if row is not None and row.status == offline_files.DELETED:
                raise Refused("the file was withdrawn")
        if peer.closing:
            raise Refused("connection closed")
        peer.user_id = msg.user_id
        await task.login(peer, role)
        peer.task = task
        peer.role = role
        peer.logged_in = True
        task.touch()
        return task

    @staticmethod
    def _refused(peer: Peer, e: Refused) -> None:
        peer.close(f"pull rejected: {e}" if isinstance(e, PullRejected) else str(e))

    # Pulls and blocks call the task directly (no closure per block: with one pull in
    # flight each is a round trip of its own).

    def pull_request(self, peer: Peer, request: Any) -> None:
        task = peer.task
        if task is not None:
            try:
                task.pull_request(peer, request)
            except Refused as e:
                self._refused(peer, e)

    def pull_response(self, peer: Peer, request: Any) -> None:
        task = peer.task
        if task is not None:
            try:
                task.pull_response(peer, request)
            except Refused as e:
                self._refused(peer, e)

    def state_received(self, peer: Peer, request: Any) -> None:
        """``CID_FILE_STATE`` from a client: relayed where it means something, and the
        sending connection is closed in every case (commands.md §2.5.10)."""
        msg = request.message
        task = peer.task
        if task is not None and msg.user_id == peer.user_id and msg.task_id == task.task_id:
            task.state_received(peer, request)
        peer.close(f"file state {msg.state} received")

    def peer_lost(self, peer: Peer) -> None:
        task = peer.task
        if task is not None:
            task.peer_lost(peer)

    def output_paused(self, peer: Peer) -> None:
        if peer.task is not None:
            peer.task.output_paused(peer)

    def output_resumed(self, peer: Peer) -> None:
        if peer.task is not None:
            peer.task.output_resumed(peer)

    # -- offline bookkeeping -----------------------------------------------------------

    def record_progress(self, task: Task, uploaded: int) -> defer.Deferred[Any]:
        """Tell every sink how far ``task``'s upload is; fires when they all have it."""
        results = []
        for sink in self.progress_sinks:
            d = defer.ensureDeferred(_record(sink, task, uploaded))
            d.addErrback(_log_task_failure, "recording progress of {task_id}", task.task_id)
            results.append(d)
        return defer.gatherResults(results) if results else defer.succeed(None)

    def count_served(self, blocks: int, *, from_cache: bool) -> None:
        if from_cache:
            self.blocks_from_cache += blocks
        else:
            self.blocks_read_off_reactor += blocks

    def cancel(self, task: OfflineTask) -> None:
        """The uploader cancelled: the task goes now, its file at the next sweep."""
        task.cancelled = True
        self.forget(task)
        log.info("offline task {task_id} cancelled", task_id=task.task_id)

        async def clean_up() -> None:
            await task.dispose()
            if self.store is not None:
                await self.store.write(
                    offline_files.cancel, task.task_id, now=int(self.clock.seconds())
                )
            else:
                await self.io(self.files.remove, task.task_id)

        defer.ensureDeferred(clean_up()).addErrback(
            lambda f: log.failure("cancelling {t}", f, t=task.task_id)
        )

    async def progress(self, task_id: str) -> tuple[int, int] | None:
        """``(uploaded, file_size)`` of an offline upload: from memory when the task is
        here, else from the store (any node can answer)."""
        task = self.tasks.get(task_id)
        if isinstance(task, OfflineTask):
            return task.stored, task.file_size
        if self.store is None:
            return None
        return await self.store.read(offline_files.progress, task_id)

    def expire_idle(self) -> list[Task]:
        """Drop tasks nobody is logged in to and nothing happened on for ``task_timeout``
        (the reference's intended sweep, §2.5.9). Stored files stay."""
        now = self.clock.seconds()
        expired = [
            t
            for t in self.tasks.values()
            if not t.bound() and now - t.last_active >= self.limits.task_timeout
        ]
        for task in expired:
            self.forget(task)
            defer.ensureDeferred(task.dispose()).addErrback(
                _log_task_failure, "disposing of {task_id}", task.task_id
            )
        return expired

    async def sweep_offline(self) -> list[str]:
        """Delete the files of withdrawn, cancelled and expired offline transfers, then
        their rows; files someone is logged in to are left for a later sweep."""
        if self.store is None:
            return []
        now = int(self.clock.seconds())
        due = await self.store.read(
            offline_files.sweepable, expired_before=now - int(self.limits.offline_ttl)
        )
        removed = []
        for task_id in due:
            task = self.tasks.get(task_id)
            if task is not None:
                if task.bound():
                    continue
                self.forget(task)
                await task.dispose()
            if is_task_id(task_id):
                await self.io(self.files.remove, task_id)
            removed.append(task_id)
        if removed:
            await self.store.write(offline_files.forget, removed)
            log.info("offline sweep removed {count} files", count=len(removed))
        return removed

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            await task.dispose()


def _log_task_failure(failure: Failure, event: str, task_id: str) -> None:
    if is_outage_failure(failure):
        return  # Redis or the database is down: counted and logged by its outage log
    log.failure(event, failure, task_id=task_id)
