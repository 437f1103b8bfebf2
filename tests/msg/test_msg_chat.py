"""One-to-one messages end to end over loopback: sending and acks, ids per conversation,
multi-device delivery, the resend rule, refusals left without an ack, read acks and
their sync, unread counts, history, latest id, get by id, server time, P2P commands, and
history and unread state surviving a server restart on the same data dir."""

from __future__ import annotations

import time

from twisted.internet.threads import deferToThread

from teamtalk_client import TeamTalkSession, decrypt_text, encode_pdu, encrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Message_pb2, SwitchService_pb2
from tests.msg_support import (
    IOS,
    PC,
    MsgTestCase,
    assert_nothing,
    msg_data,
    next_pdu,
    send_windowed,
    sleep,
)
from tests.store_support import Gate

SINGLE = B.SESSION_TYPE_SINGLE
TEXT = B.MSG_TYPE_SINGLE_TEXT


async def history(session: TeamTalkSession, peer: int, begin: int = 0, count: int = 20):
    return await session.message_list(peer, SINGLE, begin=begin, count=count)


async def by_ids(session: TeamTalkSession, peer: int, ids: list[int]):
    return await session.get(
        B.CID_MSG_GET_BY_MSG_ID_REQ,
        Message_pb2.IMGetMsgByIdReq(
            user_id=0, session_type=SINGLE, session_id=peer, msg_id_list=ids
        ),
    )


def texts(msg_list) -> list[tuple[int, str]]:
    return [(m.msg_id, decrypt_text(m.msg_data)) for m in msg_list]


class SendTests(MsgTestCase):
    async def test_text_is_acked_with_the_stored_id_and_delivered_to_the_receiver(self):
        """The sender's ack carries the new msg_id; the receiver gets the message with the
        sender's real id and the server's time, as a notification (seq 0)."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        before = int(time.time())
        seq = alice.protocol.send(
            B.CID_MSG_DATA, msg_data(b, encrypt_text("hello bob"), create_time=5, from_id=c)
        )
        ack = await next_pdu(alice.protocol, B.CID_MSG_DATA_ACK)
        assert ack.seq_num == seq
        assert (ack.message.user_id, ack.message.session_id) == (a, b)
        assert (ack.message.msg_id, ack.message.session_type) == (1, SINGLE)
        delivered = await next_pdu(bob.protocol, B.CID_MSG_DATA)
        got = delivered.message
        assert delivered.seq_num == 0
        assert (got.from_user_id, got.to_session_id, got.msg_id) == (a, b, 1)
        assert before <= got.create_time <= int(time.time()) + 1
        assert got.msg_type == TEXT
        assert decrypt_text(got.msg_data) == "hello bob"
        assert not got.HasField("attach_data")
        await assert_nothing(alice.protocol, B.CID_MSG_DATA)

    async def test_ids_count_up_per_conversation_from_1_in_both_directions(self):
        """Each pair has its own counter starting at 1, shared by both directions."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        assert (await alice.send_text(b, "1")).msg_id == 1
        assert (await alice.send_text(b, "2")).msg_id == 2
        assert (await bob.send_text(a, "3")).msg_id == 3
        assert (await alice.send_text(c, "other pair")).msg_id == 1
        assert (await bob.send_text(c, "third pair")).msg_id == 1
        assert (await alice.send_text(b, "4")).msg_id == 4

    async def test_audio_message_is_stored_and_delivered_unchanged(self):
        """Voice payloads (4-byte length + audio) go through byte for byte."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        voice = (3).to_bytes(4, "big") + bytes(range(256)) * 4
        ack = await alice.send_message(b, B.MSG_TYPE_SINGLE_AUDIO, voice)
        assert ack.msg_id == 1
        delivered = (await next_pdu(bob.protocol, B.CID_MSG_DATA)).message
        assert (delivered.msg_type, delivered.msg_data) == (B.MSG_TYPE_SINGLE_AUDIO, voice)
        [stored] = (await history(bob, a)).msg_list
        assert (stored.msg_type, stored.msg_data) == (B.MSG_TYPE_SINGLE_AUDIO, voice)

    async def test_message_reaches_every_device_of_both_users_but_not_the_sending_one(self):
        """PC and mobile of the receiver, and the sender's other device, all get it once."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice_pc = await self.login("alice", client_type=PC)
        alice_phone = await self.login("alice", client_type=IOS)
        bob_pc = await self.login("bob", client_type=PC)
        bob_phone = await self.login("bob", client_type=IOS)
        ack = await alice_pc.send_text(b, "everywhere")
        for session in (alice_phone, bob_pc, bob_phone):
            delivered = await next_pdu(session.protocol, B.CID_MSG_DATA)
            assert (delivered.message.from_user_id, delivered.message.msg_id) == (a, ack.msg_id)
        for session in (alice_pc, alice_phone, bob_pc, bob_phone):
            await assert_nothing(session.protocol, B.CID_MSG_DATA, within=0.05)

    async def test_message_to_an_offline_user_waits_in_unread_and_history(self):
        """Nobody online to deliver to: still acked, then found at the receiver's login."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        ack = await alice.send_text(b, "while you were out")
        assert ack.msg_id == 1
        bob = await self.login("bob")
        counts = await bob.unread_counts()
        assert [(u.session_id, u.unread_cnt) for u in counts.unreadinfo_list] == [(a, 1)]
        assert texts((await history(bob, a)).msg_list) == [(1, "while you were out")]

    async def test_receivers_delivery_ack_changes_nothing_and_is_not_forwarded(self):
        """A receiver's CID_MSG_DATA_ACK is accepted silently; it is not a read receipt."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        await alice.send_text(b, "hi")
        bob.delivery_ack(await next_pdu(bob.protocol, B.CID_MSG_DATA))
        await assert_nothing(alice.protocol)
        await assert_nothing(bob.protocol)
        assert (await bob.unread_counts()).total_cnt == 1
        assert a


