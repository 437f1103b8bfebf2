"""``SharedState`` on memory (fake clock) and on the real Redis, and the shared lockout."""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from teamtalk_py.msg.lockout import SharedLoginLockout
from teamtalk_py.shared_state import (
    MemoryBackend,
    RedisBackend,
    SharedStateUnavailable,
    parse_redis_url,
)
from teamtalk_testing import free_port
from tests.cluster_support import own_redis, scratch_redis, sleep
from tests.store_support import MariaDBStoreCase
from tests.support import TestCase


class UrlTests(TestCase):
    def test_url_gives_host_port_db_and_prefix(self):
        """``redis://host:port/db?prefix=`` with defaults for what is left out."""
        p = parse_redis_url("redis://:pw@10.0.0.9:6380/3?prefix=acme:")
        assert (p.host, p.port, p.db, p.password, p.prefix) == ("10.0.0.9", 6380, 3, "pw", "acme:")
        p = parse_redis_url("redis://127.0.0.1")
        assert (p.port, p.db, p.password, p.prefix) == (6379, 0, None, "teamtalk:")

    def test_non_numeric_database_is_refused(self):
        """A typo in the db part fails at start, naming the value."""
        with self.assertRaises(ValueError):
            parse_redis_url("redis://127.0.0.1/teamtalk")


class MemoryTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.state = MemoryBackend(self.clock)

    def value(self, d):
        return self.successResultOf(d)

    def test_values_expire_after_their_ttl(self):
        """set(ttl) is gone once the TTL has passed; without TTL it stays."""
        self.state.set("a", b"1", ttl=10)
        self.state.set("b", "2")
        self.clock.advance(9)
        assert self.value(self.state.get("a")) == b"1"
        self.clock.advance(1)
        assert self.value(self.state.get("a")) is None
        assert self.value(self.state.get("b")) == b"2"

    def test_counter_expires_ttl_after_its_first_increment(self):
        """incr(ttl) sets the TTL when the key is created, not on every increment."""
        assert self.value(self.state.incr("n", ttl=10)) == 1
        self.clock.advance(6)
        assert self.value(self.state.incr("n", 2, ttl=10)) == 3
        self.clock.advance(4)
        assert self.value(self.state.get("n")) is None

    def test_events_are_counted_in_a_sliding_window(self):
        """Events older than the window no longer count."""
        for _ in range(3):
            self.state.record_event("e", 30)
            self.clock.advance(10)
        assert self.value(self.state.count_events("e", 30)) == 2

    def test_transfer_progress_round_trips_and_expires(self):
        """The file-service hook stores a JSON dict with the task's TTL."""
        self.state.save_transfer("t1", {"offset": 32768, "size": 100000}, ttl=60)
        assert self.value(self.state.load_transfer("t1")) == {"offset": 32768, "size": 100000}
        self.clock.advance(60)
        assert self.value(self.state.load_transfer("t1")) is None


