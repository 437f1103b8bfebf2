"""One-to-one messages and unread counters: the msg service's hot path.

Plain synchronous repository functions ``fn(txn, ...)`` (see ``txn.py``). Messages
are stored in batches (``store_single_messages``), with the work done per user pair:
allocate the pair's next ids from ``relations.last_msg_id``, insert the messages, move the
receivers' unread counters and show both users' sessions (listed by ``sessions.py``).
The ids come from the same transaction as the rows, so an acknowledged id is never
handed out twice and never skipped, also after a crash. A message's send fact (what
recognises its resend, ``resends.py``) is written in that transaction too.

Message ids are per user pair (the pair's ``relations`` row), start at 1 and grow by one.
"Newest" means the highest ``msg_id``: ids follow commit order, which is the order the
reference sorts by (create time, then row id) without its clock-skew ties.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from teamtalk_py.pb.IM import BaseDefine_pb2
from teamtalk_py.store.resends import RESEND_WINDOW, FirstCopy, ResendMatcher, SendKey
from teamtalk_py.store.txn import (
    PAIR_ROWS,
    Dialect,
    LockKey,
    Txn,
    lock_order,
    placeholders,
    upsert_sql,
)

# A sessions row's status; written with the messages, listed by sessions.py.
SESSION_VISIBLE = 0
SESSION_REMOVED = 1
# The reference answers at most this many messages for a get-by-id request.
MAX_IDS_PER_REQUEST = 100

_SINGLE = BaseDefine_pb2.SESSION_TYPE_SINGLE
_NO_UPPER_BOUND = 2**62


@dataclass(frozen=True, slots=True)
class StoredMessage:
    msg_id: int
    from_id: int
    # The receiving user (one-to-one) or the group (group messages).
    to_id: int
    msg_type: int
    content: bytes
    created: int
    #: The node run that stored it and its serial there (``store/origins.py``); 0 where
    #: not known (history reads, resends, rows from before migration 12).
    origin: int = 0


class LatestMessage:
    """``latest_msg_*`` shortcuts named like the protobuf fields they fill."""

    __slots__ = ()
    latest: StoredMessage

    @property
    def latest_msg_id(self) -> int:
        return self.latest.msg_id

    @property
    def latest_msg_data(self) -> bytes:
        return self.latest.content

    @property
    def latest_msg_type(self) -> int:
        return self.latest.msg_type

    @property
    def latest_msg_from_id(self) -> int:
        """The real sender (the reference answered the peer id here for single sessions)."""
        return self.latest.from_id


@dataclass(frozen=True, slots=True)
class UnreadRow(LatestMessage):
    """Unread messages from one peer, with the newest message of the pair (any sender)."""

    peer_id: int
    session_type: int
    count: int
    latest: StoredMessage


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def message_from_row(row: tuple[Any, ...]) -> StoredMessage:
    msg_id, from_id, to_id, msg_type, content, created = row
    return StoredMessage(msg_id, from_id, to_id, msg_type, bytes(content), created)


def pair_join(user_col: str, peer_col: str) -> str:
    """Join condition from a (user, peer) row to the pair's ``relations r`` row."""
    return (
        f"r.small_id = CASE WHEN {peer_col} < {user_col} THEN {peer_col} ELSE {user_col} END "
        f"AND r.big_id = CASE WHEN {peer_col} < {user_col} THEN {user_col} ELSE {peer_col} END"
    )


MESSAGE_COLUMNS = "m.msg_id, m.from_id, m.to_id, m.msg_type, m.content, m.created"

# The newest message of a pair is the one whose msg_id is the relation's last_msg_id.
LATEST_OF_PAIR = "JOIN messages m ON m.relation_id = r.id AND m.msg_id = r.last_msg_id"

