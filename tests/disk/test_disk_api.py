"""The cloud disk's JSON API under ``/api/v1/disk/`` of the media service, against a real
``twistd teamtalk`` process: its flows, the OpenAPI document matching the route table,
and ``schemathesis`` run against that document (no 5xx, every answer as documented).
"""

from __future__ import annotations

import os
from pathlib import Path

import requests

from teamtalk_py.media.openapi import PATHS
from teamtalk_py.media.routes import ROUTES
from tests.disk_support import (
    PASSWORD_MD5,
    DiskServer,
    SeedClient,
    SharedDiskServer,
    md5,
    unique,
)
from tests.schemathesis_support import run_schemathesis
from tests.support import TestCase

SCHEMATHESIS_CONFIG = Path(__file__).parent.parent.joinpath("schemathesis.toml")


class Api:
    """A user of the JSON API (blocking)."""

    def __init__(self, media_url: str, token: str) -> None:
        self.base = media_url.rstrip("/") + "/api/v1/disk"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, expect: int, **kwargs) -> dict | None:
        response = self.http.request(method, self.base + path, timeout=30, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def upload(self, name: str, data: bytes, expect: int = 201, **params) -> dict:
        answer = self.call("POST", "/files", expect, params={"name": name, **params}, data=data)
        assert answer is not None
        return answer


def api_user(server: DiskServer, prefix: str) -> tuple[str, Api]:
    name = unique(prefix)
    assert SeedClient(server.disk_url).register(name) == "002"
    response = requests.post(
        server.media_url + "/api/v1/token", json={"user": name, "password": PASSWORD_MD5},
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return name, Api(server.media_url, response.json()["token"])


class DiskApiTests(TestCase):
    def setUp(self) -> None:
        self.server = SharedDiskServer.get()

    def test_files_share_ranking_save_and_delete(self):
        """Upload (201, 200 again, 422 for bytes that do not match md5), instant upload
        (404 for bytes nobody shared, 201 once shared), the public list ranked by the
        downloads counted, save (201, then 200), cancel by the owner only, delete; the
        download URLs serve the bytes with Range."""
        owner_name, owner = api_user(self.server, "rest")
        _, other = api_user(self.server, "rest")
        data = {name: os.urandom(10_000 + i) for i, name in enumerate(["a.txt", "b.txt"])}
        files = {name: owner.upload(name, body, md5=md5(body)) for name, body in data.items()}
        assert owner.upload("a.txt", data["a.txt"], expect=200)["id"] == files["a.txt"]["id"]
        owner.call("POST", "/files", 422, params={"name": "c.txt", "md5": md5(b"x")}, data=b"y")
        listed = owner.call("GET", "/files", 200, params={"order": "added"})
        assert listed["total"] == 2
        assert [f["name"] for f in listed["files"]] == ["a.txt", "b.txt"]
        body = {"name": "copy.txt", "md5": md5(data["a.txt"])}
        other.call("POST", "/instant-uploads", 404, json=body)
        shares = {n: owner.call("POST", f"/files/{f['id']}/share", 201) for n, f in files.items()}
        owner.call("POST", f"/files/{files['a.txt']['id']}/share", 409)
        assert other.call("POST", "/instant-uploads", 201, json=body)["name"] == "copy.txt"
        assert other.call("POST", "/instant-uploads", 200, json=body)["name"] == "copy.txt"
        for _ in range(3):
            other.call("POST", f"/shared/{shares['b.txt']['id']}/downloads", 200)
        counted = other.call("POST", f"/shared/{shares['a.txt']['id']}/downloads", 200)
        assert counted["downloads"] == 1 and counted["owner"] == owner_name
        ranking = other.call("GET", "/shared", 200, params={"order": "downloads_desc"})
        mine = [(s["name"], s["downloads"]) for s in ranking["files"] if s["owner"] == owner_name]
        assert mine == [("b.txt", 3), ("a.txt", 1)]
        saved = other.call("POST", f"/shared/{shares['b.txt']['id']}/save", 201)
        assert other.call("POST", f"/shared/{shares['b.txt']['id']}/save", 200)["id"] == saved["id"]
        other.call("DELETE", f"/shared/{shares['b.txt']['id']}", 404)
        owner.call("DELETE", f"/shared/{shares['b.txt']['id']}", 204)
        owner.call("GET", f"/shared/{shares['b.txt']['id']}", 404)
        assert owner.call("GET", f"/files/{files['b.txt']['id']}", 200)["shared"] is False
        ranged = requests.get(saved["url"], headers={"Range": "bytes=100-199"}, timeout=30)
        assert ranged.status_code == 206 and ranged.content == data["b.txt"][100:200]
        assert requests.get(shares["a.txt"]["url"], timeout=30).content == data["a.txt"]
        owner.call("DELETE", f"/files/{files['a.txt']['id']}", 204)
        owner.call("GET", f"/files/{files['a.txt']['id']}", 404)
        assert requests.get(shares["a.txt"]["url"], timeout=30).status_code == 404
        other.call("GET", f"/files/{files['b.txt']['id']}", 404)  # not theirs
        counted = owner.call("POST", f"/files/{files['b.txt']['id']}/downloads", 200)
        assert counted["downloads"] == 1

    def test_a_finished_resumable_upload_joins_my_files(self):
        """A file sent with tus (in chunks) becomes one of the user's files by its upload
        id (201, then 200), with the MD5 of its bytes; nobody else can take it (404); it
        stays when the tus file itself is deleted."""
        from tusclient import client as tus_client

        _, user = api_user(self.server, "tus")
        _, other = api_user(self.server, "tus")
        data = os.urandom(1_500_000)
        path = self.tmp_path() / "movie.mp4"
        path.write_bytes(data)
        headers = dict(user.http.headers)
        uploader = tus_client.TusClient(
            self.server.media_url + "/api/v1/files/", headers=headers
        ).uploader(file_path=str(path), chunk_size=512 * 1024, metadata={"filename": "movie.mp4"})
        uploader.upload()
        upload_id = uploader.url.rsplit("/", 1)[1]
        other.call("POST", "/imports", 404, json={"upload": upload_id})
        file = user.call("POST", "/imports", 201, json={"upload": upload_id})
        assert (file["name"], file["md5"], file["size"]) == ("movie.mp4", md5(data), len(data))
        again = user.call("POST", "/imports", 200, json={"upload": upload_id})
        assert again["id"] == file["id"]
        renamed = user.call("POST", "/imports", 201, json={"upload": upload_id, "name": "b.mp4"})
        assert renamed["sha256"] == file["sha256"]
        deleted = user.http.delete(uploader.url, headers={"Tus-Resumable": "1.0.0"}, timeout=30)
        assert deleted.status_code == 204
        assert requests.get(file["url"], timeout=30).content == data
        user.call("POST", "/imports", 404, json={"upload": upload_id})

    def test_every_call_needs_a_token_but_the_downloads(self):
        """Without a token every call is 401; the download URLs need none."""
        _, user = api_user(self.server, "anon")
        file = user.upload("x.bin", b"x" * 100)
        share = user.call("POST", f"/files/{file['id']}/share", 201)
        anonymous = requests.Session()
        base = self.server.media_url + "/api/v1/disk"
        for method, path in (("GET", "/files"), ("POST", "/files?name=y"),
                             ("POST", "/instant-uploads"), ("POST", "/imports"),
                             ("GET", f"/files/{file['id']}"),
                             ("DELETE", f"/files/{file['id']}"),
                             ("POST", f"/files/{file['id']}/share"),
                             ("POST", f"/files/{file['id']}/downloads"), ("GET", "/shared"),
                             ("GET", f"/shared/{share['id']}"),
                             ("DELETE", f"/shared/{share['id']}"),
                             ("POST", f"/shared/{share['id']}/save"),
                             ("POST", f"/shared/{share['id']}/downloads")):  # fmt: skip
            response = anonymous.request(method, base + path, timeout=30)
            assert response.status_code == 401, (method, path, response.status_code)
        assert anonymous.get(file["url"], timeout=30).content == b"x" * 100
        assert anonymous.get(share["url"], timeout=30).content == b"x" * 100

    def test_the_openapi_document_describes_every_api_route(self):
        """/api/v1/openapi.json is the document, and its paths and methods are exactly
        the route table's JSON API (tus and links are documented by their own specs)."""
        served = requests.get(self.server.media_url + "/api/v1/openapi.json", timeout=30)
        assert served.status_code == 200
        document = served.json()
        assert document["openapi"].startswith("3.")
        assert document["servers"] == [{"url": self.server.media_url}]
        routed = {
            (route.pattern, method.decode().lower())
            for route in ROUTES.routes
            for method in route.methods
            if route.pattern.startswith(("/api/v1/disk/", "/api/v1/token"))
        }
        described = {
            (path, method)
            for path, item in document["paths"].items()
            for method in item
            if method != "parameters"
        }
        assert described == routed
        assert set(document["paths"]) == set(PATHS)


class SchemathesisTests(TestCase):
    def test_schemathesis_finds_nothing(self):
        """schemathesis against /api/v1/openapi.json with every check (a server of its
        own: its token requests count failed logins): no 5xx, every status, header and
        body as documented, invalid input refused, valid input accepted."""
        root = self.tmp_path()
        server = DiskServer(root, "[disk]\nallow_registration = true\n").start()
        self.addCleanup(server.stop)
        _, user = api_user(server, "fuzz")
        user.upload("seed.bin", os.urandom(1000))
        token = user.http.headers["Authorization"]
        done = run_schemathesis(
            root,
            f"{server.media_url}/api/v1/openapi.json",
            server.media_url,
            token,
            SCHEMATHESIS_CONFIG,
        )
        report = done.stdout[-6000:] + done.stderr[-2000:]
        assert done.returncode == 0, report
        operations = sum(m != "parameters" for item in PATHS.values() for m in item)
        assert f"Tested: {operations}" in done.stdout, report  # none left out
        assert "Traceback" not in server.output(), server.output()[-4000:]
