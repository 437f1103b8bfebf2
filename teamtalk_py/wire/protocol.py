"""Framing, dispatch, timers and backpressure for TeamTalk PDU connections.

Rules implemented here (wire.md §2-§4, §7):

* A PDU is a 16-byte header plus a body; ``length`` counts the whole PDU. A length under 16
  or over the listener's maximum closes that connection only, with one log line.
* Dispatch is by command id alone, through a ``CommandTable``. Unknown commands are
  logged and ignored; bodies that do not parse (or miss a required field) are logged and
  dropped, and the connection stays open, as the reference does.
* Every string field of a decoded body is checked once, here: UTF-8, and no longer than
  the column it is stored in (``protocol/strings.py``). A body that fails never reaches
  its handler; the command's ``refuse`` (its error answer) runs instead, with a log line,
  or, for a command the protocol gives no answer, the body is dropped with a log line.
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
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
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
from twisted.internet.tcp import Server as TCPServerTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import BaseDefine_pb2
from teamtalk_py.protocol import registry
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader, pack_pdu
from teamtalk_py.protocol.strings import string_problem

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
    #: More bytes of the same read wait to be handled right after this PDU: an answer
    #: may wait for them in Twisted's buffer and leave in one write with theirs
    #: (``PduProtocol.send_parts(..., now=False)``).
    more: bool = False

    @property
    def seq(self) -> int:
        return self.header.seq_num

    @property
    def command_id(self) -> int:
        return self.header.command_id


#: What a table's handlers are written for: the connection the packet came on
#: (``MsgConnection``...), or the msg service for packets from route (``msg/from_route.py``).
Conn = TypeVar("Conn")
#: A handler: ``handler(conn, request)``, returning None, a Deferred or a coroutine.
Handler = Callable[[Conn, Request], Any]
#: A command's error answer for a request whose strings are unusable:
#: ``refuse(conn, request)`` (it must not use the bad strings).
Refusal = Callable[[Conn, Request], None]


@dataclass(frozen=True, slots=True)
class _Entry:
    handler: Callable[[Any, Request], Any]
    before_login: bool
    decode: bool
    refuse: Callable[[Any, Request], None] | None = None


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
        refuse: Refusal[Conn] | None = None,
    ) -> None:
        if command_id in self._entries:
            raise ValueError(f"{registry.name_of(command_id)} already has a handler")
        self._entries[command_id] = _Entry(handler, before_login, decode, refuse)

    def get(self, command_id: int) -> _Entry | None:
        return self._entries.get(command_id)

    def __contains__(self, command_id: int) -> bool:
        return command_id in self._entries

    def command_ids(self) -> list[int]:
        return sorted(self._entries)


def echo_heartbeat(conn: PduProtocol, request: Request) -> None:
    """Send the heartbeat back unchanged: clients count it as a sign of life (wire.md §7)."""
    conn.send_raw(request.pdu)


def dispatch(
    table: CommandTable[Any],
    subject: Any,
    header: PduHeader,
    pdu: bytes,
    logged_in: bool,
    peer: object,
    more: bool = False,
    message: Message | None = None,
) -> defer.Deferred[Any] | None:
    """The one way a received PDU reaches its handler, from a client connection or from
    the route service: look the command up, refuse it before login unless registered
    ``before_login``, decode the body with proto2 rules (a malformed one is logged and
    dropped), check its strings (an unusable one gets the command's error answer, or
    only a log line), call ``handler(subject, Request)``. An asynchronous handler's
    Deferred is returned (its failure already logged); None when the work is done or was
    refused. ``message``: the body already decoded, a message built in this process
    (the co-hosted route hub's notifies), which is neither decoded nor checked again."""
    cid = header.command_id
    entry = table.get(cid)
    if entry is None:
        log.info("ignoring unknown command {command} from {peer}",
                 command=registry.name_of(cid), peer=peer)  # fmt: skip
        return None
    if not (logged_in or entry.before_login):
        log.info("ignoring {command} before login from {peer}",
                 command=registry.name_of(cid), peer=peer)  # fmt: skip
        return None
    if not entry.decode:
        message = None
    elif message is None:
        message = decode_body(cid, pdu, peer)
        if message is None:
            return None
        problem = string_problem(cid, message)
        if problem is not None:
            log.info("refusing {command} from {peer}: {problem}",
                     command=registry.name_of(cid), peer=peer, problem=problem)  # fmt: skip
            if entry.refuse is not None:
                entry.refuse(subject, Request(header, pdu, message))
            return None
    result = entry.handler(subject, Request(header, pdu, message, more))
    if result is None:
        return None
    if isinstance(result, defer.Deferred) or inspect.iscoroutine(result):
        d: defer.Deferred[Any] = defer.ensureDeferred(result)
        d.addErrback(_handler_failed, cid, peer)
        return d
    return None


class PeerName:
    """A log line's peer, worked out only when a line is written: ``str()`` of it is
    ``conn.peer``. Every received PDU passes its peer down to dispatch and decoding for
    the rare line about it; building the ``host:port`` text each time (``getPeer``
    makes an address object) was a per-PDU cost of every connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: PduProtocol) -> None:
        self.conn = conn

    def __str__(self) -> str:
        return self.conn.peer

    def __format__(self, spec: str) -> str:
        return format(self.conn.peer, spec)


def decode_body(cid: int, pdu: bytes, peer: object) -> Message | None:
    """Parse the body with proto2 rules; log and return None when it is unusable."""
    cls = registry.message_class(cid)
    message = cls()
    try:
        # A view of the body, not a copy of it (a file block is 32 KiB); protobuf's
        # runtime takes any buffer, its stubs say bytes.
        message.ParseFromString(memoryview(pdu)[HEADER_SIZE:])  # type: ignore[arg-type]
    except DecodeError as e:
        log.info(
            "dropping malformed {command} from {peer}: {error}",
            command=registry.name_of(cid),
            peer=peer,
            error=str(e),
        )
        return None
    if not message.IsInitialized():
        log.info(
            "dropping {command} from {peer}: missing {fields}",
            command=registry.name_of(cid),
            peer=peer,
            # Missing from the protobuf stubs, present in every runtime.
            fields=",".join(message.FindInitializationErrors()),  # type: ignore[attr-defined]
        )
        return None
    return message


def _handler_failed(failure: Failure, cid: int, peer: object) -> None:
    log_failure(
        log,
        "handler for {command} from {peer} failed",
        failure,
        command=registry.name_of(cid),
        peer=peer,
    )


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
    def peer_host(self) -> str:
        """The other end's address (no port): what failed logins and file logins are
        bound to."""
        transport = self.transport
        address = transport.getPeer() if transport is not None else None
        return str(getattr(address, "host", ""))

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

    def login_succeeded(self) -> None:
        """The peer is authenticated: every command may reach its handler, and the
        login deadline is over, so its starting time is not kept (its own float on
        every idle connection otherwise)."""
        self.logged_in = True
        self.connected_at = 0.0

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
        self.last_received = self.factory.received_at()
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
            self.pduReceived(header, pdu, offset < size)
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

    def pduReceived(self, header: PduHeader, pdu: bytes, more: bool = False) -> None:
        """Dispatch one PDU; ``more``: bytes read with it are still to be handled."""
        d = dispatch(self.factory.table, self, header, pdu, self.logged_in, PeerName(self), more)
        if d is not None:
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
        return decode_body(cid, pdu, PeerName(self))

    # -- sending -----------------------------------------------------------------------

    def send_raw(self, pdu: bytes) -> None:
        """Write an encoded PDU, enforcing the cap on bytes queued for a slow reader."""
        self._write_buffered(pdu)

    def _write_buffered(self, pdu: bytes) -> None:
        if self.closing or self.transport is None:
            return
        if self._paused:
            self._written_while_paused += len(pdu)
            if self._written_while_paused > self.factory.max_outbuf:
                self.abort(f"peer is not reading; {self._written_while_paused} bytes queued")
                return
        self.transport.write(pdu)

    @property
    def output_backlog(self) -> int:
        """Bytes written to this peer since it stopped keeping up (0 while it keeps up):
        what it costs us beyond the transport's own buffer. Chat rooms drop a member
        whose backlog passes their bound (``rooms/membership.py``)."""
        return self._written_while_paused if self._paused else 0

    def send(self, command_id: int, message: Message, seq: int = 0) -> None:
        """Encode and send ``message`` as ``command_id`` with the correct service id."""
        self.send_raw(encode(command_id, message, seq))

    def send_now(self, data: bytes) -> None:
        """Hand ``data`` to the kernel at once when nothing is queued before it.

        For fan-out (one presence batch to thousands of connections): Twisted's
        ``write`` queues the bytes, registers the socket for writability (one
        ``epoll_ctl``), sends on the next poll and unregisters (another), with a dozen
        Python calls on the way; an idle connection's socket has room, so one ``send``
        does it. Anything already queued, a partial send, TLS or any transport but a
        plain TCP one (Twisted's or ``SlimServer``) takes ``send_raw``, so bytes are never
        reordered and the slow-reader cap still applies.
        """
        sock = self._direct_socket()
        if sock is None:
            self.send_raw(data)
            return
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # full or failing: Twisted's write path finds out which
        if sent < len(data):
            self._send_rest(data, sent)

    def _send_rest(self, data: bytes, sent: int) -> None:
        """What a direct ``send`` left of ``data``: all of it through ``send_raw`` (where
        subclasses apply their rules to whole PDUs), the tail of a partial send straight
        to Twisted's buffer (a tail is no PDU a rule could read)."""
        if sent:
            self._write_buffered(data[sent:])
        else:
            self.send_raw(data)

    def send_parts(self, parts: Sequence[bytes | memoryview], now: bool = True) -> None:
        """Write one PDU given in pieces (a prebuilt header and a view of a file block,
        ``file/blocks.py``) with one ``sendmsg`` when nothing is queued before it, as
        ``send_now`` does: the pieces are never joined unless they must wait in
        Twisted's buffer (then they are copied, so a caller may reuse its buffer as
        soon as this returns).

        ``now=False`` (the request answered came with more in the same read): the PDU
        waits in Twisted's buffer, and the answers of one read leave in one write, as
        they did before; one ``sendmsg`` per answer cost a pipelined relay (eight pulls
        in flight) about a third more server CPU per MB.
        """
        sock = self._direct_socket() if now else None
        sent = 0
        if sock is not None:
            try:
                sent = sock.sendmsg(parts)
            except OSError:
                sent = 0  # full or failing: Twisted's write path finds out which
            if sent == sum(map(len, parts)):
                return
        data = b"".join(parts)
        self._write_buffered(data[sent:] if sent else data)

    def _direct_socket(self) -> socket.socket | None:
        """The socket when bytes may go to it at once: a plain TCP server connection
        with nothing queued in Twisted's buffer (so bytes are never reordered) and not
        paused (so the slow-reader cap applies); None otherwise."""
        t: Any = self.transport
        if (
            not isinstance(t, TCPServerTransport)
            or self.closing
            or self._paused
            or t.TLS
            or t.disconnecting
            or t._tempDataLen
            or t.dataBuffer
            or not t.connected
        ):
            return None
        sock: socket.socket = t.socket
        return sock

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


def send_now_to_each(
    conns: Iterable[PduProtocol], data: bytes, helpers: FanoutHelpers | None = None
) -> int:
    """``conn.send_now(data)`` for each of ``conns``, with the per-connection Python work
    of a fan-out cut to the checks of ``_direct_socket`` and one ``send`` (a presence
    batch reaches thousands of idle connections; profiled, nearly all its time is the
    kernel's ``send``). Returns how many connections. The caller answers for ``data``
    being a packet every one of them may get: ``send_raw``'s rules (a subclass's) are
    only applied where the bytes cannot go to the socket at once.

    With ``helpers``, a large batch is shared with their threads (``FanoutHelpers``);
    what a socket did not take at once, and the connections whose bytes must wait
    behind others, are then seen to by the calling (reactor) thread afterwards."""
    if helpers is not None and helpers.threads:
        if not isinstance(conns, Sequence):
            conns = list(conns)
        for index, sent in helpers.share(len(conns), partial(_send_now_slices, conns, data)):
            conn = conns[index]
            if sent < 0:
                conn.send_raw(data)
            else:
                conn._send_rest(data, sent)
        return len(conns)
    size = len(data)
    count = 0
    for conn in conns:
        count += 1
        sent = _send_at_once(conn, data)
        if sent < 0:
            conn.send_raw(data)
        elif sent != size:
            conn._send_rest(data, sent)
    return count


def _send_at_once(conn: PduProtocol, data: bytes) -> int:
    """Bytes of ``data`` the socket took at once, or -1 when nothing may be written
    to it directly (not plain TCP, paused, closing, or bytes already waiting in
    Twisted's buffer, which must go first). Touches only the socket: any thread."""
    t: Any = conn.transport
    if (
        isinstance(t, TCPServerTransport)
        and t.connected
        and not (
            conn.closing
            or conn._paused
            or t.TLS
            or t.disconnecting
            or t._tempDataLen
            or t.dataBuffer
        )
    ):
        try:
            return int(t.socket.send(data))
        except OSError:
            return 0  # full or failing: Twisted's write path finds out which
    return -1


def _send_now_slices(
    conns: Sequence[PduProtocol], data: bytes, starts: Iterator[int], step: int
) -> list[tuple[int, int]]:
    """``send_now_to_each``'s loop over ``conns[start : start + step]`` for each start
    taken from ``starts``, in any thread, touching nothing but the sockets: returns
    (index, bytes sent) of each connection whose socket did not take all of ``data``,
    bytes sent -1 for one whose bytes must go through ``send_raw``."""
    size = len(data)
    left: list[tuple[int, int]] = []
    for start in starts:
        for index in range(start, min(start + step, len(conns))):
            sent = _send_at_once(conns[index], data)
            if sent != size:
                left.append((index, sent))
    return left


_T = TypeVar("_T")


class FanoutHelpers:
    """Threads that share the sends of one large fan-out with the reactor thread.

    Profiled at 5,000 idle PC connections, a presence batch costs the server about 8-10
    µs of CPU per connection, nearly all of it the kernel's ``send`` (on loopback the
    data segment, the receiver's immediate ACK of an idle connection and the reader's
    wake-up are all handled within it); the loop itself is some 0.5 µs. ``socket.send``
    releases the GIL, so the sends of one batch can run on several cores at once.

    ``share`` runs the work on the reactor thread and the helpers at once, each taking
    ``min_slice`` items at a time from one shared iterator (``next`` on it is atomic
    under the GIL), so a thread the scheduler takes off its core (for the clients it
    wakes, or another process) holds up at most the slice it is in; it returns when all
    are done. Nothing else runs on the reactor meanwhile, so the work may read the
    connections' state and write to their sockets, but must leave anything else (a
    Twisted ``write``, which may touch the reactor) to the reactor thread afterwards.

    ``threads``: helper threads (0: the reactor thread works alone); ``min_slice``: the
    items a thread takes at a time (a batch shorter than two slices is not shared: the
    hand-over would cost more than the sends).
    """

    def __init__(self, threads: int, min_slice: int = 128) -> None:
        self.threads = max(0, threads)
        self.min_slice = max(1, min_slice)
        self._pool: ThreadPoolExecutor | None = None
        #: Batches shared with helpers (for tests and metrics).
        self.shared = 0

    def share(self, total: int, work: Callable[[Iterator[int], int], list[_T]]) -> list[_T]:
        """``work(starts, step)`` on this thread and the helpers', over the starts of
        ``range(0, total, step)``; every call's results, joined."""
        helpers = min(self.threads, total // self.min_slice - 1)
        step = self.min_slice
        starts = iter(range(0, total, step))
        if helpers < 1:
            return work(starts, step)
        pool = self._pool or self.start()
        futures = [pool.submit(work, starts, step) for _ in range(helpers)]
        self.shared += 1
        results = work(starts, step)
        for future in futures:
            results.extend(future.result())
        return results

    def start(self) -> ThreadPoolExecutor:
        """Start the threads now (at service start: their stacks and malloc arenas are
        then part of the process's size before any connection, not of the first big
        fan-out's)."""
        pool = self._pool
        if pool is None:
            pool = self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fanout")
            warm = [pool.submit(_no_work, iter(()), 1) for _ in range(self.threads)]
            for future in warm:
                future.result()
        return pool

    def stop(self) -> None:
        """Let the threads end (a later fan-out starts them again)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def _no_work(starts: Iterator[int], step: int) -> list[Any]:
    return list(starts)


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

    #: ``received_at``'s eighth of a second and the float it gives for it.
    _received_tick = -1
    _received_at = 0.0

    def received_at(self) -> float:
        """Now, down to the eighth of a second, as one float shared by every connection
        that receives in that eighth: what ``last_received`` keeps, instead of a float
        of its own (24 bytes) on every idle connection. The sweep looks once a second,
        so an idle connection closes at most an eighth of a second early."""
        tick = int(self.clock.seconds() * 8)
        if tick != self._received_tick:
            self._received_tick = tick
            self._received_at = tick / 8
        return self._received_at

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
