"""``kill -9`` of a real ``twistd teamtalk`` between storing messages and pushing them:
no push is lost, and none is sent as a second notification (a push whose answer was
lost in the crash is sent again with the same ``apns-id`` and collapse id)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.internet import reactor

from teamtalk_client import TeamTalkSession, connect
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2
from teamtalk_testing.twistd import StandaloneServer
from tests.cluster_support import wait_until
from tests.msg_support import sleep
from tests.push_support import KEY_ID, TEAM_ID, TOPIC, FakeApns, PushKeys
from tests.support import TestCase

ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))
PASSWORD = "secret"
BOB_TOKEN = "b1" * 32


class PushCrashTests(TestCase):
    def setUp(self) -> None:
        root = self.tmp_path()
        self.keys = PushKeys(root / "keys")
        self.apns = FakeApns(self.keys)
        self.apns.listen(reactor, self.keys)
        self.apns_port = self.apns.port.getHost().port
        self.addCleanup(lambda: self.apns.port.stopListening())
        config = root / "teamtalk.toml"
        config.write_text(
            "[push]\n"
            f'apns_key_file = "{self.keys.apns_key_file}"\n'
            f'apns_key_id = "{KEY_ID}"\napns_team_id = "{TEAM_ID}"\napns_topic = "{TOPIC}"\n'
            f'apns_host = "{self.apns.address}"\nca_file = "{self.keys.ca_file}"\n'
            "retry_base = 0.2\nretry_cap = 0.5\nlease = 1.0\noutbox_grace = 1.0\n"
        )
        self.server = StandaloneServer(root / "server", ["--config", str(config)])
        self.addCleanup(self.server.stop)
        self.ids = {}
        self.server.data_dir.mkdir(parents=True, mode=0o700)  # only init would create it
        for name in ("alice", "bob", "carol", "dave", "erin"):
            out = subprocess.run(
                [ADMIN, "--data-dir", str(self.server.data_dir), "user", "add", "--name", name,
                 "--password", PASSWORD, "--nick", name.capitalize()],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            self.ids[name] = int(out.stdout)
        self.server.start()

    async def session(self, name: str, client_type: int = B.CLIENT_TYPE_WINDOWS):
        protocol = await connect(reactor, "127.0.0.1", self.server.msg_port)
        self.addCleanup(protocol.transport.loseConnection)
        session = TeamTalkSession(protocol)
        answer = await session.login(name, PASSWORD, client_type=client_type)
        self.assertEqual(answer.result_code, 0)
        return session

    async def register_bob(self) -> None:
        bob = await self.session("bob", B.CLIENT_TYPE_IOS)
        await bob.get(
            B.CID_LOGIN_REQ_DEVICETOKEN,
            Login_pb2.IMDeviceTokenReq(
                user_id=self.ids["bob"], device_token=BOB_TOKEN, client_type=B.CLIENT_TYPE_IOS
            ),
        )
        bob.protocol.transport.loseConnection()

    def restart_after_kill(self) -> None:
        self.server.process.kill()
        self.server.start()

    async def test_kill_9_between_store_and_push_loses_no_push(self):
        """APNs unreachable; four conversations' messages acked; kill -9 at once; APNs
        back; restart: one push each."""
        await self.register_bob()
        await self.apns.port.stopListening()
        senders = ("alice", "carol", "dave", "erin")
        for name in senders:
            session = await self.session(name)
            ack = await session.send_text(self.ids["bob"], f"crash from {name}")
            self.assertGreater(ack.msg_id, 0)
        self.restart_after_kill()
        self.apns.listen(reactor, self.keys, self.apns_port)
        await wait_until(lambda: len(self.apns.delivered()) >= 4, 20, "four pushes")
        await sleep(2.0)  # past the lease and the outbox grace: nothing more may come
        texts = sorted(n.body["aps"]["alert"]["body"] for n in self.apns.delivered())
        self.assertEqual(texts, [f"{n.capitalize()}:crash from {n}" for n in senders])
        self.assertEqual(len(self.apns.accepted), 4)
        self.assertEqual(self.apns.rejected, [])

    async def test_a_push_whose_answer_died_with_the_server_is_the_same_notification(self):
        """APNs got the push but the server died before the answer: after the restart it
        is sent once more with the same apns-id and collapse id (APNs and the device see
        one notification), and never a third time."""
        await self.register_bob()
        self.apns.hold = True
        alice = await self.session("alice")
        await alice.send_text(self.ids["bob"], "in flight")
        await wait_until(lambda: len(self.apns.held) == 1, 10, "the held push")
        alice.protocol.transport.loseConnection()
        self.restart_after_kill()
        self.apns.hold = False
        await wait_until(lambda: len(self.apns.delivered()) == 1, 20, "the push again")
        await sleep(2.0)
        (held,), (sent,) = self.apns.held, self.apns.delivered()
        self.assertEqual(len(self.apns.accepted), 1)
        for header in ("apns-id", "apns-collapse-id"):
            self.assertEqual(held.headers[header], sent.headers[header])
        self.assertEqual(held.body, sent.body)
