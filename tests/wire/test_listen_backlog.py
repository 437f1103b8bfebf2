"""The listen backlog of a real ``twistd teamtalk`` process: every listener asks the kernel
for ``server.listen_backlog`` (1024); a burst of 2,000 simultaneous connects all reach the
msg service, and a burst of 1,000 without the kernel dropping one for a full accept queue.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import time

from teamtalk_py.config import with_backlog
from teamtalk_testing import StandaloneServer
from teamtalk_testing.metrics import metric_value
from tests.support import TestCase

#: Fewer than the backlog (1024): however late the server gets to accept on a loaded
#: machine, a queue of 1024 holds them all, where Twisted's default of 50 would not.
BURST = 1000
#: How long the burst may take to be accepted: long enough for a loaded machine; a
#: dropped SYN is caught by the kernel's counters, not by the clock.
ACCEPT_DEADLINE = 60.0


def ss_listener(port: int) -> list[str]:
    """``ss``'s line for the socket listening on ``port`` of this host, split."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def listen_backlog(port: int, wait: float = 10.0) -> int:
    """The backlog of the socket listening on ``port`` (``ss``: Send-Q of a listener).

    ``StandaloneServer.start`` returns once discovery answers; a service started after
    that (disk, media, admin behind the store) may bind a moment later, so its listener
    is waited for (up to ``wait`` seconds) before its backlog is read."""
    deadline = time.monotonic() + wait
    while not ((fields := ss_listener(port)) and fields[0] == "LISTEN"):
        assert time.monotonic() < deadline, f"ss shows no listener on port {port}"
        time.sleep(0.05)
    return int(fields[2])


def listen_drops() -> int:
    """The kernel's count of connections refused for a full accept queue, in this network
    namespace (``TcpExt: ListenOverflows + ListenDrops`` of /proc/net/netstat)."""
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("TcpExt:")]
    counters = dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))
    return counters["ListenOverflows"] + counters["ListenDrops"]


def msg_sockets(ops_port: int) -> int:
    """``teamtalk_msg_sockets`` of the server's /metrics."""
    value = metric_value(ops_port, "teamtalk_msg_sockets")
    assert value is not None, "no teamtalk_msg_sockets in /metrics"
    return int(value)


class ListenBacklogTests(TestCase):
    def need_ss(self) -> None:
        """Skip where ``ss`` cannot list sockets (a sandbox without sock_diag): shown with
        a listener of the test's own, so a server that did not listen still fails."""
        with socket.socket() as own:
            own.bind(("127.0.0.1", 0))
            own.listen(7)
            if ss_listener(own.getsockname()[1])[:1] != ["LISTEN"]:
                self.skipTest("ss cannot list this host's listening sockets here")

    def start_server(self, *args: str) -> StandaloneServer:
        tmp = self.tmp_path()
        server = StandaloneServer(tmp, args)
        self.addCleanup(server.stop)
        server.start()
        return server

    def test_every_listener_asks_for_the_configured_backlog(self):
        """Each TCP listener of the all-in-one server has backlog 1024 (the default) in
        the kernel (capped by net.core.somaxconn)."""
        self.need_ss()
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
        server = self.start_server()
        for name, port in vars(server.ports).items():
            assert listen_backlog(port) == min(1024, somaxconn), name

    def test_the_backlog_is_configurable(self):
        """``server.listen_backlog`` in the config file sets every listener's backlog."""
        self.need_ss()
        tmp = self.tmp_path()
        config = tmp / "backlog.toml"
        config.write_text("[server]\nlisten_backlog = 300\n")
        server = StandaloneServer(tmp, ["--config", str(config)])
        self.addCleanup(server.stop)
        server.start()
        for name, port in vars(server.ports).items():
            assert listen_backlog(port) == 300, name

    def test_an_endpoint_with_its_own_backlog_keeps_it(self):
        """``:backlog=N`` in an endpoint string wins; endpoints without a socket of their
        own (systemd's) get none."""
        assert with_backlog("tcp:8000:interface=127.0.0.1", 1024) == (
            "tcp:8000:interface=127.0.0.1:backlog=1024"
        )
        assert with_backlog("tcp:8000:backlog=77", 1024) == "tcp:8000:backlog=77"
        assert with_backlog("systemd:domain=INET:index=0", 1024) == ("systemd:domain=INET:index=0")

    def fire(self, port: int, count: int) -> None:
        """``count`` non-blocking connects to ``port`` of 127.0.0.1, fired at once."""
        clients = []
        self.addCleanup(lambda: [c.close() for c in clients])
        for _ in range(count):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setblocking(False)
            status = client.connect_ex(("127.0.0.1", port))
            assert status in (0, errno.EINPROGRESS), status
            clients.append(client)

    def wait_for_sockets(self, server: StandaloneServer, count: int) -> None:
        started = time.monotonic()
        reached = 0
        while time.monotonic() - started < ACCEPT_DEADLINE:
            reached = msg_sockets(server.ops_port)
            if reached == count:
                return
            time.sleep(0.02)
        raise AssertionError(f"{reached} of {count} connects reached the server")

    def test_a_burst_of_2000_simultaneous_connects_all_reach_the_server(self):
        """2,000 non-blocking connects fired at once are all accepted by the msg service
        and held open (no connection cap or accept error turns any away)."""
        server = self.start_server()
        assert msg_sockets(server.ops_port) == 0
        self.fire(server.msg_port, 2 * BURST)
        self.wait_for_sockets(server, 2 * BURST)

    def test_a_burst_within_the_backlog_loses_no_connect(self):
        """1,000 connects fired at once: the kernel drops none of them for a full accept
        queue, however late the server gets to accept them (with Twisted's default
        backlog of 50 it drops hundreds, each retried a second later)."""
        server = self.start_server()
        assert msg_sockets(server.ops_port) == 0
        drops_before = listen_drops()
        self.fire(server.msg_port, BURST)
        self.wait_for_sockets(server, BURST)
        assert listen_drops() == drops_before, "the kernel dropped connects of the burst"
