"""The packages type-check: mypy, configured in ``pyproject.toml``, reports nothing.

Run as a test so that the suite everyone runs before landing (and CI) runs it too.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.support import TestCase

REPO_ROOT = Path(__file__).resolve().parents[1]


class TypeCheckTests(TestCase):
    def test_mypy_reports_no_error(self) -> None:
        """mypy over the packages pyproject.toml names finds no error."""
        missing = importlib.util.find_spec("mypy") is None
        assert not missing, "mypy is not installed: pip install -e '.[test]'"
        done = subprocess.run(
            [sys.executable, "-m", "mypy"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Success" in done.stdout, done.stdout
