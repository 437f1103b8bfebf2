"""Users, departments, profile fields, push settings and device tokens.

Plain synchronous repository functions ``fn(txn, ...)``: the msg service runs them through
``Database.read``/``Database.write``, the admin CLI inside ``Database.sync_transaction``.
Every function that changes a row takes ``now`` (Unix seconds) from its caller, so the
store never reads a clock of its own and tests control time.

Passwords: clients only ever send ``md5_hex(plain)``, so that MD5 is what the server
checks; what it stores is a slow, memory-hard KDF of it (scrypt from the standard
library, N=2**14, r=8, p=1: 16 MiB and tens of milliseconds per guess, the scrypt paper's
interactive-login parameters) with a random 16-byte salt per user. ``password_hash`` is
``scrypt$LOG2N$R$P$<base64url of 32 bytes>`` and ``salt`` the salt in hex. Rows in the
reference's form, ``md5_hex(md5_hex(plain) + salt)`` (an imported TeamTalk database, or
an older teamtalk_py), are still accepted and are rewritten in the new form at their next
successful login (``password_needs_upgrade``, ``replace_password``). Comparisons are
constant-time.

Sessions: ``session_epoch`` changes whenever a user's live sessions must end (disabled,
deleted, password changed, kicked by an admin), and ``session_changed`` says when, so
that every msg node finds such users with one indexed query (``session_changes``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from teamtalk_py.store.txn import Txn, placeholders, upsert_sql

USER_STATUS_NORMAL = 0
# The reference admin tool's "delete": the user left the company and can no longer log in.
USER_STATUS_LEFT = 3

MAX_SIGN_INFO_BYTES = 128

# Longest values both backends accept (MySQL VARCHAR sizes, in characters). SQLite would
# store anything, so the limits are checked here to keep the two backends alike.
_TEXT_LIMITS = {
    "name": 64,
    "nick": 64,
    "domain": 64,
    "phone": 32,
    "email": 128,
    "avatar": 512,
    "sign_info": MAX_SIGN_INFO_BYTES,
}
_INT_FIELDS = ("sex", "department_id", "push_shield")
PROFILE_FIELDS = frozenset(_TEXT_LIMITS) | frozenset(_INT_FIELDS)

# IDs per IN (...) list; well below every backend's parameter limit.
_CHUNK = 500


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def legacy_password_hash(client_md5_hex: str, salt: str) -> str:
    """The reference's ``md5_hex(md5_hex(plain) + salt)`` given ``md5_hex(plain)``."""
    return md5_hex(client_md5_hex.lower() + salt)


#: scrypt cost: log2(N), r, p. A change applies to each user at their next login.
SCRYPT_LOG2_N = 14
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_PREFIX = "scrypt$"
_SCRYPT_MAXMEM = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PasswordRecord:
    """What ``users.password_hash`` and ``users.salt`` hold for one password."""

    password_hash: str = field(repr=False)
    salt: str = field(repr=False)


