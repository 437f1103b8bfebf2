"""The admin API in a cluster of real processes (MariaDB, Redis): a center (route, login,
file) hosting the admin service, and two msg nodes, node1 hosting it too. Sessions on
every node are listed at the center and kicked through route; a disabled user is kicked
on their node; a group change made on either admin listener reaches members on the
other node through route."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from teamtalk_client.protocol import connect
from teamtalk_client.session import TeamTalkSession
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_testing.cluster import ClusterProcesses
from teamtalk_testing.ports import free_port, loopback_endpoint
from tests.admin_support import AdminApi
from tests.cluster_support import scratch_database, scratch_redis, sleep
from tests.disk_support import wait_for_port
from tests.msg_support import closed_within, next_pdu
from tests.support import TEST_SECRET, TestCase

ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))
PASSWORD = "s3cret"


class AdminClusterTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        db = scratch_database()
        self.addCleanup(db.drop)
        redis = scratch_redis()
        self.addCleanup(redis.drop)
        root = self.tmp_path()
        center_port, node_port = free_port(), free_port()
        self.cluster = ClusterProcesses(
            root, db.url, redis.url, TEST_SECRET,
            center_args=("--services", "route,login,file,admin",
                         "--admin-listen", loopback_endpoint(center_port)),
        )  # fmt: skip
        self.cluster.add_node(
            "node1", "--services", "msg,admin", "--admin-listen", loopback_endpoint(node_port)
        )
        self.addCleanup(self.cluster.stop)
        self.cluster.start()
        wait_for_port(center_port)
        wait_for_port(node_port)
        made = subprocess.run(
            [ADMIN, "--db", db.url, "--data-dir", str(root), "admin-token", "create", "cluster"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        token = made.stdout.splitlines()[-1]
        self.center = AdminApi(f"http://127.0.0.1:{center_port}", token)
        self.node1 = AdminApi(f"http://127.0.0.1:{node_port}", token)
        self.sessions: list[TeamTalkSession] = []
        self.addCleanup(self._close_clients)

    def _close_clients(self) -> None:
        for session in self.sessions:
            if not session.protocol.closed.called:
                session.protocol.transport.loseConnection()

    async def call(self, api: AdminApi, method: str, path: str, expect: int, **kw: Any) -> Any:
        return await deferToThread(api.call, method, path, expect, **kw)

    async def login(self, node: str, name: str) -> TeamTalkSession:
        protocol = await connect(reactor, "127.0.0.1", self.cluster.port(node))
        session = TeamTalkSession(protocol, timeout=10.0)
        self.sessions.append(session)
        answer = await session.login(name, PASSWORD)
        assert answer.result_code == B.REFUSE_REASON_NONE, answer
        return session

    async def test_sessions_kicks_and_group_notices_across_nodes(self):
        """The center lists both nodes' sessions; kicking a session on node2 from the
        center, and a user kick from node1, reach the clients; a group made at node1
        notifies a member on node2; a disabled user on node2 is kicked."""
        ids = {}
        for name in ("ann", "ben", "cat"):
            body = {"name": name, "password": PASSWORD}
            ids[name] = (await self.call(self.node1, "POST", "/users", 201, json=body))["id"]
        ann = await self.login("node1", "ann")
        ben = await self.login("node2", "ben")
        cat = await self.login("node2", "cat")

        # Route learns of logins a moment after they are answered.
        sessions: list[dict[str, Any]] = []
        for _ in range(100):
            sessions = (await self.call(self.center, "GET", "/sessions", 200))["items"]
            if len(sessions) == 3:
                break
            await sleep(0.1)
        by_user = {s["user_name"]: s for s in sessions}
        assert set(by_user) == {"ann", "ben", "cat"}
        assert by_user["ann"]["node"] != by_user["ben"]["node"] == by_user["cat"]["node"]
        nodes = (await self.call(self.center, "GET", "/nodes", 200))["items"]
        assert {n["service"] for n in nodes if n["local"]} >= {"route", "login", "admin"}
        assert len([n for n in nodes if n["service"] == "msg" and not n["local"]]) == 2

        both = {"name": "Both", "member_ids": [ids["ann"], ids["ben"]]}
        group = await self.call(self.node1, "POST", "/groups", 201, json=both)
        for session in (ann, ben):
            notify = await next_pdu(session.protocol, B.CID_GROUP_CHANGE_MEMBER_NOTIFY, 5)
            assert notify.message.group_id == group["id"]
        await self.call(self.center, "POST", f"/groups/{group['id']}/members", 200,
                        json={"user_ids": [ids["cat"]]})  # fmt: skip
        for session in (ann, ben, cat):
            notify = await next_pdu(session.protocol, B.CID_GROUP_CHANGE_MEMBER_NOTIFY, 5)
            assert list(notify.message.chg_user_id_list) == [ids["cat"]]

        await self.call(self.center, "POST", f"/sessions/{by_user['ben']['id']}/kick", 204)
        await next_pdu(ben.protocol, B.CID_LOGIN_KICK_USER, timeout=5)
        assert await closed_within(ben.protocol, 5)

        await self.call(self.node1, "PATCH", f"/users/{ids['cat']}", 200, json={"disabled": True})
        await next_pdu(cat.protocol, B.CID_LOGIN_KICK_USER, timeout=10)
        await self.call(self.node1, "POST", f"/users/{ids['ann']}/kick", 204)
        await next_pdu(ann.protocol, B.CID_LOGIN_KICK_USER, timeout=5)
