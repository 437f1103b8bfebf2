"""Handlers of the web console's pages (the files themselves: ``static.py``)."""

from __future__ import annotations

from teamtalk_py.admin_api.context import AdminContext
from teamtalk_py.media.http import MediaRequest, send_body


async def console(context: AdminContext, request: MediaRequest, path: str) -> None:
    """``GET /admin/PATH``: a console file, or its single page for any page URL."""
    context.console.serve(request, path)


async def to_console(context: AdminContext, request: MediaRequest) -> None:
    """``GET /`` and ``GET /admin``: the console is at ``/admin/``."""
    send_body(request, 302, b"", None, {b"Location": b"/admin/"})
