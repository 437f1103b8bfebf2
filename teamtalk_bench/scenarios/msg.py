"""msg: N sender -> receiver pairs, M messages per sender, W in flight per sender.

The receiver (same process as its sender) matches each delivery to its message by the
msg_id the sender's ack carried, so the scenario works the same when every message has one
text (``--same-text``, a user typing the same word: identical payloads and, within a
second, identical create_time) as when each payload starts with its index (the default,
which also checks that no payload arrives under two ids). Delivery latency = receiver's
arrival time - send time; ack latency = ack arrival - send time. Lost = sent but never
acked, or acked with a real id but never delivered before the drain timeout. Duplicated =
a (from, msg_id) delivered twice to the same receiver connection, or one payload delivered
under two ids. Refused (ack with msg_id 0) is reported on its own. Every message must be
delivered: the table says whether delivered == sent.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall

from teamtalk_bench import stats
from teamtalk_bench.conn import PC, BenchConnection, BenchError, bounded, open_logged_in
from teamtalk_bench.workers import Run, WorkerContext
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2

INDEX_DIGITS = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=int, default=10, help="sender/receiver pairs [10]")
    parser.add_argument("--messages", type=int, default=2000, help="messages per sender [2000]")
    parser.add_argument("--window", type=int, default=16, help="messages in flight per sender [16]")
    parser.add_argument("--size", type=int, default=64, help="payload bytes (>= 8) [64]")
    parser.add_argument(
        "--same-text",
        action="store_true",
        help="every message carries the same payload (a user typing the same word)",
    )
    parser.add_argument(
        "--no-delivery-ack",
        action="store_true",
        help="receivers do not send CID_MSG_DATA_ACK (real clients do)",
    )
    parser.add_argument(
        "--duration-limit",
        type=float,
        default=300.0,
        help="stop sending after this many seconds [300]",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="seconds to wait for missing acks/deliveries after the last send [10]",
    )


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.pairs < 1 or args.messages < 1 or args.window < 1:
        raise SystemExit("msg: --pairs, --messages and --window must be >= 1")
    return {
        "pairs": args.pairs,
        "messages": args.messages,
        "window": min(args.window, 60000),
        "size": max(args.size, INDEX_DIGITS),
        "same_text": bool(args.same_text),
        "delivery_ack": not args.no_delivery_ack,
        "duration_limit": args.duration_limit,
        "drain": args.drain,
    }


def users_needed(params: dict[str, Any]) -> int:
    return 2 * params["pairs"]


def worker_count(params: dict[str, Any], requested: int) -> int:
    return max(1, min(requested, params["pairs"]))


# --------------------------------------------------------------------------------------
# Parent


def coordinate(run: Run) -> dict[str, Any]:
    p = run.params
    run.gather("ready", timeout=60 + 0.05 * users_needed(p))
    run.measure_start()
    run.broadcast("go")
    reports = run.gather("result", timeout=p["duration_limit"] + p["drain"] + 60)
    server = run.measure_stop()
    run.broadcast(None)

    start = min(r["t_start"] for r in reports)
    last_ack = max((r["t_last_ack"] for r in reports if r["t_last_ack"]), default=None)
    last_delivery = max(
        (r["t_last_delivery"] for r in reports if r["t_last_delivery"]), default=None
    )
    end = max(r["t_end"] for r in reports)
    totals = {
        k: sum(r[k] for r in reports)
        for k in (
            "sent",
            "acked",
            "refused",
            "delivered",
            "duplicated",
            "lost_unacked",
            "lost_undelivered",
            "stray",
            "out_of_order",
            "connections_lost",
        )
    }
    ack_lat = [x for r in reports for x in r["ack_latencies"]]
    delivery_lat = [x for r in reports for x in r["delivery_latencies"]]
    ack_seconds = last_ack - start if last_ack else None
    delivery_seconds = last_delivery - start if last_delivery else None
    results = {
        "expected": p["pairs"] * p["messages"],
        **totals,
        "lost": totals["lost_unacked"] + totals["lost_undelivered"],
        "ack_seconds": round(ack_seconds, 4) if ack_seconds else None,
        "delivery_seconds": round(delivery_seconds, 4) if delivery_seconds else None,
        "acked_per_second": stats.rate(totals["acked"], ack_seconds),
        "delivered_per_second": stats.rate(totals["delivered"], delivery_seconds),
        "ack_latency": stats.latency_summary(ack_lat),
        "delivery_latency": stats.latency_summary(delivery_lat),
    }
    client = stats.client_cpu(reports, end - start)
    all_delivered = totals["delivered"] == totals["sent"] == results["expected"]
    results["all_delivered"] = all_delivered
    rows = [
        ("pairs x messages, window", f"{p['pairs']} x {p['messages']}, W={p['window']}"),
        ("payloads", "one text for all" if p.get("same_text") else "unique (index)"),
        ("sent / acked / refused", f"{totals['sent']} / {totals['acked']} / {totals['refused']}"),
        ("delivered", totals["delivered"]),
        (
            "delivered == sent",
            "yes" if all_delivered else f"NO: {totals['delivered']} of {totals['sent']}",
        ),
        ("acked msg/s", results["acked_per_second"]),
        ("delivered msg/s", results["delivered_per_second"]),
        ("lost", results["lost"]),
        ("duplicated", totals["duplicated"]),
        *stats.cpu_rows(client, server),
    ]
    table = stats.render_table(
        "msg",
        rows,
        [("ack", results["ack_latency"]), ("delivery", results["delivery_latency"])],
    )
    return {
        "results": results,
        "client": client,
        "server": server,
        "table": table,
        "ok": results["lost"] == 0 and totals["duplicated"] == 0 and all_delivered,
    }


# --------------------------------------------------------------------------------------
# Worker


class PairRun:
    """One sender and its receiver: the window, the send times, what arrived."""

    def __init__(
        self,
        sender: BenchConnection,
        receiver: BenchConnection,
        messages: int,
        window: int,
        size: int,
        delivery_ack: bool,
        finished: Callable[[], None],
        same_text: bool = False,
        encrypted: bool = False,
    ) -> None:
        self.sender = sender
        self.receiver = receiver
        self.messages = messages
        self.window = window
        self.delivery_ack = delivery_ack
        self.finished = finished
        self.filler = b"x" * (size - INDEX_DIGITS)
        #: The one payload of every message with --same-text, else None.
        self.same_payload = (b"ok " * size)[:size] if same_text else None
        #: Encrypted like real clients' text (the push scenario: pushes need plain text):
        #: every payload made up front, the receiver finds the index by the payload.
        self.payloads: list[bytes] | None = None
        self.payload_index: dict[bytes, int] = {}
        if encrypted:
            from teamtalk_client import encrypt_text

            text = "x" * (size - INDEX_DIGITS)
            if same_text:
                self.same_payload = encrypt_text(text)
            else:
                self.payloads = [encrypt_text(f"{i:08d}{text}") for i in range(messages)]
                self.payload_index = {payload: i for i, payload in enumerate(self.payloads)}
        #: msg_id -> index of the message whose ack carried it.
        self.index_of: dict[int, int] = {}
        #: msg_id -> arrival time of deliveries that came before their ack.
        self.early: dict[int, float] = {}
        self.template = Message_pb2.IMMsgData(
            from_user_id=sender.user_id,
            to_session_id=receiver.user_id,
            msg_id=0,
            create_time=0,
            msg_type=B.MSG_TYPE_SINGLE_TEXT,
            msg_data=b"",
        )
        self.ack_template = Message_pb2.IMMsgDataAck(
            user_id=receiver.user_id,
            session_id=sender.user_id,
            msg_id=0,
            session_type=B.SESSION_TYPE_SINGLE,
        )
        self.sent_at = [0.0] * messages
        self.ack_ok = bytearray(messages)
        self.got = bytearray(messages)
        self.next_index = 0
        self.stopped = False
        self.acked = 0
        self.refused = 0
        self.answered = 0
        self.delivered = 0
        self.duplicated = 0
        self.stray = 0
        self.out_of_order = 0
        self.highest = -1
        self.seen: set[int] = set()
        self.ack_latencies: list[float] = []
        self.delivery_latencies: list[float] = []
        self.t_last_ack = 0.0
        self.t_last_delivery = 0.0
        receiver.on(B.CID_MSG_DATA, self.on_delivery)

    @property
    def all_sent(self) -> bool:
        return self.next_index >= self.messages or self.stopped

    @property
    def complete(self) -> bool:
        return self.all_sent and self.answered == self.next_index and (self.delivered >= self.acked)

    def start(self) -> None:
        for _ in range(min(self.window, self.messages)):
            self.send_next()

    def send_next(self) -> None:
        index = self.next_index
        if index >= self.messages or self.stopped:
            return
        if not self.sender.open:
            self.stopped = True
            return
        self.next_index = index + 1
        message = self.template
        message.create_time = int(time.time())
        if self.same_payload is not None:
            message.msg_data = self.same_payload
        elif self.payloads is not None:
            message.msg_data = self.payloads[index]
        else:
            message.msg_data = b"%08d" % index + self.filler
        body = message.SerializeToString()
        self.sent_at[index] = time.monotonic()
        self.sender.request(
            B.CID_MSG_DATA, body, lambda cid, answer: self.on_ack(index, cid, answer)
        )

    def on_ack(self, index: int, cid: int, body: bytes) -> None:
        if cid == 0:
            return  # connection lost: counted as unacked
        now = time.monotonic()
        self.answered += 1
        ack = Message_pb2.IMMsgDataAck.FromString(body)
        if ack.msg_id == 0:
            self.refused += 1
        else:
            self.acked += 1
            self.ack_ok[index] = 1
            self.ack_latencies.append(now - self.sent_at[index])
            self.t_last_ack = now
            if ack.msg_id in self.index_of:
                self.duplicated += 1  # two messages acked with one id: merged
            else:
                self.index_of[ack.msg_id] = index
                arrived = self.early.pop(ack.msg_id, None)
                if arrived is not None:
                    self.delivered_as(index, arrived)
        self.send_next()
        if self.all_sent and self.complete:
            self.finished()

    def on_delivery(self, seq: int, body: bytes) -> None:
        now = time.monotonic()
        message = Message_pb2.IMMsgData.FromString(body)
        if message.from_user_id != self.sender.user_id:
            self.stray += 1
            return
        if message.msg_id in self.seen:
            self.duplicated += 1
            return
        self.seen.add(message.msg_id)
        if self.same_payload is None:
            try:
                if self.payloads is not None:
                    payload_index = self.payload_index[message.msg_data]
                else:
                    payload_index = int(message.msg_data[:INDEX_DIGITS])
            except (KeyError, ValueError):
                self.stray += 1
                return
            if not 0 <= payload_index < self.messages or not self.sent_at[payload_index]:
                self.stray += 1
                return
            if self.got[payload_index]:
                self.duplicated += 1  # same payload stored and delivered under two ids
                return
        elif message.msg_data != self.same_payload:
            self.stray += 1
            return
        if self.delivery_ack:
            ack = self.ack_template
            ack.msg_id = message.msg_id
            self.receiver.send(B.CID_MSG_DATA_ACK, ack.SerializeToString())
        index = self.index_of.get(message.msg_id)
        if index is None:
            self.early[message.msg_id] = now  # the ack is still on its way
            return
        self.delivered_as(index, now)

    def delivered_as(self, index: int, arrived: float) -> None:
        """The message sent as ``index`` arrived at ``arrived``."""
        if self.got[index]:
            self.duplicated += 1
            return
        self.got[index] = 1
        self.delivered += 1
        if index < self.highest:
            self.out_of_order += 1
        else:
            self.highest = index
        self.delivery_latencies.append(arrived - self.sent_at[index])
        self.t_last_delivery = max(self.t_last_delivery, arrived)
        if self.all_sent and self.complete:
            self.finished()

    def lost(self) -> tuple[int, int]:
        """(sent but never answered, acked with an id but never delivered)."""
        unacked = self.next_index - self.answered
        undelivered = sum(1 for i in range(self.next_index) if self.ack_ok[i] and not self.got[i])
        return unacked, undelivered


async def worker(ctx: WorkerContext) -> None:
    p, t, reactor = ctx.params, ctx.target, ctx.reactor
    pairs = list(ctx.share(p["pairs"]))
    indexes = [u for i in pairs for u in (2 * i, 2 * i + 1)]
    # The cluster scenario: users from ``user_offset`` on, and per pair the ports of the
    # msg nodes its sender and its receiver log in to.
    offset = p.get("user_offset", 0)
    pair_ports = p.get("pair_ports")

    async def open_user(index: int) -> BenchConnection:
        port = pair_ports[index // 2][index % 2] if pair_ports else t.port
        name = t.user_name(offset + index)
        return await open_logged_in(reactor, t.host, port, name, t.password, PC)

    conns = await bounded(indexes, 64, open_user)
    failures = [c for c in conns if isinstance(c, BaseException)]
    if failures:
        raise BenchError(f"{len(failures)} logins failed, first: {failures[0]!r}")
    await ctx.sync("ready", {"connections": len(conns)})

    from twisted.internet import defer

    done: defer.Deferred = defer.Deferred()
    runs: list[PairRun] = []

    def finished() -> None:
        if not done.called and all(r.complete for r in runs):
            done.callback(None)

    for k in range(len(pairs)):
        runs.append(
            PairRun(
                conns[2 * k],
                conns[2 * k + 1],
                p["messages"],
                p["window"],
                p["size"],
                p["delivery_ack"],
                finished,
                p.get("same_text", False),
                p.get("encrypted", False),
            )
        )
    lost_connections = [0]

    def connection_lost(conn: BenchConnection) -> None:
        lost_connections[0] += 1
        for r in runs:
            if conn is r.sender or conn is r.receiver:
                r.stopped = True

    for c in conns:
        c.on_lost(connection_lost)

    cpu0 = stats.process_cpu_seconds()
    t_start = time.monotonic()
    send_deadline = t_start + p["duration_limit"]
    drain_since = [0.0]

    def watchdog() -> None:
        now = time.monotonic()
        if now > send_deadline:
            for r in runs:
                r.stopped = True
        if all(r.all_sent for r in runs):
            if not drain_since[0]:
                drain_since[0] = now
            if now - drain_since[0] > p["drain"] and not done.called:
                done.callback(None)

    guard = LoopingCall(watchdog)
    guard.clock = reactor
    guard.start(0.05, now=False)
    for r in runs:
        r.start()
    await done
    guard.stop()
    t_end = time.monotonic()
    cpu = stats.process_cpu_seconds() - cpu0

    report: dict[str, Any] = {
        "t_start": t_start,
        "t_end": t_end,
        "t_last_ack": max((r.t_last_ack for r in runs), default=0.0),
        "t_last_delivery": max((r.t_last_delivery for r in runs), default=0.0),
        "cpu_seconds": cpu,
        "sent": sum(r.next_index for r in runs),
        "acked": sum(r.acked for r in runs),
        "refused": sum(r.refused for r in runs),
        "delivered": sum(r.delivered for r in runs),
        "duplicated": sum(r.duplicated for r in runs),
        "stray": sum(r.stray + len(r.early) for r in runs),
        "out_of_order": sum(r.out_of_order for r in runs),
        "connections_lost": lost_connections[0],
        "lost_unacked": sum(r.lost()[0] for r in runs),
        "lost_undelivered": sum(r.lost()[1] for r in runs),
        "ack_latencies": [x for r in runs for x in r.ack_latencies],
        "delivery_latencies": [x for r in runs for x in r.delivery_latencies],
    }
    for c in conns:
        c.on_lost(None)
    await ctx.sync("result", report)
    for c in conns:
        c.close()
