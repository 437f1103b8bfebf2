"""``teamtalk-admin group ...``: the commands through ``main`` in the test process (the
same output and exit status as the script: ``tests/admin/test_admin.py`` runs the script
itself), and the installed command in a subprocess on a data dir that a running server
shares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.internet import threads

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Group_pb2
from tests.admin_support import admin_in_process
from tests.msg_support import MsgTestCase, next_pdu
from tests.support import TestCase

ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))


def admin(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return admin_in_process(["--data-dir", str(data_dir), *args])


def admin_process(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed script, beside the running server."""
    return subprocess.run(
        [ADMIN, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def ok(data_dir: Path, *args: str) -> str:
    done = admin(data_dir, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ok_process(data_dir: Path, *args: str) -> str:
    done = admin_process(data_dir, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class AdminGroupTests(TestCase):
    def setUp(self) -> None:
        self.data = self.tmp_path() / "var"
        self.data.mkdir(mode=0o700)  # teamtalk-admin creates no data dir but with init
        self.ids = {
            name: int(ok(self.data, "user", "add", "--name", name, "--password", "pw"))
            for name in ("alice", "bob", "carol")
        }

    def test_group_add_prints_the_id_and_the_creator_is_a_member(self):
        """``group add`` prints the new id; ``group members`` lists the creator (marked)
        and the members."""
        group_id = ok(
            self.data, "group", "add", "--name", "Eng", "--creator", "alice", "--member", "bob"
        )
        assert group_id == "1"
        members = ok(self.data, "group", "members", group_id).splitlines()
        assert members == [
            f"{self.ids['alice']}\talice\tcreator",
            f"{self.ids['bob']}\tbob",
        ]

    def test_group_list_shows_type_creator_size_and_version(self):
        """One line per group: id, name, type, creator, member count, version."""
        ok(self.data, "group", "add", "--name", "Eng", "--creator", "alice", "--member", "bob")
        ok(self.data, "group", "add", "--name", "Tmp", "--creator", "bob", "--temporary")
        assert ok(self.data, "group", "list").splitlines() == [
            "1\tEng\tnormal\tcreator=alice\tmembers=2\tversion=1",
            "2\tTmp\ttemporary\tcreator=bob\tmembers=1\tversion=1",
        ]

    def test_member_add_and_remove_change_the_members_and_the_version(self):
        """Each change prints ok and bumps the version."""
        ok(self.data, "group", "add", "--name", "Eng", "--creator", "alice")
        assert ok(self.data, "group", "member", "add", "1", "bob", "carol") == "ok"
        assert ok(self.data, "group", "member", "remove", "1", "bob") == "ok"
        members = ok(self.data, "group", "members", "1").splitlines()
        assert [line.split("\t")[1] for line in members] == ["alice", "carol"]
        assert ok(self.data, "group", "list").endswith("members=2\tversion=3")

    def test_bad_requests_exit_1_with_a_reason(self):
        """Unknown users and groups, adding a member twice or removing a non-member:
        exit status 1 and a message on stderr; a missing --creator is a usage error."""
        ok(self.data, "group", "add", "--name", "Eng", "--creator", "alice", "--member", "bob")
        for args, reason in (
            (("group", "add", "--name", "X", "--creator", "nobody"), "no user named"),
            (("group", "members", "9"), "no group 9"),
            (("group", "member", "add", "1", "bob"), "nobody to add"),
            (("group", "member", "remove", "1", "carol"), "nobody to remove"),
            (("group", "member", "add", "9", "carol"), "no group 9"),
            (("group", "add", "--name", "", "--creator", "alice"), "needs a name"),
        ):
            done = admin(self.data, *args)
            assert (done.returncode, done.stdout) == (1, ""), (args, done)
            assert reason in done.stderr, (args, done.stderr)
        assert admin(self.data, "group", "add", "--name", "X").returncode == 2

    def test_removing_the_last_member_dissolves_the_group(self):
        """The last removal says the group is dissolved; it is listed as such and no
        longer has members to show."""
        ok(self.data, "group", "add", "--name", "Solo", "--creator", "alice")
        assert "dissolved" in ok(self.data, "group", "member", "remove", "1", "alice")
        assert ok(self.data, "group", "list").endswith("\tdissolved")
        assert admin(self.data, "group", "members", "1").returncode == 1


class AdminGroupServerTests(MsgTestCase):
    async def test_a_fixed_group_made_with_the_cli_is_used_by_the_running_server(self):
        """A group added while the server runs appears in its members' normal group
        list and carries messages; a member added with the CLI gets the next message."""
        a = await self.add_user("alice")
        c = await self.add_user("carol")
        run = threads.deferToThread
        group_id = int(
            await run(
                ok_process, self.data_dir, "group", "add", "--name", "Eng", "--creator", "alice"
            )
        )
        alice = await self.login("alice")
        carol = await self.login("carol")
        listed = await alice.get(
            B.CID_GROUP_NORMAL_LIST_REQUEST, Group_pb2.IMNormalGroupListReq(user_id=0)
        )
        assert [(v.group_id, v.version) for v in listed.group_version_list] == [(group_id, 1)]
        ack = await alice.send_text(group_id, "one", session_type=B.SESSION_TYPE_GROUP)
        assert ack.msg_id == 1
        await run(ok_process, self.data_dir, "group", "member", "add", str(group_id), "carol")
        await alice.send_text(group_id, "two", session_type=B.SESSION_TYPE_GROUP)
        delivered = (await next_pdu(carol.protocol, B.CID_MSG_DATA)).message
        assert (delivered.msg_id, delivered.from_user_id) == (2, a)
        (info,) = (
            await carol.get(
                B.CID_GROUP_INFO_REQUEST,
                Group_pb2.IMGroupInfoListReq(
                    user_id=0, group_version_list=[B.GroupVersionInfo(group_id=group_id, version=0)]
                ),
            )
        ).group_info_list
        assert (info.version, info.group_type) == (2, B.GROUP_TYPE_NORMAL)
        assert sorted(info.group_member_list) == sorted((a, c))
