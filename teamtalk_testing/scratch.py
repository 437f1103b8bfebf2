"""Scratch space on the MariaDB/MySQL and Redis servers of this machine (and of CI):
a database and a Redis key prefix of one's own, removed afterwards, so that test runs and
benchmarks never collide with each other or with anybody's data.

The servers default to the ones the README names (``mysql://root@127.0.0.1:3306``,
``redis://127.0.0.1:6379``); ``Unreachable`` says that one does not answer.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "DEFAULT_MYSQL",
    "DEFAULT_REDIS",
    "ScratchDatabase",
    "ScratchRedisPrefix",
    "Unreachable",
    "drop_database",
    "kill_connections",
    "mysql_admin",
]

DEFAULT_MYSQL = "mysql://root@127.0.0.1:3306"
DEFAULT_REDIS = "redis://127.0.0.1:6379"


class Unreachable(Exception):
    """A MariaDB/MySQL or Redis server did not answer."""


def mysql_admin(server_url: str = DEFAULT_MYSQL) -> Any:
    """An autocommit pymysql connection to the server, no database selected;
    ``Unreachable`` when it does not answer."""
    import pymysql

    parts = urlsplit(server_url)
    try:
        return pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            connect_timeout=5,
            autocommit=True,
        )
    except pymysql.err.MySQLError as exc:
        raise Unreachable(f"MariaDB/MySQL at {server_url} not reachable: {exc}") from exc


def drop_database(server_url: str, name: str) -> None:
    """``DROP DATABASE IF EXISTS name``."""
    conn = mysql_admin(server_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def kill_connections(server_url: str, database: str) -> int:
    """Kill every server connection using ``database`` (as a server restart would);
    how many were killed."""
    import pymysql

    conn = mysql_admin(server_url)
    killed = 0
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE DB = %s AND ID <> CONNECTION_ID()",
                (database,),
            )
            for (thread_id,) in cursor.fetchall():
                with contextlib.suppress(pymysql.err.MySQLError):  # it may be gone already
                    cursor.execute("KILL CONNECTION %s", (thread_id,))
                    killed += 1
    finally:
        conn.close()
    return killed


class ScratchDatabase:
    """A new, empty ``<prefix>_<random>`` database (utf8mb4, binary collation, as the
    store's migrations expect); ``drop()`` removes it."""

    def __init__(self, server_url: str = DEFAULT_MYSQL, prefix: str = "tt_test") -> None:
        self.server = server_url.rstrip("/")
        self.name = f"{prefix}_{secrets.token_hex(5)}"
        conn = mysql_admin(self.server)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
        finally:
            conn.close()
        #: The ``--db`` URL of the database.
        self.url = f"{self.server}/{self.name}"

    def drop(self) -> None:
        drop_database(self.server, self.name)

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """The rows of one query on this database."""
        conn = mysql_admin(self.server)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"USE `{self.name}`")
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def kill_connections(self) -> int:
        return kill_connections(self.server, self.name)


class ScratchRedisPrefix:
    """A key prefix of its own on a Redis server (``<prefix>_<random>:``); ``url`` is the
    ``--redis`` URL that makes the server use it, ``drop()`` deletes its keys."""

    def __init__(self, server_url: str = DEFAULT_REDIS, prefix: str = "tt_test") -> None:
        import redis

        parts = urlsplit(server_url.rstrip("/"))
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.redis = redis.Redis(
            host=self.host,
            port=self.port,
            password=unquote(parts.password) if parts.password else None,
            socket_timeout=5,
            socket_connect_timeout=5,
        )
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            self.redis.close()
            raise Unreachable(f"Redis at {server_url} not reachable: {exc}") from exc
        self.prefix = f"{prefix}_{secrets.token_hex(5)}:"
        self.url = f"redis://{self.host}:{self.port}/0?prefix={self.prefix}"

    def keys(self) -> list[bytes]:
        """Every key under the prefix (prefix included)."""
        return list(self.redis.scan_iter(match=self.prefix + "*", count=1000))

    def drop(self) -> None:
        """Delete every key under the prefix and close the connection."""
        keys = self.keys()
        if keys:
            self.redis.delete(*keys)
        self.redis.close()

    def kill_client(self, local_port: int) -> int:
        """Make Redis close the connection that comes from ``127.0.0.1:local_port``; how
        many it closed."""
        killed: int = self.redis.client_kill_filter(addr=f"127.0.0.1:{local_port}")
        return killed
