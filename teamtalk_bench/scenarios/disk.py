"""disk: the cloud disk's seed API: /upload MiB/s, its download, calls/s of the lists.

The disk service's URL comes from the throwaway server (or ``--disk-url``). One user logs
in with ``/login``; phases:

1. **upload**: one ``--size-mib`` MiB file through ``/upload``, the seed client's single
   multipart part (its MD5 computed first, as that client does, outside the timing),
   generated on the fly; the server's answer must be ``008``.
2. **download**: the file read back from its ``url`` (the media service), hashed.
3. **myfiles**: ``--files`` small files added, then ``--requests`` calls of
   ``/myfiles?cmd=normal`` (10 files a page), ``--in-flight`` at once.
4. **pv**: ``--requests`` downloads counted (``/dealsharefile?cmd=pv``) of the shared
   files, ``--in-flight`` at once; the counts must add up exactly.
5. **ranking**: ``--requests`` calls of ``/sharefiles?cmd=pvdesc``.

The server's RSS is sampled during each phase: the upload streams to disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

from twisted.internet import defer
from twisted.web.client import readBody

from teamtalk_bench import stats
from teamtalk_bench.scenarios.media import Client, Generated, Hashing, RssSampler, _Bytes, _mib
from teamtalk_bench.workers import Run, WorkerContext

KiB = 1024
MiB = 1024 * 1024
BOUNDARY = "----WebKitFormBoundary88asdgewtgewx"
PHASES = ("upload", "download", "myfiles", "pv", "ranking")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=256, help="uploaded file, MiB [256]")
    parser.add_argument("--files", type=int, default=100, help="small files listed [100]")
    parser.add_argument("--requests", type=int, default=2000, help="calls per list phase [2000]")
    parser.add_argument("--in-flight", type=int, default=16, help="calls at once [16]")
    parser.add_argument("--disk-url", default=None, help="the disk service [the throwaway's]")


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "size": max(1, args.size_mib) * MiB,
        "files": max(1, args.files),
        "requests": max(1, args.requests),
        "in_flight": max(1, args.in_flight),
        "disk_url": args.disk_url,
    }


def users_needed(params: dict[str, Any]) -> int:
    return 1


def worker_count(params: dict[str, Any], requested: int) -> int:
    return 1


# -- coordinator ---------------------------------------------------------------------------


def coordinate(run: Run) -> dict[str, Any]:
    run.gather("ready", timeout=60)
    run.measure_start()
    results: dict[str, Any] = {}
    for phase in PHASES:
        with RssSampler(run.server_stats) as sampler:
            run.broadcast(phase)
            (report,) = run.gather(phase, timeout=1800)
        report.update(sampler.summary())
        results[phase] = report
    server = run.measure_stop()
    run.broadcast(None)
    (final,) = run.gather("done", timeout=60)
    client = stats.client_cpu([final], final["wall"])
    p = run.params
    up, down = results["upload"], results["download"]

    def rss(phase: dict[str, Any]) -> str:
        return (
            f"{_mib(phase['rss_kb_before'])} -> peak {_mib(phase['rss_kb_peak'])}"
            f" -> {_mib(phase['rss_kb_after'])} MiB"
        )

    rows = [
        (
            f"/upload ({p['size'] // MiB} MiB, one multipart part)",
            f"{up['mib_per_second']} MiB/s ({up['seconds']} s), code {up['code']}",
        ),
        ("  server RSS", rss(up)),
        ("download of its url", f"{down['mib_per_second']} MiB/s, verified {down['verified']}"),
    ]
    for phase, label in (
        ("myfiles", f"/myfiles?cmd=normal ({p['files']} files, 10 a page)"),
        ("pv", "/dealsharefile?cmd=pv"),
        ("ranking", "/sharefiles?cmd=pvdesc"),
    ):
        report = results[phase]
        rows.append(
            (
                f"{label}, {p['in_flight']} in flight",
                f"{report['per_second']}/s ({report['count']} in {report['seconds']} s)",
            )
        )
        rows.append(
            (
                "  latency p50 / p99 ms, failed",
                f"{report['latency']['p50_ms']} / {report['latency']['p99_ms']}, "
                f"{report['failed']}",
            )
        )
    rows.append(("downloads counted exactly", str(results["pv"].get("exact"))))
    rows += stats.cpu_rows(client, server)
    ok = (
        up["code"] == "008"
        and down["verified"]
        and all(results[phase]["failed"] == 0 for phase in ("myfiles", "pv", "ranking"))
        and results["pv"].get("exact") is True
    )
    return {
        "results": results,
        "client": client,
        "server": server,
        "table": stats.render_table("disk", rows),
        "ok": ok,
    }


# -- worker --------------------------------------------------------------------------------


class SeedUploadBody:
    """The seed client's ``/upload`` body around ``size`` generated bytes (file-like)."""

    def __init__(self, user: str, token: str, size: int, seed: bytes) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        source = Generated(size, seed)
        for offset in range(0, size, MiB):
            digest.update(source.bytes_at(offset, min(MiB, size - offset)))
        self.md5 = digest.hexdigest()
        self.source = Generated(size, seed)
        self.head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; user="{user}"; '
            f'filename="big.bin"; md5="{self.md5}"; size={size}; token="{token}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{BOUNDARY}".encode()
        self.length = len(self.head) + size + len(self.tail)
        self.sent_head = self.sent_tail = False

    def read(self, n: int = -1) -> bytes:
        if not self.sent_head:
            self.sent_head = True
            return self.head
        data = self.source.read(n)
        if data:
            return data
        if not self.sent_tail:
            self.sent_tail = True
            return self.tail
        return b""

    def close(self) -> None:
        pass


