"""Helpers for end-to-end tests: an in-process server on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from twisted.internet import defer, reactor
from twisted.trial import unittest as trial_unittest

from teamtalk_py.config import Config
from teamtalk_py.node import Node
from teamtalk_py.services import ServiceCollection
from teamtalk_py.tap import build_node

LOCAL = "tcp:0:interface=127.0.0.1"
#: The cluster secret of in-process test nodes (server links refuse anyone without it).
TEST_SECRET = "test-cluster-secret-0123456789"


def local_config(data_dir: Path, **overrides: Any) -> Config:
    """Defaults with every listener on an ephemeral loopback port."""
    base = {
        "server.data_dir": str(data_dir),
        "msg.listen": LOCAL,
        "login.http_listen": LOCAL,
        "login.internal_listen": LOCAL,
        "file.listen": LOCAL,
        "file.internal_listen": LOCAL,
        "ops.listen": LOCAL,
        "route.listen": LOCAL,
        "cluster.secret": TEST_SECRET,
        "media.listen": LOCAL,
        "disk.listen": LOCAL,
        "admin.listen": LOCAL,
    }
    base.update(overrides)
    return Config().with_overrides(base)


@dataclass
class RunningServer:
    #: Every service of this server, typed (None where not hosted).
    node: Node
    config: Config

    @property
    def collection(self) -> ServiceCollection:
        return self.node.collection

    def service(self, name: str) -> Any:
        return self.collection.getServiceNamed(name)

    @property
    def msg_port(self) -> int:
        return self.service("msg").port

    @property
    def http_port(self) -> int:
        return self.service("login").bound_port()

    @property
    def media_url(self) -> str:
        """The media service's public base URL (ends in ``/``)."""
        return self.service("media").public_url()

    @property
    def discovery_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/msg_server"

    async def stop(self) -> None:
        await self.collection.stopService()


async def start_server(config: Config) -> RunningServer:
    node = build_node(reactor, config)
    node.collection.startService()
    await defer.gatherResults([svc.ready for svc in node.collection], consumeErrors=True)
    return RunningServer(node, config)


def server_unreachable(message: str) -> NoReturn:
    """Skip the calling test for a server (MariaDB, Redis) this machine does not run; fail
    it when ``CI`` is set, where every server the tests use must be there."""
    if os.environ.get("CI"):
        raise AssertionError(f"{message} (CI is set: the tests that need it must run)")
    raise trial_unittest.SkipTest(message)


class TestCase(trial_unittest.TestCase):
    """Base for our tests: trial's TestCase (``trial tests`` and ``pytest`` both run it)."""

    def tmp_path(self) -> Path:
        """A fresh empty directory for this test, removed afterwards."""
        path = Path(tempfile.mkdtemp(prefix="teamtalk-test-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path
