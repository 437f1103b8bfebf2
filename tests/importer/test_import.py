"""``teamtalk-admin import-teamtalk``: a TeamTalk site written the way the reference writes
it (its shipped ``ttopen.sql`` in a fresh MariaDB database, its Redis keys under a test
prefix) imported into SQLite and into MariaDB, then used over the TeamTalk protocol by the
imported users with their old passwords; run twice; interrupted and resumed."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from twisted.internet import reactor

from teamtalk_bench.reference_site import (
    GROUP_TEXT,
    SESSION_SINGLE,
    SINGLE_AUDIO,
    ReferenceSite,
)
from teamtalk_client import TeamTalkSession, connect, encrypt_text
from teamtalk_py.importer import ImportOptions, ImportRefused, run_import
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Group_pb2
from teamtalk_py.store import accounts, schema
from teamtalk_py.store.database import open_database
from tests.store_support import MARIADB, SQLITE, drop_mysql_database, mysql_server, mysql_url
from tests.support import TestCase, local_config, start_server

ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))
T = 1_700_000_000
CLIP = b"\x01\x02voice-bytes\xff" * 7
SINGLE = B.SESSION_TYPE_SINGLE
GROUP = B.SESSION_TYPE_GROUP


class _Msfs(BaseHTTPRequestHandler):
    """msfs stand-in: serves one voice clip, 404 for anything else. While ``holding`` is
    set, a clip request signals ``reached`` and waits for ``released`` (an importer
    killed in the middle of a voice page)."""

    holding = threading.Event()
    reached = threading.Event()
    released = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/g0/000/000/clip.audio" and self.holding.is_set():
            self.reached.set()
            self.released.wait(30)
        if self.path == "/g0/000/000/clip.audio":
            self.send_response(200)
            self.send_header("Content-Length", str(len(CLIP)))
            self.end_headers()
            self.wfile.write(CLIP)
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@dataclass
class Site:
    """What the reference site holds, for the assertions."""

    ids: dict[str, int] = field(default_factory=dict)
    #: (small, big) -> the pair's messages as (msg_id, from, type, bytes), oldest first.
    pairs: dict[tuple[int, int], list[tuple[int, int, int, bytes]]] = field(default_factory=dict)
    group_messages: list[tuple[int, int, bytes]] = field(default_factory=list)
    team: int = 0
    tmp: int = 0
    voice_clip_id: int = 0
    missing_clip_id: int = 0


def fill(site: ReferenceSite, msfs: str) -> Site:
    """Departments, users, relations around the shard boundaries, texts (repeated words),
    voice, a hidden row, a reused message id, groups, sessions and device tokens."""
    out = Site()
    ids = out.ids
    eng = site.add_department("Eng", now=T)
    sales = site.add_department("Sales", parent=eng, priority=2, now=T)
    ids["eng_deleted"] = site.add_department("Eng", status=1, now=T)
    site.set_next_id("IMUser", 1000)
    ids["alice"] = site.add_user(
        "alice", "alice-pw", eng, now=T, nick="Alice", sex=2, avatar="http://msfs/a.png",
        sign_info="hello 你好", phone="555", email="alice@example.com",
    )  # fmt: skip
    ids["bob"] = site.add_user("bob", "bob-pw", eng, now=T)
    ids["carol"] = site.add_user("carol", "carol-pw", sales, now=T)
    ids["dave"] = site.add_user("dave", "dave-pw", sales, status=3, now=T)
    ids["erin"] = site.add_user("erin", "erin-pw", eng, push_shield=1, now=T)
    ids["old_bob"] = site.add_user("bob", "old", eng, status=3, now=T)
    alice, bob, carol, erin = ids["alice"], ids["bob"], ids["carol"], ids["erin"]
    # Relations 7, 8, 9 land in IMMessage_7, _0 and _1.
    site.set_next_id("IMRelationShip", 7)

    def send(a: int, b: int, data: bytes, at: int, msg_type: int = 1) -> None:
        msg_id = site.send(a, b, data, now=at, msg_type=msg_type)
        out.pairs.setdefault((min(a, b), max(a, b)), []).append((msg_id, a, msg_type, data))

    for i, (a, b, text) in enumerate(
        [(alice, bob, "hi"), (bob, alice, "hi"), (alice, bob, "ok"), (alice, bob, "ok")]
    ):
        send(a, b, encrypt_text(text), T + 10 + i)
    site.read(bob, alice)
    for i in range(3):
        send(carol, alice, encrypt_text("same words"), T + 20 + i)
    out.missing_clip_id = site.add_audio(carol, alice, f"{msfs}/gone", 9, 2, now=T + 30)
    send(carol, alice, str(out.missing_clip_id).encode(), T + 30, SINGLE_AUDIO)
    out.voice_clip_id = site.add_audio(
        carol, alice, f"{msfs}/g0/000/000/clip.audio", len(CLIP), 3, now=T + 31
    )
    send(carol, alice, str(out.voice_clip_id).encode(), T + 31, SINGLE_AUDIO)
    send(erin, alice, encrypt_text("psst"), T + 40)
    site.read(alice, erin)
    site.remove_session(alice, erin, SESSION_SINGLE, now=T + 41)
    # A hidden row that used up the pair's next id (Redis is then ahead of the rows).
    relate = site.relation(carol, alice, now=T)
    hidden_id = int(site.redis.incrby(site.key(f"msg_id_{relate}"), 1))
    site.sql(
        f"INSERT INTO IMMessage_{relate % 8} (relateId, fromId, toId, msgId, content, status, "
        "type, created, updated) VALUES (%s, %s, %s, %s, %s, 1, 1, %s, %s)",
        (relate, carol, alice, hidden_id, b"hidden", T + 50, T + 50),
    )
    # A reused id (the reference after losing its Redis counters): kept, renumbered.
    relate = site.relation(alice, bob, now=T)
    reused = encrypt_text("said again after a redis restart")
    site.sql(
        f"INSERT INTO IMMessage_{relate % 8} (relateId, fromId, toId, msgId, content, status, "
        "type, created, updated) VALUES (%s, %s, %s, 2, %s, 0, 1, %s, %s)",
        (relate, bob, alice, reused, T + 60, T + 60),
    )
    site.read(alice, bob)
    out.pairs[(min(alice, bob), max(alice, bob))].append((5, bob, 1, reused))
    # Groups 7 and 8: IMGroupMessage_7 and _0.
    site.set_next_id("IMGroup", 7)
    out.team = site.create_group("Team", alice, [bob, carol], now=T + 100)
    for at, sender, text in ((110, alice, "g1"), (120, bob, "g2")):
        data = encrypt_text(text)
        msg_id = site.send_group(out.team, sender, data, now=T + at)
        out.group_messages.append((msg_id, sender, data))
    site.read_group(alice, out.team)
    for at, sender, text in ((130, bob, "g3"), (140, carol, "g4")):
        data = encrypt_text(text)
        msg_id = site.send_group(out.team, sender, data, now=T + at)
        out.group_messages.append((msg_id, sender, data))
    site.add_member(out.team, erin, now=T + 150)
    data = encrypt_text("g5")
    out.group_messages.append((site.send_group(out.team, carol, data, now=T + 160), carol, data))
    site.mute_group(out.team, bob)
    out.tmp = site.create_group("Tmp", bob, [carol], now=T + 200, group_type=2)
    site.send_group(out.tmp, bob, encrypt_text("t1"), now=T + 210, msg_type=GROUP_TEXT)
    for user in (bob, carol, erin):  # the reference's 5-second job
        site.sql(
            "INSERT INTO IMRecentSession (userId, peerId, type, status, created, updated) "
            "VALUES (%s, %s, 2, 0, %s, %s)",
            (user, out.team, T + 160, T + 160),
        )
    site.set_device_token(alice, "ios", "tok-alice")
    site.set_device_token(bob, "android", "tok-bob")
    site.set_device_token(carol, "ios", "tok-shared")
    site.set_device_token(erin, "ios", "tok-shared")  # the phone moved to erin
    return out


def dump(db) -> dict[str, list[tuple]]:
    """Every row of every table but the importer's own checkpoints; message rows without
    their surrogate row id (InnoDB does not reuse the ids of a rolled-back insert)."""
    with db.sync_transaction() as txn:
        return {
            table: sorted(
                (row[1:] if table in ("messages", "group_messages") else row)
                for row in txn.execute(f"SELECT * FROM {table}").fetchall()
            )
            for table in schema.TABLES
            if table != "import_progress"
        }


class ImportCase(TestCase):
    backend = SQLITE

    def setUp(self) -> None:
        self.site = ReferenceSite(mysql_server())
        self.addCleanup(self.site.drop)
        gates = {name: threading.Event() for name in ("holding", "reached", "released")}
        self.msfs_gates = gates
        msfs = ThreadingHTTPServer(("127.0.0.1", 0), type("Msfs", (_Msfs,), gates))
        self.addCleanup(gates["released"].set)
        threading.Thread(target=msfs.serve_forever, daemon=True).start()
        self.addCleanup(msfs.server_close)
        self.addCleanup(msfs.shutdown)
        self.filled = fill(self.site, f"http://127.0.0.1:{msfs.server_address[1]}")
        self.data_dir = self.tmp_path() / "data"
        self.data_dir.mkdir(mode=0o700)  # teamtalk-admin creates no data dir but with init
        self.url: str | None = None
        if self.backend == MARIADB:
            self.url = f"{mysql_url()}_imp"
            self.addCleanup(drop_mysql_database, self.url.rsplit("/", 1)[1])

    def target(self):
        db = open_database(self.url, self.data_dir, reactor=None)
        db.migrate()
        return db

    def options(self, **kw) -> ImportOptions:
        kw.setdefault("redis_urls", [self.site.redis_url])
        return ImportOptions(self.site.url, progress=False, batch_size=3, **kw)

    def admin(self, *args: str) -> subprocess.CompletedProcess:
        where = ["--db", self.url] if self.url else ["--data-dir", str(self.data_dir)]
        return subprocess.run(
            [ADMIN, *where, "import-teamtalk", "--from", self.site.url, "--no-progress", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip


class ImportTests:
    async def test_imported_users_keep_passwords_history_unread_sessions_and_groups(self):
        """After an import (run twice: the second changes nothing), the imported users
        log in with their old passwords and see the same directory, byte-equal history,
        unread counts, recent sessions and groups; voice comes back as the reference
        rebuilt it."""
        db = self.target()
        first = run_import(db, self.options())
        assert first.ok, first.render()
        before = dump(db)
        second = run_import(db, self.options())
        assert second.ok, second.render()
        assert dump(db) == before
        assert second.messages_imported == 0
        report = first.render()
        assert "renamed" in report and "'bob' -> 'bob#" in report
        counts = {p.name: p.counts for p in first.phases}
        assert counts["messages_0"]["hidden (status 1)"] == 1
        assert counts["messages_7"]["id taken (renumbered later)"] == 1
        assert counts["renumbered"]["written"] == 1
        assert counts["counters"]["relations: redis ahead (ids never stored)"] == 1
        ids, site = self.filled.ids, self.filled
        alice, bob, carol, erin = ids["alice"], ids["bob"], ids["carol"], ids["erin"]
        with db.sync_transaction() as txn:
            tokens = accounts.get_device_tokens(txn, [alice, bob, carol, erin])
            admins = txn.execute("SELECT name, password_hash, salt FROM admins").fetchall()
            clips = txn.execute("SELECT id, size, duration FROM voice_clips ORDER BY id").fetchall()
        assert [(t.user_id, t.client_type, t.token) for t in tokens] == [
            (alice, B.CLIENT_TYPE_IOS, "tok-alice"),
            (bob, B.CLIENT_TYPE_ANDROID, "tok-bob"),
            (erin, B.CLIENT_TYPE_IOS, "tok-shared"),
        ]
        assert admins == [("admin", "21232f297a57a5a743894a0e4a801fc3", "")]
        assert clips == [(site.missing_clip_id, 9, 2), (site.voice_clip_id, len(CLIP), 3)]

        config = local_config(self.data_dir, **{"server.services": "msg,route,login"})
        if self.url:
            config = config.with_overrides({"store.db": self.url})
        server = await start_server(config)
        self.addCleanup(server.stop)

        async def login(name: str, password: str) -> tuple[TeamTalkSession, object]:
            session = TeamTalkSession(await connect(reactor, "127.0.0.1", server.msg_port))
            self.addCleanup(session.protocol.transport.loseConnection)
            return session, await session.login(name, password)

        a, answer = await login("alice", "alice-pw")
        assert answer.result_code == B.REFUSE_REASON_NONE
        assert answer.user_info.user_id == alice
        assert answer.user_info.sign_info == "hello 你好"
        _, refused = await login("dave", "dave-pw")
        assert refused.result_code != B.REFUSE_REASON_NONE  # left the company: still out
        _, wrong = await login("alice", "bob-pw")
        assert wrong.result_code != B.REFUSE_REASON_NONE

        everyone = await a.get(
            B.CID_BUDDY_LIST_ALL_USER_REQUEST,
            Buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=0),
        )
        listed = {u.user_id: u for u in everyone.user_list}
        assert sorted(listed) == sorted([alice, bob, carol, erin])
        assert (listed[alice].user_real_name, listed[alice].user_nick_name) == ("alice", "Alice")
        assert (listed[alice].avatar_url, listed[alice].email) == (
            "http://msfs/a.png", "alice@example.com"
        )  # fmt: skip
        departments = await a.get(
            B.CID_BUDDY_LIST_DEPARTMENT_REQUEST,
            Buddy_pb2.IMDepartmentReq(user_id=0, latest_update_time=0),
        )
        assert sorted(d.dept_name for d in departments.dept_list) == [
            "Eng", f"Eng#{ids['eng_deleted']}", "Sales"
        ]  # fmt: skip

        async def history(session, peer: int, kind: int = SINGLE):
            answer = await session.message_list(peer, kind, count=50)
            return [(m.msg_id, m.from_session_id, m.msg_type, m.msg_data) for m in answer.msg_list]

        pair = site.pairs[(min(alice, bob), max(alice, bob))]
        assert await history(a, bob) == sorted(pair, reverse=True)
        voice = struct.pack(">I", 3) + CLIP
        expected = [
            (m, f, t, voice if d == str(site.voice_clip_id).encode() else d)
            for m, f, t, d in site.pairs[(min(alice, carol), max(alice, carol))]
        ]
        assert await history(a, carol) == sorted(expected, reverse=True)
        assert (await history(a, carol))[1][3] == str(site.missing_clip_id).encode()

        unread = await a.unread_counts()
        assert unread.total_cnt == 5 + 3
        assert sorted(
            (u.session_id, u.session_type, u.unread_cnt, u.latest_msg_id)
            for u in unread.unreadinfo_list
        ) == sorted([(carol, SINGLE, 5, 5), (site.team, GROUP, 3, 5)])

        sessions = await a.get(
            B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
            Buddy_pb2.IMRecentContactSessionReq(user_id=0, latest_update_time=0),
        )
        assert {(s.session_id, s.session_type) for s in sessions.contact_session_list} == {
            (bob, SINGLE), (carol, SINGLE), (site.team, GROUP)
        }  # fmt: skip

        groups = await a.get(
            B.CID_GROUP_NORMAL_LIST_REQUEST, Group_pb2.IMNormalGroupListReq(user_id=0)
        )
        assert [(g.group_id, g.version) for g in groups.group_version_list] == [(site.team, 2)]
        info = await a.get(
            B.CID_GROUP_INFO_REQUEST,
            Group_pb2.IMGroupInfoListReq(
                user_id=0, group_version_list=[B.GroupVersionInfo(group_id=site.team, version=0)]
            ),
        )
        (team,) = info.group_info_list
        assert (team.group_name, team.group_creator_id) == ("Team", alice)
        assert sorted(team.group_member_list) == sorted([alice, bob, carol, erin])
        assert [m[:2] for m in await history(a, site.team, GROUP)] == [
            (i, s) for i, s, _ in reversed(site.group_messages)
        ]
        e, _ = await login("erin", "erin-pw")
        assert [(m[0], m[3]) for m in await history(e, site.team, GROUP)] == [
            (site.group_messages[-1][0], site.group_messages[-1][2])
        ]
        b, _ = await login("bob", "bob-pw")
        info = await b.get(
            B.CID_GROUP_INFO_REQUEST,
            Group_pb2.IMGroupInfoListReq(
                user_id=0, group_version_list=[B.GroupVersionInfo(group_id=site.team, version=0)]
            ),
        )
        assert info.group_info_list[0].shield_status == 1

    def test_interrupted_import_resumes_where_it_stopped(self):
        """A killed import continues from its last committed page; the result equals an
        import that was never interrupted."""
        where = ["--db", self.url] if self.url else ["--data-dir", str(self.data_dir)]
        command = [ADMIN, *where, "import-teamtalk", "--from", self.site.url, "--redis",
                   self.site.redis_url, "--no-progress", "--batch-size", "1"]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        db = self.target()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with db.sync_transaction() as txn:
                row = txn.execute(
                    "SELECT last_id FROM import_progress WHERE phase = 'messages_0'"
                ).fetchone()
            if row and row[0] > 0:
                break
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        with db.sync_transaction() as txn:
            (done,) = txn.execute("SELECT done FROM import_progress WHERE phase = 'run'").fetchone()
            (stored,) = txn.execute("SELECT COUNT(*) FROM messages").fetchone()
        assert done == 0 and 0 < stored
        resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "check passed" in resumed.stdout
        once = self.tmp_path() / "once"
        straight = open_database(None, once, reactor=None)
        straight.migrate()
        assert run_import(straight, self.options()).ok
        assert dump(db) == dump(straight)

    def test_import_killed_while_fetching_a_voice_clip_writes_the_voice_once(self):
        """Killed while msfs is answering a voice message's clip, the page with the voice
        is not written; the resumed import writes that voice exactly once, rebuilt, and
        ends equal to an import that was never interrupted."""
        gates = self.msfs_gates
        gates["holding"].set()
        where = ["--db", self.url] if self.url else ["--data-dir", str(self.data_dir)]
        command = [ADMIN, *where, "import-teamtalk", "--from", self.site.url, "--redis",
                   self.site.redis_url, "--no-progress", "--batch-size", "1"]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert gates["reached"].wait(60), "the importer never asked msfs for the clip"
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        gates["holding"].clear()
        gates["released"].set()
        site, ids = self.filled, self.filled.ids
        voice = struct.pack(">I", 3) + CLIP
        clip_ref = str(site.voice_clip_id).encode()
        pair = (min(ids["alice"], ids["carol"]), max(ids["alice"], ids["carol"]))
        voice_msg_id = next(m for m, _, _, d in site.pairs[pair] if d == clip_ref)
        db = self.target()

        def copies() -> list[tuple]:
            with db.sync_transaction() as txn:
                return txn.execute(
                    "SELECT msg_id, content FROM messages WHERE msg_id = ? AND (content = ? "
                    "OR content = ?)",
                    (voice_msg_id, voice, clip_ref),
                ).fetchall()

        assert copies() == []  # the page being fetched was not committed
        resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "check passed" in resumed.stdout
        assert copies() == [(voice_msg_id, voice)]
        again = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert copies() == [(voice_msg_id, voice)]
        once = self.tmp_path() / "once"
        straight = open_database(None, once, reactor=None)
        straight.migrate()
        assert run_import(straight, self.options()).ok
        assert dump(db) == dump(straight)


class SQLiteImportTests(ImportTests, ImportCase):
    backend = SQLITE

    def test_without_redis_every_conversation_starts_read(self):
        """No Redis: the report says so, messages and groups are all there, nothing is
        unread, membership comes from IMGroupMember."""
        db = self.target()
        report = run_import(db, self.options(redis_urls=[]))
        assert report.ok, report.render()
        assert "redis: not given" in report.render()
        with db.sync_transaction() as txn:
            (unread,) = txn.execute("SELECT COUNT(*) FROM unread").fetchone()
            (members,) = txn.execute(
                "SELECT COUNT(*) FROM group_members WHERE group_id = ? AND status = 0",
                (self.filled.team,),
            ).fetchone()
            (messages,) = txn.execute("SELECT COUNT(*) FROM messages").fetchone()
        assert (unread, members) == (0, 4)
        assert messages == sum(len(m) for m in self.filled.pairs.values())

    def test_dry_run_writes_nothing_and_a_used_store_is_refused(self):
        """``--dry-run`` counts and writes nothing; a store that already has users is
        refused with exit status 1 and a reason."""
        done = self.admin("--redis", self.site.redis_url, "--dry-run")
        assert done.returncode == 0, done.stderr
        assert "dry run" in done.stdout and "check: not run" in done.stdout
        with self.target().sync_transaction() as txn:
            assert txn.execute("SELECT COUNT(*) FROM users").fetchone() == (0,)
            accounts.add_user(txn, "someone", "pw", now=T)
        refused = self.admin()
        assert refused.returncode == 1
        assert "already has users" in refused.stderr
        try:
            run_import(self.target(), self.options())
        except ImportRefused:
            pass
        else:
            raise AssertionError("a used store was not refused")


class MariaDBImportTests(ImportTests, ImportCase):
    backend = MARIADB
