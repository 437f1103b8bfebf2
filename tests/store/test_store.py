"""The store engine: migrations, group commit, read/write paths, reopening, URLs.

Every test that touches a database runs on SQLite and on MariaDB: ``StoreEngineTests`` on
a started database (``self.database``), ``NewDatabaseTests`` on a database that does not
exist yet (``self.url``, ``self.data_dir``); the classes after each run them on each
backend (``tests.store_support``).
"""

from __future__ import annotations

import threading
from pathlib import Path

from twisted.internet import defer, reactor, task

from teamtalk_py.outage import ShuttingDown
from teamtalk_py.store import accounts, messages, schema
from teamtalk_py.store.database import Database, open_database
from teamtalk_py.store.engines import DEFAULT_SQLITE_NAME, parse_mysql_url, sqlite_path
from teamtalk_py.store.engines.sqlite import READER_CACHE_KIB
from teamtalk_py.store.txn import (
    Dialect,
    DuplicateError,
    SchemaTooNewError,
    StoreClosedError,
    StoreError,
)
from teamtalk_testing.scratch import kill_connections
from tests.store_support import (
    Gate,
    MariaDBNewDatabaseCase,
    MariaDBStoreCase,
    SQLiteNewDatabaseCase,
    SQLiteStoreCase,
    mysql_server,
    mysql_url,
)
from tests.support import TestCase

NOW = 1_700_000_000


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


async def wait_for(event: threading.Event, timeout: float = 10.0) -> None:
    """Let the reactor run until another thread sets ``event``."""
    for _ in range(int(timeout / 0.005)):
        if event.is_set():
            return
        await sleep(0.005)
    raise AssertionError("event was never set")


def count_rows(txn, table: str) -> int:
    return txn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def insert_department(txn, name: str) -> int:
    txn.execute(
        "INSERT INTO departments (name, created, updated) VALUES (?, ?, ?)", (name, NOW, NOW)
    )
    return txn.lastrowid


def department_names(txn) -> list[str]:
    return [row[0] for row in txn.execute("SELECT name FROM departments ORDER BY name").fetchall()]


INSERT_DEPARTMENT = "INSERT INTO departments (name, created, updated) VALUES (?, ?, ?)"


