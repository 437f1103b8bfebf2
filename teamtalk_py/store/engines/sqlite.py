"""The embedded default: one SQLite file in WAL mode, fsynced at every COMMIT.

Readers run beside the writer (WAL); the writer's connection has automatic checkpoints
turned off and a thread of the pool checkpoints every second instead, so a COMMIT never
stalls on copying the log back.

Readers keep a small page cache (``READER_CACHE_KIB``): SQLite empties a reader's cache
whenever another connection has committed since its last read, so a large one only ever
fills while nothing is written, as in a login storm, where each of the four readers ended
up with its own copy of most of the users table (some 540 bytes per logged-in user, the
idle benchmark's figure). The file's pages stay in the OS page cache, shared by every
connection.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from teamtalk_py.store.engines.base import Engine
from teamtalk_py.store.txn import Dialect, StoreError

DEFAULT_SQLITE_NAME = "teamtalk.sqlite3"
# Oldest SQLite with both UPSERT (3.24) and RETURNING (3.35).
MIN_SQLITE_VERSION = (3, 35, 0)
#: Page cache of each reader connection, KiB (SQLite's default is 2000): some 30 pages,
#: enough for the b-trees' upper levels, which every lookup passes through. Full, the four
#: readers' caches hold about 0.55 MiB.
READER_CACHE_KIB = 128


class SQLiteEngine(Engine):
    dialect = Dialect.SQLITE
    release_savepoints = True
    wants_checkpoints = True

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
                conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
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

    def checkpoint(self, conn: Any) -> None:
        # PASSIVE never blocks the writer or readers.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def describe(self) -> str:
        return f"sqlite:{self.path}"


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
