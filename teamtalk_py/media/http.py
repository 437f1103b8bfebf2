"""HTTP plumbing of the media service on ``twisted.web``: routing and streamed bodies.

``twisted.web`` collects a request's whole body (in memory or a temporary file) before
the resource sees it. Uploads here may be gigabytes, so :class:`MediaRequest` asks the
route table, as soon as the headers are in, what to do with the body: a route with a
``body`` gets a :class:`StreamedBody` that hands each chunk to a consumer (a multipart
parser, a file on disk) as it arrives, holding the connection paused while the disk is
behind. Routes without one get a small in-memory buffer with a hard limit.

The routes themselves are listed in ``teamtalk_py.media.routes`` (one table);
:class:`MediaResource` dispatches every request through it. The helpers at the end
(query parameters, JSON bodies, answers) serve every HTTP service: media, disk, admin.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Protocol
from urllib.parse import parse_qs, parse_qsl

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from teamtalk_py.web import HEADER_TIMEOUT, GuardedSite, WriteOnlyContent, answer_and_close

log = Logger(namespace="teamtalk.media.http")

#: Largest body accepted by a route that does not stream (JSON requests).
SMALL_BODY_LIMIT = 64 * 1024
#: A refused upload whose remaining body is at most this is read and dropped, so the
#: client sees the answer; a larger one is answered at once and the connection closed.
DISCARD_LIMIT = 1024 * 1024


class HttpError(Exception):
    """Answer the request with ``status`` (and optional headers/body) instead."""

    def __init__(
        self,
        status: int,
        message: str = "",
        headers: dict[bytes, bytes] | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.body = body


class BodyConsumer(Protocol):
    """Where a streamed body's bytes go (a multipart parser, an upload on disk)."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> defer.Deferred[Any]:
        """The body is complete: fires with the consumer's outcome once written."""
        ...

    def abort(self) -> None:
        """The connection went away before the end of the body."""
        ...


#: Prepares a body's consumer once the headers are known, given the handlers' context,
#: the request, its body (for flow control) and its Content-Length: may refuse by
#: raising ``HttpError``, and may wait (a database lookup) while the connection is paused.
BodyFactory = Callable[[Any, "MediaRequest", "StreamedBody", "int | None"], Awaitable[BodyConsumer]]
Handler = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """One line of the route table: ``method`` + ``pattern`` -> ``handler``.

    ``pattern`` is a path with ``{name}`` placeholders (one segment each) or ``{name...}``
    for the rest of the path; the matched values are passed to the handler by name. A
    pattern may end in ``?key=value``: the route then also needs that query parameter
    (the cloud disk's ``/myfiles?cmd=count``), so each command gets a line of its own.
    The method ``*`` ends a namespace: the route takes every path it matches that no
    route above it does (``/api/{rest...}``: 404 rather than a catch-all further down),
    and a path that routes above it match with other methods is a 405.
    """

    methods: tuple[bytes, ...]
    pattern: str
    handler: Handler
    body: BodyFactory | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    query: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path, _, query = self.pattern.partition("?")
        object.__setattr__(self, "query", tuple(parse_qsl(query)))
        regex = re.escape(path)
        regex = re.sub(r"\\\{(\w+)\\\.\\\.\\\.\\\}", r"(?P<\1>.*)", regex)
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
        object.__setattr__(self, "regex", re.compile(regex + r"\Z"))


def route(methods: str, pattern: str, handler: Handler, body: BodyFactory | None = None) -> Route:
    return Route(tuple(m.encode() for m in methods.split()), pattern, handler, body)


class RouteTable:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def match(
        self, method: bytes, path: bytes, query: bytes = b""
    ) -> tuple[Route, dict[str, str]] | None:
        """The first route for ``method`` whose pattern matches ``path`` (and ``query``);
        None if no path matches, ``HttpError(405)`` if only other methods do."""
        try:
            text = path.decode("utf-8")
            arguments = set(parse_qsl(query.decode("utf-8"))) if query else set()
        except UnicodeDecodeError:
            raise HttpError(400, "path is not UTF-8") from None
        allowed: set[bytes] = set()
        for candidate in self.routes:
            found = candidate.regex.match(text)
            if found is None or not arguments.issuperset(candidate.query):
                continue
            if candidate.methods == (b"*",):
                if allowed:
                    break
                return candidate, found.groupdict()
            if method in candidate.methods:
                return candidate, found.groupdict()
            allowed.update(candidate.methods)
        if allowed:
            raise HttpError(405, headers={b"Allow": b", ".join(sorted(allowed))})
        return None


# -- bodies -------------------------------------------------------------------------------


class SmallBody(BytesIO):
    """The in-memory body of a route that does not stream, refused past ``limit``."""

    def __init__(self, limit: int = SMALL_BODY_LIMIT) -> None:
        super().__init__()
        self.limit = limit
        self.too_large = False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.too_large or self.tell() + len(data) > self.limit:
            self.too_large = True
            return 0
        return super().write(data)


