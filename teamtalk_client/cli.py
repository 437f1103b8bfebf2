"""``teamtalk-client``: the client library from the command line, for bots, scripts and
checking a server by hand.

It does what a chat client does: asks the login server which msg server to use
(``/msg_server``), logs in with the MD5 of the password, and sends text encrypted the way
the shipped clients do (wire.md section 6.1), so what it sends reads the same in every
client. Each command prints tab-separated lines (``--json``: one JSON object a line) and
exits 0, or prints one line on stderr and exits 1 (refused, unreachable) or 2 (bad usage),
like ``teamtalk-admin``.

The password comes from ``--password``, else ``$TEAMTALK_PASSWORD``, else a prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from twisted.internet import defer, threads
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react

from teamtalk_client.discovery import DiscoveryError, DiscoveryFormatError, discover
from teamtalk_client.extension import ExtensionClient, result_name
from teamtalk_client.pdu import Pdu
from teamtalk_client.protocol import TeamTalkClientProtocol, connect
from teamtalk_client.rooms import RoomRefused, Rooms
from teamtalk_client.session import TeamTalkSession
from teamtalk_client.text import DEFAULT_AES_KEY, decrypt_text
from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Buddy_pb2, Group_pb2
from teamtalk_py.pb.IM import Extension_pb2 as X

__all__ = ["build_parser", "main", "run"]

DEFAULT_URL = "http://127.0.0.1:8080/msg_server"
PASSWORD_ENV = "TEAMTALK_PASSWORD"

CLIENT_TYPES = {
    "windows": B.CLIENT_TYPE_WINDOWS,
    "mac": B.CLIENT_TYPE_MAC,
    "ios": B.CLIENT_TYPE_IOS,
    "android": B.CLIENT_TYPE_ANDROID,
}

TEXT_TYPES = (B.MSG_TYPE_SINGLE_TEXT, B.MSG_TYPE_GROUP_TEXT)
GROUP_TYPES = (B.MSG_TYPE_GROUP_TEXT, B.MSG_TYPE_GROUP_AUDIO)

#: Heartbeat period of the connection: well inside the server's idle timeouts (120 s for
#: PC clients, 300 s for mobile ones), so that ``listen`` can run for days.
HEARTBEAT_INTERVAL = 30.0


class ClientError(Exception):
    """A request the server refused or could not answer (exit status 1)."""


# --------------------------------------------------------------------------------------
# Output


class Output:
    """Where results go: tab-separated text lines, or JSON lines with ``--json``."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json

    def record(self, columns: Sequence[object], /, **fields: object) -> None:
        """One result: ``columns`` joined by tabs, or ``fields`` as one JSON object."""
        if self.as_json:
            line = json.dumps(fields, ensure_ascii=False, sort_keys=True)
        else:
            line = "\t".join(str(value) for value in columns)
        self.stream.write(line + "\n")
        self.stream.flush()


def readable_text(msg_type: int, data: bytes, aes_key: bytes | str) -> str:
    """A message payload as a person reads it: the decrypted text, or what it is."""
    if msg_type in (B.MSG_TYPE_SINGLE_AUDIO, B.MSG_TYPE_GROUP_AUDIO):
        seconds = int.from_bytes(data[:4], "big") if len(data) >= 4 else 0
        return f"[voice, {seconds} s]"
    try:
        return decrypt_text(data, aes_key)
    except (ValueError, UnicodeDecodeError):
        return f"[{len(data)} bytes, not text under this AES key]"


def clock_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


# --------------------------------------------------------------------------------------
# The logged-in client


