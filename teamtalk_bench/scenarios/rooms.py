"""rooms: posts to one chat room whose M members are spread over two msg nodes.

The bench starts a throwaway cluster as ``cluster`` does (a fresh MariaDB database and Redis
prefix, a center with route, login and file, two msg-only nodes; users created before the
start; per-user message limits off, ``rooms.max_members`` set to M). Member i logs in on
node ``i % 2``, says hello with the ``rooms`` feature and joins the room, so route admits
every member and the room spans both nodes. Then P posters (members 0 .. P-1, so on both
nodes once P >= 2) each post ``--posts`` posts of ``--size`` bytes, ``--window`` unanswered
at a time. Every other member connection timestamps each post it receives.

Figures: posts/s = acked posts / (last ack - first send); deliveries/s = deliveries /
(last arrival - first send); per post, fan-out = last member's arrival - send. Each post
should reach M - 1 connections (every member but its poster): missing ones are reported as
lost, repeated ones as duplicated, and members the server dropped for reading too slowly
(``CID_EXT_ROOM_REMOVED_NOTIFY``) as dropped.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet import defer

from teamtalk_bench import stats
from teamtalk_bench.conn import PC, BenchConnection, BenchError, bounded, fire_once, open_logged_in
from teamtalk_bench.scenarios.cluster import _cpu_line, _server_rows, bench_cluster
from teamtalk_bench.server import (
    DEFAULT_MYSQL,
    DEFAULT_REDIS,
    NO_USER_LIMITS,
    BenchSetupError,
)
from teamtalk_bench.workers import Run, WorkerContext, start_workers
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Extension_pb2 as X

#: Post content starts with the poster's number and the post's, so receivers can tell
#: posts apart even with ``--same-text``-like payloads.
TAG_DIGITS = 10
ROOM_ID = 1000001


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", type=int, default=1000, help="room members M [1000]")
    parser.add_argument("--posts", type=int, default=200, help="posts per poster [200]")
    parser.add_argument("--posters", type=int, default=1, help="members that post P [1]")
    parser.add_argument("--window", type=int, default=8, help="posts in flight per poster [8]")
    parser.add_argument("--size", type=int, default=64, help="post bytes (>= 10) [64]")
    parser.add_argument(
        "--answer-timeout", type=float, default=10.0, help="seconds to wait for an answer [10]"
    )
    parser.add_argument(
        "--drain", type=float, default=20.0, help="seconds to wait for missing deliveries [20]"
    )
    parser.add_argument("--mysql", default=DEFAULT_MYSQL, help=f"MariaDB server [{DEFAULT_MYSQL}]")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help=f"Redis server [{DEFAULT_REDIS}]")


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.url or args.server_tree:
        raise SystemExit("rooms: starts its own cluster; --url and --server-tree are not supported")
    sizes_ok = args.members >= 2 and args.posts >= 1 and args.window >= 1
    if not sizes_ok or not 1 <= args.posters <= args.members:
        raise SystemExit("rooms: --members >= 2, --posts >= 1, --window >= 1, 1 <= --posters <= M")
    return {
        "members": args.members,
        "posts": args.posts,
        "posters": args.posters,
        "window": args.window,
        "size": max(args.size, TAG_DIGITS),
        "answer_timeout": args.answer_timeout,
        "drain": args.drain,
        "mysql": args.mysql,
        "redis": args.redis,
    }


def users_needed(params: dict[str, Any]) -> int:
    return params["members"]


def worker_count(params: dict[str, Any], requested: int) -> int:
    return max(1, min(requested, params["members"]))


def run(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Start the cluster, run the posts, stop it; the document's own parts."""
    cluster = bench_cluster(users_needed(params), params, args)
    # The bench's own config (no message limits) gets the room's size too; a --config
    # of --server-arg still comes after it.
    config = cluster.root / "rooms-bench.toml"
    config.write_text(NO_USER_LIMITS + f"\n[rooms]\nmax_members = {params['members']}\n")
    cluster.extra_args[cluster.extra_args.index("--config") + 1] = str(config)
    try:
        ids = cluster.start()
        target = cluster.target(ids)
        worker_params = dict(params, node_ports=[cluster.ports["node1"], cluster.ports["node2"]])
        count = worker_count(params, max(1, args.processes))
        workers = start_workers("rooms", worker_params, target, count, None, cluster.pids())
        try:
            outcome = coordinate(workers)
        finally:
            workers.close()
        for name, proc in cluster.procs.items():
            if not proc.running:
                raise BenchSetupError(f"{name} exited:\n{cluster.log(name)[-3000:]}")
    finally:
        exits = cluster.stop()
        if args.keep_server:
            print(f"cluster logs: {cluster.root}")
    outcome["target"] = {
        "throwaway": True,
        "database": cluster.db_name,
        "redis_prefix": cluster.redis_prefix,
        "ports": {"http": cluster.http_port, **cluster.ports},
    }
    outcome["server_exit"] = exits
    return outcome


