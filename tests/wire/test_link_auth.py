"""Server links authenticate before anything else: the cluster secret's challenge, TLS
client certificates, and where the secret comes from at start-up."""

from __future__ import annotations

import stat
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import VerifyError
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

from teamtalk_client import connect
from teamtalk_py.config import Config, ConfigError
from teamtalk_py.login.nodes import NodeAddressPolicy
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2
from teamtalk_py.protocol.header import pack_pdu
from teamtalk_py.wire import CommandTable
from teamtalk_py.wire.link import InboundLinkFactory, ServerLink
from teamtalk_py.wire.link_auth import (
    CID_LINK_CHALLENGE,
    CID_LINK_CONFIRM,
    CID_LINK_RESPONSE,
    LinkAuth,
    resolve_cluster_secret,
)
from tests.cluster_support import sleep, wait_until
from tests.support import TEST_SECRET, TestCase
from tests.tls_support import CertificateAuthority

GOOD = LinkAuth(TEST_SECRET.encode())
WRONG = LinkAuth(b"another-cluster-secret-987654321")


def time_table() -> CommandTable:
    """A peer that answers CID_MSG_TIME_REQUEST with server_time 42."""
    table = CommandTable()

    def answer(conn, request):
        conn.send(B.CID_MSG_TIME_RESPONSE, Message_pb2.IMClientTimeRsp(server_time=42), request.seq)

    table.register(B.CID_MSG_TIME_REQUEST, answer)
    return table


