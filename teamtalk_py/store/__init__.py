"""Relational store: SQLite (embedded default) or MariaDB/MySQL behind one API.

``database`` holds the engine (``Database``, ``open_database``, ``Txn``), ``schema`` the
tables and their migrations, ``accounts`` and ``messages`` the repository functions that
the services run through ``Database.read``/``Database.write`` and the admin CLI runs in
``Database.sync_transaction``.
"""

from teamtalk_py.store.database import (
    Database,
    Dialect,
    DuplicateError,
    SchemaTooNewError,
    StoreClosedError,
    StoreError,
    Txn,
    open_database,
)

__all__ = [
    "Database",
    "Dialect",
    "DuplicateError",
    "SchemaTooNewError",
    "StoreClosedError",
    "StoreError",
    "Txn",
    "open_database",
]
