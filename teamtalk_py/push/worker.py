"""The push pipeline of one node: outbox -> decision -> queue -> senders.

``PushWorker`` runs two loops, both woken by ``kick()`` (after a message commits) and by
a one-second tick:

* **feed** (at most one round per ``coalesce_window``): read this node's outbox rows
  (and rows an earlier or other node left older than ``outbox_grace``), keep the newest
  message of each conversation (the older ones would be replaced on the device: same
  collapse id), read the facts, ask the cluster presence which targets have a PC online,
  decide the jobs and hand them to the queue, which deletes the rows. The store queue
  leases the jobs it inserts to this node, so they are sent at once without a claim.
  While the queue holds ``max_queue`` jobs (senders down), feeding pauses: new pushes
  wait in the outbox on disk, nothing is dropped and memory stays bounded (one round's
  jobs at most). One log line when that starts, one when the rows held back are all
  queued.
* **send**: at most ``max_in_flight`` jobs at once, from the hand-off or claimed when
  due (retries, jobs of a dead node, Redis Streams); each outcome is settled, one queue
  call at a time for all that finished meanwhile: sent -> gone; dead token -> gone and
  the token removed; refused -> dead letter; retry -> back after an exponential
  back-off with jitter (or the service's Retry-After), dead letter after
  ``max_attempts``. A job older than ``max_age`` is expired with a log line instead of
  being sent.

Counters per sender (``queued``, ``sent``, ``retried``, ``failed``, ``expired``) are kept
in ``counters`` for the metrics endpoint.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.outage import is_outage_failure
from teamtalk_py.push import store as push_store
from teamtalk_py.push.decision import Rules, decide
from teamtalk_py.push.jobs import PushJob
from teamtalk_py.push.queue import Claimed, PushQueue
from teamtalk_py.push.senders.base import Outcome, Result, Sender

log = Logger(namespace="teamtalk.push")

TICK = 1.0
OUTBOX_BATCH = 500
COUNTERS = ("queued", "sent", "retried", "failed", "expired")
#: The jobs of an outbox row with none (never changed).
_NO_JOBS: list[PushJob] = []


@dataclass(frozen=True)
class Limits:
    max_attempts: int = 10
    max_age: float = 3600.0
    max_queue: int = 100000
    max_in_flight: int = 64
    retry_base: float = 1.0
    retry_cap: float = 300.0
    outbox_grace: float = 30.0
    #: A decision round starts at most this often, so under load each round takes the
    #: outbox rows of many commits (fewer queries per message) and a conversation's
    #: messages of one round coalesce into one push; 0: a round per commit, every
    #: message pushed. A message after a quiet spell starts a round at once.
    coalesce_window: float = 0.25


def backoff(attempt: int, limits: Limits, rand: Callable[[], float]) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): exponential, capped, "equal jitter"
    (between half and all of it) so retries of many jobs spread out."""
    delay = min(limits.retry_cap, limits.retry_base * 2 ** (attempt - 1))
    return delay * (0.5 + rand() / 2)


def coalesce(
    decided: list[tuple[int, list[PushJob]]],
) -> list[tuple[int, list[PushJob]]]:
    """Keep only the newest push per device and conversation among those decided
    together: they share a collapse id, so the device would show only the last anyway
    (its badge counts them all). Every outbox row is still handed off."""
    newest: dict[tuple[str, str], int] = {}
    for outbox_id, jobs in decided:
        for job in jobs:
            newest[(job.token, job.collapse_id)] = outbox_id
    return [
        (outbox_id, [j for j in jobs if newest[(j.token, j.collapse_id)] == outbox_id])
        if jobs
        else (outbox_id, jobs)
        for outbox_id, jobs in decided
    ]


class PushCounters:
    """queued / sent / retried / failed / expired per sender."""

    def __init__(self) -> None:
        self.by_sender: dict[str, Counter[str]] = {}

    def add(self, sender: str, what: str, n: int = 1) -> None:
        self.by_sender.setdefault(sender, Counter())[what] += n

    def get(self, sender: str, what: str) -> int:
        return self.by_sender.get(sender, Counter())[what]

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {s: {k: c[k] for k in COUNTERS} for s, c in sorted(self.by_sender.items())}


