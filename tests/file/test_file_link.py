"""A msg node and a file service in separate service collections, linked over the file
service's internal port with TeamTalk's own PDUs (--services msg --file-server H:P)."""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint

from teamtalk_client import BlockSource, pull_file
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2
from teamtalk_py.wire import CommandTable
from teamtalk_py.wire.link import InboundLinkFactory
from teamtalk_py.wire.link_auth import LinkAuth
from teamtalk_testing import free_port
from tests.file_support import DOWNLOAD, OFFLINE, UPLOAD, FileTestCase, payload
from tests.msg_support import next_pdu, sleep
from tests.support import TEST_SECRET


async def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await sleep(0.05)


class LinkedFileTestCase(FileTestCase):
    """A msg node and a file service in separate collections, linked over its internal
    port (the file service's clients connect to ``self.client_port``)."""

    async def _set_up(self) -> None:
        self.client_port, self.internal_port = free_port(), free_port()
        self.file_server = await self.start_file_server()
        self.server = await self.start_server(
            **{
                "server.services": "msg,route,login",
                "msg.file_server": f"127.0.0.1:{self.internal_port}",
            }
        )

    async def start_file_server(self):
        return await self.start_server(
            **{
                "server.services": "file",
                "file.listen": f"tcp:{self.client_port}:interface=127.0.0.1",
                "file.internal_listen": f"tcp:{self.internal_port}:interface=127.0.0.1",
            }
        )

    @property
    def remote(self):
        return self.server.service("msg").files.servers[0]


class FileLinkTests(LinkedFileTestCase):
    async def test_offline_transfer_through_a_remote_file_service(self):
        """Tasks are created over the link, clients are told the file service's own
        client address, and the file goes up and down through it."""
        await wait_until(lambda: self.remote.available and self.remote.addresses(), 5)
        assert self.remote.addresses() == [("127.0.0.1", self.client_port)]
        a = await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        bob = await self.login("bob")
        data = payload(300_000)
        answer = await alice.get(
            B.CID_FILE_REQUEST,
            File_pb2.IMFileReq(
                from_user_id=0, to_user_id=b, file_name="x", file_size=len(data),
                trans_mode=OFFLINE,
            ),
        )  # fmt: skip
        assert answer.result_code == 0
        assert [(x.ip, x.port) for x in answer.ip_addr_list] == [("127.0.0.1", self.client_port)]
        notify = (await next_pdu(bob.protocol, B.CID_FILE_NOTIFY)).message
        assert notify.task_id == answer.task_id
        uploader = await self.file_login(a, answer.task_id, UPLOAD, port=self.client_port)
        await BlockSource(uploader, a, answer.task_id, data).finished()
        downloader = await self.file_login(b, answer.task_id, DOWNLOAD, port=self.client_port)
        assert await pull_file(downloader, b, answer.task_id, len(data)) == data

    async def test_link_comes_back_after_the_file_service_restarts(self):
        """While the file service is down requests fail politely; once it is back the
        link reconnects by itself (reference back-off) and requests work again."""
        await wait_until(lambda: self.remote.available, 5)
        await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        request = File_pb2.IMFileReq(
            from_user_id=0, to_user_id=b, file_name="x", file_size=10, trans_mode=OFFLINE
        )
        await self.stop_server(self.file_server)
        await wait_until(lambda: not self.remote.available, 5)
        answer = await alice.get(B.CID_FILE_REQUEST, request)
        assert (answer.result_code, answer.task_id) == (1, "")
        self.file_server = await self.start_file_server()
        await wait_until(lambda: self.remote.available and self.remote.addresses(), 10)
        answer = await alice.get(B.CID_FILE_REQUEST, request)
        assert answer.result_code == 0 and answer.task_id


def silent_file_service() -> InboundLinkFactory:
    """A peer that proves the cluster secret, then never answers anything."""
    return InboundLinkFactory(
        auth=LinkAuth(TEST_SECRET.encode()), purpose="file", clock=reactor, table=CommandTable()
    )


class FileServerIsSilentTests(FileTestCase):
    async def _set_up(self) -> None:
        factory = silent_file_service()
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(self.port.stopListening)
        self.server = await self.start_server(
            **{
                "server.services": "msg,route,login",
                "msg.file_server": f"127.0.0.1:{self.port.getHost().port}",
                "file.min_free_disk": 0,
            }
        )

    async def test_a_file_service_that_never_answers_fails_the_request(self):
        """No answer over the link within the timeout: the sender gets result 1."""
        from teamtalk_py.msg import file_link

        remote = self.server.service("msg").files.servers[0]
        await wait_until(lambda: remote.available, 5)
        self.patch(file_link, "REQUEST_TIMEOUT", 0.2)
        await self.add_user("alice")
        b = await self.add_user("bob")
        alice = await self.login("alice")
        answer = await alice.get(
            B.CID_FILE_REQUEST,
            File_pb2.IMFileReq(
                from_user_id=0, to_user_id=b, file_name="x", file_size=10, trans_mode=OFFLINE
            ),
        )
        assert (answer.result_code, answer.task_id) == (1, "")
