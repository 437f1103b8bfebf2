"""The media service's route table: every HTTP path it answers, and who handles it.

Matched top to bottom; the first route whose pattern and method fit wins. A route with a
``body`` streams its request body into a consumer (``http.StreamedBody``); the others get
at most 64 KiB in memory.
"""

from __future__ import annotations

from teamtalk_py.disk import routes as disk_routes
from teamtalk_py.media import api, msfs, openapi, tus
from teamtalk_py.media.http import RouteTable, route

ROUTES = RouteTable(
    [
        # the JSON API's description (OpenAPI 3), and API tokens (auth/tokens.py)
        route("GET", "/api/v1/openapi.json", openapi.serve),
        route("POST", "/api/v1/token", api.create_token),
        # the cloud disk's JSON API (disk/routes.py)
        *disk_routes.API_ROUTES,
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
        # nothing else is under /api/ (not even msfs uploads): 404, or 405 for a method
        route("*", "/api/{rest...}", api.no_such_route),
        # TeamTalk msfs (msfs.py): pictures by path, uploads to any other path
        route("GET HEAD", "/{path...}", msfs.download),
        route("POST", "/{path...}", msfs.upload, body=msfs.picture_body),
    ]
)
