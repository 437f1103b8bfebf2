"""What repository functions see of the database: :class:`Txn`, SQL helpers and errors.

Repository functions (``accounts``, ``messages``, ``groups``, ``sessions``, ``files``) are
plain synchronous ``fn(txn, ...)`` functions over a :class:`Txn`; they import this module
and nothing of the engines or the pool, so the same function runs in the server's
group commit and in the admin CLI's blocking transaction.

SQL is written once with ``?`` placeholders; the MySQL engine turns them into PyMySQL's
``%s``. Values always travel as parameters, never inside the SQL text.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from teamtalk_py.outage import ShuttingDown, Unavailable


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


class StoreUnavailable(StoreError, Unavailable):
    """The database did not answer (connection refused or lost): the job was not done.
    Logged once per outage by the database's ``OutageLog``, not per job."""


class StoreClosedError(StoreError):
    """The database was stopped (or never started) when a job was submitted."""


class StoreStoppingError(StoreClosedError, ShuttingDown):
    """The database is stopping or stopped: the server is shutting down."""


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer version of teamtalk_py than this one."""


#: A write job's place in its batch (``lock_order``): the rows it locks first.
LockKey = tuple[int, ...]
F = TypeVar("F", bound=Callable[..., Any])

#: ``LockKey`` tiers, in the order the writer runs them: every one-to-one message job
#: (``relations`` rows, then ``unread`` and ``sessions`` rows, each sorted), then the group
#: message jobs by group id (``im_groups`` row, then the member's rows).
PAIR_ROWS = 0
GROUP_ROWS = 1


def lock_order(key: Callable[..., LockKey]) -> Callable[[F], F]:
    """Declare the rows a write function locks first: ``key(*args, **kwargs)`` (the job's
    arguments after ``txn``) names them.

    Nodes sharing MariaDB write side by side, held apart only by InnoDB's row locks; two
    batches that lock the same rows in different orders deadlock. The writer therefore runs
    the jobs that declare a key after the other jobs of the batch, sorted by key (arrival
    order among equal keys), so a batch holding one-to-one and group messages takes its
    message row locks in one global order, whatever order the messages came in
    (``Database._run_batch``). Other jobs (read marks, say) only move earlier, before
    messages that were not yet acknowledged.
    """

    def declare(fn: F) -> F:
        fn.lock_order = key  # type: ignore[attr-defined]
        return fn

    return declare


def lock_key(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> LockKey | None:
    """The key ``fn`` declares for these arguments (``lock_order``), None if it names none."""
    key = getattr(fn, "lock_order", None)
    return None if key is None else key(*args, **kwargs)


class StatementRules(Protocol):
    """What a :class:`Txn` needs from its engine (``store.engines``)."""

    @property
    def dialect(self) -> Dialect: ...

    def convert(self, sql: str) -> str:
        """``sql`` with ``?`` placeholders in the driver's own style."""
        ...

    def is_duplicate(self, exc: BaseException) -> bool:
        """Whether the driver's ``exc`` is a violated UNIQUE or PRIMARY KEY."""
        ...


class Txn:
    """A thin wrapper over a DB-API cursor inside one transaction.

    ``execute`` takes ``?`` placeholders in both dialects and returns the Txn, so
    ``txn.execute(sql, params).fetchone()`` reads naturally. A violated unique key raises
    :class:`DuplicateError` whatever the driver.

    ``writes`` counts the statements that may have changed data (anything but a SELECT
    that succeeded); the writer uses it to know whether a failed job left changes behind.
    """

    __slots__ = ("_cursor", "_rules", "dialect", "writes")

    def __init__(self, cursor: Any, rules: StatementRules) -> None:
        self._cursor = cursor
        self._rules = rules
        self.dialect: Dialect = rules.dialect
        self.writes = 0

    @property
    def for_update(self) -> str:
        """`` FOR UPDATE`` on MySQL, where nodes sharing the database must lock the rows
        they read to write; empty on SQLite, whose one writer already excludes others."""
        return " FOR UPDATE" if self.dialect is Dialect.MYSQL else ""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Txn:
        try:
            self._cursor.execute(self._rules.convert(sql), tuple(params))
        except Exception as exc:
            if self._rules.is_duplicate(exc):
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
            self._cursor.executemany(self._rules.convert(sql), [tuple(r) for r in rows])
        except Exception as exc:
            if self._rules.is_duplicate(exc):
                raise DuplicateError(str(exc)) from exc
            raise
        if _may_write(sql):
            self.writes += 1
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
