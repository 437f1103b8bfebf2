"""Shared pytest fixtures.

Store fixtures (``sqlite_db``, ``mysql_url``, ``database``): a started ``Database`` on
real SQLite in a temporary directory and on real MariaDB/MySQL. The MariaDB server comes
from ``TEAMTALK_TEST_MYSQL`` (default ``mysql://root@127.0.0.1:3306``); each test session
creates its own ``tt_test_<random>`` database and drops it at the end. Without a reachable
server the MySQL half is skipped locally, but fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_twisted

MYSQL_SERVER_ENV = "TEAMTALK_TEST_MYSQL"
DEFAULT_MYSQL_SERVER = "mysql://root@127.0.0.1:3306"


def _mysql_admin_connection(server_url: str):
    import pymysql

    parts = urlsplit(server_url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        connect_timeout=5,
        autocommit=True,
    )


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """URL of a fresh MariaDB database for this test session (dropped at the end)."""
    import pymysql

    server = os.environ.get(MYSQL_SERVER_ENV, DEFAULT_MYSQL_SERVER).rstrip("/")
    try:
        conn = _mysql_admin_connection(server)
    except pymysql.err.MySQLError as exc:
        message = f"MariaDB/MySQL not reachable at {server}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: MySQL tests must run)")
        pytest.skip(message)
    name = f"tt_test_{secrets.token_hex(6)}"
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        yield f"{server}/{name}"
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def _start(url: str | None, data_dir: Path):
    from twisted.internet import reactor

    from teamtalk_py.store.database import open_database

    db = open_database(url, data_dir, reactor)
    pytest_twisted.blockon(db.start())
    return db


def _empty_mysql_tables(db) -> None:
    from teamtalk_py.store import schema

    with db.sync_transaction() as txn:
        for table in schema.TABLES:
            txn.execute(f"DELETE FROM {table}")


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator:
    """A started SQLite ``Database`` in a temporary data dir."""
    db = _start(None, tmp_path / "data")
    yield db
    pytest_twisted.blockon(db.stop())


@pytest.fixture(params=["sqlite", "mysql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """A started ``Database``, once on SQLite and once on MariaDB (emptied afterwards)."""
    if request.param == "sqlite":
        db = _start(None, tmp_path / "data")
    else:
        db = _start(request.getfixturevalue("mysql_url"), tmp_path / "data")
    yield db
    pytest_twisted.blockon(db.stop())
    if request.param == "mysql":
        _empty_mysql_tables(db)
