"""Reference counts of the content store's blobs (``content_blobs``).

A blob is named by the SHA-256 of its bytes. Whatever refers to one (a media file row
today, a cloud-disk entry later) calls :func:`add_reference` / :func:`drop_reference` in
the same transaction that inserts or deletes its own row, so a count is never off by a
crash. A blob whose count stayed 0 for a grace period is deleted by the sweep
(``teamtalk_py.content.blobs``); the sweep and a new reference to the same bytes take
the same row lock, which is what keeps the sweep from deleting a blob being reused.
"""

from __future__ import annotations

from dataclasses import dataclass

from teamtalk_py.store.txn import Txn, upsert_sql


@dataclass(frozen=True, slots=True)
class BlobRow:
    sha256: str
    size: int
    refcount: int
    updated: int


def add_reference(txn: Txn, sha256: str, size: int, *, now: int) -> int:
    """Count one more reference to ``sha256`` (creating its row); the new count."""
    txn.execute(
        upsert_sql(
            txn.dialect,
            "content_blobs",
            ("sha256", "size", "refcount", "created", "updated"),
            ("sha256",),
            "refcount = refcount + 1, updated = ?",
        ),
        (sha256, size, 1, now, now, now),
    )
    return refcount(txn, sha256) or 0


def drop_reference(txn: Txn, sha256: str, *, now: int) -> int:
    """Count one reference fewer; the new count (a blob at 0 waits for the sweep)."""
    txn.execute(
        "UPDATE content_blobs SET refcount = refcount - 1, updated = ? "
        "WHERE sha256 = ? AND refcount > 0",
        (now, sha256),
    )
    return refcount(txn, sha256) or 0


def refcount(txn: Txn, sha256: str, *, lock: bool = False) -> int | None:
    """The count of ``sha256`` (None when there is no row); ``lock``: hold the row (or,
    when there is none, the place where it would go) until the transaction ends."""
    suffix = txn.for_update if lock else ""
    row = txn.execute(
        "SELECT refcount FROM content_blobs WHERE sha256 = ?" + suffix, (sha256,)
    ).fetchone()
    return None if row is None else int(row[0])


def get_blob(txn: Txn, sha256: str) -> BlobRow | None:
    row = txn.execute(
        "SELECT sha256, size, refcount, updated FROM content_blobs WHERE sha256 = ?", (sha256,)
    ).fetchone()
    return None if row is None else BlobRow(row[0], int(row[1]), int(row[2]), int(row[3]))


def unreferenced(txn: Txn, before: int, limit: int = 500) -> list[str]:
    """Blobs whose count has been 0 since before ``before``: the sweep's candidates."""
    rows = txn.execute(
        "SELECT sha256 FROM content_blobs WHERE refcount = 0 AND updated < ? LIMIT ?",
        (before, limit),
    ).fetchall()
    return [r[0] for r in rows]


def lock_unreferenced(txn: Txn, sha256: str, before: int) -> bool:
    """Inside the sweep's transaction: lock the row and delete it if it is still
    unreferenced since before ``before``; True when the caller may delete the bytes."""
    lock = txn.for_update
    row = txn.execute(
        "SELECT refcount, updated FROM content_blobs WHERE sha256 = ?" + lock, (sha256,)
    ).fetchone()
    if row is None or int(row[0]) != 0 or int(row[1]) >= before:
        return False
    txn.execute("DELETE FROM content_blobs WHERE sha256 = ?", (sha256,))
    return True


def total_stored(txn: Txn) -> tuple[int, int]:
    """``(blobs, bytes)`` of every blob with a row (the store's real disk use)."""
    row = txn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM content_blobs").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
