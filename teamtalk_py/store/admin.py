"""What the admin API keeps: admin tokens, console sessions, the admin flag, and the
directory queries (search, paging, counts) only an operator needs.

Plain synchronous repository functions ``fn(txn, ...)`` like ``accounts.py``: the admin
service runs them through the store's ``read``/``write``, ``teamtalk-admin admin-token``
inside ``Database.sync_transaction``. Tokens and session cookies are 256 random bits, so
their SHA-256 is what is stored and looked up (a stolen database holds no usable token);
a slow KDF would add nothing to a secret that cannot be guessed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from teamtalk_py.store import accounts
from teamtalk_py.store import groups as group_store
from teamtalk_py.store.txn import Txn

#: What an admin token starts with (easy to spot in a leaked log or a secret scanner).
TOKEN_PREFIX = "tta_"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# -- admin tokens -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminTokenRow:
    id: int
    name: str
    created: int
    last_used: int


_TOKEN_COLUMNS = "id, name, created, last_used"


def add_admin_token(txn: Txn, name: str, token: str, *, now: int) -> int:
    """Store ``token`` (hashed) under ``name``; its id. A taken name: DuplicateError."""
    if not name or len(name) > 64:
        raise ValueError("an admin token needs a name of 1 to 64 characters")
    txn.execute(
        "INSERT INTO admin_tokens (name, token_hash, created, last_used) VALUES (?, ?, ?, 0)",
        (name, secret_hash(token), now),
    )
    return int(txn.lastrowid)


def list_admin_tokens(txn: Txn) -> list[AdminTokenRow]:
    rows = txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens ORDER BY id").fetchall()
    return [AdminTokenRow(*row) for row in rows]


def revoke_admin_token(txn: Txn, name: str) -> bool:
    """Delete the token called ``name``; False if there is none."""
    txn.execute("DELETE FROM admin_tokens WHERE name = ?", (name,))
    return txn.rowcount > 0


def find_admin_token(txn: Txn, token: str) -> AdminTokenRow | None:
    row = txn.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens WHERE token_hash = ?", (secret_hash(token),)
    ).fetchone()
    return AdminTokenRow(*row) if row else None


def touch_admin_token(txn: Txn, token_id: int, *, now: int) -> None:
    txn.execute("UPDATE admin_tokens SET last_used = ? WHERE id = ?", (now, token_id))


# -- console sessions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminSessionRow:
    user_id: int
    csrf_token: str
    created: int
    expires: int


def add_admin_session(
    txn: Txn, session: str, user_id: int, csrf_token: str, *, now: int, expires: int
) -> None:
    # Expired sessions go whenever a new one starts: the table stays small.
    txn.execute("DELETE FROM admin_sessions WHERE expires < ?", (now,))
    txn.execute(
        "INSERT INTO admin_sessions (session_hash, user_id, csrf_token, created, expires) "
        "VALUES (?, ?, ?, ?, ?)",
        (secret_hash(session), user_id, csrf_token, now, expires),
    )


def find_admin_session(txn: Txn, session: str, *, now: int) -> AdminSessionRow | None:
    row = txn.execute(
        "SELECT user_id, csrf_token, created, expires FROM admin_sessions "
        "WHERE session_hash = ? AND expires >= ?",
        (secret_hash(session), now),
    ).fetchone()
    return AdminSessionRow(*row) if row else None


def end_admin_session(txn: Txn, session: str) -> None:
    txn.execute("DELETE FROM admin_sessions WHERE session_hash = ?", (secret_hash(session),))


def end_admin_sessions_of(txn: Txn, user_id: int) -> None:
    """Sign a user out of the console everywhere (disabled, password or flag changed)."""
    txn.execute("DELETE FROM admin_sessions WHERE user_id = ?", (user_id,))


# -- the admin flag -----------------------------------------------------------------------


def is_admin(txn: Txn, user_id: int) -> bool:
    row = txn.execute("SELECT admin FROM users WHERE id = ?", (user_id,)).fetchone()
    return bool(row and row[0])


def set_admin(txn: Txn, user_id: int, admin: bool) -> bool:
    """Grant or take away console sign-in; False if the user is unknown. Taking it away
    ends the user's console sessions."""
    txn.execute("UPDATE users SET admin = ? WHERE id = ?", (1 if admin else 0, user_id))
    found = txn.rowcount > 0
    if found and not admin:
        end_admin_sessions_of(txn, user_id)
    return found


