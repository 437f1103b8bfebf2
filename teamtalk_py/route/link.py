"""One msg node's TCP link to the route service, and the factory that accepts them.

A leaf of the package: the link's handlers (``service.py``, ``rooms.py``) take a
``RouteLink`` and reach the hub through it; this module knows none of them.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.route.hub import RouteHub
from teamtalk_py.wire.link import InboundLinkFactory, InboundLinkProtocol

log = Logger(namespace="teamtalk.route")


class RouteLink(InboundLinkProtocol):
    """One msg node's link to us."""

    factory: RouteFactory

    def __init__(self) -> None:
        super().__init__()
        self.master = False

    @property
    def hub(self) -> RouteHub:
        return self.factory.hub

    def authenticated(self) -> None:
        self.hub.attach(self)
        log.info("msg node linked from {peer}", peer=self.peer)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        if self.logged_in:
            self.hub.detach(self)
            log.info("msg node link from {peer} closed", peer=self.peer)


class RouteFactory(InboundLinkFactory):
    protocol = RouteLink

    def __init__(self, hub: RouteHub, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hub = hub
