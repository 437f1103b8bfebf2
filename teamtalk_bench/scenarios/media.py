"""media: msfs picture uploads/s, tus upload and Range download MiB/s, server RSS during.

The media URL comes from ``/msg_server`` (``msfsPrior``), as clients find it. Phases:

1. **pictures**: ``--pictures`` uploads of ``--picture-kib`` KiB each (distinct bytes, the
   iOS client's multipart shape), ``--in-flight`` at once on persistent connections; a
   sample of the returned URLs is fetched back and compared.
2. **tus upload**: one ``--size-mib`` MiB file through tus (create, then PATCH requests of
   ``--chunk-mib`` MiB), generated on the fly; its SHA-256 is checked against the server's
   ETag.
3. **range download**: the file read back in ``--range-mib`` MiB ``Range`` requests, hashed.

The server's RSS is sampled every 100 ms during each phase (before, peak, after): request
bodies stream to disk, so it must stay flat however large the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import threading
import time
import urllib.request
from typing import Any

from twisted.internet import defer, protocol
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from teamtalk_bench import stats
from teamtalk_bench.server import ProcessStats
from teamtalk_bench.workers import Run, WorkerContext

KiB = 1024
MiB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pictures", type=int, default=2000, help="picture uploads [2000]")
    parser.add_argument("--picture-kib", type=int, default=100, help="picture size, KiB [100]")
    parser.add_argument("--in-flight", type=int, default=32, help="uploads at once [32]")
    parser.add_argument("--size-mib", type=int, default=256, help="tus file size, MiB [256]")
    parser.add_argument("--chunk-mib", type=int, default=64, help="tus PATCH size, MiB [64]")
    parser.add_argument("--range-mib", type=int, default=16, help="Range size, MiB [16]")


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "pictures": max(1, args.pictures),
        "picture_bytes": max(1, args.picture_kib) * KiB,
        "in_flight": max(1, args.in_flight),
        "size": max(1, args.size_mib) * MiB,
        "chunk": max(1, args.chunk_mib) * MiB,
        "range": max(1, args.range_mib) * MiB,
    }


def users_needed(params: dict[str, Any]) -> int:
    return 1


def worker_count(params: dict[str, Any], requested: int) -> int:
    return 1


# -- coordinator ---------------------------------------------------------------------------


class RssSampler:
    """Samples the server's RSS every ``interval`` seconds on a thread."""

    def __init__(self, stats_: ProcessStats, interval: float = 0.1) -> None:
        self.stats = stats_
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.stats.rss_kb()
            if rss is not None:
                self.samples.append(rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        rss = self.stats.rss_kb()
        if rss is not None:
            self.samples.append(rss)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"rss_kb_before": None, "rss_kb_peak": None, "rss_kb_after": None}
        return {
            "rss_kb_before": self.samples[0],
            "rss_kb_peak": max(self.samples),
            "rss_kb_after": self.samples[-1],
        }


def coordinate(run: Run) -> dict[str, Any]:
    run.gather("ready", timeout=60)
    run.measure_start()
    results: dict[str, Any] = {}
    for phase in ("pictures", "tus_upload", "range_download"):
        with RssSampler(run.server_stats) as sampler:
            run.broadcast(phase)
            (report,) = run.gather(phase, timeout=1800)
        report.update(sampler.summary())
        results[phase] = report
    server = run.measure_stop()
    run.broadcast(None)
    (final,) = run.gather("done", timeout=60)
    client = stats.client_cpu([final], final["wall"])
    pictures, upload, download = (
        results["pictures"],
        results["tus_upload"],
        results["range_download"],
    )
    p = run.params

    def rss(phase: dict[str, Any]) -> str:
        return (
            f"{_mib(phase['rss_kb_before'])} -> peak {_mib(phase['rss_kb_peak'])}"
            f" -> {_mib(phase['rss_kb_after'])} MiB"
        )

    rows = [
        (
            f"msfs uploads ({p['picture_bytes'] // KiB} KiB, {p['in_flight']} in flight)",
            f"{pictures['per_second']}/s ({pictures['count']} in {pictures['seconds']} s)",
        ),
        (
            "  latency p50 / p99 ms",
            f"{pictures['latency']['p50_ms']} / {pictures['latency']['p99_ms']}",
        ),
        ("  failed / sample mismatches", f"{pictures['failed']} / {pictures['mismatched']}"),
        ("  server RSS", rss(pictures)),
        (
            f"tus upload ({p['size'] // MiB} MiB, PATCH {p['chunk'] // MiB} MiB)",
            f"{upload['mib_per_second']} MiB/s ({upload['seconds']} s)",
        ),
        ("  server RSS", rss(upload)),
        (
            f"Range download ({p['range'] // MiB} MiB ranges)",
            f"{download['mib_per_second']} MiB/s ({download['seconds']} s)",
        ),
        ("  bytes verified (SHA-256)", str(download["verified"])),
        ("  server RSS", rss(download)),
    ]
    rows += stats.cpu_rows(client, server)
    ok = (
        pictures["failed"] == 0
        and pictures["mismatched"] == 0
        and upload["etag_matches"]
        and download["verified"]
    )
    return {
        "results": results,
        "client": client,
        "server": server,
        "table": stats.render_table("media", rows),
        "ok": ok,
    }


