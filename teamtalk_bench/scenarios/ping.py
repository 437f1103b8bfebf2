"""ping: round-trip latency with one request in flight (window 1) on one connection.

``--kind heartbeat`` (default) times the heartbeat echo, the cheapest path through the
server; ``time`` times ``CID_MSG_TIME_REQUEST`` (a decoded request and a handler); ``msg``
times a stored 1:1 message until its ack (the durable path).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet import defer

from teamtalk_bench import stats
from teamtalk_bench.conn import PC, BenchError, open_logged_in
from teamtalk_bench.workers import Run, WorkerContext
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2

KINDS = ("heartbeat", "time", "msg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=2000, help="round trips measured [2000]")
    parser.add_argument("--warmup", type=int, default=100, help="round trips not measured [100]")
    parser.add_argument(
        "--kind", choices=KINDS, default="heartbeat", help="what to send [heartbeat]"
    )
    parser.add_argument(
        "--duration-limit", type=float, default=120.0, help="stop after this many seconds [120]"
    )


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.count < 1:
        raise SystemExit("ping: --count must be >= 1")
    return {
        "count": args.count,
        "warmup": max(0, args.warmup),
        "kind": args.kind,
        "duration_limit": args.duration_limit,
    }


def users_needed(params: dict[str, Any]) -> int:
    return 2


def worker_count(params: dict[str, Any], requested: int) -> int:
    return 1  # window 1 on one connection: one client process by definition


def coordinate(run: Run) -> dict[str, Any]:
    p = run.params
    run.gather("ready", timeout=60)
    run.measure_start()
    run.broadcast("go")
    (report,) = run.gather("result", timeout=p["duration_limit"] + 60)
    server = run.measure_stop()
    run.broadcast(None)
    latency = stats.latency_summary(report["latencies"])
    results = {
        "kind": p["kind"],
        "completed": len(report["latencies"]),
        "failed": report["failed"],
        "round_trips_per_second": stats.rate(len(report["latencies"]), report["wall"]),
        "latency": latency,
    }
    client = stats.client_cpu([report], report["wall"])
    rows = [
        ("kind", p["kind"]),
        ("round trips", results["completed"]),
        ("failed", results["failed"]),
        ("round trips/s", results["round_trips_per_second"]),
        *stats.cpu_rows(client, server),
    ]
    table = stats.render_table("ping", rows, [(p["kind"], latency)])
    return {
        "results": results,
        "client": client,
        "server": server,
        "table": table,
        "ok": report["failed"] == 0,
    }


async def worker(ctx: WorkerContext) -> None:
    p, t, reactor = ctx.params, ctx.target, ctx.reactor
    kind = p["kind"]
    conn = await open_logged_in(reactor, t.host, t.port, t.user_name(0), t.password, PC)
    peer = None
    if kind == "msg":
        peer = await open_logged_in(reactor, t.host, t.port, t.user_name(1), t.password, PC)
        peer.on(B.CID_MSG_DATA, lambda seq, body: None)
    cid: int
    if kind == "heartbeat":
        cid, body = B.CID_OTHER_HEARTBEAT, b""
    elif kind == "time":
        cid, body = B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq().SerializeToString()
    else:
        cid, body = B.CID_MSG_DATA, b""
        message = Message_pb2.IMMsgData(
            from_user_id=conn.user_id,
            to_session_id=peer.user_id if peer is not None else 0,
            msg_id=0,
            create_time=0,
            msg_type=B.MSG_TYPE_SINGLE_TEXT,
            msg_data=b"",
        )
    total = p["warmup"] + p["count"]
    latencies: list[float] = []
    failed = [0]
    done: defer.Deferred = defer.Deferred()
    state = {"n": 0, "sent": 0.0}

    def send() -> None:
        if state["n"] >= total or time.monotonic() > deadline:
            if not done.called:
                done.callback(None)
            return
        payload = body
        if kind == "msg":
            message.create_time = int(time.time())
            message.msg_data = b"ping-%08d" % state["n"]
            payload = message.SerializeToString()
        state["sent"] = time.monotonic()
        conn.request(cid, payload, answered)

    def answered(got_cid: int, answer: bytes) -> None:
        now = time.monotonic()
        if got_cid == 0:
            failed[0] += total - state["n"]
            if not done.called:
                done.callback(None)
            return
        if kind == "msg" and Message_pb2.IMMsgDataAck.FromString(answer).msg_id == 0:
            failed[0] += 1
        elif state["n"] >= p["warmup"]:
            latencies.append(now - state["sent"])
        state["n"] += 1
        send()

    await ctx.sync("ready", None)
    deadline = time.monotonic() + p["duration_limit"]
    cpu0 = stats.process_cpu_seconds()
    t0 = time.monotonic()
    send()
    await done
    report = {
        "latencies": latencies,
        "failed": failed[0],
        "wall": time.monotonic() - t0,
        "cpu_seconds": stats.process_cpu_seconds() - cpu0,
    }
    if state["n"] < total and not failed[0]:
        report["failed"] = total - state["n"]
    if not latencies and not report["failed"]:
        raise BenchError("no round trip completed")
    await ctx.sync("result", report)
    conn.close()
    if peer is not None:
        peer.close()
