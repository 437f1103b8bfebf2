"""Smoke runs of every benchmark scenario with tiny sizes.

Each run is the real command (``python -m teamtalk_bench …``) against a server on
loopback; the tests check the JSON document and the correctness counters (nothing lost,
nothing duplicated), never a timing: speed is for the benchmark itself to report. The
throwaway server (started, given its users, stopped, its exit status reported) is run by
the msg, flood and cluster scenarios; the others run with ``--url`` against one shared
throwaway server (``shared_server``), as they would against a server someone runs.
"""

from __future__ import annotations

import atexit
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from teamtalk_bench import stats
from teamtalk_bench.conn import BenchConnection, BenchError, connect
from teamtalk_bench.scenarios.file import Blocks, _pull_in_turn, block_answer
from teamtalk_bench.server import Target, ThrowawayServer
from teamtalk_client import ANSWER_CID, HEADER_SIZE, encode_pdu, unpack_header
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2
from tests.support import TestCase

TOP_LEVEL = {"scenario", "started", "target", "params", "machine", "results", "client", "server"}
LATENCY_KEYS = {"count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"}


def bench(tmp_path: Path, *argv: str, timeout: float = 240) -> dict:
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


_shared: list[Target] = []

#: Users of the shared server: the most a smoke run here needs (idle: 21).
SHARED_USERS = 24
SHARED_PREFIX = "shared"
SHARED_PASSWORD = "pw"


def shared_server() -> Target:
    """One throwaway server for this process's smoke runs that only need a server to talk
    to (``--url``): a server of their own cost each ~1.5 s of CPU and ~3 s. Stopped when
    the process exits, like ``tests.admin_support.SharedAdminServer``."""
    if not _shared:
        server = ThrowawayServer(SHARED_USERS, prefix=SHARED_PREFIX, password=SHARED_PASSWORD)
        _shared.append(server.start())
        atexit.register(server.stop)
    return _shared[0]


