"""Typed configuration: a TOML file, overridden by command-line options.

Every key is validated when the process starts, and an error names the key, so a typo in
a deployment file fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ALL_SERVICES = ("msg", "route", "file", "login", "media", "disk", "admin")
_REDIS_URL = re.compile(r"^redis://[^/?]*(/\d*)?(\?.*)?$")
_HTTP_URL = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):(\d{1,5})$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")

#: Numbers for which 0 means "off" or "none"; every other number must be positive.
ZERO_ALLOWED = frozenset(
    {
        "msg.message_rate",
        "msg.fanout_threads",
        "msg.max_bytes_per_day",
        "msg.group_creations_per_hour",
        "file.max_file_size",
        "file.min_free_disk",
        "file.max_user_offline_bytes",
        "file.max_offline_bytes",
        "file.max_tasks_per_user",
        "push.outbox_grace",
        "push.coalesce_window",
        "push.night_start",
        "push.night_end",
        "media.max_picture_size",
        "media.uploads_per_minute",
        "media.upload_bytes_per_hour",
        "media.max_upload_size",
        "media.user_quota",
        "media.min_free_disk",
        "disk.registrations_per_hour",
    }
)
#: Listen endpoints: each must parse as a Twisted endpoint string (empty = default).
ENDPOINT_KEYS = (
    "msg.listen",
    "login.http_listen",
    "login.internal_listen",
    "file.listen",
    "file.internal_listen",
    "route.listen",
    "ops.listen",
    "media.listen",
    "disk.listen",
    "admin.listen",
)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclass(frozen=True)
class ServerConfig:
    services: tuple[str, ...] = ALL_SERVICES
    data_dir: str = "./var"
    advertise: str = "127.0.0.1"
    #: Connections the kernel queues for each listener before the server accepts them
    #: (capped by net.core.somaxconn); Twisted's own default, 50, drops a login burst.
    listen_backlog: int = 1024
    #: Seconds an HTTP client has for a request's line and headers (teamtalk_py.web).
    http_header_timeout: float = 10.0


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
    #: Per user: messages a second sustained, and the burst allowed on top (msg/limits.py).
    message_rate: float = 20.0
    message_burst: int = 100
    max_bytes_per_day: int = 100 * 1024 * 1024
    group_creations_per_hour: int = 20
    #: Limit refusals a connection may collect (one more a second) before it is closed.
    max_refusals: int = 50
    account_check_interval: float = 2.0
    #: Threads beside the reactor's that share the sends of a large status fan-out
    #: (``wire.FanoutHelpers``); 0: the reactor thread sends alone.
    fanout_threads: int = 1
    aes_key: str = "12345678901234567890123456789012"
    route_server: str = ""
    login_server: str = ""
    file_server: str = ""


@dataclass(frozen=True)
class LoginConfig:
    http_listen: str = ""
    internal_listen: str = ""
    #: Empty: the media service's public URL (``media.public_url``).
    msfs: str = ""
    discovery: str = "http://127.0.0.1/api/discovery"


@dataclass(frozen=True)
class FileConfig:
    listen: str = ""
    internal_listen: str = ""
    task_timeout: float = 60.0
    public_addresses: tuple[str, ...] = ()
    max_file_size: int = 2 * 1024**3
    min_free_disk: int = 256 * 1024**2
    max_pulls_in_flight: int = 64
    offline_ttl: float = 30 * 86400.0
    #: Offline-file bytes one sender may have stored, and all senders together.
    max_user_offline_bytes: int = 4 * 1024**3
    max_offline_bytes: int = 64 * 1024**3
    #: Transfer tasks one user may have open at once (as sender).
    max_tasks_per_user: int = 10
    #: File logins only from an address of a connection of that user on a msg node that
    #: told the file service of the task (file/permits.py).
    bind_logins: bool = True


@dataclass(frozen=True)
class RouteConfig:
    listen: str = ""


LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "text"


@dataclass(frozen=True)
class PushConfig:
    """Offline push (teamtalk_py/push): senders, queue limits and the reference's rules."""

    # APNs (token-based authentication): all four of key_file/key_id/team_id/topic.
    apns_key_file: str = ""
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""
    apns_host: str = "api.push.apple.com"
    # FCM HTTP v1: the service account JSON (project_id and token_uri come from it).
    fcm_service_account: str = ""
    fcm_endpoint: str = "https://fcm.googleapis.com"
    # TeamTalk's own push_server (HOST:PORT), used where APNs/FCM are not configured.
    push_server: str = ""
    # PEM file of the CAs to trust for APNs/FCM instead of the system's (empty: system).
    ca_file: str = ""
    max_attempts: int = 10
    max_age: float = 3600.0
    max_queue: int = 100000
    max_in_flight: int = 64
    retry_base: float = 1.0
    retry_cap: float = 300.0
    lease: float = 60.0
    outbox_grace: float = 30.0
    coalesce_window: float = 0.25
    night_start: int = 22
    night_end: int = 8

    @property
    def apns_enabled(self) -> bool:
        return bool(self.apns_key_file)

    @property
    def enabled(self) -> bool:
        return bool(self.apns_key_file or self.fcm_service_account or self.push_server)


