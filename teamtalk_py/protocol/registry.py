"""Which protobuf message each TeamTalk command carries.

``COMMANDS`` maps a command id (the header's ``command_id``) to a :class:`Command`: its
service id, its enum name and the generated message class of its body. The table follows
Part 1 of ``shared/protocol/commands.md``, including the server-to-server ``SID_OTHER``
commands. Every number comes from the generated enums in ``BaseDefine_pb2``; command ids
are unique across services, so the command id alone is the key.

teamtalk_py's own opt-in extension (``SID_EXTENSION``, ``proto/IM.Extension.proto``,
``docs/EXTENSION.md``) is registered here too, with its numbers from ``Extension_pb2``;
its command ids (0x1000-0x10ff) cannot collide with TeamTalk's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from teamtalk_py.pb.IM import (
    BaseDefine_pb2 as B,
)
from teamtalk_py.pb.IM import (
    Buddy_pb2,
    File_pb2,
    Group_pb2,
    Login_pb2,
    Message_pb2,
    Other_pb2,
    Server_pb2,
    SwitchService_pb2,
)
from teamtalk_py.pb.IM import (
    Extension_pb2 as X,
)

__all__ = ["COMMANDS", "Command", "command", "message_class", "name_of", "service_of"]


@dataclass(frozen=True, slots=True)
class Command:
    """One command: where it lives in the header and what its body is."""

    service_id: int
    command_id: int
    name: str
    message: type[Message]


_MessageTable = tuple[tuple[int, type[Message]], ...]

# (service id, the enum of its command ids, (command id, body message class) ...)
_SERVICES: tuple[tuple[int, EnumDescriptor, _MessageTable], ...] = (
    (
        B.SID_LOGIN,
        B.LoginCmdID.DESCRIPTOR,
        (
            (B.CID_LOGIN_REQ_MSGSERVER, Login_pb2.IMMsgServReq),
            (B.CID_LOGIN_RES_MSGSERVER, Login_pb2.IMMsgServRsp),
            (B.CID_LOGIN_REQ_USERLOGIN, Login_pb2.IMLoginReq),
            (B.CID_LOGIN_RES_USERLOGIN, Login_pb2.IMLoginRes),
            (B.CID_LOGIN_REQ_LOGINOUT, Login_pb2.IMLogoutReq),
            (B.CID_LOGIN_RES_LOGINOUT, Login_pb2.IMLogoutRsp),
            (B.CID_LOGIN_KICK_USER, Login_pb2.IMKickUser),
            (B.CID_LOGIN_REQ_DEVICETOKEN, Login_pb2.IMDeviceTokenReq),
            (B.CID_LOGIN_RES_DEVICETOKEN, Login_pb2.IMDeviceTokenRsp),
            (B.CID_LOGIN_REQ_KICKPCCLIENT, Login_pb2.IMKickPCClientReq),
            (B.CID_LOGIN_RES_KICKPCCLIENT, Login_pb2.IMKickPCClientRsp),
            (B.CID_LOGIN_REQ_PUSH_SHIELD, Login_pb2.IMPushShieldReq),
            (B.CID_LOGIN_RES_PUSH_SHIELD, Login_pb2.IMPushShieldRsp),
            (B.CID_LOGIN_REQ_QUERY_PUSH_SHIELD, Login_pb2.IMQueryPushShieldReq),
            (B.CID_LOGIN_RES_QUERY_PUSH_SHIELD, Login_pb2.IMQueryPushShieldRsp),
        ),
    ),
    (
        B.SID_BUDDY_LIST,
        B.BuddyListCmdID.DESCRIPTOR,
        (
            (B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST, Buddy_pb2.IMRecentContactSessionReq),
            (B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE, Buddy_pb2.IMRecentContactSessionRsp),
            (B.CID_BUDDY_LIST_STATUS_NOTIFY, Buddy_pb2.IMUserStatNotify),
            (B.CID_BUDDY_LIST_USER_INFO_REQUEST, Buddy_pb2.IMUsersInfoReq),
            (B.CID_BUDDY_LIST_USER_INFO_RESPONSE, Buddy_pb2.IMUsersInfoRsp),
            (B.CID_BUDDY_LIST_REMOVE_SESSION_REQ, Buddy_pb2.IMRemoveSessionReq),
            (B.CID_BUDDY_LIST_REMOVE_SESSION_RES, Buddy_pb2.IMRemoveSessionRsp),
            (B.CID_BUDDY_LIST_ALL_USER_REQUEST, Buddy_pb2.IMAllUserReq),
            (B.CID_BUDDY_LIST_ALL_USER_RESPONSE, Buddy_pb2.IMAllUserRsp),
            (B.CID_BUDDY_LIST_USERS_STATUS_REQUEST, Buddy_pb2.IMUsersStatReq),
            (B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE, Buddy_pb2.IMUsersStatRsp),
            (B.CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST, Buddy_pb2.IMChangeAvatarReq),
            (B.CID_BUDDY_LIST_CHANGE_AVATAR_RESPONSE, Buddy_pb2.IMChangeAvatarRsp),
            (B.CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY, Buddy_pb2.IMPCLoginStatusNotify),
            (B.CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY, Buddy_pb2.IMRemoveSessionNotify),
            (B.CID_BUDDY_LIST_DEPARTMENT_REQUEST, Buddy_pb2.IMDepartmentReq),
            (B.CID_BUDDY_LIST_DEPARTMENT_RESPONSE, Buddy_pb2.IMDepartmentRsp),
            (B.CID_BUDDY_LIST_AVATAR_CHANGED_NOTIFY, Buddy_pb2.IMAvatarChangedNotify),
            (B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST, Buddy_pb2.IMChangeSignInfoReq),
            (B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE, Buddy_pb2.IMChangeSignInfoRsp),
            (B.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY, Buddy_pb2.IMSignInfoChangedNotify),
        ),
    ),
    (
        B.SID_MSG,
        B.MessageCmdID.DESCRIPTOR,
        (
            (B.CID_MSG_DATA, Message_pb2.IMMsgData),
            (B.CID_MSG_DATA_ACK, Message_pb2.IMMsgDataAck),
            (B.CID_MSG_READ_ACK, Message_pb2.IMMsgDataReadAck),
            (B.CID_MSG_READ_NOTIFY, Message_pb2.IMMsgDataReadNotify),
            (B.CID_MSG_TIME_REQUEST, Message_pb2.IMClientTimeReq),
            (B.CID_MSG_TIME_RESPONSE, Message_pb2.IMClientTimeRsp),
            (B.CID_MSG_UNREAD_CNT_REQUEST, Message_pb2.IMUnreadMsgCntReq),
            (B.CID_MSG_UNREAD_CNT_RESPONSE, Message_pb2.IMUnreadMsgCntRsp),
            (B.CID_MSG_LIST_REQUEST, Message_pb2.IMGetMsgListReq),
            (B.CID_MSG_LIST_RESPONSE, Message_pb2.IMGetMsgListRsp),
            (B.CID_MSG_GET_LATEST_MSG_ID_REQ, Message_pb2.IMGetLatestMsgIdReq),
            (B.CID_MSG_GET_LATEST_MSG_ID_RSP, Message_pb2.IMGetLatestMsgIdRsp),
            (B.CID_MSG_GET_BY_MSG_ID_REQ, Message_pb2.IMGetMsgByIdReq),
            (B.CID_MSG_GET_BY_MSG_ID_RES, Message_pb2.IMGetMsgByIdRsp),
        ),
    ),
    (
        B.SID_GROUP,
        B.GroupCmdID.DESCRIPTOR,
        (
            (B.CID_GROUP_NORMAL_LIST_REQUEST, Group_pb2.IMNormalGroupListReq),
            (B.CID_GROUP_NORMAL_LIST_RESPONSE, Group_pb2.IMNormalGroupListRsp),
            (B.CID_GROUP_INFO_REQUEST, Group_pb2.IMGroupInfoListReq),
            (B.CID_GROUP_INFO_RESPONSE, Group_pb2.IMGroupInfoListRsp),
            (B.CID_GROUP_CREATE_REQUEST, Group_pb2.IMGroupCreateReq),
            (B.CID_GROUP_CREATE_RESPONSE, Group_pb2.IMGroupCreateRsp),
            (B.CID_GROUP_CHANGE_MEMBER_REQUEST, Group_pb2.IMGroupChangeMemberReq),
            (B.CID_GROUP_CHANGE_MEMBER_RESPONSE, Group_pb2.IMGroupChangeMemberRsp),
            (B.CID_GROUP_SHIELD_GROUP_REQUEST, Group_pb2.IMGroupShieldReq),
            (B.CID_GROUP_SHIELD_GROUP_RESPONSE, Group_pb2.IMGroupShieldRsp),
            (B.CID_GROUP_CHANGE_MEMBER_NOTIFY, Group_pb2.IMGroupChangeMemberNotify),
        ),
    ),
    (
        B.SID_FILE,
        B.FileCmdID.DESCRIPTOR,
        (
            (B.CID_FILE_LOGIN_REQ, File_pb2.IMFileLoginReq),
            (B.CID_FILE_LOGIN_RES, File_pb2.IMFileLoginRsp),
            (B.CID_FILE_STATE, File_pb2.IMFileState),
            (B.CID_FILE_PULL_DATA_REQ, File_pb2.IMFilePullDataReq),
            (B.CID_FILE_PULL_DATA_RSP, File_pb2.IMFilePullDataRsp),
            (B.CID_FILE_REQUEST, File_pb2.IMFileReq),
            (B.CID_FILE_RESPONSE, File_pb2.IMFileRsp),
            (B.CID_FILE_NOTIFY, File_pb2.IMFileNotify),
            (B.CID_FILE_HAS_OFFLINE_REQ, File_pb2.IMFileHasOfflineReq),
            (B.CID_FILE_HAS_OFFLINE_RES, File_pb2.IMFileHasOfflineRsp),
            (B.CID_FILE_ADD_OFFLINE_REQ, File_pb2.IMFileAddOfflineReq),
            (B.CID_FILE_DEL_OFFLINE_REQ, File_pb2.IMFileDelOfflineReq),
        ),
    ),
    (
        B.SID_SWITCH_SERVICE,
        B.SwitchServiceCmdID.DESCRIPTOR,
        ((B.CID_SWITCH_P2P_CMD, SwitchService_pb2.IMP2PCmdMsg),),
    ),
    (
        B.SID_OTHER,
        B.OtherCmdID.DESCRIPTOR,
        (
            (B.CID_OTHER_HEARTBEAT, Other_pb2.IMHeartBeat),
            (B.CID_OTHER_STOP_RECV_PACKET, Server_pb2.IMStopReceivePacket),
            (B.CID_OTHER_VALIDATE_REQ, Server_pb2.IMValidateReq),
            (B.CID_OTHER_VALIDATE_RSP, Server_pb2.IMValidateRsp),
            (B.CID_OTHER_GET_DEVICE_TOKEN_REQ, Server_pb2.IMGetDeviceTokenReq),
            (B.CID_OTHER_GET_DEVICE_TOKEN_RSP, Server_pb2.IMGetDeviceTokenRsp),
            (B.CID_OTHER_ROLE_SET, Server_pb2.IMRoleSet),
            (B.CID_OTHER_ONLINE_USER_INFO, Server_pb2.IMOnlineUserInfo),
            (B.CID_OTHER_MSG_SERV_INFO, Server_pb2.IMMsgServInfo),
            (B.CID_OTHER_USER_STATUS_UPDATE, Server_pb2.IMUserStatusUpdate),
            (B.CID_OTHER_USER_CNT_UPDATE, Server_pb2.IMUserCntUpdate),
            (B.CID_OTHER_SERVER_KICK_USER, Server_pb2.IMServerKickUser),
            (B.CID_OTHER_LOGIN_STATUS_NOTIFY, Server_pb2.IMServerPCLoginStatusNotify),
            (B.CID_OTHER_PUSH_TO_USER_REQ, Server_pb2.IMPushToUserReq),
            (B.CID_OTHER_PUSH_TO_USER_RSP, Server_pb2.IMPushToUserRsp),
            (B.CID_OTHER_GET_SHIELD_REQ, Server_pb2.IMGroupGetShieldReq),
            (B.CID_OTHER_GET_SHIELD_RSP, Server_pb2.IMGroupGetShieldRsp),
            (B.CID_OTHER_FILE_TRANSFER_REQ, Server_pb2.IMFileTransferReq),
            (B.CID_OTHER_FILE_TRANSFER_RSP, Server_pb2.IMFileTransferRsp),
            (B.CID_OTHER_FILE_SERVER_IP_REQ, Server_pb2.IMFileServerIPReq),
            (B.CID_OTHER_FILE_SERVER_IP_RSP, Server_pb2.IMFileServerIPRsp),
        ),
    ),
    (
        X.SID_EXTENSION,
        X.ExtCmdID.DESCRIPTOR,
        (
            (X.CID_EXT_HELLO_REQ, X.IMExtHelloReq),
            (X.CID_EXT_HELLO_RSP, X.IMExtHelloRsp),
            (X.CID_EXT_USER_SEARCH_REQ, X.IMExtUserSearchReq),
            (X.CID_EXT_USER_SEARCH_RSP, X.IMExtUserSearchRsp),
            (X.CID_EXT_FRIEND_REQUEST_REQ, X.IMExtFriendRequestReq),
            (X.CID_EXT_FRIEND_REQUEST_RSP, X.IMExtFriendRequestRsp),
            (X.CID_EXT_FRIEND_REQUEST_NOTIFY, X.IMExtFriendRequestNotify),
            (X.CID_EXT_FRIEND_REQUEST_LIST_REQ, X.IMExtFriendRequestListReq),
            (X.CID_EXT_FRIEND_REQUEST_LIST_RSP, X.IMExtFriendRequestListRsp),
            (X.CID_EXT_FRIEND_ANSWER_REQ, X.IMExtFriendAnswerReq),
            (X.CID_EXT_FRIEND_ANSWER_RSP, X.IMExtFriendAnswerRsp),
            (X.CID_EXT_FRIEND_ANSWER_NOTIFY, X.IMExtFriendAnswerNotify),
            (X.CID_EXT_FRIEND_REMOVE_REQ, X.IMExtFriendRemoveReq),
            (X.CID_EXT_FRIEND_REMOVE_RSP, X.IMExtFriendRemoveRsp),
            (X.CID_EXT_FRIEND_REMOVED_NOTIFY, X.IMExtFriendRemovedNotify),
            (X.CID_EXT_FRIEND_LIST_REQ, X.IMExtFriendListReq),
            (X.CID_EXT_FRIEND_LIST_RSP, X.IMExtFriendListRsp),
            (X.CID_EXT_ROOM_JOIN_REQ, X.IMExtRoomJoinReq),
            (X.CID_EXT_ROOM_JOIN_RSP, X.IMExtRoomJoinRsp),
            (X.CID_EXT_ROOM_LEAVE_REQ, X.IMExtRoomLeaveReq),
            (X.CID_EXT_ROOM_LEAVE_RSP, X.IMExtRoomLeaveRsp),
            (X.CID_EXT_ROOM_POST_REQ, X.IMExtRoomPostReq),
            (X.CID_EXT_ROOM_POST_ACK, X.IMExtRoomPostAck),
            (X.CID_EXT_ROOM_POST_NOTIFY, X.IMExtRoomPostNotify),
            (X.CID_EXT_ROOM_REMOVED_NOTIFY, X.IMExtRoomRemovedNotify),
            (X.CID_EXT_USER_RELAY, X.IMExtUserRelay),
            (X.CID_EXT_ROOM_ADMIT_REQ, X.IMExtRoomAdmitReq),
            (X.CID_EXT_ROOM_ADMIT_RSP, X.IMExtRoomAdmitRsp),
            (X.CID_EXT_ROOM_NODE_LEAVE, X.IMExtRoomNodeLeave),
            (X.CID_EXT_ROOM_NODE_LIST, X.IMExtRoomNodeList),
            (X.CID_EXT_ROOM_RELAY, X.IMExtRoomRelay),
            (X.CID_EXT_ROOM_RELAY_ACK, X.IMExtRoomRelayAck),
            (X.CID_EXT_FILE_LOGIN_PERMIT_REQ, X.IMExtFileLoginPermitReq),
            (X.CID_EXT_FILE_LOGIN_PERMIT_RSP, X.IMExtFileLoginPermitRsp),
        ),
    ),
)


def _build() -> Mapping[int, Command]:
    table: dict[int, Command] = {}
    for service_id, cmd_enum, entries in _SERVICES:
        for command_id, message in entries:
            if command_id in table:
                raise ValueError(f"duplicate command id 0x{command_id:04x}")
            name = cmd_enum.values_by_number[command_id].name
            table[command_id] = Command(service_id, command_id, name, message)
    return MappingProxyType(table)


COMMANDS: Mapping[int, Command] = _build()


def command(cid: int) -> Command:
    """The :class:`Command` for ``cid``; ``KeyError`` if TeamTalk defines no such command."""
    return COMMANDS[cid]


def message_class(cid: int) -> type[Message]:
    """The body message class of ``cid``; ``KeyError`` for an unknown command."""
    return COMMANDS[cid].message


def service_of(cid: int) -> int:
    """The service id ``cid`` belongs to; ``KeyError`` for an unknown command."""
    return COMMANDS[cid].service_id


def name_of(cid: int) -> str:
    """The enum name of ``cid`` (``"CID_MSG_DATA"``), or ``"0x0999"`` style for unknown ids."""
    found = COMMANDS.get(cid)
    return found.name if found is not None else f"0x{cid:04x}"
