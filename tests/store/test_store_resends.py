"""Send facts in the store (``store/resends.py``): a message is the resend of a stored one
only when it comes on another connection, each stored copy is matched once per
connection, the fact is written and rolled back with its message, old facts are pruned.

Every test runs on SQLite and on MariaDB (``tests.store_support``).
"""

from __future__ import annotations

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import accounts, messages, resends
from teamtalk_py.store import groups as g
from teamtalk_py.store.database import Database
from teamtalk_py.store.messages import NewMessage
from teamtalk_py.store.resends import RESEND_WINDOW, SendKey
from tests.store_support import Gate, MariaDBStoreCase, SQLiteStoreCase

NOW = 1_700_000_000
TEXT = B.MSG_TYPE_SINGLE_TEXT
ALICE, BOB = 11, 22
DIGEST = b"\x01" * 16
FIRST, SECOND, THIRD = 1 << 32 | 1, 1 << 32 | 2, 2 << 32 | 1


def new(connection: int | None, body: bytes = b"ok", at: int = NOW, digest: bytes = DIGEST):
    sent = SendKey(digest, connection, ALICE, 1000) if connection is not None else None
    return NewMessage(ALICE, BOB, TEXT, body, at, sent)


async def store(db: Database, *batch: NewMessage) -> list[tuple[int, int | None]]:
    """Store one batch; (msg_id, resend_of) per message."""
    accepted = await db.write(messages.store_single_messages, list(batch))
    return [(a.message.msg_id, a.resend_of) for a in accepted]


async def history(db: Database) -> list[int]:
    return sorted(m.msg_id for m in await db.read(messages.single_history, BOB, ALICE, 0, 100))


def count_facts(txn) -> int:
    return txn.execute("SELECT COUNT(*) FROM message_sends").fetchone()[0]


