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

The aggregate is phase 2's acked msg/s against phase 3's. Each phase also reports what it
cost the shared database (InnoDB lock waits, deadlocks, batch reruns, node CPU per message)
and the single route server (packets in and out, the center's CPU per packet and the
packets/s one core could relay: the ceiling every cross-node message shares).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from teamtalk_bench import stats
from teamtalk_bench.route_probe import probe_route
from teamtalk_bench.scenarios import msg
from teamtalk_bench.server import (
    DEFAULT_MYSQL,
    DEFAULT_REDIS,
    BenchSetupError,
    ProcessStats,
    ThrowawayCluster,
)
from teamtalk_bench.workers import start_workers
from teamtalk_testing import LOOPBACK

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
        "--route-seconds",
        type=float,
        default=10.0,
        help="seconds of the route probe after the phases (two fake nodes relaying "
        "through the one route server as fast as it goes); 0 skips it [10]",
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
    params.update(mysql=args.mysql, redis=args.redis, route_seconds=args.route_seconds)
    return params


def users_needed(params: dict[str, Any]) -> int:
    return len(PHASES) * 2 * params["pairs"]


def worker_count(params: dict[str, Any], requested: int) -> int:
    return msg.worker_count(params, requested)


def bench_cluster(users: int, params: dict[str, Any], args: argparse.Namespace) -> ThrowawayCluster:
    """The throwaway center and two msg nodes the command line asks for (not started)."""
    return ThrowawayCluster(
        users,
        2,
        mysql=params["mysql"],
        redis=params["redis"],
        prefix=args.user_prefix,
        password=args.password,
        keep=args.keep_server,
        extra_args=args.server_arg,
    )


