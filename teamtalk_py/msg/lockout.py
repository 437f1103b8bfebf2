"""Failed-login lockout: more than 10 failures in 30 minutes locks a login name.

``LoginLockout`` keeps the count per node in memory (the reference keeps it per db_proxy
process). With ``--redis``, ``SharedLoginLockout`` keeps it in the shared state so every
node sees the same count, as a sliding window that expires by itself.

Without Redis it never falls back to "no lockout". The count goes on in this node's
memory as well (failures made while Redis is unreachable still count here), and a lock
that trips, on either count, is also written to the database with the time it ends
(``store/lockouts.py``), which every node consults: a name locked on one node stays
locked on every node while Redis is down, and after Redis lost its keys. A Redis outage
costs lockouts nothing but the sharing of counts below the limit (each node then counts
its own, so an attacker gets up to 10 tries per node before the lock trips).
Its calls return Deferreds; the login handler accepts either kind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.outage import is_outage_failure
from teamtalk_py.store import lockouts

log = Logger(namespace="teamtalk.msg.lockout")

WINDOW = 30 * 60.0
MAX_FAILURES = 10


class LoginLockout:
    def __init__(
        self, clock: IReactorTime, max_failures: int = MAX_FAILURES, window: float = WINDOW
    ) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, name: str) -> deque[float] | None:
        failures = self._failures.get(name)
        if failures is None:
            return None
        horizon = self.clock.seconds() - self.window
        while failures and failures[0] < horizon:
            failures.popleft()
        if not failures:
            del self._failures[name]
            return None
        return failures

    def is_locked(self, name: str) -> bool:
        failures = self._recent(name)
        return failures is not None and len(failures) > self.max_failures

    def record_failure(self, name: str) -> None:
        failures = self._recent(name)
        if failures is None:
            failures = self._failures[name] = deque()
        failures.append(self.clock.seconds())

    def clear(self, name: str) -> None:
        self._failures.pop(name, None)


class SharedLoginLockout:
    """The same rule over ``SharedState`` (Redis), with this node's ``LoginLockout`` and
    the database's lock rows behind it (module docstring)."""

    def __init__(
        self,
        state: Any,
        clock: IReactorTime,
        store: Any = None,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
    ) -> None:
        self.state = state
        self.clock = clock
        self.store = store
        self.max_failures = max_failures
        self.window = window
        self.fallback = LoginLockout(clock, max_failures, window)

    @staticmethod
    def _key(name: str) -> str:
        return f"lockout:{name}"

    def _now(self) -> int:
        return int(self.clock.seconds())

    def _unavailable(self, failure: Failure, what: str) -> None:
        if is_outage_failure(failure):
            self.state.count_degraded(f"lockout {what}s counted on this node only")
        else:
            log.failure("lockout {what} in shared state failed", failure, what=what)

    @defer.inlineCallbacks
    def is_locked(self, name: str) -> Generator[defer.Deferred[Any], Any, bool]:
        if self.fallback.is_locked(name):
            return True
        try:
            count = yield self.state.count_events(self._key(name), self.window)
        except Exception:
            self._unavailable(Failure(), "check")
        else:
            if count > self.max_failures:
                return True
        if self.store is None:
            return False
        try:
            until = yield self.store.read(lockouts.locked_until, name)
        except Exception:
            # The database is down too: the login's own account lookup fails next.
            return False
        if 0 < until <= self._now():
            # An ended lock: removed by the first login attempt that sees it.
            self.store.write(lockouts.unlock, name).addErrback(lambda _: None)
        return bool(until > self._now())

    @defer.inlineCallbacks
    def record_failure(self, name: str) -> Generator[defer.Deferred[Any], Any, None]:
        self.fallback.record_failure(name)
        tripped = self.fallback.is_locked(name)
        try:
            count = yield self.state.record_event(self._key(name), self.window)
        except Exception:
            self._unavailable(Failure(), "record")
        else:
            tripped = tripped or count > self.max_failures
        if tripped and self.store is not None:
            until = self._now() + int(self.window)
            try:
                yield self.store.write(lockouts.lock, name, until)
            except Exception:
                log.failure("writing the lockout of {name!r} failed", name=name)

    @defer.inlineCallbacks
    def clear(self, name: str) -> Generator[defer.Deferred[Any], Any, None]:
        self.fallback.clear(name)
        try:
            yield self.state.delete(self._key(name))
        except Exception:
            self._unavailable(Failure(), "clear")
