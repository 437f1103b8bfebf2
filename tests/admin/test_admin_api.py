"""The admin REST API against a real ``twistd teamtalk`` process: admin tokens made by the
real ``teamtalk-admin``, console sign-in with its CSRF rule, users, departments, groups,
sessions, nodes and statistics, the OpenAPI document matching the route table, and
``schemathesis`` run against that document."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from teamtalk_py.admin_api.openapi import PATHS
from teamtalk_py.admin_api.routes import ROUTES
from teamtalk_py.config import Config, ConfigError
from tests.admin_support import AdminApi, AdminServer, SharedAdminServer
from tests.disk_support import unique
from tests.schemathesis_support import run_schemathesis
from tests.support import TestCase

SCHEMATHESIS_CONFIG = Path(__file__).parent.parent.joinpath("schemathesis-admin.toml")


class AdminTokenTests(TestCase):
    def setUp(self) -> None:
        self.server = SharedAdminServer.get()

    def test_token_printed_alone_on_the_last_line_then_listed_and_revoked(self):
        """``admin-token create`` prints the token alone on its last line; it works until
        ``admin-token revoke``; ``list`` never shows it; the store keeps only its hash."""
        name = unique("ops")
        token = self.server.token(name)
        assert token.startswith("tta_") and " " not in token
        api = AdminApi(self.server.url, token)
        api.call("GET", "/users", 200)
        listed = self.server.cli("admin-token", "list")
        assert listed.returncode == 0 and name in listed.stdout
        assert token not in listed.stdout
        assert "last_used=never" not in [line for line in listed.stdout.splitlines()
                                         if name in line][0]  # fmt: skip
        assert self.server.cli("admin-token", "revoke", name).returncode == 0
        api.call("GET", "/users", 401)
        again = self.server.cli("admin-token", "revoke", name)
        assert again.returncode == 1 and "no admin token" in again.stderr
        database = (self.server.server.data_dir / "teamtalk.sqlite3").read_bytes()
        assert token.encode() not in database

    def test_calls_without_valid_credentials_are_refused_and_logged(self):
        """No credentials, a malformed header or an unknown token: 401 with an error."""
        url = self.server.url + "/admin/api/v1/users"
        assert requests.get(url, timeout=10).status_code == 401
        bad = {"Authorization": "Basic eDp5"}
        assert requests.get(url, headers=bad, timeout=10).status_code == 401
        forged = {"Authorization": "Bearer tta_" + "A" * 43}
        answer = requests.get(url, headers=forged, timeout=10)
        assert answer.status_code == 401 and "error" in answer.json()
        assert "admin call refused: GET /admin/api/v1/users -> 401" in self.server.output()


class UserTests(TestCase):
    def setUp(self) -> None:
        self.server = SharedAdminServer.get()
        self.api = self.server.api(unique("users"))

    def test_created_users_are_found_by_search_a_page_at_a_time(self):
        """POST answers the new user with its id (201, Location); GET lists them with
        a search over name/nick/email and offset/limit paging; every call is audited with
        the token's name."""
        department = self.api.call("POST", "/departments", 201, json={"name": unique("Dept")})
        prefix = unique("pg")
        ids = []
        for i in range(5):
            body = {"name": f"{prefix}_{i}", "password": "pw", "nick": f"Nick {i}",
                    "department_id": department["id"]}  # fmt: skip
            user = self.api.call("POST", "/users", 201, json=body)
            assert user["name"] == body["name"] and user["department_id"] == department["id"]
            assert user["status"] == "active" and user["disabled"] is False
            ids.append(user["id"])
        page = self.api.call("GET", "/users", 200, params={"q": prefix, "limit": 2, "offset": 2})
        assert page["total"] == 5
        assert [u["id"] for u in page["items"]] == ids[2:4]
        by_department = self.api.call("GET", "/users", 200,
                                      params={"department_id": department["id"]})  # fmt: skip
        assert [u["id"] for u in by_department["items"]] == ids
        listed = self.api.call("GET", "/departments", 200)["items"]
        assert {d["id"]: d["member_count"] for d in listed}[department["id"]] == 5
        self.api.call("POST", "/users", 409, json={"name": f"{prefix}_0", "password": "x"})
        self.api.call("POST", "/users", 422, json={"name": unique("u"), "password": "x",
                                                   "department_id": 10**9})  # fmt: skip
        assert "POST /admin/api/v1/users -> 201" in self.server.output()