class LinkAuthTests(TestCase):
    async def listen(self, auth: LinkAuth, tls: bool = False) -> tuple[InboundLinkFactory, int]:
        factory = InboundLinkFactory(auth=auth, purpose="route", clock=reactor, table=time_table())
        wrapped = TLSMemoryBIOFactory(auth.server_tls(), False, factory) if tls else factory
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(wrapped)
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    def link(self, port: int, auth: LinkAuth, purpose: str = "route") -> ServerLink:
        link = ServerLink(reactor, purpose, "127.0.0.1", port, CommandTable(), auth=auth)
        link.start()
        self.addCleanup(lambda: defer.ensureDeferred(link.stop()))
        return link

    async def test_links_with_the_cluster_secret_work(self):
        """Same secret on both ends: the link comes up and requests are answered."""
        server, port = await self.listen(GOOD)
        link = self.link(port, GOOD)
        await wait_until(lambda: link.connected, what="authenticated link")
        answer = await link.request(B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq())
        assert answer.message.server_time == 42
        assert server.auth_failures == 0

    async def test_a_wrong_secret_is_refused_counted_and_never_connected(self):
        """The listener refuses a proof made with another secret and closes the link."""
        server, port = await self.listen(GOOD)
        link = self.link(port, WRONG)
        await wait_until(lambda: server.auth_failures >= 1, what="refusal")
        assert not link.connected
        assert not any(c.logged_in for c in server.connections)

    async def test_a_proof_for_another_port_is_refused(self):
        """The proof names the port's purpose: a route proof does not open a file port."""
        server, port = await self.listen(GOOD)
        link = self.link(port, GOOD, purpose="file")
        await wait_until(lambda: server.auth_failures >= 1, what="refusal")
        assert not link.connected

    async def test_any_packet_before_the_handshake_closes_the_connection(self):
        """A raw client that ignores the challenge and sends a command is closed, and the
        command is not handled (no answer)."""
        server, port = await self.listen(GOOD)
        attacker = await connect(reactor, "127.0.0.1", port)
        challenge = await attacker.notifications.get()
        assert challenge.command_id == CID_LINK_CHALLENGE and len(challenge.body) == 32
        attacker.send(B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq())
        await attacker.closed
        assert server.auth_failures == 1
        assert attacker.notifications.pending == []

    async def test_a_listener_that_cannot_prove_the_secret_is_not_trusted(self):
        """Our end checks the listener's proof too: a fake service that challenges and
        then confirms with garbage never becomes a link (nothing is sent to it)."""
        received: list[bytes] = []

        class FakeService(Protocol):
            def connectionMade(self):
                self.transport.write(pack_pdu(B.SID_OTHER, CID_LINK_CHALLENGE, b"n" * 32))

            def dataReceived(self, data):
                received.append(data)
                if len(received) == 1:
                    self.transport.write(pack_pdu(B.SID_OTHER, CID_LINK_CONFIRM, b"x" * 32))

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(FakeService)
        )
        self.addCleanup(port.stopListening)
        link = self.link(port.getHost().port, GOOD)
        await wait_until(lambda: link.factory.auth_failures >= 1, what="refusal")
        assert not link.connected
        first = received[0]
        assert int.from_bytes(first[10:12], "big") == CID_LINK_RESPONSE
        assert len(b"".join(received)) == 16 + 64  # the response only, nothing after it

    async def test_tls_client_certificates_authenticate_without_a_secret(self):
        """With cluster TLS and no secret, a node certificate signed by the cluster CA is
        the proof; a client whose certificate another CA signed never gets a link."""
        tmp = self.tmp_path()
        ca = CertificateAuthority()
        ca_path = ca.write(tmp)
        cert, key = ca.node(tmp, "center")
        node_cert, node_key = ca.node(tmp, "node")
        tls = lambda c, k, a: LinkAuth(None, (c.read_bytes(), k.read_bytes(), a.read_bytes()))  # noqa: E731
        server, port = await self.listen(tls(cert, key, ca_path), tls=True)
        link = self.link(port, tls(node_cert, node_key, ca_path))
        await wait_until(lambda: link.connected, what="TLS link")
        answer = await link.request(B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq())
        assert answer.message.server_time == 42

        rogue_ca = CertificateAuthority("rogue")
        rogue_dir = tmp / "rogue"
        rogue_dir.mkdir()
        rogue_cert, rogue_key = rogue_ca.node(rogue_dir, "rogue")
        rogue = self.link(port, tls(rogue_cert, rogue_key, ca_path))
        await sleep(1.0)
        assert not rogue.connected
        assert sum(1 for c in server.connections if c.logged_in) == 1

    async def test_renewed_certificates_serve_new_links_after_a_reload(self):
        """Credentials read from cluster.tls_* files: after the files are replaced and
        re-read (SIGHUP), new links see the new certificate and still authenticate; a set
        whose key does not match is refused and the old one kept."""
        tmp = self.tmp_path()
        ca = CertificateAuthority()
        ca_path = ca.write(tmp)
        cert, key = ca.node(tmp, "center")
        node_cert, node_key = ca.node(tmp, "node")

        def from_files(c: Path, k: Path) -> LinkAuth:
            keys = {"cluster.tls_cert": str(c), "cluster.tls_key": str(k)}
            config = Config().with_overrides({**keys, "cluster.tls_ca": str(ca_path)})
            return LinkAuth.from_config(config)

        server_auth = from_files(cert, key)
        _, port = await self.listen(server_auth, tls=True)
        node_auth = from_files(node_cert, node_key)

        async def peer_name() -> str:
            link = self.link(port, node_auth)
            await wait_until(lambda: link.connected, what="TLS link")
            assert link.connection is not None
            certificate = link.connection.transport.getPeerCertificate().to_cryptography()
            return str(certificate.subject.rfc4514_string())

        assert await peer_name() == "CN=center"
        renewed = tmp / "renewed"
        renewed.mkdir()
        new_cert, new_key = ca.node(renewed, "center-renewed")
        cert.write_bytes(new_cert.read_bytes())
        key.write_bytes(new_key.read_bytes())
        assert server_auth.tls_files is not None and server_auth.tls_files.reload()
        assert await peer_name() == "CN=center-renewed"

        key.write_bytes(node_key.read_bytes())  # a key for another certificate
        with self.assertRaises(VerifyError):
            server_auth.tls_files.reload()
        assert await peer_name() == "CN=center-renewed"

    def test_node_addresses_allow_listed_addresses_and_networks_only(self):
        """An explicit list admits its IPs, networks and names; an empty one only the
        address the node links from."""
        policy = NodeAddressPolicy(["203.0.113.0/24", "10.0.0.5", "chat.example.com"])
        assert policy.allows("203.0.113.77", "10.0.0.2")
        assert policy.allows("10.0.0.5", "10.0.0.2")
        assert policy.allows("Chat.Example.com", "10.0.0.2")
        assert not policy.allows("198.51.100.1", "10.0.0.2")
        assert not policy.allows("evil.example.com", "10.0.0.2")
        default = NodeAddressPolicy()
        assert default.allows("10.0.0.2", "10.0.0.2")
        assert not default.allows("203.0.113.77", "10.0.0.2")


