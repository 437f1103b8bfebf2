"""The intake of chat messages: every ``CID_MSG_DATA`` a client sends, one-to-one or group.

One path for both: **validate → refuse → store (recognising a resend) → ack once durable →
deliver on this node → relay through route**. What differs between a one-to-one and a
group message is a ``Topic``: its own refusals, how it is stored, and who receives it
(``SingleTopic`` below, ``GroupTopic`` in ``groups.py``).

**Refusals get no answer.** A message we do not store (over the sender's limits in
``limits.py``, empty, larger than ``msg.max_message_size``, addressed to yourself or to an
unknown user, a non-member's group message, or one whose write failed) is logged and left
without an ack, as the reference does. Read in ``mogujie/TeamTalk``: Android throws on an ack with
``msg_id <= 0`` inside its response callback, which leaves the message "sending" for good,
while silence lets its 6 s timeout mark it failed with a resend button; iOS and Mac take any
ack as success (the message shows as sent, with id 0), while silence fails it after 10 s /
8 s; Windows stores an ack's id as if sent, while silence makes it retry once after 5 s and
then show "send failed". Every shipped client handles silence well, and none handles
``msg_id = 0`` well, for every reason alike; after a failed write the client's timeout and
resend button let the user try again. ``checks`` is the list of refusal checks every
message passes (``basic_checks``; more can be appended); a topic adds its own.

**Resends.** A TeamTalk message carries no client message id, so the server must never take
two messages from one connection for one: N identical messages on a connection are N
messages. A message is recognised as the resend of a stored one only when it repeats
sender, session, type, a non-zero client ``create_time`` and payload byte for byte, within
``RESEND_WINDOW`` seconds, on *another* connection of the same client category (PC or
mobile) as the first copy. A user holds at most one PC and one mobile connection (a new
login kicks the older one everywhere), so by then the first copy's connection has closed:
its ack may have been lost. The store looks the first copy up in the same transaction that
would store the message (``store/resends.py``), so the fact is as durable as the message
and every node of a cluster sees it. Clients that send ``create_time = 0`` (iOS, Mac) are
never deduplicated. The resend is acked with the stored id; it is delivered again only when
another node run stored the first copy (that node may have died before delivering it;
clients keep one message per id, so a second delivery is harmless).
"""

from __future__ import annotations

import hashlib
import inspect
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from teamtalk_py.msg.limits import MessageLimits, OverLimit
from teamtalk_py.msg.online import Mind
from teamtalk_py.msg.relay_tag import relay_tag
from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2
from teamtalk_py.store import resends
from teamtalk_py.store.messages import Accepted, NewMessage, StoredMessage
from teamtalk_py.store.resends import RESEND_WINDOW, SendKey
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import encode

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from prometheus_client import Counter

    from teamtalk_py.config import MsgConfig
    from teamtalk_py.msg.batching import SingleMessageQueue
    from teamtalk_py.msg.online import OnlineUsers
    from teamtalk_py.msg.route_client import InProcessRoute, LinkedRoute
    from teamtalk_py.msg.run import ConnectionIds, Origins
    from teamtalk_py.store.service import StoreService

log = Logger(namespace="teamtalk.msg.intake")

SESSION_TYPE_NAMES = {B.SESSION_TYPE_SINGLE: "single", B.SESSION_TYPE_GROUP: "group"}
SINGLE_TYPES = (B.MSG_TYPE_SINGLE_TEXT, B.MSG_TYPE_SINGLE_AUDIO)
GROUP_TYPES = (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO)
#: Seconds between two prunings of send facts older than the resend window.
PRUNE_INTERVAL = 60.0

Reason = str | None
#: A refusal check: why ``msg`` from ``conn`` cannot be accepted, or None when it can.
RefusalCheck = Callable[["Sender", Message_pb2.IMMsgData], Reason | Awaitable[Reason]]


class Sender(Mind, Protocol):
    """The connection a message came on, as the intake uses it (``MsgConnection``)."""

    @property
    def connection_id(self) -> int: ...

    #: Until when a message of this connection may be a resend (``_may_resend``).
    resends_possible_until: float
    resend_check_started: bool

    def limit_refused(self) -> None:
        """A request was refused for a limit: read nothing more for a while."""

    def send(self, command_id: int, message: Message, seq: int = 0) -> None: ...


class Refused(Exception):
    """The store refused the message (it is not stored; the text says why)."""


class StoredOutcome(Protocol):
    """What a topic's ``store_message`` answers (``Accepted``, ``StoredGroupMessage``)."""

    @property
    def message(self) -> StoredMessage: ...

    @property
    def resend_of(self) -> int | None: ...


class Topic(Protocol):
    """What differs between one-to-one and group messages."""

    session_type: B.SessionType.ValueType

    def check(self, conn: Sender, msg: Message_pb2.IMMsgData) -> Reason | Awaitable[Reason]:
        """The topic's own refusals (after the intake's ``checks``)."""

    def store_message(
        self, sender: int, msg: Message_pb2.IMMsgData, sent: SendKey | None, now: int
    ) -> Awaitable[StoredOutcome]:
        """Store ``msg`` (or recognise it as a resend); fails with ``Refused`` when the
        store will not take it. Fires once the result is durable."""

    def deliver(self, stored: StoredOutcome, exclude: Sender) -> Awaitable[None] | None:
        """To the receivers' connections here (not ``exclude``, the sender's) and, through
        route, on other nodes."""


