"""A loopback Binotel API 4.0 emulator, faithful to the wire reference (§2, §4–§6, §8, §14).

``POST /api/4.0/<group>/<method>.json`` with a JSON body holding ``key``/``secret`` beside the
parameters; always HTTP 200 with ``{"status":"success",…}`` or ``{"status":"error","code":…}``.
Checks in order: key/secret (121), company disabled (120), rate limiter (106), method (102),
parameters (103 missing, 104 bad). Calls are filtered by ``startTime`` (inclusive window) and
only once they have started by the emulator's clock, which runs from the synthetic company's
anchor (``advance`` moves it; a call ``ONLINE`` until a given moment then comes back final).

``push_completed`` plays Binotel's webhook sender: a form-encoded, PHP-bracketed
``apiCallCompleted`` body from a chosen local source address, redelivered with an increasing
``attemptsCounter`` until the receiver answers the literal ``{"status":"success"}``.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from binotel.emulator.seed import COMPANY_ID, RECORDED, LiveCall, render_company, render_employees
from connector import loopback
from connector.sandbox import SyntheticCompany

KYIV = ZoneInfo("Europe/Kyiv")
SUCCESS_BODY = b'{"status":"success"}'
MESSAGES = {
    102: "No such method", 103: "Not enough data", 104: "Wrong data", 105: "Something went wrong",
    106: "Requests are too frequent", 120: "Your company is disabled", 121: "Your key or secret is wrong",
}
_PATH = re.compile(r"^/api/4\.0/([A-Za-z]+)/([A-Za-z-]+)\.json$")
_RECORD = re.compile(r"^/records/([0-9a-f]+)\.mp3$")
ANSWERED = {"ANSWER", "TRANSFER"}


class ApiError(Exception):
    def __init__(self, code: int, message: str | None = None):
        self.code = code
        self.message = message or MESSAGES.get(code, "Error")
        super().__init__(self.message)


@dataclass
class PushAttempt:
    attempts_counter: int
    status: int  # HTTP status, 0 when the connection failed
    body: bytes


class _Bucket:
    def __init__(self, capacity: int, per_second: float, monotonic: Callable[[], float]):
        self.capacity = float(capacity)
        self.per_second = per_second
        self.tokens = float(capacity)
        self.monotonic = monotonic
        self.at = monotonic()

    def take(self) -> bool:
        now = self.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def php_form(value: Any, prefix: str) -> list[tuple[str, str]]:
    """Flatten a nested record the way PHP's ``http_build_query`` does; empty objects become ``""``."""
    if isinstance(value, dict) and value:
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            out += php_form(v, f"{prefix}[{k}]")
        return out
    if isinstance(value, list) and value:
        out = []
        for i, v in enumerate(value):
            out += php_form(v, f"{prefix}[{i}]")
        return out
    if value is None or isinstance(value, (dict, list)):
        return [(prefix, "")]
    return [(prefix, str(value))]