@dataclass
class Client:
    """A logged-in connection and the names of the people and groups it knows."""

    protocol: TeamTalkClientProtocol
    session: TeamTalkSession
    #: The logged-in user's ``UserInfo``, from the login answer.
    me: Any
    aes_key: bytes | str
    users: dict[int, str] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)

    @property
    def user_id(self) -> int:
        user_id: int = self.me.user_id
        return user_id

    async def load_users(self) -> list[Any]:
        """The company directory (``CID_BUDDY_LIST_ALL_USER_REQUEST``): its ``UserInfo``
        entries, whose login names it keeps by id."""
        answer = await self.session.get(
            B.CID_BUDDY_LIST_ALL_USER_REQUEST,
            Buddy_pb2.IMAllUserReq(user_id=self.user_id, latest_update_time=0),
        )
        self.users = {user.user_id: user.user_real_name for user in answer.user_list}
        return list(answer.user_list)

    async def load_groups(self, group_ids: Sequence[int] = ()) -> None:
        """The names of the user's fixed groups and of ``group_ids`` (temporary groups
        are not in the fixed-group list)."""
        wanted = set(group_ids)
        if not group_ids:
            listed = await self.session.get(
                B.CID_GROUP_NORMAL_LIST_REQUEST,
                Group_pb2.IMNormalGroupListReq(user_id=self.user_id),
            )
            wanted = {version.group_id for version in listed.group_version_list}
        wanted -= self.groups.keys()
        if not wanted:
            return
        answer = await self.session.get(
            B.CID_GROUP_INFO_REQUEST,
            Group_pb2.IMGroupInfoListReq(
                user_id=self.user_id,
                group_version_list=[
                    B.GroupVersionInfo(group_id=group_id, version=0) for group_id in wanted
                ],
            ),
        )
        for info in answer.group_info_list:
            self.groups[info.group_id] = info.group_name

    def user_name(self, user_id: int) -> str:
        return self.users.get(user_id, str(user_id))

    def group_name(self, group_id: int) -> str:
        return self.groups.get(group_id, str(group_id))

    async def resolve(self, who: str, group: bool) -> int:
        """A user (or group) id from a name or a number given on the command line."""
        if who.isdigit():
            return int(who)
        if group:
            await self.load_groups()
            table = self.groups
        else:
            await self.load_users()
            table = self.users
        matches = [key for key, name in table.items() if name == who]
        if not matches:
            raise ClientError(f"no {'group' if group else 'user'} named {who!r}")
        return matches[0]

    def session_label(self, session_type: int, session_id: int) -> str:
        if session_type == B.SESSION_TYPE_GROUP:
            return f"group:{self.group_name(session_id)}"
        return self.user_name(session_id)


async def open_client(reactor: IReactorTime, args: argparse.Namespace, password: str) -> Client:
    """Find the msg server, connect and log in; ``ClientError`` when refused."""
    host, port = await msg_server(reactor, args)
    protocol = await connect(
        reactor, host, port, connect_timeout=args.timeout, heartbeat_interval=HEARTBEAT_INTERVAL
    )
    session = TeamTalkSession(protocol, aes_key=args.aes_key, timeout=args.timeout)
    answer = await session.login(
        args.user,
        password,
        client_type=CLIENT_TYPES[args.client_type],
        client_version="teamtalk-client",
    )
    if answer.result_code != B.REFUSE_REASON_NONE:
        protocol.transport.loseConnection()
        reason = answer.result_string or B.ResultType.Name(answer.result_code)
        raise ClientError(f"login of {args.user!r} refused: {reason}")
    me = answer.user_info
    return Client(protocol, session, me, args.aes_key, {me.user_id: me.user_real_name})


async def msg_server(reactor: IReactorTime, args: argparse.Namespace) -> tuple[str, int]:
    """``--server HOST:PORT`` as given, else what ``/msg_server`` at ``--url`` answers."""
    if args.server:
        host, _, port = args.server.rpartition(":")
        return host, int(port)
    found = await discover(reactor, args.url)
    return found.prior_ip, found.port


# --------------------------------------------------------------------------------------
# Commands: one function each, registered in the parser below


async def cmd_discover(reactor: IReactorTime, args: argparse.Namespace, out: Output) -> None:
    found = await discover(reactor, args.url)
    out.record(
        [f"{found.prior_ip}:{found.port}", found.backup_ip, found.msfs_prior],
        prior_ip=found.prior_ip,
        backup_ip=found.backup_ip,
        port=found.port,
        msfs_prior=found.msfs_prior,
        msfs_backup=found.msfs_backup,
        discovery=found.discovery,
    )


def record_user(out: Output, user: Any) -> None:
    """One ``UserInfo``: id, login name, nick, department."""
    out.record(
        [user.user_id, user.user_real_name, user.user_nick_name, user.department_id],
        user_id=user.user_id,
        name=user.user_real_name,
        nick=user.user_nick_name,
        department_id=user.department_id,
        email=user.email,
    )


async def cmd_login(client: Client, args: argparse.Namespace, out: Output) -> None:
    record_user(out, client.me)


