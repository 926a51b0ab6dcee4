"""Secrets never reach a log line or an error message.

Clients register every secret they hold (webhook codes, passwords, tokens) here; errors and the
logging filter replace them with ``***``. Webhook URLs are also masked by shape, so a URL that
was never registered (say, from a traceback of a library) still loses its secret segment.
Connection URLs that the connector prints itself (the store's) go through :func:`redact_url`,
which parses them. The logging filter also drops control characters, so text from an upstream
cannot move the cursor or recolour a terminal.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import parse_qsl, urlencode

_lock = threading.Lock()
_secrets: set[str] = set()

# https://portal/rest/<user>/<code>/...  -> https://portal/rest/<user>/***/...
_WEBHOOK = re.compile(r"(/rest/(?:api/)?\d+/)([A-Za-z0-9_\-]{4,})(/|$)")
_USERINFO = re.compile(r"(\w+://[^/\s:@]+:)([^@\s/]+)(@)")
_QUERY_SECRET = re.compile(r"((?:auth|token|secret|password|access_token|refresh_token|key)=)([^&\s\"']+)", re.I)


def add_secret(value: str | bytes | None) -> None:
    """Remember a secret so that it is masked wherever it appears."""
    if not value:
        return
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = str(value)
    if len(value) < 4:  # too short to mask safely without mangling ordinary text
        return
    with _lock:
        _secrets.add(value)


def redact(text: str) -> str:
    """Mask registered secrets and secret-shaped URL parts."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    # each shape needs its literal; a plan masks tens of thousands of lines that have none
    if "/rest/" in text:
        text = _WEBHOOK.sub(r"\1***\3", text)
    if "://" in text:
        text = _USERINFO.sub(r"\1***\3", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1***", text)
    return text


_SECRET_PARAM = ("pass", "secret", "token", "key")


def redact_url(url: str) -> str:
    """A connection URL with its password masked, found by parsing, not by pattern.

    The user info ends at the *last* ``@`` before the query, so a password holding ``/`` or ``@``
    (unencoded, as admins do type them) is masked whole; query parameters that name a password,
    secret, token or key are masked too. Something that is not a URL at all is not shown.
    """
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return "***"
    location, qsep, query = rest.partition("?")
    userinfo, at, hostpart = location.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        location = f"{user}:***@{hostpart}" if colon else f"{user}@{hostpart}"
    if qsep:
        pairs = [(k, "***" if any(w in k.lower() for w in _SECRET_PARAM) else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="*")
    return f"{scheme}://{location}" + (f"?{query}" if qsep else "")


def url_password(url: str) -> str | None:
    """The password part of a connection URL (to register it as a secret), parsed as :func:`redact_url` does."""
    _, sep, rest = str(url).partition("://")
    userinfo, at, _ = rest.partition("?")[0].rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return None
    return userinfo.partition(":")[2] or None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_controls(text: str) -> str:
    """Drop control characters (terminal escapes, bells, carriage returns) but keep newlines and tabs."""
    return _CONTROL.sub("", text) if text else text


_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Logging filter that masks secrets in the formatted message, in a traceback, and in the
    structured fields passed with ``extra=`` (which the JSON format prints as they are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string must not hide the log line  # noqa: BLE001
            msg = str(record.msg)
        record.msg = strip_controls(redact(msg))
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None  # formatters print exc_text instead of formatting the exception again
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRS and isinstance(value, str):
                setattr(record, name, redact(value))
        return True


def install_logging_filter() -> None:
    """Attach the filter to every root handler (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
