"""``NodeTestCase``: handler tests on one node's real services and a fake reactor.

Synapse's ``HomeserverTestCase`` is the model: the services ``tap.build_services`` builds
(msg, route, login and the store on SQLite, as a deployment has them) run on a
``ThreadedMemoryReactorClock``; clients are ``teamtalk_client`` protocols paired with the
msg service's own connections in memory by ``twisted.test.iosim``. Time moves only when a
test calls ``advance``, so timeouts, deadlines and windows are tested in microseconds and
exactly, instead of by sleeping. The store's threads are real (the store is what ships);
``get_success`` waits on them, never on a timer.

The real-socket tests (``msg_support.MsgTestCase``) stay for what crosses the kernel:
framing over TCP, backpressure, processes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.test import iosim

from teamtalk_client import TeamTalkClientProtocol, TeamTalkSession
from teamtalk_py.node import Node
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.services import ServiceCollection
from teamtalk_py.store import accounts
from teamtalk_py.tap import build_node
from teamtalk_testing.fake_reactor import ThreadedMemoryReactorClock
from tests.support import TestCase, local_config

T = TypeVar("T")

PASSWORD = "secret"
#: Seconds ``get_success`` lets store threads work before the test fails.
THREAD_TIMEOUT = 10.0


class NodeTestCase(TestCase):
    """One node (``self.node``) on a fake reactor (``self.reactor``), stopped afterwards."""

    #: The services this node hosts, and config overrides.
    services: ClassVar[str] = "msg,route,login"
    overrides: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        self.reactor = ThreadedMemoryReactorClock()
        self.reactor.advance(1_700_000_000)  # a plausible "now" for stored timestamps
        config = local_config(
            self.tmp_path() / "data", **{"server.services": self.services, **self.overrides}
        )
        self.node: Node = build_node(self.reactor, config)
        self.collection: ServiceCollection = self.node.collection
        self._pumps: list[iosim.IOPump] = []
        self._clients: list[TeamTalkClientProtocol] = []
        self._next_port = 40000
        self.collection.startService()
        self.get_success(self.collection.started)
        # A real listening port starts its factory (the msg factory's liveness sweep).
        self._factories = [factory for _, factory, _, _ in self.reactor.tcpServers]
        for factory in self._factories:
            factory.doStart()
        self.addCleanup(self._stop)

    def _stop(self) -> None:
        for client in self._clients:
            if client.transport is not None:
                client.transport.loseConnection()
        self.pump()
        if self.collection.running:  # a test may have stopped it already
            self.get_success(self.collection.stopService())
        for factory in self._factories:
            factory.doStop()

    # -- time and threads --------------------------------------------------------------

    def pump(self) -> None:
        """Run everything that is due now: thread results, bytes in flight, zero-delay
        calls, until nothing moves."""
        for _ in range(1000):
            moved = self.reactor.run_thread_calls()
            for pump in self._pumps:
                moved += int(pump.pump(advanceClock=False))
            before = len(self.reactor.getDelayedCalls())
            self.reactor.advance(0)
            moved += int(len(self.reactor.getDelayedCalls()) != before)
            if not moved:
                return

    def advance(self, seconds: float, step: float = 0.1) -> None:
        """Let ``seconds`` pass on the node's clock, in ``step``s, pumping at each."""
        self.pump()
        while seconds > 1e-9:
            by = min(step, seconds)
            self.reactor.advance(by)
            seconds -= by
            self.pump()

    def get_success(self, awaitable: Awaitable[T] | defer.Deferred[T]) -> T:
        """The result of ``awaitable``, pumping the reactor (and waiting for store
        threads, never for a timer) until it has one."""
        d: defer.Deferred[T] = defer.ensureDeferred(awaitable)
        deadline = time.monotonic() + THREAD_TIMEOUT
        while True:
            self.pump()
            if d.called:
                return self.successResultOf(d)
            if time.monotonic() > deadline:
                raise AssertionError("no result: a store thread did not finish in time")
            self.reactor.wait_for_threads(0.05)

    def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        """Pump until ``predicate()`` holds: for work on real threads (a password hash
        rewritten off the login's path), never for a timer."""
        deadline = time.monotonic() + THREAD_TIMEOUT
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.reactor.wait_for_threads(0.05)
            self.pump()

    # -- accounts and clients ----------------------------------------------------------

    def add_user(self, name: str, password: str = PASSWORD, **fields: Any) -> int:
        assert self.node.store is not None
        now = int(self.reactor.seconds())
        return self.get_success(
            self.node.store.write(accounts.add_user, name, password, now=now, **fields)
        )

    def connect(self) -> TeamTalkClientProtocol:
        """A client connected to the msg service in memory (no socket)."""
        assert self.node.msg is not None
        self._next_port += 1
        peer = IPv4Address("TCP", "127.0.0.1", self._next_port)
        here = IPv4Address("TCP", "127.0.0.1", 8000)
        server = self.node.msg.factory.buildProtocol(peer)
        assert server is not None
        client = TeamTalkClientProtocol(self.reactor)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True, hostAddress=here, peerAddress=peer),
            client,
            iosim.FakeTransport(client, isServer=False, hostAddress=peer, peerAddress=here),
            greet=False,
            clock=self.reactor,
        )
        self._pumps.append(pump)
        self._clients.append(client)
        self.pump()
        return client

    def attempt(
        self, name: str, password: str = PASSWORD, client_type: int = B.CLIENT_TYPE_WINDOWS
    ) -> tuple[Any, TeamTalkSession]:
        """Log in on a new connection, whatever the outcome: (answer, session)."""
        session = TeamTalkSession(self.connect(), timeout=5.0)
        answer = self.get_success(session.login(name, password, client_type=client_type))
        return answer, session

    def login(
        self, name: str, password: str = PASSWORD, client_type: int = B.CLIENT_TYPE_WINDOWS
    ) -> TeamTalkSession:
        """A new connection logged in as ``name``; fails the test if refused."""
        answer, session = self.attempt(name, password, client_type)
        assert answer.result_code == B.REFUSE_REASON_NONE, answer
        return session

    def is_closed(self, client: TeamTalkClientProtocol) -> bool:
        self.pump()
        return bool(client.closed.called)
