"""The data directory: created private (0700) before anything binds, whatever the umask.

The SQLite database and stored offline files live here; they are created 0600 by the
store and the file service. A data directory that cannot be created or written stops
the server at start with one line saying why, instead of leaving the services that do
not need it running alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from teamtalk_py.config import Config

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class DataDirError(Exception):
    """The data directory cannot be used; the message says which and why."""


def needs_data_dir(config: Config) -> bool:
    """Whether this process keeps anything in ``server.data_dir``: the embedded SQLite
    store, or the file service's offline files."""
    hosted = set(config.server.services)
    uses_sqlite = not config.store.db or config.store.db.startswith("sqlite:")
    return "file" in hosted or (uses_sqlite and bool(hosted & {"msg", "file", "login"}))


def prepare_data_dir(config: Config) -> Path | None:
    """Create ``server.data_dir`` (0700) if this process needs it; check it is usable."""
    if not needs_data_dir(config):
        return None
    path = Path(config.server.data_dir)
    ensure_private_dir(path)
    return path


def ensure_private_dir(path: Path, *, create: bool = True) -> None:
    """``path`` exists as a writable directory with mode 0700 (created if ``create``)."""
    try:
        if create and not path.exists():
            path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        if not path.is_dir():
            reason = "it exists and is not a directory" if path.exists() else "it does not exist"
            raise DataDirError(f"data dir {path}: {reason}")
        if path.stat().st_mode & 0o777 != PRIVATE_DIR:
            os.chmod(path, PRIVATE_DIR)
    except OSError as e:
        raise DataDirError(f"data dir {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirError(f"data dir {path}: not writable by this user")


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it is missing; make it 0600 if not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def private_sqlite_files(path: Path) -> None:
    """The SQLite database 0600 (created empty if missing, which SQLite accepts as a new
    database), and its ``-wal``/``-shm`` files if any; SQLite creates those with the
    database file's mode."""
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = path.with_name(path.name + suffix)
        if companion.exists() and companion.stat().st_mode & 0o777 != PRIVATE_FILE:
            os.chmod(companion, PRIVATE_FILE)
