"""``AdminContext``: what every handler of the admin listener receives.

A leaf of the package: the handlers (``handlers.py``, ``openapi.py``, ``pages.py``) and
the service that builds the context (``service.py``) import it; it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from teamtalk_py.admin_api.auth import SESSION_TTL, AdminAuth
from teamtalk_py.admin_api.directory import AdminDirectory
from teamtalk_py.admin_api.static import ConsoleFiles


@dataclass
class AdminContext:
    store: Any
    clock: Any
    auth: AdminAuth
    directory: AdminDirectory
    console: ConsoleFiles
    session_ttl: int = SESSION_TTL
