"""Groups in the store: creation, member changes and their rules, per-group message ids,
join watermarks, unread state, shield, and group sessions.

Every test runs on SQLite and on MariaDB through the ``database`` fixture.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import accounts, messages, schema
from teamtalk_py.store import groups as g
from teamtalk_py.store.database import Database

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


# --------------------------------------------------------------------------------------
# Creating groups


@pytest_twisted.ensureDeferred
async def test_create_adds_the_creator_and_skips_unknown_or_departed_users(database: Database):
    """Members are the listed active accounts plus the creator, ascending; the group
    starts at version 1 with no message."""
    alice, bob, carol = await users(database, "alice", "bob", "carol")
    await database.write(accounts.set_user_status, carol, accounts.USER_STATUS_LEFT, now=NOW)
    group, members = await database.write(
        g.create_group, "team", alice, [bob, bob, carol, 999_999], g.GROUP_TMP, now=NOW
    )
    assert members == tuple(sorted((alice, bob)))
    assert (group.version, group.last_msg_id, group.creator, group.type) == (1, 0, alice, 2)
    assert await database.read(g.member_ids, group.id) == sorted((alice, bob))


@pytest_twisted.ensureDeferred
async def test_create_refuses_empty_name_unknown_type_and_no_member(database: Database):
    """A name is required, the type must be normal or temporary, and an admin group
    (creator 0) needs at least one real member."""
    (alice,) = await users(database, "alice")
    for name, creator, members, kind in (
        ("  ", alice, [], g.GROUP_TMP),
        ("x", alice, [], 7),
        ("x", 0, [424242], g.GROUP_NORMAL),
        ("x" * 257, alice, [], g.GROUP_TMP),
    ):
        with pytest.raises(ValueError):
            await database.write(g.create_group, name, creator, members, kind, now=NOW)
    assert await database.read(g.list_groups) == []


# --------------------------------------------------------------------------------------
# Messages and ids


@pytest_twisted.ensureDeferred
async def test_message_ids_are_per_group_and_start_at_1(database: Database):
    """Each group counts 1, 2, 3 whoever sends; a second group starts at 1 again."""
    alice, bob = await users(database, "alice", "bob")
    first, second = await tmp_group(database, alice, bob), await tmp_group(database, bob, alice)
    ids = [(await post(database, first, who)).message.msg_id for who in (alice, bob, alice)]
    assert ids == [1, 2, 3]
    stored = await post(database, second, alice, b"x", NOW + 1)
    assert stored.message == messages.StoredMessage(1, alice, second, TEXT, b"x", NOW + 1)
    assert stored.version == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_messages_to_one_group_get_1_to_n(database: Database):
    """300 messages from three members at once get exactly 1..300, fired in id order."""
    members = await users(database, "a", "b", "c")
    group_id = await tmp_group(database, *members)
    fired: list[int] = []
    ds = []
    for i in range(300):
        d = post(database, group_id, members[i % 3], b"m%d" % i)
        d.addCallback(lambda s: fired.append(s.message.msg_id) or s)
        ds.append(d)
    await defer.gatherResults(ds)
    assert fired == list(range(1, 301))
    group = await database.read(g.get_group, group_id)
    assert group.last_msg_id == 300


@pytest_twisted.ensureDeferred
async def test_only_members_of_live_groups_may_post(database: Database):
    """A non-member, a removed member and anyone in a missing group are refused, and a
    refusal does not use up an id."""
    alice, bob, carol = await users(database, "alice", "bob", "carol")
    group_id = await tmp_group(database, alice, bob)
    with pytest.raises(g.NotAMember):
        await post(database, group_id, carol)
    await change(database, group_id, alice, g.DEL, bob)
    with pytest.raises(g.NotAMember):
        await post(database, group_id, bob)
    with pytest.raises(g.NoSuchGroup):
        await post(database, 987_654, alice)
    assert (await post(database, group_id, alice)).message.msg_id == 1


@pytest_twisted.ensureDeferred
async def test_store_refuses_single_types_and_empty_content(database: Database):
    """Only group text/audio with a non-empty byte payload is stored."""
    (alice,) = await users(database, "alice")
    group_id = await tmp_group(database, alice)
    with pytest.raises(ValueError):
        await database.write(
            g.store_group_message, group_id, alice, B.MSG_TYPE_SINGLE_TEXT, b"x", NOW
        )
    with pytest.raises(ValueError):
        await post(database, group_id, alice, b"")
    with pytest.raises(TypeError):
        await post(database, group_id, alice, "text")


# --------------------------------------------------------------------------------------
# Unread and read marks


@pytest_twisted.ensureDeferred
async def test_unread_counts_others_messages_but_never_your_own(database: Database):
    """Members count what others sent since they last read; sending marks the sender
    read up to their message; the entry carries the newest message and its sender."""
    alice, bob, carol = await users(database, "alice", "bob", "carol")
    group_id = await tmp_group(database, alice, bob, carol)
    await post(database, group_id, alice, b"1")
    await post(database, group_id, bob, b"2")
    await post(database, group_id, alice, b"3")
    assert await unread(database, alice) == {}
    assert await unread(database, bob) == {group_id: 1}
    (entry,) = await database.read(g.group_unread_counts, carol)
    assert (entry.session_type, entry.count) == (GROUP, 3)
    assert (entry.latest_msg_id, entry.latest_msg_from_id, entry.latest_msg_data) == (
        3,
        alice,
        b"3",
    )


@pytest_twisted.ensureDeferred
async def test_read_ack_marks_up_to_its_id_and_never_goes_back(database: Database):
    """A read ack naming msg 2 leaves 3 and 4 unread; an older ack changes nothing;
    msg_id 0 marks everything; ids past the end mean the end."""
    alice, bob = await users(database, "alice", "bob")
    group_id = await tmp_group(database, alice, bob)
    for _ in range(4):
        await post(database, group_id, alice)
    assert await database.write(g.mark_group_read, bob, group_id, 2)
    assert await unread(database, bob) == {group_id: 2}
    await database.write(g.mark_group_read, bob, group_id, 1)
    assert await unread(database, bob) == {group_id: 2}
    await database.write(g.mark_group_read, bob, group_id, 0)
    assert await unread(database, bob) == {}
    await post(database, group_id, alice)
    await database.write(g.mark_group_read, bob, group_id, 10**6)
    assert await unread(database, bob) == {}


@pytest_twisted.ensureDeferred
async def test_mark_read_is_refused_for_non_members(database: Database):
    """Only members have a read mark."""
    alice, carol = await users(database, "alice", "carol")
    group_id = await tmp_group(database, alice)
    assert not await database.write(g.mark_group_read, carol, group_id, 0)
    assert not await database.write(g.mark_group_read, alice, 987_654, 0)


# --------------------------------------------------------------------------------------
# Joining, leaving and what members see


@pytest_twisted.ensureDeferred
async def test_added_member_sees_only_messages_after_joining(database: Database):
    """History, get-by-id, latest id and unread all start at the join, even within the
    same second."""
    alice, bob, dave = await users(database, "alice", "bob", "dave")
    group_id = await tmp_group(database, alice, bob)
    await post(database, group_id, alice)
    await post(database, group_id, bob)
    await change(database, group_id, alice, g.ADD, dave)
    assert await history_ids(database, dave, group_id) == []
    assert await database.read(g.latest_group_msg_id, dave, group_id) == 0
    assert await unread(database, dave) == {}
    await post(database, group_id, bob)
    assert await history_ids(database, dave, group_id) == [3]
    assert await database.read(g.latest_group_msg_id, dave, group_id) == 3
    by_ids = await database.read(g.group_messages_by_ids, dave, group_id, [1, 2, 3])
    assert [m.msg_id for m in by_ids] == [3]
    assert await unread(database, dave) == {group_id: 1}
    assert await history_ids(database, alice, group_id) == [3, 2, 1]


@pytest_twisted.ensureDeferred
async def test_removed_member_sees_and_counts_nothing_and_readding_starts_afresh(
    database: Database,
):
    """A removed member gets no history, latest id or unread; re-added, they see only
    what was said after the re-join."""
    alice, bob = await users(database, "alice", "bob")
    group_id = await tmp_group(database, alice, bob)
    await post(database, group_id, alice)
    await change(database, group_id, alice, g.DEL, bob)
    await post(database, group_id, alice)
    assert await history_ids(database, bob, group_id) == []
    assert await database.read(g.latest_group_msg_id, bob, group_id) == 0
    assert await unread(database, bob) == {}
    await change(database, group_id, alice, g.ADD, bob)
    await post(database, group_id, alice)
    assert await history_ids(database, bob, group_id) == [3]
    assert await unread(database, bob) == {group_id: 1}


@pytest_twisted.ensureDeferred
async def test_history_pages_back_from_begin(database: Database):
    """Newest first from msg_id_begin (0 = newest), count at most."""
    (alice,) = await users(database, "alice")
    group_id = await tmp_group(database, alice)
    for i in range(1, 8):
        await post(database, group_id, alice, b"%d" % i)
    newest = await database.read(g.group_history, alice, group_id, 0, 3)
    page = await database.read(g.group_history, alice, group_id, 4, 10)
    assert [(m.msg_id, m.content, m.to_id) for m in newest] == [
        (7, b"7", group_id),
        (6, b"6", group_id),
        (5, b"5", group_id),
    ]
    assert [m.msg_id for m in page] == [4, 3, 2, 1]
    assert await database.read(g.group_history, alice, group_id, 0, 0) == []


@pytest_twisted.ensureDeferred
async def test_by_ids_looks_at_100_ids_at_most(database: Database):
    """Of 150 requested ids only the first 100 are answered, newest first."""
    (alice,) = await users(database, "alice")
    group_id = await tmp_group(database, alice)
    await defer.gatherResults([post(database, group_id, alice) for _ in range(120)])
    rows = await database.read(g.group_messages_by_ids, alice, group_id, range(1, 151))
    assert [m.msg_id for m in rows] == list(range(100, 0, -1))


# --------------------------------------------------------------------------------------
# Member changes


@pytest_twisted.ensureDeferred
async def test_changes_bump_the_version_and_report_changed_and_current(database: Database):
    """Add reports only the users actually added, remove only actual members; each
    success bumps the version by one."""
    alice, bob, carol, dave = await users(database, "alice", "bob", "carol", "dave")
    group_id = await tmp_group(database, alice, bob)
    added = await change(database, group_id, alice, g.ADD, bob, carol, dave)
    assert (added.changed, added.current, added.version) == (
        (carol, dave),
        (alice, bob, carol, dave),
        2,
    )
    removed = await change(database, group_id, alice, g.DEL, carol, 777_777)
    assert (removed.changed, removed.current, removed.version) == ((carol,), (alice, bob, dave), 3)
    assert (await database.read(g.get_group, group_id)).version == 3


@pytest_twisted.ensureDeferred
async def test_a_change_with_nobody_to_change_fails_without_a_version_bump(
    database: Database,
):
    """Adding only members or unknown users, or removing non-members, is a failure."""
    alice, bob, carol = await users(database, "alice", "bob", "carol")
    group_id = await tmp_group(database, alice, bob)
    with pytest.raises(g.NothingToChange):
        await change(database, group_id, alice, g.ADD, bob, 999_999)
    with pytest.raises(g.NothingToChange):
        await change(database, group_id, alice, g.DEL, carol)
    with pytest.raises(ValueError):
        await change(database, group_id, alice, 9, carol)
    assert (await database.read(g.get_group, group_id)).version == 1


@pytest_twisted.ensureDeferred
async def test_who_may_change_members(database: Database):
    """Temporary group: any member may add, only the creator may remove, outsiders may
    do nothing. Fixed group: only the creator. The admin (0) may do anything."""
    alice, bob, carol, dave = await users(database, "alice", "bob", "carol", "dave")
    tmp = await tmp_group(database, alice, bob)
    fixed, _ = await database.write(g.create_group, "fixed", alice, [bob], g.GROUP_NORMAL, now=NOW)
    with pytest.raises(g.NotAllowed):
        await change(database, tmp, carol, g.ADD, carol)
    assert (await change(database, tmp, bob, g.ADD, carol)).changed == (carol,)
    with pytest.raises(g.NotAllowed):
        await change(database, tmp, bob, g.DEL, carol)
    with pytest.raises(g.NotAllowed):
        await change(database, fixed.id, bob, g.ADD, dave)
    assert (await change(database, fixed.id, alice, g.ADD, dave)).changed == (dave,)
    assert (await change(database, fixed.id, 0, g.DEL, dave)).changed == (dave,)
    assert (await change(database, tmp, alice, g.DEL, carol)).changed == (carol,)


@pytest_twisted.ensureDeferred
async def test_creator_leaving_passes_the_group_to_the_earliest_member(database: Database):
    """When the creator is removed, the remaining member who joined first becomes the
    creator and may manage the group."""
    alice, bob, carol = await users(database, "alice", "bob", "carol")
    group_id = await tmp_group(database, alice, carol)
    await post(database, group_id, alice)
    await change(database, group_id, alice, g.ADD, bob)
    result = await change(database, group_id, 0, g.DEL, alice)
    assert result.creator == carol
    assert (await database.read(g.get_group, group_id)).creator == carol
    assert (await change(database, group_id, carol, g.DEL, bob)).current == (carol,)


@pytest_twisted.ensureDeferred
async def test_removing_the_last_member_dissolves_the_group(database: Database):
    """A group without members no longer exists for any command; its history stays."""
    (alice,) = await users(database, "alice")
    group_id = await tmp_group(database, alice)
    await post(database, group_id, alice)
    result = await change(database, group_id, alice, g.DEL, alice)
    assert result.dissolved and result.current == ()
    assert await database.read(g.group_members, group_id) is None
    assert await database.read(g.member_ids, group_id) == []
    with pytest.raises(g.NoSuchGroup):
        await change(database, group_id, 0, g.ADD, alice)
    with pytest.raises(g.NoSuchGroup):
        await post(database, group_id, alice)
    assert (await database.read(g.get_group, group_id)).status == g.GROUP_DISSOLVED
    assert await database.read(g.group_infos, alice, {group_id: 0}) == []
    rows = await database.read(
        lambda txn: txn.execute(
            "SELECT COUNT(*) FROM group_messages WHERE group_id = ?", (group_id,)
        ).fetchone()
    )
    assert rows[0] == 1


@pytest_twisted.ensureDeferred
async def test_group_members_carry_version_and_join_watermarks(database: Database):
    """What the msg node caches: the version and each member's join watermark."""
    alice, bob = await users(database, "alice", "bob")
    group_id = await tmp_group(database, alice)
    await post(database, group_id, alice)
    await post(database, group_id, alice)
    await change(database, group_id, alice, g.ADD, bob)
    members = await database.read(g.group_members, group_id)
    assert members.version == 2
    assert dict(members.join_msg_ids) == {alice: 0, bob: 2}


