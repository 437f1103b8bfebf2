"""Groups on the msg node: group messages and their fan-out, read marks, unread counts,
history, and the membership commands (commands.md §2.1.13, storage.md §4.4-4.6).

The rules live in ``teamtalk_py.store.groups``; this module adds what is per node:

* **Sending.** Group messages go through the intake like one-to-one messages
  (``intake.py``: refusals, resends, ack once durable); ``Groups`` is their ``Topic``:
  the store refuses non-members and dissolved groups, and the fan-out below delivers.
* **Fan-out.** The delivery is encoded once (seq 0) and the same bytes are written to
  every connection of every member on this node, the sender's other devices included,
  the sending connection excluded. Other nodes get one relayed copy whose ``attach_data``
  carries the group version the message was stored at and its origin (``relay_tag.py``).
* **Member cache.** ``GroupMemberCache`` keeps the members of recently used groups with
  the version they belong to. Storing a message returns the group's version, so a cache
  entry is used only when it is exact; a change made here or announced by another node
  (``CID_GROUP_CHANGE_MEMBER_NOTIFY``) drops the entry, and one made with
  ``teamtalk-admin`` is noticed at the next message through the version. A message never
  reaches a member who joined after it (their join watermark is compared when the loaded
  list is newer than the message), nor one who had left before it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.msg.intake import Refused, Sender, StoredOutcome, delivery_of
from teamtalk_py.msg.relay_tag import relay_tag
from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Group_pb2, Message_pb2
from teamtalk_py.store import groups as group_store
from teamtalk_py.store.groups import (
    GroupError,
    GroupMembers,
    GroupRow,
    MemberChange,
    StoredGroupMessage,
)
from teamtalk_py.store.messages import StoredMessage, UnreadRow
from teamtalk_py.store.resends import SendKey
from teamtalk_py.wire.protocol import encode

if TYPE_CHECKING:
    from teamtalk_py.msg.online import Mind, OnlineUsers
    from teamtalk_py.msg.route_client import InProcessRoute, LinkedRoute
    from teamtalk_py.msg.run import Origins
    from teamtalk_py.push.service import PushOutbox
    from teamtalk_py.store.service import StoreService

log = Logger(namespace="teamtalk.msg.groups")

_GROUP = B.SESSION_TYPE_GROUP


def _refused(failure: Failure) -> None:
    """A non-member's message or a dissolved group: a refusal, not a failed write."""
    failure.trap(GroupError)
    raise Refused(failure.getErrorMessage())


@dataclass(frozen=True, slots=True)
class CachedMembers:
    version: int
    #: Member ids, the fan-out list as it is iterated per message.
    ids: tuple[int, ...]
    #: user id -> join watermark (they see messages with a larger id).
    join_msg_ids: Mapping[int, int]

    @classmethod
    def of(cls, members: GroupMembers) -> CachedMembers:
        return cls(members.version, tuple(members.join_msg_ids), members.join_msg_ids)

    def receivers(self, msg_id: int, version: int | None) -> Iterable[int]:
        """Who gets message ``msg_id`` stored at group ``version`` (None: unknown)."""
        if version == self.version:
            return self.ids
        return [u for u, joined in self.join_msg_ids.items() if joined < msg_id]


class GroupMemberCache:
    """Members of the most recently used groups (least recently used dropped first)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, CachedMembers] = OrderedDict()

    def get(self, group_id: int) -> CachedMembers | None:
        entry = self._entries.get(group_id)
        if entry is not None:
            self._entries.move_to_end(group_id)
        return entry

    def put(self, group_id: int, entry: CachedMembers) -> None:
        current = self._entries.get(group_id)
        if current is not None and current.version > entry.version:
            return  # a slower load must not replace a newer list
        self._entries[group_id] = entry
        self._entries.move_to_end(group_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, group_id: int) -> None:
        self._entries.pop(group_id, None)

    def __len__(self) -> int:
        return len(self._entries)


class GroupsNode(Protocol):
    """What ``Groups`` uses of its node (``MsgService``): the store and the way group
    messages are written to it, this run's origins, this node's online users, route,
    push's outbox (None without push) and the clock."""

    @property
    def store(self) -> StoreService: ...

    @property
    def store_group_message(self) -> Callable[..., Any]: ...

    @property
    def origins(self) -> Origins: ...

    @property
    def online(self) -> OnlineUsers: ...

    @property
    def route(self) -> InProcessRoute | LinkedRoute: ...

    @property
    def push(self) -> PushOutbox | None: ...

    def now(self) -> int: ...


