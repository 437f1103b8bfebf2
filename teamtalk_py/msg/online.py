"""Who is logged in on this msg node, and on which connections.

``OnlineUsers`` is the domain side of delivery: "send this to every connection of user X"
is one call here, whatever the connections are. A connection is anything with
``send_raw(bytes)``, ``user_id``, ``client_type`` and ``is_mobile`` (the *mind* of
twisted.words' vocabulary), so this module never touches sockets.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Mind(Protocol):
    user_id: int
    client_type: int
    kicked: bool
    extension_features: frozenset[str] | None

    @property
    def is_mobile(self) -> bool: ...

    @property
    def peer_host(self) -> str: ...

    def send_raw(self, pdu: bytes) -> None: ...

    def send_now(self, pdu: bytes) -> None: ...


def same_category(a: int, b: int) -> bool:
    """PC and mobile are the two client categories (bit 0x10)."""
    return ((a ^ b) >> 4) == 0


class OnlineUser:
    """The logged-in connections of one account on this node, oldest first.

    ``OnlineUsers`` keeps one only for an account with more than one connection here, or
    whose one connection does not say all route told us (a mobile whose PC is online
    elsewhere): most accounts have one connection, held as itself. ``OnlineUsers.get``
    hands out one either way."""

    __slots__ = ("user_id", "connections", "pc_online_anywhere")

    def __init__(
        self, user_id: int, connections: list[Mind] | None = None, pc_online_anywhere: bool = False
    ) -> None:
        self.user_id = user_id
        self.connections: list[Mind] = connections if connections is not None else []
        #: Whether some PC client of this user is online on any node (route tells us).
        self.pc_online_anywhere = pc_online_anywhere

    def pc_connections(self) -> list[Mind]:
        return [c for c in self.connections if not c.is_mobile]

    def mobile_connections(self) -> list[Mind]:
        return [c for c in self.connections if c.is_mobile]

    def first_in_category(self, client_type: int, exclude: Mind | None = None) -> Mind | None:
        for conn in self.connections:
            if conn is not exclude and same_category(conn.client_type, client_type):
                return conn
        return None


class OnlineUsers:
    """All logged-in users of this node, by user id.

    Tens of thousands of mostly idle accounts with one connection each: such an account
    is held as its connection alone (an ``OnlineUser`` with its list is some 150 bytes
    more). What route says of its PC clients is then the connection's own category: a PC
    here is a PC online (route says so of every PC login, to every node). The account
    becomes an ``OnlineUser`` when a second connection comes or route says otherwise (a
    mobile whose PC is online elsewhere), and is held as its connection again when that
    no longer holds."""

    def __init__(
        self, send_now_to_each: Callable[[list[Mind], bytes, bool], int] | None = None
    ) -> None:
        #: How ``send_now_to_pc`` writes one batch to many connections (the msg
        #: listener's tight loop, ``MsgFactory.send_now_to_each``); by default each
        #: connection's ``send_now``.
        self._send_now_to_each = send_now_to_each or _each_send_now
        #: user id -> its one connection, or its ``OnlineUser``.
        self._users: dict[int, Mind | OnlineUser] = {}
        self.connection_count = 0
        #: Logged-in connections per client type (for metrics).
        self.by_client_type: Counter[int] = Counter()
        #: Every PC connection (presence fan-out walks this, never the users).
        self._pc: dict[Mind, None] = {}

    def add(self, conn: Mind) -> None:
        users = self._users
        user_id = conn.user_id
        entry = users.get(user_id)
        if entry is None:
            users[user_id] = conn
        elif isinstance(entry, OnlineUser):
            entry.connections.append(conn)
        else:
            users[user_id] = OnlineUser(user_id, [entry, conn], _pc_implied(entry))
        if not conn.is_mobile:
            self._pc[conn] = None
        self.connection_count += 1
        self.by_client_type[conn.client_type] += 1

    def remove(self, conn: Mind) -> bool:
        """Forget ``conn``; False if it was not here."""
        users = self._users
        user_id = conn.user_id
        entry = users.get(user_id)
        if entry is conn:
            del users[user_id]
        elif isinstance(entry, OnlineUser) and conn in entry.connections:
            entry.connections.remove(conn)
            self._collapse(entry)
        else:
            return False
        self._pc.pop(conn, None)
        self.connection_count -= 1
        self.by_client_type[conn.client_type] -= 1
        return True

    def _collapse(self, user: OnlineUser) -> None:
        """Back to the plainest form that holds what ``user`` knows."""
        connections = user.connections
        if not connections:
            del self._users[user.user_id]
        elif len(connections) == 1 and user.pc_online_anywhere == _pc_implied(connections[0]):
            self._users[user.user_id] = connections[0]

    def get(self, user_id: int) -> OnlineUser | None:
        """``user_id``'s connections here (read-only: ``set_pc_online_anywhere`` is the
        one change made through it); None when it has none."""
        entry = self._users.get(user_id)
        if entry is None or isinstance(entry, OnlineUser):
            return entry
        return OnlineUser(user_id, [entry], _pc_implied(entry))

    def set_pc_online_anywhere(self, user_id: int, online: bool) -> OnlineUser | None:
        """Route says whether a PC client of ``user_id`` is online on some node; the
        user record (None when ``user_id`` has no connection here, and nothing is kept)."""
        entry = self._users.get(user_id)
        if entry is None:
            return None
        if isinstance(entry, OnlineUser):
            entry.pc_online_anywhere = online
            self._collapse(entry)
            return entry
        user = OnlineUser(user_id, [entry], online)
        if online != _pc_implied(entry):
            self._users[user_id] = user
        return user

    def __contains__(self, user_id: int) -> bool:
        return user_id in self._users

    def _connections(self, user_id: int) -> list[Mind] | tuple[Mind, ...]:
        entry = self._users.get(user_id)
        if entry is None:
            return ()
        if isinstance(entry, OnlineUser):
            return entry.connections
        return (entry,)

    def connections_of(self, user_id: int) -> list[Mind]:
        return list(self._connections(user_id))

    def all_connections(self) -> Iterator[Mind]:
        for entry in list(self._users.values()):
            if isinstance(entry, OnlineUser):
                yield from list(entry.connections)
            else:
                yield entry

    def send_to_users(
        self, user_ids: Iterable[int], pdu: bytes, exclude: Mind | None = None
    ) -> int:
        """Write the same bytes to every connection of each user; returns how many."""
        sent = 0
        for user_id in user_ids:
            for conn in self._connections(user_id):
                if conn is not exclude:
                    conn.send_raw(pdu)
                    sent += 1
        return sent

    def send_to_feature(self, user_ids: Iterable[int], feature: str, pdu: bytes) -> int:
        """Write an extension notify to the connections of ``user_ids`` that opted in to
        ``feature`` (docs/EXTENSION.md); returns how many."""
        sent = 0
        for user_id in user_ids:
            for conn in self._connections(user_id):
                features = conn.extension_features
                if features is not None and feature in features:
                    conn.send_raw(pdu)
                    sent += 1
        return sent

    def send_to_all(self, pdu: bytes, *, pc_only: bool = False) -> int:
        """Broadcast the same bytes. Twisted's buffered writes coalesce every PDU a
        connection gets in one reactor turn into one send."""
        sent = 0
        for conn in self.all_connections():
            if pc_only and conn.is_mobile:
                continue
            conn.send_raw(pdu)
            sent += 1
        return sent

    def send_now_to_pc(self, data: bytes, shared: bool = False) -> int:
        """The same bytes to every PC connection, each handed to the kernel at once
        (``send_now``): a presence batch reaches thousands of idle PC connections with
        one ``send`` each and no other per-connection work. ``shared``: the sends may be
        shared with the listener's helper threads (``wire.FanoutHelpers``)."""
        return self._send_now_to_each(list(self._pc), data, shared)


