"""Helpers for end-to-end file-transfer tests: ``FileTestCase`` is ``MsgTestCase`` with the
file service hosted too, plus file-service logins, file requests and random payloads."""

from __future__ import annotations

import os
import random
import time
from typing import Any, ClassVar

from twisted.internet import reactor

from teamtalk_client import TeamTalkClientProtocol, TeamTalkSession, connect
from teamtalk_py.file.storage import OfflineFileStore
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2
from tests.msg_support import MsgTestCase, closed_within, sleep
from tests.support import RunningServer

ONLINE = B.FILE_TYPE_ONLINE
OFFLINE = B.FILE_TYPE_OFFLINE
SENDER = B.CLIENT_REALTIME_SENDER
RECEIVER = B.CLIENT_REALTIME_RECVER
UPLOAD = B.CLIENT_OFFLINE_UPLOAD
DOWNLOAD = B.CLIENT_OFFLINE_DOWNLOAD


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` pseudo-random bytes (fast: one urandom block repeated with a twist)."""
    rng = random.Random(seed)
    block = os.urandom(65536)
    parts = []
    for i in range(size // 65536 + 1):
        shift = rng.randrange(65536)
        parts.append(block[shift:] + block[:shift] + i.to_bytes(8, "big"))
    return b"".join(parts)[:size]


class FileTestCase(MsgTestCase):
    """A server with msg, route, login and file on a fresh data dir."""

    overrides: ClassVar[dict[str, Any]] = {
        "server.services": "msg,route,login,file",
        "file.min_free_disk": 0,
    }

    @property
    def file_port(self) -> int:
        return self.server.service("file").bound_port(0)

    @property
    def offline_files(self) -> OfflineFileStore:
        return self.server.service("file").transfers.files

    async def stop_server(self, server: RunningServer) -> None:
        file_service = server.node.files
        if server.node.msg is not None:
            await super().stop_server(server)
        elif server in self._servers:  # a file-only node
            self._servers.remove(server)
            await server.stop()
        deadline = time.monotonic() + 2
        while file_service is not None and time.monotonic() < deadline:
            if not file_service.factory.connections:
                break
            await sleep(0.01)

    async def file_connect(
        self, port: int | None = None, source: str | None = None
    ) -> TeamTalkClientProtocol:
        """A connection to the file service (from the loopback address ``source``)."""
        protocol = await connect(reactor, "127.0.0.1", port or self.file_port, bind_address=source)
        self._clients.append(protocol)
        return protocol

    async def file_attempt(
        self,
        user_id: int,
        task_id: str,
        role: int,
        port: int | None = None,
        source: str | None = None,
    ) -> tuple[TeamTalkClientProtocol, Any]:
        """Log in to the file service on a new connection: (connection, IMFileLoginRsp)."""
        protocol = await self.file_connect(port, source)
        answer = await protocol.request(
            B.CID_FILE_LOGIN_REQ,
            File_pb2.IMFileLoginReq(user_id=user_id, task_id=task_id, file_role=role),
            timeout=5.0,
        )
        return protocol, answer.message

    async def assert_refused(
        self,
        user_id: int,
        task_id: str,
        role: int,
        port: int | None = None,
        source: str | None = None,
    ) -> None:
        """A file login that is answered result 1 and closed."""
        protocol, answer = await self.file_attempt(user_id, task_id, role, port, source)
        assert answer.result_code == 1, (user_id, role, source)
        assert await closed_within(protocol, 3)

    async def file_login(
        self, user_id: int, task_id: str, role: int, port: int | None = None
    ) -> TeamTalkClientProtocol:
        protocol, answer = await self.file_attempt(user_id, task_id, role, port)
        assert answer.result_code == 0, answer
        return protocol

    async def request_file(
        self, session: TeamTalkSession, to_id: int, size: int, mode: int, name: str = "f.bin"
    ) -> Any:
        """``CID_FILE_REQUEST`` -> the ``IMFileRsp``."""
        return await session.get(
            B.CID_FILE_REQUEST,
            File_pb2.IMFileReq(
                from_user_id=0, to_user_id=to_id, file_name=name, file_size=size, trans_mode=mode
            ),
        )

    async def has_offline(self, session: TeamTalkSession) -> Any:
        return await session.get(
            B.CID_FILE_HAS_OFFLINE_REQ, File_pb2.IMFileHasOfflineReq(user_id=0)
        )
