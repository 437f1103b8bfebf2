"""The database products the store runs on, one module each (Synapse's ``storage/engines``).

``base.Engine`` is what the pool (``store/database.py``) and the migration runner
(``store/migrate.py``) drive; ``sqlite.SQLiteEngine`` is the embedded default,
``mysql.MySQLEngine`` the database a cluster shares.
"""

from teamtalk_py.store.engines.base import Engine
from teamtalk_py.store.engines.mysql import MySQLEngine, MySQLParams, parse_mysql_url
from teamtalk_py.store.engines.sqlite import DEFAULT_SQLITE_NAME, SQLiteEngine, sqlite_path

__all__ = [
    "DEFAULT_SQLITE_NAME",
    "Engine",
    "MySQLEngine",
    "MySQLParams",
    "SQLiteEngine",
    "parse_mysql_url",
    "sqlite_path",
]
