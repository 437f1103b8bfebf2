"""The disk's ``POST /login`` and PDU logins share one failed-login lockout (issue 17:
"the same lockout as PDU logins"), against a real ``twistd teamtalk`` process.

The rule (``teamtalk_py/msg/lockout.py``): failures count per (name, address) and per
address; from the 5th failure of a name from an address the next attempt waits 1 s after
it, then 2 s, 4 s, 8 s ...; an attempt during the wait is refused without a password
check and without counting. The test waits out the first delays so that the last one is
8 s: long enough that the checks made inside it land inside it on a loaded machine.
"""

from __future__ import annotations

import http.client
import json
import time

from twisted.internet import reactor

from teamtalk_client import TeamTalkSession, connect
from teamtalk_py.msg.session import TOO_MANY_FAILURES
from tests.disk_support import PASSWORD, DiskServer, SeedClient, md5, unique
from tests.msg_support import sleep
from tests.support import TestCase

CONFIG = """
[disk]
allow_registration = true
registrations_per_hour = 0
"""


def login_from(server: DiskServer, source: str, name: str, password_md5: str) -> str:
    """The disk's ``/login`` over a connection from ``source`` (a loopback address)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", server.server.ports.disk, timeout=30, source_address=(source, 0)
    )
    try:
        body = json.dumps({"username": name, "password": password_md5})
        conn.request("POST", "/login", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, response.status
        return str(json.loads(response.read())["code"])
    finally:
        conn.close()


class SharedLockoutTests(TestCase):
    async def pdu_login(self, server: DiskServer, name: str):
        session = TeamTalkSession(await connect(reactor, "127.0.0.1", server.server.msg_port))
        try:
            return await session.login(name, PASSWORD)
        finally:
            session.protocol.transport.loseConnection()

    async def test_disk_login_failures_delay_the_disk_and_the_pdu_login(self):
        """Eight wrong passwords at the disk's /login (001 each; the first delays waited
        out so each one counts): then the right password gets 001 at the disk (the log
        says locked out) and "too many failures" at the PDU login, from the same
        address; the same name from another address (127.0.0.2) and another name from
        the same address log in (000). When the delay is over, the right password works
        again at the disk and over PDU."""
        server = DiskServer(self.tmp_path(), CONFIG).start()
        self.addCleanup(server.stop)
        seed = SeedClient(server.disk_url)
        name, bystander = unique("victim"), unique("bystander")
        assert seed.register(name) == "002" and seed.register(bystander) == "002"
        right, wrong = md5(PASSWORD.encode()), md5(b"wrong")
        assert (await self.pdu_login(server, name)).result_code == 0

        for _ in range(5):
            assert login_from(server, "127.0.0.1", name, wrong) == "001"
        for delay in (1, 2, 4):  # after failures 5, 6, 7
            await sleep(delay + 0.5)
            assert login_from(server, "127.0.0.1", name, wrong) == "001"
        # The 8th failure: the next attempt from 127.0.0.1 waits 8 s.
        assert login_from(server, "127.0.0.1", name, right) == "001"
        pdu = await self.pdu_login(server, name)
        assert pdu.result_code != 0 and pdu.result_string == TOO_MANY_FAILURES
        deadline = time.monotonic() + 10
        while f"disk login of {name!r} refused (locked out)" not in server.output():
            assert time.monotonic() < deadline, server.output()[-2000:]
            await sleep(0.05)
        assert login_from(server, "127.0.0.2", name, right) == "000"
        assert login_from(server, "127.0.0.1", bystander, right) == "000"

        deadline = time.monotonic() + 120
        while login_from(server, "127.0.0.1", name, right) != "000":
            assert time.monotonic() < deadline, server.output()[-2000:]
            await sleep(0.5)
        assert (await self.pdu_login(server, name)).result_code == 0
