"""The admin listener's route table: every path it answers, and who handles it.

Matched top to bottom (``media/http.py``'s ``RouteTable``, the same as the media and disk
services). Everything under ``/admin/api/`` is JSON; ``/admin/`` is the web console.
"""

from __future__ import annotations

from teamtalk_py.admin_api import handlers as h
from teamtalk_py.admin_api import openapi, pages
from teamtalk_py.media.http import RouteTable, route

API = "/admin/api/v1"

ROUTES = RouteTable(
    [
        route("GET", f"{API}/openapi.json", openapi.serve),
        # the console's sign-in (auth.py)
        route("POST", f"{API}/session", h.sign_in),
        route("GET", f"{API}/session", h.current_session),
        route("DELETE", f"{API}/session", h.sign_out),
        # users
        route("GET", f"{API}/users", h.list_users),
        route("POST", f"{API}/users", h.create_user),
        route("GET", f"{API}/users/{{user_id}}", h.get_user),
        route("PATCH", f"{API}/users/{{user_id}}", h.update_user),
        route("DELETE", f"{API}/users/{{user_id}}", h.delete_user),
        route("POST", f"{API}/users/{{user_id}}/kick", h.kick_user),
        # departments
        route("GET", f"{API}/departments", h.list_departments),
        route("POST", f"{API}/departments", h.create_department),
        route("GET", f"{API}/departments/{{department_id}}", h.get_department),
        route("PATCH", f"{API}/departments/{{department_id}}", h.update_department),
        route("DELETE", f"{API}/departments/{{department_id}}", h.delete_department),
        # groups
        route("GET", f"{API}/groups", h.list_groups),
        route("POST", f"{API}/groups", h.create_group),
        route("GET", f"{API}/groups/{{group_id}}", h.get_group),
        route("DELETE", f"{API}/groups/{{group_id}}", h.dissolve_group),
        route("POST", f"{API}/groups/{{group_id}}/members", h.add_members),
        route("DELETE", f"{API}/groups/{{group_id}}/members/{{user_id}}", h.remove_member),
        # the running cluster
        route("GET", f"{API}/sessions", h.list_sessions),
        route("POST", f"{API}/sessions/{{session_id}}/kick", h.kick_session),
        route("GET", f"{API}/nodes", h.list_nodes),
        route("GET", f"{API}/stats", h.stats),
        # nothing else is under /admin/api/: 404, or 405 for a method
        route("*", "/admin/api/{rest...}", h.no_such_call),
        # the web console (static.py)
        route("GET HEAD", "/admin/{path...}", pages.console),
        route("GET HEAD", "/admin", pages.to_console),
        route("GET HEAD", "/", pages.to_console),
    ]
)
