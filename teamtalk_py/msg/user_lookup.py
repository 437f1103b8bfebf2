"""The account rows logins need, read for a whole reactor turn at once.

Every login reads its user row from the store on a reader thread. In a login storm that
is a thread hand-off (a queue put, a GIL hand-over, a callback from the thread) per
login; here the names asked for in one reactor turn go to the store as one job that
reads them all in one transaction, and each login gets its own row back. Nothing is
cached: every login sees the row as committed when its batch ran, so a password change
or a disabled account counts from the next batch on, as it did per login.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from teamtalk_py.store import accounts
from teamtalk_py.store.accounts import UserRow

#: Names one store job reads at most (a larger turn is split).
MAX_BATCH = 256


class UserLookups:
    """``by_name(name)``: the user row of ``name`` (None when unknown), batched per turn."""

    def __init__(self, clock: IReactorTime, store: Any) -> None:
        self.clock = clock
        self.store = store
        self._waiting: dict[str, list[defer.Deferred[UserRow | None]]] = {}
        self._call: IDelayedCall | None = None
        #: Store jobs run and names read by them (the batching at work).
        self.jobs = 0
        self.names = 0

    def by_name(self, name: str) -> defer.Deferred[UserRow | None]:
        d: defer.Deferred[UserRow | None] = defer.Deferred()
        self._waiting.setdefault(name, []).append(d)
        if self._call is None:
            self._call = self.clock.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        self._call = None
        waiting, self._waiting = self._waiting, {}
        names = list(waiting)
        for start in range(0, len(names), MAX_BATCH):
            chunk = names[start : start + MAX_BATCH]
            self.jobs += 1
            self.names += len(chunk)
            d = self.store.read(accounts.get_users_by_names, chunk)
            d.addCallbacks(self._found, self._failed, (chunk, waiting), None, (chunk, waiting))

    @staticmethod
    def _found(
        rows: list[UserRow | None],
        chunk: list[str],
        waiting: dict[str, list[defer.Deferred[UserRow | None]]],
    ) -> None:
        for name, row in zip(chunk, rows, strict=True):
            for d in waiting[name]:
                d.callback(row)

    @staticmethod
    def _failed(
        failure: Failure,
        chunk: list[str],
        waiting: dict[str, list[defer.Deferred[UserRow | None]]],
    ) -> None:
        for name in chunk:
            for d in waiting[name]:
                d.errback(failure)
