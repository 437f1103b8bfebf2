"""``teamtalk-admin``: create departments, users and fixed groups (TeamTalk has no
self-registration, and clients create only temporary groups), end users' sessions, see
who is online, back the store up, import a C++ TeamTalk site (``import-teamtalk``,
see ``teamtalk_py/importer``), and make the tokens of the admin HTTP API
(``admin-token``, see ``teamtalk_py/admin_api``), which does the same things remotely.

It works on the same config and data dir as the server (or ``--db URL``) and uses the
store's repository functions on a blocking connection; it never runs inside the server.
``online`` and ``stats`` also ask a running server's ops listener (``--server``).
Every command prints its result on stdout and exits 0, or prints one line on stderr and
exits non-zero (1 for a request that cannot be done, such as a duplicate or unknown name
or an unreachable database, 2 for bad usage).

Nothing is created by mistake: a command that only reads never creates a database, and
no command creates a missing data directory (a typo in ``--data-dir``) except ``init``.
Passwords are read from a prompt or, for scripts, from stdin (``--password-stdin``); the
``--password`` option still works but warns, since other users see it in ``ps``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teamtalk_py.config import Config, ConfigError, load_config
from teamtalk_py.datadir import DataDirError, ensure_private_dir, private_file
from teamtalk_py.store import accounts
from teamtalk_py.store.database import Database, open_database
from teamtalk_py.store.engines.mysql import MySQLEngine
from teamtalk_py.store.engines.sqlite import SQLiteEngine
from teamtalk_py.store.txn import DuplicateError, StoreError, Txn

# Every command is a new process, so what only some commands use is imported in them: the
# media and content store (``user avatar``), the group and admin rows (with the protobuf
# modules), the store service. Importing them all up front doubled a command's start-up.
if TYPE_CHECKING:
    from teamtalk_py.store import groups as group_store

STATUS_NAMES = {0: "active", 3: "disabled"}
#: UserInfo.user_gender: 0 unknown, 1 male, 2 female.
SEXES = (0, 1, 2)
PROFILE_FIELDS = ("nick", "sex", "domain", "phone", "email", "avatar", "sign_info")


class AdminError(Exception):
    """A request that cannot be carried out (exit status 1)."""


class MissingInput(AdminError):
    """Something the command needs was not given (exit status 2, like bad usage)."""


def _now() -> int:
    return int(time.time())


def _department_id(txn: Txn, name: str | None) -> int:
    if not name:
        return 0
    row = accounts.get_department_by_name(txn, name)
    if row is None:
        raise AdminError(f"no department named {name!r}")
    return row.id


def _user(txn: Txn, name: str) -> accounts.UserRow:
    row = accounts.get_user_by_name(txn, name)
    if row is None:
        raise AdminError(f"no user named {name!r}")
    return row


def department_add(db: Database, args: argparse.Namespace) -> str:
    with db.sync_transaction() as txn:
        parent = _department_id(txn, args.parent)
        try:
            return str(accounts.add_department(txn, args.name, parent, args.priority, now=_now()))
        except DuplicateError:
            raise AdminError(f"a department named {args.name!r} already exists") from None


def department_list(db: Database, args: argparse.Namespace) -> str:
    with db.sync_transaction() as txn:
        rows = accounts.list_departments(txn)
    return "\n".join(f"{r.id}\t{r.name}\tparent={r.parent_id}\tpriority={r.priority}" for r in rows)


PASSWORD_ON_COMMAND_LINE = (
    "warning: a password on the command line is visible to other users (ps, shell "
    "history); use the prompt or --password-stdin"
)


def read_password(args: argparse.Namespace) -> str:
    """The new password: ``--password-stdin``'s first line, ``--password`` (with a
    warning), or a prompt typed twice; never empty."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password is not None:
        warn(PASSWORD_ON_COMMAND_LINE)
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise AdminError("the two passwords differ")
    else:
        raise MissingInput(
            "no password: type it at the prompt in a terminal, or give it on stdin with "
            "--password-stdin"
        )
    if not password:
        raise AdminError("the password must not be empty")
    return password


