"""Contacts: friend requests and friendships (docs/EXTENSION.md §2.2).

Plain synchronous repository functions ``fn(txn, ...)`` like the other modules. Each
function that decides something (ask, answer, remove) reads what it decides on and writes
the outcome in the same transaction, so two answers to one request, or a request racing
an accept, can never both succeed: the request row is locked (``FOR UPDATE`` on MariaDB;
SQLite's one writer serialises transactions anyway), and one pending request per pair is
a UNIQUE key (``pending_pair``), not a check that another transaction could slip past.

A friendship is two rows, one per side, each with that side's remark for the other.
Nothing here reads or returns a password: user briefs select only public columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from teamtalk_py.store.txn import DuplicateError, Txn, placeholders

PENDING = 0
ACCEPTED = 1
DECLINED = 2

#: Outcomes of ``ask`` and ``answer`` besides success (the handler maps them to codes).
NO_SUCH_USER = "no_such_user"
ALREADY_FRIENDS = "already_friends"
REQUEST_PENDING = "request_pending"
NO_SUCH_REQUEST = "no_such_request"

USER_STATUS_NORMAL = 0


@dataclass(frozen=True, slots=True)
class UserBrief:
    """What any user may see of another (no password, phone, e-mail or department)."""

    id: int
    name: str
    nick: str
    avatar: str
    sex: int


@dataclass(frozen=True, slots=True)
class FriendRequest:
    id: int
    from_id: int
    to_id: int
    note: str
    remark: str
    state: int
    created: int
    answered: int


@dataclass(frozen=True, slots=True)
class Friend:
    user: UserBrief
    remark: str
    since: int


_BRIEF = "u.id, u.name, u.nick, u.avatar, u.sex"
_REQUEST = "id, from_id, to_id, note, remark, state, created, answered"


def _brief(row: tuple) -> UserBrief:
    return UserBrief(int(row[0]), row[1], row[2], row[3], int(row[4]))


def _request(row: tuple) -> FriendRequest:
    return FriendRequest(
        int(row[0]), int(row[1]), int(row[2]), row[3], row[4], int(row[5]), int(row[6]),
        int(row[7]),
    )  # fmt: skip


def _pair(from_id: int, to_id: int) -> int:
    return from_id << 32 | to_id


def _like_pattern(text: str) -> str:
    """``%text%`` for ``LIKE ... ESCAPE '!'`` (``!`` rather than a backslash, which
    MySQL string literals would take as an escape of their own)."""
    escaped = text.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


# -- users ---------------------------------------------------------------------------


def search_users(txn: Txn, query: str, limit: int) -> list[UserBrief]:
    """Active users whose login name, nickname or domain (real name) contains ``query``,
    case-insensitively, by id."""
    pattern = _like_pattern(query)
    rows = txn.execute(
        f"SELECT {_BRIEF} FROM users u WHERE u.status = ? AND ("
        "LOWER(u.name) LIKE ? ESCAPE '!' OR LOWER(u.nick) LIKE ? ESCAPE '!' "
        "OR LOWER(u.domain) LIKE ? ESCAPE '!') ORDER BY u.id LIMIT ?",
        (USER_STATUS_NORMAL, pattern, pattern, pattern, limit),
    ).fetchall()
    return [_brief(row) for row in rows]


def briefs(txn: Txn, ids: Iterable[int]) -> dict[int, UserBrief]:
    """Briefs of the users among ``ids`` that exist (any status), by id."""
    wanted = sorted(set(ids))
    found: dict[int, UserBrief] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = txn.execute(
            f"SELECT {_BRIEF} FROM users u WHERE u.id IN ({placeholders(len(chunk))})", chunk
        ).fetchall()
        found.update((int(row[0]), _brief(row)) for row in rows)
    return found


# -- friendships ---------------------------------------------------------------------


def are_friends(txn: Txn, user_id: int, other_id: int) -> bool:
    row = txn.execute(
        "SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?", (user_id, other_id)
    ).fetchone()
    return row is not None


def friend_ids(txn: Txn, user_id: int) -> list[int]:
    rows = txn.execute(
        "SELECT friend_id FROM friends WHERE user_id = ? ORDER BY friend_id", (user_id,)
    ).fetchall()
    return [int(row[0]) for row in rows]


def list_friends(txn: Txn, user_id: int) -> list[Friend]:
    """The user's friends by id, with the user's remark for each."""
    rows = txn.execute(
        f"SELECT {_BRIEF}, f.remark, f.created FROM friends f "
        "JOIN users u ON u.id = f.friend_id WHERE f.user_id = ? ORDER BY u.id",
        (user_id,),
    ).fetchall()
    return [Friend(_brief(row), row[5], int(row[6])) for row in rows]


def remove_friend(txn: Txn, user_id: int, friend_id: int) -> bool:
    """End a friendship (both rows); False when there was none."""
    txn.execute(
        "DELETE FROM friends WHERE (user_id = ? AND friend_id = ?) "
        "OR (user_id = ? AND friend_id = ?)",
        (user_id, friend_id, friend_id, user_id),
    )
    return txn.rowcount > 0


def _befriend(txn: Txn, user_id: int, friend_id: int, remark: str, now: int) -> None:
    """One side's row; an existing row keeps its date and takes the new remark."""
    updated = txn.execute(
        "UPDATE friends SET remark = ? WHERE user_id = ? AND friend_id = ?",
        (remark, user_id, friend_id),
    ).rowcount
    if not updated and not are_friends(txn, user_id, friend_id):
        txn.execute(
            "INSERT INTO friends (user_id, friend_id, remark, created) VALUES (?, ?, ?, ?)",
            (user_id, friend_id, remark, now),
        )


