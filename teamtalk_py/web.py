"""What every HTTP listener of ours guards against, whatever it serves.

``twisted.web`` as shipped waits 12 hours for a quiet connection, lets a client take as
long as it likes over its request headers (one byte every minute keeps it open), and
stores a request body of any announced size (in memory, then a temporary file) before
the resource sees it. :class:`GuardedSite` is the ``Site`` the login, ops, media and disk
listeners use instead:

* **a header deadline**: the request line and headers must be in within
  ``header_timeout`` seconds of the connection's start (or of the previous answer on a
  kept-alive connection), however slowly they trickle; otherwise the connection is
  dropped;
* **an idle timeout** (``idle_timeout``): a connection that sends nothing is closed;
* **a body limit** (``max_body``): a request announcing more (``Content-Length``) is
  answered 413 at once and the connection closed, without reading the body; a chunked
  body is cut off the same way when it passes the limit. Routes that stream bodies
  (media and disk uploads) use a request class of their own that applies each route's
  limit instead (``teamtalk_py.media.http``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

log = Logger(namespace="teamtalk.web")

#: Seconds a client has for a request's line and headers.
HEADER_TIMEOUT = 10.0
#: Seconds a connection may stay silent (between requests, or mid-body).
IDLE_TIMEOUT = 60.0
#: Largest request body of a route that does not stream (JSON, forms): 64 KiB.
MAX_BODY = 64 * 1024


def answer_and_close(
    request: server.Request, status: int, headers: dict[bytes, bytes], body: bytes = b""
) -> None:
    """Answer before the request is complete and close: the rest is not worth reading
    (twisted.web would only answer once the whole body arrived)."""
    channel: Any = request.channel
    if channel is None or channel.transport is None:
        return
    headers = dict(headers)
    headers[b"Content-Length"] = b"%d" % len(body)
    headers[b"Connection"] = b"close"
    lines = [b"HTTP/1.1 %d %s" % (status, http.RESPONSES.get(status, b"Error"))]
    lines += [name + b": " + value for name, value in headers.items()]
    transport: Any = channel.transport
    transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    transport.resumeProducing()
    transport.loseConnection()


class GuardedChannel(http.HTTPChannel):
    """An ``HTTPChannel`` with a deadline for each request's headers (module docstring)."""

    site: GuardedSite
    _header_deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.callLater(self.site.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None and self._header_deadline.active():
            self._header_deadline.cancel()
        self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        peer = self.transport.getPeer() if self.transport is not None else None
        log.info(
            "HTTP headers from {peer} not complete within {timeout} s: closed",
            peer=getattr(peer, "host", "?"),
            timeout=self.site.header_timeout,
        )
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def allHeadersReceived(self) -> None:
        self._disarm_header_deadline()
        super().allHeadersReceived()

    def requestDone(self, request: http.Request) -> None:
        super().requestDone(request)
        transport: Any = self.transport
        if self.persistent and transport is not None and not transport.disconnecting:
            self._arm_header_deadline()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm_header_deadline()
        super().connectionLost(reason)


class GuardedRequest(server.Request):
    """A request whose body may not exceed its site's ``max_body`` (module docstring)."""

    _body_received = 0
    _refused = False

    @property
    def max_body(self) -> int:
        channel: Any = self.channel
        site: GuardedSite = channel.site
        return int(site.max_body)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self._refuse_body()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_received += len(data)
        if self._body_received > self.max_body:
            self._refuse_body()
            return
        super().handleContentChunk(data)

    def _refuse_body(self) -> None:
        self._refused = True
        self.content = _Discard()
        peer = self.getClientAddress()
        log.info(
            "HTTP body from {peer} over {limit} bytes: refused (413)",
            peer=getattr(peer, "host", "?"),
            limit=self.max_body,
        )
        answer_and_close(self, 413, {b"Content-Type": b"text/plain"}, b"request body too large\n")

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # already answered
        super().requestReceived(command, path, version)


class WriteOnlyContent:
    """A request's ``content`` that passes its body on as it arrives instead of keeping
    it: the rest of the file-like interface twisted.web calls finds nothing to read."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


class _Discard(WriteOnlyContent):
    """``content`` of a refused request: whatever still arrives is dropped."""


class GuardedSite(server.Site):
    """A ``Site`` with the guards of the module docstring, tracebacks never shown."""

    protocol = GuardedChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        *,
        reactor: Any = None,
        requestFactory: Any = GuardedRequest,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_body: int = MAX_BODY,
    ) -> None:
        super().__init__(
            resource, requestFactory=requestFactory, timeout=idle_timeout, reactor=reactor
        )
        self.header_timeout = header_timeout
        self.max_body = max_body
        self.displayTracebacks = False
        self.noisy = False
