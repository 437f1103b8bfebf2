"""Groups: fixed ("normal") and temporary groups, members, group messages and unread state
(commands.md §2.1.13, storage.md §4.4-4.6).

Plain synchronous repository functions ``fn(txn, ...)`` like ``messages.py``. What the
reference kept in Redis lives in columns here:

* ``im_groups.last_msg_id`` allocates the group's message ids. Storing a message first
  locks the group row (``SELECT ... FOR UPDATE`` on MySQL, where several nodes may share
  the database; SQLite's writer already holds the only write lock), so ids are 1, 2, 3...
  with no gap and no duplicate, and the id is committed with the message row. A writer
  batch runs its group messages by group id, after its one-to-one messages
  (``group_row_first``), so two nodes lock group rows in the same order.
* ``group_members.join_msg_id`` is the group's ``last_msg_id`` when the member (re)joined.
  A member sees exactly the messages with a larger id: history, get-by-id, latest id,
  unread and recent sessions all use it. (The reference compared join *time* with message
  time, which lets a member read what was said in the second before they joined.)
* ``group_members.read_msg_id`` is how far the member has read. Unread is
  ``last_msg_id - max(read_msg_id, join_msg_id)``: exact, per member, and durable. Sending
  marks the sender read up to their new message, as the reference does, so your own
  messages are never unread to you.
* Group sessions of the members are computed when recent sessions are listed instead of
  being written per member per message (the reference refreshed them in a 5-second
  background job). A member sees a group session when a message arrived since they
  joined, unless they removed it; the ``sessions`` row only records the removal (and the
  sender's own session, which sending always re-shows). ``sessions.py`` lists them.

Rules of membership changes (``change_members``): the requester 0 (admin CLI) may do
anything; in a temporary group any current member may add people; otherwise only the
creator may add or remove. When the creator stops being a member, the remaining member who
joined first becomes the creator. Removing the last member dissolves the group
(``status = 1``): it then no longer exists for any command, but its history stays stored.
Every successful change increments ``version``.

Refusals raise a :class:`GroupError` subclass, which rolls back the job's savepoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import messages
from teamtalk_py.store.messages import StoredMessage, UnreadRow
from teamtalk_py.store.resends import RESEND_WINDOW, ResendMatcher, SendKey
from teamtalk_py.store.txn import (
    GROUP_ROWS,
    Dialect,
    LockKey,
    Txn,
    lock_order,
    placeholders,
    upsert_sql,
)

GROUP_NORMAL = B.GROUP_TYPE_NORMAL
GROUP_TMP = B.GROUP_TYPE_TMP
ADD = B.GROUP_MODIFY_TYPE_ADD
DEL = B.GROUP_MODIFY_TYPE_DEL
GROUP_ACTIVE = 0
GROUP_DISSOLVED = 1
MEMBER_ACTIVE = 0
MEMBER_LEFT = 1
MAX_NAME_CHARS = 256
MAX_AVATAR_CHARS = 512
GROUP_MESSAGE_TYPES = (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO)

_GROUP = B.SESSION_TYPE_GROUP
_USER_LEFT = 3  # accounts.USER_STATUS_LEFT: departed users are never added
_CHUNK = 500
_NO_UPPER_BOUND = 2**62


class GroupError(Exception):
    """A group request that cannot be carried out; the message says why."""


class NoSuchGroup(GroupError):
    """The group does not exist or was dissolved."""


class NotAMember(GroupError):
    """The user is not a current member of the group."""


class NotAllowed(GroupError):
    """The requester may not make this membership change."""


class NothingToChange(GroupError):
    """Every listed user already is (add) or is not (remove) a member."""


@dataclass(frozen=True, slots=True)
class GroupRow:
    id: int
    name: str
    avatar: str
    creator: int
    type: int
    status: int
    version: int
    last_msg_id: int
    last_chated: int
    created: int
    updated: int


@dataclass(frozen=True, slots=True)
class Member:
    user_id: int
    joined: int
    join_msg_id: int
    read_msg_id: int
    shield: int


@dataclass(frozen=True, slots=True)
class GroupMembers:
    """The current members of a group at one version: what the msg node caches."""

    group_id: int
    version: int
    #: user id -> the group's last message id when they joined (they see later ones).
    join_msg_ids: Mapping[int, int]

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(self.join_msg_ids)


@dataclass(frozen=True, slots=True)
class GroupInfoRow:
    group: GroupRow
    members: tuple[int, ...]
    #: The requesting member's push mute flag.
    shield: int


@dataclass(frozen=True, slots=True)
class MemberChange:
    group_id: int
    change_type: int
    #: Users actually added or removed, ascending.
    changed: tuple[int, ...]
    #: Members after the change, ascending.
    current: tuple[int, ...]
    version: int
    creator: int
    dissolved: bool


@dataclass(frozen=True, slots=True)
class StoredGroupMessage:
    message: StoredMessage
    #: The group's version when the message was stored (member list it went to); for a
    #: resend, the group's version now (0 if it is gone).
    version: int
    #: For a resend: the connection the stored first copy came on; None for a new message.
    resend_of: int | None = None


_GROUP_COLUMNS = (
    "id, name, avatar, creator, type, status, version, last_msg_id, last_chated, created, updated"
)


def _group(row: tuple[Any, ...]) -> GroupRow:
    (id_, name, avatar, creator, type_, status, version, last, chated, created, updated) = row
    return GroupRow(
        int(id_), name, avatar, int(creator), int(type_), int(status), int(version),
        int(last), int(chated), int(created), int(updated),
    )  # fmt: skip


def group_message_from_row(group_id: int, row: tuple[Any, ...]) -> StoredMessage:
    msg_id, from_id, msg_type, content, created = row
    return StoredMessage(int(msg_id), int(from_id), group_id, int(msg_type), bytes(content),
                         int(created))  # fmt: skip


def _chunks(ids: Iterable[int]) -> list[list[int]]:
    unique = sorted({int(i) for i in ids})
    return [unique[i : i + _CHUNK] for i in range(0, len(unique), _CHUNK)]


def _check_text(what: str, value: str, limit: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string")
    if len(value) > limit:
        raise ValueError(f"{what} longer than {limit} characters")
    return value


# --------------------------------------------------------------------------------------
# Groups and members


def get_group(txn: Txn, group_id: int) -> GroupRow | None:
    """The group row whatever its status, or None."""
    row = txn.execute(
        f"SELECT {_GROUP_COLUMNS} FROM im_groups WHERE id = ?", (group_id,)
    ).fetchone()
    return _group(row) if row else None


def _lock_group(txn: Txn, group_id: int) -> GroupRow:
    """The live group row, write-locked until COMMIT; NoSuchGroup if missing or dissolved."""
    lock = txn.for_update
    row = txn.execute(
        f"SELECT {_GROUP_COLUMNS} FROM im_groups WHERE id = ?{lock}", (group_id,)
    ).fetchone()
    if row is None or row[5] != GROUP_ACTIVE:
        raise NoSuchGroup(f"no group {group_id}")
    return _group(row)


def list_groups(txn: Txn) -> list[tuple[GroupRow, int]]:
    """Every group with its current member count, by id (admin CLI)."""
    rows = txn.execute(
        f"SELECT {', '.join('g.' + c for c in _GROUP_COLUMNS.split(', '))}, "
        "(SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id AND m.status = 0) "
        "FROM im_groups g ORDER BY g.id"
    ).fetchall()
    return [(_group(row[:11]), int(row[11])) for row in rows]


def _active_users(txn: Txn, ids: Iterable[int]) -> set[int]:
    """The ids among ``ids`` that are accounts which have not left the company."""
    found: set[int] = set()
    for chunk in _chunks(i for i in ids if i > 0):
        rows = txn.execute(
            f"SELECT id FROM users WHERE id IN ({placeholders(len(chunk))}) AND status <> ?",
            (*chunk, _USER_LEFT),
        ).fetchall()
        found.update(int(r[0]) for r in rows)
    return found


_JOIN = {
    dialect: upsert_sql(
        dialect,
        "group_members",
        (
            "group_id",
            "user_id",
            "status",
            "joined",
            "join_msg_id",
            "read_msg_id",
            "shield",
            "created",
            "updated",
        ),
        ("group_id", "user_id"),
        "status = 0, joined = ?, join_msg_id = ?, read_msg_id = ?, updated = ?",
    )  # fmt: skip
    for dialect in Dialect
}


def _join(txn: Txn, group_id: int, user_ids: Iterable[int], last_msg_id: int, now: int) -> None:
    """Insert or re-activate members who see messages after ``last_msg_id`` (and have
    read everything before). A re-added member keeps their shield flag."""
    for user_id in user_ids:
        txn.execute(
            _JOIN[txn.dialect],
            (group_id, user_id, MEMBER_ACTIVE, now, last_msg_id, last_msg_id, 0, now, now,
             now, last_msg_id, last_msg_id, now),
        )  # fmt: skip


def create_group(
    txn: Txn,
    name: str,
    creator: int,
    member_ids: Iterable[int],
    group_type: int = GROUP_TMP,
    avatar: str = "",
    *,
    now: int,
) -> tuple[GroupRow, tuple[int, ...]]:
    """Create a group at version 1; the row and its members, ascending.

    The creator (unless 0, the admin API) is always a member. Listed ids that are not
    active accounts are left out. ValueError for an empty name, an unknown type or a group
    that would have no member.
    """
    if group_type not in (GROUP_NORMAL, GROUP_TMP):
        raise ValueError(f"unknown group type {group_type}")
    _check_text("group name", name, MAX_NAME_CHARS)
    _check_text("group avatar", avatar, MAX_AVATAR_CHARS)
    if not name.strip():
        raise ValueError("a group needs a name")
    wanted = {int(i) for i in member_ids}
    if creator:
        wanted.add(creator)
    members = tuple(sorted(_active_users(txn, wanted)))
    if not members:
        raise ValueError("a group needs at least one member")
    txn.execute(
        "INSERT INTO im_groups (name, avatar, creator, type, status, version, last_msg_id, "
        "last_chated, created, updated) VALUES (?, ?, ?, ?, ?, 1, 0, 0, ?, ?)",
        (name, avatar, creator, group_type, GROUP_ACTIVE, now, now),
    )
    group_id = int(txn.lastrowid)
    # Ids are never reused by SQLite's AUTOINCREMENT, but may be by an old InnoDB after a
    # restart; a stale member row must not leak into the new group.
    txn.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
    for i in range(0, len(members), _CHUNK):
        chunk = members[i : i + _CHUNK]
        txn.execute(
            "INSERT INTO group_members (group_id, user_id, status, joined, join_msg_id, "
            "read_msg_id, shield, created, updated) VALUES "
            + ", ".join(["(?, ?, 0, ?, 0, 0, 0, ?, ?)"] * len(chunk)),
            [v for user_id in chunk for v in (group_id, user_id, now, now, now)],
        )
    group = GroupRow(group_id, name, avatar, creator, group_type, GROUP_ACTIVE, 1, 0, 0, now, now)
    return group, members


def _member_ids(txn: Txn, group_id: int) -> list[int]:
    rows = txn.execute(
        "SELECT user_id FROM group_members WHERE group_id = ? AND status = ? ORDER BY user_id",
        (group_id, MEMBER_ACTIVE),
    ).fetchall()
    return [int(r[0]) for r in rows]


def member_ids(txn: Txn, group_id: int) -> list[int]:
    """Current members of a live group, ascending; empty for a missing/dissolved group."""
    group = get_group(txn, group_id)
    if group is None or group.status != GROUP_ACTIVE:
        return []
    return _member_ids(txn, group_id)


def list_members(txn: Txn, group_id: int) -> list[Member]:
    """Current members with their join and read state, ascending by user id."""
    rows = txn.execute(
        "SELECT user_id, joined, join_msg_id, read_msg_id, shield FROM group_members "
        "WHERE group_id = ? AND status = ? ORDER BY user_id",
        (group_id, MEMBER_ACTIVE),
    ).fetchall()
    return [Member(*(int(v) for v in row)) for row in rows]


def group_members(txn: Txn, group_id: int) -> GroupMembers | None:
    """The live group's version and members (with their join watermark), or None."""
    row = txn.execute(
        "SELECT version FROM im_groups WHERE id = ? AND status = ?", (group_id, GROUP_ACTIVE)
    ).fetchone()
    if row is None:
        return None
    rows = txn.execute(
        "SELECT user_id, join_msg_id FROM group_members WHERE group_id = ? AND status = ?",
        (group_id, MEMBER_ACTIVE),
    ).fetchall()
    return GroupMembers(group_id, int(row[0]), {int(u): int(j) for u, j in rows})