_INSERT_MESSAGE = (
    "INSERT INTO messages "
    "(relation_id, from_id, to_id, msg_id, msg_type, content, created, origin) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def pair_rows_first(*_args: Any, **_kwargs: Any) -> LockKey:
    """Lock key of one-to-one message jobs (``txn.lock_order``): their pairs' rows, sorted,
    come before any group's."""
    return (PAIR_ROWS,)


@lock_order(pair_rows_first)
def store_single_message(
    txn: Txn, from_id: int, to_id: int, msg_type: int, content: bytes, created: int
) -> StoredMessage:
    """Store one one-to-one message and do its bookkeeping; the message with its new id.

    Creates the pair's relation on first use, increments the receiver's unread counter
    for the sender, and makes both users' sessions visible with ``updated = created``
    (the reference refreshed only one of them; both is what clients expect). The work is
    ``store_single_messages``'s, for a batch of one.
    """
    if not isinstance(content, bytes | bytearray | memoryview):
        raise TypeError(f"content must be bytes, not {type(content).__name__}")
    (accepted,) = store_single_messages(
        txn, [NewMessage(from_id, to_id, msg_type, bytes(content), created)]
    )
    return accepted.message


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A one-to-one message waiting to be stored (``store_single_messages``)."""

    from_id: int
    to_id: int
    msg_type: int
    content: bytes
    created: int
    #: How it arrived, when a resend of it could be recognised (``store/resends.py``).
    sent: SendKey | None = None
    #: The storing node run and the message's serial in it (``store/origins.py``).
    origin: int = 0


@dataclass(frozen=True, slots=True)
class Accepted:
    """What became of one sent message: stored now, or recognised as a resend."""

    message: StoredMessage
    #: For a resend: the connection the stored first copy came on; None for a new message.
    resend_of: int | None = None


# Allocating k ids of a pair at once: the relation row ends at last_msg_id + k.
_NEXT_MSG_IDS = {
    dialect: upsert_sql(
        dialect,
        "relations",
        ("small_id", "big_id", "last_msg_id", "created", "updated"),
        ("small_id", "big_id"),
        "last_msg_id = last_msg_id + ?, updated = ?",
    )
    for dialect in Dialect
}

# MySQL: the same upsert, but an existing row leaves its new ``last_msg_id`` in
# LAST_INSERT_ID(), which comes back in the statement's own answer (``lastrowid``); a new
# row answers its auto-increment id there instead, and its last_msg_id is the count.
_NEXT_MSG_IDS_MYSQL = (
    "INSERT INTO relations (small_id, big_id, last_msg_id, created, updated) "
    "VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE "
    "last_msg_id = LAST_INSERT_ID(last_msg_id + VALUES(last_msg_id)), "
    "updated = VALUES(updated)"
)
_ROW_INSERTED = 1  # an upsert's rowcount for a new row (2 for an updated one)


def _relation_ids(txn: Txn, pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """The relation ids of the pairs that have one (ids never change): one read for a
    batch, so that allocating each pair's ids is then a single upsert (MySQL)."""
    found: dict[tuple[int, int], int] = {}
    for start in range(0, len(pairs), 200):
        chunk = pairs[start : start + 200]
        where = " OR ".join(["(small_id = ? AND big_id = ?)"] * len(chunk))
        rows = txn.execute(
            f"SELECT small_id, big_id, id FROM relations WHERE {where}",
            [n for pair in chunk for n in pair],
        ).fetchall()
        found.update({(int(a), int(b)): int(i) for a, b, i in rows})
    return found


def _allocate_ids(
    txn: Txn, pair: tuple[int, int], count: int, created: int, known: dict[tuple[int, int], int]
) -> tuple[int, int]:
    """``count`` new ids of the pair: (relation id, the last of them). The upsert holds the
    relation row locked until COMMIT, so no other writer (node) allocates meanwhile."""
    small, big = pair
    if txn.dialect is Dialect.SQLITE:
        params = (small, big, count, created, created, count, created)
        allocated = txn.execute(
            _NEXT_MSG_IDS[Dialect.SQLITE] + " RETURNING id, last_msg_id", params
        ).fetchone()
        assert allocated is not None  # the upsert wrote the row
        return int(allocated[0]), int(allocated[1])
    txn.execute(_NEXT_MSG_IDS_MYSQL, (small, big, count, created, created))
    if txn.rowcount == _ROW_INSERTED:
        return txn.lastrowid, count
    last = txn.lastrowid
    relation_id = known.get(pair)
    if relation_id is None:
        # Another node created the pair's relation since the batch looked.
        row = txn.execute(
            "SELECT id FROM relations WHERE small_id = ? AND big_id = ?", (small, big)
        ).fetchone()
        assert row is not None
        relation_id = int(row[0])
    return relation_id, last


# Row-only parameters, so that ``executemany`` can fold them into one statement on MySQL
# (PyMySQL cannot carry parameters in the ON DUPLICATE KEY part).
_NEW_VALUE = {Dialect.SQLITE: "excluded.{}", Dialect.MYSQL: "VALUES({})"}

_ADD_UNREAD = {
    dialect: upsert_sql(
        dialect,
        "unread",
        ("user_id", "peer_id", "count"),
        ("user_id", "peer_id"),
        "count = count + " + _NEW_VALUE[dialect].format("count"),
    )
    for dialect in Dialect
}

# One user's session row with the status and updated time given: the later ``?``
# parameters repeat them for an existing row (groups and sessions write one at a time).
SET_SESSION_STATUS = {
    dialect: upsert_sql(
        dialect,
        "sessions",
        ("user_id", "peer_id", "type", "status", "created", "updated"),
        ("user_id", "peer_id", "type"),
        "status = ?, updated = ?",
    )
    for dialect in Dialect
}

_SHOW_SESSION = {
    dialect: upsert_sql(
        dialect,
        "sessions",
        ("user_id", "peer_id", "type", "status", "created", "updated"),
        ("user_id", "peer_id", "type"),
        "status = 0, updated = " + _NEW_VALUE[dialect].format("updated"),
    )
    for dialect in Dialect
}


def _check_new(message: NewMessage) -> None:
    if message.from_id <= 0 or message.to_id <= 0 or message.from_id == message.to_id:
        raise ValueError(
            f"no one-to-one conversation between {message.from_id} and {message.to_id}"
        )
    if not isinstance(message.content, bytes) or not message.content:
        raise ValueError("a message needs non-empty bytes content")


@lock_order(pair_rows_first)
def store_single_messages(
    txn: Txn, batch: Sequence[NewMessage], *, resend_window: int = RESEND_WINDOW
) -> list[Accepted]:
    """Store many one-to-one messages in one go; what became of each, in ``batch`` order.

    The same bookkeeping as ``store_single_message``, but the work is per *pair*, not per
    message: the messages of one pair get consecutive ids (in batch order) from one
    relation update, the unread counter of each receiver/sender moves once by the number
    of messages, each pair's two sessions are touched once, and every row is inserted by
    one ``executemany``. This is what lets a busy node store tens of thousands of
    messages a second on one writer thread.

    A message with a ``sent`` key that resends a stored one (``store/resends.py``) is not
    stored again: its result is the first copy, with ``resend_of`` set.
    """
    for message in batch:
        _check_new(message)
    keys = [m.sent for m in batch if m.sent is not None]
    matcher = (
        ResendMatcher.load(txn, keys, min(m.created for m in batch) - resend_window)
        if keys
        else None
    )
    results: list[Accepted | None] = [None] * len(batch)
    resent: list[tuple[int, FirstCopy]] = []
    new_copies: dict[int, FirstCopy] = {}
    by_pair: dict[tuple[int, int], list[int]] = {}
    for index, message in enumerate(batch):
        if matcher is not None and message.sent is not None:
            first = matcher.first_copy(message.sent)
            if first is not None:
                matcher.claim(message.sent, first)
                resent.append((index, first))
                continue
            new_copies[index] = matcher.new(message.sent, message.created, index)
        by_pair.setdefault(_pair(message.from_id, message.to_id), []).append(index)
    dialect = txn.dialect
    rows: list[tuple[Any, ...]] = []
    unread: dict[tuple[int, int], int] = {}
    sessions: list[tuple[Any, ...]] = []
    # Row locks in one order (pairs, then unread and session rows, each sorted by key), so
    # that batches of several nodes wait for each other instead of deadlocking.
    pairs = sorted(by_pair)
    known = _relation_ids(txn, pairs) if dialect is Dialect.MYSQL and pairs else {}
    for pair in pairs:
        small, big = pair
        indexes = by_pair[pair]
        count = len(indexes)
        created = max(batch[i].created for i in indexes)
        relation_id, last = _allocate_ids(txn, pair, count, created, known)
        msg_id = last - count
        for index in indexes:
            m = batch[index]
            msg_id += 1
            rows.append(
                (relation_id, m.from_id, m.to_id, msg_id, m.msg_type, m.content, m.created,
                 m.origin)
            )  # fmt: skip
            results[index] = Accepted(
                StoredMessage(msg_id, m.from_id, m.to_id, m.msg_type, m.content, m.created,
                              m.origin)
            )  # fmt: skip
            copy = new_copies.get(index)
            if copy is not None:
                copy.msg_id = msg_id
            key = (m.to_id, m.from_id)
            unread[key] = unread.get(key, 0) + 1
        sessions.append((small, big, _SINGLE, SESSION_VISIBLE, created, created))
        sessions.append((big, small, _SINGLE, SESSION_VISIBLE, created, created))
    for index, first in resent:
        m = batch[index]
        results[index] = Accepted(
            StoredMessage(first.msg_id, m.from_id, m.to_id, m.msg_type, m.content, first.created),
            resend_of=first.connection,
        )
    txn.executemany(_INSERT_MESSAGE, rows)
    txn.executemany(
        _ADD_UNREAD[dialect], [(to, sender, n) for (to, sender), n in sorted(unread.items())]
    )
    txn.executemany(_SHOW_SESSION[dialect], sorted(sessions))
    if matcher is not None:
        matcher.write(txn)
    return results  # type: ignore[return-value]


def latest_single_msg_id(txn: Txn, user_id: int, peer_id: int) -> int:
    """The newest message id of the pair, 0 if they never talked."""
    small, big = _pair(user_id, peer_id)
    row = txn.execute(
        "SELECT last_msg_id FROM relations WHERE small_id = ? AND big_id = ?", (small, big)
    ).fetchone()
    return int(row[0]) if row else 0


def single_history(
    txn: Txn, user_id: int, peer_id: int, msg_id_begin: int, count: int
) -> list[StoredMessage]:
    """Up to ``count`` messages of the pair, newest first, ``msg_id <= msg_id_begin``
    unless it is 0. Empty when the pair never talked (no relation)."""
    if count <= 0:
        return []
    small, big = _pair(user_id, peer_id)
    rows = txn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM relations r "
        "JOIN messages m ON m.relation_id = r.id "
        "WHERE r.small_id = ? AND r.big_id = ? AND m.msg_id <= ? "
        "ORDER BY m.msg_id DESC LIMIT ?",
        (small, big, msg_id_begin or _NO_UPPER_BOUND, count),
    ).fetchall()
    return [message_from_row(row) for row in rows]


