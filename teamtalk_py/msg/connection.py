"""``MsgConnection``: one client TCP connection to the msg service.

It frames and dispatches (through ``PduProtocol``) and remembers who is logged in on it;
everything else is done by the handlers in ``teamtalk_py.msg.handlers`` and the domain
objects of the service.
"""

from __future__ import annotations

import itertools
import math
import secrets
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from teamtalk_py.msg.limits import RefusalBudget
from teamtalk_py.pb.IM import BaseDefine_pb2
from teamtalk_py.wire import PduFactory, PduProtocol

if TYPE_CHECKING:
    from teamtalk_py.msg.service import MsgService


def is_mobile(client_type: int) -> bool:
    """Clients are PC (Windows, Mac) or mobile (iOS, Android) by bit 0x10."""
    return bool(client_type & 0x10)


class ConnectionIds:
    """Connection ids unique in a cluster: a random id of this process run in the high
    31 bits, a counter below. The send facts name connections by them
    (``store/resends.py``), and ``is_this_run`` tells whether a stored message came
    through this very process."""

    def __init__(self, run_id: int | None = None) -> None:
        self.run_id = secrets.randbits(31) if run_id is None else run_id
        self._serials = itertools.count(1)

    def next(self) -> int:
        return self.run_id << 32 | next(self._serials)

    def is_this_run(self, connection_id: int) -> bool:
        return connection_id >> 32 == self.run_id


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
    #: Set when the connection is made (``ConnectionIds``).
    connection_id = 0
    #: Until when a message of this connection may be a resend (``intake.py``).
    resends_possible_until: float = math.inf
    resend_check_started = False

    @property
    def service(self) -> MsgService:
        return self.factory.service

    @property
    def is_mobile(self) -> bool:
        return is_mobile(self.client_type)

    @property
    def idle_timeout(self) -> float:  # type: ignore[override]
        config = self.service.config.msg
        return config.mobile_idle_timeout if self.is_mobile else config.pc_idle_timeout

    @property
    def login_deadline(self) -> float:  # type: ignore[override]
        return self.service.config.msg.login_deadline

    def limit_refused(self) -> None:
        """One request was refused for a limit (``msg/limits.py``): read nothing more
        from this connection for one message interval, and close a connection that keeps
        exceeding its limits once the refusal's answer has been written."""
        clock = self.factory.clock
        now = clock.seconds()
        config = self.service.config.msg
        if self._limit_pause is None:
            self.hold_input("limit")
            pause = min(1.0 / config.message_rate, 0.25) if config.message_rate > 0 else 0.05
            self._limit_pause = clock.callLater(pause, self._limit_pause_over)
        if self._refusals is None:
            self._refusals = RefusalBudget(config.max_refusals, now)
        if not self._refusals.spend(now) and not (self.closing or self._over_budget):
            self._over_budget = True
            self.service.connections_closed_for_limits += 1
            self.factory.clock.callLater(0, self.close, "keeps exceeding its limits")

    def _limit_pause_over(self) -> None:
        self._limit_pause = None
        self.release_input("limit")

    def connectionMade(self) -> None:
        super().connectionMade()
        self.connection_id = self.factory.connection_ids.next()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        if self._limit_pause is not None:
            self._limit_pause.cancel()
            self._limit_pause = None
        self.service.connection_closed(self)


class MsgFactory(PduFactory):
    protocol = MsgConnection

    def __init__(self, service: MsgService, **kwargs) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.connection_ids = ConnectionIds()