def membership(txn: Txn, group_id: int, user_id: int) -> Member | None:
    """The user's membership of a live group, or None when they are not a member."""
    row = txn.execute(
        "SELECT m.user_id, m.joined, m.join_msg_id, m.read_msg_id, m.shield "
        "FROM group_members m JOIN im_groups g ON g.id = m.group_id "
        "WHERE m.group_id = ? AND m.user_id = ? AND m.status = ? AND g.status = ?",
        (group_id, user_id, MEMBER_ACTIVE, GROUP_ACTIVE),
    ).fetchone()
    return Member(*(int(v) for v in row)) if row else None


def _may_change(group: GroupRow, requester: int, change_type: int, is_member: bool) -> bool:
    if requester == 0:
        return True  # the admin CLI
    if requester == group.creator:
        return True
    # The reference lets anybody add to a temporary group, even a non-member (who could
    # then add themselves and read along); we require membership.
    return change_type == ADD and group.type == GROUP_TMP and is_member


def group_row_first(group_id: int, *_args: Any, **_kwargs: Any) -> LockKey:
    """Lock key of a job that locks a group's row first (``txn.lock_order``): its messages
    and its member changes, after every pair's and before higher group ids'. A message and
    a member change of one group keep their arrival order: who receives a message does not
    depend on how a batch was sorted."""
    return (GROUP_ROWS, int(group_id))


