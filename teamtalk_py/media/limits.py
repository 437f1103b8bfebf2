"""Per-client-IP limits on anonymous-capable uploads: uploads per minute, bytes per hour.

Old TeamTalk clients upload pictures without credentials, so the IP address is the only
handle on abuse. Counts are kept per node in fixed windows (the current minute, the
current hour); a node restart forgets them, which only ever errs towards the client.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

#: Forget idle addresses once this many are tracked.
MAX_TRACKED = 50_000


@dataclass(slots=True)
class _Usage:
    minute: int = -1
    uploads: int = 0
    hour: int = -1
    bytes: int = 0


class UploadLimits:
    def __init__(self, clock: IReactorTime, uploads_per_minute: int, bytes_per_hour: int) -> None:
        self.clock = clock
        self.uploads_per_minute = uploads_per_minute
        self.bytes_per_hour = bytes_per_hour
        self._usage: dict[str, _Usage] = {}

    def _current(self, ip: str) -> _Usage:
        now = self.clock.seconds()
        minute, hour = int(now // 60), int(now // 3600)
        usage = self._usage.get(ip)
        if usage is None:
            if len(self._usage) >= MAX_TRACKED:
                self._forget_idle(hour)
            usage = self._usage[ip] = _Usage()
        if usage.minute != minute:
            usage.minute, usage.uploads = minute, 0
        if usage.hour != hour:
            usage.hour, usage.bytes = hour, 0
        return usage

    def _forget_idle(self, hour: int) -> None:
        for ip in [ip for ip, u in self._usage.items() if u.hour != hour]:
            del self._usage[ip]

    def start_upload(self, ip: str, expected_bytes: int = 0) -> str | None:
        """Count an upload starting from ``ip``; the reason when it is over a limit."""
        usage = self._current(ip)
        if self.uploads_per_minute and usage.uploads >= self.uploads_per_minute:
            return "too many uploads from this address, try again in a minute"
        if self.bytes_per_hour and usage.bytes + expected_bytes > self.bytes_per_hour:
            return "too many bytes uploaded from this address this hour"
        usage.uploads += 1
        return None

    def add_bytes(self, ip: str, count: int) -> bool:
        """Count received bytes; False once the hourly byte limit is exceeded."""
        usage = self._current(ip)
        usage.bytes += count
        return not self.bytes_per_hour or usage.bytes <= self.bytes_per_hour
