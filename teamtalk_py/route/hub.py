"""The route service's logic: the cluster-wide presence table and the relay rules.

``RouteHub`` knows msg nodes only as *links*: objects with ``send_raw(pdu)``. A TCP link
from a remote msg node and the in-process link of a co-hosted msg service look the same
to it, so the rules of commands.md §2.2 live here once.

Deliberate differences from the reference route server:

* A lost link is an OFFLINE update for each of its connections, with notifications
  (the reference forgets the users silently and they stay "online" forever).
* Because of that, when a node re-registers (``CID_OTHER_ONLINE_USER_INFO`` after a
  reconnect), users we had announced offline when its link dropped are announced online
  again. Users we never announced offline (a restarted route knows nobody) are applied
  silently, as the reference does, so a route restart does not flood every client.
* A lost link also tells every other node which msg node run it was (``CID_NODE_LOST``,
  with that link's last delivery marker), so they read from the store what the lost
  node stored after its last marker, whose relays may have died in its socket
  (``msg/catch_up.py``).
* One-to-one packets go only to the links holding the users they name (§2.2.5 allows it).
  Right after the route service starts, nodes re-register one by one (each on its own
  back-off), so a one-to-one packet for a user whose node has not re-registered yet is
  parked for a while and handed to that node when its online-user list arrives, instead
  of being dropped. This is what makes live delivery survive a route restart; the store
  keeps every acked message regardless.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import Message
from twisted.logger import Logger

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Server_pb2
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.protocol.header import HEADER_SIZE, pack_pdu
from teamtalk_py.protocol.registry import service_of
from teamtalk_py.rooms.directory import RoomDirectory

log = Logger(namespace="teamtalk.route")

ONLINE = B.USER_STATUS_ONLINE
OFFLINE = B.USER_STATUS_OFFLINE


class NodeLink(Protocol):
    def send_raw(self, pdu: bytes) -> None: ...


def is_pc(client_type: int) -> bool:
    return not client_type & 0x10


def _pdu(command_id: int, message: Message) -> bytes:
    return pack_pdu(service_of(command_id), command_id, message.SerializeToString())


#: A user's entry in ``PresenceTable``: the shared key of their one connection, or the
#: count per key of several.
_Key = tuple[NodeLink, int]
_Entry = _Key | dict[_Key, int]


class PresenceTable:
    """For each user: how many connections per (link, client type).

    Keyed by ``(link, client_type)`` tuples that are made once per link and client type
    and shared by every user. A user with one connection (nearly everybody) is just that
    shared tuple; only a user with several gets a dict of counts (tens of thousands of
    idle users: a dict each was some 200 bytes a user).
    """

    def __init__(self) -> None:
        self._users: dict[int, _Entry] = {}
        self._keys: dict[_Key, _Key] = {}

    def _key(self, link: NodeLink, client_type: int) -> _Key:
        key = (link, client_type)
        return self._keys.setdefault(key, key)

    def _counts(self, user_id: int) -> dict[_Key, int]:
        """The user's counts per key (a fresh dict for a one-connection user)."""
        entry = self._users.get(user_id)
        if entry is None:
            return {}
        return {entry: 1} if isinstance(entry, tuple) else entry

    def online(self, link: NodeLink, user_id: int, client_type: int) -> None:
        key = self._key(link, client_type)
        entry = self._users.get(user_id)
        if entry is None:
            self._users[user_id] = key
        elif isinstance(entry, tuple):
            self._users[user_id] = {key: 2} if entry == key else {entry: 1, key: 1}
        else:
            entry[key] = entry.get(key, 0) + 1

    def offline(self, link: NodeLink, user_id: int, client_type: int) -> bool:
        """Count one connection gone; False when the link did not hold the user."""
        entry = self._users.get(user_id)
        key = (link, client_type)
        if entry is None:
            return False
        if isinstance(entry, tuple):
            if entry != key:
                return False
            del self._users[user_id]
            return True
        n = entry.get(key, 0)
        if n <= 0:
            return False
        if n > 1:
            entry[key] = n - 1
        else:
            del entry[key]
            if not entry:
                del self._users[user_id]
        if len(entry) == 1:
            ((last, count),) = entry.items()
            if count == 1:
                self._users[user_id] = last  # one connection left: back to the tuple
        return True

    def forget_link(self, link: NodeLink) -> None:
        """Drop the shared keys of a link that went away (its users are offline)."""
        for key in [k for k in self._keys if k[0] is link]:
            del self._keys[key]

    def has_pc(self, user_id: int) -> bool:
        entry = self._users.get(user_id)
        if entry is None:
            return False
        if isinstance(entry, tuple):
            return is_pc(entry[1])
        for (_, client_type), n in entry.items():  # a loop: no generator per status change
            if n > 0 and is_pc(client_type):
                return True
        return False

    def status(self, user_id: int) -> int:
        """ONLINE only when a PC client is connected somewhere (mobile-only is OFFLINE)."""
        return ONLINE if self.has_pc(user_id) else OFFLINE

    def links_of(self, user_id: int) -> list[NodeLink]:
        return list(dict.fromkeys(link for link, _ in self._counts(user_id)))

    def connections_on(self, link: NodeLink) -> list[tuple[int, int]]:
        """(user_id, client_type) for every connection counted on ``link``."""
        result = []
        for user_id in self._users:
            for (holder, client_type), n in self._counts(user_id).items():
                if holder is link:
                    result.extend([(user_id, client_type)] * n)
        return result


