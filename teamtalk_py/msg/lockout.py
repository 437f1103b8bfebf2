"""Failed-login lockout: more than 10 failures in 30 minutes locks a login name.

``LoginLockout`` keeps the count per node in memory (the reference keeps it per db_proxy
process). With ``--redis``, ``SharedLoginLockout`` keeps it in the shared state so every
node sees the same count, as a sliding window that expires by itself; when Redis does
not answer it falls back to the in-memory count of this node rather than blocking logins.
Its calls return Deferreds; the login handler accepts either kind.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

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
    """The same rule over ``SharedState`` (Redis), with ``LoginLockout`` as the fallback."""

    def __init__(
        self,
        state: Any,
        clock: IReactorTime,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
    ) -> None:
        self.state = state
        self.max_failures = max_failures
        self.window = window
        self.fallback = LoginLockout(clock, max_failures, window)

    @staticmethod
    def _key(name: str) -> str:
        return f"lockout:{name}"

    def _unavailable(self, failure: Failure, what: str) -> None:
        log.warn(
            "lockout {what} in shared state failed ({error}); counting on this node",
            what=what,
            error=failure.getErrorMessage(),
        )

    @defer.inlineCallbacks
    def is_locked(self, name: str):
        try:
            count = yield self.state.count_events(self._key(name), self.window)
        except Exception:
            self._unavailable(Failure(), "check")
            return self.fallback.is_locked(name)
        # The local count matters too: failures made while Redis was unreachable.
        return count > self.max_failures or self.fallback.is_locked(name)

    @defer.inlineCallbacks
    def record_failure(self, name: str):
        self.fallback.record_failure(name)
        try:
            yield self.state.record_event(self._key(name), self.window)
        except Exception:
            self._unavailable(Failure(), "record")

    @defer.inlineCallbacks
    def clear(self, name: str):
        self.fallback.clear(name)
        try:
            yield self.state.delete(self._key(name))
        except Exception:
            self._unavailable(Failure(), "clear")
