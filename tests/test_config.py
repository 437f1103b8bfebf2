"""Config file parsing, command-line overrides and the generated config."""

from __future__ import annotations

import io
import sys

from twisted.python import usage

from teamtalk_py.config import (
    GENERATED_CONFIG,
    Config,
    ConfigError,
    endpoint_is_loopback_only,
    load_config,
)
from teamtalk_py.tap import Options, warn_about_advertise
from tests.support import TestCase


class ConfigTests(TestCase):
    def test_generated_config_loads_back_to_the_defaults(self):
        """--generate-config prints a file the server accepts, equal to the defaults."""
        tmp_path = self.tmp_path()
        path = tmp_path / "teamtalk.toml"
        path.write_text(GENERATED_CONFIG)
        assert load_config(path) == Config()

    def test_unknown_key_is_named_in_the_error(self):
        """A typo fails loudly and names the key."""
        tmp_path = self.tmp_path()
        path = tmp_path / "bad.toml"
        path.write_text('[msg]\nlisten = "tcp:8000"\nlsiten = "tcp:1"\n')
        with self.assertRaisesRegex(ConfigError, "lsiten"):
            load_config(path)

    def test_wrong_type_is_named_in_the_error(self):
        """A string where a number belongs names section.key."""
        tmp_path = self.tmp_path()
        path = tmp_path / "bad.toml"
        path.write_text('[msg]\nmax_connections = "many"\n')
        with self.assertRaisesRegex(ConfigError, "msg.max_connections"):
            load_config(path)

    def test_unknown_section_is_rejected(self):
        """Sections are fixed; a misspelt one is an error."""
        tmp_path = self.tmp_path()
        path = tmp_path / "bad.toml"
        path.write_text("[mgs]\n")
        with self.assertRaisesRegex(ConfigError, "mgs"):
            load_config(path)

    def test_command_line_overrides_the_config_file(self):
        """Options win over the file; bare port numbers become tcp endpoints."""
        tmp_path = self.tmp_path()
        path = tmp_path / "teamtalk.toml"
        path.write_text('[server]\ndata_dir = "/srv/tt"\n[msg]\nlisten = "tcp:9000"\n')
        options = Options()
        options.parseOptions(["--config", str(path), "--msg-listen", "8001", "--services", "msg"])
        config = options.config
        assert config.msg.listen == "tcp:8001"
        assert config.server.data_dir == "/srv/tt"
        assert config.server.services == ("msg",)

    def test_unknown_service_is_a_usage_error(self):
        """--services only accepts msg, route, file and login."""
        with self.assertRaisesRegex(usage.UsageError, "chat"):
            Options().parseOptions(["--services", "msg,chat"])

    def test_generate_config_option_prints_and_exits(self):
        """--generate-config writes the commented config to stdout and exits 0."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as exit_info:
            Options().parseOptions(["--generate-config"])
        assert exit_info.exception.code == 0
        assert out.getvalue() == GENERATED_CONFIG

    def test_loopback_advertise_with_public_listener_warns(self):
        """The top support question gets a loud warning at start-up."""
        public_listener = Config().with_overrides({"msg.listen": "tcp:8000"})
        warning = warn_about_advertise(public_listener.with_default_listeners())
        assert warning is not None and "127.0.0.1" in warning and "tcp:8000" in warning
        assert warn_about_advertise(Config().with_default_listeners()) is None
        public_advertised = Config().with_overrides({"server.advertise": "10.1.2.3"})
        assert warn_about_advertise(public_advertised.with_default_listeners()) is None

    def test_default_listeners_follow_the_advertised_address(self):
        """Out of the box every listener binds 127.0.0.1 on its default port; advertising
        a reachable address opens them on every interface; explicit endpoints stay."""
        local = Config().with_default_listeners()
        assert (local.msg.listen, local.login.http_listen, local.file.listen) == (
            "tcp:8000:interface=127.0.0.1",
            "tcp:8080:interface=127.0.0.1",
            "tcp:8600:interface=127.0.0.1",
        )
        assert (local.route.listen, local.login.internal_listen, local.file.internal_listen) == (
            "tcp:8200:interface=127.0.0.1",
            "tcp:8100:interface=127.0.0.1",
            "tcp:8601:interface=127.0.0.1",
        )
        public = Config().with_overrides(
            {"server.advertise": "10.1.2.3", "route.listen": "tcp:9200:interface=10.0.0.1"}
        )
        public = public.with_default_listeners()
        assert (public.msg.listen, public.login.http_listen) == ("tcp:8000", "tcp:8080")
        assert public.route.listen == "tcp:9200:interface=10.0.0.1"

    def test_endpoint_loopback_detection(self):
        """Only an explicit loopback interface counts as loopback-only."""
        assert endpoint_is_loopback_only("tcp:8000:interface=127.0.0.1")
        assert endpoint_is_loopback_only("tcp:8000:interface=\\:\\:1")
        assert not endpoint_is_loopback_only("tcp:8000")
        assert not endpoint_is_loopback_only("tcp:8000:interface=0.0.0.0")
