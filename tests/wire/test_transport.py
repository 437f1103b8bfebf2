"""``SlimServer``: the slotted TCP transport of the msg listener behaves as Twisted's own.

Real sockets on 127.0.0.1: PDUs both ways, ``send_now`` straight to the socket, a slow
reader paused and resumed (and dropped past the cap), a TLS listener and ``startTLS``
on top of it, and a clean close.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, reactor, ssl
from twisted.internet.address import IPv6Address
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.tcp import Server

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol.header import pack_pdu
from teamtalk_py.wire import CommandTable, PduFactory, PduProtocol, echo_heartbeat
from teamtalk_py.wire.protocol import FanoutHelpers, send_now_to_each
from teamtalk_py.wire.transport import SlimServer, slim_transports
from tests.cluster_support import sleep, wait_until
from tests.support import TestCase
from tests.tls_support import CertificateAuthority


def heartbeat(seq: int) -> bytes:
    return pack_pdu(B.SID_OTHER, B.CID_OTHER_HEARTBEAT, b"", seq)


class Peer(Protocol):
    """The client end: keeps every byte it reads; ``stop_reading`` plays a slow reader."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = defer.Deferred[None]()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class Listening(TestCase):
    """Listeners with slim transports and peers connecting to them."""

    async def listen(self, factory: Factory, endpoint: str = "tcp:0:interface=127.0.0.1") -> int:
        port = slim_transports(await serverFromString(reactor, endpoint).listen(factory))
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def pdu_factory(self, **kwargs: Any) -> PduFactory:
        table = CommandTable[PduProtocol]()
        table.register(B.CID_OTHER_HEARTBEAT, echo_heartbeat, before_login=True, decode=False)
        factory = PduFactory(clock=reactor, table=table, **kwargs)
        factory.startFactory()
        self.addCleanup(factory.stopFactory)
        return factory

    async def connect(self, port: int, tls: bool = False) -> Peer:
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if tls:
            endpoint = wrapClientTLS(ssl.CertificateOptions(), endpoint)
        peer = await endpoint.connect(Factory.forProtocol(Peer))
        self.addCleanup(lambda: peer.transport.abortConnection() if peer.transport else None)
        return peer

    async def server_side(self, factory: PduFactory) -> PduProtocol:
        await wait_until(lambda: factory.connections, what="accepted connection")
        (conn,) = factory.connections
        return conn