class StreamedBody(WriteOnlyContent):
    """``request.content`` of a streaming route: chunks go to a consumer as they arrive.

    Until the consumer is ready (see ``BodyFactory``) the connection is paused and the
    little that was already read is held here. A refusal is answered once the body is
    in, or at once (closing the connection) when too much body would follow.
    Twisted treats ``request.content`` as a file (``tell``, ``seek``, ``close``);
    ``WriteOnlyContent`` answers those over a body that was never stored.
    """

    def __init__(
        self, context: Any, request: MediaRequest, length: int | None, factory: BodyFactory
    ) -> None:
        self.request = request
        self.length = length
        self.received = 0
        self.consumer: BodyConsumer | None = None
        self.refusal: HttpError | None = None
        self._held: list[bytes] = []
        self._closed = False
        self._paused = False
        self._settled = False
        self._waiting: list[defer.Deferred[None]] = []
        self._producer: IPushProducer | None = IPushProducer(request.channel.transport, None)
        self._pause()
        d: defer.Deferred[BodyConsumer] = defer.Deferred.fromCoroutine(
            _await(factory(context, request, self, length))
        )
        d.addCallbacks(self._ready, self._refused)

    # flow control over the HTTP connection
    def _pause(self) -> None:
        if not self._paused and self._producer is not None:
            self._paused = True
            self._producer.pauseProducing()

    def _resume(self) -> None:
        if self._paused and self._producer is not None and not self._closed:
            self._paused = False
            self._producer.resumeProducing()

    def hold(self) -> None:
        """The consumer is behind: stop reading from the client."""
        self._pause()

    def release(self) -> None:
        """The consumer caught up: read on."""
        if self.consumer is not None:
            self._resume()

    def _settle(self) -> None:
        self._settled = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _ready(self, consumer: BodyConsumer) -> None:
        if self._closed:
            consumer.abort()
            self.refusal = HttpError(400, "connection closed")
            self._settle()
            return
        self.consumer = consumer
        held, self._held = self._held, []
        for chunk in held:
            consumer.write(chunk)
        self._resume()
        self._settle()

    def _refused(self, failure: Failure) -> None:
        error = failure.value
        if not isinstance(error, HttpError):
            log.failure("preparing an upload failed", failure)
            error = HttpError(500, "internal error")
        self.refusal = error
        self._held = []
        remaining = None if self.length is None else self.length - self.received
        if remaining is None or remaining > DISCARD_LIMIT:
            self.request.answer_early(error)
        else:
            self._resume()
        self._settle()

    # the file-like interface twisted.web uses
    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.refusal is not None:
            if self.received > (self.length or 0) + DISCARD_LIMIT:
                self.request.answer_early(self.refusal)
            return
        if self.consumer is None:
            self._held.append(data)
        else:
            self.consumer.write(data)

    def close(self) -> None:
        """Twisted closes the content when the connection is lost."""
        if self._closed:
            return
        self._closed = True
        if not self.request.body_complete and self.consumer is not None:
            self.consumer.abort()

    async def outcome(self) -> Any:
        """After the whole body arrived: the consumer's result, or the refusal raised."""
        if not self._settled:
            waiter: defer.Deferred[None] = defer.Deferred()
            self._waiting.append(waiter)
            await waiter
        if self.refusal is not None:
            raise self.refusal
        assert self.consumer is not None
        return await self.consumer.finish()


async def _await(awaitable: Awaitable[BodyConsumer]) -> BodyConsumer:
    return await awaitable


# -- the request ---------------------------------------------------------------------------


class MediaRequest(server.Request):
    """A request whose body handling is chosen by the route table (see module docstring)."""

    defaultContentType = None
    route: Route | None = None
    route_params: dict[str, str]
    routing_error: HttpError | None = None
    body_complete = False
    #: The authenticated user (0: anonymous), set by handlers that check a token.
    owner_id = 0
    #: The upload a tus request works on, set by its body factory.
    upload: Any = None
    #: The request target as sent (path and query), known once the headers are in
    #: (``uri`` is set only after the body).
    target = b""

    def __init__(self, channel: Any, queued: object = None) -> None:
        super().__init__(channel)
        # Multipart bodies are ours to parse, as they stream; never twisted.web's.
        self._parsePOSTFormSubmission = False
        self.route_params = {}
        self._answered_early = False

    def gotLength(self, length: int | None) -> None:
        # The request line is parsed before the headers, but twisted.web hands it to the
        # request only after the body (``requestReceived``); the channel holds it now.
        method = getattr(self.channel, "_command", b"")
        uri = getattr(self.channel, "_path", b"")
        site: MediaSite = self.channel.site  # type: ignore[attr-defined]
        routes = site.routes
        self.target = uri
        path, _, query = uri.partition(b"?")
        try:
            found = routes.match(method.upper(), path, query)
        except HttpError as e:
            self.routing_error = e
            found = None
        if found is not None:
            self.route, self.route_params = found
        if self.route is not None and self.route.body is not None:
            self.content = StreamedBody(site.context, self, length, self.route.body)
            return
        self.content = SmallBody(site.max_body)
        if length is not None and length > site.max_body:
            # Refused before a byte of it is read (the route takes no big bodies).
            self.answer_early(HttpError(413))

    def handleContentChunk(self, data: bytes) -> None:
        super().handleContentChunk(data)
        if isinstance(self.content, SmallBody) and self.content.too_large:
            self.answer_early(HttpError(413))  # a chunked body that went past the limit

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.body_complete = True
        super().requestReceived(command, path, version)

    def answer_early(self, error: HttpError) -> None:
        """Answer before the body is complete and close: the rest is not worth reading."""
        if self._answered_early or self.channel is None:
            return
        self._answered_early = True
        body = error.body if error.body is not None else b""
        answer_and_close(self, error.status, error.headers, body)

    def client_ip(self) -> str:
        address = self.getClientAddress()
        return getattr(address, "host", "") or ""

    def header(self, name: bytes) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name)
        return values[0] if values else None