async def cmd_send(client: Client, args: argparse.Namespace, out: Output) -> None:
    to = await client.resolve(args.to, args.group)
    session_type = B.SESSION_TYPE_GROUP if args.group else B.SESSION_TYPE_SINGLE
    try:
        ack = await client.session.send_text(to, args.text, session_type)
    except TimeoutError:
        # Servers answer a refused message with msg_id 0 or, like the reference, not at all.
        raise ClientError(
            f"no ack for the message to {args.to!r} within {args.timeout} s: the server "
            "refused it or could not store it"
        ) from None
    if ack.msg_id == 0:
        raise ClientError(f"the server refused the message to {args.to!r} (msg_id 0)")
    out.record([ack.msg_id], msg_id=ack.msg_id, session_id=to, group=args.group)


async def cmd_listen(client: Client, args: argparse.Namespace, out: Output) -> None:
    """Print every message that arrives, acknowledging each as clients do, until
    ``--count`` messages or ``--seconds`` have passed (or the connection goes)."""
    await client.load_users()
    received = 0
    async for pdu in notifications(client.protocol, args.seconds):
        if args.count is not None and received >= args.count:
            return
        if pdu.command_id != B.CID_MSG_DATA:
            continue  # presence and the like: taken off the queue, not printed
        await print_message(client, pdu, out)
        client.session.delivery_ack(pdu)
        if args.read:
            data = pdu.message
            group = data.msg_type in GROUP_TYPES
            client.session.read_ack(
                data.to_session_id if group else data.from_user_id,
                data.msg_id,
                B.SESSION_TYPE_GROUP if group else B.SESSION_TYPE_SINGLE,
            )
        received += 1
        if args.count is not None and received >= args.count:
            return


async def notifications(
    protocol: TeamTalkClientProtocol, seconds: float | None
) -> AsyncIterator[Pdu]:
    """Every notification that arrives within ``seconds`` (None: until the connection
    goes), taken off the queue whatever its kind."""
    reactor = protocol.clock
    stop_at = None if seconds is None else reactor.seconds() + seconds
    while True:
        remaining = None if stop_at is None else stop_at - reactor.seconds()
        if remaining is not None and remaining <= 0:
            return
        pdu = await next_notification(protocol, remaining)
        if pdu is None:
            return
        yield pdu


async def next_notification(protocol: TeamTalkClientProtocol, timeout: float | None) -> Pdu | None:
    """The next notification, or None after ``timeout`` seconds; taking every kind off the
    queue keeps a listener that runs for days from growing."""
    waiting: Deferred[Pdu] = protocol.notifications.get()
    if timeout is None:
        return await waiting
    timed_out = False

    def expire() -> None:
        nonlocal timed_out
        timed_out = True
        waiting.cancel()

    timer = protocol.clock.callLater(timeout, expire)
    try:
        return await waiting
    except CancelledError:
        if timed_out:
            return None
        raise
    finally:
        if timer.active():
            timer.cancel()


async def print_message(client: Client, pdu: Pdu, out: Output) -> None:
    data = pdu.message
    group = data.msg_type in GROUP_TYPES
    if group:
        await client.load_groups([data.to_session_id])
        to = f"group:{client.group_name(data.to_session_id)}"
    else:
        to = client.user_name(data.to_session_id)
    text = readable_text(data.msg_type, data.msg_data, client.aes_key)
    sender = client.user_name(data.from_user_id)
    out.record(
        [clock_time(data.create_time), data.msg_id, sender, to, text],
        time=data.create_time,
        msg_id=data.msg_id,
        from_id=data.from_user_id,
        sender=sender,
        session_type="group" if group else "single",
        session_id=data.to_session_id if group else data.from_user_id,
        to=to,
        text=text,
    )


async def cmd_users(client: Client, args: argparse.Namespace, out: Output) -> None:
    for user in await client.load_users():
        record_user(out, user)


async def load_session_names(client: Client, sessions: Sequence[Any]) -> None:
    """The names of the users and groups ``sessions`` (``ContactSessionInfo`` or
    ``UnreadInfo`` entries) name."""
    await client.load_users()
    groups = [s.session_id for s in sessions if s.session_type == B.SESSION_TYPE_GROUP]
    if groups:
        await client.load_groups(groups)


