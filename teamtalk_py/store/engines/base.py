"""What every engine tells the pool: how to connect, begin, commit and classify errors.

An engine knows one database product (``sqlite.py``, ``mysql.py``) and nothing of jobs,
batches or threads; :class:`~teamtalk_py.store.database.Database` drives it.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from teamtalk_py.store.txn import Dialect


class Engine:
    """Base class of the engines; the defaults suit a database that needs no help."""

    dialect: Dialect
    # SQLite savepoints stack up until released; MySQL replaces a savepoint of the same
    # name, which saves one round trip per job.
    release_savepoints: bool
    # Whether the pool runs a thread calling ``checkpoint`` every second (SQLite's WAL).
    wants_checkpoints = False

    def connect(self, role: str) -> Any:
        """A new DB-API connection for ``role`` (writer, reader, checkpoint, sync)."""
        raise NotImplementedError

    def convert(self, sql: str) -> str:
        return sql

    def begin_read(self, cursor: Any) -> None:
        raise NotImplementedError

    def begin_write(self, cursor: Any) -> None:
        """Start a write transaction (SQLite: once every other writer of the file is done)."""
        raise NotImplementedError

    def commit_write(self, cursor: Any) -> None:
        cursor.execute("COMMIT")

    def abort_write(self, conn: Any, cursor: Any) -> None:
        """Roll back and let other writers in; never raises."""
        rollback_quietly(conn)

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

    def checkpoint(self, conn: Any) -> None:
        """Fold the write-ahead log back into the database (``wants_checkpoints``)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def close_quietly(conn: Any) -> None:
    if conn is not None:
        with suppress(Exception):
            conn.close()


def rollback_quietly(conn: Any) -> None:
    with suppress(Exception):
        conn.rollback()
