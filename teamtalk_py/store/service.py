"""``StoreService``: opens the database before any other service starts using it, and
closes it last, after every pending group commit is flushed."""

from __future__ import annotations

import sys
from functools import partial

from twisted.logger import Logger

from teamtalk_py.services import TeamTalkService

log = Logger(namespace="teamtalk.store")


class StoreService(TeamTalkService):
    name = "store"

    def __init__(self, reactor, config) -> None:
        super().__init__(reactor, config)
        self.db = None

    async def start(self) -> None:
        from teamtalk_py.store.database import open_database

        # The store threads hand results to the reactor thread; a shorter GIL switch
        # interval than the default 5 ms keeps that handoff from adding to ack latency.
        sys.setswitchinterval(0.001)

        self.db = open_database(
            self.config.store.db or None, self.config.server.data_dir, self.reactor
        )
        await self.db.start()
        log.info("store ready ({dialect})", dialect=self.db.dialect)

    async def stop(self) -> None:
        if self.db is not None:
            await self.db.stop()

    def read(self, fn, *args, **kwargs):
        """Run ``fn(txn, *args, **kwargs)`` on a reader thread; a Deferred of its result."""
        return self.db.read(partial(fn, **kwargs) if kwargs else fn, *args)

    def write(self, fn, *args, **kwargs):
        """Run ``fn(txn, *args, **kwargs)`` in the next group commit; fires once durable."""
        return self.db.write(partial(fn, **kwargs) if kwargs else fn, *args)
