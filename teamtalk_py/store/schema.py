"""Our relational schema and its migrations, for SQLite and MariaDB/MySQL.

The schema is our own (we do not share tables with the original TeamTalk servers). It
replaces the original's Redis counters with columns: ``relations.last_msg_id`` and
``im_groups.last_msg_id`` allocate message ids, ``unread`` holds one-to-one unread counts
and ``group_members.read_msg_id`` marks what a member has read in a group.

A migration is an ordered list of DDL steps per dialect. ``migrate.py`` (run by
``Database.start()`` and ``Database.migrate()``) applies the ones newer than the version
recorded in ``schema_version``. Never edit a released migration: append a new one.

All times are Unix seconds. ``status`` 0 means normal/visible unless stated otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from teamtalk_py.store.txn import Dialect, Txn

#: A DDL statement, or a function of the transaction for steps that must look first
#: (``ADD COLUMN`` has no ``IF NOT EXISTS`` in SQLite or MySQL 8).
Step = str | Callable[[Txn], None]


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[Step, ...]
    mysql: tuple[Step, ...]

    def steps(self, dialect: Dialect) -> tuple[Step, ...]:
        return self.sqlite if dialect is Dialect.SQLITE else self.mysql


VERSION_TABLE = {
    Dialect.SQLITE: (
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY,"
        " description TEXT NOT NULL,"
        " applied INTEGER NOT NULL)"
    ),
    Dialect.MYSQL: (
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INT NOT NULL PRIMARY KEY,"
        " description VARCHAR(255) NOT NULL,"
        " applied BIGINT NOT NULL"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    ),
}


def current_version(txn: Txn) -> int:
    """The highest applied migration (0 for an empty database)."""
    row = txn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


_MYSQL_TABLE = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

_V1_SQLITE = (
    """CREATE TABLE IF NOT EXISTS departments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        priority INTEGER NOT NULL DEFAULT 0,
        parent_id INTEGER NOT NULL DEFAULT 0,
        status INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS departments_updated ON departments (updated)",
    """CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        nick TEXT NOT NULL DEFAULT '',
        sex INTEGER NOT NULL DEFAULT 0,
        domain TEXT NOT NULL DEFAULT '',
        phone TEXT NOT NULL DEFAULT '',
        email TEXT NOT NULL DEFAULT '',
        avatar TEXT NOT NULL DEFAULT '',
        department_id INTEGER NOT NULL DEFAULT 0,
        status INTEGER NOT NULL DEFAULT 0,
        sign_info TEXT NOT NULL DEFAULT '',
        push_shield INTEGER NOT NULL DEFAULT 0,
        password_hash TEXT NOT NULL DEFAULT '',
        salt TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS users_updated ON users (updated)",
    # No AUTOINCREMENT: relations are never deleted, and the message-id upsert would
    # otherwise use up a sqlite_sequence value per message.
    """CREATE TABLE IF NOT EXISTS relations (
        id INTEGER PRIMARY KEY,
        small_id INTEGER NOT NULL,
        big_id INTEGER NOT NULL,
        last_msg_id INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0,
        UNIQUE (small_id, big_id))""",
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY,
        relation_id INTEGER NOT NULL,
        from_id INTEGER NOT NULL,
        to_id INTEGER NOT NULL,
        msg_id INTEGER NOT NULL,
        msg_type INTEGER NOT NULL,
        content BLOB NOT NULL,
        created INTEGER NOT NULL,
        UNIQUE (relation_id, msg_id))""",
    """CREATE TABLE IF NOT EXISTS im_groups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL DEFAULT '',
        avatar TEXT NOT NULL DEFAULT '',
        creator INTEGER NOT NULL DEFAULT 0,
        type INTEGER NOT NULL DEFAULT 1,
        status INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 1,
        last_msg_id INTEGER NOT NULL DEFAULT 0,
        last_chated INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS group_members (
        group_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        status INTEGER NOT NULL DEFAULT 0,
        joined INTEGER NOT NULL DEFAULT 0,
        read_msg_id INTEGER NOT NULL DEFAULT 0,
        shield INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (group_id, user_id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS group_members_user ON group_members (user_id, status)",
    """CREATE TABLE IF NOT EXISTS group_messages (
        id INTEGER PRIMARY KEY,
        group_id INTEGER NOT NULL,
        from_id INTEGER NOT NULL,
        msg_id INTEGER NOT NULL,
        msg_type INTEGER NOT NULL,
        content BLOB NOT NULL,
        created INTEGER NOT NULL,
        UNIQUE (group_id, msg_id))""",
    """CREATE TABLE IF NOT EXISTS sessions (
        user_id INTEGER NOT NULL,
        peer_id INTEGER NOT NULL,
        type INTEGER NOT NULL,
        status INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, peer_id, type)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS sessions_recent ON sessions (user_id, status, updated)",
    """CREATE TABLE IF NOT EXISTS unread (
        user_id INTEGER NOT NULL,
        peer_id INTEGER NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, peer_id)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS device_tokens (
        user_id INTEGER PRIMARY KEY,
        client_type INTEGER NOT NULL,
        token TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS device_tokens_token ON device_tokens (token)",
    """CREATE TABLE IF NOT EXISTS offline_files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL UNIQUE,
        from_id INTEGER NOT NULL,
        to_id INTEGER NOT NULL,
        file_name TEXT NOT NULL,
        file_size INTEGER NOT NULL,
        status INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS offline_files_to ON offline_files (to_id, status, created)",
)

