"""The deployment files shipped in the package: printed by ``teamtalk-admin example``,
and the systemd unit checked by systemd's own tools (``systemd-analyze verify`` and
``security``; ``systemd-sysusers`` for the user). ``.ci/run`` installs systemd when the
tools are missing, so in CI these never skip."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

from twisted.trial.unittest import SkipTest

from teamtalk_py.config import load_config
from tests.support import TestCase

ADMIN = str(Path(sys.executable).with_name("teamtalk-admin"))
TWISTD = str(Path(sys.executable).with_name("twistd"))
#: The highest exposure `systemd-analyze security` may give the unit.
MAX_EXPOSURE = 2.5


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            raise AssertionError(f"{name} is missing (CI installs systemd: see .ci/run)")
        raise SkipTest(f"{name} is not installed")
    return path


def shipped(name: str) -> str:
    return files("teamtalk_py.deploy").joinpath(name).read_text()


def example(name: str) -> str:
    done = subprocess.run(
        [ADMIN, "example", name], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


class ShippedFilesTests(TestCase):
    def test_example_prints_each_shipped_file_and_the_config_loads(self):
        """teamtalk-admin example config|unit|sysusers prints the packaged files (no data
        dir needed), and the example config is a valid config."""
        for name, file in (
            ("config", "teamtalk.toml"),
            ("unit", "teamtalk.service"),
            ("sysusers", "teamtalk.sysusers"),
        ):
            assert example(name) == shipped(file), name
        config_file = self.tmp_path() / "teamtalk.toml"
        config_file.write_text(example("config"))
        config = load_config(config_file)
        assert config.server.data_dir == "/var/lib/teamtalk"

    def test_unit_passes_systemd_analyze_verify_and_security(self):
        """The unit verifies (with ExecStart pointing at this venv's twistd) and its
        exposure is 2.5 or less; it is a notify unit with a reload command."""
        analyze = tool("systemd-analyze")
        unit = shipped("teamtalk.service")
        for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "UMask=0077"):
            assert line in unit.splitlines(), line
        copy = self.tmp_path() / "teamtalk.service"
        copy.write_text(unit.replace("/opt/teamtalk/bin/twistd", TWISTD))
        verify = subprocess.run(
            [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
        )
        assert verify.returncode == 0 and not verify.stdout + verify.stderr, verify
        security = subprocess.run(
            [analyze, "security", "--offline=true", "--no-pager", str(copy)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        match = re.search(
            r"Overall exposure level for teamtalk\.service: ([\d.]+)", security.stdout
        )
        assert match, security.stdout + security.stderr
        assert float(match.group(1)) <= MAX_EXPOSURE, security.stdout

    def test_sysusers_entry_creates_the_user_the_unit_runs_as(self):
        """systemd-sysusers accepts the entry and would create user and group teamtalk."""
        sysusers = tool("systemd-sysusers")
        root = self.tmp_path()
        (root / "etc").mkdir()
        entry = self.tmp_path() / "teamtalk.conf"
        entry.write_text(shipped("teamtalk.sysusers"))
        done = subprocess.run(
            [sysusers, f"--root={root}", "--dry-run", str(entry)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = done.stdout + done.stderr
        assert "Creating user 'teamtalk'" in out and "Creating group 'teamtalk'" in out
        assert "User=teamtalk" in shipped("teamtalk.service").splitlines()
