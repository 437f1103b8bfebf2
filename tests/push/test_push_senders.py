"""Each push sender against a local stand-in that checks requests as the service
documents them (tests/push_support.py): what is sent, and what each answer comes to."""

from __future__ import annotations

import json
import time

from twisted.internet import reactor

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.push.jobs import PUSH_NORMAL, PUSH_SILENT, PushJob
from teamtalk_py.push.senders.aio import AsyncioThread
from teamtalk_py.push.senders.apns import ApnsSender, ApnsSettings, ProviderToken
from teamtalk_py.push.senders.base import Result
from teamtalk_py.push.senders.fcm import FcmSender, FcmSettings
from teamtalk_py.push.senders.push_server import PushServerSender
from teamtalk_testing.ports import free_port as free_port_number
from tests.cluster_support import wait_until
from tests.push_support import (
    KEY_ID,
    TEAM_ID,
    TOPIC,
    FakeApns,
    FakeFcm,
    FakePushServer,
    PushKeys,
)
from tests.support import TestCase

IOS_TOKEN = "a1" * 32
ANDROID_TOKEN = "fcm-token-0123456789"


def job(platform: str = "ios", push_type: int = PUSH_NORMAL, token: str = IOS_TOKEN, **kw):
    values = dict(
        key="1.7.9.3.9",
        sender="apns" if platform == "ios" else "fcm",
        platform=platform,
        token=token,
        user_id=9,
        flash="Alice:hello",
        data='{"msg_type":1,"from_id":7}',
        badge=4,
        push_type=push_type,
        collapse_id="tt-1-7",
        created=time.time(),
    )
    values.update(kw)
    return PushJob(**values)


class SenderTestCase(TestCase):
    def setUp(self) -> None:
        self.keys = PushKeys(self.tmp_path())
        self.thread = AsyncioThread(reactor)
        self.thread.start()
        self.addCleanup(self.thread.stop)

    def listening(self, port) -> None:
        self.addCleanup(port.stopListening)


class ApnsTests(SenderTestCase):
    def sender(self, apns: FakeApns, **kw) -> ApnsSender:
        settings = ApnsSettings(
            key_pem=self.keys.apns_key_file.read_bytes(),
            key_id=KEY_ID,
            team_id=TEAM_ID,
            topic=TOPIC,
            host=apns.address,
            ca_file=str(self.keys.ca_file),
            **kw,
        )
        sender = ApnsSender(reactor, settings, self.thread)
        sender.start()
        self.addCleanup(sender.stop)
        return sender

    def fake(self) -> FakeApns:
        apns = FakeApns(self.keys)
        self.listening(apns.listen(reactor, self.keys))
        return apns

    async def test_alert_push_is_a_valid_http2_request_with_the_reference_payload(self):
        """Path, JWT, headers and the push_server's alert payload, over HTTP/2."""
        apns = self.fake()
        outcome = await self.sender(apns).send(job())
        self.assertEqual(outcome.result, Result.SENT, apns.rejected)
        (n,) = apns.accepted
        self.assertEqual(n.token, IOS_TOKEN)
        self.assertEqual(
            n.body,
            {
                "aps": {"alert": {"body": "Alice:hello"}, "badge": 4, "sound": "bingbong.aiff"},
                "custom": {"msg_type": 1, "from_id": 7},
            },
        )
        self.assertEqual(n.headers["apns-push-type"], "alert")
        self.assertEqual(n.headers["apns-priority"], "10")
        self.assertEqual(n.headers["apns-collapse-id"], "tt-1-7")
        self.assertEqual(n.headers["apns-id"], job().notification_id)

    async def test_silent_push_sets_only_the_badge_at_low_priority(self):
        """push_type 2: badge only, priority 5 (no alert, no sound)."""
        apns = self.fake()
        outcome = await self.sender(apns).send(job(push_type=PUSH_SILENT))
        self.assertEqual(outcome.result, Result.SENT, apns.rejected)
        (n,) = apns.accepted
        self.assertEqual(n.body["aps"], {"badge": 4})
        self.assertEqual(n.headers["apns-priority"], "5")

    async def test_expiration_is_creation_plus_max_age(self):
        apns = self.fake()
        created = time.time() - 100
        await self.sender(apns, max_age=600).send(job(created=created))
        self.assertEqual(apns.accepted[0].headers["apns-expiration"], str(int(created + 600)))

    async def test_410_means_the_token_is_dead(self):
        apns = self.fake()
        apns.dead_tokens.add(IOS_TOKEN)
        outcome = await self.sender(apns).send(job())
        self.assertEqual(outcome.result, Result.DEAD_TOKEN)
        self.assertIn("Unregistered", outcome.detail)

    async def test_429_is_retried(self):
        apns = self.fake()
        apns.throttle = 1
        sender = self.sender(apns)
        self.assertEqual((await sender.send(job())).result, Result.RETRY)
        self.assertEqual((await sender.send(job())).result, Result.SENT)

    async def test_the_provider_token_is_renewed_before_the_hour(self):
        """A JWT issued 55 minutes ago is replaced before the push goes out."""
        apns = self.fake()
        sender = self.sender(apns)
        sender.token.renew(time.time() - 55 * 60)
        self.assertEqual((await sender.send(job())).result, Result.SENT, apns.rejected)

    async def test_an_expired_provider_token_is_refused_and_renewed(self):
        """APNs answers 403 ExpiredProviderToken (here: a clock an hour behind when the
        JWT was made); the retry carries a new one."""
        apns = self.fake()
        sender = self.sender(apns)
        skewed = [time.time() - 3700]
        sender.token = ProviderToken(sender.settings, clock=lambda: skewed.pop() if skewed
                                     else time.time())  # fmt: skip
        outcome = await sender.send(job())
        self.assertEqual(outcome.result, Result.RETRY)
        self.assertEqual(apns.rejected, ["ExpiredProviderToken"])
        self.assertEqual((await sender.send(job())).result, Result.SENT)

    async def test_a_key_apns_does_not_know_is_refused(self):
        """The stand-in really verifies the signature: another key's JWT is refused."""
        apns = self.fake()
        apns.public_key = PushKeys(self.tmp_path()).apns_key.public_key()
        outcome = await self.sender(apns).send(job())
        self.assertEqual(outcome.result, Result.FAILED)
        self.assertIn("InvalidProviderToken", apns.rejected[0])

    async def test_a_service_that_is_down_is_retried(self):
        settings_host = f"127.0.0.1:{free_port_number()}"
        apns = FakeApns(self.keys)
        apns.port = None
        sender = ApnsSender(
            reactor,
            ApnsSettings(
                key_pem=self.keys.apns_key_file.read_bytes(), key_id=KEY_ID, team_id=TEAM_ID,
                topic=TOPIC, host=settings_host, ca_file=str(self.keys.ca_file),
            ),
            self.thread,
        )  # fmt: skip
        self.addCleanup(sender.stop)
        self.assertEqual((await sender.send(job())).result, Result.RETRY)


