"""Where each message was stored: the msg node run that stored it and its serial there.

A msg process registers a *run* when it starts (``register_run``: a row of
``node_runs``, so run numbers are unique in the cluster without coordination). Every
message it stores carries ``origin = run << ORIGIN_SHIFT | serial``, the serial counting
up in the order the node submits its writes (its single writer commits them in that
order). One run's messages are therefore one range of the ``origin`` index, committed in
order, and "everything run R stored after serial S up to serial T" is one range query:
what a node asks when it missed another node's live deliveries (``msg/catch_up.py``).

Rows stored before migration 12, or by the importer, have origin 0 (no run).
"""

from __future__ import annotations

from dataclasses import dataclass

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store.groups import group_message_from_row
from teamtalk_py.store.messages import MESSAGE_COLUMNS, StoredMessage, message_from_row
from teamtalk_py.store.txn import Txn

#: Bits of an origin below the run number: 2^40 messages per run.
ORIGIN_SHIFT = 40
SERIAL_MASK = (1 << ORIGIN_SHIFT) - 1


def run_of(origin: int) -> int:
    return origin >> ORIGIN_SHIFT


def first_origin(run: int) -> int:
    """The origin just below the run's first message (serials start at 1)."""
    return run << ORIGIN_SHIFT


def register_run(txn: Txn, node: str, now: int) -> int:
    """A new run number for a msg process starting now."""
    txn.execute("INSERT INTO node_runs (node, started) VALUES (?, ?)", (node, now))
    return int(txn.lastrowid)


@dataclass(frozen=True, slots=True)
class OriginRow:
    """A message found by origin: which kind, and the message as receivers get it."""

    origin: int
    session_type: int
    #: ``to_id`` is the receiver (one-to-one) or the group.
    message: StoredMessage


def last_stored_before(txn: Txn, run: int, upto: int, created: int) -> int:
    """The highest origin of ``run``, up to ``upto``, of a message stored before
    ``created`` (seconds); the run's first origin when there is none.

    A run's origins and its messages' times rise together, so each table is read
    backwards from ``upto`` and stops at the first older row: the cost is the run's
    messages since ``created``, not its whole history."""
    first = best = first_origin(run)
    for table in ("messages", "group_messages"):
        row = txn.execute(
            f"SELECT origin FROM {table} WHERE origin > ? AND origin <= ? AND created < ? "
            "ORDER BY origin DESC LIMIT 1",
            (first, upto, created),
        ).fetchone()
        if row is not None:
            best = max(best, int(row[0]))
    return best


def messages_between(txn: Txn, after: int, upto: int, limit: int) -> list[OriginRow]:
    """One-to-one and group messages with ``after < origin <= upto``, in origin order,
    at most ``limit``: everything up to the last one returned (a page; ask again from
    there)."""
    single = txn.execute(
        f"SELECT m.origin, {MESSAGE_COLUMNS} FROM messages m "
        "WHERE m.origin > ? AND m.origin <= ? ORDER BY m.origin LIMIT ?",
        (after, upto, limit),
    ).fetchall()
    group = txn.execute(
        "SELECT origin, group_id, msg_id, from_id, msg_type, content, created "
        "FROM group_messages WHERE origin > ? AND origin <= ? ORDER BY origin LIMIT ?",
        (after, upto, limit),
    ).fetchall()
    found = [OriginRow(int(r[0]), B.SESSION_TYPE_SINGLE, message_from_row(r[1:])) for r in single]
    found += [
        OriginRow(int(r[0]), B.SESSION_TYPE_GROUP, group_message_from_row(int(r[1]), r[2:]))
        for r in group
    ]
    found.sort(key=lambda row: row.origin)
    # Each list is complete up to its own last origin; the merged page up to its
    # limit-th, which is no later than either list's last when that list is full.
    return found[:limit]
