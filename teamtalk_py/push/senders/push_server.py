"""TeamTalk's own push_server over its PDU link (commands.md §2.6, wire.md §7).

For sites that already run one: ``--push-server HOST:PORT``. The link is a ``ServerLink``
(reconnect with the reference's back-off, a heartbeat every 5 s when silent, dropped
after 30 s without a byte; the push_server echoes heartbeats). Each job is one
``CID_OTHER_PUSH_TO_USER_REQ{flash, data, user_token_list = [UserTokenInfo]}``.

The push_server answers ``CID_OTHER_PUSH_TO_USER_RSP`` without our seq (it builds a new
PDU), with one ``(token, result_code)`` per token, so answers are matched to requests by
token, oldest first. ``result_code`` 0: handed to APNs; 1: refused for good (not an iOS
token, a malformed token, a payload over 256 bytes): the dead letter. A link that is
down, or an answer that does not come within ``ANSWER_TIMEOUT``, is retried later.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Server_pb2
from teamtalk_py.push.jobs import PushJob
from teamtalk_py.push.senders.base import SENT, Outcome, Result
from teamtalk_py.wire import CommandTable, Request
from teamtalk_py.wire.link import LinkProtocol, ServerLink, ignore_heartbeat, parse_host_port
from teamtalk_py.wire.link_auth import TEAMTALK_PEER
from teamtalk_py.wire.protocol import PduProtocol

log = Logger(namespace="teamtalk.push.push_server")

DEFAULT_PORT = 8500
ANSWER_TIMEOUT = 10.0


def push_request(job: PushJob) -> Server_pb2.IMPushToUserReq:
    request = Server_pb2.IMPushToUserReq(flash=job.flash, data=job.data)
    request.user_token_list.add(
        user_id=job.user_id,
        user_type=job.client_type,
        token=job.token,
        push_count=job.badge,
        push_type=job.push_type,
    )
    return request


class _Waiting:
    __slots__ = ("token", "answer", "timeout")

    def __init__(self, token: str, answer: defer.Deferred[Outcome]) -> None:
        self.token = token
        self.answer = answer
        self.timeout: Any = None

    def settle(self, outcome: Outcome) -> None:
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        self.answer.callback(outcome)


class PushServerSender:
    name = "push_server"

    def __init__(self, reactor: Any, address: str) -> None:
        host, port = parse_host_port(address, DEFAULT_PORT)
        self.reactor = reactor
        table: CommandTable[LinkProtocol] = CommandTable()
        table.register(B.CID_OTHER_HEARTBEAT, ignore_heartbeat, decode=False)
        table.register(B.CID_OTHER_PUSH_TO_USER_RSP, self._answered)
        self.link = ServerLink(
            reactor,
            "push_server",
            host,
            port,
            table,
            on_disconnect=self._link_lost,
            auth=TEAMTALK_PEER,
        )
        #: Requests waiting for their answer, oldest first.
        self._pending: list[_Waiting] = []

    def start(self) -> None:
        self.link.start()

    def stop(self) -> defer.Deferred[None]:
        self._fail_pending("sender stopped")
        return defer.ensureDeferred(self.link.stop())

    def send(self, job: PushJob) -> defer.Deferred[Outcome]:
        if not self.link.send(B.CID_OTHER_PUSH_TO_USER_REQ, push_request(job)):
            return defer.succeed(Outcome(Result.RETRY, "push_server link is down"))
        waiting = _Waiting(job.token, defer.Deferred())
        waiting.timeout = self.reactor.callLater(ANSWER_TIMEOUT, self._timed_out, waiting)
        self._pending.append(waiting)
        return waiting.answer

    def _timed_out(self, waiting: _Waiting) -> None:
        if waiting in self._pending:
            self._pending.remove(waiting)
            waiting.settle(Outcome(Result.RETRY, "push_server did not answer"))

    def _answered(self, conn: PduProtocol, request: Request) -> None:
        answer = request.message
        assert isinstance(answer, Server_pb2.IMPushToUserRsp)
        for result in answer.push_result_list:
            waiting = next((w for w in self._pending if w.token == result.user_token), None)
            if waiting is None:
                log.info("push_server answered for a token nobody waits for")
                continue
            self._pending.remove(waiting)
            if result.result_code == 0:
                waiting.settle(SENT)
            else:
                waiting.settle(Outcome(Result.FAILED, f"result_code {result.result_code}"))

    def _link_lost(self, conn: LinkProtocol) -> None:
        self._fail_pending("push_server link lost")

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, []
        for waiting in pending:
            waiting.settle(Outcome(Result.RETRY, why))
