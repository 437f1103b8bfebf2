"""Login-service commands: login, logout, kicks, device token, push shield.

Login follows commands.md §2.1.3 with three deliberate changes: the login answer is sent
before the presence broadcast (so a client never sees a status notify for itself before
it knows it is logged in); a kicked duplicate connection is closed once the kick has
been written, instead of being left working until the client hangs up; and that kick
happens after the newcomer counts as online, so a replaced login is never announced to
anybody as the user going offline.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, cast

from twisted.logger import Logger

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.msg.realm import LoginRefused, LoginUnavailable
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2
from teamtalk_py.store.accounts import UserRow
from teamtalk_py.wire import Request
from teamtalk_py.wire.protocol import PeerName, encode

if TYPE_CHECKING:
    from teamtalk_py.msg.context import MsgContext

log = Logger(namespace="teamtalk.msg.session")

SUCCESS = "成功"
WRONG_PASSWORD = "用户名/密码错误"
TOO_MANY_FAILURES = "用户名/密码错误次数太多"
ACCOUNT_DISABLED = "账号已停用"
SERVER_ERROR = "服务端异常"

#: Why a login was refused (log lines and the ``teamtalk_logins`` metric) -> the text
#: the client shows. Unknown names get the wrong-password text, so names cannot be probed;
#: a disabled account is named only to someone who gave its right password.
REFUSALS = {
    "invalid_request": WRONG_PASSWORD,
    "locked_out": TOO_MANY_FAILURES,
    "unknown_user": WRONG_PASSWORD,
    "wrong_password": WRONG_PASSWORD,
    "disabled": ACCOUNT_DISABLED,
}


def user_info(row: UserRow, info: B.UserInfo | None = None) -> B.UserInfo:
    """Fill a ``UserInfo`` from a user row (field mapping of messages.md)."""
    info = info if info is not None else B.UserInfo()
    info.user_id = row.id
    info.user_gender = row.sex
    info.user_nick_name = row.nick
    info.avatar_url = row.avatar
    info.department_id = row.department_id
    info.email = row.email
    info.user_real_name = row.name
    info.user_tel = row.phone
    info.user_domain = row.domain
    info.status = row.status
    info.sign_info = row.sign_info
    return info


def _refuse(conn: MsgConnection, seq: int, name: str, refused: LoginRefused) -> None:
    """Answer a refused login and close; one log line with the name tried and the reason
    (what fail2ban matches: ``login refused for 'NAME' from HOST:PORT: REASON``)."""
    text = TOO_MANY_FAILURES if refused.locked else REFUSALS[refused.reason]
    log.info(
        "login refused for {name!r} from {peer}: {reason}",
        name=name,
        peer=conn.peer,
        reason=refused.reason,
    )
    conn.send(
        B.CID_LOGIN_RES_USERLOGIN,
        Login_pb2.IMLoginRes(
            server_time=conn.ctx.now(),
            result_code=B.REFUSE_REASON_DB_VALIDATE_FAILED,
            result_string=text,
        ),
        seq,
    )
    conn.close(f"login refused: {refused.reason}")


def refuse_login(conn: MsgConnection, request: Request) -> None:
    """A login whose name, password or version is not UTF-8 or longer than any account's:
    refused with the wrong-password text (no account can have such a name, so nothing is
    counted against one)."""
    conn.login_requested = True
    _refuse(conn, request.seq, "(invalid)", conn.realm.refusal("invalid_request"))


async def handle_login(conn: MsgConnection, request: Request) -> None:
    """Decode, ask the realm, answer: the decision is ``LoginRealm.login``'s."""
    req: Login_pb2.IMLoginReq = request.message
    if conn.login_requested:
        return  # one login per connection; later ones are ignored, as the reference does
    conn.login_requested = True
    conn.login_name = req.user_name
    conn.client_type = req.client_type
    # A handful of versions among thousands of connections: one string each.
    conn.client_version = sys.intern(req.client_version)
    conn.online_status = req.online_status
    ctx = conn.ctx
    name = req.user_name
    try:
        avatar = await conn.realm.login(
            name,
            req.password,
            req.client_type,
            conn.peer_host,
            lambda: bool(conn.connected) and not conn.closing,
        )
    except LoginRefused as refused:
        _refuse(conn, request.seq, name, refused)
        return
    except LoginUnavailable:
        conn.send(
            B.CID_LOGIN_RES_USERLOGIN,
            Login_pb2.IMLoginRes(
                server_time=ctx.now(),
                result_code=B.REFUSE_REASON_NO_DB_SERVER,
                result_string=SERVER_ERROR,
            ),
            request.seq,
        )
        conn.close("store unavailable during login")
        return
    if avatar is None:
        return  # the connection went away while the realm checked
    user_id = avatar.user_id
    row = avatar.take_row()
    conn.user_id = user_id
    conn.login_succeeded()
    conn.logged_in_at = ctx.now()
    conn.session_epoch = row.session_epoch
    answer = Login_pb2.IMLoginRes(
        server_time=ctx.now(),
        result_code=B.REFUSE_REASON_NONE,
        result_string=SUCCESS,
        online_status=req.online_status,
    )
    user_info(row, answer.user_info)
    answer.user_info.status = 0
    # The one answer of a fresh connection: straight to its socket (``send_now``), not
    # through Twisted's buffer and an epoll registration for the next turn.
    conn.send_now(encode(B.CID_LOGIN_RES_USERLOGIN, answer, request.seq))
    ctx.connection_opened(conn)
    kick_duplicate(ctx, user_id, conn.client_type, B.KICK_REASON_DUPLICATE_USER, exclude=conn)
    ctx.route.kick(user_id, conn.client_type, B.KICK_REASON_DUPLICATE_USER)
    ctx.login_log.info(
        "login {user_id} ({name!r}) client type {client_type} from {peer}",
        user_id=user_id,
        name=name,
        client_type=conn.client_type,
        # Made into text only if the line is written (most are only counted under load).
        peer=PeerName(conn),
    )