# Indexes live inside CREATE TABLE: MySQL 8 has no CREATE INDEX IF NOT EXISTS, and a
# re-run of a half-applied migration must not fail.
_V1_MYSQL = (
    """CREATE TABLE IF NOT EXISTS departments (
        id BIGINT NOT NULL AUTO_INCREMENT,
        name VARCHAR(64) NOT NULL,
        priority INT NOT NULL DEFAULT 0,
        parent_id BIGINT NOT NULL DEFAULT 0,
        status TINYINT UNSIGNED NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_departments_name (name),
        KEY idx_departments_updated (updated))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS users (
        id BIGINT NOT NULL AUTO_INCREMENT,
        name VARCHAR(64) NOT NULL,
        nick VARCHAR(64) NOT NULL DEFAULT '',
        sex TINYINT UNSIGNED NOT NULL DEFAULT 0,
        domain VARCHAR(64) NOT NULL DEFAULT '',
        phone VARCHAR(32) NOT NULL DEFAULT '',
        email VARCHAR(128) NOT NULL DEFAULT '',
        avatar VARCHAR(512) NOT NULL DEFAULT '',
        department_id BIGINT NOT NULL DEFAULT 0,
        status TINYINT UNSIGNED NOT NULL DEFAULT 0,
        sign_info VARCHAR(128) NOT NULL DEFAULT '',
        push_shield TINYINT UNSIGNED NOT NULL DEFAULT 0,
        password_hash VARCHAR(64) NOT NULL DEFAULT '',
        salt VARCHAR(32) NOT NULL DEFAULT '',
        created BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_users_name (name),
        KEY idx_users_updated (updated))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS relations (
        id BIGINT NOT NULL AUTO_INCREMENT,
        small_id BIGINT NOT NULL,
        big_id BIGINT NOT NULL,
        last_msg_id BIGINT NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_relations_pair (small_id, big_id))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS messages (
        id BIGINT NOT NULL AUTO_INCREMENT,
        relation_id BIGINT NOT NULL,
        from_id BIGINT NOT NULL,
        to_id BIGINT NOT NULL,
        msg_id BIGINT NOT NULL,
        msg_type INT NOT NULL,
        content MEDIUMBLOB NOT NULL,
        created BIGINT NOT NULL,
        PRIMARY KEY (id),
        UNIQUE KEY uq_messages_relation_msg (relation_id, msg_id))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS im_groups (
        id BIGINT NOT NULL AUTO_INCREMENT,
        name VARCHAR(256) NOT NULL DEFAULT '',
        avatar VARCHAR(512) NOT NULL DEFAULT '',
        creator BIGINT NOT NULL DEFAULT 0,
        type TINYINT UNSIGNED NOT NULL DEFAULT 1,
        status TINYINT UNSIGNED NOT NULL DEFAULT 0,
        version INT UNSIGNED NOT NULL DEFAULT 1,
        last_msg_id BIGINT NOT NULL DEFAULT 0,
        last_chated BIGINT NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS group_members (
        group_id BIGINT NOT NULL,
        user_id BIGINT NOT NULL,
        status TINYINT UNSIGNED NOT NULL DEFAULT 0,
        joined BIGINT NOT NULL DEFAULT 0,
        read_msg_id BIGINT NOT NULL DEFAULT 0,
        shield TINYINT UNSIGNED NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (group_id, user_id),
        KEY idx_group_members_user (user_id, status))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS group_messages (
        id BIGINT NOT NULL AUTO_INCREMENT,
        group_id BIGINT NOT NULL,
        from_id BIGINT NOT NULL,
        msg_id BIGINT NOT NULL,
        msg_type INT NOT NULL,
        content MEDIUMBLOB NOT NULL,
        created BIGINT NOT NULL,
        PRIMARY KEY (id),
        UNIQUE KEY uq_group_messages_group_msg (group_id, msg_id))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS sessions (
        user_id BIGINT NOT NULL,
        peer_id BIGINT NOT NULL,
        type TINYINT UNSIGNED NOT NULL,
        status TINYINT UNSIGNED NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, peer_id, type),
        KEY idx_sessions_recent (user_id, status, updated))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS unread (
        user_id BIGINT NOT NULL,
        peer_id BIGINT NOT NULL,
        count INT UNSIGNED NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, peer_id))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS device_tokens (
        user_id BIGINT NOT NULL,
        client_type INT NOT NULL,
        token VARCHAR(255) NOT NULL,
        PRIMARY KEY (user_id),
        KEY idx_device_tokens_token (token))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS offline_files (
        id BIGINT NOT NULL AUTO_INCREMENT,
        task_id VARCHAR(64) NOT NULL,
        from_id BIGINT NOT NULL,
        to_id BIGINT NOT NULL,
        file_name VARCHAR(512) NOT NULL,
        file_size BIGINT NOT NULL,
        status TINYINT UNSIGNED NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_offline_files_task (task_id),
        KEY idx_offline_files_to (to_id, status, created))"""
    + _MYSQL_TABLE,
)


