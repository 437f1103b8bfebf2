"""Reading a TeamTalk deployment: its MySQL database and its Redis pools.

The MySQL side is read in keyset pages (``WHERE id > last ORDER BY id LIMIT n``): a page
is all that is ever in memory, and the last id of a page is the checkpoint an interrupted
import resumes from. Message content is read as ``CAST(content AS BINARY)``, the bytes
exactly as stored (the clients' ciphertext), never decoded and re-encoded.

The Redis side follows the reference's pools (storage.md §5): ``unread`` (message-id
counters, unread hashes, group read marks), ``group_set`` (group push mutes), ``token``
(device tokens) and ``group_member`` (the authoritative group membership). The shipped
configs put them in different database numbers or all in one; ``--redis`` takes a URL per
pool or one for all. Keys are read with pipelined commands for a page of users or groups
at a time, never with ``KEYS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from teamtalk_py.store.engines.mysql import parse_mysql_url

#: The reference's Redis pools, in the order its setup config numbers them.
POOLS = ("unread", "group_set", "token", "group_member")
SHARDS = 8


class SourceError(Exception):
    """The source cannot be read (bad URL, unreachable, not a TeamTalk schema)."""


class SourceDatabase:
    """A read-only connection to the reference's MySQL database."""

    def __init__(self, url: str) -> None:
        import pymysql

        try:
            params = parse_mysql_url(url)
        except Exception as exc:
            raise SourceError(str(exc)) from exc
        self.describe = params.describe()
        try:
            self._conn = pymysql.connect(
                host=params.host,
                port=params.port,
                user=params.user,
                password=params.password,
                database=params.database,
                unix_socket=params.unix_socket,
                charset="utf8mb4",
                autocommit=True,
                connect_timeout=10,
                read_timeout=600,
            )
        except pymysql.err.MySQLError as exc:
            raise SourceError(f"cannot connect to {self.describe}: {exc}") from exc
        missing = [t for t in required_tables() if not self.has_table(t)]
        if missing:
            self.close()
            raise SourceError(
                f"{self.describe} is not a TeamTalk database: no table {', '.join(missing)}"
            )

    def close(self) -> None:
        self._conn.close()

    def has_table(self, table: str) -> bool:
        return bool(
            self.query(
                "SELECT 1 FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            )
        )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql``; integer DECIMALs (what ``COALESCE`` of small ints gives) as int."""
        with self._conn.cursor() as cursor:
            cursor.execute(sql, tuple(params))
            return [
                tuple(int(v) if isinstance(v, Decimal) else v for v in row)
                for row in cursor.fetchall()
            ]

    def count(self, table: str, after_id: int = 0) -> int:
        """Rows of ``table`` with ``id > after_id`` (the progress bar's total)."""
        return int(self.query(f"SELECT COUNT(*) FROM {table} WHERE id > %s", (after_id,))[0][0])

    def pages(
        self, table: str, columns: str, after_id: int, size: int, where: str = ""
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Pages of ``(id, *columns)`` rows with ``id > after_id``, in id order.

        Each page is fetched when the previous one has been consumed, so the caller's
        checkpoint (the last id of the page it finished) always names a committed page.
        """
        condition = f" AND ({where})" if where else ""
        last = after_id
        while True:
            rows = self.query(
                f"SELECT id, {columns} FROM {table} WHERE id > %s{condition} ORDER BY id LIMIT %s",
                (last, size),
            )
            if not rows:
                return
            yield rows
            last = int(rows[-1][0])


def required_tables() -> list[str]:
    tables = ["IMDepart", "IMUser", "IMRelationShip", "IMGroup", "IMGroupMember"]
    tables += ["IMRecentSession", "IMAudio"]
    tables += [f"IMMessage_{n}" for n in range(SHARDS)]
    tables += [f"IMGroupMessage_{n}" for n in range(SHARDS)]
    return tables


@dataclass(frozen=True)
class RedisPool:
    client: Any
    prefix: str
    where: str

    def key(self, name: str) -> str:
        return self.prefix + name


class RedisSource:
    """The reference's Redis pools, each a (client, key prefix).

    ``urls`` are ``[POOL=]redis://host:port/db[?prefix=p]``; a URL without a pool name
    serves every pool not named otherwise. ``prefix`` is not the reference's (it had
    none): it lets tests and staged copies keep a TeamTalk key space beside other keys.
    """

    def __init__(self, urls: Iterable[str]) -> None:
        named: dict[str, str] = {}
        default: str | None = None
        for spec in urls:
            pool_name, sep, url = spec.partition("=")
            if sep and pool_name in POOLS:
                named[pool_name] = url
            elif sep and not spec.startswith("redis://"):
                raise SourceError(f"unknown Redis pool {pool_name!r} (pools: {', '.join(POOLS)})")
            else:
                if default is not None:
                    raise SourceError("more than one --redis URL without a pool name")
                default = spec
        self.pools: dict[str, RedisPool] = {}
        for name in POOLS:
            pool_url = named.get(name, default)
            if pool_url is None:
                raise SourceError(f"no Redis URL for the {name!r} pool")
            self.pools[name] = _open_pool(pool_url)
        for pool in self.pools.values():
            try:
                pool.client.ping()
            except Exception as exc:
                raise SourceError(f"cannot reach Redis at {pool.where}: {exc}") from exc

    def describe(self) -> str:
        return ", ".join(f"{name}={pool.where}" for name, pool in self.pools.items())

    def close(self) -> None:
        for pool in self.pools.values():
            pool.client.close()

    def get_many(self, pool: str, names: Sequence[str]) -> list[str | None]:
        """``MGET`` of the keys ``names`` in ``pool``."""
        if not names:
            return []
        p = self.pools[pool]
        return list(p.client.mget([p.key(n) for n in names]))

    def hgetall_many(self, pool: str, names: Sequence[str]) -> list[dict[str, str]]:
        """``HGETALL`` of each key, pipelined (an empty dict for a missing key)."""
        if not names:
            return []
        p = self.pools[pool]
        pipe = p.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(p.key(name))
        return list(pipe.execute())


def _open_pool(url: str) -> RedisPool:
    import redis

    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise SourceError(f"not a Redis URL: {url!r}")
    query = parse_qs(parts.query)
    prefix = query.pop("prefix", [""])[0]
    plain = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    try:
        client = redis.Redis.from_url(
            plain, decode_responses=True, socket_timeout=60, socket_connect_timeout=10
        )
    except ValueError as exc:
        raise SourceError(f"bad Redis URL {url!r}: {exc}") from exc
    where = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}{parts.path or '/0'}"
    return RedisPool(client, prefix, where + (f" (keys {prefix}*)" if prefix else ""))


def as_int(value: Any, default: int = 0) -> int:
    """A decimal Redis value as an int (``default`` when missing or not a number)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
