"""``StoreService``: opens the database before any other service starts using it, and
closes it last, after every pending group commit is flushed.

Every ``PING_INTERVAL`` seconds it runs ``SELECT 1`` on a reader connection: a connection
the server dropped (restart, ``wait_timeout``, network) is noticed and reopened by the
store's retry before a client request needs it, and an unreachable database is logged
once when it goes and once when it comes back.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.services import TeamTalkService
from teamtalk_py.store.database import Database, open_database
from teamtalk_py.store.txn import StoreClosedError, Txn

if TYPE_CHECKING:
    from teamtalk_py.config import Config

log = Logger(namespace="teamtalk.store")

PING_INTERVAL = 30.0

P = ParamSpec("P")
T = TypeVar("T")


def _ping(txn: Txn) -> None:
    txn.execute("SELECT 1").fetchall()


class StoreService(TeamTalkService):
    name = "store"

    def __init__(self, reactor: Any, config: Config) -> None:
        super().__init__(reactor, config)
        self.db: Database | None = None
        self.healthy: bool | None = None
        self._ping = LoopingCall(self.ping)
        self._ping.clock = reactor

    async def start(self) -> None:
        # The store threads hand results to the reactor thread; a shorter GIL switch
        # interval than the default 5 ms keeps that handoff from adding to ack latency.
        sys.setswitchinterval(0.001)

        self.db = open_database(
            self.config.store.db or None, self.config.server.data_dir, self.reactor
        )
        await self.db.start()
        log.info("store ready ({dialect})", dialect=self.db.dialect)
        self.healthy = True
        self._ping.start(PING_INTERVAL, now=False)

    async def stop(self) -> None:
        if self._ping.running:
            self._ping.stop()
        if self.db is not None:
            await self.db.stop()

    @property
    def database(self) -> Database:
        """The started database (StoreClosedError before ``start``)."""
        if self.db is None:
            raise StoreClosedError("the store service has not started")
        return self.db

    def ping(self) -> Deferred[None]:
        """``SELECT 1`` on a reader; logs when the database becomes (un)reachable."""

        def ok(_: None) -> None:
            if self.healthy is False:
                log.info("store reachable again")
            self.healthy = True

        def failed(failure: Failure) -> None:
            if self.healthy is not False:
                log.warn("store unreachable: {error}", error=failure.getErrorMessage())
            self.healthy = False

        return self.database.read(_ping).addCallbacks(ok, failed)

    def read(
        self, fn: Callable[Concatenate[Txn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run ``fn(txn, *args, **kwargs)`` on a reader thread; a Deferred of its result."""
        return self.database.read(fn, *args, **kwargs)

    def write(
        self, fn: Callable[Concatenate[Txn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """Run ``fn(txn, *args, **kwargs)`` in the next group commit; fires once durable."""
        return self.database.write(fn, *args, **kwargs)