def _columns(txn: Txn, table: str) -> set[str]:
    if txn.dialect is Dialect.SQLITE:
        return {row[1] for row in txn.execute(f"PRAGMA table_info({table})").fetchall()}
    rows = txn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = ?",
        (table,),
    ).fetchall()
    return {row[0] for row in rows}


def add_column(table: str, column: str, definition: str) -> Step:
    """A step adding ``column`` unless it exists (table and column are code constants)."""

    def step(txn: Txn) -> None:
        if column not in _columns(txn, table):
            txn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    return step


def add_index(table: str, name: str, columns: str) -> Step:
    """A step creating index ``name`` unless it exists (MySQL 8 has no IF NOT EXISTS)."""

    def step(txn: Txn) -> None:
        if txn.dialect is Dialect.SQLITE:
            txn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
            return
        exists = txn.execute(
            "SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE()"
            " AND table_name = ? AND index_name = ?",
            (table, name),
        ).fetchone()
        if not exists:
            txn.execute(f"CREATE INDEX {name} ON {table} ({columns})")

    return step


# Version 2: a group member's join watermark, the group's last_msg_id when they (re)joined;
# they see only later messages (store/groups.py).
_V2_SQLITE = (add_column("group_members", "join_msg_id", "INTEGER NOT NULL DEFAULT 0"),)
_V2_MYSQL = (add_column("group_members", "join_msg_id", "BIGINT NOT NULL DEFAULT 0"),)

# Version 3: durable bytes of an offline upload, so any node can tell how far it got
# (store/files.py; status then also marks uploading / uploaded / deleted rows).
_V3_SQLITE = (add_column("offline_files", "uploaded", "INTEGER NOT NULL DEFAULT 0"),)
_V3_MYSQL = (add_column("offline_files", "uploaded", "BIGINT NOT NULL DEFAULT 0"),)

