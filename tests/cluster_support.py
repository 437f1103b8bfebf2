"""Helpers for cluster tests: waiting, logging clients in, and the MariaDB/Redis servers.

MariaDB comes from ``TEAMTALK_TEST_MYSQL`` (default ``mysql://root@127.0.0.1:3306``) and
Redis from ``TEAMTALK_TEST_REDIS`` (default ``redis://127.0.0.1:6379``). When one is not
reachable, the tests that need it are skipped locally and fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import deferLater

from teamtalk_client import TeamTalkClientProtocol, TeamTalkSession, connect
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import accounts
from teamtalk_py.store.database import open_database
from teamtalk_testing.faults import OwnRedis
from teamtalk_testing.scratch import (
    DEFAULT_MYSQL,
    DEFAULT_REDIS,
    ScratchDatabase,
    ScratchRedisPrefix,
    Unreachable,
)
from tests.support import server_unreachable

PASSWORD = "secret"
PC = B.CLIENT_TYPE_WINDOWS
MAC = B.CLIENT_TYPE_MAC
IOS = B.CLIENT_TYPE_IOS

MYSQL_SERVER_ENV = "TEAMTALK_TEST_MYSQL"
REDIS_SERVER_ENV = "TEAMTALK_TEST_REDIS"


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


def create_users(db_url: str, names: Iterable[str], password: str = PASSWORD) -> dict[str, int]:
    """Create the named users (nick = name, as ``teamtalk-admin user add`` does) in one
    store transaction; their ids by name.

    A cluster set-up needs twenty accounts before any node starts: one ``teamtalk-admin``
    process per user costs an interpreter start and a scrypt run each (minutes on a
    loaded box). One password record serves every user, as the benchmark's users share
    one; ``tests/admin/test_admin.py`` covers the command itself.
    """
    db = open_database(db_url, Path("."), reactor=None)
    db.migrate()
    record = accounts.password_record(password)
    now = int(time.time())
    with db.sync_transaction() as txn:
        return {
            name: accounts.add_user(txn, name, password, nick=name, now=now, record=record)
            for name in names
        }


# -- external servers -------------------------------------------------------------------


def scratch_database() -> ScratchDatabase:
    """A fresh ``tt_cluster_<random>`` database on the test MariaDB; skips the test (fails
    it when ``CI`` is set) when the server does not answer."""
    try:
        return ScratchDatabase(os.environ.get(MYSQL_SERVER_ENV, DEFAULT_MYSQL), "tt_cluster")
    except Unreachable as exc:
        server_unreachable(str(exc))


def scratch_redis() -> ScratchRedisPrefix:
    """A ``tt_cluster_<random>:`` key prefix on the test Redis; skips the test (fails it
    when ``CI`` is set) when the server does not answer."""
    try:
        return ScratchRedisPrefix(os.environ.get(REDIS_SERVER_ENV, DEFAULT_REDIS), "tt_cluster")
    except Unreachable as exc:
        server_unreachable(str(exc))


def own_redis() -> OwnRedis:
    """A redis-server of the test's own on a free port (not started yet); skips the test
    (fails it when ``CI`` is set) when redis-server is not installed."""
    try:
        return OwnRedis()
    except FileNotFoundError as exc:
        server_unreachable(str(exc))