@lock_order(group_row_first)
def change_members(
    txn: Txn,
    group_id: int,
    requester: int,
    change_type: int,
    user_ids: Iterable[int],
    *,
    now: int,
) -> MemberChange:
    """Add or remove members and bump the group's version; what changed.

    Added members start with nothing unread and see only later messages; their old
    group session, if any, is forgotten so the group shows again at the next message.
    Removed members' group sessions are hidden. GroupError subclasses for refusals.
    """
    if change_type not in (ADD, DEL):
        raise ValueError(f"unknown change type {change_type}")
    group = _lock_group(txn, group_id)
    current = _member_ids(txn, group_id)
    current_set = set(current)
    if not _may_change(group, requester, change_type, requester in current_set):
        raise NotAllowed(f"user {requester} may not change the members of group {group_id}")
    wanted = {int(u) for u in user_ids if int(u) > 0}
    creator = group.creator
    status = GROUP_ACTIVE
    if change_type == ADD:
        changed = sorted(_active_users(txn, wanted - current_set))
        if not changed:
            raise NothingToChange(f"nobody to add to group {group_id}")
        _join(txn, group_id, changed, group.last_msg_id, now)
        for chunk in _chunks(changed):
            txn.execute(
                f"DELETE FROM sessions WHERE user_id IN ({placeholders(len(chunk))}) "
                "AND peer_id = ? AND type = ?",
                (*chunk, group_id, _GROUP),
            )
        after = sorted(current_set.union(changed))
    else:
        changed = sorted(wanted & current_set)
        if not changed:
            raise NothingToChange(f"nobody to remove from group {group_id}")
        for chunk in _chunks(changed):
            marks = placeholders(len(chunk))
            txn.execute(
                f"UPDATE group_members SET status = ?, updated = ? "
                f"WHERE group_id = ? AND user_id IN ({marks})",
                (MEMBER_LEFT, now, group_id, *chunk),
            )
            txn.execute(
                f"UPDATE sessions SET status = ?, updated = ? WHERE user_id IN ({marks}) "
                "AND peer_id = ? AND type = ? AND status = ?",
                (messages.SESSION_REMOVED, now, *chunk, group_id, _GROUP,
                 messages.SESSION_VISIBLE),
            )  # fmt: skip
        after = sorted(current_set.difference(changed))
        if not after:
            status = GROUP_DISSOLVED
        elif creator in changed:
            row = txn.execute(
                "SELECT user_id FROM group_members WHERE group_id = ? AND status = ? "
                "ORDER BY join_msg_id, joined, user_id LIMIT 1",
                (group_id, MEMBER_ACTIVE),
            ).fetchone()
            assert row is not None  # ``after`` holds the remaining members
            creator = int(row[0])
    version = group.version + 1
    txn.execute(
        "UPDATE im_groups SET version = ?, creator = ?, status = ?, updated = ? WHERE id = ?",
        (version, creator, status, now, group_id),
    )
    return MemberChange(
        group_id, change_type, tuple(changed), tuple(after), version, creator,
        status == GROUP_DISSOLVED,
    )  # fmt: skip


