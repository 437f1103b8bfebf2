"""The msg service's command table: one handler per client command id.

To add a command: write ``def handle_x(conn, request)`` (sync, or ``async``) in the module
that owns its topic and register it in ``build_table`` below.
"""

from __future__ import annotations

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.wire import CommandTable, echo_heartbeat


def build_table() -> CommandTable:
    table = CommandTable()
    table.register(B.CID_OTHER_HEARTBEAT, echo_heartbeat, before_login=True, decode=False)
    return table
