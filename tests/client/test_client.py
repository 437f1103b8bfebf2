"""The test client library: its own framing, request matching, notifications, text
encryption and HTTP discovery, checked against hand-computed bytes rather than against the
server's codec (which the client must not share)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from google.protobuf.message import DecodeError
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from teamtalk_client import (
    ANSWER_CID,
    Discovery,
    DiscoveryError,
    DiscoveryFormatError,
    FramingError,
    Pdu,
    TeamTalkClientProtocol,
    TeamTalkSession,
    connect,
    decrypt_text,
    discover,
    encode_pdu,
    encrypt_text,
    pack_header,
    unpack_header,
)
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2, Message_pb2
from tests.support import TestCase

# -- helpers ----------------------------------------------------------------------------


def result_of(d: Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (raising its failure)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure_of(d: Deferred[Any], kind: type[BaseException]) -> BaseException:
    """The exception an already-fired Deferred failed with, checked against `kind`."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    assert isinstance(results[0], Failure), f"succeeded with {results[0]!r}"
    assert isinstance(results[0].value, kind), repr(results[0].value)
    return results[0].value


def connected(**options: Any) -> tuple[TeamTalkClientProtocol, StringTransport, Clock]:
    clock = Clock()
    protocol = TeamTalkClientProtocol(clock, **options)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


def sent_pdus(transport: StringTransport) -> list[tuple[tuple[int, ...], bytes]]:
    """Split what the client wrote into (header fields, body) pairs and clear it."""
    data = transport.value()
    transport.clear()
    pdus = []
    while data:
        header = unpack_header(data)
        pdus.append((header, data[16 : header[0]]))
        data = data[header[0] :]
    return pdus


def time_answer(seq: int, server_time: int) -> bytes:
    body = Message_pb2.IMClientTimeRsp(server_time=server_time).SerializeToString()
    return encode_pdu(B.CID_MSG_TIME_RESPONSE, body, seq_num=seq)


# -- header -----------------------------------------------------------------------------


class HeaderTests(TestCase):
    """The 16-byte header, packed and unpacked by hand."""

    def test_heartbeat_pdu_is_the_documented_16_bytes(self) -> None:
        """An empty heartbeat encodes to exactly the header given in wire.md."""
        assert encode_pdu(B.CID_OTHER_HEARTBEAT, seq_num=0x2A) == bytes.fromhex(
            "00000010 0001 0000 0007 0701 002a 0000"
        )

    def test_header_fields_pack_big_endian_in_documented_order(self) -> None:
        """pack_header writes length, version, flag, service, command, seq, reserved."""
        packed = pack_header(0x1A, 6, 0, 3, 0x0301, 0xFFFE, 0x30)
        assert packed == bytes.fromhex("0000001a 0006 0000 0003 0301 fffe 0030")

    def test_unpack_header_reverses_hand_computed_bytes(self) -> None:
        """unpack_header reads the fields back from hand-written bytes."""
        raw = bytes.fromhex("00000012 000d 0000 0001 0103 8001 0000 abcd")
        assert unpack_header(raw) == (18, 13, 0, 1, 0x0103, 0x8001, 0)

    def test_length_counts_header_and_body(self) -> None:
        """The length field is body length + 16."""
        pdu = encode_pdu(B.CID_MSG_DATA, b"x" * 5, seq_num=1)
        assert pdu[:4] == (21).to_bytes(4, "big")


# -- framing ----------------------------------------------------------------------------


def _two_pdus() -> tuple[bytes, list[Pdu]]:
    body = Message_pb2.IMClientTimeRsp(server_time=1234).SerializeToString()
    first = encode_pdu(B.CID_MSG_TIME_RESPONSE, body, seq_num=0, version=6, reserved=0x30)
    second = encode_pdu(B.CID_OTHER_HEARTBEAT, seq_num=0)
    expected = [
        Pdu(B.CID_MSG_TIME_RESPONSE, 0, body, B.SID_MSG, 6, 0, 0x30),
        Pdu(B.CID_OTHER_HEARTBEAT, 0, b"", B.SID_OTHER, 1, 0, 0),
    ]
    return first + second, expected


