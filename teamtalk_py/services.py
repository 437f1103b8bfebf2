"""The service collection: one ``MultiService`` whose children find each other by name.

Children start in the order they were added and stop in reverse order, each waiting for
the previous one, so the store outlives every service that may still write to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

if TYPE_CHECKING:
    from teamtalk_py.config import Config

log = Logger(namespace="teamtalk.services")


class ServiceCollection(MultiService):
    """All teamtalk services of one process, looked up by name (``store``, ``msg``...)."""

    def __init__(self, reactor: Any, config: Config) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config

    def get(self, name: str) -> Any | None:
        """The named sibling, or None when this process does not host it."""
        try:
            return self.getServiceNamed(name)
        except KeyError:
            return None

    #: Set by ``makeService`` for the real process: SIGTERM is a normal stop (exit 0).
    handle_sigterm = False

    def startService(self) -> None:
        Service.startService(self)
        if self.handle_sigterm:
            self.reactor.callWhenRunning(self._install_sigterm)
        for child in self:
            child.startService()

    def _install_sigterm(self) -> None:
        """Twisted re-raises SIGTERM after shutdown (exit status -15); an IM server asked
        to stop by its supervisor has stopped cleanly, so we stop the reactor ourselves."""
        import signal

        def on_sigterm(signum: int, frame: object) -> None:
            log.info("SIGTERM: stopping")
            self.reactor.callFromThread(self.reactor.stop)

        signal.signal(signal.SIGTERM, on_sigterm)

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        return defer.ensureDeferred(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            try:
                await defer.maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {name} failed", name=child.name)


class TeamTalkService(Service):
    """Base for our services: an async ``start``/``stop`` and sibling lookup by name.

    ``startService`` kicks off ``start()``; ``ready`` fires when it has finished (for
    example once listeners are bound), so tests and siblings can wait on it.
    """

    def __init__(self, reactor: Any, config: Config) -> None:
        self.reactor = reactor
        self.config = config
        self.ready: defer.Deferred[None] = defer.Deferred()
        self._ports: list[IListeningPort] = []

    @property
    def collection(self) -> ServiceCollection:
        return self.parent  # type: ignore[return-value]

    def sibling(self, name: str) -> Any | None:
        parent = self.parent
        if parent is None:
            return None
        try:
            return parent.getServiceNamed(name)
        except KeyError:
            return None

    def startService(self) -> None:
        super().startService()
        d = defer.ensureDeferred(self.start())

        def started(_: object) -> None:
            self.ready.callback(None)

        def failed(failure: Any) -> None:
            log.failure("{name} service failed to start", failure, name=self.name)
            self.ready.errback(failure)
            if self.reactor.running:
                self.reactor.stop()

        d.addCallbacks(started, failed)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self._stop_all())

    async def _stop_all(self) -> None:
        ports, self._ports = self._ports, []
        for port in ports:
            await defer.maybeDeferred(port.stopListening)
        await self.stop()

    async def start(self) -> None:
        """Bind listeners and open links; override in subclasses."""

    async def stop(self) -> None:
        """Close links and flush state; override in subclasses."""

    async def listen(self, description: str, factory: Any) -> IListeningPort:
        """Bind ``factory`` on a Twisted endpoint string; remembered for ``stopService``."""
        from twisted.internet.endpoints import serverFromString

        port = await serverFromString(self.reactor, description).listen(factory)
        self._ports.append(port)
        address = port.getHost()
        log.info(
            "{name} listening on {host}:{port}",
            name=self.name,
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )
        return port

    def bound_port(self, index: int = 0) -> int:
        """The TCP port actually bound (useful when the config asked for port 0)."""
        address = self._ports[index].getHost()
        assert isinstance(address, IPv4Address | IPv6Address), address
        return address.port


__all__ = ["IService", "ServiceCollection", "TeamTalkService"]
