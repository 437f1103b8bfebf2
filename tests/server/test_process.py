"""The ``twistd teamtalk`` process as an operator and systemd see it: exit status and the
line saying why it could not start, SIGHUP reloads, sd_notify readiness and watchdog,
``--version``.

Real subprocesses, started the way the systemd unit starts them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from teamtalk_testing import (
    TWISTD,
    ListenPorts,
    StandaloneServer,
    TwistdProcess,
    free_port,
    get_msg_server,
    loopback_endpoint,
)
from tests.support import TestCase

START_TIMEOUT = 30.0


def run_twistd(tmp_path: Path, *args: str, env: dict | None = None) -> TwistdProcess:
    """``twistd --nodaemon --pidfile= teamtalk --data-dir DIR ARGS``, started; its output
    in ``DIR/twistd.log``."""
    process = TwistdProcess(tmp_path, ["--data-dir", str(tmp_path / "var"), *args], env=env)
    process.start()
    return process


def private_listeners() -> list[str]:
    """Every listener on a free loopback port (so a test never takes a default port)."""
    return ListenPorts.pick().args()


def with_listener(args: list[str], option: str, value: str) -> list[str]:
    index = args.index(option)
    return args[: index + 1] + [value] + args[index + 2 :]


def wait_for_line(server: StandaloneServer, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = server.process.output()
        if text in output:
            return output
        if not server.process.running:
            break
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{server.process.tail()}")


class StartFailureTests(TestCase):
    def test_every_start_failure_exits_non_zero_with_the_cause_as_the_last_line(self):
        """A port in use, a bad endpoint string, an unreachable database, an unopenable
        SQLite file and an unusable data dir each end the process with a non-zero
        status and a last line naming the cause; nothing stays half up."""
        tmp = self.tmp_path()
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        self.addCleanup(busy.close)
        busy_port = busy.getsockname()[1]
        dead_db_port = free_port()
        (tmp / "file-as-dir").mkdir()
        (tmp / "file-as-dir" / "var").write_text("not a directory")
        (tmp / "db-is-dir" / "var" / "teamtalk.sqlite3").mkdir(parents=True)
        # Each process runs at once beside the others: each gets its own ports.
        cases = {
            # name: (extra args, expected status, expected text in the last line)
            "port-in-use": (
                with_listener(private_listeners(), "--msg-listen", loopback_endpoint(busy_port)),
                1,
                f"cannot start msg: cannot listen on tcp:{busy_port}:interface=127.0.0.1: "
                "[Errno 98] Address already in use",
            ),
            "bad-endpoint-type": (
                with_listener(private_listeners(), "--msg-listen", "tcpp:8000"),
                78,
                "msg.listen: bad endpoint 'tcpp:8000'",
            ),
            "port-out-of-range": (
                with_listener(private_listeners(), "--http-listen", "tcp:99999"),
                78,
                "login.http_listen: bad endpoint 'tcp:99999': port 99999 is not in 0..65535",
            ),
            "unreachable-database": (
                [*private_listeners(), "--db", f"mysql://root@127.0.0.1:{dead_db_port}/tt_absent"],
                1,
                f"cannot start store: cannot open mysql://root@127.0.0.1:{dead_db_port}/"
                "tt_absent: Can't connect",
            ),
            "file-as-dir": (private_listeners(), 1, "it exists and is not a directory"),
            "db-is-dir": (private_listeners(), 1, "teamtalk.sqlite3: Is a directory"),
        }
        procs = {}
        for name, (args, _, _) in cases.items():
            directory = tmp / name
            directory.mkdir(exist_ok=True)
            procs[name] = run_twistd(directory, *args)
        for name, (_, status, text) in cases.items():
            procs[name].wait(timeout=START_TIMEOUT)
            out = procs[name].output()
            lines = out.strip().splitlines()
            assert procs[name].returncode == status, (name, out)
            assert text in lines[-1], (name, out)
            assert "Traceback" not in out, (name, out)
            assert sum(text in line for line in lines) <= 2, (name, out)

    def test_config_error_is_one_line_without_the_usage_page(self):
        """A bad value in the config file prints only the error (exit 78)."""
        tmp = self.tmp_path()
        config = tmp / "teamtalk.toml"
        config.write_text("[msg]\nmax_connections = 1.5\n")
        proc = run_twistd(tmp, "--config", str(config))
        assert proc.wait(timeout=START_TIMEOUT) == 78
        assert proc.output().strip().splitlines() == [
            "twistd teamtalk: msg.max_connections: expected int, got 1.5"
        ]

    def test_version_is_teamtalk_pys_own(self):
        """twistd teamtalk --version names teamtalk_py and its version."""
        from teamtalk_py import __version__

        done = subprocess.run(
            [TWISTD, "teamtalk", "--version"], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0
        assert done.stdout.startswith(f"teamtalk_py {__version__} (Twisted ")


class ReloadTests(TestCase):
    def test_sighup_applies_what_it_can_and_names_what_needs_a_restart(self):
        """SIGHUP re-reads the config file: the advertised address and the log level
        change at once, an AES key change is logged as needing a restart, a broken
        file keeps the running config; the server never exits."""
        tmp = self.tmp_path()
        config = tmp / "teamtalk.toml"
        config.write_text('[server]\nadvertise = "127.0.0.1"\n')
        server = StandaloneServer(tmp, ["--config", str(config)])
        self.addCleanup(server.stop)
        assert server.start()["priorIP"] == "127.0.0.1"

        config.write_text(
            '[server]\nadvertise = "127.0.0.2"\n[msg]\naes_key = "%s"\n[log]\nlevel = "debug"\n'
            % ("k" * 32)
        )
        server.process.send_signal(signal.SIGHUP)
        output = wait_for_line(server, "reloaded the config")
        assert (
            "reloaded the config: server.advertise, log.level; needs a restart: msg.aes_key"
            in output
        )
        assert get_msg_server(server.http_port)["priorIP"] == "127.0.0.2"

        config.write_text("[msg]\nmax_connections = -1\n")
        server.process.send_signal(signal.SIGHUP)
        wait_for_line(server, "reload failed, keeping the running config")
        assert "msg.max_connections: must be greater than 0" in server.process.output()
        assert get_msg_server(server.http_port)["priorIP"] == "127.0.0.2"
        assert server.process.running

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0


class SystemdNotifyTests(TestCase):
    def test_ready_after_listeners_bind_watchdog_pings_reload_and_stop(self):
        """Under Type=notify the server says READY=1 only once clients can connect,
        pings the watchdog, brackets a reload with RELOADING=1/READY=1 and says
        STOPPING=1 on SIGTERM."""
        tmp = self.tmp_path()
        address = str(tmp / "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        sock.settimeout(START_TIMEOUT)
        self.addCleanup(sock.close)
        listeners = private_listeners()
        msg_port = int(listeners[listeners.index("--msg-listen") + 1].split(":")[1])
        env = dict(os.environ, NOTIFY_SOCKET=address, WATCHDOG_USEC="400000")
        proc = run_twistd(tmp, *listeners, env=env)
        self.addCleanup(proc.kill)

        def next_message() -> dict[str, str]:
            data = sock.recv(4096).decode()
            return dict(line.split("=", 1) for line in data.splitlines())

        first = next_message()
        assert first["READY"] == "1", first
        socket.create_connection(("127.0.0.1", msg_port), timeout=5).close()
        watchdogs = [next_message() for _ in range(3)]
        assert all(m == {"WATCHDOG": "1"} for m in watchdogs), watchdogs

        proc.send_signal(signal.SIGHUP)
        seen = [next_message() for _ in range(6)]
        reloading = next(i for i, m in enumerate(seen) if m.get("RELOADING") == "1")
        assert "MONOTONIC_USEC" in seen[reloading]
        assert any(m.get("READY") == "1" for m in seen[reloading + 1 :]), seen

        proc.send_signal(signal.SIGTERM)
        while "STOPPING" not in (message := next_message()):
            assert message == {"WATCHDOG": "1"}, message
        assert proc.wait(timeout=10) == 0


class PrivateFilesTests(TestCase):
    def test_data_dir_is_0700_and_database_files_0600_whatever_the_umask(self):
        """With umask 000 the data dir is still 0700 and every SQLite file 0600, also
        when an existing dir and database had wider modes."""
        from teamtalk_py.config import Config
        from teamtalk_py.datadir import prepare_data_dir
        from teamtalk_py.store.database import open_database

        old_umask = os.umask(0)
        self.addCleanup(os.umask, old_umask)
        data_dir = self.tmp_path() / "var"
        config = Config().with_overrides({"server.data_dir": str(data_dir)})
        prepare_data_dir(config)
        db = open_database(None, data_dir, reactor=None)
        db.migrate()
        with db.sync_transaction() as txn:
            txn.execute("SELECT 1")
        files = sorted(p.name for p in data_dir.iterdir())
        assert "teamtalk.sqlite3" in files
        assert data_dir.stat().st_mode & 0o777 == 0o700
        for name in files:
            assert (data_dir / name).stat().st_mode & 0o777 == 0o600, name

        os.chmod(data_dir, 0o755)
        os.chmod(data_dir / "teamtalk.sqlite3", 0o644)
        prepare_data_dir(config)
        open_database(None, data_dir, reactor=None)
        assert data_dir.stat().st_mode & 0o777 == 0o700
        assert (data_dir / "teamtalk.sqlite3").stat().st_mode & 0o777 == 0o600