class ClusterSecretTests(TestCase):
    def config(self, **overrides) -> Config:
        base = {"server.data_dir": str(self.tmp_path())}
        base.update(overrides)
        return Config().with_overrides(base).with_default_listeners()

    def test_a_node_of_a_multi_node_setup_without_a_secret_is_refused(self):
        """A msg node that links to route elsewhere, and a center that listens for msg
        nodes, both refuse to start without the secret, naming the key."""
        node = self.config(**{"server.services": "msg", "msg.route_server": "10.0.0.1:8200"})
        with self.assertRaisesRegex(ConfigError, "cluster.secret"):
            resolve_cluster_secret(node)
        center = self.config(**{"server.services": "route,login,file"})
        with self.assertRaisesRegex(ConfigError, "cluster.secret"):
            resolve_cluster_secret(center)

    def test_the_single_process_default_opens_no_internal_port_and_needs_no_secret(self):
        """Out of the box nothing links: no secret is needed and none is written."""
        config = self.config()
        resolved = resolve_cluster_secret(config)
        assert resolved.cluster.secret == ""
        assert not (config.data_dir / "cluster.secret").exists()

    def test_a_single_process_with_an_internal_port_generates_its_secret_once(self):
        """Opening an internal port in a single process writes a private secret into the
        data dir, and the next start reuses it."""
        config = self.config(**{"route.listen": "tcp:0:interface=127.0.0.1"})
        first = resolve_cluster_secret(config).cluster.secret
        path = config.data_dir / "cluster.secret"
        assert len(first) >= 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert resolve_cluster_secret(config).cluster.secret == first

    def test_the_secret_may_come_from_a_file(self):
        """cluster.secret_file is read at start; a short secret is refused."""
        tmp = self.tmp_path()
        secret_file = tmp / "secret"
        secret_file.write_text(TEST_SECRET + "\n")
        node = self.config(
            **{
                "server.services": "msg",
                "msg.route_server": "10.0.0.1:8200",
                "cluster.secret_file": str(secret_file),
            }
        )
        assert resolve_cluster_secret(node).cluster.secret == TEST_SECRET
        secret_file.write_text("short")
        with self.assertRaisesRegex(ConfigError, "shorter"):
            resolve_cluster_secret(node)


class LinkAuthMetricTests(TestCase):
    async def test_refused_peers_are_counted_per_port(self):
        """A raw peer on a server's route port shows in teamtalk_link_auth_failures."""
        from tests.server.test_ops import samples
        from tests.support import local_config, start_server

        server = await start_server(local_config(self.tmp_path()))
        self.addCleanup(lambda: defer.ensureDeferred(server.stop()))
        port = server.service("route").bound_port()
        attacker = await connect(reactor, "127.0.0.1", port)
        await attacker.notifications.get()
        attacker.send(B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq())
        await attacker.closed
        scraped = samples(server.collection.metrics.exposition().decode())
        assert scraped[("teamtalk_link_auth_failures_total", (("port", "route"),))] == 1
        assert scraped[("teamtalk_link_auth_failures_total", (("port", "login"),))] == 0
