"""Node B's catch-up (``msg/catch_up.py``) against random interleavings of what a cluster
does to it: node A storing messages and relaying them, A's markers, route forwarding in
order or dying with what it held, either node's link dropping and coming back (route's
lost notice when A's link drops), and B's store reads answering late and in any order.

A's messages are stored in a real SQLite store; the catch-up reads them there. Whatever
the interleaving, once everything is linked again and a few markers have passed, B's
online receiver must have had every message A stored exactly once (live or from the
store). A seed that fails replays exactly: ``TRACE=1`` prints its steps.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task

from teamtalk_py.msg import catch_up as catch_up_module
from teamtalk_py.msg.catch_up import CatchUp, Marker
from teamtalk_py.msg.run import Origins
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol.header import HEADER_SIZE, pack_pdu
from teamtalk_py.route.hub import CID_NODE_LOST
from teamtalk_py.store import messages
from teamtalk_py.store.origins import OriginRow, first_origin
from tests.store_support import SQLiteStoreCase

ALICE, BOB = 1, 2
NOW = 1_700_000_000
#: Seeds per test (``SEEDS=1,2,3`` to choose) and steps per seed. Seed 2 lost messages
#: when a run first heard late was read "from now"; seed 53 when a marker that waited
#: for a catch-up took the link epoch of after the wait.
SEEDS = [int(s) for s in os.environ.get("SEEDS", "").split(",") if s] or range(60)
STEPS = 300


class HeldReads:
    """The store, but each read's answer waits until the interleaving hands it over."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.held: list[tuple[defer.Deferred[Any], defer.Deferred[Any]]] = []

    def read(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        answer: defer.Deferred[Any] = defer.Deferred()
        self.held.append((self.store.read(fn, *args), answer))
        return answer

    async def answer_one(self, rng: random.Random) -> None:
        real, answer = self.held.pop(rng.randrange(len(self.held)))
        answer.callback(await real)


class Cluster:
    """Node A, route and node B's link as queues; B's ``CatchUp`` is the real one."""

    def __init__(self, case: CatchUpInterleavingTests, rng: random.Random) -> None:
        self.case = case
        self.rng = rng
        self.a = case.a
        self.reads = HeldReads(case.database)
        self.a_up = self.b_up = self.route_up = True
        self.a_epoch = self.b_epoch = 1
        self.to_route: list[tuple[str, Any]] = []  # A's link, in order
        self.to_b: list[tuple[str, Any]] = []  # B's link, in order
        self.a_last_marker: Marker | None = None  # route's, for a lost notice
        self.stored: list[int] = []
        self.delivered: Counter[int] = Counter()
        self.trace: list[str] = []
        self.catch_up = CatchUp(
            case.clock, self.reads, case.b, lambda: self.b_epoch, lambda pdu: None,
            self.deliver_caught_up,
        )  # fmt: skip

    async def deliver_caught_up(self, row: OriginRow) -> int:
        self.delivered[row.origin] += 1
        self.trace.append(f"caught up {self.serial(row.origin)}")
        return 1

    def serial(self, origin: int) -> int:
        return origin - first_origin(self.a.run)

    def marker(self) -> Marker:
        return Marker(self.a.run, self.a_epoch, self.a.handed, self.a.age)

    # -- what can happen next ---------------------------------------------------------

    async def a_stores(self) -> None:
        origin = self.a.next()
        now = int(self.case.clock.seconds())
        new = messages.NewMessage(ALICE, BOB, B.MSG_TYPE_SINGLE_TEXT, b"same", now, None, origin)
        await self.case.database.write(messages.store_single_messages, [new])
        self.a.settle(None, origin)
        self.stored.append(origin)
        if self.a_up:  # relayed in the turn it was stored; gone when the link is down
            self.to_route.append(("relay", origin))

    async def a_marks(self) -> None:
        self.to_route.append(("marker", self.marker()))

    async def route_forwards(self) -> None:
        kind, item = self.to_route.pop(0)
        if kind == "marker":
            self.a_last_marker = item
        if self.b_up:
            self.to_b.append((kind, item))

    async def b_reads(self) -> None:
        kind, item = self.to_b.pop(0)
        if kind == "relay":
            live = self.catch_up.live(item)
            self.trace.append(f"relay {self.serial(item)} {'live' if live else 'dropped'}")
            if live:
                self.delivered[item] += 1
        elif kind == "marker":
            self.trace.append(f"marker a{item.epoch} b{self.b_epoch} {self.serial(item.upto)}")
            self.catch_up.marker_received(item.pdu())
        else:
            self.trace.append(f"lost {self.serial(item.upto)}")
            self.catch_up.node_lost(pack_pdu(B.SID_OTHER, CID_NODE_LOST, item.pdu()[HEADER_SIZE:]))

    async def a_link_drops(self) -> None:
        """Route notices A's link gone: what was in flight is lost; B hears of it."""
        self.trace.append("a down")
        self.a_up = False
        self.to_route.clear()
        if self.a_last_marker is not None and self.b_up:
            self.to_b.append(("lost", self.a_last_marker))
        self.a_last_marker = None

    async def a_links(self) -> None:
        self.trace.append("a up")
        self.a_up = True
        self.a_epoch += 1
        self.to_route.append(("marker", self.marker()))  # a marker as soon as it is up

    async def b_link_drops(self) -> None:
        self.trace.append("b down")
        self.b_up = False
        self.to_b.clear()

    async def b_links(self) -> None:
        self.trace.append("b up")
        self.b_up = True
        self.b_epoch += 1

    async def route_dies(self) -> None:
        self.trace.append("route killed")
        self.route_up = self.a_up = self.b_up = False
        self.to_route.clear()
        self.to_b.clear()
        self.a_last_marker = None

    async def route_starts(self) -> None:
        self.route_up = True

    async def store_answers(self) -> None:
        await self.reads.answer_one(self.rng)

    async def time_passes(self) -> None:
        self.case.clock.advance(1.0)

    def choices(self) -> list[tuple[int, Callable[[], Any]]]:
        """What may happen now, with weights."""
        up = self.route_up
        options: list[tuple[int, bool, Callable[[], Any]]] = [
            (30, True, self.a_stores),
            (20, self.a_up, self.a_marks),
            (25, bool(self.to_route), self.route_forwards),
            (25, bool(self.to_b), self.b_reads),
            (10, bool(self.reads.held), self.store_answers),
            (1, up, self.route_dies),
            (1, self.a_up, self.a_link_drops),
            (2, self.b_up, self.b_link_drops),
            (4, up and not self.a_up, self.a_links),
            (4, up and not self.b_up, self.b_links),
            (4, not up, self.route_starts),
            (2, True, self.time_passes),
        ]
        return [(weight, step) for weight, ok, step in options if ok]

    async def run(self, steps: int) -> None:
        for _ in range(steps):
            options = self.choices()
            weights = [weight for weight, _ in options]
            _, step = self.rng.choices(options, weights)[0]
            await step()
        await self.settle()

    async def settle(self) -> None:
        """Everything linked again; a few markers pass; every read answered."""
        self.route_up = True
        if not self.a_up:
            await self.a_links()
        if not self.b_up:
            await self.b_links()
        for _ in range(4):
            await self.a_marks()
            while self.to_route or self.to_b or self.reads.held:
                if self.to_route:
                    await self.route_forwards()
                elif self.to_b:
                    await self.b_reads()
                else:
                    await self.store_answers()
            self.catch_up.tick()


class CatchUpInterleavingTests(SQLiteStoreCase):
    async def setUp(self) -> None:
        await super().setUp()
        self.patch(catch_up_module, "PAGE", 3)  # many pages per catch-up
        self.clock = task.Clock()
        self.clock.advance(NOW)

    async def one_seed(self, seed: int) -> None:
        self.a = Origins(self.clock)
        await self.a.register(self.database, "a")
        self.clock.advance(10)  # b started later: a is the older run
        self.b = Origins(self.clock)
        await self.b.register(self.database, "b")
        cluster = Cluster(self, random.Random(seed))
        # B has heard A once before the messages start.
        cluster.to_b.append(("marker", cluster.marker()))
        await cluster.run(STEPS)
        wrong = [
            (cluster.serial(o), cluster.delivered[o])
            for o in cluster.stored
            if cluster.delivered[o] != 1
        ]
        if wrong and os.environ.get("TRACE"):
            print("\n".join(cluster.trace))
        assert not wrong, f"seed {seed}: (serial, deliveries) {wrong[:10]}"

    async def test_every_stored_message_reaches_the_online_receiver_once(self):
        for seed in SEEDS:
            await self.one_seed(seed)
