"""``StoreService``: opens the database before any other service starts using it, and
closes it last, after every pending group commit is flushed.

Every ``PING_INTERVAL`` seconds it runs ``SELECT 1`` on a reader connection: a connection
the server dropped (restart, ``wait_timeout``, network) is noticed and reopened by the
store's retry before a client request needs it, and an unreachable database is logged
once when it goes and once when it comes back.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.metrics import one
from teamtalk_py.services import StartupError, TeamTalkService
from teamtalk_py.store.database import Database, open_database
from teamtalk_py.store.txn import StoreClosedError, Txn

if TYPE_CHECKING:
    from teamtalk_py.config import Config

log = Logger(namespace="teamtalk.store")

PING_INTERVAL = 30.0
#: Seconds /ready waits for the database to answer.
HEALTH_TIMEOUT = 3.0


def error_text(error: BaseException | None) -> str:
    """A database error as one line (PyMySQL's are ``(code, "text")`` tuples)."""
    args: tuple[Any, ...] = getattr(error, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return f"{args[1]} ({args[0]})"
    return str(error) or type(error).__name__


P = ParamSpec("P")
T = TypeVar("T")


def _ping(txn: Txn) -> None:
    txn.execute("SELECT 1").fetchall()


class StoreService(TeamTalkService):
    name = "store"

    def __init__(self, reactor: Any, config: Config) -> None:
        super().__init__(reactor, config)
        self.db: Database | None = None
        self.healthy: bool | None = None
        self.last_error = ""
        self._ping = LoopingCall(self.ping)
        self._ping.clock = reactor

    async def start(self) -> None:
        # The store threads hand results to the reactor thread; a shorter GIL switch
        # interval than the default 5 ms keeps that handoff from adding to ack latency.
        sys.setswitchinterval(0.001)

        try:
            self.db = open_database(
                self.config.store.db or None, self.config.server.data_dir, self.reactor
            )
            await self.db.start()
        except Exception as e:
            target = self.db.describe() if self.db is not None else "the database"
            raise StartupError(f"cannot open {target}: {error_text(e)}") from e
        log.info("store ready ({dialect})", dialect=self.db.dialect)
        self.healthy = True
        self._ping.start(PING_INTERVAL, now=False)
        self.register_metrics(self.db)

    def register_metrics(self, db: Database) -> None:
        """Batch sizes and commit latency as they happen; queues and reconnects read at
        scrape time."""
        metrics = self.metrics

        def batch_committed(jobs: int, seconds: float) -> None:
            metrics.store_batch_size.observe(jobs)
            metrics.store_commit_seconds.observe(seconds)

        db.on_batch = batch_committed
        metrics.gauges(
            "teamtalk_store_queue",
            "Store jobs waiting for the writer (write) or a reader thread (read).",
            ["queue"],
            lambda: [(("write",), db.pending_writes), (("read",), db.pending_reads)],
        )
        metrics.counters(
            "teamtalk_store_reconnects",
            "Database connections reopened after one was lost.",
            [],
            lambda: one(db.stats.reconnects),
        )
        metrics.counters(
            "teamtalk_store_deadlock_retries",
            "Write batches run again whole after the database rolled one back (MySQL "
            "deadlock 1213 or lock wait timeout 1205).",
            [],
            lambda: one(db.stats.deadlock_retries),
        )
        metrics.gauges(
            "teamtalk_store_up",
            "1 while the last database ping succeeded.",
            [],
            lambda: one(1 if self.healthy else 0),
        )

    async def stop(self) -> None:
        if self._ping.running:
            self._ping.stop()
        if self.db is not None:
            await self.db.stop()

    @property
    def database(self) -> Database:
        """The started database (StoreClosedError before ``start``)."""
        if self.db is None:
            raise StoreClosedError("the store service has not started")
        return self.db

    def ping(self) -> Deferred[None]:
        """``SELECT 1`` on a reader (the database's ``OutageLog`` logs an outage it
        finds, as it does for every other job)."""

        def ok(_: None) -> None:
            self.healthy = True

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError):
                self.last_error = f"no answer within {HEALTH_TIMEOUT:g} s"
            else:
                self.last_error = error_text(failure.value)
            self.healthy = False

        return self.database.read(_ping).addCallbacks(ok, failed)

    async def health(self) -> dict[str, Any]:
        """Ready when a ``SELECT 1`` answers now (within ``HEALTH_TIMEOUT``)."""
        if self.db is None or not self.is_started:
            return {"ok": False, "error": "not started"}
        part: dict[str, Any] = {"database": self.db.describe()}
        try:
            await self.ping().addTimeout(HEALTH_TIMEOUT, self.reactor)
        except Exception as e:
            return {"ok": False, **part, "error": error_text(e) or "timed out"}
        if not self.healthy:
            return {"ok": False, **part, "error": self.last_error, **self.db.outage.report()}
        return {"ok": True, **part}

    def read(
        self, fn: Callable[Concatenate[Txn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run ``fn(txn, *args, **kwargs)`` on a reader thread; a Deferred of its result."""
        return self.database.read(fn, *args, **kwargs)

    def write(
        self, fn: Callable[Concatenate[Txn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run ``fn(txn, *args, **kwargs)`` in the next group commit; fires once durable."""
        return self.database.write(fn, *args, **kwargs)

    def write_soon(
        self,
        linger: float,
        fn: Callable[Concatenate[Txn, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """``write`` that rides along in a batch committed anyway, or commits on its own
        after ``linger`` seconds (``Database.write_soon``)."""
        return self.database.write_soon(linger, fn, *args, **kwargs)
