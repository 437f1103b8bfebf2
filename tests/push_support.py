"""Local stand-ins for the push services, checking requests as Apple and Google document
them, and the keys and certificates they need.

* ``FakeApns``: HTTP/2 over TLS (ALPN ``h2``) on 127.0.0.1. Each POST must be
  ``/3/device/<token>`` over HTTP/2 with ``authorization: bearer <JWT>`` (ES256, header
  ``kid`` = the key id, claims ``iss`` = the team id and an ``iat`` less than an hour old,
  verified with the test key's public half), ``apns-topic``, ``apns-push-type`` (alert or
  background), ``apns-priority`` (10, 5 or 1; 10 only for a user-visible push, 5 for
  background), ``apns-expiration`` (a number), ``apns-collapse-id`` (at most 64 bytes),
  ``apns-id`` (a lower-case canonical UUID) and a JSON body of at most 4096 bytes with an
  ``aps`` dictionary (an alert push shows an alert, badge or sound; a background push
  carries only ``content-available: 1``). Bad requests get 400/403 with Apple's reasons,
  recorded in ``rejected``. Good ones get 200 with ``apns-id``, or 410 ``Unregistered``
  for tokens in ``dead_tokens``, or 429 ``TooManyRequests`` while ``throttle`` > 0, or
  503 ``ServiceUnavailable`` while ``unavailable`` > 0; while ``hold`` is set they wait
  unanswered (a slow APNs) until ``release()``.
* ``FakeFcm``: HTTPS with an OAuth2 token endpoint for google-auth's service-account flow
  (a form POST of ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and an RS256
  ``assertion`` with ``iss`` = the account's e-mail, ``aud`` = Google's token endpoint, the FCM
  ``scope``, ``exp`` at most an hour after ``iat``) and ``POST
  /v1/projects/<project>/messages:send`` that requires a bearer token it issued and a
  ``message`` with a ``token``, string-only ``data``, Android priority NORMAL or HIGH and
  a ``ttl`` like ``"3600s"``. ``dead_tokens`` get 404 ``UNREGISTERED``.
* ``FakePushServer``: TeamTalk's push_server on the PDU layer: echoes heartbeats, answers
  ``CID_OTHER_PUSH_TO_USER_REQ`` with ``CID_OTHER_PUSH_TO_USER_RSP`` (seq 0, as the
  reference) and closes on anything else.
"""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.internet import protocol, ssl
from twisted.web import resource, server

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Server_pb2
from teamtalk_py.protocol.header import HEADER_SIZE, PduHeader, pack_pdu

TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
TOPIC = "com.example.teamtalk"
PROJECT = "tt-test-project"
ACCOUNT_EMAIL = "push@tt-test-project.iam.gserviceaccount.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: The ``aud`` of a service account's JWT assertion, as Google documents it.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _pem_private(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class PushKeys:
    """A TLS CA and server certificate for 127.0.0.1, an APNs .p8 key and an FCM service
    account, written to ``directory``."""

    directory: Path
    ca_file: Path = field(init=False)
    apns_key_file: Path = field(init=False)
    service_account_file: Path = field(init=False)

    def __post_init__(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "teamtalk test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        self.tls_key = ec.generate_private_key(ec.SECP256R1())
        import ipaddress

        self.tls_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(self.tls_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = d / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.apns_key = ec.generate_private_key(ec.SECP256R1())
        self.apns_key_file = d / f"AuthKey_{KEY_ID}.p8"
        self.apns_key_file.write_bytes(_pem_private(self.apns_key))
        self.account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.service_account_file = d / "service-account.json"

    def write_service_account(self, token_uri: str) -> Path:
        account = {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": _pem_private(self.account_key).decode(),
            "client_email": ACCOUNT_EMAIL,
            "client_id": "1234567890",
            "token_uri": token_uri,
        }
        self.service_account_file.write_text(json.dumps(account))
        return self.service_account_file

    def tls_options(self) -> ssl.CertificateOptions:
        from OpenSSL import crypto

        key = crypto.PKey.from_cryptography_key(self.tls_key)
        cert = crypto.X509.from_cryptography(self.tls_cert)
        return ssl.CertificateOptions(
            privateKey=key, certificate=cert, acceptableProtocols=[b"h2", b"http/1.1"]
        )


def _header(request: Any, name: str) -> str | None:
    value = request.getHeader(name)
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Notification:
    """A request the fake service accepted (whatever it answered)."""

    token: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int


class _Site(server.Site):
    noisy = False


class FakeApns(resource.Resource):
    isLeaf = True

    def __init__(self, keys: PushKeys, clock=time.time) -> None:
        super().__init__()
        self.public_key = keys.apns_key.public_key()
        self.clock = clock
        self.accepted: list[Notification] = []
        self.rejected: list[str] = []
        self.dead_tokens: set[str] = set()
        self.throttle = 0
        #: While > 0, good requests get 503 ``ServiceUnavailable`` (counted down).
        self.unavailable = 0
        #: While set, good requests are recorded in ``held`` and not answered until
        #: ``release()``.
        self.hold = False
        self.held: list[Notification] = []
        self._held_requests: list[tuple[Any, Notification]] = []
        self.port: Any = None

    def render_POST(self, request: Any) -> bytes:
        error = self._check(request)
        if error is not None:
            status, reason = error
            self.rejected.append(reason)
            request.setResponseCode(status)
            request.setHeader("content-type", "application/json")
            return json.dumps({"reason": reason}).encode()
        token = request.path.decode().rsplit("/", 1)[1]
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        body = json.loads(request.content.getvalue())
        notification = Notification(token, headers, body, 0)
        if self.hold:
            self.held.append(notification)
            self._held_requests.append((request, notification))
            return server.NOT_DONE_YET
        return self._answer(request, notification)

    def _answer(self, request: Any, notification: Notification) -> bytes:
        request.setHeader("apns-id", notification.headers["apns-id"])
        if notification.token in self.dead_tokens:
            status, answer = 410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
        elif self.throttle > 0:
            self.throttle -= 1
            status, answer = 429, {"reason": "TooManyRequests"}
        elif self.unavailable > 0:
            self.unavailable -= 1
            status, answer = 503, {"reason": "ServiceUnavailable"}
        else:
            status, answer = 200, None
        notification.status = status
        self.accepted.append(notification)
        request.setResponseCode(status)
        if answer is None:
            return b""
        request.setHeader("content-type", "application/json")
        return json.dumps(answer).encode()

    def release(self) -> int:
        """Stop holding, and answer the held requests whose client still waits as any
        other request (they join ``accepted``); how many were answered."""
        self.hold = False
        answered = 0
        held, self._held_requests = self._held_requests, []
        for request, notification in held:
            if request.finished or getattr(request, "_disconnected", False):
                continue
            request.write(self._answer(request, notification))
            request.finish()
            answered += 1
        return answered

    def delivered(self) -> list[Notification]:
        return [n for n in self.accepted if n.status == 200]

    def _check(self, request: Any) -> tuple[int, str] | None:
        if request.clientproto != b"HTTP/2":
            return 400, f"not HTTP/2 ({request.clientproto!r})"
        match = re.fullmatch(rb"/3/device/([0-9A-Za-z]+)", request.path)
        if match is None:
            return 404, "BadPath"
        auth = _header(request, "authorization") or ""
        if not auth.startswith("bearer "):
            return 403, "MissingProviderToken"
        provider_token = auth[len("bearer ") :]
        try:
            header = jwt.get_unverified_header(provider_token)
            claims = jwt.decode(
                provider_token, self.public_key, algorithms=["ES256"],
                options={"verify_iat": False, "require": ["iss", "iat"]},
            )  # fmt: skip
        except jwt.PyJWTError as e:
            return 403, f"InvalidProviderToken ({e})"
        if header.get("alg") != "ES256" or header.get("kid") != KEY_ID:
            return 403, "InvalidProviderToken (header)"
        if claims["iss"] != TEAM_ID:
            return 403, "InvalidProviderToken (iss)"
        if not self.clock() - 3600 <= claims["iat"] <= self.clock() + 60:
            return 403, "ExpiredProviderToken"
        if _header(request, "apns-topic") != TOPIC:
            return 400, "BadTopic" if _header(request, "apns-topic") else "MissingTopic"
        push_type = _header(request, "apns-push-type")
        if push_type not in ("alert", "background"):
            return 400, "InvalidPushType"
        priority = _header(request, "apns-priority")
        if priority not in ("10", "5", "1"):
            return 400, "BadPriority"
        expiration = _header(request, "apns-expiration") or ""
        if not expiration.isdigit():
            return 400, "BadExpirationDate"
        collapse = _header(request, "apns-collapse-id")
        if collapse is not None and len(collapse.encode()) > 64:
            return 400, "BadCollapseId"
        apns_id = _header(request, "apns-id")
        if apns_id is None or not _UUID.match(apns_id):
            return 400, "BadMessageId"
        raw = request.content.getvalue()
        if len(raw) > 4096:
            return 413, "PayloadTooLarge"
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, "BadPayload"
        aps = body.get("aps") if isinstance(body, dict) else None
        if not isinstance(aps, dict):
            return 400, "PayloadEmpty"
        if push_type == "background":
            if aps != {"content-available": 1} or priority != "5":
                return 400, "background push: only content-available, priority 5"
        elif not ({"alert", "badge", "sound"} & set(aps)):
            return 400, "alert push without alert, badge or sound"
        elif priority == "10" and "alert" not in aps and "sound" not in aps:
            return 400, "priority 10 for a push without alert or sound"
        return None

    def listen(self, reactor: Any, keys: PushKeys, port: int = 0) -> Any:
        self.port = reactor.listenSSL(port, _Site(self), keys.tls_options(), interface="127.0.0.1")
        return self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port.getHost().port}"


class FakeFcm(resource.Resource):
    isLeaf = True

    def __init__(self, keys: PushKeys) -> None:
        super().__init__()
        self.public_key = keys.account_key.public_key()
        self.accepted: list[Notification] = []
        self.rejected: list[str] = []
        self.dead_tokens: set[str] = set()
        self.access_tokens: set[str] = set()
        self.token_requests = 0
        self.port: Any = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port.getHost().port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def listen(self, reactor: Any, keys: PushKeys) -> Any:
        self.port = reactor.listenSSL(0, _Site(self), keys.tls_options(), interface="127.0.0.1")
        return self.port

    def _reject(self, request: Any, status: int, grpc_status: str, why: str) -> bytes:
        self.rejected.append(why)
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        return json.dumps(
            {"error": {"code": status, "message": why, "status": grpc_status}}
        ).encode()

    def render_POST(self, request: Any) -> bytes:
        if request.path == b"/token":
            return self._token(request)
        if request.path == f"/v1/projects/{PROJECT}/messages:send".encode():
            return self._send(request)
        return self._reject(request, 404, "NOT_FOUND", f"no route {request.path!r}")

    def _token(self, request: Any) -> bytes:
        form = parse_qs(request.content.getvalue().decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return self._reject(request, 400, "INVALID_ARGUMENT", "bad grant_type")
        try:
            claims = jwt.decode(
                form["assertion"][0], self.public_key, algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
            )  # fmt: skip
        except (KeyError, jwt.PyJWTError) as e:
            return self._reject(request, 400, "INVALID_ARGUMENT", f"bad assertion: {e}")
        if claims.get("iss") != ACCOUNT_EMAIL or FCM_SCOPE not in claims.get("scope", "").split():
            return self._reject(request, 400, "INVALID_ARGUMENT", "bad iss or scope")
        if claims["exp"] - claims["iat"] > 3600:
            return self._reject(request, 400, "INVALID_ARGUMENT", "assertion lives too long")
        self.token_requests += 1
        token = f"ya29.test-{uuid.uuid4().hex}"
        self.access_tokens.add(token)
        request.setHeader("content-type", "application/json")
        return json.dumps(
            {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
        ).encode()

    def _send(self, request: Any) -> bytes:
        auth = _header(request, "authorization") or ""
        if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
            return self._reject(request, 401, "UNAUTHENTICATED", "bad bearer token")
        if _header(request, "content-type") != "application/json":
            return self._reject(request, 400, "INVALID_ARGUMENT", "not JSON")
        try:
            body = json.loads(request.content.getvalue())
            message = body["message"]
        except (ValueError, KeyError, TypeError):
            return self._reject(request, 400, "INVALID_ARGUMENT", "no message")
        why = _check_fcm_message(message)
        if why:
            return self._reject(request, 400, "INVALID_ARGUMENT", why)
        headers = {
            k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
        }
        request.setHeader("content-type", "application/json")
        if message["token"] in self.dead_tokens:
            self.accepted.append(Notification(message["token"], headers, message, 404))
            request.setResponseCode(404)
            return json.dumps(
                {
                    "error": {
                        "code": 404,
                        "message": "Requested entity was not found.",
                        "status": "NOT_FOUND",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                "errorCode": "UNREGISTERED",
                            }
                        ],
                    }
                }
            ).encode()
        self.accepted.append(Notification(message["token"], headers, message, 200))
        return json.dumps({"name": f"projects/{PROJECT}/messages/{len(self.accepted)}"}).encode()

    def delivered(self) -> list[Notification]:
        return [n for n in self.accepted if n.status == 200]


def _check_fcm_message(message: Any) -> str | None:
    if not isinstance(message, dict) or not isinstance(message.get("token"), str):
        return "message.token missing"
    data = message.get("data", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return "message.data values must be strings"
    android = message.get("android", {})
    if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
        return "android.priority must be NORMAL or HIGH"
    if "ttl" in android and not re.fullmatch(r"\d+(\.\d{1,9})?s", android["ttl"]):
        return "android.ttl must be a duration like 3600s"
    notification = message.get("notification")
    if notification is not None and not isinstance(notification.get("body", ""), str):
        return "notification.body must be a string"
    count = android.get("notification", {}).get("notification_count", 0)
    if not isinstance(count, int) or count < 0:
        return "notification_count must be a non-negative integer"
    return None


class _PushServerConnection(protocol.Protocol):
    """One msg node's link, as TeamTalk's push_server handles it (commands.md §2.6)."""

    def connectionMade(self) -> None:
        self.buffer = b""
        self.factory.connections.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connections.remove(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER_SIZE:
            header = PduHeader.unpack_from(self.buffer)
            if len(self.buffer) < header.length:
                return
            pdu, self.buffer = self.buffer[: header.length], self.buffer[header.length :]
            self.factory.received_commands.append(header.command_id)
            if header.command_id == B.CID_OTHER_HEARTBEAT:
                self.transport.write(pdu)
            elif header.command_id == B.CID_OTHER_PUSH_TO_USER_REQ:
                self._push(pdu[HEADER_SIZE:])
            else:
                self.transport.loseConnection()
                return

    def _push(self, body: bytes) -> None:
        request = Server_pb2.IMPushToUserReq()
        request.ParseFromString(body)
        self.factory.requests.append(request)
        answer = Server_pb2.IMPushToUserRsp()
        for info in request.user_token_list:
            ok = info.user_type == B.CLIENT_TYPE_IOS and len(info.token) == 64
            answer.push_result_list.add(user_token=info.token, result_code=0 if ok else 1)
        self.transport.write(
            pack_pdu(B.SID_OTHER, B.CID_OTHER_PUSH_TO_USER_RSP, answer.SerializeToString())
        )


class FakePushServer(protocol.Factory):
    protocol = _PushServerConnection
    noisy = False

    def __init__(self) -> None:
        self.requests: list[Server_pb2.IMPushToUserReq] = []
        self.received_commands: list[int] = []
        self.connections: list[_PushServerConnection] = []
        self.port: Any = None

    def listen(self, reactor: Any, port: int = 0) -> Any:
        self.port = reactor.listenTCP(port, self, interface="127.0.0.1")
        return self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port.getHost().port}"
