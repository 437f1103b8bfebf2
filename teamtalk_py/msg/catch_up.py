"""Live delivery that survives any route outage: what a node missed, it reads from the store.

Relayed messages travel msg node → route → msg node. When a link breaks (route killed or
hung, a node hung or cut off), the packets in flight and those relayed while it is down
are gone; the messages themselves are stored (acked only once durable), so the store
says exactly what a node's online users missed, if the node knows what to ask for.

**Origins.** Every message a node stores carries its *origin*: the node's run number
(``store/origins.py``) and a serial counting up in commit order. A relayed copy carries
its origin in ``attach_data`` (``relay_tag``), which the receiving node strips before its
clients see the message.

**Markers.** Every ``MARKER_INTERVAL`` each node sends every other node, through route,
``CID_DELIVERED_UPTO``: its run, its route-link *epoch* (how many times its link came up)
and the highest origin it has handed to route (or dropped while the link was down). A
link is ordered, so when a marker arrives, every relay of that node up to that origin
that was going to arrive has arrived — *if* neither end's link broke since the previous
marker (same epoch at both ends; ours is the one of the link the marker came on, even
when the marker has to wait for a catch-up in progress). Then the marker just
confirms. If an epoch changed,
the range between the previous marker and this one is uncertain, and the receiver reads
that one range of the sender's messages from the store (``messages_between``, one index
range) and delivers to its connections, once, what did not come live:

* live copies are remembered by origin until a marker confirms past them, and skipped;
* a live copy that arrives after its marker (one route held for a node that had not
  re-registered yet) is dropped: the catch-up owns that range;
* a connection gets a caught-up message only if it was logged in when the message was
  stored; one that logged in later has it in its unread count and history already;
* group messages go to the members online here who may see them (join watermarks);
* a run heard of for the first time (its first marker, or route's lost notice) is read
  from its last message stored before this node started: nothing older was for anyone
  here, and links may have been down since we started, so "from now" would miss some.

**A lost node.** A node killed (or hung past route's link deadline) may have stored and
acked messages after its last marker whose relays were still in its socket: no marker of
that run will ever cover them. Route sends every other node ``CID_NODE_LOST`` with the
lost link's last marker; each reads that run's messages after the last origin it had
confirmed, to the end of the run, and delivers what did not come live (same rules). The
origins it delivered are remembered as *done* above ``confirmed``: a hung node that comes
back sends a marker with a new epoch, whose catch-up skips them, and its late live copies
of them are dropped. (A run never linked to route, or lost while route itself was away,
gets no notice: its messages are left to unread and history.)

So nothing acked is left undelivered to a receiver online throughout, however long the
outage, and nothing is delivered twice. What a node keeps for another is a set of origins
received since that node's last marker (a second of its traffic), after a lost notice
the origins delivered from the store past its last marker (until a later marker passes
them, or the run is forgotten after ``PEER_TTL``), and a few numbers; nothing grows
while a link is down. The relay backlog (``route_client``) keeps no
messages.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from teamtalk_py.msg.intake import delivery_of
from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.protocol.header import HEADER_SIZE, pack_pdu
from teamtalk_py.route.hub import CID_DELIVERED_UPTO
from teamtalk_py.store import origins as origin_store
from teamtalk_py.store.origins import SERIAL_MASK, OriginRow, first_origin, run_of
from teamtalk_py.wire.protocol import encode

if TYPE_CHECKING:
    from teamtalk_py.msg.groups import Groups
    from teamtalk_py.msg.online import OnlineUsers
    from teamtalk_py.msg.run import Origins

log = Logger(namespace="teamtalk.msg.catch_up")

_MARKER = struct.Struct(">QIQI")
#: Seconds between two markers of a node.
MARKER_INTERVAL = 1.0
#: Messages read from the store per page of a catch-up.
PAGE = 500
#: A node run not heard from for this long is forgotten (it stopped, or was replaced).
PEER_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class Marker:
    run: int
    #: The sender's route-link epoch.
    epoch: int
    #: Every origin of the sender up to this one has been handed to route (or dropped).
    upto: int
    #: Seconds since the sender's run started.
    age: int

    def pdu(self) -> bytes:
        body = _MARKER.pack(self.run, self.epoch, self.upto, self.age)
        return pack_pdu(B.SID_OTHER, CID_DELIVERED_UPTO, body)

    @classmethod
    def from_pdu(cls, pdu: bytes) -> Marker | None:
        body = pdu[HEADER_SIZE:]
        if len(body) != _MARKER.size:
            return None
        return cls(*_MARKER.unpack(body))


@dataclass
class _Peer:
    """What this node knows of another node run's deliveries to it."""

    #: Every origin of the peer up to this one is handled here (None: not yet known).
    confirmed: int | None = None
    #: Origins up to this one belong to a marker already seen (live copies are late).
    claimed: int = 0
    epoch: int = -1
    our_epoch: int = -1
    #: Origins delivered live above ``claimed``.
    live: set[int] = field(default_factory=set)
    #: Origins above ``confirmed`` a catch-up delivered (or found delivered): a live copy
    #: of one is late, and a later catch-up skips it.
    done: set[int] = field(default_factory=set)
    heard: float = 0.0
    busy: bool = False
    #: A marker that came while a catch-up ran, with our link epoch when it came.
    pending: tuple[Marker, int] | None = None
    #: A lost notice (its last marker) waiting for the catch-up in progress.
    lost: Marker | None = None
    #: A lost notice whose catch-up failed, tried again at the next tick.
    retry: Marker | None = None


