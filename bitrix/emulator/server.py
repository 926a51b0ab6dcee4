"""Loopback HTTP front of the emulated portal: URLs, auth, parsing, envelopes, batch and limits.

What a real cloud portal does around every REST v1 call, in order:

1. leaky bucket per portal (503 ``QUERY_LIMIT_EXCEEDED``; a ``batch`` is one request);
2. authorisation: ``/rest/{user}/{code}/{method}`` webhook or ``/rest/{method}`` + ``auth`` token
   (401 ``NO_AUTH_FOUND`` / ``invalid_token`` / ``expired_token``);
3. method lookup, case-insensitive, optional ``.json`` and trailing slash (404 ``ERROR_METHOD_NOT_FOUND``);
4. scope of the webhook/app (403 ``insufficient_scope``) and application-only methods
   (``WRONG_AUTH_TYPE`` / ``ACCESS_DENIED`` "Application context required");
5. per-method operating time over ten one-minute buckets (429 ``OPERATION_TIME_LIMIT`` for the
   call after the one that crossed the limit);
6. the envelope ``result``/``total``/``next``/``time`` with PHP ``json_encode`` quirks.

Modelled processing cost = base + COUNT cost per matching row (unless ``start=-1``) + per returned
row; it is added to ``operating`` and slept as ``cost * time_scale``.

``batch``: up to 50 commands run in order; commands beyond 50 get ``ERROR_BATCH_LENGTH_EXCEEDED``
in ``result_error`` (batch.md: "subqueries beyond the limit will end with an error"); a nested
``batch`` gets ``ERROR_BATCH_METHOD_NOT_ALLOWED``. ``$result[cmd][path]`` references are resolved
after the command's query string is parsed: a parameter that is exactly one reference takes the
referenced value (an array stays an array); references inside longer strings are replaced by their
text; a reference that cannot be resolved becomes the empty string (as the PHP implementation
does; undocumented — note ``filter[>ID]=`` then compares with 0, PHP ``intval`` semantics).
"""

from __future__ import annotations

import json
import re
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from bitrix.emulator.methods import METHODS, Out, Params
from bitrix.emulator.phpquery import json_encode, normalize, parse_pairs, parse_qs
from bitrix.emulator.portal import Caller, Portal
from bitrix.emulator.tables import ApiError, iso, truthy
from connector import loopback

BATCH_MAX = 50
SCOPE_GRANTS = {"user": ("user", "user_basic", "user_brief")}  # scopes that open a method's scope
_WEBHOOK = re.compile(r"^/rest/(\d+)/([^/]+)/([^/]+?)/?$")
_OAUTH = re.compile(r"^/rest/([^/]+?)/?$")
_READ_METHOD = re.compile(r"(?:^|\.)(?:list|get|fields|current|time)$")
_READ_ONLY = {"scope", "profile", "batch"}
_REF = re.compile(r"\$(result_error|result_total|result_next|result_time|result|error|total|next|time)"
                  r"\[([^\]]+)\]((?:\[[^\]]*\])*)")


def is_write(method: str) -> bool:
    """Whether a (lower-case) REST method changes the portal: anything but list/get/fields reads."""
    return method not in _READ_ONLY and not _READ_METHOD.search(method)


def _command(call: str) -> tuple[str, str]:
    """A batch command ``"crm.deal.list?filter[...]"`` -> (lower-case method, query string)."""
    method, _, qs = call.strip().partition("?")
    return re.sub(r"\.(json|xml)$", "", method.strip().strip("/"), flags=re.I).lower(), qs