class FramingTests(TestCase):
    """Reassembling PDUs from the byte stream, and framing errors."""

    def test_pdus_split_at_every_byte_boundary_are_reassembled(self) -> None:
        """Any split of the stream yields the same PDUs with all header fields intact."""
        stream, expected = _two_pdus()
        for cut in range(len(stream) + 1):
            protocol, _, _ = connected()
            protocol.dataReceived(stream[:cut])
            protocol.dataReceived(stream[cut:])
            assert protocol.notifications.pending == expected, f"cut at {cut}"

    def test_pdus_delivered_one_byte_at_a_time_are_reassembled(self) -> None:
        """Single-byte reads still produce whole PDUs."""
        stream, expected = _two_pdus()
        protocol, _, _ = connected()
        for i in range(len(stream)):
            protocol.dataReceived(stream[i : i + 1])
        assert protocol.notifications.pending == expected

    def test_several_pdus_in_one_chunk_are_delivered_in_order(self) -> None:
        """One read holding several PDUs delivers each of them, in order."""
        protocol, _, _ = connected()
        stream = b"".join(
            encode_pdu(B.CID_OTHER_HEARTBEAT, seq_num=0, reserved=n) for n in range(5)
        )
        protocol.dataReceived(stream)
        assert [p.reserved for p in protocol.notifications.pending] == [0, 1, 2, 3, 4]

    def test_length_shorter_than_header_closes_and_fails_pending_requests(self) -> None:
        """A length below 16 is a framing error: pending requests fail and the link closes."""
        protocol, transport, _ = connected()
        d = protocol.request(B.CID_MSG_TIME_REQUEST)
        protocol.dataReceived(pack_header(5, 1, 0, 7, B.CID_OTHER_HEARTBEAT, 0, 0))
        failure_of(d, FramingError)
        assert transport.disconnecting

    def test_announced_length_above_limit_is_a_framing_error(self) -> None:
        """A PDU announcing more than max_pdu_size is refused instead of buffered forever."""
        protocol, transport, _ = connected(max_pdu_size=1024)
        protocol.dataReceived(pack_header(1025, 1, 0, 3, B.CID_MSG_DATA, 0, 0))
        assert transport.disconnecting


# -- requests ---------------------------------------------------------------------------


