"""The admin API's HTTP handlers: decode the request, make one call on the directory
(``directory.py``), encode the answer. The route table is ``routes.py``; the contract is
the OpenAPI document (``openapi.py``); the web console uses nothing else.

Every handler but sign-in runs inside :func:`admin_call`, which authenticates the caller
(``auth.py``), turns the directory's refusals into status codes, and writes one audit
line per call naming the admin, the method, the path and the status.
Errors are ``{"error": "..."}``; collections are ``{"items": [...]}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.logger import Logger

from teamtalk_py.admin_api.auth import COOKIE, Admin
from teamtalk_py.admin_api.context import AdminContext
from teamtalk_py.admin_api.directory import (
    PROFILE_TYPES,
    STATUS_NAMES,
    AdminError,
    Conflict,
    GroupView,
    Invalid,
    NotFound,
    Unprocessable,
)
from teamtalk_py.media.http import (
    HttpError,
    MediaRequest,
    json_object,
    query,
    query_number,
    send_body,
    send_json,
)
from teamtalk_py.store import accounts
from teamtalk_py.store import groups as group_store

log = Logger(namespace="teamtalk.admin.audit")

MAX_LIMIT = 200
MAX_OFFSET = 2**31 - 1
MAX_ID = 2**53 - 1
#: How each refusal of the directory is answered.
STATUS = {Invalid: 400, NotFound: 404, Conflict: 409, Unprocessable: 422}

Handler = Callable[..., Awaitable[None]]


def admin_call(fn: Handler) -> Handler:
    """``fn(context, request, admin, **params)`` behind authentication, with the
    directory's refusals answered by status and every call audited."""

    async def handler(context: AdminContext, request: MediaRequest, **params: str) -> None:
        try:
            admin = await context.auth.caller(request)
        except HttpError as e:
            log.info(
                "admin call refused: {method} {path} -> {status} ({reason}) from {address}",
                method=request.method.decode("latin-1"),
                path=request.target.decode("latin-1", "replace"),
                status=e.status,
                reason=e.message,
                address=request.client_ip(),
            )
            raise
        status = 500
        try:
            await fn(context, request, admin, **params)
            status = request.code
        except AdminError as e:
            status = STATUS.get(type(e), 400)
            raise HttpError(status, str(e)) from None
        except HttpError as e:
            status = e.status
            raise
        finally:
            log.info(
                "admin {admin} {method} {path} -> {status} from {address}",
                admin=admin.name,
                method=request.method.decode("latin-1"),
                path=request.target.decode("latin-1", "replace"),
                status=status,
                address=request.client_ip(),
            )

    handler.__doc__ = fn.__doc__
    return handler


# -- request parts --------------------------------------------------------------------


def identifier(text: str, what: str = "id") -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise HttpError(404, f"no such {what}")
    return int(text)


def whole_number(value: Any) -> int | None:
    """A JSON number without a fraction as an int (``7.0`` is the integer 7 in JSON
    Schema); None for anything else, booleans included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _typed(body: dict[str, Any], key: str, kind: type, required: bool = False) -> Any:
    if key not in body:
        if required:
            raise HttpError(400, f"{key} is required")
        return None
    value = body[key]
    if kind is int:
        value = whole_number(value)
        if value is None:
            raise HttpError(400, f"{key} must be a whole number")
        if not 0 <= value <= MAX_ID:
            raise HttpError(400, f"{key} is out of range")
    elif not isinstance(value, kind):
        raise HttpError(400, f"{key} must be a {kind.__name__}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise HttpError(400, f"{key} is not valid Unicode text") from None
    if key == "sex" and value not in (0, 1, 2):
        raise HttpError(400, "sex must be 0, 1 or 2")
    return value


def _ids(body: dict[str, Any], key: str) -> list[int]:
    value = body.get(key, [])
    ids = [whole_number(i) for i in value] if isinstance(value, list) else [None]
    if not all(i is not None and 0 < i <= MAX_ID for i in ids):
        raise HttpError(400, f"{key} must be a list of user ids")
    return [i for i in ids if i is not None]


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise HttpError(400, f"unknown fields: {', '.join(sorted(unknown))}")


# -- answers --------------------------------------------------------------------------


def user_json(user: accounts.UserRow, admin: bool) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "nick": user.nick,
        "sex": user.sex,
        "domain": user.domain,
        "phone": user.phone,
        "email": user.email,
        "avatar": user.avatar,
        "sign_info": user.sign_info,
        "department_id": user.department_id,
        "status": STATUS_NAMES.get(user.status, "disabled"),
        "disabled": not user.can_log_in,
        "admin": admin,
        "created": user.created,
        "updated": user.updated,
    }


def department_json(row: accounts.DepartmentRow, members: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "parent_id": row.parent_id,
        "priority": row.priority,
        "member_count": members,
        "created": row.created,
        "updated": row.updated,
    }


GROUP_TYPES: dict[int, str] = {
    group_store.GROUP_NORMAL: "fixed",
    group_store.GROUP_TMP: "temporary",
}


def group_json(view: GroupView) -> dict[str, Any]:
    group = view.group
    answer: dict[str, Any] = {
        "id": group.id,
        "name": group.name,
        "avatar": group.avatar,
        "type": GROUP_TYPES.get(group.type, "temporary"),
        "creator_id": group.creator,
        "member_count": view.member_count,
        "version": group.version,
        "created": group.created,
        "updated": group.updated,
    }
    if view.members is not None:
        answer["members"] = [{"id": u.id, "name": u.name, "nick": u.nick} for u in view.members]
    return answer


def no_content(request: MediaRequest) -> None:
    send_body(request, 204, b"", None)


# -- console sign-in ------------------------------------------------------------------


def session_json(admin: Admin) -> dict[str, Any]:
    return {
        "user": {"id": admin.user_id, "name": admin.name},
        "csrf_token": admin.csrf_token,
        "expires_at": admin.expires_at,
    }


def _cookie(request: MediaRequest, value: str, max_age: int) -> None:
    """The session cookie: script cannot read it, other sites' pages never send it."""
    secure = "; Secure" if request.isSecure() else ""
    request.setHeader(
        b"Set-Cookie",
        f"{COOKIE.decode()}={value}; Path=/admin/; Max-Age={max_age}; HttpOnly; "
        f"SameSite=Strict{secure}".encode(),
    )


