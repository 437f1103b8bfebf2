"""File commands on the msg side (commands.md §2.1.12): request a transfer, list, offer and
withdraw offline files.

The msg node never touches file data. For a request it decides the mode (an online
request to a receiver with no PC client online anywhere becomes offline, as in the
reference), asks a file service for a task (``service.files``, see ``file_link``), answers
the sender with the task id and the file service's client addresses, and tells the
receiver. Offline records live in the store (``teamtalk_py.store.files``).

Beyond the reference: an add-offline must name a finished upload of this sender to this
receiver when the file service recorded one, and a del-offline only works for the file's
sender or receiver; the withdrawn file itself is deleted by the file service's sweep.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2, Server_pb2
from teamtalk_py.store import files as offline_files
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import encode

log = Logger(namespace="teamtalk.msg.files")


def _file_servers(service: Any) -> Any:
    return getattr(service, "files", None)


def _add_addresses(target: Any, addresses: list[tuple[str, int]]) -> None:
    for host, port in addresses:
        target.add(ip=host, port=port)


async def _receiver_has_pc_online(service: Any, user_id: int) -> bool:
    """The reference's test: a PC client of the receiver is online on some node."""
    user = service.online.get(user_id)
    if user is not None and user.pc_online_anywhere:
        return True
    statuses = await service.route.users_status([user_id])
    return any(uid == user_id and status == B.USER_STATUS_ONLINE for uid, status in statuses)


def notify_receiver(service: Any, notify: File_pb2.IMFileNotify) -> None:
    """Local PC connections of the receiver, and route (remote nodes tell every device)."""
    pdu = encode(B.CID_FILE_NOTIFY, notify)
    user = service.online.get(notify.to_user_id)
    if user is not None:
        for conn in user.pc_connections():
            conn.send_raw(pdu)
    service.route.relay(pdu, [notify.to_user_id])


async def handle_file_request(conn: MsgConnection, request: Request) -> None:
    req: File_pb2.IMFileReq = request.message
    service = conn.service
    answer = File_pb2.IMFileRsp(
        result_code=1,
        from_user_id=conn.user_id,
        to_user_id=req.to_user_id,
        file_name=req.file_name,
        task_id="",
        trans_mode=req.trans_mode,
    )
    reason = None
    if req.to_user_id == conn.user_id:
        reason = "a file to yourself"
    elif not await service.user_exists(req.to_user_id):
        reason = f"unknown user {req.to_user_id}"
    mode = req.trans_mode
    if reason is None and mode == B.FILE_TYPE_ONLINE:
        if not await _receiver_has_pc_online(service, req.to_user_id):
            mode = B.FILE_TYPE_OFFLINE
    servers = _file_servers(service)
    server = servers.pick() if servers is not None and reason is None else None
    if reason is None and server is None:
        reason = "no file service available"
    if reason is not None:
        log.info(
            "file request {from_id} -> {to_id} refused: {reason}",
            from_id=conn.user_id,
            to_id=req.to_user_id,
            reason=reason,
        )
        conn.send(B.CID_FILE_RESPONSE, answer, request.seq)
        return
    transfer = Server_pb2.IMFileTransferReq(
        from_user_id=conn.user_id,
        to_user_id=req.to_user_id,
        file_name=req.file_name,
        file_size=req.file_size,
        trans_mode=mode,
    )
    try:
        created = await server.transfer(transfer)
    except Exception as e:
        log.info("file service did not create a task: {error}", error=str(e))
        conn.send(B.CID_FILE_RESPONSE, answer, request.seq)
        return
    addresses = server.addresses()
    answer.result_code = created.result_code
    answer.task_id = created.task_id
    answer.trans_mode = mode
    if created.result_code == 0:
        _add_addresses(answer.ip_addr_list, addresses)
    conn.send(B.CID_FILE_RESPONSE, answer, request.seq)
    if created.result_code != 0:
        return
    notify = File_pb2.IMFileNotify(
        from_user_id=conn.user_id,
        to_user_id=req.to_user_id,
        file_name=req.file_name,
        file_size=req.file_size,
        task_id=created.task_id,
        trans_mode=mode,
        offline_ready=0,
    )
    _add_addresses(notify.ip_addr_list, addresses)
    notify_receiver(service, notify)


async def handle_has_offline(conn: MsgConnection, request: Request) -> None:
    service = conn.service
    rows = await service.store.read(offline_files.offered_to, conn.user_id)
    answer = File_pb2.IMFileHasOfflineRsp(user_id=conn.user_id)
    for row in rows:
        answer.offline_file_list.add(
            from_user_id=row.from_id,
            task_id=row.task_id,
            file_name=row.file_name,
            file_size=row.file_size,
        )
    servers = _file_servers(service)
    server = servers.pick() if servers is not None else None
    if server is not None:
        _add_addresses(answer.ip_addr_list, server.addresses())
    conn.send(B.CID_FILE_HAS_OFFLINE_RES, answer, request.seq)


async def handle_add_offline(conn: MsgConnection, request: Request) -> None:
    """The sender finished an upload: offer it to the receiver (no answer exists)."""
    req: File_pb2.IMFileAddOfflineReq = request.message
    service = conn.service
    row = await service.store.write(
        offline_files.offer,
        req.task_id,
        conn.user_id,
        req.to_user_id,
        req.file_name,
        req.file_size,
        now=service.now(),
    )
    if row is None:
        log.info(
            "add-offline of {task_id} by {user_id} ignored: not a finished upload of theirs",
            task_id=req.task_id,
            user_id=conn.user_id,
        )
        return
    servers = _file_servers(service)
    server = servers.pick() if servers is not None else None
    if server is None:
        return
    notify = File_pb2.IMFileNotify(
        from_user_id=row.from_id,
        to_user_id=row.to_id,
        file_name=row.file_name,
        file_size=row.file_size,
        task_id=row.task_id,
        trans_mode=B.FILE_TYPE_OFFLINE,
        offline_ready=1,
    )
    _add_addresses(notify.ip_addr_list, server.addresses())
    notify_receiver(service, notify)


async def handle_del_offline(conn: MsgConnection, request: Request) -> None:
    """Withdraw an offline file (its sender or receiver only); no answer exists."""
    req: File_pb2.IMFileDelOfflineReq = request.message
    service = conn.service
    removed = await service.store.write(
        offline_files.withdraw,
        req.task_id,
        req.from_user_id,
        req.to_user_id,
        conn.user_id,
        now=service.now(),
    )
    if not removed:
        log.info(
            "del-offline of {task_id} by {user_id} matched nothing of theirs",
            task_id=req.task_id,
            user_id=conn.user_id,
        )


FILE_HANDLERS = {
    B.CID_FILE_REQUEST: handle_file_request,
    B.CID_FILE_HAS_OFFLINE_REQ: handle_has_offline,
    B.CID_FILE_ADD_OFFLINE_REQ: handle_add_offline,
    B.CID_FILE_DEL_OFFLINE_REQ: handle_del_offline,
}
