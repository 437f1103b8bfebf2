"""What a msg node does with packets the route service sends it (commands.md §2.1.15).

They come through the same ``wire.dispatch`` as a client's packets, decode checks
included, and each handler has the same signature: ``handler(ctx, request)``, where
``ctx`` is the node's ``MsgContext`` (``context.py``: what a client's handler reaches as
``conn.ctx``), ``request.pdu`` is the raw PDU (relayed verbatim where the reference does) and
``request.message`` the decoded body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from teamtalk_py.msg.extension import user_relay_from_route
from teamtalk_py.msg.files import permit_file_login
from teamtalk_py.msg.relay_tag import take_tag
from teamtalk_py.msg.session import kick_duplicate
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import (
    Buddy_pb2,
    File_pb2,
    Group_pb2,
    Message_pb2,
    Server_pb2,
    SwitchService_pb2,
)
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.protocol.header import with_seq
from teamtalk_py.wire.protocol import Handler, Request, encode

if TYPE_CHECKING:
    from teamtalk_py.msg.context import MsgContext


def status_notify(ctx: MsgContext, request: Request) -> None:
    """Presence changes go to every PC connection here (batched per reactor turn:
    ``PresenceBatch``); mobiles never get them."""
    ctx.presence.add(request.pdu)


def pc_login_status(ctx: MsgContext, request: Request) -> None:
    message: Server_pb2.IMServerPCLoginStatusNotify = request.message
    user = ctx.online.set_pc_online_anywhere(message.user_id, message.login_status == 1)
    if user is None:
        return
    mobiles = user.mobile_connections()
    if not mobiles:
        return  # every PC login announces itself here: nothing to build for nobody
    notify = encode(
        B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY,
        Buddy_pb2.IMPCLoginStatusNotify(
            user_id=message.user_id,
            login_stat=B.USER_STATUS_ONLINE if message.login_status == 1 else B.USER_STATUS_OFFLINE,
        ),
    )
    for conn in mobiles:
        conn.send_raw(notify)


def server_kick(ctx: MsgContext, request: Request) -> None:
    message: Server_pb2.IMServerKickUser = request.message
    kick_duplicate(ctx, message.user_id, message.client_type, message.reason)


def to_all_users(ctx: MsgContext, request: Request) -> None:
    """Signature and avatar changes reach every connection of every user."""
    ctx.online.send_to_all(request.pdu)


def to_reader(ctx: MsgContext, request: Request) -> None:
    message: Message_pb2.IMMsgDataReadNotify | Buddy_pb2.IMRemoveSessionNotify = request.message
    ctx.online.send_to_users([message.user_id], request.pdu)


def single_message(ctx: MsgContext, request: Request) -> object:
    """A message stored on another node. Its relay tag says where it was stored; the
    catch-up (``catch_up.py``) remembers it, or drops it when it already brought that
    range up to date from the store."""
    message: Message_pb2.IMMsgData = request.message
    tagged = message.HasField("attach_data")
    origin, version = take_tag(message)
    if ctx.catch_up is not None and not ctx.catch_up.live(origin):
        return None
    if message.msg_type in (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO):
        return ctx.groups.deliver_from_route(message, version)
    pdu = encode(B.CID_MSG_DATA, message) if tagged else with_seq(request.pdu, 0)
    ctx.online.send_to_users((message.to_session_id, message.from_user_id), pdu)
    return None


def p2p(ctx: MsgContext, request: Request) -> None:
    message: SwitchService_pb2.IMP2PCmdMsg = request.message
    ctx.online.send_to_users((message.from_user_id, message.to_user_id), request.pdu)


def group_change_notify(ctx: MsgContext, request: Request) -> None:
    """Members changed on another node: drop our cached list, tell each user once."""
    message: Group_pb2.IMGroupChangeMemberNotify = request.message
    ctx.groups.forget(message.group_id)
    users = dict.fromkeys((*message.chg_user_id_list, *message.cur_user_id_list))
    ctx.online.send_to_users(users, request.pdu)


async def file_notify(ctx: MsgContext, request: Request) -> None:
    """A file notify for a user here: their file logins are permitted from here first."""
    message: File_pb2.IMFileNotify = request.message
    await permit_file_login(ctx, message.task_id, message.to_user_id)
    ctx.online.send_to_users([message.to_user_id], request.pdu)


ROUTE_HANDLERS: dict[int, Handler[MsgContext]] = {
    B.CID_BUDDY_LIST_STATUS_NOTIFY: status_notify,
    B.CID_OTHER_LOGIN_STATUS_NOTIFY: pc_login_status,
    B.CID_OTHER_SERVER_KICK_USER: server_kick,
    B.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY: to_all_users,
    B.CID_BUDDY_LIST_AVATAR_CHANGED_NOTIFY: to_all_users,
    B.CID_MSG_READ_NOTIFY: to_reader,
    B.CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY: to_reader,
    B.CID_MSG_DATA: single_message,
    B.CID_SWITCH_P2P_CMD: p2p,
    B.CID_GROUP_CHANGE_MEMBER_NOTIFY: group_change_notify,
    B.CID_FILE_NOTIFY: file_notify,
    X.CID_EXT_USER_RELAY: user_relay_from_route,
}

#: Handlers that relay the PDU as it is and never read its body: not decoded.
RELAYED_AS_IS = frozenset(
    {
        B.CID_BUDDY_LIST_STATUS_NOTIFY,
        B.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY,
        B.CID_BUDDY_LIST_AVATAR_CHANGED_NOTIFY,
    }
)
