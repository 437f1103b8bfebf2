"""The typed node: each service built once with its collaborators, started in the order
``Node.services()`` writes out, stopped in the reverse order."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from teamtalk_py.tap import build_node
from tests.node_support import NodeTestCase
from tests.support import TestCase, local_config


class NodeWiringTests(TestCase):
    def test_each_hosted_service_is_an_attribute_and_the_others_are_none(self):
        """A center (route, login, file) has no msg, push, media or disk; its file service
        got the store and the shared state it needs in its constructor."""
        config = local_config(self.tmp_path(), **{"server.services": "route,login,file"})
        node = build_node(MemoryReactorClock(), config)
        assert node.msg is None and node.push is None and node.media is None
        assert node.route is not None and node.login is not None and node.files is not None
        assert node.files.store is node.store and node.files.shared is node.shared
        assert [s.name for s in node.collection] == [s.name for s in node.services()]

    def test_msg_gets_its_collaborators_and_the_start_order_is_written_out(self):
        """msg is handed the store, the shared state, the co-hosted route, login and file
        services and the lockout media's tokens share; the collection holds the services
        in the order that says ops first, the store before its users, push last."""
        config = local_config(self.tmp_path(), **{"server.services": "msg,route,login,file,media"})
        node = build_node(MemoryReactorClock(), config)
        msg = node.msg
        assert msg is not None
        assert msg.store is node.store and msg.shared is node.shared
        assert msg.route_service is node.route and msg.login_service is node.login
        assert msg.file_service is node.files and msg.lockout is node.lockout
        names = [s.name for s in node.collection]
        assert names == ["ops", "store", "redis", "route", "login", "file", "msg", "media"]


class NodeStopOrderTests(NodeTestCase):
    def test_services_stop_in_the_reverse_of_their_start_order(self):
        """The store stops last, after every service that may still write to it."""
        stopped: list[str] = []
        for service in self.node.services():
            original = service.stop

            async def stop(service=service, original=original) -> None:
                stopped.append(service.name)
                await original()

            service.stop = stop  # type: ignore[method-assign]
        self.get_success(self.collection.stopService())
        assert stopped == [s.name for s in reversed(self.node.services())]
        assert stopped[-2:] == ["store", "ops"]