_SEND_HEADER = struct.Struct(">QBBQIQ")


def send_key(
    conn: Sender, session_type: int, msg: Message_pb2.IMMsgData, lookup: bool = True
) -> SendKey | None:
    """What a resend of ``msg`` would repeat, with the connection it came on; None when it
    carries no ``create_time`` (such messages are never deduplicated)."""
    if not msg.create_time:
        return None
    digest = hashlib.blake2b(
        _SEND_HEADER.pack(
            conn.user_id,
            conn.is_mobile,
            session_type,
            msg.to_session_id,
            msg.msg_type,
            msg.create_time,
        ),
        digest_size=16,
    )
    digest.update(msg.msg_data)
    return SendKey(digest.digest(), conn.connection_id, conn.user_id, msg.create_time, lookup)


def delivery_of(message: StoredMessage) -> Message_pb2.IMMsgData:
    """The ``CID_MSG_DATA`` receivers get for a stored message: real sender, stored id,
    server time."""
    return Message_pb2.IMMsgData(
        from_user_id=message.from_id,
        to_session_id=message.to_id,
        msg_id=message.msg_id,
        create_time=message.created,
        msg_type=B.MsgType.ValueType(message.msg_type),
        msg_data=message.content,
    )


def basic_checks(config: MsgConfig, limits: MessageLimits) -> list[RefusalCheck]:
    """The refusals every chat message passes: the sender's limits (first, so that a flood
    of bad messages is throttled too), empty, too big."""
    max_size = config.max_message_size

    def over_limit(conn: Sender, msg: Message_pb2.IMMsgData) -> Reason:
        reason = limits.check(conn.user_id, len(msg.msg_data))
        if reason is not None:
            conn.limit_refused()  # reads nothing more from it for a while
        return reason

    def empty(conn: Sender, msg: Message_pb2.IMMsgData) -> Reason:
        return None if msg.msg_data else "empty message"

    def too_big(conn: Sender, msg: Message_pb2.IMMsgData) -> Reason:
        size = len(msg.msg_data)
        return f"message of {size} bytes over the {max_size} limit" if size > max_size else None

    return [over_limit, empty, too_big]


