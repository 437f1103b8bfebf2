"""Rows of the cloud disk: each user's files (``disk_files``) and the public list of shared
files (``disk_shares``).

A ``disk_files`` row refers to one content blob (``teamtalk_py.store.content``) and is
inserted and deleted only through ``teamtalk_py.content.blobs.Blobs``, so the blob's
reference count changes in the same transaction. File names are data: they are stored,
listed and compared, never used as a path. Every statement takes its values as
parameters; the only SQL assembled from pieces is the ORDER BY chosen from
``ORDERS``. Download counts move with ``pv = pv + 1`` in the database, never by
read-then-write.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from teamtalk_py.store.txn import Txn, placeholders


class Order(enum.Enum):
    """How a list is sorted: as added, or by download count (the seed's cmd values)."""

    NORMAL = "normal"
    PV_ASC = "pvasc"
    PV_DESC = "pvdesc"


#: ORDER BY clauses (code constants; ties keep the order of addition).
ORDERS = {
    Order.NORMAL: "id",
    Order.PV_ASC: "pv, id",
    Order.PV_DESC: "pv DESC, id",
}


@dataclass(frozen=True, slots=True)
class DiskFileRow:
    file_id: str
    owner_id: int
    name: str
    md5: str
    sha256: str
    size: int
    pv: int
    created: int
    #: The id of its entry in the public list, None when it is not shared.
    share_id: str | None = None

    @property
    def content_type(self) -> str:
        """Files of the disk are always served as attachments (never sniffed)."""
        return ""


@dataclass(frozen=True, slots=True)
class SharedFileRow:
    share_id: str
    file_id: str
    owner_id: int
    owner_name: str
    name: str
    md5: str
    sha256: str
    size: int
    pv: int
    created: int

    @property
    def content_type(self) -> str:
        return ""


_FILE_COLUMNS = "f.file_id, f.owner_id, f.name, f.md5, f.sha256, f.size, f.pv, f.created"
_FILES = (
    f"SELECT {_FILE_COLUMNS}, s.share_id"
    " FROM disk_files f LEFT JOIN disk_shares s ON s.file_id = f.file_id"
)
_SHARES = (
    "SELECT s.share_id, s.file_id, s.owner_id, COALESCE(u.name, ''), s.name, s.md5,"
    " f.sha256, f.size, s.pv, s.created"
    " FROM disk_shares s JOIN disk_files f ON f.file_id = s.file_id"
    " LEFT JOIN users u ON u.id = s.owner_id"
)


def _file(row: tuple) -> DiskFileRow:
    return DiskFileRow(
        row[0], int(row[1]), row[2], row[3], row[4], int(row[5]), int(row[6]), int(row[7]), row[8]
    )


def _share(row: tuple) -> SharedFileRow:
    return SharedFileRow(
        row[0], row[1], int(row[2]), row[3], row[4], row[5], row[6], int(row[7]), int(row[8]),
        int(row[9]),
    )  # fmt: skip


# -- a user's files ---------------------------------------------------------------------


def insert_file(txn: Txn, file: DiskFileRow) -> DiskFileRow:
    """Add a file to its owner's list; DuplicateError when they hold that (MD5, name)."""
    txn.execute(
        "INSERT INTO disk_files (file_id, owner_id, name, md5, sha256, size, pv, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            file.file_id,
            file.owner_id,
            file.name,
            file.md5,
            file.sha256,
            file.size,
            file.pv,
            file.created,
        ),
    )
    return file


def get_file(txn: Txn, owner_id: int, file_id: str) -> DiskFileRow | None:
    row = txn.execute(
        f"{_FILES} WHERE f.file_id = ? AND f.owner_id = ?", (file_id, owner_id)
    ).fetchone()
    return None if row is None else _file(row)


def get_file_by_id(txn: Txn, file_id: str) -> DiskFileRow | None:
    """A file whoever owns it (its id is its download capability)."""
    row = txn.execute(f"{_FILES} WHERE f.file_id = ?", (file_id,)).fetchone()
    return None if row is None else _file(row)


def find_file(txn: Txn, owner_id: int, md5: str, name: str) -> DiskFileRow | None:
    """The owner's file with this MD5 and name (how the seed's clients name a file)."""
    row = txn.execute(
        f"{_FILES} WHERE f.owner_id = ? AND f.md5 = ? AND f.name = ?", (owner_id, md5, name)
    ).fetchone()
    return None if row is None else _file(row)


def count_files(txn: Txn, owner_id: int) -> int:
    row = txn.execute("SELECT COUNT(*) FROM disk_files WHERE owner_id = ?", (owner_id,)).fetchone()
    return int(row[0]) if row else 0


def list_files(txn: Txn, owner_id: int, order: Order, start: int, count: int) -> list[DiskFileRow]:
    rows = txn.execute(
        f"{_FILES} WHERE f.owner_id = ? ORDER BY {_order('f', order)} LIMIT ? OFFSET ?",
        (owner_id, count, start),
    ).fetchall()
    return [_file(r) for r in rows]


def _order(table: str, order: Order) -> str:
    return ", ".join(f"{table}.{term}" for term in ORDERS[order].split(", "))


@dataclass(frozen=True, slots=True)
class Deleted:
    """A file deleted, and the id of its entry in the public list (None: not shared)."""

    share_id: str | None


