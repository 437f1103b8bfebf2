"""Failed logins: slowed per (name, source address) and per source address, never per
name alone, in tables that stay bounded.

The reference locked a *name* after 10 failures from anywhere, so anybody could lock
anybody out, and it kept a counter for every name ever tried. Here:

* Failures are counted per **(name, address)** and per **address** (every name tried from
  it; an IPv6 address counts by its /64, which one host usually holds whole). A count
  lives ``window`` seconds (30 min) after its last failure.
* A key with ``free_failures`` failures (5 per name and address, 30 per address) makes
  the next attempt wait: 1 s after the last failure, then 2 s, 4 s ... up to
  ``max_delay`` (15 min). An attempt during the wait is refused at once ("too many
  failures"), without checking the password and without counting. It is a delay, not a
  lock: the real owner who mistyped waits a little; a guesser is held to a few tries an
  hour per address.
* Failures from another address never slow the owner's own address: an attacker can
  only lock *his* address out. (One that shares the owner's address, behind the same
  NAT, makes the owner wait too, never more than ``max_delay`` per try.)
* A success clears the (name, address) count; the address count stays.
* Unknown names cost the same as known ones: the same counts, the same answer, and the
  answer as late as a password check takes (``Credentials.refuse_unknown``).

Memory: :class:`FailureTable` is an LRU with expiry of at most ``table_size`` keys per
kind (5,000: about 2 MB for both; ``tests/msg/test_lockout.py`` measures it), so 100,000
unique failures cost no more than 5,000. When full, the key touched longest ago goes.

With ``--redis``, :class:`SharedLoginLockout` keeps the counts in the shared state, so
every node sees them: ``lockout:n:ADDRESS:NAME`` and ``lockout:a:ADDRESS`` (counters that
expire ``window`` after the first failure) and ``lockout:wait:…`` (set for the length of
a delay, with that TTL), so Redis forgets everything by itself.

Without Redis it never falls back to "no lockout" (issue 12's rules). The counts go on in
this node's memory as well (failures made while Redis is unreachable still count here),
and a delay that starts, on either count, is also written to the database with the time
it ends (``store/lockouts.py``, under a digest of its key), which every node consults: a
delayed address stays delayed on every node while Redis is down, and after Redis lost its
keys. A Redis outage costs nothing but the sharing of counts below the thresholds (each
node then counts its own). Its calls are coroutines (``LoginLockout``'s answer at once);
the realm and the token endpoints take either through ``settled``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.addresses import address_key
from teamtalk_py.outage import is_outage_failure
from teamtalk_py.store import lockouts

log = Logger(namespace="teamtalk.msg.lockout")

WINDOW = 30 * 60.0
#: Failures of one name from one address before attempts wait.
FREE_FAILURES = 5
#: Failures of any names from one address before attempts wait.
ADDRESS_FREE_FAILURES = 30
FIRST_DELAY = 1.0
MAX_DELAY = 15 * 60.0
#: Keys kept per table (pairs, addresses).
TABLE_SIZE = 5_000


def delay_after(failures: int, free: int, max_delay: float = MAX_DELAY) -> float:
    """Seconds the next attempt waits after the ``failures``-th failure (0: none)."""
    if failures < free:
        return 0.0
    return min(max_delay, FIRST_DELAY * 2.0 ** min(failures - free, 32))


class FailureTable:
    """key -> (failures, time of the last one): an LRU of at most ``size`` keys, each
    forgotten ``window`` seconds after its last failure."""

    def __init__(self, clock: IReactorTime, size: int, window: float) -> None:
        self.clock = clock
        self.size = size
        self.window = window
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry[1] > self.window:
            del self._entries[key]
            return None
        return entry

    def record(self, key: str) -> int:
        """Count a failure; how many there are now."""
        now = self.clock.seconds()
        entry = self._live(key, now)
        failures = 1 if entry is None else entry[0] + 1
        self._entries[key] = (failures, now)
        self._entries.move_to_end(key)
        self._evict(now)
        return failures

    def _evict(self, now: float) -> None:
        entries = self._entries
        while entries:
            oldest_key, (_, last) = next(iter(entries.items()))
            if len(entries) <= self.size and now - last <= self.window:
                return
            del entries[oldest_key]

    def waiting(self, key: str, free: int, max_delay: float) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        now = self.clock.seconds()
        entry = self._live(key, now)
        if entry is None:
            return 0.0
        failures, last = entry
        return max(0.0, last + delay_after(failures, free, max_delay) - now)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


class LoginLockout:
    """The rule of the module docstring in this process's memory."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        free_failures: int = FREE_FAILURES,
        address_free_failures: int = ADDRESS_FREE_FAILURES,
        max_delay: float = MAX_DELAY,
        window: float = WINDOW,
        table_size: int = TABLE_SIZE,
    ) -> None:
        self.clock = clock
        self.free_failures = free_failures
        self.address_free_failures = address_free_failures
        self.max_delay = max_delay
        self.window = window
        self.pairs = FailureTable(clock, table_size, window)
        self.addresses = FailureTable(clock, table_size, window)

    @staticmethod
    def pair_key(name: str, address: str) -> str:
        return f"{address_key(address)}\0{name}"

    def wait(self, name: str, address: str) -> float:
        """Seconds until ``name`` may try again from ``address`` (0: now)."""
        where = address_key(address)
        return max(
            self.pairs.waiting(f"{where}\0{name}", self.free_failures, self.max_delay),
            self.addresses.waiting(where, self.address_free_failures, self.max_delay),
        )

    def is_locked(self, name: str, address: str) -> bool:
        return self.wait(name, address) > 0

    def record_failure(self, name: str, address: str) -> tuple[int, int]:
        """Count a failure: the failures now counted for (name, address) and for address."""
        where = address_key(address)
        return self.pairs.record(f"{where}\0{name}"), self.addresses.record(where)

    def clear(self, name: str, address: str) -> None:
        self.pairs.forget(self.pair_key(name, address))


