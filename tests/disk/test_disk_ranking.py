"""The download ranking of the public list: the database's order, and the Redis sorted set
a cluster keeps (real Redis, a key prefix of this test's own), rebuilt from the database
when it lost or missed something, and read from the database while Redis is down.
"""

from __future__ import annotations

import secrets
import time

from twisted.internet import reactor

from teamtalk_py.disk.ranking import RANKING_KEY, RedisRanking, SqlRanking
from teamtalk_py.shared_state import MemoryBackend, RedisBackend
from teamtalk_py.store import disk as rows
from teamtalk_py.store.disk import DiskFileRow, Order
from teamtalk_testing import free_port
from tests.cluster_support import scratch_redis
from tests.store_support import SQLiteStoreCase


class RankingTests(SQLiteStoreCase):
    async def setUp(self) -> None:
        await super().setUp()
        self.redis = scratch_redis()
        self.addCleanup(self.redis.drop)
        self.backend = RedisBackend(reactor, self.redis.url)
        self.addCleanup(self.backend.stop)
        await self.backend.start()

    async def share(self, name: str, downloads: int) -> str:
        """A file of user 1, shared, downloaded ``downloads`` times (in the database)."""
        file = DiskFileRow(secrets.token_hex(16), 1, name, secrets.token_hex(16),
                           secrets.token_hex(32), 10, 0, int(time.time()))  # fmt: skip
        share_id = secrets.token_hex(16)
        await self.database.write(rows.insert_file, file)
        assert await self.database.write(rows.share_file, 1, file.file_id, share_id, now=0)
        for _ in range(downloads):
            await self.database.write(rows.count_share_download, share_id)
        return share_id

    async def names(self, ranking, order: Order = Order.PV_DESC) -> list[tuple[str, int]]:
        return [(s.name, s.pv) for s in await ranking.page(order, 0, 10)]

    async def test_redis_ranking_is_the_databases_and_heals_itself(self):
        """The sorted set ranks as the database does; a count written late or twice
        changes nothing, a lost set or a member no longer shared is put right by a
        rebuild, and two nodes see one ranking."""
        ids = {name: await self.share(name, n) for name, n in (("a", 2), ("b", 5), ("c", 0))}
        sql = SqlRanking(self.database)
        node1 = RedisRanking(self.database, self.backend)
        node2 = RedisRanking(self.database, self.backend)
        expected = [("b", 5), ("a", 2), ("c", 0)]
        assert await self.names(sql) == expected
        assert await self.names(node1) == expected  # built from the database
        assert await self.names(node2, Order.PV_ASC) == expected[::-1]
        # A download counted on node 2: the database first, then the set.
        pv = await self.database.write(rows.count_share_download, ids["c"])
        await node2.counted(ids["c"], pv)
        await node1.counted(ids["c"], 0)  # a late write of an older count is ignored
        assert await self.names(node1) == [("b", 5), ("a", 2), ("c", 1)]
        # Redis lost the set (a restart without persistence): rebuilt on the next read.
        self.redis.redis.delete(self.redis.prefix + RANKING_KEY)
        assert await self.names(node2) == [("b", 5), ("a", 2), ("c", 1)]
        # A cancel that Redis missed leaves a stale member: the count differs, rebuilt.
        await self.database.write(rows.unshare, 1, ids["a"])
        await self.backend.raise_scores(RANKING_KEY, {"stale" + "0" * 27: 99})
        assert await self.names(node1) == [("b", 5), ("c", 1)]
        members = await self.backend.score_range(RANKING_KEY, 0, -1, True)
        assert [m for m, _ in members] == [ids["b"], ids["c"]]

    async def test_an_unreachable_redis_leaves_the_database_ranking(self):
        """While Redis does not answer, the ranking is read from the database and
        updates are skipped without an error; the node rebuilds once it answers."""
        await self.share("x", 1)
        await self.share("y", 3)
        dead = RedisBackend(reactor, f"redis://127.0.0.1:{free_port()}/0", timeout=0.3)
        self.addCleanup(dead.stop)
        await dead.start()
        ranking = RedisRanking(self.database, dead)
        assert await self.names(ranking) == [("y", 3), ("x", 1)]
        await ranking.counted("whatever", 1)
        await ranking.removed("whatever")
        assert ranking.stale


class SortedSetTests(SQLiteStoreCase):
    async def test_memory_and_redis_sorted_sets_agree(self):
        """raise_scores keeps the larger score, ties order by member, ranges are
        inclusive; the in-memory backend answers exactly as Redis does."""
        redis = scratch_redis()
        self.addCleanup(redis.drop)
        backend = RedisBackend(reactor, redis.url)
        self.addCleanup(backend.stop)
        await backend.start()
        for state in (backend, MemoryBackend(reactor)):
            await state.raise_scores("z", {"m1": 3, "m2": 3, "m3": 1})
            await state.raise_scores("z", {"m1": 2, "m3": 7})
            assert await state.count_members("z") == 3
            assert await state.score_range("z", 0, -1, True) == [("m3", 7), ("m2", 3), ("m1", 3)]
            assert await state.score_range("z", 1, 1, False) == [("m2", 3)]
            await state.remove_members("z", ["m2", "absent"])
            assert await state.score_range("z", 0, 5, False) == [("m1", 3), ("m3", 7)]
