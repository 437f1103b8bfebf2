"""The group-committing database: a reader pool and one writer thread over an engine.

Repository functions (``accounts``, ``messages``, ``groups``, ``sessions``, ``files``) are
plain synchronous ``fn(txn, ...)`` functions over a :class:`~teamtalk_py.store.txn.Txn`.
:class:`Database` runs them off the reactor thread:

* :meth:`Database.read` in a small pool of reader threads, each with its own connection
  (SQLite in WAL mode lets readers run beside the writer);
* :meth:`Database.write` in ONE writer thread that commits in groups: it takes every job
  queued at that moment (up to ``max_batch``), runs them in a single transaction, COMMITs
  once and only then fires the Deferreds. One fsync then makes hundreds of messages
  durable. A failing job only loses its own changes: each job runs inside its own
  SAVEPOINT, taken lazily (see ``_NeedSavepoints``) because jobs rarely fail and a
  savepoint per job costs about a third of the throughput. On SQLite writers of one file
  take turns (its write lock). Nodes sharing a MySQL database write side by side, held
  apart only by InnoDB's row locks, taken in one global order: the message jobs of a batch
  run sorted by the rows they lock first (``txn.lock_order``: pairs, then groups by id),
  and each takes its own rows sorted. A batch that InnoDB still rolls back (deadlock 1213,
  lock wait timeout 1205) is run again whole, so an acknowledged job is committed exactly
  once.
* :meth:`Database.write_soon` for work that may wait a little: the writer holds the job
  until some ``write`` starts a batch, which it joins, or until its linger is over; so it
  adds no COMMIT (no fsync) of its own while writes keep coming.

The admin CLI reuses the same repository functions through
:meth:`Database.sync_transaction`, a blocking transaction on a private connection.

What differs between SQLite and MySQL lives in ``store/engines/``; the schema's
migrations are applied by ``store/migrate.py`` before the first job runs.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.datadir import PRIVATE_DIR, private_sqlite_files
from teamtalk_py.outage import OutageLog
from teamtalk_py.store.engines.base import Engine, close_quietly, rollback_quietly
from teamtalk_py.store.engines.mysql import MySQLEngine, parse_mysql_url
from teamtalk_py.store.engines.sqlite import SQLiteEngine, sqlite_path
from teamtalk_py.store.migrate import migrate
from teamtalk_py.store.txn import (
    Dialect,
    LockKey,
    StoreClosedError,
    StoreError,
    StoreStoppingError,
    StoreUnavailable,
    Txn,
    lock_key,
)

log = Logger(namespace="teamtalk.store")

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_MAX_BATCH = 512
DEFAULT_READERS = 4
CHECKPOINT_INTERVAL = 1.0
#: Runs of one batch InnoDB may roll back as a deadlock victim before its jobs fail; each
#: rerun waits a little longer (``DEADLOCK_BACKOFF`` seconds times 1, 2, 4 ..., jittered)
#: so that the two batches that collided do not collide again at once.
DEADLOCK_RETRIES = 8
DEADLOCK_BACKOFF = 0.002


_STOP = object()


@dataclass(slots=True)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    deferred: Deferred
    #: A ``write_soon`` job: the monotonic time after which it commits on its own; until
    #: then it waits for a batch that commits anyway. None for ``write``.
    rides_until: float | None = None


class _BatchRetry(Exception):
    """The transaction is gone (connection lost, deadlock): run the whole batch again."""

    def __init__(self, failure: Failure, reconnect: bool, deadlock: bool = False) -> None:
        super().__init__(failure.getErrorMessage())
        self.failure = failure
        self.reconnect = reconnect
        #: InnoDB rolled the batch back (deadlock victim, lock wait timeout): nothing of it
        #: was applied, so it may run again as often as DEADLOCK_RETRIES allows.
        self.deadlock = deadlock


class _NeedSavepoints(Exception):
    """A job failed after changing data while the batch ran without savepoints.

    Savepoints cost a statement (SQLite) or a round trip (MySQL) per job, and jobs almost
    never fail, so a batch first runs without them. A job that fails before writing
    anything is simply reported failed. A job that fails after writing rolls the whole
    transaction back, and the batch is run again with one SAVEPOINT per job, so that only
    the failing job loses its changes.
    """


class _BatchFailed(Exception):
    """The batch cannot commit; every job of it fails with ``failure``."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.getErrorMessage())
        self.failure = failure