# --------------------------------------------------------------------------------------
# Parent


def coordinate(run: Run) -> dict[str, Any]:
    p = run.params
    run.gather("ready", timeout=120 + 0.1 * p["members"])
    run.measure_start()
    run.broadcast("go")
    sent = [r for r in run.gather("sent", timeout=p["posts"] * p["answer_timeout"] + 60) if r]
    acked = sum(len(r["acks"]) for r in sent)
    run.broadcast({"acked": acked})
    reports = run.gather("result", timeout=p["drain"] + 60)
    server = run.measure_stop()
    run.broadcast(None)

    send_times: dict[str, float] = {}
    ack_latencies: list[float] = []
    last_ack = 0.0
    refused = 0
    for r in sent:
        send_times.update(r["send_times"])
        refused += r["refused"]
        for tag, at in r["acks"].items():
            ack_latencies.append(at - r["send_times"][tag])
            last_ack = max(last_ack, at)
    receivers = p["members"] - 1
    expected = acked * receivers
    delivered = sum(r["delivered"] for r in reports)
    arrivals: dict[str, list[float]] = {}
    for r in reports:
        for tag, times in r["arrivals"].items():
            arrivals.setdefault(tag, []).extend(times)
    latencies = [t - send_times[tag] for tag, times in arrivals.items() for t in times]
    fanouts = [max(times) - send_times[tag] for tag, times in arrivals.items()]
    start = min(send_times.values()) if send_times else None
    last = max((max(times) for times in arrivals.values()), default=None)
    seconds = last - start if last and start else None
    post_seconds = last_ack - start if last_ack and start else None
    results = {
        "members": p["members"],
        "posters": p["posters"],
        "posts_sent": len(send_times),
        "posts_acked": acked,
        "posts_refused": refused,
        "delivered": delivered,
        "expected_deliveries": expected,
        "lost": expected - delivered,
        "duplicated": sum(r["duplicated"] for r in reports),
        "dropped_members": sum(r["dropped"] for r in reports),
        "seconds": round(seconds, 4) if seconds else None,
        "posts_per_second": stats.rate(acked, post_seconds),
        "deliveries_per_second": stats.rate(delivered, seconds),
        "ack_latency": stats.latency_summary(ack_latencies),
        "delivery_latency": stats.latency_summary(latencies),
        "fanout": stats.latency_summary(fanouts),
    }
    client = stats.client_cpu(reports, max(r["wall"] for r in reports))
    rows = [
        (
            "members (2 nodes), posters, posts, window",
            f"{p['members']}, {p['posters']}, {p['posts']} each, W={p['window']}",
        ),
        ("posts acked / refused", f"{acked} / {refused}"),
        ("posts/s", results["posts_per_second"]),
        ("deliveries", f"{delivered} of {expected}"),
        ("deliveries/s", results["deliveries_per_second"]),
        ("lost / duplicated", f"{results['lost']} / {results['duplicated']}"),
        ("members dropped as slow", results["dropped_members"]),
        *stats.cpu_rows(client, None),
        *_server_rows(server),
        ("server CPU", _cpu_line(server)),
    ]
    table = stats.render_table(
        "rooms",
        rows,
        [
            ("post ack", results["ack_latency"]),
            ("delivery", results["delivery_latency"]),
            ("fan-out (last member)", results["fanout"]),
        ],
    )
    ok = results["lost"] == 0 and results["duplicated"] == 0 and refused == 0 and acked > 0
    return {"results": results, "client": client, "server": server, "table": table, "ok": ok}


# --------------------------------------------------------------------------------------
# Workers


async def _join(conn: BenchConnection, timeout: float) -> None:
    """Opt in to rooms and join the bench room; BenchError if either is refused."""
    hello = X.IMExtHelloReq(features=["rooms"], version=1).SerializeToString()
    answer = X.IMExtHelloRsp.FromString(await conn.ask(X.CID_EXT_HELLO_REQ, hello, timeout))
    if "rooms" not in answer.features:
        raise BenchError("the server does not offer rooms")
    join = X.IMExtRoomJoinReq(room_id=ROOM_ID).SerializeToString()
    joined = X.IMExtRoomJoinRsp.FromString(await conn.ask(X.CID_EXT_ROOM_JOIN_REQ, join, timeout))
    if joined.result_code != X.EXT_RESULT_OK:
        raise BenchError(f"join refused: result code {joined.result_code}")


