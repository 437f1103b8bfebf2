"""Who may speak on a server-to-server link: the cluster secret and (optionally) TLS.

The reference trusted anyone who reached its route, login-internal and file-internal
ports; a raw socket could relay messages in any user's name, kick anyone, or send every
new client to a foreign address. Here every link proves membership before any other
packet is accepted:

* **Secret.** The accepting side sends ``CID_LINK_CHALLENGE`` with a 32-byte nonce; the
  connecting side answers ``CID_LINK_RESPONSE`` with its own nonce and
  ``HMAC-SHA256(secret, "client" | purpose | server nonce | client nonce)``; the accepting
  side checks it and proves itself back with ``CID_LINK_CONFIRM`` carrying the same HMAC
  with "server". Both nonces are fresh per connection, so a recorded exchange is useless,
  and the secret never crosses the wire. ``purpose`` (``route``, ``login``, ``file``) binds
  the proof to the port it was made for.
* **TLS** (``cluster.tls_*``): the links run over TLS, each side presenting a certificate
  signed by the cluster CA and checking the other's. Without a secret the finished TLS
  handshake is the proof; with both, both are required. SIGHUP re-reads the PEM files
  (``TLSFiles.reload``): a renewed certificate serves every link made afterwards, links
  already up keep theirs.

The bodies are raw bytes (fixed sizes) under command ids of ``SID_OTHER`` that TeamTalk
does not use: these PDUs only ever pass between teamtalk_py nodes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from zope.interface import implementer

from teamtalk_py.config import (
    GENERATED_SECRET_FILE,
    MIN_SECRET_LENGTH,
    Config,
    ConfigError,
    generate_secret,
)

CID_LINK_CHALLENGE = 0x07A0
CID_LINK_RESPONSE = 0x07A1
CID_LINK_CONFIRM = 0x07A2
HANDSHAKE_COMMANDS = frozenset({CID_LINK_CHALLENGE, CID_LINK_RESPONSE, CID_LINK_CONFIRM})

NONCE_SIZE = 32
MAC_SIZE = hashlib.sha256().digest_size
#: Seconds a link has to complete its handshake before it is closed.
HANDSHAKE_TIMEOUT = 10.0
_LABEL = b"teamtalk-link-v1"


def new_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


class TLSFiles:
    """The cluster's certificate, key and CA, read from their files (again on reload)."""

    def __init__(self, cert: str, key: str, ca: str) -> None:
        self.paths = (cert, key, ca)
        self.pem: tuple[bytes, bytes, bytes] = self._read()
        #: Moves at each reload, so connection creators know to build anew.
        self.version = 0

    def _read(self) -> tuple[bytes, bytes, bytes]:
        try:
            cert, key, ca = (Path(p).read_bytes() for p in self.paths)
        except OSError as e:
            raise ConfigError(f"cluster.tls_*: cannot read {e.filename}: {e.strerror}") from None
        return cert, key, ca

    def reload(self) -> bool:
        """Read the files again; True when their contents changed."""
        pem = self._read()
        _server_options(*pem)  # refuse a broken set (a key that does not match) up front
        if pem == self.pem:
            return False
        self.pem = pem
        self.version += 1
        return True


def _server_options(cert: bytes, key: bytes, ca: bytes) -> Any:
    from twisted.internet import ssl

    own = ssl.PrivateCertificate.loadPEM(cert + b"\n" + key)
    return ssl.CertificateOptions(
        privateKey=own.privateKey.original,
        certificate=own.original,
        verify=True,
        caCerts=[ssl.Certificate.loadPEM(ca).original],
        requireCertificate=True,
    )


def _client_options(host: str, cert: bytes, key: bytes, ca: bytes) -> Any:
    from twisted.internet import ssl

    return ssl.optionsForClientTLS(
        host,
        trustRoot=ssl.Certificate.loadPEM(ca),
        clientCertificate=ssl.PrivateCertificate.loadPEM(cert + b"\n" + key),
    )


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class CurrentTLS:
    """TLS for one listener (``host`` None) or one outgoing link, made from the files'
    current contents at each new connection (rebuilt only after a reload)."""

    def __init__(self, files: TLSFiles, host: str | None = None) -> None:
        self.files = files
        self.host = host
        self._built: tuple[int, Any] | None = None

    def _options(self) -> Any:
        if self._built is None or self._built[0] != self.files.version:
            pem = self.files.pem
            options = (
                _server_options(*pem) if self.host is None else _client_options(self.host, *pem)
            )
            self._built = (self.files.version, options)
        return self._built[1]

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._options().getContext(), None)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection: SSL.Connection = self._options().clientConnectionForTLS(tlsProtocol)
        return connection