def warn(message: str) -> None:
    print(f"teamtalk-admin: {message}", file=sys.stderr)


def user_add(db: Database, args: argparse.Namespace) -> str:
    # The KDF is slow on purpose: run it before the transaction takes the write lock.
    record = accounts.password_record(read_password(args))
    with db.sync_transaction() as txn:
        department_id = _department_id(txn, args.department)
        try:
            user_id = accounts.add_user(
                txn,
                args.name,
                "",
                nick=args.nick or args.name,
                department_id=department_id,
                sex=args.sex,
                phone=args.phone,
                email=args.email,
                now=_now(),
                record=record,
            )
        except DuplicateError:
            raise AdminError(f"a user named {args.name!r} already exists") from None
        if args.admin:
            from teamtalk_py.store import admin as admin_store

            admin_store.set_admin(txn, user_id, True)
    return str(user_id)


def user_list(db: Database, args: argparse.Namespace) -> str:
    with db.sync_transaction() as txn:
        rows = accounts.list_users(txn)
    return "\n".join(
        f"{r.id}\t{r.name}\t{r.nick}\tdepartment={r.department_id}\t"
        f"{STATUS_NAMES.get(r.status, r.status)}"
        for r in rows
    )


def user_passwd(db: Database, args: argparse.Namespace) -> str:
    """A new password; the user's live sessions end on every node."""
    if args.new_password is not None:
        args.password = args.new_password
    record = accounts.password_record(read_password(args))
    with db.sync_transaction() as txn:
        accounts.set_password(txn, _user(txn, args.name).id, "", now=_now(), record=record)
    return "ok"


def user_set_status(status: int) -> Callable[[Database, argparse.Namespace], str]:
    """Disable (also ends the user's live sessions on every node) or enable."""

    def run(db: Database, args: argparse.Namespace) -> str:
        with db.sync_transaction() as txn:
            accounts.set_user_status(txn, _user(txn, args.name).id, status, now=_now())
        return "ok"

    return run


def user_kick(db: Database, args: argparse.Namespace) -> str:
    """End the user's live sessions on every node (they may log in again)."""
    with db.sync_transaction() as txn:
        accounts.end_sessions(txn, _user(txn, args.name).id, now=_now())
    return "ok"


def user_set(db: Database, args: argparse.Namespace) -> str:
    fields: dict[str, Any] = {
        f: getattr(args, f) for f in PROFILE_FIELDS if getattr(args, f) is not None
    }
    with db.sync_transaction() as txn:
        user = _user(txn, args.name)
        if args.department is not None:
            fields["department_id"] = _department_id(txn, args.department)
        if not fields and args.admin is None:
            raise AdminError("nothing to change: give at least one field option")
        if fields:
            accounts.update_user_profile(txn, user.id, now=_now(), **fields)
        if args.admin is not None:
            from teamtalk_py.store import admin as admin_store

            admin_store.set_admin(txn, user.id, args.admin == "yes")
    return "ok"


def user_avatar(db: Database, args: argparse.Namespace) -> str:
    """Store a local picture in the media content store and make it the user's avatar
    (prints its URL). Clients see it at their next profile refresh."""
    from teamtalk_py.content.blobs import commit_job
    from teamtalk_py.content.store import HEAD_SIZE, ContentStore
    from teamtalk_py.media import msfs
    from teamtalk_py.media.library import file_row, new_id
    from teamtalk_py.media.sniff import is_inline, sniff_content_type
    from teamtalk_py.store import media as media_rows
    from teamtalk_py.store.media import FileKind

    config = args.server_config
    data = Path(args.file).read_bytes()
    limit = config.media.max_picture_size
    if limit and len(data) > limit:
        raise AdminError(f"{args.file}: larger than media.max_picture_size ({limit} bytes)")
    content_type = sniff_content_type(data[:HEAD_SIZE])
    if not is_inline(content_type):
        raise AdminError(f"{args.file}: not a JPEG, PNG, GIF, BMP or WebP picture")
    files = ContentStore(config.media_dir)
    files.prepare()
    incoming = files.receive()
    try:
        incoming.write(data)
        incoming.sync()
        incoming.close()
        file_id = new_id()
        path = msfs.new_path(file_id, "." + content_type.split("/")[1])
        url = config.media_public_url() + path
        now = _now()
        with db.sync_transaction() as txn:
            user = _user(txn, args.name)
            row = file_row(
                incoming, FileKind.AVATAR, user.id, Path(args.file).name, file_id, path, now
            )

            def reference(txn: Any) -> None:
                media_rows.insert_file(txn, row)
                accounts.set_avatar(txn, user.id, url, now=now)

            commit_job(files, incoming, now, reference)(txn)
    finally:
        incoming.discard()
    return url


