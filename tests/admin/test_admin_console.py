"""The web console at ``/admin/``, tested in a real browser against a real server process.

Headless Chromium (Debian's ``chromium`` package, driven by Playwright; never a browser
Playwright downloads) signs in, creates a department and users, watches a TeamTalk client
log in and appear under "Online", kicks it (the client receives ``CID_LOGIN_KICK_USER``),
disables the user and makes a group. The client is ``teamtalk_client`` in its own process
(``tests/console_client.py``). A screenshot of every page is saved under
``$TEAMTALK_TEST_ARTIFACTS/console/`` (default ``test_artifacts/console/``, ignored by git).

Without Chromium the browser tests skip, except in CI (``CI`` set), where they fail.
The checks of what the server sends (the Content-Security-Policy header, no inline script
or style in any page) need no browser.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import sync_playwright

from teamtalk_py.admin_api.static import static_root
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_testing.browser import CHROMIUM, launch_chromium
from tests.admin_support import AdminServer, SharedAdminServer
from tests.support import TestCase, server_unreachable

ARTIFACTS = Path(os.environ.get("TEAMTALK_TEST_ARTIFACTS", "test_artifacts")) / "console"
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "console-pw-1"
CLIENT_CLI = str(Path(sys.executable).with_name("teamtalk-client"))
#: How long a browser step may wait for the page (ms).
STEP_MS = 15_000


def need_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        server_unreachable(f"{CHROMIUM} is missing (apt-get install chromium)")


# -- what the server sends, without a browser -------------------------------------------


class PageScan(HTMLParser):
    """What in an HTML page a strict Content-Security-Policy would block."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {k for k, _ in attrs}
        if tag == "script":
            src = dict(attrs).get("src")
            if not src:
                self.inline.append("<script> without src")
            else:
                self.scripts.append(src)
            self._in_script = True
        if tag == "style":
            self.inline.append("<style> element")
        if "style" in names:
            self.inline.append(f"style attribute on <{tag}>")
        handlers = sorted(n for n in names if n.startswith("on"))
        if handlers:
            self.inline.append(f"event handler attribute {handlers} on <{tag}>")
        for key, value in attrs:
            if value and value.strip().lower().startswith("javascript:"):
                self.inline.append(f"javascript: URL in {key} of <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script body")


def console_files() -> list[Path]:
    root = static_root()
    return sorted(p for p in root.rglob("*") if p.is_file())


