"""A cluster under load riding out faults: real processes, real MariaDB, a Redis of its own.

Each test starts ``teamtalk_testing.cluster.ClusterProcesses`` (a center with route,
login and file, two msg-only nodes) on a fresh MariaDB database and a ``redis-server`` of
the test's own, drives cross-node chat (senders on node 1, receivers on node 2, words
that repeat) with ``teamtalk_testing.traffic.ChatTraffic``, injects one fault, and audits
afterwards: every acked message stored once with its text, nothing stored twice or
invented, every receiver that stayed online got every acked message live exactly once.
The database is taken away through a ``TcpProxy`` of the test's own; the machine's shared
MariaDB and Redis are never stopped.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from twisted.internet import reactor

from teamtalk_bench.server import create_users
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_testing.cluster import ClusterProcesses
from teamtalk_testing.faults import TcpProxy
from teamtalk_testing.traffic import ChatTraffic, Pair
from tests.cluster_support import (
    PASSWORD,
    PC,
    Client,
    log_in,
    own_redis,
    scratch_database,
    sleep,
    status_is,
    wait_until,
)
from tests.support import TEST_SECRET, TestCase

PAIRS = 3
#: Seconds of traffic before, during and after a fault.
PHASE = 2.0


class ClusterFaultTests(TestCase):
    """One cluster per test: a fault changes what the next test would find."""

    timeout = 120

    async def setUp(self) -> None:
        self.db = scratch_database()
        self.addCleanup(self.db.drop)
        self.redis = own_redis()
        self.redis.start()
        self.addCleanup(self.redis.stop)
        self.clients: list[Client] = []
        self.addCleanup(self._close_clients)

    async def _close_clients(self) -> None:
        for client in self.clients:
            await client.close()

    def start_cluster(self, db_url: str | None = None) -> ClusterProcesses:
        prefix = f"f{secrets.token_hex(3)}_"
        ids = create_users(2 * PAIRS + 2, prefix, PASSWORD, db_url=self.db.url)
        self.names = [f"{prefix}{i}" for i in range(len(ids))]
        root = Path(self.tmp_path()) / "cluster"
        cluster = ClusterProcesses(root, db_url or self.db.url, self.redis.url, TEST_SECRET)
        self.addCleanup(cluster.stop)
        cluster.start()
        return cluster

    async def client(self, cluster: ClusterProcesses, node: str, index: int) -> Client:
        client = await log_in(cluster.port(node), self.names[index], PC)
        self.clients.append(client)
        return client

    async def traffic(self, cluster: ClusterProcesses) -> ChatTraffic:
        """Senders on node 1, their receivers on node 2."""
        pairs = []
        for i in range(PAIRS):
            sender = await self.client(cluster, "node1", 2 * i)
            receiver = await self.client(cluster, "node2", 2 * i + 1)
            pairs.append(Pair(sender.session, receiver.session))
        return ChatTraffic(reactor, pairs)

    async def settle_and_audit(self, traffic: ChatTraffic) -> list[str]:
        """Stop sending, give live deliveries a moment, audit against the database."""
        await traffic.stop()
        expected = {(p.from_id, msg_id) for p in traffic.pairs for msg_id, _ in p.acked}

        def all_live() -> bool:
            got = {(p.from_id, m) for p in traffic.pairs for m in p.live}
            return expected <= got

        try:
            await wait_until(all_live, timeout=10, what="every acked message live")
        except AssertionError:
            pass  # the audit says which ones
        senders = ",".join(str(p.from_id) for p in traffic.pairs)
        rows = self.db.query(
            f"SELECT from_id, to_id, msg_id, content FROM messages WHERE from_id IN ({senders})"
        )
        return traffic.audit(rows)

    # -- Redis ----------------------------------------------------------------------------

    async def test_redis_outage_costs_no_message_and_keeps_throughput(self):
        """Redis killed under load and started again (empty): nothing acked is lost,
        stored twice or delivered twice; acks go on at more than half the normal rate;
        a node logs the outage as one line at each end and uses Redis again at once."""
        cluster = self.start_cluster()
        traffic = await self.traffic(cluster)
        traffic.start()
        await sleep(PHASE)
        killed = time.monotonic()
        self.redis.kill()
        await sleep(PHASE)
        self.redis.start()
        restarted = time.monotonic()
        for node in ("node1", "node2"):
            await wait_until(
                lambda node=node: cluster.ops(node, "/ready")["degraded"] == [],
                timeout=5,
                what=f"{node} using Redis again",
            )
        recovered = time.monotonic() - restarted
        await sleep(PHASE)
        ended = time.monotonic()
        problems = await self.settle_and_audit(traffic)
        assert not problems, problems
        before = traffic.rate(killed - PHASE, killed)
        during = traffic.rate(killed, restarted)
        after = traffic.rate(ended - PHASE, ended)
        assert during > before / 2, (before, during, after)
        assert after > before / 2, (before, during, after)
        assert recovered < 3.0, recovered
        # Messages never call Redis (resends are recognised in the database, see
        # msg/intake.py): a node notices the outage only if its 5 s health PING falls
        # into it, and then logs it once.
        for node in ("node1", "node2"):
            log = cluster.process(node).output()
            starts = len(re.findall(r"shared state .* unreachable: ", log))
            assert starts <= 1, log[-3000:]
            assert starts == len(re.findall(r"shared state .* reachable again after", log))

    # -- the database -----------------------------------------------------------------

    async def test_database_outage_is_logged_once_and_loses_no_acked_message(self):
        """MariaDB unreachable (our proxy closed) under load: no message is acked while
        it is away, every acked one is delivered and stored once, and each node's log
        says so in a few lines, without a traceback."""
        server = self.db.server.removeprefix("mysql://")
        user, _, hostport = server.rpartition("@")
        host, _, port = hostport.partition(":")
        proxy = TcpProxy(host or "127.0.0.1", int(port or 3306))
        proxy.open()
        self.addCleanup(proxy.stop)
        cluster = self.start_cluster(f"mysql://{user}@127.0.0.1:{proxy.port}/{self.db.name}")
        traffic = await self.traffic(cluster)
        traffic.start()
        await sleep(PHASE)
        proxy.close()
        closed = time.monotonic()
        await sleep(PHASE)
        proxy.open()
        reopened = time.monotonic()
        acked_at_close = traffic.acked
        await wait_until(lambda: traffic.acked > acked_at_close + 20, timeout=10,
                         what="acks after the database came back")  # fmt: skip
        await sleep(PHASE)
        problems = await self.settle_and_audit(traffic)
        assert not problems, problems
        # An ack needs a commit: none while the database is away (1 s for those in flight).
        assert traffic.rate(closed + 1.0, reopened) == 0
        # node 1 stores (its senders' messages); node 2 only delivers, so it may never
        # have needed the database while it was away.
        for node, writes in (("node1", True), ("node2", False)):
            log = cluster.process(node).output()
            outage = log[log.find("unreachable") :] if "unreachable" in log else ""
            starts = len(re.findall(r"database .* unreachable: ", log))
            assert starts == 1 if writes else starts <= 1, log[-3000:]
            assert starts == len(re.findall(r"database .* reachable again after", log))
            assert "Traceback" not in outage, outage[:3000]
            assert len(outage.splitlines()) < 40, outage[:3000]

    # -- a hung node ----------------------------------------------------------------------

    async def test_hung_node_is_dropped_within_seconds_and_taken_back(self):
        """node 2 frozen (SIGSTOP): within seconds its users are offline for node 1's
        watcher and /msg_server stops offering it; after SIGCONT both take it back."""
        cluster = self.start_cluster()
        watcher = await self.client(cluster, "node1", 0)
        frozen = await self.client(cluster, "node2", 1)
        # Route knows the user is on node 2 once node 1 has announced it.
        await watcher.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(frozen.user_id, 1))
        hung_port = cluster.port("node2")
        cluster.pause("node2")
        paused = time.monotonic()
        try:
            await watcher.wait_for(
                B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(frozen.user_id, 2), timeout=10
            )
            noticed = time.monotonic() - paused
            assert noticed < 8.0, noticed
            await wait_until(lambda: hung_port not in cluster.offered_ports(), timeout=5,
                             what="login to stop offering node 2")  # fmt: skip
            for _ in range(5):
                assert int(cluster.discovery()["port"]) == cluster.port("node1")
        finally:
            cluster.resume("node2")
        await wait_until(lambda: cluster.registered(["node1", "node2"]), timeout=15,
                         what="node 2 back with route and login")  # fmt: skip
        await watcher.wait_for(
            B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(frozen.user_id, 1), timeout=10
        )
