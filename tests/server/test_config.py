"""Config file parsing, command-line overrides and the generated config."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from teamtalk_py.config import (
    Config,
    ConfigError,
    endpoint_is_loopback_only,
    generated_config,
    load_config,
)
from teamtalk_py.tap import Options, warn_about_advertise
from tests.support import TestCase


class ConfigTests(TestCase):
    def test_example_config_loads_and_serves_pictures(self):
        """The shipped example config (teamtalk_py/deploy/teamtalk.toml) is a valid config
        that hosts the media service at the advertised address."""
        config = load_config(
            Path(__file__).resolve().parents[2] / "teamtalk_py" / "deploy" / "teamtalk.toml"
        )
        assert "media" in config.server.services
        assert config.media_public_url() == f"http://{config.server.advertise}:8700/"

    def test_generated_config_loads_back_to_the_defaults(self):
        """--generate-config prints a file the server accepts, equal to the defaults but
        for a fresh cluster secret each time."""
        tmp_path = self.tmp_path()
        path = tmp_path / "teamtalk.toml"
        path.write_text(generated_config())
        loaded = load_config(path)
        assert len(loaded.cluster.secret) >= 32
        assert loaded.with_overrides({"cluster.secret": ""}) == Config()
        path.write_text(generated_config())
        assert load_config(path).cluster.secret != loaded.cluster.secret

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

    def test_unknown_service_is_one_line_and_exit_status_78(self):
        """--services only accepts msg, route, file and login; the error is one line on
        stderr (no usage page) and the exit status is EX_CONFIG."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as exit_info:
            Options().parseOptions(["--services", "msg,chat"])
        assert exit_info.exception.code == 78
        assert err.getvalue().count("\n") == 1
        assert "server.services: unknown service 'chat'" in err.getvalue()

    def test_unknown_option_is_one_line_and_exit_status_2(self):
        """A misspelt option is a usage error: one line naming it, exit status 2."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as exit_info:
            Options().parseOptions(["--msg-lisen", "8000"])
        assert exit_info.exception.code == 2
        assert err.getvalue().count("\n") == 1 and "msg-lisen" in err.getvalue()

    def test_generate_config_option_prints_and_exits(self):
        """--generate-config writes the commented config to stdout and exits 0."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as exit_info:
            Options().parseOptions(["--generate-config"])
        assert exit_info.exception.code == 0
        assert out.getvalue().startswith("# teamtalk_py configuration")
        assert 'secret = "' in out.getvalue()

    def test_loopback_advertise_with_public_listener_warns(self):
        """The top support question gets a loud warning at start-up."""
        public_listener = Config().with_overrides({"msg.listen": "tcp:8000"})
        warning = warn_about_advertise(public_listener.with_default_listeners())
        assert warning is not None and "127.0.0.1" in warning and "tcp:8000" in warning
        assert warn_about_advertise(Config().with_default_listeners()) is None
        public_advertised = Config().with_overrides({"server.advertise": "10.1.2.3"})
        assert warn_about_advertise(public_advertised.with_default_listeners()) is None

    def test_default_listeners_follow_the_advertised_address(self):
        """Out of the box every client listener binds 127.0.0.1 on its default port and
        the server-to-server ports stay closed (msg is co-hosted); advertising a reachable
        address opens the client ports on every interface; explicit endpoints stay."""
        local = Config().with_default_listeners()
        assert (local.msg.listen, local.login.http_listen, local.file.listen) == (
            "tcp:8000:interface=127.0.0.1",
            "tcp:8080:interface=127.0.0.1",
            "tcp:8600:interface=127.0.0.1",
        )
        assert (local.route.listen, local.login.internal_listen, local.file.internal_listen) == (
            "",
            "",
            "",
        )
        assert not local.has_node_links
        public = Config().with_overrides(
            {"server.advertise": "10.1.2.3", "route.listen": "tcp:9200:interface=10.0.0.1"}
        )
        public = public.with_default_listeners()
        assert (public.msg.listen, public.login.http_listen) == ("tcp:8000", "tcp:8080")
        assert public.route.listen == "tcp:9200:interface=10.0.0.1"
        assert public.internal_listeners() == {"route": "tcp:9200:interface=10.0.0.1"}

    def test_internal_ports_default_open_only_without_a_msg_service(self):
        """A route/login/file node exists to serve msg nodes elsewhere: its internal
        ports get their defaults."""
        center = Config().with_overrides({"server.services": "route,login,file"})
        center = center.with_default_listeners()
        assert center.internal_listeners() == {
            "route": "tcp:8200:interface=127.0.0.1",
            "login": "tcp:8100:interface=127.0.0.1",
            "file": "tcp:8601:interface=127.0.0.1",
        }

    def test_endpoint_loopback_detection(self):
        """Only an explicit loopback interface counts as loopback-only."""
        assert endpoint_is_loopback_only("tcp:8000:interface=127.0.0.1")
        assert endpoint_is_loopback_only("tcp:8000:interface=\\:\\:1")
        assert not endpoint_is_loopback_only("tcp:8000")
        assert not endpoint_is_loopback_only("tcp:8000:interface=0.0.0.0")


class ConfigValidationTests(TestCase):
    """Every value is checked before anything binds, and the error names the key."""

    def assert_refused(self, key: str, value, *fragments: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            Config().with_overrides({key: value})
        message = str(caught.exception)
        assert message.startswith(f"{key}: "), message
        for fragment in fragments:
            assert fragment in message, message

    def test_numbers_must_be_positive(self):
        """Zero or negative limits and timeouts are refused; 0 stays allowed where it
        means "off" (the rate limit)."""
        self.assert_refused("msg.max_connections", 0, "greater than 0")
        self.assert_refused("msg.max_connections", "-5", "greater than 0")
        self.assert_refused("msg.pc_idle_timeout", -1.0, "greater than 0")
        self.assert_refused("file.offline_ttl", 0, "greater than 0")
        self.assert_refused("msg.message_rate", -1, "negative")
        self.assert_refused("msg.pc_idle_timeout", float("inf"), "finite")
        assert Config().with_overrides({"msg.message_rate": 0}).msg.message_rate == 0

    def test_an_integer_key_refuses_a_fraction(self):
        """1.5 (TOML or command line) is not silently truncated to 1."""
        self.assert_refused("msg.max_connections", 1.5, "expected int")
        self.assert_refused("msg.max_connections", "1.5", "expected int")
        assert Config().with_overrides({"msg.max_connections": 2.0}).msg.max_connections == 2

    def test_advertise_must_be_an_address(self):
        """An empty or malformed advertised address is refused."""
        self.assert_refused("server.advertise", "", "IP address or host name")
        self.assert_refused("server.advertise", "two words", "IP address or host name")
        assert Config().with_overrides({"server.advertise": "::1"}).server.advertise == "::1"
        assert Config().with_overrides({"server.advertise": "im.example.com"})

    def test_endpoint_strings_are_parsed_before_binding(self):
        """An unknown endpoint type or a port out of range names the key."""
        self.assert_refused("msg.listen", "tcpp:8000", "tcpp")
        self.assert_refused("login.http_listen", "tcp:99999", "99999", "0..65535")
        self.assert_refused("route.listen", "tcp:port", "bad endpoint")
        ok = Config().with_overrides({"msg.listen": "tcp:8000:interface=127.0.0.1"})
        assert ok.msg.listen == "tcp:8000:interface=127.0.0.1"

    def test_urls_with_a_bad_port_name_the_key_not_a_traceback(self):
        """A Redis or MySQL URL with an impossible port is a config error; the password
        is not repeated in it."""
        self.assert_refused("store.redis", "redis://127.0.0.1:99999/0", "Port out of range")
        self.assert_refused("store.redis", "redis://127.0.0.1:port/0")
        with self.assertRaises(ConfigError) as caught:
            Config().with_overrides({"store.db": "mysql://tt:hunter2@db:70000/teamtalk"})
        assert "store.db" in str(caught.exception)
        assert "hunter2" not in str(caught.exception)
        self.assert_refused("store.db", "mysql://tt@db:3306/", "database name")
        self.assert_refused("msg.route_server", "10.0.0.1:70000", "HOST:PORT")

    def test_log_settings_are_checked(self):
        """log.level and log.format accept only the listed values."""
        self.assert_refused("log.level", "verbose", "debug, info")
        self.assert_refused("log.format", "xml", "text, json")