# -- query parameters and JSON bodies ------------------------------------------------------


def query(request: MediaRequest) -> dict[str, str]:
    """The query parameters (each once; UTF-8), 400 otherwise."""
    _, _, raw = (request.target or request.uri).partition(b"?")
    try:
        values = parse_qs(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the query is not UTF-8") from None
    if any(len(v) > 1 for v in values.values()):
        raise HttpError(400, "a query parameter is given twice")
    return {key: v[0] for key, v in values.items()}


def json_object(request: MediaRequest) -> dict:
    """The request's small body as a JSON object, 400 otherwise."""
    assert isinstance(request.content, SmallBody)
    try:
        value = json.loads(request.content.getvalue() or b"null")
    except ValueError:
        raise HttpError(400, "body is not JSON") from None
    if not isinstance(value, dict):
        raise HttpError(400, "body must be a JSON object")
    return value


def query_number(params: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    """``params[key]`` as a whole number from ``low`` to ``high`` (``default`` when
    absent), 400 otherwise."""
    text = params.get(key)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise HttpError(400, f"{key} must be a whole number from {low} to {high}")
    return int(text)


# -- answering -----------------------------------------------------------------------------


def send_body(
    request: MediaRequest,
    status: int,
    body: bytes,
    content_type: bytes | None,
    headers: dict[bytes, bytes] | None = None,
) -> None:
    if request.finished or request._disconnected:
        return
    request.setResponseCode(status)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    if content_type is not None:
        request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    if body and request.method != b"HEAD":
        request.write(body)
    request.finish()


def send_json(
    request: MediaRequest, status: int, answer: Any, headers: dict[bytes, bytes] | None = None
) -> None:
    body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    send_body(request, status, body, b"application/json; charset=utf-8", headers)


def send_error(request: MediaRequest, error: HttpError) -> None:
    if error.body is not None:
        send_body(request, error.status, error.body, None, error.headers)
    elif error.message and error.status != 204 and error.status >= 400:
        send_json(request, error.status, {"error": error.message}, error.headers)
    else:
        send_body(request, error.status, b"", None, error.headers)


class MediaResource(Resource):
    """The one resource of the site: dispatches through the route table."""

    isLeaf = True

    def __init__(self, context: Any) -> None:
        super().__init__()
        #: Passed to every handler as its first argument (the media service's domain).
        self.context = context

    def render(self, request: MediaRequest) -> int:
        d = defer.ensureDeferred(self._dispatch(request))
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    async def _dispatch(self, request: MediaRequest) -> None:
        if request.routing_error is not None:
            raise request.routing_error
        if request.route is None:
            raise HttpError(404)
        if isinstance(request.content, SmallBody) and request.content.too_large:
            raise HttpError(413, "request body too large")
        await request.route.handler(self.context, request, **request.route_params)

    def _failed(self, failure: Failure, request: MediaRequest) -> None:
        if request._answered_early:
            return
        if isinstance(failure.value, HttpError):
            send_error(request, failure.value)
            return
        log.failure(
            "{method} {path} failed",
            failure,
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1", "replace"),
        )
        if not request.startedWriting:
            send_error(request, HttpError(500, "internal error"))
        elif not request.finished:
            request.loseConnection()


class MediaSite(GuardedSite):
    """A ``Site`` whose requests consult ``routes`` as soon as their headers are in (with
    the guards of every HTTP listener, ``teamtalk_py.web``; bodies of routes that do not
    stream are held to ``SMALL_BODY_LIMIT``)."""

    def __init__(
        self,
        context: Any,
        routes: RouteTable,
        *,
        reactor: Any = None,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = 120,
    ) -> None:
        super().__init__(
            MediaResource(context),
            reactor=reactor,
            requestFactory=MediaRequest,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            max_body=SMALL_BODY_LIMIT,
        )
        self.context = context
        self.routes = routes

    @classmethod
    def for_service(cls, service: Any, context: Any, routes: RouteTable) -> MediaSite:
        """The site of a ``TeamTalkService`` (media, disk, admin): its reactor, and the
        header deadline of ``server.http_header_timeout``."""
        return cls(
            context,
            routes,
            reactor=service.reactor,
            header_timeout=service.config.server.http_header_timeout,
        )
