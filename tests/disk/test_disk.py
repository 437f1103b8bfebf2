"""The cloud disk's seed API against a real ``twistd teamtalk`` process, over HTTP.

Each endpoint and code of the seed system (S002), the flows of issue 17 (register, log
in, upload, instant upload by the same user and by others, share, ranking, save,
cancel, delete), the token deciding who the caller is, exact concurrent download counts,
file names kept as data, and what reaches the disk (the content store's blobs, freed
with their last reference). One server serves the module (``disk_support``).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from twisted.internet import reactor

from teamtalk_client import TeamTalkSession, connect
from tests.disk_support import (
    PASSWORD,
    DiskServer,
    SeedClient,
    SharedDiskServer,
    md5,
    unique,
    upload_body,
)
from tests.support import TestCase


def blob_path(data_dir: Path, data: bytes) -> Path:
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    return data_dir / "media" / "blobs" / sha[:2] / sha


def refcount(data_dir: Path, data: bytes) -> int | None:
    import hashlib

    db = sqlite3.connect(data_dir / "teamtalk.sqlite3")
    try:
        row = db.execute(
            "SELECT refcount FROM content_blobs WHERE sha256 = ?",
            (hashlib.sha256(data).hexdigest(),),
        ).fetchone()
    finally:
        db.close()
    return None if row is None else int(row[0])


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class SeedFlowTests(TestCase):
    def setUp(self) -> None:
        self.server = SharedDiskServer.get()
        self.seed = SeedClient(self.server.disk_url)

    def user(self, prefix: str) -> tuple[str, str]:
        name = unique(prefix)
        assert self.seed.register(name) == "002"
        return name, self.seed.login(name)

    def test_register_login_upload_and_instant_uploads(self):
        """Register (002, then 003 for a taken name), log in (000 with a token, 001 for
        a wrong password), upload (008), then /md5 of the same bytes: 004 for the
        uploader's own name, 006 for another user while the file is not shared, 005
        once it is; the instant copy downloads byte for byte, the blob is stored once."""
        mike = unique("mike")
        assert self.seed.register(mike) == "002"
        assert self.seed.register(mike) == "003"
        assert self.seed.code("/login", {"username": mike, "password": md5(b"wrong")}) == "001"
        mike_token = self.seed.login(mike)
        kate, kate_token = self.user("kate")
        data = os.urandom(300_000)
        assert self.seed.upload(mike, mike_token, "report.pdf", data) == "008"

        def instant(user: str, token: str, name: str) -> str:
            body = {"user": user, "token": token, "md5": md5(data), "fileName": name}
            return self.seed.code("/md5", body)

        assert instant(mike, mike_token, "report.pdf") == "004"
        assert instant(kate, kate_token, "report.pdf") == "006"  # not shared: no oracle
        assert self.seed.file_call("/dealfile?cmd=share", mike, mike_token, data,
                                   "report.pdf") == "010"  # fmt: skip
        assert instant(kate, kate_token, "mine.pdf") == "005"
        assert instant(kate, kate_token, "mine.pdf") == "004"
        [copy] = self.seed.my_files(kate, kate_token)
        assert (copy["user"], copy["filename"], copy["md5"], copy["size"]) == (
            kate, "mine.pdf", md5(data), len(data),
        )  # fmt: skip
        assert copy["share_status"] == 0 and copy["pv"] == 0 and copy["type"] == "pdf"
        assert time.strptime(copy["time"], "%Y-%m-%d %H:%M:%S")
        download = requests.get(copy["url"], timeout=30)
        assert download.status_code == 200 and download.content == data
        assert download.headers["ETag"].strip('"') == blob_path(self.server.data_dir, data).name
        assert refcount(self.server.data_dir, data) == 2
        assert blob_path(self.server.data_dir, data).read_bytes() == data

    def test_share_ranking_save_cancel_delete(self):
        """Shared files are ranked by the downloads counted (pvdesc, pvasc); another
        user saves one (020, then 021); only the owner cancels (019 for others, 018);
        deleting (013) the owner's file leaves the saved copy readable, and deleting
        that last reference frees the blob."""
        owner, token = self.user("owner")
        other, other_token = self.user("other")
        files = {f"f{i}.txt": os.urandom(2000 + i) for i in range(3)}
        for name, data in files.items():
            assert self.seed.upload(owner, token, name, data) == "008"
            assert self.seed.file_call("/dealfile?cmd=share", owner, token, data, name) == "010"
        assert self.seed.file_call("/dealfile?cmd=share", owner, token, files["f0.txt"],
                                   "f0.txt") == "012"  # fmt: skip
        for name, times in (("f0.txt", 1), ("f1.txt", 3), ("f2.txt", 2)):
            for _ in range(times):
                assert self.seed.file_call("/dealsharefile?cmd=pv", other, other_token,
                                           files[name], name) == "016"  # fmt: skip
        mine = [f["filename"] for f in self.seed.shared(token) if f["user"] == owner]
        ranking = [r for r in self.seed.shared(token, "pvdesc") if r["filename"] in files]
        assert ranking[:3] == [{"filename": "f1.txt", "pv": 3}, {"filename": "f2.txt", "pv": 2},
                               {"filename": "f0.txt", "pv": 1}]  # fmt: skip
        ascending = [
            r["filename"] for r in self.seed.shared(token, "pvasc") if r["filename"] in files
        ]
        assert ascending == ["f0.txt", "f2.txt", "f1.txt"]
        assert sorted(mine) == sorted(files)
        # The owner's own list sorts by the downloads counted on their files.
        for name, times in (("f0.txt", 2), ("f2.txt", 1)):
            for _ in range(times):
                assert self.seed.file_call("/myfiles?cmd=pv", owner, token, files[name],
                                           name) == "016"  # fmt: skip
        by_pv = [(f["filename"], f["pv"]) for f in self.seed.my_files(owner, token, "pvdesc")]
        assert by_pv == [("f0.txt", 2), ("f2.txt", 1), ("f1.txt", 0)]
        by_pv = [f["filename"] for f in self.seed.my_files(owner, token, "pvasc")]
        assert by_pv == ["f1.txt", "f2.txt", "f0.txt"]
        count = self.seed.post("/sharefiles?cmd=count", {"token": token})
        assert count["code"] == "110" and int(count["num"]) >= 3
        listed = {f["filename"]: f for f in self.seed.my_files(owner, token)}
        assert all(f["share_status"] == 1 for f in listed.values())
        data = files["f1.txt"]
        assert self.seed.file_call("/dealsharefile?cmd=save", other, other_token, data,
                                   "f1.txt") == "020"  # fmt: skip
        assert self.seed.file_call("/dealsharefile?cmd=save", other, other_token, data,
                                   "f1.txt") == "021"  # fmt: skip
        assert self.seed.file_call("/dealsharefile?cmd=cancel", other, other_token, data,
                                   "f1.txt") == "019"  # fmt: skip
        assert self.seed.file_call("/dealsharefile?cmd=cancel", owner, token, data,
                                   "f1.txt") == "018"  # fmt: skip
        assert "f1.txt" not in [f["filename"] for f in self.seed.shared(token)]
        shared_url = next(f["url"] for f in self.seed.shared(token) if f["filename"] == "f0.txt")
        assert requests.get(shared_url, timeout=30).content == files["f0.txt"]
        assert refcount(self.server.data_dir, data) == 2
        assert self.seed.file_call("/dealfile?cmd=del", owner, token, data, "f1.txt") == "013"
        assert self.seed.file_call("/dealfile?cmd=del", owner, token, data, "f1.txt") == "014"
        [saved] = self.seed.my_files(other, other_token)
        assert requests.get(saved["url"], timeout=30).content == data
        assert self.seed.file_call("/dealfile?cmd=del", other, other_token, data,
                                   "f1.txt") == "013"  # fmt: skip
        assert refcount(self.server.data_dir, data) == 0
        blob = blob_path(self.server.data_dir, data)
        wait_until(lambda: not blob.exists())  # the grace is 0.5 s here
        assert requests.get(saved["url"], timeout=30).status_code == 404
        # Deleting a shared file takes it out of the public list too.
        assert self.seed.file_call("/dealfile?cmd=del", owner, token, files["f0.txt"],
                                   "f0.txt") == "013"  # fmt: skip
        assert requests.get(shared_url, timeout=30).status_code == 404
        assert "f0.txt" not in [f["filename"] for f in self.seed.shared(token, "pvdesc")]

    def test_the_token_decides_who_the_caller_is(self):
        """Mike's token with ``user`` naming Kate is refused (111) by every call; so are
        calls without a token, cancel and save included; Kate's files are untouched."""
        mike, mike_token = self.user("mike")
        kate, kate_token = self.user("kate")
        data = os.urandom(5000)
        assert self.seed.upload(kate, kate_token, "k.txt", data) == "008"
        assert self.seed.file_call("/dealfile?cmd=share", kate, kate_token, data, "k.txt") == "010"
        body = {"user": kate, "token": mike_token, "md5": md5(data), "filename": "k.txt",
                "fileName": "k.txt", "start": 0, "count": 10}  # fmt: skip
        for path in ("/md5", "/myfiles?cmd=count", "/myfiles?cmd=normal", "/myfiles?cmd=pv",
                     "/dealfile?cmd=share", "/dealfile?cmd=del", "/dealfile?cmd=pv",
                     "/dealsharefile?cmd=cancel", "/dealsharefile?cmd=save",
                     "/dealsharefile?cmd=pv", "/sharefiles?cmd=normal"):  # fmt: skip
            assert self.seed.code(path, body) == "111", path
            assert self.seed.code(path, {k: v for k, v in body.items() if k != "token"}) == "111"
        assert (
            self.seed.code("/myfiles?cmd=count", {"username": kate, "token": mike_token}) == "111"
        )
        numbered = {"user": 7, "token": kate_token}  # a "user" that is no name at all
        assert self.seed.code("/myfiles?cmd=count", numbered) == "111"
        assert self.seed.upload(kate, mike_token, "x.txt", data) == "111"
        assert self.seed.upload(kate, None, "x.txt", data) == "111"
        assert self.seed.code("/md5", {**body, "token": "v1.1.2.3.forged"}) == "111"
        [kept] = self.seed.my_files(kate, kate_token)
        assert (kept["filename"], kept["share_status"]) == ("k.txt", 1)
        count = self.seed.post("/myfiles?cmd=count", {"user": kate, "token": kate_token})
        assert count == {"num": "1", "code": "110"}
        assert self.seed.my_files(mike, mike_token) == []

    def test_concurrent_download_counts_are_exact(self):
        """200 downloads counted by 20 clients at once (of a file and of its shared
        entry) are 200 each: ``pv = pv + 1`` in the database."""
        owner, token = self.user("pv")
        data = os.urandom(1000)
        assert self.seed.upload(owner, token, "hot.bin", data) == "008"
        assert self.seed.file_call("/dealfile?cmd=share", owner, token, data, "hot.bin") == "010"

        def count(path: str) -> str:
            client = SeedClient(self.server.disk_url)
            return client.file_call(path, owner, token, data, "hot.bin")

        paths = ["/dealfile?cmd=pv", "/dealsharefile?cmd=pv"] * 100
        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(count, paths))
        assert codes == ["016"] * 200
        [file] = self.seed.my_files(owner, token)
        assert file["pv"] == 100
        [ranked] = [r for r in self.seed.shared(token, "pvdesc") if r["filename"] == "hot.bin"]
        assert ranked["pv"] == 100

    def test_upload_is_checked_against_what_it_declares(self):
        """An upload whose bytes do not match its declared MD5 or size is refused (009)
        and stores nothing; the token may come in the Authorization header; a declared
        size over the quota is refused before the bytes are stored."""
        user, token = self.user("up")
        data = os.urandom(70_000)
        assert self.seed.upload(user, token, "a.bin", data, digest=md5(b"other")) == "009"
        assert self.seed.upload(user, token, "a.bin", data, size=len(data) + 1) == "009"
        assert self.seed.upload(user, token, "a.bin", data, size=9 * 1024 * 1024) == "009"
        assert self.seed.upload(user, token, "bad\x01name", data) == "009"
        assert self.seed.my_files(user, token) == []
        assert refcount(self.server.data_dir, data) is None
        body, content_type = upload_body(user, "b.bin", data)
        answer = requests.post(
            self.server.disk_url + "/upload", data=body, timeout=30,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
        ).json()  # fmt: skip
        assert answer == {"code": "008"}
        # The same bytes and name again: nothing new (the user has it already).
        assert self.seed.upload(user, token, "b.bin", data) == "008"
        assert [f["filename"] for f in self.seed.my_files(user, token)] == ["b.bin"]
        incoming = self.server.data_dir / "media" / "incoming"
        wait_until(lambda: not any(incoming.iterdir()))

    def test_file_names_are_data_never_paths(self):
        """Names with slashes, dots and other scripts are stored and listed as given;
        the disk holds only content-addressed blobs."""
        user, token = self.user("names")
        names = ["../../etc/passwd", "a/b\\c.txt", "报告 2026.DOCX", ".hidden", "x" * 255]
        for i, name in enumerate(names):
            assert self.seed.upload(user, token, name, f"{i}".encode() * 100) == "008", name
        listed = self.seed.my_files(user, token)
        assert [f["filename"] for f in listed] == names
        assert [f["type"] for f in listed] == ["", "txt", "docx", "hidden", ""]
        media = self.server.data_dir / "media"
        assert sorted(p.name for p in media.iterdir()) == ["blobs", "incoming"]
        for path in (media / "blobs").rglob("*"):
            assert path.is_dir() or len(path.name) == 64, path
        assert not (self.server.data_dir.parent / "etc").exists()
        assert self.seed.upload(user, token, "y" * 256, b"long") == "009"

    def test_every_failure_code(self):
        """Each call's failure code for a file that is not there (011, 014, 017, 019,
        022, 006), a page that is not a number (015), a broken body (004 for /reg, 001
        for /login), and 404 for a command the seed does not have."""
        user, token = self.user("codes")
        ghost = b"never uploaded"
        for path, failure in (("/dealfile?cmd=share", "011"), ("/dealfile?cmd=del", "014"),
                              ("/dealfile?cmd=pv", "017"), ("/myfiles?cmd=pv", "017"),
                              ("/dealsharefile?cmd=cancel", "019"),
                              ("/dealsharefile?cmd=save", "022"),
                              ("/dealsharefile?cmd=pv", "017")):  # fmt: skip
            assert self.seed.file_call(path, user, token, ghost, "ghost") == failure, path
        assert self.seed.code("/md5", {"user": user, "token": token, "md5": md5(ghost),
                                       "fileName": "ghost"}) == "006"  # fmt: skip
        for cmd in ("normal", "pvasc", "pvdesc"):
            body = {"user": user, "token": token, "start": "abc", "count": 10}
            assert self.seed.code(f"/myfiles?cmd={cmd}", body) == "015"
            assert self.seed.code(f"/sharefiles?cmd={cmd}", body) == "015"
        assert self.seed.code("/reg", {"userName": unique("x")}) == "004"
        assert self.seed.code("/reg", None, data=b"{not json") == "004"
        assert self.seed.code("/login", {"username": user}) == "001"
        assert requests.post(f"{self.server.disk_url}/myfiles?cmd=bogus", json={},
                             timeout=10).status_code == 404  # fmt: skip
        assert requests.get(f"{self.server.disk_url}/login", timeout=10).status_code == 405
        answer = requests.get(f"{self.server.disk_url}/sharefiles?cmd=count", timeout=10,
                              headers={"Authorization": f"Bearer {token}"}).json()  # fmt: skip
        assert answer["code"] == "110" and int(answer["num"]) >= 0

    def test_answers_are_counted_in_metrics(self):
        """/metrics counts the disk's answers by route and code."""
        from prometheus_client.parser import text_string_to_metric_families

        user, _ = self.user("metrics")
        assert self.seed.code("/myfiles?cmd=count", {"user": user, "token": "bad"}) == "111"
        ops = self.server.server.ports.ops
        text = requests.get(f"http://127.0.0.1:{ops}/metrics", timeout=30).text
        counted = {
            (sample.labels["route"], sample.labels["code"]): sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "teamtalk_disk_answers"
            for sample in family.samples
            if sample.name == "teamtalk_disk_answers_total"
        }
        assert counted[("/myfiles?cmd=count", "111")] >= 1
        assert counted[("/reg", "002")] >= 1
        assert counted[("/login", "000")] >= 1