def session_fields(client: Client, s: Any) -> dict[str, object]:
    """What sessions and unread counts print about one session and its latest message."""
    return {
        "session_type": "group" if s.session_type == B.SESSION_TYPE_GROUP else "single",
        "session_id": s.session_id,
        "name": client.session_label(s.session_type, s.session_id),
        "latest_msg_id": s.latest_msg_id,
        "latest_text": readable_text(s.latest_msg_type, s.latest_msg_data, client.aes_key),
    }


async def cmd_sessions(client: Client, args: argparse.Namespace, out: Output) -> None:
    answer = await client.session.get(
        B.CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST,
        Buddy_pb2.IMRecentContactSessionReq(user_id=client.user_id, latest_update_time=0),
    )
    await load_session_names(client, answer.contact_session_list)
    for s in answer.contact_session_list:
        f = session_fields(client, s)
        out.record(
            [f["name"], clock_time(s.updated_time), s.latest_msg_id, f["latest_text"]],
            updated_time=s.updated_time,
            **f,
        )


async def cmd_unread(client: Client, args: argparse.Namespace, out: Output) -> None:
    answer = await client.session.unread_counts()
    await load_session_names(client, answer.unreadinfo_list)
    for u in answer.unreadinfo_list:
        f = session_fields(client, u)
        out.record(
            [f["name"], u.unread_cnt, u.latest_msg_id, f["latest_text"]], unread=u.unread_cnt, **f
        )
    if not out.as_json:
        out.record(["total", answer.total_cnt])


async def cmd_history(client: Client, args: argparse.Namespace, out: Output) -> None:
    peer = await client.resolve(args.peer, args.group)
    session_type = B.SESSION_TYPE_GROUP if args.group else B.SESSION_TYPE_SINGLE
    answer = await client.session.message_list(
        peer, session_type, begin=args.before, count=args.count
    )
    await client.load_users()
    for m in sorted(answer.msg_list, key=lambda m: m.msg_id):  # the server sends newest first
        text = readable_text(m.msg_type, m.msg_data, client.aes_key)
        sender = client.user_name(m.from_session_id)
        out.record(
            [clock_time(m.create_time), m.msg_id, sender, text],
            time=m.create_time,
            msg_id=m.msg_id,
            from_id=m.from_session_id,
            sender=sender,
            text=text,
        )


# --------------------------------------------------------------------------------------
# Contacts (teamtalk_py's extension, docs/EXTENSION.md): each command says hello first


EXTENSION_FEATURES = ("contacts", "rooms")
RELATIONS = {
    X.EXT_RELATION_NONE: "-",
    X.EXT_RELATION_SELF: "self",
    X.EXT_RELATION_FRIEND: "friend",
    X.EXT_RELATION_REQUEST_SENT: "asked",
    X.EXT_RELATION_REQUEST_RECEIVED: "asks-you",
}


def checked(answer: Any, what: str) -> Any:
    """``answer`` if its result code is OK, else ``ClientError`` naming the code."""
    if answer.result_code != X.EXT_RESULT_OK:
        raise ClientError(f"{what} refused: {result_name(answer.result_code)}")
    return answer


async def contacts_of(client: Client) -> ExtensionClient:
    """The connection opted in to contacts; ``ClientError`` where the server has none."""
    extension = ExtensionClient(client.session)
    answer = checked(await extension.hello(["contacts"]), "hello")
    if "contacts" not in answer.features:
        raise ClientError(f"this server offers no contacts (mode {answer.contacts_mode!r})")
    return extension


async def user_id_of(extension: ExtensionClient, who: str) -> int:
    """A user id from a number, or from an exact login name found by search."""
    if who.isdigit():
        return int(who)
    found = checked(await extension.search(who), "search")
    for user in found.users:
        if user.real_name == who:
            return int(user.user_id)
    raise ClientError(f"no user named {who!r}")


def record_brief(out: Output, user: Any, **extra: object) -> None:
    columns = [user.user_id, user.real_name, user.nick_name, *extra.values()]
    out.record(columns, user_id=user.user_id, name=user.real_name, nick=user.nick_name, **extra)


