"""How a msg node reaches file services: create transfer tasks, learn client addresses.

The msg handlers (``teamtalk_py.msg.files``) only see ``FileServers``: "is one
available", "create this task", "where do clients connect". Behind it are either

* ``InProcessFileServer``: the co-hosted file service, called directly; or
* ``RemoteFileServer``: one per ``--file-server HOST:PORT`` entry, a ``ServerLink`` to that
  file service's internal port (8601) speaking TeamTalk's own PDUs. On every connect it
  asks ``CID_OTHER_FILE_SERVER_IP_REQ`` for the client addresses (wire.md §7.1); tasks are
  created with ``CID_OTHER_FILE_TRANSFER_REQ``, answered by seq, and where users may log
  in to them from with ``CID_EXT_FILE_LOGIN_PERMIT_REQ`` (file/permits.py). The link
  reconnects with the reference's back-off and heartbeats every 5 s when silent.

Like the reference, each request goes to a random available file service.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.pb.IM import Server_pb2
from teamtalk_py.settle import settled
from teamtalk_py.wire import CommandTable, Request
from teamtalk_py.wire.link import LinkProtocol, ServerLink, parse_host_port
from teamtalk_py.wire.link_auth import LinkAuth

log = Logger(namespace="teamtalk.msg.files")

DEFAULT_FILE_SERVER_PORT = 8601
#: Seconds a task creation may take over a link before the sender is told it failed.
REQUEST_TIMEOUT = 10.0


class FileServer(Protocol):
    @property
    def available(self) -> bool: ...

    def addresses(self) -> list[tuple[str, int]]: ...

    def transfer(
        self, request: Server_pb2.IMFileTransferReq
    ) -> defer.Deferred[Server_pb2.IMFileTransferRsp]: ...

    def permit(self, task_id: str, user_id: int, addresses: list[str]) -> defer.Deferred[None]:
        """Let ``user_id`` log in to ``task_id`` from ``addresses`` (file/permits.py);
        fires once the file service recorded it."""
        ...

    def start(self) -> None: ...

    def stop(self) -> defer.Deferred[None] | None: ...


class InProcessFileServer:
    """The file service of this process."""

    def __init__(self, service: Any) -> None:
        self.service = service

    @property
    def available(self) -> bool:
        return bool(self.service.running) and self.service.ready.called

    def addresses(self) -> list[tuple[str, int]]:
        return self.service.client_addresses()

    def transfer(
        self, request: Server_pb2.IMFileTransferReq
    ) -> defer.Deferred[Server_pb2.IMFileTransferRsp]:
        return defer.ensureDeferred(self.service.transfer_request(request))

    def permit(self, task_id: str, user_id: int, addresses: list[str]) -> defer.Deferred[None]:
        return defer.ensureDeferred(self.service.permit(task_id, user_id, addresses))

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _heartbeat_echo(conn: LinkProtocol, request: Request) -> None:
    """The file service echoes our heartbeats; the echo only proves it is alive."""


class RemoteFileServer:
    """A file service in another process, over its internal port."""

    def __init__(self, reactor: Any, address: str, auth: LinkAuth) -> None:
        self.reactor = reactor
        host, port = parse_host_port(address, DEFAULT_FILE_SERVER_PORT)
        table: CommandTable[LinkProtocol] = CommandTable()
        table.register(B.CID_OTHER_HEARTBEAT, _heartbeat_echo, decode=False)
        self.link = ServerLink(
            reactor, "file", host, port, table, on_connect=self._connected, auth=auth
        )
        self._addresses: list[tuple[str, int]] = []

    @property
    def available(self) -> bool:
        return self.link.connected

    def addresses(self) -> list[tuple[str, int]]:
        return list(self._addresses)

    def start(self) -> None:
        self.link.start()

    def stop(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self.link.stop())

    def _connected(self, conn: LinkProtocol) -> None:
        defer.ensureDeferred(self._ask_addresses(conn))

    async def _ask_addresses(self, conn: LinkProtocol) -> None:
        """Where this file service's clients connect (asked at every connect)."""
        try:
            answer = await conn.request(
                B.CID_OTHER_FILE_SERVER_IP_REQ, Server_pb2.IMFileServerIPReq()
            )
        except Exception as e:
            log.info(
                "no address list from file service {address}: {error}",
                address=self.link.address,
                error=str(e),
            )
            return
        self._addresses = [(a.ip, a.port) for a in answer.message.ip_addr_list]
        log.info(
            "file service {address} serves clients at {clients}",
            address=self.link.address,
            clients=", ".join(f"{h}:{p}" for h, p in self._addresses),
        )

    def transfer(
        self, request: Server_pb2.IMFileTransferReq
    ) -> defer.Deferred[Server_pb2.IMFileTransferRsp]:
        return defer.ensureDeferred(self._transfer(request))

    async def _transfer(
        self, request: Server_pb2.IMFileTransferReq
    ) -> Server_pb2.IMFileTransferRsp:
        d = self.link.request(B.CID_OTHER_FILE_TRANSFER_REQ, request)
        d.addTimeout(REQUEST_TIMEOUT, self.reactor)
        answer: Server_pb2.IMFileTransferRsp = (await d).message
        return answer

    def permit(self, task_id: str, user_id: int, addresses: list[str]) -> defer.Deferred[None]:
        d = self.link.request(
            X.CID_EXT_FILE_LOGIN_PERMIT_REQ,
            X.IMExtFileLoginPermitReq(task_id=task_id, user_id=user_id, addresses=addresses),
            answer_id=X.CID_EXT_FILE_LOGIN_PERMIT_RSP,
        )
        d.addTimeout(REQUEST_TIMEOUT, self.reactor)
        return d.addCallback(lambda _: None)


class FileServers:
    """Every file service this msg node may use."""

    def __init__(self, servers: list[FileServer]) -> None:
        self.servers = servers

    @classmethod
    def for_service(cls, service: Any, local: Any = None) -> FileServers:
        """``msg.file_server`` (comma-separated ``HOST:PORT``) when set, else the
        co-hosted file service ``local``, else none (file requests then fail politely)."""
        configured = [a.strip() for a in service.config.msg.file_server.split(",") if a.strip()]
        if configured:
            return cls(
                [RemoteFileServer(service.reactor, a, service.link_auth) for a in configured]
            )
        return cls([InProcessFileServer(local)] if local is not None else [])

    async def permit(self, task_id: str, user_id: int, addresses: list[str]) -> None:
        """Tell every available file service (the task may be on any of them, an offline
        file on all) where ``user_id`` may log in to ``task_id`` from; one that does not
        answer is logged, and that user's login there will be refused."""
        if not addresses:
            return
        calls = [s.permit(task_id, user_id, addresses) for s in self.servers if s.available]
        for ok, result in await defer.DeferredList(calls, consumeErrors=True):
            if not ok:
                log.info(
                    "a file service did not take the login permit for {task_id}: {error}",
                    task_id=task_id,
                    error=result.getErrorMessage() if isinstance(result, Failure) else result,
                )

    def pick(self) -> FileServer | None:
        """A random available file service (None when there is none)."""
        available = [s for s in self.servers if s.available]
        return random.choice(available) if available else None

    def start(self) -> None:
        for server in self.servers:
            server.start()

    async def stop(self) -> None:
        for server in self.servers:
            await settled(server.stop())
