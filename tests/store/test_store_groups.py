"""Groups in the store: creation, member changes and their rules, per-group message ids,
join watermarks, unread state, shield, and group sessions.

Every test runs on SQLite and on MariaDB: ``GroupStoreTests`` holds them, the two classes
at the end run them on each backend (``tests.store_support``).
"""

from __future__ import annotations

from twisted.internet import defer

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import accounts, messages, schema, sessions
from teamtalk_py.store import groups as g
from teamtalk_py.store.database import Database
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase

NOW = 1_700_000_000
TEXT = B.MSG_TYPE_GROUP_TEXT
GROUP = B.SESSION_TYPE_GROUP
SINGLE = B.SESSION_TYPE_SINGLE


async def users(db: Database, *names: str) -> list[int]:
    def add(txn):
        return [accounts.add_user(txn, name, "pw", now=NOW) for name in names]

    return await db.write(add)


async def tmp_group(db: Database, creator: int, *members: int, name: str = "team") -> int:
    group, _ = await db.write(g.create_group, name, creator, members, g.GROUP_TMP, now=NOW)
    return group.id


def post(db: Database, group_id: int, sender: int, body: bytes = b"hi", at: int = NOW):
    return db.write(g.store_group_message, group_id, sender, TEXT, body, at)


def change(db: Database, group_id: int, requester: int, kind: int, *ids: int, at: int = NOW):
    return db.write(g.change_members, group_id, requester, kind, ids, now=at)


async def unread(db: Database, user_id: int) -> dict[int, int]:
    return {u.peer_id: u.count for u in await db.read(g.group_unread_counts, user_id)}


async def history_ids(db: Database, user_id: int, group_id: int) -> list[int]:
    return [m.msg_id for m in await db.read(g.group_history, user_id, group_id, 0, 100)]


async def session_list(db: Database, user_id: int, after: int = 0) -> list[tuple[int, int, int]]:
    rows = await db.read(sessions.recent_sessions, user_id, after)
    return [(s.peer_id, s.session_type, s.updated) for s in rows]