class FcmTests(SenderTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.fcm = FakeFcm(self.keys)
        self.listening(self.fcm.listen(reactor, self.keys))
        account = json.loads(self.keys.write_service_account(self.fcm.token_uri).read_text())
        self.sender = FcmSender(
            reactor,
            FcmSettings(account, self.fcm.base_url, 3600.0, str(self.keys.ca_file)),
            self.thread,
        )
        self.sender.start()
        self.addCleanup(self.sender.stop)

    async def test_alert_push_with_an_oauth2_token_from_the_service_account(self):
        outcome = await self.sender.send(job("android", token=ANDROID_TOKEN))
        self.assertEqual(outcome.result, Result.SENT, self.fcm.rejected)
        (n,) = self.fcm.accepted
        self.assertEqual(self.fcm.token_requests, 1)
        self.assertEqual(n.body["token"], ANDROID_TOKEN)
        self.assertEqual(n.body["notification"], {"body": "Alice:hello"})
        self.assertEqual(n.body["android"]["priority"], "HIGH")
        self.assertEqual(n.body["android"]["notification"]["notification_count"], 4)
        self.assertEqual(n.body["data"], {"msg_type": "1", "from_id": "7", "badge": "4",
                                          "push_type": "1"})  # fmt: skip

    async def test_the_access_token_is_reused(self):
        for _ in range(3):
            await self.sender.send(job("android", token=ANDROID_TOKEN))
        self.assertEqual(self.fcm.token_requests, 1)
        self.assertEqual(len(self.fcm.delivered()), 3)

    async def test_silent_push_is_data_only_at_normal_priority(self):
        outcome = await self.sender.send(job("android", PUSH_SILENT, token=ANDROID_TOKEN))
        self.assertEqual(outcome.result, Result.SENT, self.fcm.rejected)
        (n,) = self.fcm.accepted
        self.assertNotIn("notification", n.body)
        self.assertEqual(n.body["android"]["priority"], "NORMAL")
        self.assertEqual(n.body["data"]["push_type"], "2")

    async def test_unregistered_means_the_token_is_dead(self):
        self.fcm.dead_tokens.add(ANDROID_TOKEN)
        outcome = await self.sender.send(job("android", token=ANDROID_TOKEN))
        self.assertEqual(outcome.result, Result.DEAD_TOKEN)

    async def test_a_revoked_access_token_is_renewed(self):
        await self.sender.send(job("android", token=ANDROID_TOKEN))
        self.fcm.access_tokens.clear()
        self.assertEqual((await self.sender.send(job("android", token=ANDROID_TOKEN))).result,
                         Result.RETRY)  # fmt: skip
        outcome = await self.sender.send(job("android", token=ANDROID_TOKEN))
        self.assertEqual(outcome.result, Result.SENT, outcome.detail)
        self.assertEqual(self.fcm.token_requests, 2)


class PushServerTests(TestCase):
    async def test_push_request_and_answer_over_the_pdu_link(self):
        """One CID_OTHER_PUSH_TO_USER_REQ per job; the seq-less answer is matched by token."""
        fake = FakePushServer()
        port = fake.listen(reactor)
        self.addCleanup(port.stopListening)
        sender = PushServerSender(reactor, fake.address)
        sender.start()
        self.addCleanup(sender.stop)
        await wait_until(lambda: sender.link.connected, 5, "push_server link")
        ios = job("ios", PUSH_SILENT, sender="push_server")
        android = job("android", token=ANDROID_TOKEN, sender="push_server")
        ok, refused = await sender.send(ios), await sender.send(android)
        self.assertEqual(ok.result, Result.SENT)
        self.assertEqual(refused.result, Result.FAILED)  # push_server: Android is left alone
        first = fake.requests[0]
        self.assertEqual((first.flash, first.data), ("Alice:hello", '{"msg_type":1,"from_id":7}'))
        (info,) = first.user_token_list
        self.assertEqual(
            (info.user_id, info.user_type, info.token, info.push_count, info.push_type),
            (9, B.CLIENT_TYPE_IOS, IOS_TOKEN, 4, PUSH_SILENT),
        )

    async def test_a_down_link_is_retried(self):
        sender = PushServerSender(reactor, f"127.0.0.1:{free_port_number()}")
        sender.start()
        self.addCleanup(sender.stop)
        self.assertEqual((await sender.send(job(sender="push_server"))).result, Result.RETRY)
