"""Free loopback ports and the endpoint strings that bind them."""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterator

__all__ = ["LOOPBACK", "free_port", "loopback_endpoint"]

LOOPBACK = "127.0.0.1"

#: Ports handed out under pytest-xdist: below Linux's ephemeral range (32768-60999), so
#: that no outgoing connection of the thousands the tests open holds one, and split into
#: one slice per worker, so that two workers never pick the same port between probe
#: and bind.
_WORKER_PORTS = range(10000, 32000)


def _worker_slice() -> range | None:
    """This pytest-xdist worker's slice of ``_WORKER_PORTS``; None outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not worker.startswith("gw") or count < 1:
        return None
    index = int(worker[2:]) % count
    size = len(_WORKER_PORTS) // count
    start = _WORKER_PORTS.start + index * size
    return range(start, start + size)


def _cycle(ports: range) -> Iterator[int]:
    """The slice's ports in turn from a random start: a process (a test or the bench
    subprocess it runs) rarely meets another's recent picks, and a port just given up
    comes back last."""
    offset = random.randrange(len(ports))
    return itertools.cycle([*ports[offset:], *ports[:offset]])


_SLICE = _worker_slice()
_NEXT = _cycle(_SLICE) if _SLICE is not None else None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    Another process may take it before the caller binds it: in-process servers should
    listen on port 0 instead; ``StandaloneServer`` retries with fresh ports when it loses
    that race. Under pytest-xdist the port comes from this worker's own slice.
    """
    if _NEXT is None or _SLICE is None:
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port: int = s.getsockname()[1]
            return port
    for _ in range(len(_SLICE)):
        port = next(_NEXT)
        if _bindable(port):
            return port
    raise OSError(f"no free port in {_SLICE}")


def loopback_endpoint(port: int) -> str:
    """The Twisted endpoint string that listens on ``port`` of 127.0.0.1 only."""
    return f"tcp:{port}:interface={LOOPBACK}"
