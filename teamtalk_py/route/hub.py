"""The route service's logic: the cluster-wide presence table and the relay rules.

``RouteHub`` knows msg nodes only as *links*: objects with ``send_raw(pdu)``. A TCP link
from a remote msg node and the in-process link of a co-hosted msg service look the same
to it, so the rules of commands.md §2.2 live here once.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

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


def _pdu(command_id: int, message) -> bytes:
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
        if counts is None or counts[client_type] <= 0:
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


class RouteHub:
    """Presence and relay across every linked msg node."""

    def __init__(self) -> None:
        self.links: list[NodeLink] = []
        self.presence = PresenceTable()

    def attach(self, link: NodeLink) -> None:
        if link not in self.links:
            self.links.append(link)

    def detach(self, link: NodeLink) -> None:
        """A node went away: its users go offline everywhere, with notifications."""
        if link not in self.links:
            return
        for user_id, client_type in self.presence.connections_on(link):
            self.user_status(link, user_id, OFFLINE, client_type)
        self.links.remove(link)

    def online_user_info(self, link: NodeLink, stats: list[tuple[int, int, int]]) -> None:
        """A node's full list on (re)connect: applied without notifications."""
        for user_id, status, client_type in stats:
            if status != OFFLINE:
                self.presence.online(link, user_id, client_type)

    def user_status(self, link: NodeLink, user_id: int, status: int, client_type: int) -> None:
        """Apply one connection's status change and notify every node (§2.2.3)."""
        if status != OFFLINE:
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

    def users_status(self, user_ids: list[int]) -> list[tuple[int, int]]:
        return [(uid, self.presence.status(uid)) for uid in user_ids]

    def relay(self, origin: NodeLink | None, pdu: bytes, user_ids: list[int] | None) -> None:
        """Forward ``pdu`` to the other links; only to links holding ``user_ids`` if given."""
        if user_ids is None:
            targets = self.links
        else:
            wanted: set[NodeLink] = set()
            for uid in user_ids:
                wanted.update(self.presence.links_of(uid))
            targets = [link for link in self.links if link in wanted]
        for link in targets:
            if link is not origin:
                link.send_raw(pdu)

    def broadcast(self, pdu: bytes) -> None:
        """To every link, the origin included (signature changes)."""
        for link in list(self.links):
            link.send_raw(pdu)

    def _broadcast(self, command_id: int, message) -> None:
        self.broadcast(_pdu(command_id, message))
