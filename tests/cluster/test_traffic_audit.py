"""The fault tests' audit (``teamtalk_testing.traffic``) finds what it is there to find.

Pairs here are plain records: the audit reads only user ids, acks and live deliveries.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet import reactor

from teamtalk_client.text import encrypt_text
from teamtalk_testing.traffic import ChatTraffic, Pair
from tests.support import TestCase

ALICE, BOB = 1001, 1002


def pair_of(acked: list[tuple[int, str]]) -> Pair:
    closed = SimpleNamespace(called=False, addBoth=lambda *a: None)
    protocol = SimpleNamespace(on=lambda *a: None, closed=closed)
    sender: Any = SimpleNamespace(user_id=ALICE, protocol=protocol)
    receiver: Any = SimpleNamespace(user_id=BOB, protocol=protocol)
    pair = Pair(sender, receiver, acked=list(acked))
    pair.live.update(msg_id for msg_id, _ in acked)
    return pair


class AuditTests(TestCase):
    def audit(self, acked: list[tuple[int, str]], stored: list[tuple[int, str]], unread: int):
        traffic = ChatTraffic(reactor, [pair_of(acked)])
        rows = [(ALICE, BOB, msg_id, encrypt_text(text)) for msg_id, text in stored]
        return traffic.audit(rows, {(BOB, ALICE): unread})

    def test_a_clean_run_has_no_problem(self):
        sent = [(1, "ok"), (2, "ok")]
        assert self.audit(sent, sent, unread=2) == []

    def test_an_unread_count_raised_twice_or_not_at_all_is_found(self):
        sent = [(1, "ok"), (2, "ok")]
        assert self.audit(sent, sent, unread=3) == ["1001->1002: unread 3, 2 stored"]
        assert self.audit(sent, sent, unread=1) == ["1001->1002: unread 1, 2 stored"]

    def test_an_acked_message_not_stored_is_found(self):
        problems = self.audit([(1, "ok"), (2, "ok")], [(1, "ok")], unread=1)
        assert problems == ["1001->1002: acked 2 ('ok') stored as None"]