class Groups:
    """The msg service's group domain; handlers call it, it calls the store."""

    def __init__(self, node: GroupsNode) -> None:
        self.node = node
        self.cache = GroupMemberCache()
        #: Groups whose members are being loaded -> callers waiting for that load.
        self._loading: dict[int, list[defer.Deferred]] = {}

    @property
    def store(self) -> StoreService:
        return self.node.store

    # -- members -----------------------------------------------------------------------

    async def members(self, group_id: int, version: int | None = None) -> CachedMembers | None:
        """The group's members, from the cache when it holds ``version`` (any version
        when None); None for a missing or dissolved group."""
        cached = self.cache.get(group_id)
        if cached is not None and (version is None or cached.version >= version):
            return cached
        waiters = self._loading.get(group_id)
        if waiters is not None:  # a load is on its way: share it
            waiter: defer.Deferred[CachedMembers | None] = defer.Deferred()
            waiters.append(waiter)
            return await waiter
        self._loading[group_id] = []
        try:
            loaded = await self.store.read(group_store.group_members, group_id)
        except Exception as e:
            for waiter in self._loading.pop(group_id):
                waiter.errback(e)
            raise
        entry = CachedMembers.of(loaded) if loaded is not None else None
        if entry is None:
            self.cache.forget(group_id)
        else:
            self.cache.put(group_id, entry)
        for waiter in self._loading.pop(group_id):
            waiter.callback(entry)
        return entry

    def forget(self, group_id: int) -> None:
        """Members changed (here, on another node): reload at the next use."""
        self.cache.forget(group_id)

    # -- messages ----------------------------------------------------------------------

    # The ``Topic`` of group messages (``intake.py``): no refusal of its own before the
    # store, which refuses non-members and dissolved groups.

    session_type = _GROUP

    def check(self, conn: Sender, msg: Message_pb2.IMMsgData) -> None:
        return None

    def store_message(
        self, sender: int, msg: Message_pb2.IMMsgData, sent: SendKey | None, now: int
    ) -> defer.Deferred[StoredGroupMessage]:
        origins = self.node.origins
        origin = origins.next()
        # Raw callbacks, not async def: this runs once per message; a Deferred with two
        # callbacks cost 18 us where ensureDeferred of a coroutine awaiting it cost 45 us
        # (timeit of the two shapes, load 14, 2026-12-02).
        d = self.store.write(
            self.node.store_group_message,
            msg.to_session_id, sender, msg.msg_type, msg.msg_data, now, sent, origin=origin,
        )  # fmt: skip
        d.addBoth(origins.settle, origin)
        d.addErrback(_refused)
        return d

    def deliver(self, outcome: StoredOutcome, exclude: Mind) -> defer.Deferred[None]:
        stored = cast(StoredGroupMessage, outcome)  # what ``store_message`` answered
        if stored.resend_of is None and self.node.push is not None:
            self.node.push.kick()  # its outbox row is committed: decide the pushes now
        # A resend's version is today's, not the one it was stored at: let the join
        # watermarks pick its receivers.
        version = stored.version if stored.resend_of is None else None
        return defer.ensureDeferred(self._fan_out(stored.message, version, exclude))

    async def _fan_out(self, message: StoredMessage, version: int | None, exclude: Mind) -> None:
        node = self.node
        delivery = delivery_of(message)
        if node.route.has_peers:
            delivery.attach_data = relay_tag(message.origin, version)
            node.route.relay(encode(B.CID_MSG_DATA, delivery), None)
            delivery.ClearField("attach_data")
        members = await self.members(message.to_id, version)
        if members is None:
            return  # dissolved since
        pdu = encode(B.CID_MSG_DATA, delivery)
        node.online.send_to_users(members.receivers(message.msg_id, version), pdu, exclude=exclude)

    def deliver_from_route(
        self, message: Message_pb2.IMMsgData, version: int | None
    ) -> defer.Deferred:
        """A group message stored on another node (stored at group ``version``, when
        known; its relay tag already taken off): to every connection of its members here
        (all of the sender's, since none of them sent it)."""
        d = defer.ensureDeferred(self._deliver_remote(message, version))
        d.addErrback(lambda f: log_failure(log, "group delivery from route failed", f))
        return d

    async def _deliver_remote(self, message: Message_pb2.IMMsgData, version: int | None) -> None:
        members = await self.members(message.to_session_id, version)
        if members is None:
            return
        pdu = encode(B.CID_MSG_DATA, message)
        self.node.online.send_to_users(members.receivers(message.msg_id, version), pdu)

    # -- reading -----------------------------------------------------------------------

    async def mark_read(self, user_id: int, group_id: int, msg_id: int = 0) -> bool:
        """Mark the group read up to ``msg_id`` (0: all); False for non-members."""
        return await self.store.write(group_store.mark_group_read, user_id, group_id, msg_id)

    async def unread_counts(self, user_id: int) -> list[UnreadRow]:
        return await self.store.read(group_store.group_unread_counts, user_id)

    async def history(
        self, user_id: int, group_id: int, msg_id_begin: int, count: int
    ) -> list[StoredMessage]:
        return await self.store.read(
            group_store.group_history, user_id, group_id, msg_id_begin, count
        )

    async def latest_msg_id(self, user_id: int, group_id: int) -> int:
        return await self.store.read(group_store.latest_group_msg_id, user_id, group_id)

    async def messages_by_ids(
        self, user_id: int, group_id: int, ids: list[int]
    ) -> list[StoredMessage]:
        return await self.store.read(group_store.group_messages_by_ids, user_id, group_id, ids)

    # -- groups and members ------------------------------------------------------------

    async def normal_list(self, user_id: int) -> list[tuple[int, int]]:
        return await self.store.read(group_store.normal_groups, user_id)

    async def infos(self, user_id: int, known: Mapping[int, int]) -> list:
        return await self.store.read(group_store.group_infos, user_id, known)

    async def create(
        self, creator: int, name: str, avatar: str, member_ids: Iterable[int]
    ) -> tuple[GroupRow, tuple[int, ...]]:
        """A temporary group created by a client (ValueError when it cannot be)."""
        return await self.store.write(
            group_store.create_group,
            name, creator, list(member_ids), group_store.GROUP_TMP, avatar,
            now=self.node.now(),
        )  # fmt: skip

    async def change_members(
        self, requester: int, change_type: int, group_id: int, user_ids: Iterable[int]
    ) -> MemberChange:
        """Apply a member change (GroupError / ValueError when refused)."""
        change = await self.store.write(
            group_store.change_members,
            group_id, requester, change_type, list(user_ids), now=self.node.now(),
        )  # fmt: skip
        self.forget(group_id)
        return change

    def notify_change(
        self, change: MemberChange, requester: int, exclude: Mind | None = None
    ) -> None:
        """Tell the changed and the remaining members, here and on every other node."""
        node = self.node
        notify = encode(
            B.CID_GROUP_CHANGE_MEMBER_NOTIFY,
            Group_pb2.IMGroupChangeMemberNotify(
                user_id=requester,
                change_type=cast(B.GroupModifyType.ValueType, change.change_type),
                group_id=change.group_id,
                cur_user_id_list=change.current,
                chg_user_id_list=change.changed,
            ),
        )
        receivers = dict.fromkeys((*change.changed, *change.current))
        node.online.send_to_users(receivers, notify, exclude=exclude)
        node.route.relay(notify, None)

    async def shield(self, user_id: int, group_id: int, shield: int) -> bool:
        """Set the member's push mute flag; False when not a member or a bad value."""
        if shield not in (0, 1):
            return False
        return await self.store.write(group_store.set_shield, user_id, group_id, shield)