class MessageIntake:
    """Takes every chat message through refuse → store → ack → deliver (module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        store: StoreService,
        connection_ids: ConnectionIds,
        checks: Iterable[RefusalCheck],
        single: Topic,
        group: Topic,
        counter: Counter,
    ) -> None:
        self.clock = clock
        self.store = store
        self.connection_ids = connection_ids
        #: Refusal checks every message passes, in order; append to add one.
        self.checks: list[RefusalCheck] = list(checks)
        self._topics = {t: single for t in SINGLE_TYPES} | {t: group for t in GROUP_TYPES}
        #: ``teamtalk_messages``: outcome per session type (acked, stored, refused, failed).
        self._outcomes = {
            (topic.session_type, outcome): counter.labels(
                session_type=SESSION_TYPE_NAMES[topic.session_type], outcome=outcome
            )
            for topic in (single, group)
            for outcome in ("acked", "stored", "refused", "failed")
        }
        self._pruning = LoopingCall(self.prune)
        self._pruning.clock = clock

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._pruning.start(PRUNE_INTERVAL, now=False)

    def stop(self) -> None:
        if self._pruning.running:
            self._pruning.stop()

    async def prune(self) -> None:
        """Delete send facts older than the resend window, a chunk per write job."""
        before = int(self.clock.seconds()) - RESEND_WINDOW
        try:
            while await self.store.write(resends.prune, before) >= resends.PRUNE_CHUNK:
                pass
        except Exception:
            log_failure(log, "pruning send facts failed")

    # -- the intake --------------------------------------------------------------------

    async def receive(self, conn: Sender, request: Request) -> None:
        msg = request.message
        assert isinstance(msg, Message_pb2.IMMsgData)
        topic = self._topics.get(msg.msg_type)
        if topic is None:
            log.info("ignoring message of type {type} from {user_id}", type=msg.msg_type,
                     user_id=conn.user_id)  # fmt: skip
            return
        try:
            reason = await self._refusal(conn, topic, msg)
            if reason is not None:
                self._refuse(conn, topic, msg, reason)
                return
            now = int(self.clock.seconds())
            sent = None
            if msg.create_time:
                sent = send_key(conn, topic.session_type, msg, self._may_resend(conn, now))
            stored = await topic.store_message(conn.user_id, msg, sent, now)
        except Refused as refused:
            self._refuse(conn, topic, msg, str(refused))
            return
        except Exception:
            # No ack: the client's timeout marks the message failed and lets the user retry.
            self._outcomes[topic.session_type, "failed"].inc()
            log_failure(log, "storing a message from {user_id} failed", user_id=conn.user_id)
            return
        message = stored.message
        self._outcomes[topic.session_type, "acked"].inc()
        if stored.resend_of is None:
            self._outcomes[topic.session_type, "stored"].inc()
        conn.send(
            B.CID_MSG_DATA_ACK,
            Message_pb2.IMMsgDataAck(
                user_id=conn.user_id,
                session_id=msg.to_session_id,
                msg_id=message.msg_id,
                session_type=topic.session_type,
            ),
            request.seq,
        )
        if stored.resend_of is not None and self.connection_ids.is_this_run(stored.resend_of):
            return  # this node delivered the first copy when it stored it
        delivering = topic.deliver(stored, conn)
        if delivering is not None:
            await delivering

    def _may_resend(self, conn: Sender, now: int) -> bool:
        """Whether a message of ``conn`` may be the resend of a stored one, so the store
        must look for its first copy.

        Only until the store has said that no other connection of the user sent anything
        within the window (asked at the first message, behind the writes queued before
        it); when one did, for one window more. No other connection's message can come
        after that (one connection per client category), so the lookups stop: a node
        whose clients never reconnect only writes the facts.
        """
        if now < conn.resends_possible_until:
            if not conn.resend_check_started:
                conn.resend_check_started = True
                self._check_rivals(conn, now)
            return True
        return False

    def _check_rivals(self, conn: Sender, now: int) -> None:
        def answered(sent: bool) -> None:
            conn.resends_possible_until = now + RESEND_WINDOW if sent else 0

        checking = self.store.write(
            resends.other_connection_sent,
            conn.user_id,
            conn.connection_id,
            now - RESEND_WINDOW,
        )
        checking.addCallbacks(answered, lambda f: log_failure(log, "resend check failed", f))

    async def _refusal(self, conn: Sender, topic: Topic, msg: Message_pb2.IMMsgData) -> Reason:
        for check in (*self.checks, topic.check):
            reason = check(conn, msg)
            if inspect.isawaitable(reason):
                reason = await reason
            if reason is not None:
                return reason
        return None

    def _refuse(self, conn: Sender, topic: Topic, msg: Message_pb2.IMMsgData, reason: str) -> None:
        self._outcomes[topic.session_type, "refused"].inc()
        if isinstance(reason, OverLimit):
            return  # counted and logged in aggregate by the limits
        log.info(
            "refusing message from {user_id} to {session_id}: {reason}",
            user_id=conn.user_id,
            session_id=msg.to_session_id,
            reason=reason,
        )


class SingleTopic:
    """One-to-one messages: never to yourself or to an unknown user (nor, where the
    deployment is friends only, to someone who is not a friend: ``friendship``); stored
    in per-turn batches (``batching.py``); delivered to every connection of both users."""

    session_type = B.SESSION_TYPE_SINGLE

    def __init__(
        self,
        queue: SingleMessageQueue,
        online: OnlineUsers,
        route: InProcessRoute | LinkedRoute,
        is_known_user: Callable[[int], bool],
        user_exists: Callable[[int], Awaitable[bool]],
        friendship: Callable[[int, int], Awaitable[bool]] | None = None,
        *,
        origins: Origins,
    ) -> None:
        self.queue = queue
        self.friendship = friendship
        self.origins = origins
        self.online = online
        self.route = route
        self.is_known_user = is_known_user
        self.user_exists = user_exists

    def check(self, conn: Sender, msg: Message_pb2.IMMsgData) -> Reason | Awaitable[Reason]:
        to_id = msg.to_session_id
        if to_id == conn.user_id:
            return "message to yourself"
        if self.is_known_user(to_id) and self.friendship is None:
            return None
        return self._unknown_user_or_stranger(conn.user_id, to_id)

    async def _unknown_user_or_stranger(self, from_id: int, to_id: int) -> Reason:
        if not (self.is_known_user(to_id) or await self.user_exists(to_id)):
            return f"unknown user {to_id}"
        if self.friendship is not None and not await self.friendship(from_id, to_id):
            return f"user {to_id} is not a friend (contacts mode)"
        return None

    def store_message(
        self, sender: int, msg: Message_pb2.IMMsgData, sent: SendKey | None, now: int
    ) -> defer.Deferred[Accepted]:
        origin = self.origins.next()
        # Raw callbacks, not async def: this runs once per message; a Deferred with two
        # callbacks cost 18 us where ensureDeferred of a coroutine awaiting it cost 45 us
        # (timeit of the two shapes, load 14, 2026-12-02).
        stored = self.queue.store_message(
            NewMessage(sender, msg.to_session_id, msg.msg_type, msg.msg_data, now, sent, origin)
        )
        return stored.addBoth(self.origins.settle, origin)

    def deliver(self, stored: StoredOutcome, exclude: Sender) -> None:
        message = stored.message
        delivery = delivery_of(message)
        users = (message.to_id, message.from_id)
        self.online.send_to_users(users, encode(B.CID_MSG_DATA, delivery), exclude=exclude)
        if self.route.has_peers:
            if message.origin:
                delivery.attach_data = relay_tag(message.origin)
            self.route.relay(encode(B.CID_MSG_DATA, delivery), list(users))