class RequestTests(TestCase):
    """Requests: seq numbers, answer matching, timeouts, connection loss."""

    def test_requests_carry_incrementing_seq_and_header_defaults(self) -> None:
        """Requests go out with seq 1, 2, ... and version 1, flag 0, reserved 0."""
        protocol, transport, _ = connected()
        protocol.request(B.CID_MSG_TIME_REQUEST)
        protocol.request(B.CID_MSG_TIME_REQUEST)
        headers = [header for header, _ in sent_pdus(transport)]
        assert headers == [
            (16, 1, 0, B.SID_MSG, B.CID_MSG_TIME_REQUEST, 1, 0),
            (16, 1, 0, B.SID_MSG, B.CID_MSG_TIME_REQUEST, 2, 0),
        ]

    def test_version_and_reserved_options_are_written_into_every_pdu(self) -> None:
        """A client built with Android's header values sends them."""
        protocol, transport, _ = connected(version=6, reserved=0x30)
        protocol.send(B.CID_OTHER_HEARTBEAT)
        [(header, _)] = sent_pdus(transport)
        assert (header[1], header[6]) == (6, 0x30)

    def test_out_of_order_answers_fire_the_request_with_the_same_seq(self) -> None:
        """Answers are matched by seq, not by arrival order."""
        protocol, _, _ = connected()
        first = protocol.request(B.CID_MSG_TIME_REQUEST)
        second = protocol.request(B.CID_MSG_TIME_REQUEST)
        protocol.dataReceived(time_answer(2, 200) + time_answer(1, 100))
        assert (result_of(first).message.server_time, result_of(second).message.server_time) == (
            100,
            200,
        )

    def test_same_seq_with_other_command_is_a_notification_not_the_answer(self) -> None:
        """A PDU with the request's seq but a different command does not answer it."""
        protocol, _, _ = connected()
        d = protocol.request(B.CID_MSG_TIME_REQUEST)
        protocol.dataReceived(encode_pdu(B.CID_OTHER_HEARTBEAT, seq_num=1))
        assert not d.called and len(protocol.notifications.pending) == 1

    def test_seq_zero_packet_is_a_notification_even_with_matching_command(self) -> None:
        """Server-originated packets (seq 0) never answer a request."""
        protocol, _, _ = connected()
        d = protocol.request(B.CID_MSG_TIME_REQUEST)
        protocol.dataReceived(time_answer(0, 5))
        assert not d.called and protocol.notifications.pending[0].seq_num == 0

    def test_answer_command_table_covers_the_irregular_pairs(self) -> None:
        """The default answer commands include the ones that are not request+1 by name."""
        assert {
            B.CID_MSG_DATA: ANSWER_CID[B.CID_MSG_DATA],
            B.CID_OTHER_HEARTBEAT: ANSWER_CID[B.CID_OTHER_HEARTBEAT],
            B.CID_LOGIN_REQ_USERLOGIN: ANSWER_CID[B.CID_LOGIN_REQ_USERLOGIN],
            B.CID_FILE_REQUEST: ANSWER_CID[B.CID_FILE_REQUEST],
            B.CID_FILE_LOGIN_REQ: ANSWER_CID[B.CID_FILE_LOGIN_REQ],
            B.CID_FILE_PULL_DATA_REQ: ANSWER_CID[B.CID_FILE_PULL_DATA_REQ],
        } == {
            B.CID_MSG_DATA: B.CID_MSG_DATA_ACK,
            B.CID_OTHER_HEARTBEAT: B.CID_OTHER_HEARTBEAT,
            B.CID_LOGIN_REQ_USERLOGIN: B.CID_LOGIN_RES_USERLOGIN,
            B.CID_FILE_REQUEST: B.CID_FILE_RESPONSE,
            B.CID_FILE_LOGIN_REQ: B.CID_FILE_LOGIN_RES,
            B.CID_FILE_PULL_DATA_REQ: B.CID_FILE_PULL_DATA_RSP,
        }

    def test_request_for_a_command_without_answer_is_refused(self) -> None:
        """Requesting a read ack (which has no answer) raises instead of waiting forever."""
        protocol, _, _ = connected()
        with self.assertRaisesRegex(ValueError, "CID_MSG_READ_ACK"):
            protocol.request(B.CID_MSG_READ_ACK)

    def test_explicit_response_cid_overrides_the_table(self) -> None:
        """response_cid= lets a test wait for an unusual answer command."""
        protocol, _, _ = connected()
        d = protocol.request(B.CID_MSG_READ_ACK, response_cid=B.CID_MSG_READ_NOTIFY)
        protocol.dataReceived(encode_pdu(B.CID_MSG_READ_NOTIFY, seq_num=1))
        assert result_of(d).command_id == B.CID_MSG_READ_NOTIFY

    def test_seq_wraps_from_65535_to_1_skipping_zero(self) -> None:
        """After 65535 the next seq is 1."""
        protocol, _, _ = connected()
        seqs = [protocol.next_seq() for _ in range(65536)]
        assert (seqs[0], seqs[65534], seqs[65535]) == (1, 65535, 1)

    def test_seq_skips_numbers_still_awaiting_an_answer(self) -> None:
        """A wrapped seq that a pending request still uses is not reused."""
        protocol, _, _ = connected()
        protocol.request(B.CID_MSG_TIME_REQUEST)  # seq 1 stays pending
        for _ in range(65534):
            protocol.next_seq()
        assert protocol.next_seq() == 2

    def test_request_times_out_on_the_injected_clock(self) -> None:
        """With no answer, the request fails with TimeoutError after `timeout` seconds."""
        protocol, _, clock = connected()
        d = protocol.request(B.CID_MSG_TIME_REQUEST, timeout=3.0)
        clock.advance(2.9)
        assert not d.called
        clock.advance(0.2)
        failure_of(d, TimeoutError)

    def test_answer_after_timeout_becomes_a_notification(self) -> None:
        """A late answer is not lost: it is queued as a notification."""
        protocol, _, clock = connected()
        d = protocol.request(B.CID_MSG_TIME_REQUEST, timeout=1.0)
        clock.advance(1.0)
        failure_of(d, TimeoutError)
        protocol.dataReceived(time_answer(1, 9))
        assert protocol.notifications.pending[0].seq_num == 1

    def test_answered_request_cancels_its_timer(self) -> None:
        """Once answered, a request leaves no timer behind."""
        protocol, _, clock = connected()
        protocol.request(B.CID_MSG_TIME_REQUEST, timeout=3.0)
        protocol.dataReceived(time_answer(1, 9))
        assert clock.getDelayedCalls() == []

    def test_cancelled_request_stops_waiting_and_its_timer(self) -> None:
        """Cancelling a request forgets it: no timer, and a late answer is a notification."""
        protocol, _, clock = connected()
        d = protocol.request(B.CID_MSG_TIME_REQUEST, timeout=3.0)
        d.cancel()
        d.addErrback(lambda f: None)
        protocol.dataReceived(time_answer(1, 9))
        assert (clock.getDelayedCalls(), len(protocol.notifications.pending)) == ([], 1)

    def test_pending_request_fails_with_connection_lost(self) -> None:
        """Connection loss errbacks every pending request with ConnectionLost."""
        protocol, _, clock = connected()
        d = protocol.request(B.CID_MSG_TIME_REQUEST)
        protocol.connectionLost(Failure(ConnectionDone()))
        failure_of(d, ConnectionLost)
        assert clock.getDelayedCalls() == []

    def test_closed_fires_with_the_reason_on_connection_loss(self) -> None:
        """`closed` fires with the exception that ended the connection."""
        protocol, _, _ = connected()
        protocol.connectionLost(Failure(ConnectionDone()))
        assert isinstance(result_of(protocol.closed), ConnectionDone)

    def test_request_after_connection_loss_fails_immediately(self) -> None:
        """A request on a closed connection fails instead of hanging."""
        protocol, _, _ = connected()
        protocol.connectionLost(Failure(ConnectionDone()))
        failure_of(protocol.request(B.CID_MSG_TIME_REQUEST), ConnectionLost)