def on_shared_server() -> list[str]:
    """The bench's target options for the shared server (with its PID, for RSS and CPU)."""
    target = shared_server()
    return [
        "--url", target.discovery_url, "--server-pid", str(target.pid),
        "--user-prefix", SHARED_PREFIX, "--password", SHARED_PASSWORD,
    ]  # fmt: skip


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
            "--window", "8", *on_shared_server(),
        )  # fmt: skip
        r = doc["results"]
        assert doc["params"]["same_text"] is True
        assert (r["sent"], r["acked"], r["delivered"]) == (60, 60, 60)
        assert r["lost"] == 0 and r["duplicated"] == 0 and r["stray"] == 0
        assert r["all_delivered"] is True and doc["ok"] is True

    def test_ping_smoke(self):
        """20 heartbeat round trips, none failed."""
        doc = bench(self.tmp_path(), "ping", "--count", "20", "--warmup", "2", *on_shared_server())
        assert doc["results"]["completed"] == 20
        assert doc["results"]["failed"] == 0
        assert_latency(doc["results"]["latency"], 20)

    def test_login_smoke(self):
        """20 logins on fresh connections, 4 in flight, all accepted."""
        doc = bench(
            self.tmp_path(), "login", "--count", "20", "--concurrency", "4", *on_shared_server()
        )
        r = doc["results"]
        assert (r["logins"], r["failed"]) == (20, 0)
        for key in ("connect_latency", "login_latency", "total_latency"):
            assert_latency(r[key], 20)

    def test_flood_smoke_keeps_ordinary_chat_whole_and_throttles_the_flooders(self):
        """2 pairs chat 1 s alone, then 3 s beside a reading and a stalling flooder on a
        server with its default limits: every ordinary message acked and delivered, none
        refused or lost; the flooders refused beyond the burst and 20 a second."""
        doc = bench(
            self.tmp_path(), "flood", "--pairs", "2", "--quiet", "1", "--seconds", "3",
            "--settle", "0.5", "--drain", "30",
        )  # fmt: skip
        assert doc["ok"] is True, doc["results"]
        r = doc["results"]
        ordinary = r["ordinary"]
        for name in ("quiet", "flood"):
            phase = ordinary[name]
            assert phase["sent"] > 0
            assert phase["acked"] == phase["sent"]
            assert phase["lost"] == phase["refused"] == 0
            assert_latency(phase["ack_latency"], phase["acked"])
        assert ordinary["delivered"] == ordinary["quiet"]["acked"] + ordinary["flood"]["acked"]
        assert ordinary["all_acked_and_delivered"] is True
        assert [h["mode"] for h in r["hostile"]] == ["flood", "stall"]
        flood = r["hostile"][0]
        assert flood["sent"] > flood["accepted"]  # it flooded and was refused
        accepted = 0
        for second in range(6):  # settle + seconds + 0.5 = 4 s, and slack
            accepted += flood["accepted_by_second"].get(str(second), 0)
            assert accepted <= 100 + 20 * (second + 1) + 2, flood["accepted_by_second"]
        assert all(h["accepted_within_limit"] for h in r["hostile"])
        assert isinstance(r["flood_p99_within_bound"], bool)  # reported, not asserted
        assert len(r["loadavg_flood"]) == 3
        server = doc["server"]
        assert server["rss_kb_peak"] >= server["rss_kb_after_flood"] > 0
        assert doc["server_exit"] == 0

    def test_idle_smoke_measures_memory_and_notify_fanout(self):
        """20 idle connections (15 PC) in two processes: RSS read, every PC connection
        sees each status notify, fired from a third process of its own."""
        doc = bench(
            self.tmp_path(),
            "idle",
            "--connections",
            "20",
            "--pc",
            "15",
            "--processes",
            "2",
            "--round-gap",
            "0.1",
            "--rounds",
            "1",
            "--hold",
            "0.2",
            *on_shared_server(),
        )
        r = doc["results"]
        assert (r["connections"], r["pc_connections"], r["mobile_connections"]) == (20, 15, 5)
        assert r["failed_logins"] == 0 and r["dropped_while_idle"] == 0
        assert r["dropped_during_ramp"] == 0 and r["notify_missing"] == 0
        assert [(x["kind"], x["received"]) for x in r["rounds"]] == [
            ("online", 15),
            ("offline", 15),
        ]
        assert isinstance(r["server_rss_bytes_per_connection"], int)
        assert doc["client"]["processes"] == 3, doc["client"]

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
            *on_shared_server(),
        )
        if doc["available"]:
            r = doc["results"]
            assert r["delivered"] == r["expected_deliveries"] == 5 * 3
            assert r["lost"] == 0 and r["duplicated"] == 0
        else:
            assert doc["reason"] and doc["results"] is None

    def test_file_smoke_or_not_available(self):
        """A 100 kB file offline and online, verified byte for byte, or 'not available';
        with pulls pipelined (the default) and with one in flight (the bench's own read
        loop)."""
        for window in ("8", "1"):
            self.check_file_run(window)

    def check_file_run(self, window: str) -> None:
        doc = bench(
            self.tmp_path(), "file", "--size-mb", "0.1", "--answer-timeout", "2",
            "--window", window, *on_shared_server(),
        )  # fmt: skip
        if doc["available"]:
            r = doc["results"]
            assert r["size_bytes"] == 100_000
            for part in ("offline_upload", "offline_download", "online_relay"):
                assert "error" not in r[part], r[part]
                assert r[part]["mb_per_second"] > 0
                assert r[part]["server_cpu_ms_per_mb"] >= 0  # the throwaway server's PID is known
                assert r[part]["client_cpu_ms_per_mb"] > 0
        else:
            assert doc["reason"] and doc["results"] is None

    def test_media_smoke_uploads_and_verifies(self):
        """Pictures, a tus upload and its Range download, all verified, with server RSS
        sampled in every phase."""
        doc = bench(
            self.tmp_path(), "media", "--pictures", "40", "--in-flight", "8",
            "--size-mib", "3", "--chunk-mib", "1", "--range-mib", "1", *on_shared_server(),
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
            "--in-flight", "4", "--disk-url", str(shared_server().disk_url), *on_shared_server(),
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
            "--route-seconds",
            "1",
            timeout=300,
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
        # The one route server relayed every cross-node message (plus status changes).
        route = doc["results"]["route"]
        assert route["available"] is True
        assert route["pdus_in"] >= 20 and route["pdus_out"] >= 20
        assert route["pdus_in_per_acked_msg"] >= 1
        assert "center_cpu_us_per_pdu_in" in route and "ceiling_pdus_in_per_second" in route
        # The probe's fake nodes got relayed packets through the route alone.
        probe = doc["results"]["route_probe"]
        assert 0 < probe["received"] <= probe["sent"]
        assert probe["relayed_per_second"] > 0
        assert set(doc["server"]["processes"]) == {"center", "node1", "node2"}
        assert doc["server_exit"] == {"center": 0, "node1": 0, "node2": 0}
        assert doc["target"]["database"].startswith("tt_bench_")
        assert doc["ok"] is True

    def test_rooms_smoke_posts_reach_every_member_on_both_nodes(self):
        """A throwaway cluster, 6 room members over two nodes, 2 posters (one per node)
        x 10 posts: every post reaches the 5 other members, nothing lost, duplicated or
        dropped, and the figures are there."""
        doc = bench(
            self.tmp_path(), "rooms", "--members", "6", "--posts", "10", "--window", "4",
            "--posters", "2", timeout=300,
        )  # fmt: skip
        r = doc["results"]
        assert (r["posts_acked"], r["delivered"], r["expected_deliveries"]) == (20, 100, 100)
        assert (r["lost"], r["duplicated"], r["dropped_members"]) == (0, 0, 0)
        assert r["posts_per_second"] > 0 and r["deliveries_per_second"] > 0
        assert_latency(r["delivery_latency"], 100)
        assert set(doc["server"]["processes"]) == {"center", "node1", "node2"}
        assert doc["server_exit"] == {"center": 0, "node1": 0, "node2": 0}
        assert doc["ok"] is True

    def test_url_mode_targets_an_existing_server_with_existing_users(self):
        """--url runs against a server the bench did not start, with its pre-created users."""
        target = shared_server()
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
            SHARED_PREFIX,
            "--password",
            SHARED_PASSWORD,
        )
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


