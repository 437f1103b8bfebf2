"""Client worker processes and the phase barrier that drives them.

The parent never runs a reactor. It starts P worker processes (``spawn``: each gets a fresh
interpreter and its own reactor), and drives them through the phases of a scenario:

    parent                                  each worker
    ------                                  -----------
    run.gather("ready")          <------    await ctx.sync("ready", payload)
    run.broadcast(reply)         ------>        ... returns reply
    run.gather("result")         <------    await ctx.sync("result", payload)
    run.broadcast(None)          ------>        ... returns; the worker exits

A worker that fails sends ("error", traceback) instead, and the parent raises
``WorkerError``. Every wait has a timeout; workers are daemon processes and are terminated
when the parent is done with them.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from twisted.internet.defer import Deferred

from teamtalk_bench.server import (
    ProcessStats,
    Profiler,
    ServerWindow,
    Target,
    raise_nofile_limit,
)


class WorkerError(Exception):
    """A worker process failed or did not answer in time."""


@dataclass
class Run:
    """The parent's handle on one scenario run: params, target and the workers."""

    scenario: str
    params: dict[str, Any]
    target: Target
    pipes: list[Connection]
    procs: Sequence[multiprocessing.process.BaseProcess]
    profiler: Profiler | None = None
    window: ServerWindow | None = None
    #: Further server processes by name (a cluster's center and nodes): their CPU and RSS
    #: over the measured phase go to the server result's ``processes``.
    processes: dict[str, int] | None = None
    process_windows: dict[str, ServerWindow] | None = None

    @property
    def workers(self) -> int:
        return len(self.pipes)

    @property
    def server_stats(self) -> ProcessStats:
        return ProcessStats(self.target.pid)

    def measure_start(self) -> None:
        """The measured phase begins: server CPU/RSS baseline, profiler on."""
        if self.profiler is not None:
            self.profiler.start()
        self.window = ServerWindow(self.server_stats)
        self.window.start()
        if self.processes:
            self.process_windows = {
                name: ServerWindow(ProcessStats(pid)) for name, pid in self.processes.items()
            }
            for window in self.process_windows.values():
                window.start()

    def measure_stop(self) -> dict[str, Any]:
        """The measured phase ended: server CPU/RSS over it (and the profile file)."""
        if self.window is None:
            self.window = ServerWindow(self.server_stats)
            self.window.start()
        result = self.window.stop()
        if self.process_windows:
            result["processes"] = {
                name: window.stop() for name, window in self.process_windows.items()
            }
        if self.profiler is not None:
            result["profile"] = self.profiler.stop()
        return result

    def gather(self, tag: str, timeout: float) -> list[Any]:
        """Wait for every worker's ``sync(tag, payload)``; the payloads by worker index."""
        deadline = time.monotonic() + timeout
        results: list[Any] = [None] * len(self.pipes)
        waiting: dict[int, Connection] = dict(enumerate(self.pipes))
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerError(
                    f"workers {sorted(waiting)} did not reach {tag!r} within {timeout:g} s"
                )
            ready = multiprocessing.connection.wait(list(waiting.values()), timeout=remaining)
            for pipe in ready:
                index = next(i for i, p in waiting.items() if p is pipe)
                assert isinstance(pipe, Connection)
                try:
                    got_tag, payload = pipe.recv()
                except EOFError:
                    raise WorkerError(f"worker {index} exited before {tag!r}") from None
                if got_tag == "error":
                    raise WorkerError(f"worker {index} failed:\n{payload}")
                if got_tag != tag:
                    raise WorkerError(f"worker {index} sent {got_tag!r}, expected {tag!r}")
                results[index] = payload
                del waiting[index]
        return results

    def broadcast(self, reply: Any = None) -> None:
        for pipe in self.pipes:
            pipe.send(reply)

    def send(self, index: int, reply: Any) -> None:
        self.pipes[index].send(reply)

    def close(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
        for pipe in self.pipes:
            pipe.close()


def start_workers(
    scenario: str,
    params: dict[str, Any],
    target: Target,
    count: int,
    profile: str | None = None,
    processes: dict[str, int] | None = None,
) -> Run:
    context = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for index in range(count):
        parent_end, child_end = context.Pipe()
        proc = context.Process(
            target=worker_main,
            args=(child_end, scenario, params, target, index, count),
            name=f"bench-{scenario}-{index}",
            daemon=True,
        )
        proc.start()
        child_end.close()
        pipes.append(parent_end)
        procs.append(proc)
    profiler = Profiler(target.pid, profile) if profile else None
    return Run(scenario, params, target, pipes, procs, profiler, processes=processes)


class WorkerContext:
    """What a scenario's ``worker(ctx)`` gets: params, target, its share, and ``sync``."""

    def __init__(
        self,
        pipe: Connection,
        params: dict[str, Any],
        target: Target,
        index: int,
        count: int,
        reactor: Any,
    ) -> None:
        self.pipe = pipe
        self.params = params
        self.target = target
        self.index = index
        self.count = count
        self.reactor = reactor
        self.nofile = raise_nofile_limit()

    def share(self, total: int) -> range:
        """This worker's slice of ``range(total)``: indexes i with i % count == index."""
        return range(self.index, total, self.count)

    async def sync(self, tag: str, payload: Any = None) -> Any:
        """Report ``payload`` to the parent under ``tag`` and wait for its reply.

        At "ready" (everything prepared, the measured phase next) the worker's heap is
        frozen, as the server's is after start-up: a full collection walking the prepared
        requests and connections stalled a login worker for 60-120 ms, counted in the
        latencies as if the server had been slow."""
        from twisted.internet import threads

        if tag == "ready":
            gc.collect()
            gc.freeze()
        self.pipe.send((tag, payload))
        return await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self.pipe.recv
        )

    def sleep(self, seconds: float) -> Deferred[None]:
        from twisted.internet import task

        return task.deferLater(self.reactor, seconds, lambda: None)


def worker_main(
    pipe: Connection,
    scenario: str,
    params: dict[str, Any],
    target: Target,
    index: int,
    count: int,
) -> None:
    """Entry point of a worker process: run ``scenarios.<scenario>.worker`` on a reactor."""
    from twisted.internet import defer, reactor

    module = importlib.import_module(f"teamtalk_bench.scenarios.{scenario}")
    ctx = WorkerContext(pipe, params, target, index, count, reactor)
    outcome: list[int] = [0]

    async def run() -> None:
        try:
            await module.worker(ctx)
        except Exception:
            outcome[0] = 1
            try:
                pipe.send(("error", traceback.format_exc()))
            except OSError:
                pass

    def start() -> None:
        defer.ensureDeferred(run()).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    raise SystemExit(outcome[0])