class RedisTests(TestCase):
    def setUp(self):
        self.redis = scratch_redis()
        self.addCleanup(self.redis.drop)
        self.state = self.backend()
        return self.state.start()

    def pttl(self, key: str) -> int:
        """Redis's own remaining TTL of ``key`` in ms (-1: none, -2: no such key)."""
        return int(self.redis.redis.pttl(self.redis.prefix + key))

    async def until_gone(self, key: str, deadline: float = 10.0) -> None:
        """Wait for Redis to expire ``key``; a loaded machine only makes this slower."""
        give_up = time.monotonic() + deadline
        while await self.state.get(key) is not None:
            assert time.monotonic() < give_up, f"{key} still there after {deadline} s"
            await sleep(0.05)

    def backend(self, url: str | None = None, **kwargs) -> RedisBackend:
        backend = RedisBackend(reactor, url or self.redis.url, **kwargs)
        self.addCleanup(backend.stop)
        return backend

    async def test_get_set_delete_with_ttl(self):
        """Values live under the prefix, expire with their TTL and can be deleted."""
        await self.state.set("a", b"\x00bytes", ttl=30)
        await self.state.set("b", 42)
        assert await self.state.get("a") == b"\x00bytes"
        assert await self.state.get("b") == b"42"
        assert self.redis.prefix.encode() + b"a" in self.redis.keys()
        assert 0 < self.pttl("a") <= 30_000
        assert self.pttl("b") == -1  # no TTL asked, none set
        await self.state.set("a", b"soon", ttl=0.2)
        await self.until_gone("a")
        await self.state.delete("b")
        assert await self.state.get("b") is None

    async def test_incr_is_shared_and_expires_after_the_first_increment(self):
        """Two nodes increment the same counter; its TTL starts with the first increment."""
        other = self.backend()
        await other.start()
        assert await self.state.incr("n", ttl=30) == 1
        first = self.pttl("n")
        await sleep(0.05)
        assert await other.incr("n", 5, ttl=30) == 6
        assert 0 < self.pttl("n") < first  # the second increment did not restart the TTL
        assert await self.state.incr("m", ttl=0.2) == 1
        await self.until_gone("m")

    async def test_sliding_window_counts_every_nodes_events(self):
        """Events recorded by two nodes are counted together; old ones drop out."""
        other = self.backend()
        await other.start()
        # A 2 s window, events 1 s apart: each check has a second of slack on a loaded box.
        await self.state.record_event("e", 2.0)
        await sleep(1.0)
        await other.record_event("e", 2.0)
        assert await self.state.count_events("e", 2.0) == 2
        for _ in range(100):
            count = await other.count_events("e", 2.0)
            if count < 2:
                break
            await sleep(0.05)
        assert count == 1  # the first has dropped out, the second not yet

    async def test_transfer_progress_is_visible_to_other_nodes(self):
        """The file-service hook: one node saves, another loads, then it is forgotten."""
        other = self.backend()
        await other.start()
        await self.state.save_transfer("t1", {"offset": 65536}, ttl=5)
        assert await other.load_transfer("t1") == {"offset": 65536}
        await other.forget_transfer("t1")
        assert await self.state.load_transfer("t1") is None

    async def test_connection_closed_by_redis_is_reopened(self):
        """Redis drops our connections (restart, CLIENT KILL): calls work again shortly
        after, without anybody restarting the node."""
        await self.state.set("k", b"v")
        pool = self.state._redis._factory.pool
        ports = [conn.transport.getHost().port for conn in pool]
        for port in ports:
            assert self.redis.kill_client(port) == 1
        deadline = time.monotonic() + 8
        while True:
            try:
                if await self.state.get("k") == b"v":
                    break
            except SharedStateUnavailable:
                pass
            assert time.monotonic() < deadline, "redis connection never came back"
            await sleep(0.1)
        new_ports = {conn.transport.getHost().port for conn in self.state._redis._factory.pool}
        assert not new_ports & set(ports)

    async def test_unreachable_redis_fails_within_the_timeout_then_at_once(self):
        """With nobody listening, calls give up after the timeout; once a PING has
        failed, they fail immediately instead of waiting again."""
        dead = self.backend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.3)
        await dead.start()
        started = time.monotonic()
        with self.assertRaises(SharedStateUnavailable):
            await dead.get("x")
        assert time.monotonic() - started < 1.0
        await sleep(0.35)  # the first PING (sent at start) has failed by now
        assert dead.healthy is False
        started = time.monotonic()
        with self.assertRaises(SharedStateUnavailable):
            await dead.get("x")
        assert time.monotonic() - started < 0.05


