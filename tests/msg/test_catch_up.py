"""The catch-up's rules (``msg/catch_up.py``) on a real SQLite store: which of another
node run's messages a node reads from the store after a link broke or the node was lost,
and which it leaves alone. Node A stores; node B's ``CatchUp`` gets A's live copies,
markers and route's lost-node notice as route would hand them over, and records what it
would deliver."""

from __future__ import annotations

from twisted.internet import defer, task

from teamtalk_py.msg.catch_up import CatchUp, Marker
from teamtalk_py.msg.run import Origins
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol.header import HEADER_SIZE, pack_pdu
from teamtalk_py.route.hub import CID_NODE_LOST
from teamtalk_py.store import messages
from teamtalk_py.store.origins import OriginRow, first_origin
from teamtalk_py.store.txn import Txn
from tests.cluster_support import wait_until
from tests.store_support import SQLiteStoreCase

ALICE, BOB = 1, 2
NOW = 1_700_000_000


class CatchUpTests(SQLiteStoreCase):
    async def setUp(self) -> None:
        await super().setUp()
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.a = Origins(self.clock)
        await self.a.register(self.database, "a")
        self.clock.advance(10)  # b started later: a is the older run
        self.b = Origins(self.clock)
        await self.b.register(self.database, "b")
        self.epoch = 1  # b's route-link epoch
        self.delivered: list[OriginRow] = []
        #: When set, a delivery waits for it (a catch-up still running).
        self.hold: defer.Deferred[None] | None = None
        self.catch_up = CatchUp(
            self.clock, self.database, self.b, lambda: self.epoch, lambda pdu: None,
            self.deliver,
        )  # fmt: skip

    async def deliver(self, row: OriginRow) -> int:
        self.delivered.append(row)
        if self.hold is not None:
            await self.hold
        return 1

    async def store(self, count: int, created: int | None = None) -> list[int]:
        """``count`` messages alice -> bob stored by a (now, or at ``created``); their
        origins."""
        when = int(self.clock.seconds()) if created is None else created
        batch = [
            messages.NewMessage(
                ALICE, BOB, B.MSG_TYPE_SINGLE_TEXT, b"same", when, None, self.a.next()
            )  # fmt: skip
            for _ in range(count)
        ]
        accepted = await self.database.write(messages.store_single_messages, batch)
        for new in batch:
            self.a.settle(None, new.origin)
        return [a.message.origin for a in accepted]

    async def marker(self, a_epoch: int) -> Marker:
        """A's marker now, as B gets it."""
        marker = Marker(self.a.run, a_epoch, self.a.handed, 100)
        self.catch_up.marker_received(marker.pdu())
        await self.settled()
        return marker

    async def lost(self, last: Marker) -> None:
        """Route lost A's link; ``last``: the last marker it had relayed from it."""
        self.catch_up.node_lost(pack_pdu(B.SID_OTHER, CID_NODE_LOST, last.pdu()[HEADER_SIZE:]))
        await self.settled()

    async def settled(self) -> None:
        await wait_until(lambda: not any(p.busy for p in self.catch_up.peers.values()))

    def origins_delivered(self) -> list[int]:
        return [row.origin for row in self.delivered]

    async def test_an_unbroken_chain_reads_nothing(self):
        await self.marker(1)
        origins = await self.store(3)
        assert all(self.catch_up.live(o) for o in origins)
        await self.marker(1)
        assert self.delivered == []
        assert self.catch_up.held == 0

    async def test_after_our_link_broke_only_what_did_not_come_live_is_read(self):
        await self.marker(1)
        first, lost, last = await self.store(3)
        assert self.catch_up.live(first) and self.catch_up.live(last)
        self.epoch = 2  # our link came up again in between
        await self.marker(1)
        assert self.origins_delivered() == [lost]
        assert self.delivered[0].message.content == b"same"
        # A copy route held for us arrives late: the catch-up owned it.
        assert not self.catch_up.live(lost)
        assert self.catch_up.held == 0

    async def test_after_the_senders_link_broke_its_whole_gap_is_read(self):
        await self.marker(1)
        origins = await self.store(4)
        await self.marker(2)  # a's link came up again: nothing of it came live
        assert self.origins_delivered() == origins
        await self.marker(2)
        assert len(self.delivered) == 4  # never twice

    async def test_a_marker_that_waited_for_a_catch_up_vouches_only_for_its_own_link(self):
        """A marker that comes while a catch-up runs waits for it. If our link broke and
        came up again meanwhile, that marker still speaks for the link it came on: the
        next one (on the new link) reads what route could not hand us in between."""
        await self.marker(1)
        gap = await self.store(2)  # a's link broke: none of these came live
        self.hold = defer.Deferred()
        self.catch_up.marker_received(Marker(self.a.run, 2, self.a.handed, 100).pdu())
        came = await self.store(2)
        assert all(self.catch_up.live(o) for o in came)
        # Vouches for ``came``, and waits: the catch-up of ``gap`` is still delivering.
        self.catch_up.marker_received(Marker(self.a.run, 2, self.a.handed, 100).pdu())
        self.epoch = 2  # our link broke and came up again
        missed = await self.store(2)  # relayed while route had no link to us
        hold, self.hold = self.hold, None
        hold.callback(None)
        await self.settled()
        await self.marker(2)  # the first marker on our new link
        assert self.origins_delivered() == gap + missed

    async def test_an_older_runs_messages_from_before_we_started_are_not_read(self):
        await self.store(2, created=NOW)  # b started at NOW + 10
        await self.marker(3)
        assert self.delivered == []

    async def test_a_run_first_heard_late_is_read_from_when_we_started(self):
        """We never heard A's markers (our link, or A's, was down since we started): its
        first marker reads what it stored since we started, not from now."""
        await self.store(2, created=NOW)
        since = await self.store(3)
        await self.marker(3)
        assert self.origins_delivered() == since

    async def test_a_run_not_older_than_us_is_read_from_its_start(self):
        await self.a.register(self.database, "a again")  # a restarted after b
        origins = await self.store(2)
        self.catch_up.marker_received(Marker(self.a.run, 1, self.a.handed, 0).pdu())
        await self.settled()
        assert self.origins_delivered() == origins

    async def test_markers_never_claim_a_message_still_on_its_way_to_the_store(self):
        first, second = self.a.next(), self.a.next()
        self.a.settle(None, second)  # a group write committed before an earlier batch
        assert self.a.handed == first - 1
        self.a.settle(None, first)
        assert self.a.handed == second

    # -- a node lost (route's CID_NODE_LOST) -----------------------------------------

    async def test_a_lost_node_is_read_after_its_last_marker_and_each_message_once(self):
        """A was killed: what it stored after its last marker whose relays never came
        is read from the store and delivered once; a late copy is dropped."""
        last = await self.marker(1)
        came, lost_in_socket, also_lost = await self.store(3)
        assert self.catch_up.live(came)
        await self.lost(last)
        assert self.origins_delivered() == [lost_in_socket, also_lost]
        assert self.catch_up.caught_up == 2
        assert not self.catch_up.live(also_lost)  # delivered from the store already
        await self.lost(last)  # route says it again: nothing twice
        assert len(self.delivered) == 2

    async def test_a_hung_node_back_after_its_loss_delivers_nothing_twice(self):
        """A only hung: after the lost notice's catch-up, A links again (a new epoch) and
        marks; that catch-up reads the same range and skips what the notice delivered,
        while what A stores afterwards is delivered once (live or from the store)."""
        last = await self.marker(1)
        before = await self.store(2)
        await self.lost(last)
        assert self.origins_delivered() == before
        after_live, after_lost = await self.store(2)  # A runs again, its link comes back
        assert self.catch_up.live(after_live)
        await self.marker(2)
        assert self.origins_delivered() == [*before, after_lost]
        await self.marker(2)
        assert len(self.delivered) == 3
        assert self.catch_up.held == 0  # the marker passed everything the notice did

    async def test_a_message_the_lost_read_did_not_find_still_comes_live(self):
        """A hung with a message on its way to the store: the notice's read cannot see
        it, so its live copy, once A is back, is delivered, not dropped."""
        last = await self.marker(1)
        stored = await self.store(1)
        on_its_way = self.a.next()  # submitted, not yet committed
        await self.lost(last)
        assert self.origins_delivered() == stored
        assert self.catch_up.live(on_its_way)

    async def test_a_node_lost_before_its_first_marker_is_read_from_its_start(self):
        """A (younger than us) stored and was lost before B heard any marker of it."""
        await self.a.register(self.database, "a again")
        origins = await self.store(2)
        await self.lost(Marker(self.a.run, 1, first_origin(self.a.run), 0))
        assert self.origins_delivered() == origins

    async def test_a_failed_read_of_a_lost_node_is_tried_again(self):
        """The store cannot be read when the notice comes (the table is away): the next
        tick reads again, and A sends no marker any more to trigger it."""
        last = await self.marker(1)
        origins = await self.store(2)
        await self.database.write(rename, "messages", "messages_away")
        await self.lost(last)
        assert self.delivered == []
        assert len(self.flushLoggedErrors()) == 1
        await self.database.write(rename, "messages_away", "messages")
        self.catch_up.tick()
        await self.settled()
        assert self.origins_delivered() == origins


def rename(txn: Txn, table: str, to: str) -> None:
    txn.execute(f"ALTER TABLE {table} RENAME TO {to}")