class ResendTests(MsgTestCase):
    async def test_identical_messages_on_one_connection_are_all_stored(self):
        """Fifty messages with the same text and create_time on one connection, sixteen
        in flight: fifty ids, fifty deliveries, fifty rows in history."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        message = msg_data(b, encrypt_text("ok"), create_time=1_700_000_000)
        ids = await send_windowed(alice, [message] * 50, window=16)
        assert sorted(ids) == list(range(1, 51))
        delivered = [(await next_pdu(bob.protocol, B.CID_MSG_DATA)).message for _ in ids]
        assert sorted(m.msg_id for m in delivered) == list(range(1, 51))
        assert {decrypt_text(m.msg_data) for m in delivered} == {"ok"}
        await assert_nothing(bob.protocol, B.CID_MSG_DATA)
        rows = (await history(bob, a, count=100)).msg_list
        assert sorted(m.msg_id for m in rows) == list(range(1, 51))
        assert (await bob.unread_counts()).total_cnt == 50

    async def test_resend_after_a_lost_ack_is_not_duplicated(self):
        """The same message (same client create_time and payload) sent again on a new
        connection gets the first id back; it is stored and delivered once."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        bob = await self.login("bob")
        message = msg_data(b, encrypt_text("only once"), create_time=1_700_000_000)
        first = await self.login("alice")
        first.protocol.send(B.CID_MSG_DATA, message)  # the ack is never read...
        await next_pdu(bob.protocol, B.CID_MSG_DATA)
        first.protocol.transport.abortConnection()  # ...and lost with the connection
        second = await self.login("alice")
        again = await second.get(B.CID_MSG_DATA, message)
        assert again.msg_id == 1
        await assert_nothing(bob.protocol, B.CID_MSG_DATA)
        assert (await bob.unread_counts()).total_cnt == 1
        assert texts((await history(bob, a)).msg_list) == [(1, "only once")]
        assert (await second.send_text(b, "next")).msg_id == 2

    async def test_resend_after_new_messages_on_the_new_connection_is_recognised(self):
        """A client that sends something new before resending what lost its ack: the
        resend still gets the first copy's id."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        message = msg_data(b, encrypt_text("lost ack"), create_time=1_700_000_005)
        first = await self.login("alice")
        assert (await first.get(B.CID_MSG_DATA, message)).msg_id == 1
        await first.logout()
        second = await self.login("alice")
        assert (await second.send_text(b, "new first")).msg_id == 2
        assert (await second.get(B.CID_MSG_DATA, message)).msg_id == 1
        assert texts((await history(second, b)).msg_list) == [(2, "new first"), (1, "lost ack")]
        assert a

    async def test_resend_racing_the_first_write_gets_the_same_id(self):
        """The first copy's connection closes while its write waits for the store; the
        resend on the next connection waits for it and gets its id."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        bob = await self.login("bob")
        message = msg_data(b, encrypt_text("racing"), create_time=1_700_000_001)
        first = await self.login("alice")
        gate = Gate()
        store = self.server.service("store")
        held = store.write(gate)
        await deferToThread(gate.entered.wait, 5)
        first.protocol.send(B.CID_MSG_DATA, message)
        await sleep(0.05)  # queued behind the gate
        first.protocol.transport.abortConnection()
        second = await self.login("alice")
        resend = second.protocol.request(B.CID_MSG_DATA, message)
        await sleep(0.05)
        gate.release.set()
        await held
        assert (await resend).message.msg_id == 1
        await next_pdu(bob.protocol, B.CID_MSG_DATA)
        await assert_nothing(bob.protocol, B.CID_MSG_DATA)
        assert texts((await history(bob, a)).msg_list) == [(1, "racing")]

    async def test_each_lost_copy_is_matched_once_then_the_text_is_new_again(self):
        """Two identical messages whose acks were lost, resent on a new connection, get
        the two stored ids; a third identical one there is a new message."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        message = msg_data(b, encrypt_text("twice"), create_time=1_700_000_002)
        first = await self.login("alice")
        assert sorted(await send_windowed(first, [message] * 2, window=2)) == [1, 2]
        await first.logout()
        second = await self.login("alice")
        assert [(await second.get(B.CID_MSG_DATA, message)).msg_id for _ in range(3)] == [
            1,
            2,
            3,
        ]
        assert sorted(m.msg_id for m in (await history(second, b)).msg_list) == [1, 2, 3]
        assert a

    async def test_same_bytes_from_the_other_client_category_are_a_new_message(self):
        """A PC's message repeated by the same user's phone is not a resend: the PC
        connection may still be open, and a phone never resends what a PC sent."""
        b = await self.add_user("bob")
        await self.add_user("alice")
        message = msg_data(b, encrypt_text("same words"), create_time=1_700_000_003)
        pc = await self.login("alice", client_type=PC)
        assert (await pc.get(B.CID_MSG_DATA, message)).msg_id == 1
        await pc.logout()
        phone = await self.login("alice", client_type=IOS)
        assert (await phone.get(B.CID_MSG_DATA, message)).msg_id == 2

    async def test_messages_without_create_time_are_never_deduplicated(self):
        """create_time 0 (iOS and Mac clients): the same bytes on a new connection are a
        new message; so are equal payloads with different create_time."""
        b = await self.add_user("bob")
        await self.add_user("alice")
        ok = encrypt_text("ok")
        first = await self.login("alice")
        assert (await first.get(B.CID_MSG_DATA, msg_data(b, ok, 0))).msg_id == 1
        assert (await first.get(B.CID_MSG_DATA, msg_data(b, ok, 100))).msg_id == 2
        await first.logout()
        second = await self.login("alice")
        assert (await second.get(B.CID_MSG_DATA, msg_data(b, ok, 0))).msg_id == 3
        assert (await second.get(B.CID_MSG_DATA, msg_data(b, ok, 101))).msg_id == 4

    async def test_resend_after_a_restart_is_recognised_and_delivered_again(self):
        """The fact that recognises a resend is stored with the message: after a
        restart the resend gets the stored id, and (the delivery may never have left the
        old process) the receiver gets it again under that id."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        message = msg_data(b, encrypt_text("before the restart"), create_time=1_700_000_004)
        alice = await self.login("alice")
        assert (await alice.get(B.CID_MSG_DATA, message)).msg_id == 1
        await self.restart()
        bob = await self.login("bob")
        alice = await self.login("alice")
        assert (await alice.get(B.CID_MSG_DATA, message)).msg_id == 1
        delivered = (await next_pdu(bob.protocol, B.CID_MSG_DATA)).message
        assert (delivered.from_user_id, delivered.msg_id) == (a, 1)
        assert texts((await history(bob, a)).msg_list) == [(1, "before the restart")]


