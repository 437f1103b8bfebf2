"""Recent sessions of both kinds: the contact list a client shows, and removing from it.

Plain synchronous repository functions ``fn(txn, ...)`` (see ``txn.py``). The rows come
from two places, which is why this module sits above ``messages`` and ``groups``:

* a one-to-one session is a ``sessions`` row per user and peer, shown again by every
  message of the pair (``messages.store_single_messages``);
* a group session is computed from membership and the group's last message instead of
  being written for every member on every message (the reference refreshed them in a
  5-second background job); its ``sessions`` row only records that the member removed it
  and the sender's own session, which sending always re-shows
  (``groups.store_group_message``).

Removing either kind hides it and marks it read. ``SESSION_VISIBLE`` and
``SESSION_REMOVED`` are defined with the messages that write them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from teamtalk_py.pb.IM import BaseDefine_pb2
from teamtalk_py.store import groups
from teamtalk_py.store.messages import (
    LATEST_OF_PAIR,
    MESSAGE_COLUMNS,
    SESSION_REMOVED,
    SESSION_VISIBLE,
    SET_SESSION_STATUS,
    LatestMessage,
    StoredMessage,
    mark_single_read,
    message_from_row,
    pair_join,
)
from teamtalk_py.store.txn import Txn

# Recent-session answers are capped like the reference's.
MAX_RECENT_SESSIONS = 100

_SINGLE = BaseDefine_pb2.SESSION_TYPE_SINGLE
_GROUP = BaseDefine_pb2.SESSION_TYPE_GROUP


@dataclass(frozen=True, slots=True)
class SessionRow(LatestMessage):
    """A visible recent session with the newest message exchanged in it."""

    peer_id: int
    session_type: int
    updated: int
    latest: StoredMessage


def recent_sessions(
    txn: Txn, user_id: int, updated_after: int, limit: int = MAX_RECENT_SESSIONS
) -> list[SessionRow]:
    """One-to-one and group sessions together, newest first, at most ``limit``."""
    rows = recent_single_sessions(txn, user_id, updated_after, limit)
    rows += recent_group_sessions(txn, user_id, updated_after, limit)
    rows.sort(key=lambda s: (s.updated, s.peer_id), reverse=True)
    return rows[:limit]


def recent_single_sessions(
    txn: Txn, user_id: int, updated_after: int, limit: int = MAX_RECENT_SESSIONS
) -> list[SessionRow]:
    """Visible one-to-one sessions with ``updated > updated_after``, newest first, each
    with the newest message of the pair; sessions without any message are left out."""
    if limit <= 0:
        return []
    rows = txn.execute(
        f"SELECT s.peer_id, s.type, s.updated, {MESSAGE_COLUMNS} FROM sessions s "
        f"JOIN relations r ON {pair_join('s.user_id', 's.peer_id')} "
        f"{LATEST_OF_PAIR} "
        "WHERE s.user_id = ? AND s.status = ? AND s.updated > ? AND s.type = ? "
        "ORDER BY s.updated DESC, s.peer_id DESC LIMIT ?",
        (user_id, SESSION_VISIBLE, updated_after, _SINGLE, limit),
    ).fetchall()
    return [SessionRow(row[0], row[1], row[2], message_from_row(row[3:])) for row in rows]


# A member's group session: shown when a message arrived since they joined and they did
# not remove it; touched at the later of the group's last message and their own row.
_TOUCHED = (
    "CASE WHEN s.updated IS NOT NULL AND s.updated > g.last_chated "
    "THEN s.updated ELSE g.last_chated END"
)
_GROUP_SESSIONS = (
    f"SELECT g.id, {_TOUCHED}, gm.msg_id, gm.from_id, gm.msg_type, gm.content, gm.created "
    "FROM group_members m JOIN im_groups g ON g.id = m.group_id "
    "JOIN group_messages gm ON gm.group_id = g.id AND gm.msg_id = g.last_msg_id "
    "LEFT JOIN sessions s ON s.user_id = m.user_id AND s.peer_id = m.group_id AND s.type = ? "
    "WHERE m.user_id = ? AND m.status = ? AND g.status = ? AND g.last_msg_id > m.join_msg_id "
    "AND (s.status IS NULL OR s.status = ?)"
)


def recent_group_sessions(
    txn: Txn, user_id: int, updated_after: int, limit: int = MAX_RECENT_SESSIONS
) -> list[SessionRow]:
    """Visible group sessions touched after ``updated_after``, newest first.

    A member sees the group as soon as a message arrives since they joined; one who
    removed the session does not get it back from others' messages (their own message
    shows it again); a member added later gets it at the next message.
    """
    if limit <= 0:
        return []
    rows = txn.execute(
        f"{_GROUP_SESSIONS} AND {_TOUCHED} > ? ORDER BY 2 DESC, g.id DESC LIMIT ?",
        (_GROUP, user_id, groups.MEMBER_ACTIVE, groups.GROUP_ACTIVE, SESSION_VISIBLE,
         updated_after, limit),
    ).fetchall()  # fmt: skip
    group_message = groups.group_message_from_row
    return [
        SessionRow(int(row[0]), _GROUP, int(row[1]), group_message(int(row[0]), row[2:]))
        for row in rows
    ]


def remove_session(
    txn: Txn, user_id: int, peer_id: int, session_type: int, *, now: int | None = None
) -> bool:
    """Hide the user's visible session and clear its unread count; False if it was not
    visible.

    A later message in that conversation shows the session again (for a group: only the
    user's own). ``now`` defaults to the wall clock (it only orders sessions, nothing is
    computed from it).
    """
    if now is None:
        now = int(time.time())
    if session_type == _GROUP:
        return _remove_group_session(txn, user_id, peer_id, now)
    txn.execute(
        "UPDATE sessions SET status = ?, updated = ? "
        "WHERE user_id = ? AND peer_id = ? AND type = ? AND status = ?",
        (SESSION_REMOVED, now, user_id, peer_id, session_type, SESSION_VISIBLE),
    )
    if txn.rowcount == 0:
        return False
    mark_single_read(txn, user_id, peer_id)
    return True


def _remove_group_session(txn: Txn, user_id: int, group_id: int, now: int) -> bool:
    """A group session is visible when ``recent_group_sessions`` would list it; hiding it
    records a removed row, which later messages of others leave hidden."""
    row = txn.execute(
        "SELECT s.status FROM sessions s WHERE s.user_id = ? AND s.peer_id = ? AND s.type = ?",
        (user_id, group_id, _GROUP),
    ).fetchone()
    if row is not None:
        visible = row[0] == SESSION_VISIBLE
    else:
        member = groups.membership(txn, group_id, user_id)
        group = groups.get_group(txn, group_id) if member is not None else None
        visible = (
            member is not None and group is not None and group.last_msg_id > member.join_msg_id
        )
    if not visible:
        return False
    txn.execute(
        SET_SESSION_STATUS[txn.dialect],
        (user_id, group_id, _GROUP, SESSION_REMOVED, now, now, SESSION_REMOVED, now),
    )
    groups.mark_group_read(txn, user_id, group_id)
    return True