class BinotelEmulator:
    """Seeded from a :class:`SyntheticCompany` (or empty); serves on 127.0.0.1, port 0."""

    def __init__(self, company: SyntheticCompany | None = None, *, key: str | None = None, secret: str | None = None,
                 extras: bool = True, record_ttl: float = 900.0, monotonic: Callable[[], float] = time.monotonic):
        self.key = key or f"{secrets.token_hex(3)}-{secrets.token_hex(4)[:7]}"
        self.secret = secret or "-".join(secrets.token_hex(n) for n in (3, 3, 3, 3, 4))
        self.monotonic = monotonic
        self.record_ttl = record_ttl
        self.company_disabled = False
        self.calls: dict[str, dict] = {}
        self.live: dict[str, LiveCall] = {}
        self.employees: dict[str, dict] = {}
        self.requests: list[tuple[str, dict]] = []  # (group/method, parameters without credentials)
        self._records: dict[str, tuple[str, float]] = {}  # token -> (call id, expires at)
        self._bucket: _Bucket | None = None
        self._lock = threading.Lock()
        self._t0 = monotonic()
        self._epoch = company.anchor.timestamp() if company else time.time()
        self._offset = 0.0
        if company is not None:
            self.calls, live = render_company(company, extras=extras)
            self.live = {lc.call_id: lc for lc in live}
            self.employees = render_employees(company)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.methods: dict[str, Callable[[dict], dict]] = {
            "stats/incoming-calls-for-period": lambda p: self._period(p, "0"),
            "stats/outgoing-calls-for-period": lambda p: self._period(p, "1"),
            "stats/list-of-calls-for-period": self._list_for_period,
            "stats/all-incoming-calls-since": self._incoming_since,
            "stats/list-of-lost-calls-today": self._lost_today,
            "stats/list-of-lost-calls-for-today": self._lost_today,
            "stats/call-details": self._call_details,
            "stats/call-record": self._call_record,
            "settings/list-of-employees": lambda p: {"listOfEmployees": self.employees or []},
        }

    # ------------------------------------------------------------ lifecycle and test hooks

    @property
    def port(self) -> int:
        assert self._server is not None, "emulator not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/4.0"

    def start(self) -> str:
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._server = loopback.start_http(Handler, "binotel-emulator")
        return self.url

    def stop(self) -> None:
        loopback.stop(self._server)
        self._server = None

    def now(self) -> float:
        """Emulator time (Unix s): the company's anchor plus elapsed time plus :meth:`advance`."""
        return self._epoch + (self.monotonic() - self._t0) + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds

    def complete(self, call_id: str) -> None:
        """Finish an ``ONLINE`` call now: it is served with its final disposition from here on."""
        self.live[str(call_id)].ends_at = float("-inf")

    def rate_limit(self, capacity: int | None, per_second: float = 0.0) -> None:
        """Answer 106 once ``capacity`` requests are spent (refilled at ``per_second``); None = off."""
        self._bucket = _Bucket(capacity, per_second, self.monotonic) if capacity is not None else None

    def add_call(self, record: dict) -> None:
        """Add a raw wire record (tests of loose types)."""
        self.calls[str(record["generalCallID"])] = record

    def current(self, call_id: str) -> dict:
        """The call as served now (an ``ONLINE`` call shows its running talk time)."""
        rec = self.calls[str(call_id)]
        lc = self.live.get(str(call_id))
        if lc is None:
            return rec
        if self.now() >= lc.ends_at and lc.final_record is not None:
            return lc.final_record
        online = dict(rec)
        elapsed = max(0, int(self.now()) - int(rec["startTime"]) - int(rec["waitsec"]))
        online["billsec"] = str(elapsed)
        return online

    # ------------------------------------------------------------ dispatch

    def handle(self, group: str, method: str, body: dict) -> dict:
        params = {k: v for k, v in body.items() if k not in ("key", "secret")}
        with self._lock:
            self.requests.append((f"{group}/{method}", params))
        if body.get("key") != self.key or body.get("secret") != self.secret:
            return _error(121)
        if self.company_disabled:
            return _error(120)
        with self._lock:
            if self._bucket is not None and not self._bucket.take():
                return _error(106)
        fn = self.methods.get(f"{group}/{method}")
        if fn is None:
            return _error(102)
        try:
            return {"status": "success", **fn(params)}
        except ApiError as e:
            return _error(e.code, e.message)

    # ------------------------------------------------------------ methods

    def _started(self) -> list[dict]:
        now = self.now()
        out = [self.current(cid) for cid, rec in self.calls.items() if int(rec["startTime"]) <= now]
        return sorted(out, key=lambda r: (int(r["startTime"]), int(r["generalCallID"])))

    def _period(self, p: dict, call_type: str | None) -> dict:
        start, stop = _ts(p, "startTime"), _ts(p, "stopTime")
        if stop < start:
            raise ApiError(104)
        return _details(r for r in self._started() if start <= int(r["startTime"]) <= stop
                        and (call_type is None or str(r["callType"]) == call_type))

    def _list_for_period(self, p: dict) -> dict:
        start, stop = _ts(p, "startTime"), _ts(p, "stopTime")
        if stop - start > 86400:
            raise ApiError(104, "Wrong data: the period must not exceed 24 hours")
        return self._period(p, None)

    def _incoming_since(self, p: dict) -> dict:
        since = _ts(p, "timestamp")
        return _details(r for r in self._started() if int(r["startTime"]) >= since and str(r["callType"]) == "0")

    def _lost_today(self, p: dict) -> dict:
        today = datetime.fromtimestamp(self.now(), KYIV).date()
        out = []
        for r in self._started():
            if str(r["callType"]) != "0" or r["disposition"] in ANSWERED or r["disposition"] in ("ONLINE", ""):
                continue
            if any(h.get("disposition") in ANSWERED for h in r.get("historyData") or []):
                continue
            if datetime.fromtimestamp(int(r["startTime"]), KYIV).date() == today:
                out.append({**r, "comment": ""})
        return _details(out)

    def _call_details(self, p: dict) -> dict:
        raw = _need(p, "generalCallID")
        ids = [str(x) for x in (raw if isinstance(raw, list) else [raw])]
        found = [self.current(i) for i in ids if i in self.calls and int(self.calls[i]["startTime"]) <= self.now()]
        if not found:
            raise ApiError(104)
        return _details(found)

    def _call_record(self, p: dict) -> dict:
        cid = str(_need(p, "generalCallID"))
        if cid not in self.calls or self.current(cid)["disposition"] not in RECORDED:
            raise ApiError(104)
        token = secrets.token_hex(12)
        with self._lock:
            self._records[token] = (cid, self.now() + self.record_ttl)
        return {"url": f"http://127.0.0.1:{self.port}/records/{token}.mp3"}

    def recording(self, token: str) -> bytes | None:
        """The bytes behind a ``call-record`` link, or None once it expired."""
        with self._lock:
            entry = self._records.get(token)
        if entry is None or self.now() >= entry[1]:
            return None
        return b"ID3\x03\x00\x00\x00\x00\x00\x00" + f"fake recording of call {entry[0]}".encode()

    # ------------------------------------------------------------ webhook sender

    def completed_form(self, call_id: str, attempts_counter: int, language: str = "ru") -> list[tuple[str, str]]:
        """An ``apiCallCompleted`` body as ordered form pairs."""
        rec = dict(self.current(call_id))
        rec["linkToCallRecordInMyBusiness"] = (
            f"https://my.binotel.ua/?module=cdrs&action=generateFile&fileName={call_id}.mp3")
        rec["linkToCallRecordOverlayInMyBusiness"] = (
            f"https://my.binotel.ua/?module=cdrs&action=generateFile&fileName={call_id}.mp3&overlay=1")
        return ([("requestType", "apiCallCompleted"), ("attemptsCounter", str(attempts_counter))]
                + php_form(rec, "callDetails") + [("language", language)])

    def push_completed(self, call_id: str, url: str, *, source_address: str = "127.0.0.1", max_attempts: int = 7,
                       sleep: Callable[[float], None] = time.sleep, interval: float = 0.0) -> list[PushAttempt]:
        """Deliver ``apiCallCompleted`` until the literal success body arrives (at most ``max_attempts``)."""
        attempts: list[PushAttempt] = []
        for n in range(1, max_attempts + 1):
            status, body = post_form(url, self.completed_form(call_id, n), source_address=source_address)
            attempts.append(PushAttempt(n, status, body))
            if status == 200 and body == SUCCESS_BODY:
                break
            if interval and n < max_attempts:
                sleep(interval * n)
        return attempts

    def push_call_settings(self, url: str, external_number: str, *, source_address: str = "127.0.0.1") -> tuple[int, bytes]:
        """An ``apiCallSettings`` request, as Binotel sends it before routing an incoming call."""
        pairs = [("requestType", "apiCallSettings"), ("externalNumber", external_number), ("callType", "0"),
                 ("pbxNumber", "0443334023"), ("companyID", COMPANY_ID)]
        return post_form(url, pairs, source_address=source_address)


