"""What the admin API does to connected TeamTalk clients, against a real ``twistd teamtalk``
process (SQLite, and MariaDB): a kick and a disable reach the client as
``CID_LOGIN_KICK_USER``, a group change as ``CID_GROUP_CHANGE_MEMBER_NOTIFY``, a rename
and a department change reach the client's next incremental directory sync; the session
list, nodes and statistics show the connected clients."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from teamtalk_client.protocol import connect
from teamtalk_client.session import TeamTalkSession
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Group_pb2
from teamtalk_testing.scratch import ScratchDatabase, Unreachable
from tests.admin_support import AdminServer
from tests.msg_support import assert_nothing, closed_within, next_pdu, sleep
from tests.store_support import mysql_server
from tests.support import TestCase, server_unreachable

PASSWORD = "s3cret"


class AdminLiveTests(TestCase):
    """On the embedded SQLite store."""

    def setUp(self) -> None:
        root = self.tmp_path()
        self.server = AdminServer(root, self.database()).start()
        self.addCleanup(self.server.stop)
        self.api = self.server.api("tests")
        self.sessions: list[TeamTalkSession] = []
        self.addCleanup(self._close_clients)

    def database(self) -> str | None:
        """The ``--db`` URL (None: the embedded SQLite store)."""
        return None

    def _close_clients(self) -> None:
        for session in self.sessions:
            if not session.protocol.closed.called:
                session.protocol.transport.loseConnection()

    async def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        return await deferToThread(self.api.call, method, path, expect, **kwargs)

    async def user(self, name: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "password": PASSWORD, **fields}
        return await self.call("POST", "/users", 201, json=body)

    async def login(self, name: str, client_type: int = B.CLIENT_TYPE_WINDOWS) -> TeamTalkSession:
        protocol = await connect(reactor, "127.0.0.1", self.server.msg_port)
        session = TeamTalkSession(protocol, timeout=10.0)
        self.sessions.append(session)
        answer = await session.login(name, PASSWORD, client_type=client_type)
        assert answer.result_code == B.REFUSE_REASON_NONE, answer
        return session

    async def test_sessions_list_the_client_and_a_kick_reaches_it(self):
        """A logged-in client is listed with its client type, node, time and address;
        kicking that session and kicking the user both end the connection with
        CID_LOGIN_KICK_USER; the user can log in again after either."""
        alice = await self.user("alice", nick="Alice")
        pc = await self.login("alice")
        phone = await self.login("alice", B.CLIENT_TYPE_ANDROID)
        listed = (await self.call("GET", "/sessions", 200))["items"]
        mine = sorted((s for s in listed if s["user_id"] == alice["id"]),
                      key=lambda s: s["client_type"])  # fmt: skip
        assert [s["client_type"] for s in mine] == ["android", "windows"]
        assert {s["user_name"] for s in mine} == {"alice"}
        assert {s["node"] for s in mine} == {f"127.0.0.1:{self.server.msg_port}"}
        assert all(s["address"].startswith("127.0.0.1:") for s in mine)
        assert all(abs(s["since"] - time.time()) < 60 for s in mine)
        windows = next(s for s in mine if s["client_type"] == "windows")
        await self.call("POST", f"/sessions/{windows['id']}/kick", 204)
        kick = await next_pdu(pc.protocol, B.CID_LOGIN_KICK_USER, timeout=5)
        assert kick.message.user_id == alice["id"]
        assert await closed_within(pc.protocol, 5)
        await assert_nothing(phone.protocol, B.CID_LOGIN_KICK_USER, within=0.5)
        await self.call("POST", f"/sessions/{windows['id']}/kick", 404)
        again = await self.login("alice")
        await self.call("POST", f"/users/{alice['id']}/kick", 204)
        for session in (again, phone):
            await next_pdu(session.protocol, B.CID_LOGIN_KICK_USER, timeout=5)
            assert await closed_within(session.protocol, 5)
        await self.login("alice")
        assert f"admin token:tests POST /admin/api/v1/users/{alice['id']}/kick -> 204" in (
            self.server.output()
        )

    async def test_a_disabled_user_is_kicked_and_cannot_log_in(self):
        """PATCH disabled: the connected client gets CID_LOGIN_KICK_USER at once and a
        new login is refused; enabled again, the user logs in."""
        bob = await self.user("bob")
        session = await self.login("bob")
        started = time.monotonic()
        changed = await self.call("PATCH", f"/users/{bob['id']}", 200, json={"disabled": True})
        assert changed["status"] == "disabled" and changed["disabled"] is True
        await next_pdu(session.protocol, B.CID_LOGIN_KICK_USER, timeout=5)
        assert time.monotonic() - started < 3  # not a poll interval later
        assert await closed_within(session.protocol, 5)
        protocol = await connect(reactor, "127.0.0.1", self.server.msg_port)
        refused = TeamTalkSession(protocol, timeout=10.0)
        self.sessions.append(refused)
        answer = await refused.login("bob", PASSWORD)
        assert answer.result_code != B.REFUSE_REASON_NONE
        await self.call("PATCH", f"/users/{bob['id']}", 200, json={"disabled": False})
        await self.login("bob")

    async def test_a_new_password_ends_sessions_and_works(self):
        """PATCH password: the session ends; the old password is refused, the new works."""
        carol = await self.user("carol")
        session = await self.login("carol")
        await self.call("PATCH", f"/users/{carol['id']}", 200, json={"password": "n3w"})
        await next_pdu(session.protocol, B.CID_LOGIN_KICK_USER, timeout=5)
        protocol = await connect(reactor, "127.0.0.1", self.server.msg_port)
        fresh = TeamTalkSession(protocol, timeout=10.0)
        self.sessions.append(fresh)
        assert (await fresh.login("carol", PASSWORD)).result_code != B.REFUSE_REASON_NONE
        protocol = await connect(reactor, "127.0.0.1", self.server.msg_port)
        fresh = TeamTalkSession(protocol, timeout=10.0)
        self.sessions.append(fresh)
        assert (await fresh.login("carol", "n3w")).result_code == B.REFUSE_REASON_NONE

    async def test_rename_and_department_change_reach_the_next_incremental_sync(self):
        """A client that synced the directory gets the renamed user, in the new
        department, and the renamed department, at its next incremental sync."""
        sales = await self.call("POST", "/departments", 201, json={"name": "Sales"})
        support = await self.call("POST", "/departments", 201, json={"name": "Support"})
        dave = await self.user("dave", nick="Dave", department_id=sales["id"])
        erin = await self.user("erin")
        session = await self.login("erin")
        users = await session.get(
            B.CID_BUDDY_LIST_ALL_USER_REQUEST,
            Buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=0),
        )
        departments = await session.get(
            B.CID_BUDDY_LIST_DEPARTMENT_REQUEST,
            Buddy_pb2.IMDepartmentReq(user_id=0, latest_update_time=0),
        )
        assert {u.user_id for u in users.user_list} == {dave["id"], erin["id"]}
        await sleep(1.1)  # department watermarks are exclusive, to the second
        changes = {"nick": "David", "department_id": support["id"]}
        await self.call("PATCH", f"/users/{dave['id']}", 200, json=changes)
        await self.call("PATCH", f"/departments/{support['id']}", 200,
                        json={"name": "Customer support"})  # fmt: skip
        users = await session.get(
            B.CID_BUDDY_LIST_ALL_USER_REQUEST,
            Buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=users.latest_update_time),
        )
        renamed = [u for u in users.user_list if u.user_id == dave["id"]]
        assert [(u.user_nick_name, u.department_id) for u in renamed] == [("David", support["id"])]
        departments = await session.get(
            B.CID_BUDDY_LIST_DEPARTMENT_REQUEST,
            Buddy_pb2.IMDepartmentReq(user_id=0, latest_update_time=departments.latest_update_time),
        )
        assert [(d.dept_id, d.dept_name) for d in departments.dept_list] == [
            (support["id"], "Customer support")
        ]
        listed = {d["id"]: d["member_count"]
                  for d in (await self.call("GET", "/departments", 200))["items"]}  # fmt: skip
        assert (listed[sales["id"]], listed[support["id"]]) == (0, 1)

    async def test_group_changes_notify_the_members(self):
        """Creating a fixed group, adding and removing a member and dissolving it each
        reach the connected members as CID_GROUP_CHANGE_MEMBER_NOTIFY; the group is in
        their fixed-group list."""
        ids = {name: (await self.user(name))["id"] for name in ("gina", "hank", "ivy")}
        gina, hank, ivy = [await self.login(n) for n in ("gina", "hank", "ivy")]
        group = await self.call("POST", "/groups", 201, json={
            "name": "Ops", "member_ids": [ids["gina"], ids["hank"]], "creator_id": ids["gina"],
        })  # fmt: skip
        assert group["type"] == "fixed" and group["member_count"] == 2
        assert {m["name"] for m in group["members"]} == {"gina", "hank"}
        for session in (gina, hank):
            notify = await next_pdu(session.protocol, B.CID_GROUP_CHANGE_MEMBER_NOTIFY, 5)
            assert notify.message.group_id == group["id"]
            assert notify.message.change_type == B.GROUP_MODIFY_TYPE_ADD
            assert sorted(notify.message.cur_user_id_list) == sorted([ids["gina"], ids["hank"]])
        await assert_nothing(ivy.protocol, B.CID_GROUP_CHANGE_MEMBER_NOTIFY)
        fixed = await gina.get(B.CID_GROUP_NORMAL_LIST_REQUEST,
                               Group_pb2.IMNormalGroupListReq(user_id=0))  # fmt: skip
        assert [g.group_id for g in fixed.group_version_list] == [group["id"]]

        added = await self.call("POST", f"/groups/{group['id']}/members", 200,
                                json={"user_ids": [ids["ivy"]]})  # fmt: skip
        assert added["member_count"] == 3
        for session in (gina, hank, ivy):
            notify = await next_pdu(session.protocol, B.CID_GROUP_CHANGE_MEMBER_NOTIFY, 5)
            assert list(notify.message.chg_user_id_list) == [ids["ivy"]]
        await self.call("POST", f"/groups/{group['id']}/members", 409,
                        json={"user_ids": [ids["ivy"]]})  # fmt: skip

        await self.call("DELETE", f"/groups/{group['id']}/members/{ids['hank']}", 204)
        for session in (gina, hank, ivy):
            notify = await next_pdu(session.protocol, B.CID_GROUP_CHANGE_MEMBER_NOTIFY, 5)
            assert notify.message.change_type == B.GROUP_MODIFY_TYPE_DEL
            assert list(notify.message.chg_user_id_list) == [ids["hank"]]

        await self.call("DELETE", f"/groups/{group['id']}", 204)
        for session in (gina, ivy):
            notify = await next_pdu(session.protocol, B.CID_GROUP_CHANGE_MEMBER_NOTIFY, 5)
            assert notify.message.change_type == B.GROUP_MODIFY_TYPE_DEL
            assert list(notify.message.cur_user_id_list) == []
        await self.call("GET", f"/groups/{group['id']}", 404)
        listed = (await self.call("GET", "/groups", 200))["items"]
        assert group["id"] not in [g["id"] for g in listed]

    async def test_a_deleted_user_leaves_their_groups_and_is_kicked(self):
        """DELETE: the user's session ends, their groups' members are told they left,
        they stay in the directory as disabled and cannot log in."""
        leo = await self.user("leo")
        mia = await self.user("mia")
        pair = {"name": "Pair", "member_ids": [leo["id"], mia["id"]]}
        group = await self.call("POST", "/groups", 201, json=pair)
        leo_pc, mia_pc = await self.login("leo"), await self.login("mia")
        await self.call("DELETE", f"/users/{leo['id']}", 204)
        await next_pdu(leo_pc.protocol, B.CID_LOGIN_KICK_USER, timeout=5)
        notify = await next_pdu(mia_pc.protocol, B.CID_GROUP_CHANGE_MEMBER_NOTIFY, timeout=5)
        assert notify.message.change_type == B.GROUP_MODIFY_TYPE_DEL
        assert list(notify.message.chg_user_id_list) == [leo["id"]]
        members = (await self.call("GET", f"/groups/{group['id']}", 200))["members"]
        assert [m["id"] for m in members] == [mia["id"]]
        gone = await self.call("GET", f"/users/{leo['id']}", 200)
        assert gone["status"] == "disabled"
        protocol = await connect(reactor, "127.0.0.1", self.server.msg_port)
        refused = TeamTalkSession(protocol, timeout=10.0)
        self.sessions.append(refused)
        assert (await refused.login("leo", PASSWORD)).result_code != B.REFUSE_REASON_NONE

    async def test_stats_and_nodes_show_what_runs(self):
        """Stats count users, online connections by client type and today's messages;
        nodes list this process's services with their version and the msg load."""
        await self.user("jack")
        kate = await self.user("kate")
        jack_pc = await self.login("jack")
        await self.login("kate", B.CLIENT_TYPE_IOS)
        ack = await jack_pc.send_message(kate["id"], B.MSG_TYPE_SINGLE_TEXT, b"hello")
        assert ack.msg_id > 0
        stats = await self.call("GET", "/stats", 200)
        assert stats["users"] == 2 and stats["messages_today"] == 1
        assert stats["messages_last_minute"] == 1
        assert stats["online"] == {
            "users": 2, "connections": 2, "by_client_type": {"windows": 1, "ios": 1},
        }  # fmt: skip
        nodes = (await self.call("GET", "/nodes", 200))["items"]
        by_service = {n["service"]: n for n in nodes if n["local"]}
        assert set(by_service) >= {"msg", "route", "file", "login", "media", "disk", "admin"}
        assert by_service["msg"]["load"]["connections"] == 2
        assert by_service["msg"]["state"] == "up" and by_service["msg"]["version"]

    async def test_search_paging_and_department_rules(self):
        """Search finds a part of the name, nick or email in any case, LIKE's wildcards
        are plain characters; pages follow the id order; a department with users or
        sub-departments is not deleted (409), an empty one is, and leaves the list."""
        parent = await self.call("POST", "/departments", 201, json={"name": "R&D"})
        child = await self.call("POST", "/departments", 201,
                                json={"name": "Labs", "parent_id": parent["id"]})  # fmt: skip
        await self.call("PATCH", f"/departments/{parent['id']}", 400,
                        json={"parent_id": child["id"]})  # fmt: skip
        names = ["lee_a", "leeXa", "Lee%b", "other"]
        made = [await self.user(n, nick=n.upper(), email=f"{n}@example.com",
                                department_id=child["id"]) for n in names]  # fmt: skip
        found = await self.call("GET", "/users", 200, params={"q": "LEE"})
        assert [u["name"] for u in found["items"]] == names[:3]
        found = await self.call("GET", "/users", 200, params={"q": "lee_"})
        assert [u["name"] for u in found["items"]] == ["lee_a"]
        found = await self.call("GET", "/users", 200, params={"q": "%"})
        assert [u["name"] for u in found["items"]] == ["Lee%b"]
        page = await self.call("GET", "/users", 200, params={"limit": 2, "offset": 1})
        assert page["total"] == 4
        assert [u["id"] for u in page["items"]] == [u["id"] for u in made[1:3]]
        await self.call("DELETE", f"/departments/{parent['id']}", 409)
        await self.call("DELETE", f"/departments/{child['id']}", 409)
        for user in made:
            await self.call("PATCH", f"/users/{user['id']}", 200, json={"department_id": 0})
        await self.call("DELETE", f"/departments/{child['id']}", 204)
        await self.call("DELETE", f"/departments/{parent['id']}", 204)
        await self.call("GET", f"/departments/{parent['id']}", 404)
        assert (await self.call("GET", "/departments", 200))["items"] == []
        await self.call("POST", "/departments", 201, json={"name": "R&D"})  # the name is free


class AdminLiveMariaDbTests(AdminLiveTests):
    """The same on MariaDB."""

    def database(self) -> str | None:
        try:
            scratch = ScratchDatabase(mysql_server(), prefix="tt_admin")
        except Unreachable as e:
            server_unreachable(f"MariaDB: {e}")
        self.addCleanup(scratch.drop)
        return scratch.url
