"""Repository functions for users, departments, profile, push settings and tokens.

Every test runs on SQLite and on MariaDB through the ``database`` fixture.
"""

from __future__ import annotations

import hashlib
import re

import pytest
import pytest_twisted

from teamtalk_py.store import accounts
from teamtalk_py.store.database import Database, DuplicateError

NOW = 1_700_000_000
IOS = 0x11
ANDROID = 0x12


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


async def add_users(db: Database, *names: str, now: int = NOW) -> list[int]:
    return [await db.write(accounts.add_user, name, "secret", now=now) for name in names]


# --------------------------------------------------------------------------------------
# Departments


@pytest_twisted.ensureDeferred
async def test_add_department_and_find_it_by_name(database: Database):
    """A new department is found by name with its fields and times."""
    dept_id = await database.write(accounts.add_department, "R&D", 0, 5, now=NOW)
    row = await database.read(accounts.get_department_by_name, "R&D")
    assert row == accounts.DepartmentRow(dept_id, "R&D", 5, 0, 0, NOW, NOW)
    assert await database.read(accounts.get_department_by_name, "r&d") is None


@pytest_twisted.ensureDeferred
async def test_duplicate_department_name_raises_duplicate_error(database: Database):
    """Department names are unique."""
    await database.write(accounts.add_department, "Sales", now=NOW)
    with pytest.raises(DuplicateError):
        await database.write(accounts.add_department, "Sales", now=NOW)


@pytest_twisted.ensureDeferred
async def test_list_departments_in_display_order(database: Database):
    """Departments come by priority, then id, with their parents."""
    top = await database.write(accounts.add_department, "Top", 0, 2, now=NOW)
    await database.write(accounts.add_department, "Child", top, 1, now=NOW)
    rows = await database.read(accounts.list_departments)
    assert [(r.name, r.parent_id) for r in rows] == [("Child", top), ("Top", 0)]


@pytest_twisted.ensureDeferred
async def test_departments_updated_after_is_exclusive(database: Database):
    """The incremental list returns departments changed strictly after the watermark."""
    await database.write(accounts.add_department, "Old", now=NOW)
    await database.write(accounts.add_department, "New", now=NOW + 10)
    rows = await database.read(accounts.departments_updated_after, NOW)
    assert [r.name for r in rows] == ["New"]
    assert await database.read(accounts.departments_updated_after, NOW + 10) == []


# --------------------------------------------------------------------------------------
# Users and passwords


@pytest_twisted.ensureDeferred
async def test_add_user_stores_the_salted_reference_hash(database: Database):
    """password_hash = md5_hex(md5_hex(plain) + salt), salt = 16 random hex characters."""
    user_id = await database.write(
        accounts.add_user, "alice", "pa55", nick="Al", department_id=3, sex=2,
        phone="123", email="a@x", avatar="http://a", domain="ali", now=NOW,
    )  # fmt: skip
    row = await database.read(accounts.get_user_by_name, "alice")
    assert row.id == user_id
    assert re.fullmatch(r"[0-9a-f]{16}", row.salt)
    assert row.password_hash == md5_hex(md5_hex("pa55") + row.salt)
    assert (row.nick, row.department_id, row.sex, row.phone, row.email, row.avatar,
            row.domain, row.status, row.created, row.updated) == (
        "Al", 3, 2, "123", "a@x", "http://a", "ali", 0, NOW, NOW)  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_salts_differ_between_users(database: Database):
    """Two users with the same password get different salts and hashes."""
    await add_users(database, "a", "b")
    a = await database.read(accounts.get_user_by_name, "a")
    b = await database.read(accounts.get_user_by_name, "b")
    assert a.salt != b.salt and a.password_hash != b.password_hash


@pytest_twisted.ensureDeferred
async def test_check_password_takes_the_clients_md5(database: Database):
    """Clients send md5_hex(plain): the right one passes, the plain text or another fails."""
    await database.write(accounts.add_user, "alice", "pa55", now=NOW)
    row = await database.read(accounts.get_user_by_name, "alice")
    assert accounts.check_password(row, md5_hex("pa55"))
    assert accounts.check_password(row, md5_hex("pa55").upper())
    assert not accounts.check_password(row, "pa55")
    assert not accounts.check_password(row, md5_hex("pa56"))


@pytest_twisted.ensureDeferred
async def test_duplicate_user_name_raises_duplicate_error(database: Database):
    """User names are unique."""
    await add_users(database, "alice")
    with pytest.raises(DuplicateError):
        await add_users(database, "alice")


