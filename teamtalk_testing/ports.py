"""Free loopback ports and the endpoint strings that bind them."""

from __future__ import annotations

import socket

__all__ = ["LOOPBACK", "free_port", "loopback_endpoint"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    Another process may take it before the caller binds it: in-process servers should
    listen on port 0 instead; ``StandaloneServer`` retries with fresh ports when it loses
    that race.
    """
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def loopback_endpoint(port: int) -> str:
    """The Twisted endpoint string that listens on ``port`` of 127.0.0.1 only."""
    return f"tcp:{port}:interface={LOOPBACK}"