class PushWorker:
    def __init__(
        self,
        reactor: Any,
        store: Any,
        queue: PushQueue,
        senders: Mapping[str, Sender],
        rules: Rules,
        presence: Callable[[list[int]], defer.Deferred[Collection[int]]],
        *,
        node: str,
        limits: Limits,
        local_hour: Callable[[float], int],
        counters: PushCounters | None = None,
        rand: Callable[[], float] = random.random,
        clock: IReactorTime | None = None,
    ) -> None:
        self.reactor = reactor
        #: The time of day that ages (``max_age``), the outbox grace and the night mute
        #: are read from: the reactor's, like the messages' own times; a test moves it
        #: on instead of waiting an hour. The reactor still schedules the rounds.
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.store = store
        self.queue = queue
        self.senders = senders
        self.rules = rules
        self.presence = presence
        self.node = node
        self.limits = limits
        self.local_hour = local_hour
        self.counters = counters or PushCounters()
        self.rand = rand
        self.in_flight = 0
        #: Queue handles being sent: a job whose lease ran out while its send is still
        #: on its way is not sent a second time by this node.
        self._sending: set[Any] = set()
        #: A feed round is running; ``_fed`` fires when one ends.
        self._feeding = False
        self._fed = _Signal()
        self._last_feed = float("-inf")
        self._feed_call: Any = None
        self._feed_again = False
        self._claiming = False
        self._more_due = True
        self._held_back = False
        self._settling: tuple[list[Claimed], list[Any], list[Any]] = ([], [], [])
        self._settle_scheduled = False
        #: A settle is running; ``_settled`` fires when one ends.
        self._settling_now = False
        self._settled = _Signal()
        #: Jobs leased to this node at hand-off, waiting for a free sending slot.
        self._ready: deque[Claimed] = deque()
        #: ``_send_ready`` is running: a call from inside it (a sender that answered at
        #: once) returns, and the running loop goes on.
        self._dispatching = False
        self._room = _Signal()
        self._tick = LoopingCall(self.tick)
        self._tick.clock = reactor
        self._running = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._tick.start(TICK, now=True)

    async def stop(self) -> None:
        self._running = False
        if self._tick.running:
            self._tick.stop()
        if self._feed_call is not None and self._feed_call.active():
            self._feed_call.cancel()
        if self._feeding:
            await self._fed.wait()
        self._room.fire()
        self._flush_settle()
        while self._settling_now:
            await self._settled.wait()

    def tick(self) -> None:
        self._more_due = True
        self.kick()

    def kick(self) -> None:
        """Something may be waiting: a message committed, or time passed."""
        if not self._running:
            return
        self.feed()
        self.pump()

    # -- outbox -> queue -------------------------------------------------------------

    def feed(self) -> None:
        if self._feeding:
            self._feed_again = True
            return
        wait = self._last_feed + self.limits.coalesce_window - self.reactor.seconds()
        if wait > 0:
            if self._feed_call is None or not self._feed_call.active():
                self._feed_call = self.reactor.callLater(wait, self.feed)
            return
        self._last_feed = self.reactor.seconds()
        self._feed_again = False
        self._feeding = True
        defer.ensureDeferred(self._feed_round())

    async def _feed_round(self) -> None:
        """One round of ``_feed``; a failure is logged (the rows wait in the outbox), and a
        kick that came meanwhile starts the next round."""
        try:
            await self._feed()
        except Exception:
            failure = Failure()
            if not is_outage_failure(failure):  # an outage: its own log says so
                log.warn(
                    "push: deciding pushes failed ({error}); retrying",
                    error=failure.getErrorMessage(),
                )
        finally:
            self._feeding = False
        self._fed.fire()
        if self._feed_again and self._running:
            self.feed()

    async def _feed(self) -> None:
        max_queue = self.limits.max_queue
        # The embedded queue's depth is counted in the round's own read.
        in_store = self.queue.depth_in_store
        while self._running:
            limit = OUTBOX_BATCH
            if not in_store:
                depth = await self.queue.depth()
                if self._full(depth):
                    return
                limit = min(limit, max_queue - depth)
            now = self.clock.seconds()
            # Only the newest message of each conversation is decided when coalescing:
            # the older ones' rows are handed off with no push (their content not read).
            found = await self.store.read(
                push_store.outbox_round,
                self.node,
                int(now - self.limits.outbox_grace),
                limit,
                self.limits.coalesce_window > 0,
                max_queue if in_store else None,
            )
            if found.queue_depth is not None:
                if self._full(found.queue_depth):
                    return
                limit = min(limit, max_queue - found.queue_depth)
            ids, facts = found.ids, found.facts
            if not ids:
                self._caught_up()
                return
            targets = sorted(
                {u for users in facts.targets.values() for u in users} & set(facts.tokens)
            )
            pc_online = await self.presence(targets) if targets else ()
            hour = self.local_hour(now)
            jobs_of = {
                row.id: decide(row, facts, pc_online, hour, self.rules) for row in found.decide
            }
            # Most rows of a busy conversation have no jobs (coalesced): one shared empty
            # list for them, not a list each.
            decided = [(outbox_id, jobs_of.get(outbox_id, _NO_JOBS)) for outbox_id in ids]
            if self.limits.coalesce_window > 0:
                decided = coalesce(decided)
            handed = await self.queue.hand_off(decided)
            queued = set(handed.queued)
            for outbox_id, jobs in decided:
                if outbox_id in queued:
                    for job in jobs:
                        self.counters.add(job.sender, "queued")
            self._ready.extend(handed.leased)
            self._send_ready()
            if any(jobs for _, jobs in decided) and not handed.leased:
                self._more_due = True  # queued for whoever claims them (Redis Streams)
                self.pump()
            while self._running and len(self._ready) > self.limits.max_in_flight:
                await self._room.wait()  # back-pressure: one batch of jobs in memory
            if len(ids) < limit:
                self._caught_up()
                return

    def _full(self, depth: int) -> bool:
        """The queue holds ``max_queue`` jobs: new pushes wait in the outbox (one log
        line when that starts)."""
        if depth < self.limits.max_queue:
            return False
        if not self._held_back:
            log.warn(
                "push: {depth} pushes queued, the limit; new pushes wait in the "
                "outbox until senders catch up",
                depth=depth,
            )
        self._held_back = True
        return True

    def _caught_up(self) -> None:
        """The outbox's waiting rows are all queued: a hold-back, if any, is over.

        Not when the queue merely dips below ``max_queue``: while senders are slower
        than the messages, each round refills it to the limit, and the two lines came
        once per round (each tick) for as long as the backlog lasted."""
        if self._held_back:
            log.info("push: the pushes held back in the outbox are all queued")
            self._held_back = False

    # -- queue -> senders ------------------------------------------------------------

    def pump(self) -> None:
        free = self.limits.max_in_flight - self.in_flight
        if not self._running or self._claiming or not self._more_due or free <= 0:
            return
        if self.in_flight and free < self.limits.max_in_flight // 2:
            return  # claim in batches, not one job per completion
        self._claiming = True
        defer.ensureDeferred(self._claim(free))

    async def _claim(self, asked: int) -> None:
        """Claim up to ``asked`` due jobs and send them; a failure waits for the next tick."""
        try:
            try:
                claimed = await self.queue.claim(asked)
            except Exception:
                self._more_due = False  # the next tick tries again
                failure = Failure()
                if not is_outage_failure(failure):
                    log.warn(
                        "push: claiming jobs failed ({error})", error=failure.getErrorMessage()
                    )
            else:
                self._more_due = len(claimed) >= asked
                for item in claimed:
                    self._dispatch(item)
        finally:
            self._claiming = False
        if self._more_due:
            self.pump()

    def _send_ready(self) -> None:
        """Dispatch leased jobs while there are free slots.

        A sender may answer at once (push_server while its link is down), so
        ``_dispatch`` -> ``_answered`` -> ``_send_ready`` would recurse once per ready job:
        a hand-off of a few hundred jobs overflowed the stack, and the jobs caught in it
        stayed marked as sending (never sent again) with their slots taken, until the
        node stopped sending at all. The call from inside returns; this loop goes on."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._ready and self.in_flight < self.limits.max_in_flight:
                self._dispatch(self._ready.popleft())
        finally:
            self._dispatching = False
        if len(self._ready) <= self.limits.max_in_flight:
            self._room.fire()

    def _dispatch(self, item: Claimed) -> None:
        """Send one job, or expire it, or dead-letter it when nobody can send it."""
        now = self.clock.seconds()
        job = item.job
        age = now - job.created
        if age > self.limits.max_age:
            log.warn(
                "push {key} to user {user_id} via {sender} expired after {age:.0f} s "
                "({attempts} attempts)",
                key=job.key,
                user_id=job.user_id,
                sender=job.sender,
                age=age,
                attempts=item.attempts,
            )
            self.counters.add(job.sender, "expired")
            self._settle_done(item)
            return
        if item.handle in self._sending:
            return
        sender = self.senders.get(job.sender)
        if sender is None:
            self.counters.add(job.sender, "failed")
            self._settle_dead(item, f"no sender {job.sender!r} configured")
            return
        self.in_flight += 1
        self._sending.add(item.handle)
        defer.ensureDeferred(self._send(sender, item))

    async def _send(self, sender: Sender, item: Claimed) -> None:
        """The sender's answer, settled; a sender that fails outright means: try again
        later."""
        try:
            outcome = await sender.send(item.job)
        except Exception as e:
            outcome = Outcome(Result.RETRY, f"sender error: {e}")
        self._answered(outcome, item)

    def _answered(self, outcome: Outcome, item: Claimed) -> None:
        self.in_flight -= 1
        self._sending.discard(item.handle)
        job = item.job
        result = outcome.result
        if result is Result.SENT:
            self.counters.add(job.sender, "sent")
            self._settle_done(item)
        elif result is Result.DEAD_TOKEN:
            log.info(
                "push: {sender} says the token of user {user_id} is dead ({detail}); removed",
                sender=job.sender,
                user_id=job.user_id,
                detail=outcome.detail,
            )
            self.counters.add(job.sender, "failed")
            defer.ensureDeferred(self._remove_token(job))
            self._settle_done(item)
        elif result is Result.RETRY and item.attempts + 1 < self.limits.max_attempts:
            self.counters.add(job.sender, "retried")
            delay = backoff(item.attempts + 1, self.limits, self.rand)
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            self._settle(retry=(item, delay, outcome.detail))
        else:
            log.warn(
                "push {key} to user {user_id} via {sender} failed after {attempts} attempts "
                "({detail}); moved to the dead letter",
                key=job.key,
                user_id=job.user_id,
                sender=job.sender,
                attempts=item.attempts + 1,
                detail=outcome.detail,
            )
            self.counters.add(job.sender, "failed")
            self._settle_dead(item, outcome.detail)
        self._send_ready()
        self.pump()

    async def _remove_token(self, job: PushJob) -> None:
        try:
            await self.store.write(push_store.remove_token, job.user_id, job.token)
        except Exception:
            log.failure("push: removing a dead token failed")

    # -- settling, one queue call per reactor turn -------------------------------------

    def _settle_done(self, item: Claimed) -> None:
        self._settling[0].append(item)
        self._schedule_settle()

    def _settle_dead(self, item: Claimed, error: str) -> None:
        self._settling[2].append((item, error))
        self._schedule_settle()

    def _settle(self, retry: tuple[Claimed, float, str]) -> None:
        self._settling[1].append(retry)
        self._schedule_settle()

    def _schedule_settle(self) -> None:
        if not self._settle_scheduled:
            self._settle_scheduled = True
            self.reactor.callLater(0, self._flush_settle)

    def _flush_settle(self) -> None:
        """One settle at a time: what finishes meanwhile goes in the next one, so the
        store sees one push write per commit however many pushes complete."""
        self._settle_scheduled = False
        done, retry, dead = self._settling
        if self._settling_now or not (done or retry or dead):
            return
        self._settling = ([], [], [])
        self._settling_now = True
        defer.ensureDeferred(self._settle_batch(done, retry, dead))

    async def _settle_batch(self, done: list[Claimed], retry: list[Any], dead: list[Any]) -> None:
        try:
            await self.queue.settle(done, retry, dead)
        except Exception:
            log.warn(
                "push: settling {n} jobs failed ({error}); they are sent again after their lease",
                n=len(done) + len(retry) + len(dead),
                error=Failure().getErrorMessage(),
            )
        finally:
            self._settling_now = False
        self._flush_settle()
        self._settled.fire()


class _Signal:
    """Wake whoever waits for room; ``wait()`` returns a Deferred fired by ``fire()``."""

    def __init__(self) -> None:
        self._waiters: list[defer.Deferred[None]] = []

    def wait(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d

    def fire(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
