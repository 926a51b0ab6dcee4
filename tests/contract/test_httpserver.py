"""The shared inbound HTTP server (connector.httpserver) over loopback: peers, deadlines, caps, routes."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest

from connector.httpserver import HttpRequest, HttpResponse, HttpServer


def _wait_until(condition, limit: float = 30.0) -> None:
    """Wait for the server's loop to catch up (a safety bound, not a speed assertion)."""
    end = time.monotonic() + limit
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def server():
    srv = HttpServer("127.0.0.1:0", header_seconds=0.5, body_seconds=0.5, max_connections=4, max_body_bytes=1000)
    srv.add_route("POST", "/first/{token}", lambda r: HttpResponse(200, b'{"who":"first","token":"%s"}' % r.params["token"].encode()))

    async def second(r: HttpRequest) -> HttpResponse:
        return HttpResponse(201, r.body, content_type="text/plain")

    srv.add_route("POST", "/second/hook", second)
    srv.start()
    yield srv
    srv.stop()


def post(srv: HttpServer, path: str, body: bytes = b"x") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*srv.address, timeout=10)
    try:
        conn.request("POST", path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_routes_of_several_adapters_share_one_server(server) -> None:
    assert post(server, "/first/abc%20d") == (200, b'{"who":"first","token":"abc d"}')
    assert post(server, "/second/hook", b"payload") == (201, b"payload")
    assert post(server, "/third")[0] == 404
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    conn.request("GET", "/second/hook")
    assert conn.getresponse().status == 405
    conn.close()


def test_an_allowed_peer_that_drips_its_headers_is_cut_within_the_header_deadline(server) -> None:
    slow = socket.create_connection(server.address, timeout=10)
    try:
        slow.sendall(b"POST /first/abc HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        assert post(server, "/first/ok")[0] == 200  # others are served meanwhile
        assert _closed_by_server(slow)
        assert server.cut_slow == 1
    finally:
        slow.close()


def test_a_body_that_does_not_arrive_in_time_is_answered_408_and_an_oversized_one_413(server) -> None:
    s = socket.create_connection(server.address, timeout=10)
    try:
        s.sendall(b"POST /second/hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        assert s.recv(100).startswith(b"HTTP/1.1 408")
    finally:
        s.close()
    assert post(server, "/second/hook", b"x" * 1001)[0] == 413
    s = socket.create_connection(server.address, timeout=10)
    try:
        s.sendall(b"POST /second/hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 411")
    finally:
        s.close()


def test_connections_over_the_cap_are_closed_at_accept(server) -> None:
    idle = [socket.create_connection(server.address, timeout=10) for _ in range(4)]
    try:
        _wait_until(lambda: server.active == 4)
        extra = socket.create_connection(server.address, timeout=10)
        assert _closed_by_server(extra) and server.refused_busy == 1
        extra.close()
    finally:
        for s in idle:
            s.close()


def test_peers_outside_the_allow_list_are_closed_before_anything_is_read() -> None:
    srv = HttpServer("127.0.0.1:0", ["127.0.0.2/32"])
    seen: list[str] = []
    srv.add_route("POST", "/hook", lambda r: seen.append(r.peer) or HttpResponse(200))
    srv.start()
    try:
        outsider = socket.create_connection(srv.address, timeout=10, source_address=("127.0.0.3", 0))
        assert _closed_by_server(outsider) and srv.refused_peers == 1
        outsider.close()
        conn = http.client.HTTPConnection(*srv.address, timeout=10, source_address=("127.0.0.2", 0))
        conn.request("POST", "/hook", body=b"x")
        assert conn.getresponse().status == 200 and seen == ["127.0.0.2"]
        conn.close()
    finally:
        srv.stop()
    assert not srv.allowed("127.0.0.1") and srv.allowed("127.0.0.2") and not srv.allowed("junk")


def test_stop_lets_a_running_handler_finish() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(r: HttpRequest) -> HttpResponse:
        started.set()
        release.wait(10)
        return HttpResponse(200, b"done")

    srv = HttpServer("127.0.0.1:0")
    srv.add_route("POST", "/slow", slow)
    srv.start()
    result: list = []
    client = threading.Thread(target=lambda: result.append(post(srv, "/slow")))
    client.start()
    assert started.wait(10)
    stopper = threading.Thread(target=srv.stop, kwargs={"grace": 10})
    stopper.start()
    release.set()
    stopper.join(20)
    client.join(20)
    assert result == [(200, b"done")]
    with pytest.raises(OSError):
        socket.create_connection(srv.address, timeout=2)
