"""One-to-one messages, message ids, sessions and unread counters.

Every test runs on SQLite and on MariaDB: ``MessageTests`` holds them, the two classes at
the end run them on each backend (``tests.store_support``).
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import defer

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import messages, sessions
from teamtalk_py.store.database import Database
from teamtalk_py.store.messages import StoredMessage
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase

NOW = 1_700_000_000
TEXT = B.MSG_TYPE_SINGLE_TEXT
SINGLE = B.SESSION_TYPE_SINGLE
GROUP = B.SESSION_TYPE_GROUP
ALICE, BOB, CAROL = 11, 22, 33


def send(db: Database, sender: int, receiver: int, body: bytes = b"hi", at: int = NOW):
    return db.write(messages.store_single_message, sender, receiver, TEXT, body, at)


def count_rows(txn, table: str) -> int:
    return txn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def sessions_of(txn, user_id: int) -> list[tuple[int, int, int, int]]:
    return txn.execute(
        "SELECT peer_id, type, status, updated FROM sessions WHERE user_id = ? ORDER BY peer_id",
        (user_id,),
    ).fetchall()


class MessageTests:
    """The 1:1 message repository tests, on ``self.database`` (see the classes below)."""

    database: Database
    scratch: Path

    # ----------------------------------------------------------------------------------
    # Storing and message ids

    async def test_first_message_gets_id_1_and_ids_grow_by_one(self) -> None:
        """A pair's ids are 1, 2, 3 whichever side sends."""
        first = await send(self.database, ALICE, BOB, b"one")
        second = await send(self.database, BOB, ALICE, b"two")
        third = await send(self.database, ALICE, BOB, b"three")
        assert [first.msg_id, second.msg_id, third.msg_id] == [1, 2, 3]
        assert first == StoredMessage(1, ALICE, BOB, TEXT, b"one", NOW)

    async def test_each_pair_counts_its_own_ids(self) -> None:
        """Ids are per pair: a new pair starts at 1 again."""
        await send(self.database, ALICE, BOB)
        await send(self.database, ALICE, BOB)
        assert (await send(self.database, ALICE, CAROL)).msg_id == 1
        assert (await send(self.database, CAROL, BOB)).msg_id == 1
        assert (await send(self.database, BOB, ALICE)).msg_id == 3

    async def test_concurrent_writes_for_one_pair_get_1_to_n(self) -> None:
        """500 messages sent at once in both directions get exactly the ids 1..500, and
        their Deferreds fire in id order."""
        fired: list[int] = []
        ds = []
        for i in range(500):
            sender, receiver = (ALICE, BOB) if i % 2 else (BOB, ALICE)
            d = send(self.database, sender, receiver, b"m%d" % i)
            d.addCallback(lambda m: fired.append(m.msg_id) or m)
            ds.append(d)
        stored = await defer.gatherResults(ds)
        assert sorted(m.msg_id for m in stored) == list(range(1, 501))
        assert fired == list(range(1, 501))
        rows = await self.database.read(
            lambda txn: txn.execute("SELECT msg_id FROM messages ORDER BY msg_id").fetchall()
        )
        assert [r[0] for r in rows] == list(range(1, 501))
        assert self.database.stats.largest_batch > 1

    async def test_a_failed_store_does_not_use_up_an_id(self) -> None:
        """An id belongs to a stored message: a store that fails in its savepoint leaves
        no gap."""

        def store_then_fail(txn):
            messages.store_single_message(txn, ALICE, BOB, TEXT, b"lost", NOW)
            raise RuntimeError("handler bug")

        await send(self.database, ALICE, BOB)
        with self.assertRaises(RuntimeError):
            await self.database.write(store_then_fail)
        assert (await send(self.database, ALICE, BOB)).msg_id == 2
        assert await self.database.read(count_rows, "messages") == 2

    async def test_store_refuses_self_zero_and_empty(self) -> None:
        """No conversation with oneself or user 0, no empty or text payload."""
        for sender, receiver, body in ((ALICE, ALICE, b"x"), (0, BOB, b"x"), (ALICE, 0, b"x"),
                                       (ALICE, BOB, b"")):  # fmt: skip
            with self.assertRaises(ValueError):
                await send(self.database, sender, receiver, body)
        with self.assertRaises(TypeError):
            await send(self.database, ALICE, BOB, "text")
        assert await self.database.read(count_rows, "relations") == 0

    async def test_binary_content_round_trips(self) -> None:
        """Ciphertext bytes (NULs, high bytes, 200 KB) come back identical."""
        body = bytes(range(256)) * 800
        await send(self.database, ALICE, BOB, body)
        (stored,) = await self.database.read(messages.single_history, ALICE, BOB, 0, 1)
        assert stored.content == body and isinstance(stored.content, bytes)

    async def test_store_makes_both_sessions_visible_and_counts_unread(self) -> None:
        """Both users get a visible single session touched at the message time; only the
        receiver's unread counter grows."""
        await send(self.database, ALICE, BOB, at=NOW)
        await send(self.database, ALICE, BOB, at=NOW + 5)
        assert await self.database.read(sessions_of, ALICE) == [(BOB, SINGLE, 0, NOW + 5)]
        assert await self.database.read(sessions_of, BOB) == [(ALICE, SINGLE, 0, NOW + 5)]
        assert [
            (u.peer_id, u.count) for u in await self.database.read(messages.unread_counts, BOB)
        ] == [(ALICE, 2)]
        assert await self.database.read(messages.unread_counts, ALICE) == []

    # ----------------------------------------------------------------------------------
    # Reading messages

    async def test_latest_single_msg_id(self) -> None:
        """0 for a pair that never talked, else the newest id, seen from either side."""
        assert await self.database.read(messages.latest_single_msg_id, ALICE, BOB) == 0
        await send(self.database, ALICE, BOB)
        await send(self.database, BOB, ALICE)
        assert await self.database.read(messages.latest_single_msg_id, ALICE, BOB) == 2
        assert await self.database.read(messages.latest_single_msg_id, BOB, ALICE) == 2

    async def test_history_is_newest_first_from_begin(self) -> None:
        """History pages go backwards from msg_id_begin (0 = newest), count at most."""
        for i in range(1, 8):
            await send(self.database, ALICE if i % 2 else BOB, BOB if i % 2 else ALICE, b"%d" % i)
        newest = await self.database.read(messages.single_history, BOB, ALICE, 0, 3)
        page = await self.database.read(messages.single_history, ALICE, BOB, 4, 10)
        assert [m.msg_id for m in newest] == [7, 6, 5]
        assert [m.msg_id for m in page] == [4, 3, 2, 1]
        assert [m.from_id for m in page] == [BOB, ALICE, BOB, ALICE]
        assert await self.database.read(messages.single_history, ALICE, BOB, 0, 0) == []

    async def test_history_without_relation_is_empty_and_creates_nothing(self) -> None:
        """Reading a pair that never talked returns nothing and creates no relation."""
        await send(self.database, ALICE, CAROL)
        assert await self.database.read(messages.single_history, ALICE, BOB, 0, 10) == []
        assert await self.database.read(messages.single_messages_by_ids, ALICE, BOB, [1]) == []
        assert await self.database.read(count_rows, "relations") == 1

    async def test_messages_by_ids_returns_that_pairs_listed_ids(self) -> None:
        """Only the listed ids of this pair, newest first; unknown ids are skipped."""
        for _ in range(5):
            await send(self.database, ALICE, BOB)
            await send(self.database, ALICE, CAROL)
        rows = await self.database.read(messages.single_messages_by_ids, BOB, ALICE, [2, 4, 4, 99])
        assert [(m.msg_id, m.to_id) for m in rows] == [(4, BOB), (2, BOB)]

    async def test_messages_by_ids_looks_at_100_ids_at_most(self) -> None:
        """Of 150 requested ids only the first 100 are answered."""
        await defer.gatherResults([send(self.database, ALICE, BOB) for _ in range(120)])
        rows = await self.database.read(messages.single_messages_by_ids, ALICE, BOB, range(1, 151))
        assert [m.msg_id for m in rows] == list(range(100, 0, -1))

    # ----------------------------------------------------------------------------------
    # Unread counters

    async def test_mark_single_read_clears_only_that_peer(self) -> None:
        """A read ack for one peer leaves the other peers' counters alone."""
        await send(self.database, ALICE, BOB)
        await send(self.database, CAROL, BOB)
        await self.database.write(messages.mark_single_read, BOB, ALICE)
        rows = await self.database.read(messages.unread_counts, BOB)
        assert [(u.peer_id, u.count) for u in rows] == [(CAROL, 1)]

    async def test_unread_counts_carry_the_pairs_newest_message(self) -> None:
        """The latest message is the pair's newest, even when the reader wrote it."""
        await send(self.database, ALICE, BOB, b"question", at=NOW)
        await send(self.database, ALICE, BOB, b"again", at=NOW + 1)
        await send(self.database, BOB, ALICE, b"answer", at=NOW + 2)
        (row,) = await self.database.read(messages.unread_counts, BOB)
        assert (row.peer_id, row.session_type, row.count) == (ALICE, SINGLE, 2)
        assert row.latest == StoredMessage(3, BOB, ALICE, TEXT, b"answer", NOW + 2)
        assert (row.latest_msg_id, row.latest_msg_data, row.latest_msg_from_id) == (
            3, b"answer", BOB)  # fmt: skip

    # ----------------------------------------------------------------------------------
    # Recent sessions

    async def test_recent_sessions_newest_first_after_the_watermark(self) -> None:
        """Visible sessions with updated > watermark, newest first, limited, each with its
        pair's newest message."""
        await send(self.database, BOB, ALICE, b"from bob", at=NOW + 1)
        await send(self.database, CAROL, ALICE, b"from carol", at=NOW + 2)
        await send(self.database, ALICE, 44, b"to 44", at=NOW + 3)
        rows = await self.database.read(sessions.recent_single_sessions, ALICE, 0)
        assert [(s.peer_id, s.updated, s.latest.content) for s in rows] == [
            (44, NOW + 3, b"to 44"),
            (CAROL, NOW + 2, b"from carol"),
            (BOB, NOW + 1, b"from bob"),
        ]
        later = await self.database.read(sessions.recent_single_sessions, ALICE, NOW + 1)
        assert [s.peer_id for s in later] == [44, CAROL]
        limited = await self.database.read(sessions.recent_single_sessions, ALICE, 0, 1)
        assert [s.peer_id for s in limited] == [44]

    async def test_recent_sessions_leave_out_sessions_without_messages(self) -> None:
        """A session row whose conversation has no message is not listed."""
        await send(self.database, BOB, ALICE)

        def add_bare_session(txn):
            txn.execute(
                "INSERT INTO sessions (user_id, peer_id, type, status, created, updated) "
                "VALUES (?, ?, ?, 0, ?, ?)",
                (ALICE, CAROL, SINGLE, NOW + 50, NOW + 50),
            )

        await self.database.write(add_bare_session)
        rows = await self.database.read(sessions.recent_single_sessions, ALICE, 0)
        assert [s.peer_id for s in rows] == [BOB]

    # ----------------------------------------------------------------------------------
    # Removing sessions

    async def test_remove_session_hides_it_and_clears_unread(self) -> None:
        """Removing hides the session and drops its unread count; a second remove fails."""
        await send(self.database, ALICE, BOB)
        assert await self.database.write(sessions.remove_session, BOB, ALICE, SINGLE, now=NOW + 9)
        assert await self.database.read(sessions.recent_single_sessions, BOB, 0) == []
        assert await self.database.read(messages.unread_counts, BOB) == []
        assert await self.database.read(sessions_of, BOB) == [(ALICE, SINGLE, 1, NOW + 9)]
        assert not await self.database.write(
            sessions.remove_session, BOB, ALICE, SINGLE, now=NOW + 10
        )
        assert not await self.database.write(sessions.remove_session, BOB, CAROL, SINGLE, now=NOW)

    async def test_new_message_shows_a_removed_session_again(self) -> None:
        """A later message in the conversation makes the session visible again."""
        await send(self.database, ALICE, BOB)
        await self.database.write(sessions.remove_session, BOB, ALICE, SINGLE, now=NOW + 1)
        await send(self.database, ALICE, BOB, b"still there?", at=NOW + 2)
        (row,) = await self.database.read(sessions.recent_single_sessions, BOB, 0)
        assert (row.peer_id, row.updated, row.latest.content) == (ALICE, NOW + 2, b"still there?")

    async def test_remove_group_session_marks_the_group_read(self) -> None:
        """Removing a group session moves the member's read marker to the group's last id."""

        def setup(txn):
            txn.execute(
                "INSERT INTO im_groups (name, creator, type, last_msg_id, created, updated) "
                "VALUES ('g', ?, 2, 7, ?, ?)",
                (ALICE, NOW, NOW),
            )
            group_id = txn.lastrowid
            txn.execute(
                "INSERT INTO group_members (group_id, user_id, status, joined, read_msg_id) "
                "VALUES (?, ?, 0, ?, 2)",
                (group_id, BOB, NOW),
            )
            txn.execute(
                "INSERT INTO sessions (user_id, peer_id, type, status, created, updated) "
                "VALUES (?, ?, ?, 0, ?, ?)",
                (BOB, group_id, GROUP, NOW, NOW),
            )
            return group_id

        group_id = await self.database.write(setup)
        assert await self.database.write(sessions.remove_session, BOB, group_id, GROUP, now=NOW + 1)
        marker = await self.database.read(
            lambda txn: txn.execute(
                "SELECT read_msg_id FROM group_members WHERE group_id = ? AND user_id = ?",
                (group_id, BOB),
            ).fetchone()[0]
        )
        assert marker == 7

    # ----------------------------------------------------------------------------------
    # Several nodes on one database

    async def test_two_nodes_sharing_a_database_never_reuse_an_id(self) -> None:
        """Two Database objects on the same file/server (two nodes) storing to the same
        pairs concurrently still give each pair the ids 1..N."""
        from twisted.internet import reactor

        from teamtalk_py.store.database import open_database

        other = open_database(self.database.url, self.scratch, reactor)
        await other.start()
        try:
            ds = []
            for i in range(2000):
                node = self.database if i % 2 else other
                pair = (ALICE, BOB) if i % 3 else (CAROL, BOB)
                ds.append(send(node, *(pair if i % 4 < 2 else pair[::-1]), body=b"%d" % i))
            stored = await defer.gatherResults(ds)
        finally:
            await other.stop()
        for pair in ((ALICE, BOB), (CAROL, BOB)):
            ids = sorted(m.msg_id for m in stored if {m.from_id, m.to_id} == set(pair))
            assert ids == list(range(1, len(ids) + 1))

    # ----------------------------------------------------------------------------------
    # Storing many messages at once (the msg service's batched path)

    async def test_batch_gives_each_pair_consecutive_ids_in_batch_order(self) -> None:
        """Interleaved pairs in one batch: ids per pair are consecutive and follow the
        earlier single-message numbering."""
        await send(self.database, ALICE, BOB)  # id 1 of the pair
        batch = [
            messages.NewMessage(ALICE, BOB, TEXT, b"a1", NOW),
            messages.NewMessage(CAROL, BOB, TEXT, b"c1", NOW),
            messages.NewMessage(BOB, ALICE, TEXT, b"b1", NOW + 1),
            messages.NewMessage(CAROL, BOB, TEXT, b"c2", NOW + 2),
        ]
        stored = [
            a.message for a in await self.database.write(messages.store_single_messages, batch)
        ]
        assert [(m.from_id, m.msg_id, m.content) for m in stored] == [
            (ALICE, 2, b"a1"),
            (CAROL, 1, b"c1"),
            (BOB, 3, b"b1"),
            (CAROL, 2, b"c2"),
        ]
        assert (await send(self.database, ALICE, BOB)).msg_id == 4
        history = await self.database.read(messages.single_history, BOB, CAROL, 0, 10)
        assert [(m.msg_id, m.content) for m in history] == [(2, b"c2"), (1, b"c1")]

    async def test_batch_counts_unread_per_sender_and_shows_both_sessions(self) -> None:
        """Unread moves by the number of messages per sender; both sides see the session."""
        batch = [messages.NewMessage(ALICE, BOB, TEXT, b"x%d" % i, NOW + i) for i in range(3)]
        batch.append(messages.NewMessage(CAROL, BOB, TEXT, b"y", NOW))
        await self.database.write(messages.store_single_messages, batch)
        unread = {u.peer_id: u.count for u in await self.database.read(messages.unread_counts, BOB)}
        assert unread == {ALICE: 3, CAROL: 1}
        alice_sessions = await self.database.read(sessions.recent_single_sessions, ALICE, 0)
        assert [(s.peer_id, s.updated, s.latest_msg_id) for s in alice_sessions] == [
            (BOB, NOW + 2, 3)
        ]
        bob_sessions = await self.database.read(sessions.recent_single_sessions, BOB, 0)
        assert {s.peer_id for s in bob_sessions} == {ALICE, CAROL}

    async def test_batch_with_an_invalid_message_stores_nothing(self) -> None:
        """A message to oneself fails the whole batch job before anything is written."""
        batch = [
            messages.NewMessage(ALICE, BOB, TEXT, b"ok", NOW),
            messages.NewMessage(ALICE, ALICE, TEXT, b"self", NOW),
        ]
        with self.assertRaises(ValueError):
            await self.database.write(messages.store_single_messages, batch)
        assert await self.database.read(messages.latest_single_msg_id, ALICE, BOB) == 0


class SQLiteMessageTests(MessageTests, SQLiteStoreCase):
    """The message tests on SQLite."""


class MariaDBMessageTests(MessageTests, MariaDBStoreCase):
    """The message tests on MariaDB."""
