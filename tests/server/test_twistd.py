"""The real ``twistd teamtalk`` process: start-up, discovery, heartbeat, bad input, SIGTERM.

These tests run the installed entry point in a subprocess, the way the README and the
systemd unit do, and talk to it over loopback with plain blocking sockets.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

from teamtalk_testing import TWISTD, ListenPorts, StandaloneServer, free_port
from teamtalk_testing.metrics import metric_value
from tests.support import TestCase

REPO = Path(__file__).resolve().parents[2]


def heartbeat(seq: int) -> bytes:
    return struct.pack(">IHHHHHH", 16, 1, 0, 7, 0x0701, seq, 0)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class TwistdProcessTests(TestCase):
    def test_fresh_server_answers_discovery_heartbeat_and_rejects_bad_peers(self):
        """Discovery gives code 0 with the msg node; heartbeats echo; garbage closes only the
        offending connection; SIGTERM exits 0 within 5 s."""
        server = StandaloneServer(self.tmp_path())
        self.addCleanup(server.stop)
        answer = server.start()
        assert answer["code"] == 0
        assert answer["priorIP"] == "127.0.0.1"
        assert answer["port"] == str(server.msg_port)

        good = socket.create_connection(("127.0.0.1", server.msg_port), timeout=5)
        good.sendall(heartbeat(11))
        assert recv_exactly(good, 16) == heartbeat(11)

        oversized = socket.create_connection(("127.0.0.1", server.msg_port), timeout=5)
        oversized.sendall(struct.pack(">IHHHHHH", 0x7FFFFFFF, 1, 0, 7, 0x0701, 1, 0))
        assert oversized.recv(16) == b""  # closed by the server

        garbage = socket.create_connection(("127.0.0.1", server.msg_port), timeout=5)
        garbage.sendall(b"\x00\x00\x00\x03garbage-garbage-garbage")
        assert garbage.recv(16) == b""

        good.sendall(heartbeat(12))
        assert recv_exactly(good, 16) == heartbeat(12)
        good.close()
        oversized.close()
        garbage.close()

        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
        output = server.process.output()
        assert "PDU length 2147483647 over the limit" in output
        assert "bad PDU length 3" in output

    def test_the_start_up_heap_is_frozen_once_every_service_has_started(self):
        """Once started, the process has moved what start-up made out of the collector's
        reach (services.freeze_startup_heap): modules, protobuf descriptors and Twisted
        are far more than ten thousand objects, and /metrics says how many."""
        server = StandaloneServer(self.tmp_path())
        self.addCleanup(server.stop)
        server.start()
        frozen = None
        for _ in range(200):  # the ops listener may answer before the last service started
            frozen = metric_value(server.ops_port, "teamtalk_gc_frozen_objects")
            if frozen:
                break
            time.sleep(0.05)
        assert frozen is not None and frozen > 10_000

    def test_a_port_taken_before_twistd_binds_it_costs_a_restart_not_the_run(self):
        """StandaloneServer starts again on fresh ports when a picked one was taken in
        between (as other test runs on the machine may do); the first run's log says why."""
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        self.addCleanup(taken.close)
        others = len(dataclasses.fields(ListenPorts)) - 1
        first = ListenPorts(taken.getsockname()[1], *(free_port() for _ in range(others)))
        picks = [first]
        pick = ListenPorts.pick
        self.patch(ListenPorts, "pick", staticmethod(lambda: picks.pop() if picks else pick()))
        server = StandaloneServer(self.tmp_path())
        self.addCleanup(server.stop)
        answer = server.start()
        assert (server.process.starts, answer["port"]) == (2, str(server.msg_port))
        assert server.msg_port != first.msg
        first_log = (server.directory / "twistd.log").read_text()
        assert "Address already in use" in first_log

    def test_loopback_advertise_with_public_listener_warns_loudly(self):
        """The start-up log warns when clients would be told 127.0.0.1 by a public server."""
        tmp_path = self.tmp_path()
        srv = StandaloneServer(tmp_path)
        try:
            srv.start()
        finally:
            srv.stop()
        # All listeners in the fixture are loopback-only: no warning.
        assert "advertising the loopback address" not in srv.process.output()
        public = StandaloneServer(tmp_path / "public", ["--msg-listen", f"tcp:{free_port()}"])
        try:
            public.start()
        finally:
            public.stop()
        assert "advertising the loopback address 127.0.0.1" in public.process.output()

    def test_internal_ports_stay_closed_unless_configured_then_need_the_secret(self):
        """The single-process default opens no server-to-server port; naming one makes
        the server generate a private secret into its data dir and require it there."""
        tmp_path = self.tmp_path()
        closed = ["--route-listen", "", "--login-internal-listen", "", "--file-internal-listen", ""]
        srv = StandaloneServer(tmp_path, closed)
        try:
            srv.start()
        finally:
            srv.stop()
        assert "route listening" not in srv.process.output()
        assert not (tmp_path / "var" / "cluster.secret").exists()
        opened = StandaloneServer(tmp_path / "opened")
        try:
            opened.start()
            secret = tmp_path / "opened" / "var" / "cluster.secret"
            assert oct(secret.stat().st_mode & 0o777) == "0o600"
            raw = socket.create_connection(("127.0.0.1", opened.ports.route), timeout=5)
            challenge = recv_exactly(raw, 48)
            assert struct.unpack(">HH", challenge[8:12]) == (7, 0x07A0)
            raw.sendall(heartbeat(1))
            assert raw.recv(16) == b""  # closed: nothing before the handshake
            raw.close()
        finally:
            opened.stop()
        assert "route link with 127.0.0.1" in opened.process.output()

    def test_a_node_of_a_cluster_without_the_secret_exits_saying_why(self):
        """A msg-only node linked to route elsewhere will not start without the secret:
        one line naming the key, a non-zero status."""
        result = subprocess.run(
            [TWISTD, "--nodaemon", "--pidfile=", "teamtalk", "--services", "msg",
             "--route-server", "127.0.0.1:1", "--data-dir", str(self.tmp_path())],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1
        assert "cluster.secret: this node links to other nodes" in result.stderr

    def test_generated_config_is_accepted_back(self):
        """--generate-config prints a config the server starts with."""
        tmp_path = self.tmp_path()
        generated = subprocess.run(
            [TWISTD, "teamtalk", "--generate-config"], capture_output=True, text=True, check=True
        ).stdout
        assert "[msg]" in generated and "max_connections = 100000" in generated
        config = tmp_path / "teamtalk.toml"
        config.write_text(generated)
        srv = StandaloneServer(tmp_path, ["--config", str(config)])
        try:
            answer = srv.start()
            assert answer["port"] == str(srv.msg_port)  # command line wins over the file
        finally:
            srv.stop()

    def test_help_lists_every_option(self):
        """twistd teamtalk --help documents the options deployment scripts use."""
        out = subprocess.run(
            [TWISTD, "teamtalk", "--help"], capture_output=True, text=True, check=True
        ).stdout
        for option in (
            "--config",
            "--data-dir",
            "--msg-listen",
            "--http-listen",
            "--file-listen",
            "--route-listen",
            "--advertise",
            "--generate-config",
            "--services",
            "--db",
            "--redis",
            "--route-server",
            "--login-server",
            "--file-server",
            "--login-internal-listen",
            "--file-internal-listen",
            "--ops-listen",
            "--log-level",
            "--log-format",
            "--version",
        ):
            assert option in out, option

    def test_stale_or_corrupt_plugin_cache_does_not_stop_startup(self):
        """A garbage or outdated dropin.cache next to the plugin is ignored or rebuilt."""
        tmp_path = self.tmp_path()
        plugins = tmp_path / "site" / "twisted" / "plugins"
        plugins.mkdir(parents=True)
        shutil.copy(REPO / "twisted" / "plugins" / "teamtalk_plugin.py", plugins)
        cache = plugins / "dropin.cache"
        cache.write_bytes(b"\x80\x04not a pickle at all")
        old = time.time() - 86400
        os.utime(cache, (old, old))
        env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
        result = subprocess.run(
            [TWISTD, "teamtalk", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert "--msg-listen" in result.stdout
        if os.geteuid() != 0:  # root ignores permission bits, so only meaningful otherwise
            os.chmod(plugins, 0o555)
            try:
                result = subprocess.run(
                    [TWISTD, "teamtalk", "--help"], capture_output=True, text=True, env=env
                )
                assert result.returncode == 0, result.stderr
            finally:
                os.chmod(plugins, 0o755)
