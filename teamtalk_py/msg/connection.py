"""``MsgConnection``: one client TCP connection to the msg service.

It frames and dispatches (through ``PduProtocol``) and remembers who is logged in on it;
everything else is done by the handlers in ``teamtalk_py.msg.handlers``, with the node's
collaborators it hands them (``ctx``, a ``MsgContext``: ``msg/context.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from teamtalk_py.extension import may_send
from teamtalk_py.msg.limits import RefusalBudget
from teamtalk_py.msg.run import ConnectionIds
from teamtalk_py.pb.IM import BaseDefine_pb2
from teamtalk_py.wire import PduFactory, PduProtocol
from teamtalk_py.wire.protocol import FanoutHelpers, send_now_to_each

if TYPE_CHECKING:
    from teamtalk_py.msg.context import MsgContext
    from teamtalk_py.msg.realm import LoggedInUser, LoginRealm


def is_mobile(client_type: int) -> bool:
    """Clients are PC (Windows, Mac) or mobile (iOS, Android) by bit 0x10."""
    return bool(client_type & 0x10)


class MsgConnection(PduProtocol):
    factory: MsgFactory

    # Defaults live on the class; see PduProtocol for why.
    user_id = 0
    login_name = ""
    client_type: int = BaseDefine_pb2.CLIENT_TYPE_WINDOWS
    client_version = ""
    online_status = BaseDefine_pb2.USER_STATUS_ONLINE
    login_requested = False
    #: Unix seconds of the successful login (0 before).
    logged_in_at = 0
    #: The account's ``session_epoch`` at login (msg/session_watch.py).
    session_epoch = 0
    kicked = False
    _refusals: RefusalBudget | None = None
    _over_budget = False
    _limit_pause: IDelayedCall | None = None
    _connection_id = 0
    #: Until when a message of this connection may be a resend (``intake.py``).
    resends_possible_until: float = math.inf
    resend_check_started = False
    #: The extension features this connection opted in to (``CID_EXT_HELLO_REQ``); None
    #: until it says hello, and then it is sent no extension packet at all.
    extension_features: frozenset[str] | None = None
    #: Extension packets withheld from this connection (``may_send`` said no).
    extension_withheld = 0

    @property
    def ctx(self) -> MsgContext:
        """The node's collaborators (``msg/context.py``): what handlers work with."""
        return self.factory.ctx

    @property
    def realm(self) -> LoginRealm:
        """Where a login is decided (``msg/realm.py``)."""
        realm = self.factory.realm
        assert realm is not None, "the msg service sets its realm before it listens"
        return realm

    @property
    def user(self) -> LoggedInUser:
        """The logged-in user's avatar (``msg/realm.py``), made when a handler asks: an
        idle connection keeps no avatar of its own. Handlers registered after login only
        run once there is a user."""
        assert self.user_id, "not logged in"
        return self.realm.avatar(self.user_id, self.client_type)

    @property
    def connection_id(self) -> int:
        """This connection's id in the send facts (``ConnectionIds``), taken when first
        asked: an idle connection that never sends a message keeps none (a 64-bit int
        is 36 bytes)."""
        cid = self._connection_id
        if not cid:
            cid = self._connection_id = self.factory.connection_ids.next()
        return cid

    @property
    def is_mobile(self) -> bool:
        return is_mobile(self.client_type)

    @property
    def idle_timeout(self) -> float:  # type: ignore[override]
        config = self.ctx.config.msg
        return config.mobile_idle_timeout if self.is_mobile else config.pc_idle_timeout

    @property
    def login_deadline(self) -> float:  # type: ignore[override]
        return self.ctx.config.msg.login_deadline

    def limit_refused(self) -> None:
        """One request was refused for a limit (``msg/limits.py``): read nothing more
        from this connection for one message interval, and close a connection that keeps
        exceeding its limits once the refusal's answer has been written."""
        clock = self.factory.clock
        now = clock.seconds()
        config = self.ctx.config.msg
        if self._limit_pause is None:
            self.hold_input("limit")
            pause = min(1.0 / config.message_rate, 0.25) if config.message_rate > 0 else 0.05
            self._limit_pause = clock.callLater(pause, self._limit_pause_over)
        if self._refusals is None:
            self._refusals = RefusalBudget(config.max_refusals, now)
        if not self._refusals.spend(now) and not (self.closing or self._over_budget):
            self._over_budget = True
            self.ctx.connections_closed_for_limits += 1
            self.factory.clock.callLater(0, self.close, "keeps exceeding its limits")

    def _limit_pause_over(self) -> None:
        self._limit_pause = None
        self.release_input("limit")

    def send_raw(self, pdu: bytes) -> None:
        """Every packet to the client passes here: the one place where extension packets
        are withheld from a connection that did not opt in to them."""
        if not may_send(self.extension_features, pdu):
            self.extension_withheld += 1
            self.ctx.extension_packets_withheld += 1
            return
        super().send_raw(pdu)

    def send_now(self, data: bytes) -> None:
        """``send_raw``'s rule for ``PduProtocol.send_now`` (given one kind of packet at a
        time: a presence batch is status notifies only)."""
        if not may_send(self.extension_features, data):
            self.extension_withheld += 1
            self.ctx.extension_packets_withheld += 1
            return
        super().send_now(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        if self._limit_pause is not None:
            self._limit_pause.cancel()
            self._limit_pause = None
        self.ctx.connection_closed(self)


class MsgFactory(PduFactory):
    protocol = MsgConnection

    def send_now_to_each(self, conns: Sequence[Any], data: bytes, shared: bool = False) -> int:
        """``send_now(data)`` to each of ``conns`` (a presence batch to every PC
        connection): ``MsgConnection.send_raw``'s extension rule is one check for the
        whole batch (it is one kind of packet), and the connections get the tight loop of
        ``wire.send_now_to_each``, its sends shared with the fan-out helper threads when
        ``shared`` (a lone batch: ``PresenceBatch``)."""
        if not may_send(None, data):  # an extension packet: each connection's own rule
            for conn in conns:
                conn.send_now(data)
            return len(conns)
        return send_now_to_each(conns, data, self.fanout_helpers if shared else None)

    def __init__(self, ctx: MsgContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx = ctx
        self.connection_ids = ConnectionIds()
        #: Threads that share a large presence batch's sends (``msg.fanout_threads``);
        #: the msg service sets them at start and stops them.
        self.fanout_helpers: FanoutHelpers | None = None
        #: Set by the msg service at start, once the store is known.
        self.realm: LoginRealm | None = None
