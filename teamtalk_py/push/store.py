"""Push tables: the outbox written with each message, the facts the decision reads, and
the embedded queue (``push_queue``). Plain ``fn(txn, ...)`` repository functions.

The outbox is what makes push exactly as durable as the message: a node writes one
``push_outbox`` row per message that has somebody to push to (a receiver or member with
a device token) **in the transaction that stores the message**
(``store_single_messages`` / ``store_group_message`` here wrap the message store's own
functions). After the commit the node decides the pushes and hands them to the queue;
the hand-off deletes the outbox row, and only the hand-off that deleted it queues the
jobs, so two nodes racing over an abandoned row queue its pushes once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import groups as group_store
from teamtalk_py.store import messages
from teamtalk_py.store.accounts import DeviceTokenRow, get_device_tokens
from teamtalk_py.store.groups import StoredGroupMessage
from teamtalk_py.store.messages import Accepted, NewMessage
from teamtalk_py.store.resends import SendKey
from teamtalk_py.store.txn import Dialect, Txn, lock_order, placeholders

QUEUED = 0
DEAD = 1
_CHUNK = 500

_INSERT_OUTBOX = (
    "INSERT INTO push_outbox (node, session_type, from_id, to_id, msg_id, msg_type, content, "
    "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


# --------------------------------------------------------------------------------------
# The outbox, in the message's transaction


def _with_tokens(txn: Txn, user_ids: Iterable[int]) -> set[int]:
    """The users among ``user_ids`` with a stored device token."""
    found: set[int] = set()
    for chunk in _chunks(sorted(set(user_ids))):
        rows = txn.execute(
            f"SELECT user_id FROM device_tokens WHERE user_id IN ({placeholders(len(chunk))})",
            chunk,
        ).fetchall()
        found.update(int(row[0]) for row in rows)
    return found


@lock_order(messages.pair_rows_first)
def store_single_messages(
    txn: Txn, batch: Sequence[NewMessage], *, node: str, coalesce: bool = False
) -> list[Accepted]:
    """``messages.store_single_messages`` plus an outbox row per new message whose
    receiver has a device token now (one query per batch: a message to nobody's phone
    costs the push path nothing more; a recognised resend was pushed with its first
    copy).

    With ``coalesce`` (``push.coalesce_window`` > 0) only the newest message of each
    conversation in the batch gets a row: the decision round that reads this commit's
    rows would push only that one anyway (``newest_per_conversation``), and a busy
    conversation then costs one row per commit, not one per message."""
    accepted = messages.store_single_messages(txn, batch)
    stored = [a.message for a in accepted if a.resend_of is None]
    if coalesce and len(stored) > 1:
        # A pair's messages get their ids in batch order: the last one is the newest.
        stored = list({(m.from_id, m.to_id): m for m in stored}.values())
    pushable = _with_tokens(txn, (m.to_id for m in stored))
    txn.executemany(
        _INSERT_OUTBOX,
        [
            (node, B.SESSION_TYPE_SINGLE, m.from_id, m.to_id, m.msg_id, m.msg_type, m.content,
             m.created)
            for m in stored
            if m.to_id in pushable
        ],
    )  # fmt: skip
    return accepted


@lock_order(group_store.group_row_first)
def store_group_message(
    txn: Txn, group_id: int, from_id: int, msg_type: int, content: bytes, created: int,
    sent: SendKey | None = None, *, node: str, origin: int = 0,
) -> StoredGroupMessage:  # fmt: skip
    """``groups.store_group_message`` plus its outbox row, when some member who may be
    pushed (not the sender, group not muted) has a device token now."""
    stored = group_store.store_group_message(
        txn, group_id, from_id, msg_type, content, created, sent, origin=origin
    )
    if stored.resend_of is not None:
        return stored  # pushed with its first copy
    m = stored.message
    anyone = txn.execute(
        "SELECT 1 FROM group_members m JOIN device_tokens d ON d.user_id = m.user_id "
        "WHERE m.group_id = ? AND m.status = ? AND m.shield = 0 AND m.user_id <> ? LIMIT 1",
        (group_id, group_store.MEMBER_ACTIVE, from_id),
    ).fetchone()
    if anyone is None:
        return stored
    txn.execute(
        _INSERT_OUTBOX,
        (node, B.SESSION_TYPE_GROUP, m.from_id, m.to_id, m.msg_id, m.msg_type, m.content,
         m.created),
    )  # fmt: skip
    return stored


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    node: str
    session_type: int
    from_id: int
    #: The receiver (one-to-one) or the group.
    to_id: int
    msg_id: int
    msg_type: int
    content: bytes
    created: int

    @property
    def is_group(self) -> bool:
        return self.session_type == B.SESSION_TYPE_GROUP


def pending_outbox(txn: Txn, node: str, orphaned_before: int, limit: int) -> list[OutboxRow]:
    """This node's rows, and rows of other (or earlier) nodes older than ``orphaned_before``:
    their node stopped before pushing them."""
    rows = txn.execute(
        "SELECT id, node, session_type, from_id, to_id, msg_id, msg_type, content, created "
        "FROM push_outbox WHERE node = ? OR created < ? ORDER BY id LIMIT ?",
        (node, orphaned_before, limit),
    ).fetchall()
    return [_outbox_row(row) for row in rows]


def newest_per_conversation(rows: Iterable[Sequence[Any]]) -> list[int]:
    """The ids of the newest row of each conversation (a sender's messages to one user,
    or a group's messages), in outbox order; ``rows``: (id, session_type, from_id,
    to_id), in id order."""
    newest: dict[tuple[int, int, int], int] = {}
    group = B.SESSION_TYPE_GROUP
    for outbox_id, session_type, from_id, to_id in rows:
        sender = 0 if session_type == group else from_id
        newest[(session_type, sender, to_id)] = outbox_id
    return sorted(newest.values())


@dataclass(frozen=True, slots=True)
class OutboxRound:
    """One decision round's read: the pending rows, the ones to decide, their facts."""

    #: Every row read, in id order; all are handed off (and deleted).
    ids: list[int]
    #: The rows whose pushes are decided (with their content): the newest of each
    #: conversation when coalescing, else all of them.
    decide: list[OutboxRow]
    facts: Facts
    #: The embedded queue's depth when the round was asked to count it (``queue_limit``).
    queue_depth: int | None = None


