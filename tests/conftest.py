"""Transitional pytest fixture: ``database``, for test modules not yet written as trial
TestCases (the others use ``tests.store_support``). Delete this file once none is left.

``database`` is a started ``Database``, once on SQLite in a temporary directory and once
on this process's MariaDB test database (``tests.store_support.mysql_url``: skipped
locally without a server, failing when ``CI`` is set), emptied afterwards. It needs
pytest-twisted, whose reactor handling does not mix with trial TestCases in one pytest
process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from tests.store_support import MARIADB, SQLITE, backend_url, empty_tables


@pytest.fixture(params=[SQLITE, MARIADB])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """A started ``Database``, once on SQLite and once on MariaDB (emptied afterwards)."""
    from twisted.internet import reactor

    from teamtalk_py.store.database import open_database

    url = backend_url(request.param)
    db = open_database(url, tmp_path / "data", reactor)
    pytest_twisted.blockon(db.start())
    yield db
    pytest_twisted.blockon(db.stop())
    if url is not None:
        empty_tables(db)