class GroupStoreTests:
    """Group repository tests, run on both backends by the classes below."""

    # --------------------------------------------------------------------------------------
    # Creating groups

    async def test_create_adds_the_creator_and_skips_unknown_or_departed_users(self):
        """Members are the listed active accounts plus the creator, ascending; the group
        starts at version 1 with no message."""
        alice, bob, carol = await users(self.database, "alice", "bob", "carol")
        await self.database.write(
            accounts.set_user_status, carol, accounts.USER_STATUS_LEFT, now=NOW
        )
        group, members = await self.database.write(
            g.create_group, "team", alice, [bob, bob, carol, 999_999], g.GROUP_TMP, now=NOW
        )
        assert members == tuple(sorted((alice, bob)))
        assert (group.version, group.last_msg_id, group.creator, group.type) == (1, 0, alice, 2)
        assert await self.database.read(g.member_ids, group.id) == sorted((alice, bob))

    async def test_create_refuses_empty_name_unknown_type_and_no_member(self):
        """A name is required, the type must be normal or temporary, and an admin group
        (creator 0) needs at least one real member."""
        (alice,) = await users(self.database, "alice")
        for name, creator, members, kind in (
            ("  ", alice, [], g.GROUP_TMP),
            ("x", alice, [], 7),
            ("x", 0, [424242], g.GROUP_NORMAL),
            ("x" * 257, alice, [], g.GROUP_TMP),
        ):
            with self.assertRaises(ValueError):
                await self.database.write(g.create_group, name, creator, members, kind, now=NOW)
        assert await self.database.read(g.list_groups) == []

    # --------------------------------------------------------------------------------------
    # Messages and ids

    async def test_message_ids_are_per_group_and_start_at_1(self):
        """Each group counts 1, 2, 3 whoever sends; a second group starts at 1 again."""
        alice, bob = await users(self.database, "alice", "bob")
        first, second = (
            await tmp_group(self.database, alice, bob),
            await tmp_group(self.database, bob, alice),
        )
        ids = [
            (await post(self.database, first, who)).message.msg_id for who in (alice, bob, alice)
        ]
        assert ids == [1, 2, 3]
        stored = await post(self.database, second, alice, b"x", NOW + 1)
        assert stored.message == messages.StoredMessage(1, alice, second, TEXT, b"x", NOW + 1)
        assert stored.version == 1

    async def test_concurrent_messages_to_one_group_get_1_to_n(self):
        """300 messages from three members at once get exactly 1..300, fired in id order."""
        members = await users(self.database, "a", "b", "c")
        group_id = await tmp_group(self.database, *members)
        fired: list[int] = []
        ds = []
        for i in range(300):
            d = post(self.database, group_id, members[i % 3], b"m%d" % i)
            d.addCallback(lambda s: fired.append(s.message.msg_id) or s)
            ds.append(d)
        await defer.gatherResults(ds)
        assert fired == list(range(1, 301))
        group = await self.database.read(g.get_group, group_id)
        assert group.last_msg_id == 300

    async def test_only_members_of_live_groups_may_post(self):
        """A non-member, a removed member and anyone in a missing group are refused, and a
        refusal does not use up an id."""
        alice, bob, carol = await users(self.database, "alice", "bob", "carol")
        group_id = await tmp_group(self.database, alice, bob)
        with self.assertRaises(g.NotAMember):
            await post(self.database, group_id, carol)
        await change(self.database, group_id, alice, g.DEL, bob)
        with self.assertRaises(g.NotAMember):
            await post(self.database, group_id, bob)
        with self.assertRaises(g.NoSuchGroup):
            await post(self.database, 987_654, alice)
        assert (await post(self.database, group_id, alice)).message.msg_id == 1

    async def test_store_refuses_single_types_and_empty_content(self):
        """Only group text/audio with a non-empty byte payload is stored."""
        (alice,) = await users(self.database, "alice")
        group_id = await tmp_group(self.database, alice)
        with self.assertRaises(ValueError):
            await self.database.write(
                g.store_group_message, group_id, alice, B.MSG_TYPE_SINGLE_TEXT, b"x", NOW
            )
        with self.assertRaises(ValueError):
            await post(self.database, group_id, alice, b"")
        with self.assertRaises(TypeError):
            await post(self.database, group_id, alice, "text")

    # --------------------------------------------------------------------------------------
    # Unread and read marks

    async def test_unread_counts_others_messages_but_never_your_own(self):
        """Members count what others sent since they last read; sending marks the sender
        read up to their message; the entry carries the newest message and its sender."""
        alice, bob, carol = await users(self.database, "alice", "bob", "carol")
        group_id = await tmp_group(self.database, alice, bob, carol)
        await post(self.database, group_id, alice, b"1")
        await post(self.database, group_id, bob, b"2")
        await post(self.database, group_id, alice, b"3")
        assert await unread(self.database, alice) == {}
        assert await unread(self.database, bob) == {group_id: 1}
        (entry,) = await self.database.read(g.group_unread_counts, carol)
        assert (entry.session_type, entry.count) == (GROUP, 3)
        assert (entry.latest_msg_id, entry.latest_msg_from_id, entry.latest_msg_data) == (
            3,
            alice,
            b"3",
        )

    async def test_read_ack_marks_up_to_its_id_and_never_goes_back(self):
        """A read ack naming msg 2 leaves 3 and 4 unread; an older ack changes nothing;
        msg_id 0 marks everything; ids past the end mean the end."""
        alice, bob = await users(self.database, "alice", "bob")
        group_id = await tmp_group(self.database, alice, bob)
        for _ in range(4):
            await post(self.database, group_id, alice)
        assert await self.database.write(g.mark_group_read, bob, group_id, 2)
        assert await unread(self.database, bob) == {group_id: 2}
        await self.database.write(g.mark_group_read, bob, group_id, 1)
        assert await unread(self.database, bob) == {group_id: 2}
        await self.database.write(g.mark_group_read, bob, group_id, 0)
        assert await unread(self.database, bob) == {}
        await post(self.database, group_id, alice)
        await self.database.write(g.mark_group_read, bob, group_id, 10**6)
        assert await unread(self.database, bob) == {}

    async def test_mark_read_is_refused_for_non_members(self):
        """Only members have a read mark."""
        alice, carol = await users(self.database, "alice", "carol")
        group_id = await tmp_group(self.database, alice)
        assert not await self.database.write(g.mark_group_read, carol, group_id, 0)
        assert not await self.database.write(g.mark_group_read, alice, 987_654, 0)

    # --------------------------------------------------------------------------------------
    # Joining, leaving and what members see

    async def test_added_member_sees_only_messages_after_joining(self):
        """History, get-by-id, latest id and unread all start at the join, even within the
        same second."""
        alice, bob, dave = await users(self.database, "alice", "bob", "dave")
        group_id = await tmp_group(self.database, alice, bob)
        await post(self.database, group_id, alice)
        await post(self.database, group_id, bob)
        await change(self.database, group_id, alice, g.ADD, dave)
        assert await history_ids(self.database, dave, group_id) == []
        assert await self.database.read(g.latest_group_msg_id, dave, group_id) == 0
        assert await unread(self.database, dave) == {}
        await post(self.database, group_id, bob)
        assert await history_ids(self.database, dave, group_id) == [3]
        assert await self.database.read(g.latest_group_msg_id, dave, group_id) == 3
        by_ids = await self.database.read(g.group_messages_by_ids, dave, group_id, [1, 2, 3])
        assert [m.msg_id for m in by_ids] == [3]
        assert await unread(self.database, dave) == {group_id: 1}
        assert await history_ids(self.database, alice, group_id) == [3, 2, 1]

    async def test_removed_member_sees_and_counts_nothing_and_readding_starts_afresh(self):
        """A removed member gets no history, latest id or unread; re-added, they see only
        what was said after the re-join."""
        alice, bob = await users(self.database, "alice", "bob")
        group_id = await tmp_group(self.database, alice, bob)
        await post(self.database, group_id, alice)
        await change(self.database, group_id, alice, g.DEL, bob)
        await post(self.database, group_id, alice)
        assert await history_ids(self.database, bob, group_id) == []
        assert await self.database.read(g.latest_group_msg_id, bob, group_id) == 0
        assert await unread(self.database, bob) == {}
        await change(self.database, group_id, alice, g.ADD, bob)
        await post(self.database, group_id, alice)
        assert await history_ids(self.database, bob, group_id) == [3]
        assert await unread(self.database, bob) == {group_id: 1}

    async def test_history_pages_back_from_begin(self):
        """Newest first from msg_id_begin (0 = newest), count at most."""
        (alice,) = await users(self.database, "alice")
        group_id = await tmp_group(self.database, alice)
        for i in range(1, 8):
            await post(self.database, group_id, alice, b"%d" % i)
        newest = await self.database.read(g.group_history, alice, group_id, 0, 3)
        page = await self.database.read(g.group_history, alice, group_id, 4, 10)
        assert [(m.msg_id, m.content, m.to_id) for m in newest] == [
            (7, b"7", group_id),
            (6, b"6", group_id),
            (5, b"5", group_id),
        ]
        assert [m.msg_id for m in page] == [4, 3, 2, 1]
        assert await self.database.read(g.group_history, alice, group_id, 0, 0) == []

    async def test_by_ids_looks_at_100_ids_at_most(self):
        """Of 150 requested ids only the first 100 are answered, newest first."""
        (alice,) = await users(self.database, "alice")
        group_id = await tmp_group(self.database, alice)
        await defer.gatherResults([post(self.database, group_id, alice) for _ in range(120)])
        rows = await self.database.read(g.group_messages_by_ids, alice, group_id, range(1, 151))
        assert [m.msg_id for m in rows] == list(range(100, 0, -1))

    # --------------------------------------------------------------------------------------
    # Member changes

    async def test_changes_bump_the_version_and_report_changed_and_current(self):
        """Add reports only the users actually added, remove only actual members; each
        success bumps the version by one."""
        alice, bob, carol, dave = await users(self.database, "alice", "bob", "carol", "dave")
        group_id = await tmp_group(self.database, alice, bob)
        added = await change(self.database, group_id, alice, g.ADD, bob, carol, dave)
        assert (added.changed, added.current, added.version) == (
            (carol, dave),
            (alice, bob, carol, dave),
            2,
        )
        removed = await change(self.database, group_id, alice, g.DEL, carol, 777_777)
        assert (removed.changed, removed.current, removed.version) == (
            (carol,),
            (alice, bob, dave),
            3,
        )
        assert (await self.database.read(g.get_group, group_id)).version == 3

    async def test_a_change_with_nobody_to_change_fails_without_a_version_bump(self):
        """Adding only members or unknown users, or removing non-members, is a failure."""
        alice, bob, carol = await users(self.database, "alice", "bob", "carol")
        group_id = await tmp_group(self.database, alice, bob)
        with self.assertRaises(g.NothingToChange):
            await change(self.database, group_id, alice, g.ADD, bob, 999_999)
        with self.assertRaises(g.NothingToChange):
            await change(self.database, group_id, alice, g.DEL, carol)
        with self.assertRaises(ValueError):
            await change(self.database, group_id, alice, 9, carol)
        assert (await self.database.read(g.get_group, group_id)).version == 1

    async def test_who_may_change_members(self):
        """Temporary group: any member may add, only the creator may remove, outsiders may
        do nothing. Fixed group: only the creator. The admin (0) may do anything."""
        alice, bob, carol, dave = await users(self.database, "alice", "bob", "carol", "dave")
        tmp = await tmp_group(self.database, alice, bob)
        fixed, _ = await self.database.write(
            g.create_group, "fixed", alice, [bob], g.GROUP_NORMAL, now=NOW
        )
        with self.assertRaises(g.NotAllowed):
            await change(self.database, tmp, carol, g.ADD, carol)
        assert (await change(self.database, tmp, bob, g.ADD, carol)).changed == (carol,)
        with self.assertRaises(g.NotAllowed):
            await change(self.database, tmp, bob, g.DEL, carol)
        with self.assertRaises(g.NotAllowed):
            await change(self.database, fixed.id, bob, g.ADD, dave)
        assert (await change(self.database, fixed.id, alice, g.ADD, dave)).changed == (dave,)
        assert (await change(self.database, fixed.id, 0, g.DEL, dave)).changed == (dave,)
        assert (await change(self.database, tmp, alice, g.DEL, carol)).changed == (carol,)

    async def test_creator_leaving_passes_the_group_to_the_earliest_member(self):
        """When the creator is removed, the remaining member who joined first becomes the
        creator and may manage the group."""
        alice, bob, carol = await users(self.database, "alice", "bob", "carol")
        group_id = await tmp_group(self.database, alice, carol)
        await post(self.database, group_id, alice)
        await change(self.database, group_id, alice, g.ADD, bob)
        result = await change(self.database, group_id, 0, g.DEL, alice)
        assert result.creator == carol
        assert (await self.database.read(g.get_group, group_id)).creator == carol
        assert (await change(self.database, group_id, carol, g.DEL, bob)).current == (carol,)

    async def test_removing_the_last_member_dissolves_the_group(self):
        """A group without members no longer exists for any command; its history stays."""
        (alice,) = await users(self.database, "alice")
        group_id = await tmp_group(self.database, alice)
        await post(self.database, group_id, alice)
        result = await change(self.database, group_id, alice, g.DEL, alice)
        assert result.dissolved and result.current == ()
        assert await self.database.read(g.group_members, group_id) is None
        assert await self.database.read(g.member_ids, group_id) == []
        with self.assertRaises(g.NoSuchGroup):
            await change(self.database, group_id, 0, g.ADD, alice)
        with self.assertRaises(g.NoSuchGroup):
            await post(self.database, group_id, alice)
        assert (await self.database.read(g.get_group, group_id)).status == g.GROUP_DISSOLVED
        assert await self.database.read(g.group_infos, alice, {group_id: 0}) == []
        rows = await self.database.read(
            lambda txn: txn.execute(
                "SELECT COUNT(*) FROM group_messages WHERE group_id = ?", (group_id,)
            ).fetchone()
        )
        assert rows[0] == 1

    async def test_group_members_carry_version_and_join_watermarks(self):
        """What the msg node caches: the version and each member's join watermark."""
        alice, bob = await users(self.database, "alice", "bob")
        group_id = await tmp_group(self.database, alice)
        await post(self.database, group_id, alice)
        await post(self.database, group_id, alice)
        await change(self.database, group_id, alice, g.ADD, bob)
        members = await self.database.read(g.group_members, group_id)
        assert members.version == 2
        assert dict(members.join_msg_ids) == {alice: 0, bob: 2}

    # --------------------------------------------------------------------------------------
    # Lists, infos, shield

    async def test_normal_groups_lists_fixed_groups_only_most_recently_changed_first(self):
        """Fixed groups of the user with their versions; temporary groups and groups the user
        left are not listed."""
        alice, bob = await users(self.database, "alice", "bob")
        first, _ = await self.database.write(
            g.create_group, "one", 0, [alice], g.GROUP_NORMAL, now=NOW
        )
        second, _ = await self.database.write(
            g.create_group, "two", 0, [alice, bob], g.GROUP_NORMAL, now=NOW + 1
        )
        await tmp_group(self.database, alice, bob)
        assert await self.database.read(g.normal_groups, alice) == [(second.id, 1), (first.id, 1)]
        await change(self.database, first.id, 0, g.ADD, bob, at=NOW + 5)
        assert await self.database.read(g.normal_groups, bob) == [(first.id, 2), (second.id, 1)]
        await change(self.database, second.id, 0, g.DEL, bob, at=NOW + 6)
        assert await self.database.read(g.normal_groups, bob) == [(first.id, 2)]

    async def test_group_infos_answer_newer_versions_of_the_users_groups(self):
        """Version 0 always gets the info, an up-to-date version does not, and groups the
        user is not in are never described."""
        alice, bob, carol = await users(self.database, "alice", "bob", "carol")
        mine = await tmp_group(self.database, alice, bob, name="mine")
        other = await tmp_group(self.database, carol, name="other")
        (info,) = await self.database.read(g.group_infos, alice, {mine: 0, other: 0})
        assert (info.group.id, info.group.name, info.group.creator) == (mine, "mine", alice)
        assert info.members == tuple(sorted((alice, bob))) and info.shield == 0
        assert await self.database.read(g.group_infos, alice, {mine: 1}) == []
        await change(self.database, mine, alice, g.ADD, carol)
        (info,) = await self.database.read(g.group_infos, alice, {mine: 1})
        assert info.group.version == 2 and carol in info.members

    async def test_shield_is_per_member_and_shielded_groups_still_count(self):
        """Only members may shield; the flag shows in their group info, unread still counts."""
        alice, bob, carol = await users(self.database, "alice", "bob", "carol")
        group_id = await tmp_group(self.database, alice, bob)
        assert await self.database.write(g.set_shield, bob, group_id, 1)
        assert not await self.database.write(g.set_shield, carol, group_id, 1)
        with self.assertRaises(ValueError):
            await self.database.write(g.set_shield, bob, group_id, 2)
        await post(self.database, group_id, alice)
        assert await unread(self.database, bob) == {group_id: 1}
        (bob_info,) = await self.database.read(g.group_infos, bob, {group_id: 0})
        (alice_info,) = await self.database.read(g.group_infos, alice, {group_id: 0})
        assert (bob_info.shield, alice_info.shield) == (1, 0)

    # --------------------------------------------------------------------------------------
    # Sessions

    async def test_every_member_sees_the_group_session_after_a_message(self):
        """No message, no session; after one, every member lists the group at its time,
        with the newest message and its real sender, merged with single sessions."""
        alice, bob, carol = await users(self.database, "alice", "bob", "carol")
        group_id = await tmp_group(self.database, alice, bob)
        assert await session_list(self.database, bob) == []
        await self.database.write(messages.store_single_message, carol, bob, B.MSG_TYPE_SINGLE_TEXT,
                             b"dm", NOW + 1)  # fmt: skip
        await post(self.database, group_id, alice, b"g", NOW + 2)
        assert await session_list(self.database, bob) == [
            (group_id, GROUP, NOW + 2),
            (carol, SINGLE, NOW + 1),
        ]
        (top, _) = await self.database.read(sessions.recent_sessions, bob, 0)
        assert (top.latest_msg_id, top.latest_msg_from_id, top.latest_msg_data) == (1, alice, b"g")
        assert await session_list(self.database, bob, NOW + 1) == [(group_id, GROUP, NOW + 2)]
        assert await session_list(self.database, alice) == [(group_id, GROUP, NOW + 2)]

    async def test_removed_group_session_stays_hidden_until_you_post(self):
        """Removing the group session hides it and clears unread; others' messages leave it
        hidden; your own message shows it again."""
        alice, bob = await users(self.database, "alice", "bob")
        group_id = await tmp_group(self.database, alice, bob)
        await post(self.database, group_id, alice, at=NOW)
        assert await self.database.write(sessions.remove_session, bob, group_id, GROUP, now=NOW + 1)
        assert await unread(self.database, bob) == {}
        assert not await self.database.write(
            sessions.remove_session, bob, group_id, GROUP, now=NOW + 1
        )
        await post(self.database, group_id, alice, at=NOW + 2)
        assert await session_list(self.database, bob) == []
        assert await unread(self.database, bob) == {group_id: 1}
        await post(self.database, group_id, bob, at=NOW + 3)
        assert await session_list(self.database, bob) == [(group_id, GROUP, NOW + 3)]

    async def test_group_session_of_new_and_removed_members(self):
        """A member added later lists the group only from the next message; a removed
        member no longer lists it; re-added, they get it back at the next message."""
        alice, bob, dave = await users(self.database, "alice", "bob", "dave")
        group_id = await tmp_group(self.database, alice, bob)
        await post(self.database, group_id, bob, at=NOW)
        await change(self.database, group_id, alice, g.ADD, dave, at=NOW + 1)
        assert await session_list(self.database, dave) == []
        assert not await self.database.write(
            sessions.remove_session, dave, group_id, GROUP, now=NOW + 1
        )
        await post(self.database, group_id, alice, at=NOW + 2)
        assert await session_list(self.database, dave) == [(group_id, GROUP, NOW + 2)]
        await change(self.database, group_id, alice, g.DEL, bob, at=NOW + 3)
        assert await session_list(self.database, bob) == []
        await change(self.database, group_id, alice, g.ADD, bob, at=NOW + 4)
        await post(self.database, group_id, alice, at=NOW + 5)
        assert await session_list(self.database, bob) == [(group_id, GROUP, NOW + 5)]

    async def test_remove_session_still_handles_single_sessions(self):
        """remove_session hides one-to-one sessions as well as group sessions."""
        alice, bob = await users(self.database, "alice", "bob")
        await self.database.write(messages.store_single_message, alice, bob, B.MSG_TYPE_SINGLE_TEXT,
                             b"dm", NOW)  # fmt: skip
        assert await self.database.write(sessions.remove_session, bob, alice, SINGLE, now=NOW + 1)
        assert await session_list(self.database, bob) == []

    # --------------------------------------------------------------------------------------
    # Schema

    def test_join_watermark_migration_is_rerunnable(self):
        """Migration 2 adds group_members.join_msg_id once, and re-running it is harmless."""
        with self.database.sync_transaction() as txn:
            txn.execute("DELETE FROM schema_version WHERE version >= 2")
        assert self.database.migrate() == schema.LATEST_VERSION
        with self.database.sync_transaction() as txn:
            assert "join_msg_id" in schema._columns(txn, "group_members")


class SQLiteGroupStoreTests(GroupStoreTests, SQLiteStoreCase):
    """The group store tests on SQLite."""


class MariaDBGroupStoreTests(GroupStoreTests, MariaDBStoreCase):
    """The group store tests on MariaDB."""
