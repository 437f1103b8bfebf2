"""The client-facing HTTP interface of the login service (wire.md §9).

``/msg_server`` is matched by prefix and the query string is ignored, as the reference
does, and the answer is the reference's JSON with ``port`` as a string. Unlike the
reference (which answered any method), only GET and HEAD are answered; any other method
gets 405 with ``Allow: GET, HEAD``. Bodies, header timing and idle connections are
guarded as on every HTTP listener (``teamtalk_py.web``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from teamtalk_py.config import LoginConfig
from teamtalk_py.login.nodes import AllNodesFull, MsgNodeRegistry, NoMsgNode

NO_MSG_SERVER = "没有msg_server"
LOAD_TOO_HIGH = "负载过高"


def discovery_answer(nodes: MsgNodeRegistry, config: LoginConfig, msfs: str) -> dict[str, Any]:
    """The JSON object a client gets from ``/msg_server`` (``msfs``: the media URL)."""
    try:
        node = nodes.choose()
    except NoMsgNode:
        return {"code": 1, "msg": NO_MSG_SERVER}
    except AllNodesFull:
        return {"code": 2, "msg": LOAD_TOO_HIGH}
    return {
        "code": 0,
        "msg": "",
        "priorIP": node.ip1,
        "backupIP": node.ip2,
        "port": str(node.port),
        "msfsPrior": msfs,
        "msfsBackup": msfs,
        "discovery": config.discovery,
    }


def encode_json(answer: dict[str, Any]) -> bytes:
    """Pretty-printed, sorted, 3-space indent: the formatting the reference produces."""
    return (json.dumps(answer, ensure_ascii=False, indent=3, sort_keys=True) + "\n").encode()


class MsgServerResource(Resource):
    isLeaf = True

    def __init__(self, nodes: MsgNodeRegistry, config: LoginConfig, msfs: Callable[[], str]):
        super().__init__()
        self.nodes = nodes
        self.config = config
        self.msfs = msfs

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"GET, HEAD")
            request.setHeader(b"Content-Type", b"text/plain")
            return b"method not allowed: use GET\n"
        body = encode_json(discovery_answer(self.nodes, self.config, self.msfs()))
        request.setHeader(b"Content-Type", b"text/html;charset=utf-8")
        request.setHeader(b"Connection", b"close")
        return body


#: The operator endpoints a login listener serves too when ``ops.on_http`` is set.
OPS_PATHS = (b"health", b"ready", b"metrics")


class LoginRoot(Resource):
    """Routes every path starting with ``/msg_server`` to the discovery answer (and, with
    ``ops``, ``/health``, ``/ready`` and ``/metrics`` to the operator endpoints)."""

    def __init__(
        self,
        nodes: MsgNodeRegistry,
        config: LoginConfig,
        msfs: Callable[[], str],
        ops: Resource | None = None,
    ) -> None:
        super().__init__()
        self.msg_server = MsgServerResource(nodes, config, msfs)
        self.ops = ops

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        if request.path.startswith(b"/msg_server"):
            return self.msg_server
        if self.ops is not None and path in OPS_PATHS and not request.postpath:
            return self.ops.children[path]
        return notFound()

    def render(self, request: Request) -> bytes:
        return notFound().render(request)
