"""FCM HTTP v1: ``POST {endpoint}/v1/projects/{project}/messages:send`` per push.

Authorization is an OAuth2 access token of the Firebase service account, obtained and
renewed by google-auth (``google.oauth2.service_account``: a JWT assertion posted to the
account's ``token_uri``), off the reactor thread. Requests go over HTTP/2 with httpx on
the ``AsyncioThread``.

The message: ``token``; ``data`` (strings only: the reference's custom fields plus
``badge`` and ``push_type``); for an alert push ``notification.body`` = the flash text and
``android.notification`` with ``notification_count`` (the badge) and ``tag`` (one per
conversation); ``android.priority`` HIGH for alerts, NORMAL for silent pushes;
``android.ttl`` what is left of ``push.max_age``; ``android.collapse_key`` per
conversation.

Answers: 200 sent; an ``UNREGISTERED`` error code (404) means the token is dead; 429
(``QUOTA_EXCEEDED``) and 5xx retry, honouring Retry-After; 401 renews the access token
and retries; anything else is final.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.push.jobs import PushJob
from teamtalk_py.push.senders.aio import AsyncioThread, Http2Client
from teamtalk_py.push.senders.base import SENT, Outcome, Result, retry_after

log = Logger(namespace="teamtalk.push.fcm")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_ENDPOINT = "https://fcm.googleapis.com"
REQUEST_TIMEOUT = 20.0
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


@dataclass(frozen=True)
class FcmSettings:
    #: The parsed service account JSON.
    service_account: dict[str, Any]
    endpoint: str = DEFAULT_ENDPOINT
    max_age: float = 3600.0
    ca_file: str = ""

    @property
    def project_id(self) -> str:
        return str(self.service_account["project_id"])


def message(job: PushJob, max_age: float, now: float) -> dict[str, Any]:
    data = {k: str(v) for k, v in json.loads(job.data).items()}
    data["badge"] = str(job.badge)
    data["push_type"] = str(job.push_type)
    ttl = max(0, int(job.created + max_age - now))
    android: dict[str, Any] = {
        "priority": "NORMAL" if job.silent else "HIGH",
        "ttl": f"{ttl}s",
        "collapse_key": job.collapse_id,
    }
    body: dict[str, Any] = {"token": job.token, "data": data, "android": android}
    if not job.silent:
        body["notification"] = {"body": job.flash}
        android["notification"] = {"notification_count": job.badge, "tag": job.collapse_id}
    return {"message": body}


def error_code(body: Any) -> tuple[str, str]:
    """(status, FCM error code) of an error answer; empty strings when absent."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    code = ""
    for detail in error.get("details", []) or []:
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR:
            code = str(detail.get("errorCode", ""))
    return str(error.get("status", "")), code


class FcmSender:
    name = "fcm"

    def __init__(self, reactor: Any, settings: FcmSettings, thread: AsyncioThread) -> None:
        from google.oauth2 import service_account

        self.reactor = reactor
        self.settings = settings
        self.thread = thread
        self.credentials = service_account.Credentials.from_service_account_info(
            settings.service_account, scopes=[SCOPE]
        )
        self.http = Http2Client(thread, settings.ca_file, REQUEST_TIMEOUT)
        self._refreshing: asyncio.Lock | None = None

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> defer.Deferred[None]:
        return self.http.close()

    def _refresh_blocking(self) -> None:
        """google-auth's own token request (a thread of the asyncio loop's executor)."""
        import google.auth.transport.requests
        import requests

        session = requests.Session()
        if self.settings.ca_file:
            # The configured CAs, not whatever REQUESTS_CA_BUNDLE names.
            session.trust_env = False
            session.verify = self.settings.ca_file
        try:
            self.credentials.refresh(google.auth.transport.requests.Request(session))
        finally:
            session.close()

    async def access_token(self, force: bool = False) -> str:
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if force or not self.credentials.valid:
                await asyncio.get_running_loop().run_in_executor(None, self._refresh_blocking)
        return str(self.credentials.token)

    def send(self, job: PushJob) -> defer.Deferred[Outcome]:
        return self.thread.run(self._send(job))

    async def _send(self, job: PushJob) -> Outcome:
        import google.auth.exceptions
        import httpx

        try:
            token = await self.access_token()
        except (google.auth.exceptions.GoogleAuthError, OSError) as e:
            return Outcome(Result.RETRY, f"OAuth2 token: {e}")
        url = f"{self.settings.endpoint}/v1/projects/{self.settings.project_id}/messages:send"
        body = json.dumps(message(job, self.settings.max_age, time.time()), ensure_ascii=False)
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        try:
            response = await self.http.get().post(url, content=body.encode(), headers=headers)
        except httpx.HTTPError as e:
            return Outcome(Result.RETRY, f"{type(e).__name__}: {e}")
        if response.status_code == 200:
            return SENT
        try:
            status, code = error_code(response.json())
        except ValueError:
            status, code = "", ""
        detail = f"{response.status_code} {status} {code}".strip()
        if code == "UNREGISTERED":
            return Outcome(Result.DEAD_TOKEN, detail)
        if response.status_code == 401:
            self.credentials.token = None  # the next send gets a new one
            return Outcome(Result.RETRY, detail, 0.0)
        if response.status_code == 429 or response.status_code >= 500:
            return Outcome(Result.RETRY, detail, retry_after(response.headers.get("retry-after")))
        return Outcome(Result.FAILED, detail)
