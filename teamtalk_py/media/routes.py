"""The media service's route table: every HTTP path it answers, and who handles it.

Matched top to bottom; the first route whose pattern and method fit wins. A route with a
``body`` streams its request body into a consumer (``http.StreamedBody``); the others get
at most 64 KiB in memory.
"""

from __future__ import annotations

from teamtalk_py.media import api, msfs, tus
from teamtalk_py.media.http import RouteTable, route

ROUTES = RouteTable(
    [
        # API tokens (auth/tokens.py)
        route("POST", "/api/v1/token", api.create_token),
        # tus 1.0.0 resumable uploads (tus.py); a finished upload is downloaded at its URL
        route("OPTIONS", "/api/v1/files/", tus.options),
        route("POST", "/api/v1/files/", tus.create, body=tus.creation_body),
        route("HEAD", "/api/v1/files/{file_id}", tus.head),
        route("PATCH", "/api/v1/files/{file_id}", tus.patch, body=tus.patch_body),
        route("DELETE", "/api/v1/files/{file_id}", tus.terminate),
        route("GET", "/api/v1/files/{file_id}", api.download_file),
        # download links (api.py)
        route("POST", "/api/v1/files/{file_id}/links", api.create_link),
        route("GET HEAD", "/api/v1/links/{link_id}", api.download_link),
        route("DELETE", "/api/v1/links/{link_id}", api.revoke_link),
        # TeamTalk msfs (msfs.py): pictures by path, uploads to any other path
        route("GET HEAD", "/{path...}", msfs.download),
        route("POST", "/{path...}", msfs.upload, body=msfs.picture_body),
    ]
)
