"""The operator's HTTP endpoints: ``/health``, ``/ready``, ``/metrics`` and ``/online``.

They are served on the ops listener (``ops.listen``, ``--ops-listen``; by default
``tcp:8090`` on 127.0.0.1 only, whatever ``server.advertise`` says, since they show who
is online and how the server is doing). With ``ops.on_http`` the login service's public
HTTP listener serves ``/health``, ``/ready`` and ``/metrics`` too (never ``/online``).

* ``GET /health``: liveness. 200 whenever the reactor answers.
* ``GET /ready``: 200 when every service of this process has started and the store
  answers now, else 503; JSON with each part's state (``ServiceCollection.readiness``)
  and ``degraded``, the parts that are down without stopping messaging (Redis, a link).
  Plain ``/ready`` stays 200 while something is only degraded (a load balancer must not
  take every node out because Redis is away); ``/ready?strict=1`` answers 503 then, for
  checks that want a node with every dependency (a rolling upgrade waiting for a node to
  be whole again, an alert).
* ``GET /metrics``: the Prometheus text format (``teamtalk_py.metrics``).
* ``GET /online``: who is connected to this process's msg service (and, on a route node,
  how many connections every linked msg node has); ``teamtalk-admin online`` reads it.

The service also measures the reactor's tick lag: a timer due every 0.25 s records how
late it ran.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from teamtalk_py.services import ServiceCollection, TeamTalkService
from teamtalk_py.web import GuardedSite

if TYPE_CHECKING:
    from teamtalk_py.config import Config

log = Logger(namespace="teamtalk.ops")

LAG_INTERVAL = 0.25
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body, sort_keys=True).encode() + b"\n"


class _Endpoint(Resource):
    """A leaf that answers GET and HEAD only."""

    isLeaf = True

    def __init__(self, collection: ServiceCollection) -> None:
        super().__init__()
        self.collection = collection

    def render(self, request: Request) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return _json(request, 405, {"error": "method not allowed"})
        return super().render(request)


class HealthResource(_Endpoint):
    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, self.collection.live())

    render_HEAD = render_GET


class ReadyResource(_Endpoint):
    def render_GET(self, request: Request) -> int:
        strict = request.args.get(b"strict", [b""])[0] in (b"1", b"true", b"yes")
        d = defer.ensureDeferred(self.collection.readiness())

        def answer(result: tuple[bool, dict[str, Any]]) -> None:
            ready, parts = result
            degraded = sorted(name for name, part in parts.items() if part.get("degraded"))
            body = {"ready": ready, "degraded": degraded, "services": parts}
            if self.collection.start_failure is not None:
                body["error"] = self.collection.start_failure
            whole = ready and not (strict and degraded)
            if not request.finished and not request._disconnected:
                request.write(_json(request, 200 if whole else 503, body))
                request.finish()

        d.addCallback(answer)
        d.addErrback(lambda f: log.failure("readiness check failed", f))
        return NOT_DONE_YET

    render_HEAD = render_GET


class MetricsResource(_Endpoint):
    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", METRICS_CONTENT_TYPE)
        return self.collection.metrics.exposition()

    render_HEAD = render_GET


class NodeConnections(Protocol):
    """What ``/online`` asks the msg service: its name and its logged-in connections."""

    def node_name(self) -> str: ...

    def online_report(self) -> list[dict[str, object]]: ...


class RouteConnections(Protocol):
    """What ``/online`` asks the route service: each linked node's connections."""

    def online_report(self) -> list[dict[str, object]]: ...


class OnlineResource(_Endpoint):
    """``/online``: the connections of this process's msg node and its route's view."""

    def __init__(
        self,
        collection: ServiceCollection,
        msg: NodeConnections | None,
        route: RouteConnections | None,
    ) -> None:
        super().__init__(collection)
        self.msg = msg
        self.route = route

    def render_GET(self, request: Request) -> bytes:
        body: dict[str, Any] = {"connections": [], "route": []}
        msg = self.msg
        if msg is not None:
            body["node"] = msg.node_name()
            body["connections"] = msg.online_report()
        route = self.route
        if route is not None:
            body["route"] = route.online_report()
        return _json(request, 200, body)


class OpsRoot(Resource):
    """``/health``, ``/ready``, ``/metrics`` (and ``/online`` on the ops listener)."""

    def __init__(self, collection: ServiceCollection, online: OnlineResource | None = None) -> None:
        super().__init__()
        self.putChild(b"health", HealthResource(collection))
        self.putChild(b"ready", ReadyResource(collection))
        self.putChild(b"metrics", MetricsResource(collection))
        if online is not None:
            self.putChild(b"online", online)

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()

    def render(self, request: Request) -> bytes:
        return notFound().render(request)


class OpsService(TeamTalkService):
    """The ops listener and the reactor-lag probe."""

    name = "ops"

    def __init__(
        self,
        reactor: Any,
        config: Config,
        msg: NodeConnections | None = None,
        route: RouteConnections | None = None,
    ) -> None:
        super().__init__(reactor, config)
        self.msg = msg
        self.route = route
        self._lag = LoopingCall(self._tick)
        self._lag.clock = reactor
        self._next_tick = 0.0

    async def start(self) -> None:
        collection = self.collection
        site = GuardedSite(
            OpsRoot(collection, OnlineResource(collection, self.msg, self.route)),
            reactor=self.reactor,
            header_timeout=self.config.server.http_header_timeout,
        )
        await self.listen(self.config.ops.listen, site)
        self._next_tick = self.reactor.seconds() + LAG_INTERVAL
        self._lag.start(LAG_INTERVAL, now=False)

    async def stop(self) -> None:
        if self._lag.running:
            self._lag.stop()

    def _tick(self) -> None:
        now = self.reactor.seconds()
        self.collection.metrics.reactor_lag_seconds.observe(max(0.0, now - self._next_tick))
        self._next_tick = now + LAG_INTERVAL