@dataclass
class WriteStats:
    """Counters of the writer thread, for logs and benchmarks (written by that thread)."""

    batches: int = 0
    jobs: int = 0
    failed_jobs: int = 0
    largest_batch: int = 0
    retries: int = 0
    #: Batch reruns after InnoDB rolled one back (deadlock or lock wait timeout).
    deadlock_retries: int = 0
    savepoint_reruns: int = 0
    #: Connections reopened after one was lost (writer and readers).
    reconnects: int = 0


class Database:
    """SQLite or MySQL behind a reader pool and a group-committing writer thread.

    Write functions may run more than once (a batch is run again after a lost MySQL
    connection or a deadlock, or with savepoints after a job failed half-way), so they
    must only touch the database through their ``txn``.
    """

    def __init__(
        self,
        engine: Engine,
        reactor: Any,
        *,
        readers: int = DEFAULT_READERS,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if readers < 1 or max_batch < 1:
            raise ValueError("readers and max_batch must be at least 1")
        self._engine = engine
        self._reactor = reactor
        self._reader_count = readers
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._accepting = False
        self._state = "new"  # new -> running -> stopping -> stopped
        self._write_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._read_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._schema_ready = threading.Event()
        self._stopping = threading.Event()
        self._start_failure: Failure | None = None
        self._started: Deferred | None = None
        self._thread_done: list[Deferred] = []
        self._stop_waiters: list[Deferred] = []
        self._writer_conn: Any = None
        #: ``write_soon`` jobs the writer holds, waiting for a batch to ride in.
        self._riding = 0
        self.stats = WriteStats()
        #: The database's outages, as the log shows them (one line at the start, a
        #: summary while it lasts, one at the end); fed from the store threads.
        self.outage = OutageLog(reactor, f"database {engine.describe()}")
        self._unreachable = False
        #: Called on the writer thread after each committed batch with its job count
        #: and its seconds from start to COMMIT (metrics; must be thread-safe).
        self.on_batch: Callable[[int, float], None] | None = None
        # What open_database() was given, normalised so that another open_database(url)
        # reaches the same database (a second node, the admin CLI). May hold a password:
        # log describe(), never this.
        self.url = ""

    # -- public -------------------------------------------------------------------------

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    @property
    def engine(self) -> Engine:
        """The SQLite or MySQL engine (for tools that need the file or the server)."""
        return self._engine

    def describe(self) -> str:
        """Where the data lives, for logs (no password)."""
        return self._engine.describe()

    def __repr__(self) -> str:
        return f"<Database {self._engine.describe()} {self._state}>"

    def start(self) -> Deferred:
        """Open the connections and migrate the schema; fires with the schema version."""
        if self._state != "new":
            raise StoreError(f"start() called on a {self._state} database")
        self._state = "running"
        with self._lock:
            self._accepting = True
        self._started = Deferred()
        self._spawn("tt-store-writer", self._writer_main)
        if self._engine.wants_checkpoints:
            self._spawn("tt-store-checkpoint", self._checkpoint_main)
        for index in range(self._reader_count):
            self._spawn(f"tt-store-reader-{index}", self._reader_main)
        log.info("store opening {target}", target=self._engine.describe())
        return self._started

    def stop(self) -> Deferred:
        """Refuse new jobs, finish every queued one, commit and close; fires when done."""
        waiter: Deferred = Deferred()
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            waiter.callback(None)
            return waiter
        self._stop_waiters.append(waiter)
        if self._state == "running":
            self._state = "stopping"
            self._stopping.set()
            with self._lock:
                self._accepting = False
                self._write_queue.put(_STOP)
                for _ in range(self._reader_count):
                    self._read_queue.put(_STOP)
            gatherResults(self._thread_done, consumeErrors=True).addBoth(self._stopped)
        return waiter

    def read(
        self, fn: Callable[Concatenate[Txn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run ``fn(txn, *args, **kwargs)`` on a reader thread in a read-only transaction."""
        return self._submit(self._read_queue, fn, args, kwargs)

    def write(
        self, fn: Callable[Concatenate[Txn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run ``fn(txn, *args, **kwargs)`` in the next group commit; fires once durable."""
        return self._submit(self._write_queue, fn, args, kwargs)

    def write_soon(
        self,
        linger: float,
        fn: Callable[Concatenate[Txn, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """Like ``write``, but no COMMIT of its own for up to ``linger`` seconds: the job
        joins the next batch the writer runs for some ``write`` (a message), and only when
        none comes in time does it commit alone.

        For work that may wait a little (push hand-offs and settles): run beside a
        stream of messages it costs no fsync of its own, where every commit of its own
        held up the messages queued behind it for one fsync."""
        d: Deferred[T] = Deferred()
        with self._lock:
            if self._accepting:
                job = _Job(fn, args, kwargs, d, time.monotonic() + max(0.0, linger))
                self._write_queue.put(job)
                return d
        return fail(self._closed())

    @property
    def pending_writes(self) -> int:
        """Jobs waiting for the writer (a queue depth for metrics)."""
        return self._write_queue.qsize() + self._riding

    @property
    def pending_reads(self) -> int:
        """Jobs waiting for a reader thread."""
        return self._read_queue.qsize()

    @contextmanager
    def sync_transaction(self) -> Iterator[Txn]:
        """A blocking write transaction on a private connection (admin CLI, tests).

        Commits when the block ends normally, rolls back when it raises. Never use it on
        the reactor thread of a running server.
        """
        with self.sync_connection() as connection, connection.transaction() as txn:
            yield txn

    @contextmanager
    def sync_connection(self) -> Iterator[SyncConnection]:
        """A private connection for many blocking transactions in a row (the importer):
        opening a MySQL connection per transaction costs more than a page of rows."""
        conn = self._engine.connect("sync")
        try:
            yield SyncConnection(self._engine, conn)
        finally:
            close_quietly(conn)

    def migrate(self) -> int:
        """Blocking: apply the missing migrations on a private connection (admin CLI).

        ``start()`` does the same on the writer thread. Returns the schema version.
        """
        conn = self._engine.connect("sync")
        try:
            return migrate(self._engine, conn)
        finally:
            close_quietly(conn)

    # -- reactor-thread helpers ---------------------------------------------------------

    def _submit(
        self,
        q: queue.SimpleQueue[Any],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        with self._lock:
            if self._accepting:
                q.put(_Job(fn, args, kwargs, d))
                return d
        return fail(self._closed())

    def _closed(self) -> StoreClosedError:
        """Why a job is refused: not started yet, or shutting down."""
        if self._state in ("stopping", "stopped"):
            return StoreStoppingError(f"database is {self._state}")
        return StoreClosedError(f"database is {self._state}")

    def _spawn(self, name: str, target: Callable[[Deferred], None]) -> None:
        done: Deferred = Deferred()
        self._thread_done.append(done)
        thread = threading.Thread(target=target, args=(done,), name=name, daemon=True)
        thread.start()

    def _stopped(self, _: Any) -> None:
        self._state = "stopped"
        self.outage.stop()
        log.info("store closed {target}", target=self._engine.describe())
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _started_ok(self, version: int) -> None:
        assert self._started is not None
        self._started.callback(version)

    def _started_failed(self, failure: Failure) -> None:
        assert self._started is not None
        # Whoever started the store reports it (StoreService: one start-up line).
        log.debug(
            "store failed to open {target}: {error}",
            target=self._engine.describe(),
            error=failure.getErrorMessage(),
        )
        self._started.errback(failure)

    @staticmethod
    def _deliver(outcomes: list[tuple[Deferred, bool, Any]]) -> None:
        for d, ok, value in outcomes:
            if ok:
                d.callback(value)
            else:
                d.errback(value)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        self._reactor.callFromThread(fn, *args)

    # -- writer thread --------------------------------------------------------------------

    def _writer_main(self, done: Deferred) -> None:
        try:
            try:
                self._writer_conn = self._engine.connect("writer")
                version = migrate(self._engine, self._writer_conn)
            except Exception:
                self._start_failure = Failure()
                self._schema_ready.set()
                self._call(self._started_failed, self._start_failure)
            else:
                self._schema_ready.set()
                self._call(self._started_ok, version)
            self._write_loop()
        finally:
            close_quietly(self._writer_conn)
            self._writer_conn = None
            self._call(done.callback, None)

    def _write_loop(self) -> None:
        q = self._write_queue
        #: ``write_soon`` jobs waiting for a batch to join, oldest first.
        riding: list[_Job] = []
        while True:
            if riding:
                wait = riding[0].rides_until - time.monotonic()  # type: ignore[operator]
                try:
                    first = q.get(timeout=wait) if wait > 0 else q.get_nowait()
                except queue.Empty:
                    first = None  # waited long enough: they commit on their own
            else:
                first = q.get()
            stopping = first is _STOP
            if first is not None and not stopping and first.rides_until is not None:
                riding.append(first)
                if first.rides_until > time.monotonic():
                    self._riding = len(riding)
                    continue
            batch, riding = riding, []
            self._riding = 0
            if first is not None and not stopping and first.rides_until is None:
                batch.append(first)
            while not stopping and len(batch) < self._max_batch:
                try:
                    job = q.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
            if batch:
                self._run_batch(batch)
            if stopping:
                return

    def _run_batch(self, jobs: list[_Job]) -> None:
        stats = self.stats
        stats.batches += 1
        stats.jobs += len(jobs)
        stats.largest_batch = max(stats.largest_batch, len(jobs))
        if self._start_failure is not None:
            self._fail_all(jobs, self._start_failure)
            return
        savepoints = False
        retried = False
        deadlocks = 0
        started = time.monotonic()
        order = _lock_order(jobs)
        run = jobs if order is None else [jobs[i] for i in order]
        while True:
            try:
                if self._writer_conn is None:
                    self._writer_conn = self._connect_for_batch()
                    stats.reconnects += 1
                outcomes = self._attempt(self._writer_conn, run, savepoints)
            except _NeedSavepoints:
                stats.savepoint_reruns += 1
                savepoints = True
                continue
            except _BatchRetry as retry:
                if retry.reconnect:
                    close_quietly(self._writer_conn)
                    self._writer_conn = None
                if retry.deadlock and deadlocks < DEADLOCK_RETRIES:
                    # Rolled back whole by InnoDB: the same jobs, in the same order, again.
                    stats.deadlock_retries += 1
                    time.sleep(DEADLOCK_BACKOFF * (1 << deadlocks) * random.uniform(0.5, 1.5))
                    deadlocks += 1
                    continue
                if not retried:
                    retried = True
                    stats.retries += 1
                    if not self._unreachable:
                        log.warn(
                            "write batch of {count} interrupted ({error}); retrying",
                            count=len(jobs),
                            error=retry.failure.getErrorMessage(),
                        )
                    continue
                self._fail_all(jobs, retry.failure, unreachable=retry.reconnect)
                return
            except _BatchFailed as failed:
                self._fail_all(jobs, failed.failure, unreachable=self._lost(failed.failure))
                return
            self._reachable()
            stats.failed_jobs += sum(1 for _, ok, _ in outcomes if not ok)
            if self.on_batch is not None:
                self.on_batch(len(jobs), time.monotonic() - started)
            if order is not None:
                # Answered in arrival order (a connection's acks in the order it sent).
                arrived: list[Any] = [None] * len(jobs)
                for position, index in enumerate(order):
                    arrived[index] = outcomes[position]
                outcomes = arrived
            if any(job.rides_until is not None for job in jobs):
                # The jobs that rode along answer last: a message's ack does not wait
                # for what their callers do next (a push hand-off sends its pushes).
                outcomes = [
                    o for job, o in zip(jobs, outcomes, strict=True) if job.rides_until is None
                ] + [
                    o for job, o in zip(jobs, outcomes, strict=True) if job.rides_until is not None
                ]
            self._call(self._deliver, outcomes)
            return

    def _connect_for_batch(self) -> Any:
        try:
            return self._engine.connect("writer")
        except Exception as exc:
            failure = Failure()
            if self._engine.is_connection_lost(exc):
                raise _BatchRetry(failure, reconnect=True) from exc
            raise _BatchFailed(failure) from exc

    def _fail_all(self, jobs: list[_Job], failure: Failure, unreachable: bool = False) -> None:
        self.stats.failed_jobs += len(jobs)
        if unreachable:
            failure = self._unreachable_failure(failure, len(jobs), "writes failed")
        else:
            log.error(
                "write batch of {count} failed: {error}",
                count=len(jobs),
                error=failure.getErrorMessage(),
            )
        self._call(self._deliver, [(job.deferred, False, failure) for job in jobs])

    # -- outages (called on store threads) -------------------------------------------------

    def _lost(self, failure: Failure) -> bool:
        exc = failure.value
        return isinstance(exc, BaseException) and self._engine.is_connection_lost(exc)

    def _unreachable_failure(self, failure: Failure, jobs: int, kind: str) -> Failure:
        """The database did not answer: count it in the outage log (which logs the
        start, summaries and the end) and fail the jobs with ``StoreUnavailable``."""
        self._unreachable = True
        cause = failure.getErrorMessage()
        self._call(self._count_outage, cause, kind, jobs)
        return Failure(StoreUnavailable(f"database unreachable: {cause}"))

    def _count_outage(self, cause: str, kind: str, jobs: int) -> None:
        self.outage.failed(cause, kind)
        for _ in range(jobs - 1):
            self.outage.count(kind)

    def _reachable(self) -> None:
        if self._unreachable:
            self._unreachable = False
            self._call(self.outage.recovered)

    def _attempt(
        self, conn: Any, jobs: list[_Job], savepoints: bool
    ) -> list[tuple[Deferred, bool, Any]]:
        """One transaction over ``jobs``; their outcomes once COMMIT succeeded."""
        engine = self._engine
        cursor = conn.cursor()
        open_transaction = True
        try:
            try:
                engine.begin_write(cursor)
            except Exception as exc:
                raise self._batch_error(exc) from exc
            outcomes = self._run_jobs(conn, cursor, jobs, savepoints)
            if engine.transaction_lost(conn):
                # A job swallowed an error that ended the transaction: commit nothing.
                raise _BatchRetry(Failure(StoreError("transaction ended early")), False)
            try:
                engine.commit_write(cursor)
            except Exception as exc:
                # Whether a COMMIT cut off by a lost connection was applied is unknown,
                # so no retry here: every job of the batch fails.
                failure = Failure()
                if engine.is_connection_lost(exc):
                    open_transaction = False
                    close_quietly(conn)
                    self._writer_conn = None
                raise _BatchFailed(failure) from exc
            open_transaction = False
            return outcomes
        finally:
            if open_transaction:
                engine.abort_write(conn, cursor)
            with suppress(Exception):
                cursor.close()

    def _batch_error(self, exc: BaseException) -> Exception:
        """What a failure outside any job means for the batch."""
        lost = self._engine.is_connection_lost(exc)
        if lost:
            return _BatchRetry(Failure(), reconnect=True)
        if self._engine.is_transient(exc):
            deadlock = self._engine.dialect is Dialect.MYSQL
            return _BatchRetry(Failure(), reconnect=False, deadlock=deadlock)
        return _BatchFailed(Failure())

    def _run_jobs(
        self, conn: Any, cursor: Any, jobs: list[_Job], savepoints: bool
    ) -> list[tuple[Deferred, bool, Any]]:
        """Run every job; see ``_NeedSavepoints`` for when a job gets its own SAVEPOINT."""
        engine = self._engine
        txn = Txn(cursor, engine)
        outcomes: list[tuple[Deferred, bool, Any]] = []
        for job in jobs:
            writes_before = txn.writes
            try:
                if savepoints:
                    cursor.execute("SAVEPOINT tt_job")
                value = job.fn(txn, *job.args, **job.kwargs)
                if savepoints and engine.release_savepoints:
                    cursor.execute("RELEASE SAVEPOINT tt_job")
            except Exception as exc:
                if engine.is_connection_lost(exc) or engine.is_transient(exc):
                    raise self._batch_error(exc) from exc
                failure = Failure()
                if engine.transaction_lost(conn):
                    raise _BatchRetry(failure, reconnect=False) from exc
                if savepoints:
                    self._rollback_job(cursor)
                elif txn.writes != writes_before:
                    raise _NeedSavepoints() from exc
                # else: the job failed before changing anything; nothing to undo.
                outcomes.append((job.deferred, False, failure))
            else:
                outcomes.append((job.deferred, True, value))
        return outcomes

    def _rollback_job(self, cursor: Any) -> None:
        engine = self._engine
        try:
            cursor.execute("ROLLBACK TO SAVEPOINT tt_job")
            if engine.release_savepoints:
                cursor.execute("RELEASE SAVEPOINT tt_job")
        except Exception as exc:
            # The server dropped the transaction under us: start over.
            lost = engine.is_connection_lost(exc)
            raise _BatchRetry(Failure(), reconnect=lost) from exc

    # -- checkpoint and reader threads -----------------------------------------------------

    def _checkpoint_main(self, done: Deferred) -> None:
        """Copy the WAL back into the database file every second, off the writer thread.

        PASSIVE never blocks the writer or readers; the writer's connection has automatic
        checkpoints turned off, so its COMMITs stay short and steady.
        """
        conn = None
        try:
            self._schema_ready.wait()
            while not self._stopping.wait(CHECKPOINT_INTERVAL):
                try:
                    if conn is None:
                        conn = self._engine.connect("checkpoint")
                    self._engine.checkpoint(conn)
                except Exception as exc:
                    log.warn("WAL checkpoint failed: {error}", error=str(exc))
                    close_quietly(conn)
                    conn = None
        finally:
            close_quietly(conn)
            self._call(done.callback, None)

    def _reader_main(self, done: Deferred) -> None:
        conn = None
        opened = False
        try:
            while True:
                job = self._read_queue.get()
                if job is _STOP:
                    return
                self._schema_ready.wait()
                if self._start_failure is not None:
                    self._call(job.deferred.errback, self._start_failure)
                    continue
                for attempt in (1, 2):
                    try:
                        if conn is None:
                            conn = self._engine.connect("reader")
                            if opened:
                                self.stats.reconnects += 1
                            opened = True
                        value = self._run_read(conn, job)
                    except Exception as exc:
                        lost = self._engine.is_connection_lost(exc)
                        if attempt == 1 and lost:
                            close_quietly(conn)
                            conn = None
                            continue
                        failure = Failure()
                        if lost:
                            failure = self._unreachable_failure(failure, 1, "reads failed")
                        self._call(job.deferred.errback, failure)
                    else:
                        self._reachable()
                        self._call(job.deferred.callback, value)
                    break
        finally:
            close_quietly(conn)
            self._call(done.callback, None)

    def _run_read(self, conn: Any, job: _Job) -> Any:
        cursor = conn.cursor()
        try:
            self._engine.begin_read(cursor)
            try:
                value = job.fn(Txn(cursor, self._engine), *job.args, **job.kwargs)
            except BaseException:
                rollback_quietly(conn)
                raise
            cursor.execute("COMMIT")
            return value
        finally:
            with suppress(Exception):
                cursor.close()


def _lock_order(jobs: list[_Job]) -> list[int] | None:
    """The order to run a batch's jobs in (indexes into ``jobs``), None for as they came:
    jobs without a declared lock key first, as they came, then those with one sorted by
    it (``txn.lock_order``), so that every node's writer takes message row locks in one
    global order and two of them wait for each other instead of deadlocking."""
    if len(jobs) < 2:
        return None
    keys: list[tuple[bool, LockKey]] = []
    for job in jobs:
        try:
            key = lock_key(job.fn, job.args, job.kwargs)
        except Exception:
            key = None  # arguments the job itself will refuse: it fails on its own
        keys.append((False, ()) if key is None else (True, key))
    order = sorted(range(len(jobs)), key=keys.__getitem__)
    return None if order == list(range(len(jobs))) else order


def open_database(
    url: str | None,
    data_dir: str | Path,
    reactor: Any,
    *,
    readers: int = DEFAULT_READERS,
    max_batch: int = DEFAULT_MAX_BATCH,
    create: bool = True,
) -> Database:
    """A not-yet-started :class:`Database` for ``url`` (None/"" = SQLite in ``data_dir``).

    A new SQLite file is created 0600 in a 0700 directory. With ``create=False`` a
    database that does not exist yet is an error instead (for commands that only read).
    """
    if url and not url.startswith("sqlite:"):
        engine: Engine = MySQLEngine(parse_mysql_url(url), create=create)
    else:
        path = sqlite_path(url, data_dir).resolve()
        if not create and not path.is_file():
            raise StoreError(f"no database at {path}")
        if create:
            path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        try:
            private_sqlite_files(path)
        except OSError as e:
            raise StoreError(f"cannot open {path}: {e.strerror or e}") from None
        engine = SQLiteEngine(path)
        url = f"sqlite:///{path}"
    db = Database(engine, reactor, readers=readers, max_batch=max_batch)
    db.url = url
    return db


class SyncConnection:
    """One private connection of :meth:`Database.sync_connection`; each ``transaction()``
    commits when its block ends normally and rolls back when it raises."""

    def __init__(self, engine: Engine, conn: Any) -> None:
        self._engine = engine
        self._conn = conn

    @contextmanager
    def transaction(self) -> Iterator[Txn]:
        engine = self._engine
        cursor = self._conn.cursor()
        try:
            engine.begin_write(cursor)
            yield Txn(cursor, engine)
        except BaseException:
            engine.abort_write(self._conn, cursor)
            raise
        engine.commit_write(cursor)
