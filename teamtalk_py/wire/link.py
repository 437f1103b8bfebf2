"""Outgoing links between teamtalk nodes (msg → route, msg → login, msg → file).

A ``ServerLink`` keeps one TCP connection to a peer service up: it reconnects with the
reference's back-off (2, 4, 8 … 64 s, then back to 4 s; wire.md §7.1), sends a heartbeat
whenever it has been silent for 5 s, and is dropped by the idle sweep after 30 s without
a byte from the peer. Requests that expect an answer are matched by ``seq_num``.

Both ends of every link speak plain TeamTalk PDUs, so the links are documented by the
protocol itself and testable with any PDU client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from twisted.application.internet import ClientService
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader, pack_pdu
from teamtalk_py.wire.protocol import CommandTable, PduFactory, PduProtocol, Request, encode

log = Logger(namespace="teamtalk.link")

HEARTBEAT_INTERVAL = 5.0
LINK_IDLE_TIMEOUT = 30.0
HEARTBEAT_PDU = pack_pdu(B.SID_OTHER, B.CID_OTHER_HEARTBEAT, b"")


def reference_backoff(failed_attempts: int) -> float:
    """Seconds to wait after the n-th failure in a row (n >= 1): 2, 4 … 64, then 4 again."""
    n = max(failed_attempts, 1) - 1
    return float(2 ** (n + 1)) if n < 6 else float(2 ** ((n - 6) % 5 + 2))


def parse_host_port(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        return value, default_port
    return host.strip("[]"), int(port)


class LinkProtocol(PduProtocol):
    """Our end of a server link: always "logged in", heartbeats when silent."""

    logged_in = True
    idle_timeout = LINK_IDLE_TIMEOUT
    factory: LinkFactory

    def __init__(self) -> None:
        super().__init__()
        self.last_sent = 0.0
        #: seq -> (waiter, the answer command expected or None for any command)
        self._pending: dict[int, tuple[defer.Deferred[Request], int | None]] = {}
        self._next_seq = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        self.last_sent = self.factory.clock.seconds()
        self.factory.link._connected(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        pending, self._pending = self._pending, {}
        for d, _ in pending.values():
            d.errback(ConnectionError("server link lost"))
        self.factory.link._disconnected(self)

    def send_raw(self, pdu: bytes) -> None:
        self.last_sent = self.factory.clock.seconds()
        super().send_raw(pdu)

    def heartbeat_if_silent(self, now: float) -> None:
        if now - self.last_sent >= HEARTBEAT_INTERVAL:
            self.send_raw(HEARTBEAT_PDU)

    def request(
        self, command_id: int, message: Message, answer_id: int | None = None
    ) -> defer.Deferred[Request]:
        """Send and wait for the answer carrying the same seq.

        With ``answer_id``, only that command counts as the answer: a peer that also relays
        other nodes' packets verbatim (route relays clients' seqs) cannot be mistaken for
        it. Without, any command with the seq does.
        """
        for _ in range(0xFFFF):
            self._next_seq = self._next_seq % 0xFFFF + 1
            if self._next_seq not in self._pending:
                break
        seq = self._next_seq
        d: defer.Deferred[Request] = defer.Deferred()
        self._pending[seq] = (d, answer_id)
        self.send(command_id, message, seq)
        return d

    def pduReceived(self, header: PduHeader, pdu: bytes) -> None:
        waiter = None
        if header.seq_num:
            entry = self._pending.get(header.seq_num)
            if entry is not None and entry[1] in (None, header.command_id):
                waiter = self._pending.pop(header.seq_num)[0]
        if waiter is not None:
            message = self.decode_body(header.command_id, pdu)
            if message is None:
                waiter.errback(ValueError("undecodable answer on server link"))
            else:
                waiter.callback(Request(header, pdu, message))
            return
        super().pduReceived(header, pdu)


class LinkFactory(PduFactory):
    protocol = LinkProtocol

    def __init__(self, link: ServerLink, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.link = link

    def sweep(self) -> None:
        super().sweep()
        now = self.clock.seconds()
        for conn in list(self.connections):
            if not conn.closing:
                conn.heartbeat_if_silent(now)  # type: ignore[attr-defined]


class ServerLink:
    """A self-healing link to ``host:port``; ``on_connect(conn)`` runs on every connect."""

    def __init__(
        self,
        reactor: Any,
        name: str,
        host: str,
        port: int,
        table: CommandTable[LinkProtocol],
        *,
        on_connect: Callable[[LinkProtocol], None] | None = None,
        on_disconnect: Callable[[LinkProtocol], None] | None = None,
        max_pdu_size: int = 64 * 1024 * 1024,
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.address = f"{host}:{port}"
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.connection: LinkProtocol | None = None
        self.factory = LinkFactory(self, clock=reactor, table=table, max_pdu_size=max_pdu_size)
        endpoint = HostnameEndpoint(reactor, host, port, timeout=10)
        self._service = ClientService(
            endpoint, self.factory, retryPolicy=reference_backoff, clock=reactor
        )

    @property
    def connected(self) -> bool:
        return self._open_connection() is not None

    def _open_connection(self) -> LinkProtocol | None:
        conn = self.connection
        return conn if conn is not None and not conn.closing else None

    def start(self) -> None:
        self.factory.doStart()
        self._service.startService()

    async def stop(self) -> None:
        await self._service.stopService()
        self.factory.doStop()

    def send(self, command_id: int, message: Message, seq: int = 0) -> bool:
        """Send if connected; False when the link is down (the caller decides what then)."""
        conn = self._open_connection()
        if conn is None:
            return False
        conn.send(command_id, message, seq)
        return True

    def send_raw(self, pdu: bytes) -> bool:
        conn = self._open_connection()
        if conn is None:
            return False
        conn.send_raw(pdu)
        return True

    def request(
        self, command_id: int, message: Message, answer_id: int | None = None
    ) -> defer.Deferred[Request]:
        conn = self._open_connection()
        if conn is None:
            return defer.fail(ConnectionError(f"{self.name} link to {self.address} is down"))
        return conn.request(command_id, message, answer_id)

    def _connected(self, conn: LinkProtocol) -> None:
        self.connection = conn
        log.info("{name} link to {address} up", name=self.name, address=self.address)
        if self.on_connect is not None:
            self.on_connect(conn)

    def _disconnected(self, conn: LinkProtocol) -> None:
        if self.connection is conn:
            self.connection = None
            log.info("{name} link to {address} down", name=self.name, address=self.address)
            if self.on_disconnect is not None:
                self.on_disconnect(conn)


class InboundLinkProtocol(PduProtocol):
    """The accepting end of a server link (route and login listen for msg nodes).

    Like ``LinkProtocol`` it is "logged in" from the start, closes after 30 s without a
    byte and sends a heartbeat whenever it has been silent for 5 s (both sides of every
    server link do, wire.md §7), so a node that only listens still proves it is alive.
    """

    logged_in = True
    idle_timeout = LINK_IDLE_TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.last_sent = 0.0

    def connectionMade(self) -> None:
        super().connectionMade()
        self.last_sent = self.factory.clock.seconds()

    def send_raw(self, pdu: bytes) -> None:
        self.last_sent = self.factory.clock.seconds()
        super().send_raw(pdu)

    def heartbeat_if_silent(self, now: float) -> None:
        if now - self.last_sent >= HEARTBEAT_INTERVAL:
            self.send_raw(HEARTBEAT_PDU)


class InboundLinkFactory(PduFactory):
    """Listener factory for ``InboundLinkProtocol`` links: the sweep also heartbeats."""

    protocol = InboundLinkProtocol

    def sweep(self) -> None:
        super().sweep()
        now = self.clock.seconds()
        for conn in list(self.connections):
            if not conn.closing:
                conn.heartbeat_if_silent(now)  # type: ignore[attr-defined]


def ignore_heartbeat(conn: PduProtocol, request: Request) -> None:
    """On server links a heartbeat only proves liveness; the receive clock already moved."""


__all__ = [
    "HEADER_SIZE",
    "InboundLinkFactory",
    "InboundLinkProtocol",
    "LinkProtocol",
    "ServerLink",
    "encode",
    "ignore_heartbeat",
    "parse_host_port",
    "reference_backoff",
]
