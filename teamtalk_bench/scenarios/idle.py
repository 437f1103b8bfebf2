"""idle: K idle logged-in connections (heartbeating): server memory and presence fan-out.

The K connections log in (the first ``--pc`` of them as Windows clients, the rest as
Android), heartbeat every ``--heartbeat`` seconds, and stay idle. The server's RSS before
and after gives the memory per connection. Then, ``--rounds`` times, one more PC user logs
in and later disconnects, and every PC connection timestamps the
``CID_BUDDY_LIST_STATUS_NOTIFY`` about it: fan-out time = last arrival - the trigger's send
(or close). Arrival times are the kernel's receive timestamps (``SO_TIMESTAMPNS``), so a
client process that is slow to get round to a socket does not inflate them; it could still
take a core from the server's sends, so the connections' processes run niced during the
rounds (``--client-nice``) and the trigger has a process of its own. Each notify follows
``--round-gap`` seconds of quiet: the figure is a status change on a quiet server (the
server sends notifies closer together than ``PresenceBatch.STORM_GAP`` as a storm's, from
the reactor thread alone).

Every PC login is announced to every PC connection, so logging in P PC connections costs the
server about P²/2 notifications: that is why ``--pc`` defaults to at most 10,000 and the rest
of a large K logs in as mobile clients, which get no presence notifications.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall

from teamtalk_bench import stats
from teamtalk_bench.conn import (
    MOBILE,
    PC,
    BenchConnection,
    BenchError,
    bounded,
    fire_once,
    open_logged_in,
)
from teamtalk_bench.server import LOOPBACK, ProcessStats, Target, raise_nofile_limit
from teamtalk_bench.workers import Run, WorkerContext
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2

#: Connections one source address may open to one server port (the ephemeral port range
#: is usually 32768-60999).
PER_SOURCE_ADDRESS = 25000
#: File descriptors a process keeps for itself beyond its connections.
FD_RESERVE = 200
#: Tries per idle connection: a server busy announcing earlier logins may miss its own
#: login deadline for a few of them; they are counted and retried.
LOGIN_ATTEMPTS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connections", type=int, default=1000, help="idle logged-in connections K [1000]"
    )
    parser.add_argument(
        "--pc",
        type=int,
        default=10000,
        help="how many of the K log in as PC clients; the rest are mobile [10000]",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=30.0,
        help="heartbeat interval of every connection, seconds [30]",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="status-notify fan-out measurements (login + logout each) [3]",
    )
    parser.add_argument(
        "--round-gap",
        type=float,
        default=1.0,
        help="seconds of quiet before each status notify: the server sends notifies "
        "closer together than PresenceBatch.STORM_GAP (0.5 s) as a storm's [1]",
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=19,
        help="niceness of the connections' processes during the notify rounds: what "
        "they do with a notify is not what is measured (arrivals are kernel "
        "timestamps), so they must not take the cores from the server's sends [19]",
    )
    parser.add_argument(
        "--login-concurrency",
        type=int,
        default=50,
        help="logins in flight per client process while connecting [50]",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=3.0,
        help="seconds to stay idle before reading the server's RSS [3]",
    )
    parser.add_argument(
        "--ramp-limit",
        type=float,
        default=1200.0,
        help="give up connecting after this many seconds [1200]",
    )
    parser.add_argument(
        "--notify-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for a status notify to reach everybody [30]",
    )


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.connections < 1:
        raise SystemExit("idle: --connections must be >= 1")
    return {
        "connections": args.connections,
        "requested_connections": args.connections,
        "pc": max(0, min(args.pc, args.connections)),
        "heartbeat": max(1.0, args.heartbeat),
        "rounds": max(0, args.rounds),
        "round_gap": max(0.0, args.round_gap),
        "client_nice": max(0, args.client_nice),
        "login_concurrency": max(1, args.login_concurrency),
        "hold": max(0.0, args.hold),
        "ramp_limit": args.ramp_limit,
        "notify_timeout": args.notify_timeout,
        "notes": [],
    }


def users_needed(params: dict[str, Any]) -> int:
    return params["connections"] + 1


def prepare(params: dict[str, Any], target: Target) -> None:
    """Cap K at what the server's open-file limit allows (we cannot raise another
    process's hard limit)."""
    limit = ProcessStats(target.pid).nofile_limit()
    if limit is not None and params["connections"] > limit - FD_RESERVE:
        capped = max(1, limit - FD_RESERVE)
        params["notes"].append(
            f"requested {params['connections']} connections, but the server's open-file "
            f"limit is {limit}: measuring {capped}"
        )
        params["connections"] = capped
        params["pc"] = min(params["pc"], capped)


