"""The single route server's ceiling, measured on the route alone.

Every cross-node message and every status change of a cluster passes one route process.
Through real msg nodes that route is never the bottleneck on a small machine (the nodes
and the database are), so its own limit does not show. This probe links to the route
port as two msg nodes of its own (the cluster secret's handshake, ``wire/link_auth.py``):
node A announces sender X online, node B receiver Y; then A sends one-to-one
``CID_MSG_DATA`` packets from X to Y as fast as the route takes them and B counts what
arrives. The route decodes each packet, looks up Y's holders and writes it to B, as it
does for every relayed chat message. Packets/s received and the route process's CPU per
packet over the same window are the figures; 1e6 / (µs per packet) is what one full core
would relay.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import Any

from teamtalk_py.pb.IM import BaseDefine_pb2 as B
from teamtalk_py.pb.IM import Message_pb2, Server_pb2
from teamtalk_py.protocol.header import HEADER_SIZE, pack_pdu
from teamtalk_py.wire.link_auth import (
    CID_LINK_CHALLENGE,
    CID_LINK_CONFIRM,
    CID_LINK_RESPONSE,
    LinkAuth,
)
from teamtalk_py.wire.protocol import encode

#: Ids far above any bench user: the probe's users are known to the route only.
SENDER, RECEIVER = 2_000_000_001, 2_000_000_002
#: Packets written per send call (a busy node writes many per reactor turn too).
PER_WRITE = 64
_LENGTH = struct.Struct(">I")


class _Link:
    """A blocking route link of one fake msg node."""

    def __init__(self, host: str, port: int, auth: LinkAuth) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        command, nonce = self._read_pdu()
        if command != CID_LINK_CHALLENGE:
            raise RuntimeError(f"route sent {command:#x} instead of a challenge")
        mine = os.urandom(len(nonce))
        proof = auth.client_proof("route", nonce, mine)
        self.sock.sendall(pack_pdu(B.SID_OTHER, CID_LINK_RESPONSE, mine + proof))
        command, body = self._read_pdu()
        if command != CID_LINK_CONFIRM or body != auth.server_proof("route", nonce, mine):
            raise RuntimeError("the route did not confirm the link")

    def _read_pdu(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= HEADER_SIZE:
                (length,) = _LENGTH.unpack_from(self.buffer)
                if len(self.buffer) >= length:
                    pdu, self.buffer = self.buffer[:length], self.buffer[length:]
                    command = struct.unpack_from(">H", pdu, 10)[0]
                    return command, pdu[HEADER_SIZE:]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the route closed the link")
            self.buffer += chunk

    def online(self, user_id: int) -> None:
        info = Server_pb2.IMOnlineUserInfo()
        info.user_stat_list.add(user_id=user_id, status=B.USER_STATUS_ONLINE,
                                client_type=B.CLIENT_TYPE_WINDOWS)  # fmt: skip
        self.sock.sendall(encode(B.CID_OTHER_ONLINE_USER_INFO, info))

    def close(self) -> None:
        self.sock.close()


def _count_packets(link: _Link, counts: list[int], stop: threading.Event) -> None:
    """Count the relayed chat packets arriving on ``link`` until ``stop``."""
    link.sock.settimeout(0.5)
    buffer = bytearray(link.buffer)
    while not stop.is_set():
        try:
            chunk = link.sock.recv(1 << 20)
        except TimeoutError:
            continue
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        offset = 0
        while len(buffer) - offset >= HEADER_SIZE:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if len(buffer) - offset < length:
                break
            if struct.unpack_from(">H", buffer, offset + 10)[0] == B.CID_MSG_DATA:
                counts[0] += 1
            offset += length
        del buffer[:offset]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probe_route(
    host: str, port: int, secret: bytes, route_pid: int, seconds: float = 10.0, size: int = 64
) -> dict[str, Any]:
    """Relay one-to-one packets through the route for ``seconds`` (after one second of
    warm-up); packets/s, the route process's CPU and µs per packet over that window."""
    auth = LinkAuth(secret)
    sender, receiver = _Link(host, port, auth), _Link(host, port, auth)
    try:
        sender.online(SENDER)
        receiver.online(RECEIVER)
        time.sleep(0.5)  # both lists applied: no packet is parked for a missing user
        message = Message_pb2.IMMsgData(
            from_user_id=SENDER, to_session_id=RECEIVER, msg_id=1, create_time=1,
            msg_type=B.MSG_TYPE_SINGLE_TEXT, msg_data=b"x" * size,
        )  # fmt: skip
        burst = encode(B.CID_MSG_DATA, message) * PER_WRITE
        counts = [0]
        stop = threading.Event()
        reader = threading.Thread(target=_count_packets, args=(receiver, counts, stop))
        reader.start()
        sent = 0
        try:
            warm_until = time.monotonic() + 1.0
            while time.monotonic() < warm_until:
                sender.sock.sendall(burst)
                sent += PER_WRITE
            start, received_before = time.monotonic(), counts[0]
            cpu_before = _cpu_seconds(route_pid)
            end = start + seconds
            while time.monotonic() < end:
                sender.sock.sendall(burst)
                sent += PER_WRITE
            received = counts[0] - received_before
            cpu = _cpu_seconds(route_pid) - cpu_before
            wall = time.monotonic() - start
        finally:
            stop.set()
            reader.join(5)
    finally:
        sender.close()
        receiver.close()
    per_packet = round(cpu * 1e6 / received, 1) if received else None
    return {
        "seconds": round(wall, 2),
        "payload_bytes": size,
        "sent": sent,
        "received": received,
        "relayed_per_second": round(received / wall) if wall > 0 else None,
        "route_cpu_percent": round(cpu * 100 / wall, 1) if wall > 0 else None,
        "route_cpu_us_per_packet": per_packet,
        "ceiling_per_second_at_one_core": round(1e6 / per_packet) if per_packet else None,
    }
