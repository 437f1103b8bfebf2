"""Run asyncio HTTP/2 clients beside the reactor: one thread, one event loop.

httpx's HTTP/2 client multiplexes many requests on one connection only in its asyncio
flavour, and the reactor thread must never block. ``AsyncioThread`` runs a private
asyncio loop in a daemon thread; ``run(coroutine)`` schedules a coroutine there and
returns a Deferred that fires on the reactor thread with its result or failure.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

T = TypeVar("T")


class AsyncioThread:
    def __init__(self, reactor: Any, name: str = "push-http") -> None:
        self.reactor = reactor
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> defer.Deferred[T]:
        if self.loop is None:
            coroutine.close()
            return defer.fail(RuntimeError(f"{self.name} thread is not running"))
        d: defer.Deferred[T] = defer.Deferred()
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)

        def finished(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                self.reactor.callFromThread(d.errback, Failure(exc))
            else:
                self.reactor.callFromThread(d.callback, f.result())

        future.add_done_callback(finished)
        return d

    def stop(self) -> defer.Deferred[None]:
        """Stop the loop and wait for the thread (off the reactor thread)."""
        loop, thread = self.loop, self._thread
        self.loop, self._thread = None, None
        if loop is None or thread is None:
            return defer.succeed(None)
        from twisted.internet.threads import deferToThreadPool

        loop.call_soon_threadsafe(loop.stop)
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), thread.join, 10)
