"""Repository functions for users, departments, profile, push settings and tokens.

Every test runs on SQLite and on MariaDB: ``AccountTests`` holds them, the two classes at
the end run them on each backend (``tests.store_support``).
"""

from __future__ import annotations

import base64
import hashlib
import re

from teamtalk_py.store import accounts
from teamtalk_py.store.database import Database
from teamtalk_py.store.txn import DuplicateError, Txn
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase

NOW = 1_700_000_000
IOS = 0x11
ANDROID = 0x12


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


#: One scrypt record for every test user: the KDF is slow on purpose.
RECORD = accounts.password_record("secret")


async def add_users(db: Database, *names: str, now: int = NOW) -> list[int]:
    return [
        await db.write(accounts.add_user, name, "secret", now=now, record=RECORD) for name in names
    ]


def set_raw_password(txn: Txn, user_id: int, password_hash: str, salt: str) -> None:
    txn.execute(
        "UPDATE users SET password_hash = ?, salt = ? WHERE id = ?", (password_hash, salt, user_id)
    )


class AccountTests:
    """The account repository tests, on ``self.database`` (see the classes below)."""

    database: Database

    # ----------------------------------------------------------------------------------
    # Departments

    async def test_add_department_and_find_it_by_name(self) -> None:
        """A new department is found by name with its fields and times."""
        dept_id = await self.database.write(accounts.add_department, "R&D", 0, 5, now=NOW)
        row = await self.database.read(accounts.get_department_by_name, "R&D")
        assert row == accounts.DepartmentRow(dept_id, "R&D", 5, 0, 0, NOW, NOW)
        assert await self.database.read(accounts.get_department_by_name, "r&d") is None

    async def test_duplicate_department_name_raises_duplicate_error(self) -> None:
        """Department names are unique."""
        await self.database.write(accounts.add_department, "Sales", now=NOW)
        with self.assertRaises(DuplicateError):
            await self.database.write(accounts.add_department, "Sales", now=NOW)

    async def test_list_departments_in_display_order(self) -> None:
        """Departments come by priority, then id, with their parents."""
        top = await self.database.write(accounts.add_department, "Top", 0, 2, now=NOW)
        await self.database.write(accounts.add_department, "Child", top, 1, now=NOW)
        rows = await self.database.read(accounts.list_departments)
        assert [(r.name, r.parent_id) for r in rows] == [("Child", top), ("Top", 0)]

    async def test_departments_updated_after_is_exclusive(self) -> None:
        """The incremental list returns departments changed strictly after the watermark."""
        await self.database.write(accounts.add_department, "Old", now=NOW)
        await self.database.write(accounts.add_department, "New", now=NOW + 10)
        rows = await self.database.read(accounts.departments_updated_after, NOW)
        assert [r.name for r in rows] == ["New"]
        assert await self.database.read(accounts.departments_updated_after, NOW + 10) == []

    # ----------------------------------------------------------------------------------
    # Users and passwords

    async def test_add_user_stores_a_scrypt_record_of_the_clients_md5(self) -> None:
        """password_hash = scrypt$14$8$1$<32 bytes> of md5_hex(plain); salt = 32 hex."""
        user_id = await self.database.write(
            accounts.add_user, "alice", "pa55", nick="Al", department_id=3, sex=2,
            phone="123", email="a@x", avatar="http://a", domain="ali", now=NOW,
        )  # fmt: skip
        row = await self.database.read(accounts.get_user_by_name, "alice")
        assert row.id == user_id
        assert re.fullmatch(r"[0-9a-f]{32}", row.salt)
        digest = hashlib.scrypt(
            md5_hex("pa55").encode(), salt=bytes.fromhex(row.salt), n=2**14, r=8, p=1, dklen=32
        )
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        assert row.password_hash == f"scrypt$14$8$1${expected}"
        assert len(row.password_hash) <= 64  # fits the MySQL column
        assert (row.nick, row.department_id, row.sex, row.phone, row.email, row.avatar,
                row.domain, row.status, row.created, row.updated) == (
            "Al", 3, 2, "123", "a@x", "http://a", "ali", 0, NOW, NOW)  # fmt: skip

    async def test_salts_differ_between_users(self) -> None:
        """Two users with the same password get different salts and hashes."""
        for name in ("a", "b"):
            await self.database.write(accounts.add_user, name, "secret", now=NOW)
        a = await self.database.read(accounts.get_user_by_name, "a")
        b = await self.database.read(accounts.get_user_by_name, "b")
        assert a.salt != b.salt and a.password_hash != b.password_hash

    async def test_check_password_takes_the_clients_md5(self) -> None:
        """Clients send md5_hex(plain): the right one passes, the plain text or another fails."""
        await self.database.write(accounts.add_user, "alice", "pa55", now=NOW)
        row = await self.database.read(accounts.get_user_by_name, "alice")
        assert accounts.check_password(row, md5_hex("pa55"))
        assert accounts.check_password(row, md5_hex("pa55").upper())
        assert not accounts.check_password(row, "pa55")
        assert not accounts.check_password(row, md5_hex("pa56"))

    async def test_a_reference_md5_row_is_accepted_and_replaced_by_scrypt(self) -> None:
        """A row in the reference's md5(md5 + salt) form (an imported TeamTalk user) checks
        the same MD5 and needs an upgrade; replace_password swaps it for scrypt without
        touching updated or session_epoch, and refuses if the row changed meanwhile."""
        (user_id,) = await add_users(self.database, "imported")
        legacy = md5_hex(md5_hex("old-pw") + "4711")
        await self.database.write(set_raw_password, user_id, legacy.upper(), "4711")
        (row,) = await self.database.read(accounts.get_users_by_ids, [user_id])
        assert accounts.check_password(row, md5_hex("old-pw"))
        assert not accounts.check_password(row, md5_hex("other"))
        assert accounts.password_needs_upgrade(row)
        record = accounts.hash_password(md5_hex("old-pw"))
        assert not await self.database.write(
            accounts.replace_password, user_id, "not-the-stored-hash", record
        )
        assert await self.database.write(
            accounts.replace_password, user_id, row.password_hash, record
        )
        (upgraded,) = await self.database.read(accounts.get_users_by_ids, [user_id])
        assert upgraded.password_hash.startswith("scrypt$")
        assert accounts.check_password(upgraded, md5_hex("old-pw"))
        assert not accounts.password_needs_upgrade(upgraded)
        assert (upgraded.updated, upgraded.session_epoch) == (row.updated, row.session_epoch)

    async def test_a_damaged_record_matches_nothing(self) -> None:
        """A scrypt record that does not parse, or a salt that is not hex, fails closed."""
        (user_id,) = await add_users(self.database, "broken")
        for stored, salt in (("scrypt$14$8$abc", "00"), ("scrypt$14$8$1$AAAA", "zz")):
            await self.database.write(set_raw_password, user_id, stored, salt)
            (row,) = await self.database.read(accounts.get_users_by_ids, [user_id])
            assert not accounts.check_password(row, md5_hex("secret"))

    async def test_account_changes_end_sessions(self) -> None:
        """A status change, a password change and end_sessions each move session_epoch
        and stamp session_changed; session_changes finds them from a time on."""
        a, b, c, _ = await add_users(self.database, "a", "b", "c", "never-changed")
        assert await self.database.read(accounts.last_session_change) == 0
        await self.database.write(
            accounts.set_user_status, a, accounts.USER_STATUS_LEFT, now=NOW + 1
        )
        await self.database.write(accounts.set_password, b, "n3w", now=NOW + 2)
        await self.database.write(accounts.end_sessions, c, now=NOW + 3)
        assert not await self.database.write(accounts.end_sessions, 999_999, now=NOW)
        changes = await self.database.read(accounts.session_changes, NOW + 2)
        assert [(x.user_id, x.session_epoch, x.session_changed) for x in changes] == [
            (b, 1, NOW + 2),
            (c, 1, NOW + 3),
        ]
        # A user never changed is not a change, even for a node polling from before 0.
        for since in (0, -10):
            everything = await self.database.read(accounts.session_changes, since)
            assert [(x.user_id, x.status) for x in everything] == [(a, 3), (b, 0), (c, 0)]
        assert await self.database.read(accounts.last_session_change) == NOW + 3
        (row,) = await self.database.read(accounts.get_users_by_ids, [c])
        assert row.session_epoch == 1

    async def test_duplicate_user_name_raises_duplicate_error(self) -> None:
        """User names are unique."""
        await add_users(self.database, "alice")
        with self.assertRaises(DuplicateError):
            await add_users(self.database, "alice")

    async def test_set_password_replaces_hash_and_salt(self) -> None:
        """After set_password only the new password works; unknown users report False."""
        (user_id,) = await add_users(self.database, "alice")
        assert await self.database.write(accounts.set_password, user_id, "n3w", now=NOW + 1)
        (row,) = await self.database.read(accounts.get_users_by_ids, [user_id])
        assert accounts.check_password(row, md5_hex("n3w"))
        assert not accounts.check_password(row, md5_hex("secret"))
        assert row.updated == NOW + 1
        assert not await self.database.write(accounts.set_password, 999_999, "x", now=NOW)

    async def test_departed_user_is_hidden_from_active_lookup(self) -> None:
        """Status 3 (left) keeps the row but only_active lookups stop finding it."""
        (user_id,) = await add_users(self.database, "bob")
        assert await self.database.write(
            accounts.set_user_status, user_id, accounts.USER_STATUS_LEFT, now=NOW + 5
        )
        assert await self.database.read(accounts.get_user_by_name, "bob", only_active=True) is None
        row = await self.database.read(accounts.get_user_by_name, "bob")
        assert (row.status, row.updated, row.can_log_in) == (3, NOW + 5, False)

    async def test_get_users_by_ids_skips_unknown_ids_and_keeps_any_status(self) -> None:
        """Known ids come back by id, whatever their status; unknown ones are missing."""
        a, b, c = await add_users(self.database, "a", "b", "c")
        await self.database.write(accounts.set_user_status, b, accounts.USER_STATUS_LEFT, now=NOW)
        ids = [c, 10_000_000, a, b, a, *range(20_000_000, 20_001_200)]
        rows = await self.database.read(accounts.get_users_by_ids, ids)
        assert [r.id for r in rows] == [a, b, c]
        assert await self.database.read(accounts.get_users_by_ids, []) == []

    async def test_list_users_returns_everyone(self) -> None:
        """The admin listing includes departed users."""
        a, b = await add_users(self.database, "a", "b")
        await self.database.write(accounts.set_user_status, b, accounts.USER_STATUS_LEFT, now=NOW)
        assert [r.id for r in await self.database.read(accounts.list_users)] == [a, b]

    async def test_users_updated_since_zero_excludes_departed_users(self) -> None:
        """The first full download (since = 0) leaves out users with status 3."""
        a, b, c = await add_users(self.database, "a", "b", "c")
        await self.database.write(accounts.set_user_status, b, accounts.USER_STATUS_LEFT, now=NOW)
        rows = await self.database.read(accounts.users_updated_since, 0)
        assert [r.id for r in rows] == [a, c]

    async def test_users_updated_since_is_inclusive_and_includes_departed(self) -> None:
        """An incremental download returns updated >= since, departed users included."""
        (a,) = await add_users(self.database, "a", now=NOW)
        b, c = await add_users(self.database, "b", "c", now=NOW + 10)
        await self.database.write(
            accounts.set_user_status, c, accounts.USER_STATUS_LEFT, now=NOW + 20
        )
        rows = await self.database.read(accounts.users_updated_since, NOW + 10)
        assert [r.id for r in rows] == [b, c]
        rows = await self.database.read(accounts.users_updated_since, NOW + 20)
        assert [r.id for r in rows] == [c]
        assert a not in [r.id for r in rows]

    async def test_max_user_updated(self) -> None:
        """The newest users.updated, or 0 with no users."""
        assert await self.database.read(accounts.max_user_updated) == 0
        await add_users(self.database, "a", now=NOW)
        await add_users(self.database, "b", now=NOW + 7)
        assert await self.database.read(accounts.max_user_updated) == NOW + 7

    # ----------------------------------------------------------------------------------
    # Profile fields

    async def test_set_sign_info_allows_128_bytes_and_bumps_updated(self) -> None:
        """128 UTF-8 bytes are accepted (and bump updated); 129 are refused unchanged."""
        (user_id,) = await add_users(self.database, "a")
        fits = "é" * 64  # 128 bytes
        assert await self.database.write(accounts.set_sign_info, user_id, fits, now=NOW + 3)
        assert not await self.database.write(
            accounts.set_sign_info, user_id, fits + "x", now=NOW + 4
        )
        (row,) = await self.database.read(accounts.get_users_by_ids, [user_id])
        assert (row.sign_info, row.updated) == (fits, NOW + 3)
        assert not await self.database.write(accounts.set_sign_info, 999_999, "hi", now=NOW)

    async def test_set_avatar(self) -> None:
        """The avatar URL is stored and updated moves."""
        (user_id,) = await add_users(self.database, "a")
        assert await self.database.write(
            accounts.set_avatar, user_id, "http://img/1.png", now=NOW + 1
        )
        (row,) = await self.database.read(accounts.get_users_by_ids, [user_id])
        assert (row.avatar, row.updated) == ("http://img/1.png", NOW + 1)

    async def test_push_shield_round_trip(self) -> None:
        """The flag defaults to 0, can be set, and reads None for an unknown user."""
        (user_id,) = await add_users(self.database, "a")
        assert await self.database.read(accounts.get_push_shield, user_id) == 0
        assert await self.database.write(accounts.set_push_shield, user_id, 1, now=NOW + 1)
        assert await self.database.read(accounts.get_push_shield, user_id) == 1
        assert await self.database.read(accounts.get_push_shield, 999_999) is None
        assert not await self.database.write(accounts.set_push_shield, 999_999, 1, now=NOW)

    async def test_update_user_profile_changes_fields_and_bumps_updated(self) -> None:
        """Whitelisted fields change together and updated moves."""
        (user_id,) = await add_users(self.database, "a")
        assert await self.database.write(
            accounts.update_user_profile, user_id, now=NOW + 9, nick="Ann", phone="555", sex=2
        )
        (row,) = await self.database.read(accounts.get_users_by_ids, [user_id])
        assert (row.nick, row.phone, row.sex, row.updated) == ("Ann", "555", 2, NOW + 9)

    async def test_update_user_profile_refuses_unknown_fields_and_taken_names(self) -> None:
        """Only profile columns may be named; renaming onto a taken name is a duplicate."""
        a, _ = await add_users(self.database, "a", "b")
        with self.assertRaisesRegex(ValueError, "password_hash"):
            await self.database.write(accounts.update_user_profile, a, now=NOW, password_hash="x")
        with self.assertRaises(DuplicateError):
            await self.database.write(accounts.update_user_profile, a, now=NOW, name="b")

    async def test_text_limits_are_the_same_on_both_backends(self) -> None:
        """A nick longer than 64 characters is refused before reaching the database."""
        with self.assertRaisesRegex(ValueError, "nick"):
            await self.database.write(accounts.add_user, "a", "pw", nick="n" * 65, now=NOW)
        assert await self.database.read(accounts.list_users) == []

    async def test_user_row_repr_hides_the_password(self) -> None:
        """A logged UserRow shows neither hash nor salt."""
        await add_users(self.database, "a")
        row = await self.database.read(accounts.get_user_by_name, "a")
        assert row.password_hash not in repr(row) and row.salt not in repr(row)

    # ----------------------------------------------------------------------------------
    # Device tokens

    async def test_device_tokens_round_trip_with_push_shield(self) -> None:
        """Tokens of the asked users come back with their type and push shield."""
        a, b, c = await add_users(self.database, "a", "b", "c")
        await self.database.write(accounts.set_device_token, a, IOS, "tok-a")
        await self.database.write(accounts.set_device_token, b, ANDROID, "tok-b")
        await self.database.write(accounts.set_push_shield, a, 1, now=NOW)
        rows = await self.database.read(accounts.get_device_tokens, [a, b, c, 999_999])
        assert rows == [
            accounts.DeviceTokenRow(a, IOS, "tok-a", 1),
            accounts.DeviceTokenRow(b, ANDROID, "tok-b", 0),
        ]

    async def test_device_token_replaced_and_moved(self) -> None:
        """A user's new token replaces the old one; a token taken over by another user is
        no longer the first user's."""
        a, b = await add_users(self.database, "a", "b")
        await self.database.write(accounts.set_device_token, a, IOS, "old")
        await self.database.write(accounts.set_device_token, a, IOS, "phone")
        await self.database.write(accounts.set_device_token, b, IOS, "phone")
        rows = await self.database.read(accounts.get_device_tokens, [a, b])
        assert [(r.user_id, r.token) for r in rows] == [(b, "phone")]

    async def test_clear_device_token(self) -> None:
        """Clearing (or setting an empty token) forgets the user's token."""
        a, b = await add_users(self.database, "a", "b")
        await self.database.write(accounts.set_device_token, a, IOS, "ta")
        await self.database.write(accounts.set_device_token, b, IOS, "tb")
        await self.database.write(accounts.clear_device_token, a)
        await self.database.write(accounts.set_device_token, b, IOS, "")
        assert await self.database.read(accounts.get_device_tokens, [a, b]) == []

    # ----------------------------------------------------------------------------------
    # The CLI path

    def test_repository_functions_work_in_a_sync_transaction(self) -> None:
        """The admin CLI runs the same functions on the blocking path."""
        with self.database.sync_transaction() as txn:
            dept = accounts.add_department(txn, "Ops", now=NOW)
            user_id = accounts.add_user(txn, "root", "pw", department_id=dept, now=NOW)
        with self.database.sync_transaction() as txn:
            row = accounts.get_user_by_name(txn, "root", only_active=True)
        assert (row.id, row.department_id) == (user_id, dept)


class SQLiteAccountTests(AccountTests, SQLiteStoreCase):
    """The account tests on SQLite."""


class MariaDBAccountTests(AccountTests, MariaDBStoreCase):
    """The account tests on MariaDB."""
