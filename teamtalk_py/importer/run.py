"""The import, phase by phase: what each reference table becomes in our store.

Phases run in a fixed order (``PHASES``); each reads its source in keyset pages and writes
each page with its checkpoint in one transaction (see ``target.py``). A run that was
interrupted resumes every phase where it stopped. A run after a finished one reads the
small, changeable tables (users, groups, sessions, Redis state...) again and overwrites
them with the source's values, and continues the message tables after the last message
it imported: running it twice changes nothing, and a rehearsal import followed by the
final one only adds what is new.

Mapping (storage.md names on the left):

* ``IMDepart``, ``IMUser``, ``IMAdmin``, ``IMRelationShip``, ``IMGroup``, ``IMAudio``
  keep their ids. A login or department name used twice (the reference's name indexes
  are not unique; ours are) stays with the row the reference's login would pick (the
  lowest id with status 0, else the lowest id); the others become ``name#id`` and are
  listed in the report. Password hashes and salts are copied as they are (lower-cased
  hex): ``md5_hex(md5_hex(password) + salt)``, which ``accounts.check_password`` accepts,
  so everyone keeps their password, and the first successful login rewrites the row as
  scrypt (``msg/credentials.py``).
* ``IMMessage_0..7`` / ``IMGroupMessage_0..7``: every visible row (``status = 0``) with
  its message id, time, type and content bytes. Voice content is rebuilt from msfs
  (``voice.py``). A message whose id is already taken in its conversation (the reference
  reused ids after losing its Redis counters, TeamTalk issue 57) is kept, with a new id
  after the conversation's last, in the ``renumbered`` phase.
* The message-id counters are the newest stored id of each conversation (our store finds
  the newest message by its id); Redis counters are compared with them and the report
  says where Redis was ahead (ids the reference handed out for messages it failed to
  store) or behind (a Redis that lost its counters).
* Group membership, join times and push mutes come from Redis (``group_member_<id>``,
  ``group_set_<id>``: the reference's authoritative copies) when it is given, else from
  ``IMGroupMember``. A member sees the messages created at or after their join time, as
  in the reference (``join_msg_id``).
* Unread counts come from Redis (``unread_<user>``, group counters); without Redis they
  cannot be known (the reference kept them nowhere else) and every conversation starts
  read. Device tokens come from Redis only; a token the reference had moved to another
  user (``device_<token>`` names someone else) is not imported.
"""

from __future__ import annotations

import bisect
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from teamtalk_py.importer import target
from teamtalk_py.importer.source import SHARDS, RedisSource, SourceDatabase, as_int
from teamtalk_py.importer.target import Phase
from teamtalk_py.importer.voice import Clip, ClipFetcher
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import groups as group_store
from teamtalk_py.store import messages as message_store
from teamtalk_py.store.database import Database, SyncConnection
from teamtalk_py.store.txn import Dialect, Txn, placeholders

RUN = "run"
MESSAGE_PHASES = tuple(f"messages_{n}" for n in range(SHARDS))
GROUP_MESSAGE_PHASES = tuple(f"group_messages_{n}" for n in range(SHARDS))
PHASES = (
    "departments",
    "users",
    "admins",
    "relations",
    "voice_clips",
    *MESSAGE_PHASES,
    "groups",
    *GROUP_MESSAGE_PHASES,
    "renumbered",
    "group_read_state",
    "sessions",
    "unread",
    "counters",
)
#: Phases that continue after their checkpoint on a new run (append-only sources).
APPEND_ONLY = frozenset(MESSAGE_PHASES + GROUP_MESSAGE_PHASES + ("renumbered",))

SOURCE_TABLE = {
    "departments": "IMDepart",
    "users": "IMUser",
    "admins": "IMAdmin",
    "relations": "IMRelationShip",
    "voice_clips": "IMAudio",
    "groups": "IMGroup",
    "sessions": "IMRecentSession",
    **{f"messages_{n}": f"IMMessage_{n}" for n in range(SHARDS)},
    **{f"group_messages_{n}": f"IMGroupMessage_{n}" for n in range(SHARDS)},
}

_SINGLE_AUDIO = B.MSG_TYPE_SINGLE_AUDIO
_GROUP_AUDIO = B.MSG_TYPE_GROUP_AUDIO
_TOKEN_TYPES = {"ios": B.CLIENT_TYPE_IOS, "android": B.CLIENT_TYPE_ANDROID}
_GROUP_PAGE = 100
_NO_REDIS = (
    "not given (unread counts unknown: every conversation starts read; no device tokens; "
    "group membership, join times and mutes from IMGroupMember)"
)
# Users per page of the unread phase and the check: what a page holds grows with each
# user's number of conversations with unread messages, so pages stay small.
_USER_PAGE = 100


class ImportRefused(Exception):
    """The import cannot run (the message says why); nothing was written."""


@dataclass
class ImportOptions:
    source_url: str
    redis_urls: Sequence[str] = ()
    dry_run: bool = False
    batch_size: int = 2000
    fetch_voice: bool = True
    #: Show tqdm progress bars (None: when stderr is a terminal).
    progress: bool | None = None