class StoreEngineTests:
    """The engine tests on a started database, ``self.database``."""

    database: Database

    # ----------------------------------------------------------------------------------
    # Schema and migrations

    async def test_start_records_the_latest_schema_version(self) -> None:
        """start() migrates an empty database and records every migration."""
        version = await self.database.read(schema.current_version)
        rows = await self.database.read(
            lambda txn: txn.execute("SELECT version, description FROM schema_version").fetchall()
        )
        assert version == schema.LATEST_VERSION
        assert sorted(r[0] for r in rows) == [m.version for m in schema.MIGRATIONS]

    def test_migrate_again_changes_nothing(self) -> None:
        """A second migrate() finds nothing to do and records nothing new."""
        assert self.database.migrate() == schema.LATEST_VERSION
        assert self.database.migrate() == schema.LATEST_VERSION
        with self.database.sync_transaction() as txn:
            assert count_rows(txn, "schema_version") == len(schema.MIGRATIONS)

    def test_migration_rerun_over_existing_tables_succeeds(self) -> None:
        """A migration re-run over tables that already exist (MySQL's half-applied case) works."""
        with self.database.sync_transaction() as txn:
            txn.execute("DELETE FROM schema_version")
        assert self.database.migrate() == schema.LATEST_VERSION
        with self.database.sync_transaction() as txn:
            assert schema.current_version(txn) == schema.LATEST_VERSION

    async def test_durability_settings(self) -> None:
        """SQLite runs in WAL with synchronous=FULL; MySQL tables are InnoDB and utf8mb4."""
        if self.database.dialect is Dialect.SQLITE:
            mode = await self.database.read(
                lambda txn: txn.execute("PRAGMA journal_mode").fetchone()
            )
            sync = await self.database.write(
                lambda txn: txn.execute("PRAGMA synchronous").fetchone()
            )
            assert (mode[0], sync[0]) == ("wal", 2)
        else:
            rows = await self.database.read(
                lambda txn: txn.execute(
                    "SELECT DISTINCT ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE()"
                ).fetchall()
            )
            assert set(rows) == {("InnoDB", "utf8mb4_bin")}

    # ----------------------------------------------------------------------------------
    # Write path and group commit

    async def test_write_fires_with_the_function_result(self) -> None:
        """write() returns what the job returned, keyword arguments included."""
        result = await self.database.write(lambda txn, a, b=0: a + b, 2, b=3)
        assert result == 5

    async def test_read_sees_a_committed_write(self) -> None:
        """Once write() fired, any reader sees the row."""
        await self.database.write(insert_department, "sales")
        assert await self.database.read(department_names) == ["sales"]

    async def test_concurrent_writes_all_commit_in_batches(self) -> None:
        """2000 writes issued at once all commit, in far fewer transactions than writes."""
        before = self.database.stats.batches
        ds = [self.database.write(insert_department, f"d{i:04d}") for i in range(2000)]
        ids = await defer.gatherResults(ds)
        assert len(set(ids)) == 2000
        assert await self.database.read(count_rows, "departments") == 2000
        assert self.database.stats.batches - before < 2000
        assert self.database.stats.largest_batch > 1

    async def test_failing_job_rolls_back_only_itself(self) -> None:
        """In one batch, a job raising (Python error or constraint violation) loses only its
        own changes; its neighbours commit."""

        def insert_then_fail(txn):
            insert_department(txn, "ghost")
            raise RuntimeError("job failed")

        await self.database.write(insert_department, "taken")
        gate = Gate()
        gated = self.database.write(gate)
        await wait_for(gate.entered)
        batches = self.database.stats.batches
        first = self.database.write(insert_department, "first")
        broken = self.database.write(insert_then_fail)
        duplicate = self.database.write(insert_department, "taken")
        last = self.database.write(insert_department, "last")
        gate.release.set()
        await gated

        results = await defer.DeferredList([first, broken, duplicate, last], consumeErrors=True)
        assert [ok for ok, _ in results] == [True, False, False, True]
        assert results[1][1].check(RuntimeError)
        assert results[2][1].check(DuplicateError)
        assert self.database.stats.batches - batches == 1  # all four in the batch after the gate
        assert self.database.stats.savepoint_reruns == 1  # "ghost" had to be undone
        assert await self.database.read(department_names) == ["first", "last", "taken"]

    async def test_job_failing_before_any_write_needs_no_savepoints(self) -> None:
        """A job refused before it changed anything (validation, duplicate key) fails alone
        without the batch being run again with savepoints."""

        def refuse(txn):
            raise ValueError("bad request")

        await self.database.write(insert_department, "taken")
        gate = Gate()
        gated = self.database.write(gate)
        await wait_for(gate.entered)
        ok = self.database.write(insert_department, "fine")
        refused = self.database.write(refuse)
        duplicate = self.database.write(insert_department, "taken")
        gate.release.set()
        await gated

        results = await defer.DeferredList([ok, refused, duplicate], consumeErrors=True)
        assert [ok for ok, _ in results] == [True, False, False]
        assert self.database.stats.savepoint_reruns == 0
        assert await self.database.read(department_names) == ["fine", "taken"]

    async def test_deferreds_fire_only_after_commit(self) -> None:
        """A finished job's Deferred waits for its batch's COMMIT, and until then readers
        do not see its row."""
        slow = Gate()
        gate = Gate()
        gated = self.database.write(gate)
        await wait_for(gate.entered)
        done = self.database.write(insert_department, "early")
        slowed = self.database.write(slow)
        gate.release.set()
        await gated
        await wait_for(slow.entered)
        await sleep(0.1)

        assert not done.called
        assert await self.database.read(department_names) == []

        slow.release.set()
        assert await done is not None
        await slowed
        assert await self.database.read(department_names) == ["early"]

    async def test_write_soon_rides_in_the_next_batch_and_answers_after_it(self) -> None:
        """A write_soon job does not commit on its own before its linger: it waits for a
        write and commits in that write's batch, answering after it."""
        fired: list[str] = []
        soon = self.database.write_soon(3600.0, insert_department, "rider")
        soon.addCallback(lambda _: fired.append("rider"))
        await sleep(0.2)
        assert fired == []  # an hour's linger: nothing committed it yet
        assert self.database.pending_writes == 1
        assert await self.database.read(department_names) == []
        batches = self.database.stats.batches
        write = self.database.write(insert_department, "message")
        write.addCallback(lambda _: fired.append("message"))
        await defer.gatherResults([soon, write])
        assert self.database.stats.batches - batches == 1
        assert fired == ["message", "rider"]
        assert await self.database.read(department_names) == ["message", "rider"]

    async def test_write_soon_commits_alone_after_its_linger(self) -> None:
        """With no write to ride along with, the job commits on its own once its linger
        is over."""
        batches = self.database.stats.batches
        await self.database.write_soon(0.05, insert_department, "alone")
        assert self.database.stats.batches - batches == 1
        assert await self.database.read(department_names) == ["alone"]

    async def test_stop_commits_the_write_soon_jobs_waiting(self) -> None:
        """stop() does not wait out a linger, nor drop the jobs waiting: they commit."""
        soon = self.database.write_soon(3600.0, insert_department, "waiting")
        await sleep(0.05)
        await self.database.stop()
        assert soon.called
        await soon
        with self.database.sync_transaction() as txn:
            assert department_names(txn) == ["waiting"]

    async def test_stop_drains_queued_writes(self) -> None:
        """stop() fires only after every write queued before it has committed."""
        ds = [self.database.write(insert_department, f"q{i}") for i in range(500)]
        await self.database.stop()
        assert all(d.called for d in ds)
        results = await defer.gatherResults(ds)
        assert len(results) == 500
        with self.database.sync_transaction() as txn:
            assert count_rows(txn, "departments") == 500

    async def test_jobs_after_stop_fail_with_store_closed(self) -> None:
        """Once stopping, write() and read() refuse new work instead of hanging."""
        stopping = self.database.stop()
        with self.assertRaises(StoreClosedError):
            await self.database.write(insert_department, "late")
        # Shutting down, not broken: callers log it in one line (``outage.log_failure``).
        with self.assertRaises(ShuttingDown):
            await self.database.read(count_rows, "departments")
        await stopping
        await self.database.stop()  # a second stop() is harmless

    # ----------------------------------------------------------------------------------
    # Read path, Txn, sync transactions

    async def test_read_error_reaches_the_caller_and_the_reader_survives(self) -> None:
        """A failing read errbacks; the next read on the same readers works."""
        with self.assertRaisesRegex(Exception, "no_such_table|doesn't exist"):
            await self.database.read(count_rows, "no_such_table")
        assert await self.database.read(count_rows, "users") == 0

    async def test_reads_cannot_write(self) -> None:
        """Reader transactions are read-only, so a write slipped into read() fails."""
        with self.assertRaises(Exception):  # noqa: B017 (driver-specific error class)
            await self.database.read(insert_department, "sneaky")
        assert await self.database.read(count_rows, "departments") == 0

    async def test_txn_placeholders_keep_percent_literals(self) -> None:
        """``?`` becomes a parameter in both dialects; a literal ``%`` stays literal."""
        await self.database.write(insert_department, "50% off")
        await self.database.write(insert_department, "full price")

        def query(txn):
            by_param = txn.execute(
                "SELECT name FROM departments WHERE name LIKE ?", ("50%",)
            ).fetchall()
            by_literal = txn.execute(
                "SELECT COUNT(*) FROM departments WHERE name LIKE '%price' AND 7 % 4 = ?", (3,)
            ).fetchone()
            return by_param, by_literal[0]

        assert await self.database.read(query) == ([("50% off",)], 1)

    def test_sync_transaction_commits_and_rolls_back(self) -> None:
        """The CLI path commits a block that ends normally and rolls back one that raises."""
        with self.database.sync_transaction() as txn:
            insert_department(txn, "kept")
        with self.assertRaises(RuntimeError), self.database.sync_transaction() as txn:
            insert_department(txn, "dropped")
            raise RuntimeError("abort")
        with self.database.sync_transaction() as txn:
            assert department_names(txn) == ["kept"]

    def test_unique_violation_raises_duplicate_error(self) -> None:
        """Both drivers' duplicate-key errors surface as DuplicateError."""
        with self.assertRaises(DuplicateError), self.database.sync_transaction() as txn:
            insert_department(txn, "twice")
            insert_department(txn, "twice")


