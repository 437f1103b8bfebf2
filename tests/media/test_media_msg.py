"""The media service with msg: picture messages, avatars and API tokens for real users."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time

from twisted.internet import threads

from teamtalk_client import decrypt_text
from teamtalk_py import admin
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2
from teamtalk_py.store import accounts
from teamtalk_py.store.accounts import md5_hex
from tests.media_support import afnetworking_upload, get, http, picture
from tests.msg_support import PASSWORD, MsgTestCase, next_pdu

IMAGE_PREFIX = "&$#@~^@[{:"
IMAGE_SUFFIX = ":}]&$~@#@"


class PictureMessageTests(MsgTestCase):
    overrides = {"server.services": "msg,route,login,media"}

    async def test_picture_message_url_is_fetched_by_the_receiver(self):
        """Alice uploads a picture as iOS does and sends the image convention text;
        Bob decrypts it, extracts the URL and fetches the same bytes."""
        await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice", client_type=B.CLIENT_TYPE_IOS)
        bob = await self.login("bob")
        base = self.server.media_url
        data = picture(50_000)
        head, body = afnetworking_upload(base, data, "image.png_300x400.png")
        url = (await http(base, head, body)).json()["url"]
        ack = await alice.send_text(b, IMAGE_PREFIX + url + IMAGE_SUFFIX)
        assert ack.msg_id == 1
        delivered = (await next_pdu(bob.protocol, B.CID_MSG_DATA)).message
        text = decrypt_text(delivered.msg_data)
        found = re.search(re.escape(IMAGE_PREFIX) + "(.+?)" + re.escape(IMAGE_SUFFIX), text)
        assert found is not None, text
        fetched = await get(found.group(1))
        assert fetched.status == 200 and fetched.body == data


async def token_request(base: str, user: str, password_md5: str):
    body = json.dumps({"user": user, "password": password_md5}).encode()
    head = (
        f"POST /api/v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}"
    )
    return await http(base, head, body)


class TokenTests(MsgTestCase):
    overrides = {"server.services": "msg,route,login,media", "media.anonymous_uploads": False}

    async def upload_with(self, token: str | None):
        base = self.server.media_url
        head, body = afnetworking_upload(base, picture(), "a.jpg")
        if token is not None:
            head += f"\r\nAuthorization: Bearer {token}"
        return await http(base, head, body)

    async def test_token_for_the_login_digest_authorizes_uploads(self):
        """The MD5 digest clients log in with buys a token; uploads then carry it."""
        user_id = await self.add_user("alice")
        response = await token_request(self.server.media_url, "alice", md5_hex(PASSWORD))
        assert response.status == 200, response.body
        answer = response.json()
        assert answer["user_id"] == user_id and answer["expires_at"] > time.time()
        assert (await self.upload_with(None)).status == 401
        uploaded = await self.upload_with(answer["token"])
        assert uploaded.status == 200 and uploaded.json()["error_code"] == 0
        assert (await self.upload_with(answer["token"] + "x")).status == 401

    async def test_wrong_password_then_lockout(self):
        """Wrong digests are 401; the fifth failure of a name from an address makes the
        next try wait, and is answered 429 already, as for PDU logins."""
        await self.add_user("alice")
        base = self.server.media_url
        statuses = [(await token_request(base, "alice", md5_hex("wrong"))).status for _ in range(5)]
        assert statuses == [401] * 4 + [429]
        assert (await token_request(base, "alice", md5_hex(PASSWORD))).status == 429
        assert (await token_request(base, "nobody", "x")).status == 400

    async def test_disabling_or_changing_the_password_revokes_tokens(self):
        """A token stops working when its user is disabled or changes password."""
        a = await self.add_user("alice")
        await self.add_user("bob")
        store = self.server.service("store")
        tokens = {}
        for name in ("alice", "bob"):
            response = await token_request(self.server.media_url, name, md5_hex(PASSWORD))
            tokens[name] = response.json()["token"]
        await store.write(accounts.set_user_status, a, accounts.USER_STATUS_LEFT, now=1)
        assert (await self.upload_with(tokens["alice"])).status == 401
        bob = (await store.read(accounts.get_user_by_name, "bob")).id
        assert (await self.upload_with(tokens["bob"])).status == 200
        await store.write(accounts.set_password, bob, "n3w", now=1)
        assert (await self.upload_with(tokens["bob"])).status == 401


class AvatarTests(MsgTestCase):
    overrides = {"server.services": "msg,route,login,media"}

    async def change_avatar(self, session, url: str):
        return await session.get(
            B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST,
            Buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url=url),
        )

    async def test_avatar_must_be_a_media_url(self):
        """As the mac client does: upload, then set the returned URL (result 0, stored);
        a URL of another host is refused with result 1 and stored nowhere."""
        a = await self.add_user("alice")
        alice = await self.login("alice", client_type=B.CLIENT_TYPE_MAC)
        base = self.server.media_url
        head, body = afnetworking_upload(base, picture(), "image.png")
        url = (await http(base, head, body)).json()["url"]
        assert (await self.change_avatar(alice, url)).result_code == 0
        refused = await self.change_avatar(alice, "http://tracker.example/pixel.gif")
        assert refused.result_code == 1
        rows = await self.server.service("store").read(accounts.get_users_by_ids, [a])
        assert rows[0].avatar == url

    async def test_admin_sets_an_avatar_from_a_local_file(self):
        """``teamtalk-admin user avatar NAME FILE`` stores the picture in the content
        store and the user's avatar URL, which the media service then serves."""
        a = await self.add_user("alice")
        data = picture(7000)
        local = self.tmp_path() / "me.jpg"
        local.write_bytes(data)
        media = self.server.service("media")
        argv = [
            "--data-dir", str(self.data_dir), "--media-url", media.public_url(),
            "user", "avatar", "alice", str(local),
        ]  # fmt: skip
        url = await threads.deferToThread(run_admin, argv)
        assert url.startswith(media.public_url() + "g0/") and url.endswith(".jpeg")
        rows = await self.server.service("store").read(accounts.get_users_by_ids, [a])
        assert rows[0].avatar == url
        assert (await get(url)).body == data
        text = self.tmp_path() / "notes.txt"
        text.write_text("not a picture")
        argv[-1] = str(text)
        assert await threads.deferToThread(run_admin, argv, 1) == ""


