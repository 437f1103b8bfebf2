"""Group commands (``SID_GROUP``, commands.md §2.1.13): normal group list, group info,
create, change members, shield.

Each handler answers every well-formed request: where the reference stays silent (a
client asking to create a fixed group, a change to a missing group, a failed write) the
answer carries ``result_code = 1``. Group messages, read acks and history go through
``chat.py`` to ``ctx.groups`` like their one-to-one counterparts.
"""

from __future__ import annotations

from twisted.logger import Logger

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Group_pb2
from teamtalk_py.store.groups import GroupError
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import Handler

log = Logger(namespace="teamtalk.msg.groups")

OK = 0
FAILED = 1
#: Most groups one info request is answered for (a client asks for the groups it knows).
MAX_INFO_GROUPS = 1000


def _refused(what: str, conn: MsgConnection, error: Exception) -> None:
    if isinstance(error, GroupError | ValueError | TypeError):
        log.info(
            "refusing {what} from {user_id}: {reason}",
            what=what,
            user_id=conn.user_id,
            reason=str(error),
        )
    else:
        log_failure(log, "{what} from {user_id} failed", what=what, user_id=conn.user_id)


async def handle_normal_list(conn: MsgConnection, request: Request) -> None:
    versions = await conn.ctx.groups.normal_list(conn.user_id)
    answer = Group_pb2.IMNormalGroupListRsp(user_id=conn.user_id)
    for group_id, version in versions:
        answer.group_version_list.add(group_id=group_id, version=version)
    conn.send(B.CID_GROUP_NORMAL_LIST_RESPONSE, answer, request.seq)


async def handle_group_info(conn: MsgConnection, request: Request) -> None:
    """Full info of the asked groups whose version is newer than the client's, for the
    groups the user is a member of; ``shield_status`` is the user's own mute flag."""
    req: Group_pb2.IMGroupInfoListReq = request.message
    known: dict[int, int] = {}
    for item in req.group_version_list[:MAX_INFO_GROUPS]:
        known[item.group_id] = min(item.version, known.get(item.group_id, item.version))
    rows = await conn.ctx.groups.infos(conn.user_id, known) if known else []
    answer = Group_pb2.IMGroupInfoListRsp(user_id=conn.user_id)
    for row in rows:
        group = row.group
        answer.group_info_list.add(
            group_id=group.id,
            version=group.version,
            group_name=group.name,
            group_avatar=group.avatar,
            group_creator_id=group.creator,
            group_type=group.type,
            shield_status=row.shield,
            group_member_list=row.members,
        )
    conn.send(B.CID_GROUP_INFO_RESPONSE, answer, request.seq)


def refuse_create(conn: MsgConnection, request: Request) -> None:
    """A group name or avatar that is not UTF-8 or too long: FAILED, no group."""
    conn.send(
        B.CID_GROUP_CREATE_RESPONSE,
        Group_pb2.IMGroupCreateRsp(user_id=conn.user_id, result_code=FAILED, group_name=""),
        request.seq,
    )


async def handle_create(conn: MsgConnection, request: Request) -> None:
    """Clients create temporary groups; the creator is always a member."""
    req: Group_pb2.IMGroupCreateReq = request.message
    answer = Group_pb2.IMGroupCreateRsp(
        user_id=conn.user_id, result_code=FAILED, group_name=req.group_name
    )
    if req.group_type != B.GROUP_TYPE_TMP:
        log.info("refusing to create a fixed group for {user_id}", user_id=conn.user_id)
    elif not await conn.ctx.group_creations.take(str(conn.user_id)):
        conn.limit_refused()
    else:
        try:
            group, members = await conn.ctx.groups.create(
                conn.user_id, req.group_name, req.group_avatar, req.member_id_list
            )
        except Exception as e:
            _refused("group create", conn, e)
        else:
            answer.result_code = OK
            answer.group_id = group.id
            answer.user_id_list.extend(members)
            log.info(
                "group {group_id} created by {user_id} with {count} members",
                group_id=group.id,
                user_id=conn.user_id,
                count=len(members),
            )
    conn.send(B.CID_GROUP_CREATE_RESPONSE, answer, request.seq)


async def handle_change_member(conn: MsgConnection, request: Request) -> None:
    """Add or remove members; on success the changed and the remaining members are told
    (every connection of theirs except the requesting one), on every node."""
    req: Group_pb2.IMGroupChangeMemberReq = request.message
    groups = conn.ctx.groups
    answer = Group_pb2.IMGroupChangeMemberRsp(
        user_id=conn.user_id,
        change_type=req.change_type,
        result_code=FAILED,
        group_id=req.group_id,
    )
    try:
        change = await groups.change_members(
            conn.user_id, req.change_type, req.group_id, req.member_id_list
        )
    except Exception as e:
        _refused("group member change", conn, e)
        conn.send(B.CID_GROUP_CHANGE_MEMBER_RESPONSE, answer, request.seq)
        return
    answer.result_code = OK
    answer.cur_user_id_list.extend(change.current)
    answer.chg_user_id_list.extend(change.changed)
    conn.send(B.CID_GROUP_CHANGE_MEMBER_RESPONSE, answer, request.seq)
    groups.notify_change(change, conn.user_id, exclude=conn)


async def handle_shield(conn: MsgConnection, request: Request) -> None:
    """Set the user's push mute flag for a group; only members may."""
    req: Group_pb2.IMGroupShieldReq = request.message
    try:
        ok = await conn.ctx.groups.shield(conn.user_id, req.group_id, req.shield_status)
    except Exception as e:
        _refused("group shield", conn, e)
        ok = False
    conn.send(
        B.CID_GROUP_SHIELD_GROUP_RESPONSE,
        Group_pb2.IMGroupShieldRsp(
            user_id=conn.user_id, group_id=req.group_id, result_code=OK if ok else FAILED
        ),
        request.seq,
    )


GROUP_HANDLERS: dict[int, Handler[MsgConnection]] = {
    B.CID_GROUP_NORMAL_LIST_REQUEST: handle_normal_list,
    B.CID_GROUP_INFO_REQUEST: handle_group_info,
    B.CID_GROUP_CREATE_REQUEST: handle_create,
    B.CID_GROUP_CHANGE_MEMBER_REQUEST: handle_change_member,
    B.CID_GROUP_SHIELD_GROUP_REQUEST: handle_shield,
}
