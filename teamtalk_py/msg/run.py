"""What names this node run in the store: its connection ids and its message origins.

Each carries a number of this run in its high bits (a random one for connections, the
store's run number for origins), so a stored fact tells whether it came through this
very process (a resend's first copy: ``intake.py``; a relayed message's origin:
``catch_up.py``). A leaf: the intake, the groups, the catch-up and the connection all
use it, and it uses none of them.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, TypeVar

from teamtalk_py.store import origins as origin_store
from teamtalk_py.store.origins import first_origin

T = TypeVar("T")


class ConnectionIds:
    """Connection ids unique in a cluster: a random id of this process run in the high
    31 bits, a counter below. The send facts name connections by them
    (``store/resends.py``), and ``is_this_run`` tells whether a stored message came
    through this very process."""

    def __init__(self, run_id: int | None = None) -> None:
        self.run_id = secrets.randbits(31) if run_id is None else run_id
        self._serials = itertools.count(1)

    def next(self) -> int:
        return self.run_id << 32 | next(self._serials)

    def is_this_run(self, connection_id: int) -> bool:
        return connection_id >> 32 == self.run_id


class Origins:
    """This node run's origins: the next one for a message to store, and how far its
    stored messages have all been handed to route.

    An origin is *open* from ``next()`` until ``settle()``: its store job finished, and
    if the message was stored, it has been relayed (the intake delivers and relays in
    the same turn as the store's callback). ``handed`` is the highest origin below which
    none is open, so a marker never claims a message that is still on its way to the
    store (a group write can commit before a one-to-one batch that got lower origins).
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.run = 0
        self.started = 0.0
        self._last = 0
        self._open: set[int] = set()

    async def register(self, store: Any, node: str) -> None:
        self.started = self.clock.seconds()
        self.run = await store.write(origin_store.register_run, node, int(self.started))
        self._last = first_origin(self.run)

    def next(self) -> int:
        """The origin of the next message submitted for storing (0 before ``register``)."""
        if not self.run:
            return 0
        self._last += 1
        self._open.add(self._last)
        return self._last

    def settle(self, result: T, origin: int) -> T:
        """``origin``'s store job is over (a Deferred callback: passes ``result`` on)."""
        self._open.discard(origin)
        return result

    @property
    def handed(self) -> int:
        """Every origin up to this one has been relayed or will never be."""
        return min(self._open) - 1 if self._open else self._last

    @property
    def age(self) -> int:
        return int(self.clock.seconds() - self.started)
