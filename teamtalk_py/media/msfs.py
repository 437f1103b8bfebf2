"""TeamTalk's msfs picture store over HTTP, as the shipped clients use it.

Upload: ``POST`` to any path, ``multipart/form-data``, any field name; the first part
with a ``filename`` is the picture (iOS and mac send a ``type=im_image`` text part first).
The answer is one line of JSON, ``text/html;charset=utf-8``, exactly the reference's
keys: ``{"error_code":0,"error_msg":"成功","path":"g0/…","url":"<public base>g0/…"}``.
Android reads the first line and takes ``url``; iOS and mac take ``url``; Windows and the
PHP admin take ``path`` and prefix their configured msfs address. Download: ``GET
/g0/…`` (``downloads.py``).

Kept from the reference: the ``g0/NNN/NNN/<name>[_WxH].<ext>`` path shape, the ``_WxH``
size suffix of the uploaded name (Windows sends ``a.jpg_640x480.jpg``, iOS
``image.png_WxH.png``), the error codes (1: too large; 2–11: malformed). Changed: the
name is 128 random bits (the reference's time + thread id was guessable); ``url`` is built
from the configured public base, never from the ``Host`` header; a too-large picture gets
error 1 (the reference answered success with an empty path); the body streams to disk
and is stored once per distinct content; per-IP limits for anonymous uploads; an optional
bearer token (anonymous uploads can be switched off) and then the user's quota; the
content type served is sniffed from the bytes. Our own codes: 12 rate limited (HTTP 429),
13 disk full (507), 14 token needed (401), 15 over quota (413).
"""

from __future__ import annotations

import json
import re
import secrets
from urllib.parse import unquote

from python_multipart.multipart import parse_options_header
from twisted.logger import Logger

from teamtalk_py.media import downloads
from teamtalk_py.media.context import MediaContext
from teamtalk_py.media.http import HttpError, MediaRequest, StreamedBody, send_body
from teamtalk_py.media.library import StorageFull, new_id
from teamtalk_py.media.multipart import MultipartError, MultipartFile, Problem, ReceivedFile
from teamtalk_py.store.media import FileKind, bytes_used

log = Logger(namespace="teamtalk.media.msfs")

SUCCESS = "成功"
TOO_LARGE = "上传文件过大"
MALFORMED = "格式错误"
RATE_LIMITED = "上传过于频繁"
NO_SPACE = "存储空间不足"
UNAUTHORIZED = "需要登录"
OVER_QUOTA = "超出存储配额"

# Error codes: the reference's 1..11, then ours.
E_TOO_LARGE = 1
E_NO_DISPOSITION = 2
E_NO_FILENAME = 3
E_NO_BOUNDARY = 4
E_BAD_BODY = 5
E_UNTERMINATED = 7
E_BAD_EXTENSION = 9
E_NO_EXTENSION = 10
E_NAME_TOO_LONG = 11
E_RATE_LIMITED = 12
E_NO_SPACE = 13
E_UNAUTHORIZED = 14
E_OVER_QUOTA = 15

#: Bytes of multipart framing allowed on top of the picture itself.
FRAMING_ALLOWANCE = 64 * 1024
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,15}")
_SIZE_SUFFIX = re.compile(r"_(\d{1,4})x(\d{1,4})\.[^.]*\Z")
#: ``g0/NNN/NNN/<32 hex>[_WxH].<ext>``: the only download paths that exist.
MSFS_PATH = re.compile(
    r"g0/\d{3}/\d{3}/(?P<file_id>[0-9a-f]{32})(_\d{1,4}x\d{1,4})?\.[A-Za-z0-9]{1,15}"
)


