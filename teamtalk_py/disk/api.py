"""The cloud disk as a JSON API under ``/api/v1/disk/`` of the media service.

The same features as the seed's API (``seed.py``), for new clients and the admin
console, described by the OpenAPI document at ``/api/v1/openapi.json``
(``media/openapi.py``). Every call takes ``Authorization: Bearer TOKEN``
(``POST /api/v1/token``), except the two downloads, whose URLs are the secret (128
random bits: a file's URL is handed to its owner, a shared file's to everybody while it
is shared). Errors are ``{"error": "..."}`` with a 4xx status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.logger import Logger

from teamtalk_py.disk.cloud_disk import (
    AlreadyShared,
    BadRequest,
    CloudDisk,
    DiskError,
    NoSuchFile,
    NotReadable,
    OverQuota,
    check_md5,
    check_name,
    file_type,
)
from teamtalk_py.media import downloads
from teamtalk_py.media.context import MediaContext
from teamtalk_py.media.http import (
    HttpError,
    MediaRequest,
    StreamedBody,
    json_object,
    query,
    query_number,
    send_body,
    send_json,
)
from teamtalk_py.media.library import StorageFull
from teamtalk_py.media.writer import DiskWriter, RawFile
from teamtalk_py.store.disk import DiskFileRow, Order, SharedFileRow

log = Logger(namespace="teamtalk.disk.api")

#: ``order`` of the list calls.
ORDERS = {"added": Order.NORMAL, "downloads_asc": Order.PV_ASC, "downloads_desc": Order.PV_DESC}
MAX_COUNT = 100
MAX_START = 2**53 - 1

#: How each refusal of the disk is answered.
STATUS = {
    BadRequest: 400,
    NoSuchFile: 404,
    NotReadable: 404,
    AlreadyShared: 409,
    OverQuota: 413,
    StorageFull: 507,
}


def file_json(disk: CloudDisk, file: DiskFileRow) -> dict[str, Any]:
    return {
        "id": file.file_id,
        "name": file.name,
        "md5": file.md5,
        "sha256": file.sha256,
        "size": file.size,
        "type": file_type(file.name),
        "created": file.created,
        "downloads": file.pv,
        "shared": file.share_id is not None,
        "share_id": file.share_id,
        "url": disk.file_url(file),
    }


def share_json(disk: CloudDisk, share: SharedFileRow) -> dict[str, Any]:
    return {
        "id": share.share_id,
        "owner": share.owner_name,
        "name": share.name,
        "md5": share.md5,
        "size": share.size,
        "type": file_type(share.name),
        "created": share.created,
        "downloads": share.pv,
        "url": disk.share_url(share),
    }


def _disk(context: MediaContext) -> CloudDisk:
    if context.disk is None:
        raise HttpError(404, "the cloud disk is not served here")
    return context.disk


def page(request: MediaRequest) -> tuple[Order, int, int]:
    params = query(request)
    order = ORDERS.get(params.get("order", "added"))
    if order is None:
        raise HttpError(400, f"order must be one of {', '.join(ORDERS)}")
    start = query_number(params, "start", 0, 0, MAX_START)
    count = query_number(params, "count", 20, 1, MAX_COUNT)
    return order, start, count


Handler = Callable[..., Awaitable[None]]


def answering_disk_errors(fn: Handler) -> Handler:
    """``fn`` with the disk's refusals answered by status (``STATUS``)."""

    async def handler(context: MediaContext, request: MediaRequest, **params: str) -> None:
        try:
            await fn(context, request, **params)
        except (DiskError, StorageFull) as e:
            raise HttpError(STATUS.get(type(e), 400), str(e) or type(e).__name__) from None

    handler.__doc__ = fn.__doc__
    return handler


# -- my files ------------------------------------------------------------------------------


@answering_disk_errors
async def list_files(context: MediaContext, request: MediaRequest) -> None:
    """``GET /api/v1/disk/files?order=&start=&count=``."""
    user_id = await context.required_user(request)
    order, start, count = page(request)
    disk = _disk(context)
    files = await disk.files(user_id, order, start, count)
    total = await disk.count_files(user_id)
    answer = {"total": total, "start": start, "files": [file_json(disk, f) for f in files]}
    send_json(request, 200, answer)


