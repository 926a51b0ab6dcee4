"""HTTP to the Binotel REST API 4.0 only: the envelope, spacing, retries and the one error classifier.

Every method is ``POST {url}/{group}/{method}.json`` with a JSON body in which ``key`` and
``secret`` sit beside the parameters. Binotel answers HTTP 200 with ``{"status":"error","code":…}``
for API errors; :func:`classify` is the one place that turns those codes (and transport failures)
into the connector's error tree.

Binotel publishes no numeric rate limit, only error 106. So the client is single-flight per key
(one request at a time across every client object of the process that holds the same key) with a
configurable minimum spacing, and backs off exponentially (10 s, 20 s, …) after a 106. Reads are
retried; ``calls/*`` never is, because a retried POST can place a second real phone call.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from connector.config import Binotel
from connector.errors import AuthError, PermanentError, RateLimited, Rejected, TransientError, UpstreamError
from connector.ports import Context
from connector.redact import add_secret
from connector.upstream import GuardedSession, transport_error

SYSTEM = "binotel"
log = logging.getLogger("binotel.client")

# Groups whose methods only read: safe to retry after 105/106/transport failures.
READ_GROUPS = {"stats", "settings"}
READ_CUSTOMER_METHODS = {"list", "take-by-id", "take-by-label", "search", "listOfLabels"}


def classify(code: Any, message: str = "", *, what: str, status: int | None = None) -> UpstreamError:
    """The one place that maps a Binotel error (API code or HTTP status) onto the error tree.

    ``what`` names the method and object (``stats/call-details id=…``); the key and secret are
    never part of a message.
    """
    try:
        n = int(str(code).strip()) if code not in (None, "") else None
    except ValueError:
        n = None
    msg = (message or "").strip() or (f"HTTP {status}" if status else "unknown error")
    kw: dict[str, Any] = {"system": SYSTEM, "obj": what, "code": n if n is not None else (code or None),
                          "status": status if status and status != 200 else None}
    if n in (120, 121):
        return AuthError(msg, **kw)
    if n == 106:
        return RateLimited(msg, retry_after=None, **kw)
    if n == 105:
        return TransientError(msg, **kw)
    if n in (103, 104, 150, 151):
        return Rejected(msg, **kw)
    if n is not None:  # 102 (no such method) and anything unknown: a bug or a change, not retryable
        return PermanentError(msg, **kw)
    if status == 429:
        return RateLimited(msg, retry_after=None, **kw)
    if status in (401, 403):
        return AuthError(msg, **kw)
    if status is None or status >= 500 or status == 408:
        return TransientError(msg, **kw)
    return PermanentError(msg, **kw)


def is_read(group: str, method: str) -> bool:
    """Only reads may be retried: a retried ``calls/*`` POST can dial a client twice."""
    return group in READ_GROUPS or (group == "customers" and method in READ_CUSTOMER_METHODS)


# ---------------------------------------------------------------- loose wire types

def as_int(value: Any, default: int = 0) -> int:
    """Binotel sends numbers as numbers or strings, sometimes ``""`` or null in one response."""
    if value is None or value == "" or isinstance(value, (list, dict)):
        return default
    try:
        return int(float(str(value).strip()))
    except ValueError:
        return default


def as_str(value: Any) -> str:
    if value is None or isinstance(value, (list, dict)):
        return ""
    return str(value)


def as_dict(value: Any) -> dict:
    """PHP renders an empty object as ``[]``; Binotel also sends ``""`` for a missing one."""
    return value if isinstance(value, dict) else {}


def records(container: Any) -> list[dict]:
    """``callDetails``/``listOfEmployees``: an object keyed by id, or ``[]``/``{}``/``""`` when empty.

    A list of objects is accepted too (some gateways and old captures), in order.
    """
    if isinstance(container, dict):
        return [v for v in container.values() if isinstance(v, dict)]
    if isinstance(container, list):
        return [v for v in container if isinstance(v, dict)]
    return []


def keyed_records(container: Any) -> list[tuple[str, dict]]:
    """Like :func:`records` but keeps each item's map key (employees are keyed by e-mail)."""
    if isinstance(container, dict):
        return [(str(k), v) for k, v in container.items() if isinstance(v, dict)]
    if isinstance(container, list):
        return [(str(i), v) for i, v in enumerate(container) if isinstance(v, dict)]
    return []


# ---------------------------------------------------------------- single flight per key

@dataclass
class _Gate:
    lock: threading.Lock
    last_end: float = float("-inf")
    not_before: float = float("-inf")


_gates: dict[str, _Gate] = {}
_gates_lock = threading.Lock()


def _gate_for(url: str, key: str) -> _Gate:
    ident = hashlib.sha256(f"{url}\0{key}".encode()).hexdigest()
    with _gates_lock:
        gate = _gates.get(ident)
        if gate is None:
            gate = _gates[ident] = _Gate(threading.Lock())
        return gate


class BinotelClient:
    """Synchronous Binotel client; counts every HTTP request in ``ctx.counter("binotel")``.

    ``sleep``/``monotonic`` are injectable so tests run the back-off without waiting;
    ``rate_backoff`` is the first wait after a 106 (doubling per attempt, capped by ``max_wait``),
    ``transient_backoff`` the first wait after 105 or a transport failure.
    """

    def __init__(self, settings: Binotel, ctx: Context, *, session: requests.Session | None = None,
                 sleep: Callable[[float], None] | None = None, monotonic: Callable[[], float] = time.monotonic,
                 attempts: int = 5, rate_backoff: float = 10.0, transient_backoff: float = 2.0,
                 max_wait: float = 300.0, timeout: float = 60.0):
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.counter = ctx.counter(SYSTEM)
        # the key and secret travel in every body: never follow a redirect; ``timeout`` is a total deadline
        self.session = session or GuardedSession()
        self._own_session = session is None
        self.sleep = sleep if sleep is not None else ctx.sleep  # back-offs end at once when the daemon is told to stop
        self.monotonic = monotonic
        self.attempts = max(1, attempts)
        self.rate_backoff = rate_backoff
        self.transient_backoff = transient_backoff
        self.max_wait = max_wait
        self.timeout = timeout
        self.min_interval = max(0.0, float(settings.min_interval_seconds))
        self._gate = _gate_for(self.base, settings.key)
        add_secret(settings.key)
        add_secret(settings.secret)

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    # ------------------------------------------------------------ transport

    def call(self, group: str, method: str, params: Mapping[str, Any] | None = None, *, what: str | None = None) -> dict:
        """One API method; returns the success envelope. Reads are retried, ``calls/*`` never."""
        label = what or f"{group}/{method}"
        if not is_read(group, method):
            return self._once(group, method, params, label)
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(self._once, group, method, params, label)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        n = max(state.attempt_number - 1, 0)
        if isinstance(exc, RateLimited):
            wait = exc.retry_after if exc.retry_after else self.rate_backoff * (2 ** n)
        else:
            wait = self.transient_backoff * (2 ** n)
        wait = min(wait, self.max_wait)
        log.warning("%s; retrying in %.1f s", exc, wait)
        return wait

    def _once(self, group: str, method: str, params: Mapping[str, Any] | None, what: str) -> dict:
        body = dict(params or {})
        body["key"] = self.settings.key
        body["secret"] = self.settings.secret
        url = f"{self.base}/{group}/{method}.json"
        gate = self._gate
        with gate.lock:
            now = self.monotonic()
            wait = max(gate.last_end + self.min_interval, gate.not_before) - now
            if wait > 0:
                self.sleep(wait)
            self.counter.add(f"{group}/{method}")
            try:
                resp = self.session.post(url, json=body, timeout=self.timeout)
                status = resp.status_code
            except requests.RequestException as e:
                known = transport_error(e, system=SYSTEM, obj=what)
                if known is not None:
                    raise known from None
                raise TransientError(f"connection failed ({type(e).__name__})", system=SYSTEM, obj=what) from None
            finally:
                gate.last_end = self.monotonic()
            if status != 200:
                raise classify(None, f"HTTP {status}", what=what, status=status)
            try:
                data = resp.json()
            except ValueError:
                raise TransientError("response is not JSON", system=SYSTEM, obj=what, status=status) from None
            if not isinstance(data, dict):
                raise TransientError("response is not a JSON object", system=SYSTEM, obj=what)
            if str(data.get("status", "")).lower() != "success":
                err = classify(data.get("code"), as_str(data.get("message")), what=what)
                if isinstance(err, RateLimited):
                    # Everyone sharing this key waits, not only the caller that was refused.
                    gate.not_before = self.monotonic() + min(self.rate_backoff, self.max_wait)
                raise err
            return data

    # ------------------------------------------------------------ methods the connector uses

    def calls_for_period(self, direction: str, start: int, stop: int) -> list[dict]:
        """``stats/{incoming|outgoing}-calls-for-period`` for ``[start, stop]`` (Unix s, inclusive)."""
        method = {"in": "incoming-calls-for-period", "out": "outgoing-calls-for-period",
                  "all": "list-of-calls-for-period"}[direction]
        data = self.call("stats", method, {"startTime": int(start), "stopTime": int(stop)},
                         what=f"stats/{method} {int(start)}..{int(stop)}")
        return records(data.get("callDetails"))

    def call_details(self, ids: Iterable[str | int]) -> list[dict]:
        """``stats/call-details`` for a few generalCallIDs (result keyed by id)."""
        id_list = [str(i) for i in ids]
        data = self.call("stats", "call-details", {"generalCallID": id_list},
                         what=f"stats/call-details id={','.join(id_list[:3])}{'…' if len(id_list) > 3 else ''}")
        return records(data.get("callDetails"))

    def call_record_url(self, call_id: str | int) -> str:
        """A recording link; it expires in 15 minutes, so download at once and never store it."""
        data = self.call("stats", "call-record", {"generalCallID": str(call_id)}, what=f"stats/call-record id={call_id}")
        return as_str(data.get("url"))

    def employees(self) -> list[tuple[str, dict]]:
        """``settings/list-of-employees`` as ``(map key, item)``; the SIP password is dropped here."""
        data = self.call("settings", "list-of-employees")
        out = []
        for k, item in keyed_records(data.get("listOfEmployees")):
            item = dict(item)
            endpoint = as_dict(item.get("endpointData"))
            if endpoint:
                endpoint = {ek: ev for ek, ev in endpoint.items() if ek != "password"}
                item["endpointData"] = endpoint
            out.append((k, item))
        return out
