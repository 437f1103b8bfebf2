"""The media service end to end against a real ``twistd teamtalk`` process over HTTP.

The other media tests run the node in the test's own process; these start the server as
the README and the systemd unit do (``disk_support.DiskServer``: every service on free
loopback ports, users registered through the disk's ``/reg``). They show an msfs picture
stored and served byte for byte, a tus upload by the real ``tuspy`` client cut off
part-way, the process stopped and started again on the same data directory, and the
upload finished with the right digest, identical bytes stored once whichever way they
came, and ``media.min_free_disk`` refusing uploads (nothing stored) until it is lowered.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError
from tusclient.storage.filestorage import FileStorage

from tests.disk_support import PASSWORD_MD5, DiskServer, SeedClient, unique
from tests.media_support import afnetworking_upload, exchange, picture
from tests.support import TestCase

MiB = 1024 * 1024

#: Registration on (the tests make their users with the disk's ``/reg``).
CONFIG = """
[disk]
allow_registration = true
registrations_per_hour = 0
"""


def config_with_min_free_disk(min_free_disk: int) -> str:
    return CONFIG + f"[media]\nmin_free_disk = {min_free_disk}\n"


def query(data_dir: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(data_dir / "teamtalk.sqlite3")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def blob_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "media" / "blobs").rglob("*") if p.is_file())


def incoming_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "media" / "incoming").rglob("*") if p.is_file())


def refcount(data_dir: Path, sha256: str) -> int | None:
    rows = query(data_dir, "SELECT refcount FROM content_blobs WHERE sha256 = ?", sha256)
    return int(rows[0][0]) if rows else None


def msfs_upload(base: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """The iOS/mac client's upload (AFNetworking multipart); status and parsed answer."""
    head, body = afnetworking_upload(base, data, "image.jpg")
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    response = exchange(parts.hostname, parts.port, head.encode("latin-1") + b"\r\n\r\n" + body)
    return response.status, response.json()


