"""The issue's "done when" scenario, end to end, against the real processes.

``twistd teamtalk`` runs as a subprocess, accounts are made with the real ``teamtalk-admin``
console script, and the client is written here from the protocol documents alone: a
blocking socket, ``struct`` for the 16-byte header, ``hashlib`` for the password digest
and the generated protobuf modules. It shares nothing with ``teamtalk_client`` or the
server's framing, so a bug mirrored on both sides of our own code cannot hide here.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Login_pb2, Message_pb2
from teamtalk_testing import StandaloneServer
from tests.support import TestCase

BIN = Path(sys.executable).parent
HEADER = struct.Struct(">IHHHHHH")  # length, version, flag, service, command, seq, reserved

SERVICE_OF = {
    B.CID_LOGIN_REQ_USERLOGIN: B.SID_LOGIN,
    B.CID_LOGIN_RES_USERLOGIN: B.SID_LOGIN,
    B.CID_BUDDY_LIST_ALL_USER_REQUEST: B.SID_BUDDY_LIST,
    B.CID_BUDDY_LIST_DEPARTMENT_REQUEST: B.SID_BUDDY_LIST,
    B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST: B.SID_BUDDY_LIST,
    B.CID_MSG_UNREAD_CNT_REQUEST: B.SID_MSG,
    B.CID_MSG_DATA: B.SID_MSG,
    B.CID_MSG_DATA_ACK: B.SID_MSG,
    B.CID_MSG_READ_ACK: B.SID_MSG,
    B.CID_MSG_LIST_REQUEST: B.SID_MSG,
}


def http_get_json(port: int, path: str) -> dict:
    """A bare HTTP/1.0 GET, as a client's HTTP stack would send it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", head
    return json.loads(body)


