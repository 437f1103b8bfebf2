"""The disk service's route table: the seed system's paths and commands, and who handles
each (``seed.py``). A route's ``?cmd=`` is part of its match, so every command has its
line; an unknown command is a 404. Matched top to bottom.
"""

from __future__ import annotations

from teamtalk_py.disk import seed
from teamtalk_py.media.http import RouteTable, route
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
