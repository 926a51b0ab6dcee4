"""HTTP to the 1C standard OData interface only: auth, query building, paging, retries, errors.

Three 1C habits shape this module (reference §1, §3, §4, §6):

* Basic credentials must be UTF-8 (Cyrillic user names are the rule); ``requests`` would encode a
  ``str`` as latin-1, so the session gets bytes.
* A ``$filter`` whose spaces arrive as ``+`` is *silently ignored* and 1C returns everything.
  Query strings are built here with :func:`urllib.parse.quote` (``%20``) and checked for ``+``
  before any request leaves; nothing else in the adapter builds URLs.
* There is no server paging and no change cursor: the client pages with ``$top``/``$skip`` over
  a stable ``$orderby`` and refuses a page that comes back twice.

Every response is classified in :func:`classify`, the one place that maps 1C's statuses and
``odata.error`` codes onto the connector's error tree. Every HTTP request is counted.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from connector.errors import (
    AuthError,
    NotFound,
    PermanentError,
    RateLimited,
    Rejected,
    TransientError,
    UpstreamError,
)
from connector.ports import RequestCounter
from connector.redact import add_secret
from connector.upstream import GuardedSession, transport_error
from onec.errors import UrlTooLong

SYSTEM = "onec"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
EMPTY_DATE = "0001-01-01T00:00:00"
BOM = b"\xef\xbb\xbf"
KEY_BATCH = 30  # GUIDs per `Ref_Key eq … or …` request: IIS 404.15 / 414 start near 2 KB of query

_PATH_SAFE = "/()'=,:$_-.~"
_VALUE_SAFE = "'(),:/$;=@*!_-.~"
_CTRL = re.compile(r"[\x00-\x1f\x7f]+")
_TAGS = re.compile(r"<[^>]+>")


# ---------------------------------------------------------------- literals and URLs

def lit_str(text: str) -> str:
    """An OData string literal: apostrophes doubled."""
    return "'" + str(text).replace("'", "''") + "'"


def lit_guid(guid: str) -> str:
    """A ``guid'…'`` literal; refuses anything that is not a GUID (no filter injection)."""
    return f"guid'{uuid.UUID(str(guid))}'"


def lit_dt(wall: datetime) -> str:
    """A ``datetime'…'`` literal from a naive 1C wall-clock time (second precision)."""
    return f"datetime'{wall:%Y-%m-%dT%H:%M:%S}'"


def build_query(params: Sequence[tuple[str, str]]) -> str:
    """Percent-encode a query string the way 1C needs it: ``%20`` for spaces, never ``+``."""
    q = "&".join(f"{quote(k, safe='$')}={quote(str(v), safe=_VALUE_SAFE)}" for k, v in params)
    if "+" in q:  # quote() encodes '+' as %2B and space as %20; a '+' here is a bug, not data
        raise ValueError("query string contains '+': 1C would silently ignore $filter")
    return q


def quote_path(path: str) -> str:
    p = quote(path, safe=_PATH_SAFE)
    if "+" in p:
        raise ValueError("URL path contains '+'")
    return p


def keys_filter(guids: Iterable[str], field: str = "Ref_Key") -> str:
    return " or ".join(f"{field} eq {lit_guid(g)}" for g in guids)


# ---------------------------------------------------------------- errors

def _clean(text: str, limit: int = 300) -> str:
    """1C echoes request fragments in its messages: keep them short and printable."""
    text = _CTRL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_error(content: bytes | None) -> tuple[str | None, str]:
    """``(code, message)`` from an ``odata.error`` body (JSON or Atom/XML); code None if not 1C's."""
    if not content:
        return None, ""
    raw = content[3:] if content.startswith(BOM) else content
    text = raw.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            return None, text
        err = body.get("odata.error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            msg = err.get("message")
            value = msg.get("value", "") if isinstance(msg, dict) else str(msg or "")
            return str(err.get("code", "")), str(value)
        return None, text
    m = re.search(r"<(?:\w+:)?error\b.*?<(?:\w+:)?code>(.*?)</(?:\w+:)?code>.*?<(?:\w+:)?message[^>]*>(.*?)</(?:\w+:)?message>", text, re.S)
    if m:
        return m.group(1).strip(), m.group(2).strip()
    return None, _TAGS.sub(" ", text)


def classify(status: int, content: bytes | None, *, obj: str, write: bool = False,
             retry_after: str | None = None) -> UpstreamError:
    """The one place that turns a 1C/web-server reply into the connector's error tree.

    Classified by the presence of ``odata.error`` first, status second (reference §6): a 404
    with code 9 is a missing record, a 404 without a 1C body is a missing publication. 500 with
    code -1 is the configuration's business logic refusing a write, or a server-side failure of a
    read (worth a retry). ``obj`` names the 1C object; messages never carry credentials.
    """
    code, text = parse_error(content)
    msg = _clean(text) if code is not None else ""
    kw: dict[str, Any] = {"system": SYSTEM, "obj": obj, "code": code, "status": status}
    lowered = (text or "").lower()
    if status == 401:
        return AuthError("authentication failed: check the 1C user name and password (sent as UTF-8) "
                         "and that the user may use the OData publication", **kw)
    if status == 403:
        return AuthError(msg or "access denied by the web server or 1C rights", **kw)
    if status == 414 or (status == 404 and code is None and ("404.15" in lowered or "query string" in lowered)):
        return UrlTooLong("request URL too long (IIS 404.15 / 414); use smaller key batches", **kw)
    if status == 404:
        if code == "9":
            return NotFound(msg or "record not found", **kw)
        if code is not None:
            return PermanentError(f"not available in the standard OData interface (add it with "
                                  f"SetStandardODataInterfaceContent or fix the name in onec.objects): {msg}", **kw)
        return PermanentError("HTTP 404 without a 1C error body: the web publication or its OData "
                              "interface is missing at this URL", **kw)
    if status == 429:
        wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        return RateLimited(msg or "too many requests", retry_after=wait, **kw)
    if status >= 500:
        if code is None:
            return TransientError(f"server error HTTP {status} (web server or 1C unavailable)", **kw)
        if write:
            return Rejected(msg or "1C refused the write", **kw)
        return TransientError(msg or "1C internal error", **kw)
    if status == 400:
        return Rejected(msg or "bad request", **kw)
    return PermanentError(msg or f"unexpected HTTP {status}", **kw)


# ---------------------------------------------------------------- the client

class ODataClient:
    """A keep-alive session to one 1C base's ``…/odata/standard.odata/``."""

    def __init__(self, url: str, user: str, password: str, counter: RequestCounter, *, timeout: float = 120.0,
                 page_size: int = 500, attempts: int = 4, wait: float = 1.0, max_wait: float = 30.0,
                 key_batch: int = KEY_BATCH, session: requests.Session | None = None):
        self.root = url.rstrip("/") + "/"
        self.counter = counter
        self.timeout = timeout
        self.page_size = page_size
        self.attempts = attempts
        self.wait = wait
        self.max_wait = max_wait
        self.key_batch = key_batch
        add_secret(password)
        # no redirects (they would carry the Basic credentials away) and ``timeout`` bounds each
        # request in total, so a server that drips its answer cannot hang a sync
        self.session = session or GuardedSession()
        self.session.auth = (user.encode("utf-8"), password.encode("utf-8"))
        self.session.headers.update({"Accept": "application/json", "Accept-Charset": "utf-8"})

    def close(self) -> None:
        self.session.close()

    # -- one request

    def url(self, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
        return self.root + quote_path(path) + ("?" + build_query(params) if params else "")

    def request(self, method: str, path: str, params: Sequence[tuple[str, str]] = (), *, obj: str,
                body: Any = None, write: bool = False, retry: bool | None = None, raw: bool = False,
                timeout: float | None = None, accept: str | None = None) -> Any:
        """One call with retries on transient failures (not for non-idempotent writes)."""
        url = self.url(path, params)
        data = json.dumps(body, ensure_ascii=False).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json; charset=utf-8"} if data is not None else {}
        if accept:
            headers["Accept"] = accept

        def once() -> Any:
            self.counter.add(method)
            try:
                r = self.session.request(method, url, data=data, headers=headers or None,
                                         timeout=(min(10.0, timeout or self.timeout), timeout or self.timeout))
            except requests.RequestException as e:
                known = transport_error(e, system=SYSTEM, obj=obj)
                if known is not None:
                    raise known from None
                if isinstance(e, requests.Timeout):
                    raise TransientError("timed out", system=SYSTEM, obj=obj) from None
                if isinstance(e, requests.ConnectionError):
                    raise TransientError(f"connection failed ({type(e).__name__})", system=SYSTEM, obj=obj) from None
                raise PermanentError(f"request failed ({type(e).__name__})", system=SYSTEM, obj=obj) from None
            if r.status_code >= 400:
                raise classify(r.status_code, r.content, obj=obj, write=write, retry_after=r.headers.get("Retry-After"))
            if raw:
                return r.content
            return _decode(r.content, obj)

        if retry is None:
            retry = method in ("GET", "PATCH", "DELETE")
        if not retry or self.attempts <= 1:
            return once()
        for attempt in Retrying(retry=retry_if_exception_type(TransientError), stop=stop_after_attempt(self.attempts),
                                wait=self._wait, reraise=True):
            with attempt:
                return once()
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after:
            return min(exc.retry_after, self.max_wait)
        return wait_exponential(multiplier=self.wait, max=self.max_wait)(state) if self.wait else 0.0

    # -- reads

    def get(self, obj: str, params: Sequence[tuple[str, str]], *, path: str | None = None) -> Any:
        return self.request("GET", path or obj, [("$format", "json"), *params], obj=obj)

    def pages(self, obj: str, *, select: Sequence[str], filter: str | None = None, orderby: str = "Ref_Key",
              key: str | None = "Ref_Key", page_size: int | None = None) -> Iterator[list[dict]]:
        """``$top``/``$skip`` pages over a stable order; rows seen on an earlier page are dropped
        (concurrent inserts shift offsets) and an identical repeated page stops the listing."""
        top = page_size or self.page_size
        skip = 0
        prev: list | None = None
        seen: set = set()
        while True:
            params = [("$select", ",".join(select))]
            if filter:
                params.append(("$filter", filter))
            params += [("$orderby", orderby), ("$top", str(top)), ("$skip", str(skip))]
            rows = _value(self.get(obj, params), obj)
            ident = [(r.get(key) if key else json.dumps(r, sort_keys=True, ensure_ascii=False)) for r in rows]
            if rows and ident == prev:
                raise PermanentError(f"the same page came back twice at $skip={skip}: the server ignores $skip",
                                     system=SYSTEM, obj=obj)
            prev = ident
            fresh = [r for r, i in zip(rows, ident, strict=False) if i not in seen]
            seen.update(ident)
            if fresh:
                yield fresh
            if len(rows) < top:
                return
            skip += top

    def one(self, obj: str, guid: str, select: Sequence[str] | None = None) -> dict:
        params = [("$select", ",".join(select))] if select else []
        return self.get(obj, params, path=f"{obj}({lit_guid(guid)})")

    def by_keys(self, obj: str, guids: Iterable[str], *, select: Sequence[str], field: str = "Ref_Key",
                literal: Any = lit_guid, also: str | None = None) -> Iterator[list[dict]]:
        """Rows whose ``field`` is one of ``guids``, 20–40 keys per request (``and also`` when
        given); a batch the web server refuses as too long is split in two and retried."""
        keys = list(dict.fromkeys(g for g in guids if g))
        for i in range(0, len(keys), self.key_batch):
            yield from self._keyed(obj, keys[i : i + self.key_batch], select, field, literal, also)

    def _keyed(self, obj: str, keys: list[str], select: Sequence[str], field: str, literal: Any,
               also: str | None) -> Iterator[list[dict]]:
        flt = " or ".join(f"{field} eq {literal(g)}" for g in keys)
        if also:
            flt = f"({flt}) and {also}"
        try:
            rows = _value(self.get(obj, [("$select", ",".join(select)), ("$filter", flt)]), obj)
        except UrlTooLong:
            if len(keys) == 1:
                raise
            half = len(keys) // 2
            yield from self._keyed(obj, keys[:half], select, field, literal, also)
            yield from self._keyed(obj, keys[half:], select, field, literal, also)
            return
        if rows:
            yield rows

    def metadata(self) -> bytes:
        """The raw ``$metadata`` (CSDL/EDMX XML): tens of megabytes and half a minute on a real base
        (reference §1), hence the long read timeout; the caller caches what it parsed."""
        return self.request("GET", "$metadata", [], obj="$metadata", raw=True, timeout=max(self.timeout, 300.0),
                            accept="application/xml")

    def count(self, obj: str, filter: str | None = None) -> int:
        params = [("$filter", filter)] if filter else []
        content = self.request("GET", f"{obj}/$count", params, obj=obj, raw=True)
        text = (content[3:] if content.startswith(BOM) else content).decode("utf-8", "replace").strip()
        try:
            return int(text)
        except ValueError:
            raise PermanentError("expected a number from /$count", system=SYSTEM, obj=obj) from None

    def balance(self, register: str, *, period: datetime, condition: str | None = None,
                dimensions: Sequence[str] | None = None) -> list[dict]:
        """``Register/Balance(Period=…,Condition='…',Dimensions='…')``; inner quotes doubled."""
        args = [f"Period={lit_dt(period)}"]
        if condition:
            args.append(f"Condition={lit_str(condition)}")
        if dimensions:
            args.append(f"Dimensions={lit_str(','.join(dimensions))}")
        return _value(self.get(register, [], path=f"{register}/Balance({','.join(args)})"), register)

    # -- writes (never retried here: a timed-out POST may have been applied)

    def create(self, obj: str, body: dict) -> dict:
        return self.request("POST", obj, [("$format", "json")], obj=obj, body=body, write=True, retry=False)

    def patch(self, obj: str, guid: str, body: dict) -> dict:
        return self.request("PATCH", f"{obj}({lit_guid(guid)})", [("$format", "json")], obj=obj, body=body,
                            write=True, retry=False)

    def delete(self, obj: str, guid: str) -> None:
        self.request("DELETE", f"{obj}({lit_guid(guid)})", [("$format", "json")], obj=obj, write=True, retry=False, raw=True)

    def post_document(self, obj: str, guid: str, *, operational: bool = False) -> None:
        self.request("POST", f"{obj}({lit_guid(guid)})/Post",
                     [("PostingModeOperational", "true" if operational else "false"), ("$format", "json")],
                     obj=obj, write=True, retry=False, raw=True)

    def unpost_document(self, obj: str, guid: str) -> None:
        self.request("POST", f"{obj}({lit_guid(guid)})/Unpost", [("$format", "json")], obj=obj, write=True,
                     retry=False, raw=True)


def _decode(content: bytes, obj: str) -> Any:
    if not content:
        return None
    raw = content[3:] if content.startswith(BOM) else content
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PermanentError("expected JSON (is $format=json honoured by this publication?)", system=SYSTEM,
                             obj=obj) from None


def _value(body: Any, obj: str) -> list[dict]:
    if not isinstance(body, dict) or not isinstance(body.get("value"), list):
        raise PermanentError("expected a collection with 'value'", system=SYSTEM, obj=obj)
    return body["value"]