@dataclass(frozen=True)
class LinkAuth:
    """This node's credentials for its links; one per process, shared by every link."""

    secret: bytes | None
    #: (certificate PEM, key PEM, CA PEM) when mutual TLS is configured.
    tls: tuple[bytes, bytes, bytes] | None = None
    #: No proof at all: only for outgoing links to the reference's own servers, which
    #: know no handshake (``TEAMTALK_PEER``).
    plain: bool = False
    #: Where ``tls`` came from, re-read by a reload (``from_config``).
    tls_files: TLSFiles | None = field(default=None, compare=False)

    @classmethod
    def from_config(cls, config: Config) -> LinkAuth:
        """The credentials in ``config`` (after ``resolve_cluster_secret``)."""
        cluster = config.cluster
        secret = cluster.secret.encode() if cluster.secret else None
        files = None
        if cluster.tls_cert:
            files = TLSFiles(cluster.tls_cert, cluster.tls_key, cluster.tls_ca)
        if secret is None and files is None:
            raise ConfigError("cluster.secret: server links need the cluster secret (or TLS)")
        return cls(secret, files.pem if files is not None else None, tls_files=files)

    def _mac(self, role: bytes, purpose: str, server_nonce: bytes, client_nonce: bytes) -> bytes:
        assert self.secret is not None
        message = b"\0".join((_LABEL, role, purpose.encode())) + server_nonce + client_nonce
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def client_proof(self, purpose: str, server_nonce: bytes, client_nonce: bytes) -> bytes:
        return self._mac(b"client", purpose, server_nonce, client_nonce)

    def server_proof(self, purpose: str, server_nonce: bytes, client_nonce: bytes) -> bytes:
        return self._mac(b"server", purpose, server_nonce, client_nonce)

    # -- TLS ---------------------------------------------------------------------------

    def server_tls(self) -> Any:
        """For accepting links: our certificate, the peer's required (the files' current
        contents when they came from the config)."""
        if self.tls_files is not None:
            return CurrentTLS(self.tls_files)
        return _server_options(*self.tls)  # type: ignore[misc]

    def client_tls(self, host: str) -> Any:
        """For outgoing links: the peer must be ``host`` under our CA."""
        if self.tls_files is not None:
            return CurrentTLS(self.tls_files, host)
        return _client_options(host, *self.tls)  # type: ignore[misc]


#: How we link to TeamTalk's own push_server: plain PDUs, as the reference does.
TEAMTALK_PEER = LinkAuth(secret=None, plain=True)


def resolve_cluster_secret(config: Config, *, generate: bool = True) -> Config:
    """``config`` with ``cluster.secret`` filled in, wherever it comes from.

    In order: the config's ``secret``, its ``secret_file``, ``DATA_DIR/cluster.secret``.
    A process that needs one and has none generates it into the data dir when it hosts
    every service (a single server that opened an internal port); a node of a multi-node
    setup must be given one, so it is refused (``ConfigError``). TLS alone also counts.
    ``generate=False`` checks without writing anything.
    """
    cluster = config.cluster
    secret = cluster.secret
    if not secret and cluster.secret_file:
        secret = _read_secret(Path(cluster.secret_file), "cluster.secret_file")
    generated = config.data_dir / GENERATED_SECRET_FILE
    if not secret and generated.exists():
        secret = _read_secret(generated, str(generated))
    if secret or not config.has_node_links or config.tls_configured:
        return config.with_overrides({"cluster.secret": secret, "cluster.secret_file": ""})
    if not config.hosts_every_service:
        raise ConfigError(
            "cluster.secret: this node links to other nodes "
            f"({', '.join(sorted({*config.internal_listeners(), *config.outgoing_links()}))}) "
            "and needs the cluster secret; set cluster.secret or cluster.secret_file "
            "(twistd teamtalk --generate-config prints a config with a fresh one)"
        )
    if not generate:
        return config
    secret = generate_secret()
    generated.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(generated, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return config.with_overrides({"cluster.secret": secret})


def _read_secret(path: Path, key: str) -> str:
    try:
        secret = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror}") from None
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{key}: the secret in {path} is shorter than {MIN_SECRET_LENGTH}")
    return secret