def outbox_round(
    txn: Txn,
    node: str,
    orphaned_before: int,
    limit: int,
    coalesce: bool,
    queue_limit: int | None = None,
) -> OutboxRound:
    """``pending_outbox`` and ``decision_facts`` in one read, the full rows of only those
    decided: coalescing hands the others off with no push, so their text is never
    needed (nor an object per row), and most rows of a busy conversation are such rows.

    With ``queue_limit`` (the embedded queue), the same read counts the ``push_queue``
    jobs waiting and takes at most the rows that fit under the limit, none when it is
    reached: one reader hop per round, not two."""
    depth = None
    if queue_limit is not None:
        depth = queue_depth(txn)
        limit = min(limit, queue_limit - depth)
        if limit <= 0:
            return OutboxRound([], [], _NO_FACTS, depth)
    found = txn.execute(
        "SELECT id, session_type, from_id, to_id FROM push_outbox "
        "WHERE node = ? OR created < ? ORDER BY id LIMIT ?",
        (node, orphaned_before, limit),
    ).fetchall()
    if not found:
        return OutboxRound([], [], _NO_FACTS, depth)
    ids = [int(r[0]) for r in found]
    chosen = newest_per_conversation(found) if coalesce else ids
    decide: list[OutboxRow] = []
    for chunk in _chunks(chosen):
        decide += [
            _outbox_row(row)
            for row in txn.execute(
                "SELECT id, node, session_type, from_id, to_id, msg_id, msg_type, content, "
                f"created FROM push_outbox WHERE id IN ({placeholders(len(chunk))})",
                chunk,
            ).fetchall()
        ]
    # A row gone meanwhile (another node handed it off) is not decided; its id is still
    # handed off, which finds it deleted and queues nothing.
    decide.sort(key=lambda row: row.id)
    return OutboxRound(ids, decide, decision_facts(txn, decide), depth)


def _outbox_row(r: tuple[Any, ...]) -> OutboxRow:
    session_type, from_id, to_id, msg_id, msg_type = (int(v) for v in r[2:7])
    return OutboxRow(
        int(r[0]), str(r[1]), session_type, from_id, to_id, msg_id, msg_type, bytes(r[7]),
        int(r[8]),
    )  # fmt: skip


def _count(txn: Txn, sql: str, params: Sequence[Any] = ()) -> int:
    row = txn.execute(sql, params).fetchone()
    return int(row[0]) if row is not None else 0


def outbox_size(txn: Txn) -> int:
    return _count(txn, "SELECT COUNT(*) FROM push_outbox")