#: Delivers one stored message to the connections here that missed it; the count.
DeliverCaughtUp = Callable[[OriginRow], Awaitable[int]]


class CatchUp:
    """Sends this node's markers and reads from the store what others' markers say it
    missed (module docstring)."""

    def __init__(
        self,
        clock: Any,
        store: Any,
        origins: Origins,
        link_epoch: Callable[[], int],
        send_marker: Callable[[bytes], None],
        deliver: DeliverCaughtUp,
    ) -> None:
        self.clock = clock
        self.store = store
        self.origins = origins
        self.link_epoch = link_epoch
        self.send_marker = send_marker
        self.deliver = deliver
        self.peers: dict[int, _Peer] = {}
        #: Messages delivered from the store (a metric).
        self.caught_up = 0
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(MARKER_INTERVAL, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def tick(self) -> None:
        self.mark()
        horizon = self.clock.seconds() - PEER_TTL
        for run, peer in list(self.peers.items()):
            if peer.busy:
                continue
            if peer.heard < horizon:
                del self.peers[run]
            elif peer.retry is not None:
                peer.lost, peer.retry = peer.retry, None
                self._next(peer)

    def mark(self) -> None:
        """This run's marker, now: every ``MARKER_INTERVAL``, and as soon as the route
        link is up (so route knows the link's run before its first relay)."""
        origins = self.origins
        if origins.run:
            self.send_marker(
                Marker(origins.run, self.link_epoch(), origins.handed, origins.age).pdu()
            )

    @property
    def held(self) -> int:
        """Origins remembered for other nodes (a metric: bounded by a marker's worth,
        and by what lost nodes stored after their last marker)."""
        return sum(len(peer.live) + len(peer.done) for peer in self.peers.values())

    # -- what arrives from route -------------------------------------------------------

    def live(self, origin: int) -> bool:
        """A relayed message with ``origin`` arrived: False when a catch-up owns it."""
        run = run_of(origin)
        if not origin or run == self.origins.run:
            return True
        peer = self.peers.get(run)
        if peer is None:
            peer = self.peers[run] = _Peer(heard=self.clock.seconds())
        if origin <= peer.claimed or origin in peer.done:
            return False
        peer.live.add(origin)
        return True

    def marker_received(self, pdu: bytes) -> None:
        marker = Marker.from_pdu(pdu)
        if marker is None:
            log.info("ignoring a malformed delivery marker")
            return
        if marker.run == self.origins.run:
            return
        peer = self.peers.get(marker.run)
        if peer is None:
            peer = self.peers[marker.run] = _Peer()
        peer.heard = self.clock.seconds()
        # Our epoch now, while the link it came on is the one up: a marker that waits
        # for a catch-up still vouches only for that link's relays.
        our_epoch = self.link_epoch()
        if peer.busy:
            peer.pending = marker, our_epoch
            return
        self._apply(peer, marker, our_epoch)

    def node_lost(self, pdu: bytes) -> None:
        """Route lost a node's link (``CID_NODE_LOST``, with that link's last marker)."""
        marker = Marker.from_pdu(pdu)
        if marker is None:
            log.info("ignoring a malformed node-lost notice")
            return
        if marker.run == self.origins.run:
            return  # route lost us for a while: we link again and mark
        peer = self.peers.get(marker.run)
        if peer is None:
            peer = self.peers[marker.run] = _Peer()
        peer.heard = self.clock.seconds()
        peer.lost, peer.retry = marker, None
        if not peer.busy:
            self._next(peer)

    def _lost(self, peer: _Peer, marker: Marker) -> None:
        """Read the lost run from the last origin confirmed here to its end: the messages
        it stored whose relays may have died with its link; deliver each once."""
        # Whatever comes next from this run (a hung node back) reads from ``confirmed``
        # (None, lost before we heard a marker of it: from where a first marker would).
        peer.epoch = -1
        peer.busy = True
        end = first_origin(marker.run) | SERIAL_MASK
        d = defer.ensureDeferred(self._catch_up(peer, marker.run, peer.confirmed, end, True))
        d.addErrback(self._lost_failed, peer, marker)
        d.addBoth(lambda _: self._next(peer))

    def _apply(self, peer: _Peer, marker: Marker, our_epoch: int) -> None:
        lo: int | None
        if peer.confirmed is None:
            # First word from this run: read it from where we started (``_catch_up``).
            # Links may have broken before it reached us (we never heard the run's
            # markers, or it never reached route), so "now" is not a safe start.
            lo = None
        elif marker.epoch == peer.epoch and our_epoch == peer.our_epoch:
            lo = marker.upto  # nothing broke between its last marker and this one
        else:
            lo = peer.confirmed
        peer.epoch, peer.our_epoch = marker.epoch, our_epoch
        peer.claimed = max(peer.claimed, marker.upto)
        if lo is not None and lo >= marker.upto:
            self._confirmed(peer, marker.upto)
            return
        peer.busy = True
        d = defer.ensureDeferred(self._catch_up(peer, marker.run, lo, marker.upto, False))
        d.addCallbacks(
            lambda _: self._confirmed(peer, marker.upto),
            lambda f: self._failed(peer, f),
        )
        d.addBoth(lambda _: self._next(peer))

    def _confirmed(self, peer: _Peer, upto: int) -> None:
        peer.confirmed = upto
        peer.live = {origin for origin in peer.live if origin > upto}
        peer.done = {origin for origin in peer.done if origin > upto}

    def _failed(self, peer: _Peer, failure: Any) -> None:
        # The store could not be read: leave ``confirmed`` where it was and break the
        # chain, so the next marker asks for the whole range again.
        peer.epoch = -1
        log_failure(log, "catching up from the store failed; retrying at the next marker",
                    failure)  # fmt: skip

    def _lost_failed(self, failure: Any, peer: _Peer, marker: Marker) -> None:
        # The next tick tries again (what was delivered meanwhile is ``done``).
        peer.retry = marker
        log_failure(log, "catching up a lost node from the store failed; retrying",
                    failure)  # fmt: skip

    def _next(self, peer: _Peer) -> None:
        """The catch-up in progress is over: a waiting lost notice, then a waiting
        marker (arrival order does not matter: each reads from ``confirmed``, and
        nothing is delivered twice)."""
        peer.busy = False
        lost, peer.lost = peer.lost, None
        if lost is not None:
            self._lost(peer, lost)
            return
        pending, peer.pending = peer.pending, None
        if pending is not None:
            self._apply(peer, *pending)

    async def _catch_up(
        self, peer: _Peer, run: int, after: int | None, upto: int, lost: bool
    ) -> None:
        """Deliver the run's stored messages in ``(after, upto]`` that neither came live
        nor were delivered by an earlier catch-up (checked as each is reached: live
        copies may still arrive meanwhile). ``after`` None: from the run's last message
        stored before this run of ours started (nobody here could have had the earlier
        ones; a run younger than ours is read from its start)."""
        if after is None:
            after = await self.store.read(
                origin_store.last_stored_before, run, upto, int(self.origins.started)
            )
        start, delivered, read, last = after, 0, 0, after
        while after < upto:
            rows = await self.store.read(origin_store.messages_between, after, upto, PAGE)
            for row in rows:
                if row.origin in peer.live or row.origin in peer.done:
                    continue
                peer.done.add(row.origin)
                delivered += await self.deliver(row)
            read += len(rows)
            if rows:
                last = rows[-1].origin
            if len(rows) < PAGE:
                break
            after = rows[-1].origin
        self.caught_up += delivered
        if lost:
            log.info(
                "node run {run} lost: {read} messages it stored after its last marker confirmed "
                "here read from the store ({first}..{last}), {delivered} deliveries here",
                read=read,
                run=run,
                first=start - first_origin(run) + 1,
                last=last - first_origin(run),
                delivered=delivered,
            )
        elif read:
            log.info(
                "caught up from the store: {read} messages of node run {run} missed while "
                "a link was down ({first}..{last}), {delivered} deliveries here",
                read=read,
                run=run,
                first=start - first_origin(run) + 1,
                last=upto - first_origin(run),
                delivered=delivered,
            )


async def deliver_stored(online: OnlineUsers, groups: Groups, row: OriginRow) -> int:
    """A stored message to the connections here that should have had it live: those of
    its users (one-to-one: both; group: the members who may see it) logged in when it was
    stored. How many got it."""
    message = row.message
    if row.session_type == B.SESSION_TYPE_SINGLE:
        users: Any = (message.to_id, message.from_id)
    else:
        members = await groups.members(message.to_id)
        if members is None:
            return 0  # dissolved since
        users = members.receivers(message.msg_id, None)
    pdu = encode(B.CID_MSG_DATA, delivery_of(message))
    sent = 0
    for user_id in users:
        for conn in online.connections_of(user_id):
            if getattr(conn, "logged_in_at", 0) <= message.created:
                conn.send_raw(pdu)
                sent += 1
    return sent