class ResendTests:
    database: Database

    async def test_messages_of_one_connection_are_never_one_message(self) -> None:
        """The same digest three times on one connection, in one batch and in two:
        three new messages."""
        assert await store(self.database, new(FIRST), new(FIRST)) == [(1, None), (2, None)]
        assert await store(self.database, new(FIRST)) == [(3, None)]
        assert await history(self.database) == [1, 2, 3]

    async def test_the_same_message_on_another_connection_is_the_stored_one(self) -> None:
        """A resend gets the first copy's id, time and connection, and stores nothing: no
        row, no unread, no id used up."""
        assert await store(self.database, new(FIRST, at=NOW)) == [(1, None)]
        assert await store(self.database, new(SECOND, at=NOW + 5)) == [(1, FIRST)]
        (accepted,) = await self.database.write(
            messages.store_single_messages, [new(THIRD, at=NOW + 9)]
        )
        assert (accepted.message.created, accepted.resend_of) == (NOW, FIRST)
        assert await history(self.database) == [1]
        unread = await self.database.read(messages.unread_counts, BOB)
        assert [(u.peer_id, u.count) for u in unread] == [(ALICE, 1)]
        assert await store(self.database, new(None, b"next")) == [(2, None)]

    async def test_each_copy_is_matched_once_per_connection_oldest_first(self) -> None:
        """Two lost copies resent on a new connection get their two ids; a third is new.
        Yet another connection is matched to the first copy again."""
        assert await store(self.database, new(FIRST), new(FIRST)) == [(1, None), (2, None)]
        assert await store(self.database, new(SECOND), new(SECOND)) == [(1, FIRST), (2, FIRST)]
        assert await store(self.database, new(SECOND)) == [(3, None)]
        assert await store(self.database, new(THIRD)) == [(1, FIRST)]
        assert await history(self.database) == [1, 2, 3]

    async def test_resend_in_the_same_batch_as_its_first_copy(self) -> None:
        """The first copy and its resend committed together: one message."""
        gate = Gate()
        held = self.database.write(gate)
        gate.entered.wait(5)
        first = self.database.write(messages.store_single_messages, [new(FIRST)])
        resent = self.database.write(messages.store_single_messages, [new(SECOND)])
        gate.release.set()
        await held
        assert [a.message.msg_id for a in await first] == [1]
        assert [(a.message.msg_id, a.resend_of) for a in await resent] == [(1, FIRST)]
        assert await store(self.database, new(SECOND), new(THIRD)) == [(2, None), (1, FIRST)]

    async def test_first_copies_older_than_the_window_are_not_matched(self) -> None:
        """Past the resend window the same bytes are a new message."""
        await store(self.database, new(FIRST, at=NOW))
        later = NOW + RESEND_WINDOW + 1
        assert await store(self.database, new(SECOND, at=later)) == [(2, None)]

    async def test_a_failed_job_leaves_no_fact(self) -> None:
        """Facts are written in the message's transaction: a refused batch leaves none,
        so the same message from another connection is then stored."""
        bad = NewMessage(ALICE, ALICE, TEXT, b"self", NOW)
        with self.assertRaises(ValueError):
            await store(self.database, new(FIRST), bad)
        assert await self.database.read(count_facts) == 0
        assert await store(self.database, new(SECOND)) == [(1, None)]

    async def test_group_messages_follow_the_same_rule(self) -> None:
        """A group resend from another connection gets the stored id even after the
        sender left; a non-member's refused message leaves no fact."""

        def setup(txn):
            a, b = (accounts.add_user(txn, n, "pw", now=NOW) for n in ("alice", "bob"))
            group, _ = g.create_group(txn, "team", a, [b], g.GROUP_TMP, now=NOW)
            return a, b, group.id

        a, b, group_id = await self.database.write(setup)
        group_text = B.MSG_TYPE_GROUP_TEXT

        def post(sender: int, connection: int):
            return self.database.write(
                g.store_group_message, group_id, sender, group_text, b"hi", NOW,
                SendKey(DIGEST, connection, sender, 1000),
            )  # fmt: skip

        first = await post(a, FIRST)
        assert (first.message.msg_id, first.resend_of) == (1, None)
        assert (await post(a, FIRST)).message.msg_id == 2
        await self.database.write(g.change_members, group_id, a, g.DEL, [a], now=NOW)
        again = await post(a, SECOND)
        assert (again.message.msg_id, again.resend_of) == (1, FIRST)
        assert (await post(a, SECOND)).message.msg_id == 2
        facts = await self.database.read(count_facts)
        with self.assertRaises(g.NotAMember):
            await post(a, SECOND)  # both copies matched: a new message, refused
        assert await self.database.read(count_facts) == facts
        assert b

    async def test_other_connection_sent_sees_only_recent_facts_of_other_connections(
        self,
    ) -> None:
        """What tells the intake whether a connection's messages need looking up."""
        await store(self.database, new(FIRST, at=NOW))
        sent = self.database.read
        assert await sent(resends.other_connection_sent, ALICE, SECOND, NOW - 10) is True
        assert await sent(resends.other_connection_sent, ALICE, FIRST, NOW - 10) is False
        assert await sent(resends.other_connection_sent, ALICE, SECOND, NOW + 1) is False
        assert await sent(resends.other_connection_sent, BOB, SECOND, NOW - 10) is False

    async def test_keys_without_lookup_write_their_fact_and_find_nothing(self) -> None:
        """A connection known to have nothing to resend: its message is new even with a
        matching stored copy, and its own fact is written for later connections."""
        await store(self.database, new(FIRST))
        quiet = NewMessage(
            ALICE, BOB, TEXT, b"ok", NOW, SendKey(DIGEST, SECOND, ALICE, 1000, False)
        )
        assert await store(self.database, quiet) == [(2, None)]
        assert await store(self.database, new(THIRD), new(THIRD)) == [(1, FIRST), (2, SECOND)]

    async def test_prune_deletes_facts_older_than_the_cut_in_chunks(self) -> None:
        """Old facts go a chunk at a time, the newer ones stay and still match."""
        old = [new(FIRST, b"%d" % i, at=NOW, digest=bytes([i % 256]) * 16) for i in range(300)]
        await store(self.database, *old)
        await store(self.database, new(FIRST, b"fresh", at=NOW + 100))
        self.patch(resends, "PRUNE_CHUNK", 128)
        deleted = []
        while (n := await self.database.write(resends.prune, NOW + 50)) > 0:
            deleted.append(n)
        assert deleted == [128, 128, 44]
        assert await self.database.read(count_facts) == 1
        assert await store(self.database, new(SECOND, b"fresh", at=NOW + 100)) == [(301, FIRST)]


class SQLiteResendTests(ResendTests, SQLiteStoreCase):
    """The resend tests on SQLite."""


class MariaDBResendTests(ResendTests, MariaDBStoreCase):
    """The resend tests on MariaDB."""
