"""``twistd teamtalk`` subprocesses, as the README and the systemd unit run the server.

``TwistdProcess`` is one process with its output in a log file; ``StandaloneServer`` is
the all-in-one server on free loopback ports, started and waited for until its login
service offers the msg node (``GET /msg_server`` answers code 0).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from teamtalk_testing.ports import LOOPBACK, free_port, loopback_endpoint

__all__ = [
    "TWISTD",
    "ListenPorts",
    "StandaloneServer",
    "StartupError",
    "TwistdProcess",
    "get_msg_server",
]

#: The ``twistd`` of the running interpreter's environment (the venv's).
TWISTD = str(Path(sys.executable).with_name("twistd"))

#: What Twisted's ``CannotListenError`` says when another process holds the port.
_PORT_TAKEN = "Address already in use"


class StartupError(Exception):
    """The server exited at start-up or did not come up in time (the log tail is in the
    message)."""


class TwistdProcess:
    """One ``twistd --nodaemon --pidfile= teamtalk ARGS`` subprocess run in ``directory``.

    Every ``start()`` writes the output to a new log file there (``NAME.log``, then
    ``NAME-2.log`` …), so a restarted process keeps the earlier run's log.
    """

    def __init__(
        self,
        directory: Path,
        args: Sequence[str],
        *,
        name: str = "twistd",
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.args = list(args)
        self.name = name
        self.env = dict(env) if env is not None else None
        self.preexec_fn = preexec_fn
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.directory / f"{name}.log"

    def start(self) -> None:
        """Start the process (again, after it stopped)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        suffix = "" if self.starts == 1 else f"-{self.starts}"
        self.log_path = self.directory / f"{self.name}{suffix}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [TWISTD, "--nodaemon", "--pidfile=", "teamtalk", *self.args],
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec_fn,
            )

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def output(self) -> str:
        """Everything the current run has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def check_alive(self) -> None:
        """``AssertionError`` with the log tail when the process has exited."""
        if not self.running:
            raise AssertionError(f"{self.name} exited:\n{self.tail()}")

    def send_signal(self, sig: int) -> None:
        self._started().send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        return self._started().wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit status (None if never
        started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _started(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc


def get_msg_server(http_port: int, host: str = LOOPBACK, timeout: float = 5.0) -> Any:
    """``GET /msg_server`` (blocking): the decoded JSON answer, whatever its code."""
    url = f"http://{host}:{http_port}/msg_server"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class ListenPorts:
    """A free loopback port for every listener of an all-in-one server."""

    msg: int
    http: int
    file: int
    route: int
    login_internal: int
    file_internal: int
    ops: int
    media: int
    disk: int
    admin: int

    @classmethod
    def pick(cls) -> ListenPorts:
        return cls(*(free_port() for _ in fields(cls)))

    def args(
        self, *, ops: bool = True, media: bool = True, disk: bool = True, admin: bool = True
    ) -> list[str]:
        """The command-line options that bind every listener to its port on 127.0.0.1
        (``ops=False`` / ``media=False`` / ``disk=False`` / ``admin=False``: not that
        listener, for a server older than ``--ops-listen`` / ``--media-listen`` /
        ``--disk-listen`` / ``--admin-listen``)."""
        return [
            *("--msg-listen", loopback_endpoint(self.msg)),
            *("--http-listen", loopback_endpoint(self.http)),
            *("--file-listen", loopback_endpoint(self.file)),
            *("--route-listen", loopback_endpoint(self.route)),
            *("--login-internal-listen", loopback_endpoint(self.login_internal)),
            *("--file-internal-listen", loopback_endpoint(self.file_internal)),
            *(("--ops-listen", loopback_endpoint(self.ops)) if ops else ()),
            *(("--media-listen", loopback_endpoint(self.media)) if media else ()),
            *(("--disk-listen", loopback_endpoint(self.disk)) if disk else ()),
            *(("--admin-listen", loopback_endpoint(self.admin)) if admin else ()),
        ]


class StandaloneServer:
    """Every service in one ``twistd teamtalk`` on free loopback ports, run in
    ``directory`` (data in ``directory/var`` unless ``data_dir`` says otherwise).

    ``args`` come after the listener options, so they may override them. ``start()``
    returns once ``/msg_server`` offers the msg node; when another process took one of the
    ports between ``free_port()`` and the bind, it starts again on fresh ports.
    """

    def __init__(
        self,
        directory: Path,
        args: Sequence[str] = (),
        *,
        data_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], object] | None = None,
        attempts: int = 3,
        ops: bool = True,
        media: bool = True,
        disk: bool = True,
        admin: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.ops = ops
        self.media = media
        self.disk = disk
        self.admin = admin
        self.data_dir = Path(data_dir) if data_dir is not None else self.directory / "var"
        self.extra_args = list(args)
        self.attempts = attempts
        self.ports = ListenPorts.pick()
        self.process = TwistdProcess(self.directory, [], env=env, preexec_fn=preexec_fn)

    @property
    def msg_port(self) -> int:
        return self.ports.msg

    @property
    def http_port(self) -> int:
        return self.ports.http

    @property
    def ops_port(self) -> int:
        return self.ports.ops

    def start(self, timeout: float = 60.0) -> Any:
        """Start and wait until the msg node is offered; the ``/msg_server`` answer.
        ``StartupError`` when the server exits or does not come up within ``timeout``
        (a start that takes 2 s on a quiet box took over 20 s on a loaded 2-core one; a
        server that cannot start exits at once and fails sooner)."""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self.ports = ListenPorts.pick()
            self.process.args = [
                "--data-dir",
                str(self.data_dir),
                *self.ports.args(ops=self.ops, media=self.media, disk=self.disk, admin=self.admin),
                *self.extra_args,
            ]
            self.process.start()
            try:
                return self._wait_until_offered(timeout)
            except StartupError:
                if self.process.running or _PORT_TAKEN not in self.process.output():
                    self.process.stop()
                    raise
        raise StartupError(f"ports kept being taken:\n{self.process.tail()}")

    def _wait_until_offered(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while self.process.running:
            try:
                answer = get_msg_server(self.http_port, timeout=2)
                # Only our own msg node: had another process taken our HTTP port, its
                # server would answer with its own msg port while ours exits.
                if answer.get("code") == 0 and self._offers_our_msg_port(answer):
                    return answer
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise StartupError(f"the server did not come up:\n{self.process.tail()}")
            time.sleep(0.05)
        raise StartupError(f"the server exited at start-up:\n{self.process.tail()}")

    def _offers_our_msg_port(self, answer: Any) -> bool:
        """Whether ``answer`` names the msg port this server was told to listen on (a
        config file given in ``args`` may move it: then any port is ours)."""
        if "--msg-listen" in self.extra_args or "--config" in self.extra_args:
            return True
        return bool(str(answer.get("port")) == str(self.ports.msg))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout``); the exit status."""
        return self.process.stop(timeout)
