"""A real cluster: separate ``twistd teamtalk`` processes on one MariaDB and one Redis.

* ``center``: ``--services route,login,file``;
* ``node1``, ``node2``: ``--services msg`` with ``--route-server``, ``--login-server`` and
  ``--file-server`` pointing at the center.

Every run uses its own MariaDB database (``tt_cluster_<random>``, dropped at the end) and
its own Redis key prefix. Accounts are created in one store transaction
(``cluster_support.create_users``). Clients talk to the nodes over loopback with the
client library. Without MariaDB or Redis the tests
are skipped locally and fail when ``CI`` is set.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from tusclient import client as tus_client
from twisted.internet import defer, reactor, threads
from twisted.internet.utils import getProcessOutputAndValue

from teamtalk_client import ExtensionClient, TeamTalkSession, connect, decrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, File_pb2, Group_pb2, Message_pb2, Server_pb2
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.store.accounts import md5_hex
from teamtalk_py.wire import CommandTable
from teamtalk_py.wire.link import ServerLink
from teamtalk_py.wire.link_auth import CID_LINK_CHALLENGE, CID_LINK_RESPONSE, LinkAuth
from teamtalk_testing import TwistdProcess, free_port, get_msg_server, loopback_endpoint
from tests.cluster_support import (
    IOS,
    PASSWORD,
    PC,
    Client,
    create_users,
    log_in,
    scratch_database,
    scratch_redis,
    sleep,
    status_is,
    wait_until,
)
from tests.disk_support import SeedClient
from tests.media.test_media_msg import token_request
from tests.media_support import afnetworking_upload, get, http, picture
from tests.resend_support import Sender, audit, history, lose_acks, no_rate_limit_config
from tests.support import TEST_SECRET, TestCase

BIN = Path(sys.executable).parent
ADMIN = str(BIN / "teamtalk-admin")
USERS = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "oscar",
    "peggy",
    "sybil",
    "trent",
    "victor",
    "walter",
    "xavier",
    "yvonne",
    "zelda",
)


class Cluster:
    """The center and the msg nodes, with the ports they listen on."""

    def __init__(self, root: Path, db_url: str, redis_url: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.secret_file = root / "cluster.secret"
        self.secret_file.write_text(TEST_SECRET)
        self.db_url = db_url
        self.redis_url = redis_url
        self.route_port = free_port()
        self.http_port = free_port()
        self.login_internal_port = free_port()
        self.file_port = free_port()
        self.file_internal_port = free_port()
        self.ops_ports = {"center": free_port()}
        self.center = TwistdProcess(
            root / "center",
            [
                "--cluster-secret-file",
                str(self.secret_file),
                "--services",
                "route,login,file",
                "--data-dir",
                str(root / "center" / "var"),
                "--db",
                db_url,
                "--redis",
                redis_url,
                "--route-listen",
                loopback_endpoint(self.route_port),
                "--http-listen",
                loopback_endpoint(self.http_port),
                "--login-internal-listen",
                loopback_endpoint(self.login_internal_port),
                "--file-listen",
                loopback_endpoint(self.file_port),
                "--file-internal-listen",
                loopback_endpoint(self.file_internal_port),
                "--ops-listen",
                loopback_endpoint(self.ops_ports["center"]),
            ],
            name="center",
        )
        self.nodes: dict[str, tuple[TwistdProcess, int]] = {}
        #: The msg nodes also host media and the disk, on one shared content directory.
        self.media_ports: dict[str, int] = {}
        self.disk_ports: dict[str, int] = {}
        self.media_dir = root / "media-shared"

    def add_node(self, name: str, *args: str) -> TwistdProcess:
        port = free_port()
        self.ops_ports[name] = free_port()
        self.media_ports[name] = free_port()
        self.disk_ports[name] = free_port()
        node = TwistdProcess(
            self.root / name,
            [
                "--cluster-secret-file",
                str(self.secret_file),
                "--services",
                "msg,media,disk",
                "--media-listen",
                loopback_endpoint(self.media_ports[name]),
                "--disk-listen",
                loopback_endpoint(self.disk_ports[name]),
                "--media-dir",
                str(self.media_dir),
                "--data-dir",
                str(self.root / name / "var"),
                "--db",
                self.db_url,
                "--redis",
                self.redis_url,
                "--msg-listen",
                loopback_endpoint(port),
                "--route-server",
                f"127.0.0.1:{self.route_port}",
                "--login-server",
                f"127.0.0.1:{self.login_internal_port}",
                "--file-server",
                f"127.0.0.1:{self.file_internal_port}",
                "--ops-listen",
                loopback_endpoint(self.ops_ports[name]),
                # Friend requests on (docs/EXTENSION.md); the directory stays TeamTalk's.
                "--contacts-mode",
                "both",
                *args,
            ],
            name=name,
        )
        self.nodes[name] = (node, port)
        return node

    def port(self, name: str) -> int:
        return self.nodes[name][1]

    def media_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.media_ports[name]}/"

    def disk_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.disk_ports[name]}"

    def discovery(self) -> dict:
        return get_msg_server(self.http_port)

    def registered(self, names: list[str]) -> bool:
        """Whether the center's route and login both know every named node right now."""
        log = self.center.output()
        route_links = len(re.findall(r"msg node \S+ registered \d+ connections", log))
        login_ports = set(re.findall(r"msg node 127\.0\.0\.1:(\d+) .*registered with", log))
        login_ports -= set(re.findall(r"msg node 127\.0\.0\.1:(\d+) unregistered", log))
        wanted = {str(self.port(n)) for n in names}
        return route_links >= len(names) and wanted <= login_ports

    def wait_registered_blocking(self, names: list[str], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.registered(names):
            self.center.check_alive()
            for name in names:
                self.nodes[name][0].check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes not registered:\n{self.center.output()[-4000:]}")
            time.sleep(0.05)

    async def wait_registered(self, names: list[str], timeout: float = 90.0) -> None:
        """As ``wait_registered_blocking``: a node's start (imports, store, links) takes
        over 20 s on a loaded 2-core box, and a test that gives up leaves the shared
        cluster half-registered for the tests after it."""
        deadline = time.monotonic() + timeout
        while not self.registered(names):
            self.center.check_alive()
            for name in names:
                self.nodes[name][0].check_alive()
            if time.monotonic() > deadline:
                nodes = "".join(
                    f"\n--- {name}:\n{self.nodes[name][0].output()[-2000:]}" for name in names
                )
                raise AssertionError(
                    f"nodes not registered:\n{self.center.output()[-4000:]}{nodes}"
                )
            await sleep(0.05)

    def stop(self) -> None:
        for node, _ in self.nodes.values():
            node.stop()
        self.center.stop()


async def admin(*args: str) -> str:
    """Run teamtalk-admin without blocking the reactor the clients need; its stdout."""
    out, err, status = await getProcessOutputAndValue(ADMIN, args, env=dict(os.environ))
    if status != 0:
        raise AssertionError(f"teamtalk-admin {' '.join(args)} exited {status}: {err!r}")
    return out.decode()


class SharedCluster:
    """One cluster for every test of this module (starting processes is the slow part).

    Started by the first test that needs it and stopped when the test process exits:
    trial has no class-level set-up, so this works the same under ``trial`` and
    ``pytest``.
    """

    _instance: SharedCluster | None = None

    @classmethod
    def get(cls) -> SharedCluster:
        if cls._instance is None:
            cls._instance = cls()
            atexit.register(cls._instance.clean_up)
        return cls._instance

    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self.db = scratch_database()
        try:
            self.redis = scratch_redis()
        except BaseException:
            self.db.drop()
            raise
        self.root = Path(tempfile.mkdtemp(prefix="tt_cluster_"))
        try:
            self.ids = create_users(self.db.url, USERS)
            self.cluster = Cluster(self.root, self.db.url, self.redis.url)
            self.cluster.center.start()
            for name in ("node1", "node2"):
                self.cluster.add_node(name).start()
            self.cluster.wait_registered_blocking(["node1", "node2"])
        except BaseException:
            self.clean_up()
            raise

    def clean_up(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        self.db.drop()
        self.redis.drop()
        if not os.environ.get("TEAMTALK_KEEP_CLUSTER_LOGS"):
            shutil.rmtree(self.root, ignore_errors=True)


class ClusterTests(TestCase):
    """Real processes: one node with route + login + file, two msg-only nodes."""

    cluster: Cluster

    def setUp(self) -> None:
        shared = SharedCluster.get()
        self.cluster = shared.cluster
        self.db, self.redis, self.ids = shared.db, shared.redis, shared.ids
        self.clients: list[Client] = []

    async def tearDown(self) -> None:
        for client in self.clients:
            await client.close()

    async def client(self, node: str, name: str, client_type: int = PC) -> Client:
        client = await log_in(self.cluster.port(node), name, client_type)
        self.clients.append(client)
        return client

    async def users_status(self, asker: Client, user_ids: list[int]) -> list[tuple[int, int]]:
        answer = await asker.session.get(
            B.CID_BUDDY_LIST_USERS_STATUS_REQUEST,
            Buddy_pb2.IMUsersStatReq(user_id=asker.user_id, user_id_list=user_ids),
        )
        return [(s.user_id, s.status) for s in answer.user_stat_list]

    # -- chat ------------------------------------------------------------------------

    async def test_one_to_one_chat_and_read_notify_cross_nodes(self):
        """A message from node 1 reaches the receiver on node 2 live and is in history;
        the receiver's read ack reaches its own device on node 1."""
        alice = await self.client("node1", "alice")
        bob = await self.client("node2", "bob")
        bob_phone = await self.client("node1", "bob", IOS)
        ack = await alice.session.send_text(bob.user_id, "hello from node 1")
        assert ack.msg_id > 0
        got = await bob.wait_for(B.CID_MSG_DATA)
        assert got.message.msg_id == ack.msg_id
        assert decrypt_text(got.message.msg_data) == "hello from node 1"
        bob.session.read_ack(alice.user_id, ack.msg_id)
        notify = await bob_phone.wait_for(B.CID_MSG_READ_NOTIFY)
        assert (notify.message.user_id, notify.message.msg_id) == (bob.user_id, ack.msg_id)

    async def test_resend_to_another_node_after_a_lost_ack_is_not_duplicated(self):
        """A client that lost its ack and resends the same message through another node
        gets the stored id again; the receiver and history have one copy."""
        oscar_pc = await self.client("node1", "oscar")
        peggy = await self.client("node2", "peggy")
        message = Message_pb2.IMMsgData(
            from_user_id=oscar_pc.user_id,
            to_session_id=peggy.user_id,
            msg_id=0,
            create_time=1_700_000_123,
            msg_type=B.MSG_TYPE_SINGLE_TEXT,
            msg_data=b"resend me",
        )
        first = await oscar_pc.protocol.request(B.CID_MSG_DATA, message)
        assert first.message.msg_id > 0
        await oscar_pc.close()  # the ack is "lost" with the connection
        oscar_again = await self.client("node2", "oscar")
        again = await oscar_again.protocol.request(B.CID_MSG_DATA, message)
        assert again.message.msg_id == first.message.msg_id
        history = await peggy.session.message_list(oscar_again.user_id, count=10)
        assert [m.msg_data for m in history.msg_list].count(b"resend me") == 1

    async def create_group(self, creator: Client, *members: Client) -> int:
        created = await creator.session.get(
            B.CID_GROUP_CREATE_REQUEST,
            Group_pb2.IMGroupCreateReq(
                user_id=creator.user_id,
                group_type=B.GROUP_TYPE_TMP,
                group_name="cluster",
                group_avatar="",
                member_id_list=[creator.user_id, *(m.user_id for m in members)],
            ),
        )
        assert created.result_code == 0
        return created.group_id

    async def test_group_resend_to_another_node_after_a_lost_ack_is_not_duplicated(self):
        """The group version of the test above: one row, the first id again."""
        oscar = await self.client("node1", "oscar")
        peggy = await self.client("node2", "peggy")
        group_id = await self.create_group(peggy, oscar)
        sender = Sender("oscar-group", oscar.user_id, group_id, B.SESSION_TYPE_GROUP, 1)
        await sender.send(oscar.protocol, sender.outgoing)
        (first,) = sender.acked
        first_id = first.msg_id
        first.msg_id = None  # the ack is "lost" with the connection
        await oscar.close()
        again = await self.client("node2", "oscar")
        await sender.resend_unacked(again.protocol)
        assert sender.outgoing[0].msg_id == first_id
        audit(sender, await history(peggy.session, B.SESSION_TYPE_GROUP, group_id))

    async def start_extra_node(self, name: str) -> TwistdProcess:
        """A third msg node, offered by /msg_server once registered (killed at cleanup);
        its clients may send faster than people (no message rate limit)."""
        config = no_rate_limit_config(self.cluster.root)
        node = self.cluster.add_node(name, "--config", str(config))
        node.start()

        def forget() -> None:
            node.kill()
            del self.cluster.nodes[name]

        self.addCleanup(forget)
        await self.cluster.wait_registered(["node1", "node2", name])
        return node

    async def reconnect_elsewhere(self, dead: str, name: str) -> Client:
        """What a client does when its node died: ask /msg_server again (which stops
        offering the dead node) and log in where it is sent."""
        deadline = time.monotonic() + 10
        while (port := int(self.cluster.discovery()["port"])) == self.cluster.port(dead):
            assert time.monotonic() < deadline, f"{dead} still offered"
            await sleep(0.05)
        client = await log_in(port, name, PC)
        self.clients.append(client)
        return client

    async def test_messages_stored_by_a_node_killed_before_the_ack_are_not_duplicated(self):
        """The node commits a 1:1 and a group message and is killed (SIGKILL) before the
        client reads the acks; the client resends through another node and gets the
        stored ids; history has one copy each and the receiver has them."""
        node3 = await self.start_extra_node("node3")
        sybil = await log_in(self.cluster.port("node3"), "sybil", PC)
        xavier = await self.client("node2", "xavier")
        group_id = await self.create_group(xavier, sybil)
        senders = [
            Sender("sybil-1:1", sybil.user_id, xavier.user_id, B.SESSION_TYPE_SINGLE, 1),
            Sender("sybil-group", sybil.user_id, group_id, B.SESSION_TYPE_GROUP, 1),
        ]
        sybil.protocol.transport.pauseProducing()  # no ack will be read
        for sender in senders:
            sybil.protocol.send(B.CID_MSG_DATA, sender.outgoing[0].message)
        views = [(B.SESSION_TYPE_SINGLE, sybil.user_id), (B.SESSION_TYPE_GROUP, group_id)]
        stored: list[dict[int, str]] = [{}, {}]
        deadline = time.monotonic() + 10
        while not all(stored):  # killed right after the commit
            assert time.monotonic() < deadline, "never stored"
            stored = [await history(xavier.session, *view) for view in views]
        node3.kill()
        sybil.protocol.transport.abortConnection()
        again = await self.reconnect_elsewhere("node3", "sybil")
        for sender, view, before in zip(senders, views, stored, strict=True):
            await sender.resend_unacked(again.protocol)
            assert [item.msg_id for item in sender.outgoing] == list(before)
            audit(sender, await history(xavier.session, *view))
        delivered = {senders[0].outgoing[0].msg_id, senders[1].outgoing[0].msg_id}
        got: set[int] = set()
        while got != delivered:
            pdu = await xavier.wait_for(
                B.CID_MSG_DATA, lambda p: p.message.from_user_id == sybil.user_id
            )
            got.add(pdu.message.msg_id)

    async def test_node_killed_under_cross_node_load_loses_and_duplicates_nothing(self):
        """Two clients on a third node stream 1:1 and group messages to members on node 2;
        the node is killed (SIGKILL) with acks unread; the clients reconnect through
        /msg_server and resend what had no ack: every message is stored once, every ack
        names its message."""
        node4 = await self.start_extra_node("node4")
        yvonne = await log_in(self.cluster.port("node4"), "yvonne", PC)
        sybil = await log_in(self.cluster.port("node4"), "sybil", PC)
        zelda = await self.client("node2", "zelda")
        xavier = await self.client("node2", "xavier")
        group_id = await self.create_group(xavier, sybil)
        senders = [
            Sender("yvonne-load", yvonne.user_id, zelda.user_id, B.SESSION_TYPE_SINGLE, 150),
            Sender("sybil-load", sybil.user_id, group_id, B.SESSION_TYPE_GROUP, 150),
        ]
        protocols = [yvonne.protocol, sybil.protocol]
        sending = [
            defer.ensureDeferred(sender.send(p, sender.outgoing))
            for sender, p in zip(senders, protocols, strict=True)
        ]
        deadline = time.monotonic() + 30
        while sum(len(s.acked) for s in senders) < 120:
            assert time.monotonic() < deadline, "the stream stalled"
            await sleep(0.005)
        await lose_acks(protocols, node4.kill, sleep)
        await defer.DeferredList(sending)
        assert all(s.unacked for s in senders)
        for sender, name in zip(senders, ("yvonne", "sybil"), strict=True):
            again = await self.reconnect_elsewhere("node4", name)
            await sender.resend_unacked(again.protocol)
            assert not sender.unacked
        audit(senders[0], await history(zelda.session, B.SESSION_TYPE_SINGLE, yvonne.user_id))
        audit(senders[1], await history(xavier.session, B.SESSION_TYPE_GROUP, group_id))

    async def test_group_message_reaches_members_on_the_other_node(self):
        """A temporary group created on node 1: its messages reach members on node 2."""
        carol = await self.client("node1", "carol")
        dave = await self.client("node2", "dave")
        group_id = await self.create_group(carol, dave)
        ack = await carol.session.send_text(
            group_id, "hello group", session_type=B.SESSION_TYPE_GROUP
        )
        assert ack.msg_id > 0
        got = await dave.wait_for(
            B.CID_MSG_DATA, lambda p: p.message.msg_type == B.MSG_TYPE_GROUP_TEXT
        )
        assert got.message.to_session_id == group_id
        assert got.message.msg_id == ack.msg_id
        assert decrypt_text(got.message.msg_data) == "hello group"

    # -- contacts (docs/EXTENSION.md) ----------------------------------------------------

    async def contacts_client(self, node: str, name: str, client_type: int = PC):
        client = await self.client(node, name, client_type)
        extension = ExtensionClient(client.session)
        assert list((await extension.hello(["contacts"])).features) == ["contacts"]
        return client, extension

    async def test_friend_requests_across_nodes_with_one_side_offline(self):
        """Heidi (node 1) asks Ivan while Ivan is offline: Ivan gets it at his hello on
        node 2, and his accept reaches Heidi on node 1 through route (her plain
        connection on node 2 gets nothing). Ivan then asks Trent (node 1) live; Trent,
        told through route, is not told again at his next hello; he accepts while Ivan
        is offline, and Ivan gets the answer at his next hello on node 1."""
        heidi, heidi_ext = await self.contacts_client("node1", "heidi")
        heidi_plain = await self.client("node2", "heidi", IOS)
        ivan_id, trent_id = self.ids["ivan"], self.ids["trent"]
        asked = await heidi_ext.request(ivan_id, note="from node 1")
        assert asked.result_code == X.EXT_RESULT_OK
        ivan, ivan_ext = await self.contacts_client("node2", "ivan")
        stored = await ivan.wait_for(X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        assert stored.message.request.request_id == asked.request_id
        assert stored.message.request.peer.real_name == "heidi"
        accepted = await ivan_ext.accept(asked.request_id, remark="Hei")
        assert accepted.result_code == X.EXT_RESULT_OK
        told = await heidi.wait_for(X.CID_EXT_FRIEND_ANSWER_NOTIFY)
        assert told.message.request.state == X.EXT_REQUEST_ACCEPTED
        friends = await heidi_ext.friends()
        assert [f.user.user_id for f in friends.friends] == [ivan_id]
        with self.assertRaises(TimeoutError):
            await heidi_plain.protocol.wait_for(
                None, lambda p: p.service_id == X.SID_EXTENSION, timeout=0.3
            )

        trent, trent_ext = await self.contacts_client("node1", "trent")
        to_trent = await ivan_ext.request(trent_id, note="live, through route")
        live = await trent.wait_for(X.CID_EXT_FRIEND_REQUEST_NOTIFY)
        assert live.message.request.request_id == to_trent.request_id
        await ivan.close()
        await trent.close()
        # Node 1 records the relayed delivery right after writing it to Trent.
        await wait_until(
            lambda: (
                self.db.query(
                    "SELECT to_notified FROM friend_requests WHERE id = %s", to_trent.request_id
                )
                == [(1,)]
            ),
            what="the relayed request marked delivered",
        )
        trent, trent_ext = await self.contacts_client("node2", "trent")
        with self.assertRaises(TimeoutError):
            await trent.wait_for(X.CID_EXT_FRIEND_REQUEST_NOTIFY, timeout=0.5)
        assert (await trent_ext.accept(to_trent.request_id)).result_code == X.EXT_RESULT_OK
        ivan, ivan_ext = await self.contacts_client("node1", "ivan")
        answered = await ivan.wait_for(X.CID_EXT_FRIEND_ANSWER_NOTIFY)
        assert answered.message.request.request_id == to_trent.request_id
        assert answered.message.request.peer.user_id == trent_id
        mine = {f.user.user_id: f.remark for f in (await ivan_ext.friends()).friends}
        assert mine == {heidi.user_id: "Hei", trent_id: ""}

    # -- presence ----------------------------------------------------------------------

    async def test_presence_notifies_and_status_queries_cross_nodes(self):
        """A login on node 2 is announced to PC clients on node 1, which can ask for its
        status; the logout is announced too."""
        erin = await self.client("node1", "erin")
        frank = await self.client("node2", "frank")
        await erin.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(frank.user_id, 1))
        assert await self.users_status(erin, [frank.user_id, self.ids["judy"]]) == [
            (frank.user_id, B.USER_STATUS_ONLINE),
            (self.ids["judy"], B.USER_STATUS_OFFLINE),
        ]
        await frank.close()
        await erin.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(frank.user_id, 2))

    async def test_second_login_on_another_node_kicks_the_first(self):
        """One PC connection per account in the whole cluster."""
        first = await self.client("node1", "grace")
        await self.client("node2", "grace", B.CLIENT_TYPE_MAC)
        kick = await first.wait_for(B.CID_LOGIN_KICK_USER)
        assert kick.message.kick_reason == B.KICK_REASON_DUPLICATE_USER
        await first.protocol.closed

    async def test_disabling_a_user_kicks_their_session_on_another_node(self):
        """teamtalk-admin, run against the shared database and no node, disables walter:
        his session on node2 gets CID_LOGIN_KICK_USER and is closed within seconds, and
        his next login is told the account is disabled. Before, the center's /online
        (route's view of the cluster) lists him on a linked node."""
        walter = await self.client("node2", "walter")
        center = f"http://127.0.0.1:{self.cluster.ops_ports['center']}"
        listing = await admin("--db", self.db.url, "--server", center, "online")
        assert [line for line in listing.splitlines() if "\twalter\twindows\t" in line]
        assert await admin("--db", self.db.url, "user", "disable", "walter") == "ok\n"
        kick = await walter.wait_for(B.CID_LOGIN_KICK_USER, timeout=15)
        assert kick.message.kick_reason == B.KICK_REASON_DUPLICATE_USER
        await walter.protocol.closed
        protocol = await connect(reactor, "127.0.0.1", self.cluster.port("node1"))
        answer = await TeamTalkSession(protocol).login("walter", PASSWORD)
        assert answer.result_string == "账号已停用"
        protocol.transport.loseConnection()
        await protocol.closed

    async def test_failed_login_lockout_is_shared_by_every_node(self):
        """Five wrong passwords from one address spread over both nodes make the next
        try from there wait on both: the count lives in Redis, not in either process
        (each saw only two or three)."""
        for attempt in range(5):
            answer = await self._log_in_with_wrong_password(("node1", "node2")[attempt % 2])
            assert answer.result_code == B.REFUSE_REASON_DB_VALIDATE_FAILED
        with self.assertRaises(AssertionError) as refused:
            await log_in(self.cluster.port("node1"), "mallory", PC)
        assert "次数太多" in str(refused.exception)

    async def _log_in_with_wrong_password(self, node: str):
        protocol = await connect(reactor, "127.0.0.1", self.cluster.port(node))
        try:
            return await TeamTalkSession(protocol).login("mallory", "wrong")
        finally:
            if not protocol.closed.called:
                protocol.transport.loseConnection()
            await protocol.closed

    # -- internal ports --------------------------------------------------------------

    async def attacker(self, port: int):
        """A raw connection to an internal port; it gets the link challenge first."""
        protocol = await connect(reactor, "127.0.0.1", port)
        challenge = await protocol.notifications.get()
        assert challenge.command_id == CID_LINK_CHALLENGE
        return protocol

    async def test_route_port_refuses_forged_relays_and_kicks_without_the_secret(self):
        """A raw socket on the route port cannot deliver a message in someone's name nor
        kick anyone, with or without a made-up handshake; the user stays connected."""
        trent = await self.client("node2", "trent")
        victor_id = self.ids["victor"]
        forged = Message_pb2.IMMsgData(
            from_user_id=victor_id,
            to_session_id=trent.user_id,
            msg_id=777,
            create_time=1,
            msg_type=B.MSG_TYPE_SINGLE_TEXT,
            msg_data=b"forged",
        )
        kick = Server_pb2.IMServerKickUser(
            user_id=trent.user_id, client_type=PC, reason=B.KICK_REASON_DUPLICATE_USER
        )
        plain = await self.attacker(self.cluster.route_port)
        plain.send(B.CID_MSG_DATA, forged)
        plain.send(B.CID_OTHER_SERVER_KICK_USER, kick)
        await plain.closed
        guessing = await self.attacker(self.cluster.route_port)
        guessing.send(CID_LINK_RESPONSE, b"c" * 32 + b"p" * 32)
        guessing.send(B.CID_MSG_DATA, forged)
        guessing.send(B.CID_OTHER_SERVER_KICK_USER, kick)
        await guessing.closed
        with self.assertRaises(TimeoutError):
            await trent.wait_for(B.CID_MSG_DATA, timeout=1.0)
        assert not trent.protocol.closed.called
        answer = await trent.session.get(B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq())
        assert answer.server_time > 0
        log = self.cluster.center.output()
        assert "route link with 127.0.0.1" in log and "wrong cluster secret" in log

    async def test_login_port_never_offers_an_address_it_was_not_allowed(self):
        """A registration naming a foreign host is refused without the secret, and with
        it too (node_addresses): /msg_server keeps offering only the real nodes."""
        foreign = "203.0.113.66"
        info = Server_pb2.IMMsgServInfo(
            ip1=foreign, ip2=foreign, port=8000, max_conn_cnt=100000, cur_conn_cnt=0,
            host_name="evil",
        )  # fmt: skip
        plain = await self.attacker(self.cluster.login_internal_port)
        plain.send(B.CID_OTHER_MSG_SERV_INFO, info)
        await plain.closed
        link = ServerLink(
            reactor,
            "login",
            "127.0.0.1",
            self.cluster.login_internal_port,
            CommandTable(),
            on_connect=lambda conn: conn.send(B.CID_OTHER_MSG_SERV_INFO, info),
            auth=LinkAuth(TEST_SECRET.encode()),
        )
        link.start()
        try:
            deadline = time.monotonic() + 10
            while f"may not send clients to {foreign}" not in self.cluster.center.output():
                assert time.monotonic() < deadline, "registration not refused"
                await sleep(0.05)
        finally:
            await link.stop()
        for _ in range(20):
            assert self.cluster.discovery()["priorIP"] == "127.0.0.1"

    async def test_file_port_creates_no_task_for_an_unauthenticated_peer(self):
        """A raw transfer request on the file-internal port gets no answer and leaves no
        task: no record, no stored file."""
        stranger = 4_000_000_001
        store_dir = self.cluster.root / "center" / "var" / "offline_file"
        files_before = sorted(store_dir.rglob("*")) if store_dir.exists() else []
        attacker = await self.attacker(self.cluster.file_internal_port)
        attacker.send(
            B.CID_OTHER_FILE_TRANSFER_REQ,
            Server_pb2.IMFileTransferReq(
                from_user_id=stranger,
                to_user_id=self.ids["victor"],
                file_name="fill.bin",
                file_size=2 * 1024**3 - 1,
                trans_mode=B.FILE_TYPE_OFFLINE,
            ),
        )
        await attacker.closed
        assert [p.command_id for p in attacker.notifications.pending] == []
        assert (sorted(store_dir.rglob("*")) if store_dir.exists() else []) == files_before
        rows = self.db.query("SELECT COUNT(*) FROM offline_files WHERE from_id = %s", stranger)
        assert rows == [(0,)]

    # -- files -------------------------------------------------------------------------

    async def test_file_notify_reaches_the_receiver_on_another_node(self):
        """A file offer made on node 1 (task created by the center's file service) is
        announced to the receiver on node 2."""
        heidi = await self.client("node1", "heidi")
        ivan = await self.client("node2", "ivan")
        request = File_pb2.IMFileReq(
            from_user_id=heidi.user_id,
            to_user_id=ivan.user_id,
            file_name="notes.txt",
            file_size=12,
            trans_mode=B.FILE_TYPE_OFFLINE,
        )
        # Node 1's link to the file service comes up on its own schedule after start-up.
        deadline = time.monotonic() + 10
        while (answer := await heidi.session.get(B.CID_FILE_REQUEST, request)).result_code:
            assert time.monotonic() < deadline, "no file service reachable from node 1"
            await sleep(0.1)
        notify = await ivan.wait_for(B.CID_FILE_NOTIFY)
        assert notify.message.task_id == answer.task_id
        assert notify.message.from_user_id == heidi.user_id
        assert [a.port for a in notify.message.ip_addr_list] == [self.cluster.file_port]

    # -- shared services ---------------------------------------------------------------

    async def test_database_connections_dropped_under_the_nodes_are_reopened(self):
        """MariaDB kills every connection the processes hold; logins and messages keep
        working because the store reopens them (no message is refused)."""
        await self.client("node2", "ivan")  # a reader and the writer are in use
        killed = self.db.kill_connections()
        assert killed > 0
        heidi = await self.client("node1", "heidi")
        ivan = await self.client("node2", "ivan", IOS)
        ack = await heidi.session.send_text(ivan.user_id, "after the connections died")
        assert ack.msg_id > 0
        got = await ivan.wait_for(B.CID_MSG_DATA)
        assert got.message.msg_id == ack.msg_id

    # -- login service -----------------------------------------------------------------

    async def test_msg_server_sends_each_new_client_to_the_least_loaded_node(self):
        """/msg_server follows the nodes' load reports: four clients end up two a node."""
        ports = {self.cluster.port("node1"): 0, self.cluster.port("node2"): 0}
        for name in ("alice", "bob", "carol", "dave"):
            least = min(ports.values())
            deadline = time.monotonic() + 5
            while True:
                chosen = int(self.cluster.discovery()["port"])
                if ports[chosen] == least:
                    break
                assert time.monotonic() < deadline, f"discovery stuck on {chosen}: {ports}"
                await sleep(0.05)
            self.clients.append(await log_in(chosen, name, PC))
            ports[chosen] += 1
        assert sorted(ports.values()) == [2, 2]

    # -- failures ----------------------------------------------------------------------

    async def test_killed_msg_node_goes_offline_everywhere_and_is_no_longer_offered(self):
        """Killing a msg node (SIGKILL) marks its users offline on the other nodes and
        removes it from /msg_server."""
        node3 = self.cluster.add_node("node3")
        node3.start()
        try:
            await self.cluster.wait_registered(["node1", "node2", "node3"])
            watcher = await self.client("node1", "judy")
            await self.client("node1", "judy", IOS)
            await self.client("node2", "alice")
            await self.client("node2", "alice", IOS)
            erin = await log_in(self.cluster.port("node3"), "erin", PC)
            await watcher.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(erin.user_id, 1))
            port3 = self.cluster.port("node3")
            deadline = time.monotonic() + 5
            while int(self.cluster.discovery()["port"]) != port3:
                assert time.monotonic() < deadline, "node 3 (least loaded) never offered"
                await sleep(0.05)
            node3.kill()
            await watcher.wait_for(B.CID_BUDDY_LIST_STATUS_NOTIFY, status_is(erin.user_id, 2))
            assert await self.users_status(watcher, [erin.user_id]) == [
                (erin.user_id, B.USER_STATUS_OFFLINE)
            ]
            deadline = time.monotonic() + 5
            while int(self.cluster.discovery()["port"]) == port3:
                assert time.monotonic() < deadline, "killed node still offered"
                await sleep(0.05)
            await erin.protocol.closed
        finally:
            node3.kill()
            del self.cluster.nodes["node3"]

    async def test_route_restart_loses_no_acked_message(self):
        """With the route (and login, file) process killed, a message sent on node 1 is
        still acked (it is stored); after the restart the receiver on node 2 gets it
        live, finds it in history, and presence works across nodes again."""
        bob = await self.client("node2", "bob")
        alice = await self.client("node1", "alice")
        center = self.cluster.center
        center.kill()
        try:
            ack = await alice.session.send_text(bob.user_id, "sent while route was down")
            assert ack.msg_id > 0
        finally:
            center.start()
        await self.cluster.wait_registered(["node1", "node2"])
        got = await bob.wait_for(
            B.CID_MSG_DATA, lambda p: p.message.msg_id == ack.msg_id, timeout=15
        )
        assert decrypt_text(got.message.msg_data) == "sent while route was down"
        history = await bob.session.message_list(alice.user_id)
        assert ack.msg_id in [m.msg_id for m in history.msg_list]
        assert await self.users_status(bob, [alice.user_id]) == [
            (alice.user_id, B.USER_STATUS_ONLINE)
        ]
        assert int(self.cluster.discovery()["code"]) == 0