@dataclass(frozen=True)
class ClusterConfig:
    """How the nodes of a cluster recognise each other on route, login-internal and
    file-internal links (``teamtalk_py/wire/link_auth.py``)."""

    #: Shared by every node; proven on each link by an HMAC challenge, never sent.
    secret: str = ""
    #: A file holding the secret instead (read at start; surrounding whitespace ignored).
    secret_file: str = ""
    #: PEM files for mutual TLS on the same links: this node's certificate and key, and
    #: the CA every node's certificate must be signed by. All three or none.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    #: Addresses msg nodes may tell the login service to send clients to (IPs, CIDRs,
    #: host names). Empty: only the address the node's own link comes from.
    node_addresses: tuple[str, ...] = ()


#: The shortest cluster secret accepted (characters).
MIN_SECRET_LENGTH = 16
#: Where a process keeps the secret it generated for itself (inside ``server.data_dir``).
GENERATED_SECRET_FILE = "cluster.secret"


#: The ops listener's default: loopback only, whatever ``server.advertise`` says.
DEFAULT_OPS_LISTEN = "tcp:8090:interface=127.0.0.1"
#: The admin API's default: loopback only too (it creates users and kicks sessions).
DEFAULT_ADMIN_LISTEN = "tcp:8900:interface=127.0.0.1"


@dataclass(frozen=True)
class OpsConfig:
    listen: str = ""
    on_http: bool = False


@dataclass(frozen=True)
class MediaConfig:
    listen: str = ""
    #: What clients are told (msfsPrior/msfsBackup) and what URLs are built from; empty:
    #: ``http://<server.advertise>:<media port>/``.
    public_url: str = ""
    #: The content store; empty: ``<data_dir>/media``. Nodes of a cluster share it.
    store_dir: str = ""
    anonymous_uploads: bool = True
    max_picture_size: int = 5 * 1024**2
    uploads_per_minute: int = 120
    upload_bytes_per_hour: int = 1024**3
    max_upload_size: int = 4 * 1024**3
    user_quota: int = 10 * 1024**3
    min_free_disk: int = 256 * 1024**2
    upload_expiry: float = 86400.0
    unreferenced_grace: float = 3600.0
    token_ttl: float = 30 * 86400.0
    avatar_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiskConfig:
    listen: str = ""
    #: Whether anybody may create an account with ``POST /reg``; TeamTalk companies
    #: create accounts with ``teamtalk-admin``, so it is off unless turned on.
    allow_registration: bool = False
    #: The department self-registered users join (created at the first registration).
    department: str = "Cloud disk"
    #: Registrations per client address per hour (0 = no limit).
    registrations_per_hour: int = 10


#: ``contacts.mode`` values: TeamTalk's company directory (everybody sees everybody), friends
#: only, or the directory plus friend requests.
CONTACTS_MODES = ("directory", "contacts", "both")


@dataclass(frozen=True)
class ContactsConfig:
    """The contacts extension (docs/EXTENSION.md). ``directory`` (the default) is
    TeamTalk's company directory and offers no friend requests; ``contacts`` makes the
    buddy list friends only and 1:1 messages need friendship; ``both`` keeps the directory
    and adds friend requests."""

    mode: str = "directory"
    #: Most users one search answers.
    max_search_results: int = 50
    #: Longest note (characters) a friend request may carry; remarks have the same limit.
    max_note_length: int = 200


