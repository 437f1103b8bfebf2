"""How a dependency outage reads in the log: one line when it starts, a summary while it
lasts, one line when it ends.

A database or Redis that stops answering fails every request that needs it. Logging each
of those with a traceback buries the one fact an operator needs (what is down, since
when, why, how much it costs) under thousands of identical lines: one MariaDB outage of
5 s once wrote 2,074 lines. ``OutageLog`` is what every dependency reports to instead:

* ``failed(cause)``: the first failure starts the outage (one warning naming the cause);
  every failure is counted;
* ``count(kind)``: something else the outage cost (a call refused at once, a lockout
  counted on this node only) is counted under ``kind``;
* while it lasts, one summary line every ``summary_interval`` seconds with the counts of
  that interval and the latest cause;
* ``recovered()``: one line with the duration and the totals; the next failure starts a
  new outage.

``is_outage_failure`` tells callers that a failure is such an outage (``Unavailable``)
rather than a bug, so they can skip their own traceback: the outage log has it covered.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="teamtalk.outage")

#: Seconds between two summary lines of one outage.
SUMMARY_INTERVAL = 10.0


class Unavailable(Exception):
    """A dependency (the database, Redis, a server link) is known to be unreachable: the
    request failed without being tried, or failed because of it. Logged once per outage
    by the dependency's ``OutageLog``, never per request."""


class ShuttingDown(Exception):
    """A dependency refused work because it is being stopped: the server is shutting
    down, which cut the work short. Logged as that, in one line without a traceback."""


def is_outage_failure(failure: Failure) -> bool:
    """Whether ``failure`` is a dependency outage (counted and logged by its OutageLog)."""
    return failure.check(Unavailable) is not None


class OutageLog:
    """The outages of one dependency (``what``: "redis redis://…", "database mysql://…")."""

    def __init__(
        self, clock: IReactorTime, what: str, summary_interval: float = SUMMARY_INTERVAL
    ) -> None:
        self.clock = clock
        self.what = what
        self.summary_interval = summary_interval
        self.started_at: float | None = None
        self.cause = ""
        #: Outages so far (a metric); and the counts of the current one.
        self.outages = 0
        self.totals: Counter[str] = Counter()
        self._interval: Counter[str] = Counter()
        self._summary: IDelayedCall | None = None

    @property
    def active(self) -> bool:
        return self.started_at is not None

    def failed(self, cause: str, kind: str = "failed") -> None:
        """A request failed because the dependency did not answer."""
        self.cause = cause
        if self.started_at is None:
            self.started_at = self.clock.seconds()
            self.outages += 1
            self.totals.clear()
            self._interval.clear()
            log.warn("{what} unreachable: {cause}", what=self.what, cause=cause)
            self._summary = self.clock.callLater(self.summary_interval, self._summarise)
        self.count(kind)

    def count(self, kind: str) -> None:
        """Count one more ``kind`` of cost of the current outage (ignored between
        outages)."""
        if self.started_at is not None:
            self.totals[kind] += 1
            self._interval[kind] += 1

    def recovered(self) -> None:
        if self.started_at is None:
            return
        lasted = self.clock.seconds() - self.started_at
        self.started_at = None
        if self._summary is not None and self._summary.active():
            self._summary.cancel()
        self._summary = None
        log.warn(
            "{what} reachable again after {seconds:.1f} s ({counts})",
            what=self.what,
            seconds=lasted,
            counts=_counts(self.totals),
        )

    def stop(self) -> None:
        """The owner stops: no more summaries."""
        if self._summary is not None and self._summary.active():
            self._summary.cancel()
        self._summary = None

    def _summarise(self) -> None:
        if self.started_at is None:
            return
        log.warn(
            "{what} still unreachable after {seconds:.0f} s: {counts} in the last {interval:g} s"
            " ({cause})",
            what=self.what,
            seconds=self.clock.seconds() - self.started_at,
            counts=_counts(self._interval),
            interval=self.summary_interval,
            cause=self.cause,
        )
        self._interval.clear()
        self._summary = self.clock.callLater(self.summary_interval, self._summarise)

    def report(self) -> dict[str, Any]:
        """For /ready: whether an outage is on, since when, and why."""
        if self.started_at is None:
            return {"outage": False}
        return {
            "outage": True,
            "for_seconds": round(self.clock.seconds() - self.started_at, 1),
            "cause": self.cause,
        }


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counter.items())) or "nothing failed"


def log_failure(logger: Logger, event: str, failure: Failure | None = None, **fields: Any) -> None:
    """``logger.failure(event, failure, **fields)``, except for a dependency outage: that
    one is counted and logged by the dependency's ``OutageLog``, not once per request;
    and for work a stopping dependency refused (``ShuttingDown``): one info line."""
    if failure is None:
        failure = Failure()
    if is_outage_failure(failure):
        return
    if failure.check(ShuttingDown) is not None:
        logger.info(event + ": {reason}", reason=str(failure.value), **fields)
        return
    logger.failure(event, failure, **fields)