# -- notifications ----------------------------------------------------------------------


class NotificationTests(TestCase):
    """Notifications: callbacks, the queue and wait_for."""

    def test_on_callback_sees_notifications_that_are_also_queued(self) -> None:
        """Callbacks registered with on() observe a notification without consuming it."""
        protocol, _, _ = connected()
        seen: list[Pdu] = []
        protocol.on(B.CID_OTHER_HEARTBEAT, seen.append)
        protocol.dataReceived(encode_pdu(B.CID_OTHER_HEARTBEAT))
        assert (len(seen), len(protocol.notifications.pending)) == (1, 1)

    def test_failing_callback_does_not_stop_delivery(self) -> None:
        """An exception in a callback is logged and the notification still reaches the queue."""
        protocol, _, _ = connected()

        def broken(pdu: Pdu) -> None:
            raise RuntimeError("boom")

        protocol.on(B.CID_OTHER_HEARTBEAT, broken)
        protocol.dataReceived(encode_pdu(B.CID_OTHER_HEARTBEAT))
        assert len(protocol.notifications.pending) == 1
        [logged] = self.flushLoggedErrors(RuntimeError)
        assert str(logged.value) == "boom"

    def test_wait_for_takes_an_already_queued_notification(self) -> None:
        """wait_for finds a matching notification that arrived earlier and removes it."""
        protocol, _, _ = connected()
        protocol.dataReceived(encode_pdu(B.CID_OTHER_HEARTBEAT, reserved=1) + time_answer(0, 7))
        pdu = result_of(protocol.wait_for(B.CID_MSG_TIME_RESPONSE))
        remaining = [p.command_id for p in protocol.notifications.pending]
        assert (pdu.message.server_time, remaining) == (7, [B.CID_OTHER_HEARTBEAT])

    def test_wait_for_fires_on_a_later_notification_matching_the_predicate(self) -> None:
        """wait_for skips notifications its predicate rejects and fires on the next match."""
        protocol, _, _ = connected()
        d = protocol.wait_for(B.CID_MSG_TIME_RESPONSE, lambda p: p.message.server_time == 2)
        protocol.dataReceived(time_answer(0, 1))
        assert not d.called
        protocol.dataReceived(time_answer(0, 2))
        assert result_of(d).message.server_time == 2

    def test_wait_for_consumes_the_notification_it_returns(self) -> None:
        """A notification handed to a waiter is not also put in the queue."""
        protocol, _, _ = connected()
        protocol.wait_for(B.CID_MSG_TIME_RESPONSE)
        protocol.dataReceived(time_answer(0, 1))
        assert protocol.notifications.pending == []

    def test_wait_for_times_out(self) -> None:
        """wait_for fails with TimeoutError when nothing matching arrives in time."""
        protocol, _, clock = connected()
        d = protocol.wait_for(B.CID_MSG_DATA, timeout=2.0)
        clock.advance(2.0)
        failure_of(d, TimeoutError)

    def test_queue_get_is_woken_by_the_next_notification(self) -> None:
        """notifications.get() fires when a notification arrives."""
        protocol, _, _ = connected()
        d = protocol.notifications.get()
        protocol.dataReceived(encode_pdu(B.CID_OTHER_HEARTBEAT))
        assert result_of(d).command_id == B.CID_OTHER_HEARTBEAT

    def test_waiters_fail_with_connection_lost(self) -> None:
        """wait_for and notifications.get() fail when the connection goes."""
        protocol, _, _ = connected()
        waiting = protocol.wait_for(B.CID_MSG_DATA)
        getting = protocol.notifications.get()
        protocol.connectionLost(Failure(ConnectionDone()))
        failure_of(waiting, ConnectionLost)
        failure_of(getting, ConnectionLost)


