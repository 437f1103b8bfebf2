"""The service collection: one ``MultiService`` holding the services of one ``Node``.

Services get their collaborators in their constructors (``node.py``, built by
``tap.build_node``), never by looking each other up. Children start in the order of
``Node.services()`` and stop in reverse order, each waiting for the previous one, so the
store outlives every service that may still write to it.

The collection also owns what concerns the process as a whole (when ``makeService``
built it for ``twistd``, ``owns_process``):

* **Start-up failure.** A child that cannot start (a port in use, an unopenable
  database) ends the whole process with exit status 1 and one line naming the cause;
  nothing stays half up.
* **Signals.** SIGTERM stops cleanly (exit status 0); SIGHUP re-reads the config and
  applies what can change at run time (``config.RELOADABLE``) through each child's
  ``reconfigure``, logging what changed and what needs a restart.
* **systemd.** ``READY=1`` once every child has started, ``RELOADING=1`` around a
  reload, ``STOPPING=1`` on the way down, and watchdog pings (``teamtalk_py.systemd``).
* **Health.** ``readiness()`` asks every child for its ``health()``; the ops listener
  serves it as ``/ready``.
* **The collector.** Once every child has started, what start-up made (modules, protobuf
  descriptors, Twisted, the config) is moved out of the cyclic collector's reach
  (``freeze_startup_heap``), so no full collection stalls the reactor scanning it again.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure

from teamtalk_py.config import with_backlog
from teamtalk_py.metrics import Metrics, one
from teamtalk_py.settle import settled
from teamtalk_py.systemd import Notifier

if TYPE_CHECKING:
    from teamtalk_py.config import Config
    from teamtalk_py.wire.link_auth import LinkAuth

log = Logger(namespace="teamtalk.services")

#: Exit status of a process whose services could not start.
EXIT_START_FAILED = 1


class StartupError(Exception):
    """A service cannot start; the message is the line the operator reads."""


def freeze_startup_heap() -> int:
    """Collect once, then move every object that survived start-up to the collector's
    permanent generation (``gc.freeze``); returns how many there are.

    Start-up leaves several hundred thousand long-lived objects that a full collection
    walks every time it runs: measured in a login storm (20,000 logins, 50 in flight),
    that was a 60-100 ms stall of the reactor each time, 50 logins waiting through it, the
    p99 of the run. Frozen, they are never scanned again; the young generations, where a
    request's short-lived objects are, are collected as before."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def describe_failure(failure: Failure) -> str:
    """One line saying why something failed, without a traceback."""
    error = failure.value
    if isinstance(error, StartupError):
        return str(error)
    text = str(error).strip() or type(error).__name__
    return text if failure.check(OSError) else f"{type(error).__name__}: {text}"


