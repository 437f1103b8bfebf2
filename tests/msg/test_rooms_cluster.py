"""Chat rooms across a real cluster (``test_cluster.py``'s processes: a center with route,
two msg-only nodes): members on both nodes, late joiners, disconnects and a lost node
leaving everywhere, posts forwarded only to nodes with members."""

from __future__ import annotations

import re
import time

import requests
from twisted.internet import threads

from teamtalk_client.rooms import Rooms
from teamtalk_py.pb.IM import Extension_pb2 as X
from tests.cluster.test_cluster import Cluster, SharedCluster
from tests.cluster_support import IOS, PC, Client, log_in, sleep
from tests.msg_support import assert_nothing
from tests.support import TestCase


class RoomsClusterTests(TestCase):
    cluster: Cluster

    def setUp(self) -> None:
        shared = SharedCluster.get()
        assert shared.cluster is not None
        self.cluster = shared.cluster
        self.clients: list[Client] = []

    async def tearDown(self) -> None:
        for client in self.clients:
            await client.close()

    async def member(self, node: str, name: str, *rooms: int, client_type: int = PC) -> Rooms:
        client = await log_in(self.cluster.port(node), name, client_type)
        self.clients.append(client)
        member = Rooms(client.session)
        await member.opt_in()
        for room_id in rooms:
            await member.join(room_id)
        return member

    async def center_metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.cluster.ops_ports['center']}/metrics"
        text = (await threads.deferToThread(requests.get, url, timeout=5)).text
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found, f"{name} not in /metrics"
        return float(found.group(1))

    async def members_seen_by_a_new_joiner(self, room_id: int, node: str, name: str) -> int:
        """The room's cluster-wide count as route reports it to one more member (who
        leaves again)."""
        probe = await self.member(node, name)
        answer = await probe.join(room_id)
        await probe.leave(room_id)
        return answer.member_count - 1

    async def wait_members(self, room_id: int, expected: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (seen := await self.members_seen_by_a_new_joiner(room_id, "node1", "zelda")) != (
            expected
        ):
            assert time.monotonic() < deadline, f"room {room_id}: {seen} members, not {expected}"
            await sleep(0.1)

    async def test_members_on_two_nodes_receive_each_others_posts(self):
        """Posts from either node reach every other member on both nodes once; route
        counts members of both nodes; a connection of a member's user that did not opt in
        gets nothing."""
        room = 20001
        alice = await self.member("node1", "alice", room)
        carol = await self.member("node1", "carol", room)
        plain = await log_in(self.cluster.port("node2"), "bob", IOS)
        self.clients.append(plain)
        bob = await self.member("node2", "bob")
        assert (await bob.join(room)).member_count == 3
        await alice.post_text(room, "from node 1")
        for member in (bob, carol):
            post = await member.next_post()
            assert member.text_of(post) == "from node 1"
            assert post.from_user_id == alice.session.user_id
        await bob.post_text(room, "from node 2")
        for member in (alice, carol):
            assert member.text_of(await member.next_post()) == "from node 2"
        await assert_nothing(alice.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)
        await assert_nothing(bob.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)
        await assert_nothing(plain.protocol)

    async def test_late_joiner_on_the_other_node_sees_only_later_posts(self):
        room = 20002
        dave = await self.member("node1", "dave", room)
        erin = await self.member("node2", "erin")
        await dave.post_text(room, "before erin")
        await erin.join(room)
        await dave.post_text(room, "after erin")
        assert erin.text_of(await erin.next_post()) == "after erin"
        await assert_nothing(erin.session.protocol, X.CID_EXT_ROOM_POST_NOTIFY)

    async def test_posts_go_only_to_nodes_with_members(self):
        """A room whose members are all on node 1 costs route nothing; once a member on
        node 2 joins, each post is forwarded once."""
        room = 20003
        frank = await self.member("node1", "frank", room)
        await self.member("node1", "grace", room)
        before = await self.center_metric("teamtalk_room_relays_total")
        for n in range(5):
            await frank.post_text(room, f"local {n}")
        assert await self.center_metric("teamtalk_room_relays_total") == before
        heidi = await self.member("node2", "heidi", room)
        await frank.post_text(room, "now relayed")
        assert heidi.text_of(await heidi.next_post()) == "now relayed"
        assert await self.center_metric("teamtalk_room_relays_total") == before + 1

    async def test_disconnected_member_leaves_everywhere(self):
        """A member on node 2 that disconnects is no longer counted by route, and posts
        are no longer forwarded towards node 2 for that room."""
        room = 20004
        ivan = await self.member("node1", "ivan", room)
        judy = await self.member("node2", "judy", room)
        await self.wait_members(room, 2)
        judy.session.protocol.transport.loseConnection()
        await judy.session.protocol.closed
        await self.wait_members(room, 1)
        before = await self.center_metric("teamtalk_room_relays_total")
        await ivan.post_text(room, "judy gone")
        assert await self.center_metric("teamtalk_room_relays_total") == before

    async def test_lost_node_leaves_every_room_on_route(self):
        """Killing a msg node removes its members from route's rooms: the count drops
        and the room goes on for the others."""
        room = 20005
        node3 = self.cluster.add_node("node3")
        node3.start()
        try:
            await self.cluster.wait_registered(["node1", "node2", "node3"])
            mallory = await self.member("node1", "mallory", room)
            await self.member("node3", "oscar", room)
            await self.member("node3", "peggy", room)
            await self.wait_members(room, 3)
            node3.kill()
            await self.wait_members(room, 1)
            sybil = await self.member("node2", "sybil", room)
            await mallory.post_text(room, "after the loss")
            assert sybil.text_of(await sybil.next_post()) == "after the loss"
        finally:
            node3.kill()
            del self.cluster.nodes["node3"]
