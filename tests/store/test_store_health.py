"""``StoreService.ping``: the periodic ``SELECT 1`` that notices a dead database link."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet import reactor

from teamtalk_py.store.service import StoreService
from tests.support import TestCase, local_config


class StorePingTests(TestCase):
    async def test_ping_reports_a_reachable_then_a_closed_database(self):
        """A working store pings healthy; once its database is gone, unhealthy."""
        data_dir = Path(tempfile.mkdtemp(prefix="tt_ping_"))
        self.addCleanup(shutil.rmtree, data_dir, True)
        store = StoreService(reactor, local_config(data_dir))
        store.startService()
        await store.ready
        await store.ping()
        assert store.healthy is True
        await store.db.stop()
        await store.ping()
        assert store.healthy is False
        await store.stopService()
