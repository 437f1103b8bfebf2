"""File logins are bound to the addresses of the user's msg connections (file/permits.py),
over real sockets from several loopback addresses (Linux routes all of 127/8 to lo):

* a connection from an unrelated address (127.0.0.2) that knows a task id and names the
  receiver (or the sender) is refused, online and offline, while the real transfer works;
* the rule is per user: the sender's address does not let anyone log in as the receiver;
* a receiver told later (the offline list) may log in from where he asked;
* the permit crosses the file-internal link to a file service in another service
  collection, and outlives a restart of the file service (it is in the database too).
"""

from __future__ import annotations

from teamtalk_client import BlockSource, pull_file
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2
from tests.file.test_file_link import LinkedFileTestCase, wait_until
from tests.file_support import (
    DOWNLOAD,
    OFFLINE,
    ONLINE,
    RECEIVER,
    SENDER,
    UPLOAD,
    FileTestCase,
    payload,
)
from tests.msg_support import next_pdu

STRANGER = "127.0.0.2"
BOBS_DESK = "127.0.0.3"


class FileLoginBindingTests(FileTestCase):
    async def test_an_online_transfer_refuses_a_stranger_and_works_for_the_two_users(self):
        """Alice (127.0.0.1) offers bob (127.0.0.3) a file: a connection from 127.0.0.2
        naming bob or alice with the task id is refused; so is one from alice's address
        naming bob; then alice and bob transfer the file byte for byte."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob", source=BOBS_DESK)
        data = payload(300_000, seed=4)
        answer = await self.request_file(alice, b, len(data), ONLINE)
        assert (answer.result_code, answer.trans_mode) == (0, ONLINE)
        notify = (await next_pdu(bob.protocol, B.CID_FILE_NOTIFY)).message
        task_id = notify.task_id
        await self.assert_refused(b, task_id, RECEIVER, source=STRANGER)
        await self.assert_refused(a, task_id, SENDER, source=STRANGER)
        await self.assert_refused(b, task_id, RECEIVER, source="127.0.0.1")  # alice's, not bob's
        sender = await self.file_login(a, task_id, SENDER)
        protocol, login = await self.file_attempt(b, task_id, RECEIVER, source=BOBS_DESK)
        assert login.result_code == 0
        BlockSource(sender, a, task_id, data)
        assert await pull_file(protocol, b, task_id, len(data), trans_mode=ONLINE) == data

    async def test_an_offline_file_is_downloaded_only_from_where_its_receiver_asked(self):
        """Bob is offline when alice uploads; a stranger with the task id cannot download
        it, bob can once he asked for his offline files from 127.0.0.3."""
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        data = payload(200_000, seed=6)
        answer = await self.request_file(alice, b, len(data), OFFLINE)
        assert answer.result_code == 0
        task_id = answer.task_id
        await self.assert_refused(a, task_id, UPLOAD, source=STRANGER)
        uploader = await self.file_login(a, task_id, UPLOAD)
        await BlockSource(uploader, a, task_id, data).finished()
        alice.protocol.send(
            B.CID_FILE_ADD_OFFLINE_REQ,
            File_pb2.IMFileAddOfflineReq(
                from_user_id=a, to_user_id=b, task_id=task_id, file_name="f.bin",
                file_size=len(data),
            ),
        )  # fmt: skip
        await self.assert_refused(b, task_id, DOWNLOAD, source=STRANGER)
        bob = await self.login("bob", source=BOBS_DESK)
        offered = await self.has_offline(bob)
        assert [f.task_id for f in offered.offline_file_list] == [task_id]
        await self.assert_refused(b, task_id, DOWNLOAD, source=STRANGER)
        protocol, login = await self.file_attempt(b, task_id, DOWNLOAD, source=BOBS_DESK)
        assert login.result_code == 0
        assert await pull_file(protocol, b, task_id, len(data)) == data

    async def test_the_rule_can_be_turned_off_for_nat_that_changes_addresses(self):
        """``file.bind_logins = false``: a login from another address is accepted (the
        NAT caveat's way out; README, Security)."""
        await self.restart_with(**{"file.bind_logins": False})
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        answer = await self.request_file(alice, b, 1000, OFFLINE)
        protocol, login = await self.file_attempt(a, answer.task_id, UPLOAD, source=STRANGER)
        assert login.result_code == 0

    async def restart_with(self, **overrides) -> None:
        await self.stop_server(self.server)
        self.server = await self.start_server(**overrides)


class LinkedFileLoginBindingTests(LinkedFileTestCase):
    """A file service in its own collection, reached over its internal port."""

    async def test_permits_cross_the_link_and_outlive_a_file_service_restart(self):
        """The msg node's permit reaches the remote file service: the sender uploads from
        127.0.0.1, a stranger is refused; after the file service restarts, the permit
        (kept in the database) still lets the sender resume and not the stranger."""
        remote = self.remote
        await wait_until(lambda: remote.available and remote.addresses(), 5)
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        answer = await self.request_file(alice, b, 100_000, OFFLINE)
        assert answer.result_code == 0
        port = self.client_port
        await self.assert_refused(a, answer.task_id, UPLOAD, port, STRANGER)
        protocol, login = await self.file_attempt(a, answer.task_id, UPLOAD, port)
        assert login.result_code == 0
        protocol.transport.loseConnection()
        await protocol.closed
        await self.stop_server(self.file_server)
        self.file_server = await self.start_file_server()
        await self.assert_refused(a, answer.task_id, UPLOAD, port, STRANGER)
        protocol, login = await self.file_attempt(a, answer.task_id, UPLOAD, port)
        assert login.result_code == 0