def _scrypt(client_md5_hex: str, salt_hex: str, log2_n: int, r: int, p: int) -> str:
    digest = hashlib.scrypt(
        client_md5_hex.lower().encode("ascii", "replace"),
        salt=bytes.fromhex(salt_hex),
        n=1 << log2_n,
        r=r,
        p=p,
        maxmem=_SCRYPT_MAXMEM,
        dklen=32,
    )
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def hash_password(client_md5_hex: str) -> PasswordRecord:
    """The record to store for a client's ``md5_hex(plain)``: scrypt with a new salt.

    Slow on purpose (tens of milliseconds): never call it on the reactor thread, and
    preferably not inside a write transaction (``add_user`` takes a ready record).
    """
    salt = secrets.token_hex(16)
    digest = _scrypt(client_md5_hex, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return PasswordRecord(f"{_SCRYPT_PREFIX}{SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${digest}", salt)


def password_record(password_plain: str) -> PasswordRecord:
    """``hash_password`` of a plain password (what a client would send the MD5 of)."""
    return hash_password(md5_hex(password_plain))


def check_password(user: UserRow, client_md5_hex: str) -> bool:
    """Whether the client's ``md5_hex(plain)`` matches the stored record, scrypt or the
    reference's salted MD5 (constant-time comparison). Slow for scrypt records: run it
    off the reactor thread."""
    stored = user.password_hash
    if stored.startswith(_SCRYPT_PREFIX):
        try:
            log2_n, r, p, expected = stored[len(_SCRYPT_PREFIX) :].split("$")
            actual = _scrypt(client_md5_hex, user.salt, int(log2_n), int(r), int(p))
        except ValueError:
            return False  # a damaged record (or a salt that is not hex) matches nothing
        return hmac.compare_digest(actual.encode("ascii"), expected.encode("ascii"))
    legacy = legacy_password_hash(client_md5_hex, user.salt)
    return hmac.compare_digest(legacy.encode("ascii"), stored.lower().encode("ascii", "replace"))


def password_needs_upgrade(user: UserRow) -> bool:
    """Whether the stored record is of an older kind or cost than ``hash_password``'s."""
    prefix = f"{_SCRYPT_PREFIX}{SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}$"
    return not user.password_hash.startswith(prefix)


def replace_password(txn: Txn, user_id: int, old_hash: str, record: PasswordRecord) -> bool:
    """Store ``record`` in place of ``old_hash`` (the same password in a newer form): not
    a profile change and no reason to end sessions, so neither ``updated`` nor
    ``session_epoch`` moves. False when the row changed meanwhile (then it is kept)."""
    txn.execute(
        "UPDATE users SET password_hash = ?, salt = ? WHERE id = ? AND password_hash = ?",
        (record.password_hash, record.salt, user_id, old_hash),
    )
    return txn.rowcount > 0


@dataclass(frozen=True, slots=True)
class DepartmentRow:
    id: int
    name: str
    priority: int
    parent_id: int
    status: int
    created: int
    updated: int


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    name: str
    nick: str
    sex: int
    domain: str
    phone: str
    email: str
    avatar: str
    department_id: int
    status: int
    sign_info: str
    push_shield: int
    created: int
    updated: int
    # Kept out of repr() so a logged row never shows them.
    password_hash: str = field(repr=False)
    salt: str = field(repr=False)
    #: Changes whenever the user's live sessions must end (see the module docstring).
    session_epoch: int = 0

    @property
    def can_log_in(self) -> bool:
        return self.status == USER_STATUS_NORMAL


@dataclass(frozen=True, slots=True)
class DeviceTokenRow:
    user_id: int
    client_type: int
    token: str
    # The user's push_shield, so the push path needs no second query.
    push_shield: int


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    limit = _TEXT_LIMITS[name]
    size = len(value.encode("utf-8")) if name == "sign_info" else len(value)
    if size > limit:
        raise ValueError(f"{name} is longer than {limit}")
    return value


def _check_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    return value


def _chunks(ids: Iterable[int]) -> list[list[int]]:
    unique = sorted({int(i) for i in ids})
    return [unique[i : i + _CHUNK] for i in range(0, len(unique), _CHUNK)]


# --------------------------------------------------------------------------------------
# Departments

_DEPARTMENT_COLUMNS = "id, name, priority, parent_id, status, created, updated"


def add_department(txn: Txn, name: str, parent_id: int = 0, priority: int = 0, *, now: int) -> int:
    """Create a department; its id. A taken name raises DuplicateError."""
    if not name:
        raise ValueError("a department needs a name")
    _check_text("name", name)
    txn.execute(
        "INSERT INTO departments (name, priority, parent_id, status, created, updated) "
        "VALUES (?, ?, ?, 0, ?, ?)",
        (name, priority, parent_id, now, now),
    )
    return int(txn.lastrowid)


def list_departments(txn: Txn) -> list[DepartmentRow]:
    """Every department, any status, in display order (priority, then id)."""
    rows = txn.execute(
        f"SELECT {_DEPARTMENT_COLUMNS} FROM departments ORDER BY priority, id"
    ).fetchall()
    return [DepartmentRow(*row) for row in rows]


def get_department_by_name(txn: Txn, name: str) -> DepartmentRow | None:
    row = txn.execute(
        f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE name = ?", (name,)
    ).fetchone()
    return DepartmentRow(*row) if row else None


def departments_updated_after(txn: Txn, since: int) -> list[DepartmentRow]:
    """Departments changed strictly after ``since`` (any status): the incremental list.

    The client's next watermark is the largest ``updated`` returned.
    """
    rows = txn.execute(
        f"SELECT {_DEPARTMENT_COLUMNS} FROM departments WHERE updated > ? ORDER BY updated, id",
        (since,),
    ).fetchall()
    return [DepartmentRow(*row) for row in rows]


# --------------------------------------------------------------------------------------
# Users

_USER_COLUMNS = (
    "id, name, nick, sex, domain, phone, email, avatar, department_id, status, "
    "sign_info, push_shield, created, updated, password_hash, salt, session_epoch"
)


def _user(row: tuple[Any, ...]) -> UserRow:
    return UserRow(*row)


def add_user(
    txn: Txn,
    name: str,
    password_plain: str,
    nick: str = "",
    department_id: int = 0,
    sex: int = 0,
    domain: str = "",
    phone: str = "",
    email: str = "",
    avatar: str = "",
    *,
    now: int,
    record: PasswordRecord | None = None,
) -> int:
    """Create a user who can log in with ``password_plain``; its id.

    ``record`` is ``password_record(password_plain)`` computed beforehand, so the slow
    KDF runs outside the transaction (several users may share one, as the benchmark's
    do). A taken name raises DuplicateError.
    """
    if not name:
        raise ValueError("a user needs a name")
    for key, value in (
        ("name", name),
        ("nick", nick),
        ("domain", domain),
        ("phone", phone),
        ("email", email),
        ("avatar", avatar),
    ):
        _check_text(key, value)
    if record is None:
        record = password_record(password_plain)
    txn.execute(
        "INSERT INTO users (name, nick, sex, domain, phone, email, avatar, department_id, "
        "status, sign_info, push_shield, password_hash, salt, created, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, '', 0, ?, ?, ?, ?)",
        (
            name,
            nick,
            _check_int("sex", sex),
            domain,
            phone,
            email,
            avatar,
            _check_int("department_id", department_id),
            record.password_hash,
            record.salt,
            now,
            now,
        ),
    )
    return int(txn.lastrowid)


def set_password(
    txn: Txn,
    user_id: int,
    password_plain: str,
    *,
    now: int,
    record: PasswordRecord | None = None,
) -> bool:
    """Replace the password (``record``: ``password_record(password_plain)`` computed
    beforehand) and end the user's live sessions; False if the user does not exist."""
    if record is None:
        record = password_record(password_plain)
    txn.execute(
        "UPDATE users SET password_hash = ?, salt = ?, updated = ?, "
        "session_epoch = session_epoch + 1, session_changed = ? WHERE id = ?",
        (record.password_hash, record.salt, now, now, user_id),
    )
    return txn.rowcount > 0


def set_user_status(txn: Txn, user_id: int, status: int, *, now: int) -> bool:
    """Set the status (USER_STATUS_LEFT disables login); False if the user is unknown.

    ``updated`` moves so clients' incremental directory learns of the change; a status
    that stops logins also ends the user's live sessions on every node.
    """
    txn.execute(
        "UPDATE users SET status = ?, updated = ?, session_epoch = session_epoch + 1, "
        "session_changed = ? WHERE id = ?",
        (_check_int("status", status), now, now, user_id),
    )
    return txn.rowcount > 0


def end_sessions(txn: Txn, user_id: int, *, now: int) -> bool:
    """End the user's live sessions on every node (an admin's kick): the msg nodes see
    the new ``session_epoch`` within ``msg.account_check_interval``. False if unknown."""
    txn.execute(
        "UPDATE users SET session_epoch = session_epoch + 1, session_changed = ? WHERE id = ?",
        (now, user_id),
    )
    return txn.rowcount > 0


@dataclass(frozen=True, slots=True)
class SessionChange:
    """A user whose live sessions may have to end (``session_changes``)."""

    user_id: int
    status: int
    session_epoch: int
    session_changed: int


def session_changes(txn: Txn, since: int) -> list[SessionChange]:
    """Users whose sessions were ended at or after ``since`` (Unix seconds). A user whose
    sessions were never ended (``session_changed`` 0) is never one of them, whatever
    ``since``: a node that has seen no change yet polls from 0 - OVERLAP, and reading every
    account each poll cost a store thread a whole table scan per interval."""
    rows = txn.execute(
        "SELECT id, status, session_epoch, session_changed FROM users "
        "WHERE session_changed >= ? ORDER BY id",
        (max(since, 1),),
    ).fetchall()
    return [SessionChange(*row) for row in rows]


def last_session_change(txn: Txn) -> int:
    """The newest ``session_changed`` (0 when none): where a msg node starts watching."""
    row = txn.execute("SELECT MAX(session_changed) FROM users").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def update_user_profile(txn: Txn, user_id: int, *, now: int, **fields: Any) -> bool:
    """Change any of PROFILE_FIELDS; bumps ``updated``. False if the user is unknown.

    Unknown field names raise ValueError; a taken ``name`` raises DuplicateError.
    """
    if not fields:
        raise ValueError("no profile field to update")
    unknown = set(fields) - PROFILE_FIELDS
    if unknown:
        raise ValueError(f"unknown profile fields: {', '.join(sorted(unknown))}")
    names = sorted(fields)
    values: list[Any] = []
    for key in names:
        if key in _TEXT_LIMITS:
            values.append(_check_text(key, fields[key]))
        else:
            values.append(_check_int(key, fields[key]))
    # Column names come from the PROFILE_FIELDS whitelist, values are parameters.
    assignments = ", ".join(f"{key} = ?" for key in names)
    txn.execute(
        f"UPDATE users SET {assignments}, updated = ? WHERE id = ?",
        (*values, now, user_id),
    )
    return txn.rowcount > 0


def get_user_by_name(txn: Txn, name: str, *, only_active: bool = False) -> UserRow | None:
    """The user called ``name``; with ``only_active``, None unless it may log in."""
    sql = f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?"
    params: tuple[Any, ...] = (name,)
    if only_active:
        sql += " AND status = ?"
        params = (name, USER_STATUS_NORMAL)
    row = txn.execute(sql, params).fetchone()
    return _user(row) if row else None


def get_users_by_names(txn: Txn, names: Iterable[str]) -> list[UserRow | None]:
    """``get_user_by_name`` of each name, in order, in one transaction (logins batched
    per reactor turn: msg/user_lookup.py). One query per name keeps the database's own
    name comparison (a MySQL collation may ignore case; SQLite's does not)."""
    return [get_user_by_name(txn, name) for name in names]


def get_users_by_ids(txn: Txn, ids: Iterable[int]) -> list[UserRow]:
    """The users among ``ids`` that exist, any status, by id; unknown ids are skipped."""
    users: list[UserRow] = []
    for chunk in _chunks(ids):
        rows = txn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id IN ({placeholders(len(chunk))}) "
            "ORDER BY id",
            chunk,
        ).fetchall()
        users.extend(_user(row) for row in rows)
    return users


