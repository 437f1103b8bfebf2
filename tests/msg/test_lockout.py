"""Failed logins (msg/lockout.py): counted per (name, address) and per address, with
increasing delays, in bounded tables.

The rule on a fake clock; the tables' memory for 100,000 unique failures (tracemalloc of
the lockout object, in this process); and over real sockets, with clients bound to other
loopback addresses (Linux routes all of 127/8 to lo): an attacker at 127.0.0.2 is locked
out while the owner logs in from 127.0.0.1, the owner's own mistakes cost a delay, never
a lock, and unknown names count (and take) what known ones do.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

from twisted.internet.task import Clock

from teamtalk_py.addresses import address_key
from teamtalk_py.msg.lockout import (
    ADDRESS_FREE_FAILURES,
    FREE_FAILURES,
    MAX_DELAY,
    TABLE_SIZE,
    WINDOW,
    LoginLockout,
    delay_after,
)
from teamtalk_py.msg.session import TOO_MANY_FAILURES, WRONG_PASSWORD
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from tests.msg_support import PASSWORD, MsgTestCase, closed_within, sleep
from tests.support import TestCase

OWNER = "127.0.0.1"
ATTACKER = "127.0.0.2"
SPRAYER = "127.0.0.3"


class DelayRuleTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.lockout = LoginLockout(self.clock)

    def fail(self, name: str, address: str, times: int = 1) -> None:
        for _ in range(times):
            self.lockout.record_failure(name, address)

    def test_five_failures_are_free_then_each_waits_twice_as_long(self):
        """Failures 1-4 cost nothing; after the 5th the next try waits 1 s, after the 6th
        2 s, after the 7th 4 s: a delay from the last failure, not a lock."""
        self.fail("alice", "10.0.0.1", FREE_FAILURES - 1)
        assert not self.lockout.is_locked("alice", "10.0.0.1")
        for delay in (1.0, 2.0, 4.0):
            self.fail("alice", "10.0.0.1")
            assert self.lockout.wait("alice", "10.0.0.1") == delay
            self.clock.advance(delay - 0.01)
            assert self.lockout.is_locked("alice", "10.0.0.1")
            self.clock.advance(0.01)
            assert not self.lockout.is_locked("alice", "10.0.0.1")

    def test_the_delay_stops_growing_at_15_minutes(self):
        """However many failures, no try waits more than ``MAX_DELAY``."""
        assert delay_after(FREE_FAILURES + 100, FREE_FAILURES) == MAX_DELAY == 900
        self.fail("alice", "10.0.0.1", 40)
        assert self.lockout.wait("alice", "10.0.0.1") == MAX_DELAY

    def test_failures_from_another_address_never_slow_the_owner(self):
        """Twenty failures of alice from one address delay that address only."""
        self.fail("alice", "10.0.0.2", 20)
        assert self.lockout.is_locked("alice", "10.0.0.2")
        assert not self.lockout.is_locked("alice", "10.0.0.1")

    def test_an_address_spraying_names_waits_after_30(self):
        """Thirty failures with different names from one address, and every name waits
        from there (a new one too); other addresses are not affected."""
        for i in range(ADDRESS_FREE_FAILURES):
            self.fail(f"user{i}", "10.0.0.3")
        assert self.lockout.is_locked("somebody-new", "10.0.0.3")
        assert not self.lockout.is_locked("somebody-new", "10.0.0.1")

    def test_a_success_clears_the_name_and_address_but_not_the_address(self):
        """``clear`` forgets (name, address); the address keeps its count (29 failures,
        so one more from there, of any name, makes every name wait)."""
        self.fail("alice", "10.0.0.1", FREE_FAILURES - 1)
        for i in range(ADDRESS_FREE_FAILURES - FREE_FAILURES):
            self.fail(f"user{i}", "10.0.0.1")
        self.lockout.clear("alice", "10.0.0.1")
        assert not self.lockout.is_locked("alice", "10.0.0.1")
        self.fail("bob", "10.0.0.1")
        assert self.lockout.is_locked("alice", "10.0.0.1")

    def test_counts_end_30_minutes_after_the_last_failure(self):
        """A key is forgotten ``WINDOW`` after its last failure."""
        self.fail("alice", "10.0.0.1", 10)
        self.clock.advance(WINDOW + 1)
        self.fail("alice", "10.0.0.1")
        assert not self.lockout.is_locked("alice", "10.0.0.1")

    def test_ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4(self):
        """Addresses of one /64 share a count (a host usually holds the whole /64)."""
        assert address_key("2001:db8::1") == address_key("2001:db8::ffff:2") == "2001:db8::/64"
        assert address_key("::ffff:10.0.0.1") == "10.0.0.1"
        self.fail("alice", "2001:db8::1", 3)
        self.fail("alice", "2001:db8::2", 2)
        assert self.lockout.is_locked("alice", "2001:db8::3")

    def test_the_tables_never_hold_more_than_their_size(self):
        """An LRU: 1,000 unique failures leave 100 keys in each table of size 100, the
        ones touched last."""
        lockout = LoginLockout(self.clock, table_size=100)
        for i in range(1000):
            lockout.record_failure(f"user{i}", f"10.0.{i // 256}.{i % 256}")
        assert len(lockout.pairs) == len(lockout.addresses) == 100
        assert lockout.pairs.waiting(lockout.pair_key("user999", "10.0.3.231"), 1, 1) > 0


def table_bytes(lockout: LoginLockout) -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


class MemoryTests(TestCase):
    def test_100000_unique_failed_logins_leave_memory_flat(self):
        """100,000 failures, each a new name from a new address (the worst case: both
        tables gain a key each time), on the default tables: the memory traced while
        they are recorded stays under 5 MB (about 2 MB), and the last 80,000 add
        nothing to it."""
        clock = Clock()
        lockout = LoginLockout(clock)
        tracemalloc.start()
        try:
            base = table_bytes(lockout)
            after = {}
            for i in range(100_000):
                lockout.record_failure(
                    f"user-{i:06d}@example.com", f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}"
                )
                if i + 1 in (20_000, 100_000):
                    after[i + 1] = table_bytes(lockout) - base
        finally:
            tracemalloc.stop()
        assert after[100_000] < 5 * 1024 * 1024, after
        assert abs(after[100_000] - after[20_000]) < 256 * 1024, after
        assert len(lockout.pairs) == len(lockout.addresses) == TABLE_SIZE


class LockoutOverSocketsTests(MsgTestCase):
    async def test_the_owner_logs_in_while_an_attacker_is_locked_out(self):
        """Five wrong passwords for alice from 127.0.0.2, and 127.0.0.2 is refused "too
        many failures" even with the right password; meanwhile alice logs in from
        127.0.0.1 at once."""
        await self.add_user("alice")
        for _ in range(FREE_FAILURES):
            answer, _ = await self.attempt("alice", "guess", source=ATTACKER)
            assert answer.result_string in (WRONG_PASSWORD, TOO_MANY_FAILURES)
        answer, session = await self.attempt("alice", PASSWORD, source=ATTACKER)
        assert answer.result_code == B.REFUSE_REASON_DB_VALIDATE_FAILED
        assert answer.result_string == TOO_MANY_FAILURES
        assert await closed_within(session.protocol, 2)
        answer, _ = await self.attempt("alice", PASSWORD, source=OWNER)
        assert answer.result_code == B.REFUSE_REASON_NONE

    async def test_the_owners_own_mistakes_cost_a_delay_not_a_lock(self):
        """Five wrong passwords from the owner's address: the next try within 1 s is
        refused, the right password a second later works."""
        await self.add_user("alice")
        for _ in range(FREE_FAILURES):
            await self.attempt("alice", "typo", source=OWNER)
        answer, _ = await self.attempt("alice", PASSWORD, source=OWNER)
        assert answer.result_string == TOO_MANY_FAILURES
        await sleep(1.05)
        answer, _ = await self.attempt("alice", PASSWORD, source=OWNER)
        assert answer.result_code == B.REFUSE_REASON_NONE

    async def test_an_address_trying_many_names_is_slowed_and_others_are_not(self):
        """Thirty unknown names from 127.0.0.3, then even alice's right password from
        there waits; from 127.0.0.1 she logs in."""
        await self.add_user("alice")
        for i in range(ADDRESS_FREE_FAILURES):
            answer, _ = await self.attempt(f"nobody{i}", "x", source=SPRAYER)
            assert answer.result_string in (WRONG_PASSWORD, TOO_MANY_FAILURES)
        answer, _ = await self.attempt("alice", PASSWORD, source=SPRAYER)
        assert answer.result_string == TOO_MANY_FAILURES
        answer, _ = await self.attempt("alice", PASSWORD, source=OWNER)
        assert answer.result_code == B.REFUSE_REASON_NONE

    async def test_unknown_names_count_and_take_what_known_ones_do(self):
        """A name no account has gets the wrong-password text, no sooner than a password
        check takes, and its failures count the same (the 6th try waits)."""
        credentials = self.server.service("msg").credentials
        for i in range(FREE_FAILURES):
            started = time.monotonic()
            answer, _ = await self.attempt("nobody", "x", source=ATTACKER)
            assert time.monotonic() - started >= credentials.check_seconds * 0.9
            assert answer.result_string == (
                WRONG_PASSWORD if i < FREE_FAILURES - 1 else TOO_MANY_FAILURES
            )
        answer, _ = await self.attempt("nobody", "x", source=ATTACKER)
        assert answer.result_string == TOO_MANY_FAILURES
