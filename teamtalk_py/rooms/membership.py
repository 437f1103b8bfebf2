"""Chat rooms on one msg node: which of its connections are in which room, and posts.

Membership is per connection: a connection that opted in to rooms joins and leaves rooms
by id, and is in none once it closes. A join is admitted by route (``RoomRoute``), which
counts members cluster-wide and holds the limits; leaving, closing and being dropped tell
route, so a node's count there is always its number of member connections.

**A post** is encoded once as ``CID_EXT_ROOM_POST_NOTIFY`` and the same bytes are written
to every member connection here but the poster's, then handed to route once, which
forwards it only to the other nodes with members in the room. Nothing is stored, counted
unread or pushed: a member receives what is said while it is in the room, and a member
that joins later sees only later posts. "Later" is the poster's ack: ``post`` finishes
(and the ack goes) only once route has forwarded the post, because route, which admits
every join, is the one place a post and a join on another node are ordered; acked
before that, a join on another node could reach route first and be sent the post.

**A slow member is dropped.** Before a post is written to a member, the bytes waiting
for it beyond its socket's buffer (``output_backlog``: written while its reader is
behind) are compared with ``member_backlog``; past it the member leaves the room and is
told so with one small ``CID_EXT_ROOM_REMOVED_NOTIFY``, instead of the server buffering
more posts for it. Its connection stays open and every other room and message reaches
it as before, so one slow reader costs at most ``member_backlog`` per room it joined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.wire.protocol import encode

log = Logger(namespace="teamtalk.rooms")

OK = X.EXT_RESULT_OK


class Member(Protocol):
    """What a room needs of a connection (the *mind*): who it is, a way to write to it,
    and how much is already waiting for it."""

    user_id: int

    def send_raw(self, pdu: bytes) -> None: ...

    @property
    def output_backlog(self) -> int: ...


class RoomRoute(Protocol):
    """The route verbs rooms use (``msg/route_client.py``)."""

    def room_admit(self, room_id: int) -> defer.Deferred[tuple[int, int]]: ...

    def room_leave(self, room_ids: list[int]) -> None: ...

    def room_relay(self, room_id: int, pdu: bytes) -> defer.Deferred[None]:
        """Fires once route has forwarded the post (or cannot be waited for); never fails."""
        ...


@dataclass(frozen=True, slots=True)
class Joined:
    """A join's answer: the result code and, on success, the room's members (cluster)."""

    result: int
    members: int = 0


class NodeRooms:
    """This node's rooms: room id -> member connections, and each member's rooms."""

    def __init__(
        self,
        route: RoomRoute,
        *,
        max_joined: int = 100,
        member_backlog: int = 1024 * 1024,
    ) -> None:
        self.route = route
        #: Rooms one connection may be in at once.
        self.max_joined = max_joined
        #: Bytes that may wait for one member before it is dropped from a room it is in.
        self.member_backlog = member_backlog
        # dicts, not sets: members in join order, so a fan-out's order is stable.
        self._rooms: dict[int, dict[Member, None]] = {}
        self._joined: dict[Member, dict[int, None]] = {}
        #: Joins waiting for route's answer, per member.
        self._joining: dict[Member, set[int]] = {}
        #: Figures since start (metric hooks).
        self.posts = 0
        self.deliveries = 0
        self.dropped_slow = 0

    def configure(self, *, max_joined: int, member_backlog: int) -> None:
        self.max_joined, self.member_backlog = max_joined, member_backlog

    # -- membership ----------------------------------------------------------------------

    def is_member(self, member: Member, room_id: int) -> bool:
        return room_id in self._joined.get(member, ())

    def rooms_of(self, member: Member) -> list[int]:
        return list(self._joined.get(member, ()))

    def members_here(self, room_id: int) -> list[Member]:
        return list(self._rooms.get(room_id, ()))

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    @property
    def membership_count(self) -> int:
        return sum(len(members) for members in self._rooms.values())

    def counts(self) -> list[tuple[int, int]]:
        """(room id, members here) for every room with members on this node."""
        return [(room_id, len(members)) for room_id, members in self._rooms.items()]

    async def join(self, member: Member, room_id: int) -> Joined:
        """Join ``room_id`` (created on first join) once route admits it; joining a room
        one is in answers OK again."""
        if self.is_member(member, room_id):
            return Joined(OK)
        joining = self._joining.setdefault(member, set())
        if room_id in joining:
            return Joined(X.EXT_RESULT_BAD_REQUEST)  # the same join is already under way
        if len(self._joined.get(member, ())) + len(joining) >= self.max_joined:
            return Joined(X.EXT_RESULT_LIMIT)
        joining.add(room_id)
        try:
            result, members = await self.route.room_admit(room_id)
        except Exception as e:
            log.info("room {room_id}: route did not admit ({error})", room_id=room_id, error=e)
            self._joining_done(member, room_id)
            return Joined(X.EXT_RESULT_SERVER_ERROR)
        if not self._joining_done(member, room_id):
            # The connection closed while route was asked: give the place back.
            if result == OK:
                self.route.room_leave([room_id])
            return Joined(X.EXT_RESULT_SERVER_ERROR)
        if result != OK:
            return Joined(result, members)
        self._rooms.setdefault(room_id, {})[member] = None
        self._joined.setdefault(member, {})[room_id] = None
        return Joined(OK, members)

    def _joining_done(self, member: Member, room_id: int) -> bool:
        """Forget a join under way; False when the member has gone meanwhile."""
        joining = self._joining.get(member)
        if joining is None or room_id not in joining:
            return False
        joining.discard(room_id)
        if not joining:
            del self._joining[member]
        return True

    def leave(self, member: Member, room_id: int) -> bool:
        """Leave one room; False when the member was not in it."""
        if not self._remove(member, room_id):
            return False
        self.route.room_leave([room_id])
        return True

    def disconnected(self, member: Member) -> None:
        """The connection closed: it leaves every room, in one message to route."""
        self._joining.pop(member, None)
        rooms = list(self._joined.get(member, ()))
        for room_id in rooms:
            self._remove(member, room_id)
        if rooms:
            self.route.room_leave(rooms)

    def _remove(self, member: Member, room_id: int) -> bool:
        joined = self._joined.get(member)
        if joined is None or room_id not in joined:
            return False
        del joined[room_id]
        if not joined:
            del self._joined[member]
        members = self._rooms[room_id]
        del members[member]
        if not members:
            del self._rooms[room_id]
        return True

    # -- posts -----------------------------------------------------------------------------

    async def post(
        self, member: Member, room_id: int, msg_type: int, content: bytes, now: int
    ) -> int:
        """``member`` says ``content`` in ``room_id``: to every other member here and,
        through route, on other nodes. The result code (NOT_IN_ROOM for a non-member),
        once route has forwarded the post: only then may the poster be acked."""
        if not self.is_member(member, room_id):
            return X.EXT_RESULT_NOT_IN_ROOM
        notify = encode(
            X.CID_EXT_ROOM_POST_NOTIFY,
            X.IMExtRoomPostNotify(
                room_id=room_id,
                from_user_id=member.user_id,
                content=content,
                create_time=now,
                msg_type=msg_type,
            ),
        )
        self.posts += 1
        self.deliver(room_id, notify, exclude=member)
        await self.route.room_relay(room_id, notify)
        return OK

    def deliver(self, room_id: int, pdu: bytes, exclude: Member | None = None) -> int:
        """Write a post notify to this node's members of ``room_id`` (but ``exclude``),
        dropping those too far behind; returns how many got it."""
        members = self._rooms.get(room_id)
        if not members:
            return 0
        limit = self.member_backlog - len(pdu)
        sent = 0
        slow: list[Member] = []
        for member in members:
            if member is exclude:
                continue
            if member.output_backlog > limit:
                slow.append(member)
                continue
            member.send_raw(pdu)
            sent += 1
        self.deliveries += sent
        for member in slow:
            self.drop_slow(member, room_id)
        return sent

    def drop_slow(self, member: Member, room_id: int) -> None:
        """Take a member that reads too slowly out of a room, and tell it so."""
        if not self.leave(member, room_id):
            return
        self.dropped_slow += 1
        log.info(
            "room {room_id}: dropped user {user_id}, {backlog} bytes behind",
            room_id=room_id,
            user_id=member.user_id,
            backlog=member.output_backlog,
        )
        member.send_raw(
            encode(
                X.CID_EXT_ROOM_REMOVED_NOTIFY,
                X.IMExtRoomRemovedNotify(room_id=room_id, reason=X.EXT_ROOM_DROPPED_SLOW),
            )
        )
