"""Login-service commands: login, logout, kicks, device token, push shield.

Login follows commands.md §2.1.3 with three deliberate changes: the login answer is sent
before the presence broadcast (so a client never sees a status notify for itself before
it knows it is logged in); a kicked duplicate connection is closed once the kick has
been written, instead of being left working until the client hangs up; and that kick
happens after the newcomer counts as online, so a replaced login is never announced to
anybody as the user going offline.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from teamtalk_py.msg.connection import MsgConnection
from teamtalk_py.outage import log_failure
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2
from teamtalk_py.store import accounts
from teamtalk_py.wire import Request

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
    "locked_out": TOO_MANY_FAILURES,
    "unknown_user": WRONG_PASSWORD,
    "wrong_password": WRONG_PASSWORD,
    "disabled": ACCOUNT_DISABLED,
}


def user_info(row, info: B.UserInfo | None = None) -> B.UserInfo:
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


def _refuse(conn: MsgConnection, seq: int, name: str, reason: str, text: str | None = None) -> None:
    """Answer a refused login and close; one log line with the name tried and the reason
    (what fail2ban matches: ``login refused for 'NAME' from HOST:PORT: REASON``)."""
    text = text if text is not None else REFUSALS[reason]
    conn.service.metrics.logins.labels(result=reason).inc()
    log.info(
        "login refused for {name!r} from {peer}: {reason}",
        name=name,
        peer=conn.peer,
        reason=reason,
    )
    conn.send(
        B.CID_LOGIN_RES_USERLOGIN,
        Login_pb2.IMLoginRes(
            server_time=conn.service.now(),
            result_code=B.REFUSE_REASON_DB_VALIDATE_FAILED,
            result_string=text,
        ),
        seq,
    )
    conn.close(f"login refused: {reason}")


async def handle_login(conn: MsgConnection, request: Request) -> None:
    req: Login_pb2.IMLoginReq = request.message
    if conn.login_requested:
        return  # one login per connection; later ones are ignored, as the reference does
    conn.login_requested = True
    conn.login_name = req.user_name
    conn.client_type = req.client_type
    conn.client_version = req.client_version
    conn.online_status = req.online_status
    service = conn.service
    name = req.user_name
    if await defer.maybeDeferred(service.lockout.is_locked, name):
        _refuse(conn, request.seq, name, "locked_out")
        return
    try:
        row = await service.store.read(accounts.get_user_by_name, name)
    except Exception:
        log_failure(log, "login lookup failed for {name!r}", name=name)
        service.metrics.logins.labels(result="store_error").inc()
        conn.send(
            B.CID_LOGIN_RES_USERLOGIN,
            Login_pb2.IMLoginRes(
                server_time=service.now(),
                result_code=B.REFUSE_REASON_NO_DB_SERVER,
                result_string=SERVER_ERROR,
            ),
            request.seq,
        )
        conn.close("store unavailable during login")
        return
    if conn.closing or not conn.connected:
        return
    if row is None or not await service.credentials.check(row, req.password):
        await defer.maybeDeferred(service.lockout.record_failure, name)
        locked = await defer.maybeDeferred(service.lockout.is_locked, name)
        reason = "unknown_user" if row is None else "wrong_password"
        _refuse(conn, request.seq, name, reason, TOO_MANY_FAILURES if locked else None)
        return
    if not row.can_log_in:
        _refuse(conn, request.seq, name, "disabled")
        return
    await defer.maybeDeferred(service.lockout.clear, name)
    if conn.closing or not conn.connected:
        return
    user_id = row.id
    conn.user_id = user_id
    conn.logged_in = True
    conn.logged_in_at = service.now()
    conn.session_epoch = row.session_epoch
    answer = Login_pb2.IMLoginRes(
        server_time=service.now(),
        result_code=B.REFUSE_REASON_NONE,
        result_string=SUCCESS,
        online_status=req.online_status,
    )
    user_info(row, answer.user_info)
    answer.user_info.status = 0
    conn.send(B.CID_LOGIN_RES_USERLOGIN, answer, request.seq)
    service.metrics.logins.labels(result="ok").inc()
    service.connection_opened(conn)
    kick_duplicate(service, user_id, conn.client_type, B.KICK_REASON_DUPLICATE_USER, exclude=conn)
    service.route.kick(user_id, conn.client_type, B.KICK_REASON_DUPLICATE_USER)
    log.info(
        "login {user_id} ({name!r}) client type {client_type} from {peer}",
        user_id=user_id,
        name=name,
        client_type=conn.client_type,
        peer=conn.peer,
    )


def kick_duplicate(
    service, user_id: int, client_type: int, reason: int, exclude: MsgConnection | None = None
) -> bool:
    """Kick this node's oldest connection of ``user_id`` in ``client_type``'s category
    (other than ``exclude``, the login replacing it)."""
    user = service.online.get(user_id)
    if user is None:
        return False
    victim = user.first_in_category(client_type, exclude=exclude)
    if victim is None:
        return False
    cause = "duplicate_login" if reason == B.KICK_REASON_DUPLICATE_USER else "mobile_kick"
    kick_connection(service, victim, reason, cause)
    return True


def kick_connection(service, conn: MsgConnection, reason: int, cause: str) -> None:
    """``CID_LOGIN_KICK_USER`` to one connection, which is then forgotten and closed."""
    service.metrics.kicks.labels(cause=cause).inc()
    conn.kicked = True
    conn.send(B.CID_LOGIN_KICK_USER, Login_pb2.IMKickUser(user_id=conn.user_id, kick_reason=reason))
    # Forget it now so a newcomer is the only one of its category (it is already
    # online, so presence sees no gap); the socket closes once the kick is flushed.
    service.connection_closed(conn)
    conn.logged_in = False
    conn.close(f"kicked ({cause})")


async def handle_logout(conn: MsgConnection, request: Request) -> None:
    service = conn.service
    if conn.is_mobile:
        await service.store.write(accounts.clear_device_token, conn.user_id)
    conn.send(B.CID_LOGIN_RES_LOGINOUT, Login_pb2.IMLogoutRsp(result_code=0), request.seq)
    conn.close("logout")


def handle_kick_pc_client(conn: MsgConnection, request: Request) -> None:
    if not conn.is_mobile:
        return  # only a mobile client may kick its PC sibling
    service = conn.service
    kick_duplicate(service, conn.user_id, B.CLIENT_TYPE_WINDOWS, B.KICK_REASON_MOBILE_KICK)
    service.route.kick(conn.user_id, B.CLIENT_TYPE_MAC, B.KICK_REASON_MOBILE_KICK)
    conn.send(
        B.CID_LOGIN_RES_KICKPCCLIENT,
        Login_pb2.IMKickPCClientRsp(user_id=conn.user_id, result_code=0),
        request.seq,
    )


async def handle_device_token(conn: MsgConnection, request: Request) -> None:
    if not conn.is_mobile:
        return  # PC clients have no push token; the reference ignores them too
    req: Login_pb2.IMDeviceTokenReq = request.message
    await conn.service.store.write(
        accounts.set_device_token, conn.user_id, conn.client_type, req.device_token
    )
    conn.send(
        B.CID_LOGIN_RES_DEVICETOKEN, Login_pb2.IMDeviceTokenRsp(user_id=conn.user_id), request.seq
    )


async def handle_push_shield(conn: MsgConnection, request: Request) -> None:
    req: Login_pb2.IMPushShieldReq = request.message
    answer = Login_pb2.IMPushShieldRsp(user_id=conn.user_id, result_code=1)
    if req.shield_status in (0, 1):
        await conn.service.store.write(
            accounts.set_push_shield, conn.user_id, req.shield_status, now=conn.service.now()
        )
        answer.result_code = 0
        answer.shield_status = req.shield_status
    conn.send(B.CID_LOGIN_RES_PUSH_SHIELD, answer, request.seq)


async def handle_query_push_shield(conn: MsgConnection, request: Request) -> None:
    status = await conn.service.store.read(accounts.get_push_shield, conn.user_id)
    answer = Login_pb2.IMQueryPushShieldRsp(user_id=conn.user_id, result_code=1)
    if status is not None:
        answer.result_code = 0
        answer.shield_status = status
    conn.send(B.CID_LOGIN_RES_QUERY_PUSH_SHIELD, answer, request.seq)