def normal_groups(txn: Txn, user_id: int) -> list[tuple[int, int]]:
    """``(group_id, version)`` of the fixed groups the user belongs to, most recently
    changed first. Temporary groups are not listed (clients learn them from sessions)."""
    rows = txn.execute(
        "SELECT g.id, g.version FROM group_members m JOIN im_groups g ON g.id = m.group_id "
        "WHERE m.user_id = ? AND m.status = ? AND g.type = ? AND g.status = ? "
        "ORDER BY g.updated DESC, g.id DESC",
        (user_id, MEMBER_ACTIVE, GROUP_NORMAL, GROUP_ACTIVE),
    ).fetchall()
    return [(int(g), int(v)) for g, v in rows]


def group_infos(txn: Txn, user_id: int, known: Mapping[int, int]) -> list[GroupInfoRow]:
    """Full info of the requested groups whose version is newer than ``known[group_id]``
    (0: always), most recently changed first. Only groups the user is a member of."""
    found: list[tuple[GroupRow, int]] = []
    for chunk in _chunks(known):
        rows = txn.execute(
            f"SELECT {', '.join('g.' + c for c in _GROUP_COLUMNS.split(', '))}, m.shield "
            "FROM im_groups g JOIN group_members m ON m.group_id = g.id "
            f"WHERE g.id IN ({placeholders(len(chunk))}) AND g.status = ? "
            "AND m.user_id = ? AND m.status = ?",
            (*chunk, GROUP_ACTIVE, user_id, MEMBER_ACTIVE),
        ).fetchall()
        for row in rows:
            group = _group(row[:11])
            if group.version > known[group.id]:
                found.append((group, int(row[11])))
    found.sort(key=lambda gs: (gs[0].updated, gs[0].id), reverse=True)
    members: dict[int, list[int]] = {group.id: [] for group, _ in found}
    for chunk in _chunks(members):
        rows = txn.execute(
            "SELECT group_id, user_id FROM group_members "
            f"WHERE group_id IN ({placeholders(len(chunk))}) AND status = ? "
            "ORDER BY group_id, user_id",
            (*chunk, MEMBER_ACTIVE),
        ).fetchall()
        for group_id, member in rows:
            members[int(group_id)].append(int(member))
    return [GroupInfoRow(g, tuple(members[g.id]), shield) for g, shield in found]


