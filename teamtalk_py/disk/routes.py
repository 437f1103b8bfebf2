"""The cloud disk's routes: every path of its two APIs, and who handles it.

``ROUTES`` is the disk service's table: the seed system's paths and commands (``seed.py``).
A route's ``?cmd=`` is part of its match, so every command has its line; an unknown
command is a 404. Matched top to bottom.

``API_ROUTES`` is the JSON API under ``/api/v1/disk/`` (``api.py``), which the media
listener serves: ``media/routes.py`` takes these lines into its table.
"""

from __future__ import annotations

from teamtalk_py.disk import api, seed
from teamtalk_py.media.http import Route, RouteTable, route
from teamtalk_py.store.disk import Order

ROUTES = RouteTable(
    [
        # accounts (registration is off unless disk.allow_registration)
        route("POST", "/reg", seed.register),
        route("POST", "/login", seed.login),
        # adding files
        route("POST", "/upload", seed.upload, body=seed.upload_body),
        route("POST", "/md5", seed.instant_upload),
        # my files
        route("POST", "/myfiles?cmd=count", seed.count_my_files),
        route("POST", "/myfiles?cmd=normal", seed.my_files(Order.NORMAL)),
        route("POST", "/myfiles?cmd=pvasc", seed.my_files(Order.PV_ASC)),
        route("POST", "/myfiles?cmd=pvdesc", seed.my_files(Order.PV_DESC)),
        route("POST", "/myfiles?cmd=pv", seed.count_download),
        route("POST", "/dealfile?cmd=share", seed.share),
        route("POST", "/dealfile?cmd=del", seed.delete),
        route("POST", "/dealfile?cmd=pv", seed.count_download),
        # the public list
        route("GET POST", "/sharefiles?cmd=count", seed.count_shared),
        route("POST", "/sharefiles?cmd=normal", seed.shared_files),
        route("POST", "/sharefiles?cmd=pvasc", seed.ranking(Order.PV_ASC)),
        route("POST", "/sharefiles?cmd=pvdesc", seed.ranking(Order.PV_DESC)),
        route("POST", "/dealsharefile?cmd=cancel", seed.cancel_share),
        route("POST", "/dealsharefile?cmd=save", seed.save),
        route("POST", "/dealsharefile?cmd=pv", seed.count_share_download),
    ]
)

#: My files, the public list (ranking), downloads.
API_ROUTES: tuple[Route, ...] = (
    route("GET", "/api/v1/disk/files", api.list_files),
    route("POST", "/api/v1/disk/files", api.upload, body=api.upload_body),
    route("POST", "/api/v1/disk/instant-uploads", api.instant_upload),
    route("POST", "/api/v1/disk/imports", api.import_upload),
    route("GET", "/api/v1/disk/files/{file_id}", api.get_file),
    route("DELETE", "/api/v1/disk/files/{file_id}", api.delete_file),
    route("GET HEAD", "/api/v1/disk/files/{file_id}/content", api.file_content),
    route("POST", "/api/v1/disk/files/{file_id}/downloads", api.count_download),
    route("POST", "/api/v1/disk/files/{file_id}/share", api.share_file),
    route("GET", "/api/v1/disk/shared", api.list_shared),
    route("GET", "/api/v1/disk/shared/{share_id}", api.get_shared),
    route("DELETE", "/api/v1/disk/shared/{share_id}", api.cancel_share),
    route("GET HEAD", "/api/v1/disk/shared/{share_id}/content", api.shared_content),
    route("POST", "/api/v1/disk/shared/{share_id}/save", api.save_shared),
    route("POST", "/api/v1/disk/shared/{share_id}/downloads", api.count_shared_download),
)