def delete_file(txn: Txn, owner_id: int, file_id: str) -> Deleted | None:
    """Delete the owner's file and its entry in the public list (None: no such file)."""
    txn.execute("DELETE FROM disk_files WHERE file_id = ? AND owner_id = ?", (file_id, owner_id))
    if txn.rowcount < 1:
        return None
    share = txn.execute("SELECT share_id FROM disk_shares WHERE file_id = ?", (file_id,)).fetchone()
    if share is None:
        return Deleted(None)
    txn.execute("DELETE FROM disk_shares WHERE file_id = ?", (file_id,))
    return Deleted(str(share[0]))


def count_download(txn: Txn, owner_id: int, file_id: str) -> int | None:
    """One more download of the owner's file; its new count (None: no such file)."""
    txn.execute(
        "UPDATE disk_files SET pv = pv + 1 WHERE file_id = ? AND owner_id = ?", (file_id, owner_id)
    )
    if txn.rowcount < 1:
        return None
    row = txn.execute("SELECT pv FROM disk_files WHERE file_id = ?", (file_id,)).fetchone()
    return None if row is None else int(row[0])


def readable_blob(
    txn: Txn, user_id: int, md5: str, *, lock: bool = False
) -> tuple[str, int] | None:
    """``(sha256, size)`` of bytes with this MD5 that ``user_id`` may already read: in one
    of their own files, else in the public list; None when there are none. ``lock``: the
    row found stays locked until the transaction ends (its blob cannot lose it)."""
    suffix = txn.for_update if lock else ""
    row = txn.execute(
        "SELECT sha256, size FROM disk_files WHERE owner_id = ? AND md5 = ? LIMIT 1" + suffix,
        (user_id, md5),
    ).fetchone()
    if row is None:
        row = txn.execute(
            "SELECT f.sha256, f.size FROM disk_shares s JOIN disk_files f ON f.file_id = s.file_id"
            " WHERE s.md5 = ? LIMIT 1" + suffix,
            (md5,),
        ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


# -- the public list --------------------------------------------------------------------


def share_file(txn: Txn, owner_id: int, file_id: str, share_id: str, *, now: int) -> bool:
    """Put the owner's file in the public list; False when they have no such file.
    DuplicateError when a file of that (MD5, name) is there already (theirs or anyone's)."""
    file = txn.execute(
        "SELECT md5, name FROM disk_files WHERE file_id = ? AND owner_id = ?" + txn.for_update,
        (file_id, owner_id),
    ).fetchone()
    if file is None:
        return False
    txn.execute(
        "INSERT INTO disk_shares (share_id, file_id, owner_id, md5, name, pv, created)"
        " VALUES (?, ?, ?, ?, ?, 0, ?)",
        (share_id, file_id, owner_id, file[0], file[1], now),
    )
    return True


def unshare(txn: Txn, owner_id: int, share_id: str) -> bool:
    """Take the owner's file out of the public list; False when it was not theirs there."""
    txn.execute("DELETE FROM disk_shares WHERE share_id = ? AND owner_id = ?", (share_id, owner_id))
    return txn.rowcount > 0


def get_share(txn: Txn, share_id: str) -> SharedFileRow | None:
    row = txn.execute(f"{_SHARES} WHERE s.share_id = ?", (share_id,)).fetchone()
    return None if row is None else _share(row)


def shared_blob(txn: Txn, share_id: str, *, lock: bool = False) -> str | None:
    """The SHA-256 of a shared file (None: not in the list); ``lock``: its rows stay
    locked until the transaction ends."""
    row = txn.execute(
        "SELECT f.sha256 FROM disk_shares s JOIN disk_files f ON f.file_id = s.file_id"
        " WHERE s.share_id = ?" + (txn.for_update if lock else ""),
        (share_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def find_share(txn: Txn, md5: str, name: str) -> SharedFileRow | None:
    row = txn.execute(f"{_SHARES} WHERE s.md5 = ? AND s.name = ?", (md5, name)).fetchone()
    return None if row is None else _share(row)


def count_shares(txn: Txn) -> int:
    row = txn.execute("SELECT COUNT(*) FROM disk_shares").fetchone()
    return int(row[0]) if row else 0


def list_shares(txn: Txn, order: Order, start: int, count: int) -> list[SharedFileRow]:
    rows = txn.execute(
        f"{_SHARES} ORDER BY {_order('s', order)} LIMIT ? OFFSET ?", (count, start)
    ).fetchall()
    return [_share(r) for r in rows]


def shares_by_ids(txn: Txn, share_ids: list[str]) -> dict[str, SharedFileRow]:
    if not share_ids:
        return {}
    rows = txn.execute(
        f"{_SHARES} WHERE s.share_id IN ({placeholders(len(share_ids))})", share_ids
    ).fetchall()
    return {r[0]: _share(r) for r in rows}


def share_counts(txn: Txn, after: int, limit: int) -> list[tuple[int, str, int]]:
    """``(id, share_id, pv)`` of the shares after row ``after``, in id order (a page of
    what rebuilding the ranking reads)."""
    rows = txn.execute(
        "SELECT id, share_id, pv FROM disk_shares WHERE id > ? ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()
    return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


def count_share_download(txn: Txn, share_id: str) -> int | None:
    """One more download of a shared file; its new count (None: not in the list)."""
    txn.execute("UPDATE disk_shares SET pv = pv + 1 WHERE share_id = ?", (share_id,))
    if txn.rowcount < 1:
        return None
    row = txn.execute("SELECT pv FROM disk_shares WHERE share_id = ?", (share_id,)).fetchone()
    return None if row is None else int(row[0])
