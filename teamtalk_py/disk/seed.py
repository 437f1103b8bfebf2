"""The seed system's cloud-disk API, at its paths, with its field names and codes.

Every answer is ``200`` with a JSON object whose ``code`` is a string, as the seed's
FastCGI programs answered (a server error is a ``500`` with the call's failure code).
Requests are JSON objects (``/upload``: ``multipart/form-data``). The routes are listed in
``disk/routes.py``; the work is done by ``CloudDisk``.

| call | codes |
|---|---|
| ``/reg`` | ``002`` created, ``003`` name taken, ``004`` failed (or registration off) |
| ``/login`` | ``000`` + ``token``, ``001`` failed (wrong password, locked out) |
| ``/upload`` | ``008`` stored, ``009`` failed |
| ``/md5`` | ``004`` you have it, ``005`` added without upload, ``006`` upload it |
| ``/myfiles?cmd=count``, ``/sharefiles?cmd=count`` | ``{"num", "code": "110"}`` |
| ``/myfiles?cmd=normal|pvasc|pvdesc`` | ``{"file": [...]}``, ``015`` failed |
| ``/dealfile?cmd=share`` | ``010`` shared, ``011`` failed, ``012`` already in the list |
| ``/dealfile?cmd=del`` | ``013`` deleted, ``014`` failed |
| ``/dealfile?cmd=pv``, ``/myfiles?cmd=pv``, ``/dealsharefile?cmd=pv`` | ``016``, ``017`` |
| ``/dealsharefile?cmd=cancel`` | ``018`` taken out of the list, ``019`` failed |
| ``/dealsharefile?cmd=save`` | ``020`` saved, ``021`` you have it, ``022`` failed |

What differs from the seed, on purpose:

* **Every call but ``/reg`` and ``/login`` needs the token** (the seed's ``cancel``,
  ``save`` and share list took none, and ``/upload`` carried none): the ``token`` field of
  the JSON body, ``Authorization: Bearer TOKEN``, or for ``/upload`` a ``token="…"``
  parameter beside ``user``, ``filename``, ``md5`` and ``size`` in the part's
  ``Content-Disposition``. The user is the token's: a body whose ``user`` (or
  ``username``) names anybody else is refused. A missing or refused token is answered
  ``111`` (what the seed's ``count`` answers for a bad token, and what clients derived
  from it expect everywhere).
* ``/upload`` computes the MD5 (and SHA-256) of what arrives and refuses (``009``) bytes
  whose MD5 or size differ from the declared ``md5`` and ``size``.
* ``/md5`` answers ``005`` only when bytes with that MD5 are already readable by the
  caller (their own files or the public list), never from the claimed hash alone.
* Lists carry the files under ``file`` (the seed's key) and ``files`` (its clients' key).
* The token is the media service's API token (``POST /api/v1/token`` gives the same);
  failed logins count towards the lockout of PDU logins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from python_multipart.multipart import parse_options_header
from twisted.logger import Logger

from teamtalk_py.auth.tokens import InvalidToken, TokenRefused
from teamtalk_py.disk.cloud_disk import (
    AlreadyShared,
    BadRequest,
    DiskError,
    NotReadable,
    check_md5,
    check_name,
    file_type,
    page_bounds,
)
from teamtalk_py.disk.context import DiskContext
from teamtalk_py.disk.registration import Registered
from teamtalk_py.media.http import HttpError, MediaRequest, SmallBody, StreamedBody, send_json
from teamtalk_py.media.library import StorageFull
from teamtalk_py.media.multipart import MultipartError, MultipartFile, ReceivedFile, header_text
from teamtalk_py.store.accounts import UserRow
from teamtalk_py.store.disk import DiskFileRow, Order, SharedFileRow

log = Logger(namespace="teamtalk.disk.seed")

LOGIN_OK, LOGIN_FAILED = "000", "001"
REG_OK, REG_TAKEN, REG_FAILED = "002", "003", "004"
MD5_HAVE, MD5_DONE, MD5_UPLOAD = "004", "005", "006"
UPLOAD_OK, UPLOAD_FAILED = "008", "009"
SHARE_OK, SHARE_FAILED, SHARE_TAKEN = "010", "011", "012"
DELETE_OK, DELETE_FAILED = "013", "014"
LIST_FAILED = "015"
PV_OK, PV_FAILED = "016", "017"
CANCEL_OK, CANCEL_FAILED = "018", "019"
SAVE_OK, SAVE_HAVE, SAVE_FAILED = "020", "021", "022"
TOKEN_OK, TOKEN_REFUSED = "110", "111"

#: Bytes of multipart framing allowed on top of the file itself.
FRAMING_ALLOWANCE = 64 * 1024


class Refused(Exception):
    """No valid token, or a request naming another user than the token's."""


