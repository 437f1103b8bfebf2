"""Buddy-list commands: directory, departments, profiles, sessions, presence, avatar and
signature (commands.md §2.1.8-§2.1.10).

The directory sync drops the reference's in-memory "last change" gate and always runs
the ``updated >=`` query, so changes made with ``teamtalk-admin`` reach clients at once.
Recent sessions report the real sender of the latest message, not always the peer.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.logger import Logger

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.msg.session import user_info
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2
from teamtalk_py.store import accounts
from teamtalk_py.store import sessions as session_store
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import encode

log = Logger(namespace="teamtalk.msg.buddy")

MAX_SIGN_INFO_BYTES = 128
MAX_USER_INFO_IDS = 1000


async def _friends_only(conn: MsgConnection) -> list[accounts.UserRow] | None:
    """In ``contacts`` mode (docs/EXTENSION.md §2.2) the buddy list is the user and their
    friends, always whole (a friend added since the client's last sync may have an old
    ``updated``); None in the other modes."""
    contacts = conn.ctx.contacts
    if contacts is None or not contacts.friends_only:
        return None
    visible = await contacts.visible_user_ids(conn.user_id)
    return await conn.ctx.store.read(accounts.get_users_by_ids, sorted(visible))


async def handle_all_users(conn: MsgConnection, request: Request) -> None:
    req: Buddy_pb2.IMAllUserReq = request.message
    rows = await _friends_only(conn)
    if rows is None:
        rows = await conn.ctx.store.read(accounts.users_updated_since, req.latest_update_time)
    answer = Buddy_pb2.IMAllUserRsp(
        user_id=conn.user_id,
        latest_update_time=max([req.latest_update_time, *(r.updated for r in rows)]),
    )
    for row in rows:
        user_info(row, answer.user_list.add())
    conn.send(B.CID_BUDDY_LIST_ALL_USER_RESPONSE, answer, request.seq)


async def handle_departments(conn: MsgConnection, request: Request) -> None:
    req: Buddy_pb2.IMDepartmentReq = request.message
    users = await _friends_only(conn)
    if users is None:
        rows = await conn.ctx.store.read(accounts.departments_updated_after, req.latest_update_time)
    else:
        # Only the departments of the people shown, whole (as for users).
        wanted = {u.department_id for u in users}
        every = await conn.ctx.store.read(accounts.list_departments)
        rows = [d for d in every if d.id in wanted]
    answer = Buddy_pb2.IMDepartmentRsp(
        user_id=conn.user_id,
        latest_update_time=max([req.latest_update_time, *(r.updated for r in rows)]),
    )
    for row in rows:
        answer.dept_list.add(
            dept_id=row.id,
            priority=row.priority,
            dept_name=row.name,
            parent_dept_id=row.parent_id,
            dept_status=row.status,
        )
    conn.send(B.CID_BUDDY_LIST_DEPARTMENT_RESPONSE, answer, request.seq)


async def handle_user_info(conn: MsgConnection, request: Request) -> None:
    req: Buddy_pb2.IMUsersInfoReq = request.message
    ids = list(dict.fromkeys(req.user_id_list))[:MAX_USER_INFO_IDS]
    rows = await conn.ctx.store.read(accounts.get_users_by_ids, ids) if ids else []
    answer = Buddy_pb2.IMUsersInfoRsp(user_id=conn.user_id)
    for row in rows:
        user_info(row, answer.user_info_list.add())
    conn.send(B.CID_BUDDY_LIST_USER_INFO_RESPONSE, answer, request.seq)


async def handle_recent_sessions(conn: MsgConnection, request: Request) -> None:
    req: Buddy_pb2.IMRecentContactSessionReq = request.message
    sessions = await conn.ctx.store.read(
        session_store.recent_sessions, conn.user_id, req.latest_update_time
    )
    answer = Buddy_pb2.IMRecentContactSessionRsp(user_id=conn.user_id)
    for s in sessions:
        answer.contact_session_list.add(
            session_id=s.peer_id,
            session_type=s.session_type,
            session_status=B.SESSION_STATUS_OK,
            updated_time=s.updated,
            latest_msg_id=s.latest_msg_id,
            latest_msg_data=s.latest_msg_data,
            latest_msg_type=s.latest_msg_type,
            latest_msg_from_user_id=s.latest_msg_from_id,
        )
    conn.send(B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE, answer, request.seq)


async def handle_remove_session(conn: MsgConnection, request: Request) -> None:
    req: Buddy_pb2.IMRemoveSessionReq = request.message
    ctx = conn.ctx
    removed = await ctx.store.write(
        session_store.remove_session,
        conn.user_id,
        req.session_id,
        req.session_type,
        now=ctx.now(),
    )
    conn.send(
        B.CID_BUDDY_LIST_REMOVE_SESSION_RES,
        Buddy_pb2.IMRemoveSessionRsp(
            user_id=conn.user_id,
            result_code=0 if removed else 1,
            session_type=req.session_type,
            session_id=req.session_id,
        ),
        request.seq,
    )
    if req.session_type == B.SESSION_TYPE_SINGLE:
        notify = encode(
            B.CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY,
            Buddy_pb2.IMRemoveSessionNotify(
                user_id=conn.user_id, session_type=req.session_type, session_id=req.session_id
            ),
        )
        ctx.online.send_to_users([conn.user_id], notify, exclude=conn)
        ctx.route.relay(notify, [conn.user_id])


async def handle_users_status(conn: MsgConnection, request: Request) -> None:
    req: Buddy_pb2.IMUsersStatReq = request.message
    statuses = await conn.ctx.route.users_status(list(req.user_id_list))
    answer = Buddy_pb2.IMUsersStatRsp(user_id=conn.user_id)
    for user_id, status in statuses:
        answer.user_stat_list.add(user_id=user_id, status=status)
    conn.send(B.CID_BUDDY_LIST_USERS_STATUS_RESPONSE, answer, request.seq)


def avatar_allowed(url: str, media_url: str, other_hosts: tuple[str, ...]) -> bool:
    """An avatar must be a picture of our media service (or of a configured host), so a
    client cannot make every buddy list fetch an address of its choosing."""
    if not url or url.startswith(media_url):
        return True
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and parts.hostname in other_hosts


async def handle_change_avatar(conn: MsgConnection, request: Request) -> None:
    """The reference never answers; we check the URL, store it, answer and tell everybody."""
    req: Buddy_pb2.IMChangeAvatarReq = request.message
    ctx = conn.ctx
    media = ctx.config.media
    if not avatar_allowed(req.avatar_url, ctx.media_url(), media.avatar_hosts):
        log.info(
            "avatar of {user_id} refused: {url!r} is not a media URL",
            user_id=conn.user_id,
            url=req.avatar_url[:200],
        )
        conn.send(
            B.CID_BUDDY_LIST_CHANGE_AVATAR_RESPONSE,
            Buddy_pb2.IMChangeAvatarRsp(user_id=conn.user_id, result_code=1),
            request.seq,
        )
        return
    try:
        await ctx.store.write(accounts.set_avatar, conn.user_id, req.avatar_url, now=ctx.now())
    except ValueError:  # longer than the store keeps
        result_code = 1
    else:
        result_code = 0
    conn.send(
        B.CID_BUDDY_LIST_CHANGE_AVATAR_RESPONSE,
        Buddy_pb2.IMChangeAvatarRsp(user_id=conn.user_id, result_code=result_code),
        request.seq,
    )
    if result_code != 0:
        return
    ctx.route.broadcast(
        encode(
            B.CID_BUDDY_LIST_AVATAR_CHANGED_NOTIFY,
            Buddy_pb2.IMAvatarChangedNotify(
                changed_user_id=conn.user_id, avatar_url=req.avatar_url
            ),
        )
    )


def refuse_change_avatar(conn: MsgConnection, request: Request) -> None:
    """An avatar URL that is not UTF-8 or too long: result 1, nothing changed."""
    conn.send(
        B.CID_BUDDY_LIST_CHANGE_AVATAR_RESPONSE,
        Buddy_pb2.IMChangeAvatarRsp(user_id=conn.user_id, result_code=1),
        request.seq,
    )


def refuse_change_sign_info(conn: MsgConnection, request: Request) -> None:
    """A signature that is not UTF-8 or too long: result 1, nothing changed."""
    conn.send(
        B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE,
        Buddy_pb2.IMChangeSignInfoRsp(user_id=conn.user_id, result_code=1),
        request.seq,
    )


async def handle_change_sign_info(conn: MsgConnection, request: Request) -> None:
    req: Buddy_pb2.IMChangeSignInfoReq = request.message
    ctx = conn.ctx
    answer = Buddy_pb2.IMChangeSignInfoRsp(user_id=conn.user_id, result_code=1)
    if len(req.sign_info.encode()) <= MAX_SIGN_INFO_BYTES:
        await ctx.store.write(accounts.set_sign_info, conn.user_id, req.sign_info, now=ctx.now())
        answer.result_code = 0
        answer.sign_info = req.sign_info
    conn.send(B.CID_BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE, answer, request.seq)
    if answer.result_code == 0:
        ctx.route.broadcast(
            encode(
                B.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY,
                Buddy_pb2.IMSignInfoChangedNotify(
                    changed_user_id=conn.user_id, sign_info=req.sign_info
                ),
            )
        )
