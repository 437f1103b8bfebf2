"""The relational store's engine: connections, migrations and the two ways to run SQL.

Repository functions (``accounts``, ``messages``) are plain synchronous ``fn(txn, ...)``
functions over a :class:`Txn`. :class:`Database` runs them off the reactor thread:

* :meth:`Database.read` in a small pool of reader threads, each with its own connection
  (SQLite in WAL mode lets readers run beside the writer);
* :meth:`Database.write` in ONE writer thread that commits in groups: it takes every job
  queued at that moment (up to ``max_batch``), runs them in a single transaction, COMMITs
  once and only then fires the Deferreds. One fsync then makes hundreds of messages
  durable. A failing job only loses its own changes: each job runs inside its own
  SAVEPOINT, taken lazily (see ``_NeedSavepoints``) because jobs rarely fail and a
  savepoint per job costs about a third of the throughput. Writers of one database take
  turns across processes (SQLite's write lock, a named lock on MySQL), so nodes sharing a
  MySQL database do not deadlock each other's batches.

The admin CLI reuses the same repository functions through
:meth:`Database.sync_transaction`, a blocking transaction on a private connection.

SQL is written once with ``?`` placeholders; the MySQL backend turns them into PyMySQL's
``%s``. Values always travel as parameters, never inside the SQL text.
"""

from __future__ import annotations

import enum
import functools
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="teamtalk.store")

T = TypeVar("T")

DEFAULT_SQLITE_NAME = "teamtalk.sqlite3"
DEFAULT_MAX_BATCH = 512
DEFAULT_READERS = 4
CHECKPOINT_INTERVAL = 1.0
# Oldest SQLite with both UPSERT (3.24) and RETURNING (3.35).
MIN_SQLITE_VERSION = (3, 35, 0)


class Dialect(enum.Enum):
    """Which SQL flavour a connection speaks; repository functions branch on it rarely."""

    SQLITE = "sqlite"
    MYSQL = "mysql"

    def __str__(self) -> str:
        return self.value


class StoreError(Exception):
    """Base class of the errors the store raises itself."""


class DuplicateError(StoreError):
    """An insert or update hit a UNIQUE or PRIMARY KEY constraint (name taken, ...)."""


