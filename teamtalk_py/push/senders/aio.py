"""Run asyncio HTTP/2 clients beside the reactor: one thread, one event loop.

httpx's HTTP/2 client multiplexes many requests on one connection only in its asyncio
flavour, and the reactor thread must never block. ``AsyncioThread`` runs a private
asyncio loop in a daemon thread; ``run(coroutine)`` schedules a coroutine there and
returns a Deferred that fires on the reactor thread with its result or failure.
"""

from __future__ import annotations

import asyncio
import ssl
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


class Http2Client:
    """One httpx HTTP/2 client living on an ``AsyncioThread`` (APNs and FCM senders).

    Made on first use inside the thread's loop; ``ca_file`` (PEM) replaces the system's
    CAs when set (tests, TLS-inspecting proxies).
    """

    def __init__(self, thread: AsyncioThread, ca_file: str = "", timeout: float = 20.0) -> None:
        self.thread = thread
        self.ca_file = ca_file
        self.timeout = timeout
        self._client: Any = None

    def get(self) -> Any:
        """The client (call from the thread's loop only)."""
        if self._client is None:
            import httpx

            verify: Any = True
            if self.ca_file:
                verify = ssl.create_default_context(cafile=self.ca_file)
            self._client = httpx.AsyncClient(http2=True, verify=verify, timeout=self.timeout)
        return self._client

    def close(self) -> defer.Deferred[None]:
        if self._client is None:
            return defer.succeed(None)
        client, self._client = self._client, None
        return self.thread.run(client.aclose()).addErrback(lambda _: None)