def head_offset(url: str, token: str) -> int:
    response = requests.head(
        url, headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


class MediaProcessTests(TestCase):
    def start(self, config: str = CONFIG, root: Path | None = None) -> DiskServer:
        server = DiskServer(root or self.tmp_path(), config).start()
        self.addCleanup(server.stop)
        return server

    def token(self, server: DiskServer) -> str:
        """A registered user's API token (``POST /api/v1/token``)."""
        name = unique("media")
        assert SeedClient(server.disk_url).register(name) == "002"
        response = requests.post(
            server.media_url + "/api/v1/token",
            json={"user": name, "password": PASSWORD_MD5},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def tus(self, server: DiskServer, token: str) -> tus_client.TusClient:
        return tus_client.TusClient(
            server.media_url + "/api/v1/files/", headers={"Authorization": f"Bearer {token}"}
        )

    def test_msfs_picture_round_trip_and_one_blob_for_identical_bytes(self):
        """The iOS/mac client's multipart upload to the process: the answer the client
        parses (error_code 0, path, url on the configured base), the url serves the same
        bytes. The same picture uploaded again, and once more through tus, gets new
        paths but no new blob: one row, one file, three references."""
        server = self.start()
        base = server.media_url + "/"
        data = picture(20_000)
        sha = hashlib.sha256(data).hexdigest()
        paths = []
        for _ in range(2):
            status, answer = msfs_upload(base, data)
            assert status == 200 and answer["error_code"] == 0, answer
            assert answer["url"] == base + answer["path"]
            fetched = requests.get(answer["url"], timeout=30)
            assert fetched.status_code == 200 and fetched.content == data
            assert fetched.headers["Content-Type"].startswith("image/jpeg")
            paths.append(answer["path"])
        assert paths[0] != paths[1]
        token = self.token(server)
        source = self.tmp_path() / "same.jpg"
        source.write_bytes(data)
        uploader = self.tus(server, token).uploader(file_path=str(source), chunk_size=MiB)
        uploader.upload()
        assert query(server.data_dir, "SELECT COUNT(*), SUM(size) FROM content_blobs") == [
            (1, len(data))
        ]
        assert refcount(server.data_dir, sha) == 3
        [blob] = blob_files(server.data_dir)
        assert blob.name == sha and blob.read_bytes() == data

    def test_tuspy_upload_cut_off_survives_a_server_restart(self):
        """tuspy sends two 1 MiB chunks; a third PATCH is cut off after half a MiB (what
        arrived is counted); the server process is stopped, tuspy's attempt at the rest fails; the
        process starts again on the same data directory, HEAD reports 2.5 MiB, and a new
        tuspy uploader (finding the URL in its URL store) sends only the rest. The
        download's SHA-256, its ETag and the blob on disk are the source's."""
        server = self.start()
        token = self.token(server)
        data = os.urandom(5 * MiB + 4321)
        sha = hashlib.sha256(data).hexdigest()
        source = self.tmp_path() / "upload.bin"
        source.write_bytes(data)
        urls = FileStorage(str(self.tmp_path() / "tus-urls.json"))

        def uploader() -> Any:
            return self.tus(server, token).uploader(
                file_path=str(source),
                chunk_size=MiB,
                store_url=True,
                url_storage=urls,
                upload_checksum=True,
                metadata={"filename": "upload.bin"},
            )

        first = uploader()
        first.upload(stop_at=2 * MiB)
        url = first.url
        assert first.offset == head_offset(url, token) == 2 * MiB

        # A PATCH whose connection drops half-way through its body.
        cut = 2 * MiB + MiB // 2
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        head = (
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer {token}\r\nUpload-Offset: {2 * MiB}\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {MiB}\r\n\r\n"
        ).encode()
        with socket.create_connection((parts.hostname, parts.port)) as sock:
            sock.sendall(head + data[2 * MiB : cut])
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while head_offset(url, token) != cut:
            assert time.monotonic() < deadline, head_offset(url, token)
            time.sleep(0.05)

        server.stop()
        with pytest.raises(TusCommunicationError):
            first.upload()  # the rest, with the server gone
        server.start()
        assert head_offset(url, token) == cut
        second = uploader()
        assert second.url == url and second.offset == cut
        second.upload()
        download = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == sha
        assert download.headers["ETag"] == f'"{sha}"'
        [blob] = blob_files(server.data_dir)
        assert blob.name == sha
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha
        assert query(server.data_dir, "SELECT COUNT(*) FROM media_uploads") == [(0,)]
        assert incoming_files(server.data_dir) == []

    def test_min_free_disk_refuses_uploads_until_lowered(self):
        """``media.min_free_disk`` above the filesystem's free space (``os.statvfs``):
        an msfs picture gets HTTP 507 with error_code 13, a tus creation 507, and
        nothing is stored (no blob, file, upload row or incoming file). The same
        data directory served again with the setting at 0 takes both."""
        root = self.tmp_path()
        stat = os.statvfs(root)
        free = stat.f_bavail * stat.f_frsize
        server = self.start(config_with_min_free_disk(free + 2**40), root)
        token = self.token(server)
        base = server.media_url + "/"
        data = picture(30_000)
        source = root / "picture.jpg"
        source.write_bytes(data)

        status, answer = msfs_upload(base, data)
        assert (status, answer) == (
            507,
            {"error_code": 13, "error_msg": "存储空间不足", "path": "", "url": ""},
        )
        with pytest.raises(TusCommunicationError) as refused:
            self.tus(server, token).uploader(file_path=str(source)).upload()
        assert refused.value.status_code == 507
        for table in ("content_blobs", "media_files", "media_uploads"):
            assert query(server.data_dir, f"SELECT COUNT(*) FROM {table}") == [(0,)], table
        assert blob_files(server.data_dir) == [] and incoming_files(server.data_dir) == []

        server.stop()
        server.config_path.write_text(config_with_min_free_disk(0))
        server.start()
        base = server.media_url + "/"
        status, answer = msfs_upload(base, data)
        assert status == 200 and answer["error_code"] == 0, answer
        assert requests.get(answer["url"], timeout=30).content == data
        uploader = self.tus(server, token).uploader(file_path=str(source))
        uploader.upload()
        fetched = requests.get(
            uploader.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert fetched.content == data
        sha = hashlib.sha256(data).hexdigest()
        assert refcount(server.data_dir, sha) == 2
        assert [p.name for p in blob_files(server.data_dir)] == [sha]