class StoreClosedError(StoreError):
    """The database was stopped (or never started) when a job was submitted."""


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer version of teamtalk_py than this one."""


class WriterLockTimeout(StoreError):
    """Another node held the MySQL writer lock for too long."""


# --------------------------------------------------------------------------------------
# Txn


class Txn:
    """A thin wrapper over a DB-API cursor inside one transaction.

    ``execute`` takes ``?`` placeholders in both dialects and returns the Txn, so
    ``txn.execute(sql, params).fetchone()`` reads naturally. A violated unique key raises
    :class:`DuplicateError` whatever the driver.

    ``writes`` counts the statements that may have changed data (anything but a SELECT
    that succeeded); the writer uses it to know whether a failed job left changes behind.
    """

    __slots__ = ("_cursor", "_backend", "dialect", "writes")

    def __init__(self, cursor: Any, backend: _Backend) -> None:
        self._cursor = cursor
        self._backend = backend
        self.dialect: Dialect = backend.dialect
        self.writes = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Txn:
        try:
            self._cursor.execute(self._backend.convert(sql), tuple(params))
        except Exception as exc:
            if self._backend.is_duplicate(exc):
                raise DuplicateError(str(exc)) from exc
            raise
        # A statement that failed was undone by the server, so only successes count.
        if _may_write(sql):
            self.writes += 1
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Txn:
        """One statement over many parameter rows (PyMySQL folds an INSERT into one
        multi-row statement; SQLite reuses one prepared statement)."""
        if not rows:
            return self
        try:
            self._cursor.executemany(self._backend.convert(sql), [tuple(r) for r in rows])
        except Exception as exc:
            if self._backend.is_duplicate(exc):
                raise DuplicateError(str(exc)) from exc
            raise
        if _may_write(sql):
            self.writes += 1
        return self

    def execute_batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> Txn:
        """Run statements in order, in ONE round trip on MySQL (multi-statement query).

        ``fetchone``/``fetchall`` then read the last statement's rows. Meant for hot paths
        whose statements do not need each other's results in Python. If one fails, the
        ones before it have run (the enclosing job is rolled back as usual).
        """
        if self.dialect is Dialect.SQLITE:
            for sql, params in statements:
                self.execute(sql, params)
            return self
        # Counted up front: a failure in the middle leaves the earlier statements applied.
        self.writes += sum(1 for sql, _ in statements if _may_write(sql))
        sql = _joined(tuple(sql for sql, _ in statements))
        params = tuple(value for _, values in statements for value in values)
        try:
            self._cursor.execute(sql, params)
            while self._cursor.nextset():
                pass  # the last result set stays current
        except Exception as exc:
            if self._backend.is_duplicate(exc):
                raise DuplicateError(str(exc)) from exc
            raise
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._cursor.fetchall())

    @property
    def lastrowid(self) -> int:
        return self._cursor.lastrowid

    @property
    def rowcount(self) -> int:
        """Rows matched by the last UPDATE/DELETE (MySQL is opened with FOUND_ROWS)."""
        return self._cursor.rowcount


@functools.lru_cache(maxsize=1024)
def _may_write(sql: str) -> bool:
    return sql.lstrip()[:6].upper() != "SELECT"


@functools.lru_cache(maxsize=256)
def _joined(statements: tuple[str, ...]) -> str:
    return ";\n".join(_to_pyformat(sql) for sql in statements)


def placeholders(count: int) -> str:
    """``?, ?, ?`` for an ``IN (...)`` list of ``count`` parameters (never values)."""
    if count < 1:
        raise ValueError("an IN list needs at least one parameter")
    return ", ".join("?" * count)


@functools.cache
def upsert_sql(
    dialect: Dialect,
    table: str,
    columns: tuple[str, ...],
    conflict: tuple[str, ...],
    update: str,
    rows: int = 1,
) -> str:
    """``INSERT ... VALUES (?, ...) [, (...)]`` that runs ``update`` when a key exists.

    ``update`` is an assignment list such as ``"count = count + 1"``; in both dialects a bare
    column name there means the existing row's value. Its own ``?`` parameters follow the
    inserted values. Table and column names are code constants, never user input.
    """
    row = "(" + ", ".join("?" * len(columns)) + ")"
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"
    if dialect is Dialect.SQLITE:
        return f"{head} ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {update}"
    return f"{head} ON DUPLICATE KEY UPDATE {update}"


# --------------------------------------------------------------------------------------
# Backends: how to connect, begin, and classify driver errors.


class _Backend:
    dialect: Dialect
    # SQLite savepoints stack up until released; MySQL replaces a savepoint of the same
    # name, which saves one round trip per job.
    release_savepoints: bool

    def connect(self, role: str) -> Any:
        raise NotImplementedError

    def convert(self, sql: str) -> str:
        return sql

    def begin_read(self, cursor: Any) -> None:
        raise NotImplementedError

    def begin_write(self, cursor: Any) -> None:
        """Start a write transaction, once every other writer of the database is done."""
        raise NotImplementedError

    def commit_write(self, cursor: Any) -> None:
        cursor.execute("COMMIT")

    def abort_write(self, conn: Any, cursor: Any) -> None:
        """Roll back and let other writers in; never raises."""
        _rollback_quietly(conn)

    def is_duplicate(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def is_connection_lost(self, exc: BaseException) -> bool:
        return False

    def is_transient(self, exc: BaseException) -> bool:
        """The server rolled the whole transaction back (deadlock, busy): rerun the batch."""
        return False

    def transaction_lost(self, conn: Any) -> bool:
        """After an error: did the database end our transaction on its own?"""
        return False

    def lock_migrations(self, cursor: Any) -> None:
        pass

    def unlock_migrations(self, cursor: Any) -> None:
        pass

    def describe(self) -> str:
        raise NotImplementedError


class _SQLiteBackend(_Backend):
    dialect = Dialect.SQLITE
    release_savepoints = True

    def __init__(self, path: Path, busy_timeout: float = 10.0) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old; "
                f"{'.'.join(map(str, MIN_SQLITE_VERSION))} or newer is needed"
            )
        self.path = path
        self.busy_timeout = busy_timeout

    def connect(self, role: str) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions, we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(
            str(self.path),
            timeout=self.busy_timeout,
            isolation_level=None,
            cached_statements=256,
        )
        try:
            if role != "reader":
                conn.execute("PRAGMA journal_mode=WAL").fetchall()
            # FULL: the WAL is fsynced at every COMMIT, so an acked message survives a
            # power cut. Group commit pays this once per batch.
            conn.execute("PRAGMA synchronous=FULL")
            if role == "reader":
                conn.execute("PRAGMA query_only=ON")
            if role == "writer":
                # Checkpoints run on their own thread (Database._checkpoint_main): done
                # inside a COMMIT they stall the writer, and every ack behind it.
                conn.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            conn.close()
            raise
        return conn

    def begin_read(self, cursor: Any) -> None:
        cursor.execute("BEGIN")

    def begin_write(self, cursor: Any) -> None:
        # IMMEDIATE takes the database's write lock up front, so another writer (a second
        # node, the admin CLI) waits on busy_timeout instead of failing half-way.
        cursor.execute("BEGIN IMMEDIATE")

    def is_duplicate(self, exc: BaseException) -> bool:
        if not isinstance(exc, sqlite3.IntegrityError):
            return False
        name = getattr(exc, "sqlite_errorname", "")
        if name:
            return name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")
        return "UNIQUE constraint" in str(exc)

    def is_transient(self, exc: BaseException) -> bool:
        if not isinstance(exc, sqlite3.OperationalError):
            return False
        return getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY") or (
            "database is locked" in str(exc)
        )

    def transaction_lost(self, conn: Any) -> bool:
        # Some errors (disk full, I/O) make SQLite roll back by itself; later statements
        # would then run in autocommit mode, outside our batch.
        return not conn.in_transaction

    def describe(self) -> str:
        return f"sqlite:{self.path}"


_DB_NAME = re.compile(r"^[A-Za-z0-9_$]{1,64}$")
# Connection lost or unusable: reconnect and run the batch again.
_MYSQL_LOST = frozenset({2003, 2006, 2013, 2055})
# Deadlock / lock wait timeout: InnoDB may have rolled back the whole transaction.
_MYSQL_TRANSIENT = frozenset({1205, 1213})
_MYSQL_DUPLICATE = 1062
_MYSQL_UNKNOWN_DATABASE = 1049


@functools.lru_cache(maxsize=1024)
def _to_pyformat(sql: str) -> str:
    # PyMySQL interpolates with ``%``, so a literal ``%`` (LIKE 'a%', modulo) is doubled.
    return sql.replace("%", "%%").replace("?", "%s")


@dataclass(frozen=True)
class MySQLParams:
    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None

    def describe(self) -> str:
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"mysql://{self.user}@{where}/{self.database}"


class _MySQLBackend(_Backend):
    dialect = Dialect.MYSQL
    release_savepoints = False

    def __init__(self, params: MySQLParams, timeout: float = 120.0, lock_timeout: int = 30) -> None:
        import pymysql  # noqa: F401  (fail at open time, not at first query)

        if not _DB_NAME.match(params.database):
            raise StoreError(f"invalid MySQL database name {params.database!r}")
        self.params = params
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self._writer_lock = f"teamtalk_py.writer.{params.database}"[:64]

    def _connect(self, database: str | None) -> Any:
        import pymysql
        from pymysql.constants import CLIENT

        p = self.params
        return pymysql.connect(
            host=p.host,
            port=p.port,
            user=p.user,
            password=p.password,
            database=database,
            unix_socket=p.unix_socket,
            charset="utf8mb4",
            autocommit=False,
            # FOUND_ROWS: rowcount = rows matched, as in SQLite, not rows whose value
            # changed. MULTI_STATEMENTS: Txn.execute_batch sends a hot path in one round
            # trip (values are always escaped parameters, never spliced SQL).
            client_flag=CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS,
            connect_timeout=10,
            read_timeout=self.timeout,
            write_timeout=self.timeout,
            init_command=(
                "SET SESSION sql_mode = "
                "'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'"
            ),
        )

    def connect(self, role: str) -> Any:
        import pymysql

        try:
            return self._connect(self.params.database)
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != _MYSQL_UNKNOWN_DATABASE:
                raise
        # First start against this server: create the database (name validated above;
        # identifiers cannot be parameters).
        conn = self._connect(None)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{self.params.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
            conn.commit()
        finally:
            conn.close()
        log.info("created MySQL database {database}", database=self.params.database)
        return self._connect(self.params.database)

    def convert(self, sql: str) -> str:
        return _to_pyformat(sql)

    def begin_read(self, cursor: Any) -> None:
        cursor.execute("START TRANSACTION READ ONLY")

    # Writers of one database take turns through a named lock, like SQLite's write lock.
    # Without it, two nodes committing large batches over the same users' rows deadlock
    # all the time. Taking and releasing it rides along with START TRANSACTION and COMMIT,
    # so it costs no extra round trip; the server drops it if the connection dies.

    def begin_write(self, cursor: Any) -> None:
        cursor.execute(
            "SELECT GET_LOCK(%s, %s);\nSTART TRANSACTION", (self._writer_lock, self.lock_timeout)
        )
        (got,) = cursor.fetchone()
        while cursor.nextset():
            pass
        if got != 1:
            raise WriterLockTimeout(
                f"another writer held {self._writer_lock} for over {self.lock_timeout}s"
            )

    def commit_write(self, cursor: Any) -> None:
        cursor.execute("COMMIT;\nSELECT RELEASE_LOCK(%s)", (self._writer_lock,))
        with suppress(Exception):  # committed; a failed release ends with the session
            while cursor.nextset():
                pass

    def abort_write(self, conn: Any, cursor: Any) -> None:
        try:
            cursor.execute("ROLLBACK;\nSELECT RELEASE_LOCK(%s)", (self._writer_lock,))
            while cursor.nextset():
                pass
        except Exception:
            _rollback_quietly(conn)

    def _code(self, exc: BaseException) -> int | None:
        import pymysql

        if isinstance(exc, pymysql.err.MySQLError) and exc.args:
            code = exc.args[0]
            return code if isinstance(code, int) else None
        return None

    def is_duplicate(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.IntegrityError) and self._code(exc) == _MYSQL_DUPLICATE

    def is_connection_lost(self, exc: BaseException) -> bool:
        import pymysql

        if isinstance(exc, pymysql.err.InterfaceError):
            return True  # "(0, '')": the connection object was already closed
        return isinstance(exc, pymysql.err.OperationalError) and self._code(exc) in _MYSQL_LOST

    def is_transient(self, exc: BaseException) -> bool:
        import pymysql

        if isinstance(exc, WriterLockTimeout):
            return True
        return isinstance(exc, pymysql.err.OperationalError) and self._code(exc) in _MYSQL_TRANSIENT

    def _lock_name(self) -> str:
        return f"teamtalk_py.migrate.{self.params.database}"[:64]

    def lock_migrations(self, cursor: Any) -> None:
        # Several nodes may start at once against one database: one migrates, the others
        # wait and then find nothing left to do.
        cursor.execute("SELECT GET_LOCK(%s, 120)", (self._lock_name(),))
        (got,) = cursor.fetchone()
        if got != 1:
            raise StoreError("timed out waiting for the migration lock")

    def unlock_migrations(self, cursor: Any) -> None:
        cursor.execute("SELECT RELEASE_LOCK(%s)", (self._lock_name(),))
        cursor.fetchall()

    def describe(self) -> str:
        return self.params.describe()


def _close_quietly(conn: Any) -> None:
    if conn is not None:
        with suppress(Exception):
            conn.close()


def _rollback_quietly(conn: Any) -> None:
    with suppress(Exception):
        conn.rollback()


# --------------------------------------------------------------------------------------
# Migrations (the DDL itself lives in schema.py)


def _migrate(backend: _Backend, conn: Any) -> int:
    """Apply every missing migration on ``conn``; return the resulting schema version."""
    from teamtalk_py.store import schema

    dialect = backend.dialect
    cursor = conn.cursor()
    txn = Txn(cursor, backend)
    backend.lock_migrations(cursor)
    try:
        if dialect is Dialect.SQLITE:
            # Everything in one transaction: SQLite DDL is transactional, and the write
            # lock keeps a second process from migrating at the same time.
            backend.begin_write(cursor)
        try:
            txn.execute(schema.VERSION_TABLE[dialect])
            current = schema.current_version(txn)
            if current > schema.LATEST_VERSION:
                raise SchemaTooNewError(
                    f"database schema version {current} is newer than this code "
                    f"({schema.LATEST_VERSION})"
                )
            for migration in schema.MIGRATIONS:
                if migration.version <= current:
                    continue
                for statement in migration.steps(dialect):
                    if callable(statement):
                        statement(txn)  # a step that looks before it alters (re-runnable)
                    else:
                        txn.execute(statement)
                # MySQL commits each DDL statement implicitly, so the steps use IF NOT
                # EXISTS and a half-applied migration is simply re-run.
                txn.execute(
                    "INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?)",
                    (migration.version, migration.description, int(time.time())),
                )
                if dialect is Dialect.MYSQL:
                    conn.commit()
                log.info(
                    "schema migrated to version {version}: {description}",
                    version=migration.version,
                    description=migration.description,
                )
                current = migration.version
            cursor.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            raise
        return current
    finally:
        with suppress(Exception):
            backend.unlock_migrations(cursor)
        with suppress(Exception):
            cursor.close()


# --------------------------------------------------------------------------------------
# Database


_STOP = object()


@dataclass(slots=True)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    deferred: Deferred


class _BatchRetry(Exception):
    """The transaction is gone (connection lost, deadlock): run the whole batch again."""

    def __init__(self, failure: Failure, reconnect: bool) -> None:
        super().__init__(failure.getErrorMessage())
        self.failure = failure
        self.reconnect = reconnect


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
    savepoint_reruns: int = 0


class Database:
    """SQLite or MySQL behind a reader pool and a group-committing writer thread.

    Write functions may run more than once (a batch is run again after a lost MySQL
    connection or a deadlock, or with savepoints after a job failed half-way), so they
    must only touch the database through their ``txn``.
    """

    def __init__(
        self,
        backend: _Backend,
        reactor: Any,
        *,
        readers: int = DEFAULT_READERS,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if readers < 1 or max_batch < 1:
            raise ValueError("readers and max_batch must be at least 1")
        self._backend = backend
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
        self.stats = WriteStats()
        # What open_database() was given, normalised so that another open_database(url)
        # reaches the same database (a second node, the admin CLI). May hold a password:
        # log describe(), never this.
        self.url = ""

    # -- public -------------------------------------------------------------------------

    @property
    def dialect(self) -> Dialect:
        return self._backend.dialect

    def describe(self) -> str:
        """Where the data lives, for logs (no password)."""
        return self._backend.describe()

    def __repr__(self) -> str:
        return f"<Database {self._backend.describe()} {self._state}>"

    def start(self) -> Deferred:
        """Open the connections and migrate the schema; fires with the schema version."""
        if self._state != "new":
            raise StoreError(f"start() called on a {self._state} database")
        self._state = "running"
        with self._lock:
            self._accepting = True
        self._started = Deferred()
        self._spawn("tt-store-writer", self._writer_main)
        if self.dialect is Dialect.SQLITE:
            self._spawn("tt-store-checkpoint", self._checkpoint_main)
        for index in range(self._reader_count):
            self._spawn(f"tt-store-reader-{index}", self._reader_main)
        log.info("store opening {target}", target=self._backend.describe())
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

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn(txn, *args, **kwargs)`` on a reader thread in a read-only transaction."""
        return self._submit(self._read_queue, fn, args, kwargs)

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn(txn, *args, **kwargs)`` in the next group commit; fires once durable."""
        return self._submit(self._write_queue, fn, args, kwargs)

    @property
    def pending_writes(self) -> int:
        return self._write_queue.qsize()

    @contextmanager
    def sync_transaction(self) -> Iterator[Txn]:
        """A blocking write transaction on a private connection (admin CLI, tests).

        Commits when the block ends normally, rolls back when it raises. Never use it on
        the reactor thread of a running server.
        """
        backend = self._backend
        conn = backend.connect("sync")
        try:
            cursor = conn.cursor()
            try:
                backend.begin_write(cursor)
                yield Txn(cursor, backend)
            except BaseException:
                backend.abort_write(conn, cursor)
                raise
            backend.commit_write(cursor)
        finally:
            _close_quietly(conn)

    def migrate(self) -> int:
        """Blocking: apply the missing migrations on a private connection (admin CLI).

        ``start()`` does the same on the writer thread. Returns the schema version.
        """
        conn = self._backend.connect("sync")
        try:
            return _migrate(self._backend, conn)
        finally:
            _close_quietly(conn)

    # -- reactor-thread helpers ---------------------------------------------------------

    def _submit(
        self,
        q: queue.SimpleQueue[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Deferred:
        d: Deferred = Deferred()
        with self._lock:
            if self._accepting:
                q.put(_Job(fn, args, kwargs, d))
                return d
        return fail(StoreClosedError(f"database is {self._state}"))

    def _spawn(self, name: str, target: Callable[[Deferred], None]) -> None:
        done: Deferred = Deferred()
        self._thread_done.append(done)
        thread = threading.Thread(target=target, args=(done,), name=name, daemon=True)
        thread.start()

    def _stopped(self, _: Any) -> None:
        self._state = "stopped"
        log.info("store closed {target}", target=self._backend.describe())
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _started_ok(self, version: int) -> None:
        assert self._started is not None
        self._started.callback(version)

    def _started_failed(self, failure: Failure) -> None:
        assert self._started is not None
        log.error(
            "store failed to open {target}: {error}",
            target=self._backend.describe(),
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
                self._writer_conn = self._backend.connect("writer")
                version = _migrate(self._backend, self._writer_conn)
            except Exception:
                self._start_failure = Failure()
                self._schema_ready.set()
                self._call(self._started_failed, self._start_failure)
            else:
                self._schema_ready.set()
                self._call(self._started_ok, version)
            self._write_loop()
        finally:
            _close_quietly(self._writer_conn)
            self._writer_conn = None
            self._call(done.callback, None)

    def _write_loop(self) -> None:
        q = self._write_queue
        while True:
            first = q.get()
            if first is _STOP:
                return
            batch = [first]
            stopping = False
            while len(batch) < self._max_batch:
                try:
                    job = q.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
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
        while True:
            try:
                if self._writer_conn is None:
                    self._writer_conn = self._connect_for_batch()
                outcomes = self._attempt(self._writer_conn, jobs, savepoints)
            except _NeedSavepoints:
                stats.savepoint_reruns += 1
                savepoints = True
                continue
            except _BatchRetry as retry:
                if retry.reconnect:
                    _close_quietly(self._writer_conn)
                    self._writer_conn = None
                if not retried:
                    retried = True
                    stats.retries += 1
                    log.warn(
                        "write batch of {count} interrupted ({error}); retrying",
                        count=len(jobs),
                        error=retry.failure.getErrorMessage(),
                    )
                    continue
                self._fail_all(jobs, retry.failure)
                return
            except _BatchFailed as failed:
                self._fail_all(jobs, failed.failure)
                return
            stats.failed_jobs += sum(1 for _, ok, _ in outcomes if not ok)
            self._call(self._deliver, outcomes)
            return

    def _connect_for_batch(self) -> Any:
        try:
            return self._backend.connect("writer")
        except Exception as exc:
            failure = Failure()
            if self._backend.is_connection_lost(exc):
                raise _BatchRetry(failure, reconnect=True) from exc
            raise _BatchFailed(failure) from exc

    def _fail_all(self, jobs: list[_Job], failure: Failure) -> None:
        self.stats.failed_jobs += len(jobs)
        log.error(
            "write batch of {count} failed: {error}",
            count=len(jobs),
            error=failure.getErrorMessage(),
        )
        self._call(self._deliver, [(job.deferred, False, failure) for job in jobs])

    def _attempt(
        self, conn: Any, jobs: list[_Job], savepoints: bool
    ) -> list[tuple[Deferred, bool, Any]]:
        """One transaction over ``jobs``; their outcomes once COMMIT succeeded."""
        backend = self._backend
        cursor = conn.cursor()
        open_transaction = True
        try:
            try:
                backend.begin_write(cursor)
            except Exception as exc:
                raise self._batch_error(exc) from exc
            outcomes = self._run_jobs(conn, Txn(cursor, backend), jobs, savepoints)
            if backend.transaction_lost(conn):
                # A job swallowed an error that ended the transaction: commit nothing.
                raise _BatchRetry(Failure(StoreError("transaction ended early")), False)
            try:
                backend.commit_write(cursor)
            except Exception as exc:
                # Whether a COMMIT cut off by a lost connection was applied is unknown,
                # so no retry here: every job of the batch fails.
                failure = Failure()
                if backend.is_connection_lost(exc):
                    open_transaction = False
                    _close_quietly(conn)
                    self._writer_conn = None
                raise _BatchFailed(failure) from exc
            open_transaction = False
            return outcomes
        finally:
            if open_transaction:
                backend.abort_write(conn, cursor)
            with suppress(Exception):
                cursor.close()

    def _batch_error(self, exc: BaseException) -> Exception:
        """What a failure outside any job means for the batch."""
        lost = self._backend.is_connection_lost(exc)
        if lost or self._backend.is_transient(exc):
            return _BatchRetry(Failure(), reconnect=lost)
        return _BatchFailed(Failure())

    def _run_jobs(
        self, conn: Any, txn: Txn, jobs: list[_Job], savepoints: bool
    ) -> list[tuple[Deferred, bool, Any]]:
        """Run every job; see ``_NeedSavepoints`` for when a job gets its own SAVEPOINT."""
        backend = self._backend
        cursor = txn._cursor
        outcomes: list[tuple[Deferred, bool, Any]] = []
        for job in jobs:
            writes_before = txn.writes
            try:
                if savepoints:
                    cursor.execute("SAVEPOINT tt_job")
                value = job.fn(txn, *job.args, **job.kwargs)
                if savepoints and backend.release_savepoints:
                    cursor.execute("RELEASE SAVEPOINT tt_job")
            except Exception as exc:
                if backend.is_connection_lost(exc) or backend.is_transient(exc):
                    raise self._batch_error(exc) from exc
                failure = Failure()
                if backend.transaction_lost(conn):
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
        backend = self._backend
        try:
            cursor.execute("ROLLBACK TO SAVEPOINT tt_job")
            if backend.release_savepoints:
                cursor.execute("RELEASE SAVEPOINT tt_job")
        except Exception as exc:
            # The server dropped the transaction under us: start over.
            lost = backend.is_connection_lost(exc)
            raise _BatchRetry(Failure(), reconnect=lost) from exc

    # -- reader threads -------------------------------------------------------------------

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
                        conn = self._backend.connect("checkpoint")
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except Exception as exc:
                    log.warn("WAL checkpoint failed: {error}", error=str(exc))
                    _close_quietly(conn)
                    conn = None
        finally:
            _close_quietly(conn)
            self._call(done.callback, None)

    def _reader_main(self, done: Deferred) -> None:
        conn = None
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
                            conn = self._backend.connect("reader")
                        value = self._run_read(conn, job)
                    except Exception as exc:
                        if attempt == 1 and self._backend.is_connection_lost(exc):
                            _close_quietly(conn)
                            conn = None
                            continue
                        self._call(job.deferred.errback, Failure())
                    else:
                        self._call(job.deferred.callback, value)
                    break
        finally:
            _close_quietly(conn)
            self._call(done.callback, None)

    def _run_read(self, conn: Any, job: _Job) -> Any:
        cursor = conn.cursor()
        try:
            self._backend.begin_read(cursor)
            try:
                value = job.fn(Txn(cursor, self._backend), *job.args, **job.kwargs)
            except BaseException:
                _rollback_quietly(conn)
                raise
            cursor.execute("COMMIT")
            return value
        finally:
            with suppress(Exception):
                cursor.close()


# --------------------------------------------------------------------------------------
# Opening


def parse_mysql_url(url: str) -> MySQLParams:
    """``mysql://user:pw@host:port/dbname`` (also ``mariadb://``, ``mysql+pymysql://``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
        raise StoreError(f"not a MySQL URL: {parts.scheme}://...")
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise StoreError("MySQL URL needs a database name: mysql://user:pw@host:port/dbname")
    query = parse_qs(parts.query)
    socket = query.get("unix_socket", [None])[0]
    return MySQLParams(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
        unix_socket=socket,
    )


