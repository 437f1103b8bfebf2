"""Smoke runs of every benchmark scenario with tiny sizes.

Each run is the real command (``python -m teamtalk_bench …``) against a throwaway server
on loopback; the tests check the JSON document and the correctness counters (nothing lost,
nothing duplicated), never a timing: speed is for the benchmark itself to report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from teamtalk_bench import stats
from teamtalk_bench.server import ThrowawayServer
from tests.support import TestCase

TOP_LEVEL = {"scenario", "started", "target", "params", "machine", "results", "client", "server"}
LATENCY_KEYS = {"count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"}


def bench(tmp_path: Path, *argv: str, timeout: float = 60) -> dict:
    """Run the benchmark command and return its JSON document."""
    out = tmp_path / f"{argv[0]}.json"
    done = subprocess.run(
        [sys.executable, "-m", "teamtalk_bench", *argv, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert argv[0] in done.stdout  # the human table is printed
    document = json.loads(out.read_text())
    assert TOP_LEVEL <= document.keys()
    assert document["scenario"] == argv[0]
    assert document["client"] is None or document["client"]["processes"] >= 1
    return document


def assert_latency(summary: dict, count: int | None = None) -> None:
    assert LATENCY_KEYS <= summary.keys()
    if count is not None:
        assert summary["count"] == count


class ScenarioSmokeTests(TestCase):
    def test_msg_smoke_delivers_everything_once_over_two_processes(self):
        """2 pairs x 20 messages, window 4, two client processes: all acked and delivered."""
        doc = bench(
            self.tmp_path(),
            "msg",
            "--pairs",
            "2",
            "--messages",
            "20",
            "--window",
            "4",
            "--processes",
            "2",
        )
        r = doc["results"]
        assert (r["sent"], r["acked"], r["delivered"]) == (40, 40, 40)
        assert r["lost"] == 0 and r["duplicated"] == 0 and r["refused"] == 0
        assert_latency(r["ack_latency"], 40)
        assert_latency(r["delivery_latency"], 40)
        assert doc["client"]["processes"] == 2
        assert doc["server"]["pid"] == doc["target"]["pid"]
        assert doc["server"]["rss_kb_after"] > 0
        assert doc["server_exit"] == 0
        assert doc["ok"] is True
        assert r["all_delivered"] is True

    def test_msg_same_text_smoke_delivers_every_identical_message(self):
        """2 pairs x 30 messages with one text, window 8: each is its own message, acked
        with its own id and delivered (a server that merged them would fail this)."""
        doc = bench(
            self.tmp_path(), "msg", "--same-text", "--pairs", "2", "--messages", "30",
            "--window", "8",
        )  # fmt: skip
        r = doc["results"]
        assert doc["params"]["same_text"] is True
        assert (r["sent"], r["acked"], r["delivered"]) == (60, 60, 60)
        assert r["lost"] == 0 and r["duplicated"] == 0 and r["stray"] == 0
        assert r["all_delivered"] is True and doc["ok"] is True

    def test_ping_smoke(self):
        """20 heartbeat round trips, none failed."""
        doc = bench(self.tmp_path(), "ping", "--count", "20", "--warmup", "2")
        assert doc["results"]["completed"] == 20
        assert doc["results"]["failed"] == 0
        assert_latency(doc["results"]["latency"], 20)

    def test_login_smoke(self):
        """20 logins on fresh connections, 4 in flight, all accepted."""
        doc = bench(self.tmp_path(), "login", "--count", "20", "--concurrency", "4")
        r = doc["results"]
        assert (r["logins"], r["failed"]) == (20, 0)
        for key in ("connect_latency", "login_latency", "total_latency"):
            assert_latency(r[key], 20)

    def test_idle_smoke_measures_memory_and_notify_fanout(self):
        """20 idle connections (15 PC): RSS read, every PC connection sees each status notify."""
        doc = bench(
            self.tmp_path(),
            "idle",
            "--connections",
            "20",
            "--pc",
            "15",
            "--rounds",
            "1",
            "--hold",
            "0.2",
        )
        r = doc["results"]
        assert (r["connections"], r["pc_connections"], r["mobile_connections"]) == (20, 15, 5)
        assert r["failed_logins"] == 0 and r["dropped_while_idle"] == 0
        assert r["notify_missing"] == 0
        assert [(x["kind"], x["received"]) for x in r["rounds"]] == [
            ("online", 15),
            ("offline", 15),
        ]
        assert isinstance(r["server_rss_bytes_per_connection"], int)

    def test_group_smoke_or_not_available(self):
        """A 6-member group: every member gets every message once, or a clean 'not available'."""
        doc = bench(
            self.tmp_path(),
            "group",
            "--members",
            "6",
            "--messages",
            "3",
            "--answer-timeout",
            "2",
            "--drain",
            "3",
        )
        if doc["available"]:
            r = doc["results"]
            assert r["delivered"] == r["expected_deliveries"] == 5 * 3
            assert r["lost"] == 0 and r["duplicated"] == 0
        else:
            assert doc["reason"] and doc["results"] is None

    def test_file_smoke_or_not_available(self):
        """A 100 kB file offline and online, verified byte for byte, or 'not available'."""
        doc = bench(self.tmp_path(), "file", "--size-mb", "0.1", "--answer-timeout", "2")
        if doc["available"]:
            r = doc["results"]
            assert r["size_bytes"] == 100_000
            for part in ("offline_upload", "offline_download", "online_relay"):
                assert "error" not in r[part], r[part]
                assert r[part]["mb_per_second"] > 0
        else:
            assert doc["reason"] and doc["results"] is None

    def test_media_smoke_uploads_and_verifies(self):
        """Pictures, a tus upload and its Range download, all verified, with server RSS
        sampled in every phase."""
        doc = bench(
            self.tmp_path(), "media", "--pictures", "40", "--in-flight", "8",
            "--size-mib", "3", "--chunk-mib", "1", "--range-mib", "1",
        )  # fmt: skip
        assert doc["ok"], doc["results"]
        r = doc["results"]
        assert r["pictures"]["count"] == 40 and r["pictures"]["failed"] == 0
        assert r["pictures"]["sampled"] > 0 and r["pictures"]["mismatched"] == 0
        assert r["tus_upload"]["etag_matches"] and r["range_download"]["verified"]
        for phase in r.values():
            assert phase["rss_kb_peak"] >= phase["rss_kb_before"] > 0

    def test_disk_smoke_uploads_lists_and_counts(self):
        """The seed's /upload of a generated file and its download verified, the lists
        and the download counts answered, every count exact, server RSS sampled."""
        doc = bench(
            self.tmp_path(), "disk", "--size-mib", "3", "--files", "12", "--requests", "60",
            "--in-flight", "4",
        )  # fmt: skip
        assert doc["ok"], doc["results"]
        r = doc["results"]
        assert r["upload"]["code"] == "008" and r["download"]["verified"]
        assert r["pv"]["exact"] is True
        for phase in ("myfiles", "pv", "ranking"):
            assert r[phase]["count"] == 60 and r[phase]["failed"] == 0
        for phase in r.values():
            assert phase["rss_kb_peak"] >= phase["rss_kb_before"] > 0

    def test_cluster_smoke_cross_node_and_aggregate(self):
        """A throwaway center + two msg nodes on MariaDB and Redis: 2 pairs x 10 messages in
        each phase (cross-node, two nodes, one node), nothing lost or duplicated, and the
        database is dropped afterwards. Without MariaDB/Redis the run fails: in CI they
        are there, and the test is not skipped."""
        doc = bench(
            self.tmp_path(),
            "cluster",
            "--pairs",
            "2",
            "--messages",
            "10",
            "--window",
            "4",
            timeout=180,
        )
        cross = doc["results"]["cross_node"]
        assert (cross["sent"], cross["acked"], cross["delivered"]) == (20, 20, 20)
        assert cross["lost"] == 0 and cross["duplicated"] == 0 and cross["refused"] == 0
        assert_latency(cross["ack_latency"], 20)
        assert_latency(cross["delivery_latency"], 20)
        aggregate = doc["results"]["aggregate"]
        for phase in ("two_nodes", "one_node"):
            r = aggregate[phase]
            assert (r["acked"], r["delivered"], r["lost"], r["duplicated"]) == (20, 20, 0, 0)
        assert {"two_nodes_acked_per_second", "one_node_acked_per_second", "ratio"} <= (
            aggregate.keys()
        )
        assert set(doc["phases"]) == {"cross_node", "two_nodes", "one_node"}
        assert set(doc["server"]["processes"]) == {"center", "node1", "node2"}
        assert doc["server_exit"] == {"center": 0, "node1": 0, "node2": 0}
        assert doc["target"]["database"].startswith("tt_bench_")
        assert doc["ok"] is True

    def test_url_mode_targets_an_existing_server_with_existing_users(self):
        """--url runs against a server the bench did not start, with its pre-created users."""
        server = ThrowawayServer(2, prefix="ext", password="pw")
        target = server.start()
        try:
            doc = bench(
                self.tmp_path(),
                "ping",
                "--count",
                "10",
                "--kind",
                "msg",
                "--url",
                target.discovery_url,
                "--user-prefix",
                "ext",
                "--password",
                "pw",
            )
        finally:
            server.stop()
        assert doc["target"]["throwaway"] is False
        assert doc["target"]["port"] == target.port
        assert doc["results"]["completed"] == 10 and doc["results"]["failed"] == 0


class StatsTests(TestCase):
    def test_percentile_is_nearest_rank(self):
        """p-th percentile = the smallest value with at least p% of the samples at or below."""
        for values, p, expected in [
            ([1.0], 99, 1.0),
            ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
            ([float(x) for x in range(1, 101)], 99, 99.0),
        ]:
            assert stats.percentile(values, p) == expected, (values, p)

    def test_latency_summary_of_nothing_has_no_figures(self):
        """An empty sample gives count 0 and None figures, not an exception."""
        assert stats.latency_summary([]) == dict.fromkeys(LATENCY_KEYS, None) | {"count": 0}
