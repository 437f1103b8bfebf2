"""Offline push end to end: a running server, real clients, and local APNs and FCM
stand-ins that check every request as Apple and Google document them."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from teamtalk_client import encrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2
from teamtalk_py.push import store as push_store
from teamtalk_py.store import accounts
from teamtalk_py.store import groups as group_store
from tests.cluster_support import wait_until
from tests.msg_support import ANDROID, IOS, PC, MsgTestCase, sleep
from tests.push_support import KEY_ID, TEAM_ID, TOPIC, FakeApns, FakeFcm, PushKeys

BOB_TOKEN = "b0" * 32
CAROL_TOKEN = "carol-android-token"
DAVE_TOKEN = "d0" * 32
ALICE_TOKEN = "a0" * 32
ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))
#: Long enough for a push that should not come to have come.
SETTLE = 0.5


class PushTestCase(MsgTestCase):
    """A server pushing to a local APNs and FCM; alice (nick Alice) writes to the others."""

    push_overrides: dict = {}

    async def _set_up(self) -> None:
        self.keys = PushKeys(self.tmp_path() / "keys")
        self.apns = FakeApns(self.keys)
        self.apns_port = self.apns.listen(reactor, self.keys)
        self.addCleanup(lambda: self.apns.port.stopListening())
        self.fcm = FakeFcm(self.keys)
        self.addCleanup(self.fcm.listen(reactor, self.keys).stopListening)
        account = self.keys.write_service_account(self.fcm.token_uri)
        self.overrides = {
            "push.apns_key_file": str(self.keys.apns_key_file),
            "push.apns_key_id": KEY_ID,
            "push.apns_team_id": TEAM_ID,
            "push.apns_topic": TOPIC,
            "push.apns_host": self.apns.address,
            "push.fcm_service_account": str(account),
            "push.fcm_endpoint": self.fcm.base_url,
            "push.ca_file": str(self.keys.ca_file),
            "push.retry_base": 0.1,
            "push.retry_cap": 0.5,
            **self.push_overrides,
        }
        await super()._set_up()
        self.ids = {}
        for name in ("alice", "bob", "carol", "dave"):
            self.ids[name] = await self.add_user(name, nick=name.capitalize())

    def store(self):
        return self.server.service("store")

    async def token(self, name: str, client_type: int, token: str) -> None:
        await self.store().write(accounts.set_device_token, self.ids[name], client_type, token)

    async def pushes(self, fake, count: int, timeout: float = 10.0) -> list:
        """Wait for ``count`` delivered pushes, then make sure no more come."""
        await wait_until(lambda: len(fake.delivered()) >= count, timeout, f"{count} pushes")
        await sleep(SETTLE)
        self.assertEqual(fake.rejected, [])
        self.assertEqual(len(fake.delivered()), count, [n.body for n in fake.delivered()])
        return fake.delivered()


class OneToOnePushTests(PushTestCase):
    async def test_offline_ios_and_android_receivers_each_get_one_push(self):
        """Tokens registered by mobile clients; the reference's text and the unread badge."""
        for name, client_type, token in (("bob", IOS, BOB_TOKEN), ("carol", ANDROID, CAROL_TOKEN)):
            session = await self.login(name, client_type=client_type)
            await session.get(
                B.CID_LOGIN_REQ_DEVICETOKEN,
                Login_pb2.IMDeviceTokenReq(
                    user_id=session.user_id, device_token=token, client_type=client_type
                ),
            )
            session.protocol.transport.loseConnection()
        alice = await self.login("alice")
        await alice.send_text(self.ids["bob"], "hello bob")
        await alice.send_text(self.ids["carol"], "你好，这是一条比较长的中文消息，用来测试截断")
        (ios,) = await self.pushes(self.apns, 1)
        self.assertEqual(ios.token, BOB_TOKEN)
        self.assertEqual(
            ios.body,
            {
                "aps": {"alert": {"body": "Alice:hello bob"}, "badge": 1, "sound": "bingbong.aiff"},
                "custom": {"msg_type": B.MSG_TYPE_SINGLE_TEXT, "from_id": self.ids["alice"]},
            },
        )
        self.assertEqual(ios.headers["apns-collapse-id"], f"tt-1-{self.ids['alice']}")
        (android,) = await self.pushes(self.fcm, 1)
        message = android.body
        self.assertEqual(message["token"], CAROL_TOKEN)
        text = message["notification"]["body"]
        self.assertTrue(text.startswith("Alice:你好") and text.endswith("..."), text)
        self.assertLessEqual(len(text[:-3].encode()), 37)
        self.assertEqual(message["android"]["notification"]["notification_count"], 1)

    async def test_badge_is_the_total_unread_count(self):
        """The badge counts every unread message, from anyone, when the push is decided."""
        await self.token("bob", IOS, BOB_TOKEN)
        alice = await self.login("alice")
        dave = await self.login("dave")
        for count, (session, text) in enumerate(
            ((dave, "from dave"), (alice, "one"), (alice, "two")), start=1
        ):
            await session.send_text(self.ids["bob"], text)
            pushes = await self.pushes(self.apns, count)
            self.assertEqual(pushes[-1].body["aps"]["badge"], count)

    async def test_a_user_with_a_pc_online_gets_a_silent_push(self):
        await self.token("bob", IOS, BOB_TOKEN)
        await self.login("bob", client_type=PC)
        alice = await self.login("alice")
        await alice.send_text(self.ids["bob"], "are you there")
        (n,) = await self.pushes(self.apns, 1)
        self.assertEqual(n.body["aps"], {"badge": 1})
        self.assertEqual(n.headers["apns-priority"], "5")

    async def test_the_sender_is_never_pushed(self):
        await self.token("alice", IOS, ALICE_TOKEN)
        await self.token("bob", IOS, BOB_TOKEN)
        alice = await self.login("alice", client_type=PC)
        await alice.send_text(self.ids["bob"], "hi")
        (n,) = await self.pushes(self.apns, 1)
        self.assertEqual(n.token, BOB_TOKEN)

    async def test_pictures_and_voice_have_the_reference_texts(self):
        await self.token("bob", IOS, BOB_TOKEN)
        alice = await self.login("alice")
        await alice.send_text(self.ids["bob"], "&$#@~^@[{:http://x/y.png:}]&$~@#@")
        await self.pushes(self.apns, 1)
        await alice.send_message(self.ids["bob"], B.MSG_TYPE_SINGLE_AUDIO, b"\x00\x00\x00\x02spx")
        texts = [n.body["aps"]["alert"]["body"] for n in await self.pushes(self.apns, 2)]
        # 5 + 33 bytes: the reference's 37-byte cut applies to voice texts too.
        self.assertEqual(texts, ["您收到了一条消息", "Alice给您发送了一条语音消..."])

    async def test_a_message_to_nobodys_phone_leaves_no_outbox_row(self):
        """No token, nothing to push: the push path costs that message one token lookup."""
        alice = await self.login("alice")
        await alice.send_text(self.ids["carol"], "at my desk")
        self.assertEqual(await self.store().read(push_store.outbox_size), 0)
        await sleep(SETTLE)
        self.assertEqual((self.apns.accepted, self.fcm.accepted), ([], []))

    async def test_a_dead_token_is_removed(self):
        """APNs 410 Unregistered: the stored token goes; later messages push nothing."""
        await self.token("bob", IOS, BOB_TOKEN)
        self.apns.dead_tokens.add(BOB_TOKEN)
        alice = await self.login("alice")
        await alice.send_text(self.ids["bob"], "anyone?")
        await wait_until(lambda: len(self.apns.accepted) == 1, 10, "the 410")
        await wait_until(
            lambda: self.server.service("push").counters.get("apns", "failed") == 1, 5, "failed"
        )
        for _ in range(50):
            tokens = await self.store().read(accounts.get_device_tokens, [self.ids["bob"]])
            if not tokens:
                break
            await sleep(0.02)
        self.assertEqual(tokens, [])
        await alice.send_text(self.ids["bob"], "still?")
        await sleep(SETTLE)
        self.assertEqual(len(self.apns.accepted), 1)

    async def test_a_sender_down_for_a_while_delivers_every_push_once(self):
        """APNs unreachable: pushes wait and are retried; when it is back, each arrives once."""
        await self.token("bob", IOS, BOB_TOKEN)
        await self.token("carol", IOS, "c0" * 32)
        port_number = self.apns.port.getHost().port
        await self.apns.port.stopListening()
        senders = {name: await self.login(name) for name in ("alice", "carol", "dave")}
        for name, session in senders.items():
            await session.send_text(self.ids["bob"], f"from {name}")
        await senders["alice"].send_text(self.ids["carol"], "to carol")
        push = self.server.service("push")
        await wait_until(lambda: push.counters.get("apns", "retried") >= 4, 10, "retries")
        self.apns.listen(reactor, self.keys, port_number)
        delivered = await self.pushes(self.apns, 4)
        texts = sorted(n.body["aps"]["alert"]["body"] for n in delivered if n.token == BOB_TOKEN)
        self.assertEqual(texts, ["Alice:from alice", "Carol:from carol", "Dave:from dave"])
        (to_carol,) = [n.body["aps"] for n in delivered if n.token != BOB_TOKEN]
        self.assertEqual(to_carol, {"badge": 1})  # carol's PC is online: silent
        self.assertEqual(push.counters.get("apns", "sent"), 4)

    async def test_a_burst_in_one_conversation_ends_with_its_newest_push(self):
        """Messages decided together coalesce per conversation (one collapse id): the
        device's last notification is the newest message, with every message counted."""
        await self.token("bob", IOS, BOB_TOKEN)
        alice = await self.login("alice")
        for text in ("one", "two", "three"):
            await alice.send_text(self.ids["bob"], text)
        await wait_until(
            lambda: any(n.body["aps"]["badge"] == 3 for n in self.apns.delivered()), 10, "badge 3"
        )
        await sleep(SETTLE)
        delivered = self.apns.delivered()
        self.assertLessEqual(len(delivered), 3)
        self.assertEqual(delivered[-1].body["aps"]["alert"]["body"], "Alice:three")
        self.assertEqual(delivered[-1].body["aps"]["badge"], 3)

    async def test_429_is_retried_and_delivered_once(self):
        await self.token("bob", IOS, BOB_TOKEN)
        self.apns.throttle = 2
        alice = await self.login("alice")
        await alice.send_text(self.ids["bob"], "busy?")
        (n,) = await self.pushes(self.apns, 1)
        ids = {a.headers["apns-id"] for a in self.apns.accepted}
        self.assertEqual(len(self.apns.accepted), 3)
        self.assertEqual(ids, {n.headers["apns-id"]})  # the same notification each time
        metrics = text_string_to_metric_families(
            self.server.collection.metrics.exposition().decode()
        )
        counts = {
            s.labels["outcome"]: s.value
            for family in metrics
            if family.name == "teamtalk_push"
            for s in family.samples
            if s.name == "teamtalk_push_total" and s.labels["sender"] == "apns"
        }
        self.assertEqual(counts, {"queued": 1, "sent": 1, "retried": 2, "failed": 0, "expired": 0})


