"""Clients that behave like real ones when things die: numbered messages sent with a window
in flight, each keeping its create_time and bytes; after a lost connection, a reconnect and
a resend of everything that had no ack. And the audit afterwards: every message in
history exactly once, under the id its ack carried.

Used by the crash and outage tests (``test_durability.py``) and the cluster tests.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost

from teamtalk_client import TeamTalkClientProtocol, TeamTalkSession, decrypt_text, encrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2

#: Largest page of history the server answers.
PAGE = 200

#: These clients send faster than people may (``msg/limits.py``, tested on its own in
#: ``test_limits.py``): servers they talk to run without the message rate limit.
NO_RATE_LIMIT = {"msg.message_rate": 0}


def no_rate_limit_config(directory: Path) -> Path:
    """A ``--config`` file turning the message rate limit off (``NO_RATE_LIMIT``)."""
    path = directory / "no-rate-limit.toml"
    path.write_text("[msg]\nmessage_rate = 0\n")
    return path


@dataclass
class Outgoing:
    index: int
    message: Message_pb2.IMMsgData
    #: The id of the ack that came back, None while none did.
    msg_id: int | None = None
    #: When (``time.monotonic()``) that ack arrived.
    acked_at: float | None = None


@dataclass
class Sender:
    """``count`` numbered messages from one user to one session (a user or a group)."""

    name: str
    user_id: int
    session_id: int
    session_type: int
    count: int
    window: int = 8
    outgoing: list[Outgoing] = field(default_factory=list)
    #: Per connection (by id, the protocol kept alive): seq -> the message sent with it.
    _sent: dict[int, tuple[TeamTalkClientProtocol, dict[int, Outgoing]]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        group = self.session_type == B.SESSION_TYPE_GROUP
        msg_type = B.MSG_TYPE_GROUP_TEXT if group else B.MSG_TYPE_SINGLE_TEXT
        for index in range(self.count):
            message = Message_pb2.IMMsgData(
                from_user_id=self.user_id,
                to_session_id=self.session_id,
                msg_id=0,
                create_time=1_700_000_000 + index,
                msg_type=msg_type,
                msg_data=encrypt_text(self.text(index)),
            )
            self.outgoing.append(Outgoing(index, message))

    def text(self, index: int) -> str:
        return f"{self.name} #{index}"

    @property
    def unacked(self) -> list[Outgoing]:
        return [o for o in self.outgoing if o.msg_id is None]

    @property
    def acked(self) -> list[Outgoing]:
        return [o for o in self.outgoing if o.msg_id is not None]

    async def send(
        self, protocol: TeamTalkClientProtocol, items: list[Outgoing], timeout: float = 5.0
    ) -> None:
        """Send ``items`` with ``window`` of them unanswered at a time, recording acks;
        returns when each was answered, timed out (``timeout`` seconds: a refusal gets no
        answer) or lost with the connection. An ack that arrives after its timeout is
        still recorded (``_sent_on``), as the shipped clients match late acks by seq."""
        sent = self._sent_on(protocol)
        pending: list[tuple[Outgoing, defer.Deferred]] = []

        async def settle(item: Outgoing, d: defer.Deferred) -> None:
            try:
                pdu = await d
            except (ConnectionLost, ConnectionDone, TimeoutError):
                return
            self._record_ack(item, pdu)

        for item in items:
            if protocol.closed.called:
                break
            if len(pending) >= self.window:
                await settle(*pending.pop(0))
            seq = protocol.next_seq()
            sent[seq] = item
            request = protocol.request(B.CID_MSG_DATA, item.message, timeout=timeout, seq=seq)
            pending.append((item, request))
        for item, d in pending:
            await settle(item, d)

    def _sent_on(self, protocol: TeamTalkClientProtocol) -> dict[int, Outgoing]:
        """The seq -> message map of ``protocol``; the first call also starts listening for
        acks that come after their request timed out (the client library hands those to
        ``on()`` callbacks): a slow server may store and ack a message the client had
        given up on, and a client that then resent it would send a second message."""
        known = self._sent.get(id(protocol))
        if known is not None:
            return known[1]
        sent: dict[int, Outgoing] = {}
        self._sent[id(protocol)] = (protocol, sent)

        def late_ack(pdu: Any) -> None:
            item = sent.get(pdu.seq_num)
            if item is not None:
                self._record_ack(item, pdu)

        protocol.on(B.CID_MSG_DATA_ACK, late_ack)
        return sent

    @staticmethod
    def _record_ack(item: Outgoing, pdu: Any) -> None:
        if pdu.message.msg_id and item.msg_id is None:
            item.msg_id = pdu.message.msg_id
            item.acked_at = time.monotonic()

    async def resend_unacked(self, protocol: TeamTalkClientProtocol) -> None:
        """What a client does after reconnecting: the same bytes again, for every message
        whose ack it never saw."""
        await self.send(protocol, self.unacked)


async def history(session: TeamTalkSession, session_type: int, session_id: int) -> dict:
    """Every message of the session the reader may see: msg_id -> decrypted text."""
    found: dict[int, str] = {}
    begin = 0
    while True:
        answer = await session.message_list(session_id, session_type, begin=begin, count=PAGE)
        rows = list(answer.msg_list)
        for row in rows:
            found[row.msg_id] = decrypt_text(row.msg_data)
        if len(rows) < PAGE:
            return found
        begin = min(row.msg_id for row in rows) - 1
        if begin <= 0:
            return found


def audit(sender: Sender, stored: dict[int, str], all_sent: bool = True) -> None:
    """Every acked message is stored under the id its ack carried, no text is stored
    twice, and (``all_sent``) every message is stored."""
    texts = [text for text in stored.values() if text.startswith(f"{sender.name} #")]
    duplicated = sorted({t for t in texts if texts.count(t) > 1})
    assert not duplicated, f"stored twice: {duplicated}"
    for item in sender.acked:
        assert stored.get(item.msg_id) == sender.text(item.index), (
            f"ack {item.msg_id} of {sender.text(item.index)!r} names {stored.get(item.msg_id)!r}"
        )
    if all_sent:
        missing = [sender.text(i) for i in range(sender.count) if sender.text(i) not in texts]
        assert not missing, f"never stored: {missing}"


async def lose_acks(protocols: list[TeamTalkClientProtocol], kill: Callable[[], object],
                    settle: Callable[[float], Awaitable[None]]) -> None:  # fmt: skip
    """Stop reading, let the server commit and answer into the socket buffers, kill it,
    and drop the connections unread: acks of stored messages are lost, as when a network
    or a node dies between the commit and the client."""
    for protocol in protocols:
        protocol.transport.pauseProducing()
    await settle(0.05)
    kill()
    for protocol in protocols:
        protocol.transport.abortConnection()
    for protocol in protocols:
        await protocol.closed