class SlimTransportTests(Listening):
    async def test_pdus_both_ways_send_now_and_a_clean_close(self):
        """The accepted connection's transport is a ``SlimServer`` (a ``tcp.Server``)
        with tcp.Server's names for itself; heartbeats are echoed, ``send_now`` goes
        straight to the socket with nothing left queued, and a close leaves no
        connection behind and no socket number."""
        factory = self.pdu_factory()
        port = await self.listen(factory)
        peer = await self.connect(port)
        conn = await self.server_side(factory)
        transport: Any = conn.transport
        assert type(transport) is SlimServer and isinstance(transport, Server)
        assert not hasattr(transport, "__dict__") or not transport.__dict__
        client_port = peer.transport.getHost().port
        assert transport.getPeer().host == "127.0.0.1"
        assert transport.getPeer().port == client_port
        assert transport.client == ("127.0.0.1", client_port)
        assert transport.getHost().port == port
        assert transport.fileno() == transport.socket.fileno() > 0
        assert transport.logPrefix() == f"PduProtocol,{transport.sessionno},127.0.0.1"
        assert repr(transport) == f"<PduProtocol #{transport.sessionno} on {port}>"

        peer.transport.write(heartbeat(1) + heartbeat(2))
        await wait_until(lambda: len(peer.received) == 32, what="two echoes")
        conn.send_now(heartbeat(3))
        assert transport._tempDataLen == 0 and transport._write_list is None
        await wait_until(lambda: len(peer.received) == 48, what="send_now")
        assert bytes(peer.received) == heartbeat(1) + heartbeat(2) + heartbeat(3)

        conn.close("test")
        await peer.lost
        await wait_until(lambda: not factory.connections, what="connection forgotten")
        assert transport.fileno() == -1 and not transport.connected

    async def test_an_ipv6_peer_keeps_its_whole_address(self):
        """An IPv6 peer's address keeps its flow info and scope id beside host and
        port (an IPv4 port is kept without a tuple of its own)."""
        factory = self.pdu_factory()
        port = await self.listen(factory, r"tcp6:0:interface=\:\:1")
        endpoint = TCP6ClientEndpoint(reactor, "::1", port)
        peer = await endpoint.connect(Factory.forProtocol(Peer))
        self.addCleanup(lambda: peer.transport.abortConnection() if peer.transport else None)
        conn = await self.server_side(factory)
        transport: Any = conn.transport
        client_port = peer.transport.getHost().port
        assert transport.client == ("::1", client_port, 0, 0)
        assert transport.getPeer() == IPv6Address("TCP", "::1", client_port)
        assert transport.logPrefix() == f"PduProtocol,{transport.sessionno},::1"

    async def test_a_slow_reader_is_paused_resumed_and_gets_every_byte_in_order(self):
        """The peer stops reading: Twisted's buffer fills, the protocol is paused and
        counts its backlog; once the peer reads again it is resumed and every byte
        arrives, in order."""
        factory = self.pdu_factory()
        port = await self.listen(factory)
        peer = await self.connect(port)
        conn = await self.server_side(factory)
        peer.transport.pauseProducing()
        block = b"".join(heartbeat(i) for i in range(4096))  # 64 KiB
        sent = 0
        while not conn.output_backlog and sent < 512:
            conn.send_raw(block)
            sent += 1
            await sleep(0)  # a reactor turn: Twisted writes what it can
        assert conn.output_backlog > 0, "the transport never paused its producer"
        peer.transport.resumeProducing()
        await wait_until(lambda: len(peer.received) == sent * len(block), 30, "every byte")
        assert bytes(peer.received) == block * sent
        await wait_until(lambda: not conn.output_backlog, what="resumed")

    async def test_a_reader_that_never_reads_is_dropped_past_the_cap(self):
        """Past ``max_outbuf`` queued bytes the connection is aborted."""
        factory = self.pdu_factory(max_outbuf=256 * 1024)
        port = await self.listen(factory)
        peer = await self.connect(port)
        conn = await self.server_side(factory)
        peer.transport.pauseProducing()
        block = b"".join(heartbeat(i) for i in range(4096))
        for _ in range(512):
            if conn.closing:
                break
            conn.send_raw(block)
            await sleep(0)
        assert conn.closing
        peer.transport.resumeProducing()  # to read the end of the connection
        await peer.lost
        await wait_until(lambda: not factory.connections, what="dropped")

    async def test_a_tls_listener_works_on_slim_transports(self):
        """``ssl:`` listeners wrap the protocol in TLS above the transport: heartbeats
        come back decrypted, and ``send_now`` takes the TLS layer's write."""
        directory = self.tmp_path()
        cert, key = CertificateAuthority().node(directory, "server")
        factory = self.pdu_factory()
        port = await self.listen(
            factory, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        )
        peer = await self.connect(port, tls=True)
        conn = await self.server_side(factory)
        assert type(conn.transport.transport) is SlimServer  # under the TLS protocol
        peer.transport.write(heartbeat(5))
        await wait_until(lambda: len(peer.received) == 16, what="echo over TLS")
        conn.send_now(heartbeat(6))
        await wait_until(lambda: len(peer.received) == 32, what="send_now over TLS")
        assert bytes(peer.received) == heartbeat(5) + heartbeat(6)

    async def test_start_tls_on_a_slim_transport(self):
        """``startTLS`` (which sets attributes the slots do not have) upgrades a slim
        connection: what is written after it arrives through TLS."""
        directory = self.tmp_path()
        cert, key = CertificateAuthority().node(directory, "server")
        options = ssl.PrivateCertificate.loadPEM(key.read_bytes() + cert.read_bytes()).options()

        class Upgrading(Protocol):
            def dataReceived(self, data: bytes) -> None:
                if data == b"STARTTLS":
                    self.transport.startTLS(options)
                else:
                    self.transport.write(b"tls:" + data)

        port = await self.listen(Factory.forProtocol(Upgrading))
        peer = await self.connect(port)
        peer.transport.write(b"STARTTLS")
        await sleep(0.1)
        peer.transport.startTLS(ssl.CertificateOptions())
        peer.transport.write(b"hello")
        await wait_until(lambda: bytes(peer.received) == b"tls:hello", what="TLS answer")


class Refusing(PduProtocol):
    """A subclass whose ``send_raw`` rule refuses every packet (and counts them)."""

    refused = 0

    def send_raw(self, pdu: bytes) -> None:
        self.refused += 1


