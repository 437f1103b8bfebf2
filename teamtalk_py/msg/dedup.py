"""Recognising a resent message so a lost ack does not create a duplicate (TeamTalk #125).

A client that never saw its ack sends the same message again. We key every accepted
message by what a resend keeps identical — sender, session, type, the client's own
``create_time`` and a digest of the payload — and answer a match with the stored id
instead of storing it twice. A resend that arrives while the first copy is still being
written waits for that write. Clients that leave ``create_time`` at 0 are keyed by the
request's seq as well, so two equal "ok"s typed a minute apart stay two messages.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

MessageKey = tuple[int, int, int, int, int, int, bytes]


def message_key(
    from_id: int,
    session_type: int,
    to_id: int,
    msg_type: int,
    create_time: int,
    seq: int,
    data: bytes,
) -> MessageKey:
    digest = hashlib.blake2b(data, digest_size=16).digest()
    return (from_id, session_type, to_id, msg_type, create_time, 0 if create_time else seq, digest)


class RecentMessages:
    """A bounded, time-limited map from message key to its stored id (or pending write)."""

    def __init__(self, clock: IReactorTime, window: float = 600.0, capacity: int = 200_000):
        self.clock = clock
        self.window = window
        self.capacity = capacity
        self._entries: OrderedDict[MessageKey, tuple[float, int | defer.Deferred[int]]] = (
            OrderedDict()
        )

    def lookup(self, key: MessageKey) -> int | defer.Deferred[int] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stamp, value = entry
        if self.clock.seconds() - stamp > self.window:
            del self._entries[key]
            return None
        if isinstance(value, defer.Deferred):
            waiter: defer.Deferred[int] = defer.Deferred()
            value.addBoth(_chain, waiter)
            return waiter
        return value

    def pending(self, key: MessageKey) -> defer.Deferred[int]:
        """Mark ``key`` as being written; resolve it with ``stored`` or ``failed``."""
        d: defer.Deferred[int] = defer.Deferred()
        self._put(key, d)
        return d

    def stored(self, key: MessageKey, msg_id: int) -> None:
        entry = self._entries.get(key)
        self._put(key, msg_id)
        if entry is not None and isinstance(entry[1], defer.Deferred):
            entry[1].callback(msg_id)

    def failed(self, key: MessageKey, failure) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and isinstance(entry[1], defer.Deferred):
            entry[1].errback(failure)
            # Waiting resends got it through their own Deferreds; nobody else wants it.
            entry[1].addErrback(lambda _: None)

    def _put(self, key: MessageKey, value) -> None:
        self._entries[key] = (self.clock.seconds(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def _chain(result, waiter: defer.Deferred):
    if isinstance(result, Failure):
        waiter.errback(result)
    else:
        waiter.callback(result)
    return result


def shared_key(key: MessageKey) -> str:
    """The cluster-wide name of a message key (for ``SharedResends``)."""
    *ids, digest = key
    return "resend:" + ":".join(str(i) for i in ids) + ":" + digest.hex()


class SharedResends:
    """Resends recognised across nodes: a client that lost its ack may reconnect to
    another msg node and send again. Each stored message leaves its id under its key in
    the cluster's shared state (Redis) for ``window`` seconds; a node that misses in its
    own ``RecentMessages`` asks there before storing."""

    def __init__(self, shared, window: float = 600.0) -> None:
        self.shared = shared
        self.window = window

    async def lookup(self, key: MessageKey) -> int | None:
        try:
            value = await self.shared.get(shared_key(key))
        except Exception:
            return None  # shared state down: behave like a single node
        return int(value) if value else None

    def remember(self, key: MessageKey, msg_id: int) -> None:
        d = self.shared.set(shared_key(key), msg_id, ttl=self.window)
        d.addErrback(lambda _: None)  # best effort: the local detector still has it
