"""A lean client connection for load generation.

``teamtalk_client.TeamTalkClientProtocol`` builds a ``Pdu`` object, a Deferred and a
timeout timer per request: right for tests, too slow for a load generator that must not be
what it measures. ``BenchConnection`` keeps the same wire format (and uses that module's
header codec, never the server's) but dispatches raw ``(seq, body)`` to plain callbacks:

- ``request(cid, body, callback)``: the answer (same seq, answer command) goes to
  ``callback(cid, body)``;
- ``on(cid, callback)``: every other PDU of that command goes to ``callback(seq, body)``;
- ``ask(cid, body, timeout)``: the Deferred form, for set-up steps (login, group create).

``enable_kernel_timestamps()`` switches the connection to ``recvmsg`` with
``SO_TIMESTAMPNS``, so arrival times are the kernel's receive time rather than the moment a
busy client process got round to reading the socket.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.tcp import Client as TCPClient
from twisted.python.failure import Failure

from teamtalk_client import ANSWER_CID, HEADER_SIZE, encode_pdu, unpack_header
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2

MAX_PDU = 64 * 1024 * 1024
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_HEARTBEAT = B.CID_OTHER_HEARTBEAT

PC = B.CLIENT_TYPE_WINDOWS
MOBILE = B.CLIENT_TYPE_ANDROID
CLIENT_TYPES = {
    "windows": B.CLIENT_TYPE_WINDOWS,
    "mac": B.CLIENT_TYPE_MAC,
    "ios": B.CLIENT_TYPE_IOS,
    "android": B.CLIENT_TYPE_ANDROID,
}


class BenchError(Exception):
    """A set-up step failed (refused login, closed connection, timeout)."""


class BenchConnection(Protocol):
    """One load-generating connection: raw ``(seq, body)`` to plain callbacks."""

    #: Set by ``makeConnection`` before any other method runs.
    transport: ITCPTransport

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._buffer = bytearray()
        self._seq = 0
        self._replies: dict[tuple[int, int], Callable[[int, bytes], Any]] = {}
        self._handlers: dict[int, Callable[[int, bytes], Any]] = {}
        self.open = False
        self.user_id = 0
        self.unhandled = 0
        self.heartbeats_echoed = 0
        #: Fires with the reason when the connection is gone.
        self.closed: defer.Deferred = defer.Deferred()
        #: Wall-clock ns (time.time_ns) of the data being handled, kernel time when
        #: kernel timestamps are on; see ``enable_kernel_timestamps``.
        self.arrival_ns = 0
        self._on_lost: Callable[[BenchConnection], Any] | None = None
        #: Fired with this connection once it is made (``connect``).
        self._made: defer.Deferred[BenchConnection] | None = None

    # -- Twisted -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.open = True
        self.transport.setTcpNoDelay(True)
        made, self._made = self._made, None
        if made is not None:
            made.callback(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.open = False
        replies, self._replies = self._replies, {}
        for callback in replies.values():
            try:
                callback(0, b"")  # cid 0: the connection went away
            except Exception:  # noqa: BLE001 - a broken callback must not stop the others
                pass
        if self._on_lost is not None:
            self._on_lost(self)
        if not self.closed.called:
            self.closed.callback(reason.value if reason is not None else ConnectionDone())

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer:
            # The tail of a PDU split across reads: the buffer gets the new bytes, and
            # every body is copied out of it once (a view, not a bytearray slice).
            buffer += data
            self._handle(buffer, len(buffer))
        else:
            # Whole PDUs (a file block arrives in one read): bodies are cut straight out
            # of what the transport handed us, with one copy each and no buffer.
            offset = self._handle(data, len(data))
            if offset < len(data) and self.open:
                buffer += data[offset:] if offset else data

    def _handle(self, data: bytes | bytearray, size: int) -> int:
        """Dispatch the whole PDUs at the start of ``data``; the offset after them (for
        ``data`` the receive buffer, what they took is removed from it)."""
        offset = 0
        replies = self._replies
        handlers = self._handlers
        view = memoryview(data)
        try:
            while size - offset >= HEADER_SIZE:
                length, _, _, _, cid, seq, _ = unpack_header(data, offset)
                if length < HEADER_SIZE or length > MAX_PDU:
                    self.transport.abortConnection()
                    return size
                if size - offset < length:
                    break
                start = offset + HEADER_SIZE
                offset += length
                # The body is copied only for a callback: a login's connection gets every
                # presence notify of the storm and reads none of them.
                if seq:
                    callback = replies.pop((seq, cid), None)
                    if callback is not None:
                        callback(cid, bytes(view[start:offset]))
                        continue
                handler = handlers.get(cid)
                if handler is not None:
                    handler(seq, bytes(view[start:offset]))
                elif cid == _HEARTBEAT:
                    self.heartbeats_echoed += 1
                else:
                    self.unhandled += 1
        finally:
            view.release()
        if offset and data is self._buffer:
            del self._buffer[:offset]
        return offset

    # -- sending -------------------------------------------------------------------------

    def next_seq(self) -> int:
        seq = self._seq
        while True:
            seq = seq % 0xFFFF + 1
            if not self._replies or not any(k[0] == seq for k in self._replies):
                break
        self._seq = seq
        return seq

    def fast_seq(self, answer_cid: int) -> int:
        """The next seq not awaiting ``answer_cid`` (cheap: one dict probe per step)."""
        seq = self._seq
        while True:
            seq = seq % 0xFFFF + 1
            if (seq, answer_cid) not in self._replies:
                self._seq = seq
                return seq

    def send(self, cid: int, body: bytes = b"", seq: int = 0) -> None:
        if self.open:
            self.transport.write(encode_pdu(cid, body, seq_num=seq))

    def send_now(self, parts: list[bytes]) -> None:
        """Send one PDU given in pieces (``encode_pdu``'s header, then the body, which
        may itself be pieces), handed to the kernel at once (``request_now``'s rule):
        with one block in flight, a write that waits for the next poll costs the
        round trip a reactor turn and two ``epoll_ctl`` calls."""
        if self.open:
            self._write_now(parts)

    def request(
        self,
        cid: int,
        body: bytes,
        callback: Callable[[int, bytes], Any],
        answer_cid: int | None = None,
    ) -> int:
        """Send and route the answer to ``callback(cid, body)``; returns the seq."""
        answer = ANSWER_CID[cid] if answer_cid is None else answer_cid
        seq = self.fast_seq(answer)
        self._replies[(seq, answer)] = callback
        self.transport.write(encode_pdu(cid, body, seq_num=seq))
        return seq

    def request_now(self, cid: int, body: bytes, callback: Callable[[int, bytes], Any]) -> int:
        """``request``, with the bytes handed to the kernel at once when Twisted has nothing
        queued for this connection (the server's ``send_now``): a fresh connection's one
        request costs one ``send``, not a writer registration, a poll round and an
        unregistration. For one request per connection or one in flight (a file pulled
        block by block); pipelined scenarios keep ``request``, whose writes of one turn go
        out in one ``send``. On a connection already gone the callback gets cid 0 at
        once."""
        if not self.open:
            callback(0, b"")
            return 0
        answer = ANSWER_CID[cid]
        seq = self.fast_seq(answer)
        self._replies[(seq, answer)] = callback
        self._write_now([encode_pdu(cid, body, seq_num=seq)])
        return seq

    def _write_now(self, parts: list[bytes]) -> None:
        """``parts`` (one PDU) to the socket with one ``sendmsg`` when Twisted has
        nothing queued for this connection (so bytes are never reordered); the rest, or
        all of it, through Twisted's buffer."""
        # Twisted's TCP transport internals (its socket and queue), as in send_now.
        t: Any = self.transport
        if (
            type(t) is not TCPClient
            or t.disconnecting
            or t._tempDataLen
            or t.dataBuffer
            or not t.connected
        ):
            t.write(b"".join(parts))
            return
        try:
            sent = t.socket.sendmsg(parts)
        except OSError:
            sent = 0  # full or failing: Twisted's write path finds out which
        data = parts[0] if len(parts) == 1 else None
        total = len(data) if data is not None else sum(map(len, parts))
        if sent < total:
            if data is None:
                data = b"".join(parts)
            t.write(data[sent:] if sent else data)

    def forget(self, seq: int, answer_cid: int) -> None:
        self._replies.pop((seq, answer_cid), None)

    def ask(
        self, cid: int, body: bytes, timeout: float = 10.0, answer_cid: int | None = None
    ) -> defer.Deferred:
        """Deferred form of ``request``: fires with the answer body; BenchError on timeout or
        close."""
        answer = ANSWER_CID[cid] if answer_cid is None else answer_cid
        d: defer.Deferred = defer.Deferred()
        if not self.open:
            d.errback(BenchError("connection closed"))
            return d
        timer = None

        def done(got_cid: int, body: bytes) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            if d.called:
                return
            if got_cid == 0:
                d.errback(BenchError("connection closed while waiting for an answer"))
            else:
                d.callback(body)

        seq = self.request(cid, body, done, answer)

        def expire() -> None:
            self.forget(seq, answer)
            if not d.called:
                d.errback(BenchError(f"no answer to 0x{cid:04x} within {timeout:g} s"))

        timer = self.clock.callLater(timeout, expire)
        return d

    def on(self, cid: int, handler: Callable[[int, bytes], Any] | None) -> None:
        if handler is None:
            self._handlers.pop(cid, None)
        else:
            self._handlers[cid] = handler

    def on_lost(self, callback: Callable[[BenchConnection], Any] | None) -> None:
        self._on_lost = callback

    def heartbeat(self) -> None:
        if self.open:
            self.transport.write(encode_pdu(_HEARTBEAT, b"", seq_num=self.next_seq()))

    def close(self) -> None:
        if self.open and self.transport is not None:
            self.transport.loseConnection()

    # -- kernel receive timestamps ---------------------------------------------------------

    def enable_kernel_timestamps(self) -> bool:
        """Read with ``recvmsg`` and set ``arrival_ns`` from ``SO_TIMESTAMPNS``."""
        # Twisted's TCP transport internals (its socket, buffer size and read hook), which
        # no interface describes.
        transport: Any = self.transport
        sock = getattr(transport, "socket", None)
        if sock is None or not hasattr(sock, "recvmsg"):
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            return False
        ancillary = socket.CMSG_SPACE(_TIMESPEC.size)
        buffer_size = transport.bufferSize

        def do_read() -> Any:
            try:
                data, ancdata, _, _ = sock.recvmsg(buffer_size, ancillary)
            except BlockingIOError:
                return None
            except OSError:
                from twisted.internet import main

                return main.CONNECTION_LOST
            stamp = 0
            for level, kind, raw in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack(raw[: _TIMESPEC.size])
                    stamp = sec * 1_000_000_000 + nsec
            self.arrival_ns = stamp or time.time_ns()
            return transport._dataReceived(data)

        transport.doRead = do_read
        return True


class _OneConnection(ClientFactory):
    """The factory of one ``BenchConnection``: ``made`` fires with it once connected.

    ``connectTCP`` with this instead of an endpoint: the endpoint wraps the protocol (one
    more call per read) and its factory logs "Starting factory" and "Stopping factory"
    per connection, which in the login scenario (a fresh connection per login) was a
    good part of the client's CPU, on the cores it shares with the server.
    """

    noisy = False

    def __init__(self, protocol: BenchConnection) -> None:
        self.protocol_instance = protocol
        self.made: defer.Deferred[BenchConnection] = defer.Deferred()
        protocol._made = self.made

    def buildProtocol(self, addr: Any) -> BenchConnection:
        return self.protocol_instance

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.protocol_instance._made = None
        if not self.made.called:
            self.made.errback(reason)


def connect(
    reactor: Any, host: str, port: int, *, timeout: float = 10.0, bind: str | None = None
) -> defer.Deferred[BenchConnection]:
    """Open a ``BenchConnection``; ``bind`` picks a source address (for > 28k sockets)."""
    factory = _OneConnection(BenchConnection(reactor))
    reactor.connectTCP(host, port, factory, timeout, (bind, 0) if bind else None)
    return factory.made


def login_body(name: str, password: str, client_type: B.ClientType.ValueType = PC) -> bytes:
    return Login_pb2.IMLoginReq(
        user_name=name,
        password=hashlib.md5(password.encode("utf-8")).hexdigest(),
        online_status=B.USER_STATUS_ONLINE,
        client_type=client_type,
        client_version="teamtalk_py-bench",
    ).SerializeToString()


async def login(
    conn: BenchConnection,
    name: str,
    password: str,
    client_type: B.ClientType.ValueType = PC,
    timeout: float = 30.0,
) -> int:
    """Log in and return the user id; BenchError when refused."""
    body = await conn.ask(
        B.CID_LOGIN_REQ_USERLOGIN, login_body(name, password, client_type), timeout
    )
    answer = Login_pb2.IMLoginRes.FromString(body)
    if answer.result_code != B.REFUSE_REASON_NONE or not answer.HasField("user_info"):
        raise BenchError(f"login of {name} refused: {answer.result_code} {answer.result_string}")
    conn.user_id = answer.user_info.user_id
    return conn.user_id


async def open_logged_in(
    reactor: Any,
    host: str,
    port: int,
    name: str,
    password: str,
    client_type: B.ClientType.ValueType = PC,
    *,
    bind: str | None = None,
    timeout: float = 30.0,
) -> BenchConnection:
    conn = await connect(reactor, host, port, timeout=timeout, bind=bind)
    try:
        await login(conn, name, password, client_type, timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def fire_once(d: defer.Deferred[Any], result: Any = None) -> None:
    """Fire ``d`` with ``result`` unless it has fired already (a timer and several
    notifications may race to end one wait)."""
    if not d.called:
        d.callback(result)


async def bounded(items: list, limit: int, fn: Callable[[Any], Any]) -> list:
    """Run ``await fn(item)`` for every item, at most ``limit`` at a time; results in order
    (an exception is returned in place of its result)."""
    results: list[Any] = [None] * len(items)
    index = 0

    async def lane() -> None:
        nonlocal index
        while index < len(items):
            mine = index
            index += 1
            try:
                results[mine] = await fn(items[mine])
            except Exception as e:  # noqa: BLE001 - reported by the caller
                results[mine] = e

    await defer.gatherResults(
        [defer.ensureDeferred(lane()) for _ in range(max(1, min(limit, len(items))))]
    )
    return results