# Version 4: offline push (teamtalk_py/push). ``push_outbox`` gets one row per stored
# message in the message's own transaction, so a crash can neither lose nor invent a
# push; the push decision turns rows into ``push_queue`` jobs (embedded queue) or Redis
# stream entries (cluster) and deletes them. ``due`` is when a job may be (re)tried, in
# milliseconds; ``state`` 0 queued, 1 dead letter.
_V4_SQLITE = (
    """CREATE TABLE IF NOT EXISTS push_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node TEXT NOT NULL,
        session_type INTEGER NOT NULL,
        from_id INTEGER NOT NULL,
        to_id INTEGER NOT NULL,
        msg_id INTEGER NOT NULL,
        msg_type INTEGER NOT NULL,
        content BLOB NOT NULL,
        created INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS push_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sender TEXT NOT NULL,
        job TEXT NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        due INTEGER NOT NULL,
        created INTEGER NOT NULL,
        last_error TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS push_queue_due ON push_queue (state, due)",
)
_V4_MYSQL = (
    """CREATE TABLE IF NOT EXISTS push_outbox (
        id BIGINT NOT NULL AUTO_INCREMENT,
        node VARCHAR(64) NOT NULL,
        session_type TINYINT UNSIGNED NOT NULL,
        from_id BIGINT NOT NULL,
        to_id BIGINT NOT NULL,
        msg_id BIGINT NOT NULL,
        msg_type INT NOT NULL,
        content MEDIUMBLOB NOT NULL,
        created BIGINT NOT NULL,
        PRIMARY KEY (id))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS push_queue (
        id BIGINT NOT NULL AUTO_INCREMENT,
        sender VARCHAR(32) NOT NULL,
        job MEDIUMTEXT NOT NULL,
        state TINYINT UNSIGNED NOT NULL DEFAULT 0,
        attempts INT NOT NULL DEFAULT 0,
        due BIGINT NOT NULL,
        created BIGINT NOT NULL,
        last_error VARCHAR(512) NOT NULL DEFAULT '',
        PRIMARY KEY (id),
        KEY idx_push_queue_due (state, due))"""
    + _MYSQL_TABLE,
)

# Version 5: what an imported TeamTalk site brings that nothing else stores (importer/):
# its voice clips (IMAudio: where msfs kept each clip), its web-admin accounts (IMAdmin,
# password_hash = md5_hex(password), salt ''), and the importer's own checkpoints
# (import_progress, one row per phase, committed with each batch) and notes
# (import_notes: relation ids merged into another, messages whose id was taken).
_V5_SQLITE = (
    """CREATE TABLE IF NOT EXISTS voice_clips (
        id INTEGER PRIMARY KEY,
        from_id INTEGER NOT NULL,
        to_id INTEGER NOT NULL,
        url TEXT NOT NULL DEFAULT '',
        size INTEGER NOT NULL DEFAULT 0,
        duration INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS admins (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL DEFAULT '',
        salt TEXT NOT NULL DEFAULT '',
        status INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS import_progress (
        phase TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        counts TEXT NOT NULL DEFAULT '{}',
        updated INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS import_notes (
        kind TEXT NOT NULL,
        source_table TEXT NOT NULL,
        source_id INTEGER NOT NULL,
        value INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (kind, source_table, source_id)) WITHOUT ROWID""",
)
_V5_MYSQL = (
    """CREATE TABLE IF NOT EXISTS voice_clips (
        id BIGINT NOT NULL,
        from_id BIGINT NOT NULL,
        to_id BIGINT NOT NULL,
        url VARCHAR(1024) NOT NULL DEFAULT '',
        size BIGINT NOT NULL DEFAULT 0,
        duration INT NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS admins (
        id BIGINT NOT NULL AUTO_INCREMENT,
        name VARCHAR(64) NOT NULL,
        password_hash VARCHAR(255) NOT NULL DEFAULT '',
        salt VARCHAR(64) NOT NULL DEFAULT '',
        status TINYINT UNSIGNED NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_admins_name (name))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS import_progress (
        phase VARCHAR(64) NOT NULL,
        last_id BIGINT NOT NULL DEFAULT 0,
        done TINYINT UNSIGNED NOT NULL DEFAULT 0,
        counts TEXT NOT NULL,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (phase))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS import_notes (
        kind VARCHAR(32) NOT NULL,
        source_table VARCHAR(64) NOT NULL,
        source_id BIGINT NOT NULL,
        value BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (kind, source_table, source_id))"""
    + _MYSQL_TABLE,
)

# Version 6: offline files by sender, for the bytes each sender may keep stored
# (file.max_user_offline_bytes, store/files.py stored_bytes).
_V6 = (add_index("offline_files", "idx_offline_files_from", "from_id, status"),)

# Version 7: the media service (media/, content/). ``content_blobs`` holds one row per
# stored blob (named by its SHA-256) with the number of rows that reference it;
# ``media_files`` are those rows (msfs pictures, finished uploads, avatars);
# ``media_uploads`` are unfinished resumable uploads (``received`` = bytes fsynced);
# ``media_links`` are revocable download links; ``server_secrets`` holds secrets every
# node must agree on (the token signing key).
_V7_SQLITE = (
    """CREATE TABLE IF NOT EXISTS content_blobs (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        refcount INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS content_blobs_unreferenced ON content_blobs (refcount, updated)",
    """CREATE TABLE IF NOT EXISTS media_files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        file_id TEXT NOT NULL UNIQUE,
        kind INTEGER NOT NULL,
        owner_id INTEGER NOT NULL DEFAULT 0,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        content_type TEXT NOT NULL DEFAULT '',
        path TEXT NOT NULL DEFAULT '',
        status INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS media_files_owner ON media_files (owner_id, status)",
    """CREATE TABLE IF NOT EXISTS media_uploads (
        id TEXT PRIMARY KEY,
        owner_id INTEGER NOT NULL,
        length INTEGER NOT NULL,
        received INTEGER NOT NULL DEFAULT 0,
        name TEXT NOT NULL DEFAULT '',
        metadata TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL DEFAULT 0,
        expires INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS media_uploads_owner ON media_uploads (owner_id)",
    "CREATE INDEX IF NOT EXISTS media_uploads_expires ON media_uploads (expires)",
    """CREATE TABLE IF NOT EXISTS media_links (
        link_id TEXT PRIMARY KEY,
        file_id TEXT NOT NULL,
        owner_id INTEGER NOT NULL,
        created INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS media_links_file ON media_links (file_id)",
    """CREATE TABLE IF NOT EXISTS server_secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""",
)
_V7_MYSQL = (
    """CREATE TABLE IF NOT EXISTS content_blobs (
        sha256 CHAR(64) NOT NULL,
        size BIGINT NOT NULL,
        refcount BIGINT NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        updated BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (sha256),
        KEY idx_content_blobs_unreferenced (refcount, updated))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS media_files (
        id BIGINT NOT NULL AUTO_INCREMENT,
        file_id CHAR(32) NOT NULL,
        kind TINYINT UNSIGNED NOT NULL,
        owner_id BIGINT NOT NULL DEFAULT 0,
        sha256 CHAR(64) NOT NULL,
        size BIGINT NOT NULL,
        name VARCHAR(512) NOT NULL DEFAULT '',
        content_type VARCHAR(128) NOT NULL DEFAULT '',
        path VARCHAR(255) NOT NULL DEFAULT '',
        status TINYINT UNSIGNED NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_media_files_file (file_id),
        KEY idx_media_files_owner (owner_id, status))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS media_uploads (
        id CHAR(32) NOT NULL,
        owner_id BIGINT NOT NULL,
        length BIGINT NOT NULL,
        received BIGINT NOT NULL DEFAULT 0,
        name VARCHAR(512) NOT NULL DEFAULT '',
        metadata TEXT NOT NULL,
        created BIGINT NOT NULL DEFAULT 0,
        expires BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        KEY idx_media_uploads_owner (owner_id),
        KEY idx_media_uploads_expires (expires))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS media_links (
        link_id VARCHAR(64) NOT NULL,
        file_id CHAR(32) NOT NULL,
        owner_id BIGINT NOT NULL,
        created BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (link_id),
        KEY idx_media_links_file (file_id))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS server_secrets (
        name VARCHAR(64) NOT NULL,
        value VARCHAR(255) NOT NULL,
        created BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (name))"""
    + _MYSQL_TABLE,
)

# Version 8: login lockouts that outlive Redis (store/lockouts.py).
_V8_SQLITE = (
    """CREATE TABLE IF NOT EXISTS login_lockouts (
        name TEXT PRIMARY KEY,
        locked_until INTEGER NOT NULL) WITHOUT ROWID""",
)
_V8_MYSQL = (
    """CREATE TABLE IF NOT EXISTS login_lockouts (
        name VARCHAR(64) NOT NULL,
        locked_until BIGINT NOT NULL,
        PRIMARY KEY (name))"""
    + _MYSQL_TABLE,
)

# Version 9: ending a user's live sessions on every node (disabled, password changed,
# kicked by an admin): session_epoch changes, session_changed says when (store/accounts.py).
_V9_SQLITE = (
    add_column("users", "session_epoch", "INTEGER NOT NULL DEFAULT 0"),
    add_column("users", "session_changed", "INTEGER NOT NULL DEFAULT 0"),
    add_index("users", "users_session_changed", "session_changed"),
)
_V9_MYSQL = (
    add_column("users", "session_epoch", "BIGINT NOT NULL DEFAULT 0"),
    add_column("users", "session_changed", "BIGINT NOT NULL DEFAULT 0"),
    add_index("users", "idx_users_session_changed", "session_changed"),
)

# Version 10: the cloud disk (disk/). ``disk_files`` is each user's list of files: a name
# (data, never a path), the MD5 its clients address it by and the SHA-256 of the content
# blob it refers to (counted in ``content_blobs``), with its download count ``pv``; a user
# holds one file per (MD5, name). ``disk_shares`` is the public list: one row per shared
# file, unique per (MD5, name) across everybody, with its own download count (the
# ranking) and its own random id (the public download URL).
_V10_SQLITE = (
    """CREATE TABLE IF NOT EXISTS disk_files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        file_id TEXT NOT NULL UNIQUE,
        owner_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        md5 TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        pv INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        UNIQUE (owner_id, md5, name))""",
    "CREATE INDEX IF NOT EXISTS disk_files_owner_pv ON disk_files (owner_id, pv)",
    """CREATE TABLE IF NOT EXISTS disk_shares (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        share_id TEXT NOT NULL UNIQUE,
        file_id TEXT NOT NULL UNIQUE,
        owner_id INTEGER NOT NULL,
        md5 TEXT NOT NULL,
        name TEXT NOT NULL,
        pv INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        UNIQUE (md5, name))""",
    "CREATE INDEX IF NOT EXISTS disk_shares_pv ON disk_shares (pv)",
)
_V10_MYSQL = (
    """CREATE TABLE IF NOT EXISTS disk_files (
        id BIGINT NOT NULL AUTO_INCREMENT,
        file_id CHAR(32) NOT NULL,
        owner_id BIGINT NOT NULL,
        name VARCHAR(255) NOT NULL,
        md5 CHAR(32) NOT NULL,
        sha256 CHAR(64) NOT NULL,
        size BIGINT NOT NULL,
        pv BIGINT NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_disk_files_file (file_id),
        UNIQUE KEY uq_disk_files_owner_md5_name (owner_id, md5, name),
        KEY idx_disk_files_owner_pv (owner_id, pv))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS disk_shares (
        id BIGINT NOT NULL AUTO_INCREMENT,
        share_id CHAR(32) NOT NULL,
        file_id CHAR(32) NOT NULL,
        owner_id BIGINT NOT NULL,
        md5 CHAR(32) NOT NULL,
        name VARCHAR(255) NOT NULL,
        pv BIGINT NOT NULL DEFAULT 0,
        created BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_disk_shares_share (share_id),
        UNIQUE KEY uq_disk_shares_file (file_id),
        UNIQUE KEY uq_disk_shares_md5_name (md5, name),
        KEY idx_disk_shares_pv (pv))"""
    + _MYSQL_TABLE,
)

# Version 11: send facts, what recognises a resend after a lost ack (store/resends.py).
# Looked up by sender, client create_time and digest; deleted by id range, so
# ``created`` needs no index.
_V11_SQLITE = (
    """CREATE TABLE IF NOT EXISTS message_sends (
        id INTEGER PRIMARY KEY,
        sender_id INTEGER NOT NULL,
        client_time INTEGER NOT NULL,
        send_key BLOB NOT NULL,
        msg_id INTEGER NOT NULL,
        connection INTEGER NOT NULL,
        created INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS message_sends_key "
    "ON message_sends (sender_id, client_time, send_key)",
)
_V11_MYSQL = (
    """CREATE TABLE IF NOT EXISTS message_sends (
        id BIGINT NOT NULL AUTO_INCREMENT,
        sender_id BIGINT NOT NULL,
        client_time BIGINT NOT NULL,
        send_key BINARY(16) NOT NULL,
        msg_id BIGINT NOT NULL,
        connection BIGINT NOT NULL,
        created BIGINT NOT NULL,
        PRIMARY KEY (id),
        KEY idx_message_sends_key (sender_id, client_time, send_key))"""
    + _MYSQL_TABLE,
)

# Version 12: the admin API (admin_api/). ``users.admin`` lets a user sign in to the
# console; ``admin_tokens`` are the operators' API tokens (``teamtalk-admin admin-token``),
# kept as the SHA-256 of the token only; ``admin_sessions`` are console sign-ins (the
# cookie's SHA-256, its CSRF token and expiry), shared by every node hosting the API.
_V12_SQLITE = (
    add_column("users", "admin", "INTEGER NOT NULL DEFAULT 0"),
    """CREATE TABLE IF NOT EXISTS admin_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL DEFAULT 0,
        last_used INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS admin_sessions (
        session_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        csrf_token TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS admin_sessions_expires ON admin_sessions (expires)",
)
_V12_MYSQL = (
    add_column("users", "admin", "TINYINT UNSIGNED NOT NULL DEFAULT 0"),
    """CREATE TABLE IF NOT EXISTS admin_tokens (
        id BIGINT NOT NULL AUTO_INCREMENT,
        name VARCHAR(64) NOT NULL,
        token_hash CHAR(64) NOT NULL,
        created BIGINT NOT NULL DEFAULT 0,
        last_used BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_admin_tokens_name (name),
        UNIQUE KEY uq_admin_tokens_hash (token_hash))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS admin_sessions (
        session_hash CHAR(64) NOT NULL,
        user_id BIGINT NOT NULL,
        csrf_token VARCHAR(64) NOT NULL,
        created BIGINT NOT NULL,
        expires BIGINT NOT NULL,
        PRIMARY KEY (session_hash),
        KEY idx_admin_sessions_expires (expires))"""
    + _MYSQL_TABLE,
)

# Version 13: contacts (docs/EXTENSION.md): friend requests and friendships.
# ``pending_pair`` is ``from_id << 32 | to_id`` while a request is pending and NULL once
# answered: its UNIQUE key allows one pending request per asker and asked user, on
# both backends (several NULLs never collide). ``to_notified`` / ``from_notified`` mark
# the request delivered to the asked user and the answer delivered to the asker.
_V13_SQLITE = (
    """CREATE TABLE IF NOT EXISTS friend_requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        from_id INTEGER NOT NULL,
        to_id INTEGER NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        remark TEXT NOT NULL DEFAULT '',
        state INTEGER NOT NULL DEFAULT 0,
        pending_pair INTEGER UNIQUE,
        created INTEGER NOT NULL,
        answered INTEGER NOT NULL DEFAULT 0,
        to_notified INTEGER NOT NULL DEFAULT 0,
        from_notified INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS friend_requests_to ON friend_requests (to_id, state)",
    "CREATE INDEX IF NOT EXISTS friend_requests_from ON friend_requests (from_id, state)",
    """CREATE TABLE IF NOT EXISTS friends (
        user_id INTEGER NOT NULL,
        friend_id INTEGER NOT NULL,
        remark TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL,
        PRIMARY KEY (user_id, friend_id))""",
)
_V13_MYSQL = (
    """CREATE TABLE IF NOT EXISTS friend_requests (
        id BIGINT NOT NULL AUTO_INCREMENT,
        from_id BIGINT NOT NULL,
        to_id BIGINT NOT NULL,
        note VARCHAR(255) NOT NULL DEFAULT '',
        remark VARCHAR(255) NOT NULL DEFAULT '',
        state INT NOT NULL DEFAULT 0,
        pending_pair BIGINT NULL,
        created BIGINT NOT NULL,
        answered BIGINT NOT NULL DEFAULT 0,
        to_notified INT NOT NULL DEFAULT 0,
        from_notified INT NOT NULL DEFAULT 0,
        PRIMARY KEY (id),
        UNIQUE KEY uq_friend_requests_pending (pending_pair),
        KEY idx_friend_requests_to (to_id, state),
        KEY idx_friend_requests_from (from_id, state))"""
    + _MYSQL_TABLE,
    """CREATE TABLE IF NOT EXISTS friends (
        user_id BIGINT NOT NULL,
        friend_id BIGINT NOT NULL,
        remark VARCHAR(255) NOT NULL DEFAULT '',
        created BIGINT NOT NULL,
        PRIMARY KEY (user_id, friend_id))"""
    + _MYSQL_TABLE,
)

# Version 14: where users may log in to file transfer tasks from (store/file_permits.py).
_V14_SQLITE = (
    """CREATE TABLE IF NOT EXISTS file_login_permits (
        task_id TEXT NOT NULL,
        user_id INTEGER NOT NULL,
        address TEXT NOT NULL,
        granted INTEGER NOT NULL,
        PRIMARY KEY (task_id, user_id, address)) WITHOUT ROWID""",
    add_index("file_login_permits", "idx_file_login_permits_granted", "granted"),
)
_V14_MYSQL = (
    """CREATE TABLE IF NOT EXISTS file_login_permits (
        task_id VARCHAR(64) NOT NULL,
        user_id BIGINT NOT NULL,
        address VARCHAR(64) NOT NULL,
        granted BIGINT NOT NULL,
        PRIMARY KEY (task_id, user_id, address),
        KEY idx_file_login_permits_granted (granted))"""
    + _MYSQL_TABLE,
)

# Version 15: where each message was stored, for live delivery after a route outage
# (msg/catch_up.py). ``node_runs`` numbers every msg process run; a message's ``origin``
# is that run's number shifted left by 40 plus the message's serial in the run, so one
# run's messages are one range of the origin index, in the order they were committed.
_V15_SQLITE = (
    """CREATE TABLE IF NOT EXISTS node_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node TEXT NOT NULL DEFAULT '',
        started INTEGER NOT NULL DEFAULT 0)""",
    add_column("messages", "origin", "INTEGER NOT NULL DEFAULT 0"),
    add_column("group_messages", "origin", "INTEGER NOT NULL DEFAULT 0"),
    add_index("messages", "messages_origin", "origin"),
    add_index("group_messages", "group_messages_origin", "origin"),
)
_V15_MYSQL = (
    """CREATE TABLE IF NOT EXISTS node_runs (
        id BIGINT NOT NULL AUTO_INCREMENT,
        node VARCHAR(255) NOT NULL DEFAULT '',
        started BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (id))"""
    + _MYSQL_TABLE,
    add_column("messages", "origin", "BIGINT NOT NULL DEFAULT 0"),
    add_column("group_messages", "origin", "BIGINT NOT NULL DEFAULT 0"),
    add_index("messages", "idx_messages_origin", "origin"),
    add_index("group_messages", "idx_group_messages_origin", "origin"),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1_SQLITE, _V1_MYSQL),
    Migration(2, "group member join watermark", _V2_SQLITE, _V2_MYSQL),
    Migration(3, "offline file upload progress", _V3_SQLITE, _V3_MYSQL),
    Migration(4, "push outbox and queue", _V4_SQLITE, _V4_MYSQL),
    Migration(
        5, "imported TeamTalk data: voice clips, admins, import state", _V5_SQLITE, _V5_MYSQL
    ),  # fmt: skip
    Migration(6, "offline files by sender", _V6, _V6),
    Migration(7, "media: content blobs, files, uploads, links, secrets", _V7_SQLITE, _V7_MYSQL),
    Migration(8, "login lockouts that outlive Redis", _V8_SQLITE, _V8_MYSQL),
    Migration(9, "ending a user's sessions on every node", _V9_SQLITE, _V9_MYSQL),
    Migration(10, "cloud disk: files and shares", _V10_SQLITE, _V10_MYSQL),
    Migration(11, "send facts for resend recognition", _V11_SQLITE, _V11_MYSQL),
    Migration(12, "admin API: admin users, tokens and console sessions", _V12_SQLITE, _V12_MYSQL),
    Migration(13, "contacts: friend requests and friends", _V13_SQLITE, _V13_MYSQL),
    Migration(14, "file login permits", _V14_SQLITE, _V14_MYSQL),
    Migration(15, "message origins for catch-up", _V15_SQLITE, _V15_MYSQL),
)

LATEST_VERSION = MIGRATIONS[-1].version

# Every table of the current schema except schema_version (tests empty them between runs).
TABLES = (
    "departments",
    "users",
    "relations",
    "messages",
    "im_groups",
    "group_members",
    "group_messages",
    "sessions",
    "unread",
    "device_tokens",
    "offline_files",
    "push_outbox",
    "push_queue",
    "voice_clips",
    "admins",
    "import_progress",
    "import_notes",
    "content_blobs",
    "media_files",
    "media_uploads",
    "media_links",
    "server_secrets",
    "login_lockouts",
    "disk_files",
    "disk_shares",
    "message_sends",
    "admin_tokens",
    "admin_sessions",
    "friend_requests",
    "friends",
    "file_login_permits",
    "node_runs",
)


def _check() -> None:
    versions = [m.version for m in MIGRATIONS]
    if versions != list(range(1, len(versions) + 1)):
        raise AssertionError(f"migration versions must be 1..N in order, got {versions}")


_check()
