"""Framing, dispatch, liveness timers and backpressure of ``PduProtocol``."""

from __future__ import annotations

import os
import socket
import struct

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader, pack_pdu, with_seq
from teamtalk_py.wire import CommandTable, PduFactory, PduProtocol, echo_heartbeat
from teamtalk_py.wire.protocol import encode
from tests.msg_support import sleep
from tests.support import TestCase


def heartbeat(seq: int = 7, version: int = 6, reserved: int = 0x30) -> bytes:
    return struct.pack(
        ">IHHHHHH", 16, version, 0, B.SID_OTHER, B.CID_OTHER_HEARTBEAT, seq, reserved
    )


class Recorder:
    def __init__(self) -> None:
        self.calls: list = []

    def __call__(self, conn, request) -> None:
        self.calls.append(request)


def make_conn(
    table: CommandTable | None = None, clock: Clock | None = None, **factory_kwargs
) -> tuple[PduProtocol, StringTransport, PduFactory]:
    clock = clock or Clock()
    if table is None:
        table = CommandTable()
        table.register(B.CID_OTHER_HEARTBEAT, echo_heartbeat, before_login=True, decode=False)
    factory = PduFactory(clock=clock, table=table, **factory_kwargs)
    conn = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    conn.makeConnection(transport)
    return conn, transport, factory