class ConsoleFilesTests(TestCase):
    """The console's files as shipped and as served (no browser)."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = SharedAdminServer.get()

    def get(self, path: str) -> requests.Response:
        return requests.get(self.server.url + path, timeout=10)

    def test_every_console_file_is_package_data(self):
        """setup.cfg's package_data globs name every file of the console, so a wheel
        ships all of them (the server serves them from the installed package)."""
        config = configparser.ConfigParser()
        config.read(REPO / "setup.cfg")
        globs = [
            g.strip() for g in config["options.package_data"]["teamtalk_py.admin_web"].split(",")
        ]
        package = static_root().parent
        files = [p.relative_to(package).as_posix() for p in console_files()]
        assert "static/index.html" in files and "static/app.js" in files
        # fnmatch's * crosses "/"; setuptools' does not: compare path segment counts too.
        unmatched = [
            f
            for f in files
            if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)
        ]
        assert unmatched == []

    def test_every_page_and_file_carries_the_content_security_policy(self):
        """The console's page (at any console URL), its scripts and its stylesheet are
        served with a CSP that allows script and style from this origin only."""
        for path in [
            "/admin/",
            "/admin/users",
            "/admin/groups",
            "/admin/app.js",
            "/admin/console.css",
        ]:
            response = self.get(path)
            assert response.status_code == 200, path
            csp = response.headers.get("Content-Security-Policy", "")
            directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
            assert directives.get("default-src") in (["'self'"], ["'none'"]), (path, csp)
            for kind in ("script-src", "style-src"):
                allowed = directives.get(kind, directives.get("default-src"))
                assert allowed == ["'self'"], (path, kind, csp)
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert response.headers.get("X-Content-Type-Options") == "nosniff"

    def test_pages_have_no_inline_script_or_style(self):
        """The page the server answers for every console URL has only external scripts
        (modules from /admin/), no inline script, event handler, style element or style
        attribute: what the CSP would block is not there to be blocked."""
        page = self.get("/admin/")
        assert page.headers["Content-Type"].startswith("text/html")
        scan = PageScan()
        scan.feed(page.text)
        assert scan.inline == []
        assert scan.scripts == ["/admin/app.js"]
        for path in ["/admin/users", "/admin/sessions"]:
            assert self.get(path).text == page.text
        for html in [p for p in console_files() if p.suffix == ".html"]:
            scan = PageScan()
            scan.feed(html.read_text())
            assert scan.inline == [], html

    def test_scripts_build_no_markup_from_text(self):
        """No script parses strings into markup or code (innerHTML, outerHTML,
        insertAdjacentHTML, document.write, eval, new Function, string timers), so a
        user's name can never become HTML or script, and nothing needs 'unsafe-eval'."""
        banned = re.compile(
            r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
            r"|set(Timeout|Interval)\(\s*[\"'`]|setAttribute\(\s*[\"']style"
        )
        scripts = [p for p in console_files() if p.suffix == ".js"]
        assert len(scripts) >= 8
        for script in scripts:
            assert not banned.search(script.read_text()), script

    def test_every_module_the_page_imports_is_served_as_javascript(self):
        """Each ES module import resolves to a file the server serves as JavaScript (a
        module served with another type, or a 404, would leave a blank page)."""
        pending, seen = ["/admin/app.js"], set()
        while pending:
            path = pending.pop()
            if path in seen:
                continue
            seen.add(path)
            response = self.get(path)
            assert response.status_code == 200, path
            assert response.headers["Content-Type"].startswith("text/javascript"), path
            base = path.rsplit("/", 1)[0]
            for target in re.findall(r'^import .* from "(\.{1,2}/[^"]+)";$', response.text, re.M):
                pending.append(os.path.normpath(f"{base}/{target}"))
        assert {"/admin/pages/users.js", "/admin/pages/dashboard.js", "/admin/api.js"} <= seen


# -- the console in Chromium --------------------------------------------------------------


class ClientProcess:
    """``tests/console_client.py``: a TeamTalk client logged in as one user, its
    stdout lines read as JSON on a thread so the test can wait for them."""

    def __init__(self, msg_port: int, name: str, password: str) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.console_client", str(msg_port), name, password],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def expect(self, event: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        """The next event called ``event`` with ``fields``; others before it are skipped."""
        while True:
            try:
                got = self.events.get(timeout=timeout)
            except queue.Empty:
                stderr = self.proc.stderr.read() if self.proc.poll() is not None else ""
                raise AssertionError(f"no {event} {fields} within {timeout} s {stderr}") from None
            if got["event"] == event and all(got.get(k) == v for k, v in fields.items()):
                return got

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class Browser:
    """Headless Chromium with a fresh profile; ``open_page()`` gives a page with no
    cookies that records what the CSP refused and every uncaught script error."""

    def __init__(self, profile: Path) -> None:
        self.playwright = sync_playwright().start()
        try:
            self.context = launch_chromium(self.playwright, profile)
        except Exception:
            self.playwright.stop()
            raise
        self.context.set_default_timeout(STEP_MS)
        self.csp_violations: list[str] = []
        self.script_errors: list[str] = []

    def open_page(self) -> Any:
        """A new page, signed out (the previous test's cookies are gone)."""
        for page in self.context.pages:
            page.close()
        self.context.clear_cookies()
        self.csp_violations.clear()
        self.script_errors.clear()
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.script_errors.append(str(e)))
        self.page = page
        return page

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self.playwright.stop()