class MsfsError(Exception):
    def __init__(self, code: int, message: str = MALFORMED, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def answer_body(code: int, message: str, path: str = "", url: str = "") -> bytes:
    """One line of JSON with the reference's keys, in its order."""
    answer = {"error_code": code, "error_msg": message, "path": path, "url": url}
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()


def send_answer(
    request: MediaRequest, code: int, message: str, path: str = "", url: str = "", status: int = 200
) -> None:
    send_body(
        request,
        status,
        answer_body(code, message, path, url),
        b"text/html;charset=utf-8",
        {b"X-Content-Type-Options": b"nosniff"},
    )


def stored_suffix(filename: str) -> str:
    """``_WxH.ext`` when the uploaded name carries a size before its extension, else
    ``.ext``; raises ``MsfsError`` for names the reference refused."""
    if len(filename.encode("utf-8")) > 255:
        raise MsfsError(E_NAME_TOO_LONG)
    if "." not in filename:
        raise MsfsError(E_NO_EXTENSION)
    extension = filename.rsplit(".", 1)[1]
    if not _EXTENSION.fullmatch(extension):
        raise MsfsError(E_BAD_EXTENSION)
    size = _SIZE_SUFFIX.search(filename)
    if size:
        return f"_{int(size.group(1))}x{int(size.group(2))}.{extension}"
    return f".{extension}"


def new_path(file_id: str, suffix: str) -> str:
    spread = secrets.token_bytes(2)
    return f"g0/{spread[0]:03d}/{spread[1]:03d}/{file_id}{suffix}"


_PROBLEM_CODES = {
    Problem.NO_DISPOSITION: E_NO_DISPOSITION,
    Problem.NO_FILENAME: E_NO_FILENAME,
    Problem.BAD_BODY: E_BAD_BODY,
    Problem.UNTERMINATED: E_UNTERMINATED,
}


class MultipartPicture(MultipartFile):
    """The picture of an msfs upload: the first file part, whose name must carry an
    extension the reference accepted (``stored_suffix``)."""

    def __init__(self, context: MediaContext, body: StreamedBody, boundary: bytes) -> None:
        files = context.library.files
        super().__init__(context.io, files.receive, body, boundary, context.config.max_picture_size)

    def accept(self, filename: str, options: dict[bytes, bytes]) -> None:
        stored_suffix(filename)


def msfs_error(error: MultipartError) -> MsfsError:
    if error.problem is Problem.TOO_LARGE:
        return MsfsError(E_TOO_LARGE, TOO_LARGE)
    return MsfsError(_PROBLEM_CODES[error.problem])


async def picture_body(
    context: MediaContext, request: MediaRequest, body: StreamedBody, length: int | None
) -> MultipartPicture:
    """Body factory of a picture upload: checks that need only the headers, then the parser.

    A refusal here is an ``MsfsError`` answered in the msfs format by the handler, or,
    for a body too large to read, at once."""
    limit = context.config.max_picture_size
    if limit and length is not None and length > limit + FRAMING_ALLOWANCE:
        raise HttpError(200, body=answer_body(E_TOO_LARGE, TOO_LARGE), headers=_ANSWER_HEADERS)
    content_type = request.header(b"content-type") or b""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise HttpError(200, body=answer_body(E_NO_BOUNDARY, MALFORMED), headers=_ANSWER_HEADERS)
    owner_id = await context.optional_user(request)
    if owner_id is None and not context.config.anonymous_uploads:
        raise HttpError(
            401, body=answer_body(E_UNAUTHORIZED, UNAUTHORIZED), headers=_ANSWER_HEADERS
        )
    # Per-address limits are for anonymous uploads; a user with a token has a quota.
    reason = None
    if owner_id is None:
        reason = context.library.limits.start_upload(request.client_ip(), length or 0)
    if reason is not None:
        log.info("msfs upload from {ip} refused: {reason}", ip=request.client_ip(), reason=reason)
        raise HttpError(
            429, body=answer_body(E_RATE_LIMITED, RATE_LIMITED), headers=_ANSWER_HEADERS
        )
    try:
        context.library.check_room(length or limit)
    except StorageFull:
        raise HttpError(
            507, body=answer_body(E_NO_SPACE, NO_SPACE), headers=_ANSWER_HEADERS
        ) from None
    quota = context.config.user_quota
    if owner_id is not None and quota:
        used = await context.library.store.read(bytes_used, owner_id)
        if used + (length or limit) > quota:
            raise HttpError(
                413, body=answer_body(E_OVER_QUOTA, OVER_QUOTA), headers=_ANSWER_HEADERS
            )
    request.owner_id = owner_id or 0
    return MultipartPicture(context, body, boundary)


_ANSWER_HEADERS = {
    b"Content-Type": b"text/html;charset=utf-8",
    b"X-Content-Type-Options": b"nosniff",
}


async def upload(context: MediaContext, request: MediaRequest, **_: str) -> None:
    """``POST <any path>``: store the picture, answer with its path and URL."""
    assert isinstance(request.content, StreamedBody)
    try:
        try:
            received: ReceivedFile = await request.content.outcome()
        except MultipartError as e:
            raise msfs_error(e) from None
    except MsfsError as e:
        log.info("msfs upload from {ip} refused: error {code}", ip=request.client_ip(), code=e.code)
        send_answer(request, e.code, e.message, status=e.status)
        return
    library = context.library
    incoming = received.writer.file
    assert incoming is not None
    library.limits.add_bytes(request.client_ip(), incoming.size)
    file_id = new_id()
    path = new_path(file_id, stored_suffix(received.filename))
    try:
        file = await library.add_file(
            incoming,
            kind=FileKind.PICTURE,
            owner_id=getattr(request, "owner_id", 0),
            name=received.filename,
            file_id=file_id,
            path=path,
        )
    except Exception:
        await received.writer.discard()
        raise
    send_answer(request, 0, SUCCESS, file.path, library.public_url() + file.path)


def file_id_of(path: str) -> str | None:
    """The file id in an msfs download path, or None when the path is not one of ours."""
    found = MSFS_PATH.fullmatch(path)
    return found.group("file_id") if found else None


async def download(context: MediaContext, request: MediaRequest, path: str) -> None:
    """``GET|HEAD /g0/...``: a stored picture, to anyone who has its (unguessable) path."""
    decoded = unquote(path)
    if ".." in decoded or decoded.startswith("/") or "\\" in decoded or "\x00" in decoded:
        log.info("msfs: refused path {path!r} from {ip}", path=path, ip=request.client_ip())
        raise HttpError(400, "bad path")
    file_id = file_id_of(path)
    file = await context.library.get_file(file_id) if file_id else None
    if file is None or file.path != path:
        raise HttpError(404)
    await downloads.serve(context, request, file)