class FanoutTests(Listening):
    async def peers(self, factory: PduFactory, port: int, n: int) -> list[tuple[Peer, Any]]:
        peers = [await self.connect(port) for _ in range(n)]
        await wait_until(lambda: len(factory.connections) == n, what="accepted connections")
        by_port = {c.transport.getPeer().port: c for c in factory.connections}
        return [(p, by_port[p.transport.getHost().port]) for p in peers]

    async def test_send_now_to_each_keeps_each_connections_order(self):
        """One connection with bytes still queued by Twisted and one paused by its slow
        reader get the batch behind what they already had; the others straight from the
        socket; every peer ends up with its bytes in order."""
        factory = self.pdu_factory()
        port = await self.listen(factory)
        (idle, _), (queued, queued_conn), (slow, slow_conn) = await self.peers(factory, port, 3)
        queued_conn.send_raw(heartbeat(1))  # held by Twisted until the next poll
        slow_conn.pauseProducing()  # as the transport does for a peer that stops reading
        batch = heartbeat(2) + heartbeat(3)
        assert send_now_to_each(list(factory.connections), batch) == 3
        assert queued_conn.transport._tempDataLen == 48
        assert slow_conn.output_backlog == len(batch)
        slow_conn.resumeProducing()
        await wait_until(lambda: len(idle.received) == 32, what="direct batch")
        await wait_until(lambda: len(queued.received) == 48, what="queued batch")
        await wait_until(lambda: len(slow.received) == 32, what="slow batch")
        assert bytes(idle.received) == bytes(slow.received) == batch
        assert bytes(queued.received) == heartbeat(1) + batch

    async def test_a_fan_out_shared_with_helper_threads_keeps_each_connections_order(self):
        """With helper threads the sockets that may take the batch at once share it
        between the threads; one with bytes queued and one paused by its slow reader
        still get it behind what they had, and every peer gets its bytes once, in
        order."""
        factory = self.pdu_factory()
        port = await self.listen(factory)
        pairs = await self.peers(factory, port, 8)
        (queued, queued_conn), (slow, slow_conn) = pairs[0], pairs[1]
        queued_conn.send_raw(heartbeat(1))
        slow_conn.pauseProducing()
        helpers = FanoutHelpers(2, min_slice=2)
        self.addCleanup(helpers.stop)
        batch = heartbeat(2) + heartbeat(3)
        assert send_now_to_each([conn for _, conn in pairs], batch, helpers) == 8
        assert helpers.shared == 1
        assert queued_conn.transport._tempDataLen == 48
        assert slow_conn.output_backlog == len(batch)
        slow_conn.resumeProducing()
        for peer, _ in pairs[2:]:
            await wait_until(lambda p=peer: len(p.received) == 32, what="direct batch")
            assert bytes(peer.received) == batch
        await wait_until(lambda: len(queued.received) == 48, what="queued batch")
        await wait_until(lambda: len(slow.received) == 32, what="slow batch")
        assert bytes(queued.received) == heartbeat(1) + batch
        assert bytes(slow.received) == batch

    async def test_the_tail_of_a_partial_shared_fan_out_send_goes_through_twisted(self):
        """A helper thread's partial send is finished by the reactor thread, its tail in
        Twisted's buffer as is (``send_raw``'s rule never sees it)."""
        factory = self.pdu_factory()
        factory.protocol = Refusing
        port = await self.listen(factory)
        pairs = await self.peers(factory, port, 2)
        for peer, conn in pairs:
            peer.transport.pauseProducing()
            conn.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        helpers = FanoutHelpers(1, min_slice=1)
        self.addCleanup(helpers.stop)
        big = pack_pdu(B.SID_OTHER, B.CID_OTHER_HEARTBEAT, b"\x00\x10" * 128 * 1024)
        assert send_now_to_each([conn for _, conn in pairs], big, helpers) == 2
        assert helpers.shared == 1
        for peer, conn in pairs:
            assert conn.transport._tempDataLen, "the send was not partial"
            assert conn.refused == 0
            peer.transport.resumeProducing()
        for peer, _ in pairs:
            await wait_until(lambda p=peer: len(p.received) == len(big), 30, "the whole packet")
            assert bytes(peer.received) == big

    async def test_the_tail_of_a_partial_send_skips_the_subclass_rule(self):
        """A send that fits only in part leaves its tail in Twisted's buffer as is:
        ``send_raw``'s rules are for whole packets, never for a tail (it would be
        misread, or dropped, and the stream broken)."""
        await self.partial_send(lambda conn, pdu: conn.send_now(pdu))

    async def test_the_tail_of_a_partial_fan_out_send_skips_the_subclass_rule(self):
        """The same for ``send_now_to_each``."""
        await self.partial_send(lambda conn, pdu: send_now_to_each([conn], pdu))

    async def partial_send(self, send: Any) -> None:
        factory = self.pdu_factory()
        factory.protocol = Refusing
        port = await self.listen(factory)
        ((peer, conn),) = await self.peers(factory, port, 1)
        peer.transport.pauseProducing()
        conn.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = pack_pdu(B.SID_OTHER, B.CID_OTHER_HEARTBEAT, b"\x00\x10" * 128 * 1024)
        send(conn, big)
        assert conn.transport._tempDataLen, "the send was not partial"
        assert conn.refused == 0
        peer.transport.resumeProducing()
        await wait_until(lambda: len(peer.received) == len(big), 30, "the whole packet")
        assert bytes(peer.received) == big
