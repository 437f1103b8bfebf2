"""The origin queries the catch-up reads (``store/origins.py``), on SQLite and MariaDB: one
run's one-to-one and group messages as one origin range, paged, and where a run's
messages from before a given time end."""

from __future__ import annotations

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import accounts, groups, messages
from teamtalk_py.store import origins as origin_store
from teamtalk_py.store.origins import first_origin
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase

T0 = 1_700_000_000


class OriginTests:
    database: object

    async def setUp(self) -> None:
        await super().setUp()  # type: ignore[misc]
        self.run = await self.database.write(origin_store.register_run, "a", T0)
        self.other = await self.database.write(origin_store.register_run, "b", T0)

        def add(txn):
            return [accounts.add_user(txn, name, "pw", now=T0) for name in ("al", "bo")]

        self.alice, self.bob = await self.database.write(add)
        group, _ = await self.database.write(
            groups.create_group, "g", self.alice, [self.bob], now=T0
        )  # fmt: skip
        self.group_id = group.id
        self.serial = 0

    async def store(self, run: int, created: int, group: bool = False) -> int:
        """One message of ``run`` stored at ``created``; its origin."""
        self.serial += 1
        origin = first_origin(run) + self.serial
        if group:
            await self.database.write(
                groups.store_group_message, self.group_id, self.alice, B.MSG_TYPE_GROUP_TEXT,
                b"same", created, origin=origin,
            )  # fmt: skip
        else:
            new = messages.NewMessage(
                self.alice, self.bob, B.MSG_TYPE_SINGLE_TEXT, b"same", created, None, origin
            )  # fmt: skip
            await self.database.write(messages.store_single_messages, [new])
        return origin

    async def test_a_runs_messages_of_both_kinds_come_as_one_range_in_pages(self):
        mine = [await self.store(self.run, T0 + i, group=i % 3 == 0) for i in range(7)]
        await self.store(self.other, T0)  # another run's: never in this run's range
        first = first_origin(self.run)
        page = await self.database.read(origin_store.messages_between, first, mine[-1], 3)
        assert [row.origin for row in page] == mine[:3]
        assert page[0].session_type == B.SESSION_TYPE_GROUP
        assert page[0].message.to_id == self.group_id
        assert page[1].session_type == B.SESSION_TYPE_SINGLE
        assert page[1].message.to_id == self.bob
        rest = await self.database.read(origin_store.messages_between, mine[2], mine[-1], 10)
        assert [row.origin for row in rest] == mine[3:]

    async def test_where_a_runs_messages_from_before_a_time_end(self):
        before = [await self.store(self.run, T0 + 5, group=i == 1) for i in range(3)]
        since = [await self.store(self.run, T0 + 10, group=i == 0) for i in range(2)]
        last = since[-1]
        assert await self.last_before(last, T0 + 10) == before[-1]
        assert await self.last_before(last, T0 + 6) == before[-1]
        assert await self.last_before(last, T0 + 5) == first_origin(self.run)  # none before
        assert await self.last_before(last, T0 + 11) == since[-1]
        assert await self.last_before(before[0], T0 + 11) == before[0]  # up to ``upto`` only

    async def last_before(self, upto: int, created: int) -> int:
        return await self.database.read(
            origin_store.last_stored_before, self.run, upto, created
        )  # fmt: skip


class SQLiteOriginTests(OriginTests, SQLiteStoreCase):
    pass


class MariaDBOriginTests(OriginTests, MariaDBStoreCase):
    pass
