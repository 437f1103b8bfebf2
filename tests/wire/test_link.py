"""Server-to-server links: back-off, heartbeats, request/answer by seq, reconnect."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2
from teamtalk_py.wire import CommandTable
from teamtalk_py.wire.link import (
    HEARTBEAT_PDU,
    InboundLinkFactory,
    LinkFactory,
    ServerLink,
    cluster_backoff,
    reference_backoff,
)
from teamtalk_py.wire.link_auth import LinkAuth
from tests.support import TEST_SECRET, TestCase

AUTH = LinkAuth(TEST_SECRET.encode())


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


class LinkTests(TestCase):
    def test_links_between_our_nodes_are_retried_within_2_s(self):
        """0.5, 1, 2 s, then every 2 s: a restarted route is linked again at once."""
        assert [cluster_backoff(n) for n in range(1, 7)] == [0.5, 1, 2, 2, 2, 2]

    def test_backoff_follows_the_reference_sequence(self):
        """2, 4, 8, 16, 32, 64 seconds, then wrapping back to 4 (wire.md §7.1)."""
        assert [reference_backoff(n) for n in range(1, 13)] == [
            2,
            4,
            8,
            16,
            32,
            64,
            4,
            8,
            16,
            32,
            64,
            4,
        ]

    async def test_link_requests_are_answered_by_seq_and_the_link_reconnects(self):
        """A request fires with the answer carrying its seq; a dropped link comes back."""
        server_table = CommandTable()
        server_conns = []

        def answer_time(conn, request):
            conn.send(
                B.CID_MSG_TIME_RESPONSE, Message_pb2.IMClientTimeRsp(server_time=42), request.seq
            )

        server_table.register(B.CID_MSG_TIME_REQUEST, answer_time)
        server_factory = InboundLinkFactory(
            auth=AUTH, purpose="test", clock=reactor, table=server_table
        )
        original = server_factory.buildProtocol

        def build(addr):
            proto = original(addr)
            server_conns.append(proto)
            return proto

        server_factory.buildProtocol = build
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server_factory)
        connects = []
        up: defer.Deferred = defer.Deferred()

        def on_connect(conn):
            connects.append(conn)
            if not up.called:
                up.callback(conn)

        link = ServerLink(
            reactor,
            "test",
            "127.0.0.1",
            port.getHost().port,
            CommandTable(),
            on_connect=on_connect,
            auth=AUTH,
        )
        link.start()
        try:
            await up
            answer = await link.request(B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq())
            assert answer.command_id == B.CID_MSG_TIME_RESPONSE
            assert answer.message.server_time == 42
            # The server drops the link: the client reconnects by itself (first retry at 2 s).
            server_conns[0].transport.loseConnection()
            for _ in range(60):
                await deferLater(0.1)
                if len(connects) == 2:
                    break
            assert len(connects) == 2
            answer = await link.request(B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq())
            assert answer.message.server_time == 42
        finally:
            await link.stop()
            await port.stopListening()

    def test_a_request_that_times_out_gives_its_seq_back(self):
        """A request the peer never answers, timed out, is no longer pending: unanswered
        requests (a room relay to a route that does not answer) cannot fill the seqs."""
        clock = Clock()
        factory = LinkFactory(None, auth=AUTH, purpose="test", clock=clock, table=CommandTable())
        conn = factory.buildProtocol(None)  # not connected: what it sends goes nowhere
        d = conn.request(B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq())
        d.addTimeout(5, clock)
        assert list(conn._pending) == [1]
        clock.advance(5)
        self.failureResultOf(d, defer.TimeoutError)
        assert conn._pending == {}

    def test_heartbeat_pdu_is_an_empty_other_heartbeat(self):
        """A link heartbeat is the bare 16-byte header of CID_OTHER_HEARTBEAT."""
        assert HEARTBEAT_PDU == bytes.fromhex("00000010000100000007070100000000")