async def cmd_hello(client: Client, args: argparse.Namespace, out: Output) -> None:
    answer = checked(await ExtensionClient(client.session).hello(args.features), "hello")
    out.record(
        [",".join(answer.features) or "-", answer.contacts_mode],
        features=list(answer.features),
        contacts_mode=answer.contacts_mode,
        version=answer.version,
    )


async def cmd_search(client: Client, args: argparse.Namespace, out: Output) -> None:
    extension = await contacts_of(client)
    for user in checked(await extension.search(args.query, args.limit), "search").users:
        record_brief(out, user, relation=RELATIONS.get(user.relation, str(user.relation)))


async def cmd_request(client: Client, args: argparse.Namespace, out: Output) -> None:
    extension = await contacts_of(client)
    to = await user_id_of(extension, args.to)
    answer = checked(await extension.request(to, args.note, args.remark), "friend request")
    out.record([answer.request_id], request_id=answer.request_id, to_user_id=to)


async def cmd_requests(client: Client, args: argparse.Namespace, out: Output) -> None:
    extension = await contacts_of(client)
    answer = checked(await extension.requests(), "request list")
    for direction, requests in (("in", answer.incoming), ("out", answer.outgoing)):
        for r in requests:
            out.record(
                [direction, r.request_id, r.peer.real_name, clock_time(r.create_time), r.note],
                direction=direction,
                request_id=r.request_id,
                from_user_id=r.from_user_id,
                to_user_id=r.to_user_id,
                peer=r.peer.real_name,
                time=r.create_time,
                note=r.note,
            )


async def incoming_request(extension: ExtensionClient, who: str) -> int:
    """A request id as given, or the id of the pending request from the user named."""
    if who.isdigit():
        return int(who)
    for r in checked(await extension.requests(), "request list").incoming:
        if r.peer.real_name == who:
            return int(r.request_id)
    raise ClientError(f"no pending request from {who!r}")


async def cmd_accept(client: Client, args: argparse.Namespace, out: Output) -> None:
    extension = await contacts_of(client)
    request_id = await incoming_request(extension, args.request)
    answer = checked(await extension.accept(request_id, args.remark), "accept")
    record_brief(out, answer.new_friend.user, remark=answer.new_friend.remark)


async def cmd_decline(client: Client, args: argparse.Namespace, out: Output) -> None:
    extension = await contacts_of(client)
    request_id = await incoming_request(extension, args.request)
    checked(await extension.decline(request_id), "decline")
    out.record([request_id], request_id=request_id, declined=True)


async def cmd_remove(client: Client, args: argparse.Namespace, out: Output) -> None:
    extension = await contacts_of(client)
    friend = await user_id_of(extension, args.friend)
    checked(await extension.remove(friend), "remove")
    out.record([friend], user_id=friend, removed=True)


CONTACT_EVENTS: dict[int, str] = {
    X.CID_EXT_FRIEND_REQUEST_NOTIFY: "request",
    X.CID_EXT_FRIEND_ANSWER_NOTIFY: "answer",
    X.CID_EXT_FRIEND_REMOVED_NOTIFY: "removed",
}
REQUEST_STATES: dict[int, str] = {
    X.EXT_REQUEST_PENDING: "pending",
    X.EXT_REQUEST_ACCEPTED: "accepted",
    X.EXT_REQUEST_DECLINED: "declined",
}


async def cmd_watch(client: Client, args: argparse.Namespace, out: Output) -> None:
    """Print friend requests, answers and removals as they arrive (first those that came
    while the user was away), until ``--count`` events or ``--seconds`` have passed."""
    await contacts_of(client)
    seen = 0
    async for pdu in notifications(client.protocol, args.seconds):
        event = CONTACT_EVENTS.get(pdu.command_id)
        if event is None:
            continue
        if event == "removed":
            who = pdu.message.user_id
            out.record([event, who], event=event, user_id=who)
        else:
            r = pdu.message.request
            state = REQUEST_STATES.get(r.state, str(r.state))
            out.record(
                [event, r.request_id, r.peer.real_name, state, r.note],
                event=event,
                request_id=r.request_id,
                from_user_id=r.from_user_id,
                to_user_id=r.to_user_id,
                peer=r.peer.real_name,
                state=state,
                note=r.note,
            )
        seen += 1
        if args.count is not None and seen >= args.count:
            return


