"""One dispatch path: packets from route meet the same decode checks as a client's."""

from __future__ import annotations

from twisted.logger import formatEvent, globalLogPublisher

from teamtalk_client import encode_pdu
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2
from teamtalk_py.wire.protocol import encode
from tests.node_support import NodeTestCase


class RouteDispatchTests(NodeTestCase):
    def route_packet(self, pdu: bytes) -> list[str]:
        """Hand ``pdu`` to the msg service as route would; the log lines it caused."""
        lines: list[str] = []

        def observe(event: dict) -> None:
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        try:
            assert self.node.msg is not None
            self.node.msg.route_pdu_received(pdu)
            self.pump()
        finally:
            globalLogPublisher.removeObserver(observe)
        return lines

    def test_a_read_notify_from_route_reaches_the_reader(self):
        """A well-formed packet from route is delivered to its user's connections."""
        bob_id = self.add_user("bob")
        bob = self.login("bob")
        notify = Message_pb2.IMMsgDataReadNotify(
            user_id=bob_id, session_id=7, msg_id=3, session_type=B.SESSION_TYPE_SINGLE
        )
        self.route_packet(encode(B.CID_MSG_READ_NOTIFY, notify))
        pdu = self.get_success(bob.protocol.wait_for(B.CID_MSG_READ_NOTIFY, timeout=1))
        assert pdu.message.msg_id == 3

    def test_a_malformed_packet_from_route_is_dropped_with_a_log_line(self):
        """A body that does not parse, or misses a required field, is logged and dropped
        (it used to reach the handler undecoded); the node carries on."""
        bob_id = self.add_user("bob")
        bob = self.login("bob")
        garbage = encode_pdu(B.CID_MSG_READ_NOTIFY, b"\xff\xff\xff")
        lines = self.route_packet(garbage)
        assert any("dropping malformed CID_MSG_READ_NOTIFY from route" in x for x in lines)
        partial = Message_pb2.IMMsgDataReadNotify(user_id=bob_id)
        lines = self.route_packet(encode(B.CID_MSG_READ_NOTIFY, partial))
        assert any("dropping CID_MSG_READ_NOTIFY from route: missing" in x for x in lines)
        pending = [p.command_id for p in bob.protocol.notifications.pending]
        assert B.CID_MSG_READ_NOTIFY not in pending
        notify = Message_pb2.IMMsgDataReadNotify(
            user_id=bob_id, session_id=7, msg_id=4, session_type=B.SESSION_TYPE_SINGLE
        )
        self.route_packet(encode(B.CID_MSG_READ_NOTIFY, notify))
        pdu = self.get_success(bob.protocol.wait_for(B.CID_MSG_READ_NOTIFY, timeout=1))
        assert pdu.message.msg_id == 4
