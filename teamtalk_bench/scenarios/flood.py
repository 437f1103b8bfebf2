"""flood: other users' ack latency while hostile clients flood, with the limits on.

K ordinary pairs chat (each user sends its peer one small message every ``--interval``,
one in flight, well under the 20 a second limit) for ``--quiet`` seconds alone, then for
``--seconds`` while H hostile clients (``--hostile``; separate processes,
``teamtalk_bench/flood_client.py``) send 60 KB messages to an offline user as fast as the
socket takes them: the even ones read their acks, the odd ones never read anything (a
slow reader as well). Reported: the ordinary users' ack latency without and during the
flood, their messages sent / acked / refused / lost and delivered, each flooder's sent
and accepted per second, whether it was disconnected (its connections), whether its
accepted count stayed within the burst and the rate, server RSS and the load average.

Unlike the other scenarios the throwaway server keeps its default per-user limits
(``USER_LIMITS``): the figure is what the limits and per-connection fairness leave others.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from twisted.internet import defer

from teamtalk_bench import stats
from teamtalk_bench.conn import PC, BenchConnection, open_logged_in
from teamtalk_bench.workers import Run, WorkerContext, WorkerError
from teamtalk_py.config import MsgConfig
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2

#: The throwaway server keeps its per-user message limits (see ``__main__.run_scenario``).
USER_LIMITS = True
#: The bound issue 11 sets for other users' p99 while one connection floods.
P99_BOUND_MS = 100.0
MODES = ("flood", "stall")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=4, help="ordinary chatting pairs [4]")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.07,
        help="seconds between one ordinary user's messages [0.07]",
    )
    parser.add_argument(
        "--hostile",
        type=int,
        default=2,
        help="hostile clients: the 1st, 3rd, … flood and read; the others never read [2]",
    )
    parser.add_argument("--quiet", type=float, default=3.0, help="seconds of chat alone [3]")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds of chat during the flood [10]"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds the flood runs before the chat is measured [1]",
    )
    parser.add_argument(
        "--drain", type=float, default=10.0, help="seconds to wait for a missing ack [10]"
    )
    defaults = MsgConfig()
    parser.add_argument(
        "--limit-rate",
        type=float,
        default=defaults.message_rate,
        help=f"the server's messages a second per user, for the throttle check "
        f"[{defaults.message_rate:g}]",
    )
    parser.add_argument(
        "--limit-burst",
        type=int,
        default=defaults.message_burst,
        help=f"the server's burst per user, for the throttle check [{defaults.message_burst}]",
    )


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.pairs < 1 or args.hostile < 0 or args.interval <= 0 or args.seconds <= 0:
        raise SystemExit("flood: --pairs >= 1, --hostile >= 0, --interval and --seconds > 0")
    return {
        "pairs": args.pairs,
        "interval": args.interval,
        "hostile": args.hostile,
        "quiet": max(0.0, args.quiet),
        "seconds": args.seconds,
        "settle": max(0.0, args.settle),
        "drain": args.drain,
        "limit_rate": args.limit_rate,
        "limit_burst": args.limit_burst,
    }


def users_needed(params: dict[str, Any]) -> int:
    # 2K ordinary users, H hostile ones, and the offline user they flood
    return 2 * params["pairs"] + params["hostile"] + 1


def worker_count(params: dict[str, Any], requested: int) -> int:
    return max(1, min(requested, params["pairs"]))


# --------------------------------------------------------------------------------------
# Parent


def coordinate(run: Run) -> dict[str, Any]:
    p, t = run.params, run.target
    ready = run.gather("ready", timeout=60 + 0.1 * users_needed(p))
    victim_id = next(r["victim_id"] for r in ready if r["victim_id"])
    run.measure_start()
    run.broadcast("go")
    quiet = run.gather("quiet", timeout=p["quiet"] + p["drain"] + 60)
    server_stats = run.server_stats
    rss_before_flood = server_stats.rss_kb()
    load_quiet = os.getloadavg()
    duration = p["settle"] + p["seconds"] + 0.5  # the flood outlasts the measured chat
    flooders = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "teamtalk_bench.flood_client",
                str(t.port),
                t.user_name(2 * p["pairs"] + h),
                t.password,
                str(victim_id),
                str(duration),
                MODES[h % 2],
                t.host,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for h in range(p["hostile"])
    ]
    try:
        time.sleep(p["settle"])
        run.broadcast("go")
        during = run.gather("flood", timeout=p["seconds"] + 2 * p["drain"] + 60)
        load_flood = os.getloadavg()
        rss_after_flood = server_stats.rss_kb()
        outputs = [proc.communicate(timeout=duration + 60)[0] for proc in flooders]
    finally:
        for proc in flooders:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    server = run.measure_stop()
    run.broadcast(None)
    server.update(
        rss_kb_before_flood=rss_before_flood,
        rss_kb_after_flood=rss_after_flood,
        rss_kb_peak=server_stats.hwm_kb(),
    )
    for h, (proc, out) in enumerate(zip(flooders, outputs, strict=True)):
        if proc.returncode != 0 or not out.strip():
            raise WorkerError(f"hostile client {h} failed (exit {proc.returncode})")
    hostile = [_flooder_result(h, json.loads(out), duration, p) for h, out in enumerate(outputs)]
    phases = {"quiet": _phase_totals(quiet), "flood": _phase_totals(during)}
    delivered = sum(r["delivered"] for r in during)
    acked = phases["quiet"]["acked"] + phases["flood"]["acked"]
    sent = phases["quiet"]["sent"] + phases["flood"]["sent"]
    p99 = phases["flood"]["ack_latency"]["p99_ms"]
    results: dict[str, Any] = {
        "ordinary": {
            **phases,
            "delivered": delivered,
            "all_acked_and_delivered": acked == sent == delivered,
        },
        "hostile": hostile,
        "flood_p99_within_bound": p99 is not None and p99 < P99_BOUND_MS,
        "loadavg_quiet": [round(x, 2) for x in load_quiet],
        "loadavg_flood": [round(x, 2) for x in load_flood],
    }
    wall = max(r["wall"] for r in quiet) + max(r["wall"] for r in during)
    client = stats.client_cpu(
        [
            {"cpu_seconds": a["cpu_seconds"] + b["cpu_seconds"]}
            for a, b in zip(quiet, during, strict=True)
        ],
        wall,
    )
    rows: list[tuple[str, Any]] = [
        ("ordinary pairs, interval", f"{p['pairs']}, {p['interval'] * 1000:g} ms"),
    ]
    for name, phase in phases.items():
        rows.append(
            (
                f"{name}: sent / acked / refused / lost",
                f"{phase['sent']} / {phase['acked']} / {phase['refused']} / {phase['lost']}",
            )
        )
    rows.append(("delivered == sent", "yes" if acked == sent == delivered else
                 f"NO: {delivered} delivered, {acked} acked of {sent}"))  # fmt: skip
    for f in hostile:
        rows.append(
            (
                f"hostile {f['index']} ({f['mode']}): sent/s, accepted/s",
                f"{f['sent_per_second']:g}, {f['accepted_per_second']:g}",
            )
        )
        rows.append(
            (
                f"hostile {f['index']}: connections, within limit",
                f"{f['connections']} ({'disconnected' if f['disconnected'] else 'never closed'}), "
                f"{'yes' if f['accepted_within_limit'] else 'NO'}",
            )
        )
    rows += [
        (f"flood p99 < {P99_BOUND_MS:g} ms", "yes" if results["flood_p99_within_bound"] else "NO"),
        ("server RSS before / after flood", _mib(rss_before_flood, rss_after_flood)),
        ("server RSS peak", _mib(server["rss_kb_peak"])),
        ("load average (quiet, flood)", f"{load_quiet[0]:.2f}, {load_flood[0]:.2f}"),
        *stats.cpu_rows(client, server),
    ]
    table = stats.render_table(
        "flood",
        rows,
        [
            ("ack, no flood", phases["quiet"]["ack_latency"]),
            ("ack, during flood", phases["flood"]["ack_latency"]),
        ],
    )
    ok = (
        phases["quiet"]["lost"] == phases["flood"]["lost"] == 0
        and phases["quiet"]["refused"] == phases["flood"]["refused"] == 0
        and results["ordinary"]["all_acked_and_delivered"]
        and all(f["accepted_within_limit"] for f in hostile)
    )
    return {"results": results, "client": client, "server": server, "table": table, "ok": ok}


def _mib(*kbs: int | None) -> str:
    return " / ".join(f"{kb / 1024:.1f} MiB" if kb is not None else "-" for kb in kbs)


def _phase_totals(reports: list[dict[str, Any]]) -> dict[str, Any]:
    totals = {k: sum(r[k] for r in reports) for k in ("sent", "acked", "refused", "lost")}
    latencies = [x for r in reports for x in r["latencies"]]
    return {**totals, "ack_latency": stats.latency_summary(latencies)}


def _flooder_result(
    index: int, report: dict[str, Any], duration: float, p: dict[str, Any]
) -> dict[str, Any]:
    """One hostile client's figures; ``accepted_within_limit``: its accepted messages up
    to the end of every second stayed within the burst plus the rate (2 of slack for a
    second's edge), as the abuse test checks."""
    by_second = {int(k): v for k, v in report["accepted_by_second"].items()}
    accepted = 0
    worst = float("-inf")
    for second in range(int(duration) + 1):
        accepted += by_second.get(second, 0)
        worst = max(worst, accepted - (p["limit_burst"] + p["limit_rate"] * (second + 1)))
    return {
        "index": index,
        "mode": MODES[index % 2],
        "sent": report["sent"],
        "accepted": report["accepted"],
        "sent_per_second": stats.rate(report["sent"], duration),
        "accepted_per_second": stats.rate(report["accepted"], duration),
        "accepted_by_second": by_second,
        "connections": report["connections"],
        "disconnected": report["connections"] > 1,
        "most_over_limit": worst,
        "accepted_within_limit": worst <= 2,
    }


# --------------------------------------------------------------------------------------
# Worker


class _Phase:
    """One chatter's counts over one phase; answers after the phase gave up are ignored."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.sent = self.acked = self.refused = self.lost = 0
        self.closed = False
        self.done: defer.Deferred[None] = defer.Deferred()


class Chatter:
    """One ordinary user sending its peer a small message every ``interval``, one in
    flight (the next goes ``interval`` after the last was sent, or at once when its ack
    came later), and counting what the peer sends it."""

    def __init__(
        self, reactor: Any, me: BenchConnection, peer: BenchConnection, interval: float
    ) -> None:
        self.reactor = reactor
        self.me = me
        self.interval = interval
        self.peer_id = peer.user_id
        self.message = Message_pb2.IMMsgData(
            from_user_id=me.user_id,
            to_session_id=peer.user_id,
            msg_id=0,
            create_time=0,
            msg_type=B.MSG_TYPE_SINGLE_TEXT,
            msg_data=b"",
        )
        self.delivery_ack = Message_pb2.IMMsgDataAck(
            user_id=me.user_id, session_id=peer.user_id, msg_id=0,
            session_type=B.SESSION_TYPE_SINGLE,
        )  # fmt: skip
        self.delivered = 0
        self.count = 0
        self.phase = _Phase()
        me.on(B.CID_MSG_DATA, self.on_delivery)

    def on_delivery(self, seq: int, body: bytes) -> None:
        message = Message_pb2.IMMsgData.FromString(body)
        if message.from_user_id != self.peer_id:
            return
        self.delivered += 1
        self.delivery_ack.msg_id = message.msg_id
        self.me.send(B.CID_MSG_DATA_ACK, self.delivery_ack.SerializeToString())

    def run(self, duration: float, offset: float, drain: float) -> defer.Deferred[None]:
        phase = _Phase()
        end = time.monotonic() + offset + duration

        def finish() -> None:
            if not phase.closed:
                phase.closed = True
                phase.done.callback(None)

        def send() -> None:
            if time.monotonic() >= end or not self.me.open:
                finish()
                return
            self.count += 1
            phase.sent += 1
            self.message.create_time = int(time.time())
            self.message.msg_data = b"hello %d" % self.count
            sent_at = time.monotonic()
            give_up = self.reactor.callLater(drain, expire)

            def answered(cid: int, body: bytes) -> None:
                now = time.monotonic()
                if phase.closed:
                    return
                if give_up.active():
                    give_up.cancel()
                if cid == 0:
                    phase.lost += 1  # the connection went away
                    finish()
                    return
                if Message_pb2.IMMsgDataAck.FromString(body).msg_id == 0:
                    phase.refused += 1
                else:
                    phase.acked += 1
                    phase.latencies.append(now - sent_at)
                self.reactor.callLater(max(0.0, sent_at + self.interval - now), send)

            self.me.request(B.CID_MSG_DATA, self.message.SerializeToString(), answered)

        def expire() -> None:
            phase.lost += 1  # no ack within the drain time
            finish()

        self.phase = phase
        self.reactor.callLater(offset, send)
        return phase.done


async def worker(ctx: WorkerContext) -> None:
    p, t, reactor = ctx.params, ctx.target, ctx.reactor
    chatters: list[Chatter] = []
    conns: list[BenchConnection] = []
    for pair in ctx.share(p["pairs"]):
        a = await open_logged_in(reactor, t.host, t.port, t.user_name(2 * pair), t.password, PC)
        b = await open_logged_in(reactor, t.host, t.port, t.user_name(2 * pair + 1), t.password, PC)
        conns += [a, b]
        chatters += [Chatter(reactor, a, b, p["interval"]), Chatter(reactor, b, a, p["interval"])]
    victim_id = None
    if ctx.index == 0:  # the flooders' target: its id, then offline
        victim = await open_logged_in(
            reactor, t.host, t.port, t.user_name(users_needed(p) - 1), t.password, PC
        )
        victim_id = victim.user_id
        victim.close()

    async def phase(seconds: float) -> dict[str, Any]:
        cpu0, t0 = stats.process_cpu_seconds(), time.monotonic()
        # staggered over one interval, as people are not in step
        await defer.gatherResults(
            [
                c.run(seconds, i * p["interval"] / len(chatters), p["drain"])
                for i, c in enumerate(chatters)
            ]
        )
        report: dict[str, Any] = {
            "latencies": [x for c in chatters for x in c.phase.latencies],
            **{
                k: sum(getattr(c.phase, k) for c in chatters)
                for k in ("sent", "acked", "refused", "lost")
            },
            "wall": time.monotonic() - t0,
        }
        report["cpu_seconds"] = stats.process_cpu_seconds() - cpu0
        return report

    await ctx.sync("ready", {"victim_id": victim_id})
    quiet = await phase(p["quiet"])
    await ctx.sync("quiet", quiet)
    during = await phase(p["seconds"])
    # the last deliveries may trail their acks
    acked = quiet["acked"] + during["acked"]
    deadline = time.monotonic() + p["drain"]
    while sum(c.delivered for c in chatters) < acked and time.monotonic() < deadline:
        await ctx.sleep(0.05)
    during["delivered"] = sum(c.delivered for c in chatters)
    await ctx.sync("flood", during)
    for conn in conns:
        conn.close()
