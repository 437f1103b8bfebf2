"""Push in a real cluster: a center (route, login, file) and two msg-only nodes on one
MariaDB and one Redis, the queue in Redis Streams, and a local APNs stand-in. A message
is pushed once, by the node that stored it, wherever its receivers are."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet import reactor

import tests.cluster.test_cluster as cluster_module
from teamtalk_client import encrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Group_pb2, Login_pb2
from tests.cluster_support import (
    PC,
    create_users,
    log_in,
    scratch_database,
    scratch_redis,
    wait_until,
)
from tests.msg_support import sleep
from tests.push_support import KEY_ID, TEAM_ID, TOPIC, FakeApns, PushKeys
from tests.support import TestCase

USERS = ("alice", "bob", "carol", "dave")
TOKENS = {"bob": "b2" * 32, "carol": "c2" * 32, "dave": "d2" * 32}


class PushClusterTests(TestCase):
    async def setUp(self) -> None:
        self.db = scratch_database()
        self.addCleanup(self.db.drop)
        self.redis = scratch_redis()
        self.addCleanup(self.redis.drop)
        root = Path(tempfile.mkdtemp(prefix="tt_push_cluster_"))
        self.addCleanup(shutil.rmtree, root, True)
        self.keys = PushKeys(root / "keys")
        self.apns = FakeApns(self.keys)
        self.addCleanup(self.apns.listen(reactor, self.keys).stopListening)
        config = root / "push.toml"
        config.write_text(
            "[push]\n"
            f'apns_key_file = "{self.keys.apns_key_file}"\n'
            f'apns_key_id = "{KEY_ID}"\napns_team_id = "{TEAM_ID}"\napns_topic = "{TOPIC}"\n'
            f'apns_host = "{self.apns.address}"\nca_file = "{self.keys.ca_file}"\n'
        )
        self.ids = create_users(self.db.url, USERS)
        self.cluster = cluster_module.Cluster(root, self.db.url, self.redis.url)
        self.addCleanup(self.cluster.stop)
        self.cluster.center.start()
        for name in ("node1", "node2"):
            node = self.cluster.add_node(name)
            node.args += ["--config", str(config)]
            node.start()
        await self.cluster.wait_registered(["node1", "node2"])
        self.clients: list = []

    async def tearDown(self) -> None:
        for client in self.clients:
            await client.close()

    async def client(self, node: str, name: str, client_type: int = PC):
        client = await log_in(self.cluster.port(node), name, client_type)
        self.clients.append(client)
        return client

    async def register(self, node: str, name: str) -> None:
        client = await self.client(node, name, B.CLIENT_TYPE_IOS)
        await client.session.get(
            B.CID_LOGIN_REQ_DEVICETOKEN,
            Login_pb2.IMDeviceTokenReq(
                user_id=client.user_id, device_token=TOKENS[name], client_type=B.CLIENT_TYPE_IOS
            ),
        )
        await client.close()

    async def test_pushes_are_sent_once_whichever_node_holds_the_receivers(self):
        """1:1 to a user last seen on the other node, then a group spanning both nodes
        (the reference pushed group messages once per msg node)."""
        await self.register("node2", "bob")
        await self.register("node1", "carol")
        await self.register("node2", "dave")
        await self.client("node2", "dave", PC)  # dave's PC is online on node2: silent
        alice = await self.client("node1", "alice")
        ack = await alice.session.send_text(self.ids["bob"], "cross node")
        self.assertGreater(ack.msg_id, 0)
        await wait_until(lambda: len(self.apns.delivered()) == 1, 15, "the 1:1 push")
        group = await alice.session.get(
            B.CID_GROUP_CREATE_REQUEST,
            Group_pb2.IMGroupCreateReq(
                user_id=alice.user_id, group_type=B.GROUP_TYPE_TMP, group_name="both",
                group_avatar="", member_id_list=[self.ids[n] for n in USERS],
            ),
        )  # fmt: skip
        ack = await alice.session.send_message(
            group.group_id, B.MSG_TYPE_GROUP_TEXT, encrypt_text("everyone")
        )
        self.assertGreater(ack.msg_id, 0)
        await wait_until(lambda: len(self.apns.delivered()) == 4, 15, "the group pushes")
        await sleep(1.0)
        self.assertEqual(self.apns.rejected, [])
        pushes = [(n.token, n.body["aps"]) for n in self.apns.delivered()]
        self.assertEqual(len(pushes), 4, pushes)
        alert = {"alert": {"body": "alice:cross node"}, "badge": 1, "sound": "bingbong.aiff"}
        self.assertEqual(pushes[0], (TOKENS["bob"], alert))
        by_token = {token: aps for token, aps in pushes[1:]}
        self.assertEqual(set(by_token), set(TOKENS.values()))
        self.assertEqual(by_token[TOKENS["dave"]], {"badge": 1})
        self.assertEqual(by_token[TOKENS["bob"]]["badge"], 2)
        self.assertEqual(by_token[TOKENS["carol"]]["alert"], {"body": "alice:everyone"})
