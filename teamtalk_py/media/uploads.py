"""The uploads this node is writing now (``tus.py``): each one's open file and lock, kept
between requests, and the headers of every tus answer, refusals included.

A leaf beside ``context.py``, which holds one ``Uploads`` per media service: it knows
the I/O threads and the content store, not the handlers.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer

from teamtalk_py.content.store import ContentStore, IncomingFile
from teamtalk_py.media.http import HttpError
from teamtalk_py.store.media import UploadRow

TUS_VERSION = b"1.0.0"


def tus_headers(**extra: bytes) -> dict[bytes, bytes]:
    headers = {
        b"Tus-Resumable": TUS_VERSION,
        b"Cache-Control": b"no-store",
        b"X-Content-Type-Options": b"nosniff",
    }
    for name, value in extra.items():
        headers[name.replace("_", "-").encode()] = value
    return headers


def refuse(status: int, message: str, **extra: bytes) -> HttpError:
    return HttpError(status, message, headers=tus_headers(**extra))


class UploadSession:
    """This node's handle on one upload while a request writes it: the open file (whose
    SHA-256 covers every byte so far) and the lock. Kept between requests on the same
    node, so a resumed upload is not re-read from disk unless another node wrote it."""

    def __init__(self, upload_id: str, file: IncomingFile) -> None:
        self.upload_id = upload_id
        self.file = file


class Uploads:
    """The uploads this node is writing now (one request per upload at a time)."""

    def __init__(self, io: Callable[..., defer.Deferred], files: ContentStore) -> None:
        self.io = io
        self.files = files
        self.busy: set[str] = set()
        self.sessions: dict[str, UploadSession] = {}

    async def acquire(self, upload: UploadRow) -> UploadSession:
        """The upload's open file, locked, positioned at the recorded offset; 423 when
        another request (here or on another node) is writing it."""
        if upload.id in self.busy:
            raise refuse(423, "another request is writing this upload")
        self.busy.add(upload.id)
        io = self.io
        try:
            session = self.sessions.pop(upload.id, None)
            if session is None:
                try:
                    file = await io(self.files.reopen, upload.id)
                except FileNotFoundError:
                    raise refuse(404, "upload data is gone") from None
                session = UploadSession(upload.id, file)
            if not await io(session.file.lock):
                await io(session.file.close)
                raise refuse(423, "another node is writing this upload")
            if session.file.size != upload.received:
                await io(session.file.reset_to, upload.received)
            return session
        except BaseException:
            self.busy.discard(upload.id)
            raise

    async def release(self, session: UploadSession) -> None:
        io = self.io
        try:
            await io(session.file.unlock)
        finally:
            self.busy.discard(session.upload_id)
            if not session.file.closed:
                self.sessions[session.upload_id] = session

    async def forget(self, upload_id: str) -> None:
        session = self.sessions.pop(upload_id, None)
        if session is not None:
            await self.io(session.file.close)

    async def close_all(self) -> None:
        for upload_id in list(self.sessions):
            await self.forget(upload_id)