class RegistrationTests(TestCase):
    async def test_off_by_default_then_on_with_a_limit_per_address(self):
        """/reg answers 004 by default; a reload turning disk.allow_registration on
        lets two registrations through (disk.registrations_per_hour = 2) and refuses the
        third; a registered user logs in with a TeamTalk client (PDU login) and is in
        the configured department."""
        root = self.tmp_path()
        server = DiskServer(root, "").start()
        self.addCleanup(server.stop)
        seed = SeedClient(server.disk_url)
        assert seed.register("early") == "004"
        server.config_path.write_text(
            '[disk]\nallow_registration = true\nregistrations_per_hour = 2\ndepartment = "Guests"\n'
        )
        server.server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while seed.register("first") == "004":
            assert time.monotonic() < deadline, server.output()[-2000:]
            time.sleep(0.1)
        assert seed.register("second") == "002"
        assert seed.register("third") == "004"
        session = TeamTalkSession(await connect(reactor, "127.0.0.1", server.server.msg_port))
        try:
            answer = await session.login("first", PASSWORD)
            assert answer.result_code == 0
            assert answer.user_info.user_nick_name == "First"
        finally:
            session.protocol.transport.loseConnection()
        db = sqlite3.connect(server.data_dir / "teamtalk.sqlite3")
        try:
            rows = db.execute(
                "SELECT u.name, d.name FROM users u JOIN departments d ON d.id = u.department_id"
            ).fetchall()
        finally:
            db.close()
        assert sorted(rows) == [("first", "Guests"), ("second", "Guests")]
