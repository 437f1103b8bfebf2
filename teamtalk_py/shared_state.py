"""``SharedState`` (service name ``"redis"``): small, fast, expiring state every node sees.

With ``--redis redis://host:port/db`` the state lives in Redis (through txredisapi), so all
nodes of a cluster share it; without, it lives in this process's memory, which is all a
single process needs. Both backends offer the same calls, each returning a Deferred:

* ``get(key)`` -> bytes or None; ``set(key, value, ttl=None)``; ``delete(key)``;
* ``incr(key, amount=1, ttl=None)`` -> the new value (the TTL is set when the key is
  created, so a counter expires ``ttl`` seconds after its first increment: failed logins);
* ``record_event(key, window)`` / ``count_events(key, window)``: a sliding-window event
  count (group creations, self-registrations per address);
* sorted sets whose scores only grow: ``raise_scores(key, {member: score})`` (a member's
  score becomes the larger of the two), ``remove_members(key, members)``,
  ``count_members(key)``, ``score_range(key, start, stop, descending)`` -> ``[(member,
  score)]`` (the cloud disk's download ranking; scores are counts the database keeps, so
  writing the database's value again is harmless and a lost write heals with the next);
* the file-transfer hook: ``save_transfer(task_id, state, ttl)``,
  ``load_transfer(task_id)`` -> dict or None, ``forget_transfer(task_id)``. The file service
  calls ``save_transfer`` whenever a task's progress changes (``state`` is any JSON-able
  dict, e.g. ``{"offset": 32768, "size": 1048576, "mode": 2}``) with its task timeout as
  ``ttl``, so a task nobody touches disappears on its own on every node.

What is NOT here, on purpose: message ids. They are allocated in the database
(``relations.last_msg_id`` / ``im_groups.last_msg_id``, a row-locked increment in the same
transaction that stores the message), so an id is exactly as durable as the message it
names and two nodes can never hand out the same one. The reference kept those counters
in Redis; a Redis without persistence restarted and handed out ids already used
(TeamTalk issue 57). Redis holds only state that may be lost: losing it resets lockout
counts and forgets in-flight transfer progress, nothing else.

**Redis is never on a message's critical path, and never stalls a caller.** Every call
has a short deadline (``timeout``, 1 s) and goes through a circuit breaker: the first
call that fails or misses its deadline opens it, and from then on every call fails at once
with ``SharedStateUnavailable`` (no waiting) while a PING probes Redis every
``probe_interval`` seconds (0.5 s) in the background; the first answered probe closes it,
so a Redis that is back is noticed within a second or so (the connection pool itself
retries at most every 0.5 s). While closed, a PING every ``ping_interval`` seconds notices
a dead link nobody else noticed. Each caller degrades in the safe direction its module
documents (README, Cluster, lists every key); an outage is logged once when it starts,
summarised every 10 s with the number of calls refused, and once when it ends
(``teamtalk_py.outage``). Keys carry a prefix (``?prefix=`` in the URL, default
``teamtalk:``) so several deployments or test runs can share one Redis.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.metrics import one
from teamtalk_py.outage import OutageLog, Unavailable
from teamtalk_py.services import TeamTalkService

log = Logger(namespace="teamtalk.shared")

DEFAULT_PREFIX = "teamtalk:"
#: Seconds one Redis call may take before it counts as failed (and opens the breaker).
DEFAULT_TIMEOUT = 1.0
#: Seconds between two health PINGs while Redis answers.
DEFAULT_PING_INTERVAL = 5.0
#: Failed probes in a row after which the connection pool is replaced by a new one.
REOPEN_AFTER_PROBES = 6
#: Seconds between two probes while the breaker is open.
DEFAULT_PROBE_INTERVAL = 0.5


class SharedStateUnavailable(Unavailable):
    """Redis did not answer in time, is not connected, or is known to be down."""


def _error_text(failure: Failure) -> str:
    if failure.check(defer.CancelledError, defer.TimeoutError):
        return "no answer within the deadline"
    return failure.getErrorMessage() or type(failure.value).__name__


@dataclass(frozen=True)
class RedisParams:
    host: str
    port: int
    db: int
    password: str | None
    prefix: str

    def describe(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db} (keys {self.prefix}*)"


def parse_redis_url(url: str) -> RedisParams:
    """``redis://[:password@]host[:port][/db][?prefix=name:]``."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"not a redis:// URL: {url!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"redis URL database must be a number, got {path!r}")
    query = parse_qs(parts.query)
    return RedisParams(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(path or 0),
        password=unquote(parts.password) if parts.password else None,
        prefix=query.get("prefix", [DEFAULT_PREFIX])[0],
    )


