"""A TeamTalk client library for tests and the benchmark.

It talks to any TeamTalk msg, file or login server (ours or the original C++ one): HTTP
discovery of a msg server (`discover`), a TCP connection with its own PDU framing
(`connect`, `TeamTalkClientProtocol`), request/answer matching by sequence number,
notifications, heartbeats, and a thin `TeamTalkSession` for login and chat.

The framing here is written independently of the server's (`teamtalk_py.wire`,
`teamtalk_py.protocol.header`) on purpose: if both sides shared one header codec, a bug in
it would be invisible to every test. Only the generated protobuf modules and the
command -> message class table of the registry are shared, because they are generated from
the protocol description rather than written by hand.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import struct
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ParamSpec, TypeVar

from google.protobuf.message import DecodeError, Message
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgent

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2, Message_pb2
from teamtalk_py.protocol.registry import message_class

try:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError:  # pragma: no cover - exercised only where cryptography is absent
    _HAVE_CRYPTOGRAPHY = False
else:
    _HAVE_CRYPTOGRAPHY = True

__all__ = [
    "ANSWER_CID",
    "DEFAULT_AES_KEY",
    "HEADER_SIZE",
    "Discovery",
    "DiscoveryError",
    "DiscoveryFormatError",
    "FramingError",
    "Pdu",
    "TeamTalkClientProtocol",
    "TeamTalkSession",
    "answer_cid",
    "command_name",
    "connect",
    "decrypt_text",
    "discover",
    "encode_pdu",
    "encrypt_text",
    "pack_header",
    "unpack_header",
]

log = Logger()

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _returns_deferred(
    fn: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Deferred[_T]]:
    """Run a coroutine function as a Deferred, so callers can both `await` the result and
    use it from `inlineCallbacks` or plain callback chains (the benchmark does the latter)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return Deferred.fromCoroutine(fn(*args, **kwargs))

    return wrapper


# --------------------------------------------------------------------------------------
# Header and PDUs (wire.md section 2)
# --------------------------------------------------------------------------------------

#: length u32, version u16, flag u16, service_id u16, command_id u16, seq_num u16,
#: reserved u16; all big-endian.
_HEADER = struct.Struct(">IHHHHHH")
HEADER_SIZE = _HEADER.size
assert HEADER_SIZE == 16

#: Upper bound on an incoming PDU. The protocol has none; a client that believed any
#: announced length would wait forever on a corrupt stream instead of failing the test.
DEFAULT_MAX_PDU_SIZE = 64 * 1024 * 1024


def pack_header(
    length: int,
    version: int,
    flag: int,
    service_id: int,
    command_id: int,
    seq_num: int,
    reserved: int,
) -> bytes:
    """Return the 16-byte header; `length` counts the whole PDU, header included."""
    return _HEADER.pack(length, version, flag, service_id, command_id, seq_num, reserved)


