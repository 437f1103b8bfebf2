"""faults: the figures of a cluster riding out one fault (issue 12).

``python -m teamtalk_bench.faults FAULT`` starts a throwaway cluster on this machine (a
fresh MariaDB database, a redis-server of its own, a center with route, login and file,
two msg-only nodes, all on free 127.0.0.1 ports; with ``database`` the nodes reach
MariaDB through a TCP proxy of its own), drives cross-node chat (``--pairs`` senders on
node 1, their receivers on node 2, ``--window`` messages in flight each) and injects one
fault after ``--phase`` seconds, for ``--phase`` seconds:

* ``redis``: the cluster's Redis killed, then started again (empty);
* ``database``: the proxy to MariaDB closed, then opened again;
* ``pause``: node 2 (the receivers' node) frozen with SIGSTOP, then SIGCONT;
* ``kill-hub``: the center killed with SIGKILL, then started again;
* ``kill-node``: node 1 (the senders' node) killed with SIGKILL, then started again
  (its senders log in again).

It prints (and writes as JSON with ``--json``) acked messages per second before, during
and after the fault, the time from the fault's end until acks flow at half the rate of
before (0 when they never fell below it) and until the cluster uses what came back
(``back_in_service_s``), the most packets any process held in memory for a link that
was down (``teamtalk_route_backlog`` and ``teamtalk_catch_up_held`` on the nodes,
``teamtalk_route_parked`` on the center), the messages delivered from the store after
the fault (``teamtalk_caught_up_deliveries``), the audit (lost, stored twice, delivered
twice, missed live), and per process the resident memory now and its peak, sampled every
0.2 s, with the load average. Texts repeat as real users' do, and one pair of the
``--pairs`` talks in a group. The machine's shared MariaDB and Redis are never stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, task
from twisted.internet.task import deferLater

from teamtalk_bench.server import START_TIMEOUT, create_users
from teamtalk_client import TeamTalkSession, connect
from teamtalk_testing.cluster import ClusterProcesses
from teamtalk_testing.faults import OwnRedis, TcpProxy
from teamtalk_testing.scratch import DEFAULT_MYSQL, ScratchDatabase
from teamtalk_testing.traffic import ChatTraffic, Pair, create_group, stored_rows, stored_unread

FAULTS = ("redis", "database", "pause", "kill-hub", "kill-node")
PASSWORD = "bench"
SECRET = "faults-bench-cluster-secret-0123456789"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m teamtalk_bench.faults", description=__doc__)
    parser.add_argument("fault", choices=FAULTS)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--phase", type=float, default=5.0)
    parser.add_argument("--mysql", default=os.environ.get("TEAMTALK_TEST_MYSQL", DEFAULT_MYSQL))
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args(argv)


async def sleep(reactor: Any, seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def log_in(reactor: Any, port: int, name: str) -> TeamTalkSession:
    protocol = await connect(reactor, "127.0.0.1", port)
    session = TeamTalkSession(protocol)
    answer = await session.login(name, PASSWORD)
    if answer.result_code != 0:
        raise RuntimeError(f"login of {name} refused: {answer.result_string}")
    return session


HELD = ("teamtalk_route_backlog", "teamtalk_route_parked", "teamtalk_catch_up_held")


def held_in_memory(cluster: ClusterProcesses, name: str) -> int:
    """Packets the process keeps for a link that is down or a node not yet back."""
    part = cluster.center if name == "center" else cluster.nodes[name]
    url = f"http://127.0.0.1:{part.ops_port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    return sum(int(float(line.split()[-1])) for line in text.splitlines() if line.startswith(HELD))


class MemorySampler:
    """Resident and peak memory of every cluster process, and the packets each holds for
    others, every 0.2 s."""

    def __init__(self, reactor: Any, cluster: ClusterProcesses) -> None:
        self.cluster = cluster
        self.peak: dict[str, int] = {}
        self.held: dict[str, int] = {}
        self.loop = task.LoopingCall(self.sample)
        self.loop.clock = reactor

    def sample(self) -> None:
        for name in ("center", *self.cluster.nodes):
            process = self.cluster.process(name)
            if not process.running:
                continue
            try:
                rss, hwm = self.cluster.memory(name)
            except OSError:
                continue
            self.peak[name] = max(self.peak.get(name, 0), rss, hwm)
            if name in self.cluster.paused:
                continue  # its /metrics would hold this reactor, and the traffic, 2 s
            try:
                held = held_in_memory(self.cluster, name)
            except OSError:
                continue
            self.held[name] = max(self.held.get(name, 0), held)


def fault_actions(
    fault: str, cluster: ClusterProcesses, redis: OwnRedis, proxy: TcpProxy | None
) -> tuple[Callable[[], None], Callable[[], None]]:
    """What injects ``fault`` and what ends it."""
    if fault == "redis":
        return redis.kill, redis.start
    if fault == "database":
        assert proxy is not None
        return proxy.close, proxy.open
    name = {"pause": "node2", "kill-hub": "center", "kill-node": "node1"}[fault]
    if fault == "pause":
        return partial(cluster.pause, name), partial(cluster.resume, name)
    return partial(cluster.kill, name), partial(cluster.restart, name)


async def back_in_service(reactor: Any, fault: str, cluster: ClusterProcesses) -> float:
    """When the cluster uses what came back: the nodes' /ready without ``degraded`` and
    with the store up (redis, database), or both nodes linked again (the others)."""

    def back() -> bool:
        try:
            if fault in ("redis", "database"):
                return all(
                    not ready["degraded"] and ready["services"]["store"]["ok"]
                    for ready in (cluster.ops(n, "/ready") for n in ("node1", "node2"))
                )
            return cluster.registered(["node1", "node2"])
        except OSError:
            return False

    deadline = time.monotonic() + 60
    while not back() and time.monotonic() < deadline:
        await sleep(reactor, 0.05)
    return time.monotonic()


async def run(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="tt_faults_"))
    db = ScratchDatabase(args.mysql, "tt_bench")
    redis = OwnRedis()
    redis.start()
    proxy: TcpProxy | None = None
    cluster: ClusterProcesses | None = None
    try:
        db_url = db.url
        if args.fault == "database":
            parts = urlsplit(args.mysql)
            proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 3306)
            proxy.open()
            user = parts.username or "root"
            db_url = f"mysql://{user}@127.0.0.1:{proxy.port}/{db.name}"
        prefix = f"fb{secrets.token_hex(2)}_"
        create_users(2 * args.pairs, prefix, PASSWORD, db_url=db.url)
        cluster = ClusterProcesses(root, db_url, redis.url, SECRET)
        cluster.start(timeout=START_TIMEOUT)  # a loaded box starts twistd slowly
        pairs = []
        for i in range(args.pairs):
            sender = await log_in(reactor, cluster.port("node1"), f"{prefix}{2 * i}")
            receiver = await log_in(reactor, cluster.port("node2"), f"{prefix}{2 * i + 1}")
            pair = Pair(sender, receiver)
            if i == args.pairs - 1:  # one pair talks in a group
                pair.group_id = await create_group(sender, pair.to_id)
            pairs.append(pair)
        receivers = {p.to_id for p in pairs}
        while not receivers <= cluster.route_users():  # messages relayed before that
            await sleep(reactor, 0.05)  # reach a receiver through its unread count
        traffic = ChatTraffic(reactor, pairs, window=args.window, repeat_words=True)
        sampler = MemorySampler(reactor, cluster)
        sampler.loop.start(0.2)
        load_before = os.getloadavg()[0]
        traffic.start()
        await sleep(reactor, args.phase)
        fault_start = time.monotonic()
        inject, restore = fault_actions(args.fault, cluster, redis, proxy)
        inject()
        await sleep(reactor, args.phase)
        fault_end = time.monotonic()
        restore()
        if args.fault == "kill-node":  # its senders log in again
            await traffic.stop()
            while not cluster.registered(["node1", "node2"]):
                await sleep(reactor, 0.05)
            for i, pair in enumerate(pairs):
                pair.sender = await log_in(reactor, cluster.port("node1"), f"{prefix}{2 * i}")
            traffic.start()
        back = await back_in_service(reactor, args.fault, cluster)
        before = traffic.rate(fault_start - args.phase, fault_start)
        recovered_at = None
        deadline = fault_end + 60
        while time.monotonic() < deadline:
            await sleep(reactor, 0.1)
            now = time.monotonic()
            if traffic.rate(now - 0.5, now) >= before / 2:
                recovered_at = now - 0.5
                break
        await sleep(reactor, args.phase)
        end = time.monotonic()
        await traffic.stop()
        await sleep(reactor, 3)  # late live deliveries
        sampler.loop.stop()
        problems = traffic.audit(stored_rows(db.query, pairs), stored_unread(db.query, pairs))
        caught_up = {
            name: int(cluster.metric(name, "teamtalk_caught_up_deliveries_total"))
            for name in cluster.nodes
            if cluster.process(name).running
        }
        return {
            "fault": args.fault,
            "pairs": args.pairs,
            "window": args.window,
            "phase_s": args.phase,
            "acked_per_s": {
                "before": round(before, 1),
                "during": round(traffic.rate(fault_start, fault_end), 1),
                "after": round(traffic.rate(end - args.phase, end), 1),
            },
            "recovery_s": (
                None if recovered_at is None else round(max(0.0, recovered_at - fault_end), 2)
            ),
            "back_in_service_s": round(back - fault_end, 2),
            "acked": traffic.acked,
            "unacked": sum(len(p.unacked) for p in pairs),
            "problems": problems[:20],
            "problem_count": len(problems),
            "peak_rss_kib": sampler.peak,
            "peak_packets_held": sampler.held,
            "caught_up_deliveries": caught_up,
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
        }
    finally:
        if cluster is not None:
            cluster.stop()
        if proxy is not None:
            proxy.stop()
        redis.stop()
        db.drop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)

    async def go(reactor: Any) -> None:
        result = await run(reactor, args)
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
