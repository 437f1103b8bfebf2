"""login: logins per second over fresh connections, C in flight.

Every login opens a new TCP connection, sends ``CID_LOGIN_REQ_USERLOGIN``, waits for the
answer and closes the connection. Logins rotate over a pool of distinct users, so no login
kicks a still-open earlier connection of the same account. Latencies: TCP connect, login
(request -> answer) and the two together.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from teamtalk_bench import stats
from teamtalk_bench.conn import (
    CLIENT_TYPES,
    BenchConnection,
    BenchError,
    bounded,
    connect,
    login_body,
)
from teamtalk_bench.workers import Run, WorkerContext
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2

#: Seconds a login waits for its answer before it counts as failed.
ANSWER_TIMEOUT = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=5000, help="logins [5000]")
    parser.add_argument("--concurrency", type=int, default=50, help="logins in flight [50]")
    parser.add_argument(
        "--client-type",
        choices=sorted(CLIENT_TYPES),
        default="windows",
        help="client type of every login [windows]",
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=0,
        help="distinct users to rotate over [min(count, 10000), at least 2 x concurrency]",
    )
    parser.add_argument(
        "--duration-limit",
        type=float,
        default=300.0,
        help="stop starting logins after this many seconds [300]",
    )


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.count < 1 or args.concurrency < 1:
        raise SystemExit("login: --count and --concurrency must be >= 1")
    pool = args.pool or max(min(args.count, 10000), 2 * args.concurrency)
    return {
        "count": args.count,
        "concurrency": args.concurrency,
        "client_type": args.client_type,
        "pool": pool,
        "duration_limit": args.duration_limit,
    }


def users_needed(params: dict[str, Any]) -> int:
    return params["pool"]


def worker_count(params: dict[str, Any], requested: int) -> int:
    return max(1, min(requested, params["concurrency"]))


def coordinate(run: Run) -> dict[str, Any]:
    p = run.params
    run.gather("ready", timeout=60)
    run.measure_start()
    run.broadcast("go")
    reports = run.gather("result", timeout=p["duration_limit"] + 120)
    server = run.measure_stop()
    run.broadcast(None)
    start = min(r["t_start"] for r in reports)
    end = max(r["t_end"] for r in reports)
    ok = sum(len(r["login"]) for r in reports)
    failed = sum(r["failed"] for r in reports)
    results = {
        "logins": ok,
        "failed": failed,
        "seconds": round(end - start, 4),
        "logins_per_second": stats.rate(ok, end - start),
        "connect_latency": stats.latency_summary(x for r in reports for x in r["connect"]),
        "login_latency": stats.latency_summary(x for r in reports for x in r["login"]),
        "total_latency": stats.latency_summary(x for r in reports for x in r["total"]),
        "first_error": next((r["first_error"] for r in reports if r["first_error"]), None),
    }
    client = stats.client_cpu(reports, end - start)
    rows = [
        ("logins, in flight", f"{p['count']}, {p['concurrency']} ({p['client_type']})"),
        ("succeeded / failed", f"{ok} / {failed}"),
        ("logins/s", results["logins_per_second"]),
        *stats.cpu_rows(client, server),
    ]
    if results["first_error"]:
        rows.append(("first error", results["first_error"]))
    table = stats.render_table(
        "login",
        rows,
        [
            ("connect", results["connect_latency"]),
            ("login", results["login_latency"]),
            ("connect+login", results["total_latency"]),
        ],
    )
    return {
        "results": results,
        "client": client,
        "server": server,
        "table": table,
        "ok": failed == 0,
    }


async def worker(ctx: WorkerContext) -> None:
    p, t, reactor = ctx.params, ctx.target, ctx.reactor
    client_type = CLIENT_TYPES[p["client_type"]]
    numbers = list(ctx.share(p["count"]))
    lanes = len(ctx.share(p["concurrency"]))
    bodies: dict[int, bytes] = {}
    connect_lat: list[float] = []
    login_lat: list[float] = []
    total_lat: list[float] = []
    failed = [0]
    first_error: list[str] = []

    def body_for(user: int) -> bytes:
        body = bodies.get(user)
        if body is None:
            body = bodies[user] = login_body(t.user_name(user), t.password, client_type)
        return body

    #: Connections waiting for their answer, with the time they asked: one sweep a second
    #: aborts those waiting longer than ANSWER_TIMEOUT (no timer per login).
    asking: dict[BenchConnection, float] = {}

    def sweep() -> None:
        too_old = time.monotonic() - ANSWER_TIMEOUT
        for conn, asked in list(asking.items()):
            if asked < too_old:
                conn.transport.abortConnection()

    async def one(number: int) -> None:
        if time.monotonic() > deadline:
            return
        t0 = time.monotonic()
        try:
            conn = await connect(reactor, t.host, t.port, timeout=30)
            t1 = time.monotonic()
            answered: Deferred[tuple[int, bytes]] = Deferred()
            try:
                conn.request_now(
                    B.CID_LOGIN_REQ_USERLOGIN,
                    body_for(number % p["pool"]),
                    lambda cid, body: answered.callback((cid, body)),
                )
                asking[conn] = t1
                cid, body = await answered
            finally:
                asking.pop(conn, None)
                conn.close()
            t2 = time.monotonic()
            if cid == 0:
                raise BenchError("connection closed (or no answer) before the login answer")
            answer = Login_pb2.IMLoginRes.FromString(body)
            if answer.result_code != B.REFUSE_REASON_NONE:
                raise BenchError(f"refused: {answer.result_code} {answer.result_string}")
        except Exception as e:  # noqa: BLE001 - counted and reported
            failed[0] += 1
            if not first_error:
                first_error.append(f"{type(e).__name__}: {e}")
            return
        connect_lat.append(t1 - t0)
        login_lat.append(t2 - t1)
        total_lat.append(t2 - t0)

    # Every login's request is built before the measured phase (not the figure's cost).
    for number in numbers:
        body_for(number % p["pool"])
    await ctx.sync("ready", None)
    deadline = time.monotonic() + p["duration_limit"]
    sweeper = LoopingCall(sweep)
    sweeper.clock = reactor
    sweeper.start(1.0, now=False)
    cpu0 = stats.process_cpu_seconds()
    t_start = time.monotonic()
    try:
        await bounded(numbers, lanes, one)
    finally:
        sweeper.stop()
    t_end = time.monotonic()
    report = {
        "t_start": t_start,
        "t_end": t_end,
        "cpu_seconds": stats.process_cpu_seconds() - cpu0,
        "connect": connect_lat,
        "login": login_lat,
        "total": total_lat,
        # failures plus logins never started before the duration limit
        "failed": len(numbers) - len(login_lat),
        "first_error": first_error[0] if first_error else None,
    }
    await ctx.sync("result", report)
