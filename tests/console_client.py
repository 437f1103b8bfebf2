"""A TeamTalk desktop client for the web console's browser tests, run as its own process
(the browser test drives Chromium synchronously, so the client cannot share its thread):

    python -m tests.console_client PORT NAME PASSWORD

It logs in with ``teamtalk_client`` as a Windows client, then prints one JSON object per
line and flushes each, so the test can wait for them:

* ``{"event": "login", "result_code": N, "user_id": N}`` — the login answer;
* ``{"event": "pdu", "command": "CID_...", "command_id": N, ...}`` — every notification
  the server sends (a kick adds its ``reason``);
* ``{"event": "closed"}`` — the server closed the connection.

It exits 0 once the connection is closed (1 when the login is refused).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import react

from teamtalk_client import TeamTalkSession, command_name, connect
from teamtalk_py.pb.IM import BaseDefine_pb2 as B


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def run(reactor: Any, port: int, name: str, password: str) -> None:
    protocol = await connect(reactor, "127.0.0.1", port)
    session = TeamTalkSession(protocol)
    answer = await session.login(name, password, client_type=B.CLIENT_TYPE_WINDOWS)
    say(event="login", result_code=answer.result_code, user_id=session.user_id or 0)
    if answer.result_code != B.REFUSE_REASON_NONE:
        raise SystemExit(1)
    while True:
        try:
            pdu = await protocol.notifications.get()
        except (ConnectionDone, ConnectionLost):
            break
        fields: dict[str, Any] = {"command": command_name(pdu.command_id)}
        if pdu.command_id == B.CID_LOGIN_KICK_USER:
            fields["reason"] = pdu.message.kick_reason
            fields["user_id"] = pdu.message.user_id
        say(event="pdu", command_id=pdu.command_id, **fields)
    await protocol.closed
    say(event="closed")


def main() -> None:
    port, name, password = sys.argv[1:4]
    react(lambda reactor: ensureDeferred(run(reactor, int(port), name, password)))


if __name__ == "__main__":
    main()