class OpenApiTests(TestCase):
    def test_the_openapi_document_describes_every_api_route(self):
        """Every (path, method) of the route table under /admin/api/v1/ is in the
        document and nothing else is; the document is served without credentials."""
        described = {
            (path, method) for path, item in PATHS.items() for method in item
            if method != "parameters"
        }  # fmt: skip
        routed = {
            (route.pattern, method.decode().lower())
            for route in ROUTES.routes
            for method in route.methods
            if route.pattern.startswith("/admin/api/v1/") and not route.pattern.endswith(".json")
        }
        assert described == routed
        server = SharedAdminServer.get()
        answer = requests.get(server.url + "/admin/api/v1/openapi.json", timeout=10)
        assert answer.status_code == 200
        assert answer.json()["paths"].keys() == PATHS.keys()


class ConsoleSessionTests(TestCase):
    def setUp(self) -> None:
        self.server = SharedAdminServer.get()
        self.api = self.server.api(unique("console"))

    def test_an_admin_signs_in_and_changes_need_the_csrf_header(self):
        """An admin user signs in with name and password: an HttpOnly, SameSite=Strict
        cookie and a CSRF token. Reads need only the cookie; a change without the
        X-CSRF-Token header (or with a wrong one) is 403; signing out ends the session.
        A user without the admin flag, or a wrong password, gets 401."""
        name = unique("boss")
        boss = self.api.call("POST", "/users", 201,
                             json={"name": name, "password": "pw", "admin": True})  # fmt: skip
        assert boss["admin"] is True
        plain = unique("plain")
        self.api.call("POST", "/users", 201, json={"name": plain, "password": "pw"})
        console = AdminApi(self.server.url)
        as_form = json.dumps({"name": name, "password": "pw"})
        console.call("POST", "/session", 415, data=as_form, headers={"Content-Type": "text/plain"})
        console.call("POST", "/session", 401, json={"name": plain, "password": "pw"})
        console.call("POST", "/session", 401, json={"name": name, "password": "wrong"})
        response = console.http.post(console.base + "/session",
                                     json={"name": name, "password": "pw"}, timeout=10)  # fmt: skip
        assert response.status_code == 200, response.text
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin/" in cookie
        session = response.json()
        assert session["user"] == {"id": boss["id"], "name": name}
        assert console.call("GET", "/session", 200)["csrf_token"] == session["csrf_token"]
        console.call("GET", "/users", 200)
        body = {"name": unique("Dept")}
        console.call("POST", "/departments", 403, json=body)
        console.call("POST", "/departments", 403, json=body, headers={"X-CSRF-Token": "x"})
        console.http.headers["X-CSRF-Token"] = session["csrf_token"]
        console.call("POST", "/departments", 201, json=body)
        audit = f"admin {name} POST /admin/api/v1/departments -> 201 from 127.0.0.1"
        assert audit in self.server.output()
        console.call("DELETE", "/session", 204)
        console.call("GET", "/users", 401)

    def test_disabling_an_admin_ends_their_console_session(self):
        """A disabled admin's session stops working at once."""
        name = unique("boss")
        boss = self.api.call("POST", "/users", 201,
                             json={"name": name, "password": "pw", "admin": True})  # fmt: skip
        console = AdminApi(self.server.url)
        console.sign_in(name, "pw")
        console.call("GET", "/users", 200)
        self.api.call("PATCH", f"/users/{boss['id']}", 200, json={"disabled": True})
        console.call("GET", "/users", 401)

    def test_teamtalk_admin_grants_and_takes_the_admin_flag(self):
        """``user add --admin`` and ``user set NAME --admin yes|no`` decide who may sign
        in; taking the flag away ends the console session."""
        made, plain = unique("cliboss"), unique("cliuser")
        added = self.server.cli("user", "add", "--name", made, "--admin", "--password-stdin",
                                stdin="pw\n")  # fmt: skip
        assert added.returncode == 0, added.stderr
        self.server.cli("user", "add", "--name", plain, "--password-stdin", stdin="pw\n")
        AdminApi(self.server.url).sign_in(made, "pw")
        AdminApi(self.server.url).call("POST", "/session", 401,
                                       json={"name": plain, "password": "pw"})  # fmt: skip
        assert self.server.cli("user", "set", plain, "--admin", "yes").returncode == 0
        console = AdminApi(self.server.url)
        console.sign_in(plain, "pw")
        assert self.server.cli("user", "set", plain, "--admin", "no").returncode == 0
        console.call("GET", "/users", 401)


