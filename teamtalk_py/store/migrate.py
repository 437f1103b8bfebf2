"""The migration runner: brings a database to ``schema.LATEST_VERSION`` at start-up.

The migrations themselves (the DDL, per dialect) live in ``schema.py``; this module only
applies the missing ones, in order, each recorded in ``schema_version``. The pool runs it
on its writer connection before any job (``Database.start``), the admin CLI on a private
connection (``Database.migrate``).
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

from twisted.logger import Logger

from teamtalk_py.store import schema
from teamtalk_py.store.engines.base import Engine, rollback_quietly
from teamtalk_py.store.txn import Dialect, SchemaTooNewError, Txn

log = Logger(namespace="teamtalk.store")


def migrate(engine: Engine, conn: Any) -> int:
    """Apply every missing migration on ``conn``; return the resulting schema version."""
    dialect = engine.dialect
    cursor = conn.cursor()
    txn = Txn(cursor, engine)
    engine.lock_migrations(cursor)
    try:
        if dialect is Dialect.SQLITE:
            # Everything in one transaction: SQLite DDL is transactional, and the write
            # lock keeps a second process from migrating at the same time.
            engine.begin_write(cursor)
        try:
            txn.execute(schema.VERSION_TABLE[dialect])
            current = schema.current_version(txn)
            if current > schema.LATEST_VERSION:
                raise SchemaTooNewError(
                    f"database schema version {current} is newer than this code "
                    f"({schema.LATEST_VERSION})"
                )
            for migration in schema.MIGRATIONS:
                if migration.version <= current:
                    continue
                for statement in migration.steps(dialect):
                    if callable(statement):
                        statement(txn)  # a step that looks before it alters (re-runnable)
                    else:
                        txn.execute(statement)
                # MySQL commits each DDL statement implicitly, so the steps use IF NOT
                # EXISTS and a half-applied migration is simply re-run.
                txn.execute(
                    "INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?)",
                    (migration.version, migration.description, int(time.time())),
                )
                if dialect is Dialect.MYSQL:
                    conn.commit()
                log.info(
                    "schema migrated to version {version}: {description}",
                    version=migration.version,
                    description=migration.description,
                )
                current = migration.version
            cursor.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise
        return current
    finally:
        with suppress(Exception):
            engine.unlock_migrations(cursor)
        with suppress(Exception):
            cursor.close()