@dataclass
class Report:
    """What the import read and wrote, and how the result compares with the source."""

    source: str
    target: str
    redis: str | None
    dry_run: bool
    phases: list[Phase] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0
    check_seconds: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def messages_imported(self) -> int:
        return sum(
            p.counts["written"]
            for p in self.phases
            if p.name in MESSAGE_PHASES + GROUP_MESSAGE_PHASES + ("renumbered",)
        )

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def render(self) -> str:
        lines = [
            f"{'dry run: ' if self.dry_run else ''}import {self.source} -> {self.target}",
            f"redis: {self.redis or _NO_REDIS}",
            "",
            f"{'phase':<20} {'source':<18} {'read':>10} {'written':>10}  other",
        ]
        for phase in self.phases:
            other = ", ".join(
                f"{k} {v}" for k, v in sorted(phase.counts.items()) if k not in ("read", "written")
            )
            written = "-" if self.dry_run else phase.counts["written"]
            lines.append(
                f"{phase.name:<20} {SOURCE_TABLE.get(phase.name, 'redis/store'):<18} "
                f"{phase.counts['read']:>10} {written:>10}  {other}"
            )
        if self.renamed:
            lines += ["", "renamed (name used twice in the source):", *self.renamed]
        lines.append("")
        if self.dry_run:
            lines.append("check: not run (dry run)")
        else:
            checked = ", ".join(f"{k} {v}" for k, v in sorted(self.checks.items()))
            lines.append(f"check: {checked}")
            if self.mismatches:
                lines.append(f"CHECK FAILED: {len(self.mismatches)} mismatches")
                lines += self.mismatches[:50]
            else:
                lines.append(
                    "check passed: every user's unread total and latest message ids match "
                    "the source"
                )
        copying = self.seconds - self.check_seconds
        rate = self.messages_imported / copying if copying > 0 else 0.0
        lines.append(
            f"{self.messages_imported} messages; import {copying:.1f} s ({rate:.0f} messages/s), "
            f"check {self.check_seconds:.1f} s; peak memory {self.peak_rss_mib:.0f} MiB"
        )
        return "\n".join(lines)


