"""The import's figures: messages imported per second and the importer's peak memory.

    python -m teamtalk_bench.import_figure --messages 1000000 --runs 2 [--target sqlite,mysql]

Generates a reference TeamTalk site (``reference_site.generate``: the shipped schema in a
scratch MariaDB database, Redis keys under a scratch prefix) once, then runs
``teamtalk-admin import-teamtalk`` as a separate process ``--runs`` times per target, each
into a fresh store (SQLite in a temporary data dir; a scratch MariaDB database for
``mysql``), and prints per run: wall time, messages per second, and the import process's
own peak RSS (its ``VmHWM``, as its report prints it). The site is dropped at the end.
Needs MariaDB and Redis (``--mysql``, ``--redis``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from teamtalk_bench.reference_site import ReferenceSite, generate
from teamtalk_testing.scratch import DEFAULT_MYSQL, DEFAULT_REDIS, ScratchDatabase

ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))


def import_once(site: ReferenceSite, target: str, mysql: str, batch_size: int) -> dict[str, Any]:
    """One import into a fresh store, as its own process; its figures."""
    scratch_dir = Path(tempfile.mkdtemp(prefix="tt-import-bench-"))
    database = ScratchDatabase(mysql, prefix="tt_bench_import") if target == "mysql" else None
    where = ["--db", database.url] if database else ["--data-dir", str(scratch_dir)]
    command = [ADMIN, *where, "import-teamtalk", "--from", site.url, "--redis", site.redis_url,
               "--no-progress", "--batch-size", str(batch_size)]  # fmt: skip
    try:
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"import failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        # The importer's own figure (its VmHWM): ru_maxrss of a child counts what this
        # process held when it forked, which here is the whole generated site.
        found = re.search(r"peak memory (\d+) MiB", done.stdout)
        peak = float(found.group(1)) if found else float("nan")
        output = done.stdout
        return {"seconds": seconds, "peak_rss_mib": peak, "report": output}
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
        if database is not None:
            database.drop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teamtalk_bench.import_figure")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument(
        "--target", default="sqlite", help="sqlite, mysql or both (sqlite,mysql) [sqlite]"
    )
    parser.add_argument("--mysql", default=DEFAULT_MYSQL)
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    site = ReferenceSite(args.mysql, args.redis)
    results: list[dict[str, Any]] = []
    try:
        started = time.monotonic()
        generate(site, users=args.users, messages=args.messages, groups=args.groups)
        print(f"generated {args.messages} messages in {time.monotonic() - started:.0f} s")
        for target in args.target.split(","):
            if target not in ("sqlite", "mysql"):
                raise SystemExit(f"unknown target {target!r}")
            for run in range(args.runs):
                load = os.getloadavg()
                figures = import_once(site, target, args.mysql, args.batch_size)
                rate = args.messages / figures["seconds"]
                print(
                    f"{target} run {run + 1}: {figures['seconds']:.1f} s, {rate:.0f} messages/s "
                    f"(with the check), peak RSS {figures['peak_rss_mib']:.0f} MiB (load before "
                    f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n"
                    + figures["report"].splitlines()[-1],
                    flush=True,
                )
                results.append(
                    {**figures, "target": target, "messages_per_second": rate, "loadavg": load}
                )
        print(results[-1]["report"])
    finally:
        site.drop()
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "runs": results}, indent=2, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
