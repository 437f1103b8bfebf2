"""Offline file records: what the file service stored and what a receiver is offered.

Plain synchronous repository functions ``fn(txn, ...)`` (see ``txn.py``). One row per
offline task in ``offline_files``; its ``status`` walks

    UPLOADING ──(last byte durable)──► UPLOADED ──(sender's add-offline)──► OFFERED
        └──────────────┴──────────── DELETED ◄──(receiver's del-offline, sender's cancel)

``OFFERED`` is 0, the only status the reference ever wrote, so ``has-offline`` lists
exactly what the reference would. ``uploaded`` is the durable byte count the file service
last recorded, so any node can answer "how far did this upload get" without asking the
node that holds the connection. ``DELETED`` rows, and rows untouched for longer than the
offline TTL, are what the file service's sweep removes (file first, then the row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from teamtalk_py.store.txn import DuplicateError, Txn, placeholders

OFFERED = 0
UPLOADING = 1
UPLOADED = 2
DELETED = 3

_COLUMNS = "task_id, from_id, to_id, file_name, file_size, status, uploaded, created, updated"


@dataclass(frozen=True, slots=True)
class OfflineFile:
    task_id: str
    from_id: int
    to_id: int
    file_name: str
    file_size: int
    status: int
    uploaded: int
    created: int
    updated: int

    @property
    def complete(self) -> bool:
        return self.uploaded >= self.file_size


def _row(row: tuple[Any, ...]) -> OfflineFile:
    return OfflineFile(
        str(row[0]), int(row[1]), int(row[2]), str(row[3]), *(int(v) for v in row[4:])
    )


def get(txn: Txn, task_id: str) -> OfflineFile | None:
    row = txn.execute(
        f"SELECT {_COLUMNS} FROM offline_files WHERE task_id = ?", (task_id,)
    ).fetchone()
    return _row(row) if row else None


def create_upload(
    txn: Txn, task_id: str, from_id: int, to_id: int, file_name: str, file_size: int, *, now: int
) -> None:
    """The file service accepted an offline upload (nothing stored yet)."""
    txn.execute(
        "INSERT INTO offline_files"
        " (task_id, from_id, to_id, file_name, file_size, status, uploaded, created, updated)"
        " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (task_id, from_id, to_id, file_name, file_size, UPLOADING, now, now),
    )


def record_progress(txn: Txn, task_id: str, uploaded: int, *, now: int) -> None:
    """``uploaded`` bytes are durable; the upload becomes UPLOADED once they are all there."""
    txn.execute(
        "UPDATE offline_files SET uploaded = ?, updated = ?,"
        " status = CASE WHEN status = ? AND ? >= file_size THEN ? ELSE status END"
        " WHERE task_id = ? AND status <> ?",
        (uploaded, now, UPLOADING, uploaded, UPLOADED, task_id, DELETED),
    )


def progress(txn: Txn, task_id: str) -> tuple[int, int] | None:
    """``(uploaded, file_size)`` of an offline task, or None for an unknown task."""
    row = txn.execute(
        "SELECT uploaded, file_size FROM offline_files WHERE task_id = ?", (task_id,)
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def stored_bytes(txn: Txn, from_id: int | None = None) -> int:
    """Bytes of every offline file kept (uploads in progress at their full size), or of
    those ``from_id`` sent: what ``file.max_user_offline_bytes`` / ``max_offline_bytes``
    limit."""
    sql = "SELECT COALESCE(SUM(file_size), 0) FROM offline_files WHERE status <> ?"
    args: tuple[int, ...] = (DELETED,)
    if from_id is not None:
        sql += " AND from_id = ?"
        args += (from_id,)
    row = txn.execute(sql, args).fetchone()
    return int(row[0]) if row else 0


def offer(
    txn: Txn,
    task_id: str,
    from_id: int,
    to_id: int,
    file_name: str,
    file_size: int,
    *,
    now: int,
) -> OfflineFile | None:
    """The sender's add-offline: offer a finished upload to its receiver.

    A row the file service created must belong to this sender and receiver and be fully
    uploaded; otherwise nothing changes and None is returned. Without any row (a file
    service on another database) the record is inserted as the reference does.
    """
    row = get(txn, task_id)
    if row is None:
        try:
            txn.execute(
                "INSERT INTO offline_files (task_id, from_id, to_id, file_name, file_size,"
                " status, uploaded, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (task_id, from_id, to_id, file_name, file_size, OFFERED, file_size, now, now),
            )
        except DuplicateError:
            return None
        return get(txn, task_id)
    if row.from_id != from_id or row.to_id != to_id:
        return None
    if row.status == OFFERED:
        return row
    if row.status != UPLOADED:
        return None
    txn.execute(
        "UPDATE offline_files SET status = ?, updated = ? WHERE task_id = ?",
        (OFFERED, now, task_id),
    )
    return get(txn, task_id)


def offered_to(txn: Txn, to_id: int) -> list[OfflineFile]:
    """Files waiting for ``to_id``, oldest first (the has-offline answer)."""
    rows = txn.execute(
        f"SELECT {_COLUMNS} FROM offline_files WHERE to_id = ? AND status = ? ORDER BY created, id",
        (to_id, OFFERED),
    ).fetchall()
    return [_row(r) for r in rows]


def withdraw(txn: Txn, task_id: str, from_id: int, to_id: int, by_user: int, *, now: int) -> bool:
    """del-offline: the row matching ``(task_id, from_id, to_id)`` is marked DELETED when
    ``by_user`` is its sender or receiver; True when a row changed."""
    if by_user not in (from_id, to_id):
        return False
    txn.execute(
        "UPDATE offline_files SET status = ?, updated = ?"
        " WHERE task_id = ? AND from_id = ? AND to_id = ? AND status <> ?",
        (DELETED, now, task_id, from_id, to_id, DELETED),
    )
    return txn.rowcount > 0


def cancel(txn: Txn, task_id: str, *, now: int) -> None:
    """The uploader cancelled: the file goes at the next sweep."""
    txn.execute(
        "UPDATE offline_files SET status = ?, updated = ? WHERE task_id = ?",
        (DELETED, now, task_id),
    )


def sweepable(txn: Txn, *, expired_before: int, limit: int = 500) -> list[str]:
    """Task ids whose file should go: DELETED rows, and rows idle since ``expired_before``."""
    rows = txn.execute(
        "SELECT task_id FROM offline_files WHERE status = ? OR updated < ? ORDER BY id LIMIT ?",
        (DELETED, expired_before, limit),
    ).fetchall()
    return [str(r[0]) for r in rows]


def forget(txn: Txn, task_ids: list[str]) -> None:
    """Drop the rows of files the sweep removed."""
    if task_ids:
        txn.execute(
            f"DELETE FROM offline_files WHERE task_id IN ({placeholders(len(task_ids))})",
            task_ids,
        )