def kick_duplicate(
    ctx: MsgContext,
    user_id: int,
    client_type: int,
    reason: int,
    exclude: MsgConnection | None = None,
) -> bool:
    """Kick this node's oldest connection of ``user_id`` in ``client_type``'s category
    (other than ``exclude``, the login replacing it)."""
    user = ctx.online.get(user_id)
    if user is None:
        return False
    victim = user.first_in_category(client_type, exclude=exclude)
    if victim is None:
        return False
    cause = "duplicate_login" if reason == B.KICK_REASON_DUPLICATE_USER else "mobile_kick"
    # Only the msg service's own connections are online on this node.
    kick_connection(ctx, cast(MsgConnection, victim), reason, cause)
    return True


def kick_connection(ctx: MsgContext, conn: MsgConnection, reason: int, cause: str) -> None:
    """``CID_LOGIN_KICK_USER`` to one connection, which is then forgotten and closed."""
    ctx.metrics.kicks.labels(cause=cause).inc()
    conn.kicked = True
    conn.send(
        B.CID_LOGIN_KICK_USER,
        Login_pb2.IMKickUser(
            user_id=conn.user_id, kick_reason=cast(B.KickReasonType.ValueType, reason)
        ),
    )
    # Forget it now so a newcomer is the only one of its category (it is already
    # online, so presence sees no gap); the socket closes once the kick is flushed.
    ctx.connection_closed(conn)
    conn.logged_in = False
    conn.close(f"kicked ({cause})")


async def handle_logout(conn: MsgConnection, request: Request) -> None:
    if conn.is_mobile:
        await conn.user.forget_device_token()
    conn.send(B.CID_LOGIN_RES_LOGINOUT, Login_pb2.IMLogoutRsp(result_code=0), request.seq)
    conn.close("logout")


def handle_kick_pc_client(conn: MsgConnection, request: Request) -> None:
    if not conn.is_mobile:
        return  # only a mobile client may kick its PC sibling
    ctx = conn.ctx
    kick_duplicate(ctx, conn.user_id, B.CLIENT_TYPE_WINDOWS, B.KICK_REASON_MOBILE_KICK)
    ctx.route.kick(conn.user_id, B.CLIENT_TYPE_MAC, B.KICK_REASON_MOBILE_KICK)
    conn.send(
        B.CID_LOGIN_RES_KICKPCCLIENT,
        Login_pb2.IMKickPCClientRsp(user_id=conn.user_id, result_code=0),
        request.seq,
    )


async def handle_device_token(conn: MsgConnection, request: Request) -> None:
    if not conn.is_mobile:
        return  # PC clients have no push token; the reference ignores them too
    req: Login_pb2.IMDeviceTokenReq = request.message
    await conn.user.set_device_token(req.device_token)
    conn.send(
        B.CID_LOGIN_RES_DEVICETOKEN, Login_pb2.IMDeviceTokenRsp(user_id=conn.user_id), request.seq
    )


async def handle_push_shield(conn: MsgConnection, request: Request) -> None:
    req: Login_pb2.IMPushShieldReq = request.message
    answer = Login_pb2.IMPushShieldRsp(user_id=conn.user_id, result_code=1)
    if await conn.user.set_push_shield(req.shield_status):
        answer.result_code = 0
        answer.shield_status = req.shield_status
    conn.send(B.CID_LOGIN_RES_PUSH_SHIELD, answer, request.seq)


async def handle_query_push_shield(conn: MsgConnection, request: Request) -> None:
    status = await conn.user.push_shield()
    answer = Login_pb2.IMQueryPushShieldRsp(user_id=conn.user_id, result_code=1)
    if status is not None:
        answer.result_code = 0
        answer.shield_status = status
    conn.send(B.CID_LOGIN_RES_QUERY_PUSH_SHIELD, answer, request.seq)