class RefusalTests(MsgTestCase):
    overrides = {"msg.max_message_size": 1024}

    async def assert_refused(self, sender: TeamTalkSession, message, others) -> None:
        """No ack (the shipped clients time out and offer a resend), nothing delivered."""
        sender.protocol.send(B.CID_MSG_DATA, message)
        await assert_nothing(sender.protocol, B.CID_MSG_DATA_ACK)
        for other in others:
            await assert_nothing(other.protocol, B.CID_MSG_DATA, within=0.01)

    async def test_refused_messages_get_no_ack_and_are_never_stored(self):
        """Empty, oversize, to yourself and to an unknown user: no ack, nothing
        delivered, stored or counted; the next good message still gets id 1."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        alice_phone = await self.login("alice", client_type=IOS)
        bob = await self.login("bob")
        others = (alice_phone, bob)
        await self.assert_refused(alice, msg_data(b, b""), others)
        await self.assert_refused(alice, msg_data(b, b"x" * 1025), others)
        await self.assert_refused(alice, msg_data(a, b"note to self"), others)
        await self.assert_refused(alice, msg_data(987654, b"who?"), others)
        await self.assert_refused(alice, msg_data(0, b"nobody"), others)
        assert (await bob.unread_counts()).total_cnt == 0
        assert list((await history(alice, a)).msg_list) == []
        assert list((await history(alice, b)).msg_list) == []
        assert (await alice.get(B.CID_MSG_DATA, msg_data(b, b"x" * 1024))).msg_id == 1

    async def test_malformed_message_bodies_are_dropped_and_the_connection_keeps_working(self):
        """Garbage or a body missing required fields gets no ack (as the reference), and
        neither the sender's connection nor anybody else is affected."""
        b = await self.add_user("bob")
        await self.add_user("alice")
        alice = await self.login("alice")
        bob = await self.login("bob")
        alice.protocol.send(B.CID_MSG_DATA, b"\x0a\xff\xff\xff\xff")
        partial = Message_pb2.IMMsgData(to_session_id=b, msg_data=b"x")
        alice.protocol.send(B.CID_MSG_DATA, partial.SerializePartialToString())
        wrong_type = msg_data(b, b"x").SerializeToString().replace(b"\x28\x01", b"\x28\x7f")
        alice.protocol.send(B.CID_MSG_DATA, wrong_type)  # msg_type 127 is no MsgType
        await assert_nothing(alice.protocol)
        await assert_nothing(bob.protocol, within=0.01)
        assert (await alice.send_text(b, "still fine")).msg_id == 1
        await next_pdu(bob.protocol, B.CID_MSG_DATA)