def single_messages_by_ids(
    txn: Txn, user_id: int, peer_id: int, msg_ids: Iterable[int]
) -> list[StoredMessage]:
    """The listed messages of the pair that exist, newest first; only the first 100
    distinct ids are looked at."""
    wanted = list(dict.fromkeys(int(i) for i in msg_ids))[:MAX_IDS_PER_REQUEST]
    if not wanted:
        return []
    small, big = _pair(user_id, peer_id)
    rows = txn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM relations r "
        "JOIN messages m ON m.relation_id = r.id "
        f"WHERE r.small_id = ? AND r.big_id = ? AND m.msg_id IN ({placeholders(len(wanted))}) "
        "ORDER BY m.msg_id DESC",
        (small, big, *wanted),
    ).fetchall()
    return [message_from_row(row) for row in rows]


def mark_single_read(txn: Txn, reader_id: int, peer_id: int) -> None:
    """The reader has read everything from ``peer_id`` (whatever msg id the ack names)."""
    txn.execute("DELETE FROM unread WHERE user_id = ? AND peer_id = ?", (reader_id, peer_id))


def unread_counts(txn: Txn, user_id: int) -> list[UnreadRow]:
    """One-to-one unread counters of the user, each with the pair's newest message
    (``groups.group_unread_counts`` has the groups')."""
    return unread_counts_of(txn, [user_id])[user_id]


def unread_counts_of(txn: Txn, user_ids: Sequence[int]) -> dict[int, list[UnreadRow]]:
    """``unread_counts`` of many users in one statement (the importer's check reads every
    user's; a statement per user is a round trip per user on MariaDB)."""
    found: dict[int, list[UnreadRow]] = {int(u): [] for u in user_ids}
    rows = txn.execute(
        f"SELECT u.user_id, u.peer_id, u.count, {MESSAGE_COLUMNS} FROM unread u "
        f"JOIN relations r ON {pair_join('u.user_id', 'u.peer_id')} "
        f"{LATEST_OF_PAIR} "
        f"WHERE u.user_id IN ({placeholders(len(found))}) AND u.count > 0 "
        "ORDER BY u.user_id, u.peer_id",
        list(found),
    ).fetchall()
    for row in rows:
        found[int(row[0])].append(
            UnreadRow(row[1], _SINGLE, int(row[2]), message_from_row(row[3:]))
        )
    return found
