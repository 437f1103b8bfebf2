"""HTTP discovery of a msg server (`GET /msg_server`, wire.md section 9), parsed strictly
so that a server deviating from the documented JSON fails the test that uses it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgent

from teamtalk_client.deferreds import returns_deferred

__all__ = ["Discovery", "DiscoveryError", "DiscoveryFormatError", "discover", "parse_discovery"]


class DiscoveryError(Exception):
    """The login server answered with a non-zero `code` (1: no msg server, 2: all full)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(code, msg)
        self.code = code
        self.msg = msg


class DiscoveryFormatError(ValueError):
    """The login server's answer is not the documented JSON (bad status, type or key)."""


@dataclass(frozen=True)
class Discovery:
    """A successful `/msg_server` answer. `port` is converted from the decimal string
    the protocol sends; `raw_body` keeps the exact bytes for format checks."""

    prior_ip: str
    backup_ip: str
    port: int
    msfs_prior: str
    msfs_backup: str
    discovery: str
    code: int = 0
    msg: str = ""
    raw_body: bytes = field(default=b"", repr=False, compare=False)


def _string_field(answer: Mapping[str, Any], key: str) -> str:
    value = answer.get(key)
    if not isinstance(value, str):
        raise DiscoveryFormatError(f"discovery key {key!r} must be a string, got {value!r}")
    return value


def parse_discovery(body: bytes) -> Discovery:
    """Parse a `/msg_server` body strictly: types must match wire.md section 9 (notably
    `port` is a string), so a server that deviates fails the test that uses it."""
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise DiscoveryFormatError(f"discovery body is not JSON: {exc}") from exc
    if not isinstance(answer, dict):
        raise DiscoveryFormatError("discovery body is not a JSON object")
    code = answer.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise DiscoveryFormatError(f"discovery key 'code' must be an integer, got {code!r}")
    msg = _string_field(answer, "msg")
    if code != 0:
        raise DiscoveryError(code, msg)
    port_text = _string_field(answer, "port")
    if not port_text.isdigit():
        raise DiscoveryFormatError(f"discovery key 'port' is not decimal: {port_text!r}")
    return Discovery(
        prior_ip=_string_field(answer, "priorIP"),
        backup_ip=_string_field(answer, "backupIP"),
        port=int(port_text),
        msfs_prior=_string_field(answer, "msfsPrior"),
        msfs_backup=_string_field(answer, "msfsBackup"),
        discovery=_string_field(answer, "discovery"),
        code=code,
        msg=msg,
        raw_body=bytes(body),
    )


@returns_deferred
async def discover(agent_or_reactor: Any, url: str | bytes) -> Discovery:
    """Ask a login server which msg server to use (`GET .../msg_server`), as clients do
    before connecting. Pass an `IAgent` to control pooling, or a reactor."""
    agent = agent_or_reactor if IAgent.providedBy(agent_or_reactor) else Agent(agent_or_reactor)
    if isinstance(url, str):
        url = url.encode("ascii")
    response = await agent.request(b"GET", url)
    body = await readBody(response)
    if response.code != 200:
        raise DiscoveryFormatError(f"discovery HTTP status {response.code}")
    return parse_discovery(body)