class StopTests(TestCase):
    async def test_a_call_in_flight_when_the_backend_stops_is_not_an_outage(self):
        """``stop`` cancels calls still waiting for Redis (here one that never answers).
        That is the service ending, not Redis failing: no breaker, no probe and no outage
        summary outlive it (trial fails the test on a timer left behind)."""
        silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        state = RedisBackend(reactor, f"redis://127.0.0.1:{silent.getHost().port}/0", timeout=5.0)
        await state.start()
        waiting = state.get("x")
        await sleep(0.2)  # connected; the GET (and the first PING) sent, never answered
        await state.stop()
        with self.assertRaises(SharedStateUnavailable):
            await waiting
        assert state.healthy is not False
        assert state.outage.started_at is None


class SharedLockoutTests(TestCase):
    def setUp(self):
        self.redis = scratch_redis()
        self.addCleanup(self.redis.drop)

    async def node(self, url: str, **kwargs) -> SharedLoginLockout:
        backend = RedisBackend(reactor, url, **kwargs)
        self.addCleanup(backend.stop)
        await backend.start()
        return SharedLoginLockout(backend, reactor)

    async def test_failures_on_two_nodes_add_up(self):
        """Three failures of a name from an address on one node and two on another: the
        fifth makes the next try wait on both nodes; a success on one clears it on both."""
        a = await self.node(self.redis.url)
        b = await self.node(self.redis.url)
        for _ in range(3):
            await a.record_failure("mallory", "10.0.0.9")
        for _ in range(2):
            await b.record_failure("mallory", "10.0.0.9")
        assert await a.is_locked("mallory", "10.0.0.9")
        assert await b.is_locked("mallory", "10.0.0.9")
        assert not await a.is_locked("mallory", "10.0.0.1")
        await a.clear("mallory", "10.0.0.9")
        assert not await b.is_locked("mallory", "10.0.0.9")

    async def test_keys_expire_by_themselves(self):
        """Every key a failure writes has a TTL: a count the window (30 min), a wait its
        delay (1 s after the 5th failure of a name from an address)."""
        a = await self.node(self.redis.url)
        for _ in range(5):
            await a.record_failure("mallory", "10.0.0.9")
        state = a.state
        count_ttl = await state.command("PTTL", state.key("lockout:n:10.0.0.9:mallory"))
        assert 0 < count_ttl <= 1800_000
        wait_ttl = await state.command("PTTL", state.key("lockout:wait:n:10.0.0.9:mallory"))
        assert 0 < wait_ttl <= 1000
        # The address has 5 failures of 30: no wait key at all.
        assert await state.command("PTTL", state.key("lockout:wait:a:10.0.0.9")) == -2

    async def test_without_redis_each_node_counts_for_itself(self):
        """Redis unreachable: logins are not blocked; the node's own count still delays."""
        node = await self.node(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
        for _ in range(5):
            await node.record_failure("mallory", "10.0.0.9")
        assert await node.is_locked("mallory", "10.0.0.9")
        assert not await node.is_locked("alice", "10.0.0.9")


class LogLines:
    """The rendered lines of one log namespace while a test runs."""

    def __init__(self, test: TestCase, namespace: str) -> None:
        self.lines: list[str] = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == namespace:
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        test.addCleanup(globalLogPublisher.removeObserver, observe)

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


class BreakerTests(TestCase):
    """The circuit breaker in front of a Redis of the test's own, killed and restarted."""

    async def setUp(self):
        self.redis = own_redis()
        self.redis.start()
        self.addCleanup(self.redis.stop)
        self.log = LogLines(self, "teamtalk.outage")
        self.state = RedisBackend(reactor, self.redis.url)
        self.addCleanup(self.state.stop)
        await self.state.start()
        await self.state.set("k", b"v")

    async def test_calls_fail_fast_while_redis_is_down_and_recovery_is_noticed_at_once(self):
        """The first call after Redis died fails within its deadline; the next ones at once;
        a restarted Redis is used again about a second later; the outage is two log
        lines."""
        self.redis.kill()
        started = time.monotonic()
        with self.assertRaises(SharedStateUnavailable):
            await self.state.get("k")
        assert time.monotonic() - started < 1.5  # the deadline is 1 s
        for _ in range(100):
            started = time.monotonic()
            with self.assertRaises(SharedStateUnavailable):
                await self.state.get("k")
            assert time.monotonic() - started < 0.1  # no waiting (0.1: a loaded machine)
        assert self.state.refused == 100
        self.redis.start()
        restarted = time.monotonic()
        while True:
            try:
                await self.state.set("k", b"again")
                break
            except SharedStateUnavailable:
                # 0.5 s probes, 0.5 s pool retries: ~1 s alone. With the CPUs busy
                # (a full parallel run, or 4 busy loops beside it) recovery was seen to
                # take over 6 s, not yet explained; 15 s still catches a pool that stopped
                # reconnecting (txredisapi's own back-off reaches 10 s).
                assert time.monotonic() - restarted < 15.0, "the breaker never closed"
                await sleep(0.02)
        assert await self.state.get("k") == b"again"
        assert len(self.log.matching("unreachable: ")) == 1, self.log.lines
        [end] = self.log.matching("reachable again after")
        assert f"1 calls failed, {self.state.refused} calls refused at once" in end
        assert self.state.reconnects == 1

    async def test_a_long_outage_is_summarised_not_logged_per_call(self):
        """While Redis stays down, the log gets one summary per interval with the counts."""
        self.state.outage.summary_interval = 0.3
        self.redis.kill()
        for _ in range(8):
            with self.assertRaises(SharedStateUnavailable):
                await self.state.get("k")
            await sleep(0.1)
        summaries = self.log.matching("still unreachable")
        assert 1 <= len(summaries) <= 3
        assert "calls refused at once" in summaries[0]
        assert len(self.log.matching("unreachable: ")) == 1


class LockoutOutageTests(MariaDBStoreCase):
    """Two nodes' lockouts on a Redis of the test's own and one MariaDB database: a lock
    outlives Redis going away and Redis losing its keys."""

    async def setUp(self):
        await super().setUp()
        self.redis = own_redis()
        self.redis.start()
        self.addCleanup(self.redis.stop)
        self.a = await self.node()
        self.b = await self.node()

    async def node(self) -> SharedLoginLockout:
        backend = RedisBackend(reactor, self.redis.url)
        self.addCleanup(backend.stop)
        await backend.start()
        return SharedLoginLockout(backend, reactor, self.database)

    async def fail(self, node: SharedLoginLockout, name: str, times: int) -> None:
        for _ in range(times):
            await node.record_failure(name, "10.0.0.9")

    async def test_a_lock_holds_on_every_node_while_redis_is_down_and_after_it_restarts(self):
        """Delayed through Redis (8 failures: 8 s), a name stays delayed on the other node
        once Redis is killed and after it comes back empty; a delay started on one node
        while Redis is down (9 failures counted there: 16 s) holds on the other node too."""
        await self.fail(self.a, "mallory", 4)
        await self.fail(self.b, "mallory", 4)
        assert await self.b.is_locked("mallory", "10.0.0.9")
        self.redis.kill()
        assert await self.a.is_locked("mallory", "10.0.0.9")
        assert await self.b.is_locked("mallory", "10.0.0.9")
        assert not await self.b.is_locked("alice", "10.0.0.9")
        await self.fail(self.b, "trudy", 9)
        assert await self.a.is_locked("trudy", "10.0.0.9")
        self.redis.start()
        deadline = time.monotonic() + 3
        while not self.a.state.available or not self.b.state.available:
            await self.a.state.ping()
            await self.b.state.ping()
            assert time.monotonic() < deadline, "Redis never came back"
            await sleep(0.1)
        assert await self.a.state.get("lockout:n:10.0.0.9:mallory") is None  # Redis is empty
        assert await self.a.is_locked("mallory", "10.0.0.9")
        assert await self.b.is_locked("trudy", "10.0.0.9")