class SQLiteStoreEngineTests(StoreEngineTests, SQLiteStoreCase):
    """The engine tests on SQLite."""

    async def test_readers_keep_a_small_page_cache(self) -> None:
        """Every reader's page cache is bounded to READER_CACHE_KIB (each would otherwise
        keep its own copy of the users table read in a login storm); the writer keeps
        SQLite's default, since its cache is the only one commits do not empty."""
        size = "PRAGMA cache_size"
        # More reads than readers, all at once, so that every reader thread answers some.
        reads = await defer.gatherResults(
            [self.database.read(lambda txn: txn.execute(size).fetchone()[0]) for _ in range(40)]
        )
        writer = await self.database.write(lambda txn: txn.execute(size).fetchone()[0])
        assert set(reads) == {-READER_CACHE_KIB}
        assert writer == -2000


class MariaDBStoreEngineTests(StoreEngineTests, MariaDBStoreCase):
    """The engine tests on MariaDB."""


class NewDatabaseTests:
    """Tests that open databases themselves, on ``self.url`` and ``self.data_dir``: a
    database that does not exist yet (on MariaDB one of its own, dropped afterwards)."""

    url: str | None
    data_dir: Path

    # ----------------------------------------------------------------------------------
    # Schema and migrations

    async def test_start_creates_the_missing_database(self) -> None:
        """SQLite: the data dir and default file appear; MySQL: the database is created."""
        url, data_dir = self.url, self.data_dir
        db = open_database(url, data_dir, reactor)
        try:
            assert await db.start() == schema.LATEST_VERSION
            if url is None:
                assert (data_dir / DEFAULT_SQLITE_NAME).is_file()
            assert await db.read(count_rows, "users") == 0
        finally:
            await db.stop()

    async def test_start_refuses_a_schema_newer_than_the_code(self) -> None:
        """A database migrated by a newer release is not touched."""
        url, data_dir = self.url, self.data_dir
        db = open_database(url, data_dir, reactor)
        await db.start()
        await db.write(
            lambda txn: txn.execute(
                "INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?)",
                (schema.LATEST_VERSION + 1, "from the future", NOW),
            )
        )
        await db.stop()

        newer = open_database(url, data_dir, reactor)
        with self.assertRaises(SchemaTooNewError):
            await newer.start()
        with self.assertRaises(SchemaTooNewError):
            await newer.write(count_rows, "users")
        await newer.stop()

    # ----------------------------------------------------------------------------------
    # Reopening

    async def test_data_survives_close_and_reopen(self) -> None:
        """Users and messages written before stop() are there after a restart, and the
        pair's message ids continue where they stopped."""
        url, data_dir = self.url, self.data_dir
        db = open_database(url, data_dir, reactor)
        await db.start()
        alice = await db.write(accounts.add_user, "alice", "pw", now=NOW)
        bob = await db.write(accounts.add_user, "bob", "pw", now=NOW)
        await db.write(messages.store_single_message, alice, bob, 1, b"before", NOW)
        await db.stop()

        again = open_database(url, data_dir, reactor)
        await again.start()
        try:
            user = await again.read(accounts.get_user_by_name, "alice")
            history = await again.read(messages.single_history, bob, alice, 0, 10)
            after = await again.write(messages.store_single_message, bob, alice, 1, b"after", NOW)
        finally:
            await again.stop()
        assert user is not None and user.id == alice
        assert [m.content for m in history] == [b"before"]
        assert after.msg_id == 2

    # ----------------------------------------------------------------------------------
    # Write path and group commit

    async def test_batches_are_capped_at_max_batch(self) -> None:
        """The writer never puts more than max_batch jobs in one transaction."""
        url, data_dir = self.url, self.data_dir
        db = open_database(url, data_dir, reactor, max_batch=8)
        await db.start()
        try:
            gate = Gate()
            gated = db.write(gate)
            await wait_for(gate.entered)
            ds = [db.write(insert_department, f"d{i}") for i in range(100)]
            gate.release.set()
            await gated
            await defer.gatherResults(ds)
            assert db.stats.largest_batch == 8
        finally:
            await db.stop()


