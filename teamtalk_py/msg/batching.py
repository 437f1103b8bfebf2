"""Storing the one-to-one messages of one reactor turn together.

Messages join one ``store_single_messages`` job, so the store does its per-pair work once
per job instead of once per message (see ``store/messages.py``). A job leaves at the end
of the reactor turn in which its first message arrived, unless ``MAX_IN_FLIGHT`` jobs are
already with the store: then messages keep gathering until one of those commits. Batches
therefore grow by themselves exactly when the store is the bottleneck, and stay tiny
(low latency) when it is not. Each message still gets its own Deferred, fired only once
its job is committed: an ack never precedes durability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.store import messages
from teamtalk_py.store.messages import Accepted, NewMessage

log = Logger(namespace="teamtalk.msg.batching")


MAX_IN_FLIGHT = 2


#: ``fn(txn, batch)`` storing a batch: the store's own, or push's that adds outbox rows.
StoreBatch = Callable[[Any, Sequence[NewMessage]], list[Accepted]]


#: Messages waiting for one store job, each with the Deferred its sender waits on.
Batch = list[tuple[NewMessage, defer.Deferred[Accepted]]]


class SingleMessageQueue:
    def __init__(
        self,
        reactor: Any,
        store: Any,
        store_batch: StoreBatch = messages.store_single_messages,
        committed: Callable[[], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.store = store
        self.store_batch = store_batch
        #: Called once per committed job, after every message of it is acked.
        self.committed = committed
        self._pending: Batch = []
        self._scheduled = False
        self._in_flight = 0

    @property
    def depth(self) -> int:
        """Messages waiting for the next batch (while earlier ones are being written)."""
        return len(self._pending)

    def store_message(self, message: NewMessage) -> defer.Deferred[Accepted]:
        d: defer.Deferred[Accepted] = defer.Deferred()
        self._pending.append((message, d))
        if not self._scheduled:
            self._scheduled = True
            self.reactor.callLater(0, self.flush)
        return d

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._in_flight >= MAX_IN_FLIGHT:
            return  # a committing job will flush what gathered when it is done
        batch, self._pending = self._pending, []
        self._in_flight += 1
        # Raw callbacks, not async def: this runs once per write batch on the message path;
        # a Deferred with two callbacks cost 18 us where ensureDeferred of a coroutine
        # awaiting it cost 45 us (timeit of the two shapes, load 14, 2026-12-02).
        job = self.store.write(self.store_batch, [m for m, _ in batch])
        job.addCallbacks(self._stored, self._batch_failed, (batch,), None, (batch,))
        job.addBoth(self._job_done)

    def _job_done(self, _: object) -> None:
        self._in_flight -= 1
        self.flush()

    def _stored(self, results: list[Accepted], batch: Batch) -> None:
        for stored, (_, d) in zip(results, batch, strict=True):
            d.callback(stored)
        if self.committed is not None:
            self.committed()

    def _batch_failed(self, failure: Failure, batch: Batch) -> None:
        """One bad message must not cost the others: store them one by one instead.

        Only when the job itself refused its input (nothing of it was written); a failed
        write or COMMIT (the database unreachable, say) fails every message, since a
        COMMIT cut off by a lost connection may have stored them, and storing them again
        would duplicate them.
        """
        if len(batch) == 1 or not failure.check(ValueError, TypeError):
            for _, d in batch:
                d.errback(failure)
            return
        log.warn(
            "batch of {count} messages failed ({error}); storing them one by one",
            count=len(batch),
            error=failure.getErrorMessage(),
        )
        for message, d in batch:
            self.store.write(self.store_batch, [message]).addCallback(
                self._stored_alone
            ).chainDeferred(d)

    def _stored_alone(self, results: list[Accepted]) -> Accepted:
        if self.committed is not None:
            self.reactor.callLater(0, self.committed)  # after the ack
        return results[0]