def peak_rss_mib() -> float:
    """This process's peak resident set size: ``VmHWM`` of its own memory (``ru_maxrss``
    would include what the parent had when this process was forked)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Importer:
    """Runs the phases of one import from ``source`` (+ ``redis``) into ``db``."""

    def __init__(
        self,
        db: Database,
        source: SourceDatabase,
        redis: RedisSource | None,
        options: ImportOptions,
        fetcher: ClipFetcher | None = None,
    ) -> None:
        self.db = db
        self.source = source
        self.redis = redis
        self.options = options
        self.fetcher = fetcher or ClipFetcher(options.fetch_voice and not options.dry_run)
        self.report = Report(
            source.describe,
            db.describe(),
            redis.describe() if redis else None,
            options.dry_run,
        )
        self._aliases: dict[int, int] = {}
        self._renumbered_in: set[tuple[str, int]] = set()
        self._connection: SyncConnection | None = None

    # -- driving ------------------------------------------------------------------------

    def run(self) -> Report:
        started = time.monotonic()
        with self.db.sync_connection() as connection:
            self._connection = connection
            try:
                self._run_phases()
            finally:
                self._connection = None
        self.report.seconds = time.monotonic() - started
        self.report.peak_rss_mib = peak_rss_mib()
        return self.report

    def _transaction(self) -> AbstractContextManager[Txn]:
        """A transaction on the import's one connection."""
        assert self._connection is not None
        return self._connection.transaction()

    def _run_phases(self) -> None:
        phases = self._begin()
        try:
            for name in PHASES:
                phase = phases[name]
                self.report.phases.append(phase)
                if not phase.done:
                    self._step(name)(phase)
                    phase.done = True
                    self._commit(phase)
            if not self.options.dry_run:
                self._finish()
                self._check()
        finally:
            self.fetcher.close()

    def _step(self, name: str) -> Callable[[Phase], None]:
        """The method that runs phase ``name`` (``messages_3`` -> ``_messages``)."""
        base = name[:-2] if name[-1].isdigit() else name
        return getattr(self, "_" + base)

    def _begin(self) -> dict[str, Phase]:
        """The phases' state: fresh, resumed after an interruption, or a new run."""
        if self.options.dry_run:
            return {name: Phase(name) for name in PHASES}
        with self._transaction() as txn:
            saved = target.load_phases(txn)
            run = saved.get(RUN)
            if run is None:
                self._check_empty(txn)
                saved = {}
            elif run.done:
                for name, phase in list(saved.items()):
                    if name in APPEND_ONLY:
                        phase.done = False
                        phase.counts = Counter()
                    else:
                        del saved[name]
                        target.delete_phase(txn, name)
            phases = {name: saved.get(name) or Phase(name) for name in PHASES}
            run = Phase(RUN, counts=Counter(runs=(run.counts["runs"] if run else 0) + 1))
            for phase in (*phases.values(), run):
                target.save_phase(txn, phase)
            self._aliases = {
                source_id: value for _, source_id, value in target.notes(txn, "relation_alias")
            }
            self._renumbered_in = {
                (table, value) for table, _, value in target.notes(txn, "renumbered_in")
            }
        return phases

    def _finish(self) -> None:
        with self._transaction() as txn:
            run = target.load_phases(txn)[RUN]
            run.done = True
            target.save_phase(txn, run)

    def _check_empty(self, txn: Txn) -> None:
        for table in ("users", "departments", "im_groups", "messages", "group_messages"):
            if txn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                raise ImportRefused(
                    f"the target store already has {table}: import into an empty store "
                    "(a new data dir or database)"
                )

    def _commit(self, phase: Phase, write: Callable[..., None] | None = None, *args: Any) -> None:
        """Run ``write(txn, *args)`` and save ``phase``'s checkpoint in one transaction."""
        if self.options.dry_run:
            return
        with self._transaction() as txn:
            if write is not None:
                write(txn, *args)
            target.save_phase(txn, phase)

    def _bar(self, phase: Phase, total: int | None) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=total,
            desc=phase.name,
            unit="row",
            disable=None if self.options.progress is None else not self.options.progress,
            leave=False,
        )

    def _pages(
        self, phase: Phase, columns: str, size: int | None = None
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Source pages of ``phase``'s table after its checkpoint, with a progress bar.

        ``phase.last_id`` is already the page's last id when the caller gets it: the
        caller commits it with the page, before asking for the next one.
        """
        table = SOURCE_TABLE[phase.name]
        if not self.source.has_table(table):
            phase.add("no source table")
            return
        with self._bar(phase, self.source.count(table, phase.last_id)) as bar:
            for page in self.source.pages(table, columns, phase.last_id, size or self._size):
                phase.add("read", len(page))
                phase.last_id = int(page[-1][0])  # committed with the page by the caller
                yield page
                bar.update(len(page))

    @property
    def _size(self) -> int:
        return self.options.batch_size

    def _dialect(self) -> Dialect:
        return self.db.dialect

    # -- directory ------------------------------------------------------------------------

    def _keepers(self, table: str, column: str) -> dict[str, int]:
        """name -> the id that keeps a name used by several rows of ``table``."""
        rows = self.source.query(
            f"SELECT {column}, MIN(CASE WHEN status = 0 THEN id END), MIN(id) FROM {table} "
            f"GROUP BY {column} HAVING COUNT(*) > 1"
        )
        return {name: int(active if active is not None else first) for name, active, first in rows}

    def _unique_names(
        self,
        txn: Txn | None,
        phase: Phase,
        table: str,
        rows: list[list[Any]],
        keepers: dict[str, int],
    ) -> None:
        """Rename (``name#id``) rows whose name another row keeps, in place."""
        taken = target.names_taken(txn, table, [r[1] for r in rows]) if txn is not None else {}
        for row in rows:
            id_, name = row[0], row[1]
            owner = keepers.get(name, taken.get(name, id_))
            if owner != id_:
                row[1] = f"{name}#{id_}"
                phase.add("renamed")
                self.report.renamed.append(f"{table} {id_}: {name!r} -> {row[1]!r}")

    def _copy_named(
        self,
        phase: Phase,
        name_column: str,
        table: str,
        columns: tuple[str, ...],
        select: str,
        extra: Callable[[list[list[Any]]], Callable[[Txn], None] | None] | None = None,
    ) -> None:
        """Copy a source table whose names must be unique in ours, keeping ids; ``extra``
        reads what else a page needs (outside the transaction) and returns its writer."""
        keepers = self._keepers(SOURCE_TABLE[phase.name], name_column)
        sql = target.upsert(self._dialect(), table, columns, ("id",))
        for page in self._pages(phase, select):
            rows = [list(r) for r in page]
            more = extra(rows) if extra is not None else None

            def write(txn: Txn, rows: list[list[Any]], more: Callable[[Txn], None] | None) -> None:
                self._unique_names(txn, phase, table, rows, keepers)
                txn.executemany(sql, rows)
                if more is not None:
                    more(txn)

            phase.add("written", len(rows))
            self._commit(phase, write, rows, more)

    def _departments(self, phase: Phase) -> None:
        columns = ("id", "name", "priority", "parent_id", "status", "created", "updated")
        select = "departName, priority, parentId, status, created, updated"
        self._copy_named(phase, "departName", "departments", columns, select)

    def _users(self, phase: Phase) -> None:
        columns = (
            "id", "name", "nick", "sex", "domain", "phone", "email", "avatar", "department_id",
            "status", "sign_info", "push_shield", "password_hash", "salt", "created", "updated",
        )  # fmt: skip
        select = (
            "name, nick, sex, domain, phone, email, COALESCE(avatar, ''), departId, "
            "COALESCE(status, 0), sign_info, push_shield_status, LOWER(password), salt, "
            "created, updated"
        )

        def tokens(rows: list[list[Any]]) -> Callable[[Txn], None] | None:
            user_ids = [int(r[0]) for r in rows]
            found = self._device_tokens(phase, user_ids)
            if found is None:
                return None
            return lambda txn: self._write_tokens(txn, user_ids, found)

        self._copy_named(phase, "name", "users", columns, select, tokens)

    def _device_tokens(self, phase: Phase, user_ids: list[int]) -> list[tuple] | None:
        """``(user_id, client_type, token)`` the reference would push to, or None without
        Redis."""
        if self.redis is None:
            return None
        values = self.redis.get_many("token", [f"device_{u}" for u in user_ids])
        candidates = []
        for user_id, value in zip(user_ids, values, strict=True):
            kind, sep, token = (value or "").partition(":")
            if not sep or not token:
                if value:
                    phase.add("tokens of other client types")
                continue
            if kind not in _TOKEN_TYPES:
                phase.add("tokens of other client types")
                continue
            candidates.append((user_id, _TOKEN_TYPES[kind], token))
        owners = self.redis.get_many("token", [f"device_{t}" for _, _, t in candidates])
        tokens = []
        for (user_id, client_type, token), owner in zip(candidates, owners, strict=True):
            if owner not in (None, str(user_id)):
                phase.add("tokens moved to another user")
                continue
            tokens.append((user_id, client_type, token))
        phase.add("device tokens", len(tokens))
        return tokens

    def _write_tokens(self, txn: Txn, user_ids: list[int], tokens: list[tuple]) -> None:
        for i in range(0, len(user_ids), 500):
            chunk = user_ids[i : i + 500]
            txn.execute(
                f"DELETE FROM device_tokens WHERE user_id IN ({placeholders(len(chunk))})",
                chunk,
            )
        txn.executemany(
            "INSERT INTO device_tokens (user_id, client_type, token) VALUES (?, ?, ?)", tokens
        )

    def _admins(self, phase: Phase) -> None:
        if not self.source.has_table("IMAdmin"):
            phase.add("no source table")
            return
        columns = ("id", "name", "password_hash", "salt", "status", "created", "updated")
        select = "uname, LOWER(pwd), '', status, created, updated"
        self._copy_named(phase, "uname", "admins", columns, select)

    # -- relations, voice and messages ------------------------------------------------------

    def _relations(self, phase: Phase) -> None:
        dialect = self._dialect()
        sql = upsert_relation(dialect)
        for page in self._pages(phase, "smallId, bigId, created, updated"):

            def write(txn: Txn, page: list[tuple] = page) -> None:
                existing = _pairs_present(txn, [(int(r[1]), int(r[2])) for r in page])
                rows = []
                for id_, small, big, created, updated in page:
                    id_, pair = int(id_), (int(small), int(big))
                    owner = existing.setdefault(pair, id_)
                    if owner != id_:
                        # The same pair twice: the reference filed messages under both
                        # ids; ours has one relation per pair.
                        self._aliases[id_] = owner
                        target.note(txn, "relation_alias", "IMRelationShip", id_, owner)
                        phase.add("merged into another relation")
                        continue
                    rows.append((id_, pair[0], pair[1], 0, created, updated))
                txn.executemany(sql, rows)
                phase.add("written", len(rows))

            self._commit(phase, write)

    def _voice_clips(self, phase: Phase) -> None:
        columns = ("id", "from_id", "to_id", "url", "size", "duration", "created")
        sql = target.upsert(self._dialect(), "voice_clips", columns, ("id",))
        for page in self._pages(phase, "fromId, toId, COALESCE(path, ''), size, duration, created"):
            phase.add("written", len(page))
            self._commit(phase, _executemany, sql, page)

    def _clips(
        self, page: Sequence[tuple[Any, ...]], type_index: int, content_index: int, audio: int
    ) -> dict[int, bytes]:
        """Rebuilt voice bytes by clip id for the voice messages of ``page``."""
        ids = {
            int(r[content_index])
            for r in page
            if r[type_index] == audio and bytes(r[content_index] or b"").isdigit()
        }
        if not ids or not self.fetcher.enabled:
            return {}
        rows = self.source.query(
            "SELECT id, COALESCE(path, ''), size, duration FROM IMAudio "
            f"WHERE id IN ({', '.join(['%s'] * len(ids))})",
            sorted(ids),
        )
        return self.fetcher.fetch(Clip(int(i), p, int(s), int(d)) for i, p, s, d in rows)

    def _messages(self, phase: Phase) -> None:
        self._message_shard(phase, group=False)

    def _group_messages(self, phase: Phase) -> None:
        self._message_shard(phase, group=True)

    def _message_shard(self, phase: Phase, *, group: bool) -> None:
        dialect = self._dialect()
        table = SOURCE_TABLE[phase.name]
        if group:
            select = "groupId, userId, 0, msgId, CAST(content AS BINARY), type, status, created"
            insert = target.insert_ignore(
                dialect, "group_messages",
                ("group_id", "from_id", "msg_id", "msg_type", "content", "created"),
            )  # fmt: skip
            conversations, audio = "im_groups", _GROUP_AUDIO
        else:
            select = (
                "relateId, fromId, toId, msgId, COALESCE(CAST(content AS BINARY), ''), "
                "type, status, created"
            )
            insert = target.insert_ignore(
                dialect, "messages",
                ("relation_id", "from_id", "to_id", "msg_id", "msg_type", "content", "created"),
            )  # fmt: skip
            conversations, audio = "relations", _SINGLE_AUDIO
        bump = {"last_msg_id": f"{target.greatest(dialect)}(last_msg_id, {{new}})"}
        for page in self._pages(phase, select):
            visible = [r for r in page if r[7] == 0]
            phase.add("hidden (status 1)", len(page) - len(visible))
            clips = self._clips(visible, 6, 5, audio)

            def write(txn: Txn, visible: list[tuple[Any, ...]], clips: dict[int, bytes]) -> None:
                rows = []
                for (
                    source_id,
                    conv,
                    from_id,
                    to_id,
                    msg_id,
                    content,
                    msg_type,
                    _,
                    created,
                ) in visible:
                    conv = self._aliases.get(int(conv), int(conv)) if not group else int(conv)
                    content = bytes(content or b"")
                    if msg_type == audio and content.isdigit():
                        rebuilt = clips.get(int(content))
                        phase.add("voice rebuilt" if rebuilt else "voice kept as clip id")
                        content = rebuilt or content
                    values: tuple[Any, ...] = (conv, from_id, msg_id, msg_type, content, created)
                    if not group:
                        values = (conv, from_id, to_id, msg_id, msg_type, content, created)
                    rows.append((int(source_id), conv, int(msg_id), values))
                present = target.ids_present(txn, conversations, [r[1] for r in rows])
                orphans = [r for r in rows if r[1] not in present]
                phase.add("no such conversation", len(orphans))
                rows = [r for r in rows if r[1] in present]
                written = self._insert_messages(txn, phase, table, insert, rows)
                newest: dict[int, int] = {}
                for _, conv, msg_id, _ in written:
                    newest[conv] = max(newest.get(conv, 0), msg_id)
                target.update_by_key(txn, conversations, "id", bump, sorted(newest.items()))

            self._commit(phase, write, visible, clips)

    def _insert_messages(
        self, txn: Txn, phase: Phase, table: str, insert: str, rows: list[tuple]
    ) -> list[tuple]:
        """Insert ``(source_id, conversation, msg_id, values)`` rows; the ones written.

        A row whose message id is already taken in its conversation is noted for the
        ``renumbered`` phase instead.
        """
        if not rows:
            return []
        txn.execute("SAVEPOINT import_page")
        txn.executemany(insert, [r[3] for r in rows])
        if txn.rowcount == len(rows):
            txn.execute("RELEASE SAVEPOINT import_page")
            phase.add("written", len(rows))
            return rows
        # Rare: some id was taken. Undo the page and insert row by row to find which.
        txn.execute("ROLLBACK TO SAVEPOINT import_page")
        txn.execute("RELEASE SAVEPOINT import_page")
        written = []
        for row in rows:
            txn.execute(insert, row[3])
            if txn.rowcount == 1:
                written.append(row)
            else:
                target.note(txn, "id_taken", table, row[0], 0)
                phase.add("id taken (renumbered later)")
        phase.add("written", len(written))
        return written

    def _renumbered(self, phase: Phase) -> None:
        """Messages whose id was taken get the next free id of their conversation."""
        if self.options.dry_run:
            return
        with self._transaction() as txn:
            pending = [n for n in target.notes(txn, "id_taken") if n[2] == 0]
        for table, source_id, _ in pending:
            group = table.startswith("IMGroupMessage")
            if group:
                (row,) = self.source.query(
                    f"SELECT groupId, userId, 0, msgId, CAST(content AS BINARY), type, created "
                    f"FROM {table} WHERE id = %s",
                    (source_id,),
                )
            else:
                (row,) = self.source.query(
                    f"SELECT relateId, fromId, toId, msgId, COALESCE(CAST(content AS BINARY), "
                    f"''), type, created FROM {table} WHERE id = %s",
                    (source_id,),
                )
            phase.add("read")
            conv, from_id, to_id, old_id, content, msg_type, created = row
            conv = int(conv) if group else self._aliases.get(int(conv), int(conv))
            audio = _GROUP_AUDIO if group else _SINGLE_AUDIO
            content = bytes(content or b"")
            if msg_type == audio and content.isdigit():
                rebuilt = self._clips([(0, msg_type, content)], 1, 2, audio).get(int(content))
                content = rebuilt or content

            phase.add("written")
            self._commit(phase, self._store_renumbered, table, source_id, group, conv, row, content)

    def _store_renumbered(
        self,
        txn: Txn,
        table: str,
        source_id: int,
        group: bool,
        conv: int,
        row: tuple[Any, ...],
        content: bytes,
    ) -> None:
        """Store a message whose id was taken with the next id of its conversation."""
        conversations = "im_groups" if group else "relations"
        found = txn.execute(
            f"SELECT last_msg_id FROM {conversations} WHERE id = ?", (conv,)
        ).fetchone()
        assert found is not None  # the message phases only keep rows of known conversations
        new_id = int(found[0]) + 1
        _, from_id, to_id, _, _, msg_type, created = row
        if group:
            txn.execute(
                "INSERT INTO group_messages (group_id, from_id, msg_id, msg_type, "
                "content, created) VALUES (?, ?, ?, ?, ?, ?)",
                (conv, from_id, new_id, msg_type, content, created),
            )
        else:
            txn.execute(
                "INSERT INTO messages (relation_id, from_id, to_id, msg_id, msg_type, "
                "content, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conv, from_id, to_id, new_id, msg_type, content, created),
            )
        txn.execute(f"UPDATE {conversations} SET last_msg_id = ? WHERE id = ?", (new_id, conv))
        target.note(txn, "id_taken", table, source_id, new_id)
        target.note(txn, "renumbered_in", conversations, conv, conv)
        self._renumbered_in.add((conversations, conv))

    # -- groups ---------------------------------------------------------------------------

    def _groups(self, phase: Phase) -> None:
        dialect = self._dialect()
        group_columns = (
            "id", "name", "avatar", "creator", "type", "status", "version", "last_msg_id",
            "last_chated", "created", "updated",
        )  # fmt: skip
        group_sql = upsert_group(dialect, group_columns)
        member_columns = (
            "group_id", "user_id", "status", "joined", "join_msg_id", "read_msg_id", "shield",
            "created", "updated",
        )  # fmt: skip
        member_sql = target.upsert(
            dialect, "group_members", member_columns, ("group_id", "user_id"),
            keep=("join_msg_id", "read_msg_id"),
        )  # fmt: skip
        select = "name, avatar, creator, type, status, version, lastChated, created, updated"
        for page in self._pages(phase, select, _GROUP_PAGE):
            group_ids = [int(r[0]) for r in page]
            members = self._members(phase, group_ids)
            groups = []
            for (
                id_,
                name,
                avatar,
                creator,
                type_,
                status,
                version,
                chated,
                created,
                updated,
            ) in page:
                if status == 0 and self.redis is not None and not members.get(int(id_)):
                    status = 1  # the reference treats a group without a member set as gone
                    phase.add("no member set in redis (dissolved)")
                groups.append(
                    (id_, name, avatar, creator, type_, status, version, 0, chated, created,
                     updated)
                )  # fmt: skip
            member_rows = [
                (gid, uid, status, joined, 0, 0, shield, created, updated)
                for gid, by_user in members.items()
                for uid, (status, joined, shield, created, updated) in sorted(by_user.items())
            ]
            phase.add("members", sum(1 for r in member_rows if r[2] == 0))

            def write(
                txn: Txn, groups: list[tuple[Any, ...]], member_rows: list[tuple[Any, ...]]
            ) -> None:
                txn.executemany(group_sql, groups)
                txn.executemany(member_sql, member_rows)

            phase.add("written", len(groups))
            self._commit(phase, write, groups, member_rows)

    def _members(self, phase: Phase, group_ids: list[int]) -> dict[int, dict[int, tuple]]:
        """group -> user -> (status, joined, shield, created, updated) of every member row.

        With Redis, ``group_member_<id>`` decides who is a member and since when, as it did
        for the reference; ``IMGroupMember`` only adds former members and first-join times.
        """
        rows = self.source.query(
            "SELECT groupId, userId, status, created, updated FROM IMGroupMember "
            f"WHERE groupId IN ({', '.join(['%s'] * len(group_ids))}) ORDER BY id",
            group_ids,
        )
        found: dict[int, dict[int, tuple]] = {g: {} for g in group_ids}
        for gid, uid, status, created, updated in rows:
            found[int(gid)][int(uid)] = (int(status != 0), int(updated), 0, int(created),
                                         int(updated))  # fmt: skip
        if self.redis is None:
            return {g: m for g, m in found.items() if m}
        hashes = self.redis.hgetall_many("group_member", [f"group_member_{g}" for g in group_ids])
        mutes = self.redis.hgetall_many("group_set", [f"group_set_{g}" for g in group_ids])
        result: dict[int, dict[int, tuple]] = {}
        for gid, current, muted in zip(group_ids, hashes, mutes, strict=True):
            by_user = {
                uid: (1, joined, 0, created, updated)
                for uid, (_, joined, _, created, updated) in found[gid].items()
            }
            for uid_text, joined_text in current.items():
                uid = as_int(uid_text)
                if uid <= 0:
                    continue
                joined = as_int(joined_text)
                shield = 1 if muted.get(f"{uid}_1") == "1" else 0
                _, _, _, created, updated = by_user.get(uid, (0, joined, 0, joined, joined))
                by_user[uid] = (0, joined, shield, min(created, joined) or joined, updated)
            phase.add("muted", sum(1 for v in muted.values() if v == "1"))
            if current:
                result[gid] = by_user
            elif by_user:
                result[gid] = by_user  # former members of a vanished group
        return result

    def _group_read_state(self, phase: Phase) -> None:
        """Join watermarks from join times, read marks from the Redis group counters."""
        if self.options.dry_run:
            return
        while True:
            with self._transaction() as txn:
                groups = txn.execute(
                    "SELECT id, last_msg_id FROM im_groups WHERE id > ? ORDER BY id LIMIT ?",
                    (phase.last_id, _GROUP_PAGE),
                ).fetchall()
            if not groups:
                return
            updates = []
            for group_id, last in groups:
                updates += self._group_marks(phase, int(group_id), int(last))
            phase.last_id = int(groups[-1][0])
            phase.add("read", len(groups))
            phase.add("written", len(updates))
            self._commit(phase, _set_marks, updates)

    def _group_marks(self, phase: Phase, group_id: int, last: int) -> list[tuple]:
        with self._transaction() as txn:
            members = txn.execute(
                "SELECT user_id, joined FROM group_members WHERE group_id = ? AND status = 0 "
                "ORDER BY joined, user_id",
                (group_id,),
            ).fetchall()
        if not members:
            return []
        joins = [int(j) for _, j in members]
        watermarks = self._join_watermarks(group_id, joins)
        unread: list[int | None] = [None] * len(members)
        if self.redis is not None:
            (total,) = self.redis.hgetall_many("unread", [f"{group_id}_im_group_msg"])
            marks = self.redis.hgetall_many(
                "unread", [f"{uid}_{group_id}_im_user_group" for uid, _ in members]
            )
            count = as_int(total.get("count"))
            unread = [max(0, count - as_int(m.get("count"))) for m in marks]
        updates = []
        for (uid, _), join_msg_id, n in zip(members, watermarks, unread, strict=True):
            read = last if n is None else last - n
            if read < join_msg_id:
                phase.add("unread capped at the messages visible since joining")
                read = join_msg_id
            updates.append((join_msg_id, read, group_id, int(uid)))
        return updates

    def _join_watermarks(self, group_id: int, joins: list[int]) -> list[int]:
        """For each join time (ascending), the largest msg id created before it.

        One pass over the group's (msg_id, created) in id order: a message hides from
        every member who joined after it was created, so it raises the watermark of a
        suffix of the sorted join times; a prefix maximum gives each member's watermark.
        """
        raised = [0] * (len(joins) + 1)
        after = 0
        while True:
            with self._transaction() as txn:
                rows = txn.execute(
                    "SELECT msg_id, created FROM group_messages WHERE group_id = ? "
                    "AND msg_id > ? ORDER BY msg_id LIMIT 20000",
                    (group_id, after),
                ).fetchall()
            if not rows:
                break
            for msg_id, created in rows:
                start = bisect.bisect_right(joins, int(created))
                if start < len(joins) and raised[start] < msg_id:
                    raised[start] = int(msg_id)
            after = int(rows[-1][0])
        marks, best = [], 0
        for i in range(len(joins)):
            best = max(best, raised[i])
            marks.append(best)
        return marks

    # -- sessions, unread, counters -------------------------------------------------------

    def _sessions(self, phase: Phase) -> None:
        sql = upsert_session(self._dialect())
        kinds = (B.SESSION_TYPE_SINGLE, B.SESSION_TYPE_GROUP)
        select = "userId, peerId, COALESCE(type, 0), COALESCE(status, 0), created, updated"
        for page in self._pages(phase, select):
            rows = [
                (u, p, t, 0 if s == 0 else 1, c, up) for _, u, p, t, s, c, up in page if t in kinds
            ]
            phase.add("unknown type", len(page) - len(rows))
            phase.add("written", len(rows))
            self._commit(phase, _executemany, sql, rows)

    def _unread(self, phase: Phase) -> None:
        """One-to-one unread counters from ``unread_<user>`` (nothing without Redis)."""
        if self.redis is None:
            phase.add("not available without redis")
            return
        for user_ids in self._user_pages(phase):
            hashes = self.redis.hgetall_many("unread", [f"unread_{u}" for u in user_ids])
            rows = [
                (uid, as_int(peer), as_int(count))
                for uid, counts in zip(user_ids, hashes, strict=True)
                for peer, count in counts.items()
                if as_int(count) > 0 and as_int(peer) > 0
            ]
            phase.add("read", len(user_ids))
            phase.add("written", len(rows))

            def write(txn: Txn, user_ids: list[int], rows: list[tuple[int, int, int]]) -> None:
                txn.execute(
                    f"DELETE FROM unread WHERE user_id IN ({placeholders(len(user_ids))})",
                    user_ids,
                )
                txn.executemany(
                    "INSERT INTO unread (user_id, peer_id, count) VALUES (?, ?, ?)", rows
                )

            self._commit(phase, write, user_ids, rows)

    def _user_pages(self, phase: Phase) -> Iterator[list[int]]:
        """Pages of user ids after ``phase``'s checkpoint: from our store, or in a dry run
        from the source."""
        while True:
            if self.options.dry_run:
                rows = self.source.query(
                    "SELECT id FROM IMUser WHERE id > %s ORDER BY id LIMIT %s",
                    (phase.last_id, _USER_PAGE),
                )
            else:
                with self._transaction() as txn:
                    rows = txn.execute(
                        "SELECT id FROM users WHERE id > ? ORDER BY id LIMIT ?",
                        (phase.last_id, _USER_PAGE),
                    ).fetchall()
            if not rows:
                return
            ids = [int(r[0]) for r in rows]
            phase.last_id = ids[-1]  # committed with the page by the caller
            yield ids

    def _counters(self, phase: Phase) -> None:
        """Compare the Redis message-id counters with the newest stored ids (report only)."""
        if self.redis is None:
            phase.add("no redis: counters are the newest stored ids")
            return
        if self.options.dry_run:
            return
        for conversations, key in (("relations", "msg_id_"), ("im_groups", "group_msg_id_")):
            after = 0
            while True:
                with self._transaction() as txn:
                    rows = txn.execute(
                        f"SELECT id, last_msg_id FROM {conversations} WHERE id > ? "
                        "ORDER BY id LIMIT ?",
                        (after, self._size),
                    ).fetchall()
                if not rows:
                    break
                values = self.redis.get_many("unread", [f"{key}{r[0]}" for r in rows])
                for (_, last), value in zip(rows, values, strict=True):
                    phase.add("read")
                    redis_last = as_int(value, -1)
                    if redis_last < 0:
                        phase.add(f"{conversations}: no redis counter")
                    elif redis_last > last:
                        phase.add(f"{conversations}: redis ahead (ids never stored)")
                    elif redis_last < last:
                        phase.add(f"{conversations}: redis behind (lost counters)")
                    else:
                        phase.add(f"{conversations}: equal")
                after = int(rows[-1][0])

    # -- the final check ------------------------------------------------------------------

    def _check(self) -> None:
        """Every user's unread total, and the latest message id of each conversation with
        unread messages, compared with what the reference would answer. A page of users
        at a time: the source's latest ids are looked up per shard for the whole page."""
        started = time.monotonic()
        checks = self.report.checks
        check = Phase("check")
        for user_ids in self._user_pages(check):
            source_single: list[dict[str, str]] = [{} for _ in user_ids]
            if self.redis is not None:
                source_single = self.redis.hgetall_many("unread", [f"unread_{u}" for u in user_ids])
            with self._transaction() as txn:
                pairs = message_store.unread_counts_of(txn, user_ids)
                groups = group_store.group_unread_counts_of(txn, user_ids)
                ours = {u: pairs[u] + groups[u] for u in user_ids}
                member_of = _memberships(txn, user_ids)
                relation_of = _pairs_present(
                    txn,
                    [_pair(u, r.peer_id) for u in user_ids for r in ours[u]
                     if r.session_type == B.SESSION_TYPE_SINGLE],
                )  # fmt: skip
            group_totals = self._source_group_unread(user_ids, member_of)
            conversations = {
                uid: [
                    ("im_groups", row.peer_id)
                    if row.session_type == B.SESSION_TYPE_GROUP
                    else ("relations", relation_of[_pair(uid, row.peer_id)])
                    for row in ours[uid]
                ]
                for uid in user_ids
            }
            latest = self._source_latest({c for convs in conversations.values() for c in convs})
            for uid, single in zip(user_ids, source_single, strict=True):
                checks["users"] += 1
                expected = sum(max(0, as_int(c)) for c in single.values()) + group_totals[uid]
                got = sum(row.count for row in ours[uid])
                if expected != got:
                    self.report.mismatches.append(
                        f"user {uid}: unread total {got}, source {expected}"
                    )
                for row, conv in zip(ours[uid], conversations[uid], strict=True):
                    if conv in self._renumbered_in:
                        checks["latest ids changed by renumbering"] += 1
                        continue
                    checks["latest ids"] += 1
                    if latest.get(conv, 0) != row.latest_msg_id:
                        self.report.mismatches.append(
                            f"user {uid}: latest id of {conv[0]} {conv[1]} is "
                            f"{row.latest_msg_id}, source {latest.get(conv, 0)}"
                        )
        self.report.check_seconds = time.monotonic() - started

    def _source_latest(self, conversations: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The reference's latest message id of each conversation: its newest visible row
        by (created, id), as its getLastMsg query orders them."""
        by_shard: dict[tuple[str, int], list[int]] = defaultdict(list)
        for kind, conv in conversations:
            by_shard[(kind, conv % SHARDS)].append(conv)
        found: dict[tuple[str, int], int] = {}
        for (kind, shard), ids in by_shard.items():
            table, column = (
                (f"IMGroupMessage_{shard}", "groupId")
                if kind == "im_groups"
                else (f"IMMessage_{shard}", "relateId")
            )
            for i in range(0, len(ids), 500):
                chunk = sorted(ids[i : i + 500])
                # One statement: each conversation's newest time, joined back on the
                # (conversation, status, created) index for the rows at that time.
                rows = self.source.query(
                    f"SELECT t.{column}, t.msgId FROM {table} t JOIN ("
                    f"SELECT {column} AS conv, MAX(created) AS newest FROM {table} "
                    f"WHERE {column} IN ({', '.join(['%s'] * len(chunk))}) AND status = 0 "
                    f"GROUP BY {column}) n ON t.{column} = n.conv AND t.status = 0 "
                    "AND t.created = n.newest ORDER BY t.id",
                    chunk,
                )
                for conv, msg_id in rows:  # by id: the last one wins, as "id DESC LIMIT 1"
                    found[(kind, int(conv))] = int(msg_id)
        return found

    def _source_group_unread(
        self, user_ids: list[int], member_of: dict[int, list[int]]
    ) -> dict[int, int]:
        totals = dict.fromkeys(user_ids, 0)
        if self.redis is None:
            return totals
        pairs = [(u, g) for u in user_ids for g in member_of.get(u, [])]
        groups = sorted({g for _, g in pairs})
        counts = dict(
            zip(
                groups,
                self.redis.hgetall_many("unread", [f"{g}_im_group_msg" for g in groups]),
                strict=True,
            )
        )
        marks = self.redis.hgetall_many("unread", [f"{u}_{g}_im_user_group" for u, g in pairs])
        for (uid, gid), mark in zip(pairs, marks, strict=True):
            totals[uid] += max(0, as_int(counts[gid].get("count")) - as_int(mark.get("count")))
        return totals


def _set_marks(txn: Txn, updates: list[tuple[int, int, int, int]]) -> None:
    """``(join_msg_id, read_msg_id, group_id, user_id)`` rows, a statement per group."""
    by_group: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for join_msg_id, read_msg_id, group_id, user_id in updates:
        by_group[group_id].append((user_id, join_msg_id, read_msg_id))
    marks = {"join_msg_id": "{new}", "read_msg_id": "{new}"}
    for group_id, rows in by_group.items():
        target.update_by_key(txn, "group_members", "user_id", marks, rows, ("group_id", group_id))


def _executemany(txn: Txn, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    txn.executemany(sql, rows)


def _memberships(txn: Txn, user_ids: list[int]) -> dict[int, list[int]]:
    rows = txn.execute(
        "SELECT m.user_id, m.group_id FROM group_members m JOIN im_groups g ON g.id = m.group_id "
        f"WHERE m.user_id IN ({placeholders(len(user_ids))}) AND m.status = 0 AND g.status = 0",
        user_ids,
    ).fetchall()
    found: dict[int, list[int]] = defaultdict(list)
    for uid, gid in rows:
        found[int(uid)].append(int(gid))
    return found


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def _pairs_present(txn: Txn, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """(small, big) -> relation id for the pairs that have one."""
    found: dict[tuple[int, int], int] = {}
    unique = sorted(set(pairs))
    for i in range(0, len(unique), 300):
        chunk = unique[i : i + 300]
        rows = txn.execute(
            "SELECT small_id, big_id, id FROM relations WHERE "
            + " OR ".join(["(small_id = ? AND big_id = ?)"] * len(chunk)),
            [v for pair in chunk for v in pair],
        ).fetchall()
        found.update(((int(s), int(b)), int(i)) for s, b, i in rows)
    return found


def upsert_relation(dialect: Dialect) -> str:
    """A relation row that keeps its message-id counter when it exists."""
    return target.upsert(
        dialect,
        "relations",
        ("id", "small_id", "big_id", "last_msg_id", "created", "updated"),
        ("id",),
        keep=("last_msg_id",),
    )


def upsert_group(dialect: Dialect, columns: tuple[str, ...]) -> str:
    """A group row that keeps its message-id counter when it exists."""
    return target.upsert(dialect, "im_groups", columns, ("id",), keep=("last_msg_id",))


def upsert_session(dialect: Dialect) -> str:
    """A session row; of several rows for one session the visible one wins, as the
    reference's lookups take the visible row (the last of several)."""
    columns = ("user_id", "peer_id", "type", "status", "created", "updated")
    key = ("user_id", "peer_id", "type")
    if dialect is Dialect.SQLITE:
        return (
            target.upsert(dialect, "sessions", columns, key)
            + " WHERE NOT (sessions.status = 0 AND excluded.status <> 0)"
        )
    keep = "status = 0 AND VALUES(status) <> 0"
    # MySQL assigns left to right, each seeing the ones before: status goes last.
    return (
        "INSERT INTO sessions (user_id, peer_id, type, status, created, updated) "
        "VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE "
        f"created = IF({keep}, created, VALUES(created)), "
        f"updated = IF({keep}, updated, VALUES(updated)), "
        f"status = IF({keep}, status, VALUES(status))"
    )


def run_import(db: Database, options: ImportOptions, fetcher: ClipFetcher | None = None) -> Report:
    """Open the source, run the import, close the source; the report."""
    source = SourceDatabase(options.source_url)
    redis = None
    try:
        if options.redis_urls:
            redis = RedisSource(options.redis_urls)
        return Importer(db, source, redis, options, fetcher).run()
    finally:
        source.close()
        if redis is not None:
            redis.close()
