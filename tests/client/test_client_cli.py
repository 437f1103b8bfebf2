"""``teamtalk-client``, the client library's command line, against a running server over
loopback: discovery over HTTP, login, text encrypted as clients do, listening, the lists
and history. Most tests run the command in-process (the same ``run`` the console script
calls); one runs the installed console script as a subprocess."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.utils import getProcessOutputAndValue

from teamtalk_client import encrypt_text
from teamtalk_client.cli import parse_args, run
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.store import groups as group_store
from tests.msg_support import PASSWORD, MsgTestCase, next_pdu

CLIENT_SCRIPT = str(Path(sys.executable).with_name("teamtalk-client"))


class CliTestCase(MsgTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        self.alice = await self.add_user("alice", nick="Alice")
        self.bob = await self.add_user("bob")

    async def cli(self, *argv: str, user: str | None = "bob", stdin: str = "") -> tuple:
        """Run ``teamtalk-client --url <this server> [--user U --password …] ARGV``
        in-process; (exit status, stdout, stderr)."""
        base = ["--url", self.server.discovery_url]
        if user is not None:
            base += ["--user", user, "--password", PASSWORD]
        args = parse_args([*base, *argv], stdin=io.StringIO(stdin))
        out, err = io.StringIO(), io.StringIO()
        status = await run(reactor, args, out, err)
        return status, out.getvalue(), err.getvalue()

    async def ok(self, *argv: str, user: str | None = "bob", stdin: str = "") -> str:
        status, out, err = await self.cli(*argv, user=user, stdin=stdin)
        assert (status, err) == (0, ""), (argv, status, err)
        return out

    async def group(self, name: str, *members: int) -> int:
        group, _ = await self.server.service("store").write(
            group_store.create_group,
            name,
            members[0],
            list(members),
            B.GROUP_TYPE_NORMAL,
            now=int(time.time()),
        )
        return group.id


class SendTests(CliTestCase):
    async def test_send_encrypts_the_text_as_the_clients_do_and_prints_the_msg_id(self):
        """The receiver gets the AES/base64 text of wire.md 6.1; the CLI prints the ack's id."""
        bob = await self.login("bob")
        out = await self.ok("send", "bob", "hello", "there", user="alice")
        data = (await next_pdu(bob.protocol, B.CID_MSG_DATA)).message
        assert (data.from_user_id, data.msg_type) == (self.alice, B.MSG_TYPE_SINGLE_TEXT)
        assert data.msg_data == encrypt_text("hello there")
        assert out == f"{data.msg_id}\n"

    async def test_send_reads_the_text_from_stdin_and_takes_a_user_id(self):
        """``send ID -`` sends what stdin holds (without its last newline) to that id."""
        bob = await self.login("bob")
        await self.ok("send", str(self.bob), "-", user="alice", stdin="line one\nline two\n")
        data = (await next_pdu(bob.protocol, B.CID_MSG_DATA)).message
        assert data.msg_data == encrypt_text("line one\nline two")

    async def test_send_to_a_group_by_name(self):
        """``send --group NAME`` finds the group among the user's groups."""
        group_id = await self.group("Eng", self.alice, self.bob)
        bob = await self.login("bob")
        out = await self.ok("send", "--group", "Eng", "standup", user="alice")
        data = (await next_pdu(bob.protocol, B.CID_MSG_DATA)).message
        assert (data.to_session_id, data.msg_type) == (group_id, B.MSG_TYPE_GROUP_TEXT)
        assert data.msg_data == encrypt_text("standup")
        assert out == f"{data.msg_id}\n"

    async def test_unknown_recipient_exits_1_naming_it(self):
        """A name nobody has is an error on stderr, status 1, and nothing is sent."""
        status, out, err = await self.cli("send", "carol", "hi", user="alice")
        assert (status, out, err) == (1, "", "teamtalk-client: no user named 'carol'\n")

    async def test_message_the_server_refuses_exits_1(self):
        """A message to oneself is refused (acked with msg_id 0, or not acked at all):
        reported, status 1."""
        # The refusal is no ack: the CLI waits out --timeout, which its login shares (3 s:
        # room for a loaded box).
        status, out, err = await self.cli("--timeout", "3", "send", "alice", "me", user="alice")
        assert (status, out) == (1, "")
        assert "refused" in err


