"""HTTP to Bitrix24 only: auth, client-side limits, retries and the one error classifier.

Built on ``fast_bitrix24`` (its request primitives, leaky-bucket throttler and token hook), with
a thin subclass of its request handler so that a 4xx keeps its Bitrix error body (the library
raises ``aiohttp.ClientResponseError`` and drops it, fast_bitrix24 issue #125). Every HTTP
response is classified in :func:`classify` into the connector's error tree; retries are tenacity
on :class:`TransientError`, honouring the wait the server asked for.

The connector is synchronous; the library is asyncio. The client owns one event loop on a
daemon thread and submits coroutines to it, so it also works when the caller runs inside
somebody else's event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from fast_bitrix24 import BitrixAsync
from fast_bitrix24.srh import ServerRequestHandler
from fast_bitrix24.utils import http_build_query
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from connector.config import Bitrix24, OAuth
from connector.errors import (
    AuthError,
    NotFound,
    PermanentError,
    RateLimited,
    Rejected,
    TransientError,
    UpstreamError,
)
from connector.i18n import _
from connector.ports import Context
from connector.redact import add_secret
from connector.upstream import REDIRECT_STATUSES, redirect_error, redirect_target

SYSTEM = "bitrix24"

# fast_bitrix24 logs every call with its parameters (texts of tasks and comments) at INFO and
# sets its own logger to DEBUG; keep that out of the connector's logs.
logging.getLogger("fast_bitrix24").setLevel(logging.WARNING)
log = logging.getLogger("bitrix.client")
REFRESH_TOKEN_KV = "bitrix24.refresh_token"
ACCESS_TOKEN_KV = "bitrix24.access_token"
APP_ENDPOINT_KV = "bitrix24.app.endpoint"  # the portal's client_endpoint, kept at installation (bitrix.app)

# Leaky bucket per plan (limits.md): threshold X requests, drained Y per second.
PLAN_LIMITS = {"standard": (50, 2.0), "enterprise": (250, 5.0)}
OPERATING_LIMIT = 480.0  # seconds of execution per method per 10 minutes (cloud)
OPERATING_MARGIN = 0.9  # pause a method at 90 % of its budget instead of collecting a 429

_AUTH_CODES = {
    "NO_AUTH_FOUND", "INSUFFICIENT_SCOPE", "INVALID_SCOPE", "INVALID_GRANT", "INVALID_CLIENT", "INVALID_REQUEST",
    "INVALID_CREDENTIALS", "WRONG_AUTH_TYPE", "AUTHORIZATION_ERROR", "PAYMENT_REQUIRED", "USER_ACCESS_ERROR",
    "ALLOWED_ONLY_INTRANET_USER", "WRONG_ENCODING",
}
_EXPIRED_CODES = {"EXPIRED_TOKEN", "INVALID_TOKEN"}
_NOT_FOUND_CODES = {"NOT_FOUND", "OWNER_NOT_FOUND", "ERROR_ENTITY_NOT_FOUND", "ERROR_NOT_FOUND"}
_NOT_FOUND_TEXT = re.compile(r"\bnot\s+found\b|is not found|wrong task id", re.I)
_WEBHOOK = re.compile(r"/rest/(\d+)/([^/]+)/?$")


class TokenExpired(Exception):
    """Internal: the access token was rejected as expired; the client refreshes it once."""

    token: str | None = None  # the token that was rejected


def classify(status: int | None, body: Mapping[str, Any] | None, *, what: str,
             reset_at: float | None = None, now: float | None = None) -> Exception:
    """The one place that turns a Bitrix24 error (HTTP status + JSON body) into the error tree.

    ``what`` names the method and object (``crm.company.update id=12``); the message is the
    portal's ``error_description``, never a URL (the webhook code lives in URLs).
    """
    body = body if isinstance(body, Mapping) else {}
    code = str(body.get("error") if body.get("error") is not None else "").strip()
    desc = str(body.get("error_description") or "").strip()
    up = code.upper()
    msg = desc or code or (f"HTTP {status}" if status else "unknown error")
    kw: dict[str, Any] = {"system": SYSTEM, "obj": what, "code": code or None,
                          "status": status if status and status >= 300 else None}
    if up == "QUERY_LIMIT_EXCEEDED" or (status == 503 and not code):
        return RateLimited(msg, retry_after=None, **kw)
    if up == "OPERATION_TIME_LIMIT" or status == 429:
        wait = None
        if reset_at:
            wait = max(0.0, reset_at - (now if now is not None else time.time()))
        return RateLimited(msg, retry_after=wait, **kw)
    if up in _EXPIRED_CODES:
        return TokenExpired(msg)
    if up in _AUTH_CODES or status == 401 or (status == 403 and up != "ACCESS_DENIED"):
        return AuthError(msg, **kw)
    if (status is not None and status >= 500) or up in {"INTERNAL_SERVER_ERROR", "ERROR_INTERNAL"}:
        return TransientError(msg, **kw)
    if up in {"ERROR_METHOD_NOT_FOUND", "METHOD_NOT_FOUND"}:
        return PermanentError(msg, **kw)
    if up in _NOT_FOUND_CODES or _NOT_FOUND_TEXT.search(desc):
        return NotFound(msg, **kw)
    return Rejected(msg, **kw)


def describe(method: str, params: Mapping[str, Any] | None) -> str:
    """``method`` plus the object it touches, for error messages (no secrets in params)."""
    p = params or {}
    for k in ("id", "ID", "taskId", "TASK_ID"):
        if k in p and not isinstance(p[k], (dict, list)):
            return f"{method} id={p[k]}"
    fields = p.get("fields") or p.get("FIELDS")
    if isinstance(fields, Mapping) and "ENTITY_ID" in fields:
        return f"{method} {str(fields.get('ENTITY_TYPE') or '').lower()}={fields['ENTITY_ID']}"
    if "target" in p:
        return f"{method} target={p['target']}"
    if isinstance(p.get("DOCUMENT_ID"), list) and p["DOCUMENT_ID"]:
        return f"{method} document={p['DOCUMENT_ID'][-1]}"
    if "USER_ID" in p:
        return f"{method} user={p['USER_ID']}"
    return method


def command(method: str, params: Mapping[str, Any] | None = None) -> str:
    """One ``batch`` command: ``method?php[style]=query`` built by the library's encoder."""
    q = http_build_query(dict(params or {})).rstrip("&")
    return f"{method}?{q}" if q else method