class _Answering(Protocol):
    """A peer that answers every PDU with two presence notifies (seq 0, not read by the
    bench), a heartbeat and then the answer of the request under its seq."""

    def dataReceived(self, data: bytes) -> None:
        length, _, _, _, cid, seq, _ = unpack_header(data, 0)
        notify = encode_pdu(B.CID_BUDDY_LIST_STATUS_NOTIFY, b"\x0a\x04\x08\x07\x10\x01")
        answer = encode_pdu(ANSWER_CID[cid], data[HEADER_SIZE:length][::-1], seq_num=seq)
        self.transport.write(notify + notify + encode_pdu(B.CID_OTHER_HEARTBEAT) + answer)


class BenchConnectionTests(TestCase):
    async def test_connect_and_ask_skip_what_nobody_waits_for(self):
        """``connect`` fires with an open connection; ``ask`` gets its answer's body among
        PDUs nobody asked for, which are counted, not handed to anyone."""
        factory = Factory.forProtocol(_Answering)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        conn = await connect(reactor, "127.0.0.1", port.getHost().port, timeout=10)
        self.addCleanup(conn.close)
        assert conn.open
        body = await conn.ask(B.CID_LOGIN_REQ_USERLOGIN, b"abc", timeout=10)
        assert body == b"cba"
        assert (conn.unhandled, conn.heartbeats_echoed) == (2, 1)
        conn.close()
        await conn.closed

    async def test_request_now_gets_its_answer_and_cid_0_once_closed(self):
        """``request_now`` (one request per connection, written straight to the socket)
        gets the answer under its seq; on a closed connection its callback gets cid 0."""
        port = reactor.listenTCP(0, Factory.forProtocol(_Answering), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        conn = await connect(reactor, "127.0.0.1", port.getHost().port, timeout=10)
        answered: Deferred = Deferred()
        conn.request_now(B.CID_LOGIN_REQ_USERLOGIN, b"xyz", lambda *got: answered.callback(got))
        assert await answered == (B.CID_LOGIN_RES_USERLOGIN, b"zyx")
        conn.close()
        await conn.closed
        after: list = []
        assert conn.request_now(B.CID_LOGIN_REQ_USERLOGIN, b"", lambda *got: after.append(got)) == 0
        assert after == [(0, b"")]

    async def test_connect_to_a_closed_port_fails(self):
        """A refused connection is the Deferred's failure, not a hang."""
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        with self.assertRaises(ConnectionRefusedError):
            await connect(reactor, "127.0.0.1", number, timeout=10)

    async def test_send_now_writes_one_pdu_given_in_pieces(self):
        """``send_now`` sends a PDU's pieces (header, prefix, block) as one PDU."""
        port = reactor.listenTCP(0, Factory.forProtocol(_Answering), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        conn = await connect(reactor, "127.0.0.1", port.getHost().port, timeout=10)
        answered: Deferred = Deferred()
        conn.on(B.CID_LOGIN_RES_USERLOGIN, lambda seq, body: answered.callback((seq, body)))
        pdu = encode_pdu(B.CID_LOGIN_REQ_USERLOGIN, b"abcdef", seq_num=0)
        conn.send_now([pdu[:HEADER_SIZE], pdu[HEADER_SIZE:18], pdu[18:]])
        assert await answered == (0, b"fedcba")
        conn.close()
        await conn.closed

    def test_pdus_split_anywhere_reach_their_callbacks_whole(self):
        """Whole PDUs, PDUs split at any byte and several in one read: each body reaches
        its callback once and intact, and nothing stays buffered."""
        block = bytes(range(200)) * 50
        notify = b"\x0a\x04\x08\x07\x10\x01"
        for cuts in ([], [1], [15, 16, 17], [10_015], [10_021], [9000, 10_030]):
            conn, got = _listening_connection()
            seq = conn.request(B.CID_FILE_PULL_DATA_REQ, b"", got.append_pair)
            stream = b"".join([
                encode_pdu(B.CID_FILE_PULL_DATA_RSP, block, seq_num=seq),
                encode_pdu(B.CID_OTHER_HEARTBEAT),
                encode_pdu(B.CID_BUDDY_LIST_STATUS_NOTIFY, notify),
            ])  # fmt: skip
            bounds = [0, *cuts, len(stream)]
            for start, end in zip(bounds, bounds[1:], strict=False):
                conn.dataReceived(stream[start:end])
            assert got == [(B.CID_FILE_PULL_DATA_RSP, block), (0, notify)], cuts
            assert conn.heartbeats_echoed == 1 and not conn._buffer, cuts


class _Transport(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class _Got(list):
    def append_pair(self, first: int, second: bytes) -> None:
        self.append((first, second))


def _listening_connection() -> tuple[BenchConnection, _Got]:
    """A BenchConnection on an in-memory transport whose notifies are collected."""
    conn = BenchConnection(reactor)
    conn.makeConnection(_Transport())
    got = _Got()
    conn.on(B.CID_BUDDY_LIST_STATUS_NOTIFY, got.append_pair)
    return conn, got


class FileBlockTests(TestCase):
    def test_a_block_answer_in_pieces_is_protobufs_own_encoding(self):
        """The bench's uploader and sender answer with pieces that, joined, are exactly
        the PDU protobuf builds for the same answer (a whole block and a short one)."""
        blocks = Blocks(100_000)
        for offset in (0, 98_304):
            data = blocks.data(offset)
            expected = encode_pdu(
                B.CID_FILE_PULL_DATA_RSP,
                File_pb2.IMFilePullDataRsp(
                    result_code=0, task_id="t-1", user_id=300, offset=offset, file_data=data
                ).SerializeToString(),
                seq_num=77,
            )
            assert b"".join(block_answer("t-1", 300, offset, data, 77)) == expected

    def test_blocks_match_only_their_exact_bytes(self):
        """``Blocks.matches`` compares every byte: one changed byte anywhere, a block of
        another index or another length does not match."""
        blocks = Blocks(100_000)
        for offset in (0, 32_768, 98_304):
            data = blocks.data(offset)
            assert blocks.matches(offset, data)
            for where in (0, 7, 8, len(data) // 2, len(data) - 1):
                bad = bytearray(data)
                bad[where] ^= 1
                assert not blocks.matches(offset, bytes(bad)), (offset, where)
            assert not blocks.matches(offset, data[:-1])
            assert not blocks.matches(offset, data + b"x")
        assert not blocks.matches(32_768, blocks.data(0))

    async def test_one_pull_in_flight_loop_checks_every_byte(self):
        """``_pull_in_turn`` (the bench's own read loop for one pull in flight) gets a
        whole file from a server that answers its pulls, and fails on a block with one
        changed byte."""
        blocks = Blocks(100_000)
        for corrupt in (None, 32_768 + 500):
            port, server = _serve_blocks_in_a_thread(blocks, corrupt)
            conn = await connect(reactor, "127.0.0.1", port, timeout=10)
            pull = _pull_in_turn(conn, 7, "t-1", B.FILE_TYPE_OFFLINE, blocks, 30.0)
            if corrupt is None:
                await pull
            else:
                with self.assertRaises(BenchError) as caught:
                    await pull
                assert "differs" in str(caught.exception)
            conn.close()
            await conn.closed
            server.join(10)
            assert not server.is_alive()


def _serve_blocks_in_a_thread(blocks: Blocks, corrupt: int | None) -> tuple[int, threading.Thread]:
    """A file server in a thread (the loop under test blocks the reactor): each pull is
    answered with its block, the byte at ``corrupt`` changed; done when the peer closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        peer, _ = listener.accept()
        listener.close()
        pending = b""
        with peer:
            while chunk := peer.recv(65536):
                pending += chunk
                while len(pending) >= HEADER_SIZE:
                    length, _, _, _, _, seq, _ = unpack_header(pending)
                    if len(pending) < length:
                        break
                    body, pending = pending[HEADER_SIZE:length], pending[length:]
                    pull = File_pb2.IMFilePullDataReq.FromString(body)
                    data = bytearray(blocks.data(pull.offset, pull.data_size))
                    if corrupt is not None and pull.offset <= corrupt < pull.offset + len(data):
                        data[corrupt - pull.offset] ^= 1
                    peer.sendall(b"".join(block_answer("t-1", 7, pull.offset, bytes(data), seq)))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread
