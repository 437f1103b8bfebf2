"""``AdminDirectory`` without HTTP, on SQLite and MariaDB, with a live side that records
what it is told: which changes end sessions, which group changes are announced, and the
refusals the HTTP layer turns into status codes."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

from teamtalk_py.admin_api.directory import (
    AdminDirectory,
    Conflict,
    Invalid,
    NotFound,
    Unprocessable,
)
from teamtalk_py.store import groups as group_store
from tests.store_support import MariaDBStoreCase, SQLiteStoreCase


class RecordingLive:
    """``directory.Live`` that remembers what it was told."""

    def __init__(self) -> None:
        self.sessions_ended = 0
        self.changes: list[group_store.MemberChange] = []
        self.online: list[dict[str, Any]] = []

    def sessions_changed(self) -> None:
        self.sessions_ended += 1

    def group_changed(self, change: group_store.MemberChange) -> None:
        self.changes.append(change)

    def sessions(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self.online]

    def kick(self, user_id: int, client_type: int) -> bool:
        return any(s["user_id"] == user_id for s in self.online)

    async def nodes(self) -> list[dict[str, Any]]:
        return []


async def refused(kind: type[Exception], awaitable: Any) -> str:
    try:
        await awaitable
    except kind as e:
        return str(e)
    raise AssertionError(f"not refused with {kind.__name__}")


class DirectoryTests:
    database: Any

    def directory(self) -> tuple[AdminDirectory, RecordingLive]:
        live = RecordingLive()
        return AdminDirectory(self.database, reactor, live), live

    async def test_only_changes_that_end_sessions_tell_the_live_side(self):
        """A profile change does not end sessions; a password, disabling, a kick and a
        delete each do, once."""
        directory, live = self.directory()
        user = await directory.create_user("nora", "pw", nick="Nora")
        await directory.update_user(user.id, {"nick": "Nora B."})
        assert live.sessions_ended == 0
        await directory.update_user(user.id, {"password": "new"})
        await directory.update_user(user.id, {"disabled": True})
        await directory.kick_user(user.id)
        await directory.delete_user(user.id)
        assert live.sessions_ended == 4
        row, is_admin = await directory.user(user.id)
        assert (row.nick, row.can_log_in, is_admin) == ("Nora B.", False, False)

    async def test_group_changes_are_announced_with_who_changed(self):
        """Creating a fixed group announces every member as added; adding, removing and
        dissolving announce who changed and who remains; deleting a user announces their
        departure from each of their groups."""
        directory, live = self.directory()
        ids = [(await directory.create_user(n, "pw")).id for n in ("olga", "pete", "quin")]
        view = await directory.create_group("Ops", ids[0], ids[:2])
        assert view.group.type == group_store.GROUP_NORMAL
        assert [u.id for u in view.members or []] == ids[:2]
        await directory.change_members(view.group.id, group_store.ADD, [ids[2]])
        await directory.delete_user(ids[1])
        await directory.dissolve_group(view.group.id)
        seen = [(c.change_type, c.changed, c.current) for c in live.changes]
        assert seen == [
            (group_store.ADD, tuple(ids[:2]), tuple(ids[:2])),
            (group_store.ADD, (ids[2],), tuple(ids)),
            (group_store.DEL, (ids[1],), (ids[0], ids[2])),
            (group_store.DEL, (ids[0], ids[2]), ()),
        ]
        assert live.changes[-1].dissolved
        await refused(NotFound, directory.group(view.group.id))

    async def test_refusals(self):
        """A taken name is a Conflict, a department or member that does not exist is
        Unprocessable, an empty name Invalid, an unknown id NotFound, nobody to add a
        Conflict, a department inside itself Invalid."""
        directory, _ = self.directory()
        await directory.create_user("rosa", "pw")
        await refused(Conflict, directory.create_user("rosa", "pw"))
        await refused(Unprocessable, directory.create_user("sam", "pw", department_id=999))
        await refused(Invalid, directory.create_user("  ", "pw"))
        await refused(NotFound, directory.update_user(999, {"nick": "x"}))
        top = await directory.create_department("Top")
        inner = await directory.create_department("Inner", top)
        await refused(Invalid, directory.update_department(top, {"parent_id": inner}))
        await refused(Conflict, directory.create_department("Top"))
        await refused(Conflict, directory.delete_department(top))
        rosa = (await directory.users("rosa")).users[0]
        view = await directory.create_group("G", rosa.id, [rosa.id])
        await refused(Conflict, directory.change_members(view.group.id, group_store.ADD, [rosa.id]))
        await refused(
            Unprocessable, directory.change_members(view.group.id, group_store.ADD, [999])
        )

    async def test_online_counts_come_from_the_live_side(self):
        """Online users, connections and connections by client type; a session of a user
        on another node gets its name from the store."""
        directory, live = self.directory()
        tina = await directory.create_user("tina", "pw")
        live.online = [
            {"user_id": tina.id, "user_name": None, "client_type": "windows"},
            {"user_id": tina.id, "user_name": "tina", "client_type": "ios"},
        ]
        assert directory.online() == {
            "users": 1, "connections": 2, "by_client_type": {"windows": 1, "ios": 1},
        }  # fmt: skip
        assert {s["user_name"] for s in await directory.sessions()} == {"tina"}
        await refused(NotFound, self._kick(directory, 999))

    async def _kick(self, directory: AdminDirectory, user_id: int) -> None:
        directory.kick_session(user_id, 1)


class SQLiteDirectoryTests(DirectoryTests, SQLiteStoreCase):
    pass


class MariaDBDirectoryTests(DirectoryTests, MariaDBStoreCase):
    pass
