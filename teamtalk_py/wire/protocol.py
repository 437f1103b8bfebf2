"""Framing, dispatch, timers and backpressure for TeamTalk PDU connections.

Rules implemented here (wire.md §2-§4, §7):

* A PDU is a 16-byte header plus a body; ``length`` counts the whole PDU. A length under 16
  or over the listener's maximum closes that connection only, with one log line.
* Dispatch is by command id alone, through a ``CommandTable``. Unknown commands are
  logged and ignored; bodies that do not parse (or miss a required field) are logged and
  dropped, and the connection stays open, as the reference does.
* Idle connections and connections that never finish logging in are closed by one
  per-factory sweep a second, rather than a timer per connection.
* When a peer stops reading, Twisted pauses us as its producer: we stop reading from that
  peer and count what is still written to it; past a hard cap the connection is dropped,
  so a slow reader cannot grow server memory without bound.
* Fairness: one connection gets at most ``PDUS_PER_TURN`` PDUs handled per reactor turn
  (the rest wait in its buffer for the next turn, its socket unread meanwhile), and at
  most ``max_in_flight`` unfinished asynchronous requests (store reads and writes): past
  that its input is held until one finishes. A flood thus waits behind itself instead of
  in front of everybody else.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from twisted.internet import defer
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import BaseDefine_pb2
from teamtalk_py.protocol import registry
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader, pack_pdu

log = Logger(namespace="teamtalk.wire")

#: Largest PDU a client link accepts by default: real clients send at most voice messages
#: and 32 KiB file blocks (wire.md §3).
DEFAULT_MAX_PDU_SIZE = 4 * 1024 * 1024
#: How many bytes may pile up for a peer that stopped reading before we drop it.
DEFAULT_MAX_OUTBUF = 8 * 1024 * 1024
#: PDUs one connection may have handled per reactor turn before others get theirs.
PDUS_PER_TURN = 64
#: Unfinished asynchronous requests (store work) per connection before its input waits.
DEFAULT_MAX_IN_FLIGHT = 32


@dataclass(slots=True)
class Request:
    """One received PDU: its header, the raw bytes (for verbatim relays) and the body.

    ``message`` is the decoded body, of the class ``registry.message_class`` names for the
    command (None only for commands registered with ``decode=False``). Which class that
    is depends on the command id, so it is typed ``Any`` and each handler names it:
    ``req: Message_pb2.IMMsgData = request.message``.
    """

    header: PduHeader
    pdu: bytes
    message: Any

    @property
    def seq(self) -> int:
        return self.header.seq_num

    @property
    def command_id(self) -> int:
        return self.header.command_id


#: The connection class a table's handlers are written for (``MsgConnection``...).
Conn = TypeVar("Conn", bound="PduProtocol")
#: A handler: ``handler(conn, request)``, returning None, a Deferred or a coroutine.
Handler = Callable[[Conn, Request], Any]


@dataclass(frozen=True, slots=True)
class _Entry:
    handler: Callable[[Any, Request], Any]
    before_login: bool
    decode: bool


class CommandTable(Generic[Conn]):
    """One handler per command id; the single place to look for who handles what.

    ``CommandTable[MsgConnection]()`` takes handlers of ``MsgConnection`` (and of any
    base class, such as ``echo_heartbeat``).
    """

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}

    def register(
        self,
        command_id: int,
        handler: Handler[Conn],
        *,
        before_login: bool = False,
        decode: bool = True,
    ) -> None:
        if command_id in self._entries:
            raise ValueError(f"{registry.name_of(command_id)} already has a handler")
        self._entries[command_id] = _Entry(handler, before_login, decode)

    def get(self, command_id: int) -> _Entry | None:
        return self._entries.get(command_id)

    def __contains__(self, command_id: int) -> bool:
        return command_id in self._entries

    def command_ids(self) -> list[int]:
        return sorted(self._entries)


def echo_heartbeat(conn: PduProtocol, request: Request) -> None:
    """Send the heartbeat back unchanged: clients count it as a sign of life (wire.md §7)."""
    conn.send_raw(request.pdu)


class ConnectionTransport(ITCPTransport, IConsumer, IPushProducer):
    """What a PDU connection uses of its transport: a TCP connection (or TLS, or a test's
    ``StringTransport``) that consumes our output and whose reading can be paused."""


@implementer(IPushProducer)
class PduProtocol(Protocol):
    """A TeamTalk PDU connection: frames, dispatches, and keeps its own liveness clock.

    Subclasses set ``logged_in`` once the peer is authenticated; until then only commands
    registered with ``before_login=True`` are dispatched.
    """

    factory: PduFactory
    # Set by makeConnection before any other method runs.
    transport: ConnectionTransport
    logged_in: bool = False
    #: Seconds without a received byte before the sweep closes us (None: never).
    idle_timeout: float | None = 120.0
    #: Seconds from accept within which login must succeed (None: no deadline).
    login_deadline: float | None = None

    # Per-connection state starts as class attributes: an instance only stores what
    # changed, which keeps an idle connection small (tens of thousands of them are held).
    _pending_bytes: bytearray | None = None
    _paused = False
    _written_while_paused = 0
    #: Why input is held besides output backpressure ("turn", "busy", a task's reasons).
    _holds: frozenset[str] = frozenset()
    _reading = True
    _in_flight = 0
    _next_turn_call: IDelayedCall | None = None
    connected_at = 0.0
    last_received = 0.0
    closing = False

    @property
    def peer(self) -> str:
        """``host:port`` of the other end, for log lines."""
        transport = self.transport
        address = transport.getPeer() if transport is not None else None
        return f"{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}"

    # -- connection lifecycle -------------------------------------------------------

    def connectionMade(self) -> None:
        now = self.factory.clock.seconds()
        self.connected_at = self.last_received = now
        # Small PDUs (acks, deliveries) must not wait for Nagle's algorithm (wire.md §3:
        # the reference sets TCP_NODELAY too).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.transport.registerProducer(self, True)
        self.factory.connections.add(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.factory.connections.discard(self)
        self._pending_bytes = None
        if self._next_turn_call is not None:
            self._next_turn_call.cancel()
            self._next_turn_call = None

    def close(self, reason: str) -> None:
        """Close this connection only, with one log line naming peer and reason."""
        if self.closing:
            return
        self.closing = True
        log.info("closing {peer}: {reason}", peer=self.peer, reason=reason)
        self.transport.loseConnection()

    def went_idle(self) -> None:
        """Nothing received for ``idle_timeout`` seconds (the factory's sweep)."""
        self.close(f"idle for {self.idle_timeout:g} s")

    def abort(self, reason: str) -> None:
        """Drop the connection at once, discarding anything still queued for it."""
        self.closing = True
        log.warn("dropping {peer}: {reason}", peer=self.peer, reason=reason)
        self.transport.abortConnection()

    # -- framing -----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.last_received = self.factory.clock.seconds()
        self._frame(data)

    def _frame(self, data: bytes) -> None:
        pending = self._pending_bytes
        if pending is not None:
            # Only a PDU split across reads (or left for a later turn) pays for a buffer;
            # whole PDUs are cut straight out of the bytes the transport handed us.
            pending += data
            data = bytes(pending)
            self._pending_bytes = None
        offset = 0
        size = len(data)
        max_size = self.factory.max_pdu_size
        budget = PDUS_PER_TURN
        while size - offset >= HEADER_SIZE and not self.closing:
            if self._holds:
                break  # a handler asked to wait; the rest is handled on release
            if not budget:
                self.hold_input("turn")
                self._schedule_turn()
                break
            budget -= 1
            header = PduHeader.unpack_from(data, offset)
            length = header.length
            if length < HEADER_SIZE:
                self.close(f"bad PDU length {length}")
                return
            if length > max_size:
                self.close(f"PDU length {length} over the limit of {max_size}")
                return
            if size - offset < length:
                break
            pdu = data if length == size else data[offset : offset + length]
            offset += length
            self.pduReceived(header, pdu)
        if offset < size and not self.closing:
            self._pending_bytes = bytearray(data[offset:])

    def _schedule_turn(self) -> None:
        if self._next_turn_call is None:
            self._next_turn_call = self.factory.clock.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        """Handle what earlier turns left in the buffer, then read the socket again."""
        self._next_turn_call = None
        if self.closing:
            return
        self._holds = self._holds - {"turn"}
        if not self._holds and self._pending_bytes is not None:
            self._frame(b"")
        self._apply_reading()

    # -- flow control: why we read from the peer or not ------------------------------

    def hold_input(self, reason: str) -> None:
        """Stop reading from the peer (and handling what was read) until released."""
        if reason not in self._holds:
            self._holds = self._holds | {reason}
            self._apply_reading()

    def release_input(self, reason: str) -> None:
        if reason in self._holds:
            self._holds = self._holds - {reason}
            if not self._holds and self._pending_bytes is not None:
                # PDUs already read wait in the buffer: handle them on a fresh turn.
                self.hold_input("turn")
                self._schedule_turn()
            else:
                self._apply_reading()

    def _apply_reading(self) -> None:
        should_read = not self._paused and not self._holds
        if self.transport is None or should_read == self._reading:
            return
        self._reading = should_read
        if should_read:
            if not self.closing:
                self.transport.resumeProducing()
        else:
            self.transport.pauseProducing()

    # -- dispatch ----------------------------------------------------------------------

    def pduReceived(self, header: PduHeader, pdu: bytes) -> None:
        cid = header.command_id
        entry = self.factory.table.get(cid)
        if entry is None:
            log.info(
                "ignoring unknown command {command} from {peer}",
                command=registry.name_of(cid),
                peer=self.peer,
            )
            return
        if not (self.logged_in or entry.before_login):
            log.info(
                "ignoring {command} before login from {peer}",
                command=registry.name_of(cid),
                peer=self.peer,
            )
            return
        message = None
        if entry.decode:
            message = self.decode_body(cid, pdu)
            if message is None:
                return
        result = entry.handler(self, Request(header, pdu, message))
        if isinstance(result, defer.Deferred) or inspect.iscoroutine(result):
            d = defer.ensureDeferred(result)
            d.addErrback(self._handler_failed, cid)
            limit = self.factory.max_in_flight
            if limit is not None and not d.called:
                self._in_flight += 1
                if self._in_flight >= limit:
                    self.hold_input("busy")
                d.addBoth(self._request_finished)

    def _request_finished(self, result: object) -> None:
        self._in_flight -= 1
        limit = self.factory.max_in_flight
        if limit is None or self._in_flight < limit:
            self.release_input("busy")

    def decode_body(self, cid: int, pdu: bytes) -> Message | None:
        """Parse the body with proto2 rules; log and return None when it is unusable."""
        cls = registry.message_class(cid)
        message = cls()
        try:
            message.ParseFromString(pdu[HEADER_SIZE:])
        except DecodeError as e:
            log.info(
                "dropping malformed {command} from {peer}: {error}",
                command=registry.name_of(cid),
                peer=self.peer,
                error=str(e),
            )
            return None
        if not message.IsInitialized():
            log.info(
                "dropping {command} from {peer}: missing {fields}",
                command=registry.name_of(cid),
                peer=self.peer,
                # Missing from the protobuf stubs, present in every runtime.
                fields=",".join(message.FindInitializationErrors()),  # type: ignore[attr-defined]
            )
            return None
        return message

    def _handler_failed(self, failure: Failure, cid: int) -> None:
        log_failure(
            log,
            "handler for {command} from {peer} failed",
            failure,
            command=registry.name_of(cid),
            peer=self.peer,
        )

    # -- sending -----------------------------------------------------------------------

    def send_raw(self, pdu: bytes) -> None:
        """Write an encoded PDU, enforcing the cap on bytes queued for a slow reader."""
        if self.closing or self.transport is None:
            return
        if self._paused:
            self._written_while_paused += len(pdu)
            if self._written_while_paused > self.factory.max_outbuf:
                self.abort(f"peer is not reading; {self._written_while_paused} bytes queued")
                return
        self.transport.write(pdu)

    def send(self, command_id: int, message: Message, seq: int = 0) -> None:
        """Encode and send ``message`` as ``command_id`` with the correct service id."""
        self.send_raw(encode(command_id, message, seq))

    # -- IPushProducer: the transport tells us when the peer stops reading ------------

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            self._written_while_paused = 0
            # Stop reading the peer's requests: they are what produces our output.
            self._apply_reading()
            self.output_paused()

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._written_while_paused = 0
            self._apply_reading()
            self.output_resumed()

    def stopProducing(self) -> None:
        self._paused = False

    def output_paused(self) -> None:
        """The peer stopped reading what we write (for subclasses that care)."""

    def output_resumed(self) -> None:
        """The peer reads again."""


def encode(command_id: int, message: Message, seq: int = 0) -> bytes:
    """Serialise ``message`` into a complete server-built PDU for ``command_id``."""
    return pack_pdu(
        registry.service_of(command_id), command_id, message.SerializePartialToString(), seq
    )


class PduFactory(Factory[PduProtocol]):
    """Shared settings and the once-a-second liveness sweep for one listener or link set."""

    protocol = PduProtocol

    def __init__(
        self,
        clock: IReactorTime,
        table: CommandTable[Any],
        *,
        max_pdu_size: int = DEFAULT_MAX_PDU_SIZE,
        max_outbuf: int = DEFAULT_MAX_OUTBUF,
        max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.clock = clock
        self.table = table
        self.max_pdu_size = max_pdu_size
        self.max_outbuf = max_outbuf
        #: Unfinished asynchronous requests one connection may have (None: no limit).
        self.max_in_flight = max_in_flight
        self.connections: set[PduProtocol] = set()
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = clock

    def startFactory(self) -> None:
        if not self._sweep.running:
            self._sweep.start(1.0, now=False)

    def stopFactory(self) -> None:
        if self._sweep.running:
            self._sweep.stop()

    def sweep(self) -> None:
        """Close connections that went idle or missed their login deadline."""
        now = self.clock.seconds()
        for conn in list(self.connections):
            if conn.closing:
                continue
            if (
                conn.login_deadline is not None
                and not conn.logged_in
                and now - conn.connected_at >= conn.login_deadline
            ):
                conn.close(f"no login within {conn.login_deadline:g} s")
            elif conn.idle_timeout is not None and now - conn.last_received >= conn.idle_timeout:
                conn.went_idle()


HEARTBEAT = BaseDefine_pb2.CID_OTHER_HEARTBEAT