class NightMuteTests(PushTestCase):
    push_overrides = {"push.night_start": 0, "push.night_end": 24}  # always night

    async def test_shielded_ios_users_get_nothing_at_night(self):
        """iOS + push shield: nothing; Android with the shield and iOS without still get one."""
        for name in ("bob", "carol"):
            await self.store().write(
                accounts.set_push_shield, self.ids[name], 1, now=int(time.time())
            )
        await self.token("bob", IOS, BOB_TOKEN)
        await self.token("carol", ANDROID, CAROL_TOKEN)
        await self.token("dave", IOS, DAVE_TOKEN)
        alice = await self.login("alice")
        for name in ("bob", "carol", "dave"):
            await alice.send_text(self.ids[name], "late")
        (ios,) = await self.pushes(self.apns, 1)
        self.assertEqual(ios.token, DAVE_TOKEN)
        await self.pushes(self.fcm, 1)


class GroupPushTests(PushTestCase):
    async def test_group_push_respects_the_shield_and_skips_the_sender(self):
        for name, token in (("alice", ALICE_TOKEN), ("bob", BOB_TOKEN), ("dave", DAVE_TOKEN)):
            await self.token(name, IOS, token)
        await self.token("carol", ANDROID, CAROL_TOKEN)
        group, _ = await self.store().write(
            group_store.create_group, "team", self.ids["alice"],
            [self.ids[n] for n in ("bob", "carol", "dave")], now=int(time.time()),
        )  # fmt: skip
        await self.store().write(group_store.set_shield, self.ids["bob"], group.id, 1)
        alice = await self.login("alice", client_type=PC)
        ack = await alice.send_message(
            group.id, B.MSG_TYPE_GROUP_TEXT, encrypt_text("standup in 5")
        )
        self.assertGreater(ack.msg_id, 0)
        (dave,) = await self.pushes(self.apns, 1)
        self.assertEqual(dave.token, DAVE_TOKEN)
        self.assertEqual(dave.body["aps"]["alert"]["body"], "Alice:standup in 5")
        self.assertEqual(
            dave.body["custom"],
            {"msg_type": B.MSG_TYPE_GROUP_TEXT, "from_id": self.ids["alice"], "group_id": group.id},
        )
        self.assertEqual(dave.headers["apns-collapse-id"], f"tt-2-{group.id}")
        (carol,) = await self.pushes(self.fcm, 1)
        self.assertEqual(carol.body["data"]["group_id"], str(group.id))


