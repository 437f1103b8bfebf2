"""What a msg node does with packets the route service sends it (commands.md §2.1.15).

Each handler takes ``(service, header, pdu, message)``: the service, the decoded header,
the raw PDU (relayed verbatim where the reference does) and the decoded body.
"""

from __future__ import annotations

from teamtalk_py.msg.session import kick_duplicate
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2
from teamtalk_py.protocol.header import with_seq
from teamtalk_py.wire.protocol import encode


def status_notify(service, header, pdu: bytes, message) -> None:
    """Presence changes go to every PC connection here; mobiles never get them."""
    service.online.send_to_all(pdu, pc_only=True)


def pc_login_status(service, header, pdu: bytes, message) -> None:
    user = service.online.get(message.user_id)
    if user is None:
        return
    user.pc_online_anywhere = message.login_status == 1
    notify = encode(
        B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY,
        Buddy_pb2.IMPCLoginStatusNotify(
            user_id=message.user_id,
            login_stat=B.USER_STATUS_ONLINE if message.login_status == 1 else B.USER_STATUS_OFFLINE,
        ),
    )
    for conn in user.mobile_connections():
        conn.send_raw(notify)


def server_kick(service, header, pdu: bytes, message) -> None:
    kick_duplicate(service, message.user_id, message.client_type, message.reason)


def to_all_users(service, header, pdu: bytes, message) -> None:
    """Signature and avatar changes reach every connection of every user."""
    service.online.send_to_all(pdu)


def to_reader(service, header, pdu: bytes, message) -> None:
    service.online.send_to_users([message.user_id], pdu)


def single_message(service, header, pdu: bytes, message) -> None:
    if message.msg_type in (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO):
        return service.groups.deliver_from_route(message)
    service.online.send_to_users((message.to_session_id, message.from_user_id), with_seq(pdu, 0))


def p2p(service, header, pdu: bytes, message) -> None:
    service.online.send_to_users((message.from_user_id, message.to_user_id), pdu)


def group_change_notify(service, header, pdu: bytes, message) -> None:
    """Members changed on another node: drop our cached list, tell each user once."""
    service.groups.forget(message.group_id)
    users = dict.fromkeys((*message.chg_user_id_list, *message.cur_user_id_list))
    service.online.send_to_users(users, pdu)


def file_notify(service, header, pdu: bytes, message) -> None:
    service.online.send_to_users([message.to_user_id], pdu)


ROUTE_HANDLERS = {
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
}
