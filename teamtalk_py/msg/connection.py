"""``MsgConnection``: one client TCP connection to the msg service.

It frames and dispatches (through ``PduProtocol``) and remembers who is logged in on it;
everything else is done by the handlers in ``teamtalk_py.msg.handlers`` and the domain
objects of the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.python.failure import Failure

from teamtalk_py.pb.IM import BaseDefine_pb2
from teamtalk_py.wire import PduFactory, PduProtocol

if TYPE_CHECKING:
    from teamtalk_py.msg.service import MsgService


def is_mobile(client_type: int) -> bool:
    """Clients are PC (Windows, Mac) or mobile (iOS, Android) by bit 0x10."""
    return bool(client_type & 0x10)


class MsgConnection(PduProtocol):
    factory: MsgFactory

    # Defaults live on the class; see PduProtocol for why.
    user_id = 0
    login_name = ""
    client_type = BaseDefine_pb2.CLIENT_TYPE_WINDOWS
    client_version = ""
    online_status = BaseDefine_pb2.USER_STATUS_ONLINE
    login_requested = False
    #: Unix seconds of the successful login (0 before).
    logged_in_at = 0
    kicked = False
    _rate_second = -1
    _rate_count = 0

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

    def take_message_token(self, per_second: int) -> bool:
        """Count one message against this second's allowance; False when it is used up."""
        second = int(self.factory.clock.seconds())
        if second != self._rate_second:
            self._rate_second, self._rate_count = second, 0
        self._rate_count += 1
        return self._rate_count <= per_second

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        self.service.connection_closed(self)


class MsgFactory(PduFactory):
    protocol = MsgConnection

    def __init__(self, service: MsgService, **kwargs) -> None:
        super().__init__(**kwargs)
        self.service = service