class LoginTests(CliTestCase):
    async def test_login_prints_id_name_nick_and_department(self):
        """``login`` checks the credentials and prints who the user is."""
        assert await self.ok("login", user="alice") == f"{self.alice}\talice\tAlice\t0\n"

    async def test_wrong_password_exits_1_with_the_servers_reason(self):
        """A refused login prints the server's result string and exits 1."""
        args = ["--url", self.server.discovery_url, "--user", "alice", "--password", "nope"]
        out, err = io.StringIO(), io.StringIO()
        status = await run(reactor, parse_args([*args, "login"]), out, err)
        assert (status, out.getvalue()) == (1, "")
        assert err.getvalue().startswith("teamtalk-client: login of 'alice' refused: ")

    async def test_commands_that_log_in_need_a_user(self):
        """Without --user, status 2 and a line saying so."""
        status, out, err = await self.cli("users", user=None)
        assert (status, out) == (2, "")
        assert "needs --user" in err

    async def test_discover_prints_the_offered_msg_server(self):
        """``discover`` needs no account: host:port, backup address, msfs URL."""
        out = await self.ok("discover", user=None)
        assert out.split("\t")[0] == f"127.0.0.1:{self.server.msg_port}"


class ListenTests(CliTestCase):
    async def test_listen_prints_each_message_decrypted_and_marks_them_read(self):
        """Each message is one line with its own id, sender and text; with --read,
        nothing is unread afterwards."""
        alice = await self.login("alice")
        listening = ensureDeferred(
            self.cli("--json", "listen", "--count", "2", "--seconds", "10", "--read")
        )
        # Bob's login is announced to Alice's PC client: then he is listening.
        await alice.protocol.wait_for(
            B.CID_BUDDY_LIST_STATUS_NOTIFY,
            lambda pdu: pdu.message.user_stat.user_id == self.bob,
        )
        first = await alice.send_text(self.bob, "lunch?")
        second = await alice.send_text(self.bob, "lunch at noon")
        status, out, err = await listening
        assert (status, err) == (0, "")
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(m["msg_id"], m["sender"], m["text"]) for m in lines] == [
            (first.msg_id, "alice", "lunch?"),
            (second.msg_id, "alice", "lunch at noon"),
        ]
        assert await self.ok("unread") == "total\t0\n"

    async def test_listen_for_a_while_with_nothing_arriving_prints_nothing(self):
        """``--seconds`` ends a quiet listen with status 0."""
        assert await self.ok("listen", "--seconds", "0.2") == ""


class ListTests(CliTestCase):
    async def _set_up(self) -> None:
        await super()._set_up()
        alice = await self.login("alice")
        self.ids = [(await alice.send_text(self.bob, text)).msg_id for text in ("one", "two")]

    async def test_history_prints_the_session_oldest_first_with_the_text_decrypted(self):
        """``history PEER`` lists id, sender and text in the order they were sent."""
        out = await self.ok("history", "alice")
        rows = [line.split("\t")[1:] for line in out.splitlines()]
        assert rows == [[str(self.ids[0]), "alice", "one"], [str(self.ids[1]), "alice", "two"]]

    async def test_unread_and_sessions_name_the_peer_and_its_last_text(self):
        """Unread counts and recent sessions decrypt the latest message."""
        assert await self.ok("unread") == f"alice\t2\t{self.ids[1]}\ttwo\ntotal\t2\n"
        [session] = [
            json.loads(line) for line in (await self.ok("--json", "sessions")).splitlines()
        ]
        assert (session["name"], session["session_type"], session["latest_text"]) == (
            "alice",
            "single",
            "two",
        )

    async def test_users_lists_the_directory(self):
        """``users``: id, login name, nick and department of everybody."""
        out = await self.ok("users")
        assert out == f"{self.alice}\talice\tAlice\t0\n{self.bob}\tbob\t\t0\n"


class ConsoleScriptTests(CliTestCase):
    async def test_installed_script_sends_with_the_password_from_the_environment(self):
        """The ``teamtalk-client`` console script: $TEAMTALK_PASSWORD, exit 0, the id."""
        bob = await self.login("bob")
        env = dict(os.environ, TEAMTALK_PASSWORD=PASSWORD)
        argv = [
            "--url",
            self.server.discovery_url,
            "-u",
            "alice",
            "send",
            "bob",
            "from",
            "a script",
        ]
        out, err, status = await getProcessOutputAndValue(CLIENT_SCRIPT, argv, env=env)
        data = (await next_pdu(bob.protocol, B.CID_MSG_DATA)).message
        assert (status, err) == (0, b""), err
        assert data.msg_data == encrypt_text("from a script")
        assert out == f"{data.msg_id}\n".encode()
