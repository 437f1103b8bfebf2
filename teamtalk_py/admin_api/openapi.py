"""The OpenAPI 3 document of the admin API, served at ``GET /admin/api/v1/openapi.json``.

Every path of ``routes.py`` under ``/admin/api/v1/`` is described here (a test compares
the two), with the same limits the handlers enforce, so that ``schemathesis`` can check
the server against it (``tests/admin/test_admin_api.py``) and the web console can be written
from it. Built with the media API's helpers (``media/openapi.py``).
"""

from __future__ import annotations

from typing import Any

from teamtalk_py.admin_api.context import AdminContext
from teamtalk_py.media.http import MediaRequest, send_json
from teamtalk_py.media.openapi import ERROR, answer, error, json_content, openapi_document, ref
from teamtalk_py.media.openapi import operation as base_operation

MAX_ID = 2**53 - 1
#: Text that is not only white space.
NAME = "\\S"

UNAUTHORIZED = error("No valid admin token (`Authorization: Bearer`) or console session cookie.")
BAD_REQUEST = error("A parameter or field is missing or not acceptable.")
UNPROCESSABLE = error("The body names a department or user that does not exist (or left).")
NO_CONTENT = {"description": "Done."}


def operation(summary: str, responses: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    result = base_operation(summary, responses, unauthorized=UNAUTHORIZED, **kwargs)
    if kwargs.get("secured", True):
        result["responses"].setdefault(
            "403", error("A console session's change without its X-CSRF-Token header.")
        )
    return result


def body(schema: str) -> dict[str, Any]:
    return {"required": True, **json_content(ref(schema))}


def path_id(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The {what}'s id.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    }


def text(max_length: int, *, min_length: int = 0, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length}
    if min_length:
        schema["minLength"] = min_length
    if pattern:
        schema["pattern"] = pattern
    return schema


ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
REFERENCE = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
TIME = {"type": "integer", "description": "Unix seconds."}
IDS = {"type": "array", "items": ID, "maxItems": 500}
USER_ID = path_id("user_id", "user")
DEPARTMENT_ID = path_id("department_id", "department")
GROUP_ID = path_id("group_id", "group")

PROFILE: dict[str, Any] = {
    "nick": text(64),
    "sex": {"type": "integer", "enum": [0, 1, 2], "description": "0 unknown, 1 male, 2 female."},
    "domain": text(64),
    "phone": text(32),
    "email": text(128),
    "department_id": {**REFERENCE, "description": "0: no department."},
}


def items(schema: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": ref(schema)}},
    }


SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "SignIn": {
        "type": "object",
        "required": ["name", "password"],
        "additionalProperties": False,
        "properties": {
            "name": text(64, min_length=1),
            "password": {**text(1024, min_length=1), "description": "The plain password."},
        },
    },
    "ConsoleSession": {
        "type": "object",
        "required": ["user", "csrf_token", "expires_at"],
        "properties": {
            "user": {
                "type": "object",
                "required": ["id", "name"],
                "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
            },
            "csrf_token": {
                "type": "string",
                "description": "Send it as `X-CSRF-Token` with every call that changes "
                "something.",
            },
            "expires_at": TIME,
        },
    },
    "User": {
        "type": "object",
        "required": [
            "id", "name", "nick", "sex", "domain", "phone", "email", "avatar", "sign_info",
            "department_id", "status", "disabled", "admin", "created", "updated",
        ],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string", "description": "The login name."},
            "nick": {"type": "string"},
            "sex": {"type": "integer"},
            "domain": {"type": "string"},
            "phone": {"type": "string"},
            "email": {"type": "string"},
            "avatar": {"type": "string"},
            "sign_info": {"type": "string"},
            "department_id": {"type": "integer"},
            "status": {"type": "string", "enum": ["active", "disabled"]},
            "disabled": {"type": "boolean"},
            "admin": {"type": "boolean", "description": "May sign in to the console."},
            "created": TIME,
            "updated": TIME,
        },
    },
    "UserPage": {
        "type": "object",
        "required": ["items", "total", "offset", "limit"],
        "properties": {
            "items": {"type": "array", "items": ref("User")},
            "total": {"type": "integer", "minimum": 0},
            "offset": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1},
        },
    },
    "NewUser": {
        "type": "object",
        "required": ["name", "password"],
        "additionalProperties": False,
        "properties": {
            "name": text(64, min_length=1, pattern=NAME),
            "password": text(1024, min_length=1),
            **PROFILE,
            "admin": {"type": "boolean", "default": False},
        },
    },
    "UserChanges": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            "name": {**text(64, min_length=1, pattern=NAME), "description": "Renames the user."},
            **PROFILE,
            "avatar": text(512),
            "password": {
                **text(1024, min_length=1),
                "description": "A new password: the user's sessions end.",
            },
            "disabled": {
                "type": "boolean",
                "description": "true: the user cannot log in and their sessions end.",
            },
            "admin": {"type": "boolean"},
        },
    },
    "Department": {
        "type": "object",
        "required": ["id", "name", "parent_id", "priority", "member_count", "created", "updated"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "parent_id": {"type": "integer", "description": "0: a top-level department."},
            "priority": {"type": "integer"},
            "member_count": {"type": "integer", "minimum": 0},
            "created": TIME,
            "updated": TIME,
        },
    },
    "DepartmentList": items("Department"),
    "NewDepartment": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": text(64, min_length=1, pattern=NAME),
            "parent_id": REFERENCE,
            "priority": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        },
    },
    "DepartmentChanges": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            "name": text(64, min_length=1, pattern=NAME),
            "parent_id": REFERENCE,
            "priority": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        },
    },
    "Group": {
        "type": "object",
        "required": [
            "id", "name", "avatar", "type", "creator_id", "member_count", "version",
            "created", "updated",
        ],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "avatar": {"type": "string"},
            "type": {"type": "string", "enum": ["fixed", "temporary"]},
            "creator_id": {"type": "integer", "description": "0: created by an admin."},
            "member_count": {"type": "integer", "minimum": 0},
            "version": {"type": "integer"},
            "created": TIME,
            "updated": TIME,
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "name", "nick"],
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": ["string", "null"]},
                        "nick": {"type": ["string", "null"]},
                    },
                },
            },
        },
    },
    "GroupList": items("Group"),
    "NewGroup": {
        "type": "object",
        "required": ["name", "member_ids"],
        "additionalProperties": False,
        "properties": {
            "name": text(256, min_length=1, pattern=NAME),
            "member_ids": {**IDS, "minItems": 1},
            "creator_id": {**REFERENCE, "description": "A member shown as the creator (0: none)."},
            "avatar": text(512),
        },
    },
    "NewMembers": {
        "type": "object",
        "required": ["user_ids"],
        "additionalProperties": False,
        "properties": {"user_ids": {**IDS, "minItems": 1}},
    },
    "Session": {
        "type": "object",
        "required": [
            "id", "user_id", "user_name", "client_type", "client_type_id", "node", "since",
            "address",
        ],
        "properties": {
            "id": {"type": "string", "description": "USER_ID-CLIENT_TYPE_ID"},
            "user_id": {"type": "integer"},
            "user_name": {"type": ["string", "null"]},
            "client_type": {"type": "string", "description": "windows, mac, ios, android"},
            "client_type_id": {"type": "integer"},
            "node": {"type": "string"},
            "since": {**TIME, "type": ["integer", "null"]},
            "address": {"type": ["string", "null"]},
        },
    },
    "SessionList": items("Session"),
    "Node": {
        "type": "object",
        "required": ["service", "node", "local", "state", "version", "load", "links"],
        "properties": {
            "service": {
                "type": "string",
                "enum": ["msg", "route", "file", "login", "media", "disk", "admin"],
            },
            "node": {"type": "string", "description": "address:port"},
            "local": {"type": "boolean", "description": "Hosted by the answering process."},
            "state": {"type": "string", "enum": ["up", "degraded", "down"]},
            "version": {"type": ["string", "null"]},
            "load": {"type": "object"},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "NodeList": items("Node"),
    "Stats": {
        "type": "object",
        "required": [
            "time", "users", "disabled_users", "admins", "departments", "groups", "online",
            "messages_today", "messages_last_minute", "stored_files", "stored_bytes",
        ],
        "properties": {
            "time": TIME,
            "users": {"type": "integer", "minimum": 0},
            "disabled_users": {"type": "integer", "minimum": 0},
            "admins": {"type": "integer", "minimum": 0},
            "departments": {"type": "integer", "minimum": 0},
            "groups": {"type": "integer", "minimum": 0},
            "online": {
                "type": "object",
                "required": ["users", "connections", "by_client_type"],
                "properties": {
                    "users": {"type": "integer", "minimum": 0},
                    "connections": {"type": "integer", "minimum": 0},
                    "by_client_type": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                    },
                },
            },
            "messages_last_minute": {
                "type": "integer",
                "minimum": 0,
                "description": "1:1 and group messages stored in the last 60 seconds.",
            },
            "messages_today": {
                "type": "integer",
                "minimum": 0,
                "description": "1:1 and group messages stored since the server's midnight.",
            },
            "stored_files": {"type": "integer", "minimum": 0},
            "stored_bytes": {"type": "integer", "minimum": 0},
        },
    },
}  # fmt: skip

