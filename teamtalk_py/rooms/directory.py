"""The route service's view of chat rooms: for each room, how many members each node has.

As in the IM router seed (the router keeps each IM server's room set and forwards a room
post only to the servers in the room), route knows nodes, not members: a node asks route
to admit each joining connection, tells it when members leave, and sends its whole set on
every (re)connect. Two things the seed does not do, done here:

* **Limits hold cluster-wide.** Route is the one place that sees every node, so it admits
  or refuses each join against ``max_rooms`` (rooms with at least one member) and
  ``max_members`` (members of one room); a node never decides alone.
* **A lost node leaves every room.** When a node's link goes down its counts go with it
  (``drop_node``), so no post is sent towards it; when it links again its full set comes
  back (``replace``), as its users' presence does. A node's set is applied as it is, even
  past the limits: those members were admitted before.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from teamtalk_py.pb.IM import Extension_pb2 as X

OK = X.EXT_RESULT_OK
LIMIT = X.EXT_RESULT_LIMIT


class NodeLink(Protocol):
    def send_raw(self, pdu: bytes) -> None: ...


class RoomDirectory:
    """Per room: node link -> members there. Rooms with no member do not exist."""

    def __init__(self, max_rooms: int = 10000, max_members: int = 1000) -> None:
        self.max_rooms = max_rooms
        self.max_members = max_members
        self._rooms: dict[int, Counter[NodeLink]] = {}
        self._totals: dict[int, int] = {}
        #: Joins refused for a limit since start (a metric hook).
        self.refused = 0
        #: Posts relayed to another node since start (a metric hook).
        self.relayed = 0

    def configure(self, *, max_rooms: int, max_members: int) -> None:
        """New limits (a reload); members already in are kept."""
        self.max_rooms, self.max_members = max_rooms, max_members

    # -- membership ----------------------------------------------------------------------

    def admit(self, link: NodeLink, room_id: int) -> tuple[int, int]:
        """One more member of ``room_id`` on ``link``'s node, if the limits allow:
        (result code, the room's members afterwards)."""
        total = self._totals.get(room_id, 0)
        if total == 0 and len(self._rooms) >= self.max_rooms:
            self.refused += 1
            return LIMIT, 0
        if total >= self.max_members:
            self.refused += 1
            return LIMIT, total
        self._rooms.setdefault(room_id, Counter())[link] += 1
        self._totals[room_id] = total + 1
        return OK, total + 1

    def leave(self, link: NodeLink, room_ids: list[int]) -> None:
        """One member fewer on ``link``'s node for each entry of ``room_ids``."""
        for room_id in room_ids:
            counts = self._rooms.get(room_id)
            if counts is None or counts[link] <= 0:
                continue
            counts[link] -= 1
            if counts[link] == 0:
                del counts[link]
            self._decrement(room_id, 1)

    def replace(self, link: NodeLink, rooms: list[tuple[int, int]]) -> None:
        """A node's full set, ``(room_id, members)`` pairs, on every (re)connect."""
        self.drop_node(link)
        for room_id, members in rooms:
            if members <= 0:
                continue
            self._rooms.setdefault(room_id, Counter())[link] += members
            self._totals[room_id] = self._totals.get(room_id, 0) + members

    def drop_node(self, link: NodeLink) -> None:
        """The node's link went down: its members are in no room any more."""
        for room_id in [r for r, counts in self._rooms.items() if link in counts]:
            members = self._rooms[room_id].pop(link)
            self._decrement(room_id, members)

    def _decrement(self, room_id: int, members: int) -> None:
        total = self._totals[room_id] - members
        if total > 0:
            self._totals[room_id] = total
        else:
            del self._totals[room_id]
            del self._rooms[room_id]

    # -- queries and relays ----------------------------------------------------------------

    def members(self, room_id: int) -> int:
        return self._totals.get(room_id, 0)

    def members_on(self, link: NodeLink, room_id: int) -> int:
        counts = self._rooms.get(room_id)
        return counts[link] if counts is not None else 0

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    def nodes_in(self, room_id: int) -> list[NodeLink]:
        return list(self._rooms.get(room_id, ()))

    def relay(self, origin: NodeLink | None, room_id: int, pdu: bytes) -> int:
        """Send ``pdu`` to every node with members in ``room_id`` except ``origin`` (which
        delivered to its own members); returns to how many nodes."""
        sent = 0
        for link in self._rooms.get(room_id, ()):
            if link is not origin:
                link.send_raw(pdu)
                sent += 1
        self.relayed += sent
        return sent