class WireTests(TestCase):
    def test_header_roundtrip_is_big_endian_and_counts_the_header(self):
        """``pack_pdu`` writes length = body + 16 and version 1, big-endian."""
        pdu = pack_pdu(B.SID_MSG, B.CID_MSG_TIME_RESPONSE, b"\x08\x01", seq_num=0x1234)
        assert pdu[:16] == bytes.fromhex("00000012 0001 0000 0003 0306 1234 0000".replace(" ", ""))
        header = PduHeader.unpack_from(pdu)
        assert (header.length, header.service_id, header.command_id, header.seq_num) == (
            18,
            B.SID_MSG,
            B.CID_MSG_TIME_RESPONSE,
            0x1234,
        )
        assert header.pack() == pdu[:HEADER_SIZE]

    def test_with_seq_replaces_only_the_sequence_number(self):
        """Relays restamp seq and keep every other byte."""
        pdu = heartbeat(seq=9)
        assert with_seq(pdu, 300) == pdu[:12] + b"\x01\x2c" + pdu[14:]

    def test_heartbeat_is_echoed_verbatim_with_seq_version_and_reserved(self):
        """The msg server's heartbeat answer is the received packet itself (wire.md §7)."""
        conn, transport, _ = make_conn()
        pdu = heartbeat(seq=4242, version=13, reserved=0x30)
        conn.dataReceived(pdu)
        assert transport.value() == pdu

    def test_pdus_split_at_every_byte_are_reassembled(self):
        """A read may deliver a fraction of a PDU; the framer waits for the rest."""
        conn, transport, _ = make_conn()
        stream = heartbeat(seq=1) + heartbeat(seq=2)
        for i in range(len(stream)):
            conn.dataReceived(stream[i : i + 1])
        assert transport.value() == stream

    def test_a_request_says_whether_more_of_its_read_follows(self):
        """``Request.more``: true for every PDU of a read but the last (its answer may
        wait to leave with theirs), false for a PDU completed by a later read."""
        recorder = Recorder()
        table: CommandTable = CommandTable()
        table.register(B.CID_OTHER_HEARTBEAT, recorder, before_login=True, decode=False)
        conn, _, _ = make_conn(table)
        conn.dataReceived(heartbeat(seq=1) + heartbeat(seq=2) + heartbeat(seq=3)[:5])
        conn.dataReceived(heartbeat(seq=3)[5:])
        assert [(r.seq, r.more) for r in recorder.calls] == [(1, True), (2, True), (3, False)]

    def test_several_pdus_in_one_read_are_all_handled_in_order(self):
        """Back-to-back PDUs in one chunk are each dispatched, in order."""
        conn, transport, _ = make_conn()
        stream = b"".join(heartbeat(seq=s) for s in range(1, 6))
        conn.dataReceived(stream)
        assert transport.value() == stream

    def test_length_below_header_size_closes_the_connection(self):
        """A length under 16 is a framing error: that connection is closed."""
        conn, transport, _ = make_conn()
        conn.dataReceived(struct.pack(">IHHHHHH", 15, 1, 0, 7, B.CID_OTHER_HEARTBEAT, 1, 0))
        assert transport.disconnecting
        assert transport.value() == b""

    def test_oversized_length_closes_before_the_body_arrives(self):
        """A length over the maximum closes at once, without buffering the body."""
        conn, transport, _ = make_conn(max_pdu_size=1024)
        conn.dataReceived(struct.pack(">IHHHHHH", 1025, 1, 0, 7, B.CID_OTHER_HEARTBEAT, 1, 0))
        assert transport.disconnecting

    def test_pdu_at_the_maximum_size_is_accepted(self):
        """The limit is inclusive: a PDU of exactly the maximum length is dispatched."""
        table = CommandTable()
        seen = Recorder()
        table.register(B.CID_OTHER_HEARTBEAT, seen, before_login=True, decode=False)
        conn, transport, _ = make_conn(table, max_pdu_size=64)
        conn.dataReceived(pack_pdu(B.SID_OTHER, B.CID_OTHER_HEARTBEAT, b"\x00" * 48))
        assert len(seen.calls) == 1
        assert not transport.disconnecting

    def test_unknown_command_is_ignored_and_connection_stays_open(self):
        """Unknown command ids are logged and ignored, as the reference does."""
        conn, transport, _ = make_conn()
        conn.dataReceived(pack_pdu(0x09, 0x0999, b"abc") + heartbeat(seq=3))
        assert not transport.disconnecting
        assert transport.value() == heartbeat(seq=3)

    def test_malformed_body_is_dropped_and_connection_stays_open(self):
        """A body that does not parse gets no answer; later PDUs still work."""
        table = CommandTable()
        seen = Recorder()
        table.register(B.CID_MSG_TIME_REQUEST, seen, before_login=True)
        table.register(B.CID_MSG_READ_ACK, seen, before_login=True)
        conn, transport, _ = make_conn(table)
        conn.dataReceived(pack_pdu(B.SID_MSG, B.CID_MSG_READ_ACK, b"\xff\xff\xff"))
        assert seen.calls == []
        conn.dataReceived(pack_pdu(B.SID_MSG, B.CID_MSG_TIME_REQUEST, b""))
        assert len(seen.calls) == 1
        assert not transport.disconnecting

    def test_lines_about_a_pdu_name_its_peer(self):
        """The peer of a dropped or refused PDU (worked out only for the line) is the
        connection's ``host:port``, in the log line's text."""
        lines: list[str] = []

        def observer(event: dict) -> None:
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        table = CommandTable()
        table.register(B.CID_MSG_READ_ACK, Recorder())
        conn, _, _ = make_conn(table)
        conn.dataReceived(pack_pdu(B.SID_MSG, B.CID_MSG_READ_ACK, b"\xff\xff\xff"))
        conn.logged_in = True
        conn.dataReceived(pack_pdu(B.SID_MSG, B.CID_MSG_READ_ACK, b"\xff\xff\xff"))
        conn.dataReceived(pack_pdu(0x09, 0x0999, b"abc"))
        about_peer = [line.split(": Error")[0] for line in lines if "127.0.0.1:5555" in line]
        assert about_peer == [
            "ignoring CID_MSG_READ_ACK before login from 127.0.0.1:5555",
            "dropping malformed CID_MSG_READ_ACK from 127.0.0.1:5555",
            "ignoring unknown command 0x0999 from 127.0.0.1:5555",
        ]

    def test_body_missing_a_required_field_is_dropped(self):
        """proto2 required fields are enforced: an incomplete read ack is not dispatched."""
        table = CommandTable()
        seen = Recorder()
        table.register(B.CID_MSG_READ_ACK, seen, before_login=True)
        conn, _, _ = make_conn(table)
        partial = Message_pb2.IMMsgDataReadAck(user_id=1, session_id=2)  # msg_id, type missing
        conn.dataReceived(
            pack_pdu(B.SID_MSG, B.CID_MSG_READ_ACK, partial.SerializePartialToString())
        )
        assert seen.calls == []
        full = Message_pb2.IMMsgDataReadAck(
            user_id=1, session_id=2, msg_id=3, session_type=B.SESSION_TYPE_SINGLE
        )
        conn.dataReceived(pack_pdu(B.SID_MSG, B.CID_MSG_READ_ACK, full.SerializeToString()))
        assert [r.message for r in seen.calls] == [full]

    def test_commands_before_login_are_not_dispatched(self):
        """Only commands registered as before_login run until the connection logs in."""
        table = CommandTable()
        seen = Recorder()
        table.register(B.CID_MSG_TIME_REQUEST, seen)
        conn, _, _ = make_conn(table)
        conn.dataReceived(pack_pdu(B.SID_MSG, B.CID_MSG_TIME_REQUEST, b""))
        assert seen.calls == []
        conn.logged_in = True
        conn.dataReceived(pack_pdu(B.SID_MSG, B.CID_MSG_TIME_REQUEST, b"", seq_num=5))
        assert [r.seq for r in seen.calls] == [5]

    def test_a_command_cannot_have_two_handlers(self):
        """The table is one handler per command; registering twice is a bug."""
        table = CommandTable()
        table.register(B.CID_MSG_DATA, Recorder())
        try:
            table.register(B.CID_MSG_DATA, Recorder())
        except ValueError as e:
            assert "CID_MSG_DATA" in str(e)
        else:
            raise AssertionError("second registration accepted")

    def test_failing_async_handler_is_logged_and_connection_survives(self):
        """An exception in a handler is logged; the connection keeps working."""
        table = CommandTable()

        async def broken(conn, request):
            raise RuntimeError("boom")

        table.register(B.CID_MSG_TIME_REQUEST, broken, before_login=True)
        table.register(B.CID_OTHER_HEARTBEAT, echo_heartbeat, before_login=True, decode=False)
        conn, transport, _ = make_conn(table)
        conn.dataReceived(pack_pdu(B.SID_MSG, B.CID_MSG_TIME_REQUEST, b""))
        conn.dataReceived(heartbeat(seq=1))
        assert transport.value() == heartbeat(seq=1)
        assert not transport.disconnecting
        assert len(self.flushLoggedErrors(RuntimeError)) == 1

    def test_send_uses_the_service_id_of_the_command(self):
        """Answers carry the right service id whatever the request header said."""
        conn, transport, _ = make_conn()
        conn.send(B.CID_MSG_TIME_RESPONSE, Message_pb2.IMClientTimeRsp(server_time=5), seq=9)
        header = PduHeader.unpack_from(transport.value())
        assert (header.service_id, header.command_id, header.seq_num, header.version) == (
            B.SID_MSG,
            B.CID_MSG_TIME_RESPONSE,
            9,
            1,
        )
        assert encode(B.CID_MSG_TIME_RESPONSE, Message_pb2.IMClientTimeRsp(server_time=5), 9) == (
            transport.value()
        )

    def test_idle_connection_is_closed_by_the_sweep(self):
        """No byte received for idle_timeout seconds closes the connection."""
        clock = Clock()
        conn, transport, factory = make_conn(clock=clock)
        conn.idle_timeout = 10.0
        factory.startFactory()
        clock.advance(5)
        conn.dataReceived(heartbeat())
        clock.advance(9)
        assert not transport.disconnecting
        clock.advance(1)
        assert transport.disconnecting
        factory.stopFactory()

    def test_connections_receiving_in_one_eighth_share_their_stamp(self):
        """``last_received`` is now to the eighth of a second, one float for every
        connection that receives in that eighth (not a float each)."""
        clock = Clock()
        clock.advance(100.3)
        factory = PduFactory(clock=clock, table=CommandTable())
        first, second, third = (
            factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port)) for port in (1, 2, 3)
        )
        for conn in (first, second, third):
            conn.makeConnection(StringTransport())
        first.dataReceived(heartbeat())
        clock.advance(0.02)
        second.dataReceived(heartbeat())
        clock.advance(0.1)
        third.dataReceived(heartbeat())
        assert first.last_received is second.last_received
        assert first.last_received == 100.25
        assert third.last_received == 100.375

    def test_login_deadline_closes_a_connection_that_never_logs_in(self):
        """The deadline counts from accept and applies until login succeeds."""
        clock = Clock()
        conn, transport, factory = make_conn(clock=clock)
        conn.login_deadline = 15.0
        conn.idle_timeout = None
        factory.startFactory()
        for _ in range(14):
            clock.advance(1)
            conn.dataReceived(heartbeat())
        assert not transport.disconnecting
        clock.advance(1)
        assert transport.disconnecting
        factory.stopFactory()

    def test_logged_in_connection_is_not_hit_by_the_login_deadline(self):
        """Once logged in only the idle timeout applies."""
        clock = Clock()
        conn, transport, factory = make_conn(clock=clock)
        conn.login_deadline = 15.0
        conn.idle_timeout = 100.0
        conn.logged_in = True
        factory.startFactory()
        clock.advance(30)
        assert not transport.disconnecting
        factory.stopFactory()

    def test_slow_reader_pauses_input_and_is_dropped_past_the_cap(self):
        """A peer that stops reading stops being read, and is dropped past max_outbuf."""
        conn, transport, _ = make_conn(max_outbuf=100)
        assert transport.producer is conn
        conn.pauseProducing()  # what the transport does when its buffer fills
        assert transport.producerState == "paused"
        conn.send_raw(b"x" * 60)
        assert not transport.disconnected
        conn.send_raw(b"x" * 60)
        assert transport.disconnected  # aborted, not a graceful close
        written = len(transport.value())
        conn.send_raw(b"y" * 10)
        assert len(transport.value()) == written

    def test_resumed_reader_gets_a_fresh_allowance(self):
        """After the transport drains, the count of bytes queued while paused restarts."""
        conn, transport, _ = make_conn(max_outbuf=100)
        conn.pauseProducing()
        conn.send_raw(b"x" * 90)
        conn.resumeProducing()
        assert transport.producerState == "producing"
        conn.pauseProducing()
        conn.send_raw(b"x" * 90)
        assert not transport.disconnected