def run(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Start the cluster, run the three phases, stop it; the document's own parts."""
    cluster = bench_cluster(users_needed(params), params, args)
    phases: dict[str, dict[str, Any]] = {}
    exits: dict[str, int | None] = {}
    try:
        ids = cluster.start()
        target = cluster.target(ids)
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
            locks_before, retries_before = cluster.innodb_locks(), _deadlock_retries(cluster)
            route_before = _route_reading(cluster)
            try:
                outcome = msg.coordinate(workers)
            finally:
                workers.close()
            outcome.pop("table")
            outcome["database"] = _database_figures(cluster, locks_before, retries_before, outcome)
            outcome["route"] = _route_figures(cluster, route_before, outcome)
            for proc_name, proc in cluster.procs.items():
                if not proc.running:
                    raise BenchSetupError(
                        f"{proc_name} exited during {name}:\n{cluster.log(proc_name)[-3000:]}"
                    )
            phases[name] = outcome
        probe = None
        if params.get("route_seconds", 0) > 0:
            probe = probe_route(
                LOOPBACK,
                cluster.route_port,
                cluster.secret_file.read_text().strip().encode(),
                cluster.procs["center"].pid,
                params["route_seconds"],
                params["size"],
            )
    finally:
        exits = cluster.stop()
        if args.keep_server:
            print(f"cluster logs: {cluster.root}")
    return _document(params, cluster, phases, exits, probe)


def _document(
    params: dict[str, Any],
    cluster: ThrowawayCluster,
    phases: dict[str, dict[str, Any]],
    exits: dict[str, int | None],
    probe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cross, two, one = (phases[name] for name in PHASES)
    two_rate = two["results"]["acked_per_second"]
    one_rate = one["results"]["acked_per_second"]
    results = {
        "cross_node": cross["results"],
        "route": cross["route"],
        "route_probe": probe,
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
        *_route_rows(cross),
        *_probe_rows(probe),
        ("  server CPU, two nodes", _cpu_line(two["server"])),
        *_database_rows(two),
        ("  server CPU, one node", _cpu_line(one["server"])),
        *_database_rows(one),
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
            name: {
                "client": phases[name]["client"],
                "server": phases[name]["server"],
                "database": phases[name]["database"],
                "route": phases[name]["route"],
            }
            for name in PHASES
        },
        "server_exit": exits,
        "table": table,
        "ok": lost == 0 and duplicated == 0,
    }


RETRIES_METRIC = "teamtalk_store_deadlock_retries_total"
ROUTE_IN_METRIC = "teamtalk_route_pdus_in_total"
ROUTE_OUT_METRIC = "teamtalk_route_pdus_out_total"


def _route_reading(cluster: ThrowawayCluster) -> dict[str, float | None]:
    """The route service's packet counters and the center's CPU seconds, now."""
    return {
        "in": cluster.node_counter("center", ROUTE_IN_METRIC),
        "out": cluster.node_counter("center", ROUTE_OUT_METRIC),
        "cpu": ProcessStats(cluster.procs["center"].pid).cpu_seconds(),
        "at": time.monotonic(),
    }


def _route_figures(
    cluster: ThrowawayCluster, before: dict[str, float | None], outcome: dict[str, Any]
) -> dict[str, Any]:
    """The one route server's load over a phase, and the ceiling it sets.

    Every cross-node message and every status change passes the single route process
    (in the center, whose login and file services idle during a phase): its CPU per packet
    handed over, from the workers' start to their end, gives the packets per second one
    core can relay, ``ceiling_pdus_in_per_second``; divided by the packets per acked
    message, the cross-node msg/s of the whole cluster, however many msg nodes it has.
    """
    after = _route_reading(cluster)
    if None in (before["in"], after["in"], before["out"], after["out"]):
        return {"available": False}  # a server tree without the route counters
    pdus_in = int(after["in"] - before["in"])  # type: ignore[operator]
    pdus_out = int(after["out"] - before["out"])  # type: ignore[operator]
    seconds = after["at"] - before["at"]  # type: ignore[operator]
    cpu = None if before["cpu"] is None or after["cpu"] is None else after["cpu"] - before["cpu"]
    acked = outcome["results"].get("acked") or 0
    per_pdu = round(cpu * 1e6 / pdus_in, 1) if cpu is not None and pdus_in else None
    ceiling = round(1e6 / per_pdu) if per_pdu else None
    per_msg = round(pdus_in / acked, 2) if acked else None
    return {
        "available": True,
        "seconds": round(seconds, 2),
        "pdus_in": pdus_in,
        "pdus_out": pdus_out,
        "pdus_in_per_second": round(pdus_in / seconds) if seconds > 0 else None,
        "pdus_in_per_acked_msg": per_msg,
        "center_cpu_percent": round(cpu * 100 / seconds, 1) if cpu is not None and seconds > 0
        else None,
        "center_cpu_us_per_pdu_in": per_pdu,
        "ceiling_pdus_in_per_second": ceiling,
        "ceiling_msgs_per_second": round(ceiling / per_msg) if ceiling and per_msg else None,
    }  # fmt: skip


def _probe_rows(probe: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if probe is None:
        return []
    return [
        ("route probe (two fake nodes, route alone)", ""),
        ("  relayed packets/s", f"{probe['relayed_per_second']:,}"),
        ("  route process CPU", f"{probe['route_cpu_percent']}% of a core"),
        ("  route CPU µs per relayed packet", probe["route_cpu_us_per_packet"] or "-"),
        (
            "  relayed packets/s at one full core",
            f"{probe['ceiling_per_second_at_one_core']:,}"
            if probe["ceiling_per_second_at_one_core"]
            else "-",
        ),
    ]


def _route_rows(phase: dict[str, Any]) -> list[tuple[str, Any]]:
    r = phase["route"]
    if not r.get("available"):
        return [("  route server", "- (no route counters)")]

    def shown(value: Any) -> str:
        return "-" if value is None else f"{value:,}"

    return [
        (
            "  route: packets in / out, per acked msg",
            f"{shown(r['pdus_in'])} / {shown(r['pdus_out'])}, {shown(r['pdus_in_per_acked_msg'])}",
        ),
        (
            "  route: packets in/s, center CPU",
            f"{shown(r['pdus_in_per_second'])}/s, {shown(r['center_cpu_percent'])}% of a core",
        ),
        ("  route: center CPU µs per packet in", shown(r["center_cpu_us_per_pdu_in"])),
        (
            "  route ceiling at one core: packets/s, cross-node msg/s",
            f"{shown(r['ceiling_pdus_in_per_second'])}, {shown(r['ceiling_msgs_per_second'])}",
        ),
    ]


def _deadlock_retries(cluster: ThrowawayCluster) -> dict[str, float | None]:
    return {name: cluster.node_counter(name, RETRIES_METRIC) for name in cluster.ops_ports}


def _database_figures(
    cluster: ThrowawayCluster,
    locks_before: dict[str, int],
    retries_before: dict[str, float | None],
    outcome: dict[str, Any],
) -> dict[str, Any]:
    """What one phase cost the shared database: InnoDB row lock waits and their time,
    deadlocks, each node's batch reruns, and each msg node's CPU per acked message.

    The lock counters span the phase's workers' start to their end (a little more than
    the measured window); they are server-wide, so other databases' writers count too.
    """
    after = cluster.innodb_locks()
    retries_after = _deadlock_retries(cluster)
    acked = outcome["results"].get("acked") or 0
    processes = outcome["server"].get("processes") or {}
    cpu_us = {
        name: round(figures["cpu_seconds"] * 1e6 / acked, 1)
        for name, figures in processes.items()
        if name.startswith("node") and figures.get("cpu_seconds") is not None and acked
    }
    retries = {
        name: (None if before is None or retries_after[name] is None
               else int(retries_after[name] - before))  # type: ignore[operator]
        for name, before in retries_before.items()
    }  # fmt: skip
    return {
        "row_lock_waits": after.get("innodb_row_lock_waits", 0)
        - locks_before.get("innodb_row_lock_waits", 0),
        "row_lock_time_ms": after.get("innodb_row_lock_time", 0)
        - locks_before.get("innodb_row_lock_time", 0),
        "deadlocks": after.get("innodb_deadlocks", 0) - locks_before.get("innodb_deadlocks", 0),
        "deadlock_retries": retries,
        "node_cpu_us_per_acked_msg": cpu_us,
    }


def _database_rows(phase: dict[str, Any]) -> list[tuple[str, Any]]:
    figures = phase["database"]
    cpu = ", ".join(f"{n} {v:g}" for n, v in figures["node_cpu_us_per_acked_msg"].items())
    retries = ", ".join(
        f"{n} {'-' if v is None else v}" for n, v in figures["deadlock_retries"].items()
    )
    return [
        ("    msg node CPU µs per acked msg (all of the phase's msgs)", cpu or "-"),
        (
            "    InnoDB row lock waits / time / deadlocks",
            f"{figures['row_lock_waits']} / {figures['row_lock_time_ms']} ms / "
            f"{figures['deadlocks']}",
        ),
        ("    batch reruns after a deadlock", retries or "-"),
    ]


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
