"""A smaller TCP server transport, for listeners that hold many idle connections.

Twisted's ``tcp.Server`` keeps its state in the instance dict: a dozen and a half
entries, among them two strings made only for log lines and ``repr`` (``logstr``,
``repstr``), a bound ``fileno`` and a fresh empty write list after every write: about
600 bytes an idle connection holds for nothing. ``SlimServer`` is a ``tcp.Server`` whose
state lives in ``__slots__`` and which builds those strings when asked; it overrides no
behaviour, so TLS (``startTLS`` or a TLS listener), producers and backpressure are
Twisted's own. Anything else set on it later (TLS, an abort) still goes to its dict.

``slim_transports(port)`` makes a listening ``tcp.Port`` wrap the connections it accepts
from then on in ``SlimServer`` (``Port.transport`` is Twisted's hook for that).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import address, tcp
from twisted.internet.interfaces import IListeningPort


def _no_fileno() -> int:
    return -1


class _SocketFileno:
    """``transport.fileno``: the socket's own ``fileno`` while there is a socket, -1
    after ``connectionLost`` dropped it (what ``del self.fileno`` gives a tcp.Server)."""

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.socket.fileno
        except AttributeError:
            return _no_fileno

    def __set__(self, obj: Any, value: Callable[[], int]) -> None:
        pass  # always the socket's

    def __delete__(self, obj: Any) -> None:
        pass


class SlimServer(tcp.Server):
    """``tcp.Server`` with its per-connection state in slots (module docstring)."""

    __slots__ = (
        "reactor",
        "socket",
        "protocol",
        "server",
        "_peer_host",
        "_peer_port",
        "sessionno",
        "connected",
        "disconnecting",
        "producer",
        "streamingProducer",
        "dataBuffer",
        "offset",
        "_write_list",
        "_tempDataLen",
    )

    fileno = _SocketFileno()

    def __init__(
        self,
        sock: Any,
        protocol: Any,
        client: tuple[object, ...],
        server: Any,
        sessionno: int,
        reactor: Any,
    ) -> None:
        # tcp.Server.__init__ and the __init__s it calls, with the same state.
        self.reactor = reactor
        self._write_list: list[bytes] | None = None
        self._tempDataLen = 0
        self.connected = 0
        self.disconnecting = 0
        self.producer = None
        self.streamingProducer = False
        self.dataBuffer = b""
        self.offset = 0
        self.socket = sock
        sock.setblocking(False)
        self.protocol = protocol
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.startReading()
        self.connected = 1

    @property
    def _tempDataBuffer(self) -> list[bytes]:
        """Twisted's list of writes not yet joined, made on the first write after the
        last ``doWrite`` rather than kept empty for every idle connection."""
        pending = self._write_list
        if pending is None:
            pending = self._write_list = []
        return pending

    @_tempDataBuffer.setter
    def _tempDataBuffer(self, value: list[bytes]) -> None:
        self._write_list = value or None

    @property
    def client(self) -> tuple[Any, ...]:
        """``tcp.Server.client``, the peer's address as ``accept`` gave it, put together
        when asked (``getPeer``: a login's address, log lines)."""
        rest = self._peer_port
        return (self._peer_host, *rest) if type(rest) is tuple else (self._peer_host, rest)

    @client.setter
    def client(self, client: tuple[Any, ...]) -> None:
        # The host is one string per address rather than per connection (an office
        # behind one NAT address, a load balancer): some 60 bytes each. An IPv4 port
        # is kept without a tuple around it (56 bytes); IPv6's flow info and scope id
        # stay with their port.
        host = client[0]
        self._peer_host = sys.intern(host) if type(host) is str else host
        self._peer_port = client[1] if len(client) == 2 else tuple(client[1:])

    @property
    def hostname(self) -> Any:  # type: ignore[override]
        return self._peer_host

    @property
    def logstr(self) -> str:  # type: ignore[override]
        prefix = self._getLogPrefix(self.protocol) if hasattr(self, "protocol") else "-"
        return f"{prefix},{self.sessionno},{self._peer_host}"

    @property
    def repstr(self) -> str:  # type: ignore[override]
        protocol = getattr(self, "protocol", None)
        port = self.server._realPortNumber if self.server is not None else None
        return f"<{type(protocol).__name__} #{self.sessionno} on {port}>"


def slim_transports(port: IListeningPort) -> IListeningPort:
    """Have ``port`` (a ``tcp.Port``; anything else is left alone) wrap the
    connections it accepts in ``SlimServer``."""
    if isinstance(port, tcp.Port):
        port.transport = SlimServer
    return port