class MediaClusterTests(TestCase):
    """The media service on both msg nodes, one database and one shared directory."""

    def setUp(self) -> None:
        shared = SharedCluster.get()
        assert shared.cluster is not None
        self.cluster = shared.cluster

    async def test_upload_started_on_one_node_resumes_on_the_other(self):
        """tuspy sends two chunks through node1; a new uploader pointed at node2 gets the
        offset from the shared database and finishes; both nodes serve the same bytes,
        and a picture uploaded through node1 is served by node2."""
        node1, node2 = self.cluster.media_url("node1"), self.cluster.media_url("node2")
        token = (await token_request(node1, "peggy", md5_hex(PASSWORD))).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        data = os.urandom(3 * 1024 * 1024 + 100)
        path = Path(tempfile.mkdtemp(prefix="tt_media_")) / "big.bin"
        self.addCleanup(shutil.rmtree, path.parent, True)
        path.write_bytes(data)
        first = await threads.deferToThread(
            tus_client.TusClient(node1 + "api/v1/files/", headers=headers).uploader,
            file_path=str(path),
            chunk_size=1024 * 1024,
        )
        await threads.deferToThread(first.upload_chunk)
        await threads.deferToThread(first.upload_chunk)
        upload_id = first.url.rsplit("/", 1)[1]
        second = await threads.deferToThread(
            tus_client.TusClient(node2 + "api/v1/files/", headers=headers).uploader,
            file_path=str(path),
            chunk_size=1024 * 1024,
            url=node2 + "api/v1/files/" + upload_id,
        )
        assert second.offset == 2 * 1024 * 1024
        await threads.deferToThread(second.upload)
        for base in (node1, node2):
            fetched = await get(
                base + "api/v1/files/" + upload_id, f"Authorization: Bearer {token}"
            )
            assert fetched.status == 200 and fetched.body == data
        picture_bytes = picture(5000)
        head, body = afnetworking_upload(node1, picture_bytes, "image.jpg")
        answer = (await http(node1, head, body)).json()
        assert (await get(node2 + answer["path"])).body == picture_bytes


