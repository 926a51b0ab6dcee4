"""Receiver for Binotel's ``apiCallCompleted`` webhook: completed calls arrive within seconds.

It is a route (``POST /binotel/{token}``) on the connector's shared :class:`HttpServer`, which
checks the socket peer against ``push.allow_from`` at accept (loopback only when empty; never
``X-Forwarded-For``), caps connections, and cuts a peer that drips its headers or body. Binotel
signs nothing, so the receiver then checks what it can itself: the secret token in the path
(compared in constant time; ``validate`` requires 16 characters or more) and a small, well-formed
body. Bodies are form-encoded with PHP-style brackets
(``callDetails[historyData][0][disposition]=ANSWER``); JSON is accepted too.

The call is handed to ``on_calls`` *before* the answer, and only a successful hand-over answers
the literal ``{"status":"success"}``: anything else makes Binotel redeliver, and a redelivery
repeats ``generalCallID``, which the core upserts, so a replay changes nothing.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from binotel.mapping import call_from_wire
from connector import httpserver
from connector.config import BinotelPush
from connector.domain import Call
from connector.errors import RecordError
from connector.httpserver import HttpRequest, HttpResponse, HttpServer
from connector.redact import add_secret

log = logging.getLogger("binotel.push")

SUCCESS_BODY = b'{"status":"success"}'
PATH_PREFIX = "/binotel/"  # + the secret token
MAX_DEPTH = 6
MAX_FIELDS = 2000


class BadRequest(Exception):
    """The body cannot be read as a Binotel webhook."""


def parse_php_form(body: str) -> dict[str, Any]:
    """``a[b][0][c]=x`` pairs -> nested dicts; maps keyed ``0..n-1`` become lists (PHP's view)."""
    try:
        return httpserver.parse_php_form(body, max_fields=MAX_FIELDS, max_depth=MAX_DEPTH)
    except httpserver.FormError as e:
        raise BadRequest(str(e)) from None


class PushServer:
    """The Binotel webhook route; ``on_calls`` must store durably or raise.

    Without ``server`` it runs its own :class:`HttpServer` on ``push.listen``; with one, it only
    mounts its route there (several adapters can share one listening socket).
    """

    def __init__(self, settings: BinotelPush, on_calls: Callable[[list[Call]], None], *, server: HttpServer | None = None):
        self.settings = settings
        self.on_calls = on_calls
        self.received = 0  # calls handed to on_calls
        self.refused = 0  # requests refused by this route (token, body); the server counts the peers it cut
        self._hand_over = threading.Lock()  # one writer at a time into the store
        self._own = server is None
        self.server = server or HttpServer(settings.listen, settings.allow_from, name="binotel-push",
                                           max_body_bytes=settings.max_body_bytes)
        self.mount(self.server)
        add_secret(settings.token)

    def mount(self, server: HttpServer) -> None:
        server.add_route("POST", PATH_PREFIX + "{token}", self.receive)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (the configured port may be 0)."""
        return self.server.address

    def start(self) -> None:
        if self._own:
            self.server.start()

    def stop(self) -> None:
        if self._own:
            self.server.stop()

    def allowed(self, peer: str) -> bool:
        return self.server.allowed(peer)

    def receive(self, request: HttpRequest) -> HttpResponse:
        """One webhook: token, body, hand-over; runs on the server's handler pool."""
        if not self.token_ok(request.params.get("token", "")):
            return self._refuse(request.peer, 404, "unknown path")
        try:
            status, reply = self.handle(request.body, (request.headers.get("Content-Type") or "").lower())
        except BadRequest as e:
            return self._refuse(request.peer, 400, f"malformed: {e}")
        except Exception as e:  # the store failed: no success body, so Binotel redelivers  # noqa: BLE001
            log.error("binotel push: could not store the call (%s); Binotel will redeliver", type(e).__name__)
            return HttpResponse(500, b'{"status":"error"}', close=True)
        return HttpResponse(status, reply)

    def _refuse(self, peer: str, status: int, why: str) -> HttpResponse:
        self.refused += 1
        log.warning("binotel push refused from %s: %s (HTTP %d)", peer, why, status)
        return HttpResponse(status, json.dumps({"status": "error", "message": why}).encode(), close=True)

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.settings.token.encode("utf-8"))

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
