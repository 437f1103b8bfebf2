"""The cluster settings are checked at start, and a mistake names the key."""

from __future__ import annotations

import re

from teamtalk_py.config import Config, ConfigError
from tests.support import TestCase


class ClusterConfigTests(TestCase):
    def test_well_formed_cluster_settings_are_accepted(self):
        """Redis URLs with db and prefix, HOST:PORT lists and IPv6 literals pass."""
        config = Config().with_overrides(
            {
                "store.redis": "redis://:pw@10.0.0.9:6379/2?prefix=acme:",
                "msg.route_server": "[fd00::1]:8200",
                "msg.login_server": "10.0.0.1:8100, 10.0.0.2:8100",
                "msg.file_server": "files.example:8601",
            }
        )
        assert config.msg.login_server == "10.0.0.1:8100, 10.0.0.2:8100"

    def test_redis_database_must_be_a_number(self):
        """redis://host/name is refused with the key named."""
        with self.assertRaisesRegex(ConfigError, r"^store\.redis:"):
            Config().with_overrides({"store.redis": "redis://127.0.0.1/teamtalk"})

    def test_server_links_need_a_port(self):
        """A link address without a numeric port is refused with the key named."""
        for key, value in (
            ("msg.route_server", "10.0.0.1"),
            ("msg.login_server", "10.0.0.1:8100,10.0.0.2"),
            ("msg.file_server", "files:port"),
        ):
            with self.assertRaisesRegex(ConfigError, "^" + re.escape(key) + ":"):
                Config().with_overrides({key: value})