class PlainClient:
    """One TeamTalk connection: write a PDU, read PDUs, keep notifications aside."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.seq = 0
        self.stash: list[tuple[int, int, bytes]] = []  # (command, seq, body)
        self.user_id = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, command_id: int, message) -> int:
        self.seq += 1
        body = message.SerializeToString()
        header = HEADER.pack(16 + len(body), 1, 0, SERVICE_OF[command_id], command_id, self.seq, 0)
        self.sock.sendall(header + body)
        return self.seq

    def _read_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
        return data

    def _read_pdu(self) -> tuple[int, int, bytes]:
        length, _version, _flag, _service, command, seq, _reserved = HEADER.unpack(
            self._read_exactly(16)
        )
        assert 16 <= length < 1 << 22
        return command, seq, self._read_exactly(length - 16)

    def wait(self, command_id: int, seq: int | None = None) -> bytes:
        """The body of the next PDU with this command (and seq, if given)."""
        for index, (command, got_seq, body) in enumerate(self.stash):
            if command == command_id and seq in (None, got_seq):
                del self.stash[index]
                return body
        while True:
            command, got_seq, body = self._read_pdu()
            if command == command_id and seq in (None, got_seq):
                return body
            self.stash.append((command, got_seq, body))

    def call(self, command_id: int, message, answer_cls, answer_cid: int):
        seq = self.send(command_id, message)
        return answer_cls.FromString(self.wait(answer_cid, seq))

    def login(self, name: str, password: str, client_type: int = B.CLIENT_TYPE_WINDOWS):
        answer = self.call(
            B.CID_LOGIN_REQ_USERLOGIN,
            Login_pb2.IMLoginReq(
                user_name=name,
                password=hashlib.md5(password.encode()).hexdigest(),
                online_status=B.USER_STATUS_ONLINE,
                client_type=client_type,
                client_version="plain-test/1.0",
            ),
            Login_pb2.IMLoginRes,
            B.CID_LOGIN_RES_USERLOGIN,
        )
        assert answer.result_code == 0, answer
        self.user_id = answer.user_info.user_id
        return answer

    # -- the requests a client makes after login --------------------------------------

    def all_users(self):
        return self.call(
            B.CID_BUDDY_LIST_ALL_USER_REQUEST,
            Buddy_pb2.IMAllUserReq(user_id=self.user_id, latest_update_time=0),
            Buddy_pb2.IMAllUserRsp,
            B.CID_BUDDY_LIST_ALL_USER_RESPONSE,
        )

    def departments(self):
        return self.call(
            B.CID_BUDDY_LIST_DEPARTMENT_REQUEST,
            Buddy_pb2.IMDepartmentReq(user_id=self.user_id, latest_update_time=0),
            Buddy_pb2.IMDepartmentRsp,
            B.CID_BUDDY_LIST_DEPARTMENT_RESPONSE,
        )

    def recent_sessions(self):
        return self.call(
            B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
            Buddy_pb2.IMRecentContactSessionReq(user_id=self.user_id, latest_update_time=0),
            Buddy_pb2.IMRecentContactSessionRsp,
            B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE,
        )

    def unread(self):
        return self.call(
            B.CID_MSG_UNREAD_CNT_REQUEST,
            Message_pb2.IMUnreadMsgCntReq(user_id=self.user_id),
            Message_pb2.IMUnreadMsgCntRsp,
            B.CID_MSG_UNREAD_CNT_RESPONSE,
        )

    def history(self, peer: int):
        return self.call(
            B.CID_MSG_LIST_REQUEST,
            Message_pb2.IMGetMsgListReq(
                user_id=self.user_id,
                session_type=B.SESSION_TYPE_SINGLE,
                session_id=peer,
                msg_id_begin=0,
                msg_cnt=20,
            ),
            Message_pb2.IMGetMsgListRsp,
            B.CID_MSG_LIST_RESPONSE,
        )

    def send_text(self, peer: int, data: bytes):
        return self.call(
            B.CID_MSG_DATA,
            Message_pb2.IMMsgData(
                from_user_id=self.user_id,
                to_session_id=peer,
                msg_id=0,
                create_time=int(time.time()),
                msg_type=B.MSG_TYPE_SINGLE_TEXT,
                msg_data=data,
            ),
            Message_pb2.IMMsgDataAck,
            B.CID_MSG_DATA_ACK,
        )

    def receive_message(self):
        return Message_pb2.IMMsgData.FromString(self.wait(B.CID_MSG_DATA))

    def read_ack(self, peer: int, msg_id: int) -> None:
        self.send(
            B.CID_MSG_READ_ACK,
            Message_pb2.IMMsgDataReadAck(
                user_id=self.user_id,
                session_id=peer,
                msg_id=msg_id,
                session_type=B.SESSION_TYPE_SINGLE,
            ),
        )


class PlainClientScenarioTests(TestCase):
    def admin(self, *args: str) -> str:
        result = subprocess.run(
            [str(BIN / "teamtalk-admin"), "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def start(self) -> tuple[StandaloneServer, dict]:
        """Start ``twistd teamtalk`` on the test's data dir; the server and the answer of
        a bare-HTTP ``/msg_server``, as a client would ask."""
        self.runs += 1
        server = StandaloneServer(self.workdir / f"run{self.runs}", data_dir=self.data_dir)
        self.addCleanup(server.stop)
        server.start()
        return server, http_get_json(server.http_port, "/msg_server")

    def connect(self, discovery: dict) -> PlainClient:
        client = PlainClient(discovery["priorIP"], int(discovery["port"]))
        self.addCleanup(client.close)
        return client

    def test_independent_client_chats_reads_and_finds_everything_after_a_restart(self):
        """Discover, log in two admin-made users, sync the directory, chat, read-ack, then
        restart the server and find the same history, sessions and unread counts."""
        self.workdir = self.tmp_path()
        self.data_dir = self.workdir / "var"
        self.runs = 0
        server, discovery = self.start()
        assert discovery["port"] == str(server.msg_port)

        # Accounts made while the server runs are visible at once.
        dept = int(self.admin("department", "add", "Engineering"))
        a = int(self.admin("user", "add", "--name", "alice", "--password", "pa55",
                           "--nick", "Alice", "--department", "Engineering"))  # fmt: skip
        b = int(self.admin("user", "add", "--name", "bob", "--password", "b0b"))

        alice, bob = self.connect(discovery), self.connect(discovery)
        answer = alice.login("alice", "pa55")
        assert (answer.user_info.user_id, answer.user_info.user_nick_name) == (a, "Alice")
        assert answer.user_info.department_id == dept
        bob.login("bob", "b0b", client_type=B.CLIENT_TYPE_ANDROID)

        users = {u.user_id: u.user_real_name for u in bob.all_users().user_list}
        assert users == {a: "alice", b: "bob"}
        assert [(d.dept_id, d.dept_name) for d in bob.departments().dept_list] == [
            (dept, "Engineering")
        ]
        assert list(bob.recent_sessions().contact_session_list) == []
        assert bob.unread().total_cnt == 0

        # A -> B: B receives it, A's ack carries the server's id.
        ack = alice.send_text(b, b"first")
        assert (ack.user_id, ack.session_id, ack.session_type) == (a, b, B.SESSION_TYPE_SINGLE)
        assert ack.msg_id == 1
        got = bob.receive_message()
        assert (got.from_user_id, got.to_session_id, got.msg_id, got.msg_data) == (
            a,
            b,
            ack.msg_id,
            b"first",
        )
        assert alice.send_text(b, b"second").msg_id == 2
        assert bob.receive_message().msg_id == 2
        unread = bob.unread()
        assert [(u.session_id, u.unread_cnt) for u in unread.unreadinfo_list] == [(a, 2)]

        # B reads; a later message is the only unread one.
        bob.read_ack(a, 2)
        assert bob.unread().total_cnt == 0  # no answer to wait for: it must count at once
        assert alice.send_text(b, b"third").msg_id == 3
        bob.receive_message()
        history_before = [(m.msg_id, m.from_session_id, m.msg_data, m.create_time)
                          for m in bob.history(a).msg_list]  # fmt: skip
        sessions_before = [(s.session_id, s.latest_msg_id, s.updated_time)
                           for s in bob.recent_sessions().contact_session_list]  # fmt: skip
        assert [h[:3] for h in history_before] == [
            (3, a, b"third"),
            (2, a, b"second"),
            (1, a, b"first"),
        ]
        assert [s[:2] for s in sessions_before] == [(a, 3)]

        # Restart the process on the same data dir.
        assert server.stop() == 0
        server, discovery = self.start()
        bob = self.connect(discovery)
        bob.login("bob", "b0b")
        unread = bob.unread()
        assert unread.total_cnt == 1
        [entry] = unread.unreadinfo_list
        assert (entry.session_id, entry.unread_cnt, entry.latest_msg_id) == (a, 1, 3)
        assert entry.latest_msg_data == b"third"
        history_after = [(m.msg_id, m.from_session_id, m.msg_data, m.create_time)
                         for m in bob.history(a).msg_list]  # fmt: skip
        assert history_after == history_before
        sessions_after = [(s.session_id, s.latest_msg_id, s.updated_time)
                          for s in bob.recent_sessions().contact_session_list]  # fmt: skip
        assert sessions_after == sessions_before
        alice = self.connect(discovery)
        alice.login("alice", "pa55")
        assert alice.send_text(b, b"fourth").msg_id == 4
        assert bob.receive_message().msg_data == b"fourth"
