"""Log output: Twisted's text format or JSON lines, filtered by one run-time level.

``makeService`` installs :func:`observer` as the application's log observer (``log.format``
and ``--log-format``, ``log.level`` and ``--log-level``); SIGHUP changes the level of the
running process through :data:`LEVEL`. In JSON each line is one object that ``json.loads``
reads: ``time`` (ISO 8601, UTC), ``level``, ``namespace``, ``message`` (the rendered
text), the event's own fields (``name``, ``peer``, ``user_id``...) and ``traceback``
for a logged failure. ``twistd --logger teamtalk_py.logs.json_observer`` gives the same
lines for those who choose the observer on twistd's command line.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

#: The level every teamtalk log observer filters on; ``set_level`` changes it.
LEVEL = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)


def set_level(name: str) -> None:
    """Apply ``log.level`` (``debug`` .. ``critical``) to the running process."""
    LEVEL.setLogLevelForNamespace("", LogLevel.levelWithName(name))


def json_line(event: dict[str, Any]) -> str:
    """One log event as one line of JSON (no newline inside)."""
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time") or 0, UTC).isoformat(
            timespec="milliseconds"
        ),
        "level": event["log_level"].name if "log_level" in event else "info",
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in ("format", "message"):
            continue
        record[key] = value
    return json.dumps(record, ensure_ascii=False, default=_plain, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


@implementer(ILogObserver)
class JsonLinesObserver:
    """Writes :func:`json_line` of each event to ``stream``, one per line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            line = json_line(event)
        except Exception as e:  # an unprintable field must not lose the event
            line = json.dumps({"level": "error", "message": f"unloggable event: {e!r}"})
        self.stream.write(line + "\n")
        self.stream.flush()


def observer(log_format: str, stream: IO[str]) -> ILogObserver:
    """The ``log.format`` observer on ``stream``, filtered by :data:`LEVEL`."""
    base = JsonLinesObserver(stream) if log_format == "json" else textFileLogObserver(stream)
    return FilteringLogObserver(base, [LEVEL])


def json_observer() -> ILogObserver:
    """For ``twistd --logger teamtalk_py.logs.json_observer``: JSON lines on stdout."""
    return observer("json", sys.stdout)


class QuietUnderLoad:
    """One info line per event while events are rare; one summary a second under load.

    A login storm of thousands a second would otherwise spend a good part of the
    reactor's time formatting and writing one line per login. The first ``per_second``
    events of each second are logged as they come; the rest are counted and one line
    says how many were not logged one by one. Refusals and errors never go through here.
    """

    def __init__(self, log: Any, clock: Any, what: str, per_second: int = 50) -> None:
        self.log = log
        self.clock = clock
        self.what = what
        self.per_second = per_second
        self._second = -1
        self._count = 0
        self._quiet = 0
        self._summary_call: Any = None

    def info(self, fmt: str, **kwargs: Any) -> None:
        second = int(self.clock.seconds())
        if second != self._second:
            self._summarise()
            self._second = second
            self._count = 0
        self._count += 1
        if self._count <= self.per_second:
            self.log.info(fmt, **kwargs)
            return
        self._quiet += 1
        if self._summary_call is None:
            self._summary_call = self.clock.callLater(1.0, self._summarise)

    def stop(self) -> None:
        """Log what is still counted now: a stopping service leaves no summary timer."""
        self._summarise()

    def _summarise(self) -> None:
        if self._summary_call is not None:
            if self._summary_call.active():
                self._summary_call.cancel()
            self._summary_call = None
        if self._quiet:
            self.log.info(
                "{count} more {what} not logged one by one (over {limit} a second)",
                count=self._quiet,
                what=self.what,
                limit=self.per_second,
            )
            self._quiet = 0