def list_users(txn: Txn) -> list[UserRow]:
    """Every user, any status, by id (admin CLI)."""
    rows = txn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY id").fetchall()
    return [_user(row) for row in rows]


def users_updated_since(txn: Txn, since: int) -> list[UserRow]:
    """The reference's incremental directory rule.

    ``since == 0``: every user who has not left (status != 3), the first full download.
    ``since > 0``: every user with ``updated >= since`` (inclusive), any status, so clients
    learn who left and hide them.
    """
    if since == 0:
        rows = txn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE status <> ? ORDER BY id",
            (USER_STATUS_LEFT,),
        ).fetchall()
    else:
        rows = txn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE updated >= ? ORDER BY id", (since,)
        ).fetchall()
    return [_user(row) for row in rows]


def max_user_updated(txn: Txn) -> int:
    """The newest ``users.updated`` (0 without users): seeds the "last user change" time."""
    row = txn.execute("SELECT MAX(updated) FROM users").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def set_sign_info(txn: Txn, user_id: int, sign_info: str, *, now: int) -> bool:
    """Store a signature of at most 128 UTF-8 bytes; False if too long or user unknown."""
    if len(sign_info.encode("utf-8")) > MAX_SIGN_INFO_BYTES:
        return False
    txn.execute(
        "UPDATE users SET sign_info = ?, updated = ? WHERE id = ?", (sign_info, now, user_id)
    )
    return txn.rowcount > 0


