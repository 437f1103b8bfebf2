"""Helpers for media tests: raw HTTP exchanges and the shipped clients' upload bodies.

Each ``*_upload`` function builds the request exactly as one shipped TeamTalk client
writes it (mogujie/TeamTalk: Android ``MoGuHttpClient.uploadImage3``, iOS
``DDSendPhotoMessageAPI`` and mac ``DDImageUploader`` through AFNetworking, Windows
``SendImgHttpOperation`` through its own ``HttpClient``), byte for byte where the client
fixes the bytes; the PHP admin is replayed with the real ``curl`` (its ``CurlFile``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from twisted.internet import threads


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def mime(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


def exchange(host: str, port: int, request: bytes, timeout: float = 10.0) -> Response:
    """Send ``request`` on a fresh connection; read one response (blocking)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before the headers: {data!r}")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        no_body = request.startswith(b"HEAD ") or status in (204, 304)
        length = 0 if no_body else int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return Response(status, headers, body)


async def http(url: str, request_head: str, body: bytes = b"") -> Response:
    """``request_head`` is the request line and headers (CRLF-joined, no blank line)."""
    parts = urlsplit(url)
    raw = request_head.encode("latin-1") + b"\r\n\r\n" + body
    return await threads.deferToThread(exchange, parts.hostname, parts.port, raw)


async def get(url: str, headers: str = "", method: str = "GET") -> Response:
    parts = urlsplit(url)
    head = f"{method} {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}"
    if headers:
        head += "\r\n" + headers
    return await http(url, head)


def picture(size: int = 4000) -> bytes:
    """Random bytes framed as a JPEG (SOI ... EOI): what the server sniffs as image/jpeg."""
    return b"\xff\xd8\xff\xe0" + os.urandom(size - 6) + b"\xff\xd9"


def android_upload(url: str, data: bytes, path: str) -> tuple[str, bytes]:
    boundary = "---------7d4a6d158c9"
    name = path.rsplit("/", 1)[-1]
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data;name="file0";filename="{name}"\r\n'
            "Content-Type:application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n\r\n--{boundary}--\r\n".encode()
    )
    parts = urlsplit(url)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\n"
        "connection: Keep-Alive\r\n"
        "user-agent: Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)\r\n"
        "Charsert: UTF-8\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Host: {parts.netloc}\r\n"
        f"Content-Length: {len(body)}"
    )
    return head, body


def afnetworking_upload(url: str, data: bytes, filename: str) -> tuple[str, bytes]:
    """iOS and mac: a ``type=im_image`` part, then ``image`` (AFMultipartFormData)."""
    boundary = f"Boundary+{secrets.token_hex(8).upper()}"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="type"\r\n\r\n'
            "im_image"
            f"\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    parts = urlsplit(url)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        "Accept-Language: zh-Hans;q=1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "User-Agent: TeamTalk/1.0 (iPhone; iOS 8.0; Scale/2.00)\r\n"
        f"Content-Length: {len(body)}"
    )
    return head, body


def windows_upload(
    msfs: str, data: bytes, local_name: str, w: int, h: int
) -> tuple[str, str, bytes]:
    """Windows posts to ``<msfs>upload/`` a file named ``<name>_<W>x<H><ext>``."""
    url = msfs + "upload/"
    ext = "." + local_name.rsplit(".", 1)[1]
    boundary = "----__" + "".join(secrets.choice("abcdefghij0123456789") for _ in range(14))
    filename = f"{local_name}_{w}x{h}{ext}"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: image/{ext}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}"
    )
    return url, head, body
