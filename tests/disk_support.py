"""Helpers for cloud-disk tests: a real ``twistd teamtalk`` serving the disk, and a client
that speaks the seed system's API exactly as the seed's client writes its requests.

The seed's client (S002) posts JSON bodies and uploads one ``multipart/form-data`` part
whose ``Content-Disposition`` carries ``user``, ``filename``, ``md5`` and ``size`` and
whose body ends with the bare boundary line; ``upload_body`` builds that byte for byte
(with the ``token`` parameter this server requires beside them).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from teamtalk_testing import StandaloneServer

PASSWORD = "s3cret"
PASSWORD_MD5 = hashlib.md5(PASSWORD.encode()).hexdigest()
BOUNDARY = "----WebKitFormBoundary88asdgewtgewx"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def upload_body(
    user: str, filename: str, data: bytes, *, digest: str | None = None,
    size: int | None = None, token: str | None = None,
) -> tuple[bytes, str]:  # fmt: skip
    """The seed client's ``/upload`` body and its Content-Type."""
    disposition = (
        f'form-data; user="{user}";filename="{filename}"; md5="{digest or md5(data)}"; '
        f"size={len(data) if size is None else size}"
    )
    if token is not None:
        disposition += f'; token="{token}"'
    body = (
        (
            f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}".encode()
    )
    return body, f"multipart/form-data; boundary={BOUNDARY}"


class SeedClient:
    """The seed's API over HTTP (blocking, ``requests``)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = requests.Session()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        response = self.http.post(self.base + path, json=body, timeout=30, **kwargs)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def code(self, path: str, body: Any = None, **kwargs: Any) -> str:
        return self.post(path, body, **kwargs)["code"]

    def register(self, name: str, password: str = PASSWORD_MD5) -> str:
        body = {"userName": name, "nickName": name.title(), "password": password,
                "phone": "555-0100", "email": f"{name}@example.com"}  # fmt: skip
        return self.code("/reg", body)

    def login(self, name: str, password: str = PASSWORD_MD5) -> str:
        answer = self.post("/login", {"username": name, "password": password})
        assert answer["code"] == "000", answer
        return answer["token"]

    def upload(self, user: str, token: str | None, filename: str, data: bytes, **kw: Any) -> str:
        body, content_type = upload_body(user, filename, data, token=token, **kw)
        response = self.http.post(
            self.base + "/upload", data=body, headers={"Content-Type": content_type}, timeout=60
        )
        assert response.status_code == 200, response.text
        return response.json()["code"]

    def file_call(self, path: str, user: str, token: str | None, data: bytes, name: str) -> str:
        """A call naming one file the seed's way: ``{user, token, md5, filename}``."""
        body: dict[str, Any] = {"user": user, "md5": md5(data), "filename": name}
        if token is not None:
            body["token"] = token
        return self.code(path, body)

    def my_files(self, user: str, token: str, cmd: str = "normal") -> list[dict[str, Any]]:
        answer = self.post(f"/myfiles?cmd={cmd}", {"user": user, "token": token, "start": 0,
                                                   "count": 100})  # fmt: skip
        assert answer["file"] == answer["files"], answer
        return answer["files"]

    def shared(self, token: str, cmd: str = "normal") -> list[dict[str, Any]]:
        answer = self.post(f"/sharefiles?cmd={cmd}", {"token": token, "start": 0, "count": 100})
        return answer["files"]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class DiskServer:
    """A ``twistd teamtalk`` with every service (disk and media included) on free
    loopback ports, started with ``config`` (TOML text)."""

    def __init__(self, root: Path, config: str) -> None:
        self.root = root
        self.config_path = root / "teamtalk.toml"
        self.config_path.write_text(config)
        self.server = StandaloneServer(root, ["--config", str(self.config_path)])

    def start(self) -> DiskServer:
        self.server.start()
        wait_for_port(self.server.ports.disk)
        wait_for_port(self.server.ports.media)
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def disk_url(self) -> str:
        return f"http://127.0.0.1:{self.server.ports.disk}"

    @property
    def media_url(self) -> str:
        return f"http://127.0.0.1:{self.server.ports.media}"

    def output(self) -> str:
        return self.server.process.output()


#: The disk server most tests share: registration on (no per-address limit, the tests
#: register many users), a small quota, unreferenced blobs deleted half a second after.
SHARED_CONFIG = """
[disk]
allow_registration = true
registrations_per_hour = 0
[media]
unreferenced_grace = 0.5
user_quota = 8388608
"""


class SharedDiskServer:
    """One server for every test of a module (starting a process is the slow part);
    stopped when the test process exits (trial has no class-level set-up)."""

    _instance: DiskServer | None = None

    @classmethod
    def get(cls) -> DiskServer:
        if cls._instance is None:
            root = Path(tempfile.mkdtemp(prefix="tt_disk_"))
            server = DiskServer(root, SHARED_CONFIG)

            def clean_up() -> None:
                server.stop()
                if not os.environ.get("TEAMTALK_KEEP_DISK_LOGS"):
                    shutil.rmtree(root, ignore_errors=True)

            atexit.register(clean_up)
            cls._instance = server.start()
        return cls._instance


_names = iter(range(1, 1_000_000))


def unique(prefix: str) -> str:
    """A user name no other test of this run uses."""
    return f"{prefix}{os.getpid()}x{next(_names)}"