def set_shield(txn: Txn, user_id: int, group_id: int, shield: int) -> bool:
    """Set the member's push mute flag (0/1); False when they are not a member."""
    if shield not in (0, 1):
        raise ValueError(f"shield status must be 0 or 1, not {shield}")
    if membership(txn, group_id, user_id) is None:
        return False
    txn.execute(
        "UPDATE group_members SET shield = ? WHERE group_id = ? AND user_id = ?",
        (shield, group_id, user_id),
    )
    return True


# --------------------------------------------------------------------------------------
# Messages

_MESSAGE_COLUMNS = "msg_id, from_id, msg_type, content, created"


@lock_order(group_row_first)
def store_group_message(
    txn: Txn,
    group_id: int,
    from_id: int,
    msg_type: int,
    content: bytes,
    created: int,
    sent: SendKey | None = None,
    *,
    resend_window: int = RESEND_WINDOW,
    origin: int = 0,
) -> StoredGroupMessage:
    """Store a message of a member; it with its new id and the group's version.

    Locks the group row, allocates ``last_msg_id + 1``, inserts the message, sets
    ``last_chated``, marks the sender read up to it and shows the sender's session.
    NoSuchGroup / NotAMember when the sender may not post. A message with a ``sent`` key
    that resends a stored one (``store/resends.py``) is not stored again: the result is
    the first copy, with ``resend_of`` set and the group's version now.
    """
    if msg_type not in GROUP_MESSAGE_TYPES:
        raise ValueError(f"message type {msg_type} is not a group type")
    if not isinstance(content, bytes | bytearray | memoryview):
        raise TypeError(f"content must be bytes, not {type(content).__name__}")
    content = bytes(content)
    if not content:
        raise ValueError("empty message")
    matcher = None
    if sent is not None:
        # Before the group checks: the first copy was accepted, whatever became of the
        # group or the sender's membership since.
        matcher = ResendMatcher.load(txn, [sent], created - resend_window)
        first = matcher.first_copy(sent)
        if first is not None:
            matcher.claim(sent, first)
            matcher.write(txn)
            current = get_group(txn, group_id)
            message = StoredMessage(first.msg_id, from_id, group_id, msg_type, content,
                                    first.created)  # fmt: skip
            version = current.version if current is not None else 0
            return StoredGroupMessage(message, version, resend_of=first.connection)
    group = _lock_group(txn, group_id)
    row = txn.execute(
        "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ? AND status = ?",
        (group_id, from_id, MEMBER_ACTIVE),
    ).fetchone()
    if row is None:
        raise NotAMember(f"user {from_id} is not a member of group {group_id}")
    msg_id = group.last_msg_id + 1
    txn.execute(
        "UPDATE im_groups SET last_msg_id = ?, last_chated = ? WHERE id = ?",
        (msg_id, created, group_id),
    )
    txn.execute(
        "INSERT INTO group_messages "
        "(group_id, from_id, msg_id, msg_type, content, created, origin) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (group_id, from_id, msg_id, msg_type, content, created, origin),
    )
    txn.execute(
        "UPDATE group_members SET read_msg_id = ? WHERE group_id = ? AND user_id = ?",
        (msg_id, group_id, from_id),
    )
    visible = messages.SESSION_VISIBLE
    txn.execute(
        messages.SET_SESSION_STATUS[txn.dialect],
        (from_id, group_id, _GROUP, visible, created, created, visible, created),
    )
    if matcher is not None and sent is not None:
        matcher.new(sent, created, 0).msg_id = msg_id
        matcher.write(txn)
    message = StoredMessage(msg_id, from_id, group_id, msg_type, content, created, origin)
    return StoredGroupMessage(message, group.version)