@pytest_twisted.ensureDeferred
async def test_set_password_replaces_hash_and_salt(database: Database):
    """After set_password only the new password works; unknown users report False."""
    (user_id,) = await add_users(database, "alice")
    assert await database.write(accounts.set_password, user_id, "n3w", now=NOW + 1)
    row = await database.read(accounts.get_user, user_id)
    assert accounts.check_password(row, md5_hex("n3w"))
    assert not accounts.check_password(row, md5_hex("secret"))
    assert row.updated == NOW + 1
    assert not await database.write(accounts.set_password, 999_999, "x", now=NOW)


@pytest_twisted.ensureDeferred
async def test_departed_user_is_hidden_from_active_lookup(database: Database):
    """Status 3 (left) keeps the row but only_active lookups stop finding it."""
    (user_id,) = await add_users(database, "bob")
    assert await database.write(
        accounts.set_user_status, user_id, accounts.USER_STATUS_LEFT, now=NOW + 5
    )
    assert await database.read(accounts.get_user_by_name, "bob", only_active=True) is None
    row = await database.read(accounts.get_user_by_name, "bob")
    assert (row.status, row.updated, row.can_log_in) == (3, NOW + 5, False)


@pytest_twisted.ensureDeferred
async def test_get_users_by_ids_skips_unknown_ids_and_keeps_any_status(database: Database):
    """Known ids come back by id, whatever their status; unknown ones are missing."""
    a, b, c = await add_users(database, "a", "b", "c")
    await database.write(accounts.set_user_status, b, accounts.USER_STATUS_LEFT, now=NOW)
    ids = [c, 10_000_000, a, b, a, *range(20_000_000, 20_001_200)]
    rows = await database.read(accounts.get_users_by_ids, ids)
    assert [r.id for r in rows] == [a, b, c]
    assert await database.read(accounts.get_users_by_ids, []) == []


@pytest_twisted.ensureDeferred
async def test_list_users_returns_everyone(database: Database):
    """The admin listing includes departed users."""
    a, b = await add_users(database, "a", "b")
    await database.write(accounts.set_user_status, b, accounts.USER_STATUS_LEFT, now=NOW)
    assert [r.id for r in await database.read(accounts.list_users)] == [a, b]


@pytest_twisted.ensureDeferred
async def test_users_updated_since_zero_excludes_departed_users(database: Database):
    """The first full download (since = 0) leaves out users with status 3."""
    a, b, c = await add_users(database, "a", "b", "c")
    await database.write(accounts.set_user_status, b, accounts.USER_STATUS_LEFT, now=NOW)
    rows = await database.read(accounts.users_updated_since, 0)
    assert [r.id for r in rows] == [a, c]


@pytest_twisted.ensureDeferred
async def test_users_updated_since_is_inclusive_and_includes_departed(database: Database):
    """An incremental download returns updated >= since, departed users included."""
    (a,) = await add_users(database, "a", now=NOW)
    b, c = await add_users(database, "b", "c", now=NOW + 10)
    await database.write(accounts.set_user_status, c, accounts.USER_STATUS_LEFT, now=NOW + 20)
    rows = await database.read(accounts.users_updated_since, NOW + 10)
    assert [r.id for r in rows] == [b, c]
    rows = await database.read(accounts.users_updated_since, NOW + 20)
    assert [r.id for r in rows] == [c]
    assert a not in [r.id for r in rows]


@pytest_twisted.ensureDeferred
async def test_max_user_updated(database: Database):
    """The newest users.updated, or 0 with no users."""
    assert await database.read(accounts.max_user_updated) == 0
    await add_users(database, "a", now=NOW)
    await add_users(database, "b", now=NOW + 7)
    assert await database.read(accounts.max_user_updated) == NOW + 7


# --------------------------------------------------------------------------------------
# Profile fields


@pytest_twisted.ensureDeferred
async def test_set_sign_info_allows_128_bytes_and_bumps_updated(database: Database):
    """128 UTF-8 bytes are accepted (and bump updated); 129 are refused unchanged."""
    (user_id,) = await add_users(database, "a")
    fits = "é" * 64  # 128 bytes
    assert await database.write(accounts.set_sign_info, user_id, fits, now=NOW + 3)
    assert not await database.write(accounts.set_sign_info, user_id, fits + "x", now=NOW + 4)
    row = await database.read(accounts.get_user, user_id)
    assert (row.sign_info, row.updated) == (fits, NOW + 3)
    assert not await database.write(accounts.set_sign_info, 999_999, "hi", now=NOW)


@pytest_twisted.ensureDeferred
async def test_set_avatar(database: Database):
    """The avatar URL is stored and updated moves."""
    (user_id,) = await add_users(database, "a")
    assert await database.write(accounts.set_avatar, user_id, "http://img/1.png", now=NOW + 1)
    row = await database.read(accounts.get_user, user_id)
    assert (row.avatar, row.updated) == ("http://img/1.png", NOW + 1)