class PushServerTests(MsgTestCase):
    async def _set_up(self) -> None:
        from tests.push_support import FakePushServer

        self.fake = FakePushServer()
        self.addCleanup(self.fake.listen(reactor).stopListening)
        self.overrides = {"push.push_server": self.fake.address}
        await super()._set_up()

    async def test_push_server_gets_the_reference_request(self):
        alice = await self.add_user("alice", nick="Alice")
        bob = await self.add_user("bob")
        await self.server.service("store").write(accounts.set_device_token, bob, IOS, BOB_TOKEN)
        session = await self.login("alice")
        await session.send_text(bob, "via push_server")
        await wait_until(lambda: len(self.fake.requests) == 1, 10, "push request")
        request = self.fake.requests[0]
        self.assertEqual(request.flash, "Alice:via push_server")
        self.assertEqual(request.data, f'{{"msg_type":1,"from_id":{alice}}}')
        (info,) = request.user_token_list
        self.assertEqual((info.user_id, info.token, info.push_count, info.push_type),
                         (bob, BOB_TOKEN, 1, 1))  # fmt: skip
        await sleep(SETTLE)
        self.assertEqual(len(self.fake.requests), 1)


class AdminPushTestTests(PushTestCase):
    """``teamtalk-admin push test USER`` against the same stand-ins."""

    async def admin(self, *args: str) -> tuple[int, str]:
        config = self.tmp_path() / "admin.toml"
        push = {k.split(".", 1)[1]: v for k, v in self.overrides.items()}
        config.write_text(
            "[push]\n"
            + "".join(
                f"{key} = {value!r}\n".replace("'", '"')
                for key, value in push.items()
                if isinstance(value, str)
            )
        )
        out, err, code = await getProcessOutputAndValue(
            ADMIN, ["--config", str(config), "--data-dir", str(self.data_dir), *args],
            env=dict(os.environ),
        )  # fmt: skip
        return code, (out + err).decode()

    async def test_push_test_sends_to_the_users_device_now(self):
        await self.token("bob", IOS, BOB_TOKEN)
        code, output = await self.admin("push", "test", "bob", "--text", "hello from ops")
        self.assertEqual(code, 0, output)
        self.assertIn("sent to bob's ios device via apns", output)
        (n,) = self.apns.delivered()
        self.assertEqual((n.token, n.body["aps"]["alert"]["body"]), (BOB_TOKEN, "hello from ops"))

    async def test_push_test_reports_and_removes_a_dead_token(self):
        await self.token("bob", IOS, BOB_TOKEN)
        self.apns.dead_tokens.add(BOB_TOKEN)
        code, output = await self.admin("push", "test", "bob")
        self.assertEqual(code, 1, output)
        self.assertIn("410 Unregistered", output)
        self.assertEqual(await self.store().read(accounts.get_device_tokens, [self.ids["bob"]]), [])

    async def test_push_test_without_a_token_says_so(self):
        code, output = await self.admin("push", "test", "carol")
        self.assertEqual(code, 1)
        self.assertIn("carol has no device token", output)
