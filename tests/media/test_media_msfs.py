"""msfs over HTTP: each shipped client's upload replayed, answers parsed as each client
parses them, pictures fetched back; attacks on paths, sizes, Host and content types."""

from __future__ import annotations

import json
import subprocess

from twisted.internet import defer, threads

from teamtalk_py.store import content as refs
from teamtalk_py.store import media as rows
from tests.media_support import (
    afnetworking_upload,
    android_upload,
    get,
    http,
    picture,
    windows_upload,
)
from tests.support import TestCase, local_config, start_server


class MsfsTests(TestCase):
    async def start(self, **overrides):
        self.server = await start_server(local_config(self.tmp_path(), **overrides))
        self.addCleanup(self.server.stop)
        self.base = self.server.media_url
        return self.server

    async def blobs(self) -> tuple[int, int]:
        return await self.server.service("store").read(refs.total_stored)

    async def test_discovery_hands_out_the_media_url(self):
        """/msg_server's msfsPrior/msfsBackup is where the media service listens."""
        await self.start()
        response = await get(self.server.discovery_url)
        answer = response.json()
        assert answer["msfsPrior"] == answer["msfsBackup"] == self.base
        assert self.base.startswith("http://127.0.0.1:")

    async def test_android_upload_url_serves_the_picture(self):
        """Android (field file0, no spaces in the part headers) reads the first line of
        the answer as JSON and uses ``url``; fetching it gives back the part's bytes."""
        await self.start()
        data = picture()
        head, body = android_upload(self.base, data, "/sdcard/DCIM/photo.jpg")
        response = await http(self.base, head, body)
        assert response.status == 200
        assert response.mime == "text/html"
        first_line = response.body.split(b"\n")[0]
        answer = json.loads(first_line)
        assert answer["error_code"] == 0 and answer["error_msg"] == "成功"
        assert list(answer) == ["error_code", "error_msg", "path", "url"]
        assert answer["url"] == self.base + answer["path"]
        fetched = await get(answer["url"])
        assert fetched.status == 200
        # Android writes a CRLF after the bytes and another before the closing boundary:
        # the part's content (what the reference stored too) ends in that CRLF.
        assert fetched.body == data + b"\r\n"
        assert fetched.mime == "image/jpeg"

    async def test_ios_and_mac_uploads_keep_the_size_suffix(self):
        """AFNetworking sends ``type=im_image`` first; iOS names the file
        ``image.png_WxH.png``: the stored path keeps ``_WxH.png``; the client needs a
        ``text/html`` answer with ``url``."""
        await self.start()
        for filename, suffix in (("image.png_320x240.png", "_320x240.png"), ("image.jpg", ".jpg")):
            data = picture(9000)
            head, body = afnetworking_upload(self.base, data, filename)
            response = await http(self.base, head, body)
            assert response.mime == "text/html", response.headers
            answer = response.json()
            assert answer["error_code"] == 0, answer
            assert answer["path"].endswith(suffix), answer
            assert (await get(answer["url"])).body == data

    async def test_windows_upload_uses_path_with_the_configured_address(self):
        """Windows posts to ``<msfs>upload/`` and joins its msfs address with ``path``."""
        await self.start()
        data = picture(20000)
        msfs = (await get(self.server.discovery_url)).json()["msfsPrior"]
        url, head, body = windows_upload(msfs, data, "截图 1.png", 640, 480)
        answer = (await http(url, head, body)).json()
        assert answer["error_code"] == 0
        assert answer["path"].startswith("g0/") and answer["path"].endswith("_640x480.png")
        fetched = await get(msfs.rstrip("/") + "/" + answer["path"])
        assert fetched.body == data

    async def test_php_admin_upload_with_curl(self):
        """The PHP admin posts a CurlFile as field ``filename`` with libcurl, then stores
        ``msfs_url . path`` as the avatar; the real curl replays it."""
        await self.start()
        data = picture(3000)
        local = self.tmp_path() / "1700000000.jpg"
        local.write_bytes(data)
        done = await threads.deferToThread(
            subprocess.run,
            ["curl", "-s", "-F", f"filename=@{local}", self.base],
            capture_output=True,
            timeout=30,
        )
        answer = json.loads(done.stdout)
        assert answer["error_code"] == 0, done.stdout
        assert (await get(self.base + answer["path"])).body == data

    async def test_identical_uploads_store_one_blob(self):
        """Two uploads of the same bytes: two paths, one blob with two references."""
        await self.start()
        data = picture(5000)
        paths = []
        for _ in range(2):
            head, body = afnetworking_upload(self.base, data, "image.jpg")
            paths.append((await http(self.base, head, body)).json()["path"])
        assert paths[0] != paths[1]
        assert await self.blobs() == (1, len(data))
        store = self.server.service("store")
        file_id = paths[0].rsplit("/", 1)[1][:32]
        file = await store.read(rows.get_file, file_id)
        assert await store.read(refs.refcount, file.sha256) == 2
        for path in paths:
            assert (await get(self.base + path)).body == data

    async def test_too_large_picture_gets_error_1(self):
        """Over ``media.max_picture_size`` the answer is error_code 1, not success with an
        empty path (the reference's bug), and nothing is stored."""
        await self.start(**{"media.max_picture_size": 10_000})
        head, body = afnetworking_upload(self.base, picture(12_000), "image.jpg")
        answer = (await http(self.base, head, body)).json()
        assert answer == {"error_code": 1, "error_msg": "上传文件过大", "path": "", "url": ""}
        # A body far over the limit is refused from its Content-Length alone.
        head, body = afnetworking_upload(self.base, picture(200_000), "image.jpg")
        answer = (await http(self.base, head, body)).json()
        assert answer["error_code"] == 1
        assert await self.blobs() == (0, 0)

    async def test_malformed_uploads_get_the_reference_codes(self):
        """No boundary: 4; no file part: 3; no extension: 10; cut-off body: 7."""
        await self.start()
        data = picture(1000)
        head, body = afnetworking_upload(self.base, data, "image.jpg")
        no_boundary = head.replace("; boundary=", "; nothing=")
        assert (await http(self.base, no_boundary, body)).json()["error_code"] == 4
        text_only = (
            body.split(b"\r\n--Boundary")[0]
            + b"\r\n--"
            + head.split("boundary=")[1].split("\r\n")[0].encode()
            + b"--\r\n"
        )
        head2 = head.rsplit("Content-Length", 1)[0] + f"Content-Length: {len(text_only)}"
        assert (await http(self.base, head2, text_only)).json()["error_code"] == 3
        head3, body3 = afnetworking_upload(self.base, data, "noextension")
        assert (await http(self.base, head3, body3)).json()["error_code"] == 10
        cut = body[: len(body) - 30]
        head4 = head.rsplit("Content-Length", 1)[0] + f"Content-Length: {len(cut)}"
        assert (await http(self.base, head4, cut)).json()["error_code"] == 7
        assert await self.blobs() == (0, 0)

    async def test_url_comes_from_the_configured_base_not_the_host_header(self):
        """A forged Host header does not end up in the URL handed out."""
        await self.start(**{"media.public_url": "https://pics.example.com/tt"})
        head, body = afnetworking_upload(
            self.server.service("media").public_url(), picture(), "a.jpg"
        )
        port = self.server.service("media").bound_port()
        head = head.replace("Host: pics.example.com", "Host: evil.example.net")
        answer = (await http(f"http://127.0.0.1:{port}/", head, body)).json()
        assert answer["url"] == "https://pics.example.com/tt/" + answer["path"]

    async def test_traversal_and_unknown_paths_are_refused(self):
        """``..`` (raw or encoded) is a 400; a well-formed but unknown path a 404; a
        known file id under another path a 404."""
        await self.start()
        head, body = afnetworking_upload(self.base, picture(), "a.jpg")
        path = (await http(self.base, head, body)).json()["path"]
        for bad in ("g0/../../etc/passwd", "g0/%2e%2e/%2e%2e/etc/passwd", "%2fetc/passwd"):
            assert (await get(self.base + bad)).status == 400, bad
        assert (await get(self.base + "g0/000/000/" + "0" * 32 + ".jpg")).status == 404
        moved = "g0/999/999/" + path.rsplit("/", 1)[1]
        assert (await get(self.base + moved)).status == 404

    async def test_html_named_jpg_is_served_as_an_attachment(self):
        """Content types come from the bytes: HTML in ``x.jpg`` is served as
        octet-stream, as an attachment, with nosniff; a real JPEG inline."""
        await self.start()
        head, body = afnetworking_upload(
            self.base, b"<html><script>alert(1)</script></html>", "x.jpg"
        )
        url = (await http(self.base, head, body)).json()["url"]
        served = await get(url)
        assert served.mime == "application/octet-stream"
        assert served.headers["content-disposition"].startswith("attachment")
        assert served.headers["x-content-type-options"] == "nosniff"

    async def test_per_ip_upload_rate(self):
        """Past ``media.uploads_per_minute`` from one address: HTTP 429, error_code 12."""
        await self.start(**{"media.uploads_per_minute": 2})
        codes = []
        for _ in range(3):
            head, body = afnetworking_upload(self.base, picture(), "a.jpg")
            response = await http(self.base, head, body)
            codes.append((response.status, response.json()["error_code"]))
        assert codes == [(200, 0), (200, 0), (429, 12)]

    async def test_per_ip_upload_bytes_per_hour(self):
        """Past ``media.upload_bytes_per_hour`` from one address: HTTP 429, error_code 12
        (the third 10 kB picture would pass 25,000 bytes)."""
        await self.start(**{"media.upload_bytes_per_hour": 25_000})
        answers = []
        for _ in range(3):
            head, body = afnetworking_upload(self.base, picture(10_000), "a.jpg")
            response = await http(self.base, head, body)
            answers.append((response.status, response.json()))
        assert [(status, json["error_code"]) for status, json in answers] == [
            (200, 0),
            (200, 0),
            (429, 12),
        ]

    async def test_anonymous_uploads_can_be_switched_off(self):
        """With ``media.anonymous_uploads = false`` an upload without a token is 401."""
        await self.start(**{"media.anonymous_uploads": False})
        head, body = afnetworking_upload(self.base, picture(), "a.jpg")
        response = await http(self.base, head, body)
        assert response.status == 401 and response.json()["error_code"] == 14

    async def test_range_etag_and_head_on_a_picture(self):
        """Downloads answer HEAD, a single Range with 206, and If-None-Match with 304."""
        await self.start()
        data = picture(10_000)
        head, body = afnetworking_upload(self.base, data, "a.jpg")
        url = (await http(self.base, head, body)).json()["url"]
        whole = await get(url)
        etag = whole.headers["etag"]
        part = await get(url, "Range: bytes=100-199")
        assert part.status == 206 and part.body == data[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
        tail = await get(url, "Range: bytes=-10")
        assert tail.body == data[-10:]
        assert (await get(url, "Range: bytes=20000-")).status == 416
        assert (await get(url, f"If-None-Match: {etag}")).status == 304
        head_only = await get(url, method="HEAD")
        assert head_only.status == 200 and head_only.headers["content-length"] == str(len(data))

    async def test_many_uploads_in_flight(self):
        """32 concurrent uploads all succeed and each URL serves its own bytes."""
        await self.start(**{"media.uploads_per_minute": 0})
        datas = [picture(30_000) for _ in range(32)]

        async def one(data: bytes) -> str:
            head, body = afnetworking_upload(self.base, data, "a.jpg")
            return (await http(self.base, head, body)).json()["url"]

        urls = await defer.gatherResults([defer.ensureDeferred(one(d)) for d in datas])
        for url, data in zip(urls, datas, strict=True):
            assert (await get(url)).body == data