def worker_count(params: dict[str, Any], requested: int) -> int:
    """The connections' processes, and one more of the trigger's own (``worker``)."""
    per_process = max(100, raise_nofile_limit() - FD_RESERVE)
    return max(requested, math.ceil(params["connections"] / per_process)) + 1


# --------------------------------------------------------------------------------------
# Parent


def coordinate(run: Run) -> dict[str, Any]:
    p = run.params
    server_stats = run.server_stats
    ready = run.gather("ready", timeout=120)
    trigger_id = next(r["trigger_id"] for r in ready if r.get("trigger_id"))
    rss_before = server_stats.rss_kb()
    fds_before = server_stats.open_files()
    run.measure_start()
    run.broadcast({"trigger_id": trigger_id})
    connected = run.gather("connected", timeout=p["ramp_limit"] + 120)
    ramp_seconds = max(r["ramp_seconds"] for r in connected)
    opened = sum(r["connected"] for r in connected)
    pc_open = sum(r["pc"] for r in connected)
    failed = sum(r["failed"] for r in connected)
    time.sleep(p["hold"])
    rss_after = server_stats.rss_kb()
    fds_after = server_stats.open_files()

    rounds = []
    for number in range(p["rounds"]):
        for kind in ("online", "offline"):
            run.broadcast(("arm", number, kind))  # the reply to "connected" or "round"
            run.gather("armed", timeout=60)
            time.sleep(p["round_gap"])
            run.broadcast("fire")
            reports = run.gather("round", timeout=p["notify_timeout"] + 60)
            rounds.append(_round_result(number, kind, reports))
    run.broadcast("finish")
    finals = run.gather("result", timeout=60)
    server = run.measure_stop()
    server.update(
        rss_kb_before=rss_before,
        rss_kb_after=rss_after,
        open_files_before=fds_before,
        open_files_after=fds_after,
        rss_hwm_kb=server_stats.hwm_kb(),
    )
    run.broadcast(None)

    per_conn = None
    if rss_before is not None and rss_after is not None and opened:
        per_conn = round((rss_after - rss_before) * 1024 / opened)
    online = [r for r in rounds if r["kind"] == "online"]
    offline = [r for r in rounds if r["kind"] == "offline"]
    results = {
        "connections": opened,
        "pc_connections": pc_open,
        "mobile_connections": opened - pc_open,
        "failed_logins": failed,
        "dropped_during_ramp": sum(r.get("dropped_during_ramp", 0) for r in connected),
        "login_retries": sum(r["retries"] for r in connected),
        "first_login_error": next(
            (r["first_retry_reason"] for r in connected if r["first_retry_reason"]), None
        ),
        "ramp_seconds": round(ramp_seconds, 3),
        "logins_per_second_during_ramp": stats.rate(opened, ramp_seconds),
        "server_rss_bytes_per_connection": per_conn,
        "dropped_while_idle": sum(r["dropped"] for r in finals),
        "heartbeats_sent": sum(r["heartbeats_sent"] for r in finals),
        "heartbeats_echoed": sum(r["heartbeats_echoed"] for r in finals),
        "kernel_timestamps": all(r["kernel_timestamps"] for r in finals),
        "fanout_online_ms": _median([r["fanout_ms"] for r in online]),
        "fanout_offline_ms": _median([r["fanout_ms"] for r in offline]),
        "notify_missing": sum(r["missing"] for r in rounds),
        "round_gap_seconds": p["round_gap"],
        "client_nice": p["client_nice"],
        "rounds": rounds,
        "notes": p["notes"],
    }
    client = stats.client_cpu([{"cpu_seconds": c["cpu_seconds"]} for c in connected], ramp_seconds)
    rows = [
        ("connections (PC / mobile)", f"{opened} ({pc_open} / {opened - pc_open})"),
        ("failed logins (retried)", f"{failed} ({results['login_retries']})"),
        ("closed by the server during the ramp", results["dropped_during_ramp"]),
        ("ramp-up", f"{ramp_seconds:.1f} s ({results['logins_per_second_during_ramp']} logins/s)"),
        (
            "server RSS before / after",
            f"{_mib(rss_before)} / {_mib(rss_after)} MiB" if rss_after else "-",
        ),
        ("server RSS per connection", f"{per_conn:,} bytes" if per_conn is not None else "-"),
        ("server open files", fds_after),
        ("dropped while idle", results["dropped_while_idle"]),
        (
            f"notify fan-out to {pc_open} PC (median)",
            f"online {_ms(results['fanout_online_ms'])}, "
            f"offline {_ms(results['fanout_offline_ms'])}",
        ),
        ("notifies missing", results["notify_missing"]),
        (
            "notify rounds",
            f"after {p['round_gap']:g} s of quiet each, connections at nice {p['client_nice']}",
        ),
        *stats.cpu_rows(client, server),
    ]
    if results["first_login_error"]:
        rows.append(("first login error", results["first_login_error"][:120]))
    for note in p["notes"]:
        rows.append(("note", note))
    lat = [(f"{r['kind']} #{r['round']}", r["arrival"]) for r in rounds]
    table = stats.render_table("idle", rows, lat)
    table = table.replace("latency (ms)", "arrival (ms)")
    ok = (
        failed == 0
        and results["dropped_during_ramp"] == 0
        and results["dropped_while_idle"] == 0
        and results["notify_missing"] == 0
    )
    return {"results": results, "client": client, "server": server, "table": table, "ok": ok}