class SendPartsTests(TestCase):
    """``send_parts`` on a real TCP connection: pieces go out as one PDU, straight to the
    socket when nothing is queued, behind Twisted's buffer (as a copy) when something is."""

    async def test_pieces_keep_their_order_and_bytes_whichever_way_they_go(self):
        table: CommandTable = CommandTable()
        factory = PduFactory(clock=reactor, table=table)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        for _ in range(500):
            if factory.connections:
                break
            await sleep(0.01)
        (conn,) = factory.connections
        self.addCleanup(conn.transport.loseConnection)
        buffer = bytearray(os.urandom(40_000))
        first = pack_pdu(B.SID_OTHER, B.CID_OTHER_HEARTBEAT, b"", 1)
        conn.send_raw(first)  # held by Twisted until the next poll
        assert conn.transport._tempDataLen
        view = memoryview(buffer)
        conn.send_parts((b"AB", view[:20_000]))  # must queue behind it, copied
        queued = bytes(buffer[:20_000])
        buffer[:20_000] = bytes(20_000)  # the caller reuses its buffer at once
        for _ in range(500):
            if not conn.transport._tempDataLen and not conn.transport.dataBuffer:
                break
            await sleep(0.01)
        conn.send_parts((b"CD", view[20_000:]))  # straight to the socket
        assert not conn.transport._tempDataLen and not conn.transport.dataBuffer
        expected = first + b"AB" + queued + b"CD" + bytes(buffer[20_000:])
        client.settimeout(10)
        received = b""
        while len(received) < len(expected):
            chunk = client.recv(65536)
            assert chunk, "connection closed early"
            received += chunk
        assert received == expected