# -- heartbeats -------------------------------------------------------------------------


class HeartbeatTests(TestCase):
    """Automatic heartbeats and their echoes."""

    def test_heartbeat_interval_sends_heartbeats_on_the_clock(self) -> None:
        """With heartbeat_interval set, an empty heartbeat goes out every interval."""
        protocol, transport, clock = connected(heartbeat_interval=5.0)
        clock.advance(4.9)
        assert transport.value() == b""
        clock.advance(0.1)
        clock.advance(5.0)
        headers = [header for header, _ in sent_pdus(transport)]
        assert headers == [
            (16, 1, 0, B.SID_OTHER, B.CID_OTHER_HEARTBEAT, 1, 0),
            (16, 1, 0, B.SID_OTHER, B.CID_OTHER_HEARTBEAT, 2, 0),
        ]

    def test_echo_of_automatic_heartbeat_is_not_a_notification(self) -> None:
        """The server's echo of a timer heartbeat is swallowed, not queued."""
        protocol, transport, clock = connected(heartbeat_interval=5.0)
        clock.advance(5.0)
        protocol.dataReceived(transport.value())  # the echo is the packet itself
        assert protocol.notifications.pending == []

    def test_heartbeats_stop_when_the_connection_is_lost(self) -> None:
        """No timer is left running after connection loss."""
        protocol, _, clock = connected(heartbeat_interval=5.0)
        protocol.connectionLost(Failure(ConnectionDone()))
        assert clock.getDelayedCalls() == []

    def test_heartbeat_request_is_answered_by_its_echo(self) -> None:
        """request(CID_OTHER_HEARTBEAT) fires with the echoed packet."""
        protocol, transport, _ = connected()
        d = protocol.request(B.CID_OTHER_HEARTBEAT)
        protocol.dataReceived(transport.value())
        assert result_of(d).seq_num == 1