# --------------------------------------------------------------------------------------
# What the decision needs to know


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the decision reads from the store for a batch of outbox rows."""

    #: outbox id -> users the message may be pushed to (sender and group-shielded excluded)
    targets: dict[int, tuple[int, ...]]
    #: user id -> stored device token (users without one are absent)
    tokens: dict[int, DeviceTokenRow]
    #: user id -> total unread (one-to-one and group), the badge
    unread: dict[int, int]
    #: sender id -> the name pushes show (nick, else account name)
    names: dict[int, str]


_NO_FACTS = Facts({}, {}, {}, {})


def _group_targets(txn: Txn, row: OutboxRow) -> tuple[int, ...]:
    """Members who had joined before the message and have not muted the group."""
    found = txn.execute(
        "SELECT user_id FROM group_members WHERE group_id = ? AND status = ? AND shield = 0 "
        "AND join_msg_id < ? AND user_id <> ? ORDER BY user_id",
        (row.to_id, group_store.MEMBER_ACTIVE, row.msg_id, row.from_id),
    ).fetchall()
    return tuple(int(r[0]) for r in found)


def total_unread(txn: Txn, user_ids: Sequence[int]) -> dict[int, int]:
    """Each user's total unread count: one-to-one counters plus unread group messages."""
    totals = dict.fromkeys(user_ids, 0)
    seen = "CASE WHEN m.read_msg_id > m.join_msg_id THEN m.read_msg_id ELSE m.join_msg_id END"
    for chunk in _chunks(list(user_ids)):
        marks = placeholders(len(chunk))
        for user_id, count in txn.execute(
            f"SELECT user_id, SUM(count) FROM unread WHERE user_id IN ({marks}) GROUP BY user_id",
            chunk,
        ).fetchall():
            totals[int(user_id)] += int(count or 0)
        for user_id, count in txn.execute(
            f"SELECT m.user_id, SUM(g.last_msg_id - ({seen})) FROM group_members m "
            "JOIN im_groups g ON g.id = m.group_id "
            f"WHERE m.user_id IN ({marks}) AND m.status = ? AND g.status = ? "
            f"AND g.last_msg_id > ({seen}) GROUP BY m.user_id",
            (*chunk, group_store.MEMBER_ACTIVE, group_store.GROUP_ACTIVE),
        ).fetchall():
            totals[int(user_id)] += int(count or 0)
    return totals


def decision_facts(txn: Txn, rows: Sequence[OutboxRow]) -> Facts:
    targets: dict[int, tuple[int, ...]] = {}
    for row in rows:
        if row.is_group:
            targets[row.id] = _group_targets(txn, row)
        else:
            targets[row.id] = (row.to_id,) if row.to_id != row.from_id else ()
    wanted = sorted({u for users in targets.values() for u in users})
    tokens = {t.user_id: t for t in get_device_tokens(txn, wanted)}
    unread = total_unread(txn, sorted(tokens)) if tokens else {}
    senders = sorted({row.from_id for row in rows})
    names: dict[int, str] = {}
    for chunk in _chunks(senders):
        for user_id, name, nick in txn.execute(
            f"SELECT id, name, nick FROM users WHERE id IN ({placeholders(len(chunk))})",
            chunk,
        ).fetchall():
            names[int(user_id)] = nick or name
    return Facts(targets, tokens, unread, names)


def remove_token(txn: Txn, user_id: int, token: str) -> bool:
    """Forget a token the push service called dead, unless the user has a new one."""
    txn.execute("DELETE FROM device_tokens WHERE user_id = ? AND token = ?", (user_id, token))
    return txn.rowcount > 0


# --------------------------------------------------------------------------------------
# The hand-off and the embedded queue


def delete_outbox(txn: Txn, outbox_ids: Sequence[int]) -> list[int]:
    """Delete the rows; the ids this call deleted (another node may have been first).

    The rows are read locked (``FOR UPDATE`` on MySQL, where nodes write side by side,
    in id order; SQLite's writer holds the only write lock), so the rows found are the
    rows this transaction deletes: a node that comes second finds them gone."""
    deleted: list[int] = []
    if txn.dialect is Dialect.SQLITE:
        # One statement per chunk: SQLite's writer holds the only write lock, and
        # RETURNING names the rows this statement deleted.
        for chunk in _chunks(sorted(outbox_ids)):
            found = txn.execute(
                f"DELETE FROM push_outbox WHERE id IN ({placeholders(len(chunk))}) RETURNING id",
                chunk,
            )
            deleted.extend(int(row[0]) for row in found.fetchall())
        return deleted
    for chunk in _chunks(sorted(outbox_ids)):
        marks = placeholders(len(chunk))
        found = txn.execute(f"SELECT id FROM push_outbox WHERE id IN ({marks}) FOR UPDATE", chunk)
        present = [int(row[0]) for row in found.fetchall()]
        if present:
            txn.execute(
                f"DELETE FROM push_outbox WHERE id IN ({placeholders(len(present))})", present
            )
            deleted.extend(present)
    return deleted