def _transfer_key(task_id: str) -> str:
    return f"file:task:{task_id}"


class _Backend:
    """The calls both backends implement; transfers are built on get/set/delete."""

    #: Whether other nodes see the same state.
    shared = False

    def describe(self) -> str:
        raise NotImplementedError

    def get(self, key: str) -> defer.Deferred[bytes | None]:
        raise NotImplementedError

    def set(self, key: str, value: bytes | str | int, ttl: float | None = None) -> defer.Deferred:
        raise NotImplementedError

    def delete(self, key: str) -> defer.Deferred:
        raise NotImplementedError

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> defer.Deferred[int]:
        raise NotImplementedError

    def record_event(self, key: str, window: float) -> defer.Deferred[int]:
        raise NotImplementedError

    def count_events(self, key: str, window: float) -> defer.Deferred[int]:
        raise NotImplementedError

    def raise_scores(self, key: str, scores: dict[str, int]) -> defer.Deferred[None]:
        raise NotImplementedError

    def remove_members(self, key: str, members: list[str]) -> defer.Deferred[None]:
        raise NotImplementedError

    def count_members(self, key: str) -> defer.Deferred[int]:
        raise NotImplementedError

    def score_range(
        self, key: str, start: int, stop: int, descending: bool
    ) -> defer.Deferred[list[tuple[str, int]]]:
        """Members ``start`` .. ``stop`` (inclusive, -1 the last) by score, ties by member."""
        raise NotImplementedError

    def start(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def count_degraded(self, kind: str) -> None:
        """A caller fell back because the shared state is down (see ``RedisBackend``)."""

    # -- file-transfer hook -------------------------------------------------------------

    def save_transfer(self, task_id: str, state: dict[str, Any], ttl: float) -> defer.Deferred:
        return self.set(_transfer_key(task_id), json.dumps(state, sort_keys=True), ttl)

    def load_transfer(self, task_id: str) -> defer.Deferred[dict[str, Any] | None]:
        return self.get(_transfer_key(task_id)).addCallback(
            lambda raw: json.loads(raw) if raw is not None else None
        )

    def forget_transfer(self, task_id: str) -> defer.Deferred:
        return self.delete(_transfer_key(task_id))


def _as_bytes(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class MemoryBackend(_Backend):
    """This process only: what a single node without ``--redis`` uses."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._events: dict[str, deque[float]] = {}
        self._zsets: dict[str, dict[str, int]] = {}

    def describe(self) -> str:
        return "in-process memory"

    def _live(self, key: str) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and self.clock.seconds() >= expires:
            del self._values[key]
            return None
        return value

    def _expiry(self, ttl: float | None) -> float | None:
        return self.clock.seconds() + ttl if ttl else None

    def get(self, key: str) -> defer.Deferred[bytes | None]:
        return defer.succeed(self._live(key))

    def set(self, key: str, value: bytes | str | int, ttl: float | None = None) -> defer.Deferred:
        self._values[key] = (_as_bytes(value), self._expiry(ttl))
        return defer.succeed(None)

    def delete(self, key: str) -> defer.Deferred:
        self._values.pop(key, None)
        self._events.pop(key, None)
        return defer.succeed(None)

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> defer.Deferred[int]:
        current = self._live(key)
        if current is None:
            value, expires = amount, self._expiry(ttl)
        else:
            value, expires = int(current) + amount, self._values[key][1]
        self._values[key] = (str(value).encode(), expires)
        return defer.succeed(value)

    def _window(self, key: str, window: float) -> deque[float]:
        events = self._events.setdefault(key, deque())
        horizon = self.clock.seconds() - window
        while events and events[0] <= horizon:
            events.popleft()
        return events

    def record_event(self, key: str, window: float) -> defer.Deferred[int]:
        events = self._window(key, window)
        events.append(self.clock.seconds())
        return defer.succeed(len(events))

    def count_events(self, key: str, window: float) -> defer.Deferred[int]:
        events = self._window(key, window)
        if not events:
            del self._events[key]
        return defer.succeed(len(events))

    def raise_scores(self, key: str, scores: dict[str, int]) -> defer.Deferred[None]:
        zset = self._zsets.setdefault(key, {})
        for member, score in scores.items():
            zset[member] = max(score, zset.get(member, score))
        return defer.succeed(None)

    def remove_members(self, key: str, members: list[str]) -> defer.Deferred[None]:
        zset = self._zsets.get(key, {})
        for member in members:
            zset.pop(member, None)
        return defer.succeed(None)

    def count_members(self, key: str) -> defer.Deferred[int]:
        return defer.succeed(len(self._zsets.get(key, {})))

    def score_range(
        self, key: str, start: int, stop: int, descending: bool
    ) -> defer.Deferred[list[tuple[str, int]]]:
        ordered = sorted(self._zsets.get(key, {}).items(), key=lambda item: (item[1], item[0]))
        if descending:
            ordered.reverse()
        return defer.succeed(ordered[start : None if stop == -1 else stop + 1])


# Atomic helpers run inside Redis (one round trip each, no half-done updates).
_INCR_WITH_TTL = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""
_WINDOW_EVENTS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
end
return redis.call('ZCARD', KEYS[1])
"""
# ARGV: score, member, score, member...: each member's score becomes the larger one.
_RAISE_SCORES = """
for i = 1, #ARGV, 2 do
  local current = redis.call('ZSCORE', KEYS[1], ARGV[i + 1])
  if not current or tonumber(current) < tonumber(ARGV[i]) then
    redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""


class RedisBackend(_Backend):
    """Redis through txredisapi, behind a deadline per call and a circuit breaker (see
    the module docstring): reconnects by itself, fails fast while Redis is known down."""

    shared = True

    def __init__(
        self,
        reactor: Any,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
    ) -> None:
        self.reactor = reactor
        self.params = parse_redis_url(url)
        self.timeout = timeout
        self.probe_interval = probe_interval
        self._redis: Any = None
        self._ping = LoopingCall(self.ping)
        self._ping.clock = reactor
        self._ping_interval = ping_interval
        self._probe = LoopingCall(self._probe_once)
        self._failed_probes = 0
        self._probe.clock = reactor
        #: None before the first PING; False while the breaker is open.
        self.healthy: bool | None = None
        self.last_error = ""
        #: Times Redis became reachable again after an outage.
        self.reconnects = 0
        #: Calls answered at once with SharedStateUnavailable while the breaker was open.
        self.refused = 0
        self.outage = OutageLog(reactor, f"shared state {self.describe()}")
        self._in_flight: set[defer.Deferred] = set()
        #: Set by ``stop``: a call it cancels is not an outage (no probe, no summary).
        self._stopped = False

    def describe(self) -> str:
        return self.params.describe()

    def key(self, key: str) -> str:
        return self.params.prefix + key

    @property
    def available(self) -> bool:
        """False while the breaker is open (calls fail at once)."""
        return self.healthy is not False

    def start(self) -> defer.Deferred[None]:
        self._stopped = False
        self._redis = self._open_pool()
        self._ping.start(self._ping_interval, now=True)
        return defer.succeed(None)

    def _open_pool(self) -> Any:
        import txredisapi

        p = self.params
        # Lazy: the node starts even when Redis is down and connects when it comes back.
        # Raw bytes in and out (no charset, no number guessing).
        pool = txredisapi.lazyConnectionPool(
            host=p.host,
            port=p.port,
            dbid=p.db,
            poolsize=2,
            reconnect=True,
            charset=None,
            password=p.password,
            connectTimeout=self.timeout,
            replyTimeout=self.timeout,
            convertNumbers=False,
        )
        # The pool retries a lost connection after 1, 2.7, 7.4, 10 s by default: a Redis
        # that is back would go unnoticed for up to 10 s. Retry as often as we probe.
        factory = pool._factory
        factory.initialDelay = factory.maxDelay = self.probe_interval
        # The pool's "all connected" Deferred fails once if Redis goes away while a
        # connection is being set up; nobody waits on it in a lazy pool (our calls have
        # their own deadlines), so its failure is not an unhandled error.
        if factory.deferred is not None:
            factory.deferred.addErrback(lambda _: None)
        return pool

    def stop(self) -> defer.Deferred[None]:
        self._stopped = True
        for loop in (self._ping, self._probe):
            if loop.running:
                loop.stop()
        self.outage.stop()
        # Calls still waiting (for a connection that may never come back) end now, so
        # that no timeout outlives the service.
        for pending in list(self._in_flight):
            pending.cancel()
        if self._redis is None:
            return defer.succeed(None)
        redis, self._redis = self._redis, None
        return redis.disconnect().addErrback(lambda _: None)

    def count_degraded(self, kind: str) -> None:
        self.outage.count(kind)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> defer.Deferred:
        if self._redis is None:
            return defer.fail(SharedStateUnavailable("redis is not started"))
        if self.healthy is False:
            # Known down: answer at once; the probe closes the breaker when Redis is back.
            self.refused += 1
            self.outage.count("calls refused at once")
            return defer.fail(SharedStateUnavailable(f"redis is unreachable ({self.last_error})"))
        return defer.ensureDeferred(self._checked(method, *args, **kwargs))

    async def _checked(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One command; a failure that is not Redis's answer opens the breaker."""
        import txredisapi

        try:
            return await self._send(method, *args, **kwargs)
        except txredisapi.ResponseError:
            raise  # Redis answered: a bad command, not an outage
        except Exception:
            error = _error_text(Failure())
            self._trip(error)
            raise SharedStateUnavailable(f"redis {method}: {error}") from None

    async def _send(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One command with the deadline, whatever the breaker says; ``stop`` cancels it."""
        d = getattr(self._redis, method)(*args, **kwargs)
        d.addTimeout(self.timeout, self.reactor)
        self._in_flight.add(d)
        try:
            return await d
        finally:
            self._in_flight.discard(d)

    def _trip(self, error: str) -> None:
        """A call failed or missed its deadline: open the breaker (once) and probe."""
        if self._stopped:
            return  # ``stop`` cancelled it: no probe or outage summary outlives us
        self.last_error = error
        self.outage.failed(error, "calls failed")
        if self.healthy is not False:
            self.healthy = False
            if not self._probe.running:
                self._probe.start(self.probe_interval, now=False)

    def _close(self) -> None:
        if self.healthy is False:
            self.reconnects += 1
            self.outage.recovered()
        elif self.healthy is None:
            log.info("shared state: {target} reachable", target=self.describe())
        self.healthy = True
        if self._probe.running:
            self._probe.stop()

    def _probe_once(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._probe_ping())

    async def _probe_ping(self) -> None:
        """A PING while the breaker is open: closes it once Redis answers. A pool that
        stayed "not connected" for ``REOPEN_AFTER_PROBES`` probes is replaced: with the
        CPUs busy, txredisapi's pool was seen never to reconnect to a restarted Redis."""
        try:
            await self._send("ping")
        except Exception:
            self.last_error = _error_text(Failure())
            self.outage.cause = self.last_error
            self._failed_probes += 1
            if self._failed_probes % REOPEN_AFTER_PROBES == 0 and self._redis is not None:
                stale, self._redis = self._redis, self._open_pool()
                stale.disconnect().addErrback(lambda _: None)
        else:
            self._failed_probes = 0
            self._close()

    def ping(self) -> defer.Deferred[None]:
        """A PING now (the breaker's state does not stop it); opens or closes the breaker
        by its outcome."""
        if self._redis is None:
            return defer.succeed(None)
        return defer.ensureDeferred(self._ping_once())

    async def _ping_once(self) -> None:
        try:
            await self._send("ping")
        except Exception:
            self._trip(_error_text(Failure()))
        else:
            self._close()

    def get(self, key: str) -> defer.Deferred[bytes | None]:
        return self._call("get", self.key(key))

    def command(self, *args: Any) -> defer.Deferred:
        """Any Redis command (keys already prefixed with ``key``); its raw reply."""
        return self._call("execute_command", *args)

    def script(self, source: str, keys: list[str], args: list[Any]) -> defer.Deferred:
        """``EVAL`` a Lua script (keys already prefixed with ``key``)."""
        return self._call("eval", source, keys, args)

    def set(self, key: str, value: bytes | str | int, ttl: float | None = None) -> defer.Deferred:
        pexpire = max(1, int(ttl * 1000)) if ttl else None
        return self._call("set", self.key(key), _as_bytes(value), pexpire=pexpire)

    def delete(self, key: str) -> defer.Deferred:
        return self._call("delete", self.key(key))

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> defer.Deferred[int]:
        pexpire = max(1, int(ttl * 1000)) if ttl else 0
        return self._call("eval", _INCR_WITH_TTL, [self.key(key)], [amount, pexpire]).addCallback(
            int
        )

    def _window_events(self, key: str, window: float, member: str) -> defer.Deferred[int]:
        now = repr(self.reactor.seconds())
        return self._call(
            "eval", _WINDOW_EVENTS, [self.key(key)], [now, repr(float(window)), member]
        ).addCallback(int)

    def record_event(self, key: str, window: float) -> defer.Deferred[int]:
        return self._window_events(key, window, secrets.token_hex(8))

    def count_events(self, key: str, window: float) -> defer.Deferred[int]:
        return self._window_events(key, window, "")

    def raise_scores(self, key: str, scores: dict[str, int]) -> defer.Deferred[None]:
        args: list[Any] = []
        for member, score in scores.items():
            args += [int(score), member]
        if not args:
            return defer.succeed(None)
        return self._call("eval", _RAISE_SCORES, [self.key(key)], args).addCallback(lambda _: None)

    def remove_members(self, key: str, members: list[str]) -> defer.Deferred[None]:
        if not members:
            return defer.succeed(None)
        d = self._call("execute_command", "ZREM", self.key(key), *members)
        return d.addCallback(lambda _: None)

    def count_members(self, key: str) -> defer.Deferred[int]:
        return self._call("execute_command", "ZCARD", self.key(key)).addCallback(int)

    def score_range(
        self, key: str, start: int, stop: int, descending: bool
    ) -> defer.Deferred[list[tuple[str, int]]]:
        command = "ZREVRANGE" if descending else "ZRANGE"
        d = self._call("execute_command", command, self.key(key), start, stop, "WITHSCORES")
        return d.addCallback(_pairs)


def _pairs(reply: list[bytes]) -> list[tuple[str, int]]:
    """``[member, score, member, score...]`` (WITHSCORES) as ``[(member, score)]``."""
    return [(reply[i].decode(), int(float(reply[i + 1]))) for i in range(0, len(reply) - 1, 2)]


class SharedState(TeamTalkService):
    """The ``"redis"`` service: ``SharedState`` calls on Redis or on this process's memory.

    ``shared`` says whether other nodes see the same state (True with ``--redis``).
    """

    name = "redis"

    def __init__(self, reactor: Any, config: Any) -> None:
        super().__init__(reactor, config)
        url = config.store.redis
        self.backend: _Backend = RedisBackend(reactor, url) if url else MemoryBackend(reactor)
        self.shared = self.backend.shared

    async def start(self) -> None:
        await self.backend.start()
        log.info("shared state in {target}", target=self.backend.describe())
        backend = self.backend
        if isinstance(backend, RedisBackend):
            self.metrics.counters(
                "teamtalk_redis_reconnects",
                "Times Redis answered again after it had stopped answering.",
                [],
                lambda: one(backend.reconnects),
            )
            self.metrics.gauges(
                "teamtalk_redis_up",
                "1 while Redis answers (0 while the circuit breaker is open).",
                [],
                lambda: one(1 if backend.healthy else 0),
            )
            self.metrics.counters(
                "teamtalk_redis_refused_calls",
                "Redis calls answered at once as unavailable while Redis was known down.",
                [],
                lambda: one(backend.refused),
            )

    async def stop(self) -> None:
        await self.backend.stop()

    async def health(self) -> dict[str, Any]:
        """Asks Redis for a PING now. A Redis that does not answer leaves the node ready
        (messaging does not need it) but ``degraded``, with the cause."""
        part: dict[str, Any] = {"ok": self.is_started, "target": self.backend.describe()}
        backend = self.backend
        if not isinstance(backend, RedisBackend):
            return part
        await backend.ping()
        if not backend.healthy:
            return {**part, "degraded": True, "error": backend.last_error,
                    **backend.outage.report()}  # fmt: skip
        return part

    def count_degraded(self, kind: str) -> None:
        """A caller fell back because Redis is down: counted in the outage's summary."""
        self.backend.count_degraded(kind)

    # -- the calls (see the module docstring) -------------------------------------------

    def get(self, key: str) -> defer.Deferred[bytes | None]:
        return self.backend.get(key)

    def set(self, key: str, value: bytes | str | int, ttl: float | None = None) -> defer.Deferred:
        return self.backend.set(key, value, ttl)

    def delete(self, key: str) -> defer.Deferred:
        return self.backend.delete(key)

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> defer.Deferred[int]:
        return self.backend.incr(key, amount, ttl)

    def record_event(self, key: str, window: float) -> defer.Deferred[int]:
        return self.backend.record_event(key, window)

    def count_events(self, key: str, window: float) -> defer.Deferred[int]:
        return self.backend.count_events(key, window)

    def raise_scores(self, key: str, scores: dict[str, int]) -> defer.Deferred[None]:
        return self.backend.raise_scores(key, scores)

    def remove_members(self, key: str, members: list[str]) -> defer.Deferred[None]:
        return self.backend.remove_members(key, members)

    def count_members(self, key: str) -> defer.Deferred[int]:
        return self.backend.count_members(key)

    def score_range(
        self, key: str, start: int, stop: int, descending: bool
    ) -> defer.Deferred[list[tuple[str, int]]]:
        return self.backend.score_range(key, start, stop, descending)

    def save_transfer(self, task_id: str, state: dict[str, Any], ttl: float) -> defer.Deferred:
        """File-service hook: remember a task's progress on every node for ``ttl`` s."""
        return self.backend.save_transfer(task_id, state, ttl)

    def load_transfer(self, task_id: str) -> defer.Deferred[dict[str, Any] | None]:
        return self.backend.load_transfer(task_id)

    def forget_transfer(self, task_id: str) -> defer.Deferred:
        return self.backend.forget_transfer(task_id)