class SchemathesisTests(TestCase):
    def test_schemathesis_finds_nothing(self):
        """schemathesis against /admin/api/v1/openapi.json with every check, as an admin
        token (a server of its own): no 5xx, every status, header and body as documented,
        invalid input refused, valid input accepted."""
        root = self.tmp_path()
        server = AdminServer(root).start()
        self.addCleanup(server.stop)
        api = server.api("fuzz")
        department = api.call("POST", "/departments", 201, json={"name": "Fuzz"})
        users = [
            api.call("POST", "/users", 201, json={"name": f"fuzz{i}", "password": "pw",
                                                  "department_id": department["id"]})["id"]
            for i in range(3)
        ]  # fmt: skip
        api.call("POST", "/groups", 201, json={"name": "Fuzz", "member_ids": users})
        token = api.http.headers["Authorization"]
        done = run_schemathesis(
            root, f"{server.url}/admin/api/v1/openapi.json", server.url, token,
            SCHEMATHESIS_CONFIG,
        )  # fmt: skip
        report = done.stdout[-6000:] + done.stderr[-2000:]
        assert done.returncode == 0, report
        operations = sum(m != "parameters" for item in PATHS.values() for m in item)
        assert f"Tested: {operations}" in done.stdout, report  # none left out
        assert "Traceback" not in server.output(), server.output()[-4000:]


class ConfigTests(TestCase):
    def test_the_admin_listener_stays_on_loopback_when_advertising(self):
        """Advertising a reachable address opens the client listeners on every
        interface, never the admin listener; an explicit endpoint is taken as given."""
        public = Config().with_overrides({"server.advertise": "10.0.0.5"}).with_default_listeners()
        assert public.msg.listen == "tcp:8000"
        assert public.admin.listen == "tcp:8900:interface=127.0.0.1"
        chosen = Config().with_overrides({"admin.listen": "tcp:9443:interface=10.0.0.5"})
        assert chosen.with_default_listeners().admin.listen == "tcp:9443:interface=10.0.0.5"
        with self.assertRaises(ConfigError):
            Config().with_overrides({"admin.listen": "tcp:notaport"})


class ConsoleFilesTests(TestCase):
    def test_console_files_are_served_with_their_security_headers(self):
        """/ and /admin lead to /admin/; the console's page, its scripts and any page URL
        of the single-page app are served with the CSP (scripts from this origin only,
        no framing); a missing file is 404; no credentials are needed for the files."""
        base = SharedAdminServer.get().url
        for path in ("/", "/admin"):
            moved = requests.get(base + path, allow_redirects=False, timeout=10)
            assert (moved.status_code, moved.headers["Location"]) == (302, "/admin/")
        page = requests.get(base + "/admin/", timeout=10)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert requests.get(base + "/admin/users", timeout=10).text == page.text
        script = requests.get(base + "/admin/app.js", timeout=10)
        assert script.status_code == 200
        assert script.headers["Content-Type"].startswith("text/javascript")
        assert requests.get(base + "/admin/missing.js", timeout=10).status_code == 404
