"""A C++ TeamTalk site's data, written the way its db_proxy_server writes it.

The import's tests and its benchmark need a reference deployment to import from: the
shipped schema (``tests/fixtures/ttopen.sql``, loaded into a database of our choosing) and
the Redis keys, filled by the rules of storage.md §4: relations created by the first
message with ``msg_id_<relateId>`` set to 0, message ids from ``INCRBY``, rows in
``IMMessage_<relateId % 8>`` / ``IMGroupMessage_<groupId % 8>``, ``HINCRBY unread_<to>``,
group counters copied into the member's read hash, ``group_member_<id>`` join times,
``group_set_<id>`` mutes, ``device_<id>`` tokens and ``IMRecentSession`` rows.

``ReferenceSite`` writes one thing at a time (tests); ``generate`` writes a large site in
bulk with the same end state (the benchmark). Redis keys carry a prefix so that a test's
key space never touches anybody else's keys.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from teamtalk_py.store.engines.mysql import parse_mysql_url
from teamtalk_testing.scratch import (
    DEFAULT_MYSQL,
    DEFAULT_REDIS,
    ScratchDatabase,
    ScratchRedisPrefix,
)

SCHEMA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ttopen.sql"
SHARDS = 8
SINGLE_TEXT, SINGLE_AUDIO, GROUP_TEXT, GROUP_AUDIO = 1, 2, 0x11, 0x12
SESSION_SINGLE, SESSION_GROUP = 1, 2


def md5_hex(data: str) -> str:
    return hashlib.md5(data.encode("utf-8")).hexdigest()


def schema_statements(path: Path = SCHEMA) -> list[str]:
    """The CREATE/INSERT statements of ``ttopen.sql``, without its ``DROP DATABASE``,
    ``CREATE DATABASE`` and ``USE`` (we load it into a database we name)."""
    text = "\n".join(
        line for line in path.read_text("utf-8").splitlines() if not line.startswith("#")
    )
    statements = []
    for statement in re.split(r";\s*\n", text):
        statement = statement.strip()
        if not statement or re.match(r"(DROP|CREATE) DATABASE|USE ", statement, re.I):
            continue
        statements.append(statement)
    return statements


class ReferenceSite:
    """One reference database (a scratch database on the MariaDB/MySQL ``mysql_server``)
    plus a Redis key space (a scratch key prefix on ``redis_server``); ``drop()`` removes
    both. ``url`` and ``redis_url`` are what ``import-teamtalk --from/--redis`` take."""

    def __init__(self, mysql_server: str = DEFAULT_MYSQL, redis_server: str = DEFAULT_REDIS):
        import pymysql
        import redis

        self.scratch = ScratchDatabase(mysql_server, prefix="tt_ref")
        self.keys = ScratchRedisPrefix(redis_server, prefix="tt_ref")
        self.url = self.scratch.url
        params = parse_mysql_url(self.url)
        self.conn = pymysql.connect(
            host=params.host, port=params.port, user=params.user, password=params.password,
            database=params.database, charset="utf8mb4", autocommit=True,
        )  # fmt: skip
        with self.conn.cursor() as cursor:
            for statement in schema_statements():
                cursor.execute(statement)
        self.prefix = self.keys.prefix
        self.redis_url = self.keys.url
        self.redis = redis.Redis(host=self.keys.host, port=self.keys.port, decode_responses=True)

    def drop(self) -> None:
        """Drop the database and delete this site's Redis keys (only those)."""
        self.conn.close()
        self.scratch.drop()
        self.redis.close()
        self.keys.drop()

    # -- plumbing -------------------------------------------------------------------------

    def key(self, name: str) -> str:
        return self.prefix + name

    def sql(self, statement: str, params: Any = ()) -> list[tuple]:
        with self.conn.cursor() as cursor:
            cursor.execute(statement, params)
            return list(cursor.fetchall())

    def insert(self, statement: str, params: Any = ()) -> int:
        with self.conn.cursor() as cursor:
            cursor.execute(statement, params)
            return int(cursor.lastrowid)

    def set_next_id(self, table: str, next_id: int) -> None:
        """Make ``table``'s next AUTO_INCREMENT id ``next_id`` (ids near a boundary)."""
        self.sql(f"ALTER TABLE {table} AUTO_INCREMENT = {int(next_id)}")

    # -- directory ------------------------------------------------------------------------

    def add_department(
        self, name: str, *, parent: int = 0, priority: int = 0, status: int = 0, now: int
    ) -> int:
        return self.insert(
            "INSERT INTO IMDepart (departName, priority, parentId, status, created, updated) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (name, priority, parent, status, now, now),
        )

    def add_user(
        self,
        name: str,
        password: str,
        depart_id: int,
        *,
        now: int,
        nick: str = "",
        sex: int = 0,
        status: int = 0,
        avatar: str = "",
        sign_info: str = "",
        push_shield: int = 0,
        phone: str = "",
        email: str = "",
        domain: str = "",
    ) -> int:
        """A user as the web admin tool creates one: salt 0..9999, md5(md5(pw) + salt)."""
        salt = str(random.randint(0, 9999))
        return self.insert(
            "INSERT INTO IMUser (sex, name, domain, nick, password, salt, phone, email, avatar, "
            "departId, status, created, updated, push_shield_status, sign_info) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (sex, name, domain, nick or name, md5_hex(md5_hex(password) + salt), salt, phone,
             email, avatar, depart_id, status, now, now, push_shield, sign_info),
        )  # fmt: skip

    def add_admin(self, name: str, password: str, *, now: int) -> int:
        return self.insert(
            "INSERT INTO IMAdmin (uname, pwd, status, created, updated) VALUES (%s, %s, 0, %s, %s)",
            (name, md5_hex(password), now, now),
        )

    def set_device_token(self, user_id: int, client_type: str, token: str) -> None:
        """``client_type`` is ``ios``/``android`` (prefixed) or anything else (bare)."""
        old = str(self.redis.get(self.key(f"device_{user_id}")) or "")
        if ":" in old:
            previous = old.split(":", 1)[1]
            if self.redis.get(self.key(f"device_{previous}")):
                self.redis.set(self.key(f"device_{previous}"), "")
        value = f"{client_type}:{token}" if client_type in ("ios", "android") else token
        self.redis.set(self.key(f"device_{user_id}"), value)
        self.redis.set(self.key(f"device_{token}"), str(user_id))

    # -- one-to-one -----------------------------------------------------------------------

    def relation(self, a: int, b: int, *, now: int) -> int:
        small, big = min(a, b), max(a, b)
        rows = self.sql(
            "SELECT id FROM IMRelationShip WHERE smallId = %s AND bigId = %s AND status = 0",
            (small, big),
        )
        if rows:
            return int(rows[0][0])
        relate_id = self.insert(
            "INSERT INTO IMRelationShip (smallId, bigId, status, created, updated) "
            "VALUES (%s, %s, 0, %s, %s)",
            (small, big, now, now),
        )
        self.redis.set(self.key(f"msg_id_{relate_id}"), "0")
        return relate_id

    def _session(self, user_id: int, peer_id: int, kind: int, *, now: int) -> None:
        rows = self.sql(
            "SELECT id FROM IMRecentSession WHERE userId = %s AND peerId = %s AND type = %s "
            "ORDER BY id DESC LIMIT 1",
            (user_id, peer_id, kind),
        )
        if rows:
            self.sql(
                "UPDATE IMRecentSession SET status = 0, updated = %s WHERE id = %s",
                (now, rows[0][0]),
            )
        else:
            self.sql(
                "INSERT INTO IMRecentSession (userId, peerId, type, status, created, updated) "
                "VALUES (%s, %s, %s, 0, %s, %s)",
                (user_id, peer_id, kind, now, now),
            )

    def send(
        self, from_id: int, to_id: int, content: bytes, *, now: int, msg_type: int = SINGLE_TEXT
    ) -> int:
        """Store a one-to-one message; its message id."""
        relate_id = self.relation(from_id, to_id, now=now)
        msg_id = int(self.redis.incrby(self.key(f"msg_id_{relate_id}"), 1))
        self.sql(
            f"INSERT INTO IMMessage_{relate_id % SHARDS} (relateId, fromId, toId, msgId, content, "
            "status, type, created, updated) VALUES (%s, %s, %s, %s, %s, 0, %s, %s, %s)",
            (relate_id, from_id, to_id, msg_id, content, msg_type, now, now),
        )
        self.redis.hincrby(self.key(f"unread_{to_id}"), str(from_id), 1)
        self._session(from_id, to_id, SESSION_SINGLE, now=now)
        self._session(to_id, from_id, SESSION_SINGLE, now=now)
        return msg_id

    def read(self, user_id: int, peer_id: int) -> None:
        self.redis.hdel(self.key(f"unread_{user_id}"), str(peer_id))

    def remove_session(self, user_id: int, peer_id: int, kind: int, *, now: int) -> None:
        self.sql(
            "UPDATE IMRecentSession SET status = 1, updated = %s "
            "WHERE userId = %s AND peerId = %s AND type = %s AND status = 0",
            (now, user_id, peer_id, kind),
        )
        if kind == SESSION_SINGLE:
            self.read(user_id, peer_id)
        else:
            self.read_group(user_id, peer_id)

    def add_audio(
        self, from_id: int, to_id: int, url: str, size: int, duration: int, *, now: int
    ) -> int:
        return self.insert(
            "INSERT INTO IMAudio (fromId, toId, path, size, duration, created) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (from_id, to_id, url, size, duration, now),
        )

    # -- groups ---------------------------------------------------------------------------

    def create_group(
        self, name: str, creator: int, members: list[int], *, now: int, group_type: int = 1
    ) -> int:
        everyone = sorted({creator, *members} - {0})
        group_id = self.insert(
            "INSERT INTO IMGroup (name, avatar, creator, type, userCnt, status, version, "
            "lastChated, updated, created) VALUES (%s, '', %s, %s, %s, 0, 1, 0, %s, %s)",
            (name, creator, group_type, len(everyone), now, now),
        )
        self.redis.set(self.key(f"group_msg_id_{group_id}"), "0")
        for user_id in everyone:
            self.sql(
                "INSERT INTO IMGroupMember (groupId, userId, status, created, updated) "
                "VALUES (%s, %s, 0, %s, %s)",
                (group_id, user_id, now, now),
            )
            self.redis.hset(self.key(f"group_member_{group_id}"), str(user_id), str(now))
        return group_id

    def add_member(self, group_id: int, user_id: int, *, now: int) -> None:
        rows = self.sql(
            "SELECT id FROM IMGroupMember WHERE groupId = %s AND userId = %s", (group_id, user_id)
        )
        if rows:
            self.sql(
                "UPDATE IMGroupMember SET status = 0, updated = %s WHERE id = %s", (now, rows[0][0])
            )
        else:
            self.sql(
                "INSERT INTO IMGroupMember (groupId, userId, status, created, updated) "
                "VALUES (%s, %s, 0, %s, %s)",
                (group_id, user_id, now, now),
            )
        self.redis.hset(self.key(f"group_member_{group_id}"), str(user_id), str(now))
        self.sql("UPDATE IMGroup SET version = version + 1 WHERE id = %s", (group_id,))
        self.read_group(user_id, group_id)

    def remove_member(self, group_id: int, user_id: int, *, now: int) -> None:
        self.sql(
            "UPDATE IMGroupMember SET status = 1 WHERE groupId = %s AND userId = %s",
            (group_id, user_id),
        )
        self.redis.hdel(self.key(f"group_member_{group_id}"), str(user_id))
        self.sql("UPDATE IMGroup SET version = version + 1 WHERE id = %s", (group_id,))
        self.read_group(user_id, group_id)
        self.sql(
            "UPDATE IMRecentSession SET status = 1, updated = %s "
            "WHERE userId = %s AND peerId = %s AND type = 2 AND status = 0",
            (now, user_id, group_id),
        )

    def mute_group(self, group_id: int, user_id: int, muted: bool = True) -> None:
        self.redis.hset(self.key(f"group_set_{group_id}"), f"{user_id}_1", "1" if muted else "0")

    def send_group(
        self, group_id: int, from_id: int, content: bytes, *, now: int, msg_type: int = GROUP_TEXT
    ) -> int:
        msg_id = int(self.redis.incrby(self.key(f"group_msg_id_{group_id}"), 1))
        self.sql(
            f"INSERT INTO IMGroupMessage_{group_id % SHARDS} (groupId, userId, msgId, content, "
            "type, status, updated, created) VALUES (%s, %s, %s, %s, %s, 0, %s, %s)",
            (group_id, from_id, msg_id, content, msg_type, now, now),
        )
        self.sql("UPDATE IMGroup SET lastChated = %s WHERE id = %s", (now, group_id))
        self.redis.hincrby(self.key(f"{group_id}_im_group_msg"), "count", 1)
        self.read_group(from_id, group_id)
        self._session(from_id, group_id, SESSION_GROUP, now=now)
        return msg_id

    def read_group(self, user_id: int, group_id: int) -> None:
        """Copy the group's counter hash into the user's (what a read ack does)."""
        counts = self.redis.hgetall(self.key(f"{group_id}_im_group_msg"))
        for name, value in counts.items():
            self.redis.hset(self.key(f"{user_id}_{group_id}_im_user_group"), name, value)


