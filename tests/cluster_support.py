"""Helpers for cluster tests: waiting, logging clients in, and the MariaDB/Redis servers.

MariaDB comes from ``TEAMTALK_TEST_MYSQL`` (default ``mysql://root@127.0.0.1:3306``) and
Redis from ``TEAMTALK_TEST_REDIS`` (default ``redis://127.0.0.1:6379``). When one is not
reachable, the tests that need it are skipped locally and fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest

from teamtalk_client import TeamTalkClientProtocol, TeamTalkSession, connect
from teamtalk_py.pb.IM import BaseDefine_pb2 as B

PASSWORD = "secret"
PC = B.CLIENT_TYPE_WINDOWS
MAC = B.CLIENT_TYPE_MAC
IOS = B.CLIENT_TYPE_IOS

MYSQL_SERVER_ENV = "TEAMTALK_TEST_MYSQL"
DEFAULT_MYSQL_SERVER = "mysql://root@127.0.0.1:3306"
REDIS_SERVER_ENV = "TEAMTALK_TEST_REDIS"
DEFAULT_REDIS_SERVER = "redis://127.0.0.1:6379"


def free_port_number() -> int:
    """A TCP port nobody listens on right now (for "unreachable server" tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = ""
) -> None:
    """Poll ``predicate`` every 20 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await sleep(0.02)


class Client:
    """One logged-in client connection (protocol + session)."""

    def __init__(self, protocol: TeamTalkClientProtocol, session: TeamTalkSession) -> None:
        self.protocol = protocol
        self.session = session

    @property
    def user_id(self) -> int:
        assert self.session.user_id is not None
        return self.session.user_id

    def wait_for(self, command_id: int, predicate=None, timeout: float = 5.0):
        return self.protocol.wait_for(command_id, predicate, timeout=timeout)

    async def close(self) -> None:
        if not self.protocol.closed.called:
            self.protocol.transport.loseConnection()
        await self.protocol.closed


async def log_in(port: int, name: str, client_type: int = PC, host: str = "127.0.0.1") -> Client:
    protocol = await connect(reactor, host, port)
    session = TeamTalkSession(protocol)
    answer = await session.login(name, PASSWORD, client_type=client_type)
    if answer.result_code != 0:
        protocol.transport.loseConnection()
        raise AssertionError(f"login of {name} refused: {answer.result_string}")
    return Client(protocol, session)


def status_is(user_id: int, status: int):
    """Predicate for a ``CID_BUDDY_LIST_STATUS_NOTIFY`` about ``user_id``."""

    def match(pdu) -> bool:
        stat = pdu.message.user_stat
        return stat.user_id == user_id and stat.status == status

    return match


# -- external servers -------------------------------------------------------------------


def _unreachable(what: str, error: object) -> None:
    message = f"{what} not reachable: {error}"
    if os.environ.get("CI"):
        raise AssertionError(message + " (CI is set: cluster tests must run)")
    raise SkipTest(message)


def _mysql_admin(server_url: str):
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


class MariaDB:
    """A fresh ``tt_cluster_<random>`` database on the test MariaDB, dropped by ``drop``."""

    def __init__(self) -> None:
        import pymysql

        self.server = os.environ.get(MYSQL_SERVER_ENV, DEFAULT_MYSQL_SERVER).rstrip("/")
        try:
            conn = _mysql_admin(self.server)
        except pymysql.err.MySQLError as exc:
            _unreachable(f"MariaDB/MySQL at {self.server}", exc)
        self.name = f"tt_cluster_{secrets.token_hex(5)}"
        with conn.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
        conn.close()
        self.url = f"{self.server}/{self.name}"

    def drop(self) -> None:
        conn = _mysql_admin(self.server)
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        conn.close()

    def kill_connections(self) -> int:
        """Kill every server connection using this database (as a restart would)."""
        conn = _mysql_admin(self.server)
        killed = 0
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> "
                "CONNECTION_ID()",
                (self.name,),
            )
            for (thread_id,) in cursor.fetchall():
                try:
                    cursor.execute(f"KILL {int(thread_id)}")
                    killed += 1
                except Exception:
                    pass  # gone already
        conn.close()
        return killed


class RedisPrefix:
    """A Redis URL whose key prefix is unique to this test run; ``drop`` deletes its keys."""

    def __init__(self) -> None:
        server = os.environ.get(REDIS_SERVER_ENV, DEFAULT_REDIS_SERVER).rstrip("/")
        parts = urlsplit(server)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        try:
            reply = self._command(b"PING")
        except OSError as exc:
            _unreachable(f"Redis at {server}", exc)
        if not reply.startswith(b"+PONG"):
            _unreachable(f"Redis at {server}", reply)
        self.prefix = f"tt_cluster_{secrets.token_hex(5)}:"
        self.url = f"redis://{self.host}:{self.port}/0?prefix={self.prefix}"

    def _command(self, *args: bytes) -> bytes:
        """One RESP command on a throwaway blocking socket; the raw reply."""
        payload = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.sendall(payload)
            return s.recv(65536)

    def keys(self) -> list[bytes]:
        reply = self._command(b"KEYS", self.prefix.encode() + b"*")
        lines = reply.split(b"\r\n")
        return [line for line in lines[2::2] if line]

    def drop(self) -> None:
        for key in self.keys():
            self._command(b"DEL", key)

    def kill_client(self, local_port: int) -> bytes:
        """Make Redis close the connection that comes from ``127.0.0.1:local_port``."""
        return self._command(b"CLIENT", b"KILL", b"ADDR", b"127.0.0.1:%d" % local_port)