@answering_disk_errors
async def get_file(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    """``GET /api/v1/disk/files/{id}``."""
    user_id = await context.required_user(request)
    disk = _disk(context)
    send_json(request, 200, file_json(disk, await disk.file(user_id, file_id)))


@answering_disk_errors
async def delete_file(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    """``DELETE /api/v1/disk/files/{id}``."""
    user_id = await context.required_user(request)
    await _disk(context).delete(user_id, file_id)
    send_body(request, 204, b"", None)


@answering_disk_errors
async def count_download(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    """``POST /api/v1/disk/files/{id}/downloads``: one more download counted."""
    user_id = await context.required_user(request)
    disk = _disk(context)
    send_json(request, 200, file_json(disk, await disk.count_download(user_id, file_id)))


@answering_disk_errors
async def share_file(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    """``POST /api/v1/disk/files/{id}/share``: put it in the public list."""
    user_id = await context.required_user(request)
    disk = _disk(context)
    send_json(request, 201, share_json(disk, await disk.publish(user_id, file_id)))


@answering_disk_errors
async def instant_upload(context: MediaContext, request: MediaRequest) -> None:
    """``POST /api/v1/disk/instant-uploads`` ``{"name", "md5"}``: 201 added without its
    bytes, 200 when the caller had it already, 404 when the bytes must be uploaded."""
    user_id = await context.required_user(request)
    body = json_object(request)
    disk = _disk(context)
    file, added = await disk.add_known(user_id, body.get("md5"), body.get("name"))
    send_json(request, 201 if added else 200, file_json(disk, file))


@answering_disk_errors
async def import_upload(context: MediaContext, request: MediaRequest) -> None:
    """``POST /api/v1/disk/imports`` ``{"upload": ID, "name": NAME?}``: a finished tus
    upload of the caller's (``/api/v1/files/ID``) also becomes one of their files (201;
    200 when they had it). No bytes move; the MD5 is computed from them."""
    user_id = await context.required_user(request)
    body = json_object(request)
    upload = body.get("upload")
    if not isinstance(upload, str):
        raise HttpError(400, "upload must be the id of a finished upload")
    disk = _disk(context)
    file, added = await disk.add_upload(user_id, upload, body.get("name"))
    send_json(request, 201 if added else 200, file_json(disk, file))


# -- uploads -------------------------------------------------------------------------------


class DiskUpload(RawFile):
    """The body of ``POST /api/v1/disk/files``: the file's bytes, nothing else."""

    def __init__(
        self, context: MediaContext, body: StreamedBody, user_id: int, name: str, md5: str | None
    ) -> None:
        files = context.library.files
        limit = context.config.max_upload_size
        super().__init__(context.io, lambda: files.receive(md5=True), body, limit)
        self.user_id = user_id
        self.name = name
        self.md5 = md5


async def upload_body(
    context: MediaContext, request: MediaRequest, body: StreamedBody, length: int | None
) -> DiskUpload:
    """Body factory of an upload: refused from the headers when it can be."""
    user_id = await context.required_user(request)
    params = query(request)
    disk = _disk(context)
    try:
        name = check_name(params.get("name"))
        md5 = check_md5(params["md5"]) if "md5" in params else None
        limit = context.config.max_upload_size
        if limit and length is not None and length > limit:
            raise HttpError(413, f"the file is larger than {limit} bytes")
        await disk.check_quota(user_id, length or 0)
        context.library.check_room(length or 0)
    except (DiskError, StorageFull) as e:
        raise HttpError(STATUS.get(type(e), 400), str(e)) from None
    request.owner_id = user_id
    return DiskUpload(context, body, user_id, name, md5)


@answering_disk_errors
async def upload(context: MediaContext, request: MediaRequest) -> None:
    """``POST /api/v1/disk/files?name=NAME[&md5=HEX]``, the bytes as the body: 201 with
    the new file, 200 when the caller had these bytes under this name; 422 when they do
    not match ``md5``."""
    assert isinstance(request.content, StreamedBody)
    writer: DiskWriter = await request.content.outcome()
    consumer = request.content.consumer
    assert isinstance(consumer, DiskUpload)
    incoming = writer.file
    if consumer.md5 is not None and incoming.md5 != consumer.md5:
        await writer.discard()
        raise HttpError(422, f"the bytes' MD5 is {incoming.md5}, not {consumer.md5}")
    disk = _disk(context)
    file, added = await disk.add_received(incoming, consumer.user_id, consumer.name)
    headers = {b"Location": disk.file_url(file).encode()} if added else None
    send_json(request, 201 if added else 200, file_json(disk, file), headers)


# -- the public list -----------------------------------------------------------------------


@answering_disk_errors
async def list_shared(context: MediaContext, request: MediaRequest) -> None:
    """``GET /api/v1/disk/shared?order=&start=&count=`` (``order=downloads_desc``: the
    ranking)."""
    await context.required_user(request)
    order, start, count = page(request)
    disk = _disk(context)
    shares = await disk.shares(order, start, count)
    total = await disk.count_shares()
    answer = {"total": total, "start": start, "files": [share_json(disk, s) for s in shares]}
    send_json(request, 200, answer)


@answering_disk_errors
async def get_shared(context: MediaContext, request: MediaRequest, share_id: str) -> None:
    """``GET /api/v1/disk/shared/{id}``."""
    await context.required_user(request)
    disk = _disk(context)
    send_json(request, 200, share_json(disk, await disk.share(share_id)))


@answering_disk_errors
async def cancel_share(context: MediaContext, request: MediaRequest, share_id: str) -> None:
    """``DELETE /api/v1/disk/shared/{id}``: its owner takes it out of the public list."""
    user_id = await context.required_user(request)
    await _disk(context).unpublish(user_id, share_id)
    send_body(request, 204, b"", None)


@answering_disk_errors
async def save_shared(context: MediaContext, request: MediaRequest, share_id: str) -> None:
    """``POST /api/v1/disk/shared/{id}/save``: into the caller's files (201; 200 when
    they had it)."""
    user_id = await context.required_user(request)
    disk = _disk(context)
    file, added = await disk.save(user_id, share_id)
    send_json(request, 201 if added else 200, file_json(disk, file))


@answering_disk_errors
async def count_shared_download(
    context: MediaContext, request: MediaRequest, share_id: str
) -> None:
    """``POST /api/v1/disk/shared/{id}/downloads``: one more download (its rank)."""
    await context.required_user(request)
    disk = _disk(context)
    send_json(request, 200, share_json(disk, await disk.count_share_download(share_id)))


# -- downloads -----------------------------------------------------------------------------


async def file_content(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    """``GET|HEAD /api/v1/disk/files/{id}/content``: the URL is the secret."""
    file = await _disk(context).downloadable(file_id)
    if file is None:
        raise HttpError(404, "no such file")
    await downloads.serve(context, request, file)


async def shared_content(context: MediaContext, request: MediaRequest, share_id: str) -> None:
    """``GET|HEAD /api/v1/disk/shared/{id}/content``, while it is shared."""
    share = await _disk(context).downloadable_share(share_id)
    if share is None:
        raise HttpError(404, "no such shared file")
    await downloads.serve(context, request, share)
