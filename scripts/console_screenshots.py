"""Make the README's screenshots of the web console (``docs/admin-dashboard.png``,
``docs/admin-users.png``) from a real server with a small company in it.

Run with the test dependencies installed and Debian's Chromium present::

    .venv/bin/python scripts/console_screenshots.py [--minutes 4] [--out docs]

It starts ``twistd teamtalk`` on free loopback ports in a temporary directory, creates
departments, users and groups through the admin API (a token made with the real
``teamtalk-admin``), logs some users in with ``teamtalk-client listen`` and has others
send messages with ``teamtalk-client send`` for a few minutes while the dashboard is open
in headless Chromium, so the live chart has something to show, then saves the pages.
The browser tests (``tests/admin/test_admin_console.py``) save every page as test artifacts;
this script only makes pictures worth showing.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright

from teamtalk_testing import StandaloneServer
from teamtalk_testing.browser import launch_chromium

BIN = Path(sys.executable).parent
PASSWORD = "demo-password"
DEPARTMENTS = [("Engineering", None), ("Platform", "Engineering"), ("Mobile", "Engineering"),
               ("Sales", None), ("Support", None), ("Finance", None)]  # fmt: skip
PEOPLE = [
    ("alice", "Alice Chen", "Platform"), ("bob", "Bob Martin", "Platform"),
    ("carol", "Carol Diaz", "Mobile"), ("dave", "Dave Kim", "Mobile"),
    ("erin", "Erin Walsh", "Engineering"), ("frank", "Frank Liu", "Sales"),
    ("grace", "Grace Hopper", "Engineering"), ("heidi", "Heidi Novak", "Support"),
    ("ivan", "Ivan Petrov", "Support"), ("judy", "Judy Park", "Finance"),
    ("mallory", "Mallory Stone", "Sales"), ("niaj", "Niaj Singh", "Support"),
]  # fmt: skip
GROUPS = [("Platform team", ["alice", "bob", "erin", "grace"]),
          ("Launch 2.0", ["alice", "carol", "dave", "frank", "mallory"]),
          ("Support rota", ["heidi", "ivan", "niaj"])]  # fmt: skip
ONLINE = ["alice", "bob", "carol", "erin", "grace", "heidi", "ivan"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="traffic before the shots")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tt_console_shots_"))
    server = StandaloneServer(root)
    listeners: list[subprocess.Popen[bytes]] = []
    try:
        server.start()
        make_company(server)
        with_browser(server, listeners, args)
    finally:
        for proc in listeners:
            proc.kill()
            proc.wait()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def make_company(server: StandaloneServer) -> None:
    admin = [str(BIN / "teamtalk-admin"), "--data-dir", str(server.data_dir)]
    created = subprocess.run(
        [*admin, "admin-token", "create", "demo"], capture_output=True, text=True, check=True
    )
    token = created.stdout.strip().splitlines()[-1]
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    base = f"http://127.0.0.1:{server.ports.admin}/admin/api/v1"

    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        answer = api.post(base + path, json=body, timeout=30)
        answer.raise_for_status()
        result: dict[str, object] = answer.json()
        return result

    departments: dict[str, object] = {}
    for name, parent in DEPARTMENTS:
        body: dict[str, object] = {"name": name}
        if parent:
            body["parent_id"] = departments[parent]
        departments[name] = post("/departments", body)["id"]
    post("/users", {"name": "admin", "nick": "IT Admin", "password": PASSWORD, "admin": True})
    users = {}
    for name, nick, department in PEOPLE:
        users[name] = post("/users", {"name": name, "nick": nick, "password": PASSWORD,
                                      "department_id": departments[department],
                                      "email": f"{name}@example.com"})["id"]  # fmt: skip
    for group, members in GROUPS:
        post("/groups", {"name": group, "member_ids": [users[m] for m in members],
                         "creator_id": users[members[0]]})  # fmt: skip
    response = api.patch(f"{base}/users/{users['mallory']}", json={"disabled": True}, timeout=30)
    response.raise_for_status()


def client(server: StandaloneServer, user: str, kind: str, *command: str) -> list[str]:
    """A teamtalk-client command line; senders log in as phones ('android') so they do
    not kick the same user's desktop listener ('windows')."""
    return [str(BIN / "teamtalk-client"), "--server", f"127.0.0.1:{server.msg_port}",
            "--user", user, "--client-type", kind, *command]  # fmt: skip


def with_browser(
    server: StandaloneServer, listeners: list[subprocess.Popen[bytes]], args: argparse.Namespace
) -> None:
    env = {**os.environ, "TEAMTALK_PASSWORD": PASSWORD}
    url = f"http://127.0.0.1:{server.ports.admin}/admin/"
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = launch_chromium(playwright, Path(profile))
        page = context.new_page()
        page.goto(url)
        page.fill("#sign-in-name", "admin")
        page.fill("#sign-in-password", PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("#stat-online")
        rng = random.Random(18)
        started = time.monotonic()
        end = started + args.minutes * 60
        online = 0
        while time.monotonic() < end:
            progress = (time.monotonic() - started) / (end - started)
            # people arrive over the first two thirds; traffic rises and falls
            while online < len(ONLINE) and online < progress * 1.5 * len(ONLINE):
                listeners.append(subprocess.Popen(
                    client(server, ONLINE[online], "windows", "listen"), env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
                online += 1
            if online >= 2:
                sender, to = rng.sample(ONLINE[:online], 2)
                text = rng.choice(["ok", "on my way", "see the doc", "thanks!", "ok"])
                subprocess.run(client(server, sender, "android", "send", to, text), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(rng.uniform(0.2, 2.5) * (1.6 - abs(0.6 - progress)))
        args.out.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(6000)
        page.screenshot(path=str(args.out / "admin-dashboard.png"))
        page.get_by_role("navigation").get_by_role("link", name="Users").click()
        page.wait_for_selector("#users-table .badge.live")
        page.screenshot(path=str(args.out / "admin-users.png"))
        context.close()
    print(f"wrote {args.out / 'admin-dashboard.png'} and {args.out / 'admin-users.png'}")


if __name__ == "__main__":
    main()
