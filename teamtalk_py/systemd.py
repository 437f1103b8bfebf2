"""systemd's readiness protocol (``sd_notify``) for ``Type=notify`` units.

When systemd starts the server it sets ``NOTIFY_SOCKET``; we send ``READY=1`` once every
listener is bound (so ``systemctl start`` returns only when clients can connect),
``RELOADING=1``/``READY=1`` around a SIGHUP reload, ``STOPPING=1`` on the way down, and
``WATCHDOG=1`` at half the ``WatchdogSec=`` interval from the reactor thread, so a hung
reactor gets the process restarted. Without ``NOTIFY_SOCKET`` every call does nothing.

The protocol is one datagram per message on a Unix socket (an ``@`` prefix names an
abstract socket); libsystemd's ``sd_notify`` is not needed for that, and the PyPI
wrappers either need libsystemd or do not handle the watchdog.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger(namespace="teamtalk.systemd")


class Notifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET`` (a no-op when it is not set)."""

    def __init__(self, reactor: IReactorTime, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.reactor = reactor
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_interval(environ)
        self._watchdog: LoopingCall | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (``notify(READY=1, STATUS="...")``); False if not sent."""
        if not self.address:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(message)
        except OSError as e:
            log.warn("sd_notify to {address} failed: {error}", address=self.address, error=e)
            return False
        return True

    def ready(self, status: str) -> None:
        self.notify(READY=1, STATUS=status)
        if self.watchdog_interval and self._watchdog is None:
            self._watchdog = LoopingCall(self.notify, WATCHDOG=1)
            self._watchdog.clock = self.reactor
            self._watchdog.start(self.watchdog_interval / 2, now=True)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload units match the reload to this message.
        self.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def stopping(self) -> None:
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self.notify(STOPPING=1)


def _watchdog_interval(environ: Mapping[str, str]) -> float:
    """Seconds of ``WATCHDOG_USEC`` when it is meant for this process, else 0."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return 0.0
    return int(usec) / 1_000_000
