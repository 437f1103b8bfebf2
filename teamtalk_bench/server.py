"""The server under test: a throwaway ``twistd teamtalk`` or an existing one by URL.

``ThrowawayServer`` creates a temporary data dir, writes the benchmark users straight into
its SQLite store (before the server starts, as ``teamtalk-admin`` would), picks free
loopback ports for every listener, and runs ``twistd --nodaemon teamtalk`` with a raised
open-file limit. ``Target`` is what the scenarios need to know either way: where the msg
server is, how the users are named, and (when known) the server's PID, whose RSS, CPU and
open files ``ProcessStats`` reads from ``/proc``. ``Profiler`` runs py-spy on that PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from teamtalk_testing import (
    LOOPBACK,
    StandaloneServer,
    StartupError,
    TwistdProcess,
    free_port,
    loopback_endpoint,
)
from teamtalk_testing.scratch import (
    DEFAULT_MYSQL,
    DEFAULT_REDIS,
    ScratchDatabase,
    ScratchRedisPrefix,
    Unreachable,
)

DEFAULT_PREFIX = "bench"
DEFAULT_PASSWORD = "bench-pw"

#: Seconds a throwaway server or cluster may take to come up: 2 s on a quiet box, but
#: over 30 s was seen on the 2-core machine with a full parallel test run beside it.
START_TIMEOUT = 90.0


class BenchSetupError(Exception):
    """The server could not be started or reached."""


@dataclass
class Target:
    """Everything a client worker needs to reach the server (picklable)."""

    host: str
    port: int
    discovery_url: str
    user_prefix: str = DEFAULT_PREFIX
    password: str = DEFAULT_PASSWORD
    pid: int | None = None
    throwaway: bool = False
    data_dir: str | None = None
    #: User ids by index, when the bench created the users (None for --url targets).
    user_ids: list[int] | None = field(default=None, repr=False)
    #: The cloud disk's base URL (a throwaway server's; else ``disk --disk-url``).
    disk_url: str | None = None

    def user_name(self, index: int) -> str:
        return f"{self.user_prefix}{index}"

    def describe(self) -> dict[str, Any]:
        info = asdict(self)
        info.pop("user_ids")
        info.pop("password")
        return info


# --------------------------------------------------------------------------------------
# Limits


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def _raise_nofile_in_child() -> None:  # preexec_fn: runs in the forked server process
    raise_nofile_limit()


# --------------------------------------------------------------------------------------
# Users


_CREATE_USERS = """
import json, sys
from teamtalk_bench.server import create_users
print(json.dumps(create_users(int(sys.argv[1]), sys.argv[2], sys.argv[3], data_dir=sys.argv[4])))
"""
_CREATE_USERS_PORTABLE = """
import json, sys, time
from pathlib import Path
from teamtalk_py.store import accounts
from teamtalk_py.store.database import open_database
count, prefix, password, data_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
db = open_database(None, Path(data_dir), reactor=None)
db.migrate()
ids = []
with db.sync_transaction() as txn:
    for i in range(count):
        ids.append(accounts.add_user(txn, f"{prefix}{i}", password, nick=f"{prefix}{i}",
                                     now=int(time.time())))
