"""The connector's one inbound HTTP server: aiohttp on its own thread and loop, hostile peers cut early.

Adapters mount routes on it (Binotel's push receiver today, Bitrix24 application handlers next);
nothing here knows a system. What it guarantees, whoever is mounted:

* the socket peer (never ``X-Forwarded-For``) is checked against ``allow_from`` the moment the
  connection is accepted, before a byte is read; an empty list means loopback only;
* at most ``max_connections`` connections at once; more are closed at accept;
* the request line and headers must arrive within ``header_seconds`` of the connection (or of the
  previous answer on a kept-alive one), the body within ``body_seconds`` of the headers, so a peer
  that drips bytes is cut instead of holding a worker;
* a body must declare its ``Content-Length`` and stay within ``max_body_bytes`` (refused unread);
* ``stop()`` stops accepting, lets running handlers finish (``grace``), then closes the rest.

Handlers get an :class:`HttpRequest` and return an :class:`HttpResponse`; a plain function runs on
a small thread pool (it may write to the store), a coroutine function on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import ipaddress
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("connector.httpserver")

BODY_METHODS = {"POST", "PUT", "PATCH"}


@dataclass
class HttpRequest:
    method: str
    path: str
    params: dict[str, str]  # ``{name}`` segments of the route, percent-decoded
    headers: Mapping[str, str]
    body: bytes
    peer: str


@dataclass
class HttpResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    close: bool = False  # ask the client to close the connection after this answer
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[HttpRequest], HttpResponse] | Callable[[HttpRequest], Awaitable[HttpResponse]]


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8085"``, ``"[::1]:8085"``, ``":8085"`` or ``"8085"`` -> ``(host, port)``."""
    host, _, port = listen.rpartition(":")
    if not host:
        host, port = "", port
    return host.strip("[]") or "127.0.0.1", int(port or 0)


def networks(allow_from: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(a.strip(), strict=False) for a in allow_from if a.strip()]


class FormError(ValueError):
    """A form body that cannot be read as PHP-style ``key[sub]=value`` pairs."""


