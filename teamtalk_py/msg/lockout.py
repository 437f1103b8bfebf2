"""Failed-login lockout: more than 10 failures in 30 minutes locks a login name.

Kept per node in memory (the reference keeps it per db_proxy process); the cluster issue
moves it to Redis so every node sees the same count.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.interfaces import IReactorTime

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