class Seed:
    """The seed's API as the bench calls it."""

    def __init__(self, client: Client, base: str) -> None:
        self.client = client
        self.base = base.rstrip("/")

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {b"Content-Type": b"application/json"}
        response = await self.client.request(
            b"POST", self.base + path, headers, _Bytes(json.dumps(body).encode())
        )
        return response.code, json.loads(await readBody(response))

    async def upload(self, body: Any) -> str:
        headers = {b"Content-Type": f"multipart/form-data; boundary={BOUNDARY}".encode()}
        response = await self.client.request(b"POST", self.base + "/upload", headers, body)
        return json.loads(await readBody(response))["code"]


async def _many(in_flight: int, count: int, call: Any, ok: Any) -> dict[str, Any]:
    """``count`` calls of ``call(i)``, ``in_flight`` at once; per second and latency."""
    latencies: list[float] = []
    failed = 0
    indexes = iter(range(count))

    async def one() -> None:
        nonlocal failed
        for index in indexes:
            t0 = time.monotonic()
            status, answer = await call(index)
            latencies.append(time.monotonic() - t0)
            if status != 200 or not ok(answer):
                failed += 1

    t0 = time.monotonic()
    await defer.gatherResults(
        [defer.ensureDeferred(one()) for _ in range(in_flight)], consumeErrors=True
    )
    seconds = time.monotonic() - t0
    return {
        "count": count,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
        "latency": stats.latency_summary(latencies),
        "failed": failed,
    }


async def worker(ctx: WorkerContext) -> None:
    p = ctx.params
    wall0 = time.monotonic()
    cpu0 = stats.process_cpu_seconds()
    base = p["disk_url"] or ctx.target.disk_url
    if not base:
        raise RuntimeError("no disk service: pass --disk-url")
    client = Client(ctx.reactor, p["in_flight"])
    seed = Seed(client, base)
    user = ctx.target.user_name(0)
    password = hashlib.md5(ctx.target.password.encode()).hexdigest()
    _, answer = await seed.post("/login", {"username": user, "password": password})
    token = answer["token"]
    me = {"user": user, "token": token}
    phase = await ctx.sync("ready")
    report: dict[str, Any] = {}
    url, big_sha = "", ""
    names: list[tuple[str, str]] = []
    while phase is not None:
        if phase == "upload":
            body = SeedUploadBody(user, token, p["size"], b"disk bench")
            t0 = time.monotonic()
            code = await seed.upload(body)
            seconds = time.monotonic() - t0
            big_sha = body.source.hash.hexdigest()
            report = {
                "code": code,
                "size": p["size"],
                "seconds": round(seconds, 3),
                "mib_per_second": round(p["size"] / MiB / seconds, 1),
            }
        elif phase == "download":
            _, listed = await seed.post("/myfiles?cmd=normal", {**me, "start": 0, "count": 1})
            url = listed["files"][0]["url"]
            t0 = time.monotonic()
            response = await client.request(b"GET", url, {})
            done: defer.Deferred[tuple[int, str]] = defer.Deferred()
            response.deliverBody(Hashing(done))
            count, sha = await done
            seconds = time.monotonic() - t0
            report = {
                "seconds": round(seconds, 3),
                "mib_per_second": round(count / MiB / seconds, 1),
                "verified": sha == big_sha and count == p["size"],
            }
        elif phase == "myfiles":
            for i in range(p["files"]):
                data = b"small file %d " % i * 64
                name = f"f{i:05d}.txt"
                head = (
                    f'--{BOUNDARY}\r\nContent-Disposition: form-data; user="{user}"; '
                    f'filename="{name}"; md5="{hashlib.md5(data).hexdigest()}"; '
                    f'size={len(data)}; token="{token}"\r\n\r\n'
                ).encode()
                await seed.upload(_Bytes(head + data + f"\r\n--{BOUNDARY}".encode()))
                names.append((name, hashlib.md5(data).hexdigest()))
            report = await _many(
                p["in_flight"], p["requests"],
                lambda i: seed.post("/myfiles?cmd=normal", {**me, "start": i % p["files"],
                                                             "count": 10}),
                lambda answer: len(answer.get("files", ())) > 0,
            )  # fmt: skip
        elif phase == "pv":
            for name, md5 in names:
                await seed.post("/dealfile?cmd=share", {**me, "md5": md5, "filename": name})
            report = await _many(
                p["in_flight"], p["requests"],
                lambda i: seed.post("/dealsharefile?cmd=pv", {
                    **me, "md5": names[i % len(names)][1], "filename": names[i % len(names)][0],
                }),
                lambda answer: answer.get("code") == "016",
            )  # fmt: skip
            counted = 0
            for start in range(0, len(names), 100):
                page = {"token": token, "start": start, "count": 100}
                _, ranked = await seed.post("/sharefiles?cmd=pvdesc", page)
                counted += sum(item["pv"] for item in ranked["files"])
            report["exact"] = counted == p["requests"] - report["failed"]
        else:
            report = await _many(
                p["in_flight"], p["requests"],
                lambda i: seed.post("/sharefiles?cmd=pvdesc",
                                    {"token": token, "start": 0, "count": 10}),
                lambda answer: len(answer.get("files", ())) > 0,
            )  # fmt: skip
        phase = await ctx.sync(phase, report)
    await client.pool.closeCachedConnections()
    await ctx.sync(
        "done",
        {"wall": time.monotonic() - wall0, "cpu_seconds": stats.process_cpu_seconds() - cpu0},
    )