class Dispatcher:
    """Turns one HTTP request into ``(status, body)`` against a :class:`Portal`."""

    def __init__(self, portal: Portal):
        self.portal = portal
        self.base_url = ""

    # ------------------------------------------------------------ entry

    def handle(self, verb: str, target: str, body: bytes, content_type: str) -> tuple[int, Any]:
        parts = urlsplit(target)
        path = parts.path
        if path.rstrip("/") == "/oauth/token":
            return self.oauth_token(self.params(parts.query, body, content_type))
        m = _WEBHOOK.match(path)
        m2 = None if m else _OAUTH.match(path)
        if not m and not m2:
            return 404, {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
        portal = self.portal
        with portal.lock:
            portal.stats.requests += 1
        started = portal.limit_time()
        if portal.rate_limit and not portal.bucket_admit():
            return self.reject(ApiError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"))
        raw_method = (m.group(3) if m else m2.group(1)).strip()
        method = re.sub(r"\.(json|xml)$", "", raw_method, flags=re.I).lower()
        fault = portal.take_fault(method, any_request=True)
        if fault:
            return self.reject(ApiError(fault.status, fault.error, fault.description))
        try:
            params = self.params(parts.query, body, content_type)
        except ValueError:
            return 400, {"error": "INVALID_REQUEST", "error_description": "Invalid request body"}
        try:
            caller = self.authorize(m, params)
        except ApiError as e:
            return self.reject(e)
        params.pop("auth", None)
        if method == "batch":
            status, body_out = 200, self.batch(params, caller, started)
        else:
            if is_write(method):
                with portal.lock:
                    portal.stats.write_requests += 1
            status, body_out, _ = self.call(method, params, caller, started, in_batch=False)
        hook = portal.after_request
        if hook is not None:
            replaced = hook(method, status, body_out)
            if replaced is not None:
                return replaced
        return status, body_out

    def reject(self, e: ApiError) -> tuple[int, dict]:
        with self.portal.lock:
            self.portal.stats.rejected[str(e.error)] += 1
        return e.status, e.body()

    # ------------------------------------------------------------ parsing

    def params(self, query: str, body: bytes, content_type: str) -> dict:
        """GET query, JSON, form and multipart bodies into one PHP-style parameter tree."""
        tree = parse_qs(query) if query else {}
        ctype = (content_type or "").split(";")[0].strip().lower()
        if body:
            if ctype == "application/json" or (not ctype and body[:1] in (b"{", b"[")):
                data = json.loads(body.decode("utf-8"))
                if isinstance(data, dict):
                    tree.update(data)
            elif ctype == "multipart/form-data":
                msg = BytesParser(policy=HTTP).parsebytes(
                    b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
                pairs = []
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    if name is None:
                        continue
                    payload = part.get_payload(decode=True) or b""
                    pairs.append((name, payload.decode("utf-8", "replace")))
                parse_pairs(pairs, tree)
            else:
                parse_qs(body.decode("utf-8", "replace"), tree)
        return normalize(tree)

    # ------------------------------------------------------------ auth

    def authorize(self, webhook: re.Match | None, params: dict) -> Caller:
        portal = self.portal
        if webhook:
            user, code = int(webhook.group(1)), webhook.group(2)
            if user != portal.webhook_user or code != portal.webhook_code:
                raise ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
            return Caller("webhook", user, f"webhook:{user}", portal.scopes)
        token = params.get("auth")
        if not token:
            raise ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        with portal.lock:
            tok = portal.tokens.get(str(token))
        if tok is None:
            raise ApiError(401, "invalid_token", "The access token provided is invalid")
        if tok.expires <= portal.limit_time():
            raise ApiError(401, "expired_token", "The access token provided has expired")
        return Caller("oauth", tok.user_id, f"app:{tok.client_id}", portal.scopes, tok.client_id)

    def oauth_token(self, p: dict) -> tuple[int, dict]:
        """oauth.bitrix.info ``/oauth/token/?grant_type=refresh_token&...``."""
        portal = self.portal
        if p.get("grant_type") != "refresh_token" or not p.get("refresh_token"):
            return 400, {"error": "invalid_request", "error_description": "Invalid request"}
        try:
            tok = portal.refresh(str(p.get("client_id") or ""), str(p.get("client_secret") or ""),
                                 str(p.get("refresh_token")))
        except ApiError as e:
            return e.status, e.body()
        return 200, {
            "access_token": tok.access, "expires": int(tok.expires), "expires_in": int(portal.token_ttl),
            "scope": ",".join(portal.scopes), "domain": "oauth.bitrix.info",
            "server_endpoint": self.base_url + "/oauth/rest/", "status": "L",
            "client_endpoint": self.base_url + "/rest/", "member_id": portal.member_id, "user_id": tok.user_id,
            "refresh_token": tok.refresh,
        }

    # ------------------------------------------------------------ one method call

    def call(self, method: str, params: dict, caller: Caller, started: float, *,
             in_batch: bool) -> tuple[int, dict, dict | None]:
        """Run one method; returns (status, envelope or error body, time block or None)."""
        portal = self.portal
        spec = METHODS.get(method)
        if method == "batch" and in_batch:
            return self._err(ApiError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"))
        if spec is None:
            return self._err(ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!"))
        if in_batch:
            fault = portal.take_fault(method, any_request=False)
            if fault:
                return self._err(ApiError(fault.status, fault.error, fault.description))
        scope, handler, app_only = spec
        if scope != "basic" and not set(SCOPE_GRANTS.get(scope, (scope,))) & set(caller.scopes):
            who = "webhook token" if caller.kind == "webhook" else "access token"
            text = "" if in_batch else f"The request requires higher privileges than provided by the {who}"
            return self._err(ApiError(403, "insufficient_scope", text))  # batch.md shows an empty text
        if app_only and caller.kind == "webhook":
            return self._err(ApiError(app_only[1], app_only[0], app_only[2]))
        key = (caller.credential, method)
        now = portal.limit_time()
        with portal.lock:
            if portal.window.operating(key, now, portal.operating_window) > portal.operating_limit:
                portal.stats.rejected["OPERATION_TIME_LIMIT"] += 1
                return self._err(ApiError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."))
            portal.stats.by_method[method] += 1
            if portal.write_log is not None and is_write(method):
                portal.write_log.append((method, params))
            t0 = time.perf_counter()
            try:
                out: Out = getattr(portal, handler)(Params(params), caller)
                error = None
                portal.emit_for_call(method, Params(params), out.result)
            except ApiError as e:
                out, error = Out(None), e
            real = time.perf_counter() - t0
            cost = portal.cost_base + out.counted * portal.cost_count_row + out.returned * portal.cost_row
            cost = max(cost, real)
            portal.window.record(key, now, cost)
            portal.stats.operating[method] += cost
            portal.stats.returned[method] += out.returned
            operating = portal.window.operating(key, now, portal.operating_window)
            reset_at = portal.window.reset_at(key, now, portal.operating_window)
        if portal.time_scale > 0:
            time.sleep(cost * portal.time_scale)
        if error is not None:
            return error.status, error.body(), None
        tblock = self.time_block(now, cost, operating, reset_at)
        env: dict[str, Any] = {"result": out.result}
        if out.total is not None:
            if out.next is not None:
                env["next"] = out.next
            env["total"] = out.total
        env["time"] = tblock
        return 200, env, tblock

    @staticmethod
    def _err(e: ApiError) -> tuple[int, dict, None]:
        return e.status, e.body(), None

    def time_block(self, start: float, cost: float, operating: float | None, reset_at: int | None) -> dict:
        portal = self.portal
        finish = start + cost + 0.0004
        pnow = portal.now()
        out = {"start": start, "finish": finish, "duration": finish - start, "processing": cost,
               "date_start": iso(pnow), "date_finish": iso(pnow)}
        if operating is not None:
            out["operating_reset_at"] = reset_at
            out["operating"] = operating
        return out

    # ------------------------------------------------------------ batch

    def batch(self, params: dict, caller: Caller, started: float) -> dict:
        p = Params(params)
        cmd = p.get("cmd")
        halt = truthy(p.get("halt", 0))
        items = list(cmd.items()) if isinstance(cmd, dict) else list(enumerate(cmd)) if isinstance(cmd, list) else []
        with self.portal.lock:
            self.portal.stats.by_method["batch"] += 1
            if any(isinstance(c, str) and is_write(_command(c)[0]) for _, c in items[:BATCH_MAX]):
                self.portal.stats.write_requests += 1
        res: dict = {"result": {}, "result_error": {}, "result_total": {}, "result_next": {}, "result_time": {}}
        last_time: dict | None = None
        for n, (key, call) in enumerate(items):
            key = str(key)
            if n >= BATCH_MAX:
                res["result_error"][key] = {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                                            "error_description": "Max batch length exceeded"}
                continue
            if not isinstance(call, str):
                continue
            method, qs = _command(call)
            sub = self.substitute(normalize(parse_qs(qs)), res)
            sub.pop("auth", None)
            status, body, tblock = self.call(method, sub, caller, self.portal.limit_time(), in_batch=True)
            if status != 200:
                res["result_error"][key] = body
                if halt:
                    break
                continue
            res["result"][key] = body["result"]
            if "total" in body:
                res["result_total"][key] = body["total"]
            if "next" in body:
                res["result_next"][key] = body["next"]
            res["result_time"][key] = tblock
            last_time = tblock
        tb = self.time_block(started, max(self.portal.limit_time() - started, 0.0), None, None)
        if last_time is not None:
            tb["operating_reset_at"] = last_time["operating_reset_at"]
            tb["operating"] = last_time["operating"]
        return {"result": res, "time": tb}

    def substitute(self, value: Any, res: dict) -> Any:
        """Resolve ``$result[cmd][path]`` references in every parameter value."""
        if isinstance(value, dict):
            return {k: self.substitute(v, res) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v, res) for v in value]
        if not isinstance(value, str) or "$" not in value:
            return value
        whole = _REF.fullmatch(value)
        if whole:
            found = self._lookup(whole, res)
            return "" if found is None else found
        return _REF.sub(lambda mm: self._text(self._lookup(mm, res)), value)

    @staticmethod
    def _lookup(mm: re.Match, res: dict) -> Any:
        space = {"result": "result", "error": "result_error", "total": "result_total", "next": "result_next",
                 "time": "result_time"}.get(mm.group(1), mm.group(1))
        node: Any = res.get(space, {})
        path = [mm.group(2)] + re.findall(r"\[([^\]]*)\]", mm.group(3) or "")
        for step in path:
            if isinstance(node, dict):
                node = node.get(step, node.get(int(step)) if step.lstrip("-").isdigit() else None)
            elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
                node = node[int(step)]
            else:
                return None
            if node is None:
                return None
        return node

    @staticmethod
    def _text(v: Any) -> str:
        if v is None or v is False:
            return ""
        if v is True:
            return "1"
        if isinstance(v, (dict, list)):
            return "Array"
        return str(v)


class _Handler(BaseHTTPRequestHandler):
    dispatcher: Dispatcher
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, payload = self.dispatcher.handle(self.command, self.path, body,
                                                     self.headers.get("Content-Type", ""))
        except Exception as e:  # a bug in the emulator must look like a portal 500, not hang the client  # noqa: BLE001
            import traceback

            traceback.print_exc()  # and be seen by whoever runs it
            status, payload = 500, {"error": "INTERNAL_SERVER_ERROR", "error_description": f"Internal server error ({type(e).__name__}: {e})"}
        data = json_encode(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


class EmulatorServer:
    """``ThreadingHTTPServer`` on 127.0.0.1:0 in a daemon thread, serving one :class:`Portal`."""

    def __init__(self, portal: Portal, host: str = "127.0.0.1", port: int = 0):
        self.portal = portal
        self.dispatcher = Dispatcher(portal)
        handler = type("BitrixHandler", (_Handler,), {"dispatcher": self.dispatcher})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        host_, port_ = self.httpd.server_address[:2]
        self.base_url = f"http://{host_}:{port_}"
        self.dispatcher.base_url = self.base_url
        portal.base_url = self.base_url
        self.webhook_url = f"{self.base_url}/rest/{portal.webhook_user}/{portal.webhook_code}/"

    def start(self) -> "EmulatorServer":
        loopback.serve(self.httpd, "bitrix-emulator")
        return self

    def stop(self) -> None:
        loopback.stop(self.httpd)

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