def post_form(url: str, pairs: list[tuple[str, str]] | bytes, *, source_address: str = "127.0.0.1",
              content_type: str = "application/x-www-form-urlencoded", timeout: float = 10.0) -> tuple[int, bytes]:
    """POST from a chosen local address (any 127.x.y.z works on loopback), so allow-lists are testable."""
    parts = urlsplit(url)
    body = pairs if isinstance(pairs, bytes) else urlencode(pairs).encode()
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout,
                                      source_address=(source_address, 0))
    try:
        conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers={"Content-Type": content_type, "User-Agent": "Binotel-Emulator"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def _error(code: int, message: str | None = None) -> dict:
    return {"status": "error", "code": code, "message": message or MESSAGES.get(code, "Error")}


def _details(rows: Any) -> dict:
    """``callDetails`` keyed by generalCallID; PHP's empty array ``[]`` when nothing matched."""
    out = {str(r["generalCallID"]): r for r in rows}
    return {"callDetails": out or []}


def _need(p: dict, name: str) -> Any:
    v = p.get(name)
    if v is None or v == "" or v == []:
        raise ApiError(103)
    return v


def _ts(p: dict, name: str) -> int:
    v = _need(p, name)
    try:
        n = int(str(v).strip())
    except ValueError:
        raise ApiError(104) from None
    if n < 0:
        raise ApiError(104)
    return n


class _Handler(BaseHTTPRequestHandler):
    owner: BinotelEmulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave as two writes; no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 1 << 20)) if length else b""
        m = _PATH.match(urlsplit(self.path).path)
        if not m:
            self._send(404, b"Not Found", "text/plain")
            return
        try:
            body = json.loads(raw.decode("utf-8")) if raw else {}
        except (ValueError, UnicodeDecodeError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        reply = self.owner.handle(m.group(1), m.group(2), body)
        self._send(200, json.dumps(reply, ensure_ascii=False).encode("utf-8"))

    def do_GET(self) -> None:
        m = _RECORD.match(urlsplit(self.path).path)
        data = self.owner.recording(m.group(1)) if m else None
        if data is None:
            self._send(404, b"Not Found", "text/plain")
        else:
            self._send(200, data, "audio/mpeg")