@dataclass(frozen=True)
class RoomsConfig:
    """The chat-rooms extension (docs/EXTENSION.md): rooms live in memory only. In a
    cluster the route service holds ``max_members`` and ``max_rooms`` for every node;
    each msg node holds the rest for its own connections."""

    enabled: bool = True
    #: Members one room may have, across the cluster.
    max_members: int = 1000
    #: Rooms (with at least one member) the cluster may have at once.
    max_rooms: int = 10000
    #: Largest post body in bytes.
    max_post_size: int = 4096
    #: Rooms one connection may be in at once.
    max_joined: int = 100
    #: Bytes that may wait for a member that reads slowly before it is dropped from a room
    #: (told with a notify; its connection stays open).
    member_backlog: int = 1048576


@dataclass(frozen=True)
class AdminConfig:
    #: The admin REST API and web console; empty: ``DEFAULT_ADMIN_LISTEN``.
    listen: str = ""


#: Listen endpoints and their default TCP ports (wire.md §8.1).
DEFAULT_PORTS = {
    "msg.listen": 8000,
    "login.http_listen": 8080,
    "login.internal_listen": 8100,
    "file.listen": 8600,
    "file.internal_listen": 8601,
    "route.listen": 8200,
    "media.listen": 8700,
    "disk.listen": 8800,
}
#: The server-to-server endpoints among them (authenticated, see ``[cluster]``).
INTERNAL_ENDPOINTS = frozenset({"login.internal_listen", "file.internal_listen", "route.listen"})


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    msg: MsgConfig = field(default_factory=MsgConfig)
    login: LoginConfig = field(default_factory=LoginConfig)
    file: FileConfig = field(default_factory=FileConfig)
    route: RouteConfig = field(default_factory=RouteConfig)
    log: LogConfig = field(default_factory=LogConfig)
    push: PushConfig = field(default_factory=PushConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    disk: DiskConfig = field(default_factory=DiskConfig)
    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def media_dir(self) -> Path:
        """The content store's directory (shared by the nodes of a cluster)."""
        return Path(self.media.store_dir) if self.media.store_dir else self.data_dir / "media"

    def media_public_url(self, bound_port: int | None = None) -> str:
        """The base every media URL starts with, ending in ``/`` (never from a Host header)."""
        if self.media.public_url:
            return self.media.public_url.rstrip("/") + "/"
        port = bound_port or endpoint_port(self.media.listen) or DEFAULT_PORTS["media.listen"]
        host = self.server.advertise
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    @property
    def hosts_every_service(self) -> bool:
        """Whether every linked service (msg, route, file, login) runs in this process
        (media and disk have no server links, so they do not count)."""
        return {"msg", "route", "file", "login"} <= set(self.server.services)

    def internal_listeners(self) -> dict[str, str]:
        """The server-to-server endpoints this process opens, by service name."""
        hosted = set(self.server.services)
        endpoints = {
            "route": self.route.listen,
            "login": self.login.internal_listen,
            "file": self.file.internal_listen,
        }
        return {name: e for name, e in endpoints.items() if name in hosted and e}

    def outgoing_links(self) -> dict[str, str]:
        """The services this process links to in other processes, by service name."""
        if "msg" not in self.server.services:
            return {}
        links = {
            "route": self.msg.route_server,
            "login": self.msg.login_server,
            "file": self.msg.file_server,
        }
        return {name: address for name, address in links.items() if address.strip()}

    @property
    def has_node_links(self) -> bool:
        """Whether this process talks to other nodes at all (and so needs credentials)."""
        return bool(self.internal_listeners() or self.outgoing_links())

    @property
    def tls_configured(self) -> bool:
        return bool(self.cluster.tls_cert)

    def with_default_listeners(self) -> Config:
        """Fill the listen endpoints left empty with their default ports.

        While ``server.advertise`` is a loopback address (the out-of-the-box setting)
        clients elsewhere could not use this server anyway, so the defaults bind
        127.0.0.1 only; advertising a reachable address opens them on every interface.

        The server-to-server ports (route, login-internal, file-internal) get a default
        only where they are the reason the service runs here: in a process without a msg
        service. With msg co-hosted the services talk in-process, so those ports stay
        closed unless the config names them.
        """
        interface = ":interface=127.0.0.1" if is_loopback_host(self.server.advertise) else ""
        serves_remote_nodes = "msg" not in self.server.services
        overrides = {}
        for dotted, port in DEFAULT_PORTS.items():
            section, key = dotted.split(".")
            if dotted in INTERNAL_ENDPOINTS and not serves_remote_nodes:
                continue
            if not getattr(getattr(self, section), key):
                overrides[dotted] = f"tcp:{port}{interface}"
        if not self.ops.listen:
            overrides["ops.listen"] = DEFAULT_OPS_LISTEN
        if not self.admin.listen:
            overrides["admin.listen"] = DEFAULT_ADMIN_LISTEN
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
        """Check every value, so that a bad config stops the process before anything
        binds, with an error naming the key."""
        self._validate_numbers()
        for dotted in ENDPOINT_KEYS:
            section, key = dotted.split(".")
            value = getattr(getattr(self, section), key)
            problem = endpoint_problem(value) if value else None
            if problem:
                raise ConfigError(f"{dotted}: {problem}")
        advertise = self.server.advertise
        if not (_HOST_NAME.match(advertise) or _is_ip(advertise)):
            raise ConfigError(
                f"server.advertise: expected an IP address or host name, got {advertise!r}"
            )
        if self.log.level not in LOG_LEVELS:
            raise ConfigError(
                f"log.level: expected one of {', '.join(LOG_LEVELS)}, got {self.log.level!r}"
            )
        if self.log.format not in LOG_FORMATS:
            raise ConfigError(
                f"log.format: expected one of {', '.join(LOG_FORMATS)}, got {self.log.format!r}"
            )
        if not self.server.data_dir.strip():
            raise ConfigError("server.data_dir: must not be empty")
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
        db = self.store.db
        if db and not db.startswith(("mysql://", "sqlite://")):
            raise ConfigError("store.db: expected mysql://... or sqlite://...")
        if db.startswith("mysql://"):
            parts = urlsplit(db)
            _check_url_port("store.db", db)
            if not parts.path.strip("/"):
                raise ConfigError("store.db: mysql://user:pw@host:port/NAME needs a database name")
        if self.store.redis:
            if not _REDIS_URL.match(self.store.redis):
                raise ConfigError("store.redis: expected redis://host:port/db (db a number)")
            _check_url_port("store.redis", self.store.redis)
        for key in ("route_server", "login_server", "file_server"):
            for address in getattr(self.msg, key).split(","):
                match = _HOST_PORT.match(address.strip())
                if address.strip() and not (match and 0 < int(match.group(2)) < 65536):
                    raise ConfigError(
                        f"msg.{key}: expected HOST:PORT (comma-separated), got {address!r}"
                    )
        if self.msg.max_pdu_size < 1024:
            raise ConfigError(f"msg.max_pdu_size: at least 1024, got {self.msg.max_pdu_size}")
        self._validate_push()
        if not 0 <= self.file.max_file_size <= 0xFFFFFFFF:
            raise ConfigError("file.max_file_size: 0 .. 4294967295 (sizes are 32-bit)")
        if self.media.public_url and not _HTTP_URL.match(self.media.public_url):
            raise ConfigError("media.public_url: expected http(s)://host[:port]/[path]")
        self._validate_cluster()
        if self.contacts.max_note_length > 255:
            raise ConfigError("contacts.max_note_length: at most 255 (the column's size)")
        if self.contacts.mode not in CONTACTS_MODES:
            raise ConfigError(
                f"contacts.mode: expected one of {', '.join(CONTACTS_MODES)}, "
                f"got {self.contacts.mode!r}"
            )

    def _validate_cluster(self) -> None:
        cluster = self.cluster
        if cluster.secret and len(cluster.secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"cluster.secret: at least {MIN_SECRET_LENGTH} characters "
                "(twistd teamtalk --generate-config makes one)"
            )
        if cluster.secret and cluster.secret_file:
            raise ConfigError("cluster.secret / cluster.secret_file: set one, not both")
        tls = (cluster.tls_cert, cluster.tls_key, cluster.tls_ca)
        if any(tls) and not all(tls):
            raise ConfigError("cluster.tls_cert / tls_key / tls_ca: set all three or none")
        for entry in cluster.node_addresses:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ConfigError(
                        f"cluster.node_addresses: {entry!r} is not a network (CIDR)"
                    ) from None

    def _validate_push(self) -> None:
        push = self.push
        if push.push_server and not _HOST_PORT.match(push.push_server):
            raise ConfigError(f"push.push_server: expected HOST:PORT, got {push.push_server!r}")
        if push.apns_key_file:
            for key in ("apns_key_id", "apns_team_id", "apns_topic"):
                if not getattr(push, key):
                    raise ConfigError(f"push.{key}: needed with push.apns_key_file")
        if push.night_start > 24 or push.night_end > 24:
            raise ConfigError("push.night_start / push.night_end: hours 0 .. 24")

    def _validate_numbers(self) -> None:
        """Every number is finite and positive, or zero where ``ZERO_ALLOWED`` says so."""
        for section_field in fields(self):
            section = getattr(self, section_field.name)
            for f in fields(section):
                if f.type not in ("int", "float"):
                    continue
                dotted = f"{section_field.name}.{f.name}"
                value = getattr(section, f.name)
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f"{dotted}: must be a finite number, got {value!r}")
                if dotted in ZERO_ALLOWED:
                    if value < 0:
                        raise ConfigError(f"{dotted}: must not be negative, got {value!r}")
                elif value <= 0:
                    raise ConfigError(f"{dotted}: must be greater than 0, got {value!r}")


