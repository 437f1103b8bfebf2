"""Store test plumbing: a started ``Database`` on SQLite and on MariaDB for trial tests.

Store tests are written once as a mixin of ``test_*`` methods that use
``self.database``, then run on both backends by two concrete classes::

    class AccountTests:            # the tests, on self.database
        async def test_x(self): ...

    class SQLiteAccountTests(AccountTests, SQLiteStoreCase): pass
    class MariaDBAccountTests(AccountTests, MariaDBStoreCase): pass

The MariaDB server comes from ``TEAMTALK_TEST_MYSQL`` (default
``mysql://root@127.0.0.1:3306``). Each test process creates one ``tt_test_<random>``
database the first time a test needs it and drops it at exit; the tables are emptied
after every test. Without a reachable server the MariaDB tests are skipped locally, but
fail when ``CI`` is set.
"""

from __future__ import annotations

import atexit
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from twisted.internet import reactor

from teamtalk_py.store import schema
from teamtalk_py.store.database import Database, open_database
from teamtalk_testing.scratch import DEFAULT_MYSQL, ScratchDatabase, Unreachable, drop_database
from tests.support import TestCase, server_unreachable

MYSQL_SERVER_ENV = "TEAMTALK_TEST_MYSQL"

SQLITE = "sqlite"
MARIADB = "mysql"


def mysql_server() -> str:
    """The MariaDB server URL (no database) the tests use."""
    return os.environ.get(MYSQL_SERVER_ENV, DEFAULT_MYSQL).rstrip("/")


def drop_mysql_database(name: str) -> None:
    """``DROP DATABASE IF EXISTS name`` on the test server."""
    drop_database(mysql_server(), name)


class Gate:
    """A write job that holds the writer thread until released, so that the jobs queued
    meanwhile are committed together in the next batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, txn) -> None:
        self.entered.set()
        if not self.release.wait(10):
            raise AssertionError("gate never released")


# The process's test database: its URL once created, or why it could not be.
_mysql_url: str | None = None
_mysql_unreachable: str | None = None


def mysql_url() -> str:
    """URL of this process's ``tt_test_<random>`` database, created on first use and
    dropped at exit. Skips the calling test (fails it when ``CI`` is set) when the
    server is not reachable."""
    global _mysql_url, _mysql_unreachable
    if _mysql_url is not None:
        return _mysql_url
    if _mysql_unreachable is not None:
        server_unreachable(_mysql_unreachable)
    try:
        database = ScratchDatabase(mysql_server(), "tt_test")
    except Unreachable as exc:
        _mysql_unreachable = str(exc)
        server_unreachable(_mysql_unreachable)
    atexit.register(database.drop)
    _mysql_url = database.url
    return _mysql_url


def empty_tables(db: Database) -> None:
    """Delete every row of every store table (blocking, on a private connection)."""
    with db.sync_transaction() as txn:
        for table in schema.TABLES:
            txn.execute(f"DELETE FROM {table}")


def backend_url(backend: str) -> str | None:
    """The ``open_database`` URL of ``backend``: None for SQLite in the data dir, the
    shared test database for MariaDB."""
    return None if backend == SQLITE else mysql_url()


class StoreCase(TestCase):
    """Base of the concrete store test classes: ``self.database``, a started
    ``Database`` on ``backend`` in ``self.data_dir``, stopped (and on MariaDB emptied)
    after the test. ``self.scratch`` is the directory holding ``data_dir``."""

    backend: str = SQLITE

    async def setUp(self) -> None:
        self.scratch = self.tmp_path()
        self.data_dir = self.scratch / "data"
        url = backend_url(self.backend)
        self.database = await self.open_database(url, self.data_dir)

    async def open_database(self, url: str | None, data_dir: Path, **options: Any) -> Database:
        """Start a ``Database``; it is stopped after the test (and emptied on MariaDB
        when ``url`` is the shared test database)."""
        db = open_database(url, data_dir, reactor, **options)

        async def stop() -> None:
            await db.stop()
            if url is not None and url == _mysql_url:
                empty_tables(db)

        self.addCleanup(stop)
        await db.start()
        return db


class SQLiteStoreCase(StoreCase):
    backend = SQLITE


class MariaDBStoreCase(StoreCase):
    backend = MARIADB


class NewDatabaseCase(TestCase):
    """Base for tests that open databases themselves: ``self.url`` and ``self.data_dir``
    name a database that does not exist yet (on MariaDB a ``<test db>_<random>``
    database, dropped after the test)."""

    backend: str = SQLITE

    def setUp(self) -> None:
        self.data_dir = self.tmp_path() / "data"
        if self.backend == SQLITE:
            self.url: str | None = None
            return
        self.url = f"{mysql_url()}_{secrets.token_hex(3)}"
        self.addCleanup(drop_mysql_database, self.url.rsplit("/", 1)[1])


class SQLiteNewDatabaseCase(NewDatabaseCase):
    backend = SQLITE


class MariaDBNewDatabaseCase(NewDatabaseCase):
    backend = MARIADB