# -- body decoding ----------------------------------------------------------------------


class BodyDecodingTests(TestCase):
    """Decoding PDU bodies, and raw sends."""

    def test_message_is_decoded_with_the_registry_class(self) -> None:
        """Pdu.message parses the body with the class of its command."""
        body = Login_pb2.IMLogoutRsp(result_code=0).SerializeToString()
        pdu = Pdu(B.CID_LOGIN_RES_LOGINOUT, 3, body)
        assert isinstance(pdu.message, Login_pb2.IMLogoutRsp)

    def test_message_missing_a_required_field_is_rejected(self) -> None:
        """Strict decoding refuses a body without its required fields."""
        pdu = Pdu(B.CID_LOGIN_RES_LOGINOUT, 3, b"")
        with self.assertRaises(DecodeError):
            _ = pdu.message

    def test_decode_partial_accepts_missing_required_fields(self) -> None:
        """decode_partial lets a test inspect an incomplete body."""
        body = Login_pb2.IMLoginRes(server_time=5).SerializePartialToString()
        assert Pdu(B.CID_LOGIN_RES_USERLOGIN, 1, body).decode_partial().server_time == 5

    def test_send_raw_writes_bytes_unchanged(self) -> None:
        """send_raw bypasses framing entirely."""
        protocol, transport, _ = connected()
        protocol.send_raw(b"\x00\x00\x00\x00garbage")
        assert transport.value() == b"\x00\x00\x00\x00garbage"


# -- text encryption --------------------------------------------------------------------

# Computed independently with `openssl enc -aes-256-ecb -nopad` on the padded buffers.
OPENSSL_VECTORS = [
    ("hello", b"nnZSBwfPCz60q69ddmfIJA=="),
    ("[语音]", b"QhGXlpFjvMFUNrtl1aaPzA=="),
    ("0123456789abcdef", b"BY1wZOT9JPljcE5qNjw9cQfU6OB7fpsvZh6GP3dYB9g="),
]


class TextEncryptionTests(TestCase):
    """Text encryption (AES-256-ECB + base64) as the clients do it."""

    def test_encrypt_text_matches_openssl_vectors(self) -> None:
        """encrypt_text produces the ciphertext openssl computes for the padded buffer."""
        for text, expected in OPENSSL_VECTORS:
            assert encrypt_text(text) == expected, text

    def test_decrypt_text_reads_openssl_vectors(self) -> None:
        """decrypt_text recovers the text from openssl-made ciphertext."""
        for text, ciphertext in OPENSSL_VECTORS:
            assert decrypt_text(ciphertext) == text, text

    def test_text_round_trips_for_every_length_up_to_three_blocks(self) -> None:
        """decrypt(encrypt(t)) == t for lengths 1..48, multi-byte characters included."""
        for n in range(1, 49):
            text = ("é" * n)[:n] if n % 2 else "a" * n
            assert decrypt_text(encrypt_text(text)) == text, n

    def test_padding_adds_a_block_when_the_length_field_does_not_fit(self) -> None:
        """Block count follows wire.md 6.1: an extra block when L mod 16 is 0 or above 12."""
        for size, blocks in [(1, 1), (12, 1), (13, 2), (16, 2), (28, 2), (29, 3)]:
            raw = base64.b64decode(encrypt_text("x" * size))
            assert len(raw) == blocks * 16, size

    def test_decrypt_skips_whitespace_and_missing_padding(self) -> None:
        """Whitespace and '=' in the base64 text are ignored, as the servers do."""
        assert decrypt_text(" nnZSBwfPCz60q6\n9ddmfIJA") == "hello"

    def test_decrypt_rejects_a_partial_block(self) -> None:
        """Ciphertext that is not whole 16-byte blocks is refused."""
        with self.assertRaisesRegex(ValueError, "blocks"):
            decrypt_text(base64.b64encode(b"x" * 15))

    def test_encryption_uses_the_given_key(self) -> None:
        """Another aesKey gives another ciphertext that only that key decrypts."""
        key = b"abcdefghijklmnopqrstuvwxyz012345"
        encrypted = encrypt_text("hello", key)
        assert (encrypted != encrypt_text("hello"), decrypt_text(encrypted, key)) == (True, "hello")