def admin_token_create(db: Database, args: argparse.Namespace) -> str:
    """A new admin token for the admin API; only its hash is stored, so it is shown
    once, alone on the last line (``TOKEN=$(teamtalk-admin admin-token create ci | tail -1)``)."""
    from teamtalk_py.store import admin as admin_store

    token = admin_store.TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.sync_transaction() as txn:
        try:
            admin_store.add_admin_token(txn, args.name, token, now=_now())
        except DuplicateError:
            raise AdminError(f"an admin token named {args.name!r} already exists") from None
        except ValueError as e:
            raise AdminError(str(e)) from None
    return (
        f"admin token {args.name!r} created; send it as 'Authorization: Bearer TOKEN' "
        f"(it is not shown again):\n{token}"
    )


def admin_token_list(db: Database, args: argparse.Namespace) -> str:
    from teamtalk_py.store import admin as admin_store

    with db.sync_transaction() as txn:
        rows = admin_store.list_admin_tokens(txn)

    def when(t: int) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "never"

    return "\n".join(
        f"{r.id}\t{r.name}\tcreated={when(r.created)}\tlast_used={when(r.last_used)}" for r in rows
    )


def admin_token_revoke(db: Database, args: argparse.Namespace) -> str:
    """Delete the token: the next call made with it is refused."""
    from teamtalk_py.store import admin as admin_store

    with db.sync_transaction() as txn:
        if not admin_store.revoke_admin_token(txn, args.name):
            raise AdminError(f"no admin token named {args.name!r}")
    return "ok"


def _live_group(txn: Txn, group_id: int) -> group_store.GroupRow:
    from teamtalk_py.store import groups as group_store

    group = group_store.get_group(txn, group_id)
    if group is None or group.status != group_store.GROUP_ACTIVE:
        raise AdminError(f"no group {group_id}")
    return group


def _names(txn: Txn, ids: Iterable[int]) -> dict[int, str]:
    return {row.id: row.name for row in accounts.get_users_by_ids(txn, ids)}


def group_add(db: Database, args: argparse.Namespace) -> str:
    """A fixed group (``--temporary``: a temporary one); the creator is a member."""
    from teamtalk_py.store import groups as group_store

    kind = group_store.GROUP_TMP if args.temporary else group_store.GROUP_NORMAL
    with db.sync_transaction() as txn:
        creator = _user(txn, args.creator).id
        members = [_user(txn, name).id for name in args.member]
        group, _ = group_store.create_group(
            txn, args.name, creator, members, kind, args.avatar, now=_now()
        )
    return str(group.id)


def group_list(db: Database, args: argparse.Namespace) -> str:
    from teamtalk_py.store import groups as group_store

    with db.sync_transaction() as txn:
        rows = group_store.list_groups(txn)
        names = _names(txn, {group.creator for group, _ in rows})
    kinds: dict[int, object] = {
        group_store.GROUP_NORMAL: "normal",
        group_store.GROUP_TMP: "temporary",
    }
    return "\n".join(
        f"{group.id}\t{group.name}\t{kinds.get(group.type, group.type)}\t"
        f"creator={names.get(group.creator, group.creator)}\tmembers={count}\t"
        f"version={group.version}"
        + ("\tdissolved" if group.status == group_store.GROUP_DISSOLVED else "")
        for group, count in rows
    )