def set_avatar(txn: Txn, user_id: int, avatar_url: str, *, now: int) -> bool:
    """Store the avatar URL; False if the user is unknown."""
    txn.execute(
        "UPDATE users SET avatar = ?, updated = ? WHERE id = ?",
        (_check_text("avatar", avatar_url), now, user_id),
    )
    return txn.rowcount > 0


def set_push_shield(txn: Txn, user_id: int, shield: int, *, now: int) -> bool:
    """Night-time push do-not-disturb (1 on, 0 off); False if the user is unknown."""
    txn.execute(
        "UPDATE users SET push_shield = ?, updated = ? WHERE id = ?",
        (_check_int("push_shield", shield), now, user_id),
    )
    return txn.rowcount > 0


def get_push_shield(txn: Txn, user_id: int) -> int | None:
    """The push shield flag, or None when the user row is missing (result_code 1)."""
    row = txn.execute("SELECT push_shield FROM users WHERE id = ?", (user_id,)).fetchone()
    return int(row[0]) if row else None


# --------------------------------------------------------------------------------------
# Device tokens


def set_device_token(txn: Txn, user_id: int, client_type: int, token: str) -> None:
    """Remember the push token of the user's mobile device (one per user).

    A token belongs to one device, so another user still holding it loses it: when a
    phone logs in as someone else, pushes for the previous user stop going there (the
    reference kept sending both users' pushes to that phone). An empty token clears.
    """
    if not token:
        clear_device_token(txn, user_id)
        return
    txn.execute("DELETE FROM device_tokens WHERE token = ? AND user_id <> ?", (token, user_id))
    txn.execute(
        upsert_sql(
            txn.dialect,
            "device_tokens",
            ("user_id", "client_type", "token"),
            ("user_id",),
            "client_type = ?, token = ?",
        ),
        (user_id, client_type, token, client_type, token),
    )


def get_device_tokens(txn: Txn, user_ids: Iterable[int]) -> list[DeviceTokenRow]:
    """Stored tokens of the existing users among ``user_ids``, by user id."""
    tokens: list[DeviceTokenRow] = []
    for chunk in _chunks(user_ids):
        rows = txn.execute(
            "SELECT d.user_id, d.client_type, d.token, u.push_shield "
            "FROM device_tokens d JOIN users u ON u.id = d.user_id "
            f"WHERE d.user_id IN ({placeholders(len(chunk))}) ORDER BY d.user_id",
            chunk,
        ).fetchall()
        tokens.extend(DeviceTokenRow(*row) for row in rows)
    return tokens


def clear_device_token(txn: Txn, user_id: int) -> None:
    """Forget the user's token (logout from the mobile device)."""
    txn.execute("DELETE FROM device_tokens WHERE user_id = ?", (user_id,))