def _pc_implied(conn: Mind) -> bool:
    """What route says of the PC clients of a user whose one connection here is
    ``conn``: online when it is a PC."""
    return not conn.is_mobile


def _each_send_now(conns: list[Mind], data: bytes, shared: bool = False) -> int:
    for conn in conns:
        conn.send_now(data)
    return len(conns)


class PresenceBatch:
    """Status notifies for every PC connection, sent once per reactor turn.

    In a login storm each login is announced to every PC connection; a turn that handles
    ten logins would write ten PDUs to each of them. The notifies of one turn are
    joined instead and the joined bytes go out once, at the end of the turn (a
    ``callLater(0)``), so each PC connection costs one ``send`` per turn whatever the
    number of logins, logouts and status changes in it. Order among notifies is kept;
    they are already behind the login answer of the connection they announce.

    Batches are also at least ``MIN_INTERVAL`` apart: a turn's notifies that come within
    it of the previous batch wait for the rest of it, so in a storm each batch carries the
    logins of several turns. A login storm's turns are short while few are online (a
    benchmark's 50 in flight, a handful of logins a turn, each turn a ``send`` to every PC
    connection and a wake-up of each client); with thousands online one batch takes
    longer than the interval anyway. A notify after a quiet spell is never held.

    A lone batch (none sent in the ``STORM_GAP`` seconds before it: somebody logged in
    or out, and nothing else is going on) may share its sends with the listener's helper
    threads, which halves it on two idle cores. A batch in a storm (one every turn, the
    9 a.m. login ramp) is sent by the reactor thread alone: then the other cores are
    busy with the logins themselves (password checks, store reads) and with whatever
    else runs on the machine, and a helper contending with them for the GIL and a core
    made a 10,000-PC login ramp 15-40 % slower without making its batches faster.
    """

    #: Seconds without a batch after which the next one counts as lone.
    STORM_GAP = 0.5
    #: The least seconds between two batches (the notify latency a storm adds at most).
    MIN_INTERVAL = 0.005

    def __init__(self, clock: IReactorTime, online: OnlineUsers) -> None:
        self.clock = clock
        self.online = online
        self._pending: list[bytes] = []
        self._flush_call: IDelayedCall | None = None
        self._last_batch = -math.inf
        #: Batches whose sends were offered to the helper threads (lone ones).
        self.lone_batches = 0
        #: Batches sent and notifies in them (a turn's batch counts once).
        self.batches = 0
        self.notifies = 0

    def add(self, pdu: bytes) -> None:
        self._pending.append(pdu)
        if self._flush_call is None:
            wait = self._last_batch + self.MIN_INTERVAL - self.clock.seconds()
            self._flush_call = self.clock.callLater(max(0.0, wait), self.flush)

    def flush(self) -> int:
        """Send what is pending now; returns to how many connections."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        self.batches += 1
        self.notifies += len(pending)
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        now = self.clock.seconds()
        lone = now - self._last_batch >= self.STORM_GAP
        self._last_batch = now
        if lone:
            self.lone_batches += 1
        return self.online.send_now_to_pc(data, lone)
