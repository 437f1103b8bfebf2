"""The msg service's command tables: one handler per command id.

``build_table`` is what a client connection dispatches through; ``build_route_table`` is
what packets from the route service dispatch through. To add a command, write the handler
in the module of its topic (session, buddy, intake, chat, groups, extension, rooms) and register
it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from teamtalk_py.msg import buddy, chat, extension, files, group_handlers, session
from teamtalk_py.msg.contacts_handlers import CONTACTS_HANDLERS
from teamtalk_py.msg.extension import EXTENSION_HANDLERS
from teamtalk_py.msg.files import FILE_HANDLERS
from teamtalk_py.msg.from_route import RELAYED_AS_IS, ROUTE_HANDLERS
from teamtalk_py.msg.group_handlers import GROUP_HANDLERS
from teamtalk_py.msg.room_handlers import ROOM_HANDLERS, ROOM_ROUTE_HANDLERS
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Extension_pb2 as X
from teamtalk_py.wire import CommandTable, echo_heartbeat
from teamtalk_py.wire.protocol import Handler, Refusal

if TYPE_CHECKING:
    from teamtalk_py.msg.connection import MsgConnection
    from teamtalk_py.msg.context import MsgContext

#: Error answers for requests with a string that is not UTF-8 or longer than its column
#: (``protocol/strings.py``); commands not listed have no error answer in the protocol
#: (device token, offline-file add and delete, P2P commands): those are dropped, logged.
REFUSALS: dict[int, Refusal[MsgConnection]] = {
    B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST: buddy.refuse_change_avatar,
    B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST: buddy.refuse_change_sign_info,
    B.CID_GROUP_CREATE_REQUEST: group_handlers.refuse_create,
    B.CID_FILE_REQUEST: files.refuse_file_request,
    # teamtalk_py's extension: the answer with EXT_RESULT_BAD_REQUEST
    **{
        command_id: extension.refuse_bad_request
        for command_id in (
            X.CID_EXT_HELLO_REQ,
            X.CID_EXT_USER_SEARCH_REQ,
            X.CID_EXT_FRIEND_REQUEST_REQ,
            X.CID_EXT_FRIEND_ANSWER_REQ,
        )
    },
}


def build_table() -> CommandTable[MsgConnection]:
    table: CommandTable[MsgConnection] = CommandTable()
    table.register(B.CID_OTHER_HEARTBEAT, echo_heartbeat, before_login=True, decode=False)
    table.register(
        B.CID_LOGIN_REQ_USERLOGIN,
        session.handle_login,
        before_login=True,
        refuse=session.refuse_login,
    )
    # Receivers' delivery acks change nothing here, so their bodies are not even parsed.
    table.register(B.CID_MSG_DATA_ACK, chat.handle_msg_data_ack, decode=False)
    handlers: dict[int, Handler[MsgConnection]] = {
        # login service
        B.CID_LOGIN_REQ_LOGINOUT: session.handle_logout,
        B.CID_LOGIN_REQ_KICKPCCLIENT: session.handle_kick_pc_client,
        B.CID_LOGIN_REQ_DEVICETOKEN: session.handle_device_token,
        B.CID_LOGIN_REQ_PUSH_SHIELD: session.handle_push_shield,
        B.CID_LOGIN_REQ_QUERY_PUSH_SHIELD: session.handle_query_push_shield,
        # buddy list
        B.CID_BUDDY_LIST_ALL_USER_REQUEST: buddy.handle_all_users,
        B.CID_BUDDY_LIST_DEPARTMENT_REQUEST: buddy.handle_departments,
        B.CID_BUDDY_LIST_USER_INFO_REQUEST: buddy.handle_user_info,
        B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST: buddy.handle_recent_sessions,
        B.CID_BUDDY_LIST_REMOVE_SESSION_REQ: buddy.handle_remove_session,
        B.CID_BUDDY_LIST_USERS_STATUS_REQUEST: buddy.handle_users_status,
        B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST: buddy.handle_change_avatar,
        B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST: buddy.handle_change_sign_info,
        # messages
        B.CID_MSG_DATA: chat.handle_msg_data,
        B.CID_MSG_READ_ACK: chat.handle_read_ack,
        B.CID_MSG_TIME_REQUEST: chat.handle_time,
        B.CID_MSG_UNREAD_CNT_REQUEST: chat.handle_unread_count,
        B.CID_MSG_LIST_REQUEST: chat.handle_msg_list,
        B.CID_MSG_GET_LATEST_MSG_ID_REQ: chat.handle_latest_msg_id,
        B.CID_MSG_GET_BY_MSG_ID_REQ: chat.handle_msg_by_id,
        B.CID_SWITCH_P2P_CMD: chat.handle_p2p,
        # groups
        **GROUP_HANDLERS,
        # files
        **FILE_HANDLERS,
        # teamtalk_py's extension (docs/EXTENSION.md)
        **EXTENSION_HANDLERS,
        **ROOM_HANDLERS,
        **CONTACTS_HANDLERS,
    }
    for command_id, handler in handlers.items():
        table.register(command_id, handler, refuse=REFUSALS.get(command_id))
    return table


def build_route_table() -> CommandTable[MsgContext]:
    table: CommandTable[MsgContext] = CommandTable()
    for command_id, handler in {**ROUTE_HANDLERS, **ROOM_ROUTE_HANDLERS}.items():
        table.register(command_id, handler, decode=command_id not in RELAYED_AS_IS)
    return table