API = "/admin/api/v1"
NOT_FOUND = error("No such user, department, group or session.")

PATHS: dict[str, Any] = {
    f"{API}/session": {
        "post": operation(
            "Sign in to the console as a user with the admin flag: sets the session "
            "cookie (HttpOnly, SameSite=Strict) and answers the CSRF token.",
            {
                "200": answer("Signed in.", "ConsoleSession"),
                "400": BAD_REQUEST,
                "401": error("Wrong name or password, or not an admin."),
                "415": error("The body is not declared as application/json."),
                "429": error("Too many failed sign-ins: try again later."),
            },
            body=body("SignIn"),
            secured=False,
        ),
        "get": operation(
            "The signed-in admin and the session's CSRF token.",
            {
                "200": answer("The session.", "ConsoleSession"),
                "404": error("Called with a bearer token: there is no console session."),
            },
        ),
        "delete": operation("Sign out.", {"204": NO_CONTENT}),
    },
    f"{API}/users": {
        "get": operation(
            "Users, a page at a time, by id.",
            {"200": answer("A page of users.", "UserPage"), "400": BAD_REQUEST},
            parameters=[
                {
                    "name": "q",
                    "in": "query",
                    "description": "Part of the name, nick, phone or email (any case).",
                    "schema": text(64),
                },
                {"name": "department_id", "in": "query", "schema": REFERENCE},
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["active", "disabled"]},
                },
                {
                    "name": "offset",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1,
                               "default": 0},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
            ],
        ),
        "post": operation(
            "Create a user who can log in with TeamTalk clients at once.",
            {
                "201": answer("The new user.", "User"),
                "400": BAD_REQUEST,
                "409": error("The name is taken."),
                "422": UNPROCESSABLE,
            },
            body=body("NewUser"),
        ),
    },
    f"{API}/users/{{user_id}}": {
        "parameters": [USER_ID],
        "get": operation("One user.", {"200": answer("The user.", "User"), "404": NOT_FOUND}),
        "patch": operation(
            "Change a user: profile (clients see it at their next directory sync), "
            "password or disabled (the user's sessions end), admin flag.",
            {
                "200": answer("The user as changed.", "User"),
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "409": error("The new name is taken."),
                "422": UNPROCESSABLE,
            },
            body=body("UserChanges"),
        ),
        "delete": operation(
            "TeamTalk's delete: the user has left (cannot log in, leaves every group, "
            "history kept); their sessions end.",
            {"204": NO_CONTENT, "404": NOT_FOUND},
        ),
    },
    f"{API}/users/{{user_id}}/kick": {
        "parameters": [USER_ID],
        "post": operation(
            "End every session of the user (clients get CID_LOGIN_KICK_USER).",
            {"204": NO_CONTENT, "404": NOT_FOUND},
        ),
    },
    f"{API}/departments": {
        "get": operation(
            "Every department with its member count.",
            {"200": answer("The departments.", "DepartmentList")},
        ),
        "post": operation(
            "Create a department.",
            {
                "201": answer("The new department.", "Department"),
                "400": BAD_REQUEST,
                "409": error("The name is taken."),
                "422": UNPROCESSABLE,
            },
            body=body("NewDepartment"),
        ),
    },
    f"{API}/departments/{{department_id}}": {
        "parameters": [DEPARTMENT_ID],
        "get": operation(
            "One department.", {"200": answer("The department.", "Department"), "404": NOT_FOUND}
        ),
        "patch": operation(
            "Rename or move a department (clients see it at their next sync).",
            {
                "200": answer("The department as changed.", "Department"),
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "409": error("The new name is taken."),
                "422": UNPROCESSABLE,
            },
            body=body("DepartmentChanges"),
        ),
        "delete": operation(
            "Delete an empty department.",
            {
                "204": NO_CONTENT,
                "404": NOT_FOUND,
                "409": error("It still has users or departments."),
            },
        ),
    },
    f"{API}/groups": {
        "get": operation(
            "Every group that is not dissolved.", {"200": answer("The groups.", "GroupList")}
        ),
        "post": operation(
            "Create a fixed group; its members are notified.",
            {
                "201": answer("The new group with its members.", "Group"),
                "400": BAD_REQUEST,
                "422": UNPROCESSABLE,
            },
            body=body("NewGroup"),
        ),
    },
    f"{API}/groups/{{group_id}}": {
        "parameters": [GROUP_ID],
        "get": operation(
            "One group with its members.", {"200": answer("The group.", "Group"), "404": NOT_FOUND}
        ),
        "delete": operation(
            "Dissolve the group: every member is removed and notified.",
            {"204": NO_CONTENT, "404": NOT_FOUND},
        ),
    },
    f"{API}/groups/{{group_id}}/members": {
        "parameters": [GROUP_ID],
        "post": operation(
            "Add members; the group's members are notified.",
            {
                "200": answer("The group with its members.", "Group"),
                "400": BAD_REQUEST,
                "404": NOT_FOUND,
                "409": error("They are all members already."),
                "422": UNPROCESSABLE,
            },
            body=body("NewMembers"),
        ),
    },
    f"{API}/groups/{{group_id}}/members/{{user_id}}": {
        "parameters": [GROUP_ID, USER_ID],
        "delete": operation(
            "Remove a member (the last one out dissolves the group); members are notified.",
            {"204": NO_CONTENT, "404": NOT_FOUND, "409": error("Not a member.")},
        ),
    },
    f"{API}/sessions": {
        "get": operation(
            "Who is online, on which node. `since` and `address` are known for the "
            "answering node's own connections only.",
            {"200": answer("The sessions.", "SessionList")},
        ),
    },
    f"{API}/sessions/{{session_id}}/kick": {
        "parameters": [
            {
                "name": "session_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,15}-[0-9]{1,5}$"},
            }
        ],
        "post": operation(
            "End one session (the client gets CID_LOGIN_KICK_USER).",
            {"204": NO_CONTENT, "404": NOT_FOUND},
        ),
    },
    f"{API}/nodes": {
        "get": operation(
            "The services of this process and the msg nodes of the cluster.",
            {"200": answer("The nodes.", "NodeList")},
        ),
    },
    f"{API}/stats": {
        "get": operation("Counts for the dashboard.", {"200": answer("The counts.", "Stats")}),
    },
}  # fmt: skip


def document(server_url: str) -> dict[str, Any]:
    return openapi_document(
        "teamtalk_py admin API",
        "Users, departments, groups, online sessions, nodes and statistics of a "
        "teamtalk_py site. Authenticate with an admin token "
        "(`teamtalk-admin admin-token create NAME`) as `Authorization: Bearer TOKEN`, or "
        "sign in as an admin user (`POST /admin/api/v1/session`) and send the session "
        "cookie plus `X-CSRF-Token` on every change. Collections answer "
        '`{"items": [...]}`, errors `{"error": "..."}`.',
        server_url,
        PATHS,
        SCHEMAS,
        {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "tt_admin_session"},
        },
    )


async def serve(context: AdminContext, request: MediaRequest) -> None:
    """``GET /admin/api/v1/openapi.json`` (no credentials needed: it is the contract)."""
    address = request.getHost()
    host = f"[{address.host}]" if ":" in address.host else address.host
    scheme = "https" if request.isSecure() else "http"
    send_json(request, 200, document(f"{scheme}://{host}:{address.port}"))
