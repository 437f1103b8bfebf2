"""MariaDB/MySQL through PyMySQL: the database a cluster's nodes share.

Writers of several nodes sharing one database run side by side: there is no lock between
them beyond InnoDB's row locks. Batches take those in one order (one-to-one jobs first:
relations, then unread and session rows, each sorted by key; then group messages by group
id, see ``txn.lock_order``), so they rarely deadlock; when InnoDB still picks a
batch as a deadlock victim (1213) or a lock wait times out (1205), the whole batch is run
again, intact (``Database._run_batch``). The first start against an empty server creates
the database.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.logger import Logger

from teamtalk_py.store.engines.base import Engine
from teamtalk_py.store.txn import Dialect, StoreError

log = Logger(namespace="teamtalk.store")

_DB_NAME = re.compile(r"^[A-Za-z0-9_$]{1,64}$")
# Connection lost or unusable: reconnect and run the batch again.
_MYSQL_LOST = frozenset({2003, 2006, 2013, 2055})
# Deadlock / lock wait timeout: InnoDB may have rolled back the whole transaction.
_MYSQL_TRANSIENT = frozenset({1205, 1213})
_MYSQL_DUPLICATE = 1062
_MYSQL_UNKNOWN_DATABASE = 1049


@functools.lru_cache(maxsize=1024)
def _to_pyformat(sql: str) -> str:
    # PyMySQL interpolates with ``%``, so a literal ``%`` (LIKE 'a%', modulo) is doubled.
    return sql.replace("%", "%%").replace("?", "%s")


@dataclass(frozen=True)
class MySQLParams:
    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None

    def describe(self) -> str:
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"mysql://{self.user}@{where}/{self.database}"


def parse_mysql_url(url: str) -> MySQLParams:
    """``mysql://user:pw@host:port/dbname`` (also ``mariadb://``, ``mysql+pymysql://``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
        raise StoreError(f"not a MySQL URL: {parts.scheme}://...")
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise StoreError("MySQL URL needs a database name: mysql://user:pw@host:port/dbname")
    query = parse_qs(parts.query)
    socket = query.get("unix_socket", [None])[0]
    return MySQLParams(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
        unix_socket=socket,
    )


class MySQLEngine(Engine):
    dialect = Dialect.MYSQL
    release_savepoints = False

    def __init__(
        self,
        params: MySQLParams,
        timeout: float = 120.0,
        *,
        create: bool = True,
    ) -> None:
        import pymysql  # noqa: F401  (fail at open time, not at first query)

        if not _DB_NAME.match(params.database):
            raise StoreError(f"invalid MySQL database name {params.database!r}")
        self.params = params
        #: Create the database on first connect (the server); False: refuse (readers).
        self.create = create
        self.timeout = timeout

    def _connect(self, database: str | None) -> Any:
        import pymysql
        from pymysql.constants import CLIENT

        p = self.params
        return pymysql.connect(
            host=p.host,
            port=p.port,
            user=p.user,
            password=p.password,
            database=database,
            unix_socket=p.unix_socket,
            charset="utf8mb4",
            autocommit=False,
            # FOUND_ROWS: rowcount = rows matched, as in SQLite, not rows whose value
            # changed. MULTI_STATEMENTS: a few statements ride in one round trip (values
            # are always escaped parameters, never spliced SQL).
            client_flag=CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS,
            connect_timeout=10,
            read_timeout=self.timeout,
            write_timeout=self.timeout,
            init_command=(
                "SET SESSION sql_mode = "
                "'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'"
            ),
        )

    def connect(self, role: str) -> Any:
        import pymysql

        try:
            return self._connect(self.params.database)
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != _MYSQL_UNKNOWN_DATABASE:
                raise
            if not self.create:
                raise StoreError(f"no database {self.describe()}") from None
        # First start against this server: create the database (name validated above;
        # identifiers cannot be parameters).
        conn = self._connect(None)
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{self.params.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
            conn.commit()
        finally:
            conn.close()
        log.info("created MySQL database {database}", database=self.params.database)
        return self._connect(self.params.database)

    def convert(self, sql: str) -> str:
        return _to_pyformat(sql)

    def begin_read(self, cursor: Any) -> None:
        cursor.execute("START TRANSACTION READ ONLY")

    # No lock between writers of several nodes: InnoDB's row locks order them, and a
    # deadlock is retried with the batch intact (see the module docstring).

    def begin_write(self, cursor: Any) -> None:
        cursor.execute("START TRANSACTION")

    def _code(self, exc: BaseException) -> int | None:
        import pymysql

        if isinstance(exc, pymysql.err.MySQLError) and exc.args:
            code = exc.args[0]
            return code if isinstance(code, int) else None
        return None

    def is_duplicate(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.IntegrityError) and self._code(exc) == _MYSQL_DUPLICATE

    def is_connection_lost(self, exc: BaseException) -> bool:
        import pymysql

        if isinstance(exc, pymysql.err.InterfaceError):
            return True  # "(0, '')": the connection object was already closed
        return isinstance(exc, pymysql.err.OperationalError) and self._code(exc) in _MYSQL_LOST

    def is_transient(self, exc: BaseException) -> bool:
        import pymysql

        return isinstance(exc, pymysql.err.OperationalError) and self._code(exc) in _MYSQL_TRANSIENT

    def _lock_name(self) -> str:
        return f"teamtalk_py.migrate.{self.params.database}"[:64]

    def lock_migrations(self, cursor: Any) -> None:
        # Several nodes may start at once against one database: one migrates, the others
        # wait and then find nothing left to do.
        cursor.execute("SELECT GET_LOCK(%s, 120)", (self._lock_name(),))
        (got,) = cursor.fetchone()
        if got != 1:
            raise StoreError("timed out waiting for the migration lock")

    def unlock_migrations(self, cursor: Any) -> None:
        cursor.execute("SELECT RELEASE_LOCK(%s)", (self._lock_name(),))
        cursor.fetchall()

    def describe(self) -> str:
        return self.params.describe()
