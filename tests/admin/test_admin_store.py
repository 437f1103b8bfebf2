"""The admin API's rows (``store/admin.py``) on SQLite and MariaDB: tokens found only by
their hash, console sessions that expire, today's messages counted by bisecting ids."""

from __future__ import annotations

from typing import Any

from teamtalk_py.store import admin as admin_store
from teamtalk_py.store.txn import DuplicateError
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase

NOW = 1_800_000_000


def add_messages(txn: Any, table: str, rows: list[tuple[int, int]]) -> None:
    """(id, created) rows of ``messages`` or ``group_messages``."""
    for row_id, created in rows:
        if table == "messages":
            txn.execute(
                "INSERT INTO messages (id, relation_id, from_id, to_id, msg_id, msg_type, "
                "content, created) VALUES (?, 1, 1, 2, ?, 1, ?, ?)",
                (row_id, row_id, b"x", created),
            )
        else:
            txn.execute(
                "INSERT INTO group_messages (id, group_id, from_id, msg_id, msg_type, "
                "content, created) VALUES (?, 1, 1, ?, 17, ?, ?)",
                (row_id, row_id, b"x", created),
            )


class AdminStoreTests:
    database: Any

    async def test_tokens_are_found_by_their_hash_only(self):
        """A token is found by its value, its row holds no copy of it; a second token of
        the same name is refused; revoking removes it."""
        token = admin_store.TOKEN_PREFIX + "secret-value"
        await self.database.write(admin_store.add_admin_token, "ci", token, now=NOW)
        row = await self.database.read(admin_store.find_admin_token, token)
        assert row is not None and row.name == "ci"
        assert await self.database.read(admin_store.find_admin_token, token + "x") is None
        stored = await self.database.read(
            lambda txn: txn.execute("SELECT token_hash FROM admin_tokens").fetchall()
        )
        assert [r[0] for r in stored] == [admin_store.secret_hash(token)]
        try:
            await self.database.write(admin_store.add_admin_token, "ci", "other", now=NOW)
        except DuplicateError:
            pass
        else:
            raise AssertionError("a second token named ci was stored")
        assert await self.database.write(admin_store.revoke_admin_token, "ci")
        assert await self.database.read(admin_store.find_admin_token, token) is None

    async def test_sessions_expire(self):
        """A session is found until it expires, never after."""
        await self.database.write(
            admin_store.add_admin_session, "cookie", 7, "csrf", now=NOW, expires=NOW + 10
        )
        found = await self.database.read(admin_store.find_admin_session, "cookie", now=NOW + 10)
        assert found is not None and (found.user_id, found.csrf_token) == (7, "csrf")
        assert (
            await self.database.read(admin_store.find_admin_session, "cookie", now=NOW + 11) is None
        )

    async def test_messages_since_are_counted_across_id_gaps(self):
        """The count of rows created since a time, with ids that have gaps and several
        rows per second; none before, all after."""
        rows = [(1, 100), (2, 100), (7, 150), (40, 200), (41, 200), (1000, 201), (5000, 300)]
        await self.database.write(add_messages, "messages", rows)
        await self.database.write(add_messages, "group_messages", rows[:3])
        for since, expected in [(0, 7), (100, 7), (101, 5), (200, 4), (201, 2), (300, 1), (301, 0)]:
            count = await self.database.read(admin_store.stored_since, "messages", since)
            assert count == expected, (since, count, expected)
        assert await self.database.read(admin_store.stored_since, "group_messages", 101) == 1
        totals = await self.database.read(admin_store.totals, 150, 201)
        assert (totals.messages_today, totals.messages_last_minute) == (5 + 1, 2)


class SQLiteAdminStoreTests(AdminStoreTests, SQLiteStoreCase):
    pass


class MariaDBAdminStoreTests(AdminStoreTests, MariaDBStoreCase):
    pass
