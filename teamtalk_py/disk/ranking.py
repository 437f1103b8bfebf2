"""The public list sorted by downloads: in the database, or a Redis sorted set in a cluster.

The download counts live in the database (``disk_shares.pv``, moved by ``pv = pv + 1``);
that is the truth. The embedded default sorts there (:class:`SqlRanking`). A cluster
(``--redis``) keeps the same ranking in a sorted set every node reads
(:class:`RedisRanking`), as the seed system did, so the ranking costs no sort in the
database.

The seed added to the set with ``ZINCRBY``; here each change writes the database's new
count as the member's score, kept only when larger (``SharedState.raise_scores``). An
increment lost to a Redis outage, or overtaken by a rebuild, would leave a ``ZINCRBY``
score behind for good; a count written again is harmless and a lost one is healed by the
member's next download. The set is rebuilt from the database (members added, raised, and
removed when no longer shared) when its size differs from the database's count (Redis
restarted empty, a share or cancel missed it) or when this node failed to update it.
While Redis does not answer, the ranking is read from the database: a Redis outage
never breaks the disk.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.logger import Logger

from teamtalk_py.store import disk as rows
from teamtalk_py.store.disk import Order, SharedFileRow

log = Logger(namespace="teamtalk.disk.ranking")

RANKING_KEY = "disk:ranking"
#: Shares read (and written to Redis) per step of a rebuild.
REBUILD_PAGE = 1000


class Ranking(Protocol):
    async def page(self, order: Order, start: int, count: int) -> list[SharedFileRow]: ...

    async def counted(self, share_id: str, pv: int) -> None:
        """A share was added (``pv`` 0) or downloaded (its new count, committed)."""
        ...

    async def removed(self, share_id: str) -> None: ...


class SqlRanking:
    """The embedded default: the database sorts."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def page(self, order: Order, start: int, count: int) -> list[SharedFileRow]:
        return await self.store.read(rows.list_shares, order, start, count)

    async def counted(self, share_id: str, pv: int) -> None:
        return None

    async def removed(self, share_id: str) -> None:
        return None


class RedisRanking:
    """A cluster: the order comes from one sorted set (member: share id, score: its
    download count); the rows themselves from the database."""

    def __init__(self, store: Any, shared_state: Any) -> None:
        self.store = store
        self.shared = shared_state
        self.sql = SqlRanking(store)
        #: This node missed an update (or has not checked the set yet): rebuild first.
        self.stale = True
        self._degraded = False

    async def page(self, order: Order, start: int, count: int) -> list[SharedFileRow]:
        if order is Order.NORMAL:
            return await self.sql.page(order, start, count)
        try:
            members = await self._members(order, start, count)
        except Exception as e:
            self._failed(e)
            return await self.sql.page(order, start, count)
        found = await self.store.read(rows.shares_by_ids, [m for m, _ in members])
        if len(found) < len(members):
            self.stale = True  # cancelled since the set was written: rebuild next time
        return [found[m] for m, _ in members if m in found]

    async def _members(self, order: Order, start: int, count: int) -> list[tuple[str, int]]:
        if self.stale or await self.shared.count_members(RANKING_KEY) != await self.store.read(
            rows.count_shares
        ):
            await self.rebuild()
        members = await self.shared.score_range(
            RANKING_KEY, start, start + count - 1, order is Order.PV_DESC
        )
        self._recovered()
        return members

    async def rebuild(self) -> None:
        """Make the set what the database says: every share with its count, no other."""
        shared: set[str] = set()
        after = 0
        while True:
            page = await self.store.read(rows.share_counts, after, REBUILD_PAGE)
            if not page:
                break
            await self.shared.raise_scores(RANKING_KEY, {share: pv for _, share, pv in page})
            shared.update(share for _, share, _ in page)
            after = page[-1][0]
        present = await self.shared.score_range(RANKING_KEY, 0, -1, False)
        extra = [member for member, _ in present if member not in shared]
        for i in range(0, len(extra), REBUILD_PAGE):
            await self.shared.remove_members(RANKING_KEY, extra[i : i + REBUILD_PAGE])
        self.stale = False
        log.info("download ranking rebuilt from the database: {count} shares", count=len(shared))

    async def counted(self, share_id: str, pv: int) -> None:
        try:
            await self.shared.raise_scores(RANKING_KEY, {share_id: pv})
        except Exception as e:
            self.stale = True
            self._failed(e)
        else:
            self._recovered()

    async def removed(self, share_id: str) -> None:
        try:
            await self.shared.remove_members(RANKING_KEY, [share_id])
        except Exception as e:
            self.stale = True
            self._failed(e)
        else:
            self._recovered()

    def _failed(self, error: Exception) -> None:
        if not self._degraded:
            self._degraded = True
            log.warn(
                "download ranking: Redis failed ({error}); reading it from the database "
                "until Redis answers again",
                error=str(error) or type(error).__name__,
            )

    def _recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("download ranking: Redis answers again")


def ranking_for(store: Any, shared_state: Any) -> Ranking:
    """The Redis ranking when the shared state is shared by a cluster, else SQL's."""
    if shared_state is not None and getattr(shared_state, "shared", False):
        return RedisRanking(store, shared_state)
    return SqlRanking(store)
