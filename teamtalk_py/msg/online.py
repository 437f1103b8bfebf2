"""Who is logged in on this msg node, and on which connections.

``OnlineUsers`` is the domain side of delivery: "send this to every connection of user X"
is one call here, whatever the connections are. A connection is anything with
``send_raw(bytes)``, ``user_id``, ``client_type`` and ``is_mobile`` (the *mind* of
twisted.words' vocabulary), so this module never touches sockets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Protocol


class Mind(Protocol):
    user_id: int
    client_type: int
    kicked: bool

    @property
    def is_mobile(self) -> bool: ...

    def send_raw(self, pdu: bytes) -> None: ...


def same_category(a: int, b: int) -> bool:
    """PC and mobile are the two client categories (bit 0x10)."""
    return ((a ^ b) >> 4) == 0


class OnlineUser:
    """The logged-in connections of one account on this node, oldest first."""

    __slots__ = ("user_id", "connections", "pc_online_anywhere")

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.connections: list[Mind] = []
        #: Whether some PC client of this user is online on any node (route tells us).
        self.pc_online_anywhere = False

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
    """All logged-in users of this node, by user id."""

    def __init__(self) -> None:
        self._users: dict[int, OnlineUser] = {}
        self.connection_count = 0
        #: Logged-in connections per client type (for metrics).
        self.by_client_type: Counter[int] = Counter()

    def add(self, conn: Mind) -> OnlineUser:
        user = self._users.get(conn.user_id)
        if user is None:
            user = self._users[conn.user_id] = OnlineUser(conn.user_id)
        user.connections.append(conn)
        self.connection_count += 1
        self.by_client_type[conn.client_type] += 1
        return user

    def remove(self, conn: Mind) -> OnlineUser | None:
        """Forget ``conn``; returns the user record, or None if it was not here."""
        user = self._users.get(conn.user_id)
        if user is None or conn not in user.connections:
            return None
        user.connections.remove(conn)
        self.connection_count -= 1
        self.by_client_type[conn.client_type] -= 1
        if not user.connections:
            del self._users[conn.user_id]
        return user

    def get(self, user_id: int) -> OnlineUser | None:
        return self._users.get(user_id)

    def __contains__(self, user_id: int) -> bool:
        return user_id in self._users

    def users(self) -> Iterator[OnlineUser]:
        return iter(list(self._users.values()))

    def connections_of(self, user_id: int) -> list[Mind]:
        user = self._users.get(user_id)
        return list(user.connections) if user is not None else []

    def all_connections(self) -> Iterator[Mind]:
        for user in list(self._users.values()):
            yield from user.connections

    def send_to_users(
        self, user_ids: Iterable[int], pdu: bytes, exclude: Mind | None = None
    ) -> int:
        """Write the same bytes to every connection of each user; returns how many."""
        sent = 0
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is None:
                continue
            for conn in user.connections:
                if conn is not exclude:
                    conn.send_raw(pdu)
                    sent += 1
        return sent

    def send_to_all(self, pdu: bytes, *, pc_only: bool = False) -> int:
        """Broadcast the same bytes. Twisted's buffered writes coalesce every PDU a
        connection gets in one reactor turn into one send, which matters in login storms
        (each PC login is announced to every PC connection)."""
        sent = 0
        for user in self._users.values():
            for conn in user.connections:
                if pc_only and conn.is_mobile:
                    continue
                conn.send_raw(pdu)
                sent += 1
        return sent
