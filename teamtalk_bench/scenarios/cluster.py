"""cluster: msg pairs across two msg nodes of a throwaway cluster, and two nodes vs one.

The bench starts the cluster itself: a fresh MariaDB database ``tt_bench_<random>`` (dropped
afterwards) and a Redis key prefix of its own, the users created in that database before
the start, one center process (route, login, file) and two msg-only nodes, all on free
127.0.0.1 ports. Three phases, each the msg scenario's pairs (M messages per sender, W in
flight, the same latency, lost and duplicated bookkeeping) with users of its own:

1. cross-node: every sender on node 1, every receiver on node 2, so each message goes
   sender -> node 1 -> route -> node 2 -> receiver;
2. two nodes: the pairs spread over both nodes, sender and receiver of a pair on the same
   node, half the pairs per node;
3. one node: the same pairs, all on node 1.

The aggregate is phase 2's acked msg/s against phase 3's.
"""

from __future__ import annotations

import argparse
from typing import Any

from teamtalk_bench import stats
from teamtalk_bench.scenarios import msg
from teamtalk_bench.server import (
    DEFAULT_MYSQL,
    DEFAULT_REDIS,
    LOOPBACK,
    BenchSetupError,
    Target,
    ThrowawayCluster,
)
from teamtalk_bench.workers import start_workers

#: The msg scenario's worker, with the ``user_offset`` and ``pair_ports`` params.
worker = msg.worker

PHASES = ("cross_node", "two_nodes", "one_node")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    msg.add_arguments(parser)
    parser.add_argument(
        "--mysql",
        default=DEFAULT_MYSQL,
        help=f"MariaDB/MySQL server (a database is created and dropped) [{DEFAULT_MYSQL}]",
    )
    parser.add_argument(
        "--redis",
        default=DEFAULT_REDIS,
        help=f"Redis server (keys under a prefix of the run, deleted after) [{DEFAULT_REDIS}]",
    )


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        raise SystemExit("cluster: starts its own cluster; --url is not supported")
    if args.server_tree:
        raise SystemExit("cluster: --server-tree is not supported")
    params = msg.params_from(args)
    params.update(mysql=args.mysql, redis=args.redis)
    return params


def users_needed(params: dict[str, Any]) -> int:
    return len(PHASES) * 2 * params["pairs"]


def worker_count(params: dict[str, Any], requested: int) -> int:
    return msg.worker_count(params, requested)