class SQLiteNewDatabaseTests(NewDatabaseTests, SQLiteNewDatabaseCase):
    """The new-database tests on SQLite."""


class MariaDBNewDatabaseTests(NewDatabaseTests, MariaDBNewDatabaseCase):
    """The new-database tests on MariaDB."""


# --------------------------------------------------------------------------------------
# MySQL connection loss


class MariaDBConnectionLossTests(TestCase):
    """MariaDB only: the store survives the server dropping its connections."""

    async def test_mysql_lost_connections_are_reopened(self) -> None:
        """MySQL only (SQLite has no connection to lose): after the server kills every
        connection, the next write batch and the next read reconnect and succeed."""
        url = mysql_url()
        db = open_database(url, self.tmp_path(), reactor, readers=2)
        await db.start()
        try:
            await db.write(insert_department, "before")
            await db.read(count_rows, "departments")
            assert kill_connections(mysql_server(), parse_mysql_url(url).database) >= 2
            await db.write(insert_department, "after")
            assert await db.read(department_names) == ["after", "before"]
            assert db.stats.retries >= 1
        finally:
            await db.stop()
            with db.sync_transaction() as txn:
                txn.execute("DELETE FROM departments")


# --------------------------------------------------------------------------------------
# URLs


class UrlTests(TestCase):
    """Database URLs: SQLite file names, MySQL URL parsing, no password in repr()."""

    def test_sqlite_url_names_the_file(self) -> None:
        """No URL means <data_dir>/teamtalk.sqlite3; relative paths live in data_dir."""
        for url, expected in [
            (None, "data/" + DEFAULT_SQLITE_NAME),
            ("", "data/" + DEFAULT_SQLITE_NAME),
            ("sqlite://", "data/" + DEFAULT_SQLITE_NAME),
            ("sqlite:///chat.db", "data/chat.db"),
            ("sqlite:////abs/chat.db", "/abs/chat.db"),
        ]:
            assert sqlite_path(url, "data") == Path(expected), url

    def test_sqlite_memory_url_is_refused(self) -> None:
        """:memory: cannot be shared by the store's threads."""
        with self.assertRaises(StoreError):
            sqlite_path("sqlite:///:memory:", "data")

    def test_mysql_url_is_parsed(self) -> None:
        """User, password (percent-decoded), host, default port 3306 and database."""
        for url, expected in [
            (
                "mysql://tt:p%40ss@db.local:3307/teamtalk",
                ("db.local", 3307, "tt", "p@ss", "teamtalk"),
            ),
            ("mysql://root@127.0.0.1/chat", ("127.0.0.1", 3306, "root", "", "chat")),
            ("mariadb://u:p@h/x", ("h", 3306, "u", "p", "x")),
        ]:
            p = parse_mysql_url(url)
            assert (p.host, p.port, p.user, p.password, p.database) == expected, url

    def test_mysql_url_needs_a_valid_database_name(self) -> None:
        """The database name becomes an identifier, so only [A-Za-z0-9_$] is accepted."""
        for url in ["mysql://root@host/", "mysql://root@host/bad-name;drop"]:
            with self.assertRaises(StoreError):
                open_database(url, self.tmp_path(), reactor)

    def test_repr_does_not_show_the_password(self) -> None:
        """A logged Database names its target without the password."""
        db = open_database("mysql://tt:secret@127.0.0.1/teamtalk", self.tmp_path(), reactor)
        assert "secret" not in repr(db)
        assert "teamtalk" in repr(db)