def group_members(db: Database, args: argparse.Namespace) -> str:
    from teamtalk_py.store import groups as group_store

    with db.sync_transaction() as txn:
        group = _live_group(txn, args.group_id)
        members = group_store.list_members(txn, group.id)
        names = _names(txn, [m.user_id for m in members])
    return "\n".join(
        f"{m.user_id}\t{names.get(m.user_id, '?')}"
        + ("\tcreator" if m.user_id == group.creator else "")
        for m in members
    )


def group_member_change(action: str) -> Callable[[Database, argparse.Namespace], str]:
    """``group member add`` or ``group member remove``."""

    def run(db: Database, args: argparse.Namespace) -> str:
        from teamtalk_py.store import groups as group_store

        change_type = {"add": group_store.ADD, "remove": group_store.DEL}[action]
        with db.sync_transaction() as txn:
            _live_group(txn, args.group_id)
            ids = [_user(txn, name).id for name in args.users]
            try:
                change = group_store.change_members(
                    txn, args.group_id, 0, change_type, ids, now=_now()
                )
            except group_store.GroupError as e:
                raise AdminError(str(e)) from None
        if change.dissolved:
            return f"ok; group {args.group_id} has no members left and is dissolved"
        return "ok"

    return run


def import_teamtalk(db: Database, args: argparse.Namespace) -> str:
    """Import a TeamTalk deployment's MySQL (and Redis) data; prints the report."""
    from teamtalk_py.importer import ImportOptions, ImportRefused, SourceError, run_import

    options = ImportOptions(
        source_url=args.source,
        redis_urls=args.redis,
        dry_run=args.dry_run,
        batch_size=args.batch_size,
        fetch_voice=not args.no_voice,
        progress=False if args.no_progress else None,
    )
    try:
        report = run_import(db, options)
    except (ImportRefused, SourceError) as e:
        raise AdminError(str(e)) from None
    if not report.ok:
        print(report.render())
        raise AdminError(f"import done, but the check found {len(report.mismatches)} mismatches")
    return report.render()


def push_test(db: Database, args: argparse.Namespace) -> str:
    """Send one push to the user's stored device now, through the configured sender, and
    say what the service answered (a dead token is removed, as the server would)."""
    from teamtalk_py.push import store as push_store
    from teamtalk_py.push.jobs import PUSH_NORMAL, PushJob, platform_of
    from teamtalk_py.push.senders.base import Result
    from teamtalk_py.push.service import platform_senders, send_once, sender_names

    config = args.loaded_config
    with db.sync_transaction() as txn:
        user = _user(txn, args.user)
        tokens = accounts.get_device_tokens(txn, [user.id])
        badge = push_store.total_unread(txn, [user.id])[user.id]
    if not tokens:
        raise AdminError(f"{args.user} has no device token (log in on a phone first)")
    token = tokens[0]
    platform = platform_of(token.client_type)
    if platform is None:
        raise AdminError(f"{args.user}'s token is not an iOS or Android one")
    if not config.push.enabled:
        raise AdminError("no push sender is configured ([push] in the config file)")
    name = platform_senders(sender_names(config.push)).get(platform)
    if name is None:
        raise AdminError(f"no sender serves {platform} devices")
    job = PushJob(
        key=f"test.{user.id}.{time.time()}",
        sender=name,
        platform=platform,
        token=token.token,
        user_id=user.id,
        flash=args.text,
        data='{"test":1}',
        badge=badge,
        push_type=PUSH_NORMAL,
        collapse_id="tt-test",
        created=time.time(),
    )
    outcome = send_once(config.push, job)
    if outcome.result is Result.DEAD_TOKEN:
        with db.sync_transaction() as txn:
            push_store.remove_token(txn, user.id, token.token)
        raise AdminError(f"{name}: {outcome.detail}: the token is dead; removed")
    if outcome.result is not Result.SENT:
        raise AdminError(f"{name}: {outcome.detail or outcome.result.value}")
    return f"sent to {args.user}'s {platform} device via {name} (badge {badge})"