def run(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Start the cluster, run the three phases, stop it; the document's own parts."""
    cluster = ThrowawayCluster(
        users_needed(params),
        2,
        mysql=params["mysql"],
        redis=params["redis"],
        prefix=args.user_prefix,
        password=args.password,
        keep=args.keep_server,
        extra_args=args.server_arg,
    )
    phases: dict[str, dict[str, Any]] = {}
    exits: dict[str, int | None] = {}
    try:
        ids = cluster.start()
        target = Target(
            LOOPBACK,
            cluster.ports["node1"],
            f"http://{LOOPBACK}:{cluster.http_port}/msg_server",
            args.user_prefix,
            args.password,
            pid=cluster.procs["node1"].pid,
            throwaway=True,
            data_dir=str(cluster.root),
            user_ids=ids,
        )
        n = params["pairs"]
        node1, node2 = cluster.ports["node1"], cluster.ports["node2"]
        layouts = {
            "cross_node": [(node1, node2)] * n,
            "two_nodes": [(node1, node1) if k % 2 == 0 else (node2, node2) for k in range(n)],
            "one_node": [(node1, node1)] * n,
        }
        for number, name in enumerate(PHASES):
            phase_params = dict(params, user_offset=number * 2 * n, pair_ports=layouts[name])
            count = worker_count(params, max(1, args.processes))
            workers = start_workers("cluster", phase_params, target, count, None, cluster.pids())
            try:
                outcome = msg.coordinate(workers)
            finally:
                workers.close()
            outcome.pop("table")
            for proc_name, proc in cluster.procs.items():
                if not proc.running:
                    raise BenchSetupError(
                        f"{proc_name} exited during {name}:\n{cluster.log(proc_name)[-3000:]}"
                    )
            phases[name] = outcome
    finally:
        exits = cluster.stop()
        if args.keep_server:
            print(f"cluster logs: {cluster.root}")
    return _document(params, cluster, phases, exits)


def _document(
    params: dict[str, Any],
    cluster: ThrowawayCluster,
    phases: dict[str, dict[str, Any]],
    exits: dict[str, int | None],
) -> dict[str, Any]:
    cross, two, one = (phases[name] for name in PHASES)
    two_rate = two["results"]["acked_per_second"]
    one_rate = one["results"]["acked_per_second"]
    results = {
        "cross_node": cross["results"],
        "aggregate": {
            "two_nodes": two["results"],
            "one_node": one["results"],
            "two_nodes_acked_per_second": two_rate,
            "one_node_acked_per_second": one_rate,
            "ratio": round(two_rate / one_rate, 2) if two_rate and one_rate else None,
        },
    }
    lost = sum(phases[p]["results"]["lost"] for p in PHASES)
    duplicated = sum(phases[p]["results"]["duplicated"] for p in PHASES)
    r = cross["results"]
    rows = [
        (
            "pairs x messages, window",
            f"{params['pairs']} x {params['messages']}, W={params['window']}",
        ),
        ("cross-node (node1 -> node2)", ""),
        ("  sent / acked / refused", f"{r['sent']} / {r['acked']} / {r['refused']}"),
        ("  delivered", r["delivered"]),
        ("  acked msg/s", r["acked_per_second"]),
        ("  delivered msg/s", r["delivered_per_second"]),
        ("  lost / duplicated", f"{r['lost']} / {r['duplicated']}"),
        *[("  " + k, v) for k, v in stats.cpu_rows(cross["client"], None)],
        *_server_rows(cross["server"]),
        ("aggregate (pairs within a node)", ""),
        ("  acked msg/s, two msg nodes", two_rate),
        ("  acked msg/s, one msg node", one_rate),
        ("  two / one", results["aggregate"]["ratio"]),
        (
            "  lost / duplicated (two, one)",
            f"{two['results']['lost']} / {two['results']['duplicated']}, "
            f"{one['results']['lost']} / {one['results']['duplicated']}",
        ),
        ("  server CPU, two nodes", _cpu_line(two["server"])),
        ("  server CPU, one node", _cpu_line(one["server"])),
        *[("  client, two nodes: " + k, v) for k, v in stats.cpu_rows(two["client"], None)],
        *[("  client, one node: " + k, v) for k, v in stats.cpu_rows(one["client"], None)],
    ]
    table = stats.render_table(
        "cluster",
        rows,
        [
            ("cross-node ack", r["ack_latency"]),
            ("cross-node delivery", r["delivery_latency"]),
        ],
    )
    return {
        "target": {
            "throwaway": True,
            "database": cluster.db_name,
            "redis_prefix": cluster.redis_prefix,
            "ports": {"http": cluster.http_port, **cluster.ports},
            "pids": cluster.pids(),
        },
        "results": results,
        # The cross-node phase's client and server figures; every phase's in "phases".
        "client": cross["client"],
        "server": cross["server"],
        "phases": {
            name: {"client": phases[name]["client"], "server": phases[name]["server"]}
            for name in PHASES
        },
        "server_exit": exits,
        "table": table,
        "ok": lost == 0 and duplicated == 0,
    }


def _server_rows(server: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = []
    for name, figures in (server.get("processes") or {}).items():
        cpu, rss = figures.get("cpu_percent"), figures.get("rss_kb_after")
        rows.append(
            (
                f"  server {name}",
                f"{cpu if cpu is not None else '-'}% CPU, "
                + (f"{rss / 1024:.1f} MiB RSS" if rss is not None else "- RSS"),
            )
        )
    return rows


def _cpu_line(server: dict[str, Any]) -> str:
    """``center 5%, node1 60%, node2 58%`` (share of one core over the measured phase)."""
    parts = []
    for name, figures in (server.get("processes") or {}).items():
        cpu = figures.get("cpu_percent")
        parts.append(f"{name} {cpu:g}%" if cpu is not None else f"{name} -")
    return ", ".join(parts) or "-"