class ServiceCollection(MultiService):
    """All teamtalk services of one process (``Node.collection``; the node has each of
    them typed)."""

    #: Set by ``makeService`` for the real process: signals, exit status, sd_notify.
    owns_process = False

    def __init__(self, reactor: Any, config: Config) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        #: Re-reads the config for a reload (set by ``makeService``: file + options).
        self.load_config: Callable[[], Config] | None = None
        #: Called with the new config after a reload (``makeService``: the log level).
        self.on_reconfigure: list[Callable[[Config], None]] = []
        self.notifier = Notifier(reactor, environ={})
        #: The process's Prometheus registry and metrics (served at /metrics).
        self.metrics = Metrics()
        self.metrics.counters(
            "teamtalk_link_auth_failures",
            "Peers of the route, login-internal and file-internal ports refused for not "
            "proving the cluster secret (or a login registration naming a foreign address).",
            ["port"],
            self._link_auth_failures,
        )
        self.metrics.gauges(
            "teamtalk_gc_frozen_objects",
            "Objects moved out of the cyclic collector's reach after start-up "
            "(freeze_startup_heap); 0 until the process has started.",
            [],
            lambda: one(self.frozen_objects),
        )
        #: What ``freeze_startup_heap`` froze (``gc.get_freeze_count`` walks them all).
        self.frozen_objects = 0
        self.start_failure: str | None = None
        #: Fires once every child has started; errbacks with the first start-up failure.
        self.started: defer.Deferred[None] = defer.Deferred()

    def _link_auth_failures(self) -> list[tuple[tuple[str], float]]:
        return [
            ((f.purpose,), f.auth_failures)
            for child in self
            for f in getattr(child, "link_listeners", ())
        ]

    #: Set by ``makeService``: the observer twistd logs through (``teamtalk_py.logs``).
    log_observer: ILogObserver | None = None

    def setServiceParent(self, parent: Any) -> None:
        """twistd's application takes its log observer from an ``ILogObserver``
        component, unless ``--logger`` names one."""
        super().setServiceParent(parent)
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)

    # -- start and stop ------------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        if self.owns_process:
            self.notifier = Notifier(self.reactor)
            self.reactor.callWhenRunning(self._install_signal_handlers)
        for child in self:
            child.startService()
        readies = [getattr(child, "ready", defer.succeed(None)) for child in self]
        gathered = defer.gatherResults(readies, consumeErrors=True)
        gathered.addCallbacks(self._all_started, lambda _: None)

    def _all_started(self, _: object) -> None:
        if self.start_failure is not None:
            return
        names = ", ".join(child.name for child in self)
        log.info("teamtalk ready: {services}", services=names)
        if self.owns_process:
            self.frozen_objects = freeze_startup_heap()
        self.notifier.ready(f"serving {names}")
        self.started.callback(None)

    def startup_failed(self, service: Service, failure: Failure) -> None:
        """A child could not start: one line, then stop everything (exit status 1)."""
        if self.start_failure is not None:
            log.debug("{name} did not start either: {error}", name=service.name, error=failure)
            return
        self.start_failure = describe_failure(failure)
        if not failure.check(StartupError, CannotListenError, OSError):
            log.failure("{name} start-up error", failure, LogLevel.debug, name=service.name)
        log.critical("cannot start {name}: {reason}", name=service.name, reason=self.start_failure)
        self.started.errback(StartupError(self.start_failure))
        self.started.addErrback(lambda _: None)
        if self.owns_process:
            exit_at_end(EXIT_START_FAILED, f"cannot start {service.name}: {self.start_failure}")
            self.reactor.callWhenRunning(self._stop_reactor)

    def _stop_reactor(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self) -> defer.Deferred[None]:
        self.notifier.stopping()
        Service.stopService(self)
        return defer.ensureDeferred(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            try:
                await settled(child.stopService())
            except Exception:
                log.failure("stopping {name} failed", name=child.name)

    # -- signals -----------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """Twisted re-raises SIGTERM after shutdown (exit status -15); an IM server asked
        to stop by its supervisor has stopped cleanly, so we stop the reactor ourselves.
        SIGHUP would kill the process by default; it reloads the config instead."""
        import signal

        def on_sigterm(signum: int, frame: object) -> None:
            log.info("SIGTERM: stopping")
            self.reactor.callFromThread(self._stop_reactor)

        def on_sighup(signum: int, frame: object) -> None:
            self.reactor.callFromThread(self.reload)

        signal.signal(signal.SIGTERM, on_sigterm)
        signal.signal(signal.SIGHUP, on_sighup)

    # -- reload ------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config and apply what may change at run time (SIGHUP)."""
        from teamtalk_py.config import ConfigError, reload_config

        if self.load_config is None:
            log.warn("reload: no config source to re-read")
            return
        self.notifier.reloading()
        try:
            loaded = self.load_config()
            config, applied, restart = reload_config(self.config, loaded)
        except ConfigError as e:
            log.error("reload failed, keeping the running config: {error}", error=str(e))
            self.notifier.ready("reload failed")
            return
        self.reconfigure(config)
        if self.reload_tls_files():
            applied = [*applied, "cluster TLS certificates"]
        log.info(
            "reloaded the config: {applied}; needs a restart: {restart}",
            applied=", ".join(applied) or "nothing changed",
            restart=", ".join(restart) or "nothing",
        )
        self.notifier.ready("serving (config reloaded)")

    def reload_tls_files(self) -> bool:
        """Re-read the cluster's TLS files (a renewed certificate keeps its path, so this
        happens at every reload); True when they changed. A set that does not load (a key
        for another certificate) is refused and the running one kept."""
        files = {}
        for child in self:
            auth = getattr(child, "_link_auth", None)
            if auth is not None and auth.tls_files is not None:
                files[id(auth.tls_files)] = auth.tls_files
        changed = False
        for tls in files.values():
            try:
                changed = tls.reload() or changed
            except Exception as e:  # unreadable files, or OpenSSL refusing the set
                log.error("cluster TLS files not reloaded, keeping the old ones: {error}", error=e)
        return changed

    def reconfigure(self, config: Config) -> None:
        """Hand a reloaded config to every child and to the process-wide hooks."""
        self.config = config
        for hook in self.on_reconfigure:
            hook(config)
        for child in self:
            reconfigure = getattr(child, "reconfigure", None)
            if reconfigure is not None:
                try:
                    reconfigure(config)
                except Exception:
                    log.failure("{name} could not apply the reloaded config", name=child.name)

    # -- health ------------------------------------------------------------------------

    def live(self) -> dict[str, Any]:
        """Liveness: the reactor answered (whoever asks got this far)."""
        from teamtalk_py import __version__

        return {"status": "ok", "version": __version__, "pid": os.getpid()}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether every child is up and its dependencies reachable, with each part's state."""
        parts: dict[str, Any] = {}
        checks = []
        for child in self:
            health = getattr(child, "health", None)
            if health is not None:
                checks.append((child.name, defer.ensureDeferred(health())))
        for name, check in checks:
            try:
                parts[name] = await check
            except Exception as e:
                parts[name] = {"ok": False, "error": str(e) or type(e).__name__}
        ready = self.start_failure is None and all(part["ok"] for part in parts.values())
        return ready, parts


def exit_at_end(status: int, reason: str) -> None:
    """Make the process exit with ``status`` once twistd has shut down.

    twistd exits 0 whenever the reactor stopped; this runs after its own clean-up
    (pid file, log observers), repeats ``reason`` as the last line on stderr, and ends
    the process with our status.
    """

    def leave() -> None:
        # twistd has replaced sys.stdout/stderr with log redirectors: use the real ones.
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                pass
        try:
            os.write(2, f"twistd teamtalk: {reason}\n".encode())
        except OSError:
            pass
        os._exit(status)

    atexit.register(leave)


class TeamTalkService(Service):
    """Base for our services: an async ``start``/``stop``, listeners and link credentials.

    ``startService`` kicks off ``start()``; ``ready`` fires when it has finished (for
    example once listeners are bound), so tests and siblings can wait on it. A failed
    ``start()`` stops the whole collection (``ServiceCollection.startup_failed``).
    ``reconfigure(config)`` receives a reloaded config; ``health()`` reports readiness.
    """

    def __init__(self, reactor: Any, config: Config) -> None:
        self.reactor = reactor
        self.config = config
        self.ready: defer.Deferred[None] = defer.Deferred()
        #: True once ``start()`` has finished.
        self.is_started = False
        self._ports: list[IListeningPort] = []
        self._link_auth: LinkAuth | None = None
        #: Factories of the server-to-server ports this service opened (for metrics).
        self.link_listeners: list[Any] = []
        self._own_metrics: Metrics | None = None

    @property
    def metrics(self) -> Metrics:
        """The collection's metrics (a private set for a service on its own, in tests)."""
        parent = self.parent
        if isinstance(parent, ServiceCollection):
            return parent.metrics
        if self._own_metrics is None:
            self._own_metrics = Metrics()
        return self._own_metrics

    @property
    def collection(self) -> ServiceCollection:
        return self.parent  # type: ignore[return-value]

    def startService(self) -> None:
        super().startService()
        d = defer.ensureDeferred(self.start())

        def started(_: object) -> None:
            self.is_started = True
            self.ready.callback(None)

        def failed(failure: Failure) -> None:
            parent = self.parent
            if isinstance(parent, ServiceCollection):
                parent.startup_failed(self, failure)
            else:
                log.failure("{name} service failed to start", failure, name=self.name)
            self.ready.errback(failure)

        d.addCallbacks(started, failed)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self._stop_all())

    async def _stop_all(self) -> None:
        ports, self._ports = self._ports, []
        for port in ports:
            await settled(port.stopListening())
        await self.stop()

    async def start(self) -> None:
        """Bind listeners and open links; override in subclasses."""

    async def stop(self) -> None:
        """Close links and flush state; override in subclasses."""

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded config (only ``config.RELOADABLE`` keys differ). Services that
        copied a reloadable value at start apply it here; reading ``self.config`` at
        use needs nothing more."""
        self.config = config

    async def health(self) -> dict[str, Any]:
        """This service's part of ``/ready``: ``{"ok": bool, ...}``."""
        return {"ok": bool(self.is_started and self.running)}

    async def listen(self, description: str, factory: Any) -> IListeningPort:
        """Bind ``factory`` on a Twisted endpoint string, with the configured listen
        backlog (``server.listen_backlog``); remembered for ``stopService``."""
        from twisted.internet.endpoints import serverFromString

        # Errors name the endpoint as configured, without the backlog added here.
        endpoint = with_backlog(description, self.config.server.listen_backlog)
        try:
            port = await serverFromString(self.reactor, endpoint).listen(factory)
        except CannotListenError as e:
            reason = e.socketError if e.socketError is not None else e
            raise StartupError(f"cannot listen on {description}: {reason}") from e
        except Exception as e:
            raise StartupError(f"cannot listen on {description}: {e}") from e
        self._ports.append(port)
        address = port.getHost()
        log.info(
            "{name} listening on {host}:{port}",
            name=self.name,
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )
        return port

    @property
    def link_auth(self) -> LinkAuth:
        """This node's credentials for server links (read once, on first use)."""
        if self._link_auth is None:
            from teamtalk_py.wire.link_auth import LinkAuth

            self._link_auth = LinkAuth.from_config(self.config)
        return self._link_auth

    async def listen_internal(self, description: str, factory: Any) -> IListeningPort:
        """Bind a server-to-server listener: TLS with the cluster's certificates when
        configured (the link protocols authenticate on top, see ``link_auth``)."""
        self.link_listeners.append(factory)
        auth = self.link_auth
        if auth.tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(auth.server_tls(), False, factory)
        return await self.listen(description, factory)

    def bound_port(self, index: int = 0) -> int:
        """The TCP port actually bound (useful when the config asked for port 0)."""
        address = self._ports[index].getHost()
        assert isinstance(address, IPv4Address | IPv6Address), address
        return address.port


__all__ = [
    "IService",
    "ServiceCollection",
    "StartupError",
    "TeamTalkService",
    "describe_failure",
    "exit_at_end",
    "freeze_startup_heap",
]