class ReadAndUnreadTests(MsgTestCase):
    async def test_unread_counts_per_peer_with_the_latest_message(self):
        """One entry per peer with unread messages, the total, and the pair's newest
        message with its real sender."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        carol = await self.login("carol")
        await alice.send_text(b, "a1")
        await alice.send_text(b, "a2")
        await carol.send_text(b, "c1")
        await bob.send_text(c, "b1")  # bob wrote the newest message of the bob-carol pair
        counts = await bob.unread_counts()
        assert counts.user_id == b
        assert counts.total_cnt == 3
        entries = {u.session_id: u for u in counts.unreadinfo_list}
        assert sorted(entries) == [a, c]
        assert (entries[a].unread_cnt, entries[a].latest_msg_id) == (2, 2)
        assert decrypt_text(entries[a].latest_msg_data) == "a2"
        assert entries[a].latest_msg_from_user_id == a
        assert entries[a].session_type == SINGLE
        assert (entries[c].unread_cnt, entries[c].latest_msg_id) == (1, 2)
        assert entries[c].latest_msg_from_user_id == b
        assert (await alice.unread_counts()).total_cnt == 0

    async def test_read_ack_clears_unread_and_syncs_the_readers_other_devices(self):
        """A read ack empties that session's count and sends a read notify to the reader's
        other connections only (not the reading one, not the sender)."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        carol = await self.login("carol")
        bob_pc = await self.login("bob", client_type=PC)
        bob_phone = await self.login("bob", client_type=IOS)
        await alice.send_text(b, "1")
        await alice.send_text(b, "2")
        await carol.send_text(b, "3")
        bob_pc.read_ack(a, 2)
        notify = await next_pdu(bob_phone.protocol, B.CID_MSG_READ_NOTIFY)
        assert notify.seq_num == 0
        got = notify.message
        assert (got.user_id, got.session_id, got.msg_id, got.session_type) == (b, a, 2, SINGLE)
        await assert_nothing(bob_pc.protocol, B.CID_MSG_READ_NOTIFY)
        await assert_nothing(alice.protocol, B.CID_MSG_READ_NOTIFY, within=0.01)
        counts = await bob_phone.unread_counts()
        assert [(u.session_id, u.unread_cnt) for u in counts.unreadinfo_list] == [(c, 1)]
        assert counts.total_cnt == 1

    async def test_new_message_after_a_read_ack_counts_from_1_again(self):
        """Unread counts what arrived after the last read ack."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        bob_phone = await self.login("bob", client_type=IOS)
        await alice.send_text(b, "1")
        await alice.send_text(b, "2")
        bob.read_ack(a, 2)
        await next_pdu(bob_phone.protocol, B.CID_MSG_READ_NOTIFY)  # the read is stored
        await alice.send_text(b, "3")
        counts = await bob.unread_counts()
        assert [(u.session_id, u.unread_cnt, u.latest_msg_id) for u in counts.unreadinfo_list] == [
            (a, 1, 3)
        ]

    async def test_unread_count_asked_right_after_a_read_ack_already_counts_it(self):
        """A read ack has no answer, so a client may ask for unread counts at once; the
        answer must already reflect the read."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        for i in range(1, 6):
            await alice.send_text(b, f"m{i}")
            bob.read_ack(a, i)
            assert (await bob.unread_counts()).total_cnt == 0