def generate(
    site: ReferenceSite,
    *,
    users: int,
    messages: int,
    groups: int,
    group_share: float = 0.2,
    members: int = 20,
    texts: int = 50,
    seed: int = 1,
    now: int = 1_700_000_000,
    page: int = 5000,
    log: Any = None,
) -> None:
    """Fill ``site`` in bulk: ``users`` users, ``groups`` groups of ``members`` members,
    ``messages`` messages (``group_share`` of them group messages) over a few hundred
    conversations per user, with the end state the reference's rules give (counters,
    unread hashes, read marks, sessions). Texts repeat (real users repeat words), each
    encrypted as the clients do."""
    from teamtalk_client import encrypt_text

    rng = random.Random(seed)
    site.conn.autocommit(False)  # one commit per page, not per row
    words = [encrypt_text(f"message text {i} " + "x" * rng.randint(0, 60)) for i in range(texts)]
    depart = site.add_department("Everyone", now=now)
    with site.conn.cursor() as cursor:
        rows = [
            (0, f"user{i}", "", f"User {i}", md5_hex(md5_hex("pw") + "1234"), "1234", "", "",
             "", depart, 0, now, now, 0, "")
            for i in range(users)
        ]  # fmt: skip
        cursor.executemany(
            "INSERT INTO IMUser (sex, name, domain, nick, password, salt, phone, email, avatar, "
            "departId, status, created, updated, push_shield_status, sign_info) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    user_ids = [int(r[0]) for r in site.sql("SELECT id FROM IMUser ORDER BY id")]
    group_members: dict[int, list[int]] = {}
    # Groups as create_group makes them, in a few multi-row statements.
    next_group = int(site.sql("SELECT COALESCE(MAX(id), 0) FROM IMGroup")[0][0]) + 1
    for g in range(groups):
        chosen = rng.sample(user_ids, min(members, len(user_ids)))
        group_members[next_group + g] = chosen
    with site.conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO IMGroup (id, name, avatar, creator, type, userCnt, status, version, "
            "lastChated, updated, created) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(gid, f"group {gid - next_group}", "", chosen[0], 1, len(set(chosen)), 0, 1, 0, now,
              now) for gid, chosen in group_members.items()],
        )  # fmt: skip
        cursor.executemany(
            "INSERT INTO IMGroupMember (groupId, userId, status, created, updated) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(gid, uid, 0, now, now) for gid, chosen in group_members.items()
             for uid in sorted(set(chosen))],
        )  # fmt: skip
    site.conn.commit()
    pipe = site.redis.pipeline(transaction=False)
    for gid, chosen in group_members.items():
        pipe.set(site.key(f"group_msg_id_{gid}"), "0")
        pipe.hset(site.key(f"group_member_{gid}"), mapping={str(u): str(now) for u in chosen})
    pipe.execute()
    relations: dict[tuple[int, int], int] = {}
    # Relation ids are handed out here (the table's next AUTO_INCREMENT ids) so that new
    # relations go in with the page's messages as one multi-row INSERT, not one per pair.
    next_relation = int(site.sql("SELECT COALESCE(MAX(id), 0) FROM IMRelationShip")[0][0]) + 1
    new_relations: list[tuple] = []
    counters: dict[str, int] = defaultdict(int)
    unread: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    group_count: dict[int, int] = defaultdict(int)
    sessions: dict[tuple[int, int, int], int] = {}
    shards: dict[str, list[tuple]] = defaultdict(list)
    sent_group: dict[tuple[int, int], int] = {}

    # Every value is a %s parameter: PyMySQL folds an executemany into one multi-row
    # INSERT only when the VALUES tuple is nothing but placeholders.
    def flush() -> None:
        with site.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO IMRelationShip (id, smallId, bigId, status, created, updated) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                new_relations,
            )
            for table, rows in shards.items():
                if table.startswith("IMGroupMessage"):
                    cursor.executemany(
                        f"INSERT INTO {table} (groupId, userId, msgId, content, type, status, "
                        "updated, created) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        rows,
                    )
                else:
                    cursor.executemany(
                        f"INSERT INTO {table} (relateId, fromId, toId, msgId, content, status, "
                        "type, created, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        rows,
                    )
        site.conn.commit()
        new_relations.clear()
        shards.clear()

    group_ids = list(group_members)
    pending = 0
    for n in range(messages):
        at = now + n // 50
        if group_ids and rng.random() < group_share:
            gid = rng.choice(group_ids)
            sender = rng.choice(group_members[gid])
            counters[f"group_msg_id_{gid}"] += 1
            msg_id = counters[f"group_msg_id_{gid}"]
            shards[f"IMGroupMessage_{gid % SHARDS}"].append(
                (gid, sender, msg_id, rng.choice(words), GROUP_TEXT, 0, at, at)
            )
            group_count[gid] += 1
            sent_group[(sender, gid)] = group_count[gid]
            sessions[(sender, gid, SESSION_GROUP)] = at
        else:
            i = rng.randrange(users)
            a = user_ids[i]
            b = user_ids[(i + rng.randint(1, min(300, users - 1))) % users]
            pair = (min(a, b), max(a, b))
            if pair not in relations:
                relations[pair] = next_relation
                new_relations.append((next_relation, pair[0], pair[1], 0, at, at))
                next_relation += 1
            rid = relations[pair]
            counters[f"msg_id_{rid}"] += 1
            shards[f"IMMessage_{rid % SHARDS}"].append(
                (rid, a, b, counters[f"msg_id_{rid}"], rng.choice(words), 0, SINGLE_TEXT, at, at)
            )
            unread[b][a] += 1
            if rng.random() < 0.5:
                unread[a].pop(b, None)  # a replied: a read what b sent
            sessions[(a, b, SESSION_SINGLE)] = at
            sessions[(b, a, SESSION_SINGLE)] = at
        pending += 1
        if pending >= page:
            flush()
            pending = 0
            if log:
                log(f"generated {n + 1} messages")
    flush()
    last = now + messages // 50
    # The reference's 5-second job gives every member a visible group session.
    for gid in group_count:
        for u in group_members[gid]:
            sessions.setdefault((u, gid, SESSION_GROUP), last)
    with site.conn.cursor() as cursor:
        session_rows = [(u, p, t, 0, at, at) for (u, p, t), at in sessions.items()]
        for i in range(0, len(session_rows), page):
            cursor.executemany(
                "INSERT INTO IMRecentSession (userId, peerId, type, status, created, updated) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                session_rows[i : i + page],
            )
        cursor.executemany(
            "UPDATE IMGroup SET lastChated = %s WHERE id = %s", [(last, g) for g in group_count]
        )
    site.conn.commit()
    site.conn.autocommit(True)
    pipe = site.redis.pipeline(transaction=False)
    queued = 0

    def queue() -> None:
        nonlocal queued
        queued += 1
        if queued % page == 0:
            pipe.execute()

    for name, value in counters.items():
        pipe.set(site.key(name), str(value))
        queue()
    for user_id, peers in unread.items():
        if peers:
            pipe.hset(site.key(f"unread_{user_id}"), mapping={str(p): c for p, c in peers.items()})
            queue()
    for gid, count in group_count.items():
        pipe.hset(site.key(f"{gid}_im_group_msg"), "count", count)
        queue()
    for (uid, gid), count in sent_group.items():
        pipe.hset(site.key(f"{uid}_{gid}_im_user_group"), "count", count)
        queue()
    pipe.execute()
