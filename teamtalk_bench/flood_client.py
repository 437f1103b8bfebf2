"""A hostile client for the ``flood`` benchmark and the abuse tests, run as its own process
(so that it competes for the CPU like a real one, not inside the caller's reactor):

    python -m teamtalk_bench.flood_client PORT NAME PASSWORD TO_ID SECONDS MODE [HOST]

* ``MODE=flood``: send 60 KB messages as fast as the socket takes them, read the acks on
  a second thread, log in again whenever the server closes the connection; print JSON:
  ``{"sent", "accepted", "accepted_by_second", "connections"}``.
* ``MODE=stall``: the same flood, but never read anything (a slow reader as well).

Blocking sockets and the protobuf classes only: no Twisted, no client library.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Login_pb2, Message_pb2

HEADER = struct.Struct(">IHHHHHH")
PAYLOAD = 60 * 1024


def pdu(command_id: int, body: bytes, seq: int) -> bytes:
    return HEADER.pack(16 + len(body), 1, 0, command_id >> 8, command_id, seq & 0xFFFF, 0) + body


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = _read(sock, 16)
    length, _, _, _, command_id, _, _ = HEADER.unpack(header)
    return command_id, _read(sock, length - 16)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def log_in(port: int, name: str, password: str, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = Login_pb2.IMLoginReq(
        user_name=name,
        password=hashlib.md5(password.encode()).hexdigest(),
        online_status=B.USER_STATUS_ONLINE,
        client_type=B.CLIENT_TYPE_WINDOWS,
        client_version="flood",
    )
    sock.sendall(pdu(B.CID_LOGIN_REQ_USERLOGIN, request.SerializeToString(), 1))
    while True:
        command_id, body = read_pdu(sock)
        if command_id == B.CID_LOGIN_RES_USERLOGIN:
            answer = Login_pb2.IMLoginRes.FromString(body)
            if answer.result_code != 0:
                raise SystemExit(f"login refused: {answer.result_string}")
            sock.settimeout(None)
            return sock


def main() -> None:
    port, name, password, to_id, seconds, mode = sys.argv[1:7]
    host = sys.argv[7] if len(sys.argv) > 7 else "127.0.0.1"
    deadline = time.monotonic() + float(seconds)
    started = time.monotonic()
    stats = {"sent": 0, "accepted": 0, "connections": 0}
    by_second: dict[str, int] = {}
    lock = threading.Lock()

    def read_acks(sock: socket.socket) -> None:
        try:
            while True:
                command_id, body = read_pdu(sock)
                if command_id != B.CID_MSG_DATA_ACK:
                    continue
                if Message_pb2.IMMsgDataAck.FromString(body).msg_id:
                    second = str(int(time.monotonic() - started))
                    with lock:
                        stats["accepted"] += 1
                        by_second[second] = by_second.get(second, 0) + 1
        except (OSError, ConnectionError):
            pass

    seq = 0
    while time.monotonic() < deadline:
        sock = log_in(int(port), name, password, host)
        stats["connections"] += 1
        if mode == "flood":
            threading.Thread(target=read_acks, args=(sock,), daemon=True).start()
        else:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while time.monotonic() < deadline:
                seq += 1
                message = Message_pb2.IMMsgData(
                    from_user_id=0,
                    to_session_id=int(to_id),
                    msg_id=0,
                    create_time=seq,
                    msg_type=B.MSG_TYPE_SINGLE_TEXT,
                    msg_data=os.urandom(PAYLOAD),
                )
                sock.sendall(pdu(B.CID_MSG_DATA, message.SerializeToString(), seq))
                stats["sent"] += 1
        except OSError:
            pass  # closed by the server (or stalled until the deadline): start over
        finally:
            sock.close()
    time.sleep(0.2)
    with lock:
        print(json.dumps({**stats, "accepted_by_second": by_second}))


if __name__ == "__main__":
    main()