def run_admin(argv: list[str], status: int = 0) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert admin.main(argv) == status
    return out.getvalue().strip()


class SharedLockoutTests(MsgTestCase):
    overrides = {"server.services": "msg,route,login,media"}

    async def test_token_failures_lock_the_pdu_login_too(self):
        """Failed token requests count against the name and address for PDU logins as
        well."""
        await self.add_user("alice")
        for _ in range(5):
            await token_request(self.server.media_url, "alice", md5_hex("wrong"))
        answer, _ = await self.attempt("alice")
        assert answer.result_code != B.REFUSE_REASON_NONE
        assert "次数太多" in answer.result_string


class QuotaTests(MsgTestCase):
    overrides = {"server.services": "msg,route,login,media", "media.user_quota": 60_000}

    async def test_picture_uploads_with_a_token_count_against_the_quota(self):
        """A user's pictures add up; the one that would pass the quota gets HTTP 413 and
        error_code 15, and nothing is stored for it."""
        await self.add_user("alice")
        base = self.server.media_url
        token = (await token_request(base, "alice", md5_hex(PASSWORD))).json()["token"]
        results = []
        for _ in range(3):
            head, body = afnetworking_upload(base, picture(25_000), "a.jpg")
            response = await http(base, head + f"\r\nAuthorization: Bearer {token}", body)
            results.append((response.status, response.json()["error_code"]))
        assert results == [(200, 0), (200, 0), (413, 15)]
