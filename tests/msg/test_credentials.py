"""``Credentials``: the password check of a login and its cache of verified credentials."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

from teamtalk_py.msg.credentials import Credentials
from teamtalk_py.store import accounts
from teamtalk_py.store.accounts import UserRow, md5_hex
from tests.support import TestCase


def row_with(record: accounts.PasswordRecord, user_id: int = 1) -> UserRow:
    return UserRow(
        user_id, "alice", "alice", 0, "", "", "", "", 0, 0, "", 0, 0, 0,
        password_hash=record.password_hash, salt=record.salt,
    )  # fmt: skip


class CredentialsTests(TestCase):
    def setUp(self) -> None:
        self.credentials = Credentials(reactor, store=None, threads=1)
        self.credentials.start()
        self.addCleanup(self.credentials.stop)
        self.kdf_runs = 0
        real = accounts.check_password

        def counted(row: UserRow, md5: str) -> bool:
            self.kdf_runs += 1
            return real(row, md5)

        self.patch(accounts, "check_password", counted)

    async def test_a_verified_password_is_remembered_and_a_wrong_one_is_not(self) -> None:
        """The right MD5 passes once by the KDF, then from the cache (either letter case);
        a wrong one fails every time, each by the KDF."""
        row = row_with(accounts.password_record("secret"))
        assert await self.credentials.check(row, md5_hex("secret"))
        assert await self.credentials.check(row, md5_hex("secret").upper())
        assert self.kdf_runs == 1
        for _ in range(2):
            assert not await self.credentials.check(row, md5_hex("wrong"))
        assert self.kdf_runs == 3

    async def test_a_changed_record_is_checked_again(self) -> None:
        """A new password (a new record) misses the cache: the old MD5 no longer passes."""
        assert await self.credentials.check(
            row_with(accounts.password_record("old")), md5_hex("old")
        )
        changed = row_with(accounts.password_record("new"))
        assert not await self.credentials.check(changed, md5_hex("old"))
        assert await self.credentials.check(changed, md5_hex("new"))
        assert self.kdf_runs == 3

    def test_the_cache_key_is_keyed_per_process(self) -> None:
        """The remembered value is a MAC under this process's own key: another key (another
        process) gives another value for the same record and password."""
        row = row_with(accounts.password_record("secret"))
        other: Any = Credentials(reactor, store=None, threads=1)
        mine = self.credentials._fingerprint(row, md5_hex("secret"))
        assert mine == self.credentials._fingerprint(row, md5_hex("secret").upper())
        assert mine != other._fingerprint(row, md5_hex("secret"))
        assert len(mine) == 32