#: Keys a SIGHUP applies to the running server. A change to any other key is logged as
#: needing a restart and not applied. Services read these from ``self.config`` when they
#: use them, or apply them in ``reconfigure`` when they copied the value at start.
RELOADABLE = frozenset(
    {
        "log.level",
        "server.advertise",
        "msg.max_connections",
        "msg.max_pdu_size",
        "msg.max_outbuf",
        "msg.pc_idle_timeout",
        "msg.mobile_idle_timeout",
        "msg.login_deadline",
        "msg.max_message_size",
        "msg.message_rate",
        "msg.message_burst",
        "msg.max_bytes_per_day",
        "msg.group_creations_per_hour",
        "msg.max_refusals",
        "msg.account_check_interval",
        "login.msfs",
        "login.discovery",
        "file.task_timeout",
        "file.public_addresses",
        "file.max_file_size",
        "file.min_free_disk",
        "file.max_pulls_in_flight",
        "file.offline_ttl",
        "file.max_user_offline_bytes",
        "file.max_offline_bytes",
        "file.max_tasks_per_user",
        "disk.allow_registration",
        "disk.department",
        "disk.registrations_per_hour",
        "rooms.max_members",
        "rooms.max_rooms",
        "rooms.max_post_size",
        "rooms.max_joined",
        "rooms.member_backlog",
    }
)


