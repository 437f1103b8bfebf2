"""Running ``schemathesis`` (the ``st`` command) against a server's OpenAPI document, the
same way for every JSON API we serve (media/disk, admin)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ST = str(Path(sys.executable).parent / "st")


def run_schemathesis(
    cwd: Path, schema_url: str, base_url: str, authorization: str, config: Path
) -> subprocess.CompletedProcess[str]:
    """``st run`` with every check, a fixed seed and 15 examples per operation, sending
    ``Authorization: <authorization>``; the finished process (its report on stdout)."""
    return subprocess.run(
        [
            ST, "--config-file", str(config), "run", schema_url, "--url", base_url,
            "--header", f"Authorization: {authorization}", "--checks", "all",
            "--max-examples", "15", "--seed", "17", "--no-color",
            "--generation-database", "none", "--request-timeout", "20",
        ],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