#: ``example NAME`` -> the file shipped in ``teamtalk_py/deploy``.
EXAMPLES = {
    "config": "teamtalk.toml",
    "unit": "teamtalk.service",
    "sysusers": "teamtalk.sysusers",
}


def example(db: Database | None, args: argparse.Namespace) -> str:
    """An example config, the systemd unit or the sysusers.d entry, as shipped."""
    from importlib.resources import files

    return files("teamtalk_py.deploy").joinpath(EXAMPLES[args.name]).read_text().rstrip("\n")


def init(db: Database, args: argparse.Namespace) -> str:
    """Create the data dir (0700) and the database, or bring an existing one up to date."""
    return f"ok: {db.describe()} at schema version {db.migrate()}"


def backup(db: Database, args: argparse.Namespace) -> str:
    """A consistent copy of a SQLite store taken while the server runs (SQLite's online
    backup), written 0600; a MariaDB/MySQL store is backed up with mysqldump."""
    engine = db.engine
    if isinstance(engine, MySQLEngine):
        p = engine.params
        raise AdminError(
            "back up a MariaDB/MySQL store with mysqldump: mysqldump --single-transaction "
            f"--host {p.host} --port {p.port} --user {p.user} -p {p.database} > {args.dest}"
        )
    assert isinstance(engine, SQLiteEngine)
    dest = Path(args.dest)
    if dest.exists():
        raise AdminError(f"{dest} exists; give a new file name")
    private_file(dest)
    source = sqlite3.connect(f"file:{engine.path}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(dest)
        try:
            source.backup(target)
        finally:
            target.close()
    except sqlite3.Error:
        dest.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    return f"backed up {engine.path} to {dest} ({dest.stat().st_size} bytes)"


#: What ``stats`` counts: label -> SQL (constant table names).
STATS = (
    ("users", "SELECT COUNT(*) FROM users WHERE status = 0"),
    ("disabled users", "SELECT COUNT(*) FROM users WHERE status <> 0"),
    ("departments", "SELECT COUNT(*) FROM departments"),
    ("groups", "SELECT COUNT(*) FROM im_groups WHERE status = {active}"),
    ("one-to-one messages", "SELECT COUNT(*) FROM messages"),
    ("group messages", "SELECT COUNT(*) FROM group_messages"),
    ("offline files", "SELECT COUNT(*) FROM offline_files"),
)


def _count(txn: Txn, sql: str) -> int:
    row = txn.execute(sql).fetchone()
    assert row is not None, "a COUNT(*) has a row"
    return int(row[0])


def stats(db: Database, args: argparse.Namespace) -> str:
    """Counts from the store, and who is online now if the server answers."""
    with db.sync_transaction() as txn:
        from teamtalk_py.store import groups as group_store

        active = group_store.GROUP_ACTIVE
        lines = [f"{label}\t{_count(txn, sql.format(active=active))}" for label, sql in STATS]
    try:
        online = fetch_online(server_url(args))
    except AdminError as e:
        lines.append(f"online\tunknown ({e})")
    else:
        connections = online_rows(online, {})
        lines.append(f"online users\t{len({row[1] for row in connections})}")
        lines.append(f"online connections\t{len(connections)}")
    return "\n".join(lines)


def fetch_online(server: str) -> dict[str, Any]:
    """``GET /online`` of a running server's ops listener."""
    import urllib.request

    url = server.rstrip("/") + "/online"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except OSError as e:
        reason = getattr(e, "reason", e)
        raise AdminError(f"no server answers at {server} (--server URL): {reason}") from None
    except ValueError as e:
        raise AdminError(f"{url} did not answer JSON: {e}") from None
    return answer


def online_rows(answer: dict[str, Any], names: dict[int, str]) -> list[tuple[str, ...]]:
    """(node, user id, name, client type, since, peer) of every connection the server
    knows: its own msg connections, and on a route node those of every linked node."""
    rows: list[tuple[str, ...]] = []
    for conn in answer.get("connections", []):
        since = datetime.fromtimestamp(conn["since"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(
            (answer.get("node", "?"), str(conn["user_id"]), conn["name"],
             conn["client_type"], since, conn["peer"])
        )  # fmt: skip
    for link in answer.get("route", []):
        if link["link"] == "in-process":
            continue  # the co-hosted msg service, listed above
        for conn in link["connections"]:
            user_id = conn["user_id"]
            rows.append(
                (f"linked from {link['link']}", str(user_id), names.get(user_id, "?"),
                 _client_type_name(conn["client_type"]), "-", "-")
            )  # fmt: skip
    return rows


def _client_type_name(client_type: int) -> str:
    from teamtalk_py.msg.service import client_type_name

    return client_type_name(client_type)


def online(db: Database | None, args: argparse.Namespace) -> str:
    """Who is connected, on which node (the server at ``--server``)."""
    answer = fetch_online(server_url(args))
    names: dict[int, str] = {}
    ids = [c["user_id"] for link in answer.get("route", []) for c in link["connections"]]
    if ids and db is not None:
        with db.sync_transaction() as txn:
            names = _names(txn, ids)
    return "\n".join("\t".join(row) for row in online_rows(answer, names))


def server_url(args: argparse.Namespace) -> str:
    """``--server``, else the ops listener of the server the config describes (worked out
    only by the commands that ask a server: it costs a tenth of a second of imports)."""
    return str(args.server or default_server(args.server_config))


def default_server(config: Config) -> str:
    """The ops listener of the server this config describes (``ops.listen``)."""
    listen = config.with_default_listeners().ops.listen
    parts = dict(p.split("=", 1) for p in listen.split(":")[2:] if "=" in p)
    port = listen.split(":")[1]
    host = parts.get("interface", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teamtalk-admin", description="Manage teamtalk_py departments, users and groups."
    )
    parser.add_argument("--config", help="server config file (TOML)")
    parser.add_argument("--data-dir", help="server data dir (embedded SQLite) [./var]")
    parser.add_argument("--db", help="database URL, e.g. mysql://root@127.0.0.1:3306/teamtalk")
    parser.add_argument("--media-dir", help="media content store [DATA_DIR/media]")
    parser.add_argument("--media-url", help="media public URL [http://ADVERTISE:8700/]")
    parser.add_argument(
        "--server",
        help="a running server's ops listener, for online and stats "
        "[from the config's ops.listen: http://127.0.0.1:8090]",
    )
    topics = parser.add_subparsers(dest="topic", required=True)

    p = topics.add_parser(
        "init", help="create the data dir and the database (the only command that creates "
        "a missing data dir)",
    )  # fmt: skip
    p.set_defaults(run=init)
    p = topics.add_parser(
        "example", help="print a shipped deployment file: config, unit (systemd), sysusers"
    )
    p.add_argument("name", choices=sorted(EXAMPLES))
    p.set_defaults(run=example, store=False)
    p = topics.add_parser("online", help="who is connected, on which node (asks --server)")
    p.set_defaults(run=online, writes=False, database=False)
    p = topics.add_parser("stats", help="counts from the store, and online now")
    p.set_defaults(run=stats, writes=False)
    p = topics.add_parser(
        "backup", help="copy a SQLite store while the server runs (MariaDB: use mysqldump)"
    )
    p.add_argument("dest", help="the new file to write")
    p.set_defaults(run=backup, writes=False, migrate=False)

    department = topics.add_parser("department", help="departments").add_subparsers(
        dest="action", required=True
    )
    p = department.add_parser("add", help="add a department; prints its id")
    p.add_argument("name")
    p.add_argument("--parent", help="parent department name")
    p.add_argument("--priority", type=int, default=0)
    p.set_defaults(run=department_add)
    department.add_parser("list", help="list departments").set_defaults(
        run=department_list, writes=False
    )

    user = topics.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    p = user.add_parser("add", help="add a user; prints its id")
    p.add_argument("--name", required=True, help="login name (also the real name)")
    add_password_options(p)
    p.add_argument("--nick")
    p.add_argument("--department", help="department name")
    p.add_argument("--sex", type=int, default=0, choices=SEXES)
    p.add_argument("--phone", default="")
    p.add_argument("--email", default="")
    p.add_argument("--admin", action="store_true", help="may sign in to the admin web console")
    p.set_defaults(run=user_add)
    user.add_parser("list", help="list users").set_defaults(run=user_list, writes=False)
    p = user.add_parser("passwd", help="set a user's password (ends their sessions)")
    p.add_argument("name")
    p.add_argument(
        "new_password", nargs="?", metavar="PASSWORD", help="(visible in ps: prefer the prompt)"
    )
    add_password_options(p)
    p.set_defaults(run=user_passwd)
    p = user.add_parser(
        "disable",
        aliases=["delete"],
        help="stop a user from logging in and end their sessions (TeamTalk's delete: "
        "the user left; history stays)",
    )
    p.add_argument("name")
    p.set_defaults(run=user_set_status(accounts.USER_STATUS_LEFT))
    p = user.add_parser("kick", help="end a user's sessions on every node now")
    p.add_argument("name")
    p.set_defaults(run=user_kick)
    p = user.add_parser(
        "avatar", help="set a user's avatar from a local picture file; prints its URL"
    )
    p.add_argument("name")
    p.add_argument("file", help="JPEG, PNG, GIF, BMP or WebP file")
    p.set_defaults(run=user_avatar)
    p = user.add_parser("enable", help="let a disabled user log in again")
    p.add_argument("name")
    p.set_defaults(run=user_set_status(accounts.USER_STATUS_NORMAL))
    p = user.add_parser("set", help="edit profile fields")
    p.add_argument("name")
    for name in PROFILE_FIELDS:
        if name == "sex":
            p.add_argument("--sex", type=int, choices=SEXES)
        else:
            p.add_argument(f"--{name.replace('_', '-')}", dest=name)
    p.add_argument("--department", help="department name")
    p.add_argument(
        "--admin", choices=("yes", "no"), help="whether the user may sign in to the admin console"
    )
    p.set_defaults(run=user_set)

    token = topics.add_parser(
        "admin-token", help="tokens for the admin API (/admin/api/v1/)"
    ).add_subparsers(dest="action", required=True)
    p = token.add_parser("create", help="create a token; prints it alone on the last line")
    p.add_argument("name", help="what the token is for (named in the audit log)")
    p.set_defaults(run=admin_token_create)
    token.add_parser("list", help="list tokens (never the tokens themselves)").set_defaults(
        run=admin_token_list, writes=False
    )
    p = token.add_parser("revoke", help="revoke a token")
    p.add_argument("name")
    p.set_defaults(run=admin_token_revoke)

    group = topics.add_parser("group", help="groups").add_subparsers(dest="action", required=True)
    p = group.add_parser("add", help="add a fixed group; prints its id")
    p.add_argument("--name", required=True)
    p.add_argument("--creator", required=True, help="user name of the creator (a member)")
    p.add_argument("--member", action="append", default=[], help="user name (repeatable)")
    p.add_argument("--avatar", default="", help="avatar URL")
    p.add_argument("--temporary", action="store_true", help="a temporary group instead")
    p.set_defaults(run=group_add)
    group.add_parser("list", help="list groups").set_defaults(run=group_list, writes=False)
    p = group.add_parser("members", help="list a group's members")
    p.add_argument("group_id", type=int)
    p.set_defaults(run=group_members, writes=False)
    member = group.add_parser("member", help="change a group's members").add_subparsers(
        dest="change", required=True
    )
    for action, what in (("add", "add users to a group"), ("remove", "remove users from a group")):
        p = member.add_parser(action, help=what)
        p.add_argument("group_id", type=int)
        p.add_argument("users", nargs="+", metavar="USER", help="user name")
        p.set_defaults(run=group_member_change(action))

    p = topics.add_parser(
        "import-teamtalk",
        help="import a TeamTalk deployment (MySQL + Redis) into this store",
        description="Copy a C++ TeamTalk site's users, departments, groups, messages, voice, "
        "sessions, unread counts and device tokens into this store. Stop the C++ msg_servers "
        "first. Interrupted imports resume; running it again changes nothing.",
    )
    p.add_argument(
        "--from", dest="source", required=True, metavar="URL",
        help="the reference's database, mysql://user:pw@host:3306/teamtalk",
    )  # fmt: skip
    p.add_argument(
        "--redis", action="append", default=[], metavar="[POOL=]URL",
        help="the reference's Redis, redis://host:6379/N[?prefix=P]; repeat as "
        "POOL=URL when its pools (unread, group_set, token, group_member) live in different "
        "databases. Without it unread counts start at zero and no device token is imported",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="read and count, write nothing")
    p.add_argument("--batch-size", type=int, default=2000, help="rows per transaction [2000]")
    p.add_argument(
        "--no-voice", action="store_true",
        help="do not fetch voice clips from msfs (voice messages keep the clip id)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=import_teamtalk)

    push = topics.add_parser("push", help="offline push").add_subparsers(
        dest="action", required=True
    )
    p = push.add_parser("test", help="send a test push to a user's device now")
    p.add_argument("user", help="user name")
    p.add_argument("--text", default="teamtalk push test", help="the alert text")
    p.set_defaults(run=push_test)
    return parser


def add_password_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    parser.add_argument("--password", help="(visible in ps and shell history: prefer the prompt)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        overrides = {
            "server.data_dir": args.data_dir,
            "store.db": args.db,
            "media.store_dir": args.media_dir,
            "media.public_url": args.media_url,
        }
        config = config.with_overrides(overrides)
    except ConfigError as e:
        print(f"teamtalk-admin: {e}", file=sys.stderr)
        return 2
    args.server_config = args.loaded_config = config
    try:
        output = run(config, args)
    except AdminError as e:
        print(f"teamtalk-admin: {e}", file=sys.stderr)
        return 2 if isinstance(e, MissingInput) else 1
    except (ValueError, TypeError, OSError) as e:
        print(f"teamtalk-admin: {e}", file=sys.stderr)
        return 1
    if output:
        print(output)
    return 0


def run(config: Config, args: argparse.Namespace) -> str:
    """Open the store as the command needs it and run the command."""
    if not getattr(args, "store", True):
        return str(args.run(None, args))
    writes = getattr(args, "writes", True)
    uses_sqlite = not config.store.db or config.store.db.startswith("sqlite:")
    data_dir = Path(config.server.data_dir)
    if uses_sqlite:
        try:
            ensure_private_dir(data_dir, create=args.run is init)
        except DataDirError as e:
            hint = "" if data_dir.exists() else " (a typo? teamtalk-admin init creates it)"
            raise AdminError(f"{e}{hint}") from None
    db: Database | None = None
    try:
        try:
            db = open_database(
                config.store.db or None, config.server.data_dir, reactor=None, create=writes
            )
            if getattr(args, "migrate", True):
                db.migrate()
        except Exception as e:
            if not getattr(args, "database", True) and is_database_error(e):
                db = None  # "online" can do without user names
            elif isinstance(e, StoreError):
                raise AdminError(str(e)) from None
            else:
                raise
        return str(args.run(db, args))
    except AdminError:
        raise
    except Exception as e:
        if not is_database_error(e):
            raise
        where = db.describe() if db is not None else (config.store.db or str(data_dir))
        from teamtalk_py.store.service import error_text

        raise AdminError(f"cannot use the database {where}: {error_text(e)}") from None


def is_database_error(error: BaseException) -> bool:
    """A driver's error (unreachable server, refused login, locked or broken file)."""
    import pymysql

    return isinstance(error, sqlite3.Error | pymysql.MySQLError | StoreError)


if __name__ == "__main__":
    sys.exit(main())
