"""The file service's command tables: one for clients, one for msg nodes.

Client commands (commands.md §2.5.1): heartbeat (echoed), file login, state, pull request
and pull response; the work is done by ``FileTransfers``. Internal commands from msg
nodes: heartbeat (echoed), the client address list, and task creation.
"""

from __future__ import annotations

from teamtalk_py.file.connection import FileClientConnection, FileInternalConnection
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.pb.IM import File_pb2, Server_pb2
from teamtalk_py.wire import CommandTable, Request, echo_heartbeat

# -- clients ---------------------------------------------------------------------------


async def handle_login(conn: FileClientConnection, request: Request) -> None:
    await conn.transfers.login(conn, request.seq, request.message)


def handle_state(conn: FileClientConnection, request: Request) -> None:
    conn.transfers.state_received(conn, request)


def handle_pull_request(conn: FileClientConnection, request: Request) -> None:
    conn.transfers.pull_request(conn, request)


def handle_pull_response(conn: FileClientConnection, request: Request) -> None:
    conn.transfers.pull_response(conn, request)


# Error answers for requests whose task id is not UTF-8 or too long (protocol/strings.py).


def refuse_login(conn: FileClientConnection, request: Request) -> None:
    conn.send(B.CID_FILE_LOGIN_RES, File_pb2.IMFileLoginRsp(result_code=1, task_id=""), request.seq)
    conn.close("file login refused: invalid task id")


def refuse_pull_request(conn: FileClientConnection, request: Request) -> None:
    req: File_pb2.IMFilePullDataReq = request.message
    answer = File_pb2.IMFilePullDataRsp(
        result_code=1, task_id="", user_id=req.user_id, offset=req.offset, file_data=b""
    )
    conn.send(B.CID_FILE_PULL_DATA_RSP, answer, request.seq)


def refuse_by_closing(conn: FileClientConnection, request: Request) -> None:
    """A state or a data block for a task id no task can have: the protocol has no
    answer, and the connection is no transfer's (a state closes it in every case)."""
    conn.close("invalid task id")


def build_client_table() -> CommandTable[FileClientConnection]:
    table: CommandTable[FileClientConnection] = CommandTable()
    table.register(B.CID_OTHER_HEARTBEAT, echo_heartbeat, before_login=True, decode=False)
    table.register(B.CID_FILE_LOGIN_REQ, handle_login, before_login=True, refuse=refuse_login)
    table.register(B.CID_FILE_STATE, handle_state, refuse=refuse_by_closing)
    table.register(B.CID_FILE_PULL_DATA_REQ, handle_pull_request, refuse=refuse_pull_request)
    table.register(B.CID_FILE_PULL_DATA_RSP, handle_pull_response, refuse=refuse_by_closing)
    return table


# -- msg nodes -------------------------------------------------------------------------


def handle_server_ip(conn: FileInternalConnection, request: Request) -> None:
    """The addresses clients should use for this file service."""
    answer = Server_pb2.IMFileServerIPRsp()
    for host, port in conn.factory.service.client_addresses():
        answer.ip_addr_list.add(ip=host, port=port)
    conn.send(B.CID_OTHER_FILE_SERVER_IP_RSP, answer, request.seq)


async def handle_transfer_request(conn: FileInternalConnection, request: Request) -> None:
    answer = await conn.factory.service.transfer_request(request.message)
    conn.send(B.CID_OTHER_FILE_TRANSFER_RSP, answer, request.seq)


async def handle_login_permit(conn: FileInternalConnection, request: Request) -> None:
    """Where a user may log in to a task from (file/permits.py); answered once recorded."""
    req: X.IMExtFileLoginPermitReq = request.message
    await conn.factory.service.permit(req.task_id, req.user_id, list(req.addresses))
    conn.send(
        X.CID_EXT_FILE_LOGIN_PERMIT_RSP,
        X.IMExtFileLoginPermitRsp(task_id=req.task_id),
        request.seq,
    )


def build_internal_table() -> CommandTable[FileInternalConnection]:
    table: CommandTable[FileInternalConnection] = CommandTable()
    table.register(B.CID_OTHER_HEARTBEAT, echo_heartbeat, decode=False)
    table.register(X.CID_EXT_FILE_LOGIN_PERMIT_REQ, handle_login_permit)
    table.register(B.CID_OTHER_FILE_SERVER_IP_REQ, handle_server_ip)
    table.register(B.CID_OTHER_FILE_TRANSFER_REQ, handle_transfer_request)
    return table
