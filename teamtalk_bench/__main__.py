"""``python -m teamtalk_bench {msg,ping,login,idle,group,file,cluster,flood,all,users} …``

Without ``--url`` each scenario starts a throwaway ``twistd teamtalk`` (temporary data
dir, free loopback ports, its own users) and stops it afterwards. With ``--url
http://HOST:PORT/msg_server`` it measures whatever server that discovery URL names, using
existing users ``<prefix>0 … <prefix>N-1`` that share one password (``users`` creates them
in a teamtalk_py store). Every scenario prints a table and writes a JSON document.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from teamtalk_bench import stats
from teamtalk_bench.scenarios import SCENARIOS, STANDALONE
from teamtalk_bench.server import (
    DEFAULT_PASSWORD,
    DEFAULT_PREFIX,
    BenchSetupError,
    ThrowawayServer,
    create_users,
    raise_nofile_limit,
    remote_target,
)
from teamtalk_bench.workers import WorkerError, start_workers


def _scenario(name: str) -> ModuleType:
    return importlib.import_module(f"teamtalk_bench.scenarios.{name}")


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target and output")
    group.add_argument(
        "--url",
        help="discovery URL of a running server, "
        "e.g. http://127.0.0.1:8080/msg_server (default: start a throwaway one)",
    )
    group.add_argument(
        "--user-prefix",
        default=DEFAULT_PREFIX,
        help=f"users are PREFIX0, PREFIX1, … [{DEFAULT_PREFIX}]",
    )
    group.add_argument(
        "--password", default=DEFAULT_PASSWORD, help="password of every benchmark user"
    )
    group.add_argument(
        "--server-pid",
        type=int,
        help="with --url: PID of the server, for its RSS, CPU and --profile",
    )
    group.add_argument(
        "--processes",
        type=int,
        default=1,
        help="client worker processes (raise it when one saturates) [1]",
    )
    group.add_argument(
        "--json", help="JSON output file [bench-results/SCENARIO-TIME.json]; for 'all', a directory"
    )
    group.add_argument(
        "--profile",
        metavar="FILE",
        help="run py-spy on the server during the measured phase; .svg gives "
        "a flame graph, other names a speedscope file",
    )
    group.add_argument(
        "--keep-server", action="store_true", help="keep the throwaway server's data dir and log"
    )
    group.add_argument(
        "--metrics",
        metavar="FILE",
        help="save the throwaway server's /metrics (Prometheus text) at the end of the run",
    )
    group.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the throwaway twistd teamtalk (repeatable)",
    )
    group.add_argument(
        "--server-tree",
        metavar="DIR",
        help="run the throwaway server from this source tree (e.g. "
        "`git archive REV | tar -x -C DIR`) instead of the installed one",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m teamtalk_bench",
        description="Benchmark a TeamTalk msg server over loopback.",
    )
    commands = parser.add_subparsers(dest="scenario", required=True)
    for name in SCENARIOS + STANDALONE:
        module = _scenario(name)
        sub = commands.add_parser(name, help=(module.__doc__ or "").split("\n")[0])
        module.add_arguments(sub)
        _add_common(sub)
    sub = commands.add_parser("all", help="every scenario with its default sizes")
    _add_common(sub)
    sub = commands.add_parser("users", help="create PREFIX0..PREFIXN-1 in a teamtalk_py store")
    sub.add_argument("--count", type=int, required=True)
    sub.add_argument("--data-dir", default="./var")
    sub.add_argument("--db", help="mysql://… instead of the SQLite store in --data-dir")
    sub.add_argument("--user-prefix", default=DEFAULT_PREFIX)
    sub.add_argument("--password", default=DEFAULT_PASSWORD)
    return parser


def run_scenario(name: str, args: argparse.Namespace, json_path: Path | None = None) -> dict:
    """Run one scenario end to end; print its table; write and return its JSON document."""
    module = _scenario(name)
    params = module.params_from(args)
    started = datetime.datetime.now()
    raise_nofile_limit()
    server = None
    standalone = getattr(module, "run", None)
    if standalone is not None:
        target = None  # the scenario starts its own servers
    elif args.url:
        target = remote_target(args.url, args.user_prefix, args.password, args.server_pid)
    else:
        server = ThrowawayServer(
            module.users_needed(params),
            prefix=args.user_prefix,
            password=args.password,
            keep=args.keep_server,
            extra_args=args.server_arg,
            server_tree=args.server_tree,
            user_limits=getattr(module, "USER_LIMITS", False),
        )
        target = server.start()
    document: dict[str, Any] = {
        "scenario": name,
        "started": started.isoformat(timespec="seconds"),
        "target": target.describe() if target is not None else None,
        "params": params,
        "machine": {
            "cpus": _cpus(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        },
    }
    busy = os.getloadavg()[0]
    if busy > 0.5:
        print(
            f"note: load average {busy:.2f} before the run: other processes compete for "
            "the CPUs and the figures will be lower",
            file=sys.stderr,
        )
    if server is not None:
        document["server_source"] = _source_revision(args.server_tree)
    t0 = time.monotonic()
    try:
        children_before = stats.children_cpu_seconds()
        if standalone is not None:
            document["server_source"] = _source_revision(None)
            outcome = standalone(params, args)
        else:
            if hasattr(module, "prepare"):
                module.prepare(params, target)
            assert target is not None  # only standalone scenarios start without one
            count = module.worker_count(params, max(1, args.processes))
            document["params"] = params
            run = start_workers(name, params, target, count, args.profile)
            try:
                outcome = module.coordinate(run)
            finally:
                run.close()
        # The workers are joined (the server is not yet reaped): their whole CPU, start-up
        # and log-in included, next to the measured-window figures in "client".
        document["client_total_cpu_seconds"] = round(
            stats.children_cpu_seconds() - children_before, 3
        )
    finally:
        if server is not None:
            if args.metrics:
                document["metrics_file"] = server.save_metrics(Path(args.metrics))
            document["server_exit"] = server.stop()
            if args.keep_server:
                document["server_dir"] = str(server.root)
    document["elapsed_seconds"] = round(time.monotonic() - t0, 3)
    table = outcome.pop("table")
    document.update(outcome)
    print(table)
    path = stats.write_json(json_path or Path(args.json or stats.default_json_path(name)), document)
    print(f"\n(JSON: {path})\n")
    return document


def _source_revision(tree: str | None) -> dict[str, Any]:
    """Which code the throwaway server ran: the git commit and whether the tree was dirty."""
    import subprocess

    import teamtalk_py

    root = Path(tree) if tree else Path(teamtalk_py.__file__).resolve().parents[1]
    info: dict[str, Any] = {"tree": str(root)}
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        info["modified_files"] = len(status.splitlines())
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.scenario == "users":
        ids = create_users(
            args.count, args.user_prefix, args.password, data_dir=args.data_dir, db_url=args.db
        )
        print(f"{len(ids)} users {args.user_prefix}0..{args.user_prefix}{args.count - 1}")
        return 0
    try:
        if args.scenario == "all":
            directory = Path(args.json) if args.json else None
            failed = False
            for name in SCENARIOS:
                sub = parser.parse_args([name, *_common_argv(args)])
                path = (directory / stats.default_json_path(name).name) if directory else None
                failed |= not run_scenario(name, sub, path).get("ok", True)
            return 1 if failed else 0
        document = run_scenario(args.scenario, args)
        return 0 if document.get("ok", True) else 1
    except (BenchSetupError, WorkerError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _common_argv(args: argparse.Namespace) -> list[str]:
    argv = [
        "--user-prefix",
        args.user_prefix,
        "--password",
        args.password,
        "--processes",
        str(args.processes),
    ]
    if args.url:
        argv += ["--url", args.url]
    if args.server_pid:
        argv += ["--server-pid", str(args.server_pid)]
    if args.keep_server:
        argv.append("--keep-server")
    for extra in args.server_arg:
        argv += ["--server-arg", extra]
    if args.server_tree:
        argv += ["--server-tree", args.server_tree]
    return argv


if __name__ == "__main__":
    sys.exit(main())
