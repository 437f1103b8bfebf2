"""The interface every push sender offers, and what a send can come to.

A sender turns one ``PushJob`` into one request to its service and answers an
``Outcome``; it never raises for an answer of the service. Retrying, dead-lettering and
removing dead tokens are the worker's business (``push.worker``), the same for all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from twisted.internet import defer

from teamtalk_py.push.jobs import PushJob


class Result(enum.Enum):
    SENT = "sent"
    #: Try again later (429, 5xx, link down, timeout).
    RETRY = "retry"
    #: The token is dead (APNs 410 / BadDeviceToken, FCM UNREGISTERED): forget it.
    DEAD_TOKEN = "dead_token"
    #: The service refused this push for good; it goes to the dead letter.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    detail: str = ""
    #: Seconds the service asked us to wait (Retry-After), if it said.
    retry_after: float | None = None


SENT = Outcome(Result.SENT)


class Sender(Protocol):
    #: "apns", "fcm" or "push_server": the name jobs and metrics carry.
    name: str

    def start(self) -> None: ...

    def stop(self) -> defer.Deferred[None]: ...

    def send(self, job: PushJob) -> defer.Deferred[Outcome]: ...


def retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (HTTP dates are not used by APNs or FCM)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
