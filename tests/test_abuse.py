"""Abuse against the real ``twistd teamtalk`` process: a disk-filling message flood and a
flooding slow reader next to people chatting.

The hostile clients run as their own processes (``tests/flood_client.py``); the people
they must not hurt are measured from this process over loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import defer, reactor

from teamtalk_client import TeamTalkSession, connect
from teamtalk_py.store import accounts
from teamtalk_py.store.database import open_database
from teamtalk_testing import StandaloneServer
from tests.cluster_support import sleep
from tests.support import TestCase

PASSWORD = "secret"
REPO = Path(__file__).resolve().parents[1]
#: The bound the issue sets for other users while one floods (this 2-core machine).
P99_BOUND = 0.100


def add_users(data_dir: Path, *names: str) -> dict[str, int]:
    """Accounts in a server's SQLite store, before it starts."""
    db = open_database(None, data_dir, reactor=None)
    db.migrate()
    with db.sync_transaction() as txn:
        return {n: accounts.add_user(txn, n, PASSWORD, now=int(time.time())) for n in names}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class FloodTests(TestCase):
    async def test_a_flood_is_throttled_at_once_and_others_keep_their_latency(self):
        """Two hostile clients send 60 KB messages as fast as they can for 6 s, one of
        them never reading: each is held to its burst (100) and 20 messages a second
        from the first second on, and meanwhile another user's messages are acked with a
        p99 under 100 ms."""
        tmp = self.tmp_path()
        data_dir = tmp / "var"
        people = ("carol", "dave", "erin", "frank")
        ids = add_users(data_dir, "mallet", "stall", "victim", *people)
        server = StandaloneServer(tmp, data_dir=data_dir)
        self.addCleanup(server.stop)
        server.start()
        seconds = 6.0
        floods = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.flood_client",
                    str(server.msg_port),
                    name,
                    PASSWORD,
                    str(ids["victim"]),
                    str(seconds),
                    mode,
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for name, mode in (("mallet", "flood"), ("stall", "stall"))
        ]
        self.addCleanup(lambda: [p.kill() for p in floods if p.poll() is None])
        sessions = {}
        for name in people:
            sessions[name] = TeamTalkSession(await connect(reactor, "127.0.0.1", server.msg_port))
            assert (await sessions[name].login(name, PASSWORD)).result_code == 0
        await sleep(1.0)  # the flood is on
        latencies: list[float] = []

        async def chat(name: str, peer: str) -> None:
            """One message every 70 ms (within anybody's 20 a second), each timed."""
            started = time.monotonic()
            while time.monotonic() - started < seconds - 2.0:
                sent = time.monotonic()
                ack = await sessions[name].send_text(ids[peer], f"hello {len(latencies)}")
                latencies.append(time.monotonic() - sent)
                assert ack.msg_id > 0
                await sleep(max(0.0, 0.07 - (time.monotonic() - sent)))

        pairs = zip(people, people[1:] + people[:1], strict=True)
        await defer.gatherResults([defer.ensureDeferred(chat(a, b)) for a, b in pairs])
        stats = [json.loads(p.communicate(timeout=30)[0]) for p in floods]
        for session in sessions.values():
            session.protocol.transport.loseConnection()
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(
            f"\nflood: {len(latencies)} messages of another user, ack p50 {p50 * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms; hostile clients: {stats}; load {os.getloadavg()}"
        )
        assert len(latencies) >= 150
        assert p99 < P99_BOUND, f"p99 {p99 * 1000:.1f} ms"
        flood = stats[0]
        assert flood["sent"] > 300, flood  # it really flooded
        by_second = {int(k): v for k, v in flood["accepted_by_second"].items()}
        accepted = 0
        for second in range(int(seconds) + 1):
            accepted += by_second.get(second, 0)
            # the burst, then 20 a second: throttled from the first second on
            assert accepted <= 100 + 20 * (second + 1) + 2, by_second
        assert flood["connections"] > 1  # it was closed for exceeding its limits
        output = server.process.output()
        assert "keeps exceeding its limits" in output
        assert "over the rate limit" in output