class HistoryTests(MsgTestCase):
    async def test_message_list_pages_newest_first(self):
        """msg_cnt limits the page; msg_id_begin starts it; both directions are included."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        for i in range(1, 6):
            sender, peer = (alice, b) if i % 2 else (bob, a)
            await sender.send_text(peer, f"m{i}")
        page = await history(alice, b, count=2)
        assert (page.user_id, page.session_type, page.session_id, page.msg_id_begin) == (
            a,
            SINGLE,
            b,
            0,
        )
        assert texts(page.msg_list) == [(5, "m5"), (4, "m4")]
        older = await history(bob, a, begin=3, count=10)
        assert older.msg_id_begin == 3
        assert texts(older.msg_list) == [(3, "m3"), (2, "m2"), (1, "m1")]
        senders = [m.from_session_id for m in older.msg_list]
        assert senders == [a, b, a]
        assert all(m.msg_type == TEXT and m.create_time > 0 for m in older.msg_list)

    async def test_latest_id_and_get_by_ids(self):
        """Latest id of a pair (0 if they never talked); get-by-id returns the existing
        listed ids of the pair, newest first."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        for i in range(1, 4):
            await alice.send_text(b, f"m{i}")
        assert await alice.latest_msg_id(b) == 3
        assert await alice.latest_msg_id(c) == 0
        answer = await by_ids(alice, b, [1, 3, 99, 3])
        assert (answer.user_id, answer.session_id, answer.session_type) == (a, b, SINGLE)
        assert texts(answer.msg_list) == [(3, "m3"), (1, "m1")]

    async def test_nobody_reads_a_conversation_they_are_not_part_of(self):
        """Carol asking for "session bob" gets the carol-bob pair (empty), never alice-bob."""
        await self.add_user("alice")
        b = await self.add_user("bob")
        await self.add_user("carol")
        alice = await self.login("alice")
        carol = await self.login("carol")
        await alice.send_text(b, "private")
        assert list((await history(carol, b)).msg_list) == []
        assert list((await by_ids(carol, b, [1])).msg_list) == []
        assert await carol.latest_msg_id(b) == 0
        assert (await carol.unread_counts()).total_cnt == 0

    async def test_server_time_is_now(self):
        """CID_MSG_TIME_REQUEST answers the server's Unix time."""
        await self.add_user("alice")
        alice = await self.login("alice")
        before = int(time.time())
        answer = await alice.get(B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq())
        assert before <= answer.server_time <= int(time.time()) + 1


