"""JSON endpoints of the media service: tokens, file downloads, download links.

* ``POST /api/v1/token`` ``{"user": NAME, "password": MD5_HEX}`` ->
  ``{"token", "user_id", "expires_at"}``; 401 for wrong credentials, 429 once locked out
  (the same failed-login rule as PDU logins).
* ``GET|HEAD /api/v1/files/{id}`` — the owner downloads a finished upload or picture.
* ``POST /api/v1/files/{id}/links`` -> ``{"link", "url"}``: anyone holding the URL may
  download (``GET|HEAD /api/v1/links/{link}``) until the owner revokes it
  (``DELETE /api/v1/links/{link}``).
"""

from __future__ import annotations

import re

from teamtalk_py.auth.tokens import TokenRefused
from teamtalk_py.media import downloads
from teamtalk_py.media.context import MediaContext
from teamtalk_py.media.http import HttpError, MediaRequest, json_object, send_body, send_json

LINKS_PATH = "api/v1/links/"
_MD5_HEX = re.compile(r"[0-9A-Fa-f]{32}")


async def create_token(context: MediaContext, request: MediaRequest) -> None:
    body = json_object(request)
    name, password = body.get("user"), body.get("password")
    if not isinstance(name, str) or not name or not isinstance(password, str):
        raise HttpError(400, 'expected {"user": NAME, "password": MD5_HEX}')
    if not _MD5_HEX.fullmatch(password):
        raise HttpError(400, "password must be the 32-digit MD5 hex of the password")
    try:
        token = await context.tokens.issue_for_password(name, password, request.client_ip())
    except TokenRefused as e:
        if e.locked:
            raise HttpError(429, "too many failed logins; try again later") from None
        raise HttpError(401, "wrong user name or password") from None
    send_json(
        request,
        200,
        {"token": token.value, "user_id": token.user_id, "expires_at": token.expires_at},
        {b"Cache-Control": b"no-store"},
    )


async def download_file(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    user_id = await context.required_user(request)
    file = await context.owned_file(request, file_id, user_id)
    await downloads.serve(context, request, file)


async def create_link(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    user_id = await context.required_user(request)
    file = await context.owned_file(request, file_id, user_id)
    link_id = await context.library.create_link(file)
    url = context.library.public_url() + LINKS_PATH + link_id
    send_json(request, 201, {"link": link_id, "url": url}, {b"Location": url.encode()})


async def no_such_route(context: MediaContext, request: MediaRequest, rest: str) -> None:
    raise HttpError(404, "no such API call")


async def download_link(context: MediaContext, request: MediaRequest, link_id: str) -> None:
    file = await context.library.resolve_link(link_id)
    if file is None:
        raise HttpError(404, "no such link")
    await downloads.serve(context, request, file)


async def revoke_link(context: MediaContext, request: MediaRequest, link_id: str) -> None:
    user_id = await context.required_user(request)
    if not await context.library.revoke_link(link_id, user_id):
        raise HttpError(404, "no such link")
    send_body(request, 204, b"", None)