def changed_keys(old: Config, new: Config) -> list[str]:
    """``section.key`` of every value that differs between two configs."""
    changed = []
    for section_field in fields(old):
        a, b = getattr(old, section_field.name), getattr(new, section_field.name)
        for f in fields(a):
            if getattr(a, f.name) != getattr(b, f.name):
                changed.append(f"{section_field.name}.{f.name}")
    return changed


def reload_config(running: Config, loaded: Config) -> tuple[Config, list[str], list[str]]:
    """The config to run with after a reload: ``running`` with the ``RELOADABLE`` values
    of ``loaded``; also the keys applied and the changed keys that need a restart."""
    changed = changed_keys(running, loaded)
    applied = [key for key in changed if key in RELOADABLE]
    restart = [key for key in changed if key not in RELOADABLE]
    overrides = {}
    for dotted in applied:
        section, key = dotted.split(".")
        overrides[dotted] = getattr(getattr(loaded, section), key)
    return running.with_overrides(overrides), applied, restart


def _field_type(section: Any, key: str) -> Any:
    for f in fields(section):
        if f.name == key:
            return f.type
    raise ConfigError(f"{type(section).__name__}: unknown key {key!r}")


def _coerce(dotted: str, type_name: Any, value: Any) -> Any:
    """Turn a TOML or command-line value into the declared type, naming the key on error."""
    try:
        if type_name in ("bool", bool):
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if type_name in ("int", int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            if isinstance(value, str) and not re.fullmatch(r"\s*[-+]?\d+\s*", value):
                raise TypeError
            return int(value)
        if type_name in ("float", float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if type_name in ("bool", bool):
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise TypeError
            return value
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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_url_port(key: str, url: str) -> None:
    try:
        _ = urlsplit(url).port  # raises ValueError for a bad or out-of-range port
    except ValueError as e:
        raise ConfigError(f"{key}: {e} in {_without_password(url)!r}") from None


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def endpoint_problem(description: str) -> str | None:
    """Why a Twisted server endpoint string cannot be used, or None when it can.

    The string is parsed the way the listener will parse it (on a reactor that binds
    nothing), and TCP ports are checked, which Twisted only does when binding.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        endpoint = serverFromString(MemoryReactor(), description)
    except Exception as e:
        return f"bad endpoint {description!r}: {e}"
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        return f"bad endpoint {description!r}: port {port} is not in 0..65535"
    return None


#: Endpoint types whose listening socket takes Twisted's ``backlog=`` argument (a socket
#: handed over by systemd already has its ``Backlog=``).
_BACKLOG_ENDPOINTS = ("tcp", "tcp6", "ssl", "unix")


def with_backlog(description: str, backlog: int) -> str:
    """``description`` with ``:backlog=N`` added, unless it names one or its type takes
    none."""
    parts = re.split(r"(?<!\\):", description)
    if parts[0] not in _BACKLOG_ENDPOINTS or any(p.startswith("backlog=") for p in parts[1:]):
        return description
    return f"{description}:backlog={backlog}"


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


def endpoint_port(description: str) -> int | None:
    """The port of a ``tcp:PORT[:...]`` endpoint string (None for other endpoints)."""
    parts = re.split(r"(?<!\\):", description)
    if len(parts) >= 2 and parts[0] in ("tcp", "tcp6") and parts[1].isdigit():
        return int(parts[1])
    return None


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
# SIGHUP (systemctl reload teamtalk) re-reads it: log level, limits, timeouts, the
# advertised address and the discovery URLs apply at once; listeners, services and
# store settings need a restart (the log says which).

[server]
# Which services this process hosts: any of "msg", "route", "file", "login", "media",
# "disk", "admin".
services = ["msg", "route", "file", "login", "media", "disk", "admin"]
# Where the embedded SQLite database and stored offline files live.
data_dir = "./var"
# The address clients are told to connect to (returned by /msg_server). Set it to
# an address your clients can reach; a loopback address only works on this machine.
# It also picks where listeners with no explicit endpoint bind: 127.0.0.1 only while
# this is a loopback address, every interface otherwise.
advertise = "127.0.0.1"
# Connections the kernel queues per listener until the server accepts them (a login
# burst after a restart). The kernel caps it at net.core.somaxconn: raise that too
# (sysctl net.core.somaxconn=4096) if your system's is lower. An endpoint string with
# its own ":backlog=N" keeps it.
listen_backlog = 1024
# Seconds an HTTP client (login, ops, media, disk) has to send a request's line and
# headers, however slowly they trickle in; a slower one is disconnected.
http_header_timeout = 10.0

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
# Limits per user, on by default (0 turns one off). Messages: a burst of message_burst,
# then message_rate a second (the reference's own cap); and bytes of messages stored per
# day (UTC). A message over a limit is refused with msg_id 0 in its ack, never dropped
# silently; so is a group creation past group_creations_per_hour (result_code 1).
message_rate = 20.0
message_burst = 100
max_bytes_per_day = 104857600
group_creations_per_hour = 20
# A connection that keeps running into these limits is closed: it may collect this many
# refusals, one more each second.
max_refusals = 50
# Seconds between checks for users whose live sessions must end (disabled, password
# changed, kicked with teamtalk-admin): they are kicked within this time on every node.
account_check_interval = 2.0
# Threads beside the reactor's that share the sends of a status change reaching thousands
# of PC connections (each send is mostly kernel work, which a second core can do): one
# halves it on two cores; 0: the reactor thread sends alone.
fanout_threads = 1
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
# Where msg nodes in other processes report their address and load, e.g.
# "tcp:8100:interface=10.0.0.1". Empty: port 8100 in a process without a msg service,
# closed otherwise (a co-hosted msg service reports in-process). Links must prove the
# cluster secret ([cluster]).
internal_listen = ""
# Returned verbatim to clients as msfsPrior/msfsBackup (empty: media.public_url) and
# discovery.
msfs = ""
discovery = "http://127.0.0.1/api/discovery"

[file]
listen = ""
# Where msg nodes in other processes create transfer tasks (default 8601 in a process
# without a msg service, closed otherwise; authenticated like every internal port).
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
# Blocks (32 KiB) the server asks an offline uploader for ahead of time: the next
# window arrives while the last one is written and fsynced, so an upload holds at most
# two windows in memory (4 MiB at 64), and each fsync covers up to one window.
max_pulls_in_flight = 64
# Seconds an offline file (or an abandoned upload) is kept after its last activity.
offline_ttl = 2592000.0
# Offline-file bytes one sender may have stored (uploads in progress count at their full
# size), and all senders together; transfer tasks one user may have open at once. A
# request past any of them is answered with result 1 (0 turns one off).
max_user_offline_bytes = 4294967296
max_offline_bytes = 68719476736
max_tasks_per_user = 10
# A file login for a task is accepted only from the address of one of that user's msg
# connections (the msg node tells the file service). Turn off only if your clients' msg
# and file connections leave from different public addresses (some carrier NATs).
bind_logins = true

[route]
# Where msg nodes link to, e.g. "tcp:8200:interface=10.0.0.1" (default 8200 in a process
# without a msg service, closed otherwise; authenticated like every internal port).
listen = ""

[ops]
# /health, /ready, /metrics (Prometheus) and /online for operators. Empty: port 8090 on
# 127.0.0.1 only, whatever server.advertise says (they show who is online).
listen = ""
# Also serve /health, /ready and /metrics (not /online) on the login HTTP listener.
on_http = false

[log]
# debug, info, warn, error or critical (SIGHUP applies a change).
level = "info"
# "text" (Twisted's format) or "json": one JSON object per line with the message
# rendered and the structured fields kept.
format = "text"
[push]
# Offline push to mobile devices, on when a sender is configured. After a message is
# stored, the node that accepted it pushes to the receivers' stored device tokens.
# APNs with token-based authentication: the .p8 key, its key id, the team id and the
# app's bundle id (apns-topic). Sandbox: apns_host = "api.sandbox.push.apple.com".
apns_key_file = ""
apns_key_id = ""
apns_team_id = ""
apns_topic = ""
apns_host = "api.push.apple.com"
# FCM HTTP v1: the Firebase service account JSON file (project id and token URI from it).
fcm_service_account = ""
fcm_endpoint = "https://fcm.googleapis.com"
# TeamTalk's own push_server, HOST:PORT (e.g. "10.0.0.1:8500"), for the platforms that
# have no APNs/FCM configured here.
push_server = ""
# PEM file of CAs trusted for APNs/FCM instead of the system's (empty: the system's).
ca_file = ""
# Attempts before a push goes to the dead letter, and seconds before it expires.
max_attempts = 10
max_age = 3600.0
# Pushes queued at most; past that, new pushes wait in the store's outbox (none dropped).
max_queue = 100000
# Pushes being sent at once by this node.
max_in_flight = 64
# Retry back-off: retry_base * 2^(attempt-1) seconds, at most retry_cap, with jitter.
retry_base = 1.0
retry_cap = 300.0
# Seconds a node may hold a push it is sending before another node may take it over.
lease = 60.0
# Seconds before another node takes over messages whose node stopped before pushing.
outbox_grace = 30.0
# Pushes are decided at most this often (seconds); one conversation's messages decided
# together give one push, the newest (they share a collapse id, so the device would
# replace the older ones anyway; the badge counts them all). A message after a quiet
# spell is decided at once; under load a push waits up to this long. Each round costs
# the node a few store reads and writes plus a send per conversation (`bench push
# --repeat 12`, 10 busy conversations: server CPU per message +9.5 % with push at
# 0.05 s, +6 % at 0.25 s). 0: every message pushed.
coalesce_window = 0.25
# The reference's night mute (local time): iOS users with the push shield set get no
# push from night_start:00 to night_end:00.
night_start = 22
night_end = 8

[cluster]
# Every node of a cluster shares this secret; each route, login-internal and
# file-internal link proves it with an HMAC-SHA256 challenge over both sides' nonces
# (the secret itself is never sent). A node that links to others refuses to start
# without one. A single process that opens an internal port while this is empty
# generates one into data_dir/cluster.secret. This one was generated for you.
secret = "{secret}"
# Or read it from a file (keep it readable by the server only): secret_file = "/etc/teamtalk/secret"
secret_file = ""
# Mutual TLS on the same links (PEM files: this node's certificate and key, and the CA
# that signed every node's certificate). All three or none.
tls_cert = ""
tls_key = ""
tls_ca = ""
# Addresses msg nodes may tell the login service to send clients to: IPs, CIDRs
# ("203.0.113.0/24") or host names. Empty: only the address each node links from.
node_addresses = []

[media]
# HTTP picture/avatar store (TeamTalk's msfs), tus resumable uploads and downloads.
# Empty listen: port 8700, bound as server.advertise says.
listen = ""
# The base of every URL handed out (msfsPrior/msfsBackup, upload answers), ending in "/".
# Empty: "http://<server.advertise>:<media port>/". Never taken from a Host header.
public_url = ""
# The deduplicated content store. Empty: "<data_dir>/media". The nodes of a cluster
# must share it (one mounted directory, see README "Cluster").
store_dir = ""
# Old clients upload pictures without credentials; false requires a bearer token.
anonymous_uploads = true
# Largest picture (msfs upload) in bytes; larger ones get error_code 1.
max_picture_size = 5242880
# Per client IP: picture uploads per minute and upload bytes per hour (0 = no limit).
uploads_per_minute = 120
upload_bytes_per_hour = 1073741824
# Largest resumable (tus) upload, bytes stored per user (0 = no limit), and the disk
# space every upload must leave free.
max_upload_size = 4294967296
user_quota = 10737418240
min_free_disk = 268435456
# Seconds an unfinished resumable upload is kept after its last byte arrived.
upload_expiry = 86400.0
# Seconds a blob nobody references any more is kept before the sweep deletes it.
unreferenced_grace = 3600.0
# Seconds an API token (POST /api/v1/token) stays valid.
token_ttl = 2592000.0
# Hosts besides this service whose URLs clients may set as their avatar.
avatar_hosts = []

[disk]
# The cloud disk: the seed system's HTTP API (/reg, /login, /upload, /md5, /myfiles,
# /dealfile, /sharefiles, /dealsharefile). Files live in the media content store and
# count against media.user_quota; downloads are served by the media service.
# Empty listen: port 8800, bound as server.advertise says.
listen = ""
# Let anybody create an account with POST /reg (TeamTalk sites create accounts with
# teamtalk-admin; a registered user can also log in with the TeamTalk clients).
allow_registration = false
# The department self-registered users join (created at the first registration).
department = "Cloud disk"
# Registrations per client address per hour (0 = no limit).
registrations_per_hour = 10

[contacts]
# The contacts extension (docs/EXTENSION.md; clients opt in, TeamTalk's see no change).
# "directory": TeamTalk's company directory, no friend requests (the default).
# "contacts": friends only: the buddy list shows friends, 1:1 messages need friendship.
# "both": the company directory plus friend requests.
mode = "directory"
# Most users one search answers.
max_search_results = 50
# Longest friend-request note or remark name, in characters.
max_note_length = 200

[rooms]
# Chat rooms (docs/EXTENSION.md): joined by id, posts reach members while they are in
# the room, nothing is stored. In a cluster the route service's max_members and
# max_rooms hold for every node.
enabled = true
max_members = 1000
max_rooms = 10000
# Largest post in bytes.
max_post_size = 4096
# Rooms one connection may be in at once.
max_joined = 100
# Bytes waiting for a member that reads too slowly before it is dropped from a room.
member_backlog = 1048576

[admin]
# The admin REST API (/admin/api/v1/) and web console (/admin/). Empty listen:
# "tcp:8900:interface=127.0.0.1", loopback only whatever server.advertise says; name an
# interface only behind TLS (a reverse proxy). The first admin token:
# teamtalk-admin admin-token create NAME
listen = ""
"""


def generated_config() -> str:
    """The commented config ``--generate-config`` prints, with a fresh cluster secret."""
    return GENERATED_CONFIG.replace("{secret}", generate_secret())


def generate_secret() -> str:
    return secrets.token_urlsafe(32)
