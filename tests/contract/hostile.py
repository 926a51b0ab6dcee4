"""Hostile loopback servers for the hardening tests: one that drips its answer, one that redirects.

Both stop by themselves (the drip is bounded) and record what reached them, so a test can assert
that a client gave up early (the drip server saw the connection cut before it finished) or that a
redirect target received nothing.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler

from connector import loopback


class DripServer:
    """Answers every connection by sending ``answer`` one byte every ``interval`` seconds.

    ``http`` reads the request (headers and a Content-Length body) first; otherwise (SMTP) the
    answer starts at once, as a greeting. ``cut_early`` counts connections the client closed
    before the whole answer was sent.
    """

    def __init__(self, answer: bytes, *, interval: float = 0.2, http: bool = True, host: str = "127.0.0.1"):
        self.answer = answer
        self.interval = interval
        self.http = http
        self.connections = 0
        self.cut_early = 0
        self.completed = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = loopback.serve(Server((host, 0), Handler), "drip")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def stop(self) -> None:
        loopback.stop(self._server)

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        sock.settimeout(10)
        if self.http:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                body += chunk
        try:
            for i in range(len(self.answer)):
                sock.sendall(self.answer[i:i + 1])
                time.sleep(self.interval)
        except OSError:
            with self._lock:
                self.cut_early += 1
            return
        with self._lock:
            self.completed += 1


def http_answer(body: bytes, content_type: str = "application/json") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


class Recorder:
    """A loopback HTTP server that records every request it gets (the redirect target)."""

    def __init__(self, host: str = "127.0.0.2", *, body: bytes = b'{"status":"success","result":{}}',
                 content_type: str = "application/json"):
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                owner.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(n) if n else b""))
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = loopback.start_http(Handler, "recorder", host=host)

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        loopback.stop(self._server)


class Redirector:
    """Answers every request with ``status`` and ``Location: target + path``."""

    def __init__(self, target: str, status: int = 307):
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _any(self) -> None:
                owner.hits += 1
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                self.send_response(status)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = loopback.start_http(Handler, "redirector")

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        loopback.stop(self._server)