class DiskClusterTests(TestCase):
    """The cloud disk on both msg nodes: one database, one Redis, one content directory."""

    def setUp(self) -> None:
        shared = SharedCluster.get()
        assert shared.cluster is not None
        self.cluster = shared.cluster
        self.redis = shared.redis

    def test_both_nodes_see_one_ranking(self):
        """Files uploaded through node1 are shared through node2; downloads counted
        through both (at once, 30 of them) rank the same on both nodes, exactly, also
        after Redis lost the ranking's sorted set; node2's media serves node1's upload."""
        node1 = SeedClient(self.cluster.disk_url("node1"))
        node2 = SeedClient(self.cluster.disk_url("node2"))
        user = "victor"
        token = node1.login(user, md5_hex(PASSWORD))
        files = {f"c{i}.bin": os.urandom(4000 + i) for i in range(3)}
        for name, data in files.items():
            assert node1.upload(user, token, name, data) == "008"
            assert node2.file_call("/dealfile?cmd=share", user, token, data, name) == "010"
        counts = {"c0.bin": 4, "c1.bin": 16, "c2.bin": 10}
        calls = [(node1 if i % 2 else node2, name)
                 for name, n in counts.items() for i in range(n)]  # fmt: skip

        def count(call) -> str:
            client, name = call
            return client.file_call("/dealsharefile?cmd=pv", user, token, files[name], name)

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(count, calls)) == {"016"}
        expected = [{"filename": n, "pv": counts[n]} for n in ("c1.bin", "c2.bin", "c0.bin")]

        def ranking(client: SeedClient) -> list[dict]:
            return [r for r in client.shared(token, "pvdesc") if r["filename"] in files]

        assert ranking(node1) == ranking(node2) == expected
        assert self.redis.redis.exists(self.redis.prefix + "disk:ranking")
        self.redis.redis.delete(self.redis.prefix + "disk:ranking")
        assert ranking(node2) == ranking(node1) == expected
        [first] = [f for f in node2.my_files(user, token) if f["filename"] == "c0.bin"]
        assert first["url"].startswith(self.cluster.media_url("node2"))
        assert requests.get(first["url"], timeout=30).content == files["c0.bin"]