class SharedLoginLockout:
    """The same rule over ``SharedState`` (Redis), with this node's ``LoginLockout`` and
    the database's lock rows behind it (module docstring)."""

    def __init__(self, state: Any, clock: IReactorTime, store: Any = None, **rule: Any) -> None:
        self.state = state
        self.clock = clock
        self.store = store
        self.local = LoginLockout(clock, **rule)

    def _keys(self, name: str, address: str) -> list[tuple[str, int]]:
        """The shared keys of an attempt, each with its free failures."""
        where = address_key(address)
        return [
            (f"n:{where}:{name}", self.local.free_failures),
            (f"a:{where}", self.local.address_free_failures),
        ]

    @staticmethod
    def durable_key(key: str) -> str:
        """The database row of a key: a digest, so any name and address fit the column
        (and the table holds no login names)."""
        return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:40]

    def _now(self) -> int:
        return int(self.clock.seconds())

    def _unavailable(self, failure: Failure, what: str) -> None:
        if is_outage_failure(failure):
            self.state.count_degraded(f"lockout {what}s counted on this node only")
        else:
            log.failure("lockout {what} in shared state failed", failure, what=what)

    async def is_locked(self, name: str, address: str) -> bool:
        if self.local.is_locked(name, address):
            return True
        keys = self._keys(name, address)
        for key, _ in keys:
            try:
                waiting = await self.state.get(f"lockout:wait:{key}")
            except Exception:
                self._unavailable(Failure(), "check")
                break
            if waiting is not None:
                return True
        if self.store is None:
            return False
        rows = [self.durable_key(key) for key, _ in keys]
        try:
            until = await self.store.read(lockouts.locked_until, rows)
        except Exception:
            # The database is down too: the login's own account lookup fails next.
            return False
        now = self._now()
        if 0 < until <= now:
            # Ended delays: removed by the first login attempt that sees them.
            self.store.write(lockouts.unlock, rows).addErrback(lambda _: None)
        return bool(until > now)

    async def record_failure(self, name: str, address: str) -> None:
        counted = self.local.record_failure(name, address)
        delays: dict[str, float] = {}
        for (key, free), local_count in zip(self._keys(name, address), counted, strict=True):
            count = local_count
            try:
                shared = await self.state.incr(f"lockout:{key}", 1, ttl=self.local.window)
            except Exception:
                self._unavailable(Failure(), "record")
            else:
                count = max(count, int(shared))
                delay = delay_after(int(shared), free, self.local.max_delay)
                if delay:
                    try:
                        await self.state.set(f"lockout:wait:{key}", 1, ttl=delay)
                    except Exception:
                        self._unavailable(Failure(), "record")
            delay = delay_after(count, free, self.local.max_delay)
            if delay:
                delays[key] = delay
        if delays and self.store is not None:
            now = self._now()
            try:
                for key, delay in delays.items():
                    until = now + max(1, round(delay))
                    await self.store.write(lockouts.lock, self.durable_key(key), until, now)
            except Exception:
                log.failure("writing the login delay of {address} failed", address=address)

    async def clear(self, name: str, address: str) -> None:
        self.local.clear(name, address)
        key = self._keys(name, address)[0][0]
        try:
            await self.state.delete(f"lockout:{key}")
            await self.state.delete(f"lockout:wait:{key}")
        except Exception:
            self._unavailable(Failure(), "clear")
