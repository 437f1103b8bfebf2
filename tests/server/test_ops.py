"""The operator endpoints of a running server: ``/metrics`` after real traffic (parsed with
prometheus_client's own parser), ``/health``, ``/ready`` (and ``/ready`` going unready when
the database or Redis goes away and ready again when it returns), ``/online``, and
``ops.on_http``.

Real sockets on 127.0.0.1: clients log in and send through the msg listener, the file
service gets a real file login, and the endpoints are fetched over HTTP. Redis is a
``redis-server`` of this test's own on a free port, and MariaDB is reached through a TCP
proxy of this test's own that the test closes: the machine's shared servers are never
stopped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, readBody

from teamtalk_client.pdu import encode_pdu
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2, Message_pb2
from teamtalk_testing.faults import TcpProxy
from teamtalk_testing.scratch import ScratchDatabase, Unreachable
from tests.cluster_support import own_redis
from tests.file_support import FileTestCase
from tests.msg_support import IOS, PC, MsgTestCase, closed_within, next_pdu, sleep
from tests.store_support import mysql_server
from tests.support import local_config, server_unreachable, start_server

ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))


async def http_get(port: int, path: str, method: bytes = b"GET") -> tuple[int, bytes]:
    agent = Agent(reactor)
    response = await agent.request(method, f"http://127.0.0.1:{port}{path}".encode())
    return response.code, await readBody(response)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels), via prometheus_client's parser."""
    result = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


class MetricsTests(FileTestCase):
    async def scrape(self) -> dict:
        code, body = await http_get(self.server.service("ops").bound_port(), "/metrics")
        assert code == 200
        return samples(body.decode())

    async def test_counters_move_by_the_traffic_sent(self):
        """Logins by result, messages acked/refused/stored, connections by client type,
        store batches, file bytes and reactor lag, all moved by what was done."""
        alice = await self.add_user("alice")
        bob = await self.add_user("bob")
        await self.add_user("carol")
        await self.server.service("store").write(disable, "carol")
        before = await self.scrape()

        sender = await self.login("alice", client_type=PC)
        await self.login("bob", client_type=IOS)
        for name, password in (("alice", "wrong"), ("nobody", "secret"), ("carol", "secret")):
            answer, _ = await self.attempt(name, password)
            assert answer.result_code == B.REFUSE_REASON_DB_VALIDATE_FAILED
        for i in range(5):
            ack = await sender.send_text(bob, f"hello {i}")
            assert ack.msg_id > 0
        to_myself = Message_pb2.IMMsgData(
            from_user_id=alice, to_session_id=alice, msg_id=0, create_time=0,
            msg_type=B.MSG_TYPE_SINGLE_TEXT, msg_data=b"to myself",
        )  # fmt: skip
        with self.assertRaises(TimeoutError):  # refused: no ack
            await sender.protocol.request(B.CID_MSG_DATA, to_myself, timeout=0.5)

        file_conn = await self.file_connect()
        login = File_pb2.IMFileLoginReq(user_id=alice, task_id="no-such-task", file_role=1)
        answer = await file_conn.request(B.CID_FILE_LOGIN_REQ, login, timeout=5.0)
        sent = len(encode_pdu(B.CID_FILE_LOGIN_REQ, login.SerializeToString(), seq_num=1))
        await sleep(0.6)  # a couple of reactor-lag ticks

        after = await self.scrape()

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("teamtalk_logins_total", result="ok") == 2
        assert delta("teamtalk_logins_total", result="wrong_password") == 1
        assert delta("teamtalk_logins_total", result="unknown_user") == 1
        assert delta("teamtalk_logins_total", result="disabled") == 1
        assert delta("teamtalk_messages_total", session_type="single", outcome="acked") == 5
        assert delta("teamtalk_messages_total", session_type="single", outcome="refused") == 1
        assert delta("teamtalk_messages_total", session_type="single", outcome="stored") == 5
        assert value(after, "teamtalk_connections", client_type="windows") == 1
        assert value(after, "teamtalk_connections", client_type="ios") == 1
        assert delta("teamtalk_store_batch_size_count") >= 1
        assert delta("teamtalk_store_commit_seconds_sum") > 0
        assert delta("teamtalk_file_bytes_total", direction="in") == sent
        assert delta("teamtalk_file_bytes_total", direction="out") == answer.length
        assert delta("teamtalk_reactor_lag_seconds_count") >= 2
        assert value(after, "teamtalk_store_queue", queue="write") == 0
        assert value(after, "teamtalk_store_up") == 1
        assert value(after, "process_resident_memory_bytes") > 0


def disable(txn: Any, name: str) -> None:
    from teamtalk_py.store import accounts

    row = accounts.get_user_by_name(txn, name)
    assert row is not None
    accounts.set_user_status(txn, row.id, accounts.USER_STATUS_LEFT, now=int(time.time()))


class EndpointTests(MsgTestCase):
    overrides = {"ops.on_http": True}

    async def test_health_ready_online_and_the_public_listener(self):
        """/health and /ready answer JSON on the ops listener and, with ops.on_http, on
        the login listener (which never shows /online); /online lists who is here."""
        await self.add_user("alice")
        await self.login("alice")
        ops = self.server.service("ops").bound_port()
        code, body = await http_get(ops, "/health")
        assert code == 200 and json.loads(body)["status"] == "ok"
        code, body = await http_get(ops, "/ready")
        ready = json.loads(body)
        assert code == 200 and ready["ready"] is True
        assert {"store", "redis", "msg", "login", "route", "ops"} <= set(ready["services"])
        assert all(part["ok"] for part in ready["services"].values())
        code, body = await http_get(ops, "/online")
        online = json.loads(body)
        assert code == 200
        assert [(c["name"], c["client_type"]) for c in online["connections"]] == [
            ("alice", "windows")
        ]
        assert (await http_get(ops, "/metrics", b"POST"))[0] == 405

        public = self.server.http_port
        assert (await http_get(public, "/ready"))[0] == 200
        code, body = await http_get(public, "/metrics")
        assert code == 200 and b"teamtalk_logins_total" in body
        assert (await http_get(public, "/online"))[0] == 404
        assert (await http_get(public, "/msg_server"))[0] == 200


