"""Resumable uploads: the tus 1.0.0 protocol at ``/api/v1/files/``.

Extensions: creation, creation-with-upload, termination, checksum (``sha1``, ``md5``;
460 and the chunk discarded on mismatch), expiration. Every request but ``OPTIONS``
carries ``Authorization: Bearer`` (``POST /api/v1/token``); an upload belongs to its
creator.

The offset a client is told (``Upload-Offset``) is the ``received`` column of the
upload's row, moved only after the bytes before it were fsynced: never what a client
claims, never bytes still in a buffer. A PATCH cut off half-way keeps what arrived
(fsynced and recorded when the connection drops); a long PATCH is checkpointed every
``CHECKPOINT_BYTES`` so a crash loses little. The upload's bytes live in the shared
content directory (``incoming/<upload id>``) and its row in the shared database, so a
client may resume on any node, after a restart too. One request at a time writes an
upload: a second one gets 423, on this node (a set) and across nodes (``flock`` on the
file). On the last byte the file becomes a content blob (deduplicated) and the upload's
URL serves it (``downloads.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from email.utils import formatdate
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.content.store import IncomingFile
from teamtalk_py.media.context import MediaContext
from teamtalk_py.media.http import HttpError, MediaRequest, StreamedBody, send_body
from teamtalk_py.media.library import StorageFull, new_id
from teamtalk_py.media.uploads import TUS_VERSION, UploadSession, refuse, tus_headers
from teamtalk_py.media.writer import DiskWriter
from teamtalk_py.store import media as rows
from teamtalk_py.store.media import FileKind, UploadRow

log = Logger(namespace="teamtalk.media.tus")

EXTENSIONS = b"creation,creation-with-upload,termination,checksum,expiration"
CHECKSUMS = {"sha1": hashlib.sha1, "md5": hashlib.md5}
OFFSET_STREAM = b"application/offset+octet-stream"
CHECKPOINT_BYTES = 64 * 1024 * 1024
FILES_PATH = "api/v1/files/"


def http_date(timestamp: float) -> bytes:
    return formatdate(timestamp, usegmt=True).encode()


def check_version(request: MediaRequest) -> None:
    if request.header(b"tus-resumable") != TUS_VERSION:
        raise refuse(412, "Tus-Resumable 1.0.0 required", Tus_Version=TUS_VERSION)


def parse_metadata(header: bytes | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs."""
    result: dict[str, str] = {}
    if not header:
        return result
    for pair in header.decode("latin-1").split(","):
        parts = pair.strip().split(" ")
        if not parts[0] or len(parts) > 2:
            raise refuse(400, "malformed Upload-Metadata")
        value = ""
        if len(parts) == 2:
            try:
                value = base64.b64decode(parts[1], validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                raise refuse(400, "malformed Upload-Metadata") from None
        result[parts[0]] = value
    return result


def _int_header(request: MediaRequest, name: bytes) -> int | None:
    value = request.header(name)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise refuse(400, f"{name.decode()} must be a non-negative integer")
    return int(value)


def _checksum(request: MediaRequest) -> tuple[str, bytes] | None:
    header = request.header(b"upload-checksum")
    if header is None:
        return None
    parts = header.decode("latin-1").strip().split(" ")
    if len(parts) != 2 or parts[0] not in CHECKSUMS:
        raise refuse(400, "unsupported Upload-Checksum algorithm")
    try:
        return parts[0], base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise refuse(400, "malformed Upload-Checksum") from None


class _Tee:
    """The upload's file plus the checksum of this request's bytes (I/O thread side)."""

    def __init__(self, file: IncomingFile, checksum: Any) -> None:
        self.file = file
        self.checksum = checksum

    def write(self, data: bytes) -> None:
        self.file.write(data)
        if self.checksum is not None:
            self.checksum.update(data)

    def sync(self) -> None:
        self.file.sync()


class Patch:
    """Body consumer of a PATCH (or of a creation-with-upload POST)."""

    def __init__(
        self,
        context: MediaContext,
        body: StreamedBody,
        upload: UploadRow,
        session: UploadSession,
        checksum: tuple[str, bytes] | None,
    ) -> None:
        self.context = context
        self.upload = upload
        self.session = session
        self.start = upload.received
        self.checksum = checksum
        self.recorded = upload.received
        self.overflow = False
        self._checkpointing = False
        digest = CHECKSUMS[checksum[0]]() if checksum else None
        self.tee = _Tee(session.file, digest)
        self.writer = DiskWriter(context.io, lambda: self.tee, body)

    @property
    def position(self) -> int:
        return self.start + self.writer.written + self.writer._pending_bytes

    def write(self, data: bytes) -> None:
        if self.overflow:
            return
        if self.position + len(data) > self.upload.length:
            self.overflow = True
            self.writer.drop_pending()
            return
        self.writer.write(data)
        if (
            self.checksum is None
            and not self._checkpointing
            and self.start + self.writer.written - self.recorded >= CHECKPOINT_BYTES
        ):
            self._checkpointing = True
            defer.ensureDeferred(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            written = await self.writer.checkpoint()
            await self._record(self.start + written)
        except Exception:
            log.failure("upload {id}: checkpoint failed", id=self.upload.id)
        finally:
            self._checkpointing = False

    async def _record(self, received: int) -> None:
        if received <= self.recorded:
            return
        library = self.context.library
        moved = await library.store.write(
            rows.record_received,
            self.upload.id,
            self.recorded,
            received,
            library.now() + int(library.config.upload_expiry),
        )
        if not moved:
            raise HttpError(409, "upload offset moved", headers=tus_headers())
        self.recorded = received

    def finish(self) -> defer.Deferred[int]:
        return defer.ensureDeferred(self._finish())

    async def _finish(self) -> int:
        try:
            await self.writer.drain()
            if self.overflow:
                await self.context.io(self.session.file.reset_to, self.recorded)
                raise refuse(413, "body goes past Upload-Length")
            if self.checksum is not None:
                expected = self.checksum[1]
                if self.tee.checksum.digest() != expected:
                    await self.context.io(self.session.file.reset_to, self.start)
                    raise refuse(460, "checksum mismatch")
            await self.writer.checkpoint()
            await self._record(self.session.file.size)
            if self.recorded == self.upload.length:
                await finish_upload(self.context, self.upload, self.session.file)
            return self.recorded
        finally:
            await self.context.tus.release(self.session)

    def abort(self) -> None:
        """Connection lost mid-body: keep what arrived (unless it cannot be verified)."""
        defer.ensureDeferred(self._abort())

    async def _abort(self) -> None:
        try:
            self.writer.drop_pending()
            await self.writer.drain()
            if self.checksum is not None or self.overflow:
                await self.context.io(self.session.file.reset_to, self.recorded)
            else:
                await self.writer.checkpoint()
                await self._record(self.session.file.size)
                log.info(
                    "upload {id}: connection lost, {received} of {length} bytes kept",
                    id=self.upload.id,
                    received=self.recorded,
                    length=self.upload.length,
                )
        except Exception:
            log.failure("upload {id}: saving a cut-off request failed", id=self.upload.id)
        finally:
            await self.context.tus.release(self.session)


class NoBody:
    """Body consumer of a request that must not have one."""

    def __init__(self) -> None:
        self.received = 0

    def write(self, data: bytes) -> None:
        self.received += len(data)

    def finish(self) -> defer.Deferred[int]:
        if self.received:
            return defer.fail(refuse(400, "unexpected body"))
        return defer.succeed(0)

    def abort(self) -> None:
        pass


# -- body factories ------------------------------------------------------------------------


async def _owned_upload(context: MediaContext, request: MediaRequest, upload_id: str) -> UploadRow:
    user_id = await context.required_user(request, tus_headers())
    upload = await context.library.store.read(rows.get_upload, upload_id)
    if upload is None or upload.owner_id != user_id:
        raise refuse(404, "no such upload")
    if upload.expires < context.library.now():
        raise refuse(410, "upload expired")
    return upload


async def _patch_consumer(
    context: MediaContext,
    request: MediaRequest,
    body: StreamedBody,
    upload: UploadRow,
    length: int | None,
) -> Patch:
    if request.header(b"content-type") != OFFSET_STREAM:
        raise refuse(415, "Content-Type must be application/offset+octet-stream")
    checksum = _checksum(request)
    if length is not None and upload.received + length > upload.length:
        raise refuse(413, "body goes past Upload-Length")
    session = await context.tus.acquire(upload)
    return Patch(context, body, upload, session, checksum)


async def patch_body(
    context: MediaContext, request: MediaRequest, body: StreamedBody, length: int | None
) -> Patch:
    check_version(request)
    upload = await _owned_upload(context, request, request.route_params["file_id"])
    offset = _int_header(request, b"upload-offset")
    if offset is None:
        raise refuse(400, "Upload-Offset required")
    if offset != upload.received:
        raise refuse(409, f"offset is {upload.received}", Upload_Offset=b"%d" % upload.received)
    request.upload = upload
    return await _patch_consumer(context, request, body, upload, length)


async def creation_body(
    context: MediaContext, request: MediaRequest, body: StreamedBody, length: int | None
) -> Patch | NoBody:
    """POST: create the upload (row and empty file) before its body, if any, arrives."""
    check_version(request)
    user_id = await context.required_user(request, tus_headers())
    if request.header(b"upload-defer-length") is not None:
        raise refuse(400, "Upload-Defer-Length is not supported")
    total = _int_header(request, b"upload-length")
    if total is None:
        raise refuse(400, "Upload-Length required")
    config = context.config
    if config.max_upload_size and total > config.max_upload_size:
        raise refuse(413, "upload too large", Tus_Max_Size=b"%d" % config.max_upload_size)
    metadata_header = request.header(b"upload-metadata")
    metadata = parse_metadata(metadata_header)
    library = context.library
    try:
        library.check_room(total)
    except StorageFull:
        raise refuse(507, "not enough disk space") from None
    now = library.now()
    upload = UploadRow(
        id=new_id(),
        owner_id=user_id,
        length=total,
        received=0,
        name=metadata.get("filename", ""),
        metadata=(metadata_header or b"").decode("latin-1"),
        created=now,
        expires=now + int(config.upload_expiry),
    )
    await context.io(library.files.create_empty, upload.id)
    if not await library.store.write(rows.create_upload, upload, config.user_quota):
        await context.io(library.files.remove_incoming, upload.id)
        raise refuse(413, "quota exceeded")
    log.info(
        "upload {id} created by {user_id}: {length} bytes",
        id=upload.id,
        user_id=user_id,
        length=total,
    )
    request.upload = upload
    if request.header(b"content-type") == OFFSET_STREAM and (length is None or length > 0):
        return await _patch_consumer(context, request, body, upload, length)
    return NoBody()


# -- handlers ------------------------------------------------------------------------------


def upload_url(context: MediaContext, upload_id: str) -> bytes:
    return (context.library.public_url() + FILES_PATH + upload_id).encode()


async def options(context: MediaContext, request: MediaRequest, **_: str) -> None:
    headers = tus_headers(
        Tus_Version=TUS_VERSION,
        Tus_Extension=EXTENSIONS,
        Tus_Checksum_Algorithm=b",".join(a.encode() for a in CHECKSUMS),
    )
    if context.config.max_upload_size:
        headers[b"Tus-Max-Size"] = b"%d" % context.config.max_upload_size
    send_body(request, 204, b"", None, headers)


async def _settle(
    context: MediaContext, request: MediaRequest, upload: UploadRow, received: int
) -> dict[bytes, bytes]:
    """After a body: the headers to answer with."""
    headers = tus_headers(Upload_Offset=b"%d" % received)
    if received != upload.length:
        headers[b"Upload-Expires"] = http_date(context.library.now() + context.config.upload_expiry)
    return headers


async def create(context: MediaContext, request: MediaRequest, **_: str) -> None:
    assert isinstance(request.content, StreamedBody)
    received = await request.content.outcome()
    upload: UploadRow = request.upload
    headers = await _settle(context, request, upload, received)
    headers[b"Location"] = upload_url(context, upload.id)
    send_body(request, 201, b"", None, headers)


async def patch(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    assert isinstance(request.content, StreamedBody)
    received = await request.content.outcome()
    headers = await _settle(context, request, request.upload, received)
    send_body(request, 204, b"", None, headers)


async def finish_upload(context: MediaContext, upload: UploadRow, file: IncomingFile) -> None:
    """The last byte is in: the file becomes a stored (deduplicated) file with the
    upload's id, and the upload row goes, in one transaction."""
    await context.library.add_file(
        file,
        kind=FileKind.UPLOAD,
        owner_id=upload.owner_id,
        name=upload.name,
        file_id=upload.id,
        also=lambda txn: rows.delete_upload(txn, upload.id),
    )
    log.info("upload {id} complete ({length} bytes)", id=upload.id, length=upload.length)


async def head(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    """HEAD of an upload in progress (its offset), or of a finished file."""
    user_id = await context.optional_user(request)
    upload = await context.library.store.read(rows.get_upload, file_id)
    if upload is not None and user_id == upload.owner_id:
        if upload.expires < context.library.now():
            raise refuse(410, "upload expired")
        headers = tus_headers(
            Upload_Offset=b"%d" % upload.received,
            Upload_Length=b"%d" % upload.length,
            Upload_Expires=http_date(upload.expires),
        )
        if upload.metadata:
            headers[b"Upload-Metadata"] = upload.metadata.encode("latin-1")
        send_body(request, 200, b"", None, headers)
        return
    from teamtalk_py.media import downloads

    file = await context.owned_file(request, file_id, user_id)
    extra = tus_headers(Upload_Offset=b"%d" % file.size, Upload_Length=b"%d" % file.size)
    extra.pop(b"Cache-Control")
    await downloads.serve(context, request, file, extra)


async def terminate(context: MediaContext, request: MediaRequest, file_id: str) -> None:
    """DELETE: an unfinished upload is dropped (termination); a finished file deleted."""
    user_id = await context.required_user(request, tus_headers())
    library = context.library
    upload = await library.store.read(rows.get_upload, file_id)
    if upload is not None and upload.owner_id == user_id:
        if file_id in context.tus.busy:
            raise refuse(423, "a request is writing this upload")
        await library.store.write(rows.delete_upload, file_id)
        await context.tus.forget(file_id)
        await context.io(library.files.remove_incoming, file_id)
        send_body(request, 204, b"", None, tus_headers())
        return
    file = await library.get_file(file_id)
    if file is None or file.owner_id != user_id:
        raise refuse(404, "no such upload")
    await library.delete_file(file)
    send_body(request, 204, b"", None, tus_headers())


async def sweep_expired(context: MediaContext) -> int:
    """Delete unfinished uploads past their expiry, and stray incoming files."""
    library = context.library
    now = library.now()
    expired = await library.store.read(rows.expired_uploads, now)
    for upload_id in expired:
        if upload_id in context.tus.busy:
            continue
        await library.store.write(rows.delete_upload, upload_id)
        await context.tus.forget(upload_id)
        await context.io(library.files.remove_incoming, upload_id)
    # Incoming files of no upload (a picture cut off by a crash) once old enough.
    horizon = now - context.config.upload_expiry
    stale = [
        name for name, mtime in await context.io(library.files.incoming_files) if mtime < horizon
    ]
    if stale:
        alive = await library.store.read(rows.upload_ids, stale)
        for name in stale:
            if name not in alive and name not in context.tus.busy:
                await context.io(library.files.remove_incoming, name)
    if expired:
        log.info("swept {count} expired uploads", count=len(expired))
    return len(expired)
