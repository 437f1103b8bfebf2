"""The ``teamtalk-admin`` console script: what it prints, its exit status (0 done, 1 refused
request, 2 bad usage), and what it leaves in the store.

The commands run through ``main`` in the test process (``admin_in_process``: the same argv,
stdout, stderr and status); the tests of the script as operators run it (``SafetyTests``,
``UsageTests``: stdin, the prompt, usage errors, a missing data dir or database) run the
installed script in a subprocess."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from teamtalk_py.store import accounts
from teamtalk_py.store.database import open_database
from teamtalk_testing import free_port
from teamtalk_testing.scratch import ScratchDatabase, Unreachable
from tests.admin_support import admin_in_process
from tests.store_support import mysql_server
from tests.support import TestCase, server_unreachable

ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))


#: What teamtalk-admin says when a password is given with --password.
PASSWORD_WARNING = "teamtalk-admin: warning: a password on the command line is visible"


class AdminTestCase(TestCase):
    #: Run the installed script in a subprocess rather than ``main`` in this process.
    as_subprocess = False

    def setUp(self) -> None:
        # An existing data dir, as `teamtalk-admin init` or the server leave it.
        self.data_dir = self.tmp_path() / "var"
        self.data_dir.mkdir(mode=0o700)
        self.location = ["--data-dir", str(self.data_dir)]

    def admin(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        if not self.as_subprocess:
            return admin_in_process([*self.location, *args], stdin=stdin)
        return subprocess.run(
            [ADMIN, *self.location, *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Run a command that must succeed; its stdout without the final newline. The
        only stderr allowed is the warning about a password given with --password."""
        result = self.admin(*args, stdin=stdin)
        assert result.returncode == 0, (args, result.stderr)
        others = [x for x in result.stderr.splitlines() if not x.startswith(PASSWORD_WARNING)]
        assert others == [], result.stderr
        return result.stdout.rstrip("\n")

    def refused(self, *args: str, status: int = 1) -> str:
        """Run a command that must fail with ``status``; its stderr."""
        result = self.admin(*args)
        assert result.returncode == status, (args, result.returncode, result.stdout)
        assert result.stdout == ""
        assert result.stderr.strip()
        return result.stderr

    def run_all(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
        """Run independent commands (concurrently when each is a separate process)."""
        if not self.as_subprocess:
            return [self.admin(*args) for args in commands]
        procs = [
            subprocess.Popen(
                [ADMIN, *self.location, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        results = []
        for args, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=60)
            results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
        return results

    def all_refused(self, *commands: tuple[str, ...], status: int = 1) -> list[str]:
        """Like ``refused`` for several independent commands; their stderr texts."""
        errors = []
        for result in self.run_all(*commands):
            assert result.returncode == status, (result.args, result.returncode, result.stdout)
            assert result.stdout == "" and result.stderr.strip()
            errors.append(result.stderr)
        return errors

    def seed(self, name: str, password: str = "pw", **fields) -> int:
        """Create a user directly in the store (set-up only; the CLI is what is tested)."""
        db = open_database(None, self.data_dir, reactor=None)
        db.migrate()
        with db.sync_transaction() as txn:
            return accounts.add_user(txn, name, password, nick=name, now=1, **fields)

    def database_files(self) -> list[str]:
        return sorted(p.name for p in self.data_dir.iterdir())

    def user(self, name: str) -> accounts.UserRow:
        db = open_database(None, self.data_dir, reactor=None)
        with db.sync_transaction() as txn:
            row = accounts.get_user_by_name(txn, name)
        assert row is not None
        return row


class DepartmentCommandTests(AdminTestCase):
    def test_department_add_prints_ids_and_list_shows_them(self):
        """Each add prints the new id; list shows every department with its id."""
        eng = self.ok("department", "add", "Engineering")
        sales = self.ok("department", "add", "Sales", "--parent", "Engineering")
        assert eng.isdigit() and sales.isdigit() and int(sales) > int(eng)
        listing = self.ok("department", "list").splitlines()
        assert listing[0].startswith(f"{eng}\tEngineering\t")
        assert listing[1].startswith(f"{sales}\tSales\tparent={eng}")

    def test_duplicate_or_unknown_department_names_are_refused(self):
        """A taken name or an unknown parent exits 1 with a message naming it."""
        self.ok("department", "add", "Engineering")
        duplicate, unknown = self.all_refused(
            ("department", "add", "Engineering"),
            ("department", "add", "Ops", "--parent", "Nowhere"),
        )
        assert "Engineering" in duplicate and "Nowhere" in unknown
        assert len(self.ok("department", "list").splitlines()) == 1


class UserCommandTests(AdminTestCase):
    def test_user_add_prints_the_id_and_the_user_can_log_in(self):
        """The printed id is the stored user's; the password checks as clients send it."""
        self.ok("department", "add", "Engineering")
        uid = self.ok(
            "user", "add", "--name", "alice", "--password", "s3cret", "--nick", "Alice",
            "--department", "Engineering", "--email", "alice@example.com",
        )  # fmt: skip
        row = self.user("alice")
        assert str(row.id) == uid
        assert (row.nick, row.email, row.department_id) == ("Alice", "alice@example.com", 1)
        assert accounts.check_password(row, hashlib.md5(b"s3cret").hexdigest())
        assert not accounts.check_password(row, hashlib.md5(b"S3cret").hexdigest())

    def test_passwords_are_stored_only_as_salted_hashes(self):
        """Neither the password nor its plain MD5 is stored; equal passwords get different
        salts and hashes."""
        self.ok("user", "add", "--name", "alice", "--password", "same")
        self.ok("user", "add", "--name", "bob", "--password", "same")
        alice, bob = self.user("alice"), self.user("bob")
        plain_md5 = hashlib.md5(b"same").hexdigest()
        assert alice.password_hash not in ("same", plain_md5)
        assert alice.salt != bob.salt and alice.password_hash != bob.password_hash
        stored = b"".join(p.read_bytes() for p in self.data_dir.rglob("*") if p.is_file())
        assert b"same" not in stored and plain_md5.encode() not in stored

    def test_user_list_shows_every_user_with_nick_department_and_state(self):
        """One line per user; a disabled user is marked so."""
        self.ok("department", "add", "Engineering")
        a = self.ok("user", "add", "--name", "alice", "--password", "pw", "--department",
                    "Engineering")  # fmt: skip
        b = self.ok("user", "add", "--name", "bob", "--password", "pw", "--nick", "Bobby")
        self.ok("user", "disable", "bob")
        assert self.ok("user", "list").splitlines() == [
            f"{a}\talice\talice\tdepartment=1\tactive",
            f"{b}\tbob\tBobby\tdepartment=0\tdisabled",
        ]

    def test_duplicate_user_and_unknown_department_are_refused(self):
        """A taken name or unknown department exits 1 and creates nothing."""
        self.seed("alice")
        duplicate, unknown = self.all_refused(
            ("user", "add", "--name", "alice", "--password", "x"),
            ("user", "add", "--name", "bob", "--password", "pw", "--department", "Nope"),
        )
        assert "alice" in duplicate and "Nope" in unknown
        assert len(self.ok("user", "list").splitlines()) == 1

    def test_empty_name_or_password_is_refused(self):
        """An account needs a name and a non-empty password."""
        self.seed("alice")
        self.all_refused(
            ("user", "add", "--name", "", "--password", "pw"),
            ("user", "add", "--name", "carol", "--password", ""),
            ("user", "passwd", "alice", ""),
        )
        assert accounts.check_password(self.user("alice"), hashlib.md5(b"pw").hexdigest())
        assert self.ok("user", "list").count("\n") == 0

    def test_passwd_replaces_the_password(self):
        """After passwd only the new password checks."""
        self.seed("alice", "old")
        salt = self.user("alice").salt
        assert self.ok("user", "passwd", "alice", "n3w") == "ok"
        row = self.user("alice")
        assert accounts.check_password(row, hashlib.md5(b"n3w").hexdigest())
        assert not accounts.check_password(row, hashlib.md5(b"old").hexdigest())
        assert row.salt != salt

    def test_disable_and_enable(self):
        """A disabled user cannot log in; enable lets them again."""
        self.seed("alice")
        assert self.ok("user", "disable", "alice") == "ok"
        assert not self.user("alice").can_log_in
        assert self.ok("user", "enable", "alice") == "ok"
        assert self.user("alice").can_log_in

    def test_set_edits_profile_fields(self):
        """set changes the given fields only and moves the department."""
        self.ok("department", "add", "Sales")
        self.ok("user", "add", "--name", "alice", "--password", "pw", "--phone", "1")
        out = self.ok(
            "user", "set", "alice", "--nick", "Al", "--email", "al@x.org", "--sex", "1",
            "--sign-info", "hi", "--avatar", "http://a/b.png", "--department", "Sales",
        )  # fmt: skip
        assert out == "ok"
        row = self.user("alice")
        assert (row.nick, row.email, row.sex, row.sign_info) == ("Al", "al@x.org", 1, "hi")
        assert (row.avatar, row.department_id, row.phone) == ("http://a/b.png", 1, "1")

    def test_commands_on_unknown_users_are_refused(self):
        """passwd, disable, enable and set name the user that does not exist; exit 1."""
        self.seed("alice")
        errors = self.all_refused(
            ("user", "passwd", "ghost", "pw"),
            ("user", "disable", "ghost"),
            ("user", "enable", "ghost"),
            ("user", "set", "ghost", "--nick", "G"),
        )
        assert all("ghost" in e for e in errors), errors

    def test_set_refuses_nothing_to_change_and_values_the_store_cannot_hold(self):
        """No field, an over-long field and an unknown department exit 1."""
        self.seed("alice")
        self.all_refused(
            ("user", "set", "alice"),
            ("user", "set", "alice", "--email", "x" * 200),
            ("user", "set", "alice", "--department", "Nope"),
        )
        assert self.user("alice").email == ""


class UsageTests(AdminTestCase):
    as_subprocess = True

    def test_bad_usage_exits_2(self):
        """Missing or unknown commands, missing options and bad values are usage errors."""
        self.seed("alice")
        self.all_refused(
            (),
            ("user",),
            ("user", "frobnicate"),
            ("user", "add", "--name", "bob"),
            ("user", "add", "--name", "bob", "--password", "pw", "--sex", "9"),
            ("user", "set", "alice", "--sex", "9"),
            ("user", "set", "alice", "--sex", "male"),
            ("department",),
            status=2,
        )
        assert self.user("alice").sex == 0

    def test_unreadable_config_exits_2_and_a_config_file_names_the_data_dir(self):
        """--config must exist; its data_dir is used when --data-dir is not given."""
        self.location = ["--config", str(self.data_dir / "missing.toml")]
        assert "missing.toml" in self.refused("user", "list", status=2)
        config = self.tmp_path() / "teamtalk.toml"
        config.write_text(f'[server]\ndata_dir = "{self.data_dir}"\n')
        self.location = ["--config", str(config)]
        uid = self.ok("user", "add", "--name", "alice", "--password", "pw")
        assert self.user("alice").id == int(uid)


class MySQLAdminTests(AdminTestCase):
    def test_admin_works_on_mariadb_with_db_url(self):
        """--db mysql://... creates the schema and the same accounts as on SQLite."""
        try:
            database = ScratchDatabase(mysql_server(), "tt_admin")
        except Unreachable as exc:
            server_unreachable(str(exc))
        self.addCleanup(database.drop)
        url = database.url
        self.location = ["--db", url]
        self.ok("department", "add", "Engineering")
        uid = self.ok("user", "add", "--name", "alice", "--password", "pw",
                      "--department", "Engineering")  # fmt: skip
        self.refused("user", "add", "--name", "alice", "--password", "pw")
        assert self.ok("user", "list") == f"{uid}\talice\talice\tdepartment=1\tactive"
        db = open_database(url, self.data_dir, reactor=None)
        with db.sync_transaction() as txn:
            row = accounts.get_user_by_name(txn, "alice")
        assert accounts.check_password(row, hashlib.md5(b"pw").hexdigest())


class SafetyTests(AdminTestCase):
    as_subprocess = True

    def test_reading_never_creates_a_database_and_a_missing_data_dir_needs_init(self):
        """list on an empty data dir is refused without creating anything; any command on
        a data dir that does not exist (a typo) is refused without creating it; init
        creates it 0700 with the database, after which list works."""
        error = self.refused("user", "list")
        assert "no database at" in error and error.count("\n") == 1
        assert self.database_files() == []
        typo = self.tmp_path() / "vra"
        self.location = ["--data-dir", str(typo)]
        for command in (("user", "list"), ("department", "add", "Sales")):
            error = self.refused(*command)
            assert "does not exist" in error and "teamtalk-admin init" in error
        assert not typo.exists()
        assert self.ok("init").startswith("ok: sqlite:")
        assert typo.stat().st_mode & 0o777 == 0o700
        assert self.ok("user", "list") == ""

    def test_passwords_from_stdin_or_the_prompt_and_the_option_warns(self):
        """--password-stdin reads the first line; --password works but warns; with neither
        and no terminal the command is refused as bad usage and nothing is created."""
        self.ok("user", "add", "--name", "alice", "--password-stdin", stdin="s3cret pw\n")
        assert accounts.check_password(self.user("alice"), hashlib.md5(b"s3cret pw").hexdigest())
        result = self.admin("user", "add", "--name", "bob", "--password", "pw")
        assert result.returncode == 0 and result.stderr.startswith(PASSWORD_WARNING)
        assert "no password" in self.refused("user", "add", "--name", "carol", status=2)
        self.ok("user", "passwd", "alice", "--password-stdin", stdin="n3w\n")
        assert accounts.check_password(self.user("alice"), hashlib.md5(b"n3w").hexdigest())
        assert [line.split("\t")[1] for line in self.ok("user", "list").splitlines()] == [
            "alice",
            "bob",
        ]

    def test_an_unreachable_database_is_one_line(self):
        """A MariaDB nobody answers at: one line naming the URL (no password) and why."""
        port = free_port()
        self.location = ["--db", f"mysql://tt:hunter2@127.0.0.1:{port}/teamtalk"]
        for command in (("user", "list"), ("user", "kick", "alice"), ("stats",)):
            error = self.refused(*command)
            assert error.count("\n") == 1, error
            assert f"cannot use the database mysql://tt@127.0.0.1:{port}/teamtalk:" in error
            assert "Can't connect" in error and "hunter2" not in error

    def test_backup_is_a_private_consistent_copy(self):
        """backup writes a SQLite copy (0600) that opens with every user; it refuses to
        overwrite; on MariaDB it names the mysqldump command instead."""
        self.seed("alice")
        self.seed("bob")
        dest = self.tmp_path() / "copy.sqlite3"
        assert self.ok("backup", str(dest)).startswith("backed up ")
        assert dest.stat().st_mode & 0o777 == 0o600
        copy = open_database(f"sqlite:///{dest}", self.data_dir, reactor=None, create=False)
        with copy.sync_transaction() as txn:
            assert [u.name for u in accounts.list_users(txn)] == ["alice", "bob"]
        assert "exists" in self.refused("backup", str(dest))
        self.location = ["--db", "mysql://tt@127.0.0.1:1/teamtalk"]
        assert "mysqldump --single-transaction" in self.refused("backup", "x.sql")

    def test_delete_is_disable_and_kick_ends_sessions_without_disabling(self):
        """user delete is TeamTalk's delete (status 3, sessions ended); user kick moves
        the session epoch only."""
        self.seed("alice")
        self.seed("bob")
        assert self.ok("user", "kick", "alice") == "ok"
        alice = self.user("alice")
        assert (alice.session_epoch, alice.can_log_in) == (1, True)
        assert self.ok("user", "delete", "bob") == "ok"
        bob = self.user("bob")
        assert (bob.session_epoch, bob.can_log_in) == (1, False)
