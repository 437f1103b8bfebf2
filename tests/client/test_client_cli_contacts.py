"""``teamtalk-client`` contacts commands (hello, search, request, requests, accept,
decline, remove, friends) against a running server in ``contacts`` mode, in-process."""

from __future__ import annotations

import json

from twisted.internet.defer import ensureDeferred

from tests.client.test_client_cli import CliTestCase
from tests.msg_support import sleep


class ContactsCliTests(CliTestCase):
    overrides = {"contacts.mode": "contacts"}

    async def test_a_whole_friendship_from_the_shell(self):
        """Search, ask with a note and remark, list, accept by name with a remark, list
        friends on both sides, remove; every line as documented."""
        await self.add_user("carol")
        out = await self.ok("--json", "search", "ALI", user="bob")
        assert [json.loads(line) for line in out.splitlines()] == [
            {"user_id": self.alice, "name": "alice", "nick": "Alice", "relation": "-"}
        ]
        request_id = int(await self.ok("request", "alice", "--note", "lunch?",
                                       "--remark", "Ally", user="bob"))  # fmt: skip
        incoming = (await self.ok("requests", user="alice")).splitlines()
        assert len(incoming) == 1
        direction, listed_id, who, _, note = incoming[0].split("\t")
        assert (direction, int(listed_id), who, note) == ("in", request_id, "bob", "lunch?")
        outgoing = (await self.ok("requests", user="bob")).splitlines()
        assert outgoing[0].split("\t")[:3] == ["out", str(request_id), "alice"]
        out = await self.ok("accept", "bob", "--remark", "Bobby", user="alice")
        assert out == f"{self.bob}\tbob\t\tBobby\n"
        assert (await self.ok("friends", user="bob")).split("\t")[:4] == [
            str(self.alice), "alice", "Alice", "Ally",
        ]  # fmt: skip
        assert (await self.ok("remove", "alice", user="bob")) == f"{self.alice}\n"
        assert await self.ok("friends", user="alice") == ""

    async def test_decline_by_id_and_refusals_exit_1(self):
        """``decline ID`` works; asking twice, accepting what is not there and unknown
        names exit 1 with the result code named."""
        request_id = int(await self.ok("request", "alice", user="bob"))
        status, _, err = await self.cli("request", "alice", user="bob")
        assert status == 1 and "EXT_RESULT_REQUEST_PENDING" in err
        assert await self.ok("decline", str(request_id), user="alice") == f"{request_id}\n"
        status, _, err = await self.cli("accept", str(request_id), user="alice")
        assert status == 1 and "EXT_RESULT_NO_SUCH_REQUEST" in err
        status, _, err = await self.cli("request", "nobody", user="bob")
        assert status == 1 and "no user named 'nobody'" in err

    async def test_hello_prints_what_is_granted(self):
        """``hello`` asks for contacts and rooms; this server grants both."""
        out = await self.ok("hello", user="bob")
        assert out == "contacts,rooms\tcontacts\n"

    async def test_watch_prints_what_came_while_away_then_live_events(self):
        """``watch`` prints the request stored while Alice was away, then Bob's removal
        as it happens."""
        request_id = int(await self.ok("request", "alice", "--note", "hi", user="bob"))
        out = await self.ok("watch", "--count", "1", "--seconds", "5", user="alice")
        assert out == f"request\t{request_id}\tbob\tpending\thi\n"
        await self.ok("accept", str(request_id), user="alice")
        watching = ensureDeferred(
            self.cli("--json", "watch", "--count", "1", "--seconds", "10", user="alice")
        )
        msg = self.server.service("msg")
        for _ in range(500):  # until the watcher is logged in and said hello
            if any(c.extension_features for c in msg.online.connections_of(self.alice)):
                break
            await sleep(0.02)
        await self.ok("remove", "alice", user="bob")
        status, out, err = await watching
        assert (status, err) == (0, "")
        assert json.loads(out) == {"event": "removed", "user_id": self.bob}


class DirectoryCliTests(CliTestCase):
    async def test_contacts_commands_on_a_directory_server_exit_1(self):
        """A plain company directory offers no contacts; the CLI says so."""
        status, _, err = await self.cli("friends", user="bob")
        assert status == 1 and "offers no contacts (mode 'directory')" in err