print(json.dumps(ids))
"""


def create_users_with(
    python_path: str | None, count: int, prefix: str, password: str, data_dir: str
) -> list[int]:
    """``create_users`` in a subprocess whose ``teamtalk_py`` comes from ``python_path``
    (the server's source tree), so the store schema is the server's own."""
    env = dict(os.environ)
    script = _CREATE_USERS
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [python_path, env.get("PYTHONPATH")]))
        tree = Path(python_path)
        if not ((tree / "teamtalk_bench").is_dir() or (tree / "teamtalk_py" / "bench").is_dir()):
            script = _CREATE_USERS_PORTABLE  # an older tree without create_users
    done = subprocess.run(
        [sys.executable, "-c", script, str(count), prefix, password, data_dir],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(data_dir).parent,
    )
    if done.returncode != 0:
        raise BenchSetupError(f"creating the benchmark users failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def create_users(
    count: int,
    prefix: str,
    password: str,
    *,
    data_dir: str | None = None,
    db_url: str | None = None,
) -> list[int]:
    """Create users ``prefix0 .. prefix{count-1}`` in a teamtalk_py store (existing names
    are kept and their ids returned); the ids by index."""
    from teamtalk_py.store import accounts
    from teamtalk_py.store.database import open_database

    db = open_database(db_url or None, Path(data_dir or "./var"), reactor=None)
    db.migrate()
    now = int(time.time())
    # One password record (salt and scrypt hash) for every benchmark user: hashing ten
    # thousand passwords would take minutes. The server's cache of verified credentials
    # then checks the shared record once, so logins measure the path after that KDF run
    # (a real user's first login after a restart costs one scrypt on a KDF thread).
    record = accounts.password_record(password)
    ids: list[int] = []
    with db.sync_transaction() as txn:
        for index in range(count):
            name = f"{prefix}{index}"
            row = accounts.get_user_by_name(txn, name)
            if row is not None:
                ids.append(row.id)
            else:
                ids.append(
                    accounts.add_user(txn, name, password, nick=name, now=now, record=record)
                )
    return ids


# --------------------------------------------------------------------------------------
# Discovery


def discover(url: str, timeout: float = 5.0) -> tuple[str, int]:
    """``GET /msg_server`` (blocking): the (host, port) of the msg server to use."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        answer = json.loads(response.read())
    if answer.get("code") != 0:
        raise BenchSetupError(f"discovery at {url} answered {answer!r}")
    return answer["priorIP"], int(answer["port"])


def remote_target(url: str, prefix: str, password: str, pid: int | None) -> Target:
    host, port = discover(url)
    return Target(host, port, url, prefix, password, pid=pid)


# --------------------------------------------------------------------------------------
# The throwaway server


def _knows_option(server_tree: str | None, option: str) -> bool:
    """Whether the server to run knows ``--OPTION`` (a baseline tree may predate it)."""
    if server_tree is None:
        return True
    tap = Path(server_tree) / "teamtalk_py" / "tap.py"
    return tap.exists() and option in tap.read_text()


#: A benchmark measures the server, not the per-user limits meant for people
#: (``msg/limits.py``: 20 messages a second, 100 MiB a day): its throwaway servers run
#: without them.
NO_USER_LIMITS = "[msg]\nmessage_rate = 0\nmax_bytes_per_day = 0\n"


def _without_user_limits(root: Path, server_tree: str | None = None) -> list[str]:
    """``--config`` turning the per-user message limits off, where the server has them
    (a baseline tree may predate them)."""
    if server_tree is not None:
        config = Path(server_tree) / "teamtalk_py" / "config.py"
        if not config.exists() or "message_rate" not in config.read_text():
            return []
    path = root / "bench.toml"
    path.write_text(NO_USER_LIMITS)
    return ["--config", str(path)]


class ThrowawayServer:
    """A ``twistd teamtalk`` subprocess on free loopback ports with a fresh data dir."""

    def __init__(
        self,
        users: int,
        *,
        prefix: str = DEFAULT_PREFIX,
        password: str = DEFAULT_PASSWORD,
        keep: bool = False,
        extra_args: list[str] | None = None,
        start_timeout: float = START_TIMEOUT,
        server_tree: str | None = None,
        user_limits: bool = False,
    ) -> None:
        """``user_limits``: keep the server's default per-user limits (the ``flood``
        scenario measures them); otherwise they are turned off."""
        #: Run the server (and create its users) from this source tree instead of the
        #: installed teamtalk_py, e.g. a `git archive` of a baseline commit.
        self.server_tree = str(Path(server_tree).resolve()) if server_tree else None
        self.users = users
        self.prefix = prefix
        self.password = password
        self.keep = keep
        self.start_timeout = start_timeout
        self.root = Path(tempfile.mkdtemp(prefix="teamtalk-bench-"))
        env = dict(os.environ)
        if self.server_tree:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [self.server_tree, env.get("PYTHONPATH")])
            )
        self.server = StandaloneServer(
            self.root,
            [
                "--advertise",
                LOOPBACK,
                *([] if user_limits else _without_user_limits(self.root, self.server_tree)),
                *(extra_args or []),
            ],
            env=env,
            preexec_fn=_raise_nofile_in_child,
            ops=_knows_option(self.server_tree, "ops-listen"),
            media=_knows_option(self.server_tree, "media-listen"),
            disk=_knows_option(self.server_tree, "disk-listen"),
            admin=_knows_option(self.server_tree, "admin-listen"),
        )

    def save_metrics(self, path: Path) -> str | None:
        """Write the running server's ``/metrics`` to ``path``; None when it has no ops
        listener (an older server tree) or does not answer."""
        if not self.server.ops:
            return None
        url = f"http://{LOOPBACK}:{self.server.ops_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
        except OSError:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return str(path)

    def start(self) -> Target:
        data_dir = self.server.data_dir
        data_dir.mkdir()
        ids = create_users_with(
            self.server_tree, self.users, self.prefix, self.password, str(data_dir)
        )
        try:
            answer = self.server.start(self.start_timeout)
        except StartupError as exc:
            self.stop()
            raise BenchSetupError(str(exc)) from exc
        return Target(
            answer["priorIP"],
            int(answer["port"]),
            f"http://{LOOPBACK}:{self.server.http_port}/msg_server",
            self.prefix,
            self.password,
            pid=self.server.process.pid,
            throwaway=True,
            data_dir=str(data_dir),
            user_ids=ids,
            disk_url=f"http://{LOOPBACK}:{self.server.ports.disk}" if self.server.disk else None,
        )

    def log_tail(self, lines: int = 30) -> str:
        return self.server.process.tail(lines)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; removes the data dir unless ``keep``."""
        code = self.server.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        return code

    def __enter__(self) -> ThrowawayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# The throwaway cluster


class ThrowawayCluster:
    """A center (route, login, file) and msg-only nodes, each a ``twistd teamtalk``
    subprocess on free loopback ports, on a fresh MariaDB database ``tt_bench_<random>``
    and a Redis key prefix of their own; ``stop`` drops the database and the keys."""

    def __init__(
        self,
        users: int,
        nodes: int = 2,
        *,
        mysql: str = DEFAULT_MYSQL,
        redis: str = DEFAULT_REDIS,
        prefix: str = DEFAULT_PREFIX,
        password: str = DEFAULT_PASSWORD,
        keep: bool = False,
        extra_args: list[str] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.users = users
        self.node_count = nodes
        self.mysql = mysql
        self.redis = redis
        self.prefix = prefix
        self.password = password
        self.keep = keep
        self.start_timeout = start_timeout
        self.database: ScratchDatabase | None = None
        self.redis_space: ScratchRedisPrefix | None = None
        #: The names the run used, kept for the report after ``stop`` removed them.
        self.db_name = ""
        self.redis_prefix = ""
        self.root = Path(tempfile.mkdtemp(prefix="teamtalk-bench-cluster-"))
        self.extra_args = [*_without_user_limits(self.root), *(extra_args or [])]
        #: The processes by name, center first.
        self.procs: dict[str, TwistdProcess] = {}
        #: The msg port of each node by name.
        self.ports: dict[str, int] = {}
        #: Each process's ops listener (``/metrics``), by process name (center too).
        self.ops_ports: dict[str, int] = {}
        self.http_port = 0
        #: The center's route port and the cluster secret's file (the route probe).
        self.route_port = 0
        self.secret_file = self.root / "cluster.secret"

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def target(self, ids: list[int], node: str = "node1") -> Target:
        """What the workers need to reach ``node`` (after ``start``, which gave ``ids``)."""
        return Target(
            LOOPBACK,
            self.ports[node],
            f"http://{LOOPBACK}:{self.http_port}/msg_server",
            self.prefix,
            self.password,
            pid=self.procs[node].pid,
            throwaway=True,
            data_dir=str(self.root),
            user_ids=ids,
        )

    def start(self) -> list[int]:
        """Create the database, the users and the processes; the user ids by index."""
        try:
            self.database = ScratchDatabase(self.mysql, "tt_bench")
            self.redis_space = ScratchRedisPrefix(self.redis, "tt_bench")
        except Unreachable as exc:
            raise BenchSetupError(str(exc)) from exc
        self.db_name, self.redis_prefix = self.database.name, self.redis_space.prefix
        ids = create_users(
            self.users,
            self.prefix,
            self.password,
            data_dir=str(self.root),
            db_url=self.database.url,
        )
        route, login, file_internal = free_port(), free_port(), free_port()
        self.http_port, self.route_port = free_port(), route
        secret_file = self.secret_file = self.root / "cluster.secret"
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
        common = [
            *("--db", self.database.url),
            *("--redis", self.redis_space.url),
            *("--advertise", LOOPBACK),
        ]
        common += ["--cluster-secret-file", str(secret_file)]
        self.ops_ports["center"] = center_ops = free_port()
        self._spawn(
            "center",
            [
                *("--services", "route,login,file"),
                *common,
                *("--route-listen", loopback_endpoint(route)),
                *("--http-listen", loopback_endpoint(self.http_port)),
                *("--login-internal-listen", loopback_endpoint(login)),
                *("--file-listen", loopback_endpoint(free_port())),
                *("--file-internal-listen", loopback_endpoint(file_internal)),
                *("--ops-listen", loopback_endpoint(center_ops)),
            ],
        )
        for n in range(1, self.node_count + 1):
            port = free_port()
            self.ports[f"node{n}"] = port
            self.ops_ports[f"node{n}"] = ops_port = free_port()
            self._spawn(
                f"node{n}",
                [
                    *("--services", "msg"),
                    *common,
                    *("--msg-listen", loopback_endpoint(port)),
                    *("--route-server", f"{LOOPBACK}:{route}"),
                    *("--login-server", f"{LOOPBACK}:{login}"),
                    *("--file-server", f"{LOOPBACK}:{file_internal}"),
                    *("--ops-listen", loopback_endpoint(ops_port)),
                ],
            )
        self._wait_registered()
        return ids

    def _spawn(self, name: str, args: list[str]) -> None:
        directory = self.root / name
        process = TwistdProcess(
            directory,
            ["--data-dir", str(directory / "var"), *args, *self.extra_args],
            preexec_fn=_raise_nofile_in_child,
        )
        self.procs[name] = process
        process.start()

    def log(self, name: str) -> str:
        return self.procs[name].output()

    def node_counter(self, name: str, metric: str) -> float | None:
        """A node's counter from its ``/metrics`` (None: the node does not export it,
        e.g. an older server tree)."""
        url = f"http://{LOOPBACK}:{self.ops_ports[name]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read().decode()
        except OSError:
            return None
        for line in body.splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
        return None

    def innodb_locks(self) -> dict[str, int]:
        """The MariaDB server's InnoDB lock counters (server-wide: other databases'
        writers count too): row lock waits, their total time in ms, deadlocks."""
        assert self.database is not None, "the cluster has not started"
        rows = self.database.query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN "
            "('Innodb_row_lock_waits', 'Innodb_row_lock_time', 'Innodb_deadlocks')"
        )
        return {str(name).lower(): int(value) for name, value in rows}

    def _registered(self) -> bool:
        """Whether the center's route and login both know every node (from its log)."""
        import re

        log = self.log("center")
        route_links = len(re.findall(r"msg node \S+ registered \d+ connections", log))
        up = set(re.findall(r"msg node 127\.0\.0\.1:(\d+) .*registered with", log))
        up -= set(re.findall(r"msg node 127\.0\.0\.1:(\d+) unregistered", log))
        return route_links >= self.node_count and {str(p) for p in self.ports.values()} <= up

    def _wait_registered(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not self._registered():
            for name, proc in self.procs.items():
                if not proc.running:
                    raise BenchSetupError(f"{name} exited at start-up:\n{proc.tail(60)}")
            if time.monotonic() > deadline:
                raise BenchSetupError(
                    f"the cluster did not come up:\n{self.procs['center'].tail(60)}"
                )
            time.sleep(0.05)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process (SIGKILL after 10 s), drop the database and the Redis
        keys, remove the directory unless ``keep``; the exit codes by name."""
        codes: dict[str, int | None] = {}
        for proc in self.procs.values():
            if proc.running:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(list(self.procs.items())):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            codes[name] = proc.returncode
        if self.database is not None:
            with contextlib.suppress(Exception):
                self.database.drop()
            self.database = None
        if self.redis_space is not None:
            with contextlib.suppress(Exception):
                self.redis_space.drop()
            self.redis_space = None
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        return codes


# --------------------------------------------------------------------------------------
# /proc readings


class ProcessStats:
    """RSS, CPU and open files of one process, read from ``/proc/<pid>``."""

    _ticks = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def _status(self) -> dict[str, str]:
        result = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                result[key] = value.strip()
        return result

    def rss_kb(self) -> int | None:
        if self.pid is None:
            return None
        try:
            return int(self._status()["VmRSS"].split()[0])
        except (OSError, KeyError, ValueError):
            return None

    def hwm_kb(self) -> int | None:
        if self.pid is None:
            return None
        try:
            return int(self._status()["VmHWM"].split()[0])
        except (OSError, KeyError, ValueError):
            return None

    def cpu_seconds(self) -> float | None:
        """utime + stime of every thread of the process."""
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # fields[0] is the state (field 3 of stat); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / self._ticks

    def open_files(self) -> int | None:
        if self.pid is None:
            return None
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None

    def nofile_limit(self) -> int | None:
        """The process's soft open-file limit, from /proc/<pid>/limits."""
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        value = line.split()[3]
                        return None if value == "unlimited" else int(value)
        except (OSError, ValueError, IndexError):
            return None
        return None


class ServerWindow:
    """Server CPU and RSS over a measured window: ``start()`` then ``stop()``."""

    def __init__(self, stats: ProcessStats) -> None:
        self.stats = stats
        self.rss_before: int | None = None
        self.cpu_before: float | None = None
        self.t_before = 0.0
        self.result: dict[str, Any] = {"pid": stats.pid}

    def start(self) -> None:
        self.rss_before = self.stats.rss_kb()
        self.cpu_before = self.stats.cpu_seconds()
        self.t_before = time.monotonic()

    def stop(self, wall: float | None = None) -> dict[str, Any]:
        cpu_after = self.stats.cpu_seconds()
        wall = wall if wall is not None else time.monotonic() - self.t_before
        cpu = None
        if cpu_after is not None and self.cpu_before is not None:
            cpu = cpu_after - self.cpu_before
        self.result.update(
            rss_kb_before=self.rss_before,
            rss_kb_after=self.stats.rss_kb(),
            cpu_seconds=round(cpu, 3) if cpu is not None else None,
            cpu_percent=round(cpu / wall * 100, 1) if cpu is not None and wall > 0 else None,
        )
        return self.result


# --------------------------------------------------------------------------------------
# py-spy


class Profiler:
    """``py-spy record`` on the server for the measured phase (``--profile FILE``).

    The output format follows the file name: ``.svg`` gives a flame graph, ``.txt``
    collapsed stacks (one ``frame;frame;… count`` line per stack, for grep and scripts),
    anything else (``.json``, ``.speedscope``) a speedscope profile.
    """

    def __init__(self, pid: int | None, output: str | None) -> None:
        self.pid = pid
        self.output = output
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None

    @staticmethod
    def executable() -> str | None:
        beside = Path(sys.executable).with_name("py-spy")
        if beside.exists():
            return str(beside)
        return shutil.which("py-spy")

    def start(self) -> None:
        if not self.output:
            return
        if self.pid is None:
            self.error = "no server PID to profile (give --server-pid with --url)"
            return
        exe = self.executable()
        if exe is None:
            self.error = "py-spy is not installed (.venv/bin/pip install py-spy)"
            return
        if self.output.endswith(".svg"):
            fmt = "flamegraph"
        elif self.output.endswith(".txt"):
            fmt = "raw"
        else:
            fmt = "speedscope"
        Path(self.output).parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "200",
                "--format",
                fmt,
                "--output",
                self.output,
                "--nonblocking",
                "--threads",
                "--idle",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)  # let it attach before the measured phase starts
        if self.proc.poll() is not None:
            _, err = self.proc.communicate()
            self.error = (err or b"").decode(errors="replace").strip()
            self.proc = None

    def stop(self) -> dict[str, Any] | None:
        if not self.output:
            return None
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                _, err = self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
            if not Path(self.output).exists():
                self.error = (err or b"").decode(errors="replace").strip()[-500:]
        ok = self.error is None and Path(self.output).exists()
        return {"file": self.output if ok else None, "error": self.error}


def url_host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or ""
