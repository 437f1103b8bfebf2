"""What an operator can do to the directory, without HTTP: users, departments, groups,
sessions, nodes and statistics.

``AdminDirectory`` works on the store through its ``read``/``write`` and tells the live
side (``Live``: the co-hosted msg service, and through it the route service) what must
reach connected clients at once:

* a renamed user or a changed department moves ``users.updated`` /
  ``departments.updated``, which is how TeamTalk clients learn of it (their next
  incremental directory sync asks for rows changed since their last one);
* a disabled, deleted or kicked user, or a new password, changes ``session_epoch``
  (``store/accounts.py``): every msg node ends those sessions, this one at once
  (``Live.sessions_changed``) and the others at their next ``account_check_interval``;
* a group change is announced to its members with ``CID_GROUP_CHANGE_MEMBER_NOTIFY``
  on this node and, through route, on every other.

The same repository functions serve ``teamtalk-admin``; refusals are the exceptions
below, which the HTTP layer turns into status codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from twisted.internet.threads import deferToThreadPool

from teamtalk_py.store import accounts
from teamtalk_py.store import admin as admin_store
from teamtalk_py.store import groups as group_store
from teamtalk_py.store.txn import DuplicateError

T = TypeVar("T")


class AdminError(Exception):
    """A request the directory refuses (the message says why)."""


class NotFound(AdminError):
    pass


class Conflict(AdminError):
    pass


class Invalid(AdminError):
    pass


class Unprocessable(AdminError):
    """The request names a department or user that does not exist (or left)."""


class Live(Protocol):
    """The running server as the admin API changes it (``live.py``)."""

    def sessions_changed(self) -> None:
        """Some users' sessions were ended in the store: end them here now."""

    def group_changed(self, change: group_store.MemberChange) -> None:
        """Announce a member change to the group's members on every node."""

    def sessions(self) -> list[dict[str, Any]]:
        """Every logged-in connection this node knows of, across the cluster."""

    def kick(self, user_id: int, client_type: int) -> bool:
        """End the user's connection of ``client_type`` wherever it is."""

    async def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes, their links, load and version."""


#: ``users.status`` as the API names it.
STATUS_NAMES = {accounts.USER_STATUS_NORMAL: "active", accounts.USER_STATUS_LEFT: "disabled"}
#: Profile fields a PATCH may set, with their JSON type.
PROFILE_TYPES: dict[str, type] = {
    "name": str,
    "nick": str,
    "sex": int,
    "domain": str,
    "phone": str,
    "email": str,
    "avatar": str,
    "department_id": int,
}


@dataclass(frozen=True)
class UserPage:
    total: int
    users: list[accounts.UserRow]
    admins: set[int]


@dataclass(frozen=True)
class GroupView:
    group: group_store.GroupRow
    member_count: int
    #: The members, by id (only for one group's view).
    members: list[accounts.UserRow] | None = None


class AdminDirectory:
    def __init__(self, store: Any, clock: Any, live: Live, kdf_pool: Any = None) -> None:
        """``clock``: the reactor (its time, and its threads for the password KDF)."""
        self.store = store
        self.clock = clock
        self.live = live
        #: Threads for the password KDF (never the reactor's); None: this thread (tests).
        self.kdf_pool = kdf_pool

    def now(self) -> int:
        return int(self.clock.seconds())

    async def _password_record(self, password: Any) -> accounts.PasswordRecord:
        if not isinstance(password, str) or not password:
            raise Invalid("password must be a non-empty string")
        if len(password) > 1024:
            raise Invalid("password is too long")
        if self.kdf_pool is None:
            return accounts.password_record(password)
        return await deferToThreadPool(
            self.clock, self.kdf_pool, accounts.password_record, password
        )

    async def _write(self, taken: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``store.write(fn, ...)`` with the store's refusals as the directory's: a name
        already in use (``taken`` says whose) is a Conflict, a value the store will not
        keep is Invalid."""
        try:
            return await self.store.write(fn, *args, **kwargs)
        except DuplicateError:
            raise Conflict(f"{taken} already exists") from None
        except (TypeError, ValueError) as e:
            raise Invalid(str(e)) from None

    # -- users ------------------------------------------------------------------------

    async def users(
        self,
        query: str = "",
        department_id: int | None = None,
        status: int | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> UserPage:
        total, rows = await self.store.read(
            admin_store.search_users, query, department_id, status, offset=offset, limit=limit
        )
        admins = await self.store.read(admin_store.admin_ids, [r.id for r in rows])
        return UserPage(total, rows, admins)

    async def user(self, user_id: int) -> tuple[accounts.UserRow, bool]:
        """The user and whether they are an admin; NotFound."""
        rows = await self.store.read(accounts.get_users_by_ids, [user_id])
        if not rows:
            raise NotFound(f"no user {user_id}")
        return rows[0], await self.store.read(admin_store.is_admin, user_id)

    async def _check_department(self, department_id: int) -> None:
        if department_id == 0:
            return
        row = await self.store.read(admin_store.get_department, department_id)
        if row is None or row.status != 0:
            raise Unprocessable(f"no department {department_id}")

    async def create_user(
        self,
        name: str,
        password: str,
        *,
        nick: str = "",
        department_id: int = 0,
        admin: bool = False,
        **profile: Any,
    ) -> accounts.UserRow:
        if not name or not name.strip():
            raise Invalid("a user needs a name")
        await self._check_department(department_id)
        record = await self._password_record(password)

        def create(txn: Any) -> int:
            user_id = accounts.add_user(
                txn, name, "", nick=nick or name, department_id=department_id,
                now=self.now(), record=record, **profile,
            )  # fmt: skip
            if admin:
                admin_store.set_admin(txn, user_id, True)
            return user_id

        user_id = await self._write(f"a user named {name!r}", create)
        return (await self.user(user_id))[0]

    async def update_user(self, user_id: int, changes: dict[str, Any]) -> None:
        """Apply a PATCH: profile fields, ``password``, ``disabled``, ``admin``."""
        await self.user(user_id)
        profile = {k: v for k, v in changes.items() if k in PROFILE_TYPES}
        if "name" in profile and not profile["name"].strip():
            raise Invalid("a user needs a name")
        if "department_id" in profile:
            await self._check_department(profile["department_id"])
        record = None
        if "password" in changes:
            record = await self._password_record(changes["password"])
        disabled = changes.get("disabled")
        admin = changes.get("admin")
        now = self.now()

        def update(txn: Any) -> bool:
            ended = False
            if profile:
                accounts.update_user_profile(txn, user_id, now=now, **profile)
            if record is not None:
                accounts.set_password(txn, user_id, "", now=now, record=record)
                admin_store.end_admin_sessions_of(txn, user_id)
                ended = True
            if disabled is not None:
                status = accounts.USER_STATUS_LEFT if disabled else accounts.USER_STATUS_NORMAL
                accounts.set_user_status(txn, user_id, status, now=now)
                if disabled:
                    admin_store.end_admin_sessions_of(txn, user_id)
                ended = True
            if admin is not None:
                admin_store.set_admin(txn, user_id, bool(admin))
            return ended

        ended = await self._write(f"a user named {profile.get('name')!r}", update)
        if ended:
            self.live.sessions_changed()

    async def delete_user(self, user_id: int) -> None:
        """TeamTalk's delete: the user has left (cannot log in, hidden from clients'
        directory, history kept, out of every group); their sessions end."""
        await self.user(user_id)
        now = self.now()

        def delete(txn: Any) -> list[group_store.MemberChange]:
            accounts.set_user_status(txn, user_id, accounts.USER_STATUS_LEFT, now=now)
            admin_store.set_admin(txn, user_id, False)
            changes = []
            for group_id, _ in group_store.normal_groups(txn, user_id):
                changes.append(
                    group_store.change_members(
                        txn, group_id, 0, group_store.DEL, [user_id], now=now
                    )
                )
            return changes

        changes = await self.store.write(delete)
        self.live.sessions_changed()
        for change in changes:
            self.live.group_changed(change)

    async def kick_user(self, user_id: int) -> None:
        """End the user's sessions on every node (they may log in again)."""
        await self.user(user_id)
        await self.store.write(accounts.end_sessions, user_id, now=self.now())
        self.live.sessions_changed()

    # -- departments -------------------------------------------------------------------

    async def departments(self) -> list[tuple[accounts.DepartmentRow, int]]:
        rows = await self.store.read(accounts.list_departments)
        counts = await self.store.read(admin_store.department_member_counts)
        return [(row, counts.get(row.id, 0)) for row in rows if row.status == 0]

    async def department(self, department_id: int) -> tuple[accounts.DepartmentRow, int]:
        row = await self.store.read(admin_store.get_department, department_id)
        if row is None or row.status != 0:
            raise NotFound(f"no department {department_id}")
        counts = await self.store.read(admin_store.department_member_counts)
        return row, counts.get(row.id, 0)

    async def create_department(self, name: str, parent_id: int = 0, priority: int = 0) -> int:
        if not name or not name.strip():
            raise Invalid("a department needs a name")
        await self._check_department(parent_id)
        return await self._write(
            f"a department named {name!r}",
            accounts.add_department, name, parent_id, priority, now=self.now(),
        )  # fmt: skip

    async def update_department(self, department_id: int, changes: dict[str, Any]) -> None:
        await self.department(department_id)
        if "parent_id" in changes:
            parent = changes["parent_id"]
            if parent == department_id or parent in await self._descendants(department_id):
                raise Invalid("a department cannot be inside itself")
            await self._check_department(parent)
        if "name" in changes and not str(changes["name"]).strip():
            raise Invalid("a department needs a name")
        await self._write(
            f"a department named {changes.get('name')!r}",
            admin_store.update_department, department_id, now=self.now(), **changes,
        )  # fmt: skip

    async def _descendants(self, department_id: int) -> set[int]:
        rows = await self.store.read(accounts.list_departments)
        children: dict[int, list[int]] = {}
        for row in rows:
            children.setdefault(row.parent_id, []).append(row.id)
        found: set[int] = set()
        todo = [department_id]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    async def delete_department(self, department_id: int) -> None:
        why = await self.store.write(admin_store.delete_department, department_id, now=self.now())
        if why == "missing":
            raise NotFound(f"no department {department_id}")
        if why is not None:
            raise Conflict(f"department {department_id} {why}: move them first")

    # -- groups ------------------------------------------------------------------------

    async def groups(self, include_dissolved: bool = False) -> list[GroupView]:
        rows = await self.store.read(group_store.list_groups)
        return [
            GroupView(group, count)
            for group, count in rows
            if include_dissolved or group.status == group_store.GROUP_ACTIVE
        ]

    async def group(self, group_id: int) -> GroupView:
        group = await self.store.read(group_store.get_group, group_id)
        if group is None or group.status != group_store.GROUP_ACTIVE:
            raise NotFound(f"no group {group_id}")
        ids = [m.user_id for m in await self.store.read(group_store.list_members, group_id)]
        users = await self.store.read(accounts.get_users_by_ids, ids)
        return GroupView(group, len(ids), users)

    async def create_group(
        self, name: str, creator_id: int, member_ids: Iterable[int], avatar: str = ""
    ) -> GroupView:
        """A fixed group (clients create only temporary ones); its members are told."""
        members = sorted({int(i) for i in member_ids} | ({creator_id} if creator_id else set()))
        await self._check_users(members)
        try:
            group, joined = await self.store.write(
                group_store.create_group, name, creator_id, members, group_store.GROUP_NORMAL,
                avatar, now=self.now(),
            )  # fmt: skip
        except (TypeError, ValueError) as e:
            raise Invalid(str(e)) from None
        self.live.group_changed(
            group_store.MemberChange(
                group.id, group_store.ADD, joined, joined, group.version, group.creator, False
            )
        )
        return await self.group(group.id)

    async def _check_users(self, user_ids: list[int]) -> None:
        known = await self.store.read(accounts.get_users_by_ids, user_ids)
        missing = set(user_ids) - {u.id for u in known if u.can_log_in}
        if missing:
            raise Unprocessable(f"no active users {sorted(missing)}")

    async def change_members(self, group_id: int, change_type: int, user_ids: list[int]) -> None:
        await self.group(group_id)
        if change_type == group_store.ADD:
            await self._check_users(user_ids)
        try:
            change = await self.store.write(
                group_store.change_members, group_id, 0, change_type, user_ids, now=self.now()
            )
        except group_store.NothingToChange as e:
            raise Conflict(str(e)) from None
        except group_store.NoSuchGroup as e:
            raise NotFound(str(e)) from None
        except (group_store.GroupError, ValueError) as e:
            raise Invalid(str(e)) from None
        self.live.group_changed(change)

    async def dissolve_group(self, group_id: int) -> None:
        """Remove every member (the group is dissolved once empty); they are told."""
        view = await self.group(group_id)
        await self.change_members(group_id, group_store.DEL, [u.id for u in view.members or []])

    # -- sessions, nodes, statistics ---------------------------------------------------

    async def sessions(self) -> list[dict[str, Any]]:
        """Every session this node knows of, with the user names the live side did not
        have (other nodes' sessions)."""
        sessions = self.live.sessions()
        missing = [s["user_id"] for s in sessions if s["user_name"] is None]
        if missing:
            users = await self.store.read(accounts.get_users_by_ids, missing)
            names = {u.id: u.name for u in users}
            for session in sessions:
                if session["user_name"] is None:
                    session["user_name"] = names.get(session["user_id"])
        return sessions

    def online(self) -> dict[str, Any]:
        """Who is online now: users, connections, connections by client type."""
        sessions = self.live.sessions()
        by_type: dict[str, int] = {}
        for session in sessions:
            by_type[session["client_type"]] = by_type.get(session["client_type"], 0) + 1
        return {
            "users": len({s["user_id"] for s in sessions}),
            "connections": len(sessions),
            "by_client_type": by_type,
        }

    def kick_session(self, user_id: int, client_type: int) -> None:
        if not self.live.kick(user_id, client_type):
            raise NotFound(f"no session of user {user_id} with client type {client_type}")

    async def nodes(self) -> list[dict[str, Any]]:
        return await self.live.nodes()

    async def totals(self) -> admin_store.Totals:
        """Store counts; "today" starts at local midnight of the server."""
        now = self.now()
        local = time.localtime(now)
        day_start = now - (local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec)
        return await self.store.read(admin_store.totals, day_start, now - 60)
