"""The guards of every HTTP listener (login, ops, media, disk; ``teamtalk_py.web``) over
real sockets: ``/msg_server`` answers GET and HEAD only, a body over the limit is refused
at once from its ``Content-Length`` (or when a chunked one passes it), and headers that
trickle in are cut off at the header deadline.

The clients are plain blocking sockets on a thread, so what the server sends (and when
it closes) is seen byte for byte.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence

from twisted.internet import threads

from tests.support import TestCase, local_config, start_server

#: What the test's server gives a client for its headers (the default is 10 s).
HEADER_TIMEOUT = 1.0
HUGE = 10**12


def exchange(
    port: int, data: bytes, *, then: Sequence[bytes] = (), pause: float = 0.0
) -> tuple[bytes, float]:
    """Send ``data`` (and each of ``then`` after ``pause`` seconds, while the server keeps
    the connection), read until the server closes; what came back and how long after the
    first byte was sent the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        started = time.monotonic()
        s.sendall(data)
        for piece in then:
            time.sleep(pause)
            try:
                s.sendall(piece)
            except OSError:
                break  # closed by the server
        answer = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        return answer, time.monotonic() - started


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


class HttpGuardTests(TestCase):
    async def start(self):
        config = local_config(self.tmp_path(), **{"server.http_header_timeout": HEADER_TIMEOUT})
        self.server = await start_server(config)
        self.addCleanup(self.server.stop)
        self.ports = {
            "login": (self.server.http_port, b"/msg_server"),
            "ops": (self.server.service("ops").bound_port(), b"/metrics"),
            "media": (self.server.service("media").bound_port(), b"/api/v1/token"),
            "disk": (self.server.service("disk").bound_port(), b"/login"),
        }

    async def run_exchange(self, port: int, data: bytes, **kwargs) -> tuple[bytes, float]:
        return await threads.deferToThread(exchange, port, data, **kwargs)

    async def test_msg_server_answers_get_and_head_only(self):
        """GET /msg_server is the discovery answer, HEAD its headers without a body, and
        POST, PUT, DELETE, PATCH and OPTIONS are 405 with ``Allow: GET, HEAD``."""
        await self.start()
        port = self.server.http_port
        answer, _ = await self.run_exchange(
            port, b"GET /msg_server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status_of(answer) == 200, answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == 0
        answer, _ = await self.run_exchange(
            port, b"HEAD /msg_server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert status_of(answer) == 200, answer
        assert answer.endswith(b"\r\n\r\n"), answer  # no body
        for method in (b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"):
            answer, _ = await self.run_exchange(
                port,
                method + b" /msg_server HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                b"Connection: close\r\n\r\n{}",
            )
            assert status_of(answer) == 405, (method, answer)
            assert b"\r\nAllow: GET, HEAD\r\n" in answer, answer
            assert b'"priorIP"' not in answer

    async def test_a_huge_content_length_is_refused_at_once_on_every_listener(self):
        """A request announcing 1 TB to a route that takes no big body is answered 413
        without the server waiting for the body, and the connection is closed."""
        await self.start()
        for name, (port, path) in self.ports.items():
            answer, elapsed = await self.run_exchange(
                port,
                b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n{" % HUGE,
            )
            assert status_of(answer) == 413, (name, answer)
            assert elapsed < HEADER_TIMEOUT, (name, elapsed)

    async def test_a_huge_upload_is_refused_at_once_by_its_route(self):
        """Streaming routes (a msfs picture, the cloud disk's /upload) refuse 1 TB from
        the headers with their own answer and close, without reading the body."""
        await self.start()
        for name, path in (("media", b"/"), ("disk", b"/upload")):
            port = self.ports[name][0]
            answer, elapsed = await self.run_exchange(
                port,
                b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: %d\r\n\r\n--b\r\n" % HUGE,
            )
            assert status_of(answer) == 200, (name, answer)  # their protocols' error answer
            assert b"Connection: close" in answer, answer
            assert elapsed < HEADER_TIMEOUT, (name, elapsed)

    async def test_a_chunked_body_is_cut_off_past_the_limit(self):
        """A chunked body with no length is refused (413, closed) once it passes 64 KiB."""
        await self.start()
        chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
        for name, (port, path) in self.ports.items():
            answer, _ = await self.run_exchange(
                port,
                b"POST "
                + path
                + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunk * 5,
                then=[chunk] * 20,
                pause=0.01,
            )
            assert status_of(answer) == 413, (name, answer)

    async def test_headers_that_trickle_are_cut_off_at_the_deadline(self):
        """A client sending a header line every 0.2 s (each resets any idle timer) is
        disconnected at the header deadline (1 s here), on every listener."""
        await self.start()
        for name, (port, path) in self.ports.items():
            answer, elapsed = await self.run_exchange(
                port,
                b"GET " + path + b" HTTP/1.1\r\n",
                then=[b"X-Slow-%d: y\r\n" % i for i in range(25)],
                pause=0.2,
            )
            assert answer == b"", (name, answer)
            assert HEADER_TIMEOUT <= elapsed < HEADER_TIMEOUT + 2.0, (name, elapsed)

    async def test_the_deadline_applies_again_to_the_next_request_of_a_kept_connection(self):
        """After an answer on a kept-alive connection the next request's headers get the
        same deadline (a connection cannot sit half-way through a request)."""
        await self.start()
        port = self.server.http_port
        answer, elapsed = await self.run_exchange(
            port,
            b"GET /msg_server HTTP/1.1\r\nHost: x\r\n\r\nGET /msg_server HTTP/1.1\r\n",
            then=[b"X-Slow-%d: y\r\n" % i for i in range(25)],
            pause=0.2,
        )
        assert status_of(answer) == 200 and answer.count(b"HTTP/1.1 200") == 1, answer
        assert HEADER_TIMEOUT <= elapsed < HEADER_TIMEOUT + 2.0, elapsed
