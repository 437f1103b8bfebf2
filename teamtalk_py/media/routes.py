"""The media service's route table: every HTTP path it answers, and who handles it.

Matched top to bottom; the first route whose pattern and method fit wins. A route with a
``body`` streams its request body into a consumer (``http.StreamedBody``); the others get
at most 64 KiB in memory.
"""

from __future__ import annotations

from teamtalk_py.disk import api as disk
from teamtalk_py.media import api, msfs, openapi, tus
from teamtalk_py.media.http import RouteTable, route

ROUTES = RouteTable(
    [
        # the JSON API's description (OpenAPI 3), and API tokens (auth/tokens.py)
        route("GET", "/api/v1/openapi.json", openapi.serve),
        route("POST", "/api/v1/token", api.create_token),
        # the cloud disk (disk/api.py): my files, the public list (ranking), downloads
        route("GET", "/api/v1/disk/files", disk.list_files),
        route("POST", "/api/v1/disk/files", disk.upload, body=disk.upload_body),
        route("POST", "/api/v1/disk/instant-uploads", disk.instant_upload),
        route("POST", "/api/v1/disk/imports", disk.import_upload),
        route("GET", "/api/v1/disk/files/{file_id}", disk.get_file),
        route("DELETE", "/api/v1/disk/files/{file_id}", disk.delete_file),
        route("GET HEAD", "/api/v1/disk/files/{file_id}/content", disk.file_content),
        route("POST", "/api/v1/disk/files/{file_id}/downloads", disk.count_download),
        route("POST", "/api/v1/disk/files/{file_id}/share", disk.share_file),
        route("GET", "/api/v1/disk/shared", disk.list_shared),
        route("GET", "/api/v1/disk/shared/{share_id}", disk.get_shared),
        route("DELETE", "/api/v1/disk/shared/{share_id}", disk.cancel_share),
        route("GET HEAD", "/api/v1/disk/shared/{share_id}/content", disk.shared_content),
        route("POST", "/api/v1/disk/shared/{share_id}/save", disk.save_shared),
        route("POST", "/api/v1/disk/shared/{share_id}/downloads", disk.count_shared_download),
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
