"""Dependencies a test can take away and give back: a Redis of its own and a TCP proxy.

The machine's shared Redis (6379) and MariaDB (3306) serve every engineer's and CI's tests
at once, so a fault test never stops them. Instead it runs:

* ``OwnRedis``: a ``redis-server`` of its own on a free loopback port, stopped (SIGKILL, as
  a crash would) and started again on the same port, empty (no persistence), as a Redis
  restarted without a disk would be;
* ``TcpProxy``: a loopback port that forwards to a real server (MariaDB, route):
  ``close()`` refuses new connections and cuts the open ones (the database is
  unreachable), ``open()`` forwards again on the same port; ``hold()`` stops passing what
  the clients send (it stays unread in their sockets, as bytes a crashing process had
  written but nobody received) while the other way goes on, ``release()`` passes it
  again. It runs in a thread of its own, so a test on the Twisted reactor and a benchmark
  without one can both use it.
"""

from __future__ import annotations

import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time

from teamtalk_testing.ports import LOOPBACK, free_port

__all__ = ["OwnRedis", "TcpProxy"]


class OwnRedis:
    """A ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (again, on the same port) and wait until it accepts connections."""
        if self.running:
            raise RuntimeError("own redis-server is already running")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((LOOPBACK, self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        raise RuntimeError(f"own redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: gone at once, with everything it held."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port`` in a thread of its own.

    ``close()`` stops listening and resets every open connection (the clients see the
    server vanish); ``open()`` listens on the same port again. ``hold()``: what clients
    send is no longer read (new connections' too) until ``release()``; the server's side
    still reaches them. ``stop()`` ends the thread.
    """

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._peers: dict[socket.socket, socket.socket] = {}
        #: The client side of each connection, and whether their bytes are held.
        self._clients: set[socket.socket] = set()
        self._held = False
        self._pending: list[tuple[str, socket.socket | None, threading.Event]] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    # -- the test's side ---------------------------------------------------------------

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(128)
        listener.setblocking(False)
        self._command("open", listener)

    def close(self) -> None:
        self._command("close", None)

    def hold(self) -> None:
        self._command("hold", None)

    def release(self) -> None:
        self._command("release", None)

    def stop(self) -> None:
        self.close()
        self._running = False
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        self._wake_w.close()

    def _command(self, what: str, sock: socket.socket | None) -> None:
        done = threading.Event()
        with self._lock:
            self._pending.append((what, sock, done))
        self._wake_w.send(b"x")
        done.wait(timeout=5)

    # -- the thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        while self._running:
            for key, _ in self._selector.select(timeout=0.5):
                if key.data == "wake":
                    self._apply_commands()
                elif key.data == "listen":
                    self._accept()
                else:
                    self._forward(key.fileobj)  # type: ignore[arg-type]
        self._close_all()
        self._selector.close()

    def _apply_commands(self) -> None:
        try:
            self._wake_r.recv(4096)
        except BlockingIOError:
            pass
        with self._lock:
            pending, self._pending = self._pending, []
        for what, sock, done in pending:
            if what == "open" and sock is not None:
                self._listener = sock
                self._selector.register(sock, selectors.EVENT_READ, "listen")
            elif what == "close":
                self._close_all()
            elif what in ("hold", "release") and self._held != (what == "hold"):
                self._held = what == "hold"
                for client in self._clients:
                    if self._held:
                        self._selector.unregister(client)
                    else:
                        self._selector.register(client, selectors.EVENT_READ, "peer")
            done.set()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client], self._peers[server] = server, client
        self._clients.add(client)
        if not self._held:
            self._selector.register(client, selectors.EVENT_READ, "peer")
        self._selector.register(server, selectors.EVENT_READ, "peer")

    def _forward(self, sock: socket.socket) -> None:
        other = self._peers.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                other.setblocking(True)
                other.sendall(data)
                other.setblocking(False)
                return
        except OSError:
            pass
        self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        other = self._peers.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._peers.pop(s, None)
            self._clients.discard(s)
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            _reset(s)

    def _close_all(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        for sock in list(self._peers):
            self._drop(sock)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a vanished server looks to its clients."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()
