"""File commands on the msg side (commands.md §2.1.12): request a transfer, list, offer and
withdraw offline files.

The msg node never touches file data. For a request it decides the mode (an online
request to a receiver with no PC client online anywhere becomes offline, as in the
reference), asks a file service for a task (``ctx.files``, see ``file_link``), answers
the sender with the task id and the file service's client addresses, and tells the
receiver. Offline records live in the store (``teamtalk_py.store.files``).

Beyond the reference: an add-offline must name a finished upload of this sender to this
receiver when the file service recorded one, and a del-offline only works for the file's
sender or receiver; the withdrawn file itself is deleted by the file service's sweep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import File_pb2, Server_pb2
from teamtalk_py.store import files as offline_files
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import Handler, encode

if TYPE_CHECKING:
    from teamtalk_py.msg.context import MsgContext

log = Logger(namespace="teamtalk.msg.files")


def _add_addresses(target: Any, addresses: list[tuple[str, int]]) -> None:
    for host, port in addresses:
        target.add(ip=host, port=port)


async def _receiver_has_pc_online(ctx: MsgContext, user_id: int) -> bool:
    """The reference's test: a PC client of the receiver is online on some node."""
    user = ctx.online.get(user_id)
    if user is not None and user.pc_online_anywhere:
        return True
    statuses = await ctx.route.users_status([user_id])
    return any(uid == user_id and status == B.USER_STATUS_ONLINE for uid, status in statuses)


def user_addresses(ctx: MsgContext, user_id: int) -> list[str]:
    """The addresses of ``user_id``'s connections on this node."""
    return sorted({conn.peer_host for conn in ctx.online.connections_of(user_id)})


async def permit_file_login(ctx: MsgContext, task_id: str, user_id: int) -> None:
    """Let ``user_id`` log in to ``task_id`` from the addresses of their connections here
    (file/permits.py), before they are told of it."""
    await ctx.files.permit(task_id, user_id, user_addresses(ctx, user_id))


async def notify_receiver(ctx: MsgContext, notify: File_pb2.IMFileNotify) -> None:
    """Local PC connections of the receiver, and route (remote nodes tell every device,
    each after its own permit: ``from_route.file_notify``)."""
    pdu = encode(B.CID_FILE_NOTIFY, notify)
    user = ctx.online.get(notify.to_user_id)
    if user is not None:
        await permit_file_login(ctx, notify.task_id, notify.to_user_id)
        for conn in user.pc_connections():
            conn.send_raw(pdu)
    ctx.route.relay(pdu, [notify.to_user_id])


def refuse_file_request(conn: MsgConnection, request: Request) -> None:
    """A file name that is not UTF-8 or too long: result 1, no task."""
    req: File_pb2.IMFileReq = request.message
    conn.send(
        B.CID_FILE_RESPONSE,
        File_pb2.IMFileRsp(
            result_code=1,
            from_user_id=conn.user_id,
            to_user_id=req.to_user_id,
            file_name="",
            task_id="",
            trans_mode=req.trans_mode,
        ),
        request.seq,
    )


async def handle_file_request(conn: MsgConnection, request: Request) -> None:
    req: File_pb2.IMFileReq = request.message
    ctx = conn.ctx
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
    elif not await ctx.user_exists(req.to_user_id):
        reason = f"unknown user {req.to_user_id}"
    mode = req.trans_mode
    if reason is None and mode == B.FILE_TYPE_ONLINE:
        if not await _receiver_has_pc_online(ctx, req.to_user_id):
            mode = B.FILE_TYPE_OFFLINE
    server = ctx.files.pick() if reason is None else None
    if reason is None and server is None:
        reason = "no file service available"
    if reason is not None or server is None:
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
        try:
            await server.permit(created.task_id, conn.user_id, user_addresses(ctx, conn.user_id))
        except Exception as e:
            log.info("file service took no login permit for the sender: {error}", error=str(e))
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
    await notify_receiver(ctx, notify)


async def handle_has_offline(conn: MsgConnection, request: Request) -> None:
    ctx = conn.ctx
    rows = await ctx.store.read(offline_files.offered_to, conn.user_id)
    answer = File_pb2.IMFileHasOfflineRsp(user_id=conn.user_id)
    for row in rows:
        answer.offline_file_list.add(
            from_user_id=row.from_id,
            task_id=row.task_id,
            file_name=row.file_name,
            file_size=row.file_size,
        )
    server = ctx.files.pick()
    if server is not None:
        _add_addresses(answer.ip_addr_list, server.addresses())
    for row in rows:
        await permit_file_login(ctx, row.task_id, conn.user_id)
    conn.send(B.CID_FILE_HAS_OFFLINE_RES, answer, request.seq)


async def handle_add_offline(conn: MsgConnection, request: Request) -> None:
    """The sender finished an upload: offer it to the receiver (no answer exists)."""
    req: File_pb2.IMFileAddOfflineReq = request.message
    ctx = conn.ctx
    row = await ctx.store.write(
        offline_files.offer,
        req.task_id,
        conn.user_id,
        req.to_user_id,
        req.file_name,
        req.file_size,
        now=ctx.now(),
    )
    if row is None:
        log.info(
            "add-offline of {task_id} by {user_id} ignored: not a finished upload of theirs",
            task_id=req.task_id,
            user_id=conn.user_id,
        )
        return
    server = ctx.files.pick()
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
    await notify_receiver(ctx, notify)


async def handle_del_offline(conn: MsgConnection, request: Request) -> None:
    """Withdraw an offline file (its sender or receiver only); no answer exists."""
    req: File_pb2.IMFileDelOfflineReq = request.message
    ctx = conn.ctx
    removed = await ctx.store.write(
        offline_files.withdraw,
        req.task_id,
        req.from_user_id,
        req.to_user_id,
        conn.user_id,
        now=ctx.now(),
    )
    if not removed:
        log.info(
            "del-offline of {task_id} by {user_id} matched nothing of theirs",
            task_id=req.task_id,
            user_id=conn.user_id,
        )


FILE_HANDLERS: dict[int, Handler[MsgConnection]] = {
    B.CID_FILE_REQUEST: handle_file_request,
    B.CID_FILE_HAS_OFFLINE_REQ: handle_has_offline,
    B.CID_FILE_ADD_OFFLINE_REQ: handle_add_offline,
    B.CID_FILE_DEL_OFFLINE_REQ: handle_del_offline,
}
