"""APNs over HTTP/2 with token-based authentication (Apple's provider API).

One POST per push to ``https://HOST/3/device/<token>`` on one multiplexed HTTP/2
connection (httpx on the ``AsyncioThread``), authorized by an ES256 JWT made from the
team's ``.p8`` key: header ``kid`` = key id, claims ``iss`` = team id and ``iat``. Apple
refuses tokens older than an hour and throttles refreshes more often than every 20
minutes, so the token is renewed after ``TOKEN_LIFETIME`` (50 minutes) and when APNs
answers ``ExpiredProviderToken``.

Headers: ``apns-topic`` (bundle id), ``apns-push-type``, ``apns-priority``,
``apns-expiration`` (the job's creation + ``push.max_age``), ``apns-collapse-id`` (one per
conversation) and ``apns-id`` (fixed by the job, so a push sent again after a crash is
the same notification). Payloads are the reference push_server's: ``{"aps": {"alert":
{"body": flash}, "badge": n, "sound": "bingbong.aiff"}, "custom": data}``, and
``{"aps": {"badge": n}, "custom": data}`` for silent pushes. A silent push still sets
the badge, which Apple counts as a user-visible ``alert`` push (``background`` pushes may
carry no badge), so it goes as ``alert`` with priority 5 (no sound, no banner).

Answers: 200 sent; 410 and 400 ``BadDeviceToken`` the token is dead; 429 and 5xx retry
(honouring Retry-After); 403 ``ExpiredProviderToken`` retry with a new token; any other
error is final.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.push.jobs import PushJob
from teamtalk_py.push.senders.aio import AsyncioThread, Http2Client
from teamtalk_py.push.senders.base import SENT, Outcome, Result, retry_after

log = Logger(namespace="teamtalk.push.apns")

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"
TOKEN_LIFETIME = 50 * 60
SOUND = "bingbong.aiff"
MAX_PAYLOAD = 4096
REQUEST_TIMEOUT = 20.0


@dataclass(frozen=True)
class ApnsSettings:
    key_pem: bytes
    key_id: str
    team_id: str
    topic: str
    #: "host" or "host:port"
    host: str = PRODUCTION_HOST
    max_age: float = 3600.0
    ca_file: str = ""


def payload(job: PushJob) -> bytes:
    aps: dict[str, Any] = {"badge": job.badge}
    if not job.silent:
        aps = {"alert": {"body": job.flash}, "badge": job.badge, "sound": SOUND}
    return json.dumps(
        {"aps": aps, "custom": json.loads(job.data)}, ensure_ascii=False, separators=(",", ":")
    ).encode()


class ProviderToken:
    """The ES256 JWT APNs wants, renewed before Apple calls it expired."""

    def __init__(self, settings: ApnsSettings, clock: Callable[[], float] = time.time) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(settings.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the APNs key must be the EC (P-256) key of a .p8 file")
        self._key = key
        self._settings = settings
        self._clock = clock
        self._token = ""
        self._issued = 0.0

    def get(self) -> str:
        now = self._clock()
        if not self._token or now - self._issued >= TOKEN_LIFETIME:
            self.renew(now)
        return self._token

    def renew(self, now: float | None = None) -> None:
        import jwt

        now = self._clock() if now is None else now
        self._token = jwt.encode(
            {"iss": self._settings.team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self._settings.key_id},
        )
        self._issued = now


class ApnsSender:
    name = "apns"

    def __init__(self, reactor: Any, settings: ApnsSettings, thread: AsyncioThread) -> None:
        self.reactor = reactor
        self.settings = settings
        self.thread = thread
        self.token = ProviderToken(settings)
        self.http = Http2Client(thread, settings.ca_file, REQUEST_TIMEOUT)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> defer.Deferred[None]:
        return self.http.close()

    def send(self, job: PushJob) -> defer.Deferred[Outcome]:
        return self.thread.run(self._send(job))

    def headers(self, job: PushJob) -> dict[str, str]:
        return {
            "authorization": f"bearer {self.token.get()}",
            "apns-topic": self.settings.topic,
            "apns-push-type": "alert",
            "apns-priority": "5" if job.silent else "10",
            "apns-expiration": str(int(job.created + self.settings.max_age)),
            "apns-collapse-id": job.collapse_id,
            "apns-id": job.notification_id,
            "content-type": "application/json",
        }

    async def _send(self, job: PushJob) -> Outcome:
        import httpx

        body = payload(job)
        if len(body) > MAX_PAYLOAD:
            return Outcome(Result.FAILED, f"payload of {len(body)} bytes over {MAX_PAYLOAD}")
        url = f"https://{self.settings.host}/3/device/{job.token}"
        try:
            response = await self.http.get().post(url, content=body, headers=self.headers(job))
        except httpx.HTTPError as e:
            return Outcome(Result.RETRY, f"{type(e).__name__}: {e}")
        if response.status_code == 200:
            return SENT
        try:
            reason = str(response.json().get("reason", ""))
        except ValueError:
            reason = ""
        detail = f"{response.status_code} {reason}".strip()
        status = response.status_code
        if status == 410 or reason in ("BadDeviceToken", "Unregistered"):
            return Outcome(Result.DEAD_TOKEN, detail)
        if status == 403 and reason == "ExpiredProviderToken":
            self.token.renew()
            return Outcome(Result.RETRY, detail, 0.0)
        if status == 429 or status >= 500:
            return Outcome(Result.RETRY, detail, retry_after(response.headers.get("retry-after")))
        return Outcome(Result.FAILED, detail)