def unpack_header(
    data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[int, int, int, int, int, int, int]:
    """Parse the 16 bytes at `offset` into (length, version, flag, service_id,
    command_id, seq_num, reserved)."""
    return _HEADER.unpack_from(data, offset)


def encode_pdu(
    command_id: int,
    body: bytes = b"",
    *,
    seq_num: int = 0,
    service_id: int | None = None,
    version: int = 1,
    flag: int = 0,
    reserved: int = 0,
) -> bytes:
    """Build one PDU. The service id defaults to the command id's high byte, which the
    protocol guarantees equals the service id of every command (messages.md)."""
    if service_id is None:
        service_id = command_id >> 8
    header = pack_header(
        HEADER_SIZE + len(body), version, flag, service_id, command_id, seq_num, reserved
    )
    return header + body


def _build_command_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for enum in B.DESCRIPTOR.enum_types_by_name.values():
        if enum.name.endswith("CmdID"):
            for value in enum.values:
                names.setdefault(value.number, value.name)
    return names


_COMMAND_NAMES = _build_command_names()


def command_name(command_id: int) -> str:
    """The protocol name of a command id, for error messages (`0x....` if unknown)."""
    return _COMMAND_NAMES.get(command_id, f"0x{command_id:04x}")


def _decode_body(command_id: int, body: bytes, *, partial: bool) -> Message:
    message = message_class(command_id)()  # KeyError for commands TeamTalk lacks
    if partial:
        message.MergeFromString(body)
    else:
        message.ParseFromString(body)
        if not message.IsInitialized():
            # Some runtimes accept a missing required field; the servers do not, and a
            # test should notice a server that sends such a message.
            raise DecodeError(
                f"{command_name(command_id)}: missing required fields "
                f"{message.FindInitializationErrors()}"
            )
    return message


@dataclass(frozen=True)
class Pdu:
    """One received (or built) PDU: the header fields as they were on the wire, the raw
    body, and the body decoded on first access of `message`."""

    command_id: int
    seq_num: int = 0
    body: bytes = b""
    service_id: int | None = None
    version: int = 1
    flag: int = 0
    reserved: int = 0
    #: The `length` field as announced on the wire (None for PDUs built locally).
    announced_length: int | None = field(default=None, compare=False)

    @property
    def length(self) -> int:
        """The size of the whole PDU, header included."""
        return HEADER_SIZE + len(self.body)

    @cached_property
    def message(self) -> Any:
        """The body parsed strictly (required fields must be present) with the message
        class the registry names for `command_id`; raises `DecodeError` otherwise."""
        return _decode_body(self.command_id, self.body, partial=False)

    def decode_partial(self) -> Any:
        """The body parsed without the required-field check, for inspecting packets the
        original servers send with required fields unset."""
        return _decode_body(self.command_id, self.body, partial=True)

    def to_bytes(self) -> bytes:
        """Encode this PDU back to wire bytes."""
        return encode_pdu(
            self.command_id,
            self.body,
            seq_num=self.seq_num,
            service_id=self.service_id,
            version=self.version,
            flag=self.flag,
            reserved=self.reserved,
        )


# --------------------------------------------------------------------------------------
# Request -> answer command table (commands.md part 1)
# --------------------------------------------------------------------------------------

#: The command that answers each request. Written out in full rather than computed as
#: "cid + 1": several commands have no answer at all (read acks, offline-file records, P2P
#: commands) and "+ 1" would silently wait for an unrelated notification instead.
ANSWER_CID: Mapping[int, int] = {
    # SID_LOGIN
    B.CID_LOGIN_REQ_MSGSERVER: B.CID_LOGIN_RES_MSGSERVER,
    B.CID_LOGIN_REQ_USERLOGIN: B.CID_LOGIN_RES_USERLOGIN,
    B.CID_LOGIN_REQ_LOGINOUT: B.CID_LOGIN_RES_LOGINOUT,
    B.CID_LOGIN_REQ_DEVICETOKEN: B.CID_LOGIN_RES_DEVICETOKEN,
    B.CID_LOGIN_REQ_KICKPCCLIENT: B.CID_LOGIN_RES_KICKPCCLIENT,
    B.CID_LOGIN_REQ_PUSH_SHIELD: B.CID_LOGIN_RES_PUSH_SHIELD,
    B.CID_LOGIN_REQ_QUERY_PUSH_SHIELD: B.CID_LOGIN_RES_QUERY_PUSH_SHIELD,
    # SID_BUDDY_LIST
    B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST: (
        B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE
    ),
    B.CID_BUDDY_LIST_USER_INFO_REQUEST: B.CID_BUDDY_LIST_USER_INFO_RESPONSE,
    B.CID_BUDDY_LIST_REMOVE_SESSION_REQ: B.CID_BUDDY_LIST_REMOVE_SESSION_RES,
    B.CID_BUDDY_LIST_ALL_USER_REQUEST: B.CID_BUDDY_LIST_ALL_USER_RESPONSE,
    B.CID_BUDDY_LIST_USERS_STATUS_REQUEST: B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE,
    B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST: B.CID_BUDDY_LIST_CHANGE_AVATAR_RESPONSE,
    B.CID_BUDDY_LIST_DEPARTMENT_REQUEST: B.CID_BUDDY_LIST_DEPARTMENT_RESPONSE,
    B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST: B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE,
    # SID_MSG
    B.CID_MSG_DATA: B.CID_MSG_DATA_ACK,
    B.CID_MSG_TIME_REQUEST: B.CID_MSG_TIME_RESPONSE,
    B.CID_MSG_UNREAD_CNT_REQUEST: B.CID_MSG_UNREAD_CNT_RESPONSE,
    B.CID_MSG_LIST_REQUEST: B.CID_MSG_LIST_RESPONSE,
    B.CID_MSG_GET_LATEST_MSG_ID_REQ: B.CID_MSG_GET_LATEST_MSG_ID_RSP,
    B.CID_MSG_GET_BY_MSG_ID_REQ: B.CID_MSG_GET_BY_MSG_ID_RES,
    # SID_GROUP
    B.CID_GROUP_NORMAL_LIST_REQUEST: B.CID_GROUP_NORMAL_LIST_RESPONSE,
    B.CID_GROUP_INFO_REQUEST: B.CID_GROUP_INFO_RESPONSE,
    B.CID_GROUP_CREATE_REQUEST: B.CID_GROUP_CREATE_RESPONSE,
    B.CID_GROUP_CHANGE_MEMBER_REQUEST: B.CID_GROUP_CHANGE_MEMBER_RESPONSE,
    B.CID_GROUP_SHIELD_GROUP_REQUEST: B.CID_GROUP_SHIELD_GROUP_RESPONSE,
    # SID_FILE
    B.CID_FILE_LOGIN_REQ: B.CID_FILE_LOGIN_RES,
    B.CID_FILE_PULL_DATA_REQ: B.CID_FILE_PULL_DATA_RSP,
    B.CID_FILE_REQUEST: B.CID_FILE_RESPONSE,
    B.CID_FILE_HAS_OFFLINE_REQ: B.CID_FILE_HAS_OFFLINE_RES,
    # SID_OTHER: the heartbeat is answered by its own echo; the rest are server links.
    B.CID_OTHER_HEARTBEAT: B.CID_OTHER_HEARTBEAT,
    B.CID_OTHER_VALIDATE_REQ: B.CID_OTHER_VALIDATE_RSP,
    B.CID_OTHER_GET_DEVICE_TOKEN_REQ: B.CID_OTHER_GET_DEVICE_TOKEN_RSP,
    B.CID_OTHER_PUSH_TO_USER_REQ: B.CID_OTHER_PUSH_TO_USER_RSP,
    B.CID_OTHER_GET_SHIELD_REQ: B.CID_OTHER_GET_SHIELD_RSP,
    B.CID_OTHER_FILE_TRANSFER_REQ: B.CID_OTHER_FILE_TRANSFER_RSP,
    B.CID_OTHER_FILE_SERVER_IP_REQ: B.CID_OTHER_FILE_SERVER_IP_RSP,
}


def answer_cid(command_id: int) -> int:
    """The command that answers `command_id`; `ValueError` for commands without one."""
    try:
        return ANSWER_CID[command_id]
    except KeyError:
        raise ValueError(
            f"{command_name(command_id)} has no answer: use send(), or pass response_cid="
        ) from None


# --------------------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------------------


class FramingError(Exception):
    """The peer sent a byte stream that is not a sequence of valid PDUs."""


_Body = Message | bytes | bytearray | memoryview | None


def _serialize(message: _Body) -> bytes:
    if message is None:
        return b""
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    return message.SerializeToString()


@dataclass
class _Pending:
    deferred: Deferred[Pdu]
    timer: IDelayedCall | None


@dataclass
class _Waiter:
    command_id: int | None
    predicate: Callable[[Pdu], bool] | None
    deferred: Deferred[Pdu]
    timer: IDelayedCall | None = None

    def matches(self, pdu: Pdu) -> bool:
        if self.command_id is not None and pdu.command_id != self.command_id:
            return False
        return self.predicate is None or bool(self.predicate(pdu))


class TeamTalkClientProtocol(Protocol):
    """One client connection: PDU framing, requests matched to answers by
    (seq_num, answer command), and everything else delivered as a notification.

    Notifications go, in this order, to every callback registered with `on()` for their
    command (callbacks only observe), then to the oldest `wait_for()` whose filter matches
    (which consumes the notification), else to the `notifications` queue.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        heartbeat_interval: float | None = None,
        version: int = 1,
        reserved: int = 0,
        max_pdu_size: int = DEFAULT_MAX_PDU_SIZE,
    ) -> None:
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
        #: Header values written into every PDU this client sends (wire.md 2.1: real
        #: clients differ here, e.g. Android sends version 6 and reserved 0x30).
        self.version = version
        self.reserved = reserved
        self.max_pdu_size = max_pdu_size
        #: Notifications nobody waited for, in arrival order.
        self.notifications: DeferredQueue[Pdu] = DeferredQueue()
        #: Fires with the exception that ended the connection (`ConnectionDone` for a
        #: clean close) once the connection is gone.
        self.closed: Deferred[BaseException] = Deferred()
        self._open = False
        self._buffer = bytearray()
        self._broken = False
        self._last_seq = 0
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._waiters: list[_Waiter] = []
        self._callbacks: dict[int, list[Callable[[Pdu], object]]] = {}
        self._heartbeat: LoopingCall | None = None
        # Seqs of heartbeats sent by the timer: their echoes are consumed, not queued.
        self._auto_heartbeat_seqs: dict[int, None] = {}

    # -- Twisted callbacks ------------------------------------------------------------

    def connectionMade(self) -> None:
        self._open = True
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        if self.heartbeat_interval is not None:
            self._heartbeat = LoopingCall(self._send_heartbeat)
            self._heartbeat.clock = self.clock
            self._heartbeat.start(self.heartbeat_interval, now=False)

    def dataReceived(self, data: bytes) -> None:
        if self._broken:
            return
        buffer = self._buffer
        buffer += data
        offset = 0
        available = len(buffer)
        try:
            while available - offset >= HEADER_SIZE:
                header = unpack_header(buffer, offset)
                length = header[0]
                if length < HEADER_SIZE or length > self.max_pdu_size:
                    self._framing_error(f"PDU length {length} out of range")
                    return
                if available - offset < length:
                    break
                body = bytes(buffer[offset + HEADER_SIZE : offset + length])
                offset += length
                _, version, flag, service_id, command_id, seq_num, reserved = header
                self._pdu_received(
                    Pdu(
                        command_id=command_id,
                        seq_num=seq_num,
                        body=body,
                        service_id=service_id,
                        version=version,
                        flag=flag,
                        reserved=reserved,
                        announced_length=length,
                    )
                )
                if self._broken:
                    return
        finally:
            del buffer[:offset]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._open = False
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        error = ConnectionLost(str(reason.value))
        self._fail_all(error)
        for waiting in list(self.notifications.waiting):
            self.notifications.waiting.remove(waiting)
            waiting.errback(ConnectionLost(str(reason.value)))
        if not self.closed.called:
            self.closed.callback(reason.value)

    # -- sending ----------------------------------------------------------------------

    def next_seq(self) -> int:
        """The next sequence number: 1..65535, wrapping, never 0 (seq 0 marks
        server-originated packets) and never one still awaiting its answer."""
        for _ in range(0xFFFF):
            self._last_seq = self._last_seq % 0xFFFF + 1
            if not any(seq == self._last_seq for seq, _ in self._pending):
                return self._last_seq
        raise RuntimeError("all 65535 sequence numbers are awaiting answers")

    def send(self, command_id: int, message: _Body = None, seq: int | None = None) -> int:
        """Send one PDU without waiting for an answer; returns the seq used.
        `message` may be a protobuf message, raw body bytes, or None for an empty body."""
        if seq is None:
            seq = self.next_seq()
        self._write(command_id, _serialize(message), seq)
        return seq

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are, for tests that send broken or hand-made PDUs."""
        self.transport.write(data)

    def request(
        self,
        command_id: int,
        message: _Body = None,
        *,
        response_cid: int | None = None,
        timeout: float | None = 10.0,
        seq: int | None = None,
    ) -> Deferred[Pdu]:
        """Send a request and fire with the PDU that carries the same seq and the answer
        command (`ANSWER_CID` unless `response_cid` is given). Errbacks with
        `TimeoutError` after `timeout` seconds (None: wait forever) and with
        `ConnectionLost` when the connection goes first."""
        if response_cid is None:
            response_cid = answer_cid(command_id)
        if seq is None:
            seq = self.next_seq()
        elif seq == 0:
            raise ValueError("seq 0 marks server notifications; use send() and wait_for()")
        key = (seq, response_cid)
        if key in self._pending:
            raise ValueError(f"a request with seq {seq} already awaits {response_cid:#06x}")
        body = _serialize(message)

        def cancel(_: Deferred[Pdu]) -> None:
            pending = self._pending.pop(key, None)
            if pending is not None and pending.timer is not None and pending.timer.active():
                pending.timer.cancel()

        deferred: Deferred[Pdu] = Deferred(cancel)
        if not self._open:
            deferred.errback(ConnectionLost("not connected"))
            return deferred
        timer = None
        if timeout is not None:
            timer = self.clock.callLater(timeout, self._expire, key, command_id, timeout)
        self._pending[key] = _Pending(deferred, timer)
        self._write(command_id, body, seq)
        return deferred

    def _write(self, command_id: int, body: bytes, seq: int) -> None:
        self.transport.write(
            encode_pdu(command_id, body, seq_num=seq, version=self.version, reserved=self.reserved)
        )

    def _send_heartbeat(self) -> None:
        seq = self.send(B.CID_OTHER_HEARTBEAT)
        self._auto_heartbeat_seqs[seq] = None
        while len(self._auto_heartbeat_seqs) > 64:  # peers that never echo
            del self._auto_heartbeat_seqs[next(iter(self._auto_heartbeat_seqs))]

    def _expire(self, key: tuple[int, int], command_id: int, timeout: float) -> None:
        pending = self._pending.pop(key, None)
        if pending is not None:
            pending.deferred.errback(
                TimeoutError(
                    f"no {command_name(key[1])} for {command_name(command_id)} "
                    f"seq {key[0]} within {timeout}s"
                )
            )

    # -- receiving --------------------------------------------------------------------

    def on(self, command_id: int, callback: Callable[[Pdu], object]) -> None:
        """Call `callback(pdu)` for every notification with this command id."""
        self._callbacks.setdefault(command_id, []).append(callback)

    def off(self, command_id: int, callback: Callable[[Pdu], object]) -> None:
        """Undo `on()`."""
        self._callbacks.get(command_id, []).remove(callback)

    def wait_for(
        self,
        command_id: int | None,
        predicate: Callable[[Pdu], bool] | None = None,
        timeout: float | None = 5.0,
    ) -> Deferred[Pdu]:
        """Fire with the first notification of `command_id` (None: any) for which
        `predicate` holds, taking it out of `notifications`; already-queued notifications
        are searched first. Errbacks with `TimeoutError` or `ConnectionLost`."""
        waiter = _Waiter(command_id, predicate, Deferred(lambda d: self._drop_waiter(waiter)))
        for index, pdu in enumerate(self.notifications.pending):
            if waiter.matches(pdu):
                del self.notifications.pending[index]
                waiter.deferred.callback(pdu)
                return waiter.deferred
        if not self._open:
            waiter.deferred.errback(ConnectionLost("not connected"))
            return waiter.deferred
        if timeout is not None:
            waiter.timer = self.clock.callLater(timeout, self._waiter_expired, waiter, timeout)
        self._waiters.append(waiter)
        return waiter.deferred

    def _drop_waiter(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()

    def _waiter_expired(self, waiter: _Waiter, timeout: float) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            what = "any PDU" if waiter.command_id is None else command_name(waiter.command_id)
            waiter.deferred.errback(TimeoutError(f"no matching {what} within {timeout}s"))

    def _pdu_received(self, pdu: Pdu) -> None:
        if pdu.seq_num != 0:
            pending = self._pending.pop((pdu.seq_num, pdu.command_id), None)
            if pending is not None:
                if pending.timer is not None and pending.timer.active():
                    pending.timer.cancel()
                pending.deferred.callback(pdu)
                return
            if pdu.command_id == B.CID_OTHER_HEARTBEAT and pdu.seq_num in self._auto_heartbeat_seqs:
                del self._auto_heartbeat_seqs[pdu.seq_num]
                return
        for callback in list(self._callbacks.get(pdu.command_id, ())):
            try:
                callback(pdu)
            except Exception:
                log.failure(
                    "notification callback failed for {command}",
                    command=command_name(pdu.command_id),
                )
        for waiter in list(self._waiters):
            try:
                matched = waiter.matches(pdu)
            except Exception as exc:  # a broken predicate fails its own waiter only
                self._drop_waiter(waiter)
                waiter.deferred.errback(exc)
                continue
            if matched:
                self._drop_waiter(waiter)
                waiter.deferred.callback(pdu)
                return
        self.notifications.put(pdu)

    def _framing_error(self, why: str) -> None:
        self._broken = True
        log.error("framing error from peer: {why}", why=why)
        self._fail_all(FramingError(why))
        self.transport.loseConnection()

    def _fail_all(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.deferred.errback(error)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.deferred.errback(error)


@_returns_deferred
async def connect(
    reactor: Any,
    host: str,
    port: int,
    *,
    connect_timeout: float = 10.0,
    **options: Any,
) -> TeamTalkClientProtocol:
    """Open a TCP connection; `options` go to `TeamTalkClientProtocol` (for example
    `heartbeat_interval`)."""
    endpoint = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
    protocol = TeamTalkClientProtocol(reactor, **options)
    return await connectProtocol(endpoint, protocol)


# --------------------------------------------------------------------------------------
# HTTP discovery (wire.md section 9)
# --------------------------------------------------------------------------------------


class DiscoveryError(Exception):
    """The login server answered with a non-zero `code` (1: no msg server, 2: all full)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(code, msg)
        self.code = code
        self.msg = msg


class DiscoveryFormatError(ValueError):
    """The login server's answer is not the documented JSON (bad status, type or key)."""


@dataclass(frozen=True)
class Discovery:
    """A successful `/msg_server` answer. `port` is converted from the decimal string
    the protocol sends; `raw_body` keeps the exact bytes for format checks."""

    prior_ip: str
    backup_ip: str
    port: int
    msfs_prior: str
    msfs_backup: str
    discovery: str
    code: int = 0
    msg: str = ""
    raw_body: bytes = field(default=b"", repr=False, compare=False)


def _string_field(answer: Mapping[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str):
        raise DiscoveryFormatError(f"discovery key {key!r} must be a string, got {value!r}")
    return value


def parse_discovery(body: bytes) -> Discovery:
    """Parse a `/msg_server` body strictly: types must match wire.md section 9 (notably
    `port` is a string), so a server that deviates fails the test that uses it."""
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise DiscoveryFormatError(f"discovery body is not JSON: {exc}") from exc
    if not isinstance(answer, dict):
        raise DiscoveryFormatError("discovery body is not a JSON object")
    code = answer.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise DiscoveryFormatError(f"discovery key 'code' must be an integer, got {code!r}")
    msg = _string_field(answer, "msg")
    if code != 0:
        raise DiscoveryError(code, msg)
    port_text = _string_field(answer, "port")
    if not port_text.isdigit():
        raise DiscoveryFormatError(f"discovery key 'port' is not decimal: {port_text!r}")
    return Discovery(
        prior_ip=_string_field(answer, "priorIP"),
        backup_ip=_string_field(answer, "backupIP"),
        port=int(port_text),
        msfs_prior=_string_field(answer, "msfsPrior"),
        msfs_backup=_string_field(answer, "msfsBackup"),
        discovery=_string_field(answer, "discovery"),
        code=code,
        msg=msg,
        raw_body=bytes(body),
    )


@_returns_deferred
async def discover(agent_or_reactor: Any, url: str | bytes) -> Discovery:
    """Ask a login server which msg server to use (`GET .../msg_server`), as clients do
    before connecting. Pass an `IAgent` to control pooling, or a reactor."""
    agent = agent_or_reactor if IAgent.providedBy(agent_or_reactor) else Agent(agent_or_reactor)
    if isinstance(url, str):
        url = url.encode("ascii")
    response = await agent.request(b"GET", url)
    body = await readBody(response)
    if response.code != 200:
        raise DiscoveryFormatError(f"discovery HTTP status {response.code}")
    return parse_discovery(body)


# --------------------------------------------------------------------------------------
# Text encryption (wire.md section 6.1)
# --------------------------------------------------------------------------------------

#: The `aesKey` shipped in every config and compiled into the clients.
DEFAULT_AES_KEY = b"12345678901234567890123456789012"


def _key_bytes(key: bytes | str) -> bytes:
    raw = key.encode("ascii") if isinstance(key, str) else bytes(key)
    if len(raw) != 32:
        raise ValueError(f"the AES key must be 32 bytes, got {len(raw)}")
    return raw


def encrypt_text(text: str, key: bytes | str = DEFAULT_AES_KEY) -> bytes:
    """Encrypt chat text the way the clients do, giving the base64 `msg_data` bytes:
    zero-pad to 16-byte blocks (adding a block when fewer than 4 bytes are left), put the
    text length big-endian in the last 4 bytes, AES-256-ECB, base64."""
    plain = text.encode("utf-8")
    size = len(plain)
    blocks = -(-size // 16)
    if size % 16 == 0 or size % 16 > 12:
        blocks += 1
    buffer = bytearray(plain.ljust(blocks * 16, b"\0"))
    buffer[-4:] = size.to_bytes(4, "big")
    return base64.b64encode(_ecb(_key_bytes(key), bytes(buffer), decrypt=False))


def decrypt_text(data: bytes | str, key: bytes | str = DEFAULT_AES_KEY) -> str:
    """Reverse `encrypt_text`; `ValueError` on anything the servers would also refuse
    (bad base64, not whole blocks, a length larger than the buffer)."""
    if isinstance(data, str):
        data = data.encode("ascii")
    cleaned = bytes(c for c in data if c not in b" \t\r\n\v\f=")
    cleaned += b"=" * (-len(cleaned) % 4)
    try:
        cipher = base64.b64decode(cleaned, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"encrypted text is not base64: {exc}") from exc
    if not cipher or len(cipher) % 16:
        raise ValueError(f"encrypted text is {len(cipher)} bytes, not whole AES blocks")
    plain = _ecb(_key_bytes(key), cipher, decrypt=True)
    size = int.from_bytes(plain[-4:], "big")
    if size > len(plain):
        raise ValueError(f"encrypted text announces {size} bytes in a {len(plain)}-byte buffer")
    return plain[:size].decode("utf-8")


def _ecb(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    if _HAVE_CRYPTOGRAPHY:
        cipher = Cipher(algorithms.AES(key), modes.ECB())
        op = cipher.decryptor() if decrypt else cipher.encryptor()
        return op.update(data) + op.finalize()
    aes = _PureAES256(key)
    step = aes.decrypt_block if decrypt else aes.encrypt_block
    return b"".join(step(data[i : i + 16]) for i in range(0, len(data), 16))


def _xtime(a: int) -> int:
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _gf_mul(a: int, b: int) -> int:
    result = 0
    while b:
        if b & 1:
            result ^= a
        a = _xtime(a)
        b >>= 1
    return result


def _make_sbox() -> tuple[bytes, bytes]:
    # S-box = affine transform of the GF(2^8) inverse (FIPS-197 5.1.1), computed rather
    # than typed in so there is no table to mistype.
    inverse = [0] * 256
    for a in range(1, 256):
        for b in range(1, 256):
            if _gf_mul(a, b) == 1:
                inverse[a] = b
                break
    sbox = bytearray(256)
    for a in range(256):
        x = inverse[a]
        s = x
        for shift in range(1, 5):
            s ^= ((x << shift) | (x >> (8 - shift))) & 0xFF
        sbox[a] = s ^ 0x63
    inv_sbox = bytearray(256)
    for a, s in enumerate(sbox):
        inv_sbox[s] = a
    return bytes(sbox), bytes(inv_sbox)


class _PureAES256:
    """Plain FIPS-197 AES-256 block cipher, used only when `cryptography` is missing.
    Slow but dependency-free; the test suite checks it against the FIPS vector."""

    _tables: tuple[bytes, bytes, dict[int, bytes]] | None = None

    def __init__(self, key: bytes) -> None:
        if _PureAES256._tables is None:
            sbox, inv_sbox = _make_sbox()
            mul = {n: bytes(_gf_mul(a, n) for a in range(256)) for n in (2, 3, 9, 11, 13, 14)}
            _PureAES256._tables = (sbox, inv_sbox, mul)
        self._sbox, self._inv_sbox, self._mul = _PureAES256._tables
        self._round_keys = self._expand(key)

    def _expand(self, key: bytes) -> list[bytes]:
        sbox = self._sbox
        words = [list(key[i : i + 4]) for i in range(0, 32, 4)]
        rcon = 1
        for i in range(8, 60):
            temp = list(words[i - 1])
            if i % 8 == 0:
                temp = [sbox[b] for b in temp[1:] + temp[:1]]
                temp[0] ^= rcon
                rcon = _xtime(rcon)
            elif i % 8 == 4:
                temp = [sbox[b] for b in temp]
            words.append([a ^ b for a, b in zip(words[i - 8], temp, strict=True)])
        return [bytes(sum(words[4 * r : 4 * r + 4], [])) for r in range(15)]

    @staticmethod
    def _add(state: list[int], round_key: bytes) -> list[int]:
        return [a ^ b for a, b in zip(state, round_key, strict=True)]

    def encrypt_block(self, block: bytes) -> bytes:
        sbox, m2, m3 = self._sbox, self._mul[2], self._mul[3]
        state = self._add(list(block), self._round_keys[0])
        for rnd in range(1, 15):
            # SubBytes + ShiftRows (byte r + 4c is row r, column c).
            state = [sbox[state[r + 4 * ((c + r) % 4)]] for c in range(4) for r in range(4)]
            if rnd != 14:
                mixed = []
                for c in range(4):
                    a0, a1, a2, a3 = state[4 * c : 4 * c + 4]
                    mixed += [
                        m2[a0] ^ m3[a1] ^ a2 ^ a3,
                        a0 ^ m2[a1] ^ m3[a2] ^ a3,
                        a0 ^ a1 ^ m2[a2] ^ m3[a3],
                        m3[a0] ^ a1 ^ a2 ^ m2[a3],
                    ]
                state = mixed
            state = self._add(state, self._round_keys[rnd])
        return bytes(state)

    def decrypt_block(self, block: bytes) -> bytes:
        inv, m9, m11, m13, m14 = (
            self._inv_sbox,
            self._mul[9],
            self._mul[11],
            self._mul[13],
            self._mul[14],
        )
        state = self._add(list(block), self._round_keys[14])
        for rnd in range(13, -1, -1):
            # InvShiftRows + InvSubBytes.
            state = [inv[state[r + 4 * ((c - r) % 4)]] for c in range(4) for r in range(4)]
            state = self._add(state, self._round_keys[rnd])
            if rnd != 0:
                mixed = []
                for c in range(4):
                    a0, a1, a2, a3 = state[4 * c : 4 * c + 4]
                    mixed += [
                        m14[a0] ^ m11[a1] ^ m13[a2] ^ m9[a3],
                        m9[a0] ^ m14[a1] ^ m11[a2] ^ m13[a3],
                        m13[a0] ^ m9[a1] ^ m14[a2] ^ m11[a3],
                        m11[a0] ^ m13[a1] ^ m9[a2] ^ m14[a3],
                    ]
                state = mixed
        return bytes(state)


# --------------------------------------------------------------------------------------
# High-level session
# --------------------------------------------------------------------------------------


class TeamTalkSession:
    """What a chat client does on top of a connection: log in, send and acknowledge
    messages, log out. Deliberately thin; tests use `protocol.request` for the rest."""

    def __init__(
        self,
        protocol: TeamTalkClientProtocol,
        *,
        aes_key: bytes | str = DEFAULT_AES_KEY,
        timeout: float = 10.0,
    ) -> None:
        self.protocol = protocol
        self.aes_key = aes_key
        self.timeout = timeout
        #: The logged-in user's id, known after a successful `login()`.
        self.user_id: int | None = None

    @_returns_deferred
    async def get(self, command_id: int, message: _Body = None) -> Any:
        """Send a request and return the decoded answer message."""
        pdu = await self.protocol.request(command_id, message, timeout=self.timeout)
        return pdu.message

    @_returns_deferred
    async def login(
        self,
        user_name: str,
        password_plain: str | None = None,
        *,
        password_md5: str | None = None,
        client_type: int = B.CLIENT_TYPE_WINDOWS,
        online_status: int = B.USER_STATUS_ONLINE,
        client_version: str = "teamtalk_py-client",
    ) -> Any:
        """Log in and return the `IMLoginRes` whatever its result code. Like real
        clients, send the lower-case hex MD5 of the plain password (or `password_md5`
        as given, to test what servers do with odd values)."""
        if (password_plain is None) == (password_md5 is None):
            raise ValueError("give exactly one of password_plain and password_md5")
        if password_md5 is None:
            assert password_plain is not None
            password_md5 = hashlib.md5(password_plain.encode("utf-8")).hexdigest()
        request = Login_pb2.IMLoginReq(
            user_name=user_name,
            password=password_md5,
            online_status=online_status,
            client_type=client_type,
            client_version=client_version,
        )
        answer = await self.get(B.CID_LOGIN_REQ_USERLOGIN, request)
        if answer.result_code == B.REFUSE_REASON_NONE and answer.HasField("user_info"):
            self.user_id = answer.user_info.user_id
        return answer

    @_returns_deferred
    async def send_message(self, to_id: int, msg_type: int, data: bytes) -> Any:
        """Send `CID_MSG_DATA` with the payload as given and return the `IMMsgDataAck`.
        `from_user_id`, `msg_id` and `create_time` are filled as clients do; the server
        overwrites them."""
        message = Message_pb2.IMMsgData(
            from_user_id=self.user_id or 0,
            to_session_id=to_id,
            msg_id=0,
            create_time=int(self.protocol.clock.seconds()),
            msg_type=msg_type,
            msg_data=data,
        )
        return await self.get(B.CID_MSG_DATA, message)

    def send_text(
        self, to_id: int, text: str, session_type: int = B.SESSION_TYPE_SINGLE
    ) -> Deferred[Any]:
        """Encrypt `text` as clients do and send it as a single or group text message."""
        msg_type = (
            B.MSG_TYPE_GROUP_TEXT
            if session_type == B.SESSION_TYPE_GROUP
            else B.MSG_TYPE_SINGLE_TEXT
        )
        return self.send_message(to_id, msg_type, encrypt_text(text, self.aes_key))

    def read_ack(
        self, session_id: int, msg_id: int, session_type: int = B.SESSION_TYPE_SINGLE
    ) -> int:
        """Mark a session read up to `msg_id` (no answer exists); returns the seq used."""
        ack = Message_pb2.IMMsgDataReadAck(
            user_id=self.user_id or 0,
            session_id=session_id,
            msg_id=msg_id,
            session_type=session_type,
        )
        return self.protocol.send(B.CID_MSG_READ_ACK, ack)

    def delivery_ack(self, delivered: Pdu) -> int:
        """Confirm a received `CID_MSG_DATA` with `CID_MSG_DATA_ACK`, as receivers do so
        the server drops it from the connection's pending list; returns the seq used."""
        data = delivered.message
        group = data.msg_type in (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO)
        ack = Message_pb2.IMMsgDataAck(
            user_id=self.user_id or 0,
            session_id=data.to_session_id if group else data.from_user_id,
            msg_id=data.msg_id,
            session_type=B.SESSION_TYPE_GROUP if group else B.SESSION_TYPE_SINGLE,
        )
        return self.protocol.send(B.CID_MSG_DATA_ACK, ack)

    @_returns_deferred
    async def logout(self) -> Any:
        """Send `CID_LOGIN_REQ_LOGINOUT` and return the `IMLogoutRsp` (the server then
        closes the connection)."""
        return await self.get(B.CID_LOGIN_REQ_LOGINOUT, Login_pb2.IMLogoutReq())