# --------------------------------------------------------------------------------------
# Lists, infos, shield


@pytest_twisted.ensureDeferred
async def test_normal_groups_lists_fixed_groups_only_most_recently_changed_first(
    database: Database,
):
    """Fixed groups of the user with their versions; temporary groups and groups the user
    left are not listed."""
    alice, bob = await users(database, "alice", "bob")
    first, _ = await database.write(g.create_group, "one", 0, [alice], g.GROUP_NORMAL, now=NOW)
    second, _ = await database.write(
        g.create_group, "two", 0, [alice, bob], g.GROUP_NORMAL, now=NOW + 1
    )
    await tmp_group(database, alice, bob)
    assert await database.read(g.normal_groups, alice) == [(second.id, 1), (first.id, 1)]
    await change(database, first.id, 0, g.ADD, bob, at=NOW + 5)
    assert await database.read(g.normal_groups, bob) == [(first.id, 2), (second.id, 1)]
    await change(database, second.id, 0, g.DEL, bob, at=NOW + 6)
    assert await database.read(g.normal_groups, bob) == [(first.id, 2)]


@pytest_twisted.ensureDeferred
async def test_group_infos_answer_newer_versions_of_the_users_groups(database: Database):
    """Version 0 always gets the info, an up-to-date version does not, and groups the
    user is not in are never described."""
    alice, bob, carol = await users(database, "alice", "bob", "carol")
    mine = await tmp_group(database, alice, bob, name="mine")
    other = await tmp_group(database, carol, name="other")
    (info,) = await database.read(g.group_infos, alice, {mine: 0, other: 0})
    assert (info.group.id, info.group.name, info.group.creator) == (mine, "mine", alice)
    assert info.members == tuple(sorted((alice, bob))) and info.shield == 0
    assert await database.read(g.group_infos, alice, {mine: 1}) == []
    await change(database, mine, alice, g.ADD, carol)
    (info,) = await database.read(g.group_infos, alice, {mine: 1})
    assert info.group.version == 2 and carol in info.members