def parse_php_form(text: str, *, max_fields: int = 2000, max_depth: int = 6) -> dict[str, Any]:
    """``a[b][0][c]=x`` pairs -> nested dicts, maps keyed ``0..n-1`` as lists: what PHP makes of
    the forms Bitrix24 and Binotel post (events, robots, call webhooks)."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=max_fields)
    except ValueError as e:
        raise FormError(str(e)) from None
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        parts = _form_key(raw_key, max_depth)
        node = root
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = value
    return _listify(root)


def _form_key(key: str, max_depth: int) -> list[str]:
    i = key.find("[")
    if i <= 0:
        if i == 0 or not key:
            raise FormError(f"bad form key {key[:40]!r}")
        return [key]
    parts = [key[:i]]
    rest = key[i:]
    while rest:
        if not rest.startswith("[") or "]" not in rest:
            raise FormError(f"bad form key {key[:40]!r}")
        j = rest.index("]")
        parts.append(rest[1:j])
        rest = rest[j + 1:]
    if len(parts) > max_depth:
        raise FormError("form key nested too deep")
    return parts


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v) for k, v in node.items()}
    if out and all(k.isdigit() for k in out) and sorted(int(k) for k in out) == list(range(len(out))):
        return [out[str(i)] for i in range(len(out))]
    return out


def _json_error(status: int, message: str) -> HttpResponse:
    import json

    return HttpResponse(status, json.dumps({"status": "error", "message": message}).encode(), close=True)


class HttpServer:
    """An aiohttp server in a thread of its own; see the module docstring for what it guarantees."""

    def __init__(self, listen: str, allow_from: Sequence[str] = (), *, name: str = "connector-http",
                 max_connections: int = 64, header_seconds: float = 10.0, body_seconds: float = 30.0,
                 max_body_bytes: int = 65536, workers: int = 4):
        self.listen = listen
        self.networks = networks(allow_from)
        self.name = name
        self.max_connections = max_connections
        self.header_seconds = header_seconds
        self.body_seconds = body_seconds
        self.max_body_bytes = max_body_bytes
        self.workers = workers
        self.routes: list[tuple[str, list[str], Handler]] = []
        # figures (read from other threads; written on the loop only)
        self.active = 0
        self.refused_peers = 0  # closed at accept: address not allowed
        self.refused_busy = 0  # closed at accept: max_connections reached
        self.cut_slow = 0  # closed: headers or body did not arrive in time
        self.served = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._web: web.Server | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._address: tuple[str, int] | None = None

    # ------------------------------------------------------------ set-up

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` (``{name}`` segments match one path segment) with ``handler``."""
        self.routes.append((method.upper(), path.lstrip("/").split("/"), handler))

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

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (the configured port may be 0)."""
        assert self._address is not None, "server not started"
        return self._address

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind and serve on a daemon thread; raises here if the address cannot be bound."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix=f"{self.name}-handler")
        self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=30)
        except BaseException:
            self._shutdown_loop()
            raise
        log.info("%s listening on %s:%d", self.name, *self.address)

    async def _start(self) -> None:
        host, port = split_listen(self.listen)
        owner = self

        class Server(web.Server):
            # aiohttp's own keep-alive timer is set past ours, so the header deadline is the one that cuts
            def __call__(self) -> RequestHandler:
                return _Protocol(self, owner=owner, loop=owner._loop, keepalive_timeout=owner.header_seconds * 2 + 1,
                                 max_headers=64, max_line_size=8190, max_field_size=8190)

        self._web = Server(self._dispatch)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = await asyncio.get_running_loop().create_server(
            self._web, host, port, family=family, reuse_address=True, backlog=1024)
        bound = self._server.sockets[0].getsockname()
        self._address = (str(bound[0]), int(bound[1]))

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, give running handlers ``grace`` seconds, close every connection."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(grace), loop).result(timeout=grace + 10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("%s: stop did not finish in time", self.name)
        finally:
            self._shutdown_loop()

    async def _stop(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        if self._web is not None:
            await self._web.shutdown(grace)
        if self._server is not None:
            await self._server.wait_closed()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=10)
            if not loop.is_running():
                loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop = self._thread = self._server = self._web = self._pool = None

    # ------------------------------------------------------------ one request

    def _route(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """``(handler, params, path_known)``; ``path_known`` with no handler means: wrong method."""
        parts = path.lstrip("/").split("/")
        known = False
        for m, pattern, handler in self.routes:
            if len(pattern) != len(parts):
                continue
            params: dict[str, str] = {}
            for want, got in zip(pattern, parts, strict=True):
                if want.startswith("{") and want.endswith("}"):
                    params[want[1:-1]] = unquote(got)
                elif want != got:
                    break
            else:
                known = True
                if m == method:
                    return handler, params, True
        return None, {}, known

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, _Protocol):
            protocol.headers_arrived()
        try:
            reply = await self._answer(request)
        except Exception as e:  # a handler failed: no details to the peer  # noqa: BLE001
            log.error("%s: handler failed on %s %s: %s", self.name, request.method, request.path, type(e).__name__)
            reply = _json_error(500, "internal error")
        self.served += 1
        headers = {"Content-Type": reply.content_type, **reply.headers}
        if reply.close:
            headers["Connection"] = "close"
        response = web.Response(status=reply.status, body=reply.body, headers=headers)
        if reply.close:
            response.force_close()
        elif isinstance(protocol, _Protocol):
            protocol.expect_next()
        return response

    async def _answer(self, request: web.BaseRequest) -> HttpResponse:
        peer = request.transport.get_extra_info("peername")[0] if request.transport else ""
        handler, params, known = self._route(request.method, request.path)
        if handler is None:
            return _json_error(405 if known else 404, f"method {request.method} not allowed" if known else "unknown path")
        body = b""
        if request.method in BODY_METHODS:
            length = request.content_length
            if length is None:
                return _json_error(411, "Content-Length required")
            if length > self.max_body_bytes:
                return _json_error(413, f"body of {length} bytes exceeds {self.max_body_bytes}")
            try:
                body = await asyncio.wait_for(request.content.readexactly(length), self.body_seconds)
            except TimeoutError:
                self.cut_slow += 1
                return _json_error(408, f"body not received within {self.body_seconds:g} s")
            except asyncio.IncompleteReadError:
                return _json_error(400, "body shorter than Content-Length")
        req = HttpRequest(request.method, request.path, params, request.headers, body, str(peer))
        if inspect.iscoroutinefunction(handler):
            return await handler(req)
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, handler, req)


class _Protocol(RequestHandler):
    """aiohttp's connection handler, with the peer, the connection cap and the header deadline."""

    def __init__(self, manager: web.Server, *, owner: HttpServer, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._owner = owner
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        owner = self._owner
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        if not owner.allowed(ip):
            owner.refused_peers += 1
            log.debug("%s: connection from %s refused (not in allow_from)", owner.name, ip)
            transport.abort()  # before a single byte is read
            return
        if owner.active >= owner.max_connections:
            owner.refused_busy += 1
            log.debug("%s: connection from %s refused (%d connections open)", owner.name, ip, owner.active)
            transport.abort()
            return
        owner.active += 1
        self._admitted = True
        self._transport = transport
        super().connection_made(transport)
        self.expect_next()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._owner.active -= 1
        self._cancel_deadline()
        super().connection_lost(exc)

    def expect_next(self) -> None:
        """The next request's line and headers must arrive within ``header_seconds``."""
        self._cancel_deadline()
        self._deadline = asyncio.get_running_loop().call_later(self._owner.header_seconds, self._too_slow)

    def headers_arrived(self) -> None:
        self._cancel_deadline()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self._transport is not None and not self._transport.is_closing():
            self._owner.cut_slow += 1
            self._transport.abort()