def admin_ids(txn: Txn, ids: list[int]) -> set[int]:
    """Which of ``ids`` are admins."""
    if not ids:
        return set()
    marks = ", ".join("?" for _ in ids)
    rows = txn.execute(
        f"SELECT id FROM users WHERE admin <> 0 AND id IN ({marks})", tuple(ids)
    ).fetchall()
    return {int(row[0]) for row in rows}


# -- directory queries --------------------------------------------------------------------


def _like(text: str) -> str:
    """A LIKE pattern finding ``text`` anywhere, ``!`` escaping (a backslash would need
    escaping differently in MySQL and SQLite literals)."""
    return "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def search_users(
    txn: Txn,
    query: str = "",
    department_id: int | None = None,
    status: int | None = None,
    *,
    offset: int = 0,
    limit: int = 50,
) -> tuple[int, list[accounts.UserRow]]:
    """(how many match, one page of them by id): ``query`` is found in the name, nick,
    phone or email (any case)."""
    where: list[str] = []
    params: list[Any] = []
    if query:
        pattern = _like(query.lower())
        where.append(
            "(LOWER(name) LIKE ? ESCAPE '!' OR LOWER(nick) LIKE ? ESCAPE '!' "
            "OR LOWER(phone) LIKE ? ESCAPE '!' OR LOWER(email) LIKE ? ESCAPE '!')"
        )
        params += [pattern] * 4
    if department_id is not None:
        where.append("department_id = ?")
        params.append(department_id)
    if status is not None:
        where.append("status = ?" if status == accounts.USER_STATUS_NORMAL else "status <> ?")
        params.append(accounts.USER_STATUS_NORMAL)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = _count(txn, f"SELECT COUNT(*) FROM users{clause}", *params)
    rows = txn.execute(
        f"SELECT {accounts._USER_COLUMNS} FROM users{clause} ORDER BY id LIMIT ? OFFSET ?",
        (*params, limit, offset),
    ).fetchall()
    return total, [accounts.UserRow(*row) for row in rows]


def department_member_counts(txn: Txn) -> dict[int, int]:
    """Users who have not left, per department id."""
    rows = txn.execute(
        "SELECT department_id, COUNT(*) FROM users WHERE status = ? GROUP BY department_id",
        (accounts.USER_STATUS_NORMAL,),
    ).fetchall()
    return {int(d): int(n) for d, n in rows}


def get_department(txn: Txn, department_id: int) -> accounts.DepartmentRow | None:
    row = txn.execute(
        f"SELECT {accounts._DEPARTMENT_COLUMNS} FROM departments WHERE id = ?", (department_id,)
    ).fetchone()
    return accounts.DepartmentRow(*row) if row else None


def update_department(txn: Txn, department_id: int, *, now: int, **fields: Any) -> bool:
    """Change ``name``, ``parent_id`` or ``priority``; bumps ``updated`` so clients'
    incremental department list carries it. A taken name: DuplicateError."""
    allowed = {"name", "parent_id", "priority"}
    if not fields or set(fields) - allowed:
        raise ValueError(f"expected some of {', '.join(sorted(allowed))}")
    names = sorted(fields)
    assignments = ", ".join(f"{key} = ?" for key in names)
    txn.execute(
        f"UPDATE departments SET {assignments}, updated = ? WHERE id = ?",
        (*(fields[k] for k in names), now, department_id),
    )
    return txn.rowcount > 0