@pytest_twisted.ensureDeferred
async def test_shield_is_per_member_and_shielded_groups_still_count(database: Database):
    """Only members may shield; the flag shows in their group info, unread still counts."""
    alice, bob, carol = await users(database, "alice", "bob", "carol")
    group_id = await tmp_group(database, alice, bob)
    assert await database.write(g.set_shield, bob, group_id, 1)
    assert not await database.write(g.set_shield, carol, group_id, 1)
    with pytest.raises(ValueError):
        await database.write(g.set_shield, bob, group_id, 2)
    await post(database, group_id, alice)
    assert await unread(database, bob) == {group_id: 1}
    (bob_info,) = await database.read(g.group_infos, bob, {group_id: 0})
    (alice_info,) = await database.read(g.group_infos, alice, {group_id: 0})
    assert (bob_info.shield, alice_info.shield) == (1, 0)


# --------------------------------------------------------------------------------------
# Sessions


async def session_list(db: Database, user_id: int, after: int = 0) -> list[tuple[int, int, int]]:
    rows = await db.read(g.recent_sessions, user_id, after)
    return [(s.peer_id, s.session_type, s.updated) for s in rows]


@pytest_twisted.ensureDeferred
async def test_every_member_sees_the_group_session_after_a_message(database: Database):
    """No message, no session; after one, every member lists the group at its time,
    with the newest message and its real sender, merged with single sessions."""
    alice, bob, carol = await users(database, "alice", "bob", "carol")
    group_id = await tmp_group(database, alice, bob)
    assert await session_list(database, bob) == []
    await database.write(messages.store_single_message, carol, bob, B.MSG_TYPE_SINGLE_TEXT,
                         b"dm", NOW + 1)  # fmt: skip
    await post(database, group_id, alice, b"g", NOW + 2)
    assert await session_list(database, bob) == [
        (group_id, GROUP, NOW + 2),
        (carol, SINGLE, NOW + 1),
    ]
    (top, _) = await database.read(g.recent_sessions, bob, 0)
    assert (top.latest_msg_id, top.latest_msg_from_id, top.latest_msg_data) == (1, alice, b"g")
    assert await session_list(database, bob, NOW + 1) == [(group_id, GROUP, NOW + 2)]
    assert await session_list(database, alice) == [(group_id, GROUP, NOW + 2)]