async def cmd_friends(client: Client, args: argparse.Namespace, out: Output) -> None:
    extension = await contacts_of(client)
    for f in checked(await extension.friends(), "friend list").friends:
        record_brief(out, f.user, remark=f.remark, since=clock_time(f.since))


# Chat rooms (teamtalk_py's extension): membership is per connection, so each command
# joins the rooms it names and leaves them when it ends.


async def open_rooms(client: Client, room_ids: Sequence[int], out: Output | None) -> Rooms:
    """Opt this connection in to rooms and join ``room_ids`` (printing each join)."""
    rooms = Rooms(client.session)
    try:
        await rooms.opt_in()
        for room_id in room_ids:
            joined = await rooms.join(room_id)
            if out is not None:
                record_joined(out, room_id, joined.member_count)
    except RoomRefused as exc:
        raise ClientError(str(exc)) from None
    return rooms


def record_joined(out: Output, room_id: int, members: int) -> None:
    out.record(["joined", room_id, members], event="joined", room_id=room_id, members=members)


async def print_room_event(client: Client, rooms: Rooms, pdu: Pdu, out: Output) -> bool:
    """Print a post or a removal from a room; False for any other notification."""
    if pdu.command_id == X.CID_EXT_ROOM_REMOVED_NOTIFY:
        room_id = pdu.message.room_id
        reason = X.ExtRoomLeftReason.Name(pdu.message.reason)
        out.record(["removed", room_id, reason], event="removed", room_id=room_id, reason=reason)
        return True
    if pdu.command_id != X.CID_EXT_ROOM_POST_NOTIFY:
        return False
    post = pdu.message
    sender = client.user_name(post.from_user_id)
    text = rooms.text_of(post)
    out.record(
        [clock_time(post.create_time), post.room_id, sender, text],
        event="post",
        time=post.create_time,
        room_id=post.room_id,
        from_id=post.from_user_id,
        sender=sender,
        text=text,
    )
    return True


async def cmd_room_post(client: Client, args: argparse.Namespace, out: Output) -> None:
    """Join the room, post the text (encrypted as messages are), print the server's time
    of the post; the room is left when the connection closes."""
    rooms = await open_rooms(client, [args.room], None)
    try:
        ack = await rooms.post_text(args.room, args.text)
    except RoomRefused as exc:
        raise ClientError(str(exc)) from None
    out.record([ack.create_time], room_id=args.room, create_time=ack.create_time)


async def cmd_room_listen(client: Client, args: argparse.Namespace, out: Output) -> None:
    """Join the rooms and print what is posted there until ``--count`` posts or
    ``--seconds`` have passed (or the connection goes)."""
    await client.load_users()
    rooms = await open_rooms(client, args.rooms, out)
    received = 0
    async for pdu in notifications(client.protocol, args.seconds):
        if await print_room_event(client, rooms, pdu, out):
            received += pdu.command_id == X.CID_EXT_ROOM_POST_NOTIFY
        if args.count is not None and received >= args.count:
            return


async def cmd_room(client: Client, args: argparse.Namespace, out: Output) -> None:
    """A room shell for bots and people: join the rooms named, then run the commands read
    from stdin (``join ID``, ``leave ID``, ``post ID TEXT``), one a line, printing their
    results and every post that arrives meanwhile, until stdin ends."""
    await client.load_users()
    rooms = await open_rooms(client, args.rooms, out)

    async def print_events() -> None:
        async for pdu in notifications(client.protocol, None):
            await print_room_event(client, rooms, pdu, out)

    printer = ensureDeferred(print_events())
    printer.addErrback(lambda f: f.trap(CancelledError, ConnectionLost))
    try:
        while line := await threads.deferToThread(args.stdin.readline):
            await room_shell_line(rooms, line.strip(), out)
    finally:
        printer.cancel()


async def room_shell_line(rooms: Rooms, line: str, out: Output) -> None:
    """Run one ``room`` shell command; a refusal or a bad line is printed, not fatal."""
    if not line or line.startswith("#"):
        return
    verb, _, rest = line.partition(" ")
    room, _, text = rest.strip().partition(" ")
    wants_text = verb == "post"
    if verb not in ("join", "leave", "post") or not room.isdigit() or wants_text != bool(text):
        out.record(["error", line, "expected: join ID | leave ID | post ID TEXT"], error=line)
        return
    room_id = int(room)
    try:
        if verb == "join":
            record_joined(out, room_id, (await rooms.join(room_id)).member_count)
        elif verb == "leave":
            await rooms.leave(room_id)
            out.record(["left", room_id], event="left", room_id=room_id)
        else:
            ack = await rooms.post_text(room_id, text)
            out.record(
                ["posted", room_id, ack.create_time],
                event="posted",
                room_id=room_id,
                create_time=ack.create_time,
            )
    except RoomRefused as exc:
        out.record(["error", line, str(exc)], error=str(exc), line=line)


