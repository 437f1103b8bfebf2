"""The web console's files (``teamtalk_py/admin_web/static``), served at ``/admin/``.

They ship inside the Python package and are read into memory once when the admin
service starts (a few hundred kilobytes), so serving them never touches the disk on the
reactor thread. Every answer carries the console's security headers: a
``Content-Security-Policy`` that allows scripts, styles and connections only from this
origin (no inline scripts, no ``eval``), and no framing.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from pathlib import Path

from teamtalk_py.media.http import HttpError, MediaRequest, send_body

CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    b"frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    b"Content-Security-Policy": CSP,
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}


def static_root() -> Path:
    return Path(str(resources.files("teamtalk_py.admin_web"))) / "static"


class ConsoleFiles:
    """The console's files by path (``index.html``, ``app.js`` …), held in memory."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    @classmethod
    def load(cls, root: Path | None = None) -> ConsoleFiles:
        """Read every file under ``root`` (blocking: call it off the reactor)."""
        root = root or static_root()
        files: dict[str, bytes] = {}
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    files[path.relative_to(root).as_posix()] = path.read_bytes()
        return cls(files)

    def serve(self, request: MediaRequest, path: str) -> None:
        name = path or "index.html"
        body = self.files.get(name)
        if body is None and "." not in name.rsplit("/", 1)[-1]:
            # A console page's own URL (/admin/users): the single-page app answers it.
            name = "index.html"
            body = self.files.get(name)
        if body is None:
            raise HttpError(404, "no such file", headers=dict(SECURITY_HEADERS))
        suffix = Path(name).suffix
        content_type = (
            TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        headers = dict(SECURITY_HEADERS)
        headers[b"Cache-Control"] = b"no-cache"
        send_body(request, 200, body, content_type.encode(), headers)
