"""A plain TeamTalk session's trace does not change with the extension (issue 20).

The same scripted two-user session (login, directory, departments, recent sessions,
unread, a message and its delivery, history, heartbeat, logout, presence both ways) is
played against a server with the default config, one with the extension off (directory
mode, no rooms) and one with every feature on (``contacts.mode = "both"``, rooms); every
PDU each client receives is
written down: header fields but the length, and the body with its clock fields zeroed.
Both traces must equal ``tests/fixtures/plain_session.trace``, recorded with the server
as it was before the extension existed (commit f151efd). ``TEAMTALK_WRITE_TRACE=PATH``
writes the trace of the default server to PATH instead (how the fixture was made).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import Message

from teamtalk_client import Pdu, TeamTalkSession, command_name, encrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Login_pb2, Message_pb2
from tests.msg_support import PASSWORD, MsgTestCase, sleep

FIXTURE = Path(__file__).parent.parent / "fixtures" / "plain_session.trace"
WRITE_ENV = "TEAMTALK_WRITE_TRACE"


def _zero_clocks(message: Message) -> None:
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            children = value if field.is_repeated else [value]
            for child in children:
                _zero_clocks(child)
        elif "time" in field.name and not field.is_repeated:
            setattr(message, field.name, 0)


def describe(who: str, pdu: Pdu) -> str:
    """One trace line: who received it, the header (no length), the body sans clocks."""
    body = pdu.decode_partial()
    _zero_clocks(body)
    text = text_format.MessageToString(body, as_one_line=True)
    return (
        f"{who} <- {command_name(pdu.command_id)} service={pdu.service_id} seq={pdu.seq_num} "
        f"version={pdu.version} flag={pdu.flag} reserved={pdu.reserved} {{{text}}}"
    )


def status(user_id: int, value: int) -> Any:
    """Matches the presence notify saying ``user_id`` is now ``value``."""

    def match(pdu: Pdu) -> bool:
        stat = pdu.message.user_stat
        return bool(stat.user_id == user_id and stat.status == value)

    return match


class Trace:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def ask(self, who: str, session: TeamTalkSession, command_id: int, body: Any) -> Pdu:
        pdu = await session.protocol.request(command_id, body, timeout=10.0)
        self.lines.append(describe(who, pdu))
        return pdu

    async def expect(
        self, who: str, session: TeamTalkSession, command_id: int, predicate: Any = None
    ) -> Pdu:
        pdu = await session.protocol.wait_for(command_id, predicate, timeout=10.0)
        self.lines.append(describe(who, pdu))
        return pdu

    async def rest(self, who: str, session: TeamTalkSession) -> None:
        """Whatever else arrived (nothing, in a plain session), in order."""
        await sleep(0.3)
        for pdu in list(session.protocol.notifications.pending):
            self.lines.append(describe(who, pdu))
        session.protocol.notifications.pending.clear()


class PlainSessionTraceTests(MsgTestCase):
    async def play(self) -> list[str]:
        """The scripted session on ``self.server``; its trace lines."""
        dept = await self.add_department("engineering")
        alice_id = await self.add_user("alice", nick="Al", department_id=dept)
        bob_id = await self.add_user("bob", department_id=dept)
        trace = Trace()
        alice = TeamTalkSession(await self.connect())
        bob = TeamTalkSession(await self.connect())

        def login(name: str) -> Login_pb2.IMLoginReq:
            import hashlib

            return Login_pb2.IMLoginReq(
                user_name=name,
                password=hashlib.md5(PASSWORD.encode()).hexdigest(),
                online_status=B.USER_STATUS_ONLINE,
                client_type=B.CLIENT_TYPE_WINDOWS,
                client_version="trace",
            )

        await trace.ask("alice", alice, B.CID_LOGIN_REQ_USERLOGIN, login("alice"))
        await trace.ask(
            "alice",
            alice,
            B.CID_BUDDY_LIST_ALL_USER_REQUEST,
            Buddy_pb2.IMAllUserReq(user_id=alice_id, latest_update_time=0),
        )
        await trace.ask(
            "alice",
            alice,
            B.CID_BUDDY_LIST_DEPARTMENT_REQUEST,
            Buddy_pb2.IMDepartmentReq(user_id=alice_id, latest_update_time=0),
        )
        await trace.ask(
            "alice",
            alice,
            B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
            Buddy_pb2.IMRecentContactSessionReq(user_id=alice_id, latest_update_time=0),
        )
        await trace.ask("alice", alice, B.CID_MSG_UNREAD_CNT_REQUEST,
                        Message_pb2.IMUnreadMsgCntReq(user_id=alice_id))  # fmt: skip
        await trace.ask("bob", bob, B.CID_LOGIN_REQ_USERLOGIN, login("bob"))
        await trace.expect("alice", alice, B.CID_BUDDY_LIST_STATUS_NOTIFY, status(bob_id, 1))
        message = Message_pb2.IMMsgData(
            from_user_id=alice_id, to_session_id=bob_id, msg_id=0, create_time=1,
            msg_type=B.MSG_TYPE_SINGLE_TEXT, msg_data=encrypt_text("hello bob"),
        )  # fmt: skip
        await trace.ask("alice", alice, B.CID_MSG_DATA, message)
        delivered = await trace.expect("bob", bob, B.CID_MSG_DATA)
        bob.delivery_ack(delivered)
        await trace.ask(
            "bob", bob, B.CID_MSG_UNREAD_CNT_REQUEST, Message_pb2.IMUnreadMsgCntReq(user_id=bob_id)
        )
        await trace.ask("bob", bob, B.CID_MSG_LIST_REQUEST, Message_pb2.IMGetMsgListReq(
            user_id=bob_id, session_type=B.SESSION_TYPE_SINGLE, session_id=alice_id,
            msg_id_begin=0, msg_cnt=10))  # fmt: skip
        await trace.ask("alice", alice, B.CID_OTHER_HEARTBEAT, None)
        await trace.ask("bob", bob, B.CID_LOGIN_REQ_LOGINOUT, Login_pb2.IMLogoutReq())
        await trace.expect("alice", alice, B.CID_BUDDY_LIST_STATUS_NOTIFY, status(bob_id, 2))
        await trace.rest("alice", alice)
        await trace.rest("bob", bob)
        return trace.lines

    async def test_plain_session_unchanged_by_the_extension(self) -> None:
        """Extension off, extension fully on, and the recorded pre-extension trace agree."""
        plain = await self.play()
        target = os.environ.get(WRITE_ENV)
        if target:
            Path(target).write_text("\n".join(plain) + "\n", encoding="utf-8")
            return
        recorded = FIXTURE.read_text(encoding="utf-8").splitlines()
        assert len(recorded) > 10
        assert plain == recorded, "\n".join(plain)
        for name, overrides in (
            ("extension-off", {"contacts.mode": "directory", "rooms.enabled": "false"}),
            ("extension-on", {"contacts.mode": "both", "rooms.enabled": "true"}),
        ):
            await self.stop_server(self.server)
            self.data_dir = self.tmp_path() / name
            self.server = await self.start_server(**overrides)
            trace = await self.play()
            assert trace == recorded, f"{name}:\n" + "\n".join(trace)