def _mib(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:.0f}"


# -- worker --------------------------------------------------------------------------------


class Generated:
    """``size`` bytes made on the fly (file-like for ``FileBodyProducer``), hashed as read."""

    def __init__(self, size: int, seed: bytes) -> None:
        self.size = size
        self.position = 0
        self.block = hashlib.sha256(seed).digest() * (MiB // 32)
        self.hash = hashlib.sha256()

    def bytes_at(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            index, within = divmod(offset, MiB)
            take = min(length, MiB - within)
            block = index.to_bytes(8, "big") + self.block[8:]
            out += block[within : within + take]
            offset += take
            length -= take
        return bytes(out)

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.position if n < 0 else min(n, self.size - self.position)
        data = self.bytes_at(self.position, n)
        self.position += n
        self.hash.update(data)
        return data

    def close(self) -> None:
        pass


class Window:
    """A bounded slice of ``Generated`` (one PATCH body)."""

    def __init__(self, source: Generated, length: int) -> None:
        self.source = source
        self.length = self.remaining = length

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        self.remaining -= n
        return self.source.read(n)

    def close(self) -> None:
        pass


class Hashing(protocol.Protocol):
    def __init__(self, done: defer.Deferred[tuple[int, str]]) -> None:
        self.done = done
        self.hash = hashlib.sha256()
        self.count = 0

    def dataReceived(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback((self.count, self.hash.hexdigest()))


def _multipart(data: bytes) -> tuple[bytes, bytes]:
    boundary = "Boundary+" + os.urandom(8).hex().upper()
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\nim_image\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="image.png_640x480.png"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}".encode(), body


class Client:
    def __init__(self, reactor: Any, in_flight: int) -> None:
        self.pool = HTTPConnectionPool(reactor)
        self.pool.maxPersistentPerHost = in_flight
        self.agent = Agent(reactor, pool=self.pool)

    async def request(
        self, method: bytes, url: str, headers: dict[bytes, bytes], body: Any = None
    ) -> Any:
        producer = None
        if body is not None:
            producer = FileBodyProducer(body, readSize=256 * KiB)
            producer.length = body.length  # a generated body cannot seek to find it
        h = Headers({k: [v] for k, v in headers.items()})
        return await self.agent.request(method, url.encode(), h, producer)


async def _pictures(ctx: WorkerContext, client: Client, base: str, auth: dict) -> dict:
    p = ctx.params
    count, size = p["pictures"], p["picture_bytes"]
    filler = os.urandom(size)
    latencies: list[float] = []
    failed = 0
    urls: list[tuple[str, bytes]] = []
    next_index = iter(range(count))

    async def one() -> None:
        nonlocal failed
        for index in next_index:
            data = b"\xff\xd8\xff\xe0" + index.to_bytes(8, "big") + filler[12:]
            content_type, body = _multipart(data)
            headers = {b"Content-Type": content_type, **auth}
            t0 = time.monotonic()
            response = await client.request(b"POST", base, headers, _Bytes(body))
            answer = json.loads(await readBody(response))
            latencies.append(time.monotonic() - t0)
            if response.code != 200 or answer.get("error_code") != 0:
                failed += 1
            elif index % max(1, count // 20) == 0:
                urls.append((answer["url"], data))

    t0 = time.monotonic()
    await defer.gatherResults(
        [defer.ensureDeferred(one()) for _ in range(p["in_flight"])], consumeErrors=True
    )
    seconds = time.monotonic() - t0
    mismatched = 0
    for url, data in urls:
        response = await client.request(b"GET", url, {})
        if await readBody(response) != data:
            mismatched += 1
    return {
        "count": count,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
        "latency": stats.latency_summary(latencies),
        "failed": failed,
        "mismatched": mismatched,
        "sampled": len(urls),
    }


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)
        self.position = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.position + n
        chunk = self.data[self.position : end]
        self.position += len(chunk)
        return chunk

    def close(self) -> None:
        pass


async def _tus_upload(client: Client, base: str, auth: dict, size: int, chunk: int) -> dict:
    source = Generated(size, os.urandom(16))
    tus = {b"Tus-Resumable": b"1.0.0", **auth}
    t0 = time.monotonic()
    created = await client.request(
        b"POST", base + "api/v1/files/", {**tus, b"Upload-Length": b"%d" % size}
    )
    await readBody(created)
    location = created.headers.getRawHeaders(b"location")[0].decode()
    offset = 0
    while offset < size:
        length = min(chunk, size - offset)
        headers = {
            **tus,
            b"Upload-Offset": b"%d" % offset,
            b"Content-Type": b"application/offset+octet-stream",
        }
        response = await client.request(b"PATCH", location, headers, Window(source, length))
        await readBody(response)
        if response.code != 204:
            raise RuntimeError(f"PATCH at {offset}: HTTP {response.code}")
        offset = int(response.headers.getRawHeaders(b"upload-offset")[0])
    seconds = time.monotonic() - t0
    head = await client.request(b"HEAD", location, auth)
    etag = (head.headers.getRawHeaders(b"etag") or [b""])[0].decode().strip('"')
    return {
        "url": location,
        "size": size,
        "sha256": source.hash.hexdigest(),
        "seconds": round(seconds, 3),
        "mib_per_second": round(size / MiB / seconds, 1),
        "etag_matches": etag == source.hash.hexdigest(),
    }


async def _range_download(
    client: Client, url: str, auth: dict, size: int, span: int, sha256: str
) -> dict:
    digest = hashlib.sha256()
    t0 = time.monotonic()
    for first in range(0, size, span):
        last = min(size, first + span) - 1
        response = await client.request(
            b"GET", url, {**auth, b"Range": b"bytes=%d-%d" % (first, last)}
        )
        if response.code != 206:
            raise RuntimeError(f"Range {first}-{last}: HTTP {response.code}")
        data = await readBody(response)
        digest.update(data)
    seconds = time.monotonic() - t0
    return {
        "seconds": round(seconds, 3),
        "mib_per_second": round(size / MiB / seconds, 1),
        "verified": digest.hexdigest() == sha256,
    }


async def worker(ctx: WorkerContext) -> None:
    p = ctx.params
    wall0 = time.monotonic()
    cpu0 = stats.process_cpu_seconds()
    with urllib.request.urlopen(ctx.target.discovery_url, timeout=10) as answer:
        base = json.loads(answer.read())["msfsPrior"]
    client = Client(ctx.reactor, p["in_flight"])
    name = ctx.target.user_name(0)
    password = hashlib.md5(ctx.target.password.encode()).hexdigest()
    body = json.dumps({"user": name, "password": password}).encode()
    response = await client.request(
        b"POST", base + "api/v1/token", {b"Content-Type": b"application/json"}, _Bytes(body)
    )
    token = json.loads(await readBody(response))["token"]
    auth = {b"Authorization": b"Bearer " + token.encode()}
    phase = await ctx.sync("ready")
    upload: dict[str, Any] = {}
    while phase is not None:
        if phase == "pictures":
            report = await _pictures(ctx, client, base, auth)
        elif phase == "tus_upload":
            upload = await _tus_upload(client, base, auth, p["size"], p["chunk"])
            report = upload
        else:
            report = await _range_download(
                client, upload["url"], auth, p["size"], p["range"], upload["sha256"]
            )
        phase = await ctx.sync(phase, report)
    await client.pool.closeCachedConnections()
    await ctx.sync(
        "done",
        {"wall": time.monotonic() - wall0, "cpu_seconds": stats.process_cpu_seconds() - cpu0},
    )