# -- session ----------------------------------------------------------------------------


class SessionTests(TestCase):
    """TeamTalkSession's requests."""

    def test_login_sends_lowercase_hex_md5_and_records_the_user_id(self) -> None:
        """login() sends the MD5 of the password as clients do and keeps the user id."""
        protocol, transport, _ = connected()
        session = TeamTalkSession(protocol)
        d = session.login("alice", "Secret")
        [(header, body)] = sent_pdus(transport)
        request = Login_pb2.IMLoginReq.FromString(body)
        assert (request.user_name, request.password) == (
            "alice",
            hashlib.md5(b"Secret").hexdigest(),
        )
        user = B.UserInfo(
            user_id=42,
            user_gender=0,
            user_nick_name="",
            avatar_url="",
            department_id=1,
            email="",
            user_real_name="alice",
            user_tel="",
            user_domain="",
            status=0,
        )
        answer = Login_pb2.IMLoginRes(
            server_time=1, result_code=B.REFUSE_REASON_NONE, user_info=user
        ).SerializeToString()
        protocol.dataReceived(encode_pdu(B.CID_LOGIN_RES_USERLOGIN, answer, seq_num=header[5]))
        assert (result_of(d).result_code, session.user_id) == (0, 42)

    def test_send_text_sends_encrypted_single_text_and_returns_the_ack(self) -> None:
        """send_text sends MSG_TYPE_SINGLE_TEXT with encrypted data and yields the ack."""
        protocol, transport, _ = connected()
        session = TeamTalkSession(protocol)
        d = session.send_text(7, "hello")
        [(header, body)] = sent_pdus(transport)
        data = Message_pb2.IMMsgData.FromString(body)
        assert (data.to_session_id, data.msg_type, data.msg_data) == (
            7,
            B.MSG_TYPE_SINGLE_TEXT,
            b"nnZSBwfPCz60q69ddmfIJA==",
        )
        ack = Message_pb2.IMMsgDataAck(
            user_id=1, session_id=7, msg_id=3, session_type=B.SESSION_TYPE_SINGLE
        )
        protocol.dataReceived(
            encode_pdu(B.CID_MSG_DATA_ACK, ack.SerializeToString(), seq_num=header[5])
        )
        assert result_of(d).msg_id == 3

    def test_read_ack_is_sent_without_waiting(self) -> None:
        """read_ack writes a CID_MSG_READ_ACK and leaves nothing pending."""
        protocol, transport, clock = connected()
        TeamTalkSession(protocol).read_ack(7, 3)
        [(header, body)] = sent_pdus(transport)
        ack = Message_pb2.IMMsgDataReadAck.FromString(body)
        assert (header[4], ack.msg_id, clock.getDelayedCalls()) == (B.CID_MSG_READ_ACK, 3, [])


# -- real sockets -----------------------------------------------------------------------


