"""``MediaContext``: what every HTTP handler of the media listener receives: the library,
tokens, the uploads in progress and the authentication helpers.

A leaf of the package: the handlers (``api.py``, ``msfs.py``, ``tus.py``, ``openapi.py``,
``disk/api.py``) and the service that builds the context (``service.py``) import it; it
imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from teamtalk_py.auth.tokens import InvalidToken, Tokens
from teamtalk_py.config import MediaConfig
from teamtalk_py.disk.cloud_disk import CloudDisk
from teamtalk_py.media.http import HttpError, MediaRequest
from teamtalk_py.media.library import MediaLibrary
from teamtalk_py.media.uploads import Uploads
from teamtalk_py.store.media import MediaFileRow


@dataclass
class MediaContext:
    config: MediaConfig
    library: MediaLibrary
    tokens: Tokens
    io: Any
    #: The cloud disk's files (its JSON API, ``disk/api.py``).
    disk: CloudDisk | None = None
    tus: Uploads = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.tus is None:
            self.tus = Uploads(self.io, self.library.files)

    async def optional_user(self, request: MediaRequest) -> int | None:
        """The bearer token's user, None without one; 401 for a token that is not valid."""
        header = request.header(b"authorization")
        if header is None:
            return None
        scheme, _, value = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("expected Authorization: Bearer TOKEN")
        try:
            return await self.tokens.verify(value.strip())
        except InvalidToken as e:
            raise _unauthorized(str(e)) from None

    async def required_user(
        self, request: MediaRequest, headers: dict[bytes, bytes] | None = None
    ) -> int:
        try:
            user_id = await self.optional_user(request)
        except HttpError as e:
            e.headers.update(headers or {})
            raise
        if user_id is None:
            error = _unauthorized("Authorization: Bearer TOKEN required (POST /api/v1/token)")
            error.headers.update(headers or {})
            raise error
        request.owner_id = user_id
        return user_id

    async def owned_file(
        self, request: MediaRequest, file_id: str, user_id: int | None
    ) -> MediaFileRow:
        """The file ``file_id`` if ``user_id`` owns it; 404 otherwise (as if absent)."""
        file = await self.library.get_file(file_id)
        if file is None or user_id is None or file.owner_id != user_id:
            raise HttpError(404, "no such file")
        return file


def _unauthorized(message: str) -> HttpError:
    return HttpError(401, message, headers={b"WWW-Authenticate": b'Bearer realm="teamtalk"'})
