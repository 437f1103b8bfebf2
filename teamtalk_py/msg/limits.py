"""What one user may send: messages per second, bytes stored per day, groups per hour.

The reference has no quota at all (one client stored 5.3 GB of 60 KB messages in 30 s)
and silently drops everything a connection sends past 20 messages a second. Here:

* ``TokenBucket``: a burst of ``message_burst`` messages (100), refilled at
  ``message_rate`` a second (20, the reference's cap), per user, so people and bots are
  never refused in normal use while a flood is throttled within its first second;
* ``MessageLimits``: that bucket plus the bytes a user stored today (UTC), per user on
  this node; a refusal is a reason string, answered by the caller the way every refused
  message is (an ack with ``msg_id = 0``);
* ``WindowLimit``: at most N events an hour per user (group creations), counted in the
  shared state so that every node of a cluster sees the same count;
* ``RefusalBudget``: the connection side; a connection that keeps running into limits
  (``max_refusals`` refusals beyond a refill of one a second) is closed. Each refusal
  also stops reading that connection for one message interval (``1 / message_rate``):
  a flood is then read no faster than it may send, and waits in its own socket buffer
  instead of costing the server a parse and an answer per packet.

Refusals are counted by kind (``refused``, a metric hook) and logged once per user per
``LOG_INTERVAL`` with the count since, so a flood does not become a log flood. In a
cluster each node counts for itself: a user has at most a PC and a mobile connection, so
at most twice the allowance.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger(namespace="teamtalk.msg.limits")

#: Seconds between two log lines about the same user's refusals.
LOG_INTERVAL = 10.0
DAY = 86400


class OverLimit(str):
    """A refusal reason for a limit: already counted and logged here (in aggregate), so
    the caller answers it without a log line of its own."""

    __slots__ = ()


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate`` a second."""

    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if there are that many; False (nothing taken) if not."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.capacity


@dataclass(slots=True)
class _Sender:
    bucket: TokenBucket | None
    day: int = -1
    stored_today: int = 0
    refused_since_log: int = 0
    logged_at: float = float("-inf")


class MessageLimits:
    """Per-user message allowance on this node (``[msg]`` message_rate, message_burst,
    max_bytes_per_day; 0 turns one off)."""

    def __init__(self, clock: IReactorTime, *, rate: float, burst: int, bytes_per_day: int) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.bytes_per_day = bytes_per_day
        self._senders: dict[int, _Sender] = {}
        self._today = -1
        #: Refusals by kind since start ("rate", "daily bytes"): a metric hook.
        self.refused: Counter[str] = Counter()

    def configure(self, *, rate: float, burst: int, bytes_per_day: int) -> None:
        """New values (a reload): buckets start over with the new size."""
        self.rate, self.burst, self.bytes_per_day = rate, burst, bytes_per_day
        self._senders.clear()

    def check(self, user_id: int, size: int) -> OverLimit | None:
        """Count one message of ``size`` bytes; the reason it is refused, or None."""
        now = self.clock.seconds()
        day = int(now // DAY)
        if day != self._today:
            self._new_day(day, now)
        sender = self._senders.get(user_id)
        if sender is None:
            bucket = TokenBucket(self.burst, self.rate, now) if self.rate > 0 else None
            sender = self._senders[user_id] = _Sender(bucket)
        if sender.day != day:
            sender.day, sender.stored_today = day, 0
        if sender.bucket is not None and not sender.bucket.take(now):
            return self._refuse(user_id, sender, "rate", now)
        if self.bytes_per_day and sender.stored_today + size > self.bytes_per_day:
            return self._refuse(user_id, sender, "daily bytes", now)
        sender.stored_today += size
        return None

    def _refuse(self, user_id: int, sender: _Sender, kind: str, now: float) -> OverLimit:
        self.refused[kind] += 1
        sender.refused_since_log += 1
        if now - sender.logged_at >= LOG_INTERVAL:
            log.info(
                "user {user_id} over the {kind} limit: {count} messages refused",
                user_id=user_id,
                kind=kind,
                count=sender.refused_since_log,
            )
            sender.logged_at, sender.refused_since_log = now, 0
        if kind == "rate":
            return OverLimit(f"over {self.rate:g} messages/s (burst {self.burst})")
        return OverLimit(f"over {self.bytes_per_day} bytes stored today")

    def _new_day(self, day: int, now: float) -> None:
        """Forget senders with nothing left to remember (a full bucket, another day)."""
        self._today = day
        idle = [
            user_id
            for user_id, s in self._senders.items()
            if s.day != day and (s.bucket is None or s.bucket.full(now))
        ]
        for user_id in idle:
            del self._senders[user_id]

    def __len__(self) -> int:
        return len(self._senders)


class WindowLimit:
    """At most ``limit`` events per ``window`` seconds per key (0: no limit), in the
    shared state (``SharedState``: Redis in a cluster, this process's memory otherwise;
    set ``state`` before use). When Redis does not answer the event is allowed: nothing
    this guards is worth refusing people for while the cluster's state is away."""

    def __init__(self, name: str, limit: int, window: float, state: Any = None) -> None:
        self.name = name
        self.limit = limit
        self.window = window
        self.state = state
        #: Events refused since start (a metric hook).
        self.refused = 0

    async def take(self, key: str) -> bool:
        """Count one event for ``key``; False (not counted) when it is over the limit."""
        if not self.limit or self.state is None:
            return True
        state_key = f"limit:{self.name}:{key}"
        try:
            if await self.state.count_events(state_key, self.window) >= self.limit:
                self.refused += 1
                log.info(
                    "{key} over the limit of {limit} {name} per {window:g} s",
                    key=key,
                    limit=self.limit,
                    name=self.name,
                    window=self.window,
                )
                return False
            await self.state.record_event(state_key, self.window)
        except Exception as e:
            log.warn("{name} limit not checked: {error}", name=self.name, error=str(e))
        return True


class RefusalBudget:
    """How many limit refusals a connection may collect: ``allowance`` at once, one more
    a second. Past that the connection is to be closed: it keeps exceeding its limits."""

    __slots__ = ("bucket",)

    def __init__(self, allowance: int, now: float) -> None:
        self.bucket = TokenBucket(allowance, 1.0, now)

    def spend(self, now: float) -> bool:
        """Count one refusal; False once the budget is gone."""
        return self.bucket.take(now)