def sqlite_path(url: str | None, data_dir: str | Path) -> Path:
    """Where the SQLite file lives: ``<data_dir>/teamtalk.sqlite3`` unless a URL names one.

    ``sqlite:///name.db`` is relative to ``data_dir``, ``sqlite:////abs/name.db`` absolute.
    """
    base = Path(data_dir)
    if not url:
        return base / DEFAULT_SQLITE_NAME
    if not url.startswith("sqlite://"):
        raise StoreError(f"not a SQLite URL: {url!r}")
    rest = url[len("sqlite://") :]
    if rest.startswith("/"):
        rest = rest[1:]
    if not rest:
        return base / DEFAULT_SQLITE_NAME
    if rest == ":memory:":
        raise StoreError("sqlite :memory: cannot be shared between the store's threads")
    path = Path(rest)
    return path if path.is_absolute() else base / path


def open_database(
    url: str | None,
    data_dir: str | Path,
    reactor: Any,
    *,
    readers: int = DEFAULT_READERS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Database:
    """A not-yet-started :class:`Database` for ``url`` (None/"" = SQLite in ``data_dir``)."""
    if url and not url.startswith("sqlite:"):
        backend: _Backend = _MySQLBackend(parse_mysql_url(url))
    else:
        path = sqlite_path(url, data_dir).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = _SQLiteBackend(path)
        url = f"sqlite:///{path}"
    db = Database(backend, reactor, readers=readers, max_batch=max_batch)
    db.url = url
    return db
