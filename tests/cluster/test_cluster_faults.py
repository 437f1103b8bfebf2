"""A cluster under load riding out faults: real processes, real MariaDB, a Redis of its own.

Each test starts ``teamtalk_testing.cluster.ClusterProcesses`` (a center with route,
login and file, two msg-only nodes) on a fresh MariaDB database and a ``redis-server`` of
the test's own, drives cross-node chat (senders on node 1, receivers on node 2, words
that repeat; one-to-one and, where live delivery is the point, a group) with
``teamtalk_testing.traffic.ChatTraffic``, injects one fault, and audits afterwards: every
acked message stored once with its text, nothing stored twice or invented, every
receiver that stayed online got every acked message live exactly once. The database is
taken away through a ``TcpProxy`` of the test's own; the machine's shared MariaDB and
Redis are never stopped.
"""

from __future__ import annotations

import re
import secrets
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor

from teamtalk_bench.server import create_users
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_testing.cluster import ClusterProcesses
from teamtalk_testing.faults import TcpProxy
from teamtalk_testing.ports import LOOPBACK
from teamtalk_testing.traffic import ChatTraffic, Pair, create_group, stored_rows, stored_unread
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
#: Messages a node acks while its relays are held in its socket.
HELD = 20
#: Seconds a route or a node is away: every message acked meanwhile reaches its online
#: receiver from the store (nothing is kept in memory for a link that is down).
OUTAGE = 4.0


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

    def start_cluster(
        self,
        db_url: str | None = None,
        prepare: Callable[[ClusterProcesses], object] | None = None,
    ) -> ClusterProcesses:
        """``prepare``: called before anything starts (to add nodes with options)."""
        prefix = f"f{secrets.token_hex(3)}_"
        ids = create_users(2 * PAIRS + 2, prefix, PASSWORD, db_url=self.db.url)
        self.names = [f"{prefix}{i}" for i in range(len(ids))]
        root = Path(self.tmp_path()) / "cluster"
        cluster = ClusterProcesses(root, db_url or self.db.url, self.redis.url, TEST_SECRET)
        self.addCleanup(cluster.stop)
        if prepare is not None:
            prepare(cluster)
        cluster.start()
        return cluster

    async def client(self, cluster: ClusterProcesses, node: str, index: int) -> Client:
        client = await log_in(cluster.port(node), self.names[index], PC)
        self.clients.append(client)
        return client

    async def traffic(
        self, cluster: ClusterProcesses, group: bool = False, repeat_words: bool = False
    ) -> ChatTraffic:
        """Senders on node 1, their receivers on node 2; with ``group`` the last pair
        talks in a group of the two."""
        pairs = []
        for i in range(PAIRS):
            sender = await self.client(cluster, "node1", 2 * i)
            receiver = await self.client(cluster, "node2", 2 * i + 1)
            pair = Pair(sender.session, receiver.session)
            if group and i == PAIRS - 1:
                pair.group_id = await create_group(sender.session, receiver.user_id)
            pairs.append(pair)
        # A message relayed before route has heard of its receiver's login is not
        # delivered live (the receiver finds it in its unread count): start once route
        # knows every receiver is on node 2.
        receivers = {p.to_id for p in pairs}
        await wait_until(lambda: receivers <= cluster.route_users(), timeout=10,
                         what="route to know the receivers")  # fmt: skip
        return ChatTraffic(reactor, pairs, repeat_words=repeat_words)

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
        return traffic.audit(
            stored_rows(self.db.query, traffic.pairs), stored_unread(self.db.query, traffic.pairs)
        )

    def caught_up(self, cluster: ClusterProcesses, node: str) -> float:
        return cluster.metric(node, "teamtalk_caught_up_deliveries_total")

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

    # -- route and nodes killed, a node hung: live delivery caught up from the store ----

    async def test_route_killed_under_load_every_acked_message_reaches_its_receiver_live(self):
        """kill -9 of the center (route, login, file) under load for longer than any
        buffer would matter, then started again: node 1 goes on acking (one-to-one and
        group); once the links are back node 2 reads from the store what its online
        receivers missed and delivers each message once; no node kept the messages in
        memory; /ready?strict=1 is 503 while the route link is down."""
        cluster = self.start_cluster()
        traffic = await self.traffic(cluster, group=True, repeat_words=True)
        traffic.start()
        await sleep(PHASE)
        cluster.kill("center")
        killed = time.monotonic()
        await wait_until(
            lambda: cluster.ops_status("node2", "/ready?strict=1")[0] == 503,
            timeout=5, what="node 2 degraded",
        )  # fmt: skip
        status, ready = cluster.ops_status("node2", "/ready")
        assert status == 200 and ready["degraded"] == ["msg"], ready
        await sleep(max(0.0, OUTAGE - (time.monotonic() - killed)))
        acked_in_outage = traffic.acked
        assert cluster.metric("node1", "teamtalk_route_backlog") == 0  # messages not kept
        cluster.restart("center")
        restarted = time.monotonic()
        await wait_until(lambda: cluster.registered(["node1", "node2"]), timeout=15,
                         what="both nodes back with route")  # fmt: skip
        await sleep(PHASE)
        problems = await self.settle_and_audit(traffic)
        assert not problems, problems
        during = traffic.rate(killed + 1.0, restarted)
        assert during > 0, "node 1 stopped acking while route was away"
        assert acked_in_outage > 0
        assert self.caught_up(cluster, "node2") > 0
        assert cluster.ops_status("node2", "/ready?strict=1")[0] == 200
        assert "caught up from the store" in cluster.process("node2").output()

    async def test_sender_node_killed_its_clients_go_on_from_the_other_node(self):
        """kill -9 of node 1 (the senders' node) under load: the senders log in on node 2
        and go on; every acked message, before and after, is stored once and reached
        its receiver live once; login offers only node 2 meanwhile."""
        cluster = self.start_cluster()
        traffic = await self.traffic(cluster, group=True, repeat_words=True)
        traffic.start()
        await sleep(PHASE)
        cluster.kill("node1")
        await wait_until(lambda: cluster.route_links() == 1, timeout=5,
                         what="route to drop node 1")  # fmt: skip
        assert int(cluster.discovery()["port"]) == cluster.port("node2")
        await sleep(1.0)  # a new connection's texts are not resends of the old one's
        for i, pair in enumerate(traffic.pairs):
            sender = await self.client(cluster, "node2", 2 * i)
            traffic.resume(pair, sender.session)
        resumed = traffic.acked
        await sleep(PHASE)
        assert traffic.acked > resumed
        # Relays node 1 had written to its socket but route never got died with it; no
        # marker of its run covers them, so route's lost notice does (msg/catch_up.py).
        problems = await self.settle_and_audit(traffic)
        assert not problems, problems
        assert "lost:" in cluster.process("node2").output()

    # -- a node lost with relays still in its socket: caught up from the store -------

    def start_with_proxied_route(self) -> tuple[ClusterProcesses, TcpProxy]:
        """A cluster whose node 1 reaches route through a proxy of the test's own."""
        proxies: list[TcpProxy] = []

        def prepare(cluster: ClusterProcesses) -> None:
            proxy = TcpProxy(LOOPBACK, cluster.route_port)
            proxy.open()
            self.addCleanup(proxy.stop)
            proxies.append(proxy)
            cluster.add_node("node1", "--route-server", f"{LOOPBACK}:{proxy.port}")

        cluster = self.start_cluster(prepare=prepare)
        return cluster, proxies[0]

    async def ack_with_relays_held(self, traffic: ChatTraffic, proxy: TcpProxy) -> None:
        """Hold node 1's bytes to route and let it ack ``HELD`` more messages: stored,
        their relays and node 1's markers written to its socket and never received
        (kept shorter than route's 5 s link deadline)."""
        proxy.hold()
        acked = traffic.acked
        await wait_until(lambda: traffic.acked >= acked + HELD, timeout=4,
                         what="acks while node 1's relays are held")  # fmt: skip

    @staticmethod
    def acked_ids(traffic: ChatTraffic) -> set[tuple[int, int]]:
        return {(p.from_id, msg_id) for p in traffic.pairs for msg_id, _ in p.acked}

    @staticmethod
    def live_ids(traffic: ChatTraffic) -> set[tuple[int, int]]:
        return {(p.from_id, msg_id) for p in traffic.pairs for msg_id in p.live}

    async def test_killed_node_relays_still_in_its_socket_reach_the_receivers(self):
        """node 1 acks messages whose relays stay in its socket (its bytes to route held),
        is killed, and its link cut: no marker of its run will ever cover them, so
        node 2, told by route that the run is lost, reads what it stored after its last
        marker and delivers each once to the receivers, who stayed online."""
        cluster, proxy = self.start_with_proxied_route()
        traffic = await self.traffic(cluster, group=True, repeat_words=True)
        traffic.start()
        await sleep(PHASE)
        await self.ack_with_relays_held(traffic, proxy)
        cluster.kill("node1")
        proxy.close()
        problems = await self.settle_and_audit(traffic)
        assert not problems, problems
        assert all(p.receiver_online for p in traffic.pairs)
        assert self.caught_up(cluster, "node2") > 0
        lost = re.findall(r"node run \d+ lost: (\d+) messages", cluster.process("node2").output())
        assert len(lost) == 1 and int(lost[0]) > 0, lost

    async def test_node_cut_off_and_back_delivers_its_held_relays_once(self):
        """node 1's bytes to route held, then its link cut while it runs on (route drops
        it, as it drops a hung node): node 2 delivers from the store what node 1 had
        acked, before node 1 is back; when node 1 links again and marks (a new epoch),
        that catch-up delivers nothing twice, and what node 1 acked while cut off
        arrives too."""
        cluster, proxy = self.start_with_proxied_route()
        traffic = await self.traffic(cluster, group=True, repeat_words=True)
        traffic.start()
        await sleep(PHASE)
        await self.ack_with_relays_held(traffic, proxy)
        proxy.close()
        acked = self.acked_ids(traffic)  # stored before route could lose the link
        await wait_until(lambda: acked <= self.live_ids(traffic), timeout=10,
                         what="node 1's held messages delivered from the store")  # fmt: skip
        assert cluster.route_links() == 1  # node 1 still cut off
        proxy.release()
        proxy.open()
        await wait_until(lambda: cluster.registered(["node1", "node2"]), timeout=15,
                         what="node 1 back with route")  # fmt: skip
        await sleep(PHASE)
        problems = await self.settle_and_audit(traffic)
        assert not problems, problems
        assert all(p.receiver_online for p in traffic.pairs)
        assert "lost:" in cluster.process("node2").output()

    async def test_hung_sender_node_back_after_its_loss_delivers_nothing_twice(self):
        """node 1 (the senders' node) frozen under load until route drops it: node 2,
        told the run is lost, reads what node 1 stored after its last marker (mostly
        arrived live already: a stopped process's kernel still sends what it had
        written; ``test_node_cut_off_and_back_delivers_its_held_relays_once`` strands
        them for sure); after SIGCONT node 1 links again and marks (a new epoch), acks
        again, and nothing is missed or delivered twice."""
        cluster = self.start_cluster()
        traffic = await self.traffic(cluster, group=True, repeat_words=True)
        traffic.start()
        await sleep(PHASE)
        cluster.pause("node1")
        try:
            await wait_until(lambda: cluster.route_links() == 1, timeout=10,
                             what="route to drop the hung node")  # fmt: skip
            await wait_until(lambda: "lost:" in cluster.process("node2").output(), timeout=5,
                             what="node 2 to catch up the lost run")  # fmt: skip
        finally:
            cluster.resume("node1")
        await wait_until(lambda: cluster.registered(["node1", "node2"]), timeout=15,
                         what="node 1 back with route")  # fmt: skip
        acked = traffic.acked
        await wait_until(lambda: traffic.acked > acked + 50, timeout=10,
                         what="acks on node 1 after SIGCONT")  # fmt: skip
        await sleep(PHASE)
        problems = await self.settle_and_audit(traffic)
        assert not problems, problems
        assert all(p.receiver_online for p in traffic.pairs)

    async def test_hung_receiver_node_catches_up_after_sigcont(self):
        """node 2 (the receivers' node) frozen under load for longer than the link
        deadline: route drops it, node 1 goes on acking; after SIGCONT node 2 links
        again and its receivers, still connected, get every message live once."""
        cluster = self.start_cluster()
        traffic = await self.traffic(cluster, group=True, repeat_words=True)
        traffic.start()
        await sleep(PHASE)
        cluster.pause("node2")
        try:
            await wait_until(lambda: cluster.route_links() == 1, timeout=10,
                             what="route to drop the hung node")  # fmt: skip
            acked = traffic.acked
            await wait_until(lambda: traffic.acked > acked + 50, timeout=5,
                             what="acks on node 1 while node 2 hangs")  # fmt: skip
        finally:
            cluster.resume("node2")
        await wait_until(lambda: cluster.registered(["node1", "node2"]), timeout=15,
                         what="node 2 back with route")  # fmt: skip
        await sleep(PHASE)
        problems = await self.settle_and_audit(traffic)
        assert not problems, problems
        assert all(p.receiver_online for p in traffic.pairs)
        assert self.caught_up(cluster, "node2") > 0

    # -- one link of a node down: the file service's, or the login service's -----------

    def link_up_metric(self, cluster: ClusterProcesses, node: str) -> dict[str, float]:
        """``teamtalk_link_up`` of a node's /metrics, by ``"<link> <peer>"``."""
        url = f"http://{LOOPBACK}:{cluster.nodes[node].ops_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            f"{sample.labels['link']} {sample.labels['peer']}": sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "teamtalk_link_up"
            for sample in family.samples
        }

    async def chat_both_ways(self, one: Client, other: Client, text: str) -> None:
        """A message each way between ``one`` and ``other``: acked, and delivered live."""
        for sender, receiver in ((one, other), (other, one)):
            ack = await sender.session.send_text(receiver.user_id, text)
            assert ack.msg_id > 0
            await receiver.wait_for(
                B.CID_MSG_DATA,
                lambda pdu, ack=ack, sender=sender: (
                    pdu.message.msg_id == ack.msg_id and pdu.message.from_user_id == sender.user_id
                ),
                timeout=20,
            )

    async def one_link_down_and_back(
        self,
        kind: str,
        center_port: str,
        while_down: Callable[[ClusterProcesses], Awaitable[None]] | None = None,
    ) -> ClusterProcesses:
        """node 1 reaches the center's ``kind`` service through a proxy of the test's own,
        closed and opened again; node 2 reaches it directly. Checked: node 1's /ready and
        /metrics say that link alone is down while it is (ready, degraded, 503 only with
        ``strict``), chat between node 1 and node 2 and a new login on node 1 go on, and
        the link is reported up again once the proxy is back. The cluster is returned."""
        proxies: list[TcpProxy] = []

        def prepare(cluster: ClusterProcesses) -> None:
            proxy = TcpProxy(LOOPBACK, getattr(cluster, center_port))
            proxy.open()
            self.addCleanup(proxy.stop)
            proxies.append(proxy)
            cluster.add_node("node1", f"--{kind}-server", f"{LOOPBACK}:{proxy.port}")

        cluster = self.start_cluster(prepare=prepare)
        proxy = proxies[0]
        link = f"{kind} {LOOPBACK}:{proxy.port}"
        route = f"route {LOOPBACK}:{cluster.route_port}"
        other = "login" if kind == "file" else "file"
        other_link = f"{other} {LOOPBACK}:{getattr(cluster, f'{other}_internal_port')}"

        def links() -> dict[str, str]:
            return cluster.ops("node1", "/ready")["services"]["msg"]["links"]

        await wait_until(lambda: links().get(link) == "up", timeout=30,
                         what=f"node 1's {kind} link up")  # fmt: skip
        alice = await self.client(cluster, "node1", 0)
        bob = await self.client(cluster, "node2", 1)
        await wait_until(lambda: {alice.user_id, bob.user_id} <= cluster.route_users(),
                         timeout=20, what="route to know both users")  # fmt: skip
        await self.chat_both_ways(alice, bob, "before")

        proxy.close()
        await wait_until(lambda: links().get(link) == "down", timeout=20,
                         what=f"node 1 to notice its {kind} link down")  # fmt: skip
        status, ready = cluster.ops_status("node1", "/ready")
        assert status == 200 and ready["ready"] and ready["degraded"] == ["msg"], ready
        assert ready["services"]["msg"]["links"] == {route: "up", link: "down", other_link: "up"}, (
            ready
        )
        assert cluster.ops_status("node1", "/ready?strict=1")[0] == 503
        assert self.link_up_metric(cluster, "node1") == {route: 1, link: 0, other_link: 1}
        assert cluster.ops_status("node2", "/ready?strict=1")[0] == 200  # its own link is up
        await self.chat_both_ways(alice, bob, "while one link is down")
        carol = await self.client(cluster, "node1", 2)  # node 1 still takes logins
        await self.chat_both_ways(carol, bob, "a login while one link is down")
        if while_down is not None:
            await while_down(cluster)
        assert links().get(link) == "down"  # all of that with the link still down

        proxy.open()
        await wait_until(lambda: links().get(link) == "up", timeout=30,
                         what=f"node 1's {kind} link up again")  # fmt: skip
        status, ready = cluster.ops_status("node1", "/ready?strict=1")
        assert status == 200 and ready["degraded"] == [], ready
        assert self.link_up_metric(cluster, "node1") == {route: 1, link: 1, other_link: 1}
        await self.chat_both_ways(alice, bob, "after")
        return cluster

    async def test_file_link_alone_down_is_reported_and_chat_goes_on(self):
        """node 1's link to the file service cut (its proxy closed) and restored: see
        ``one_link_down_and_back``; node 1 logs the link's loss and return."""
        cluster = await self.one_link_down_and_back("file", "file_internal_port")
        log = cluster.process("node1").output()
        assert re.search(r"file link to \S+ down", log), log[-3000:]

    async def test_login_link_alone_down_is_reported_and_chat_goes_on(self):
        """node 1's link to the login service cut (its proxy closed) and restored: see
        ``one_link_down_and_back``; meanwhile login stops offering node 1 to new clients
        (it cannot know its load) and offers it again once the link is back."""

        async def not_offered(cluster: ClusterProcesses) -> None:
            port = cluster.port("node1")
            await wait_until(lambda: port not in cluster.offered_ports(), timeout=20,
                             what="login to stop offering node 1")  # fmt: skip
            assert int(cluster.discovery()["port"]) == cluster.port("node2")

        cluster = await self.one_link_down_and_back(
            "login", "login_internal_port", while_down=not_offered
        )
        port = cluster.port("node1")
        await wait_until(lambda: port in cluster.offered_ports(), timeout=20,
                         what="login to offer node 1 again")  # fmt: skip