def group_history(
    txn: Txn, user_id: int, group_id: int, msg_id_begin: int, count: int
) -> list[StoredMessage]:
    """Up to ``count`` messages the member may see, newest first, ``msg_id <=
    msg_id_begin`` unless it is 0. Empty for non-members."""
    member = membership(txn, group_id, user_id)
    if member is None or count <= 0:
        return []
    rows = txn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM group_messages "
        "WHERE group_id = ? AND msg_id > ? AND msg_id <= ? ORDER BY msg_id DESC LIMIT ?",
        (group_id, member.join_msg_id, msg_id_begin or _NO_UPPER_BOUND, count),
    ).fetchall()
    return [group_message_from_row(group_id, row) for row in rows]


def group_messages_by_ids(
    txn: Txn, user_id: int, group_id: int, msg_ids: Iterable[int]
) -> list[StoredMessage]:
    """The listed messages the member may see, newest first; at most the first 100
    distinct ids are looked at. Empty for non-members."""
    wanted = list(dict.fromkeys(int(i) for i in msg_ids))[: messages.MAX_IDS_PER_REQUEST]
    member = membership(txn, group_id, user_id) if wanted else None
    if member is None:
        return []
    rows = txn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM group_messages "
        f"WHERE group_id = ? AND msg_id > ? AND msg_id IN ({placeholders(len(wanted))}) "
        "ORDER BY msg_id DESC",
        (group_id, member.join_msg_id, *wanted),
    ).fetchall()
    return [group_message_from_row(group_id, row) for row in rows]


