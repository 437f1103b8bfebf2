"""Helpers for admin API tests: a real ``twistd teamtalk`` process, admin tokens made with
the real ``teamtalk-admin``, and a blocking client of the API (``requests``)."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from teamtalk_py import admin
from teamtalk_testing import StandaloneServer
from tests.disk_support import wait_for_port

ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))
API = "/admin/api/v1"


def admin_in_process(
    argv: Sequence[str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``teamtalk-admin ARGV`` run through ``admin.main`` in this process: the exit status,
    stdout and stderr the installed script gives (it is ``sys.exit(main(sys.argv[1:]))``),
    without a new interpreter and its imports (~0.4 s of CPU a command, with a hundred
    commands in the suite). ``stdin`` is read as a pipe's would be (no terminal). Tests of
    the script itself (the entry point, a real pipe, the output of a crash) use the
    subprocess; an exception ``main`` does not handle is raised here, failing the test."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        _stdin(io.StringIO(stdin or "")),
    ):
        try:
            status = admin.main(list(argv))
        except SystemExit as e:  # argparse: usage errors (2) and --help (0)
            status = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(list(argv), status, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _stdin(replacement: io.StringIO) -> Any:
    saved, sys.stdin = sys.stdin, replacement
    try:
        yield
    finally:
        sys.stdin = saved


class AdminServer:
    """Every service in one ``twistd teamtalk`` on free loopback ports, on the embedded
    SQLite store or on the MariaDB database ``db`` (a ``--db`` URL)."""

    def __init__(self, root: Path, db: str | None = None) -> None:
        self.root = root
        self.location = ["--data-dir", str(root / "var"), *(["--db", db] if db else [])]
        self.server = StandaloneServer(root, self.location)

    def start(self) -> AdminServer:
        self.server.start()
        wait_for_port(self.server.ports.admin)
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.ports.admin}"

    @property
    def msg_port(self) -> int:
        return self.server.msg_port

    def output(self) -> str:
        return self.server.process.output()

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``teamtalk-admin`` on this server's store."""
        return subprocess.run(
            [ADMIN, *self.location, *args], input=stdin, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    def token(self, name: str) -> str:
        """A new admin token (set-up: ``admin_in_process``; ``cli`` runs the script)."""
        done = admin_in_process([*self.location, "admin-token", "create", name])
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def api(self, token_name: str) -> AdminApi:
        return AdminApi(self.url, self.token(token_name))


class AdminApi:
    """One admin's calls (a bearer token, or a console session after ``sign_in``)."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base + API
        self.http = requests.Session()
        if token is not None:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.http.request(method, self.base + path, timeout=30, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def sign_in(self, name: str, password: str) -> dict[str, Any]:
        """Console sign-in: the cookie stays in the session; the CSRF token is sent as
        ``X-CSRF-Token`` from then on."""
        answer = self.call("POST", "/session", 200, json={"name": name, "password": password})
        self.http.headers["X-CSRF-Token"] = answer["csrf_token"]
        return answer


class SharedAdminServer:
    """One SQLite server for the tests of a module that do not need their own."""

    _instance: AdminServer | None = None

    @classmethod
    def get(cls) -> AdminServer:
        if cls._instance is None:
            root = Path(tempfile.mkdtemp(prefix="tt_admin_"))
            server = AdminServer(root)

            def clean_up() -> None:
                server.stop()
                if not os.environ.get("TEAMTALK_KEEP_ADMIN_LOGS"):
                    shutil.rmtree(root, ignore_errors=True)

            atexit.register(clean_up)
            cls._instance = server.start()
        return cls._instance