# -- requests ------------------------------------------------------------------------


def ask(
    txn: Txn, from_id: int, to_id: int, note: str, remark: str, *, now: int
) -> tuple[str | None, FriendRequest | None]:
    """Store a pending request from ``from_id`` to ``to_id``.

    Returns ``(None, request)``, or an outcome and, for ``REQUEST_PENDING``, the earlier
    request that is still unanswered.
    """
    row = txn.execute("SELECT status FROM users WHERE id = ?", (to_id,)).fetchone()
    if row is None or int(row[0]) != USER_STATUS_NORMAL:
        return NO_SUCH_USER, None
    if are_friends(txn, from_id, to_id):
        return ALREADY_FRIENDS, None
    try:
        txn.execute(
            "INSERT INTO friend_requests (from_id, to_id, note, remark, state, pending_pair, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (from_id, to_id, note, remark, PENDING, _pair(from_id, to_id), now),
        )
    except DuplicateError:
        earlier = txn.execute(
            f"SELECT {_REQUEST} FROM friend_requests WHERE pending_pair = ?",
            (_pair(from_id, to_id),),
        ).fetchone()
        return REQUEST_PENDING, _request(earlier) if earlier else None
    request_id = int(txn.lastrowid)
    return None, FriendRequest(request_id, from_id, to_id, note, remark, PENDING, now, 0)


def get_request(txn: Txn, request_id: int) -> FriendRequest | None:
    row = txn.execute(
        f"SELECT {_REQUEST} FROM friend_requests WHERE id = ?", (request_id,)
    ).fetchone()
    return _request(row) if row else None


def pending_requests(txn: Txn, user_id: int) -> tuple[list[FriendRequest], list[FriendRequest]]:
    """The user's pending requests: (incoming, outgoing), oldest first."""
    incoming = txn.execute(
        f"SELECT {_REQUEST} FROM friend_requests WHERE to_id = ? AND state = ? ORDER BY id",
        (user_id, PENDING),
    ).fetchall()
    outgoing = txn.execute(
        f"SELECT {_REQUEST} FROM friend_requests WHERE from_id = ? AND state = ? ORDER BY id",
        (user_id, PENDING),
    ).fetchall()
    return [_request(r) for r in incoming], [_request(r) for r in outgoing]


