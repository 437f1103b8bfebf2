"""``twistd teamtalk``: command-line options and ``makeService``.

The process hosts any subset of the msg, route, file, login, media, disk and admin services (all
of them by default) plus the store, as named children of one ``ServiceCollection``.

Whatever stops the server from starting is reported as one line and a non-zero exit
status: a bad option or config value before anything binds (exit 78, ``EX_CONFIG``, so
systemd's ``RestartPreventExitStatus=`` can tell it from a crash), an unusable data
directory before anything binds (exit 1), a listener or database that fails while
starting (exit 1, see ``ServiceCollection.startup_failed``).
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from twisted.logger import ILogObserver, Logger
from twisted.python import usage

from teamtalk_py import __version__, logs
from teamtalk_py.config import (
    GENERATED_SECRET_FILE,
    LOG_FORMATS,
    LOG_LEVELS,
    Config,
    ConfigError,
    endpoint_is_loopback_only,
    endpoint_string,
    generated_config,
    is_loopback_host,
    load_config,
)
from teamtalk_py.datadir import DataDirError, prepare_data_dir
from teamtalk_py.node import Node
from teamtalk_py.services import ServiceCollection
from teamtalk_py.wire.link_auth import resolve_cluster_secret

log = Logger(namespace="teamtalk")

#: sysexits.h: a usage error, and a configuration error.
EXIT_USAGE = 2
EXIT_CONFIG = 78

#: Command-line option -> config key; the option wins over the config file.
OVERRIDES = {
    "data-dir": "server.data_dir",
    "services": "server.services",
    "advertise": "server.advertise",
    "msg-listen": "msg.listen",
    "http-listen": "login.http_listen",
    "file-listen": "file.listen",
    "route-listen": "route.listen",
    "login-internal-listen": "login.internal_listen",
    "file-internal-listen": "file.internal_listen",
    "media-listen": "media.listen",
    "media-url": "media.public_url",
    "media-dir": "media.store_dir",
    "disk-listen": "disk.listen",
    "admin-listen": "admin.listen",
    "db": "store.db",
    "redis": "store.redis",
    "route-server": "msg.route_server",
    "login-server": "msg.login_server",
    "file-server": "msg.file_server",
    "ops-listen": "ops.listen",
    "log-level": "log.level",
    "log-format": "log.format",
    "push-server": "push.push_server",
    "cluster-secret-file": "cluster.secret_file",
    "contacts-mode": "contacts.mode",
}
ENDPOINT_OPTIONS = {
    "msg-listen",
    "http-listen",
    "file-listen",
    "route-listen",
    "login-internal-listen",
    "file-internal-listen",
    "ops-listen",
    "media-listen",
    "disk-listen",
    "admin-listen",
}
#: Command-line flags -> config key; given, they set the key to true.
FLAG_OVERRIDES = {"allow-registration": "disk.allow_registration"}


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a TeamTalk-compatible IM server. With no options it hosts the msg, route, "
        "file, login, media, disk and admin services in this process on an embedded SQLite "
        "store in ./var. "
        "(*) Listeners without an explicit endpoint bind 127.0.0.1 while --advertise is a "
        "loopback address (the default), and every interface once --advertise names an "
        "address clients can reach."
    )
    optFlags = [
        ["generate-config", None, "Print a commented config file with every default and exit."],
        [
            "allow-registration",
            None,
            "Let anybody create an account with the cloud disk's POST /reg [off].",
        ],
    ]
    optParameters = [
        ["config", "c", None, "TOML config file (see --generate-config)."],
        ["data-dir", "d", None, "Directory for the SQLite database and stored files [./var]."],
        [
            "services",
            None,
            None,
            "Comma-separated services to host: msg,route,file,login,media,disk,admin [all].",
        ],
        ["advertise", None, None, "Address told to clients by /msg_server [127.0.0.1]."],
        ["msg-listen", None, None, "msg service endpoint, e.g. tcp:8000 [port 8000 (*)]."],
        ["http-listen", None, None, "login HTTP endpoint [port 8080 (*)]."],
        ["file-listen", None, None, "file service client endpoint [port 8600 (*)]."],
        ["route-listen", None, None, "route service endpoint [port 8200 (*)]."],
        [
            "login-internal-listen",
            None,
            None,
            "login endpoint msg nodes report to [port 8100 (*)].",
        ],
        ["file-internal-listen", None, None, "file endpoint msg nodes use [port 8601 (*)]."],
        ["media-listen", None, None, "media (msfs, uploads) HTTP endpoint [port 8700 (*)]."],
        ["media-url", None, None, "Public base URL of the media service [http://ADVERTISE:8700/]."],
        ["media-dir", None, None, "Content store directory, shared in a cluster [DATA_DIR/media]."],
        ["disk-listen", None, None, "cloud disk HTTP endpoint [port 8800 (*)]."],
        [
            "admin-listen",
            None,
            None,
            "admin API and web console endpoint [tcp:8900:interface=127.0.0.1].",
        ],
        ["db", None, None, "Database URL, mysql://user:pw@host:3306/name [embedded SQLite]."],
        ["redis", None, None, "Redis URL for a cluster, redis://127.0.0.1:6379/0 [none]."],
        ["route-server", None, None, "HOST:PORT of the route service, when not in-process."],
        ["login-server", None, None, "HOST:PORT of the login service, when not in-process."],
        ["file-server", None, None, "HOST:PORT of the file service, when not in-process."],
        [
            "ops-listen",
            None,
            None,
            "Endpoint of /metrics (Prometheus), /health, /ready and /online "
            "[tcp:8090:interface=127.0.0.1].",
        ],
        ["log-level", None, None, f"Log level: {', '.join(LOG_LEVELS)} [info]."],
        ["log-format", None, None, f"Log format: {', '.join(LOG_FORMATS)} [text]."],
        ["push-server", None, None, "HOST:PORT of a TeamTalk push_server for offline push."],
        [
            "cluster-secret-file",
            None,
            None,
            "File holding the cluster secret server links prove (see [cluster]).",
        ],
        [
            "contacts-mode",
            None,
            None,
            "directory (TeamTalk's), contacts (friends only) or both [directory].",
        ],
    ]

    def opt_version(self) -> None:
        """Print teamtalk_py's version and exit."""
        print(
            f"teamtalk_py {__version__} (Twisted {_twisted_version()}, "
            f"Python {platform.python_version()})"
        )
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Any error is one line on stderr (not twistd's page of usage) and exit 2/78."""
        try:
            super().parseOptions(options)
        except ConfigError as e:
            fail(str(e), EXIT_CONFIG)
        except usage.UsageError as e:
            fail(f"{e} (see twistd teamtalk --help)", EXIT_USAGE)

    def postOptions(self) -> None:
        if self["generate-config"]:
            sys.stdout.write(generated_config())
            sys.stdout.flush()
            raise SystemExit(0)
        self.config = build_config(self)
        # Refuse a node of a multi-node setup without credentials before anything starts.
        resolve_cluster_secret(self.config.with_default_listeners(), generate=False)


def fail(message: str, status: int) -> None:
    """End the process before the reactor runs: one line on stderr, ``status``."""
    sys.stderr.write(f"twistd teamtalk: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def _twisted_version() -> str:
    from twisted import __version__ as twisted_version

    return twisted_version


def build_config(options: Any) -> Config:
    """The config file (if any) with the command-line options applied on top."""
    config = load_config(options.get("config"))
    overrides: dict[str, Any] = {}
    for option, key in OVERRIDES.items():
        value = options.get(option)
        if value is not None and option in ENDPOINT_OPTIONS:
            value = endpoint_string(value)
        overrides[key] = value
    for option, key in FLAG_OVERRIDES.items():
        if options.get(option):
            overrides[key] = True
    return config.with_overrides(overrides)


def listeners(config: Config) -> list[str]:
    """The client-facing endpoint strings this process will bind."""
    hosted = set(config.server.services)
    result = []
    if "msg" in hosted:
        result.append(config.msg.listen)
    if "login" in hosted:
        result.append(config.login.http_listen)
    if "file" in hosted:
        result.append(config.file.listen)
    if "media" in hosted:
        result.append(config.media.listen)
    if "disk" in hosted:
        result.append(config.disk.listen)
    return result


def warn_about_advertise(config: Config) -> str | None:
    """The top support question: clients told 127.0.0.1 while we listen publicly."""
    if not is_loopback_host(config.server.advertise):
        return None
    public = [e for e in listeners(config) if not endpoint_is_loopback_only(e)]
    if not public:
        return None
    return (
        f"advertising the loopback address {config.server.advertise} to clients while "
        f"listening on non-loopback interfaces ({', '.join(public)}): clients on other "
        "machines will be told to connect to themselves. Set --advertise to an address "
        "they can reach."
    )


def makeService(options: Any, reactor: Any = None) -> ServiceCollection:
    """Build the service collection from parsed ``Options`` (or a dict of them) for the
    ``twistd`` process: it owns signals, the exit status and the log output."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    config = options.config if hasattr(options, "config") else build_config(options)
    logs.set_level(config.log.level)
    try:
        prepare_data_dir(config)
    except DataDirError as e:
        fail(str(e), 1)
    collection = build_services(reactor, config)
    collection.owns_process = True
    collection.load_config = lambda: resolve_cluster_secret(
        build_config(options).with_default_listeners()
    )
    collection.on_reconfigure.append(lambda new: logs.set_level(new.log.level))
    collection.log_observer = log_observer(options, config)
    return collection


def log_observer(options: Any, config: Config) -> ILogObserver | None:
    """The observer twistd should log through: ``log.format`` on twistd's output (stdout,
    or ``--logfile``), filtered by ``log.level``. None leaves twistd's choice alone
    (``--logger``, ``--syslog``)."""
    twistd = getattr(options, "parent", None) or {}
    if twistd.get("logger") or twistd.get("syslog"):
        return None
    logfile = twistd.get("logfile")
    if not logfile and not twistd.get("nodaemon", True):
        logfile = "twistd.log"  # twistd's own default for a daemon
    if logfile and logfile != "-":
        from twisted.python.logfile import LogFile

        return logs.observer(config.log.format, LogFile.fromFullPath(logfile))
    return logs.observer(config.log.format, sys.stdout)


def build_services(reactor: Any, config: Config) -> ServiceCollection:
    """The service collection of this process (``build_node``'s)."""
    return build_node(reactor, config).collection


def build_node(reactor: Any, config: Config) -> Node:
    """Build each hosted service once, handing it its collaborators (``node.py``).

    Built in the order of what needs what; ``Node.services`` says the order they start in,
    and the node's ``collection`` holds them in that order.
    """
    from teamtalk_py.admin_api.service import AdminService
    from teamtalk_py.disk.service import DiskService
    from teamtalk_py.file.service import FileService
    from teamtalk_py.login.service import LoginService
    from teamtalk_py.media.service import MediaService
    from teamtalk_py.msg.realm import login_lockout
    from teamtalk_py.msg.service import MsgService
    from teamtalk_py.ops import OpsService
    from teamtalk_py.push.service import PushOutbox, PushService
    from teamtalk_py.route.service import RouteService
    from teamtalk_py.shared_state import SharedState
    from teamtalk_py.store.service import StoreService

    config = config.with_default_listeners()
    had_secret = bool(config.cluster.secret or config.cluster.secret_file)
    config = resolve_cluster_secret(config)
    if config.has_node_links and config.cluster.secret and not had_secret:
        log.info(
            "cluster secret for server links: {path} (give every node the same one)",
            path=config.data_dir / GENERATED_SECRET_FILE,
        )
    warning = warn_about_advertise(config)
    if warning:
        log.warn("WARNING: {warning}", warning=warning)
    hosted = set(config.server.services)
    needs_store = hosted & {"msg", "file", "login", "media", "disk", "admin"}
    store = StoreService(reactor, config) if needs_store else None
    # Redis with --redis, else this process's memory (shared_state.py).
    needs_shared = hosted & {"msg", "file", "media", "disk", "admin"}
    shared = SharedState(reactor, config) if needs_shared else None
    route = RouteService(reactor, config) if "route" in hosted else None
    msg_store = store if "msg" in hosted else None
    # Token requests and console sign-ins count failed logins with msg's lockout.
    lockout = login_lockout(reactor, shared, msg_store) if msg_store is not None else None
    media = None
    if "media" in hosted:
        assert store is not None
        media = MediaService(reactor, config, store, shared, attempts=lockout)
    # /msg_server hands out the co-hosted media service's URL (its bound port), avatars
    # are checked against it, and the disk's download URLs are the media service's.
    media_url = media.public_url if media is not None else None
    login = LoginService(reactor, config, media_url=media_url) if "login" in hosted else None
    files = FileService(reactor, config, store, shared) if "file" in hosted else None
    outbox = (
        PushOutbox(coalesce=config.push.coalesce_window > 0)
        if msg_store is not None and config.push.enabled
        else None
    )
    msg = None
    if msg_store is not None:
        msg = MsgService(
            reactor,
            config,
            msg_store,
            shared=shared,
            route=route,
            login=login,
            files=files,
            outbox=outbox,
            lockout=lockout,
            media_url=media_url,
        )
    push = None
    if msg is not None and outbox is not None:
        assert msg_store is not None
        push = PushService(reactor, config, msg_store, shared, outbox, presence=msg)
    disk = None
    if "disk" in hosted:
        assert store is not None
        disk = DiskService(reactor, config, store, shared, attempts=lockout, media_url=media_url)
    admin = None
    if "admin" in hosted:
        assert store is not None
        admin = AdminService(
            reactor, config, store, shared, attempts=lockout, msg=msg, route=route, login=login
        )
    node = Node(
        reactor=reactor,
        config=config,
        ops=OpsService(reactor, config, msg=msg, route=route),
        store=store,
        shared=shared,
        route=route,
        login=login,
        files=files,
        msg=msg,
        media=media,
        disk=disk,
        admin=admin,
        push=push,
        outbox=outbox,
        lockout=lockout,
    )
    for service in node.services():
        service.setServiceParent(node.collection)
    return node
