"""Relational store: SQLite (embedded default) or MariaDB/MySQL behind one API.

Laid out like Synapse's ``storage/``, each module depending only on those listed before it:

* ``txn`` — :class:`Txn`, the SQL helpers and the store's errors: all a repository
  function sees of the database;
* ``engines/`` — the database products (``sqlite``, ``mysql``): connecting, beginning,
  committing, classifying driver errors;
* ``schema`` — the tables and their migrations, ``migrate`` — the runner applying them;
* ``database`` — :class:`Database`, the reader pool and group-committing writer;
* the repositories, plain ``fn(txn, ...)`` functions that the services run through
  ``Database.read``/``Database.write`` and the admin CLI in
  ``Database.sync_transaction``: ``accounts``, ``messages`` (one-to-one), ``groups``,
  ``sessions`` (recent sessions of both kinds), ``files``;
* ``service`` — :class:`StoreService`, the service that opens and closes the database.
"""

from teamtalk_py.store.database import Database, open_database
from teamtalk_py.store.txn import (
    Dialect,
    DuplicateError,
    SchemaTooNewError,
    StoreClosedError,
    StoreError,
    Txn,
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
