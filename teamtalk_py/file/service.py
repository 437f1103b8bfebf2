"""The file service's client listener.

Task creation, file login and the pull protocol belong to the file-transfer issue; for
now the listener accepts clients, echoes heartbeats and enforces the idle timeout.
"""

from __future__ import annotations

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.services import TeamTalkService
from teamtalk_py.wire import CommandTable, PduFactory, PduProtocol, echo_heartbeat


class FileClientConnection(PduProtocol):
    """A client connection to the file service; idle after 120 s (wire.md §7)."""

    idle_timeout = 120.0


def build_table() -> CommandTable:
    table = CommandTable()
    table.register(B.CID_OTHER_HEARTBEAT, echo_heartbeat, before_login=True, decode=False)
    return table


class FileService(TeamTalkService):
    name = "file"

    def __init__(self, reactor, config) -> None:
        super().__init__(reactor, config)
        self.factory = PduFactory(clock=reactor, table=build_table())
        self.factory.protocol = FileClientConnection

    async def start(self) -> None:
        await self.listen(self.config.file.listen, self.factory)