# --------------------------------------------------------------------------------------
# Command line

LoggedInCommand = Callable[[Client, argparse.Namespace, Output], Awaitable[None]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teamtalk-client",
        description="Talk to a TeamTalk server as a client: send, listen, list, read history.",
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the login server's discovery URL [{DEFAULT_URL}]"
    )
    parser.add_argument("--server", metavar="HOST:PORT", help="a msg server (skips discovery)")
    parser.add_argument("--user", "-u", help="login name")
    parser.add_argument("--password", help=f"password (default ${PASSWORD_ENV}, else asked for)")
    parser.add_argument(
        "--client-type",
        choices=sorted(CLIENT_TYPES),
        default="windows",
        help="log in as this kind of client; a second login of the same kind (PC or "
        "mobile) kicks the first [windows]",
    )
    parser.add_argument(
        "--aes-key",
        default=DEFAULT_AES_KEY.decode(),
        help="the site's 32-character message key (the clients' aesKey) [the shipped one]",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request [10]")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("discover", help="print the msg server the login server offers")
    p.set_defaults(run=cmd_discover, needs_login=False)
    p = commands.add_parser("login", help="log in; print the user's id and name")
    p.set_defaults(run=cmd_login)
    p = commands.add_parser("send", help="send a text message; print its message id")
    p.add_argument("to", help="user name or id (with --group: group name or id)")
    p.add_argument("text", nargs="+", help="the text (words are joined by spaces; - reads stdin)")
    p.add_argument("--group", action="store_true", help="send to a group")
    p.set_defaults(run=cmd_send)
    p = commands.add_parser("listen", help="print incoming messages as they arrive")
    p.add_argument("--count", type=int, help="stop after this many messages")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--read", action="store_true", help="mark each message read")
    p.set_defaults(run=cmd_listen)
    p = commands.add_parser("users", help="list the company directory")
    p.set_defaults(run=cmd_users)
    p = commands.add_parser("sessions", help="list recent sessions with their last message")
    p.set_defaults(run=cmd_sessions)
    p = commands.add_parser("unread", help="list unread counts per session")
    p.set_defaults(run=cmd_unread)
    p = commands.add_parser("history", help="print a session's messages, oldest first")
    p.add_argument("peer", help="user name or id (with --group: group name or id)")
    p.add_argument("--group", action="store_true", help="a group's history")
    p.add_argument("--count", type=int, default=20, help="how many messages [20]")
    p.add_argument(
        "--before", type=int, default=0, metavar="MSG_ID", help="messages up to this id [newest]"
    )
    p.set_defaults(run=cmd_history)
    add_contacts_commands(commands)
    p = commands.add_parser("room-post", help="post a text to a chat room (joins it first)")
    p.add_argument("room", type=int, help="the room id")
    p.add_argument("text", nargs="+", help="the text (words are joined by spaces; - reads stdin)")
    p.set_defaults(run=cmd_room_post)
    p = commands.add_parser("room-listen", help="join chat rooms and print their posts")
    p.add_argument("rooms", type=int, nargs="+", metavar="room", help="room ids")
    p.add_argument("--count", type=int, help="stop after this many posts")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.set_defaults(run=cmd_room_listen)
    p = commands.add_parser(
        "room",
        help="join chat rooms, then run 'join ID', 'leave ID', 'post ID TEXT' lines from "
        "stdin, printing posts as they arrive",
    )
    p.add_argument("rooms", type=int, nargs="*", metavar="room", help="room ids to join first")
    p.set_defaults(run=cmd_room)
    return parser


def add_contacts_commands(commands: Any) -> None:
    """The extension's hello and contacts commands (docs/EXTENSION.md)."""
    p = commands.add_parser("hello", help="opt in to extension features; print those granted")
    p.add_argument("features", nargs="*", default=list(EXTENSION_FEATURES),
                   help=f"features to ask for [{' '.join(EXTENSION_FEATURES)}]")  # fmt: skip
    p.set_defaults(run=cmd_hello)
    p = commands.add_parser("search", help="find users by name (contacts)")
    p.add_argument("query", help="part of a login name, nickname or real name")
    p.add_argument("--limit", type=int, default=0, help="most results [the server's maximum]")
    p.set_defaults(run=cmd_search)
    p = commands.add_parser("request", help="ask a user to become a friend")
    p.add_argument("to", help="user name or id")
    p.add_argument("--note", default="", help="a note shown to them")
    p.add_argument("--remark", default="", help="your name for them, kept once accepted")
    p.set_defaults(run=cmd_request)
    p = commands.add_parser("requests", help="list pending friend requests, in and out")
    p.set_defaults(run=cmd_requests)
    p = commands.add_parser("accept", help="accept a friend request")
    p.add_argument("request", help="request id, or the asker's user name")
    p.add_argument("--remark", default="", help="your name for the new friend")
    p.set_defaults(run=cmd_accept)
    p = commands.add_parser("decline", help="decline a friend request")
    p.add_argument("request", help="request id, or the asker's user name")
    p.set_defaults(run=cmd_decline)
    p = commands.add_parser("remove", help="end a friendship")
    p.add_argument("friend", help="user name or id")
    p.set_defaults(run=cmd_remove)
    p = commands.add_parser("friends", help="list friends with your remarks")
    p.set_defaults(run=cmd_friends)
    p = commands.add_parser(
        "watch", help="print friend requests, answers and removals as they arrive"
    )
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.set_defaults(run=cmd_watch)


async def close(reactor: IReactorTime, protocol: TeamTalkClientProtocol) -> None:
    """Close the connection once what was written has gone out: the reactor stops right
    after the command, and a read ack still in the write buffer would be lost."""
    closed: Deferred[BaseException] = protocol.closed
    protocol.transport.loseConnection()
    closed.addTimeout(5, reactor)
    with contextlib.suppress(defer.TimeoutError):
        await closed


def parse_args(argv: Sequence[str], stdin: TextIO | None = None) -> argparse.Namespace:
    """The parsed command line; the words of ``send`` joined, ``-`` read from ``stdin``.
    Exits with status 2 (argparse's) on bad usage."""
    args = build_parser().parse_args(argv)
    args.stdin = stdin or sys.stdin
    if getattr(args, "text", None) is not None:
        args.text = " ".join(args.text)
        if args.text == "-":
            args.text = (stdin or sys.stdin).read().rstrip("\n")
    if args.password is None:
        args.password = os.environ.get(PASSWORD_ENV)
    return args


async def run(
    reactor: IReactorTime, args: argparse.Namespace, stdout: TextIO, stderr: TextIO
) -> int:
    """Run the parsed command; the exit status."""
    out = Output(stdout, args.json)
    try:
        if not getattr(args, "needs_login", True):
            await args.run(reactor, args, out)
            return 0
        if not args.user:
            stderr.write(f"teamtalk-client: {args.command} needs --user\n")
            return 2
        if args.password is None:
            stderr.write(f"teamtalk-client: give --password or set ${PASSWORD_ENV}\n")
            return 2
        client = await open_client(reactor, args, args.password)
        try:
            command: LoggedInCommand = args.run
            await command(client, args, out)
        finally:
            await close(reactor, client.protocol)
    except (ClientError, DiscoveryError, DiscoveryFormatError) as exc:
        stderr.write(f"teamtalk-client: {exc}\n")
        return 1
    except (ConnectError, ConnectionLost, TimeoutError, OSError) as exc:
        stderr.write(f"teamtalk-client: {exc.__class__.__name__}: {exc}\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: parse, ask for the password if needed, run the reactor until
    the command is done, exit with its status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    needs_login = getattr(args, "needs_login", True)
    if needs_login and args.user and args.password is None and sys.stdin.isatty():
        args.password = getpass.getpass(f"password for {args.user}: ")

    async def command(reactor: Any) -> None:
        status = await run(reactor, args, sys.stdout, sys.stderr)
        if status:
            raise SystemExit(status)

    react(lambda reactor: ensureDeferred(command(reactor)))


if __name__ == "__main__":
    main()