class ConsoleBrowserTests(TestCase):
    """The console driven by a person's clicks in headless Chromium. The tests share
    one server and one browser (each test signs in afresh and names its own data)."""

    @classmethod
    def setUpClass(cls) -> None:
        need_chromium()
        cls.root = Path(tempfile.mkdtemp(prefix="tt_console_"))
        cls.server = AdminServer(cls.root / "server").start()
        try:
            cls.api = cls.server.api("console-test")
            cls.api.call(
                "POST", "/users", 201,
                json={"name": "boss", "nick": "The Boss", "password": PASSWORD, "admin": True},
            )  # fmt: skip
            cls.browser = Browser(cls.root / "profile")
        except BaseException:
            cls.server.stop()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls.browser.close()
        finally:
            cls.server.stop()
            shutil.rmtree(cls.root, ignore_errors=True)

    def setUp(self) -> None:
        self.page = self.browser.open_page()
        self.clients: list[ClientProcess] = []
        self.addCleanup(lambda: [c.stop() for c in self.clients])

    def client(self, name: str, password: str = PASSWORD) -> ClientProcess:
        client = ClientProcess(self.server.msg_port, name, password)
        self.clients.append(client)
        return client

    def sign_in(self, path: str = "/admin/", ready: str = "#stat-online") -> None:
        """Open ``path`` signed out, sign in, and wait for the page ``ready`` marks."""
        page = self.page
        page.goto(self.server.url + path)
        page.fill("#sign-in-name", "boss")
        page.fill("#sign-in-password", PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector(ready)

    def nav(self, label: str, ready: str) -> None:
        self.page.get_by_role("navigation").get_by_role("link", name=label).click()
        self.page.wait_for_selector(ready)

    def dialog_submit(self, label: str) -> None:
        """Press the open dialog's button and wait until the dialog is gone (it stays
        open, showing the server's error, when the call fails)."""
        dialog = self.page.locator("dialog[open]")
        dialog.get_by_role("button", name=label, exact=True).click()
        try:
            dialog.wait_for(state="detached")
        except Exception:
            error = self.page.locator("dialog[open] .form-error").text_content()
            raise AssertionError(f"the dialog stayed open: {error}") from None

    def create_user(self, name: str, nick: str, department: str) -> None:
        page = self.page
        page.get_by_role("button", name="New user").click()
        dialog = page.locator("dialog[open]")
        dialog.locator("#f-name").fill(name)
        dialog.locator("#f-nick").fill(nick)
        dialog.locator("#f-password").fill(PASSWORD)
        dialog.locator("#f-department_id").select_option(label=department)
        self.dialog_submit("Create user")
        page.wait_for_selector(f'#users-table tr[data-user-name="{name}"]')

    def wait_for_stat(self, card: str, value: str) -> None:
        self.page.wait_for_function(
            f"() => document.querySelector('#{card} .value').textContent === '{value}'"
        )

    def send_text(self, sender: str, to: str, text: str) -> None:
        """One text message, sent by the real ``teamtalk-client`` (it waits for the ack)."""
        sent = subprocess.run(
            [
                CLIENT_CLI, "--server", f"127.0.0.1:{self.server.msg_port}", "--user", sender,
                "send", to, text,
            ],
            env={**os.environ, "TEAMTALK_PASSWORD": PASSWORD},
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr

    def user_row(self, name: str) -> Any:
        return self.page.locator(f'#users-table tr[data-user-name="{name}"]')

    def test_an_admin_runs_the_company_from_the_console(self):
        """Sign in; create a department and users; a client logs in and shows up online;
        kicking it from the console sends it CID_LOGIN_KICK_USER; disabling the user
        refuses its next login; a group is made with members; every page renders with no
        CSP violation or script error."""
        page = self.page
        page.goto(self.server.url + "/admin/")
        page.wait_for_selector("#sign-in-name")
        self.browser.shot("sign-in")
        self.sign_in()
        assert page.locator("#whoami").text_content() == "boss"

        # a department
        self.nav("Departments", "#view[data-page=departments] table")
        page.get_by_role("button", name="New department").click()
        page.locator("dialog[open] #f-name").fill("Engineering")
        self.dialog_submit("Create department")
        row = page.locator('tr[data-department-name="Engineering"]')
        row.wait_for()
        departments = self.api.call("GET", "/departments", 200)["items"]
        engineering = [d for d in departments if d["name"] == "Engineering"]
        assert len(engineering) == 1

        # users in it
        self.nav("Users", "#users-table")
        for name, nick in [("walter", "Walter White"), ("jesse", "Jesse"), ("skyler", "Skyler")]:
            self.create_user(name, nick, "Engineering")
        users = {u["name"]: u for u in self.api.call("GET", "/users", 200)["items"]}
        walter = users["walter"]
        assert (walter["nick"], walter["department_id"]) == ("Walter White", engineering[0]["id"])
        self.nav("Departments", 'tr[data-department-name="Engineering"]')
        members = page.locator('tr[data-department-name="Engineering"] td').nth(4)
        assert members.text_content() == "3"
        self.browser.shot("departments")

        # walter logs in with a TeamTalk client and is listed online
        client = self.client("walter")
        login = client.expect("login")
        assert (login["result_code"], login["user_id"]) == (B.REFUSE_REASON_NONE, walter["id"])
        self.nav("Online", "#view[data-page=sessions]")
        online = page.locator('tr[data-user-name="walter"]')
        online.wait_for()
        assert "windows" in online.text_content().lower()
        self.browser.shot("sessions")
        # the dashboard counts walter online, and messages sent to him while it is open
        self.nav("Dashboard", "#stat-online")
        self.wait_for_stat("stat-online", "1")
        # Each send is a client process of its own, a new connection: the same words
        # twice within one second would be taken for a resend after a reconnect (the
        # README's resend rule), so the two say different things.
        for text in ["hello", "hello again"]:
            self.send_text("jesse", "walter", text)
        client.expect("pdu", command="CID_MSG_DATA")
        self.wait_for_stat("stat-today", "2")
        page.wait_for_function(
            "() => Number(document.querySelector('#stat-rate .value').textContent) > 0"
        )
        page.wait_for_selector("#node-states li")
        self.browser.shot("dashboard")
        self.nav("Users", '#users-table tr[data-user-name="walter"]')
        assert self.user_row("walter").locator(".badge.live").text_content() == "online"
        self.browser.shot("users")

        # kicked from the "Online" page: the client is told, then disconnected
        self.nav("Online", 'tr[data-user-name="walter"]')
        page.locator('tr[data-user-name="walter"]').get_by_role("button", name="Kick").click()
        self.dialog_submit("Kick")
        kick = client.expect("pdu", command="CID_LOGIN_KICK_USER")
        assert kick["user_id"] == walter["id"]
        client.expect("closed")
        page.wait_for_selector('tr[data-user-name="walter"]', state="detached")

        # disabled from the users page: the next login is refused
        self.nav("Users", '#users-table tr[data-user-name="walter"]')
        self.user_row("walter").get_by_role("button", name="Disable").click()
        self.dialog_submit("Disable")
        self.user_row("walter").locator(".badge.bad", has_text="disabled").wait_for()
        assert self.api.call("GET", f"/users/{walter['id']}", 200)["disabled"] is True
        refused = self.client("walter").expect("login")
        assert refused["result_code"] != B.REFUSE_REASON_NONE

        # a group with members, picked by searching
        self.nav("Groups", "#view[data-page=groups] table")
        page.get_by_role("button", name="New group").click()
        dialog = page.locator("dialog[open]")
        dialog.locator("#f-name").fill("Blue Sky")
        for name in ["jesse", "skyler"]:
            dialog.get_by_label("Search users").fill(name)
            dialog.locator(f'button.pick[data-user-name="{name}"]').click()
        assert dialog.locator(".chip").count() == 2
        self.dialog_submit("Create group")
        detail = page.locator("#group-detail")
        detail.locator('tr[data-member-name="skyler"]').wait_for()
        groups = self.api.call("GET", "/groups", 200)["items"]
        made = [g for g in groups if g["name"] == "Blue Sky"]
        assert [(g["member_count"], g["type"]) for g in made] == [(2, "fixed")]
        group = self.api.call("GET", f"/groups/{made[0]['id']}", 200)
        assert sorted(m["name"] for m in group["members"]) == ["jesse", "skyler"]
        self.browser.shot("groups")

        self.nav("Nodes", 'tr[data-service="msg"]')
        assert page.locator('tr[data-service="msg"] .badge').first.text_content() == "up"
        self.browser.shot("nodes")

        assert self.browser.csp_violations == []
        assert self.browser.script_errors == []

    def seed_user(self, name: str, nick: str, department_id: int) -> int:
        """A user made through the API (set-up; the console is what is tested)."""
        body = {"name": name, "nick": nick, "password": PASSWORD, "department_id": department_id}
        return int(self.api.call("POST", "/users", 201, json=body)["id"])

    def seed_department(self, name: str) -> int:
        return int(self.api.call("POST", "/departments", 201, json={"name": name})["id"])

    def wait_for_users(self, *names: str) -> None:
        """Wait until the users table lists exactly ``names``."""
        self.page.wait_for_function(
            """(names) => {
                const rows = document.querySelectorAll("#users-table tbody tr[data-user-name]");
                const shown = [...rows].map((r) => r.dataset.userName).sort();
                return JSON.stringify(shown) === JSON.stringify(names);
            }""",
            arg=sorted(names),
        )

    def test_users_are_found_edited_given_a_new_password_and_kicked(self):
        """The users page searches and filters, edits a profile, resets a password (the
        old one stops working, the new one logs in; two different entries are refused in
        the dialog), and kicks every session of a user."""
        sales, ops = self.seed_department("Sales"), self.seed_department("Ops")
        saul = self.seed_user("saul", "Saul Goodman", sales)
        kim = self.seed_user("kim", "Kim Wexler", sales)
        self.seed_user("mike", "Mike E.", ops)
        page = self.page
        self.sign_in()
        self.nav("Users", '#users-table tr[data-user-name="mike"]')

        page.get_by_label("Search users").fill("goodman")
        self.wait_for_users("saul")
        page.get_by_label("Search users").fill("")
        page.get_by_label("Department").select_option(label="Sales")
        self.wait_for_users("kim", "saul")

        self.user_row("saul").get_by_role("button", name="Edit").click()
        dialog = page.locator("dialog[open]")
        dialog.locator("#f-nick").fill("Jimmy McGill")
        dialog.locator("#f-department_id").select_option(label="Ops")
        self.dialog_submit("Save")
        edited = self.api.call("GET", f"/users/{saul}", 200)
        assert (edited["nick"], edited["department_id"]) == ("Jimmy McGill", ops)
        page.wait_for_selector('#users-table tr[data-user-name="saul"]', state="detached")

        self.user_row("kim").get_by_role("button", name="Reset password").click()
        dialog = page.locator("dialog[open]")
        dialog.locator("#f-password").fill("new-password-2")
        dialog.locator("#f-again").fill("new-password-3")
        dialog.get_by_role("button", name="Set password").click()
        assert dialog.get_by_role("alert").text_content() == "The two passwords differ."
        dialog.locator("#f-again").fill("new-password-2")
        self.dialog_submit("Set password")
        old = self.client("kim").expect("login")
        assert old["result_code"] != B.REFUSE_REASON_NONE
        new = self.client("kim", "new-password-2").expect("login")
        assert (new["result_code"], new["user_id"]) == (B.REFUSE_REASON_NONE, kim)

        mike = self.client("mike")
        assert mike.expect("login")["result_code"] == B.REFUSE_REASON_NONE
        page.get_by_label("Department").select_option(label="Ops")
        self.user_row("mike").locator(".badge.live").wait_for()
        self.user_row("mike").get_by_role("button", name="Kick").click()
        self.dialog_submit("Kick")
        mike.expect("pdu", command="CID_LOGIN_KICK_USER")
        mike.expect("closed")
        assert self.browser.script_errors == []

    def test_departments_and_group_members_change_from_the_console(self):
        """A department is renamed and deleted; a group gets a member (who, logged in,
        is told by CID_GROUP_CHANGE_MEMBER_NOTIFY), loses one, and is dissolved; signing
        out leaves the API closed to the browser."""
        team = self.seed_department("Kitchen")
        gus = self.seed_user("gus", "Gus", team)
        lyle = self.seed_user("lyle", "Lyle", team)
        tyrus = self.seed_user("tyrus", "Tyrus", team)
        group = self.api.call(
            "POST", "/groups", 201, json={"name": "Pollos", "member_ids": [gus, lyle]}
        )
        page = self.page
        self.sign_in()

        self.nav("Departments", 'tr[data-department-name="Kitchen"]')
        page.get_by_role("button", name="New department").click()
        page.locator("dialog[open] #f-name").fill("Laundry")
        self.dialog_submit("Create department")
        page.locator('tr[data-department-name="Laundry"]').get_by_role(
            "button", name="Edit"
        ).click()
        page.locator("dialog[open] #f-name").fill("Laundromat")
        self.dialog_submit("Save")
        renamed = page.locator('tr[data-department-name="Laundromat"]')
        renamed.get_by_role("button", name="Delete").click()
        self.dialog_submit("Delete")
        renamed.wait_for(state="detached")
        names = [d["name"] for d in self.api.call("GET", "/departments", 200)["items"]]
        assert "Laundromat" not in names and "Laundry" not in names
        kitchen = page.locator('tr[data-department-name="Kitchen"]')
        assert kitchen.get_by_role("button", name="Delete").is_disabled()

        tyrus_client = self.client("tyrus")
        assert tyrus_client.expect("login")["result_code"] == B.REFUSE_REASON_NONE
        self.nav("Groups", f'tr[data-group-id="{group["id"]}"]')
        page.locator(f'tr[data-group-id="{group["id"]}"]').get_by_role(
            "button", name="Members"
        ).click()
        detail = page.locator("#group-detail")
        detail.locator('tr[data-member-name="lyle"]').wait_for()
        detail.get_by_role("button", name="Add members").click()
        dialog = page.locator("dialog[open]")
        dialog.get_by_label("Search users").fill("tyr")
        dialog.locator('button.pick[data-user-name="tyrus"]').click()
        self.dialog_submit("Add")
        detail.locator('tr[data-member-name="tyrus"]').wait_for()
        tyrus_client.expect("pdu", command="CID_GROUP_CHANGE_MEMBER_NOTIFY")
        detail.locator('tr[data-member-name="lyle"]').get_by_role("button", name="Remove").click()
        self.dialog_submit("Remove")
        detail.locator('tr[data-member-name="lyle"]').wait_for(state="detached")
        members = self.api.call("GET", f"/groups/{group['id']}", 200)["members"]
        assert sorted(m["id"] for m in members) == sorted([gus, tyrus])

        page.locator(f'tr[data-group-id="{group["id"]}"]').get_by_role(
            "button", name="Dissolve"
        ).click()
        self.dialog_submit("Dissolve")
        page.wait_for_selector(f'tr[data-group-id="{group["id"]}"]', state="detached")
        assert group["id"] not in [g["id"] for g in self.api.call("GET", "/groups", 200)["items"]]

        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("alert").wait_for()
        assert "signed out" in page.get_by_role("alert").text_content()
        status = page.evaluate('async () => (await fetch("/admin/api/v1/stats")).status')
        assert status == 401
        assert self.browser.script_errors == []

    def test_the_browser_enforces_the_policy_and_the_csrf_token(self):
        """In the signed-in console (signed in from a page's own URL, which it then
        shows), a script element added to the page does not run (the CSP), and a change
        sent with the session cookie but without the CSRF token is refused with 403."""
        self.sign_in("/admin/groups", "#view[data-page=groups] table")
        blocked = "Content Security Policy"
        with self.page.expect_console_message(lambda m: blocked in m.text):
            ran = self.page.evaluate(
                """() => {
                    const s = document.createElement("script");
                    s.textContent = "window.injected = true";
                    document.body.append(s);
                    return window.injected === true;
                }"""
            )
        assert ran is False
        status = self.page.evaluate(
            """async () => (await fetch("/admin/api/v1/departments", {
                method: "POST",
                headers: {"Content-Type": "application/json"},
                body: JSON.stringify({name: "Forged"}),
            })).status"""
        )
        assert status == 403
        names = [d["name"] for d in self.api.call("GET", "/departments", 200)["items"]]
        assert "Forged" not in names

    def test_a_wrong_password_is_refused_on_the_sign_in_page(self):
        """A wrong password keeps the sign-in page with an error; no page of the console
        is shown and the API still refuses the browser."""
        page = self.page
        page.goto(self.server.url + "/admin/users")
        page.fill("#sign-in-name", "boss")
        page.fill("#sign-in-password", "not-it")
        page.get_by_role("button", name="Sign in").click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        assert "Wrong name or password" in alert.text_content()
        assert page.locator("#topbar").is_hidden()
        status = page.evaluate('async () => (await fetch("/admin/api/v1/users")).status')
        assert status == 401
