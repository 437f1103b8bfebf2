"""The login service: msg node choice and the HTTP ``/msg_server`` answer (wire.md §9)."""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from teamtalk_py.login.nodes import AllNodesFull, MsgNode, MsgNodeRegistry, NoMsgNode
from teamtalk_py.login.service import LoginService
from tests.support import TestCase, local_config


def node(cur: int, max_conn: int = 10, ip: str = "10.0.0.1", port: int = 8000) -> MsgNode:
    return MsgNode(ip1=ip, ip2=ip + "b", port=port, max_conn_cnt=max_conn, cur_conn_cnt=cur)


async def fetch(url: str) -> tuple[int, dict, bytes]:
    response = await Agent(reactor).request(b"GET", url.encode())
    body = await readBody(response)
    headers = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    return response.code, headers, body


class LoginTests(TestCase):
    def test_no_node_registered_is_code_1(self):
        """With no msg node the registry says so (discovery code 1)."""
        with self.assertRaises(NoMsgNode):
            MsgNodeRegistry().choose()

    def test_all_nodes_full_is_code_2(self):
        """Nodes at their limit are never chosen (discovery code 2)."""
        nodes = MsgNodeRegistry()
        nodes.register("a", node(10, 10))
        nodes.register("b", node(5, 5))
        with self.assertRaises(AllNodesFull):
            nodes.choose()

    def test_least_loaded_node_wins_and_ties_go_to_the_first_registered(self):
        """Fewest connections first; equal loads pick the earliest registration."""
        nodes = MsgNodeRegistry()
        nodes.register("a", node(3, ip="10.0.0.1"))
        nodes.register("b", node(1, ip="10.0.0.2"))
        nodes.register("c", node(1, ip="10.0.0.3"))
        assert nodes.choose().ip1 == "10.0.0.2"
        nodes.unregister("b")
        assert nodes.choose().ip1 == "10.0.0.3"

    def test_live_count_is_read_at_choice_time(self):
        """A co-hosted msg service reports its live count, not a stale number."""
        count = [0]
        nodes = MsgNodeRegistry()
        live = node(0, max_conn=2)
        live.live_count = lambda: count[0]
        nodes.register("local", live)
        assert nodes.choose() is live
        count[0] = 2
        with self.assertRaises(AllNodesFull):
            nodes.choose()

    async def test_msg_server_answer_matches_the_reference_format(self):
        """Code 0 carries the node's address, port as a string, msfs and discovery."""
        tmp_path = self.tmp_path()
        service = LoginService(reactor, local_config(tmp_path))
        service.startService()
        await service.ready
        try:
            service.register_local_node("local", node(0, ip="192.0.2.7", port=8123))
            port = service.bound_port()
            code, headers, body = await fetch(f"http://127.0.0.1:{port}/msg_server?x=1")
            assert code == 200
            assert headers["content-type"] == "text/html;charset=utf-8"
            answer = json.loads(body)
            assert answer == {
                "code": 0,
                "msg": "",
                "priorIP": "192.0.2.7",
                "backupIP": "192.0.2.7b",
                "port": "8123",
                "msfsPrior": "http://127.0.0.1:8700/",
                "msfsBackup": "http://127.0.0.1:8700/",
                "discovery": "http://127.0.0.1/api/discovery",
            }
            assert body.startswith(b'{\n   "backupIP" : ') or body.startswith(b'{\n   "backupIP": ')
            # Prefix match: anything starting with /msg_server is the same resource.
            _, _, body2 = await fetch(f"http://127.0.0.1:{port}/msg_server/extra")
            assert json.loads(body2)["code"] == 0
            code3, _, _ = await fetch(f"http://127.0.0.1:{port}/other")
            assert code3 == 404
        finally:
            await service.stopService()

    async def test_msg_server_without_nodes_answers_code_1(self):
        """No msg node up: code 1 and the reference's message."""
        tmp_path = self.tmp_path()
        service = LoginService(reactor, local_config(tmp_path))
        service.startService()
        await service.ready
        try:
            _, _, body = await fetch(f"http://127.0.0.1:{service.bound_port()}/msg_server")
            assert json.loads(body) == {"code": 1, "msg": "没有msg_server"}
        finally:
            await service.stopService()