@pytest_twisted.ensureDeferred
async def test_removed_group_session_stays_hidden_until_you_post(database: Database):
    """Removing the group session hides it and clears unread; others' messages leave it
    hidden; your own message shows it again."""
    alice, bob = await users(database, "alice", "bob")
    group_id = await tmp_group(database, alice, bob)
    await post(database, group_id, alice, at=NOW)
    assert await database.write(g.remove_session, bob, group_id, GROUP, now=NOW + 1)
    assert await unread(database, bob) == {}
    assert not await database.write(g.remove_session, bob, group_id, GROUP, now=NOW + 1)
    await post(database, group_id, alice, at=NOW + 2)
    assert await session_list(database, bob) == []
    assert await unread(database, bob) == {group_id: 1}
    await post(database, group_id, bob, at=NOW + 3)
    assert await session_list(database, bob) == [(group_id, GROUP, NOW + 3)]


@pytest_twisted.ensureDeferred
async def test_group_session_of_new_and_removed_members(database: Database):
    """A member added later lists the group only from the next message; a removed
    member no longer lists it; re-added, they get it back at the next message."""
    alice, bob, dave = await users(database, "alice", "bob", "dave")
    group_id = await tmp_group(database, alice, bob)
    await post(database, group_id, bob, at=NOW)
    await change(database, group_id, alice, g.ADD, dave, at=NOW + 1)
    assert await session_list(database, dave) == []
    assert not await database.write(g.remove_session, dave, group_id, GROUP, now=NOW + 1)
    await post(database, group_id, alice, at=NOW + 2)
    assert await session_list(database, dave) == [(group_id, GROUP, NOW + 2)]
    await change(database, group_id, alice, g.DEL, bob, at=NOW + 3)
    assert await session_list(database, bob) == []
    await change(database, group_id, alice, g.ADD, bob, at=NOW + 4)
    await post(database, group_id, alice, at=NOW + 5)
    assert await session_list(database, bob) == [(group_id, GROUP, NOW + 5)]


@pytest_twisted.ensureDeferred
async def test_remove_session_still_handles_single_sessions(database: Database):
    """The group-aware remove_session hands single sessions to the message store."""
    alice, bob = await users(database, "alice", "bob")
    await database.write(messages.store_single_message, alice, bob, B.MSG_TYPE_SINGLE_TEXT,
                         b"dm", NOW)  # fmt: skip
    assert await database.write(g.remove_session, bob, alice, SINGLE, now=NOW + 1)
    assert await session_list(database, bob) == []


# --------------------------------------------------------------------------------------
# Schema


def test_join_watermark_migration_is_rerunnable(database: Database):
    """Migration 2 adds group_members.join_msg_id once, and re-running it is harmless."""
    with database.sync_transaction() as txn:
        txn.execute("DELETE FROM schema_version WHERE version >= 2")
    assert database.migrate() == schema.LATEST_VERSION
    with database.sync_transaction() as txn:
        assert "join_msg_id" in schema._columns(txn, "group_members")
