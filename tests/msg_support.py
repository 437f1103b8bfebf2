"""Helpers for end-to-end msg-service tests: ``MsgTestCase`` starts an in-process server on
a fresh data dir, creates accounts in its store, logs clients in over loopback with the
client library, and closes everything again so trial's reactor check stays clean."""

from __future__ import annotations

import functools
import time
from typing import Any, ClassVar

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionLost
from twisted.internet.task import deferLater

from teamtalk_client import Pdu, TeamTalkClientProtocol, TeamTalkSession, connect
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2
from teamtalk_py.store import accounts
from tests.support import RunningServer, TestCase, local_config, start_server

PASSWORD = "secret"


@functools.cache
def shared_password_record() -> accounts.PasswordRecord:
    """One scrypt record of ``PASSWORD`` for every test account that uses it: the KDF is
    slow on purpose and hundreds of test accounts each ran it. Every login still runs it
    to verify; the server adds accounts with their own salt (``teamtalk-admin``, the
    admin API)."""
    return accounts.password_record(PASSWORD)


#: How long "nothing arrives" is watched for; loopback delivery takes well under 10 ms.
QUIET = 0.15

#: The services these tests need; the file service is tested on its own.
BASE = {"server.services": "msg,route,login"}

PC = B.CLIENT_TYPE_WINDOWS
MAC = B.CLIENT_TYPE_MAC
IOS = B.CLIENT_TYPE_IOS
ANDROID = B.CLIENT_TYPE_ANDROID


def msg_data(
    to_id: int,
    data: bytes,
    create_time: int = 0,
    msg_type: int = B.MSG_TYPE_SINGLE_TEXT,
    from_id: int = 0,
) -> Message_pb2.IMMsgData:
    """A ``CID_MSG_DATA`` body as clients send it (the server ignores ``from_user_id``)."""
    return Message_pb2.IMMsgData(
        from_user_id=from_id,
        to_session_id=to_id,
        msg_id=0,
        create_time=create_time,
        msg_type=msg_type,
        msg_data=data,
    )


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def next_pdu(
    protocol: TeamTalkClientProtocol, command_id: int | None, timeout: float = 3.0
) -> Pdu:
    """The next notification of ``command_id`` (None: any); fails after ``timeout``."""
    return await protocol.wait_for(command_id, timeout=timeout)


#: Presence notifications arrive whenever somebody logs in or out; "nothing else
#: arrives" ignores them.
PRESENCE = (B.CID_BUDDY_LIST_STATUS_NOTIFY, B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY)


async def assert_nothing(
    protocol: TeamTalkClientProtocol, command_id: int | None = None, within: float = QUIET
) -> None:
    """Fail if a notification of ``command_id`` (None: any but presence notifications)
    arrives within ``within`` seconds."""
    predicate = None if command_id is not None else lambda p: p.command_id not in PRESENCE
    try:
        pdu = await protocol.wait_for(command_id, predicate, timeout=within)
    except (TimeoutError, ConnectionLost):
        return  # nothing queued, and nothing more can come on a closed connection
    raise AssertionError(f"unexpected {pdu.command_id:#06x}: {pdu.decode_partial()}")


async def closed_within(protocol: TeamTalkClientProtocol, seconds: float) -> bool:
    """Whether the server closes this connection within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not protocol.closed.called:
        await sleep(0.02)
    return protocol.closed.called


async def send_windowed(session: TeamTalkSession, messages, window: int) -> list[int]:
    """Send ``messages`` with up to ``window`` unanswered at a time; the acked ids."""
    ids: list[int] = []
    pending: list[defer.Deferred] = []
    for message in messages:
        if len(pending) >= window:
            ids.append((await pending.pop(0)).message.msg_id)
        pending.append(session.protocol.request(B.CID_MSG_DATA, message))
    for d in pending:
        ids.append((await d).message.msg_id)
    return ids


class MsgTestCase(TestCase):
    """A running server (``self.server``) on a fresh data dir, torn down after the test."""

    #: Config overrides for every server this test case starts.
    overrides: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> defer.Deferred:
        self.data_dir = self.tmp_path() / "data"
        self._clients: list[TeamTalkClientProtocol] = []
        self._servers: list[RunningServer] = []
        self.addCleanup(lambda: defer.ensureDeferred(self._tear_down()))
        return defer.ensureDeferred(self._set_up())

    async def _set_up(self) -> None:
        self.server = await self.start_server()

    async def _tear_down(self) -> None:
        for protocol in self._clients:
            if not protocol.closed.called:
                protocol.transport.loseConnection()
        for protocol in self._clients:
            await protocol.closed
        for server in reversed(self._servers):
            await self.stop_server(server)

    async def start_server(self, **overrides: Any) -> RunningServer:
        """A server on ``self.data_dir`` (the same one across restarts)."""
        config = local_config(self.data_dir, **{**BASE, **self.overrides, **overrides})
        server = await start_server(config)
        self._servers.append(server)
        return server

    async def stop_server(self, server: RunningServer) -> None:
        if server not in self._servers:
            return
        self._servers.remove(server)
        msg = server.node.msg  # None on a node without the msg service
        await server.stop()
        # Let the server side of closed connections finish closing too.
        deadline = time.monotonic() + 2
        while msg is not None and msg.factory.connections and time.monotonic() < deadline:
            await sleep(0.01)

    async def restart(self) -> RunningServer:
        """Stop ``self.server`` and start a new server process-alike on the same data dir."""
        await self.stop_server(self.server)
        self.server = await self.start_server()
        return self.server

    # -- accounts ----------------------------------------------------------------------

    async def add_user(
        self, name: str, password: str = PASSWORD, *, now: int | None = None, **fields: Any
    ) -> int:
        """Create an account through the running server's store; its id. Accounts with
        the common test password share one scrypt record (``shared_password_record``)."""
        if password == PASSWORD:
            fields.setdefault("record", shared_password_record())
        return await self.server.service("store").write(
            accounts.add_user, name, password, now=int(time.time()) if now is None else now,
            **fields,
        )  # fmt: skip

    async def add_department(self, name: str, *, now: int | None = None) -> int:
        return await self.server.service("store").write(
            accounts.add_department, name, now=int(time.time()) if now is None else now
        )

    # -- clients -----------------------------------------------------------------------

    async def connect(self, source: str | None = None) -> TeamTalkClientProtocol:
        """A connection to the msg service (from the loopback address ``source``: Linux
        routes all of 127/8 to lo, so tests can play clients at other addresses)."""
        protocol = await connect(reactor, "127.0.0.1", self.server.msg_port, bind_address=source)
        self._clients.append(protocol)
        return protocol

    async def attempt(
        self,
        name: str,
        password: str = PASSWORD,
        client_type: int = PC,
        source: str | None = None,
        **kw: Any,
    ):
        """Log in on a new connection, whatever the outcome: (answer, session)."""
        session = TeamTalkSession(await self.connect(source), timeout=5.0)
        answer = await session.login(name, password, client_type=client_type, **kw)
        return answer, session

    async def login(
        self,
        name: str,
        password: str = PASSWORD,
        client_type: int = PC,
        source: str | None = None,
        **kw: Any,
    ) -> TeamTalkSession:
        """A new connection logged in as ``name``; fails the test if the login is refused."""
        answer, session = await self.attempt(name, password, client_type, source, **kw)
        assert answer.result_code == B.REFUSE_REASON_NONE, answer
        return session
