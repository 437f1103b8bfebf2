"""A cluster of real ``twistd teamtalk`` processes and the faults a test can inject.

``ClusterProcesses`` runs a *center* (``--services route,login,file``) and msg-only nodes,
each a ``TwistdProcess`` on free loopback ports, all on one MariaDB database and one
Redis, with a cluster secret and a config of their own (per-user limits off: a fault test
is a load test). The faults are what operators meet:

* ``kill(name)``: SIGKILL (a crash, an OOM kill); ``restart(name)`` starts it again;
* ``pause(name)`` / ``resume(name)``: SIGSTOP / SIGCONT (a hung process, a stuck disk);
* Redis and the database are taken away with ``faults.OwnRedis`` and ``faults.TcpProxy``,
  passed in as the URLs the processes use (never the machine's shared servers).

``memory(name)`` reads a process's resident and peak memory from ``/proc``. Everything
here blocks; tests on the reactor poll the ``registered()``-style predicates instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teamtalk_testing.metrics import metric_value
from teamtalk_testing.ports import LOOPBACK, free_port, loopback_endpoint
from teamtalk_testing.twistd import TwistdProcess, get_msg_server

__all__ = ["ClusterProcesses", "NodeProcess", "process_memory"]

#: Limits are on by default (20 messages/s per user): a fault test sends more.
LOAD_CONFIG = """\
[msg]
message_rate = 0
max_bytes_per_day = 0
"""


@dataclass
class NodeProcess:
    process: TwistdProcess
    #: The client (msg) port, or the HTTP port for the center.
    port: int
    ops_port: int


def process_memory(pid: int) -> tuple[int, int]:
    """(resident, peak resident) in KiB of a running process, from /proc."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


class ClusterProcesses:
    """The center and the msg nodes (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        db_url: str,
        redis_url: str,
        secret: str,
        config: str = LOAD_CONFIG,
        center_args: tuple[str, ...] = (),
    ) -> None:
        """``center_args``: more options for the center (they win over the defaults)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret_file = self.root / "cluster.secret"
        self.secret_file.write_text(secret)
        self.secret_file.chmod(0o600)
        self.config_file = self.root / "teamtalk.toml"
        self.config_file.write_text(config)
        self.db_url = db_url
        self.redis_url = redis_url
        self.route_port = free_port()
        self.login_internal_port = free_port()
        self.file_internal_port = free_port()
        http, ops = free_port(), free_port()
        center_dir = self.root / "center"
        self.center = NodeProcess(
            TwistdProcess(
                center_dir,
                [
                    *self._common("center"),
                    *("--services", "route,login,file"),
                    *("--route-listen", loopback_endpoint(self.route_port)),
                    *("--http-listen", loopback_endpoint(http)),
                    *("--login-internal-listen", loopback_endpoint(self.login_internal_port)),
                    *("--file-listen", loopback_endpoint(free_port())),
                    *("--file-internal-listen", loopback_endpoint(self.file_internal_port)),
                    *("--ops-listen", loopback_endpoint(ops)),
                    *center_args,
                ],
                name="center",
            ),
            http,
            ops,
        )
        self.nodes: dict[str, NodeProcess] = {}
        #: Processes stopped with ``pause`` (their HTTP endpoints answer nothing).
        self.paused: set[str] = set()

    def _common(self, name: str) -> list[str]:
        return [
            *("--config", str(self.config_file)),
            *("--cluster-secret-file", str(self.secret_file)),
            *("--data-dir", str(self.root / name / "var")),
            *("--db", self.db_url),
            *("--redis", self.redis_url),
        ]

    def add_node(self, name: str, *args: str) -> NodeProcess:
        """A msg node (not started); ``args``: more options (they win over the defaults)."""
        port, ops = free_port(), free_port()
        node = NodeProcess(
            TwistdProcess(
                self.root / name,
                [
                    *self._common(name),
                    *("--services", "msg"),
                    *("--msg-listen", loopback_endpoint(port)),
                    *("--route-server", f"{LOOPBACK}:{self.route_port}"),
                    *("--login-server", f"{LOOPBACK}:{self.login_internal_port}"),
                    *("--file-server", f"{LOOPBACK}:{self.file_internal_port}"),
                    *("--ops-listen", loopback_endpoint(ops)),
                    *args,
                ],
                name=name,
            ),
            port,
            ops,
        )
        self.nodes[name] = node
        return node

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, names: tuple[str, ...] = ("node1", "node2"), timeout: float = 90.0) -> None:
        """Start the center and the named nodes; return once route and login know them
        (2 s on a quiet box; over 30 s was seen beside a full parallel test run)."""
        self.center.process.start()
        for name in names:
            (self.nodes.get(name) or self.add_node(name)).process.start()
        deadline = time.monotonic() + timeout
        while not self.registered(list(names)):
            for part in (self.center, *self.nodes.values()):
                part.process.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes not registered:\n{self.center.process.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.process.running:
                os.kill(node.process.pid, signal.SIGCONT)  # a paused node cannot stop
            node.process.stop()
        self.center.process.stop()

    def port(self, name: str) -> int:
        return self.nodes[name].port

    def process(self, name: str) -> TwistdProcess:
        return self.center.process if name == "center" else self.nodes[name].process

    # -- faults ------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        self.process(name).kill()

    def restart(self, name: str) -> None:
        self.process(name).start()

    def pause(self, name: str) -> None:
        os.kill(self.process(name).pid, signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        os.kill(self.process(name).pid, signal.SIGCONT)
        self.paused.discard(name)

    def memory(self, name: str) -> tuple[int, int]:
        return process_memory(self.process(name).pid)

    # -- what the center knows -----------------------------------------------------------

    def discovery(self) -> Any:
        return get_msg_server(self.center.port)

    def ops(self, name: str, path: str) -> Any:
        return self.ops_status(name, path)[1]

    def ops_status(self, name: str, path: str) -> tuple[int, Any]:
        """(HTTP status, JSON body) of an ops endpoint of the center or a node."""
        part = self.center if name == "center" else self.nodes[name]
        url = f"http://{LOOPBACK}:{part.ops_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:  # /ready answers 503 with a body
            return error.code, json.loads(error.read())

    def metric(self, name: str, metric: str) -> float:
        """The sum of a metric's samples in a process's /metrics (0 when absent)."""
        part = self.center if name == "center" else self.nodes[name]
        return metric_value(part.ops_port, metric) or 0.0

    def route_users(self) -> set[int]:
        """Users the center's route service knows to be connected to some node."""
        return {
            connection["user_id"]
            for link in self.ops("center", "/online")["route"]
            for connection in link["connections"]
        }

    def route_links(self) -> int:
        """msg nodes linked to the center's route service right now."""
        return len(self.ops("center", "/online")["route"])

    def offered_ports(self) -> set[int]:
        """msg ports the center's login service offers right now (from its log)."""
        log = self.center.process.output()
        offered: set[int] = set()
        for match in re.finditer(r"msg node 127\.0\.0\.1:(\d+) (.*)", log):
            port, rest = int(match.group(1)), match.group(2)
            if "unregistered" in rest:
                offered.discard(port)
            elif "registered with" in rest:
                offered.add(port)
        return offered

    def registered(self, names: list[str]) -> bool:
        """Whether route and login both know every named node (and route no other)."""
        try:
            links = self.route_links()
        except OSError:
            return False
        return links == len(names) and {self.port(n) for n in names} <= self.offered_ports()