async def sign_in(context: AdminContext, request: MediaRequest) -> None:
    """``POST /admin/api/v1/session`` ``{"name", "password"}`` (the plain password):
    a console session for a user with the admin flag.

    The only unsafe call without a CSRF token (there is no session yet), so its body must
    be declared JSON: a page of another site cannot send that without a CORS preflight,
    which this server never grants, and so cannot sign a browser in to an account of
    its choosing."""
    content_type = (request.header(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        raise HttpError(415, "send the body as Content-Type: application/json")
    body = json_object(request)
    name = _typed(body, "name", str, required=True)
    password = _typed(body, "password", str, required=True)
    if not name or not password:
        raise HttpError(400, "name and password must not be empty")
    try:
        session, admin = await context.auth.sign_in(name, password, request.client_ip())
    except HttpError as e:
        log.info("admin sign-in as {name!r} refused ({status})", name=name, status=e.status)
        raise
    log.info("admin {admin} signed in from {address}", admin=admin.name,
             address=request.client_ip())  # fmt: skip
    _cookie(request, session, context.session_ttl)
    send_json(request, 200, session_json(admin), {b"Cache-Control": b"no-store"})


@admin_call
async def current_session(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``GET /admin/api/v1/session``: who is signed in, and the CSRF token."""
    if not admin.user_id:
        raise HttpError(404, "a bearer token has no console session")
    send_json(request, 200, session_json(admin), {b"Cache-Control": b"no-store"})


@admin_call
async def sign_out(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``DELETE /admin/api/v1/session``."""
    cookie = request.getCookie(COOKIE)
    if cookie:
        await context.auth.sign_out(cookie.decode("latin-1"))
    _cookie(request, "", 0)
    no_content(request)


# -- users ----------------------------------------------------------------------------

STATUS_FILTER = {"active": accounts.USER_STATUS_NORMAL, "disabled": accounts.USER_STATUS_LEFT}


@admin_call
async def list_users(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``GET /admin/api/v1/users?q=&department_id=&status=&offset=&limit=``."""
    params = query(request)
    search = params.get("q", "")
    if len(search) > 64:
        raise HttpError(400, "q is at most 64 characters")
    department = (
        query_number(params, "department_id", 0, 0, MAX_ID) if "department_id" in params else None
    )
    status_name = params.get("status")
    if status_name is not None and status_name not in STATUS_FILTER:
        raise HttpError(400, "status must be active or disabled")
    status = STATUS_FILTER.get(status_name) if status_name else None
    offset = query_number(params, "offset", 0, 0, MAX_OFFSET)
    limit = query_number(params, "limit", 50, 1, MAX_LIMIT)
    page = await context.directory.users(search, department, status, offset, limit)
    items = [user_json(u, u.id in page.admins) for u in page.users]
    send_json(request, 200, {"items": items, "total": page.total, "offset": offset,
                             "limit": limit})  # fmt: skip


USER_FIELDS = set(PROFILE_TYPES) | {"password", "disabled", "admin"}


@admin_call
async def create_user(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``POST /admin/api/v1/users`` ``{"name", "password", "nick", "department_id", ...}``:
    201 with the new user."""
    body = json_object(request)
    _only(body, USER_FIELDS - {"disabled"})
    name = _typed(body, "name", str, required=True)
    password = _typed(body, "password", str, required=True)
    profile = {k: _typed(body, k, t) for k, t in PROFILE_TYPES.items() if k in body}
    profile.pop("name", None)
    if "avatar" in profile:
        raise HttpError(400, "avatar is set with PATCH once the user exists")
    is_admin = bool(_typed(body, "admin", bool))
    user = await context.directory.create_user(name, password, admin=is_admin, **profile)
    location = f"/admin/api/v1/users/{user.id}".encode()
    send_json(request, 201, user_json(user, is_admin), {b"Location": location})


@admin_call
async def get_user(
    context: AdminContext, request: MediaRequest, admin: Admin, user_id: str
) -> None:
    """``GET /admin/api/v1/users/{id}``."""
    user, is_admin = await context.directory.user(identifier(user_id, "user"))
    send_json(request, 200, user_json(user, is_admin))


@admin_call
async def update_user(
    context: AdminContext, request: MediaRequest, admin: Admin, user_id: str
) -> None:
    """``PATCH /admin/api/v1/users/{id}``: profile fields, ``password``, ``disabled``
    (a disabled user's sessions end), ``admin``; 200 with the user."""
    uid = identifier(user_id, "user")
    body = json_object(request)
    _only(body, USER_FIELDS)
    changes: dict[str, Any] = {k: _typed(body, k, t) for k, t in PROFILE_TYPES.items() if k in body}
    if "password" in body:
        changes["password"] = _typed(body, "password", str)
    for flag in ("disabled", "admin"):
        if flag in body:
            changes[flag] = _typed(body, flag, bool)
    if not changes:
        raise HttpError(400, "nothing to change")
    await context.directory.update_user(uid, changes)
    user, is_admin = await context.directory.user(uid)
    send_json(request, 200, user_json(user, is_admin))


@admin_call
async def delete_user(
    context: AdminContext, request: MediaRequest, admin: Admin, user_id: str
) -> None:
    """``DELETE /admin/api/v1/users/{id}``: TeamTalk's delete (the user left)."""
    await context.directory.delete_user(identifier(user_id, "user"))
    no_content(request)


@admin_call
async def kick_user(
    context: AdminContext, request: MediaRequest, admin: Admin, user_id: str
) -> None:
    """``POST /admin/api/v1/users/{id}/kick``: end every session of the user."""
    await context.directory.kick_user(identifier(user_id, "user"))
    no_content(request)


# -- departments ----------------------------------------------------------------------


@admin_call
async def list_departments(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``GET /admin/api/v1/departments``."""
    rows = await context.directory.departments()
    send_json(request, 200, {"items": [department_json(r, n) for r, n in rows]})


DEPARTMENT_FIELDS = {"name": str, "parent_id": int, "priority": int}


def _department_changes(body: dict[str, Any]) -> dict[str, Any]:
    _only(body, set(DEPARTMENT_FIELDS))
    changes = {k: _typed(body, k, t) for k, t in DEPARTMENT_FIELDS.items() if k in body}
    if "priority" in changes and changes["priority"] > 2**31 - 1:
        raise HttpError(400, "priority is out of range")
    name = changes.get("name")
    if name is not None and not 0 < len(name) <= 64:
        raise HttpError(400, "name must be 1 to 64 characters")
    return changes


@admin_call
async def create_department(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``POST /admin/api/v1/departments`` ``{"name", "parent_id", "priority"}``: 201."""
    changes = _department_changes(json_object(request))
    if "name" not in changes:
        raise HttpError(400, "name is required")
    department_id = await context.directory.create_department(
        changes["name"], changes.get("parent_id", 0), changes.get("priority", 0)
    )
    row, members = await context.directory.department(department_id)
    location = f"/admin/api/v1/departments/{department_id}".encode()
    send_json(request, 201, department_json(row, members), {b"Location": location})


@admin_call
async def get_department(
    context: AdminContext, request: MediaRequest, admin: Admin, department_id: str
) -> None:
    """``GET /admin/api/v1/departments/{id}``."""
    row, members = await context.directory.department(identifier(department_id, "department"))
    send_json(request, 200, department_json(row, members))


@admin_call
async def update_department(
    context: AdminContext, request: MediaRequest, admin: Admin, department_id: str
) -> None:
    """``PATCH /admin/api/v1/departments/{id}``: clients see it at their next sync."""
    did = identifier(department_id, "department")
    changes = _department_changes(json_object(request))
    if not changes:
        raise HttpError(400, "nothing to change")
    await context.directory.update_department(did, changes)
    row, members = await context.directory.department(did)
    send_json(request, 200, department_json(row, members))


@admin_call
async def delete_department(
    context: AdminContext, request: MediaRequest, admin: Admin, department_id: str
) -> None:
    """``DELETE /admin/api/v1/departments/{id}``: only an empty one (409 otherwise)."""
    await context.directory.delete_department(identifier(department_id, "department"))
    no_content(request)


# -- groups ---------------------------------------------------------------------------


@admin_call
async def list_groups(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``GET /admin/api/v1/groups`` (the groups that are not dissolved)."""
    views = await context.directory.groups()
    send_json(request, 200, {"items": [group_json(v) for v in views]})


@admin_call
async def create_group(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``POST /admin/api/v1/groups`` ``{"name", "member_ids", "creator_id", "avatar"}``:
    a fixed group, 201; its members are told."""
    body = json_object(request)
    _only(body, {"name", "member_ids", "creator_id", "avatar"})
    name = _typed(body, "name", str, required=True)
    members = _ids(body, "member_ids")
    creator = _typed(body, "creator_id", int) or 0
    avatar = _typed(body, "avatar", str) or ""
    view = await context.directory.create_group(name, creator, members, avatar)
    location = f"/admin/api/v1/groups/{view.group.id}".encode()
    send_json(request, 201, group_json(view), {b"Location": location})


@admin_call
async def get_group(
    context: AdminContext, request: MediaRequest, admin: Admin, group_id: str
) -> None:
    """``GET /admin/api/v1/groups/{id}`` with its members."""
    view = await context.directory.group(identifier(group_id, "group"))
    send_json(request, 200, group_json(view))


@admin_call
async def add_members(
    context: AdminContext, request: MediaRequest, admin: Admin, group_id: str
) -> None:
    """``POST /admin/api/v1/groups/{id}/members`` ``{"user_ids": [...]}``: 200 with the
    group; 409 when all of them are members already."""
    gid = identifier(group_id, "group")
    body = json_object(request)
    _only(body, {"user_ids"})
    user_ids = _ids(body, "user_ids")
    if not user_ids:
        raise HttpError(400, "user_ids must name at least one user")
    await context.directory.change_members(gid, group_store.ADD, user_ids)
    send_json(request, 200, group_json(await context.directory.group(gid)))


@admin_call
async def remove_member(
    context: AdminContext, request: MediaRequest, admin: Admin, group_id: str, user_id: str
) -> None:
    """``DELETE /admin/api/v1/groups/{id}/members/{user_id}`` (the last one out
    dissolves the group)."""
    gid = identifier(group_id, "group")
    uid = identifier(user_id, "member")
    await context.directory.change_members(gid, group_store.DEL, [uid])
    no_content(request)


@admin_call
async def dissolve_group(
    context: AdminContext, request: MediaRequest, admin: Admin, group_id: str
) -> None:
    """``DELETE /admin/api/v1/groups/{id}``: every member removed and told."""
    await context.directory.dissolve_group(identifier(group_id, "group"))
    no_content(request)


# -- sessions, nodes, statistics ------------------------------------------------------


@admin_call
async def list_sessions(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``GET /admin/api/v1/sessions``: who is online, on which node."""
    send_json(request, 200, {"items": await context.directory.sessions()})


@admin_call
async def kick_session(
    context: AdminContext, request: MediaRequest, admin: Admin, session_id: str
) -> None:
    """``POST /admin/api/v1/sessions/{id}/kick``: end that one connection."""
    user, _, client_type = session_id.partition("-")
    context.directory.kick_session(identifier(user, "session"), identifier(client_type, "session"))
    no_content(request)


@admin_call
async def list_nodes(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``GET /admin/api/v1/nodes``."""
    send_json(request, 200, {"items": await context.directory.nodes()})


@admin_call
async def stats(context: AdminContext, request: MediaRequest, admin: Admin) -> None:
    """``GET /admin/api/v1/stats``."""
    totals = await context.directory.totals()
    send_json(
        request,
        200,
        {
            "time": int(context.clock.seconds()),
            "users": totals.users,
            "disabled_users": totals.disabled_users,
            "admins": totals.admins,
            "departments": totals.departments,
            "groups": totals.groups,
            "online": context.directory.online(),
            "messages_today": totals.messages_today,
            "messages_last_minute": totals.messages_last_minute,
            "stored_files": totals.stored_files,
            "stored_bytes": totals.stored_bytes,
        },
    )


async def no_such_call(context: AdminContext, request: MediaRequest, rest: str) -> None:
    raise HttpError(404, "no such API call")
