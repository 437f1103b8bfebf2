"""The file service: client listener (8600), msg-node listener (8601), disk threads, sweeps.

``FileService`` owns the lifecycles; the rules live in ``FileTransfers`` and the tasks. A
co-hosted msg service creates tasks by calling ``transfer_request`` directly; remote msg
nodes send ``CID_OTHER_FILE_TRANSFER_REQ`` over the internal port and get the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from teamtalk_py.file.connection import FileClientFactory, FileInternalFactory
from teamtalk_py.file.handlers import build_client_table, build_internal_table
from teamtalk_py.file.storage import DIRECTORY, OfflineFileStore
from teamtalk_py.file.tasks import MAX_PULL_SIZE, Refused
from teamtalk_py.file.transfers import FileTransfers, Limits, SharedStateProgress
from teamtalk_py.metrics import one
from teamtalk_py.pb.IM import Server_pb2
from teamtalk_py.services import TeamTalkService
from teamtalk_py.wire.link import parse_host_port

if TYPE_CHECKING:
    from teamtalk_py.config import Config
    from teamtalk_py.shared_state import SharedState
    from teamtalk_py.store.service import StoreService

log = Logger(namespace="teamtalk.file")

P = ParamSpec("P")
T = TypeVar("T")

#: How often idle tasks are dropped from memory (the reference's timer, §2.5.9).
EXPIRY_INTERVAL = 10.0
#: How often withdrawn, cancelled and expired offline files are deleted.
SWEEP_INTERVAL = 60.0
IO_THREADS = 4


def file_limits(config: Config) -> Limits:
    conf = config.file
    return Limits(
        max_file_size=conf.max_file_size,
        min_free_disk=conf.min_free_disk,
        pulls_in_flight=conf.max_pulls_in_flight,
        task_timeout=conf.task_timeout,
        offline_ttl=conf.offline_ttl,
        max_user_offline_bytes=conf.max_user_offline_bytes,
        max_offline_bytes=conf.max_offline_bytes,
        max_tasks_per_user=conf.max_tasks_per_user,
    )


class FileService(TeamTalkService):
    name = "file"

    def __init__(
        self,
        reactor: Any,
        config: Config,
        store: StoreService | None = None,
        shared: SharedState | None = None,
    ) -> None:
        super().__init__(reactor, config)
        #: Where offline files are recorded (None: a file service without a database).
        self.store = store
        #: Upload progress is published there when other nodes share it.
        self.shared = shared
        self.pool = ThreadPool(minthreads=1, maxthreads=IO_THREADS, name="teamtalk-file-io")
        self.transfers = FileTransfers(
            reactor,
            OfflineFileStore(config.data_dir / DIRECTORY),
            self.io,
            limits=file_limits(config),
            bind_logins=config.file.bind_logins,
        )
        self.factory = FileClientFactory(
            self.transfers,
            clock=reactor,
            table=build_client_table(),
            max_pdu_size=MAX_PULL_SIZE + 4096,
        )
        #: The msg-node listener (8601), when this process opens one.
        self.internal_factory: FileInternalFactory | None = None
        self._expiry = LoopingCall(self.transfers.expire_idle)
        self._expiry.clock = reactor
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = reactor

    def reconfigure(self, config: Config) -> None:
        super().reconfigure(config)
        self.transfers.limits = file_limits(config)

    def io(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> defer.Deferred[T]:
        """Run blocking disk work on the service's I/O threads."""
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        store = self.store
        if store is not None:
            await store.ready
            self.transfers.attach_store(store)
        shared = self.shared
        if shared is not None and shared.shared:
            self.transfers.progress_sinks.append(
                SharedStateProgress(shared, self.config.file.offline_ttl)
            )
        self.pool.start()
        await self.listen(self.config.file.listen, self.factory)
        if self.config.file.internal_listen:
            self.internal_factory = FileInternalFactory(
                self, auth=self.link_auth, clock=self.reactor, table=build_internal_table()
            )
            await self.listen_internal(self.config.file.internal_listen, self.internal_factory)
        self._expiry.start(EXPIRY_INTERVAL, now=False)
        self._sweep.start(SWEEP_INTERVAL, now=True)
        factory = self.factory
        self.metrics.counters(
            "teamtalk_file_bytes",
            "Bytes received from (in) and sent to (out) file-service clients.",
            ["direction"],
            lambda: [(("in",), factory.bytes_in), (("out",), factory.bytes_out)],
        )
        transfers = self.transfers
        self.metrics.counters(
            "teamtalk_file_download_blocks",
            "Download blocks answered from the page cache on the reactor thread (cache) "
            "and from a disk read on an I/O thread (disk).",
            ["source"],
            lambda: [
                (("cache",), transfers.blocks_from_cache),
                (("disk",), transfers.blocks_read_off_reactor),
            ],
        )
        refused = self.transfers.refused
        self.metrics.counters(
            "teamtalk_file_limit_refusals",
            "Transfer requests refused for a limit (tasks, user offline bytes, offline bytes).",
            ["limit"],
            lambda: [((kind,), n) for kind, n in refused.items()],
        )
        self.metrics.gauges(
            "teamtalk_file_connections",
            "Open client connections to the file service.",
            [],
            lambda: one(len(factory.connections)),
        )

    async def stop(self) -> None:
        for loop in (self._expiry, self._sweep):
            if loop.running:
                loop.stop()
        for conn in list(self.factory.connections):
            conn.transport.loseConnection()
        if self.internal_factory is not None:
            for link in list(self.internal_factory.connections):
                link.close("stopping")
        await self.transfers.stop()
        self.pool.stop()

    def sweep(self) -> defer.Deferred:
        """One offline-file sweep; a failure is logged and the next sweep runs anyway."""
        d = defer.ensureDeferred(self.transfers.sweep_offline())
        d.addErrback(lambda f: log.failure("offline file sweep failed", f))
        return d

    # -- what msg nodes ask ----------------------------------------------------------------

    def client_addresses(self) -> list[tuple[str, int]]:
        """Where clients reach this service: ``file.public_addresses`` (``HOST`` or
        ``HOST:PORT``), else the server's advertised address with the bound client port."""
        port = self.bound_port(0) if self._ports else 0
        entries = self.config.file.public_addresses or (self.config.server.advertise,)
        return [parse_host_port(entry, port) for entry in entries]

    async def transfer_request(
        self, request: Server_pb2.IMFileTransferReq
    ) -> Server_pb2.IMFileTransferRsp:
        """``CID_OTHER_FILE_TRANSFER_REQ`` -> ``IMFileTransferRsp`` (attach_data echoed)."""
        answer = Server_pb2.IMFileTransferRsp(
            result_code=1,
            from_user_id=request.from_user_id,
            to_user_id=request.to_user_id,
            file_name=request.file_name,
            file_size=request.file_size,
            task_id="",
            trans_mode=request.trans_mode,
        )
        if request.HasField("attach_data"):
            answer.attach_data = request.attach_data
        try:
            task = await self.transfers.create_task(
                request.from_user_id,
                request.to_user_id,
                request.file_name,
                request.file_size,
                request.trans_mode,
            )
        except Refused as e:
            log.info(
                "transfer {from_id} -> {to_id} refused: {reason}",
                from_id=request.from_user_id,
                to_id=request.to_user_id,
                reason=str(e),
            )
            return answer
        answer.result_code = 0
        answer.task_id = task.task_id
        return answer

    async def permit(self, task_id: str, user_id: int, addresses: list[str]) -> None:
        """``CID_EXT_FILE_LOGIN_PERMIT_REQ`` (or the co-hosted msg service's call)."""
        await self.transfers.permit(task_id, user_id, addresses)

    async def progress(self, task_id: str) -> tuple[int, int] | None:
        """``(uploaded, file_size)`` of an offline upload, wherever it runs."""
        return await self.transfers.progress(task_id)