def delete_department(txn: Txn, department_id: int, *, now: int) -> str | None:
    """Delete an empty department (no users, no child departments): None when done, else
    why not ("missing", "has users", "has departments"). Clients learn of departments only
    through their incremental list, so the row stays, with status 1 (``dept_status``; 0 is
    normal), ``updated`` moved, hidden from the API, and its name freed for a new one."""
    department = get_department(txn, department_id)
    if department is None or department.status != 0:
        return "missing"
    users = _count(
        txn,
        "SELECT COUNT(*) FROM users WHERE department_id = ? AND status = ?",
        department_id,
        accounts.USER_STATUS_NORMAL,
    )
    if users:
        return "has users"
    children = _count(
        txn, "SELECT COUNT(*) FROM departments WHERE parent_id = ? AND status = 0", department_id
    )
    if children:
        return "has departments"
    freed = f"{department.name[:40]} (deleted #{department_id})"
    txn.execute(
        "UPDATE departments SET status = 1, name = ?, updated = ? WHERE id = ?",
        (freed, now, department_id),
    )
    return None


@dataclass(frozen=True, slots=True)
class Totals:
    users: int
    disabled_users: int
    admins: int
    departments: int
    groups: int
    messages_today: int
    messages_last_minute: int
    stored_files: int
    stored_bytes: int


def _count(txn: Txn, sql: str, *params: Any) -> int:
    """The one number ``sql`` selects (0 for NULL)."""
    row = txn.execute(sql, params).fetchone()
    return int(row[0] or 0) if row else 0


def stored_since(txn: Txn, table: str, since: int) -> int:
    """Rows of ``table`` (``messages`` or ``group_messages``) created at or after
    ``since``. ``created`` has no index, but ids grow with it (a message is numbered as
    it is stored), so the first id of the period is found by bisecting the primary key,
    and only the period's rows are counted: a dashboard polling this costs a few index
    lookups, not a scan of the whole history."""
    assert table in ("messages", "group_messages")
    low, high = txn.execute(f"SELECT MIN(id), MAX(id) FROM {table}").fetchone() or (None, None)
    if low is None or high is None:
        return 0

    def period_starts_by(row_id: int) -> bool:
        """Whether the first row at or after ``row_id`` is of the period."""
        row = txn.execute(
            f"SELECT created FROM {table} WHERE id >= ? ORDER BY id LIMIT 1", (row_id,)
        ).fetchone()
        return row is not None and int(row[0]) >= since

    if not period_starts_by(high):
        return 0
    while low < high:
        middle = (low + high) // 2
        if period_starts_by(middle):
            high = middle
        else:
            low = middle + 1
    return _count(txn, f"SELECT COUNT(*) FROM {table} WHERE id >= ?", low)


def totals(txn: Txn, day_start: int, minute_start: int | None = None) -> Totals:
    """The counts of ``GET /admin/api/v1/stats``: messages (1:1 and group) stored since
    ``day_start`` and since ``minute_start``, and the content store's blobs (each stored
    once, however many files name it)."""

    def one(sql: str, *params: Any) -> int:
        return _count(txn, sql, *params)

    def messages_since(since: int | None) -> int:
        if since is None:
            return 0
        return stored_since(txn, "messages", since) + stored_since(txn, "group_messages", since)

    return Totals(
        users=one("SELECT COUNT(*) FROM users WHERE status = ?", accounts.USER_STATUS_NORMAL),
        disabled_users=one(
            "SELECT COUNT(*) FROM users WHERE status <> ?", accounts.USER_STATUS_NORMAL
        ),
        admins=one("SELECT COUNT(*) FROM users WHERE admin <> 0"),
        departments=one("SELECT COUNT(*) FROM departments WHERE status = 0"),
        groups=one("SELECT COUNT(*) FROM im_groups WHERE status = ?", group_store.GROUP_ACTIVE),
        messages_today=messages_since(day_start),
        messages_last_minute=messages_since(minute_start),
        stored_files=one("SELECT COUNT(*) FROM content_blobs"),
        stored_bytes=one("SELECT SUM(size) FROM content_blobs"),
    )
