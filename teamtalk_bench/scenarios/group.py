"""group: messages to one G-member group, every member connection counting deliveries.

All G members log in (PC), member 0 creates a temporary group of all of them with
``CID_GROUP_CREATE_REQUEST`` (the reference drops requests for normal groups), then sends
``--messages`` group messages, ``--window`` in flight. Every other member connection
timestamps each delivery: deliveries/s = deliveries / (last arrival - first send); per
message, fan-out = last member's arrival - send. A server without groups (no create answer,
a refused create, or a message acked with msg_id 0) is reported as "not available".
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from teamtalk_bench import stats
from teamtalk_bench.conn import PC, BenchConnection, BenchError, bounded, fire_once, open_logged_in
from teamtalk_bench.workers import Run, WorkerContext
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Group_pb2, Message_pb2

INDEX_DIGITS = 8
GROUP_TYPES = (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", type=int, default=500, help="group members G [500]")
    parser.add_argument("--messages", type=int, default=20, help="group messages sent [20]")
    parser.add_argument("--window", type=int, default=1, help="group messages in flight [1]")
    parser.add_argument("--size", type=int, default=64, help="payload bytes (>= 8) [64]")
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the create answer and each ack [10]",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=15.0,
        help="seconds to wait for missing deliveries after the last ack [15]",
    )


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.members < 2 or args.messages < 1 or args.window < 1:
        raise SystemExit("group: --members >= 2, --messages >= 1 and --window >= 1")
    return {
        "members": args.members,
        "messages": args.messages,
        "window": args.window,
        "size": max(args.size, INDEX_DIGITS),
        "answer_timeout": args.answer_timeout,
        "drain": args.drain,
    }


def users_needed(params: dict[str, Any]) -> int:
    return params["members"]


def worker_count(params: dict[str, Any], requested: int) -> int:
    return max(1, min(requested, params["members"]))


def not_available(
    reason: str, client: dict[str, Any] | None = None, server: dict[str, Any] | None = None
) -> dict[str, Any]:
    table = stats.render_table("group", [("not available", reason)])
    return {
        "available": False,
        "reason": reason,
        "results": None,
        "client": client,
        "server": server,
        "table": table,
        "ok": True,
    }


def coordinate(run: Run) -> dict[str, Any]:
    p = run.params
    ready = run.gather("ready", timeout=60 + 0.05 * p["members"])
    ids: dict[int, int] = {}
    for r in ready:
        ids.update(r["ids"])
    member_ids = [ids[i] for i in range(p["members"])]
    run.broadcast({"member_ids": member_ids})
    (created, *_) = run.gather("created", timeout=p["answer_timeout"] + 30)
    if created["group_id"] is None:
        run.broadcast(None)
        return not_available(created["reason"])
    run.broadcast({"group_id": created["group_id"]})
    run.gather("armed", timeout=30)
    run.measure_start()
    run.broadcast("go")
    sent_reports = run.gather("sent", timeout=p["messages"] * p["answer_timeout"] + 60)
    sender = sent_reports[0]
    run.broadcast({"refused": sender["refused"], "acked": sender["acked"]})
    reports = run.gather("result", timeout=p["drain"] + 60)
    server = run.measure_stop()
    run.broadcast(None)
    if sender["refused_reason"]:
        return not_available(sender["refused_reason"], server=server)

    send_times = sender["send_times"]
    receivers = sum(r["receivers"] for r in reports)
    delivered = sum(r["delivered"] for r in reports)
    duplicated = sum(r["duplicated"] for r in reports)
    expected = receivers * sender["acked"]
    arrivals: dict[int, list[float]] = {}
    for r in reports:
        for index, times in r["arrivals"].items():
            arrivals.setdefault(index, []).extend(times)
    latencies = [t - send_times[i] for i, times in arrivals.items() for t in times]
    fanouts = [
        max(times) - send_times[i] for i, times in arrivals.items() if len(times) >= receivers
    ]
    start = min(send_times.values())
    last = max((max(times) for times in arrivals.values()), default=None)
    seconds = last - start if last else None
    results = {
        "members": p["members"],
        "receivers": receivers,
        "messages_sent": sender["sent"],
        "messages_acked": sender["acked"],
        "delivered": delivered,
        "expected_deliveries": expected,
        "lost": expected - delivered,
        "duplicated": duplicated,
        "seconds": round(seconds, 4) if seconds else None,
        "deliveries_per_second": stats.rate(delivered, seconds),
        "ack_latency": stats.latency_summary(sender["ack_latencies"]),
        "delivery_latency": stats.latency_summary(latencies),
        "fanout": stats.latency_summary(fanouts),
    }
    client = stats.client_cpu(reports, max(r["wall"] for r in reports))
    rows = [
        ("members, messages, window", f"{p['members']}, {p['messages']}, W={p['window']}"),
        ("acked", f"{sender['acked']} of {sender['sent']}"),
        ("deliveries", f"{delivered} of {expected}"),
        ("deliveries/s", results["deliveries_per_second"]),
        ("lost", results["lost"]),
        ("duplicated", duplicated),
        *stats.cpu_rows(client, server),
    ]
    table = stats.render_table(
        "group",
        rows,
        [
            ("ack", results["ack_latency"]),
            ("delivery", results["delivery_latency"]),
            ("fan-out (last member)", results["fanout"]),
        ],
    )
    return {
        "available": True,
        "results": results,
        "client": client,
        "server": server,
        "table": table,
        "ok": results["lost"] == 0 and duplicated == 0,
    }


async def worker(ctx: WorkerContext) -> None:
    p, t, reactor = ctx.params, ctx.target, ctx.reactor
    indexes = list(ctx.share(p["members"]))

    async def open_member(index: int) -> BenchConnection:
        return await open_logged_in(reactor, t.host, t.port, t.user_name(index), t.password, PC)

    conns = await bounded(indexes, 64, open_member)
    failures = [c for c in conns if isinstance(c, BaseException)]
    if failures:
        raise BenchError(f"{len(failures)} logins failed, first: {failures[0]!r}")
    for conn in conns:
        conn.on(B.CID_BUDDY_LIST_STATUS_NOTIFY, lambda seq, body: None)
    reply = await ctx.sync(
        "ready", {"ids": {i: c.user_id for i, c in zip(indexes, conns, strict=True)}}
    )
    member_ids = reply["member_ids"]
    creator = conns[0] if ctx.index == 0 else None

    created: dict[str, Any] = {"group_id": None, "reason": None}
    if creator is not None:
        request = Group_pb2.IMGroupCreateReq(
            user_id=creator.user_id,
            group_type=B.GROUP_TYPE_TMP,
            group_name="bench group",
            group_avatar="",
            member_id_list=member_ids,
        )
        try:
            body = await creator.ask(
                B.CID_GROUP_CREATE_REQUEST, request.SerializeToString(), p["answer_timeout"]
            )
            answer = Group_pb2.IMGroupCreateRsp.FromString(body)
            if answer.result_code != 0 or not answer.HasField("group_id"):
                created["reason"] = f"group create refused (result_code {answer.result_code})"
            else:
                created["group_id"] = answer.group_id
        except BenchError as e:
            created["reason"] = f"CID_GROUP_CREATE_REQUEST unanswered: {e}"
    reply = await ctx.sync("created", created)
    if reply is None:
        return
    group_id = reply["group_id"]

    receivers = [c for c in conns if c is not creator]
    arrivals: dict[int, list[float]] = {}
    counts = {"delivered": 0, "duplicated": 0}
    expected_per_conn = [p["messages"]]
    all_in: defer.Deferred = defer.Deferred()

    def make_handler(conn: BenchConnection) -> Callable[[int, bytes], None]:
        seen: set[int] = set()

        def on_delivery(seq: int, body: bytes) -> None:
            now = time.monotonic()
            message = Message_pb2.IMMsgData.FromString(body)
            if message.to_session_id != group_id or message.msg_type not in GROUP_TYPES:
                return
            if message.msg_id in seen:
                counts["duplicated"] += 1
                return
            seen.add(message.msg_id)
            index = int(message.msg_data[:INDEX_DIGITS])
            arrivals.setdefault(index, []).append(now)
            counts["delivered"] += 1
            if counts["delivered"] >= expected_per_conn[0] * len(receivers) and not all_in.called:
                all_in.callback(None)

        return on_delivery

    for conn in receivers:
        conn.on(B.CID_MSG_DATA, make_handler(conn))
    await ctx.sync("armed", None)

    cpu0 = stats.process_cpu_seconds()
    t_armed = time.monotonic()
    sent_report: dict[str, Any] = {}
    if creator is not None:
        sent_report = await _send_all(creator, group_id, p)
    answer = await ctx.sync("sent", sent_report)
    expected_per_conn[0] = answer["acked"]
    if answer["acked"] and receivers and counts["delivered"] < answer["acked"] * len(receivers):
        timer = reactor.callLater(p["drain"], lambda: fire_once(all_in))
        await all_in
        if timer.active():
            timer.cancel()
    report = {
        "receivers": len(receivers),
        "delivered": counts["delivered"],
        "duplicated": counts["duplicated"],
        "arrivals": arrivals,
        "cpu_seconds": stats.process_cpu_seconds() - cpu0,
        "wall": time.monotonic() - t_armed,
    }
    await ctx.sync("result", report)
    for conn in conns:
        conn.close()


async def _send_all(creator: BenchConnection, group_id: int, p: dict[str, Any]) -> dict[str, Any]:
    """Send the group messages (window W) and collect acks; stops at the first refusal."""
    message = Message_pb2.IMMsgData(
        from_user_id=creator.user_id,
        to_session_id=group_id,
        msg_id=0,
        create_time=0,
        msg_type=B.MSG_TYPE_GROUP_TEXT,
        msg_data=b"",
    )
    filler = b"x" * (p["size"] - INDEX_DIGITS)
    send_times: dict[int, float] = {}
    ack_latencies: list[float] = []
    state: dict[str, Any] = {"next": 0, "acked": 0, "refused": 0, "reason": None, "outstanding": 0}
    done: defer.Deferred = defer.Deferred()
    reactor = creator.clock

    def finish() -> None:
        if not done.called:
            done.callback(None)

    def send_next() -> None:
        index = state["next"]
        if index >= p["messages"] or state["reason"]:
            if state["outstanding"] == 0:
                finish()
            return
        state["next"] += 1
        state["outstanding"] += 1
        message.create_time = int(time.time())
        message.msg_data = b"%08d" % index + filler
        send_times[index] = time.monotonic()
        seq = creator.request(
            B.CID_MSG_DATA, message.SerializeToString(), lambda cid, body: on_ack(index, cid, body)
        )
        reactor.callLater(p["answer_timeout"], expire, index, seq)

    def expire(index: int, seq: int) -> None:
        if index in answered:
            return
        creator.forget(seq, B.CID_MSG_DATA_ACK)
        answered.add(index)
        state["outstanding"] -= 1
        if not state["reason"]:
            state["reason"] = f"group message not acked within {p['answer_timeout']:g} s"
        send_next()

    answered: set[int] = set()

    def on_ack(index: int, cid: int, body: bytes) -> None:
        if index in answered:
            return
        answered.add(index)
        state["outstanding"] -= 1
        if cid == 0:
            state["reason"] = state["reason"] or "sender connection closed"
        elif Message_pb2.IMMsgDataAck.FromString(body).msg_id == 0:
            state["refused"] += 1
            state["reason"] = state["reason"] or "group message refused (acked with msg_id 0)"
        else:
            state["acked"] += 1
            ack_latencies.append(time.monotonic() - send_times[index])
        send_next()

    for _ in range(min(p["window"], p["messages"])):
        send_next()
    await done
    refused_reason = state["reason"] if state["acked"] == 0 else None
    return {
        "sent": state["next"],
        "acked": state["acked"],
        "refused": state["refused"],
        "refused_reason": refused_reason,
        "send_times": send_times,
        "ack_latencies": ack_latencies,
    }
