"""Outgoing links between teamtalk nodes (msg → route, msg → login, msg → file).

A ``ServerLink`` keeps one TCP connection to a peer service up: it reconnects with the
reference's back-off (2, 4, 8 … 64 s, then back to 4 s; wire.md §7.1) to TeamTalk's own
servers, and within 2 s (0.5, 1, 2, 2 … s) to our own nodes, so a restarted route or login
service has every node back within seconds. Requests that expect an answer are matched
by ``seq_num``.

**Liveness.** The reference heartbeats every 5 s and gives a link up after 30 s of
silence: a msg node that hangs (``SIGSTOP``, a stuck disk, a partition) keeps its users
"online" everywhere and keeps being offered to new clients for half a minute, while its
peers buffer what they send it. Between our own nodes (links that proved the cluster
secret) both ends heartbeat whenever silent for ``LINK_HEARTBEAT`` (1 s) and a link that
has received nothing for ``LINK_DEADLINE`` (5 s) is aborted (not closed: a hung peer
reads nothing, so a graceful close would wait on its buffers forever); the buffers go
with it. Route then marks the node's users offline with notifies, login stops offering
it, and both take it back when it links again. Links to TeamTalk's own servers (the
push_server link, ``TEAMTALK_PEER``) keep the reference's 5 s and 30 s.

Both ends of every link speak plain TeamTalk PDUs, so the links are documented by the
protocol itself and testable with any PDU client, once the link has authenticated: until
then each side accepts only the handshake of ``link_auth`` (the cluster secret, or TLS
with the cluster's certificates), and anything else closes the link.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from twisted.application.internet import ClientService
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol import registry
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader, pack_pdu
from teamtalk_py.wire.link_auth import (
    CID_LINK_CHALLENGE,
    CID_LINK_CONFIRM,
    CID_LINK_RESPONSE,
    HANDSHAKE_TIMEOUT,
    MAC_SIZE,
    NONCE_SIZE,
    LinkAuth,
    new_nonce,
)
from teamtalk_py.wire.protocol import CommandTable, PduFactory, PduProtocol, Request, encode

log = Logger(namespace="teamtalk.link")

#: The reference's timers, kept on links to TeamTalk's own servers.
HEARTBEAT_INTERVAL = 5.0
LINK_IDLE_TIMEOUT = 30.0
#: Between our own nodes: a heartbeat whenever silent this long ...
LINK_HEARTBEAT = 1.0
#: ... and a peer silent this long is taken for dead (well under LINK_IDLE_TIMEOUT).
LINK_DEADLINE = 5.0
HEARTBEAT_PDU = pack_pdu(B.SID_OTHER, B.CID_OTHER_HEARTBEAT, b"")


def reference_backoff(failed_attempts: int) -> float:
    """Seconds to wait after the n-th failure in a row (n >= 1): 2, 4 … 64, then 4 again."""
    n = max(failed_attempts, 1) - 1
    return float(2 ** (n + 1)) if n < 6 else float(2 ** ((n - 6) % 5 + 2))


#: Between our own nodes a link is retried at most this long after it failed.
CLUSTER_RETRY_MAX = 2.0


def cluster_backoff(failed_attempts: int) -> float:
    """0.5, 1, 2, 2 … s: a restarted route or login service is linked again within 2 s
    (the reference's back-off would leave it alone for up to 64 s)."""
    return min(CLUSTER_RETRY_MAX, 0.5 * 2 ** (max(failed_attempts, 1) - 1))


def parse_host_port(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        return value, default_port
    return host.strip("[]"), int(port)


def _handshake_pdu(command_id: int, body: bytes) -> bytes:
    return pack_pdu(B.SID_OTHER, command_id, body)


@implementer(IHandshakeListener)
class AuthenticatedLink(PduProtocol):
    """Either end of a server link: not "logged in" until the peer has proven it belongs
    to the cluster (``link_auth``); then heartbeats whenever silent, and aborted when the
    peer has been silent past its deadline (module docstring, Liveness)."""

    factory: LinkFactoryBase
    idle_timeout: float | None = LINK_IDLE_TIMEOUT
    heartbeat_interval = HEARTBEAT_INTERVAL
    login_deadline = HANDSHAKE_TIMEOUT
    last_sent = 0.0
    _server_nonce = b""
    _client_nonce = b""

    @property
    def auth(self) -> LinkAuth:
        return self.factory.auth

    @property
    def purpose(self) -> str:
        return self.factory.purpose

    def connectionMade(self) -> None:
        super().connectionMade()
        self.last_sent = self.factory.clock.seconds()
        if not self.auth.plain:
            self.idle_timeout = self.factory.link_deadline
            self.heartbeat_interval = min(LINK_HEARTBEAT, self.factory.link_deadline / 3)
        if self.auth.plain:
            self._authenticated()
        elif self.auth.secret is not None:
            self.start_handshake()

    def handshakeCompleted(self) -> None:
        """TLS is up and the peer's certificate checked out (IHandshakeListener)."""
        if self.auth.secret is None and not self.logged_in:
            self._authenticated()

    def send_raw(self, pdu: bytes) -> None:
        self.last_sent = self.factory.clock.seconds()
        super().send_raw(pdu)

    def heartbeat_if_silent(self, now: float) -> None:
        if self.logged_in and now - self.last_sent >= self.heartbeat_interval:
            self.send_raw(HEARTBEAT_PDU)

    def went_idle(self) -> None:
        """The peer said nothing, not even a heartbeat, past its deadline: it hangs or
        the network between us does. Abort: a graceful close would wait for a hung peer
        to read what is queued for it."""
        self.abort(f"{self.purpose} link: nothing received for {self.idle_timeout:g} s")

    def pduReceived(self, header: PduHeader, pdu: bytes, more: bool = False) -> None:
        # ``more`` (answers may wait for the rest of the read) is for client connections.
        if self.logged_in:
            self.link_pdu_received(header, pdu)
        elif self.auth.secret is None:
            self.refuse(f"{registry.name_of(header.command_id)} before the TLS handshake")
        else:
            self.handshake_pdu_received(header.command_id, pdu[HEADER_SIZE:])

    def link_pdu_received(self, header: PduHeader, pdu: bytes) -> None:
        super().pduReceived(header, pdu)

    def close(self, reason: str) -> None:
        # Over TLS, loseConnection waits until no producer is registered: let go first.
        if not self.closing and self.transport is not None:
            self.transport.unregisterProducer()
        super().close(reason)

    def refuse(self, reason: str) -> None:
        """The peer failed to authenticate: count it, say why, close."""
        if self.closing:
            return
        self.factory.auth_failures += 1
        log.warn(
            "{purpose} link with {peer} refused: {reason}",
            purpose=self.purpose,
            peer=self.peer,
            reason=reason,
        )
        self.close(f"{self.purpose} link not authenticated")

    def _authenticated(self) -> None:
        self.logged_in = True
        self.last_sent = self.factory.clock.seconds()
        self.authenticated()

    # -- what each end does ------------------------------------------------------------

    def start_handshake(self) -> None:
        """Called on connect when the cluster secret is in use."""

    def handshake_pdu_received(self, command_id: int, body: bytes) -> None:
        raise NotImplementedError

    def authenticated(self) -> None:
        """The link is trusted from now on."""


class LinkFactoryBase(PduFactory):
    """Factory of authenticated links: the credentials, the port's purpose, the count of
    peers refused (a metric), and the sweep that heartbeats."""

    #: Seconds of silence after which a cluster link is taken for dead (Liveness).
    link_deadline = LINK_DEADLINE

    def __init__(self, auth: LinkAuth, purpose: str, **kwargs: Any) -> None:
        # A link carries a whole node's traffic: it is never held for its own requests.
        kwargs.setdefault("max_in_flight", None)
        super().__init__(**kwargs)
        self.auth = auth
        self.purpose = purpose
        self.auth_failures = 0

    def sweep(self) -> None:
        super().sweep()
        now = self.clock.seconds()
        for conn in list(self.connections):
            if not conn.closing:
                conn.heartbeat_if_silent(now)  # type: ignore[attr-defined]


class LinkProtocol(AuthenticatedLink):
    """Our end of a link we opened: answers the peer's challenge, checks its proof."""

    factory: LinkFactory

    def __init__(self) -> None:
        super().__init__()
        #: seq -> (waiter, the answer command expected or None for any command)
        self._pending: dict[int, tuple[defer.Deferred[Request], int | None]] = {}
        self._next_seq = 0

    def handshake_pdu_received(self, command_id: int, body: bytes) -> None:
        auth = self.auth
        if command_id == CID_LINK_CHALLENGE and not self._server_nonce:
            if len(body) != NONCE_SIZE:
                self.refuse("malformed challenge")
                return
            self._server_nonce, self._client_nonce = body, new_nonce()
            proof = auth.client_proof(self.purpose, self._server_nonce, self._client_nonce)
            self.send_raw(_handshake_pdu(CID_LINK_RESPONSE, self._client_nonce + proof))
        elif command_id == CID_LINK_CONFIRM and self._server_nonce:
            expected = auth.server_proof(self.purpose, self._server_nonce, self._client_nonce)
            if len(body) != MAC_SIZE or not hmac.compare_digest(body, expected):
                self.refuse("the peer did not prove the cluster secret")
                return
            self._authenticated()
        else:
            self.refuse(f"{registry.name_of(command_id)} during the handshake")

    def authenticated(self) -> None:
        self.factory.link._connected(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        pending, self._pending = self._pending, {}
        for d, _ in pending.values():
            d.errback(ConnectionError("server link lost"))
        self.factory.link._disconnected(self)

    def request(
        self, command_id: int, message: Message, answer_id: int | None = None
    ) -> defer.Deferred[Request]:
        """Send and wait for the answer carrying the same seq.

        With ``answer_id``, only that command counts as the answer: a peer that also relays
        other nodes' packets verbatim (route relays clients' seqs) cannot be mistaken for
        it. Without, any command with the seq does. Cancelling the Deferred (a timeout)
        gives its seq back, so requests a peer never answers do not fill the seq space.
        """
        for _ in range(0xFFFF):
            self._next_seq = self._next_seq % 0xFFFF + 1
            if self._next_seq not in self._pending:
                break
        seq = self._next_seq

        def forget(cancelled: defer.Deferred[Request]) -> None:
            entry = self._pending.get(seq)
            if entry is not None and entry[0] is cancelled:
                del self._pending[seq]

        d: defer.Deferred[Request] = defer.Deferred(forget)
        self._pending[seq] = (d, answer_id)
        self.send(command_id, message, seq)
        return d

    def link_pdu_received(self, header: PduHeader, pdu: bytes) -> None:
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
        super().link_pdu_received(header, pdu)


class LinkFactory(LinkFactoryBase):
    protocol = LinkProtocol

    def __init__(self, link: ServerLink, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.link = link


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
        auth: LinkAuth,
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.address = f"{host}:{port}"
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.connection: LinkProtocol | None = None
        self.factory = LinkFactory(
            self, auth=auth, purpose=name, clock=reactor, table=table, max_pdu_size=max_pdu_size
        )
        endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=10)
        if auth.tls is not None:
            endpoint = wrapClientTLS(auth.client_tls(host), endpoint)
        retry = reference_backoff if auth.plain else cluster_backoff
        self._service = ClientService(endpoint, self.factory, retryPolicy=retry, clock=reactor)

    @property
    def connected(self) -> bool:
        """Up and authenticated: only then may anything but the handshake be sent."""
        return self._open_connection() is not None

    def _open_connection(self) -> LinkProtocol | None:
        conn = self.connection
        return conn if conn is not None and not conn.closing else None

    def start(self) -> None:
        self.factory.doStart()
        self._service.startService()

    async def stop(self) -> None:
        for conn in list(self.factory.connections):
            conn.close(f"{self.name} link stopped")
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


class InboundLinkProtocol(AuthenticatedLink):
    """The accepting end of a server link (route, login-internal and file-internal):
    challenges the peer to prove the cluster secret and proves it back."""

    def start_handshake(self) -> None:
        self._server_nonce = new_nonce()
        self.send_raw(_handshake_pdu(CID_LINK_CHALLENGE, self._server_nonce))

    def handshake_pdu_received(self, command_id: int, body: bytes) -> None:
        if command_id != CID_LINK_RESPONSE or self._client_nonce:
            self.refuse(f"{registry.name_of(command_id)} before link authentication")
            return
        if len(body) != NONCE_SIZE + MAC_SIZE:
            self.refuse("malformed handshake response")
            return
        client_nonce, proof = body[:NONCE_SIZE], body[NONCE_SIZE:]
        auth = self.auth
        expected = auth.client_proof(self.purpose, self._server_nonce, client_nonce)
        if not hmac.compare_digest(proof, expected):
            self.refuse("wrong cluster secret")
            return
        self._client_nonce = client_nonce
        confirm = auth.server_proof(self.purpose, self._server_nonce, client_nonce)
        self.send_raw(_handshake_pdu(CID_LINK_CONFIRM, confirm))
        self._authenticated()


class InboundLinkFactory(LinkFactoryBase):
    """Listener factory for ``InboundLinkProtocol`` links."""

    protocol = InboundLinkProtocol


def ignore_heartbeat(conn: PduProtocol, request: Request) -> None:
    """On server links a heartbeat only proves liveness; the receive clock already moved."""


__all__ = [
    "HEADER_SIZE",
    "AuthenticatedLink",
    "InboundLinkFactory",
    "InboundLinkProtocol",
    "LinkProtocol",
    "ServerLink",
    "encode",
    "ignore_heartbeat",
    "parse_host_port",
    "reference_backoff",
]