def code(value: str) -> dict[str, Any]:
    return {"code": value}


def _answer_bytes(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def answer(context: DiskContext, request: MediaRequest, status: int, body: dict[str, Any]) -> None:
    route = request.route.pattern if request.route is not None else "?"
    context.count_answer(route, str(body.get("code", "")))
    send_json(request, status, body)


# -- requests ------------------------------------------------------------------------------


@dataclass
class Call:
    """One request of the seed's API: its JSON body, and the user its token stands for
    (None for ``/reg`` and ``/login``)."""

    body: dict[str, Any]
    user: UserRow | None
    address: str

    @property
    def user_id(self) -> int:
        assert self.user is not None
        return self.user.id

    def text(self, *keys: str, default: str | None = None) -> str:
        """The first of ``keys`` the body has as a string (the seed and its clients spell
        some fields two ways)."""
        for key in keys:
            value = self.body.get(key)
            if isinstance(value, str):
                return value
        if default is None:
            raise BadRequest(f"{keys[0]} is missing")
        return default

    def md5(self) -> str:
        return check_md5(self.text("md5"))

    def filename(self) -> str:
        return check_name(self.text("filename", "fileName"))

    def page(self) -> tuple[int, int]:
        return page_bounds(self.body.get("start", 0), self.body.get("count", 10))


def json_body(request: MediaRequest) -> dict[str, Any]:
    assert isinstance(request.content, SmallBody)
    raw = request.content.getvalue()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def bearer(request: MediaRequest) -> str | None:
    header = request.header(b"authorization")
    if header is None:
        return None
    scheme, _, value = header.decode("latin-1").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def token_user(context: DiskContext, token: str | None, named: object) -> UserRow:
    """The user ``token`` stands for; ``Refused`` without a valid one, or when the request
    names (``user``) somebody else."""
    if not token:
        raise Refused("no token")
    try:
        user = await context.tokens.verify_user(token)
    except InvalidToken as e:
        raise Refused(str(e)) from None
    if named is not None and named != user.name:
        raise Refused(f"the token is not {named!r}'s")
    return user


SeedCall = Callable[[DiskContext, Call], Awaitable[dict[str, Any]]]
Handler = Callable[[DiskContext, MediaRequest], Awaitable[None]]


def seed_call(failure: str, *, authenticated: bool = True) -> Callable[[SeedCall], Handler]:
    """An HTTP handler around ``fn``: parses the body, checks the token, answers what
    ``fn`` returns; a refused token is ``111``, anything else that fails ``failure``."""

    def wrap(fn: SeedCall) -> Handler:
        async def handler(context: DiskContext, request: MediaRequest) -> None:
            status = 200
            try:
                body = json_body(request)
                user = None
                if authenticated:
                    token = body.get("token")
                    user = await token_user(
                        context,
                        token if isinstance(token, str) else bearer(request),
                        body.get("user", body.get("username")),
                    )
                result = await fn(context, Call(body, user, request.client_ip()))
            except Refused as e:
                log.info("{path}: refused ({why})", path=_path(request), why=str(e))
                result = code(TOKEN_REFUSED)
            except DiskError as e:
                log.debug("{path}: {why}", path=_path(request), why=str(e))
                result = code(failure)
            except Exception:
                log.failure("{path} failed", path=_path(request))
                status, result = 500, code(failure)
            answer(context, request, status, result)

        handler.__doc__ = fn.__doc__
        return handler

    return wrap


def _path(request: MediaRequest) -> str:
    return request.uri.decode("latin-1", "replace")


# -- answers -------------------------------------------------------------------------------


def _time(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def file_item(context: DiskContext, file: DiskFileRow, owner: str) -> dict[str, Any]:
    """A file as the seed lists it."""
    return {
        "user": owner,
        "md5": file.md5,
        "time": _time(file.created),
        "filename": file.name,
        "share_status": 0 if file.share_id is None else 1,
        "pv": file.pv,
        "url": context.disk.file_url(file),
        "size": file.size,
        "type": file_type(file.name),
    }


def share_item(context: DiskContext, share: SharedFileRow) -> dict[str, Any]:
    return {
        "user": share.owner_name,
        "md5": share.md5,
        "time": _time(share.created),
        "filename": share.name,
        "share_status": 1,
        "pv": share.pv,
        "url": context.disk.share_url(share),
        "size": share.size,
        "type": file_type(share.name),
    }


def listing(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"file": items, "files": items}


# -- accounts ------------------------------------------------------------------------------


@seed_call(REG_FAILED, authenticated=False)
async def register(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /reg`` ``{userName, nickName, password, phone, email}``."""
    outcome = await context.registration.register(
        call.text("userName", "user_name", "username"),
        call.text("nickName", "nick_name", default=""),
        call.text("password", "firstPwd", "first_pwd"),
        call.text("phone", default=""),
        call.text("email", default=""),
        call.address,
    )
    return code({Registered.CREATED: REG_OK, Registered.TAKEN: REG_TAKEN}.get(outcome, REG_FAILED))


@seed_call(LOGIN_FAILED, authenticated=False)
async def login(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /login`` ``{username, password}`` (password: the MD5 hex) -> the token."""
    name, password = call.text("username", "user"), call.text("password", "pwd")
    try:
        token = await context.tokens.issue_for_password(name, check_md5(password), call.address)
    except TokenRefused as e:
        log.info("disk login of {name!r} refused{locked}", name=name,
                 locked=" (locked out)" if e.locked else "")  # fmt: skip
        return code(LOGIN_FAILED)
    return {"code": LOGIN_OK, "token": token.value}


# -- a user's files ------------------------------------------------------------------------


@seed_call(MD5_UPLOAD)
async def instant_upload(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /md5`` ``{user, token, md5, fileName}``."""
    try:
        _, added = await context.disk.add_known(call.user_id, call.md5(), call.filename())
    except NotReadable:
        return code(MD5_UPLOAD)
    return code(MD5_DONE if added else MD5_HAVE)


@seed_call(TOKEN_REFUSED)
async def count_my_files(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /myfiles?cmd=count`` ``{user, token}``."""
    return {"num": str(await context.disk.count_files(call.user_id)), "code": TOKEN_OK}


def my_files(order: Order) -> Handler:
    @seed_call(LIST_FAILED)
    async def list_files(context: DiskContext, call: Call) -> dict[str, Any]:
        """``POST /myfiles?cmd=normal|pvasc|pvdesc`` ``{user, token, start, count}``."""
        assert call.user is not None
        files = await context.disk.files(call.user_id, order, *call.page())
        return listing([file_item(context, f, call.user.name) for f in files])

    return list_files


@seed_call(PV_FAILED)
async def count_download(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /dealfile?cmd=pv`` (and ``/myfiles?cmd=pv``) ``{user, token, md5, filename}``."""
    file = await context.disk.find(call.user_id, call.md5(), call.filename())
    await context.disk.count_download(call.user_id, file.file_id)
    return code(PV_OK)


@seed_call(SHARE_FAILED)
async def share(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /dealfile?cmd=share`` ``{user, token, md5, filename}``."""
    file = await context.disk.find(call.user_id, call.md5(), call.filename())
    try:
        await context.disk.publish(call.user_id, file.file_id)
    except AlreadyShared:
        return code(SHARE_TAKEN)
    return code(SHARE_OK)


@seed_call(DELETE_FAILED)
async def delete(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /dealfile?cmd=del`` ``{user, token, md5, filename}``."""
    file = await context.disk.find(call.user_id, call.md5(), call.filename())
    await context.disk.delete(call.user_id, file.file_id)
    return code(DELETE_OK)


# -- the public list -----------------------------------------------------------------------


@seed_call(TOKEN_REFUSED)
async def count_shared(context: DiskContext, call: Call) -> dict[str, Any]:
    """``GET|POST /sharefiles?cmd=count``."""
    return {"num": str(await context.disk.count_shares()), "code": TOKEN_OK}


@seed_call(LIST_FAILED)
async def shared_files(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /sharefiles?cmd=normal`` ``{token, start, count}``."""
    shares = await context.disk.shares(Order.NORMAL, *call.page())
    return listing([share_item(context, s) for s in shares])


def ranking(order: Order) -> Handler:
    @seed_call(LIST_FAILED)
    async def ranked(context: DiskContext, call: Call) -> dict[str, Any]:
        """``POST /sharefiles?cmd=pvasc|pvdesc`` ``{token, start, count}``."""
        shares = await context.disk.shares(order, *call.page())
        return listing([{"filename": s.name, "pv": s.pv} for s in shares])

    return ranked


@seed_call(CANCEL_FAILED)
async def cancel_share(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /dealsharefile?cmd=cancel`` ``{user, token, md5, filename}``: the owner
    takes their file out of the public list."""
    shared = await context.disk.find_share(call.md5(), call.filename())
    await context.disk.unpublish(call.user_id, shared.share_id)
    return code(CANCEL_OK)


@seed_call(SAVE_FAILED)
async def save(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /dealsharefile?cmd=save`` ``{user, token, md5, filename}``."""
    shared = await context.disk.find_share(call.md5(), call.filename())
    _, added = await context.disk.save(call.user_id, shared.share_id)
    return code(SAVE_OK if added else SAVE_HAVE)


@seed_call(PV_FAILED)
async def count_share_download(context: DiskContext, call: Call) -> dict[str, Any]:
    """``POST /dealsharefile?cmd=pv`` ``{user, token, md5, filename}``."""
    shared = await context.disk.find_share(call.md5(), call.filename())
    await context.disk.count_share_download(shared.share_id)
    return code(PV_OK)


# -- upload --------------------------------------------------------------------------------


class SeedUpload(MultipartFile):
    """The file of ``/upload``: its part's ``Content-Disposition`` carries ``user``,
    ``filename``, ``md5``, ``size`` (and here ``token``), checked before any byte of the
    file is written."""

    def __init__(
        self, context: DiskContext, body: StreamedBody, boundary: bytes, token: str | None
    ) -> None:
        limit = context.media.max_upload_size
        super().__init__(context.io, lambda: context.files.receive(md5=True), body, boundary, limit)
        self.context = context
        self.token = token
        self.user: UserRow | None = None
        self.declared_md5 = ""
        self.declared_size: int | None = None

    def accept(self, filename: str, options: dict[bytes, bytes]) -> Awaitable[None]:
        return self._accept(filename, options)

    async def _accept(self, filename: str, options: dict[bytes, bytes]) -> None:
        check_name(filename)
        token = options.get(b"token")
        named = options.get(b"user")
        self.user = await token_user(
            self.context,
            header_text(token) if token else self.token,
            header_text(named) if named is not None else None,
        )
        self.declared_md5 = check_md5(header_text(options.get(b"md5", b"")))
        size = options.get(b"size")
        if size is not None:
            try:
                self.declared_size = int(size)
            except ValueError:
                raise BadRequest("size must be a number") from None
            limit = self.max_size
            if self.declared_size < 0 or (limit and self.declared_size > limit):
                raise BadRequest(f"size must be 0 .. {limit}")
        await self.context.disk.check_quota(self.user.id, self.declared_size or 0)
        await self.context.check_room(self.declared_size or 0)


_JSON = {b"Content-Type": b"application/json; charset=utf-8"}


async def upload_body(
    context: DiskContext, request: MediaRequest, body: StreamedBody, length: int | None
) -> SeedUpload:
    """Body factory of ``/upload``: what can be refused from the headers is, at once."""
    limit = context.media.max_upload_size
    kind, options = parse_options_header(request.header(b"content-type") or b"")
    boundary = options.get(b"boundary")
    if (limit and length is not None and length > limit + FRAMING_ALLOWANCE) or (
        kind != b"multipart/form-data" or not boundary
    ):
        context.count_answer("/upload", UPLOAD_FAILED)
        raise HttpError(200, body=_answer_bytes(code(UPLOAD_FAILED)), headers=dict(_JSON))
    return SeedUpload(context, body, boundary, bearer(request))


async def upload(context: DiskContext, request: MediaRequest) -> None:
    """``POST /upload``: the file is stored once its MD5 and size are the declared ones."""
    assert isinstance(request.content, StreamedBody)
    status = 200
    try:
        received: ReceivedFile = await request.content.outcome()
        consumer = request.content.consumer
        assert isinstance(consumer, SeedUpload) and consumer.user is not None
        incoming = received.writer.file
        if incoming.md5 != consumer.declared_md5 or consumer.declared_size not in (
            None,
            incoming.size,
        ):
            log.info(
                "upload of {name!r} by {user} refused: MD5/size {md5}/{size} declared "
                "{declared_md5}/{declared_size}",
                name=received.filename, user=consumer.user.name, md5=incoming.md5,
                size=incoming.size, declared_md5=consumer.declared_md5,
                declared_size=consumer.declared_size,
            )  # fmt: skip
            await received.writer.discard()
            result = code(UPLOAD_FAILED)
        else:
            await context.disk.add_received(incoming, consumer.user.id, received.filename)
            result = code(UPLOAD_OK)
    except Refused as e:
        log.info("/upload refused ({why})", why=str(e))
        result = code(TOKEN_REFUSED)
    except (DiskError, MultipartError, StorageFull) as e:
        log.info("/upload failed: {why}", why=str(e))
        result = code(UPLOAD_FAILED)
    except HttpError:
        raise  # refused from the headers: answered as the body factory said
    except Exception:
        log.failure("/upload failed")
        status, result = 500, code(UPLOAD_FAILED)
    answer(context, request, status, result)
