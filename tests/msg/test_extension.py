"""The extension's opt-in (docs/EXTENSION.md, "Opting in"), over real sockets.

A connection says hello and is granted the features the deployment offers; one that never
said hello is sent no SID_EXTENSION packet at all, whatever the server tries to send it.
"""

from __future__ import annotations

from teamtalk_py.extension import CONTACTS, ROOMS, may_send
from teamtalk_py.msg.extension import notify_users
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.protocol.header import pack_pdu
from teamtalk_py.wire.protocol import encode
from tests.msg_support import MsgTestCase, assert_nothing, next_pdu
from tests.support import TestCase


def _notify(request_id: int = 1) -> X.IMExtFriendRequestNotify:
    notify = X.IMExtFriendRequestNotify()
    notify.request.request_id = request_id
    notify.request.from_user_id = 1
    notify.request.to_user_id = 2
    notify.request.create_time = 1
    notify.request.state = X.EXT_REQUEST_PENDING
    return notify


class MaySendTests(TestCase):
    """The one rule every packet to a client passes (``MsgConnection.send_raw``)."""

    def test_no_extension_packet_without_hello(self) -> None:
        """Before hello: no answer, no notify; TeamTalk packets pass."""
        answer = encode(X.CID_EXT_HELLO_RSP, X.IMExtHelloRsp(result_code=0))
        notify = encode(X.CID_EXT_FRIEND_REQUEST_NOTIFY, _notify())
        assert not may_send(None, answer)
        assert not may_send(None, notify)
        assert may_send(None, pack_pdu(0x0007, 0x0701, b""))

    def test_notifies_need_their_feature(self) -> None:
        """After hello: answers pass, notifies only of granted features."""
        notify = encode(X.CID_EXT_FRIEND_REQUEST_NOTIFY, _notify())
        answer = encode(X.CID_EXT_FRIEND_LIST_RSP, X.IMExtFriendListRsp(result_code=1))
        assert may_send(frozenset({CONTACTS}), notify)
        assert not may_send(frozenset({ROOMS}), notify)
        assert not may_send(frozenset(), notify)
        assert may_send(frozenset(), answer)

    def test_server_commands_never_reach_clients(self) -> None:
        """Relays between servers are withheld even from a connection with every feature."""
        relay = encode(X.CID_EXT_USER_RELAY, X.IMExtUserRelay(feature=CONTACTS, pdu=b""))
        assert not may_send(frozenset({CONTACTS, ROOMS}), relay)


class HelloTests(MsgTestCase):
    overrides = {"contacts.mode": "both"}

    async def _hello(self, session, *features: str, **fields) -> X.IMExtHelloRsp:
        return await session.get(
            X.CID_EXT_HELLO_REQ, X.IMExtHelloReq(features=list(features), version=1, **fields)
        )

    async def test_hello_grants_what_is_offered(self) -> None:
        """Asked-for features the deployment offers are granted; unknown names ignored."""
        await self.add_user("alice")
        alice = await self.login("alice")
        answer = await self._hello(alice, "rooms", "contacts", "telepathy")
        assert answer.result_code == X.EXT_RESULT_OK
        assert list(answer.features) == ["contacts", "rooms"]
        assert (answer.contacts_mode, answer.version) == ("both", 1)
        answer = await self._hello(alice, "rooms")
        assert list(answer.features) == ["rooms"]

    async def test_directory_mode_offers_no_contacts(self) -> None:
        """In the default directory mode only rooms are offered."""
        await self.restart_with(**{"contacts.mode": "directory"})
        await self.add_user("alice")
        alice = await self.login("alice")
        answer = await self._hello(alice, "contacts", "rooms")
        assert list(answer.features) == ["rooms"]
        assert answer.contacts_mode == "directory"

    async def test_hello_for_someone_else_is_refused(self) -> None:
        """A hello naming another user id grants nothing."""
        await self.add_user("alice")
        bob_id = await self.add_user("bob")
        alice = await self.login("alice")
        answer = await self._hello(alice, "contacts", user_id=bob_id)
        assert answer.result_code == X.EXT_RESULT_FORBIDDEN
        assert list(answer.features) == []

    async def test_request_before_hello_gets_no_answer(self) -> None:
        """An extension request from a connection that never said hello is not answered."""
        await self.add_user("alice")
        alice = await self.login("alice")
        alice.protocol.send(X.CID_EXT_FRIEND_LIST_REQ, X.IMExtFriendListReq())
        await assert_nothing(alice.protocol)

    async def test_connection_without_hello_receives_no_extension_packet(self) -> None:
        """Notifies and even raw extension packets aimed at a connection that did not opt
        in are withheld; the opted-in connection of the same user gets the notify."""
        alice_id = await self.add_user("alice")
        plain = await self.login("alice")
        opted = await self.login("alice", client_type=0x11)  # iOS beside the PC client
        await self._hello(opted, "contacts")
        msg = self.server.service("msg")
        sent = notify_users(msg, [alice_id], CONTACTS, X.CID_EXT_FRIEND_REQUEST_NOTIFY, _notify())
        assert sent == 1
        got = await next_pdu(opted.protocol, X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        assert got.message.request.request_id == 1
        withheld = msg.extension_packets_withheld
        for conn in msg.online.connections_of(alice_id):
            conn.send_raw(encode(X.CID_EXT_FRIEND_REQUEST_NOTIFY, _notify(2)))
        assert msg.extension_packets_withheld == withheld + 1
        await next_pdu(opted.protocol, X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        await assert_nothing(plain.protocol)
        # The fan-out path (presence batches) keeps the rule: checked once per batch.
        conns = msg.online.connections_of(alice_id)
        batch = encode(X.CID_EXT_FRIEND_REQUEST_NOTIFY, _notify(3))
        assert msg.factory.send_now_to_each(conns, batch) == 2
        assert msg.extension_packets_withheld == withheld + 2
        got = await next_pdu(opted.protocol, X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        assert got.message.request.request_id == 3
        await assert_nothing(plain.protocol)

    async def restart_with(self, **overrides) -> None:
        await self.stop_server(self.server)
        self.server = await self.start_server(**overrides)
