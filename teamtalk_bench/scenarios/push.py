"""push: what offline push costs the message path, and how fast the queue drains.

The bench starts its own throwaway servers and a push_server sink (TeamTalk's push_server
on the PDU layer, in this process: heartbeats echoed, every ``CID_OTHER_PUSH_TO_USER_REQ``
answered ``result_code 0`` and timed). Every receiver has an iOS device token, so every
message is pushed. Phases:

1. ``msg_push_off``: the msg scenario's pairs on a server without push;
2. ``msg_push_on``: the same pairs on a server pushing to the sink (each message stored
   with its outbox row, decided, queued and sent while the pairs run); acked msg/s of
   1 and 2 give the cost of push;
3. ``queue_store`` and 4. ``queue_redis``: ``--queue-messages`` messages are sent while
   the sink is closed (the pushes pile up in the queue, retried), then the sink opens and
   the drain is timed from its first push to its last: pushes/s through the embedded
   queue (the store's table) and through Redis Streams (``--redis``, a key prefix of the
   run, deleted after).

``--repeat N`` runs phases 1 and 2 N times, alternating which goes first, each pair on
fresh servers back to back: on a shared machine one pair's change swings by tens of
percent with the load, so the table gives the mean change over the pairs with its
standard error and the spread (phases 1 and 2 of the JSON stay the first pair's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import socketserver
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from teamtalk_bench import stats
from teamtalk_bench.scenarios import msg
from teamtalk_bench.server import DEFAULT_REDIS, LOOPBACK, BenchSetupError, ThrowawayServer
from teamtalk_bench.workers import start_workers
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Server_pb2
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader, pack_pdu
from teamtalk_testing.metrics import metric_value

worker = msg.worker

PHASES = ("msg_push_off", "msg_push_on", "queue_store", "queue_redis")
TOKEN = "{:064x}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    msg.add_arguments(parser)
    parser.add_argument(
        "--queue-messages", type=int, default=5000, help="pushes piled up for the drain [5000]"
    )
    parser.add_argument(
        "--redis",
        default=DEFAULT_REDIS,
        help=f"Redis server for the Streams queue (a key prefix of the run) [{DEFAULT_REDIS}]",
    )
    parser.add_argument("--skip-redis", action="store_true", help="no Redis Streams phase")
    parser.add_argument("--skip-queue", action="store_true", help="no queue drain phases (3 and 4)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="push off/on pairs of the msg phases, alternating their order: the change "
        "is given as mean, standard error and spread over the pairs [1]",
    )
    parser.add_argument(
        "--token-share",
        type=float,
        default=1.0,
        help="share of receivers with an iOS token in the msg phases (0: push on, nobody "
        "to push: the cost every message pays) [1.0]",
    )


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.url or args.server_tree:
        raise SystemExit("push: starts its own servers; --url/--server-tree are not supported")
    params = msg.params_from(args)
    # Real clients' AES text: the push text is decrypted from it (wire.md §6.1).
    params["encrypted"] = True
    params.update(
        queue_messages=max(1, args.queue_messages),
        redis=args.redis,
        skip_redis=args.skip_redis,
        skip_queue=args.skip_queue,
        repeat=max(1, args.repeat),
        token_share=min(1.0, max(0.0, args.token_share)),
    )
    return params


def users_needed(params: dict[str, Any]) -> int:
    return 2 * params["pairs"]


def worker_count(params: dict[str, Any], requested: int) -> int:
    return msg.worker_count(params, requested)


# --------------------------------------------------------------------------------------
# The push_server sink


class _SinkHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sink: PushSink = self.server.sink  # type: ignore[attr-defined]
        buffer = b""
        conn = self.request
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
            while len(buffer) >= HEADER_SIZE:
                header = PduHeader.unpack_from(buffer)
                if len(buffer) < header.length:
                    break
                pdu, buffer = buffer[: header.length], buffer[header.length :]
                if header.command_id == B.CID_OTHER_HEARTBEAT:
                    conn.sendall(pdu)
                elif header.command_id == B.CID_OTHER_PUSH_TO_USER_REQ:
                    request = Server_pb2.IMPushToUserReq.FromString(pdu[HEADER_SIZE:])
                    answer = Server_pb2.IMPushToUserRsp()
                    for info in request.user_token_list:
                        answer.push_result_list.add(user_token=info.token, result_code=0)
                    conn.sendall(
                        pack_pdu(
                            B.SID_OTHER, B.CID_OTHER_PUSH_TO_USER_RSP, answer.SerializeToString()
                        )
                    )
                    sink.record(len(request.user_token_list))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class PushSink:
    """A push_server that answers everything and counts; ``open()``/``close()``."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            self.port = s.getsockname()[1]
        self._server: _Server | None = None
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.first: float | None = None
            self.last: float | None = None

    def record(self, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.count += n
            self.first = self.first or now
            self.last = now

    def open(self) -> None:
        self._server = _Server((LOOPBACK, self.port), _SinkHandler)
        self._server.sink = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --------------------------------------------------------------------------------------
# Servers


#: The bench measures throughput: the per-user message limits (on by default) are off.
NO_LIMITS = "[msg]\nmessage_rate = 0\nmax_bytes_per_day = 0\n"


def _config(root: Path, name: str, push: str = "") -> Path:
    """A config file: no per-user limits, and ``push`` (the [push] keys) if given."""
    path = root / name
    path.write_text(NO_LIMITS + (f"[push]\n{push}" if push else ""))
    return path


def _push_config(root: Path, sink: PushSink, name: str = "push.toml", extra: str = "") -> Path:
    return _config(
        root,
        name,
        f'push_server = "{LOOPBACK}:{sink.port}"\n'
        # A queue that only retries quickly: the drain phases pile pushes up on purpose.
        "retry_base = 0.2\nretry_cap = 1.0\nmax_attempts = 1000\nmax_age = 86400.0\n"
        "max_in_flight = 256\n" + extra,
    )


def _give_tokens(data_dir: str, user_ids: list[int], share: float = 1.0) -> None:
    """An iOS token for ``share`` of the receivers (odd user indexes), written to the
    running server's SQLite store as a mobile client's token request would."""
    from teamtalk_py.store import accounts
    from teamtalk_py.store.database import open_database

    db = open_database(None, Path(data_dir), reactor=None)
    with db.sync_transaction() as txn:
        receivers = [u for index, u in enumerate(user_ids) if index % 2 == 1]
        for user_id in receivers[: round(share * len(receivers))]:
            accounts.set_device_token(txn, user_id, B.CLIENT_TYPE_IOS, TOKEN.format(user_id))


def _run_pairs(
    params: dict[str, Any],
    args: argparse.Namespace,
    server: ThrowawayServer,
    profile: str | None = None,
) -> dict[str, Any]:
    target = server.start()
    _give_tokens(str(target.data_dir), list(target.user_ids or []), params.get("token_share", 1))
    count = worker_count(params, max(1, args.processes))
    workers = start_workers("push", params, target, count, profile, {"server": target.pid or 0})
    before = _store_writes(server)
    try:
        outcome = msg.coordinate(workers)
    finally:
        workers.close()
    after = _store_writes(server)
    outcome.pop("table")
    if before is not None and after is not None:
        # The store's group commits and writer jobs while the pairs ran: each COMMIT is an
        # fsync the acks behind it wait for, a steadier figure than msg/s on a busy box.
        outcome["store"] = {"commits": after[0] - before[0], "jobs": after[1] - before[1]}
    return outcome


def _store_writes(server: ThrowawayServer) -> tuple[int, int] | None:
    """(group commits, writer jobs) so far, from the server's /metrics."""
    if not server.server.ops:
        return None
    port = server.server.ops_port
    commits = metric_value(port, "teamtalk_store_batch_size_count")
    jobs = metric_value(port, "teamtalk_store_batch_size_sum")
    return (int(commits), int(jobs)) if commits is not None and jobs is not None else None


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchSetupError(f"push: timed out waiting for {what}")
        time.sleep(0.05)


def _drain(
    params: dict[str, Any], args: argparse.Namespace, sink: PushSink, extra: list[str]
) -> dict[str, Any]:
    """Pile ``queue_messages`` pushes up with the sink closed, open it, time the drain."""
    n = params["queue_messages"]
    pairs = min(params["pairs"], n)
    phase = dict(params, pairs=pairs, messages=max(1, n // pairs), delivery_ack=True)
    total = phase["pairs"] * phase["messages"]
    sink.close()
    sink.reset()
    server = ThrowawayServer(
        users_needed(phase), prefix=args.user_prefix, password=args.password,
        extra_args=[*(args.server_arg or []), *extra],
    )  # fmt: skip
    try:
        outcome = _run_pairs(phase, args, server)
        time.sleep(1.0)  # the last pushes decided and queued
        sink.open()
        _wait(lambda: sink.count >= total, 300, f"{total} pushes")
        time.sleep(1.0)
        elapsed = (sink.last or 0) - (sink.first or 0)
        return {
            "messages_acked": outcome["results"]["acked"],
            "pushes": sink.count,
            "drain_seconds": round(elapsed, 3),
            "pushes_per_second": round(sink.count / elapsed) if elapsed > 0 else None,
        }
    finally:
        server.stop()


def _msg_phase(
    params: dict[str, Any],
    args: argparse.Namespace,
    sink: PushSink,
    config: Path,
    push_on: bool,
    profile: str | None = None,
) -> dict[str, Any]:
    """One msg phase on a fresh server with ``config``; push on: the pushes the sink got."""
    sink.reset()
    server = ThrowawayServer(
        users_needed(params), prefix=args.user_prefix, password=args.password,
        extra_args=[*(args.server_arg or []), "--config", str(config)],
    )  # fmt: skip
    load = os.getloadavg()[0]
    try:
        outcome = _run_pairs(params, args, server, profile)
        if push_on:
            time.sleep(2.0)  # the last decisions and sends
            outcome["pushes"] = sink.count
    finally:
        server.stop()
    outcome["load_before"] = round(load, 2)
    return outcome


def _pair_figures(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    """One off/on pair: msg/s, its change, server CPU per message, load before each."""
    off_rate = off["results"]["acked_per_second"]
    on_rate = on["results"]["acked_per_second"]
    return {
        "off_per_second": off_rate,
        "on_per_second": on_rate,
        "change_percent": round(100.0 * (on_rate - off_rate) / off_rate, 1)
        if off_rate and on_rate is not None
        else None,
        "cpu_ms_off": _cpu_ms(off),
        "cpu_ms_on": _cpu_ms(on),
        "load_before": [off["load_before"], on["load_before"]],
    }


def _cpu_ms(phase: dict[str, Any]) -> float | None:
    seconds = phase["server"].get("cpu_seconds")
    acked = phase["results"]["acked"]
    return round(1000.0 * seconds / acked, 4) if seconds is not None and acked else None


def run(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    sink = PushSink()
    sink.open()
    phases: dict[str, dict[str, Any]] = {}
    pairs: list[dict[str, Any]] = []
    config_dir = tempfile.mkdtemp(prefix="teamtalk-bench-push-")
    try:
        off_config = _config(Path(config_dir), "off.toml")
        on_config = _push_config(Path(config_dir), sink)
        for index in range(params["repeat"]):
            # --profile: py-spy on the first push-on server.
            profile = args.profile if index == 0 else None
            if index % 2 == 0:
                off = _msg_phase(params, args, sink, off_config, False)
                on = _msg_phase(params, args, sink, on_config, True, profile)
            else:
                on = _msg_phase(params, args, sink, on_config, True)
                off = _msg_phase(params, args, sink, off_config, False)
            if index == 0:
                phases["msg_push_off"], phases["msg_push_on"] = off, on
            pairs.append(_pair_figures(off, on))
        if not params["skip_queue"]:
            drain_params = dict(params, token_share=1.0)
            # Every message pushed: the drains count pushes through the queue, not
            # coalescing.
            config = _push_config(Path(config_dir), sink, "drain.toml", "coalesce_window = 0\n")
            phases["queue_store"] = _drain(drain_params, args, sink, ["--config", str(config)])
            if not params["skip_redis"]:
                from teamtalk_testing.scratch import ScratchRedisPrefix

                redis = ScratchRedisPrefix(params["redis"], "tt_bench")
                try:
                    phases["queue_redis"] = _drain(
                        drain_params, args, sink, ["--config", str(config), "--redis", redis.url]
                    )
                finally:
                    redis.drop()
    finally:
        sink.close()
        shutil.rmtree(config_dir, ignore_errors=True)
    return _document(params, phases, pairs)


def _paired_summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard error, median and range of the change over the pairs; mean CPU."""
    changes = [p["change_percent"] for p in pairs if p["change_percent"] is not None]
    cpu = [(p["cpu_ms_off"], p["cpu_ms_on"]) for p in pairs]
    cpu = [(a, b) for a, b in cpu if a is not None and b is not None]
    summary: dict[str, Any] = {"pairs": len(pairs)}
    if changes:
        summary.update(
            change_mean_percent=round(statistics.mean(changes), 1),
            change_stderr_percent=round(statistics.stdev(changes) / len(changes) ** 0.5, 1)
            if len(changes) > 1
            else None,
            change_median_percent=round(statistics.median(changes), 1),
            change_range_percent=[min(changes), max(changes)],
        )
    if cpu:
        # Per pair: a steadier figure than msg/s (the load moves both phases' CPU less
        # than their rates), still lower per message when a phase ran faster.
        extra = [100.0 * (b - a) / a for a, b in cpu if a]
        summary.update(
            cpu_ms_off_mean=round(statistics.mean(a for a, _ in cpu), 4),
            cpu_ms_on_mean=round(statistics.mean(b for _, b in cpu), 4),
            cpu_change_mean_percent=round(statistics.mean(extra), 1) if extra else None,
            cpu_change_stderr_percent=round(statistics.stdev(extra) / len(extra) ** 0.5, 1)
            if len(extra) > 1
            else None,
        )
    return summary


def _document(
    params: dict[str, Any], phases: dict[str, dict[str, Any]], pairs: list[dict[str, Any]]
) -> dict[str, Any]:
    off, on = phases["msg_push_off"]["results"], phases["msg_push_on"]["results"]

    def cpu_ms_per_message(phase: str) -> float | None:
        seconds = phases[phase]["server"].get("cpu_seconds")
        acked = phases[phase]["results"]["acked"]
        return round(1000.0 * seconds / acked, 3) if seconds is not None and acked else None

    def commits_per_1000(phase: str) -> float | None:
        store = phases[phase].get("store")
        acked = phases[phase]["results"]["acked"]
        return round(1000.0 * store["commits"] / acked, 1) if store and acked else None

    off_rate, on_rate = off["acked_per_second"], on["acked_per_second"]
    change = round(100.0 * (on_rate - off_rate) / off_rate, 1) if off_rate else None
    rows: list[tuple[str, Any]] = [
        (
            "pairs x messages, window",
            f"{params['pairs']} x {params['messages']}, W={params['window']}",
        ),  # fmt: skip
        ("acked msg/s, push off", off_rate),
        ("acked msg/s, push on", on_rate),
        ("change with push", f"{change}%" if change is not None else "-"),
        (
            "server CPU ms/message, off / on",
            f"{cpu_ms_per_message('msg_push_off')} / {cpu_ms_per_message('msg_push_on')}",
        ),
        (
            "store commits per 1000 msgs, off / on",
            f"{commits_per_1000('msg_push_off')} / {commits_per_1000('msg_push_on')}",
        ),
        ("receivers with a token", f"{params['token_share']:.0%}"),
        ("pushes in the push-on phase", phases["msg_push_on"].get("pushes")),
        (
            "lost / duplicated (off, on)",
            f"{off['lost']} / {off['duplicated']}, {on['lost']} / {on['duplicated']}",
        ),  # fmt: skip
    ]
    paired = _paired_summary(pairs)
    if len(pairs) > 1:
        rows += [
            (
                f"change with push over {len(pairs)} pairs",
                f"mean {paired.get('change_mean_percent')}% "
                f"(standard error {paired.get('change_stderr_percent')}), "
                f"median {paired.get('change_median_percent')}%, "
                f"range {paired.get('change_range_percent')}",
            ),
            (
                "server CPU ms/message over the pairs, off / on",
                f"{paired.get('cpu_ms_off_mean')} / {paired.get('cpu_ms_on_mean')}, change "
                f"{paired.get('cpu_change_mean_percent')}% "
                f"(standard error {paired.get('cpu_change_stderr_percent')})",
            ),
        ]
    for name in ("queue_store", "queue_redis"):
        if name in phases:
            q = phases[name]
            rows.append(
                (
                    f"{name}: pushes/s",
                    f"{q['pushes_per_second']} ({q['pushes']} in {q['drain_seconds']} s)",
                )  # fmt: skip
            )
    table = stats.render_table(
        "push",
        rows,
        [("ack, push off", off["ack_latency"]), ("ack, push on", on["ack_latency"])],
    )
    return {
        "results": {
            "push_off": off,
            "push_on": on,
            "acked_change_percent": change,
            "server_cpu_ms_per_message": {
                "push_off": cpu_ms_per_message("msg_push_off"),
                "push_on": cpu_ms_per_message("msg_push_on"),
            },
            "store_commits_per_1000_messages": {
                "push_off": commits_per_1000("msg_push_off"),
                "push_on": commits_per_1000("msg_push_on"),
            },
            "paired": {**paired, "each": pairs},
            **{name: phases[name] for name in ("queue_store", "queue_redis") if name in phases},
        },
        "client": phases["msg_push_on"]["client"],
        "server": phases["msg_push_on"]["server"],
        "table": table,
        "ok": off["lost"] == 0 and on["lost"] == 0 and on["duplicated"] == 0,
    }
