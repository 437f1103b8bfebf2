"""Which msg nodes exist and how loaded they are; picks the node for a new client.

Kept apart from HTTP and from links so the choice rule (commands.md §2.4) is testable on
its own: among nodes below their connection limit, the one with the fewest connections;
ties go to the node registered first.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class MsgNode:
    """One msg node as the login service knows it."""

    ip1: str
    ip2: str
    port: int
    max_conn_cnt: int
    host_name: str = ""
    cur_conn_cnt: int = 0
    #: For a co-hosted msg service: read the live count instead of counting reports.
    live_count: Callable[[], int] | None = None
    order: int = field(default=0)

    def load(self) -> int:
        return self.live_count() if self.live_count is not None else self.cur_conn_cnt


class NoMsgNode(Exception):
    """No msg node is registered (discovery code 1)."""


class AllNodesFull(Exception):
    """Every msg node is at its connection limit (discovery code 2)."""


class MsgNodeRegistry:
    """The msg nodes currently offered to clients."""

    def __init__(self) -> None:
        self._nodes: dict[object, MsgNode] = {}
        self._order = itertools.count()

    def register(self, key: object, node: MsgNode) -> None:
        """Add or replace the node reported over ``key`` (a link or the local service)."""
        node.order = next(self._order)
        self._nodes[key] = node

    def unregister(self, key: object) -> None:
        self._nodes.pop(key, None)

    def get(self, key: object) -> MsgNode | None:
        return self._nodes.get(key)

    def __len__(self) -> int:
        return len(self._nodes)

    def items(self) -> list[tuple[object, MsgNode]]:
        """(key, node) of every registered node (the admin API's node list)."""
        return list(self._nodes.items())

    def total_connections(self) -> int:
        return sum(node.load() for node in self._nodes.values())

    def choose(self) -> MsgNode:
        """The least loaded node that is not full."""
        if not self._nodes:
            raise NoMsgNode()
        candidates = [n for n in self._nodes.values() if n.load() < n.max_conn_cnt]
        if not candidates:
            raise AllNodesFull()
        return min(candidates, key=lambda n: (n.load(), n.order))


class NodeAddressPolicy:
    """Which client addresses a msg node may register (``cluster.node_addresses``).

    A node tells the login service where to send new clients, and clients then send that
    address the MD5 of their password, so a registration naming a foreign host is refused
    even from a node that knows the cluster secret. Entries are IP addresses, networks
    (CIDR) or host names (matched exactly, case-insensitively). With no entries a node may
    only name the address its own link comes from.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries = tuple(e.strip() for e in entries)
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()
        for entry in self.entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.lower())

    @property
    def configured(self) -> bool:
        return bool(self.networks or self.names)

    def allows(self, address: str, link_host: str) -> bool:
        """May a node linked from ``link_host`` send clients to ``address``?"""
        if not self.configured:
            return _same_host(address, link_host)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address.lower() in self.names
        return any(ip in network for network in self.networks)


def _same_host(address: str, link_host: str) -> bool:
    try:
        return ipaddress.ip_address(address) == ipaddress.ip_address(link_host)
    except ValueError:
        return False