class P2PTests(MsgTestCase):
    async def test_p2p_command_is_relayed_verbatim_to_the_peer_and_own_other_devices(self):
        """Every connection of the peer and the sender's other devices get the PDU byte
        for byte (seq included); the sending connection gets nothing; nothing is stored."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        await self.add_user("carol")
        alice_pc = await self.login("alice", client_type=PC)
        alice_phone = await self.login("alice", client_type=IOS)
        bob_pc = await self.login("bob", client_type=PC)
        bob_phone = await self.login("bob", client_type=IOS)
        carol = await self.login("carol")
        cmd = SwitchService_pb2.IMP2PCmdMsg(from_user_id=a, to_user_id=b, cmd_msg_data="shake")
        raw = encode_pdu(B.CID_SWITCH_P2P_CMD, cmd.SerializeToString(), seq_num=77, version=6)
        alice_pc.protocol.send_raw(raw)
        for session in (alice_phone, bob_pc, bob_phone):
            pdu = await next_pdu(session.protocol, B.CID_SWITCH_P2P_CMD)
            assert pdu.to_bytes() == raw
        await assert_nothing(alice_pc.protocol, B.CID_SWITCH_P2P_CMD)
        await assert_nothing(carol.protocol, B.CID_SWITCH_P2P_CMD, within=0.01)
        assert await alice_pc.latest_msg_id(b) == 0

    async def test_p2p_command_claiming_another_sender_is_dropped(self):
        """A P2P command whose from_user_id is not the connection's user reaches nobody."""
        await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        bob = await self.login("bob")
        forged = SwitchService_pb2.IMP2PCmdMsg(from_user_id=c, to_user_id=b, cmd_msg_data="x")
        alice.protocol.send(B.CID_SWITCH_P2P_CMD, forged)
        await assert_nothing(bob.protocol, B.CID_SWITCH_P2P_CMD)


class RestartTests(MsgTestCase):
    async def test_history_unread_and_sessions_survive_a_restart(self):
        """After stopping the server and starting a new one on the same data dir, unread
        counts, recent sessions and history are exactly as before, and ids continue."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        c = await self.add_user("carol")
        alice = await self.login("alice")
        carol = await self.login("carol")
        bob = await self.login("bob")
        bob_phone = await self.login("bob", client_type=IOS)
        for i in range(1, 4):
            await alice.send_text(b, f"a{i}")
        await carol.send_text(b, "c1")
        bob.read_ack(c, 1)
        await next_pdu(bob_phone.protocol, B.CID_MSG_READ_NOTIFY)  # the read is stored
        before = texts((await history(bob, a)).msg_list)
        sessions_before = await bob.get(
            B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
            Buddy_pb2.IMRecentContactSessionReq(user_id=0, latest_update_time=0),
        )

        await self.restart()

        bob = await self.login("bob")
        counts = await bob.unread_counts()
        assert [(u.session_id, u.unread_cnt) for u in counts.unreadinfo_list] == [(a, 3)]
        assert counts.total_cnt == 3
        assert (
            texts((await history(bob, a)).msg_list)
            == before
            == [
                (3, "a3"),
                (2, "a2"),
                (1, "a1"),
            ]
        )
        sessions = await bob.get(
            B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
            Buddy_pb2.IMRecentContactSessionReq(user_id=0, latest_update_time=0),
        )
        assert sessions.contact_session_list == sessions_before.contact_session_list
        assert {s.session_id for s in sessions.contact_session_list} == {a, c}
        alice = await self.login("alice")
        assert (await alice.send_text(b, "after restart")).msg_id == 4
        delivered = await next_pdu(bob.protocol, B.CID_MSG_DATA)
        assert delivered.message.msg_id == 4
