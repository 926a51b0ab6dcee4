"""Receiver for Binotel's ``apiCallCompleted`` webhook: completed calls arrive within seconds.

Binotel signs nothing, so the receiver trusts only what it can check itself: the socket peer
(never ``X-Forwarded-For``) must be in ``push.allow_from`` (loopback only when empty), the path must
be ``/binotel/<token>`` with the configured secret token (compared in constant time), and the body
must be small and well-formed. Bodies are form-encoded with PHP-style brackets
(``callDetails[historyData][0][disposition]=ANSWER``); JSON is accepted too.

The call is handed to ``on_calls`` *before* the answer, and only a successful hand-over answers
the literal ``{"status":"success"}``: anything else makes Binotel redeliver, and a redelivery
repeats ``generalCallID``, which the core upserts, so a replay changes nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from binotel.mapping import call_from_wire
from connector import loopback
from connector.config import BinotelPush
from connector.domain import Call
from connector.errors import RecordError
from connector.redact import add_secret

log = logging.getLogger("binotel.push")

SUCCESS_BODY = b'{"status":"success"}'
PATH_PREFIX = "/binotel/"
MAX_DEPTH = 6
MAX_FIELDS = 2000


class BadRequest(Exception):
    """The body cannot be read as a Binotel webhook."""


def parse_php_form(body: str) -> dict[str, Any]:
    """``a[b][0][c]=x`` pairs -> nested dicts; maps keyed ``0..n-1`` become lists (PHP's view)."""
    try:
        pairs = parse_qsl(body, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        parts = _split(raw_key)
        node = root
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = value
    return _listify(root)


def _split(key: str) -> list[str]:
    i = key.find("[")
    if i <= 0:
        if i == 0 or not key:
            raise BadRequest(f"bad form key {key[:40]!r}")
        return [key]
    parts = [key[:i]]
    rest = key[i:]
    while rest:
        if not rest.startswith("[") or "]" not in rest:
            raise BadRequest(f"bad form key {key[:40]!r}")
        j = rest.index("]")
        parts.append(rest[1:j])
        rest = rest[j + 1:]
    if len(parts) > MAX_DEPTH:
        raise BadRequest("form key nested too deep")
    return parts


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v) for k, v in node.items()}
    if out and all(k.isdigit() for k in out) and sorted(int(k) for k in out) == list(range(len(out))):
        return [out[str(i)] for i in range(len(out))]
    return out


def _networks(allow_from: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(a.strip(), strict=False) for a in allow_from if a.strip()]


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host:
        host, port = port, "0"
    return host.strip("[]") or "127.0.0.1", int(port or 0)


class PushServer:
    """A small threaded HTTP server for Binotel webhooks; ``on_calls`` must store durably or raise."""

    def __init__(self, settings: BinotelPush, on_calls: Callable[[list[Call]], None]):
        self.settings = settings
        self.on_calls = on_calls
        self.networks = _networks(settings.allow_from)
        self.received = 0  # calls handed to on_calls
        self.refused = 0
        self._hand_over = threading.Lock()  # one writer at a time into the store
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        add_secret(settings.token)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (the configured port may be 0)."""
        assert self._server is not None, "push server not started"
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        host, port = _split_listen(self.settings.listen)
        receiver = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Handler(_Handler):
            owner = receiver

        self._server = loopback.serve(Server((host, port), Handler), "binotel-push")
        log.info("binotel push receiver listening on %s:%d", *self.address)

    def stop(self) -> None:
        loopback.stop(self._server)
        self._server = None

    def allowed(self, peer: str) -> bool:
        try:
            ip = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not self.networks:
            return ip.is_loopback
        return any(ip.version == n.version and ip in n for n in self.networks)

    def token_ok(self, path: str) -> bool:
        if not path.startswith(PATH_PREFIX):
            return False
        given = unquote(path[len(PATH_PREFIX):]).encode("utf-8", "replace")
        return hmac.compare_digest(given, self.settings.token.encode("utf-8"))

    def handle(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        """Parse and hand over one webhook; returns ``(HTTP status, body)``."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("body is not UTF-8") from None
        if "json" in content_type or text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except ValueError:
                raise BadRequest("body is not JSON") from None
            if not isinstance(data, dict):
                raise BadRequest("JSON body is not an object")
        else:
            data = parse_php_form(text)
        kind = str(data.get("requestType") or "")
        if kind == "apiCallSettings":
            return 200, b"{}"
        if kind != "apiCallCompleted":
            raise BadRequest(f"requestType {kind[:40]!r} not handled")
        details = data.get("callDetails")
        if not isinstance(details, dict):
            raise BadRequest("no callDetails")
        try:
            call = call_from_wire(details)
        except RecordError as e:
            raise BadRequest(str(e)) from None
        with self._hand_over:
            self.on_calls([call])
            self.received += 1
        log.info("binotel push: call %s %s (attempt %s)", call.source_id, call.disposition or "-",
                 str(data.get("attemptsCounter") or "?")[:6])
        return 200, SUCCESS_BODY


class _Handler(BaseHTTPRequestHandler):
    owner: PushServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 15  # a slow or stalled sender does not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: int, why: str) -> None:
        self.owner.refused += 1
        log.warning("binotel push refused from %s: %s (HTTP %d)", self.client_address[0], why, status)
        self._send(status, json.dumps({"status": "error", "message": why}).encode(), close=True)

    def do_POST(self) -> None:
        owner = self.owner
        peer = self.client_address[0]
        if not owner.allowed(peer):
            self._refuse(403, "source address not allowed")
            return
        if not owner.token_ok(urlsplit(self.path).path):
            self._refuse(404, "unknown path")
            return
        raw_len = self.headers.get("Content-Length")
        if raw_len is None or not raw_len.strip().isdigit():
            self._refuse(411, "Content-Length required")
            return
        length = int(raw_len)
        if length > owner.settings.max_body_bytes:
            self._refuse(413, f"body of {length} bytes exceeds {owner.settings.max_body_bytes}")
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self._refuse(400, "body shorter than Content-Length")
            return
        try:
            status, reply = owner.handle(body, (self.headers.get("Content-Type") or "").lower())
        except BadRequest as e:
            self._refuse(400, f"malformed: {e}")
            return
        except Exception as e:  # the store failed: no success body, so Binotel redelivers  # noqa: BLE001
            log.error("binotel push: could not store the call (%s); Binotel will redeliver", type(e).__name__)
            self._send(500, b'{"status":"error"}', close=True)
            return
        self._send(status, reply)

    def _not_allowed(self) -> None:
        self._refuse(405, f"method {self.command} not allowed")

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed
