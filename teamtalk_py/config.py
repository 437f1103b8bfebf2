"""Typed configuration: a TOML file, overridden by command-line options.

Every key is validated when the process starts, and an error names the key, so a typo in
a deployment file fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ALL_SERVICES = ("msg", "route", "file", "login")
_REDIS_URL = re.compile(r"^redis://[^/?]*(/\d*)?(\?.*)?$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):\d{1,5}$")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclass(frozen=True)
class ServerConfig:
    services: tuple[str, ...] = ALL_SERVICES
    data_dir: str = "./var"
    advertise: str = "127.0.0.1"


@dataclass(frozen=True)
class StoreConfig:
    db: str = ""
    redis: str = ""


@dataclass(frozen=True)
class MsgConfig:
    listen: str = ""
    max_connections: int = 100000
    max_pdu_size: int = 4 * 1024 * 1024
    max_outbuf: int = 8 * 1024 * 1024
    pc_idle_timeout: float = 120.0
    mobile_idle_timeout: float = 300.0
    login_deadline: float = 15.0
    max_message_size: int = 65536
    rate_limit: int = 0
    aes_key: str = "12345678901234567890123456789012"
    route_server: str = ""
    login_server: str = ""
    file_server: str = ""


@dataclass(frozen=True)
class LoginConfig:
    http_listen: str = ""
    internal_listen: str = ""
    msfs: str = "http://127.0.0.1:8700/"
    discovery: str = "http://127.0.0.1/api/discovery"


@dataclass(frozen=True)
class FileConfig:
    listen: str = ""
    internal_listen: str = ""
    task_timeout: float = 60.0
    public_addresses: tuple[str, ...] = ()
    max_file_size: int = 2 * 1024**3
    min_free_disk: int = 256 * 1024**2
    max_pulls_in_flight: int = 16
    offline_ttl: float = 30 * 86400.0


@dataclass(frozen=True)
class RouteConfig:
    listen: str = ""


#: Listen endpoints and their default TCP ports (wire.md §8.1).
DEFAULT_PORTS = {
    "msg.listen": 8000,
    "login.http_listen": 8080,
    "login.internal_listen": 8100,
    "file.listen": 8600,
    "file.internal_listen": 8601,
    "route.listen": 8200,
}


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    msg: MsgConfig = field(default_factory=MsgConfig)
    login: LoginConfig = field(default_factory=LoginConfig)
    file: FileConfig = field(default_factory=FileConfig)
    route: RouteConfig = field(default_factory=RouteConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    def with_default_listeners(self) -> Config:
        """Fill the listen endpoints left empty with their default ports.

        While ``server.advertise`` is a loopback address (the out-of-the-box setting)
        clients elsewhere could not use this server anyway, so the defaults bind
        127.0.0.1 only; advertising a reachable address opens them on every interface.
        """
        interface = ":interface=127.0.0.1" if is_loopback_host(self.server.advertise) else ""
        overrides = {}
        for dotted, port in DEFAULT_PORTS.items():
            section, key = dotted.split(".")
            if not getattr(getattr(self, section), key):
                overrides[dotted] = f"tcp:{port}{interface}"
        return self.with_overrides(overrides)

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """Apply ``{"section.key": value}`` overrides (None values are skipped)."""
        result = self
        for dotted, value in overrides.items():
            if value is None:
                continue
            section_name, key = dotted.split(".", 1)
            section = getattr(result, section_name)
            section = replace(section, **{key: _coerce(dotted, _field_type(section, key), value)})
            result = replace(result, **{section_name: section})
        result.validate()
        return result

    def validate(self) -> None:
        for name in self.server.services:
            if name not in ALL_SERVICES:
                raise ConfigError(
                    f"server.services: unknown service {name!r} "
                    f"(choose from {', '.join(ALL_SERVICES)})"
                )
        if not self.server.services:
            raise ConfigError("server.services: at least one service is needed")
        if len(self.msg.aes_key.encode()) != 32:
            raise ConfigError("msg.aes_key: must be exactly 32 bytes")
        for section, key in (("store", "db"),):
            value = getattr(getattr(self, section), key)
            if value and not value.startswith(("mysql://", "sqlite://")):
                raise ConfigError(f"{section}.{key}: expected mysql://... or sqlite://...")
        if self.store.redis and not _REDIS_URL.match(self.store.redis):
            raise ConfigError("store.redis: expected redis://host:port/db (db a number)")
        for key in ("route_server", "login_server", "file_server"):
            for address in getattr(self.msg, key).split(","):
                if address.strip() and not _HOST_PORT.match(address.strip()):
                    raise ConfigError(
                        f"msg.{key}: expected HOST:PORT (comma-separated), got {address!r}"
                    )
        if self.file.max_pulls_in_flight < 1:
            raise ConfigError("file.max_pulls_in_flight: must be at least 1")
        if not 0 <= self.file.max_file_size <= 0xFFFFFFFF:
            raise ConfigError("file.max_file_size: 0 .. 4294967295 (sizes are 32-bit)")
        if self.file.min_free_disk < 0 or self.file.offline_ttl <= 0:
            raise ConfigError("file.min_free_disk / file.offline_ttl: must not be negative")


def _field_type(section: Any, key: str) -> Any:
    for f in fields(section):
        if f.name == key:
            return f.type
    raise ConfigError(f"{type(section).__name__}: unknown key {key!r}")


def _coerce(dotted: str, type_name: Any, value: Any) -> Any:
    """Turn a TOML or command-line value into the declared type, naming the key on error."""
    try:
        if type_name in ("int", int):
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if type_name in ("float", float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if type_name in ("str", str):
            if not isinstance(value, str):
                raise TypeError
            return value
        if type_name == "tuple[str, ...]":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not all(isinstance(v, str) for v in value):
                raise TypeError
            return tuple(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{dotted}: expected {type_name}, got {value!r}") from None
    raise ConfigError(f"{dotted}: unsupported type {type_name}")


def load_config(path: str | Path | None) -> Config:
    """Read a TOML config file (or the defaults when ``path`` is None)."""
    config = Config()
    if path is None:
        config.validate()
        return config
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    overrides: dict[str, Any] = {}
    section_names = {f.name for f in fields(Config)}
    for section_name, values in raw.items():
        if section_name not in section_names:
            raise ConfigError(f"{path}: unknown section [{section_name}]")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: {section_name} must be a [section]")
        for key, value in values.items():
            overrides[f"{section_name}.{key}"] = value
    return config.with_overrides(overrides)


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_string(value: str) -> str:
    """Accept a bare port number as shorthand for ``tcp:PORT``."""
    value = value.strip()
    return f"tcp:{value}" if value.isdigit() else value


def endpoint_is_loopback_only(description: str) -> bool:
    """True when a ``tcp:`` endpoint string binds only a loopback interface."""
    parts = re.split(r"(?<!\\):", description)
    for part in parts[1:]:
        if part.startswith("interface="):
            return is_loopback_host(part.split("=", 1)[1].replace("\\", ""))
    return False


GENERATED_CONFIG = """\
# teamtalk_py configuration (TOML). Every key is optional; the values shown are the
# defaults. Command-line options (twistd teamtalk --help) override this file.

[server]
# Which services this process hosts: any of "msg", "route", "file", "login".
services = ["msg", "route", "file", "login"]
# Where the embedded SQLite database and stored offline files live.
data_dir = "./var"
# The address clients are told to connect to (returned by /msg_server). Set it to
# an address your clients can reach; a loopback address only works on this machine.
# It also picks where listeners with no explicit endpoint bind: 127.0.0.1 only while
# this is a loopback address, every interface otherwise.
advertise = "127.0.0.1"

[store]
# Empty: embedded SQLite in data_dir. Production: "mysql://user:pw@host:3306/teamtalk".
db = ""
# Empty: no Redis (state kept in this process). Cluster: every node uses the same
# "redis://127.0.0.1:6379/0"; append "?prefix=name:" to share one Redis between
# deployments. Redis holds only state that may be lost (failed-login counts, file-transfer
# progress); the database stays the source of truth, message ids included.
redis = ""

[msg]
# Listen endpoints are Twisted endpoint strings, e.g. "tcp:8000" (every interface) or
# "tcp:8000:interface=10.0.0.5". Empty: the default port (8000 here; 8080/8100 login,
# 8600/8601 file, 8200 route), bound as server.advertise says.
listen = ""
# Connection limit announced to the login service.
max_connections = 100000
# Largest PDU accepted from a client, in bytes; bigger ones close that connection.
max_pdu_size = 4194304
# Bytes that may pile up for a client that stopped reading before it is dropped.
max_outbuf = 8388608
# Seconds without traffic before a PC / mobile connection is closed.
pc_idle_timeout = 120.0
mobile_idle_timeout = 300.0
# Seconds from accept within which a client must log in.
login_deadline = 15.0
# Largest chat message payload (bytes); bigger ones are refused with msg_id 0 in the ack.
max_message_size = 65536
# Messages per second one connection may send (0 = unlimited); the excess is refused
# with msg_id 0 in the ack, never dropped silently.
rate_limit = 0
# The 32-byte AES key clients encrypt text with (the clients' compiled-in default).
aes_key = "12345678901234567890123456789012"
# Cluster links, for a node that does not host the service itself (empty: the service
# in this process, if any). route_server = "10.0.0.1:8200"; login_server =
# "10.0.0.1:8100" (several login services: comma-separated); file_server = "10.0.0.1:8601".
route_server = ""
login_server = ""
file_server = ""

[login]
http_listen = ""
# Where msg nodes in other processes report their address and load. Keep it private,
# e.g. "tcp:8100:interface=10.0.0.1": it accepts any peer.
internal_listen = ""
# Returned verbatim to clients as msfsPrior/msfsBackup and discovery.
msfs = "http://127.0.0.1:8700/"
discovery = "http://127.0.0.1/api/discovery"

[file]
listen = ""
internal_listen = ""
# Seconds an unused transfer task is kept in memory (stored offline files stay).
task_timeout = 60.0
# Where clients reach the file service, "HOST" or "HOST:PORT" (a bare host gets the
# bound client port). Empty: server.advertise with the bound client port.
public_addresses = []
# Largest offline file accepted, in bytes; bigger requests are refused at once.
max_file_size = 2147483648
# Bytes of disk an offline upload must leave free; requests that would not are refused.
min_free_disk = 268435456
# Blocks the server asks an offline uploader for ahead of time.
max_pulls_in_flight = 16
# Seconds an offline file (or an abandoned upload) is kept after its last activity.
offline_ttl = 2592000.0

[route]
# Where msg nodes link to. Keep it private, e.g. "tcp:8200:interface=10.0.0.1".
listen = ""
"""
