"""Who may log in to a transfer task, and from where.

TeamTalk's file login names a task id and a user id, and the reference believed both:
anybody who learnt a task id (the protocol is plaintext) could download the file as its
receiver. Here a msg node tells the file service, whenever it creates a task or tells a
user about one (``CID_EXT_FILE_LOGIN_PERMIT_REQ`` over the file-internal link, or a call
in-process), the addresses of that user's connections; a file login for the task is then
accepted only from one of them (compared by ``addresses.address_key``: an IPv6 /64, an
IPv4-mapped address as IPv4).

Permits are kept in memory and, when the file service has a store, in the database too
(``store/file_permits.py``): a restarted file service, or another one of the cluster,
accepts the same logins.

The NAT caveat (README, Security): a client whose msg and file connections leave from
different public addresses (some carrier-grade NATs pool addresses per connection) is
refused; ``file.bind_logins = false`` turns the rule off for such a deployment.

:class:`LoginPermits` is bounded: at most ``size`` (task, user) entries, each forgotten
``ttl`` seconds after it was last granted (a client logs in at once, and is told again
when it asks for its offline files later).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from twisted.internet.interfaces import IReactorTime

from teamtalk_py.addresses import address_key

#: (task, user) entries kept, and for how long after the last grant.
PERMITS_KEPT = 50_000
PERMIT_TTL = 3600.0


class LoginPermits:
    def __init__(self, clock: IReactorTime, size: int = PERMITS_KEPT, ttl: float = PERMIT_TTL):
        self.clock = clock
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[tuple[str, int], tuple[frozenset[str], float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def grant(self, task_id: str, user_id: int, addresses: Iterable[str]) -> None:
        """``user_id`` may log in to ``task_id`` from ``addresses`` (added to earlier ones)."""
        key = (task_id, user_id)
        now = self.clock.seconds()
        known = self._entries.pop(key, (frozenset(), now))[0]
        self._entries[key] = (known | {address_key(a) for a in addresses if a}, now)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def allows(self, task_id: str, user_id: int, address: str) -> bool:
        entry = self._entries.get((task_id, user_id))
        if entry is None:
            return False
        addresses, granted = entry
        if self.clock.seconds() - granted > self.ttl:
            del self._entries[(task_id, user_id)]
            return False
        return address_key(address) in addresses
