"""Suite-wide set-up that belongs to no single test."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Keep compiled bytecode for the suite's processes when ``PYTHONDONTWRITEBYTECODE``
    forbids writing it next to the sources.

    The suite starts a few hundred Python processes (``twistd teamtalk``, ``teamtalk-admin``,
    the bench and its workers, the xdist workers); without bytecode each compiles every
    project module it imports again, ~0.3 s of CPU for a server. The bytecode goes to
    ``.pytest_cache/pycache`` (``PYTHONPYCACHEPREFIX``), not into the source tree, for the
    processes started from here on (this one has done its imports).
    """
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        del os.environ["PYTHONDONTWRITEBYTECODE"]
        os.environ["PYTHONPYCACHEPREFIX"] = str(config.rootpath / ".pytest_cache" / "pycache")
