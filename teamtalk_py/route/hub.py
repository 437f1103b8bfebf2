"""The route service's logic: the cluster-wide presence table and the relay rules.

``RouteHub`` knows msg nodes only as *links*: objects with ``send_raw(pdu)``. A TCP link
from a remote msg node and the in-process link of a co-hosted msg service look the same
to it, so the rules of commands.md §2.2 live here once.

Three deliberate differences from the reference route server:

* A lost link is an OFFLINE update for each of its connections, with notifications
  (the reference forgets the users silently and they stay "online" forever).
* Because of that, when a node re-registers (``CID_OTHER_ONLINE_USER_INFO`` after a
  reconnect), users we had announced offline when its link dropped are announced online
  again. Users we never announced offline (a restarted route knows nobody) are applied
  silently, as the reference does, so a route restart does not flood every client.
* One-to-one packets go only to the links holding the users they name (§2.2.5 allows it).
  Right after the route service starts, nodes re-register one by one (each on its own
  back-off), so a one-to-one packet for a user whose node has not re-registered yet is
  parked for a while and handed to that node when its online-user list arrives, instead
  of being dropped. This is what makes live delivery survive a route restart; the store
  keeps every acked message regardless.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import Message
from twisted.logger import Logger

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Server_pb2
from teamtalk_py.protocol.header import pack_pdu
from teamtalk_py.protocol.registry import service_of

log = Logger(namespace="teamtalk.route")

ONLINE = B.USER_STATUS_ONLINE
OFFLINE = B.USER_STATUS_OFFLINE


class NodeLink(Protocol):
    def send_raw(self, pdu: bytes) -> None: ...


def is_pc(client_type: int) -> bool:
    return not client_type & 0x10


def _pdu(command_id: int, message: Message) -> bytes:
    return pack_pdu(service_of(command_id), command_id, message.SerializeToString())


class PresenceTable:
    """For each user: which links hold them and how many connections per client type."""

    def __init__(self) -> None:
        self._links: dict[int, dict[NodeLink, Counter[int]]] = {}

    def online(self, link: NodeLink, user_id: int, client_type: int) -> None:
        self._links.setdefault(user_id, {}).setdefault(link, Counter())[client_type] += 1

    def offline(self, link: NodeLink, user_id: int, client_type: int) -> bool:
        """Count one connection gone; False when the link did not hold the user."""
        links = self._links.get(user_id)
        counts = links.get(link) if links else None
        if links is None or counts is None or counts[client_type] <= 0:
            return False
        counts[client_type] -= 1
        if counts[client_type] == 0:
            del counts[client_type]
        if not counts:
            del links[link]
        if not links:
            del self._links[user_id]
        return True

    def has_pc(self, user_id: int) -> bool:
        links = self._links.get(user_id, {})
        return any(is_pc(t) and n > 0 for counts in links.values() for t, n in counts.items())

    def status(self, user_id: int) -> int:
        """ONLINE only when a PC client is connected somewhere (mobile-only is OFFLINE)."""
        return ONLINE if self.has_pc(user_id) else OFFLINE

    def links_of(self, user_id: int) -> list[NodeLink]:
        return list(self._links.get(user_id, {}))

    def connections_on(self, link: NodeLink) -> list[tuple[int, int]]:
        """(user_id, client_type) for every connection counted on ``link``."""
        result = []
        for user_id, links in self._links.items():
            for client_type, n in links.get(link, Counter()).items():
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
)

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

    def attach(self, link: NodeLink) -> None:
        if link not in self.links:
            self.links.append(link)

    def detach(self, link: NodeLink) -> None:
        """A node went away: its users go offline everywhere, with notifications."""
        if link not in self.links:
            return
        for user_id, client_type in self.presence.connections_on(link):
            had_pc = self.presence.has_pc(user_id)
            self.user_status(link, user_id, OFFLINE, client_type)
            if had_pc and not self.presence.has_pc(user_id):
                self._dropped.add(user_id)
        self.links.remove(link)
        for parked in self._parked:
            if link in parked.sent_to:
                parked.sent_to.remove(link)

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
                    link.send_raw(parked.pdu)
            if parked.missing:
                keep.append(parked)
        self._parked = keep

    def broadcast(self, pdu: bytes) -> None:
        """To every link, the origin included (signature changes)."""
        for link in list(self.links):
            link.send_raw(pdu)

    def _broadcast(self, command_id: int, message: Message) -> None:
        self.broadcast(_pdu(command_id, message))
