"""HTTP to the TurboSMS JSON API only: auth, the one error classifier, idempotent sends.

Every request is ``POST {url}/<module>/<method>.json`` with ``Authorization: Bearer <token>`` and a
JSON body. TurboSMS answers HTTP 200 for any valid request; the outcome is ``response_code``
(reference §11), classified in :func:`classify`. A send carries ``sequence_id``, derived from the
planned action's key: TurboSMS executes a request with a given ``sequence_id`` once and answers a
repeat with 507 ``FAILED_DUPLICATE_REQUEST`` and the earlier result, so resending after a timeout
or a crash cannot text a client twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from connector.config import Sms
from connector.errors import AuthError, PermanentError, Rejected, TransientError, UpstreamError
from connector.ports import Context
from connector.redact import add_secret
from connector.upstream import GuardedSession, transport_error

SYSTEM = "turbosms"
COUNTER = "sms"
log = logging.getLogger("sms.turbosms")

OK_CODES = {0, 1, 800, 801, 802, 803}
DUPLICATE = 507
AUTH_CODES = {105, 106, 301}
TRANSIENT_CODES = {500, 501, 503, 504, 505, 506, 999}
DELIVERED = {"delivered", "read"}
IN_TRANSIT = {"queued", "accepted", "sent", "enroute", "pending", "unknown", ""}
FAILED = {"undelivered", "expired", "rejected", "failed", "cancelled", "canceled", "deleted"}


def classify(code: Any, status_text: str = "", *, what: str) -> UpstreamError:
    """The one place that maps a TurboSMS ``response_code`` onto the error tree (reference §11 table)."""
    try:
        n = int(code)
    except (TypeError, ValueError):
        n = None
    msg = (status_text or "").strip() or "unknown error"
    kw: dict[str, Any] = {"system": SYSTEM, "obj": what, "code": n if n is not None else code}
    if n in AUTH_CODES:
        return AuthError(msg, **kw)
    if n == 203:
        return PermanentError(f"{msg}: no money on the account, top it up", **kw)
    if n in TRANSIENT_CODES:
        return TransientError(msg, **kw)
    if n == 404:
        return Rejected(f"{msg}: the number is in the stop-list, never resend", **kw)
    if n == 305:
        return Rejected(f"{msg}: invalid phone number", **kw)
    if n is not None and (100 <= n < 500 or n == 502):
        return Rejected(msg, **kw)
    return PermanentError(msg, **kw)


def sequence_id(action_key: str) -> str:
    """The idempotency id of one planned message: stable across retries and restarts."""
    return "cn" + hashlib.sha256(action_key.encode("utf-8")).hexdigest()[:30]


def recipient(e164: str) -> str:
    """``+380501234567`` -> ``380501234567`` (TurboSMS wants digits without ``+``)."""
    return "".join(ch for ch in e164 if ch.isdigit())


@dataclass
class SendResult:
    message_id: str
    phone: str
    replayed: bool  # True when TurboSMS answered 507 with the earlier result
    code: int


class TurboSmsClient:
    """Synchronous TurboSMS client; counts requests in ``ctx.counter("sms")``."""

    def __init__(self, settings: Sms, ctx: Context, *, session: requests.Session | None = None,
                 timeout: float = 30.0, attempts: int = 3, sleep: Callable[[float], None] = time.sleep,
                 backoff: float = 1.0):
        if not settings.token:
            raise ValueError("turbosms needs a token")
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.counter = ctx.counter(COUNTER)
        # the bearer token goes with every request: never follow a redirect; ``timeout`` is a total deadline
        self.session = session or GuardedSession()
        self._own_session = session is None
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.sleep = sleep
        self.backoff = backoff
        add_secret(settings.token)

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def request(self, module: str, method: str, body: Mapping[str, Any] | None = None, *, what: str | None = None) -> dict:
        """One request; returns the envelope. Error codes are raised, 507 is returned to the caller."""
        what = what or f"{module}/{method}"
        self.counter.add(f"turbosms {module}/{method}")
        try:
            resp = self.session.post(f"{self.base}/{module}/{method}.json", json=dict(body or {}), timeout=self.timeout,
                                     headers={"Authorization": f"Bearer {self.settings.token}"})
        except requests.RequestException as e:
            known = transport_error(e, system=SYSTEM, obj=what)
            if known is not None:
                raise known from None
            raise TransientError(f"connection failed ({type(e).__name__})", system=SYSTEM, obj=what) from None
        if resp.status_code != 200:
            cls = TransientError if resp.status_code >= 500 or resp.status_code == 429 else PermanentError
            if resp.status_code in (401, 403):
                cls = AuthError
            raise cls(f"HTTP {resp.status_code}", system=SYSTEM, obj=what, status=resp.status_code)
        try:
            data = resp.json()
        except ValueError:
            raise TransientError("response is not JSON", system=SYSTEM, obj=what) from None
        if not isinstance(data, dict):
            raise TransientError("response is not a JSON object", system=SYSTEM, obj=what)
        code = data.get("response_code")
        try:
            n = int(code)
        except (TypeError, ValueError):
            raise TransientError(f"no response_code in {str(data)[:80]}", system=SYSTEM, obj=what) from None
        if n not in OK_CODES and n != DUPLICATE:
            raise classify(n, str(data.get("response_status") or ""), what=what)
        return data

    def _read(self, module: str, method: str, body: Mapping[str, Any] | None = None) -> dict:
        """Reads are retried on transient failures; sends are retried by the executor (same sequence_id)."""
        retrying = Retrying(retry=retry_if_exception_type(TransientError), stop=stop_after_attempt(self.attempts),
                            wait=wait_exponential(multiplier=self.backoff, max=30), sleep=self.sleep, reraise=True)
        return retrying(self.request, module, method, body)

    def send(self, phone_e164: str, text: str, *, seq_id: str | None) -> SendResult:
        """Send one SMS; returns its message_id or raises the recipient's own error (stop-list, bad phone…)."""
        to = recipient(phone_e164)
        body: dict[str, Any] = {"recipients": [to], "sms": {"sender": self.settings.sender, "text": text}}
        if seq_id:
            body["sequence_id"] = seq_id
        what = f"message/send to {to[:5]}…{to[-2:]}"
        data = self.request("message", "send", body, what=what)
        code = int(data["response_code"])
        items = data.get("response_result")
        items = [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
        mine = next((i for i in items if recipient(str(i.get("phone") or "")) == to), items[0] if len(items) == 1 else None)
        if mine is None:
            raise PermanentError(f"no result for the recipient (code {code})", system=SYSTEM, obj=what, code=code)
        message_id = mine.get("message_id")
        if not message_id:
            raise classify(mine.get("response_code"), str(mine.get("response_status") or ""), what=what)
        return SendResult(str(message_id), to, code == DUPLICATE, code)

    def status(self, message_ids: Iterable[str]) -> dict[str, dict]:
        """``message/status`` for the ids, by id (100 per request)."""
        ids = list(dict.fromkeys(message_ids))
        out: dict[str, dict] = {}
        for i in range(0, len(ids), 100):
            data = self._read("message", "status", {"messages": ids[i:i + 100]})
            for item in data.get("response_result") or []:
                if isinstance(item, dict) and item.get("message_id"):
                    out[str(item["message_id"])] = item
        return out

    def balance(self) -> float:
        data = self._read("user", "balance")
        result = data.get("response_result")
        value = result.get("balance") if isinstance(result, dict) else None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TransientError(f"unreadable balance {value!r}", system=SYSTEM, obj="user/balance") from None


def delivery_state(item: Mapping[str, Any]) -> tuple[str | None, str]:
    """A status item -> (``delivered`` | ``failed`` | None while in transit, detail)."""
    try:
        code = int(item.get("response_code") or 0)
    except (TypeError, ValueError):
        code = 0
    if code not in (0, 1):
        return "failed", f"turbosms {code} {item.get('response_status') or ''}".strip()
    status = str(item.get("status") or "").strip()
    low = status.lower()
    if low in DELIVERED:
        return "delivered", f"{status} {item.get('updated') or ''}".strip()
    if low in FAILED:
        reason = item.get("rejected_status") or item.get("response_status") or ""
        return "failed", f"{status}{': ' + str(reason) if reason and reason != 'OK' else ''}"
    if low not in IN_TRANSIT:
        log.warning("turbosms: unknown delivery status %r; treated as in transit", status)
    return None, status
