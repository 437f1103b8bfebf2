"""tus 1.0.0 uploads driven by the real ``tuspy`` client, plus raw requests for what a
well-behaved client never sends (cut-off bodies, wrong offsets, corrupted chunks)."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from urllib.parse import urlsplit

from tusclient import client as tus_client
from twisted.internet import threads

from teamtalk_py.store import content as refs
from teamtalk_py.store import media as rows
from teamtalk_py.store.accounts import md5_hex
from teamtalk_testing.ports import free_port, loopback_endpoint
from tests.media.test_media_msg import token_request
from tests.media_support import get, http
from tests.msg_support import PASSWORD, MsgTestCase, sleep

MiB = 1024 * 1024


class TusTests(MsgTestCase):
    overrides = {"server.services": "msg,route,login,media"}

    async def start_server(self, **overrides):
        # One fixed media port, so upload URLs stay valid across a restart.
        if not hasattr(self, "media_port"):
            self.media_port = free_port()
        overrides.setdefault("media.listen", loopback_endpoint(self.media_port))
        return await super().start_server(**overrides)

    async def token(self, name: str = "alice") -> str:
        if not hasattr(self, "_tokens"):
            self._tokens: dict[str, str] = {}
        if name not in self._tokens:
            await self.add_user(name)
            response = await token_request(self.server.media_url, name, md5_hex(PASSWORD))
            self._tokens[name] = response.json()["token"]
        return self._tokens[name]

    def files_url(self) -> str:
        return self.server.media_url + "api/v1/files/"

    def source(self, size: int) -> tuple[bytes, str]:
        data = os.urandom(size)
        path = self.tmp_path() / "upload.bin"
        path.write_bytes(data)
        return data, str(path)

    async def uploader(self, token: str, path: str, **kw):
        """A tuspy uploader (made on a thread: it creates or looks up the upload at once)."""
        tus = tus_client.TusClient(self.files_url(), headers={"Authorization": f"Bearer {token}"})
        return await threads.deferToThread(
            tus.uploader, file_path=path, metadata={"filename": "report.pdf"}, **kw
        )

    async def download(self, url: str, token: str | None, extra: str = ""):
        headers = f"Authorization: Bearer {token}" if token else ""
        if extra:
            headers = (headers + "\r\n" + extra).strip()
        return await get(url, headers)

    async def raw(self, method: str, url: str, headers: dict[str, str], body: bytes = b""):
        parts = urlsplit(url)
        head = f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0"
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            head += f"\r\n{name}: {value}"
        return await http(url, head, body)

    async def create(self, token: str, length: int) -> str:
        response = await self.raw(
            "POST",
            self.files_url(),
            {"Authorization": f"Bearer {token}", "Upload-Length": str(length)},
        )
        assert response.status == 201, response.body
        return response.headers["location"]

    async def offset(self, token: str, url: str) -> int:
        response = await self.raw("HEAD", url, {"Authorization": f"Bearer {token}"})
        assert response.status == 200, response.status
        return int(response.headers["upload-offset"])

    # -- tests ---------------------------------------------------------------------------

    async def test_tuspy_upload_with_checksums_then_download(self):
        """tuspy uploads in 1 MiB chunks with sha1 checksums; the owner downloads the same
        bytes at the upload URL, with its name, ETag and Range."""
        token = await self.token()
        data, path = self.source(3 * MiB + 12345)
        uploader = await self.uploader(token, path, chunk_size=MiB, upload_checksum=True)
        await threads.deferToThread(uploader.upload)
        assert uploader.url.startswith(self.files_url())
        whole = await self.download(uploader.url, token)
        assert whole.status == 200 and whole.body == data
        assert whole.headers["etag"] == '"' + hashlib.sha256(data).hexdigest() + '"'
        assert "report.pdf" in whole.headers["content-disposition"]
        part = await self.download(uploader.url, token, "Range: bytes=1048570-1048579")
        assert part.status == 206 and part.body == data[1048570:1048580]
        # Nobody else may read it: not anonymously, not another user.
        assert (await self.download(uploader.url, None)).status == 401
        assert (await self.download(uploader.url, await self.token("bob"))).status == 404

    async def test_resume_after_server_restart(self):
        """Two chunks, a server restart, then a new tuspy uploader on the same URL asks
        for the offset and sends only the rest; the result is byte-equal."""
        token = await self.token()
        data, path = self.source(5 * MiB)
        first = await self.uploader(token, path, chunk_size=MiB)
        await threads.deferToThread(first.upload_chunk)
        await threads.deferToThread(first.upload_chunk)
        url = first.url
        await self.restart()
        assert await self.offset(token, url) == 2 * MiB
        second = await self.uploader(token, path, chunk_size=MiB, url=url)
        assert second.offset == 2 * MiB
        await threads.deferToThread(second.upload)
        assert (await self.download(url, token)).body == data

    async def test_cut_off_patch_keeps_what_arrived(self):
        """A PATCH whose connection drops half-way: the bytes that arrived are fsynced and
        counted (HEAD reports them), and the upload resumes from there."""
        token = await self.token()
        data = os.urandom(4 * MiB)
        url = await self.create(token, len(data))
        parts = urlsplit(url)
        sent = 3 * MiB
        head = (
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {token}\r\nUpload-Offset: 0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()

        def cut_off() -> None:
            import socket

            with socket.create_connection((parts.hostname, parts.port)) as sock:
                sock.sendall(head + data[:sent])
                time.sleep(0.3)

        await threads.deferToThread(cut_off)
        offset = 0
        for _ in range(100):
            offset = await self.offset(token, url)
            if offset == sent:
                break
            await sleep(0.05)
        assert offset == sent
        response = await self.raw(
            "PATCH",
            url,
            {
                "Authorization": f"Bearer {token}",
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
            data[offset:],
        )
        assert response.status == 204 and response.headers["upload-offset"] == str(len(data))
        assert (await self.download(url, token)).body == data

    async def test_corrupted_chunk_is_rejected_and_discarded(self):
        """A chunk whose bytes do not match Upload-Checksum gets 460 and leaves the offset
        where it was; the right chunk is then accepted."""
        token = await self.token()
        data = os.urandom(200_000)
        url = await self.create(token, len(data))
        digest = base64.b64encode(hashlib.sha1(data).digest()).decode()
        corrupted = bytearray(data)
        corrupted[1000] ^= 0xFF
        headers = {
            "Authorization": f"Bearer {token}",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": f"sha1 {digest}",
        }
        assert (await self.raw("PATCH", url, headers, bytes(corrupted))).status == 460
        assert await self.offset(token, url) == 0
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        headers["Upload-Checksum"] = f"md5 {md5}"
        assert (await self.raw("PATCH", url, headers, data)).status == 204
        assert (await self.download(url, token)).body == data

    async def test_protocol_rules(self):
        """OPTIONS advertises the extensions; a wrong offset is 409, a missing
        Tus-Resumable 412, a wrong Content-Type 415, a body past the length 413, no token
        401; termination deletes (204, then 404)."""
        options = await self.raw("OPTIONS", self.files_url(), {})
        assert options.status == 204
        assert options.headers["tus-version"] == "1.0.0"
        assert set(options.headers["tus-extension"].split(",")) == {
            "creation",
            "creation-with-upload",
            "termination",
            "checksum",
            "expiration",
        }
        assert options.headers["tus-checksum-algorithm"] == "sha1,md5"
        token = await self.token()
        auth = {"Authorization": f"Bearer {token}"}
        url = await self.create(token, 100)
        stream = {**auth, "Content-Type": "application/offset+octet-stream"}
        wrong = await self.raw("PATCH", url, {**stream, "Upload-Offset": "5"}, b"x" * 10)
        assert wrong.status == 409 and wrong.headers["upload-offset"] == "0"
        head = f"PATCH {urlsplit(url).path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
        assert (await http(url, head)).status == 412
        plain = {**auth, "Upload-Offset": "0", "Content-Type": "text/plain"}
        assert (await self.raw("PATCH", url, plain, b"x")).status == 415
        too_long = await self.raw("PATCH", url, {**stream, "Upload-Offset": "0"}, b"x" * 101)
        assert too_long.status == 413
        anonymous = {"Upload-Length": "10"}
        assert (await self.raw("POST", self.files_url(), anonymous)).status == 401
        assert (await self.raw("DELETE", url, auth)).status == 204
        assert (await self.raw("HEAD", url, auth)).status == 404

    async def test_creation_with_upload_and_dedupe(self):
        """POST with the body creates and completes an upload in one request; the same
        bytes uploaded twice are stored once."""
        token = await self.token()
        data = os.urandom(300_000)
        urls = []
        for _ in range(2):
            response = await self.raw(
                "POST",
                self.files_url(),
                {
                    "Authorization": f"Bearer {token}",
                    "Upload-Length": str(len(data)),
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Metadata": "filename " + base64.b64encode(b"a.bin").decode(),
                },
                data,
            )
            assert response.status == 201, response.body
            assert response.headers["upload-offset"] == str(len(data))
            urls.append(response.headers["location"])
        store = self.server.service("store")
        assert await store.read(refs.total_stored) == (1, len(data))
        sha = hashlib.sha256(data).hexdigest()
        assert await store.read(refs.refcount, sha) == 2
        for url in urls:
            assert (await self.download(url, token)).body == data

    async def test_quota_and_expiry(self):
        """Creating past the user's quota is 413; an unfinished upload past its expiry is
        swept (row and bytes) and then answers 404."""
        await self.restart_with(**{"media.user_quota": 1000, "media.upload_expiry": 1})
        token = await self.token()
        over = {"Authorization": f"Bearer {token}", "Upload-Length": "1001"}
        assert (await self.raw("POST", self.files_url(), over)).status == 413
        url = await self.create(token, 500)
        await sleep(2.1)
        await self.server.service("media").sweep()
        upload_id = url.rsplit("/", 1)[1]
        assert await self.server.service("store").read(rows.get_upload, upload_id) is None
        media = self.server.service("media")
        assert not (media.files.incoming / upload_id).exists()
        assert (await self.raw("HEAD", url, {"Authorization": f"Bearer {token}"})).status == 404

    async def restart_with(self, **overrides):
        await self.stop_server(self.server)
        self.server = await self.start_server(**overrides)

    async def test_links_and_deletion_release_the_blob(self):
        """A link lets anyone download until revoked; deleting the file drops its
        reference and the sweep then deletes the unreferenced blob."""
        await self.restart_with(**{"media.unreferenced_grace": 1})
        token = await self.token()
        data = os.urandom(50_000)
        auth = {"Authorization": f"Bearer {token}"}
        response = await self.raw(
            "POST",
            self.files_url(),
            {
                **auth,
                "Upload-Length": str(len(data)),
                "Content-Type": "application/offset+octet-stream",
            },
            data,
        )
        url = response.headers["location"]
        link = await self.raw("POST", url + "/links", auth)
        assert link.status == 201
        link_url = link.json()["url"]
        assert (await get(link_url)).body == data
        other = {"Authorization": f"Bearer {await self.token('bob')}"}
        assert (await self.raw("DELETE", link_url, other)).status == 404
        assert (await self.raw("DELETE", link_url, auth)).status == 204
        assert (await get(link_url)).status == 404
        assert (await self.raw("DELETE", url, auth)).status == 204
        store = self.server.service("store")
        sha = hashlib.sha256(data).hexdigest()
        assert await store.read(refs.refcount, sha) == 0
        await sleep(2.1)
        await self.server.service("media").sweep()
        assert await store.read(refs.total_stored) == (0, 0)
        assert not self.server.service("media").files.path_of(sha).exists()