@dataclass
class BatchReply:
    """A ``batch`` answer: per-command results, classified per-command errors, timings."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, UpstreamError] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    time: dict[str, Any] = field(default_factory=dict)

    def raise_first(self) -> None:
        for err in self.errors.values():
            raise err


def _as_dict(value: Any) -> dict:
    """PHP renders an empty map as ``[]``."""
    return value if isinstance(value, dict) else {}


def _json(raw: bytes) -> dict | None:
    try:
        data = json.loads(raw.decode("utf-8", "replace")) if raw else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class _Handler(ServerRequestHandler):
    """fast_bitrix24's request handler, keeping the status and error body of every response.

    The library's throttling (leaky bucket, concurrency) is kept; its own retry loop is not used
    for HTTP errors: they leave here already classified, and the client retries them.
    """

    def __init__(self, owner: "BitrixClient", **kw: Any):
        super().__init__(**kw)
        self.owner = owner

    async def request_attempt(self, method: str, params: dict | None = None) -> dict:
        owner = self.owner
        what = describe(method, params)
        async with self.acquire(method):
            body = dict(params or {})
            if self.token:
                body["auth"] = self.token
            owner.counter.add(method)
            try:
                # never follow a redirect: the body carries the access token (the webhook URL its code)
                async with self.session.post(self.webhook + method, json=body, ssl=self.ssl, allow_redirects=False) as resp:
                    status, raw, location = resp.status, await resp.read(), resp.headers.get("Location")
            except (TimeoutError, aiohttp.ClientError) as e:
                raise TransientError(f"connection failed ({type(e).__name__})", system=SYSTEM, obj=what) from None
            finally:
                self.leaky_bucket_throttler.add_request_record()
        if status in REDIRECT_STATUSES:
            raise redirect_error(SYSTEM, what, redirect_target(self.webhook, location), status)
        data = _json(raw)
        if status >= 400 or data is None or "error" in data:
            if data is None and status < 400:
                raise TransientError("response is not JSON", system=SYSTEM, obj=what, status=status)
            err = owner.classify_for(method, status, data, what)
            if isinstance(err, TokenExpired):
                err.token = self.token
            raise err
        owner.note_time(method, data.get("time"))
        return data


class BitrixClient:
    """Synchronous Bitrix24 client (incoming webhook or OAuth application).

    ``call`` and ``batch`` return whole response envelopes (``result``, ``total``, ``time``), so
    callers can page and cursor on server time. Each HTTP request is counted once in
    ``ctx.counter("bitrix24")`` (a ``batch`` of 50 commands is one request).
    """

    def __init__(self, settings: Bitrix24, ctx: Context, *, sleep: Callable[[float], None] | None = None,
                 attempts: int = 6, backoff: float = 1.0, max_wait: float = 600.0,
                 operating_limit: float = OPERATING_LIMIT):
        self.settings = settings
        self.ctx = ctx
        self.counter = ctx.counter(SYSTEM)
        self._sleep = sleep if sleep is not None else ctx.sleep  # back-offs end at once when the daemon is told to stop
        self.attempts = attempts
        self.backoff = backoff
        self.max_wait = max_wait
        self.operating_limit = operating_limit
        self._operating: dict[str, tuple[float, float]] = {}  # method -> (operating s, reset_at unix)
        self._skew = 0.0  # server clock - local clock, seconds
        self.date_start: str | None = None  # server's ISO time of the last answered request
        self._oauth = settings.oauth or (_installed_app(settings, ctx) if settings.app is not None else None)
        self._force_refresh = False
        self._refresh_lock: asyncio.Lock | None = None
        self._closed = False

        if self._oauth:
            o = self._oauth
            for secret in (o.client_secret, o.refresh_token, o.access_token):
                add_secret(secret)
            stored = self._kv_get(REFRESH_TOKEN_KV)
            add_secret(stored)
            self._access: str | None = self._kv_get(ACCESS_TOKEN_KV) or o.access_token
            add_secret(self._access)
            domain = o.domain.rstrip("/")
            endpoint = (domain if "://" in domain else f"https://{domain}") + "/rest/"
        else:
            endpoint = str(settings.webhook_url)
            m = _WEBHOOK.search(endpoint.rstrip("/") + "/")
            if m:
                add_secret(m.group(2))
            self._access = None
        pool, rate = PLAN_LIMITS.get(settings.plan, PLAN_LIMITS["standard"])

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bitrix24-client", daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession = self._run(self._open_session())
        self._bx = BitrixAsync(
            endpoint, token_func=self._token_func if self._oauth else None, verbose=False,
            respect_velocity_policy=False, request_pool_size=pool, requests_per_second=rate, client=self._session,
        )
        # The core builds a source and a sink per cycle and never closes them: stop the loop,
        # the thread and the HTTP session when the client is garbage-collected.
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._thread, self._session)
        self._bx.srh = _Handler(
            self, webhook=endpoint, token_func=self._token_func if self._oauth else None,
            respect_velocity_policy=False, request_pool_size=pool, requests_per_second=rate,
            operating_time_limit=int(operating_limit), client=self._session,
        )

    # ------------------------------------------------------------ public API

    def call(self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool = True) -> dict:
        """One REST call (not wrapped in a batch); returns the whole envelope.

        ``idempotent=False`` (creating a task, posting a comment) retries only the errors the
        portal raises *before* running a method (503 request limit, 429 operating time); a 5xx
        or a timeout may have created the object, so it goes up to the sink to reconcile."""
        self._respect_budget([method])
        return self._retrying(lambda: self._run(self._send(method, dict(params or {}))),
                              RateLimited if not idempotent else TransientError)

    def result(self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool = True) -> Any:
        return self.call(method, params, idempotent=idempotent).get("result")

    def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]], *, halt: bool = False) -> BatchReply:
        """Up to 50 commands in one HTTP request. Transient per-command errors (a method over its
        operating budget) retry the whole batch; permanent ones come back in ``errors``."""
        if not commands:
            return BatchReply()
        if len(commands) > 50:
            raise ValueError("a Bitrix24 batch holds at most 50 commands")
        self._respect_budget({m for m, _ in commands.values()})
        cmd = {label: command(m, p) for label, (m, p) in commands.items()}

        def once() -> BatchReply:
            env = self._run(self._send("batch", {"halt": 1 if halt else 0, "cmd": cmd}))
            reply = self._parse_batch(env, commands)
            for err in reply.errors.values():
                if isinstance(err, TransientError):
                    raise err
            return reply

        return self._retrying(once)

    def write_batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]]) -> BatchReply:
        """Up to 50 non-idempotent commands (creates, updates) in one request.

        Retried here only when the portal refused the whole request before running any command
        (503 request limit, 429 operating time). A timeout or a 5xx after sending is *ambiguous*
        (some commands may have run): it is raised with ``ambiguous`` set, for the executor to
        look for the effects before anything is resent. Per-command errors come back in
        ``errors`` and are never retried here (the other commands of the batch did run)."""
        if not commands:
            return BatchReply()
        if len(commands) > 50:
            raise ValueError("a Bitrix24 batch holds at most 50 commands")
        self._respect_budget({m for m, _ in commands.values()})
        cmd = {label: command(m, p) for label, (m, p) in commands.items()}

        def once() -> BatchReply:
            return self._parse_batch(self._run(self._send("batch", {"halt": 0, "cmd": cmd})), commands)

        try:
            reply = self._retrying(once, RateLimited)
        except TransientError as e:
            if not isinstance(e, RateLimited):
                e.ambiguous = True
            raise
        for err in reply.errors.values():
            if isinstance(err, TransientError) and not isinstance(err, RateLimited):
                err.ambiguous = True  # the command failed inside the portal: it may have been applied
        return reply

    def pause(self, seconds: float) -> None:
        """Wait as the server asked (bounded by ``max_wait``), with the client's own sleep."""
        self._sleep(min(self.max_wait, max(seconds, 0.5)))

    def scopes(self) -> list[str]:
        """Scopes granted to this webhook/application (``scope`` method)."""
        res = self.result("scope")
        return [str(s) for s in res] if isinstance(res, list) else []

    def server_now(self) -> float:
        """Unix time on the portal's clock (local clock corrected by the last observed skew)."""
        return time.time() + self._skew

    def close(self) -> None:
        self._closed = True
        self._finalizer()

    def __enter__(self) -> "BitrixClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ used by the handler

    def classify_for(self, method: str, status: int | None, body: Mapping[str, Any] | None, what: str) -> Exception:
        reset = None
        t = body.get("time") if isinstance(body, Mapping) else None
        if isinstance(t, Mapping) and t.get("operating_reset_at"):
            reset = _num(t.get("operating_reset_at"))
        elif method in self._operating:
            reset = self._operating[method][1]
        return classify(status, body, what=what, reset_at=reset, now=self.server_now())

    def note_time(self, method: str, t: Any) -> None:
        """Remember the server clock and the method's operating-time budget from ``time``."""
        if not isinstance(t, Mapping):
            return
        start = _num(t.get("start"))
        if start:
            self._skew = start - time.time()
        if t.get("date_start"):
            self.date_start = str(t["date_start"])
        if "operating" in t:
            self._operating[method.lower()] = (_num(t.get("operating")) or 0.0,
                                               _num(t.get("operating_reset_at")) or 0.0)

    # ------------------------------------------------------------ internals

    def _retrying(self, fn: Callable[[], Any], retry_on: type[TransientError] = TransientError) -> Any:
        retryer = Retrying(
            retry=retry_if_exception_type(retry_on), stop=stop_after_attempt(self.attempts),
            wait=self._wait, sleep=self._sleep, reraise=True,
        )
        return retryer(fn)

    def _wait(self, state: RetryCallState) -> float:
        """Exponential back-off, or exactly what the server asked for (bounded by ``max_wait``)."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(self.max_wait, max(exc.retry_after, 0.5))
        return min(self.max_wait, self.backoff * (2 ** (state.attempt_number - 1)))

    def _respect_budget(self, methods: Iterable[str]) -> None:
        """Pause before a method that used ~its whole operating-time budget, until it resets."""
        wait = 0.0
        for m in methods:
            op = self._operating.get(m.lower())
            if op and op[0] >= self.operating_limit * OPERATING_MARGIN and op[1]:
                wait = max(wait, op[1] - self.server_now())
                del self._operating[m.lower()]
        if wait > 0:
            self._sleep(min(wait, self.max_wait))

    def _parse_batch(self, env: Mapping[str, Any], commands: Mapping[str, tuple[str, Mapping[str, Any]]]) -> BatchReply:
        inner = _as_dict(env.get("result"))
        reply = BatchReply(results=_as_dict(inner.get("result")), time=_as_dict(env.get("time")))
        reply.totals = {k: int(v) for k, v in _as_dict(inner.get("result_total")).items() if _num(v) is not None}
        times = _as_dict(inner.get("result_time"))
        for label, t in times.items():
            if label in commands:
                self.note_time(commands[label][0], t)
        for label, err in _as_dict(inner.get("result_error")).items():
            method, params = commands.get(label, ("batch", {}))
            e = self.classify_for(method.lower(), None, err if isinstance(err, Mapping) else {"error": str(err)},
                                  describe(method, params))
            if isinstance(e, TokenExpired):
                e = AuthError(str(e), system=SYSTEM, obj=describe(method, params))
            reply.errors[label] = e  # type: ignore[assignment]
        return reply

    async def _open_session(self) -> aiohttp.ClientSession:
        self._refresh_lock = asyncio.Lock()
        return aiohttp.ClientSession(
            raise_for_status=False, timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={"Accept": "application/json", "User-Agent": "client-keeper-connector"},
        )

    async def _send(self, method: str, params: dict) -> dict:
        """One request; on 401 ``expired_token`` refresh the OAuth token once and resend."""
        srh = self._bx.srh
        try:
            return await self._bx.call(method, params, raw=True)
        except TokenExpired as e:
            if not self._oauth:
                raise AuthError(str(e), system=SYSTEM, obj=describe(method, params), code="expired_token",
                                status=401) from None
            rejected = e.token
        assert self._refresh_lock is not None
        async with self._refresh_lock:
            if srh.token == rejected:  # nobody refreshed while we waited
                self._force_refresh = True
                await srh.ensure_new_token()
        try:
            return await self._bx.call(method, params, raw=True)
        except TokenExpired as e:
            raise AuthError(f"access token rejected right after a refresh: {e}", system=SYSTEM,
                            obj=describe(method, params), code="expired_token", status=401) from None

    async def _token_func(self) -> str:
        """fast_bitrix24's token hook: the stored access token, or a fresh one when forced."""
        if self._access and not self._force_refresh:
            return self._access
        self._force_refresh = False
        try:
            return await self._refresh()
        except BaseException:
            # the library clears this event before asking and sets it only on success: left
            # cleared, every later request would wait for a token forever
            self._bx.srh.token_received.set()
            raise

    async def _refresh(self) -> str:
        """Exchange the refresh token for a new pair: the rotated one in the kv store first, then the
        config's when the portal refuses the stored one and the config holds another (the admin issued
        a new pair after a spent token: the documented remedy must work without emptying the store)."""
        o = self._oauth
        assert o is not None
        stored = self._kv_get(REFRESH_TOKEN_KV)
        if stored and o.refresh_token and o.refresh_token != stored:
            try:
                return await self._refresh_with(stored, stored)
            except AuthError as e:
                log.warning("%s: the stored refresh token was refused; trying the one in the config", e)
            return await self._refresh_with(o.refresh_token, stored)
        return await self._refresh_with(stored or o.refresh_token or "", stored)

    async def _refresh_with(self, refresh: str, stored: str | None) -> str:
        """One exchange of ``refresh``; ``stored`` is what the kv store held when this refresh began."""
        o = self._oauth
        assert o is not None
        params = {"grant_type": "refresh_token", "client_id": o.client_id, "client_secret": o.client_secret,
                  "refresh_token": refresh}
        self.counter.add("oauth.token")
        try:
            async with self._session.get(o.token_url, params=params, allow_redirects=False) as resp:
                status, raw, location = resp.status, await resp.read(), resp.headers.get("Location")
        except (TimeoutError, aiohttp.ClientError) as e:
            raise TransientError(f"token refresh failed ({type(e).__name__})", system=SYSTEM,
                                 obj="oauth.token") from None
        if status in REDIRECT_STATUSES:  # the query carries the client secret and the refresh token
            raise redirect_error(SYSTEM, "oauth.token", redirect_target(o.token_url, location), status)
        data = _json(raw) or {}
        if status >= 400 or "error" in data or not data.get("access_token"):
            rotated = self._kv_get(REFRESH_TOKEN_KV)
            if str(data.get("error") or "").lower() == "invalid_grant" and rotated and rotated != stored:
                # another client of this store (the application endpoint, a second process) refreshed first:
                # its pair is in the store; take it rather than failing
                access = self._kv_get(ACCESS_TOKEN_KV)
                if access:
                    self._access = access
                    return access
            err = classify(status, data, what="oauth.token")
            if isinstance(err, (TokenExpired, Rejected)):  # a dead refresh token is an auth problem
                err = AuthError(str(data.get("error_description") or data.get("error") or f"HTTP {status}"),
                                system=SYSTEM, obj="oauth.token", code=data.get("error"), status=status)
            raise err
        access = str(data["access_token"])
        add_secret(access)
        new_refresh = data.get("refresh_token")
        if new_refresh:
            add_secret(str(new_refresh))
            self._kv_set(REFRESH_TOKEN_KV, str(new_refresh))
        self._kv_set(ACCESS_TOKEN_KV, access)
        self._access = access
        return access

    def _kv_get(self, name: str) -> str | None:
        return self.ctx.kv_get(name) if self.ctx.kv_get else None

    def _kv_set(self, name: str, value: str) -> None:
        if self.ctx.kv_set:
            self.ctx.kv_set(name, value)

    def _run(self, coro: Any) -> Any:
        """Run a coroutine on the client's loop; a request never blocks the caller for longer than
        the HTTP timeout plus the client-side throttle."""
        if self._closed:
            coro.close()
            raise RuntimeError("bitrix24 client is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout=self.settings.timeout + 120)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TransientError(f"no answer within {self.settings.timeout + 120:.0f} s", system=SYSTEM) from None


def _installed_app(settings: Bitrix24, ctx: Context) -> OAuth:
    """Application mode: the portal and the tokens come from the installation (``ONAPPINSTALL``,
    kept in the kv store), and rotate there exactly as in OAuth mode."""
    app = settings.app
    assert app is not None
    get = ctx.kv_get or (lambda _name: None)
    endpoint = get(APP_ENDPOINT_KV)
    refresh = get(REFRESH_TOKEN_KV)
    if not endpoint or not refresh:
        raise AuthError(_("the Bitrix24 application is not installed yet: run `connector app serve` and add the local "
                          "application in the portal (see `connector app install-info`)"), system=SYSTEM, obj="application")
    domain = endpoint.rstrip("/").removesuffix("/rest")
    return OAuth(domain=domain, client_id=app.client_id, client_secret=app.client_secret, refresh_token=refresh,
                 access_token=get(ACCESS_TOKEN_KV) or None, token_url=app.token_url)


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread, session: aiohttp.ClientSession) -> None:
    if loop.is_closed():
        return
    if loop.is_running():
        try:
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=5)
        except Exception:  # closing is best effort: the process may be exiting  # noqa: BLE001, S110
            pass
        loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(timeout=5)
    if not loop.is_running():
        loop.close()


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
