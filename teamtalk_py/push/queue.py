"""The durable push queue: in the store (embedded) or in Redis Streams (cluster).

Both offer the same calls, each a Deferred:

* ``hand_off(decided)``: queue the jobs decided for outbox rows and delete those rows, so
  each row's jobs are queued exactly once even if two nodes decide the same row; a
  ``HandOff``: the outbox ids whose jobs this call queued, and the jobs already leased to
  the caller (the store queue leases what it inserts, so they are sent without a claim);
* ``claim(limit)``: jobs due now, leased to this node (a node that dies holding them
  leaves them to another after the lease);
* ``settle(done, retry, dead)``: sent or expired jobs leave the queue, retries come back
  when due, failures go to the dead letter;
* ``depth()``: jobs waiting or being sent, for back-pressure (``push.max_queue``); the
  worker reads the store queue's depth in its decision round's own read instead
  (``depth_in_store``).

**Store** (``StoreQueue``): the ``push_queue`` table, written by the store's writer in
the same group commits as messages (``write_soon``: a hand-off or settle waits up to
``LINGER`` for a message's commit to ride in); the hand-off is one transaction.

**Redis Streams** (``StreamQueue``): one stream of jobs read by the consumer group
``push`` (``XREADGROUP``; ``XACK`` + ``XDEL`` once settled; ``XAUTOCLAIM`` takes over
entries another consumer has held longer than the lease). Retries wait in a sorted set
by due time and are moved back into the stream when due; the dead letter is a second
stream. The hand-off runs one Lua script per round that, per outbox row, sets a "fed"
mark (``SET NX``, kept a day) and adds the row's jobs only if the mark was new, then
deletes the outbox rows: a node that dies between the two does not queue them twice.
A claim whose reply is lost (the shared state's deadline) leaves entries pending to this
consumer that the worker never got: the next claim takes them back from the consumer's
own pending list instead of leaving them to the lease.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer

from teamtalk_py.push import store as push_store
from teamtalk_py.push.jobs import PushJob

#: How long the push queue's writes to the store (hand-offs, settles, outbox deletes)
#: wait to ride in a commit the messages make anyway: each commit of their own is an
#: fsync the acks queued behind it wait for. Pushes wait that much longer when the
#: server is otherwise idle.
LINGER = 0.05


@dataclass(frozen=True, slots=True)
class Claimed:
    #: The queue's handle: a row id (store) or a stream entry id (Redis).
    handle: Any
    job: PushJob
    #: Sends tried before this one.
    attempts: int


Decided = Sequence[tuple[int, Sequence[PushJob]]]


@dataclass(frozen=True, slots=True)
class HandOff:
    #: Outbox rows whose jobs this hand-off queued (another node may have been first).
    queued: list[int]
    #: Jobs queued and leased to the caller: send them now.
    leased: list[Claimed]


class PushQueue(Protocol):
    name: str
    #: The queue is the store's ``push_queue`` table: the worker counts its depth in the
    #: decision round's own read instead of calling ``depth()``.
    depth_in_store: bool

    def start(self) -> defer.Deferred[None]: ...

    def hand_off(self, decided: Decided) -> defer.Deferred[HandOff]: ...

    def depth(self) -> defer.Deferred[int]: ...

    def claim(self, limit: int) -> defer.Deferred[list[Claimed]]: ...

    def settle(
        self,
        done: Sequence[Claimed],
        retry: Sequence[tuple[Claimed, float, str]],
        dead: Sequence[tuple[Claimed, str]],
    ) -> defer.Deferred[None]: ...


class StoreQueue:
    """The embedded queue: the ``push_queue`` table."""

    name = "store"
    depth_in_store = True

    def __init__(self, store: Any, clock: Any, lease: float, linger: float = LINGER) -> None:
        self.store = store
        self.clock = clock
        self.lease_ms = int(lease * 1000)
        #: Hand-offs and settles wait up to this long for a message's commit to ride in
        #: (``write_soon``) instead of committing on their own.
        self.linger = linger

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def start(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def hand_off(self, decided: Decided) -> defer.Deferred[HandOff]:
        rows = [
            (outbox_id, [(j.sender, j.to_json()) for j in jobs] if jobs else ())
            for outbox_id, jobs in decided
        ]
        now = self._now_ms()
        jobs_of = dict(decided)

        def handed(queued: list[tuple[int, list[int]]]) -> HandOff:
            leased = [
                Claimed(queue_id, job, 0)
                for outbox_id, ids in queued
                for queue_id, job in zip(ids, jobs_of[outbox_id], strict=True)
            ]
            return HandOff([outbox_id for outbox_id, _ in queued], leased)

        d = self.store.write_soon(
            self.linger, push_store.hand_off_to_queue, rows, now, now + self.lease_ms
        ).addCallback(handed)
        return d

    def depth(self) -> defer.Deferred[int]:
        return self.store.read(push_store.queue_depth)

    def claim(self, limit: int) -> defer.Deferred[list[Claimed]]:
        return defer.ensureDeferred(self._claim(limit))

    async def _claim(self, limit: int) -> list[Claimed]:
        # A read first: most ticks find nothing due, and a write would cost a commit.
        due = await self.store.read(push_store.next_due)
        if due is None or due > self._now_ms():
            return []
        rows = await self.store.write(push_store.claim_jobs, self._now_ms(), self.lease_ms, limit)
        return [Claimed(r.id, PushJob.from_json(r.job), r.attempts) for r in rows]

    def settle(
        self,
        done: Sequence[Claimed],
        retry: Sequence[tuple[Claimed, float, str]],
        dead: Sequence[tuple[Claimed, str]],
    ) -> defer.Deferred[None]:
        now = self._now_ms()
        return self.store.write_soon(
            self.linger,
            push_store.settle_jobs,
            [c.handle for c in done],
            [(c.handle, now + int(delay * 1000), error) for c, delay, error in retry],
            [(c.handle, error) for c, error in dead],
        )


# KEYS: stream, then one "fed" mark per outbox row. ARGV: ttl, then per row: n, n jobs.
# Per row: the jobs added, or -1 when its mark was already set (queued before).
_FEED = """
local added = {}
local i = 2
for k = 2, #KEYS do
  local n = tonumber(ARGV[i]); i = i + 1
  if redis.call('SET', KEYS[k], '1', 'NX', 'EX', ARGV[1]) then
    for j = i, i + n - 1 do
      redis.call('XADD', KEYS[1], '*', 'job', ARGV[j], 'attempts', '0')
    end
    added[#added + 1] = n
  else
    added[#added + 1] = -1
  end
  i = i + n
end
return added
"""

# ARGV: now_ms, limit. Due retries go back into the stream with their attempt count.
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local entry = cjson.decode(member)
  redis.call('XADD', KEYS[1], '*', 'job', entry['job'], 'attempts', tostring(entry['attempts']))
  redis.call('ZREM', KEYS[2], member)
end
return #due
"""

# KEYS: stream, delayed, dead. ARGV: group, n_done, ids..., n_retry, (id, due, member)...,
# n_dead, (id, job, attempts, error)...
_SETTLE = """
local i = 2
local function ack(id)
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do ack(ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i + 2]); ack(ARGV[i]); i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('XADD', KEYS[3], '*', 'job', ARGV[i + 1], 'attempts', ARGV[i + 2],
             'error', ARGV[i + 3])
  ack(ARGV[i]); i = i + 4
end
return 1
"""

GROUP = "push"
FED_TTL = 86400


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Sequence[Any]) -> dict[str, str]:
    return {_text(raw[i]): _text(raw[i + 1]) for i in range(0, len(raw), 2)}


class StreamQueue:
    """The cluster queue: Redis Streams through the shared state's Redis connection."""

    name = "redis"
    depth_in_store = False

    def __init__(self, redis: Any, store: Any, clock: Any, lease: float, consumer: str) -> None:
        #: The shared state's ``RedisBackend`` (``command``, ``script``, ``key``).
        self.redis = redis
        self.store = store
        self.clock = clock
        self.lease_ms = int(lease * 1000)
        self.consumer = consumer
        self.stream = redis.key("push:jobs")
        self.delayed = redis.key("push:delayed")
        self.dead = redis.key("push:dead")
        self._last_autoclaim = float("-inf")
        #: Where the next XAUTOCLAIM starts: "0-0", or further on while a sweep of
        #: entries held past their lease has more pages.
        self._autoclaim_from = "0-0"
        #: Entries given to the worker and not settled yet.
        self._out: set[str] = set()
        #: A claim failed: its reply may be what was lost, with entries now pending to
        #: this consumer that nobody sends. The next claim takes them back.
        self._orphans = False

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def _start(self) -> None:
        try:
            await self.redis.command("XGROUP", "CREATE", self.stream, GROUP, "0", "MKSTREAM")
        except Exception as e:
            if "BUSYGROUP" not in str(e):
                raise

    def start(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._start())

    async def _hand_off(self, decided: Decided) -> HandOff:
        # One script for the round (not one per row: hundreds of calls at once missed
        # the shared state's deadline on a busy node).
        keys = [self.stream, *[self.redis.key(f"push:fed:{outbox_id}") for outbox_id, _ in decided]]
        args: list[Any] = [FED_TTL]
        for _, jobs in decided:
            args += [len(jobs), *[j.to_json() for j in jobs]]
        added = await self.redis.script(_FEED, keys, args)
        await self.store.write_soon(
            LINGER, push_store.delete_outbox, [outbox_id for outbox_id, _ in decided]
        )
        queued = [
            outbox_id for (outbox_id, _), n in zip(decided, added, strict=True) if int(n) >= 0
        ]
        return HandOff(queued, [])  # consumers read them from the stream

    def hand_off(self, decided: Decided) -> defer.Deferred[HandOff]:
        return defer.ensureDeferred(self._hand_off(decided))

    async def _depth(self) -> int:
        waiting = await self.redis.command("XLEN", self.stream)
        delayed = await self.redis.command("ZCARD", self.delayed)
        return int(waiting) + int(delayed)

    def depth(self) -> defer.Deferred[int]:
        return defer.ensureDeferred(self._depth())

    def _entries(self, raw: Any) -> list[Claimed]:
        claimed = []
        for item in raw or []:
            if not item or not item[1]:
                continue  # deleted while pending
            entry_id, raw_fields = item
            fields = _fields(raw_fields)
            claimed.append(
                Claimed(
                    _text(entry_id),
                    PushJob.from_json(fields["job"]),
                    int(fields.get("attempts", "0")),
                )
            )
        return claimed

    async def _claim(self, limit: int) -> list[Claimed]:
        try:
            claimed = await self._claim_due(limit)
        except Exception:
            self._orphans = True
            raise
        self._out.update(c.handle for c in claimed)
        return claimed

    async def _claim_due(self, limit: int) -> list[Claimed]:
        now = self._now_ms()
        await self.redis.script(_MOVE_DUE, [self.stream, self.delayed], [now, limit])
        claimed: list[Claimed] = []
        if self._orphans:
            claimed = await self._own_orphans(limit)
        if len(claimed) < limit and (
            self._autoclaim_from != "0-0" or now - self._last_autoclaim >= self.lease_ms / 2
        ):
            self._last_autoclaim = now
            reply = await self.redis.command(
                "XAUTOCLAIM", self.stream, GROUP, self.consumer, self.lease_ms,
                self._autoclaim_from, "COUNT", limit - len(claimed),
            )  # fmt: skip
            # More held past the lease than one page: the next claim goes on at once.
            self._autoclaim_from = _text(reply[0])
            claimed += [c for c in self._entries(reply[1]) if c.handle not in self._out]
        if len(claimed) < limit:
            reply = await self.redis.command(
                "XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", limit - len(claimed),
                "STREAMS", self.stream, ">",
            )  # fmt: skip
            for _stream, entries in reply or []:
                claimed.extend(self._entries(entries))
        return claimed

    async def _own_orphans(self, limit: int) -> list[Claimed]:
        """Entries pending to this consumer that the worker was never given (a claim
        whose reply was lost): without this they would wait out the lease."""
        found: list[Claimed] = []
        after = "0"
        while len(found) < limit:
            reply = await self.redis.command(
                "XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", limit,
                "STREAMS", self.stream, after,
            )  # fmt: skip
            entries = [e for _stream, page in reply or [] for e in page or []]
            if not entries:
                self._orphans = False
                break
            after = _text(entries[-1][0])
            found += [c for c in self._entries(entries) if c.handle not in self._out]
        return found[:limit]

    def claim(self, limit: int) -> defer.Deferred[list[Claimed]]:
        return defer.ensureDeferred(self._claim(limit))

    def settle(
        self,
        done: Sequence[Claimed],
        retry: Sequence[tuple[Claimed, float, str]],
        dead: Sequence[tuple[Claimed, str]],
    ) -> defer.Deferred[None]:
        now = self._now_ms()
        args: list[Any] = [GROUP, len(done), *[c.handle for c in done], len(retry)]
        for claimed, delay, _error in retry:
            member = json.dumps(
                {"job": claimed.job.to_json(), "attempts": claimed.attempts + 1},
                separators=(",", ":"),
            )
            args += [claimed.handle, now + int(delay * 1000), member]
        args.append(len(dead))
        for claimed, error in dead:
            args += [claimed.handle, claimed.job.to_json(), claimed.attempts + 1, error[:500]]
        d = self.redis.script(_SETTLE, [self.stream, self.delayed, self.dead], args)
        handles = [c.handle for c in done] + [c.handle for c, _, _ in retry]
        handles += [c.handle for c, _ in dead]

        def finished(result: object) -> object:
            # Settled, or not (then sent again after the lease, as by a node that died).
            self._out.difference_update(handles)
            return result

        return d.addBoth(finished).addCallback(lambda _: None)
