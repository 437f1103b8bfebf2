"""Rows of the media service: stored files, unfinished uploads, download links, secrets.

A ``media_files`` row refers to one content blob (``teamtalk_py.store.content``); it is
inserted and deleted only through ``teamtalk_py.content.blobs.Blobs`` so that the blob's
reference count changes in the same transaction. Ids are random (128 bits, hex): they
appear in URLs and must not be guessable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from teamtalk_py.store.txn import Dialect, DuplicateError, Txn


class FileKind(enum.IntEnum):
    PICTURE = 1  # msfs upload (chat pictures, the PHP admin's avatars)
    UPLOAD = 2  # finished resumable upload
    AVATAR = 3  # set by teamtalk-admin from a local file


STATUS_LIVE = 0


@dataclass(frozen=True, slots=True)
class MediaFileRow:
    file_id: str
    kind: int
    owner_id: int
    sha256: str
    size: int
    name: str
    content_type: str
    path: str
    created: int


@dataclass(frozen=True, slots=True)
class UploadRow:
    id: str
    owner_id: int
    length: int
    received: int
    name: str
    metadata: str
    created: int
    expires: int


_FILE_COLUMNS = "file_id, kind, owner_id, sha256, size, name, content_type, path, created"
_UPLOAD_COLUMNS = "id, owner_id, length, received, name, metadata, created, expires"


def _file(row: tuple) -> MediaFileRow:
    return MediaFileRow(
        row[0], int(row[1]), int(row[2]), row[3], int(row[4]), row[5], row[6], row[7], int(row[8])
    )


def _upload(row: tuple) -> UploadRow:
    return UploadRow(
        row[0], int(row[1]), int(row[2]), int(row[3]), row[4], row[5], int(row[6]), int(row[7])
    )


# -- files ------------------------------------------------------------------------------


def insert_file(txn: Txn, file: MediaFileRow) -> None:
    txn.execute(
        f"INSERT INTO media_files ({_FILE_COLUMNS}, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            file.file_id,
            file.kind,
            file.owner_id,
            file.sha256,
            file.size,
            file.name[:512],
            file.content_type,
            file.path,
            file.created,
            STATUS_LIVE,
        ),
    )


def get_file(txn: Txn, file_id: str) -> MediaFileRow | None:
    row = txn.execute(
        f"SELECT {_FILE_COLUMNS} FROM media_files WHERE file_id = ? AND status = ?",
        (file_id, STATUS_LIVE),
    ).fetchone()
    return None if row is None else _file(row)


def lock_file(txn: Txn, file_id: str, owner_id: int) -> str | None:
    """The SHA-256 of an owner's file, its row locked until the transaction ends (None:
    no such file of theirs), so its blob keeps this reference meanwhile."""
    lock = txn.for_update
    row = txn.execute(
        "SELECT sha256 FROM media_files WHERE file_id = ? AND owner_id = ? AND status = ?" + lock,
        (file_id, owner_id, STATUS_LIVE),
    ).fetchone()
    return None if row is None else str(row[0])


def delete_file(txn: Txn, file_id: str) -> bool:
    txn.execute("DELETE FROM media_files WHERE file_id = ?", (file_id,))
    if txn.rowcount < 1:
        return False
    txn.execute("DELETE FROM media_links WHERE file_id = ?", (file_id,))
    return True


def files_by_sha256(txn: Txn, sha256: str) -> list[MediaFileRow]:
    rows = txn.execute(
        f"SELECT {_FILE_COLUMNS} FROM media_files WHERE sha256 = ? AND status = ?",
        (sha256, STATUS_LIVE),
    ).fetchall()
    return [_file(r) for r in rows]


def bytes_used(txn: Txn, owner_id: int) -> int:
    """What counts against a user's quota: their files (of the media service and of the
    cloud disk) plus the full length of their unfinished uploads (each user pays for what
    they store, deduplicated or not)."""
    files = txn.execute(
        "SELECT COALESCE(SUM(size), 0) FROM media_files WHERE owner_id = ? AND status = ?",
        (owner_id, STATUS_LIVE),
    ).fetchone()
    uploads = txn.execute(
        "SELECT COALESCE(SUM(length), 0) FROM media_uploads WHERE owner_id = ?", (owner_id,)
    ).fetchone()
    disk = txn.execute(
        "SELECT COALESCE(SUM(size), 0) FROM disk_files WHERE owner_id = ?", (owner_id,)
    ).fetchone()
    return sum(int(row[0]) if row else 0 for row in (files, uploads, disk))


# -- uploads ----------------------------------------------------------------------------


def create_upload(txn: Txn, upload: UploadRow, quota: int) -> bool:
    """Insert an upload unless it would take ``upload.owner_id`` over ``quota`` bytes
    (0 = no quota); False when refused. The check and the insert share the transaction."""
    if quota and bytes_used(txn, upload.owner_id) + upload.length > quota:
        return False
    txn.execute(
        f"INSERT INTO media_uploads ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            upload.id,
            upload.owner_id,
            upload.length,
            upload.received,
            upload.name[:512],
            upload.metadata,
            upload.created,
            upload.expires,
        ),
    )
    return True


def get_upload(txn: Txn, upload_id: str) -> UploadRow | None:
    row = txn.execute(
        f"SELECT {_UPLOAD_COLUMNS} FROM media_uploads WHERE id = ?", (upload_id,)
    ).fetchone()
    return None if row is None else _upload(row)


def record_received(txn: Txn, upload_id: str, before: int, after: int, expires: int) -> bool:
    """Move an upload's durable offset from ``before`` to ``after``; False if another
    request moved it first (the caller's bytes are then not counted)."""
    txn.execute(
        "UPDATE media_uploads SET received = ?, expires = ? WHERE id = ? AND received = ?",
        (after, expires, upload_id, before),
    )
    return txn.rowcount == 1


def delete_upload(txn: Txn, upload_id: str) -> bool:
    txn.execute("DELETE FROM media_uploads WHERE id = ?", (upload_id,))
    return txn.rowcount == 1


def expired_uploads(txn: Txn, now: int, limit: int = 500) -> list[str]:
    rows = txn.execute(
        "SELECT id FROM media_uploads WHERE expires < ? LIMIT ?", (now, limit)
    ).fetchall()
    return [r[0] for r in rows]


def upload_ids(txn: Txn, ids: list[str]) -> set[str]:
    """Which of ``ids`` are unfinished uploads (the sweep spares their files)."""
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        rows = txn.execute(
            f"SELECT id FROM media_uploads WHERE id IN ({', '.join('?' * len(chunk))})", chunk
        ).fetchall()
        found.update(r[0] for r in rows)
    return found


# -- links ------------------------------------------------------------------------------


def create_link(txn: Txn, link_id: str, file_id: str, owner_id: int, *, now: int) -> None:
    txn.execute(
        "INSERT INTO media_links (link_id, file_id, owner_id, created) VALUES (?, ?, ?, ?)",
        (link_id, file_id, owner_id, now),
    )


def resolve_link(txn: Txn, link_id: str) -> MediaFileRow | None:
    row = txn.execute("SELECT file_id FROM media_links WHERE link_id = ?", (link_id,)).fetchone()
    return None if row is None else get_file(txn, row[0])


def revoke_link(txn: Txn, link_id: str, owner_id: int) -> bool:
    txn.execute("DELETE FROM media_links WHERE link_id = ? AND owner_id = ?", (link_id, owner_id))
    return txn.rowcount == 1


# -- secrets ----------------------------------------------------------------------------


def get_or_create_secret(txn: Txn, name: str, candidate: str, *, now: int) -> str:
    """The secret called ``name``; ``candidate`` becomes it if there is none yet (the
    first node to start wins, every later one reads the same value)."""
    row = txn.execute("SELECT value FROM server_secrets WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return row[0]
    try:
        txn.execute(
            "INSERT INTO server_secrets (name, value, created) VALUES (?, ?, ?)",
            (name, candidate, now),
        )
    except DuplicateError:
        # Another node inserted it since our SELECT. On MariaDB/MySQL a plain SELECT
        # would read this transaction's snapshot (REPEATABLE READ), taken before that
        # row was committed, and find nothing; a locking read sees the committed row.
        lock = " LOCK IN SHARE MODE" if txn.dialect is Dialect.MYSQL else ""
        row = txn.execute(
            f"SELECT value FROM server_secrets WHERE name = ?{lock}", (name,)
        ).fetchone()
        assert row is not None
        return row[0]
    return candidate
