"""Route and login over real TCP links, in one process: a route+login node and two
msg-only nodes (``--route-server`` / ``--login-server``) sharing one SQLite store.

The same code paths as a multi-process cluster (``tests/cluster/test_cluster.py``), but in one
reactor, so link-level behaviour (registration, relays, drops and reconnects, backlog,
load reports) can be checked quickly and precisely.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from teamtalk_client import ExtensionClient, decrypt_text
from teamtalk_client.rooms import Rooms
from teamtalk_py.msg.route_client import LinkedRoute
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Group_pb2, SwitchService_pb2
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.store import accounts
from teamtalk_py.store import contacts as contacts_store
from teamtalk_testing.faults import TcpProxy
from teamtalk_testing.ports import LOOPBACK
from tests.cluster_support import IOS, PASSWORD, PC, Client, log_in, sleep, status_is, wait_until
from tests.msg_support import assert_nothing
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

    async def start_msg_node(self, route_address: str | None = None) -> RunningServer:
        """A msg-only node linked to route (at ``route_address`` when given: a proxy)."""
        links_before = len(self.route.hub.links)
        nodes_before = len(self.login.nodes)
        node = await self._start(
            services="msg",
            **{
                "msg.route_server": route_address or f"127.0.0.1:{self.route.bound_port()}",
                "msg.login_server": f"127.0.0.1:{self.login.bound_port(1)}",
                # Friend requests on (docs/EXTENSION.md); TeamTalk's behaviour unchanged.
                "contacts.mode": "both",
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

    async def contacts_client(self, node: RunningServer, name: str, client_type: int = PC):
        client = await self.client(node, name, client_type)
        extension = ExtensionClient(client.session)
        assert list((await extension.hello(["contacts"])).features) == ["contacts"]
        return client, extension

    # -- tests -------------------------------------------------------------------------

    async def test_friend_requests_across_nodes_with_one_side_offline(self):
        """Alice (node 1) asks Bob while he is offline: Bob gets it at his hello on node 2,
        and his accept reaches Alice on node 1 through route (her plain connection on
        node 2 gets nothing). Bob then asks Carol (node 1) live through route; node 1
        records the delivery, so Carol is not told again at her next hello (on node 2);
        she accepts while Bob is offline, and Bob gets the answer at his next hello."""
        store = self.node1.service("store")
        alice, alice_ext = await self.contacts_client(self.node1, "alice")
        alice_plain = await self.client(self.node2, "alice", IOS)
        bob_id, carol_id = self.ids["bob"], self.ids["carol"]
        asked = await alice_ext.request(bob_id, note="from node 1")
        assert asked.result_code == X.EXT_RESULT_OK
        bob, bob_ext = await self.contacts_client(self.node2, "bob")
        stored = await bob.wait_for(X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        assert stored.message.request.request_id == asked.request_id
        assert stored.message.request.peer.real_name == "alice"
        assert (await bob_ext.accept(asked.request_id, remark="Al")).result_code == 0
        told = await alice.wait_for(X.CID_EXT_FRIEND_ANSWER_NOTIFY)
        assert told.message.request.state == X.EXT_REQUEST_ACCEPTED
        assert [f.user.user_id for f in (await alice_ext.friends()).friends] == [bob_id]
        with self.assertRaises(TimeoutError):
            await alice_plain.protocol.wait_for(
                None, lambda p: p.service_id == X.SID_EXTENSION, timeout=0.3
            )

        carol, carol_ext = await self.contacts_client(self.node1, "carol")
        to_carol = await bob_ext.request(carol_id, note="live, through route")
        live = await carol.wait_for(X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        assert live.message.request.request_id == to_carol.request_id
        for client in (bob, carol):
            await client.close()

        async def delivered() -> bool:
            requests, _ = await store.read(contacts_store.undelivered, carol_id)
            return not requests

        for _ in range(100):
            if await delivered():
                break
            await sleep(0.02)
        assert await delivered(), "node 1 did not record the relayed delivery"
        carol, carol_ext = await self.contacts_client(self.node2, "carol")
        with self.assertRaises(TimeoutError):
            await carol.wait_for(X.CID_EXT_FRIEND_REQUEST_NOTIFY, timeout=0.5)
        assert (await carol_ext.accept(to_carol.request_id)).result_code == 0
        bob, bob_ext = await self.contacts_client(self.node1, "bob")
        answered = await bob.wait_for(X.CID_EXT_FRIEND_ANSWER_NOTIFY)
        assert answered.message.request.request_id == to_carol.request_id
        assert answered.message.request.peer.user_id == carol_id
        mine = {f.user.user_id: f.remark for f in (await bob_ext.friends()).friends}
        assert mine == {alice.user_id: "Al", carol_id: ""}

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
        # Whether or not node 2 has heard a marker of node 1 yet: see the next test.
        node1_route = self.node1.service("msg").route
        node1_route.link.connection.transport.loseConnection()
        await bob.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(alice.user_id, 2))
        ack = await alice.session.send_text(bob.user_id, "while the link was down")
        assert ack.msg_id > 0
        got = await bob.wait_for(B.CID_MSG_DATA, timeout=8)
        assert got.message.msg_id == ack.msg_id
        await bob.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(alice.user_id, 1))

    async def test_link_drop_before_any_marker_was_heard_loses_no_live_delivery(self):
        """What was the limit of a node's first second: node 2 has heard no marker of
        node 1 (it forgets it here, as a node that linked a moment ago would be) and
        node 1 is the older run, so node 1's first marker after its link came back would
        be taken as "now". Route's lost notice carries the marker node 1 sent as its link
        came up, so node 2 knows where to read from: bob gets the message stored while
        the link was down, once."""
        bob = await self.client(self.node2, "bob")
        alice = await self.client(self.node1, "alice")
        await bob.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(alice.user_id, 1))
        node1, node2 = self.node1.service("msg"), self.node2.service("msg")
        node1.origins.started -= 60  # node 1 started a minute before node 2
        got: list = []
        bob.protocol.on(B.CID_MSG_DATA, got.append)
        node2.catch_up.peers.clear()
        node1.route.link.connection.transport.loseConnection()
        await bob.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(alice.user_id, 2))
        ack = await alice.session.send_text(bob.user_id, "while the link was down")
        await wait_until(lambda: got, timeout=8, what="the message at bob")
        await sleep(2.5)  # two more markers: nothing comes twice
        assert [p.message.msg_id for p in got] == [ack.msg_id]

    async def test_messages_missed_while_a_link_was_down_come_from_the_store_once(self):
        """node 1's route link is down while alice sends the same words twice to bob and
        once to their group: no node keeps them, and when the link is back node 2 reads
        them from the store and bob (and alice's phone there) get each exactly once;
        carol, who logged in on node 2 after they were stored, gets none of them live."""
        bob = await self.client(self.node2, "bob")
        alice = await self.client(self.node1, "alice")
        await bob.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(alice.user_id, 1))
        alice_phone = await self.client(self.node2, "alice", IOS)
        created = await alice.session.get(
            B.CID_GROUP_CREATE_REQUEST,
            Group_pb2.IMGroupCreateReq(
                user_id=alice.user_id, group_type=B.GROUP_TYPE_TMP, group_name="g",
                group_avatar="", member_id_list=[bob.user_id, self.ids["carol"]],
            ),
        )  # fmt: skip
        got: dict[str, list] = {"bob": [], "phone": [], "carol": []}
        bob.protocol.on(B.CID_MSG_DATA, got["bob"].append)
        alice_phone.protocol.on(B.CID_MSG_DATA, got["phone"].append)
        node1 = self.node1.service("msg")
        node2 = self.node2.service("msg")
        caught_up = node2.catch_up.caught_up
        await wait_until(lambda: node1.catch_up.origins.run in node2.catch_up.peers)
        await node1.route.link.stop()  # down, and no reconnect until started again
        acks = [await alice.session.send_text(bob.user_id, "same words") for _ in range(2)]
        acks.append(await alice.session.send_text(created.group_id, "to all", B.SESSION_TYPE_GROUP))
        assert all(ack.msg_id > 0 for ack in acks)
        assert node1.route.backlog_size == 0  # stored, not kept in memory
        await sleep(1.1)  # carol logs in a second after they were stored
        carol = await self.client(self.node2, "carol")
        carol.protocol.on(B.CID_MSG_DATA, got["carol"].append)
        assert got["bob"] == []
        node1.route.link.start()
        await wait_until(lambda: len(got["bob"]) == 3, timeout=10, what="bob caught up")
        await wait_until(lambda: len(got["phone"]) == 3, timeout=5, what="alice's phone")
        await sleep(2.5)  # two more markers: nothing comes twice
        ids = sorted((p.message.to_session_id, p.message.msg_id) for p in got["bob"])
        expected = [(bob.user_id, acks[0].msg_id), (bob.user_id, acks[1].msg_id),
                    (created.group_id, acks[2].msg_id)]  # fmt: skip
        assert ids == sorted(expected), ids
        assert [decrypt_text(p.message.msg_data) for p in got["bob"]].count("same words") == 2
        assert not any(p.message.HasField("attach_data") for p in got["bob"])
        assert sorted((p.message.to_session_id, p.message.msg_id) for p in got["phone"]) == ids
        assert got["carol"] == []
        assert node2.catch_up.caught_up - caught_up == 6
        assert node2.catch_up.held <= 3

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

    async def test_room_over_tcp_links_follows_a_route_link_drop(self):
        """Joins are admitted, leaves counted and posts relayed over the TCP links; when
        node 2's link drops its members leave route's rooms (no post goes towards it), and
        the room list it sends on reconnect puts them back."""
        alice = Rooms((await self.client(self.node1, "alice")).session)
        bob = Rooms((await self.client(self.node2, "bob")).session)
        carol = Rooms((await self.client(self.node2, "carol")).session)
        for member in (alice, bob, carol):
            await member.opt_in()
        assert (await alice.join(77)).member_count == 1
        assert (await bob.join(77)).member_count == 2
        assert (await carol.join(77)).member_count == 3
        await carol.leave(77)
        rooms = self.route.hub.rooms
        await wait_until(lambda: rooms.members(77) == 2, what="carol's leave on route")
        await alice.post_text(77, "over the link")
        assert bob.text_of(await bob.next_post()) == "over the link"
        node2_route = self.node2.service("msg").route
        node2_route.link.connection.transport.loseConnection()
        await wait_until(lambda: rooms.members(77) == 1, what="node 2 dropped from the room")
        relayed = rooms.relayed
        await alice.post_text(77, "nobody on node 2 hears this")
        assert rooms.relayed == relayed
        await wait_until(lambda: rooms.members(77) == 2, timeout=10, what="node 2's room list")
        await alice.post_text(77, "back")
        assert bob.text_of(await bob.next_post()) == "back"

    async def test_room_post_is_acked_only_after_route_has_forwarded_it(self):
        """node 3 reaches route through a proxy holding its bytes: alice's post reaches
        carol (node 3) at once, but its ack waits for route (an answer alice asks for
        later comes first), and comes once route has the relay. bob, joining on node 2
        after the ack, then gets only later posts (issue 20: acked at once, the ack let
        bob's join reach route before the relay, and route forwarded it to him)."""
        proxy = TcpProxy(LOOPBACK, self.route.bound_port())
        proxy.open()
        self.addCleanup(proxy.stop)
        node3 = await self.start_msg_node(route_address=f"{LOOPBACK}:{proxy.port}")
        alice = Rooms((await self.client(node3, "alice")).session)
        carol = Rooms((await self.client(node3, "carol")).session)
        bob = Rooms((await self.client(self.node2, "bob")).session)
        for member in (alice, carol, bob):
            await member.opt_in()
        await alice.join(78)
        await carol.join(78)
        proxy.hold()
        posted = alice.post_text(78, "before bob")
        assert carol.text_of(await carol.next_post()) == "before bob"
        # Answered by node 3 alone, after the post on the same connection: an ack sent
        # at once would have arrived before it.
        left = await alice.session.get(X.CID_EXT_ROOM_LEAVE_REQ, X.IMExtRoomLeaveReq(room_id=1))
        assert left.result_code == X.EXT_RESULT_NOT_IN_ROOM
        assert not posted.called, "the post was acked before route had its relay"
        proxy.release()
        assert (await posted).result_code == X.EXT_RESULT_OK
        assert (await bob.join(78)).member_count == 3
        await alice.post_text(78, "after bob")
        assert bob.text_of(await bob.next_post()) == "after bob"
        await assert_nothing(bob.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)

    async def test_relays_beyond_the_route_backlog_are_dropped_oldest_first_logged_once(self):
        """node 1's route link down, its backlog bound lowered to 5: alice's P2P commands
        past the bound push out the oldest (never more than 5 held) with one warning per
        outage; her message meanwhile is acked and not kept. Once the link is back bob
        gets the 5 newest commands and the message (from the store), the reconnect line
        counts what was dropped, and the backlog is empty. A second outage warns once
        more and counts only its own drops."""
        bob = await self.client(self.node2, "bob")
        alice = await self.client(self.node1, "alice")
        await bob.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(alice.user_id, 1))
        node1, node2 = self.node1.service("msg"), self.node2.service("msg")
        await wait_until(lambda: node1.catch_up.origins.run in node2.catch_up.peers)
        route = node1.route
        assert isinstance(route, LinkedRoute)
        route.backlog_max = 5
        lines: list[str] = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == "teamtalk.msg.route":
                lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        commands: list[str] = []
        bob.protocol.on(B.CID_SWITCH_P2P_CMD, lambda p: commands.append(p.message.cmd_msg_data))
        texts: list[int] = []
        bob.protocol.on(B.CID_MSG_DATA, lambda p: texts.append(p.message.msg_id))
        acks = []
        for outage in (1, 2):
            await route.link.stop()  # down, and no reconnect until started again
            for i in range(12):
                alice.protocol.send(
                    B.CID_SWITCH_P2P_CMD,
                    SwitchService_pb2.IMP2PCmdMsg(
                        from_user_id=alice.user_id, to_user_id=bob.user_id,
                        cmd_msg_data=f"{outage}.{i}",
                    ),
                )  # fmt: skip
                await wait_until(lambda n=i + 1: route.backlog_size + route.overflow == n,
                                 timeout=20, what=f"command {i} kept or dropped")  # fmt: skip
                assert route.backlog_size <= 5
            ack = await alice.session.send_text(bob.user_id, f"during outage {outage}")
            assert ack.msg_id > 0
            acks.append(ack.msg_id)
            assert (route.backlog_size, route.overflow, route.messages_not_relayed) == (5, 7, 1)
            full = [line for line in lines if "route backlog full (5 packets)" in line]
            assert len(full) == outage, lines
            assert len(commands) == 5 * (outage - 1)  # nothing went while the link was down
            route.link.start()
            await wait_until(lambda n=outage: len(commands) == 5 * n, timeout=20,
                             what="the kept commands at bob")  # fmt: skip
            assert commands[-5:] == [f"{outage}.{i}" for i in range(7, 12)]  # the 5 newest
            assert route.backlog_size == 0 and route.overflow == 0
            registered = [line for line in lines if line.startswith("registered ")]
            assert registered[-1].endswith(
                "sent 5 kept packets (7 dropped for room; 1 messages left to the catch-up)"
            ), registered
            await wait_until(lambda n=outage: len(texts) == n, timeout=20,
                             what="the message from the store")  # fmt: skip
            assert texts == acks
        await sleep(2.5)  # two more delivery markers: nothing comes twice
        assert texts == acks and len(commands) == 10
        assert len([line for line in lines if "route backlog full" in line]) == 2
