"""Route and login over real TCP links, in one process: a route+login node and two
msg-only nodes (``--route-server`` / ``--login-server``) sharing one SQLite store.

The same code paths as a multi-process cluster (``tests/test_cluster.py``), but in one
reactor, so link-level behaviour (registration, relays, drops and reconnects, backlog,
load reports) can be checked quickly and precisely.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from twisted.internet import defer

from teamtalk_py.msg.route_client import LinkedRoute
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, SwitchService_pb2
from teamtalk_py.store import accounts
from tests.cluster_support import IOS, PASSWORD, PC, Client, log_in, sleep, status_is, wait_until
from tests.support import RunningServer, TestCase, local_config, start_server


class LinkedClusterTests(TestCase):
    def setUp(self) -> defer.Deferred:
        self.dir = Path(tempfile.mkdtemp(prefix="tt_links_"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.clients: list[Client] = []
        self.servers: list[RunningServer] = []
        self.addCleanup(lambda: defer.ensureDeferred(self._tear_down()))
        return defer.ensureDeferred(self._set_up())

    async def _set_up(self) -> None:
        self.center = await self._start(services="route,login")
        self.route = self.center.service("route")
        self.login = self.center.service("login")
        self.node1 = await self.start_msg_node()
        self.node2 = await self.start_msg_node()
        store = self.node1.service("store")
        self.ids = {}
        for name in ("alice", "bob", "carol"):
            self.ids[name] = await store.write(
                accounts.add_user, name, PASSWORD, now=int(time.time())
            )

    async def _start(self, **overrides) -> RunningServer:
        config = local_config(
            self.dir, **{f"server.{k}" if "." not in k else k: v for k, v in overrides.items()}
        )
        server = await start_server(config)
        self.servers.append(server)
        return server

    async def start_msg_node(self) -> RunningServer:
        links_before = len(self.route.hub.links)
        nodes_before = len(self.login.nodes)
        node = await self._start(
            services="msg",
            **{
                "msg.route_server": f"127.0.0.1:{self.route.bound_port()}",
                "msg.login_server": f"127.0.0.1:{self.login.bound_port(1)}",
            },
        )
        await wait_until(lambda: len(self.route.hub.links) > links_before, what="route link")
        await wait_until(lambda: len(self.login.nodes) > nodes_before, what="login report")
        return node

    async def _tear_down(self) -> None:
        for client in self.clients:
            await client.close()
        for server in reversed(self.servers):
            await server.stop()
        await sleep(0.05)

    async def client(self, node: RunningServer, name: str, client_type: int = PC) -> Client:
        client = await log_in(node.msg_port, name, client_type)
        self.clients.append(client)
        return client

    # -- tests -------------------------------------------------------------------------

    def test_msg_only_nodes_use_linked_route(self):
        """With --route-server and no co-hosted route, the msg service links over TCP."""
        assert isinstance(self.node1.service("msg").route, LinkedRoute)

    async def test_one_to_one_message_read_notify_and_p2p_cross_nodes(self):
        """A message from node 1 reaches the receiver on node 2 (and the sender's other
        device there); the read notify and a P2P command cross back."""
        alice = await self.client(self.node1, "alice")
        alice_phone = await self.client(self.node2, "alice", IOS)
        bob = await self.client(self.node2, "bob")
        bob_phone = await self.client(self.node1, "bob", IOS)
        ack = await alice.session.send_text(bob.user_id, "hello")
        assert ack.msg_id > 0
        got = await bob.wait_for(B.CID_MSG_DATA)
        assert got.message.msg_id == ack.msg_id
        assert got.message.from_user_id == alice.user_id
        assert got.seq_num == 0
        copy = await alice_phone.wait_for(B.CID_MSG_DATA)
        assert copy.message.msg_id == ack.msg_id
        bob.session.read_ack(alice.user_id, ack.msg_id)
        notify = await bob_phone.wait_for(B.CID_MSG_READ_NOTIFY)
        assert notify.message.user_id == bob.user_id
        assert notify.message.msg_id == ack.msg_id
        bob.protocol.send(
            B.CID_SWITCH_P2P_CMD,
            SwitchService_pb2.IMP2PCmdMsg(
                from_user_id=bob.user_id, to_user_id=alice.user_id, cmd_msg_data="typing"
            ),
        )
        p2p = await alice.wait_for(B.CID_SWITCH_P2P_CMD)
        assert p2p.message.cmd_msg_data == "typing"

    async def test_presence_and_status_queries_cross_nodes(self):
        """A login on node 2 is announced on node 1; node 1 answers status queries about
        users on node 2; the logout is announced too."""
        alice = await self.client(self.node1, "alice")
        bob = await self.client(self.node2, "bob")
        await alice.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(bob.user_id, 1))
        answer = await alice.session.get(
            B.CID_BUDDY_LIST_USERS_STATUS_REQUEST,
            Buddy_pb2.IMUsersStatReq(
                user_id=alice.user_id, user_id_list=[bob.user_id, self.ids["carol"]]
            ),
        )
        assert [(s.user_id, s.status) for s in answer.user_stat_list] == [
            (bob.user_id, B.USER_STATUS_ONLINE),
            (self.ids["carol"], B.USER_STATUS_OFFLINE),
        ]
        await bob.close()
        await alice.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(bob.user_id, 2))

    async def test_second_login_on_another_node_kicks_the_first(self):
        """Duplicate PC logins are resolved across nodes through route."""
        first = await self.client(self.node1, "carol")
        await self.client(self.node2, "carol", B.CLIENT_TYPE_MAC)
        kick = await first.wait_for(B.CID_LOGIN_KICK_USER)
        assert kick.message.kick_reason == B.KICK_REASON_DUPLICATE_USER
        await first.protocol.closed

    async def test_login_counts_follow_logins_and_a_dropped_node_is_no_longer_offered(self):
        """Nodes report their load; /msg_server prefers the least loaded; a node whose
        link closes is unregistered, and registers again with its current count."""
        nodes = self.login.nodes
        port1, port2 = self.node1.msg_port, self.node2.msg_port
        assert {n.port for n in nodes._nodes.values()} == {port1, port2}
        await self.client(self.node1, "alice")
        await wait_until(lambda: nodes.choose().port == port2, what="node 2 chosen")
        await self.client(self.node2, "bob")
        await self.client(self.node2, "carol")
        await wait_until(lambda: nodes.choose().port == port1, what="node 1 chosen")
        for conn in list(self.login.link_factory.connections):
            if conn.peer and nodes.get(conn) and nodes.get(conn).port == port1:
                conn.transport.loseConnection()
        await wait_until(lambda: len(nodes) == 1, what="node 1 unregistered")
        assert nodes.choose().port == port2
        # node 1 reconnects after the reference's 2 s back-off and reports its 1 connection.
        await wait_until(lambda: len(nodes) == 2, timeout=6, what="node 1 back")
        loads = {n.port: n.load() for n in nodes._nodes.values()}
        assert loads == {port1: 1, port2: 2}

    async def test_route_link_drop_marks_users_offline_then_back_and_keeps_messages(self):
        """When node 1's route link drops, its users are announced offline on node 2; a
        message sent meanwhile is delivered after the reconnect, and users come back."""
        bob = await self.client(self.node2, "bob")
        alice = await self.client(self.node1, "alice")
        await bob.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(alice.user_id, 1))
        node1_route = self.node1.service("msg").route
        node1_route.link.connection.transport.loseConnection()
        await bob.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(alice.user_id, 2))
        ack = await alice.session.send_text(bob.user_id, "while the link was down")
        assert ack.msg_id > 0
        got = await bob.wait_for(B.CID_MSG_DATA, timeout=8)
        assert got.message.msg_id == ack.msg_id
        await bob.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(alice.user_id, 1))

    async def test_users_status_answer_is_not_confused_with_a_relayed_packet(self):
        """Relayed packets keep the sender's client seq; a pending status query on the
        same seq is only answered by the status answer itself."""
        alice = await self.client(self.node1, "alice")
        bob = await self.client(self.node2, "bob")
        route = self.node2.service("msg").route
        # Make node 2's next request seq collide with the seq alice's next message uses.
        seq = alice.protocol._last_seq + 1
        route.link.connection._next_seq = seq - 1
        status = route.users_status([alice.user_id])
        await alice.session.send_text(bob.user_id, "same seq")
        assert await status == [(alice.user_id, B.USER_STATUS_ONLINE)]
        got = await bob.wait_for(B.CID_MSG_DATA)
        assert got.message.from_user_id == alice.user_id