async def worker(ctx: WorkerContext) -> None:
    p, t, reactor = ctx.params, ctx.target, ctx.reactor
    ports = p["node_ports"]
    indexes = list(ctx.share(p["members"]))
    arrivals: dict[str, list[float]] = {}
    counts = {"delivered": 0, "duplicated": 0, "dropped": 0}
    expected = [0]
    all_in: defer.Deferred = defer.Deferred()

    def receiver() -> Any:
        seen: set[str] = set()

        def on_post(seq: int, body: bytes) -> None:
            now = time.monotonic()
            post = X.IMExtRoomPostNotify.FromString(body)
            tag = post.content[:TAG_DIGITS].decode()
            if tag in seen:
                counts["duplicated"] += 1
                return
            seen.add(tag)
            arrivals.setdefault(tag, []).append(now)
            counts["delivered"] += 1
            if expected[0] and counts["delivered"] >= expected[0]:
                fire_once(all_in)

        return on_post

    def on_removed(seq: int, body: bytes) -> None:
        counts["dropped"] += 1

    async def open_member(index: int) -> BenchConnection:
        port = ports[index % len(ports)]
        conn = await open_logged_in(reactor, t.host, port, t.user_name(index), t.password, PC)
        conn.on(B.CID_BUDDY_LIST_STATUS_NOTIFY, lambda seq, body: None)
        conn.on(X.CID_EXT_ROOM_POST_NOTIFY, receiver())
        conn.on(X.CID_EXT_ROOM_REMOVED_NOTIFY, on_removed)
        await _join(conn, p["answer_timeout"])
        return conn

    opened = await bounded(indexes, 32, open_member)
    failures = [c for c in opened if isinstance(c, BaseException)]
    if failures:
        raise BenchError(f"{len(failures)} members failed to join, first: {failures[0]!r}")
    conns: dict[int, BenchConnection] = dict(zip(indexes, opened, strict=True))
    await ctx.sync("ready", None)

    cpu0 = stats.process_cpu_seconds()
    t_armed = time.monotonic()
    posters = [i for i in indexes if i < p["posters"]]
    reports = await defer.gatherResults(
        [defer.ensureDeferred(_post_all(conns[i], i, p)) for i in posters]
    )
    sent: dict[str, Any] | None = None
    if reports:
        sent = {"send_times": {}, "acks": {}, "refused": 0}
        for r in reports:
            sent["send_times"].update(r["send_times"])
            sent["acks"].update(r["acks"])
            sent["refused"] += r["refused"]
    answer = await ctx.sync("sent", sent)
    # Every post reaches every member connection here but its own poster's.
    expected[0] = sum(
        answer["acked"] - sum(1 for tag in (sent or {}).get("acks", {}) if _poster(tag) == i)
        for i in indexes
    )
    if expected[0] and counts["delivered"] < expected[0]:
        timer = reactor.callLater(p["drain"], lambda: fire_once(all_in))
        await all_in
        if timer.active():
            timer.cancel()
    await ctx.sync(
        "result",
        {
            **counts,
            "arrivals": arrivals,
            "cpu_seconds": stats.process_cpu_seconds() - cpu0,
            "wall": time.monotonic() - t_armed,
        },
    )
    for conn in conns.values():
        conn.close()


def _tag(poster: int, number: int) -> str:
    return f"{poster:04d}{number:06d}"


def _poster(tag: str) -> int:
    return int(tag[:4])


async def _post_all(conn: BenchConnection, poster: int, p: dict[str, Any]) -> dict[str, Any]:
    """Post ``p["posts"]`` posts, ``p["window"]`` unanswered at a time; send and ack times
    by tag, and how many were refused."""
    filler = b"r" * (p["size"] - TAG_DIGITS)
    send_times: dict[str, float] = {}
    acks: dict[str, float] = {}
    state = {"next": 0, "outstanding": 0, "refused": 0}
    done: defer.Deferred = defer.Deferred()

    def send_next() -> None:
        if state["next"] >= p["posts"]:
            if state["outstanding"] == 0:
                fire_once(done)
            return
        tag = _tag(poster, state["next"])
        state["next"] += 1
        state["outstanding"] += 1
        body = X.IMExtRoomPostReq(
            room_id=ROOM_ID, content=tag.encode() + filler, msg_type=B.MSG_TYPE_GROUP_TEXT
        ).SerializeToString()
        send_times[tag] = time.monotonic()
        conn.request(X.CID_EXT_ROOM_POST_REQ, body, lambda cid, answer: on_ack(tag, cid, answer))

    def on_ack(tag: str, cid: int, body: bytes) -> None:
        state["outstanding"] -= 1
        if cid and X.IMExtRoomPostAck.FromString(body).result_code == X.EXT_RESULT_OK:
            acks[tag] = time.monotonic()
        else:
            state["refused"] += 1
        send_next()

    for _ in range(min(p["window"], p["posts"])):
        send_next()
    await done
    return {"send_times": send_times, "acks": acks, "refused": state["refused"]}
