"""One TeamTalk client connection: framing, requests matched to answers, notifications,
heartbeats (`TeamTalkClientProtocol`, `connect`).

The framing here is written independently of the server's (`teamtalk_py.wire`) on purpose:
if both sides shared one codec, a bug in it would be invisible to every test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_client.deferreds import returns_deferred
from teamtalk_client.pdu import (
    DEFAULT_MAX_PDU_SIZE,
    HEADER_SIZE,
    Pdu,
    answer_cid,
    command_name,
    encode_pdu,
    unpack_header,
)
from teamtalk_py.pb.IM import BaseDefine_pb2 as B

__all__ = ["Body", "FramingError", "TeamTalkClientProtocol", "connect"]

log = Logger()


class FramingError(Exception):
    """The peer sent a byte stream that is not a sequence of valid PDUs."""


Body = Message | bytes | bytearray | memoryview | None


def _serialize(message: Body) -> bytes:
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

    #: Set by ``makeConnection`` before any other method runs.
    transport: ITCPTransport

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
            self.closed.callback(reason.value or ConnectionLost())

    # -- sending ----------------------------------------------------------------------

    def next_seq(self) -> int:
        """The next sequence number: 1..65535, wrapping, never 0 (seq 0 marks
        server-originated packets) and never one still awaiting its answer."""
        for _ in range(0xFFFF):
            self._last_seq = self._last_seq % 0xFFFF + 1
            if not any(seq == self._last_seq for seq, _ in self._pending):
                return self._last_seq
        raise RuntimeError("all 65535 sequence numbers are awaiting answers")

    def send(self, command_id: int, message: Body = None, seq: int | None = None) -> int:
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
        message: Body = None,
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


@returns_deferred
async def connect(
    reactor: Any,
    host: str,
    port: int,
    *,
    connect_timeout: float = 10.0,
    bind_address: str | None = None,
    **options: Any,
) -> TeamTalkClientProtocol:
    """Open a TCP connection (from `bind_address` when given, e.g. another loopback
    address); `options` go to `TeamTalkClientProtocol` (for example
    `heartbeat_interval`)."""
    bind = (bind_address, 0) if bind_address is not None else None
    endpoint = HostnameEndpoint(reactor, host, port, timeout=connect_timeout, bindAddress=bind)
    protocol = TeamTalkClientProtocol(reactor, **options)
    return await connectProtocol(endpoint, protocol)
