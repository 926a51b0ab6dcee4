"""A loopback TurboSMS emulator, faithful to the wire reference §11 and §14.

``<module>/<method>[.json]`` over GET or POST; the token by query, form field, ``Basic`` or
``Bearer``; data by query string, form or JSON. Every answer is HTTP 200 with
``response_code``/``response_status``/``response_result``. ``message/send`` judges each recipient
(305 invalid phone, 404 stop-list) and answers 800 or 802 with per-recipient items; money is
charged per message part (UCS-2 70/67 characters, GSM-7 160/153); a repeated ``sequence_id``
gets 507 and the earlier result without a second message. Delivery advances
Queued -> Sent -> Delivered (or Undelivered for numbers in ``undeliverable``) when a test calls
:meth:`TurboSmsEmulator.advance`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connector import loopback

KYIV = timezone(timedelta(hours=2))
STATUS = {
    0: "OK", 1: "PONG", 103: "REQUIRED_TOKEN", 104: "REQUIRED_CONTENT", 105: "REQUIRED_AUTH",
    106: "REQUIRED_ACTIVE_USER", 200: "REQUIRED_MESSAGE_SENDER", 201: "REQUIRED_MESSAGE_TEXT",
    202: "REQUIRED_MESSAGE_RECIPIENT", 203: "REQUIRED_BALANCE", 300: "INVALID_REQUEST", 301: "INVALID_TOKEN",
    305: "INVALID_PHONE", 400: "NOT_ALLOWED_MESSAGE_SENDER", 404: "NOT_ALLOWED_NUMBER_STOPLIST",
    414: "NOT_ALLOWED_MESSAGE_ID", 502: "FAILED_PARSE_BODY", 507: "FAILED_DUPLICATE_REQUEST",
    800: "SUCCESS_MESSAGE_ACCEPTED", 801: "SUCCESS_MESSAGE_SENT", 802: "SUCCESS_MESSAGE_PARTIAL_ACCEPTED",
    803: "SUCCESS_MESSAGE_PARTIAL_SENT", 999: "FATAL_ERROR",
}
# Ukrainian mobile operator codes (libphonenumber), as TurboSMS recognises them for 380XXXXXXXXX.
UA_MOBILE = {"39", "50", "63", "66", "67", "68", "71", "72", "73", "75", "77", "91", "92", "93", "94", "95", "96", "97", "98", "99"}
GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
           "¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXT = set("^{}\\[~]|€\f")
PROGRESS = ["Queued", "Sent", "Delivered"]


def sms_parts(text: str) -> int:
    """Message parts: GSM-7 160 single / 153 per part (extension chars count twice); else UCS-2 70 / 67."""
    if all(ch in GSM7 or ch in GSM7_EXT for ch in text):
        n = sum(2 if ch in GSM7_EXT else 1 for ch in text)
        return 1 if n <= 160 else -(-n // 153)
    n = sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)
    return 1 if n <= 70 else -(-n // 67)


@dataclass
class SentSms:
    message_id: str
    phone: str
    sender: str
    text: str
    parts: int
    status: str = "Queued"
    sent: str | None = None
    updated: str = ""
    history: list[str] = field(default_factory=list)


class TurboSmsEmulator:
    def __init__(self, *, token: str | None = None, balance: float = 100.0, price_per_part: float = 0.85,
                 senders: set[str] | None = None, stoplist: set[str] | None = None,
                 undeliverable: set[str] | None = None, auto_advance: bool = False):
        self.token = token or secrets.token_hex(20)
        self.balance = balance
        self.price_per_part = price_per_part
        self.senders = senders  # None: any sender name is allowed
        self.stoplist = set(stoplist or ())
        self.undeliverable = set(undeliverable or ())
        self.blocked = False  # user blocked: 106
        self.auto_advance = auto_advance  # sandbox: each status query moves the asked messages a step
        self.messages: dict[str, SentSms] = {}
        self.outbox: list[SentSms] = []  # in the order accepted
        self.requests: list[tuple[str, str, dict]] = []  # (path, auth variant, data)
        self._sequences: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ lifecycle and hooks

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> str:
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._server = loopback.start_http(Handler, "turbosms-emulator")
        return self.url

    def stop(self) -> None:
        loopback.stop(self._server)
        self._server = None

    def advance(self, message_id: str | None = None) -> None:
        """Move one message (or all) a step: Queued -> Sent -> Delivered / Undelivered."""
        with self._lock:
            for m in [self.messages[message_id]] if message_id else list(self.messages.values()):
                self._step(m)

    def _step(self, m: SentSms) -> None:
        if m.status == "Queued":
            m.status = "Sent"
            m.sent = _stamp()
        elif m.status == "Sent":
            m.status = "Undelivered" if m.phone in self.undeliverable else "Delivered"
        else:
            return
        m.updated = _stamp()
        m.history.append(m.status)

    # ------------------------------------------------------------ dispatch

    def handle(self, path: str, auth: str | None, auth_kind: str, data: dict) -> dict:
        with self._lock:
            self.requests.append((path, auth_kind, data))
        m = re.match(r"^/([a-z]+)/([a-z]+)(?:\.json)?$", path)
        if not m:
            return _reply(300)
        module, method = m.groups()
        if method == "ping":
            return _reply(1)
        if not auth:
            return _reply(103)
        if not secrets.compare_digest(auth, self.token):
            return _reply(105)
        if self.blocked:
            return _reply(106)
        fn = {("message", "send"): self._send, ("message", "status"): self._status,
              ("user", "balance"): self._balance}.get((module, method))
        if fn is None:
            return _reply(300)
        with self._lock:
            return fn(data)

    def _balance(self, data: dict) -> dict:
        return _reply(0, {"balance": round(self.balance, 2)})

    def _send(self, data: dict) -> dict:
        seq = data.get("sequence_id")
        if seq not in (None, "") and str(seq) in self._sequences:
            return _reply(507, self._sequences[str(seq)]["response_result"])
        recipients = data.get("recipients")
        if isinstance(recipients, str):
            recipients = [recipients]
        sms = data.get("sms") if isinstance(data.get("sms"), dict) else {}
        if not recipients:
            return _reply(202)
        sender, text = str(sms.get("sender") or ""), str(sms.get("text") or "")
        if not sms:
            return _reply(104)
        if not sender:
            return _reply(200)
        if not text:
            return _reply(201)
        if self.senders is not None and sender not in self.senders:
            return _reply(400)
        parts = sms_parts(text)
        judged: list[tuple[str, int]] = []
        for raw in recipients:
            phone = str(raw)
            if not re.fullmatch(r"380\d{9}", phone) or phone[3:5] not in UA_MOBILE:
                judged.append((phone, 305))
            elif phone in self.stoplist:
                judged.append((phone, 404))
            else:
                judged.append((phone, 0))
        accepted = [p for p, c in judged if c == 0]
        cost = len(accepted) * parts * self.price_per_part
        if accepted and cost > self.balance + 1e-9:
            return _reply(203)
        items = []
        for phone, code in judged:
            if code == 0:
                mid = str(uuid.uuid4())
                msg = SentSms(mid, phone, sender, text, parts, updated=_stamp(), history=["Queued"])
                self.messages[mid] = msg
                self.outbox.append(msg)
                items.append({"phone": phone, "response_code": 0, "message_id": mid, "response_status": "OK"})
            else:
                items.append({"phone": phone, "response_code": code, "message_id": None, "response_status": STATUS[code]})
        self.balance -= cost
        if not accepted:
            first = judged[0][1]
            reply = _reply(first, items)
        else:
            reply = _reply(800 if len(accepted) == len(judged) else 802, items)
        if seq not in (None, ""):
            self._sequences[str(seq)] = reply
        return reply

    def _status(self, data: dict) -> dict:
        ids = data.get("messages")
        if isinstance(ids, str):
            ids = [ids]
        if not ids:
            return _reply(104)
        out = []
        for mid in ids:
            m = self.messages.get(str(mid))
            if m is not None and self.auto_advance:
                self._step(m)
            if m is None:
                out.append({"message_id": str(mid), "response_code": 414, "response_status": STATUS[414]})
                continue
            out.append({"message_id": m.message_id, "response_code": 0, "recipient": m.phone, "sent": m.sent,
                        "updated": m.updated, "status": m.status, "type": "sms", "response_status": "OK"})
        return _reply(0, out)


def _stamp() -> str:
    return datetime.now(KYIV).strftime("%Y-%m-%d %H:%M:%S")


def _reply(code: int, result: Any = None) -> dict:
    return {"response_code": code, "response_status": STATUS.get(code, "ERROR"), "response_result": result}


def _flatten_form(q: dict[str, list[str]]) -> dict:
    """Form/query data: ``recipients[]=a&recipients[]=b&sms[text]=…`` -> nested values."""
    out: dict[str, Any] = {}
    for key, values in q.items():
        m = re.fullmatch(r"([A-Za-z_]+)((?:\[[^\]]*\])*)", key)
        if not m:
            continue
        base, rest = m.group(1), re.findall(r"\[([^\]]*)\]", m.group(2))
        if not rest:
            out[base] = values[-1] if len(values) == 1 else values
        elif rest == [""] or (len(rest) == 1 and rest[0].isdigit()):
            out.setdefault(base, [])
            if isinstance(out[base], list):
                out[base].extend(values)
        else:
            node = out.setdefault(base, {})
            if isinstance(node, dict):
                node[rest[0]] = values[-1]
    return out


class _Handler(BaseHTTPRequestHandler):
    owner: TurboSmsEmulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 1 << 20)) if length else b""
        ctype = (self.headers.get("Content-Type") or "").lower()
        data: dict = {}
        token, kind = None, "none"
        if "token" in query:
            token, kind = query.pop("token")[-1], "query"
        reply: dict | None = None
        if raw and "json" in ctype:
            try:
                parsed = json.loads(raw.decode("utf-8"))
                data = parsed if isinstance(parsed, dict) else {}
            except (ValueError, UnicodeDecodeError):
                reply = _reply(502)
        elif raw and "form" in ctype:
            form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
            if "token" in form:
                token, kind = form.pop("token")[-1], "form"
            data = _flatten_form(form)
        elif query:
            data = _flatten_form(query)
        header = self.headers.get("Authorization") or ""
        if header.startswith("Bearer "):
            token, kind = header[7:].strip(), "bearer"
        elif header.startswith("Basic "):
            value = header[6:].strip()
            try:  # the docs pass the raw token; a client may base64 it as HTTP Basic does
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
                token = value if secrets.compare_digest(value, self.owner.token) else decoded.split(":")[-1]
            except (ValueError, UnicodeDecodeError):
                token = value
            kind = "basic"
        if reply is None:
            reply = self.owner.handle(parts.path, token, kind, data)
        body = json.dumps(reply, ensure_ascii=False).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self._answer("POST")

    def do_GET(self) -> None:
        self._answer("GET")
