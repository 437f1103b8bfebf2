"""Cross-node chat traffic with a record of every ack and every live delivery, and the
audit that a fault test runs afterwards.

``ChatTraffic`` drives pairs of logged-in ``TeamTalkSession``s (sender on one node,
receiver on another): each sender keeps ``window`` AES-encrypted text messages in flight,
as fast as acks come back, and the words repeat across senders ("ok 3, slot 1" is sent by
every sender); with ``repeat_words`` one sender repeats its own texts too. A pair with a
``group_id`` sends to that group (sender and receiver members) instead of one-to-one. It
records every ack with its time, every send that got no ack (timed out, connection lost:
such a message may or may not be stored), and every ``CID_MSG_DATA`` each receiver got
live. A sender whose connection is gone stops; ``resume(pair, session)`` goes on with a
new connection of the same user (a client that reconnected to another node).

``audit(rows)`` then checks what the issue asks of a fault: every acked message is stored
exactly once with its text (``rows``: (from, to, msg_id, content) of the ``messages``
table for one-to-one pairs and of ``group_messages`` with the group as ``to``), no two
stored rows are one sent message, and every receiver still online got every acked
message live exactly once. It returns the problems it found, as text.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.task import deferLater

from teamtalk_client import TeamTalkSession, decrypt_text
from teamtalk_client.pdu import Pdu
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Group_pb2

__all__ = ["ChatTraffic", "Pair", "create_group", "stored_rows", "stored_unread"]


@dataclass
class Pair:
    sender: TeamTalkSession
    receiver: TeamTalkSession
    #: (msg_id, text) of every acked message, in ack order.
    acked: list[tuple[int, str]] = field(default_factory=list)
    #: Texts sent without an ack (stored or not: both are allowed).
    unacked: list[str] = field(default_factory=list)
    #: msg_id -> times the receiver got it live.
    live: Counter[int] = field(default_factory=Counter)
    receiver_online: bool = True
    #: A group of sender and receiver to send to (0: one-to-one to the receiver).
    group_id: int = 0

    @property
    def from_id(self) -> int:
        assert self.sender.user_id is not None
        return self.sender.user_id

    @property
    def to_id(self) -> int:
        assert self.receiver.user_id is not None
        return self.receiver.user_id

    @property
    def session_id(self) -> int:
        """What the sender sends to: the group, or the receiver."""
        return self.group_id or self.to_id

    @property
    def session_type(self) -> B.SessionType.ValueType:
        return B.SESSION_TYPE_GROUP if self.group_id else B.SESSION_TYPE_SINGLE


async def create_group(sender: TeamTalkSession, receiver_id: int) -> int:
    """A temporary group of ``sender`` and the receiver, created as clients do."""
    created = await sender.get(
        B.CID_GROUP_CREATE_REQUEST,
        Group_pb2.IMGroupCreateReq(
            user_id=sender.user_id or 0, group_type=B.GROUP_TYPE_TMP, group_name="traffic",
            group_avatar="", member_id_list=[receiver_id],
        ),
    )  # fmt: skip
    if created.result_code != 0:
        raise RuntimeError(f"group not created: {created}")
    return int(created.group_id)


def stored_rows(query: Callable[[str], list[Any]], pairs: Iterable[Pair]) -> list[Any]:
    """What ``audit`` needs from the database (``query`` runs SQL): the pairs' rows of
    ``messages`` and of ``group_messages`` (with the group as ``to``)."""
    pairs = list(pairs)
    senders = ",".join(str(p.from_id) for p in pairs if not p.group_id)
    groups = ",".join(str(p.group_id) for p in pairs if p.group_id)
    rows: list[Any] = []
    if senders:
        rows += query(
            f"SELECT from_id, to_id, msg_id, content FROM messages WHERE from_id IN ({senders})"
        )
    if groups:
        rows += query(
            "SELECT from_id, group_id, msg_id, content FROM group_messages "
            f"WHERE group_id IN ({groups})"
        )
    return rows


def stored_unread(
    query: Callable[[str], list[Any]], pairs: Iterable[Pair]
) -> dict[tuple[int, int], int]:
    """The one-to-one receivers' unread counts, ``(receiver, sender) -> count``, from the
    ``unread`` table (a group's unread is derived from message ids, not counted)."""
    receivers = ",".join(str(p.to_id) for p in pairs if not p.group_id)
    if not receivers:
        return {}
    rows = query(f"SELECT user_id, peer_id, count FROM unread WHERE user_id IN ({receivers})")
    return {(int(user_id), int(peer_id)): int(count) for user_id, peer_id, count in rows}


class ChatTraffic:
    """Messages from every pair's sender to its receiver until ``stop()``."""

    def __init__(
        self,
        reactor: Any,
        pairs: list[Pair],
        window: int = 4,
        ack_timeout: float = 10.0,
        repeat_words: bool = False,
    ) -> None:
        self.reactor = reactor
        self.pairs = pairs
        self.window = window
        self.ack_timeout = ack_timeout
        #: Whether one sender repeats a text exactly (as real users do).
        self.repeat_words = repeat_words
        #: time.monotonic() of every ack, for rates over any interval.
        self.ack_times: list[float] = []
        self._running = False
        self._loops: list[defer.Deferred[None]] = []
        for pair in pairs:
            pair.receiver.protocol.on(B.CID_MSG_DATA, self._receiver_of(pair))
            pair.receiver.protocol.closed.addBoth(self._receiver_gone, pair)

    @staticmethod
    def _receiver_of(pair: Pair) -> Any:
        def delivered(pdu: Pdu) -> None:
            message = pdu.message
            if message.from_user_id == pair.from_id and message.to_session_id == pair.session_id:
                pair.live[message.msg_id] += 1

        return delivered

    @staticmethod
    def _receiver_gone(result: Any, pair: Pair) -> Any:
        pair.receiver_online = False
        return None

    def start(self) -> None:
        self._running = True
        for pair in self.pairs:
            self._start_pair(pair)

    def _start_pair(self, pair: Pair) -> None:
        for slot in range(self.window):
            self._loops.append(defer.ensureDeferred(self._send_loop(pair, slot)))

    def resume(self, pair: Pair, sender: TeamTalkSession) -> None:
        """Go on sending from ``sender``, a new connection of the pair's sender."""
        assert sender.user_id == pair.from_id
        pair.sender = sender
        if self._running:
            self._start_pair(pair)

    async def stop(self) -> None:
        """Stop sending and wait for the messages in flight to be answered (or to time
        out)."""
        self._running = False
        await defer.DeferredList(self._loops)

    async def _send_loop(self, pair: Pair, slot: int) -> None:
        n = 0
        sender = pair.sender
        while self._running and not sender.protocol.closed.called:
            n += 1
            # Every sender sends the same words ("ok 3, slot 1"), as people do. Within one
            # sender they differ by n: main's resend detection still merges one sender's
            # equal texts of the same second (issue 10 is replacing it).
            text = f"ok {n % 7}, slot {slot}" if n % 3 else f"slot {slot} message {n}"
            text = text if self.repeat_words else f"{text} ({n})"
            d = sender.send_text(pair.session_id, text, pair.session_type)
            d.addTimeout(self.ack_timeout, self.reactor)
            try:
                ack = await d
            except Exception:
                pair.unacked.append(text)
                # A connection already gone fails at once: give the reactor a turn so
                # that it can notice (and this loop end) instead of spinning.
                await deferLater(self.reactor, 0.05, lambda: None)
                continue
            if ack.msg_id:
                pair.acked.append((ack.msg_id, text))
                self.ack_times.append(time.monotonic())
            else:
                pair.unacked.append(text)

    # -- figures -------------------------------------------------------------------------

    def rate(self, start: float, end: float) -> float:
        """Acks per second between two ``time.monotonic()`` readings."""
        count = sum(1 for t in self.ack_times if start <= t < end)
        return count / (end - start) if end > start else 0.0

    @property
    def acked(self) -> int:
        return sum(len(p.acked) for p in self.pairs)

    # -- the audit ----------------------------------------------------------------------

    def audit(
        self,
        rows: Iterable[tuple[int, int, int, bytes]],
        unread: dict[tuple[int, int], int],
    ) -> list[str]:
        """Problems found, given every stored (from_id, to_id, msg_id, content) of the
        pairs and the receivers' unread counts (see the module docstring)."""
        problems: list[str] = []
        stored: dict[tuple[int, int], dict[int, str]] = {}
        for from_id, to_id, msg_id, content in rows:
            text = decrypt_text(content)
            per_pair = stored.setdefault((from_id, to_id), {})
            if msg_id in per_pair:
                problems.append(f"{from_id}->{to_id}: msg_id {msg_id} stored twice")
            per_pair[msg_id] = text
        for pair in self.pairs:
            rows_of = stored.get((pair.from_id, pair.session_id), {})
            acked_ids = Counter(msg_id for msg_id, _ in pair.acked)
            for msg_id, times in acked_ids.items():
                if times > 1:
                    problems.append(f"{pair.from_id}->{pair.to_id}: msg_id {msg_id} acked twice")
            for msg_id, text in pair.acked:
                if rows_of.get(msg_id) != text:
                    problems.append(
                        f"{pair.from_id}->{pair.to_id}: acked {msg_id} ({text!r}) stored as "
                        f"{rows_of.get(msg_id)!r}"
                    )
            # Every stored row is an acked message or one sent without an ack: nothing
            # invented, and no send stored twice.
            sent_texts = Counter(text for _, text in pair.acked) + Counter(pair.unacked)
            stored_texts = Counter(rows_of.values())
            for text, n in (stored_texts - sent_texts).items():
                problems.append(f"{pair.from_id}->{pair.to_id}: {text!r} stored {n} more times")
            if not pair.group_id:
                count = unread.get((pair.to_id, pair.from_id), 0)
                if count != len(rows_of):
                    problems.append(
                        f"{pair.from_id}->{pair.to_id}: unread {count}, {len(rows_of)} stored"
                    )
            twice = [msg_id for msg_id, n in pair.live.items() if n > 1]
            if twice:
                problems.append(f"{pair.from_id}->{pair.to_id}: delivered live twice: {twice[:10]}")
            if pair.receiver_online:
                missed = [msg_id for msg_id in acked_ids if msg_id not in pair.live]
                if missed:
                    problems.append(
                        f"{pair.from_id}->{pair.to_id}: {len(missed)} of {len(acked_ids)} acked"
                        f" messages never reached the online receiver live: {missed[:10]}"
                    )
        return problems
