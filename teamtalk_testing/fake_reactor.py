"""A fake reactor for handler tests: Twisted's ``MemoryReactorClock`` plus threads.

Handler tests run the real services on it (Synapse's ``HomeserverTestCase`` does the same
with its ``ThreadedMemoryReactorClock``): time moves only when the test says
``advance(seconds)``, listeners bind nothing, and client protocols are paired with server
connections in memory (``twisted.test.iosim``). What the store and the password checks do
on their own threads comes back through ``callFromThread``, which here queues the call
until the test pumps the reactor: a test never waits for a timer on the wall clock, only
(briefly) for a store thread to finish real work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer


@implementer(IReactorFromThreads)
class ThreadedMemoryReactorClock(MemoryReactorClock):
    """``MemoryReactorClock`` whose ``callFromThread`` runs calls at the next ``pump``."""

    def __init__(self) -> None:
        super().__init__()
        self._from_threads: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()
        #: Set whenever a thread hands the reactor a call (``wait_for_threads``).
        self._woken = threading.Event()

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._from_threads.append((callable, args, kwargs))
        self._woken.set()

    def run_thread_calls(self) -> int:
        """Run what threads handed over so far (and what those calls hand over)."""
        ran = 0
        while True:
            with self._lock:
                calls, self._from_threads = self._from_threads, []
                self._woken.clear()
            if not calls:
                return ran
            for callable, args, kwargs in calls:
                callable(*args, **kwargs)
                ran += 1

    def wait_for_threads(self, timeout: float) -> bool:
        """Block until a thread hands over a call, at most ``timeout`` seconds."""
        return self._woken.wait(timeout)