@pytest_twisted.ensureDeferred
async def test_push_shield_round_trip(database: Database):
    """The flag defaults to 0, can be set, and reads None for an unknown user."""
    (user_id,) = await add_users(database, "a")
    assert await database.read(accounts.get_push_shield, user_id) == 0
    assert await database.write(accounts.set_push_shield, user_id, 1, now=NOW + 1)
    assert await database.read(accounts.get_push_shield, user_id) == 1
    assert await database.read(accounts.get_push_shield, 999_999) is None
    assert not await database.write(accounts.set_push_shield, 999_999, 1, now=NOW)


@pytest_twisted.ensureDeferred
async def test_update_user_profile_changes_fields_and_bumps_updated(database: Database):
    """Whitelisted fields change together and updated moves."""
    (user_id,) = await add_users(database, "a")
    assert await database.write(
        accounts.update_user_profile, user_id, now=NOW + 9, nick="Ann", phone="555", sex=2
    )
    row = await database.read(accounts.get_user, user_id)
    assert (row.nick, row.phone, row.sex, row.updated) == ("Ann", "555", 2, NOW + 9)


@pytest_twisted.ensureDeferred
async def test_update_user_profile_refuses_unknown_fields_and_taken_names(database: Database):
    """Only profile columns may be named; renaming onto a taken name is a duplicate."""
    a, _ = await add_users(database, "a", "b")
    with pytest.raises(ValueError, match="password_hash"):
        await database.write(accounts.update_user_profile, a, now=NOW, password_hash="x")
    with pytest.raises(DuplicateError):
        await database.write(accounts.update_user_profile, a, now=NOW, name="b")


@pytest_twisted.ensureDeferred
async def test_text_limits_are_the_same_on_both_backends(database: Database):
    """A nick longer than 64 characters is refused before reaching the database."""
    with pytest.raises(ValueError, match="nick"):
        await database.write(accounts.add_user, "a", "pw", nick="n" * 65, now=NOW)
    assert await database.read(accounts.list_users) == []


@pytest_twisted.ensureDeferred
async def test_user_row_repr_hides_the_password(database: Database):
    """A logged UserRow shows neither hash nor salt."""
    await add_users(database, "a")
    row = await database.read(accounts.get_user_by_name, "a")
    assert row.password_hash not in repr(row) and row.salt not in repr(row)


# --------------------------------------------------------------------------------------
# Device tokens


@pytest_twisted.ensureDeferred
async def test_device_tokens_round_trip_with_push_shield(database: Database):
    """Tokens of the asked users come back with their type and push shield."""
    a, b, c = await add_users(database, "a", "b", "c")
    await database.write(accounts.set_device_token, a, IOS, "tok-a")
    await database.write(accounts.set_device_token, b, ANDROID, "tok-b")
    await database.write(accounts.set_push_shield, a, 1, now=NOW)
    rows = await database.read(accounts.get_device_tokens, [a, b, c, 999_999])
    assert rows == [
        accounts.DeviceTokenRow(a, IOS, "tok-a", 1),
        accounts.DeviceTokenRow(b, ANDROID, "tok-b", 0),
    ]


@pytest_twisted.ensureDeferred
async def test_device_token_replaced_and_moved(database: Database):
    """A user's new token replaces the old one; a token taken over by another user is
    no longer the first user's."""
    a, b = await add_users(database, "a", "b")
    await database.write(accounts.set_device_token, a, IOS, "old")
    await database.write(accounts.set_device_token, a, IOS, "phone")
    await database.write(accounts.set_device_token, b, IOS, "phone")
    rows = await database.read(accounts.get_device_tokens, [a, b])
    assert [(r.user_id, r.token) for r in rows] == [(b, "phone")]


@pytest_twisted.ensureDeferred
async def test_clear_device_token(database: Database):
    """Clearing (or setting an empty token) forgets the user's token."""
    a, b = await add_users(database, "a", "b")
    await database.write(accounts.set_device_token, a, IOS, "ta")
    await database.write(accounts.set_device_token, b, IOS, "tb")
    await database.write(accounts.clear_device_token, a)
    await database.write(accounts.set_device_token, b, IOS, "")
    assert await database.read(accounts.get_device_tokens, [a, b]) == []


# --------------------------------------------------------------------------------------
# The CLI path


def test_repository_functions_work_in_a_sync_transaction(database: Database):
    """The admin CLI runs the same functions on the blocking path."""
    with database.sync_transaction() as txn:
        dept = accounts.add_department(txn, "Ops", now=NOW)
        user_id = accounts.add_user(txn, "root", "pw", department_id=dept, now=NOW)
    with database.sync_transaction() as txn:
        row = accounts.get_user_by_name(txn, "root", only_active=True)
    assert (row.id, row.department_id) == (user_id, dept)
