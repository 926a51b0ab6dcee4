"""Loopback servers in daemon threads: the emulators' and the push receiver's shared plumbing."""

from __future__ import annotations

import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(server: socketserver.BaseServer, name: str) -> socketserver.BaseServer:
    """Run ``server`` in a daemon thread (handler threads are daemons too) and return it."""
    if isinstance(server, socketserver.ThreadingMixIn):
        server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True).start()
    return server


def start_http(handler: type[BaseHTTPRequestHandler], name: str, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threading HTTP server on ``host:port`` (port 0: any free one), already serving."""
    return serve(ThreadingHTTPServer((host, port), handler), name)  # type: ignore[return-value]


def stop(server: socketserver.BaseServer | None) -> None:
    """Stop serving and release the socket; safe to call with None."""
    if server is not None:
        server.shutdown()
        server.server_close()