def answer(
    txn: Txn, user_id: int, request_id: int, accept: bool, remark: str, *, now: int
) -> tuple[str | None, FriendRequest | None]:
    """Accept or decline a pending request addressed to ``user_id``, all in this
    transaction: the request row is locked and checked, then marked; an accept also
    writes both friendship rows and closes a pending request the other way.

    Returns ``(None, the answered request)`` or ``(NO_SUCH_REQUEST, None)``.
    """
    row = txn.execute(
        f"SELECT {_REQUEST} FROM friend_requests WHERE id = ?{txn.for_update}", (request_id,)
    ).fetchone()
    request = _request(row) if row else None
    if request is None or request.to_id != user_id or request.state != PENDING:
        return NO_SUCH_REQUEST, None
    state = ACCEPTED if accept else DECLINED
    changed = txn.execute(
        "UPDATE friend_requests SET state = ?, pending_pair = NULL, answered = ? "
        "WHERE id = ? AND state = ?",
        (state, now, request_id, PENDING),
    ).rowcount
    if changed != 1:
        return NO_SUCH_REQUEST, None
    if accept:
        _befriend(txn, request.from_id, user_id, request.remark, now)
        _befriend(txn, user_id, request.from_id, remark, now)
        # The answerer's own request the other way is answered by this accept; the
        # answerer needs no notify about it.
        txn.execute(
            "UPDATE friend_requests SET state = ?, pending_pair = NULL, answered = ?, "
            "from_notified = 1 WHERE pending_pair = ?",
            (ACCEPTED, now, _pair(user_id, request.from_id)),
        )
    return None, FriendRequest(
        request.id, request.from_id, request.to_id, request.note, request.remark, state,
        request.created, now,
    )  # fmt: skip


# -- delivery to users who were away ---------------------------------------------------


def undelivered(txn: Txn, user_id: int) -> tuple[list[FriendRequest], list[FriendRequest]]:
    """(pending requests to the user not delivered yet, answers to the user's requests
    not delivered yet), oldest first."""
    requests = txn.execute(
        f"SELECT {_REQUEST} FROM friend_requests "
        "WHERE to_id = ? AND state = ? AND to_notified = 0 ORDER BY id",
        (user_id, PENDING),
    ).fetchall()
    answers = txn.execute(
        f"SELECT {_REQUEST} FROM friend_requests "
        "WHERE from_id = ? AND state <> ? AND from_notified = 0 ORDER BY id",
        (user_id, PENDING),
    ).fetchall()
    return [_request(r) for r in requests], [_request(r) for r in answers]


def mark_delivered(
    txn: Txn, request_ids: Iterable[int] = (), answer_ids: Iterable[int] = ()
) -> None:
    """Requests delivered to the asked user; answers delivered to the asker."""
    requests = sorted(set(request_ids))
    answers = sorted(set(answer_ids))
    if requests:
        txn.execute(
            f"UPDATE friend_requests SET to_notified = 1 "
            f"WHERE id IN ({placeholders(len(requests))})",
            requests,
        )
    if answers:
        txn.execute(
            f"UPDATE friend_requests SET from_notified = 1 "
            f"WHERE id IN ({placeholders(len(answers))})",
            answers,
        )


def relations(txn: Txn, user_id: int, other_ids: Iterable[int]) -> dict[int, str]:
    """For each of ``other_ids`` related to ``user_id``: ``friend``, ``sent`` (a pending
    request by the user) or ``received`` (a pending request to the user)."""
    ids = sorted(set(other_ids))
    found: dict[int, str] = {}
    if not ids:
        return found
    marks = placeholders(len(ids))
    for row in txn.execute(
        f"SELECT from_id, to_id FROM friend_requests WHERE state = ? AND "
        f"((from_id = ? AND to_id IN ({marks})) OR (to_id = ? AND from_id IN ({marks})))",
        (PENDING, user_id, *ids, user_id, *ids),
    ).fetchall():
        if int(row[0]) == user_id:
            found[int(row[1])] = "sent"
        else:
            found.setdefault(int(row[0]), "received")
    for row in txn.execute(
        f"SELECT friend_id FROM friends WHERE user_id = ? AND friend_id IN ({marks})",
        (user_id, *ids),
    ).fetchall():
        found[int(row[0])] = "friend"
    return found