class _HeartbeatEcho(Protocol):
    """Echoes every byte back, which answers heartbeats the way TeamTalk servers do."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _FixedJson(Resource):
    isLeaf = True

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__()
        self.answer = answer

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html;charset=utf-8")
        return json.dumps(self.answer, indent=3, sort_keys=True, ensure_ascii=False).encode()


ORIGINAL_ANSWER = {
    "backupIP": "127.0.0.2",
    "code": 0,
    "discovery": "http://127.0.0.1/api/discovery",
    "msfsBackup": "http://127.0.0.1:8700/",
    "msfsPrior": "http://127.0.0.1:8700/",
    "msg": "",
    "port": "8000",
    "priorIP": "127.0.0.1",
}


async def _discover_from(answer: dict[str, Any]) -> Discovery:
    port = reactor.listenTCP(0, Site(_FixedJson(answer)), interface="127.0.0.1")
    try:
        return await discover(reactor, f"http://127.0.0.1:{port.getHost().port}/msg_server")
    finally:
        await port.stopListening()


class _OriginalLoginServer(Protocol):
    """Writes the original login server's answer byte for byte (no space after the
    header colons) and closes, as wire.md section 9 describes."""

    def dataReceived(self, data: bytes) -> None:
        body = json.dumps(ORIGINAL_ANSWER, indent=3, sort_keys=True).encode() + b"\n"
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nConnection:close\r\n"
            + b"Content-Length:%d\r\n" % len(body)
            + b"Content-Type:text/html;charset=utf-8\r\n\r\n"
            + body
        )
        self.transport.loseConnection()


class LoopbackTests(TestCase):
    """connect() and discover() over real loopback sockets."""

    async def test_connect_and_heartbeat_round_trip_over_loopback(self) -> None:
        """connect() reaches a loopback server; the heartbeat echo answers the request."""
        port = reactor.listenTCP(0, Factory.forProtocol(_HeartbeatEcho), interface="127.0.0.1")
        try:
            protocol = await connect(reactor, "127.0.0.1", port.getHost().port)
            pdu = await protocol.request(B.CID_OTHER_HEARTBEAT, timeout=5.0)
            protocol.transport.loseConnection()
            reason = await protocol.closed
        finally:
            await port.stopListening()
        assert (pdu.seq_num, pdu.body, isinstance(reason, ConnectionDone)) == (1, b"", True)

    async def test_discover_parses_the_login_server_answer(self) -> None:
        """discover() turns the JSON answer into a Discovery with an integer port."""
        found = await _discover_from(ORIGINAL_ANSWER)
        assert found == Discovery(
            prior_ip="127.0.0.1",
            backup_ip="127.0.0.2",
            port=8000,
            msfs_prior="http://127.0.0.1:8700/",
            msfs_backup="http://127.0.0.1:8700/",
            discovery="http://127.0.0.1/api/discovery",
        )

    async def test_discover_raises_discovery_error_for_code_1(self) -> None:
        """A non-zero code becomes DiscoveryError carrying code and msg."""
        with self.assertRaises(DiscoveryError) as caught:
            await _discover_from({"code": 1, "msg": "没有msg_server"})
        assert (caught.exception.code, caught.exception.msg) == (1, "没有msg_server")

    async def test_discover_rejects_a_numeric_port(self) -> None:
        """`port` must be a string as the original sends it; a number is a format error."""
        with self.assertRaisesRegex(DiscoveryFormatError, "port"):
            await _discover_from({**ORIGINAL_ANSWER, "port": 8000})

    async def test_discover_reads_the_original_servers_raw_http_format(self) -> None:
        """The original's header spelling and connection close are understood."""
        port = reactor.listenTCP(
            0, Factory.forProtocol(_OriginalLoginServer), interface="127.0.0.1"
        )
        try:
            url = f"http://127.0.0.1:{port.getHost().port}/msg_server"
            found = await discover(reactor, url)
        finally:
            await port.stopListening()
        assert (found.port, found.raw_body.endswith(b"}\n")) == (8000, True)