def _round_result(number: int, kind: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    fire_ns = next(r["fire_ns"] for r in reports if r.get("fire_ns"))
    arrivals = [(a - fire_ns) / 1e9 for r in reports for a in r["arrivals"]]
    summary = stats.latency_summary(arrivals)
    return {
        "round": number,
        "kind": kind,
        "received": len(arrivals),
        "missing": sum(r["missing"] for r in reports),
        "fanout_ms": summary["max_ms"],
        "answer_ms": next(
            (r["answer_ms"] for r in reports if r.get("answer_ms") is not None), None
        ),
        "arrival": summary,
    }


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return known[len(known) // 2] if known else None


def _mib(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


# --------------------------------------------------------------------------------------
# Worker


async def worker(ctx: WorkerContext) -> None:
    """The last worker fires the trigger and holds no connection: the others, which do,
    run niced during the notify rounds (``--client-nice``) and the trigger's login or
    close must not wait for a core behind the server."""
    p, t, reactor = ctx.params, ctx.target, ctx.reactor
    k = p["connections"]
    firing = ctx.index == ctx.count - 1
    mine = range(0) if firing else range(ctx.index, k, ctx.count - 1)
    trigger_index = k
    conns: list[Any] = []
    pc_conns: list[Any] = []
    dropped = [0]
    heartbeats = [0]
    use_sources = k > PER_SOURCE_ADDRESS and t.host == LOOPBACK

    trigger_id = 0
    if firing:
        # Learn the trigger's id without telling anybody: mobile logins are not announced.
        probe = await open_logged_in(
            reactor, t.host, t.port, t.user_name(trigger_index), t.password, MOBILE
        )
        trigger_id = probe.user_id
        probe.close()
    go = await ctx.sync("ready", {"trigger_id": trigger_id})
    trigger_id = go["trigger_id"]

    def ignore(seq: int, body: bytes) -> None:
        pass

    def lost(conn: BenchConnection) -> None:
        dropped[0] += 1

    cursor = [0]
    retries: list[str] = []

    def heartbeat_tick() -> None:
        if not conns:
            return
        per_tick = max(1, math.ceil(len(conns) / p["heartbeat"]))
        for _ in range(min(per_tick, len(conns))):
            conn = conns[cursor[0] % len(conns)]
            cursor[0] += 1
            if conn.open:
                conn.heartbeat()
                heartbeats[0] += 1

    beat = LoopingCall(heartbeat_tick)
    beat.clock = reactor
    beat.start(1.0, now=False)

    async def open_one(index: int) -> BenchConnection | None:
        client_type = PC if index < p["pc"] else MOBILE
        bind = f"127.0.0.{1 + index // PER_SOURCE_ADDRESS}" if use_sources else None
        for attempt in range(LOGIN_ATTEMPTS):
            try:
                conn = await open_logged_in(
                    reactor,
                    t.host,
                    t.port,
                    t.user_name(index),
                    t.password,
                    client_type,
                    bind=bind,
                    timeout=60,
                )
                break
            except Exception as e:  # noqa: BLE001 - retried, then reported
                retries.append(repr(e))
                if attempt == LOGIN_ATTEMPTS - 1:
                    raise
        conn.on(B.CID_BUDDY_LIST_STATUS_NOTIFY, ignore)
        conn.on(B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY, ignore)
        conn.on_lost(lost)
        conns.append(conn)
        if client_type == PC:
            pc_conns.append(conn)
        return conn

    cpu0 = stats.process_cpu_seconds()
    t0 = time.monotonic()
    outcomes = await bounded(list(mine), p["login_concurrency"], open_one)
    ramp = time.monotonic() - t0
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    # A connection the server closed during a long ramp (a login storm can keep a slow
    # client from heartbeating) is not held any more: memory is per connection still open.
    ramp_dropped = dropped[0]
    conns[:] = [c for c in conns if c.open]
    pc_conns[:] = [c for c in pc_conns if c.open]
    dropped[0] = 0
    command = await ctx.sync(
        "connected",
        {
            "connected": len(conns),
            "dropped_during_ramp": ramp_dropped,
            "pc": len(pc_conns),
            "failed": len(errors),
            "first_error": repr(errors[0]) if errors else None,
            "retries": len(retries),
            "first_retry_reason": retries[0] if retries else None,
            "ramp_seconds": ramp,
            "cpu_seconds": stats.process_cpu_seconds() - cpu0,
        },
    )

    timestamps = all([c.enable_kernel_timestamps() for c in pc_conns]) if pc_conns else True
    if not firing and p["client_nice"]:
        os.nice(p["client_nice"])
    trigger: BenchConnection | None = None
    while command != "finish":
        _, number, kind = command
        wanted = B.USER_STATUS_ONLINE if kind == "online" else B.USER_STATUS_OFFLINE
        arrivals: dict[int, int] = {}
        complete: defer.Deferred = defer.Deferred()
        expected = sum(1 for c in pc_conns if c.open)

        def make_handler(
            conn: BenchConnection,
            wanted: int = wanted,
            arrivals: dict[int, int] = arrivals,
            complete: defer.Deferred[None] = complete,
            expected: int = expected,
        ) -> Callable[[int, bytes], None]:
            def handler(seq: int, body: bytes) -> None:
                stat = Buddy_pb2.IMUserStatNotify.FromString(body).user_stat
                if stat.user_id == trigger_id and stat.status == wanted:
                    key = id(conn)
                    if key not in arrivals:
                        arrivals[key] = conn.arrival_ns or time.time_ns()
                        if len(arrivals) >= expected and not complete.called:
                            complete.callback(None)

            return handler

        for conn in pc_conns:
            conn.on(B.CID_BUDDY_LIST_STATUS_NOTIFY, make_handler(conn))
        await ctx.sync("armed", None)
        fire_ns = None
        answer_ms = None
        if firing:
            if kind == "online":
                fire_ns = time.time_ns()
                trigger = await open_logged_in(
                    reactor, t.host, t.port, t.user_name(trigger_index), t.password, PC
                )
                answer_ms = (time.time_ns() - fire_ns) / 1e6
            else:
                fire_ns = time.time_ns()
                assert trigger is not None  # logged in by the "online" round before
                trigger.transport.loseConnection()
        if expected and not complete.called:
            timer = reactor.callLater(p["notify_timeout"], lambda d=complete: fire_once(d))
            await complete
            if timer.active():
                timer.cancel()
        for conn in pc_conns:
            conn.on(B.CID_BUDDY_LIST_STATUS_NOTIFY, ignore)
        command = await ctx.sync(
            "round",
            {
                "arrivals": list(arrivals.values()),
                "missing": expected - len(arrivals),
                "fire_ns": fire_ns,
                "answer_ms": answer_ms,
            },
        )

    beat.stop()
    await ctx.sync(
        "result",
        {
            "dropped": dropped[0],
            "heartbeats_sent": heartbeats[0],
            "heartbeats_echoed": sum(c.heartbeats_echoed for c in conns),
            "kernel_timestamps": timestamps,
        },
    )
    for conn in conns:
        conn.on_lost(None)
        if conn.open:
            conn.transport.abortConnection()
    if trigger is not None and trigger.open:
        trigger.close()
    if errors and not conns:
        raise BenchError(f"no connection could log in: {errors[0]!r}")