def hand_off_to_queue(
    txn: Txn,
    decided: Sequence[tuple[int, Sequence[tuple[str, str]]]],
    now_ms: int,
    leased_until: int,
) -> list[tuple[int, list[int]]]:
    """For each (outbox id, [(sender, job json)]): delete the row and queue its jobs, only
    if the row was still there. The jobs are queued leased to the caller until
    ``leased_until`` (it sends them at once, with no claim). For each outbox row this
    call queued: (outbox id, the new queue ids in job order)."""
    deleted = set(delete_outbox(txn, [outbox_id for outbox_id, _ in decided]))
    queued: list[tuple[int, list[int]]] = []
    insert = (
        "INSERT INTO push_queue (sender, job, state, attempts, due, created) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    for outbox_id, jobs in decided:
        if outbox_id not in deleted:
            continue
        ids = []
        for sender, job in jobs:
            txn.execute(insert, (sender, job, QUEUED, 0, leased_until, now_ms // 1000))
            ids.append(txn.lastrowid)
        queued.append((outbox_id, ids))
    return queued


def queue_depth(txn: Txn) -> int:
    """Jobs waiting or being sent (the dead letter does not count)."""
    return _count(txn, "SELECT COUNT(*) FROM push_queue WHERE state = ?", (QUEUED,))


@dataclass(frozen=True, slots=True)
class QueuedRow:
    id: int
    job: str
    attempts: int


def claim_jobs(txn: Txn, now_ms: int, lease_ms: int, limit: int) -> list[QueuedRow]:
    """Due jobs, leased to the caller for ``lease_ms`` (a node that dies holding them
    leaves them due again when the lease ends). The rows are read locked on MySQL, where
    nodes write side by side: a node that comes second sees them leased, not due."""
    lock = " FOR UPDATE" if txn.dialect is Dialect.MYSQL else ""
    found = txn.execute(
        "SELECT id, job, attempts FROM push_queue WHERE state = ? AND due <= ? "
        "ORDER BY due, id LIMIT ?" + lock,
        (QUEUED, now_ms, limit),
    ).fetchall()
    if not found:
        return []
    ids = [int(r[0]) for r in found]
    txn.execute(
        f"UPDATE push_queue SET due = ? WHERE id IN ({placeholders(len(ids))})",
        (now_ms + lease_ms, *ids),
    )
    return [QueuedRow(int(r[0]), r[1], int(r[2])) for r in found]


def next_due(txn: Txn) -> int | None:
    row = txn.execute("SELECT MIN(due) FROM push_queue WHERE state = ?", (QUEUED,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def settle_jobs(
    txn: Txn,
    done: Sequence[int],
    retry: Sequence[tuple[int, int, str]],
    dead: Sequence[tuple[int, str]],
) -> None:
    """Finish what senders answered: delete sent/expired jobs, reschedule retries
    (id, due ms, error), move failures to the dead letter (id, error)."""
    for chunk in _chunks(list(done)):
        txn.execute(f"DELETE FROM push_queue WHERE id IN ({placeholders(len(chunk))})", chunk)
    txn.executemany(
        "UPDATE push_queue SET attempts = attempts + 1, due = ?, last_error = ? WHERE id = ?",
        [(due, error[:500], job_id) for job_id, due, error in retry],
    )
    txn.executemany(
        "UPDATE push_queue SET attempts = attempts + 1, state = ?, last_error = ? WHERE id = ?",
        [(DEAD, error[:500], job_id) for job_id, error in dead],
    )


def dead_letters(txn: Txn, limit: int = 100) -> list[tuple[int, str, int, str]]:
    """(id, job json, attempts, last error) of dead jobs, newest first."""
    rows = txn.execute(
        "SELECT id, job, attempts, last_error FROM push_queue WHERE state = ? "
        "ORDER BY id DESC LIMIT ?",
        (DEAD, limit),
    ).fetchall()
    return [(int(r[0]), r[1], int(r[2]), r[3]) for r in rows]


__all__: list[Any] = [
    "Facts",
    "OutboxRound",
    "OutboxRow",
    "QueuedRow",
    "claim_jobs",
    "decision_facts",
    "hand_off_to_queue",
    "newest_per_conversation",
    "outbox_round",
    "pending_outbox",
    "queue_depth",
    "remove_token",
    "settle_jobs",
    "store_group_message",
    "store_single_messages",
]