class ReadinessTests(MsgTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        # No server from MsgTestCase: this one needs its own database and Redis.
        self._clients = []
        self._servers = []
        self.addCleanup(lambda: defer.ensureDeferred(self._tear_down()))

    async def wait_ready(self, port: int, want: bool, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            code, body = await http_get(port, "/ready")
            answer = json.loads(body)
            if answer["ready"] is want:
                assert code == (200 if want else 503)
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"/ready stayed {answer}")
            await sleep(0.2)

    async def wait_degraded(self, port: int, parts: list[str], timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            code, body = await http_get(port, "/ready")
            answer = json.loads(body)
            if answer["degraded"] == parts:
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"/ready stayed {answer}")
            await sleep(0.2)

    async def test_ready_follows_the_database_and_redis(self):
        """/ready turns 503 naming the part when MariaDB (through our proxy) goes away,
        and 200 again when it comes back; our own Redis going away leaves it 200 with
        ``degraded: ["redis"]`` until it is back (``/ready?strict=1``: 503 meanwhile);
        /health stays 200."""
        try:
            database = ScratchDatabase(mysql_server(), "tt_ready")
        except Unreachable as exc:
            server_unreachable(str(exc))
        self.addCleanup(database.drop)
        server_parts = urlsplit(mysql_server())
        proxy = TcpProxy(server_parts.hostname or "127.0.0.1", server_parts.port or 3306)
        proxy.open()
        self.addCleanup(proxy.stop)
        redis = own_redis()
        redis.start()
        self.addCleanup(redis.stop)

        user = server_parts.username or "root"
        db_url = f"mysql://{user}@127.0.0.1:{proxy.port}/{database.name}"
        config_overrides = {
            "server.services": "msg,route,login",
            "store.db": db_url,
            "store.redis": redis.url,
        }
        server = await start_server(local_config(self.tmp_path() / "data", **config_overrides))
        self._servers.append(server)
        ops = server.service("ops").bound_port()
        await self.wait_ready(ops, True)

        proxy.close()
        answer = await self.wait_ready(ops, False)
        assert answer["services"]["store"]["ok"] is False
        assert answer["services"]["redis"]["ok"] is True
        assert (await http_get(ops, "/health"))[0] == 200
        proxy.open()
        await self.wait_ready(ops, True)

        assert (await http_get(ops, "/ready?strict=1"))[0] == 200

        # Messaging does not need Redis: the node stays ready and says what is degraded;
        # the strict check counts a degraded part as not ready.
        redis.kill()
        answer = await self.wait_degraded(ops, ["redis"])
        assert answer["ready"] is True
        assert answer["services"]["redis"]["outage"] is True
        assert answer["services"]["store"]["ok"] is True
        code, body = await http_get(ops, "/ready?strict=1")
        assert code == 503, body
        assert json.loads(body)["degraded"] == ["redis"]
        assert (await http_get(ops, "/ready"))[0] == 200
        redis.start()
        await self.wait_degraded(ops, [])
        assert (await http_get(ops, "/ready?strict=1"))[0] == 200


class AdminAgainstARunningServerTests(MsgTestCase):
    """teamtalk-admin online, stats and user kick against this test's running server
    (the command runs as a subprocess while the reactor keeps serving)."""

    overrides = {"msg.account_check_interval": 0.05}

    async def admin(self, *args: str) -> str:
        ops = self.server.service("ops").bound_port()
        out, err, status = await getProcessOutputAndValue(
            ADMIN,
            ["--data-dir", str(self.data_dir), "--server", f"http://127.0.0.1:{ops}", *args],
            env=dict(os.environ),
        )
        assert status == 0, err
        return out.decode()

    async def test_online_stats_and_kick(self):
        """online lists alice's two connections on this node; stats counts users and
        connections; user kick ends both sessions (and bob's stays)."""
        await self.add_user("alice")
        await self.add_user("bob")
        pc = await self.login("alice", client_type=PC)
        phone = await self.login("alice", client_type=IOS)
        bob = await self.login("bob")
        lines = (await self.admin("online")).splitlines()
        node = f"127.0.0.1:{self.server.msg_port}"
        rows = sorted(line.split("\t")[:4] for line in lines)
        assert rows == [
            [node, str(pc.user_id), "alice", "ios"],
            [node, str(pc.user_id), "alice", "windows"],
            [node, str(bob.user_id), "bob", "windows"],
        ]
        stats = dict(line.split("\t") for line in (await self.admin("stats")).splitlines())
        assert (stats["users"], stats["online users"], stats["online connections"]) == (
            "2",
            "2",
            "3",
        )
        assert await self.admin("user", "kick", "alice") == "ok\n"
        for session in (pc, phone):
            pdu = await next_pdu(session.protocol, B.CID_LOGIN_KICK_USER, timeout=5)
            assert pdu.message.kick_reason == B.KICK_REASON_DUPLICATE_USER
            assert await closed_within(session.protocol, 2)
        assert not bob.protocol.closed.called