#: Relay kinds (commands.md §2.2.5): to the links holding the named users, to every
#: other link, or to every link including the origin.
TO_HOLDERS = "holders"
TO_OTHERS = "others"
TO_ALL = "all"

GROUP_MSG_TYPES = (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO)


def relay_rule(command_id: int, message: Any) -> tuple[str, list[int]] | None:
    """Where the route service sends a packet a node gave it; None: not relayed.

    ``message`` is the decoded body. One-to-one kinds name their users; group kinds go to
    every other link because route does not know group membership; signature and avatar
    changes go to every link, the origin included.
    """
    if command_id == B.CID_MSG_DATA:
        if message.msg_type in GROUP_MSG_TYPES:
            return TO_OTHERS, []
        return TO_HOLDERS, [message.to_session_id, message.from_user_id]
    if command_id == B.CID_SWITCH_P2P_CMD:
        return TO_HOLDERS, [message.from_user_id, message.to_user_id]
    if command_id in (
        B.CID_MSG_READ_NOTIFY,
        B.CID_OTHER_SERVER_KICK_USER,
        B.CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY,
    ):
        return TO_HOLDERS, [message.user_id]
    if command_id == B.CID_FILE_NOTIFY:
        return TO_HOLDERS, [message.to_user_id]
    if command_id == B.CID_GROUP_CHANGE_MEMBER_NOTIFY:
        return TO_OTHERS, []
    if command_id == X.CID_EXT_USER_RELAY:
        return TO_HOLDERS, list(message.user_ids)
    if command_id in (
        B.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY,
        B.CID_BUDDY_LIST_AVATAR_CHANGED_NOTIFY,
    ):
        return TO_ALL, []
    return None


RELAYED_COMMANDS = (
    B.CID_MSG_DATA,
    B.CID_SWITCH_P2P_CMD,
    B.CID_MSG_READ_NOTIFY,
    B.CID_OTHER_SERVER_KICK_USER,
    B.CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY,
    B.CID_FILE_NOTIFY,
    B.CID_GROUP_CHANGE_MEMBER_NOTIFY,
    B.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY,
    B.CID_BUDDY_LIST_AVATAR_CHANGED_NOTIFY,
    X.CID_EXT_USER_RELAY,
)

#: Our own command between msg nodes, relayed verbatim to every other node: a node's
#: delivery marker (``msg/catch_up.py``). Under SID_OTHER next to the link handshake's
#: 0x07A0-0x07A2; TeamTalk's servers never send it.
CID_DELIVERED_UPTO = 0x07A3
#: Our own notice from route to every other msg node: a node's link went away. The body
#: is the last ``CID_DELIVERED_UPTO`` body that link sent (which node run it was, and how
#: far its relays were confirmed); ``msg/catch_up.py`` reads the rest from the store.
CID_NODE_LOST = 0x07A4

#: Seconds after the hub starts during which undeliverable one-to-one packets are parked.
#: Nodes retry their route link at 2, 4 … 64 s, so two nodes can come back up to ~64 s
#: apart after a route restart.
PARK_WINDOW = 120.0
#: Most packets parked at once; the oldest go first (they are in the store anyway).
MAX_PARKED = 10000


