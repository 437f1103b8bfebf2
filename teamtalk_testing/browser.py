"""Headless Chromium for the web console's browser tests and the README's screenshots:
Debian's ``chromium`` package driven by Playwright (never a browser Playwright downloads;
``playwright install`` is not needed).

Not imported by ``teamtalk_testing/__init__``: Playwright is a test dependency only, and
callers pass in the ``Playwright`` object they started.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Playwright

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "launch_chromium"]

#: Debian's Chromium (``apt-get install chromium``; ``.ci/run`` installs it).
CHROMIUM = "/usr/bin/chromium"
#: No GPU, sandbox, first-run page or background traffic (updates, sync): a browser that
#: only loads what the test asks for. Playwright passes ``--headless`` and the profile
#: directory too; they are named here so the launch does not rest on its defaults.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright: Playwright, profile: Path) -> BrowserContext:
    """Chromium with ``profile`` as its ``--user-data-dir`` (give a new empty directory:
    no cookies or cache from an earlier run), a 1280x800 window, English and UTC, so
    screenshots come out the same on every machine."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 800},
        locale="en-US",
        timezone_id="UTC",
    )
