"""file: offline upload and download MB/s of one file, and online relay MB/s.

Offline: the sender asks the msg server (``CID_FILE_REQUEST``, offline), logs in to the
file server it names as the uploader and answers the server's ``CID_FILE_PULL_DATA_REQ``
block by block until ``CID_FILE_STATE`` done; it then records the file with
``CID_FILE_ADD_OFFLINE_REQ``. The receiver logs in as the downloader and pulls the blocks
(``--window`` requests in flight), checking every byte. Online: the same file relayed
through the file server while both sides are connected. A server that does not answer the
file request (or refuses it) is reported as "not available".
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import time
from typing import Any

from twisted.internet import defer

from teamtalk_bench import stats
from teamtalk_bench.conn import PC, BenchConnection, BenchError, connect, fire_once, open_logged_in
from teamtalk_bench.server import ProcessStats
from teamtalk_bench.workers import Run, WorkerContext
from teamtalk_client import encode_pdu
from teamtalk_py.file.blocks import varint
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2

BLOCK = 32768
MB = 1_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mb", type=float, default=100.0, help="file size in MB [100]")
    parser.add_argument(
        "--window",
        type=int,
        default=8,
        help="block requests in flight while downloading or relaying [8]",
    )
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for each answer of the file handshake [10]",
    )
    parser.add_argument(
        "--duration-limit",
        type=float,
        default=600.0,
        help="give up a transfer after this many seconds [600]",
    )
    parser.add_argument("--skip-online", action="store_true", help="only the offline transfer")


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.size_mb * MB)
    if size < 1 or size > 0xFFFFFFFF:
        raise SystemExit("file: --size-mb must give 1 byte .. 4 GiB")
    return {
        "size": size,
        "window": max(1, args.window),
        "answer_timeout": args.answer_timeout,
        "duration_limit": args.duration_limit,
        "online": not args.skip_online,
    }


def users_needed(params: dict[str, Any]) -> int:
    return 2


def worker_count(params: dict[str, Any], requested: int) -> int:
    return 1  # both ends of a transfer in one process


def coordinate(run: Run) -> dict[str, Any]:
    p = run.params
    run.gather("ready", timeout=60)
    run.measure_start()
    run.broadcast("go")
    (report,) = run.gather("result", timeout=3 * p["duration_limit"] + 60)
    server = run.measure_stop()
    run.broadcast(None)
    client = stats.client_cpu([report], report["wall"])
    if report["unavailable"]:
        table = stats.render_table("file", [("not available", report["unavailable"])])
        return {
            "available": False,
            "reason": report["unavailable"],
            "results": None,
            "client": client,
            "server": server,
            "table": table,
            "ok": True,
        }
    results = {
        k: report[k] for k in ("size_bytes", "offline_upload", "offline_download", "online_relay")
    }
    rows = [("file size", f"{p['size'] / MB:g} MB")]
    for key in ("offline_upload", "offline_download", "online_relay"):
        part = results[key]
        if part is None:
            rows.append((key.replace("_", " "), "skipped"))
        elif part.get("error"):
            rows.append((key.replace("_", " "), f"failed: {part['error']}"))
        else:
            text = f"{part['mb_per_second']} MB/s ({part['seconds']} s"
            if part.get("server_cpu_ms_per_mb") is not None:
                text += f", server CPU {part['server_cpu_ms_per_mb']} ms/MB"
            if part.get("client_cpu_ms_per_mb") is not None:
                text += f", client {part['client_cpu_ms_per_mb']}"
            rows.append((key.replace("_", " "), text + ")"))
    rows += stats.cpu_rows(client, server)
    ok = all(
        part is None or not part.get("error")
        for part in (
            results["offline_upload"],
            results["offline_download"],
            results["online_relay"],
        )
    )
    return {
        "available": True,
        "results": results,
        "client": client,
        "server": server,
        "table": stats.render_table("file", rows),
        "ok": ok,
    }


# --------------------------------------------------------------------------------------
# Worker


class Blocks:
    """The file's content, made on the fly: each block starts with its index."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = -(-size // BLOCK)
        self.template = os.urandom(BLOCK)
        #: What follows the index in a whole block.
        self.tail = self.template[8:]

    def length(self, offset: int) -> int:
        return max(0, min(BLOCK, self.size - offset))

    def data(self, offset: int, length: int | None = None) -> bytes:
        length = self.length(offset) if length is None else min(length, self.size - offset)
        head = struct.pack(">Q", offset // BLOCK)
        if length == BLOCK:
            return head + self.tail
        return (head + self.tail)[:length] if length >= 8 else head[:length]

    def matches(self, offset: int, data: bytes) -> bool:
        """Whether ``data`` is exactly the block at ``offset``: every byte compared, a
        whole block without building the expected copy (``startswith``/``endswith``
        compare in place)."""
        length = self.length(offset)
        if length == BLOCK:
            return (
                len(data) == BLOCK
                and data.startswith(struct.pack(">Q", offset // BLOCK))
                and data.endswith(self.tail)
            )
        return data == self.data(offset, length)


#: ``IMFilePullDataRsp.file_data``'s key (field 5, length-delimited): a block's answer is
#: the other fields' encoding, then this key, the length and the block, which is how
#: protobuf encodes the whole message (fields in number order; file_data is the last).
_FILE_DATA_KEY = bytes(
    [File_pb2.IMFilePullDataRsp.DESCRIPTOR.fields_by_name["file_data"].number << 3 | 2]
)


def block_answer(task_id: str, user_id: int, offset: int, data: bytes, seq: int) -> list[bytes]:
    """The ``CID_FILE_PULL_DATA_RSP`` PDU answering pull ``seq`` with ``data``, in pieces
    (header, the fields before the block, the block) for one ``sendmsg``: the block is
    never copied into a message, its serialisation or a joined PDU."""
    fields = File_pb2.IMFilePullDataRsp(
        result_code=0, task_id=task_id, user_id=user_id, offset=offset
    ).SerializePartialToString()
    prefix = fields + _FILE_DATA_KEY + varint(len(data))
    header = encode_pdu(B.CID_FILE_PULL_DATA_RSP, seq_num=seq)
    length = len(header) + len(prefix) + len(data)
    return [struct.pack(">I", length) + header[4:], prefix, data]


class Unavailable(BenchError):
    """The server does not offer file transfer (no answer, or a refusal)."""


class Cpu:
    """CPU seconds of the server (when its PID is known) and of this client process over
    one transfer: figures the other load on a shared machine disturbs far less than the
    wall-clock rate, and which say whose time a one-pull-in-flight transfer waits on."""

    def __init__(self, server_pid: int | None) -> None:
        self.server = ProcessStats(server_pid)
        self.server_start = self.server.cpu_seconds()
        self.client_start = stats.process_cpu_seconds()

    def server_used(self) -> float | None:
        end = self.server.cpu_seconds()
        return None if end is None or self.server_start is None else end - self.server_start

    def client_used(self) -> float:
        return stats.process_cpu_seconds() - self.client_start


def _rate(size: int, seconds: float, cpu: Cpu | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "seconds": round(seconds, 4),
        "mb_per_second": round(size / MB / seconds, 2) if seconds > 0 else None,
        "server_cpu_ms_per_mb": None,
        "client_cpu_ms_per_mb": None,
    }
    if cpu is not None:
        used = cpu.server_used()
        if used is not None:
            result["server_cpu_ms_per_mb"] = round(used * 1000 / (size / MB), 2)
        result["client_cpu_ms_per_mb"] = round(cpu.client_used() * 1000 / (size / MB), 2)
    return result


async def _file_login(
    conn: BenchConnection,
    user_id: int,
    task_id: str,
    role: B.ClientFileRole.ValueType,
    timeout: float,
) -> None:
    body = await conn.ask(
        B.CID_FILE_LOGIN_REQ,
        File_pb2.IMFileLoginReq(
            user_id=user_id, task_id=task_id, file_role=role
        ).SerializeToString(),
        timeout,
    )
    answer = File_pb2.IMFileLoginRsp.FromString(body)
    if answer.result_code != 0:
        raise BenchError(f"file login refused (result_code {answer.result_code})")


async def _request_task(
    sender: BenchConnection,
    receiver_id: int,
    blocks: Blocks,
    mode: B.TransferFileType.ValueType,
    timeout: float,
) -> File_pb2.IMFileRsp:
    try:
        body = await sender.ask(
            B.CID_FILE_REQUEST,
            File_pb2.IMFileReq(
                from_user_id=sender.user_id,
                to_user_id=receiver_id,
                file_name="bench.bin",
                file_size=blocks.size,
                trans_mode=mode,
            ).SerializeToString(),
            timeout,
        )
    except BenchError as e:
        raise Unavailable(f"CID_FILE_REQUEST: {e}") from None
    answer = File_pb2.IMFileRsp.FromString(body)
    if answer.result_code != 0 or not answer.task_id or not answer.ip_addr_list:
        raise Unavailable(
            f"file request refused (result_code {answer.result_code}, "
            f"{len(answer.ip_addr_list)} file server addresses)"
        )
    return answer


def _serve_pulls(
    conn: BenchConnection, user_id: int, task_id: str, blocks: Blocks, progress: dict[str, int]
) -> None:
    """Answer every CID_FILE_PULL_DATA_REQ on ``conn`` with the requested block."""

    def on_pull(seq: int, body: bytes) -> None:
        request = File_pb2.IMFilePullDataReq.FromString(body)
        data = blocks.data(request.offset, request.data_size)
        conn.send_now(block_answer(task_id, user_id, request.offset, data, seq))
        progress["bytes"] += len(data)

    conn.on(B.CID_FILE_PULL_DATA_REQ, on_pull)


async def _pull_all(
    conn: BenchConnection,
    user_id: int,
    task_id: str,
    mode: B.TransferFileType.ValueType,
    blocks: Blocks,
    window: int,
    limit: float,
) -> None:
    """Pull every block in order, ``window`` requests in flight; verify each one."""
    done: defer.Deferred = defer.Deferred()
    state = {"next": 0, "received": 0}
    # One pull in flight: each request goes to the kernel at once (a buffered write waits
    # for the next reactor turn, part of every block's round trip); a window's pulls of
    # one read leave together.
    request = conn.request_now if window == 1 else conn.request

    def fail(why: str) -> None:
        if not done.called:
            done.errback(BenchError(why))

    def request_next() -> None:
        offset = state["next"] * BLOCK
        if offset >= blocks.size or done.called:
            return
        state["next"] += 1
        length = blocks.length(offset)
        request(
            B.CID_FILE_PULL_DATA_REQ,
            File_pb2.IMFilePullDataReq(
                task_id=task_id, user_id=user_id, trans_mode=mode, offset=offset, data_size=length
            ).SerializeToString(),
            lambda cid, body: on_data(offset, length, cid, body),
        )

    def on_data(offset: int, length: int, cid: int, body: bytes) -> None:
        if cid == 0:
            fail(f"connection closed after {state['received']} of {blocks.size} bytes")
            return
        answer = File_pb2.IMFilePullDataRsp.FromString(body)
        if answer.result_code != 0 or answer.offset != offset:
            fail(f"bad block at {offset}: result {answer.result_code}, offset {answer.offset}")
            return
        if not blocks.matches(offset, answer.file_data):
            fail(f"block at {offset} differs from what was sent")
            return
        state["received"] += length
        if state["received"] >= blocks.size:
            if not done.called:
                done.callback(None)
        else:
            request_next()

    timer = conn.clock.callLater(limit, fail, f"transfer not finished within {limit:g} s")
    for _ in range(window):
        request_next()
    try:
        await done
    finally:
        if timer.active():
            timer.cancel()


def _queued(conn: BenchConnection) -> bool:
    """Whether Twisted holds bytes not yet written for ``conn`` (its transport's queue)."""
    t: Any = conn.transport
    return bool(getattr(t, "_tempDataLen", 0) or getattr(t, "dataBuffer", b""))


async def _pull_in_turn(
    conn: BenchConnection,
    user_id: int,
    task_id: str,
    mode: B.TransferFileType.ValueType,
    blocks: Blocks,
    limit: float,
    others: tuple[BenchConnection, ...] = (),
) -> None:
    """``_pull_all`` with one pull in flight, the connections' sockets read by a loop of
    our own instead of the reactor until the file is in.

    A round trip per block makes each wake-up part of the figure: the reactor's (poll,
    its per-read context and logger wrappers, the writer registration) cost the client
    about as much per block as the server's whole answer, so the figure was half the
    client's. The loop reads the same sockets (``others``: the online sender's, whose
    pulls its own handler answers) and hands what it reads to the same
    ``BenchConnection.dataReceived``: every block is decoded and checked byte by byte
    as before, only the wait is cheaper. It blocks this worker's reactor meanwhile,
    which nothing else needs then (one transfer at a time)."""
    conns = (conn, *others)
    found = [getattr(c.transport, "socket", None) for c in conns]
    socks: list[socket.socket] = [s for s in found if isinstance(s, socket.socket)]
    if len(socks) != len(conns) or any(map(_queued, conns)):
        await _pull_all(conn, user_id, task_id, mode, blocks, 1, limit)
        return
    transfer = defer.ensureDeferred(_pull_all(conn, user_id, task_id, mode, blocks, 1, limit))
    by_fd = {s.fileno(): (s, c) for s, c in zip(socks, conns, strict=True)}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + limit
    # Blocking reads, bounded by the kernel (SO_RCVTIMEO) rather than Python's socket
    # timeout, which polls before each read.
    timeout = struct.pack("@ll", int(limit), int(limit % 1 * 1e6))
    for s in socks:
        s.setblocking(True)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
    try:
        while not transfer.called:
            if len(by_fd) == 1:
                ready = list(by_fd)  # one socket: a blocking read is the wait
            else:
                left = deadline - time.monotonic()
                ready = [fd for fd, _ in poller.poll(max(0, int(left * 1000)))]
            if time.monotonic() > deadline:
                raise BenchError(f"transfer not finished within {limit:g} s")
            for fd in ready:
                sock, owner = by_fd[fd]
                try:
                    data = sock.recv(65536)  # Twisted's read size (no mmap per read)
                except BlockingIOError:
                    raise BenchError(f"transfer not finished within {limit:g} s") from None
                except OSError as e:
                    raise BenchError(f"connection failed: {e}") from None
                if not data:
                    raise BenchError("connection closed during the transfer")
                owner.dataReceived(data)
                if _queued(owner):
                    raise BenchError("a write waited in Twisted's queue")  # cannot happen
    finally:
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 0))
            s.setblocking(False)
    await transfer


async def _offline(
    ctx: WorkerContext, sender: BenchConnection, receiver: BenchConnection, blocks: Blocks
) -> dict[str, Any]:
    p, reactor = ctx.params, ctx.reactor
    answer = await _request_task(
        sender, receiver.user_id, blocks, B.FILE_TYPE_OFFLINE, p["answer_timeout"]
    )
    address = answer.ip_addr_list[0]
    task_id = answer.task_id
    result: dict[str, Any] = {"task_id": task_id}

    upload = await connect(reactor, address.ip, address.port)
    progress = {"bytes": 0}
    finished: defer.Deferred = defer.Deferred()
    upload.on(B.CID_FILE_STATE, lambda seq, body: fire_once(finished))
    upload.closed.addBoth(lambda _: fire_once(finished))
    _serve_pulls(upload, sender.user_id, task_id, blocks, progress)
    cpu = Cpu(ctx.target.pid)
    t0 = time.monotonic()
    await _file_login(upload, sender.user_id, task_id, B.CLIENT_OFFLINE_UPLOAD, p["answer_timeout"])
    timer = reactor.callLater(p["duration_limit"], lambda: fire_once(finished))
    await finished
    if timer.active():
        timer.cancel()
    seconds = time.monotonic() - t0
    upload.close()
    if progress["bytes"] < blocks.size:
        result["offline_upload"] = {"error": f"upload stopped at {progress['bytes']} bytes"}
        return result
    result["offline_upload"] = _rate(blocks.size, seconds, cpu)
    sender.send(
        B.CID_FILE_ADD_OFFLINE_REQ,
        File_pb2.IMFileAddOfflineReq(
            from_user_id=sender.user_id,
            to_user_id=receiver.user_id,
            task_id=task_id,
            file_name="bench.bin",
            file_size=blocks.size,
        ).SerializeToString(),
    )

    download = await connect(reactor, address.ip, address.port)
    download.on(B.CID_FILE_STATE, lambda seq, body: None)
    cpu = Cpu(ctx.target.pid)
    t0 = time.monotonic()
    try:
        await _file_login(
            download, receiver.user_id, task_id, B.CLIENT_OFFLINE_DOWNLOAD, p["answer_timeout"]
        )
        if p["window"] == 1:
            await _pull_in_turn(
                download,
                receiver.user_id,
                task_id,
                B.FILE_TYPE_OFFLINE,
                blocks,
                p["duration_limit"],
            )
        else:
            await _pull_all(
                download,
                receiver.user_id,
                task_id,
                B.FILE_TYPE_OFFLINE,
                blocks,
                p["window"],
                p["duration_limit"],
            )
        result["offline_download"] = _rate(blocks.size, time.monotonic() - t0, cpu)
    except BenchError as e:
        result["offline_download"] = {"error": str(e)}
    download.close()
    return result


async def _online(
    ctx: WorkerContext, sender: BenchConnection, receiver: BenchConnection, blocks: Blocks
) -> dict[str, Any]:
    p, reactor = ctx.params, ctx.reactor
    notified: defer.Deferred = defer.Deferred()
    receiver.on(B.CID_FILE_NOTIFY, lambda seq, body: fire_once(notified, body))
    answer = await _request_task(
        sender, receiver.user_id, blocks, B.FILE_TYPE_ONLINE, p["answer_timeout"]
    )
    address = answer.ip_addr_list[0]
    task_id = answer.task_id
    if answer.trans_mode != B.FILE_TYPE_ONLINE:
        return {"error": "the server turned the online request into an offline one"}
    side_a = await connect(reactor, address.ip, address.port)
    side_b = await connect(reactor, address.ip, address.port)
    progress = {"bytes": 0}
    _serve_pulls(side_a, sender.user_id, task_id, blocks, progress)
    side_a.on(B.CID_FILE_STATE, lambda seq, body: None)
    peer_ready: defer.Deferred = defer.Deferred()
    side_b.on(B.CID_FILE_STATE, lambda seq, body: fire_once(peer_ready))
    try:
        await _file_login(
            side_a, sender.user_id, task_id, B.CLIENT_REALTIME_SENDER, p["answer_timeout"]
        )
        await _file_login(
            side_b, receiver.user_id, task_id, B.CLIENT_REALTIME_RECVER, p["answer_timeout"]
        )
        timer = reactor.callLater(p["answer_timeout"], lambda: fire_once(peer_ready))
        await peer_ready
        if timer.active():
            timer.cancel()
        cpu = Cpu(ctx.target.pid)
        t0 = time.monotonic()
        if p["window"] == 1:
            await _pull_in_turn(
                side_b,
                receiver.user_id,
                task_id,
                B.FILE_TYPE_ONLINE,
                blocks,
                p["duration_limit"],
                (side_a,),
            )
        else:
            await _pull_all(
                side_b,
                receiver.user_id,
                task_id,
                B.FILE_TYPE_ONLINE,
                blocks,
                p["window"],
                p["duration_limit"],
            )
        seconds = time.monotonic() - t0
        rate = _rate(blocks.size, seconds, cpu)
        side_b.send(
            B.CID_FILE_STATE,
            File_pb2.IMFileState(
                state=B.CLIENT_FILE_DONE, task_id=task_id, user_id=receiver.user_id
            ).SerializeToString(),
        )
        return rate
    except BenchError as e:
        return {"error": str(e)}
    finally:
        side_a.close()
        side_b.close()


async def worker(ctx: WorkerContext) -> None:
    p, t, reactor = ctx.params, ctx.target, ctx.reactor
    sender = await open_logged_in(reactor, t.host, t.port, t.user_name(0), t.password, PC)
    receiver = await open_logged_in(reactor, t.host, t.port, t.user_name(1), t.password, PC)
    for conn in (sender, receiver):
        conn.on(B.CID_BUDDY_LIST_STATUS_NOTIFY, lambda seq, body: None)
    blocks = Blocks(p["size"])
    await ctx.sync("ready", None)
    cpu0 = stats.process_cpu_seconds()
    t0 = time.monotonic()
    report: dict[str, Any] = {
        "unavailable": None,
        "size_bytes": blocks.size,
        "offline_upload": None,
        "offline_download": None,
        "online_relay": None,
    }
    try:
        report.update(await _offline(ctx, sender, receiver, blocks))
    except Unavailable as e:
        report["unavailable"] = f"offline transfer: {e}"
    except BenchError as e:
        report["offline_upload"] = {"error": str(e)}
    if report["unavailable"] is None and p["online"]:
        try:
            report["online_relay"] = await _online(ctx, sender, receiver, blocks)
        except BenchError as e:
            report["online_relay"] = {"error": str(e)}
    report["wall"] = time.monotonic() - t0
    report["cpu_seconds"] = stats.process_cpu_seconds() - cpu0
    await ctx.sync("result", report)
    sender.close()
    receiver.close()