@dataclass
class _Parked:
    pdu: bytes
    #: Named users that no link held when the packet arrived.
    missing: set[int]
    #: Links that already got it (never send twice).
    sent_to: list[NodeLink] = field(default_factory=list)


class RouteHub:
    """Presence and relay across every linked msg node.

    ``clock`` (an ``IReactorTime``) enables parking during the start-up window; without
    one (the private hub of a lone msg node) nothing is parked.
    """

    def __init__(self, clock: Any = None, park_window: float = PARK_WINDOW) -> None:
        self.links: list[NodeLink] = []
        self.presence = PresenceTable()
        self.clock = clock
        self._park_until = clock.seconds() + park_window if clock is not None else 0.0
        self._parked: deque[_Parked] = deque()
        #: Users announced offline because their node's link dropped (see module doc).
        self._dropped: set[int] = set()
        #: Each node's members per chat room (``rooms/directory.py``).
        self.rooms = RoomDirectory()
        #: The last delivery marker each link sent (for its ``CID_NODE_LOST``).
        self._markers: dict[NodeLink, bytes] = {}
        #: Packets nodes handed over (relays, status changes) and copies sent to nodes:
        #: the one route process's load, for metrics and the cluster bench.
        self.pdus_in = 0
        self.pdus_out = 0

    def attach(self, link: NodeLink) -> None:
        if link not in self.links:
            self.links.append(link)

    def detach(self, link: NodeLink) -> None:
        """A node went away: its users go offline everywhere, with notifications, and its
        members leave every chat room."""
        if link not in self.links:
            return
        for user_id, client_type in self.presence.connections_on(link):
            had_pc = self.presence.has_pc(user_id)
            self.user_status(link, user_id, OFFLINE, client_type)
            if had_pc and not self.presence.has_pc(user_id):
                self._dropped.add(user_id)
        self.rooms.drop_node(link)
        self.links.remove(link)
        self.presence.forget_link(link)
        for parked in self._parked:
            if link in parked.sent_to:
                parked.sent_to.remove(link)
        marker = self._markers.pop(link, None)
        if marker is not None:
            # Everything route got from the link has been forwarded already (a link's
            # packets are handled before its loss), so this notice comes after them.
            self.broadcast(pack_pdu(B.SID_OTHER, CID_NODE_LOST, marker[HEADER_SIZE:]))

    def marker(self, link: NodeLink, pdu: bytes) -> None:
        """A node's delivery marker: to every other node, and kept as the link's last."""
        if link in self.links:
            self._markers[link] = pdu
        self.relay(link, pdu, None)

    def online_user_info(self, link: NodeLink, stats: list[tuple[int, int, int]]) -> None:
        """A node's full list on (re)connect: applied without notifications, except for
        users we announced offline when a link dropped (they are announced back)."""
        back: set[int] = set()
        present: set[int] = set()
        for user_id, status, client_type in stats:
            if status == OFFLINE:
                continue
            present.add(user_id)
            if user_id in self._dropped and not self.presence.has_pc(user_id):
                back.add(user_id)
            self.presence.online(link, user_id, client_type)
        for user_id in back:
            self._dropped.discard(user_id)
            if self.presence.has_pc(user_id):
                self._announce_online(user_id)
        self._deliver_parked(link, present)

    def user_status(
        self, link: NodeLink, user_id: int, status: B.UserStatType.ValueType, client_type: int
    ) -> None:
        """Apply one connection's status change and notify every node (§2.2.3)."""
        self.pdus_in += 1
        if status != OFFLINE:
            self._dropped.discard(user_id)
            self.presence.online(link, user_id, client_type)
        elif not self.presence.offline(link, user_id, client_type):
            return
        pc_left = self.presence.has_pc(user_id)
        if status == OFFLINE:
            if is_pc(client_type) and not pc_left:
                self._broadcast(
                    B.CID_OTHER_LOGIN_STATUS_NOTIFY,
                    Server_pb2.IMServerPCLoginStatusNotify(user_id=user_id, login_status=0),
                )
        elif pc_left:
            self._broadcast(
                B.CID_OTHER_LOGIN_STATUS_NOTIFY,
                Server_pb2.IMServerPCLoginStatusNotify(user_id=user_id, login_status=1),
            )
        if is_pc(client_type) and not (status == OFFLINE and pc_left):
            notify = Buddy_pb2.IMUserStatNotify()
            notify.user_stat.user_id = user_id
            notify.user_stat.status = status
            self._broadcast(B.CID_BUDDY_LIST_STATUS_NOTIFY, notify)

    def _announce_online(self, user_id: int) -> None:
        self._broadcast(
            B.CID_OTHER_LOGIN_STATUS_NOTIFY,
            Server_pb2.IMServerPCLoginStatusNotify(user_id=user_id, login_status=1),
        )
        notify = Buddy_pb2.IMUserStatNotify()
        notify.user_stat.user_id = user_id
        notify.user_stat.status = ONLINE
        self._broadcast(B.CID_BUDDY_LIST_STATUS_NOTIFY, notify)

    def users_status(self, user_ids: list[int]) -> list[tuple[int, int]]:
        return [(uid, self.presence.status(uid)) for uid in user_ids]

    def relay(self, origin: NodeLink | None, pdu: bytes, user_ids: list[int] | None) -> None:
        """Forward ``pdu`` to the other links; only to links holding ``user_ids`` if given."""
        self.pdus_in += 1
        if user_ids is None:
            targets = [link for link in self.links if link is not origin]
        else:
            wanted: set[NodeLink] = set()
            missing: set[int] = set()
            for uid in user_ids:
                holders = self.presence.links_of(uid)
                if holders:
                    wanted.update(holders)
                else:
                    missing.add(uid)
            targets = [link for link in self.links if link in wanted and link is not origin]
            if missing:
                if self._parking():
                    self._park(pdu, missing, [*targets, *([origin] if origin else [])])
                elif self._parked:
                    self._parked.clear()
        self.pdus_out += len(targets)
        for link in targets:
            link.send_raw(pdu)

    def relay_packet(
        self, origin: NodeLink | None, command_id: int, message: Message, pdu: bytes
    ) -> bool:
        """Apply ``relay_rule`` to a packet a node sent; False when it is not relayed."""
        rule = relay_rule(command_id, message)
        if rule is None:
            return False
        kind, user_ids = rule
        if kind == TO_ALL:
            self.pdus_in += 1
            self.broadcast(pdu)
        else:
            self.relay(origin, pdu, user_ids if kind == TO_HOLDERS else None)
        return True

    # -- parking during the start-up window ----------------------------------------------

    def _parking(self) -> bool:
        return self.clock is not None and self.clock.seconds() < self._park_until

    def _park(self, pdu: bytes, missing: set[int], sent_to: list[NodeLink]) -> None:
        while len(self._parked) >= MAX_PARKED:
            self._parked.popleft()
        self._parked.append(_Parked(pdu, missing, sent_to))

    @property
    def parked_count(self) -> int:
        return len(self._parked)

    def _deliver_parked(self, link: NodeLink, present: set[int]) -> None:
        if not self._parked:
            return
        if self.clock is None or self.clock.seconds() >= self._park_until:
            self._parked.clear()
            return
        keep: deque[_Parked] = deque()
        for parked in self._parked:
            found = parked.missing & present
            if found:
                parked.missing -= found
                if link not in parked.sent_to:
                    parked.sent_to.append(link)
                    self.pdus_out += 1
                    link.send_raw(parked.pdu)
            if parked.missing:
                keep.append(parked)
        self._parked = keep

    def broadcast(self, pdu: bytes) -> None:
        """To every link, the origin included (signature changes)."""
        self.pdus_out += len(self.links)
        for link in list(self.links):
            link.send_raw(pdu)

    def _broadcast(self, command_id: int, message: Message) -> None:
        """A notify of the hub's own to every link. A link in this process that takes
        the message as well (``LocalLink``) gets it with the bytes, so its node does not
        decode what was encoded a moment ago (two of these per PC login and logout)."""
        pdu = _pdu(command_id, message)
        self.pdus_out += len(self.links)
        for link in list(self.links):
            send_message = getattr(link, "send_message", None)
            if send_message is not None:
                send_message(pdu, message)
            else:
                link.send_raw(pdu)