def latest_group_msg_id(txn: Txn, user_id: int, group_id: int) -> int:
    """The newest message id the member may see, 0 if none or not a member."""
    row = txn.execute(
        "SELECT g.last_msg_id, m.join_msg_id FROM group_members m "
        "JOIN im_groups g ON g.id = m.group_id "
        "WHERE m.group_id = ? AND m.user_id = ? AND m.status = ? AND g.status = ?",
        (group_id, user_id, MEMBER_ACTIVE, GROUP_ACTIVE),
    ).fetchone()
    if row is None or row[0] <= row[1]:
        return 0
    return int(row[0])


# --------------------------------------------------------------------------------------
# Unread and read marks

# max(read_msg_id, join_msg_id): what the member has read or could never see.
_SEEN = "CASE WHEN m.read_msg_id > m.join_msg_id THEN m.read_msg_id ELSE m.join_msg_id END"


def group_unread_counts(txn: Txn, user_id: int) -> list[UnreadRow]:
    """One entry per group of the user with unread messages, with the group's newest
    message and its real sender. Shielded (push-muted) groups count like the others."""
    return group_unread_counts_of(txn, [user_id])[user_id]


def group_unread_counts_of(txn: Txn, user_ids: Sequence[int]) -> dict[int, list[UnreadRow]]:
    """``group_unread_counts`` of many users in one statement (the importer's check)."""
    found: dict[int, list[UnreadRow]] = {int(u): [] for u in user_ids}
    rows = txn.execute(
        f"SELECT m.user_id, g.id, g.last_msg_id - ({_SEEN}), "
        "gm.msg_id, gm.from_id, gm.msg_type, gm.content, gm.created "
        "FROM group_members m JOIN im_groups g ON g.id = m.group_id "
        "JOIN group_messages gm ON gm.group_id = g.id AND gm.msg_id = g.last_msg_id "
        f"WHERE m.user_id IN ({placeholders(len(found))}) AND m.status = ? AND g.status = ? "
        f"AND g.last_msg_id > ({_SEEN}) ORDER BY m.user_id, g.id",
        (*found, MEMBER_ACTIVE, GROUP_ACTIVE),
    ).fetchall()
    for row in rows:
        found[int(row[0])].append(
            UnreadRow(
                int(row[1]), _GROUP, int(row[2]), group_message_from_row(int(row[1]), row[3:])
            )
        )
    return found


def mark_group_read(txn: Txn, user_id: int, group_id: int, msg_id: int = 0) -> bool:
    """The member has read up to ``msg_id`` (0: everything so far); read marks never go
    back. False when the user is not a member."""
    row = txn.execute(
        "SELECT g.last_msg_id FROM group_members m JOIN im_groups g ON g.id = m.group_id "
        "WHERE m.group_id = ? AND m.user_id = ? AND m.status = ? AND g.status = ?",
        (group_id, user_id, MEMBER_ACTIVE, GROUP_ACTIVE),
    ).fetchone()
    if row is None:
        return False
    last = int(row[0])
    upto = last if msg_id <= 0 else min(int(msg_id), last)
    # No lock on the group row (a concurrent message may commit meanwhile): marking up
    # to the last id we saw is exactly what the member could have read.
    txn.execute(
        "UPDATE group_members SET read_msg_id = ? "
        "WHERE group_id = ? AND user_id = ? AND read_msg_id < ?",
        (upto, group_id, user_id, upto),
    )
    return True
