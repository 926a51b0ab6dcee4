"""SOAP to a 1C web service (zeep): our reference ``Exchange`` service or an integrator's copy.

1C generates ``soap:address`` from how it sees the request — usually an internal host behind a
proxy (reference §11) — so the service is always bound to the configured endpoint with
``client.create_service(binding, endpoint)``, never to the WSDL's address (any host could be named
there, and it would receive the credentials). Without ``endpoint`` the WSDL URL minus its query is
the endpoint (1C publishes ``…/ws/<name>.1cws?wsdl`` for the service at ``…/ws/<name>.1cws``);
``wsdl: reference`` (the default: the bundled ``onec/reference.wsdl``) and a local WSDL file need
an ``endpoint`` (config validation says so).

The WSDL and every document it imports are fetched by :func:`guarded_transport`'s transport: the Basic
credentials go only to the host of the WSDL URL and of the endpoint; another host is fetched only
when listed in ``onec.soap.allow_hosts``, and then without credentials; ``file:`` imports (and
local paths) are refused unless their folder is listed as ``file:///folder/`` (a local WSDL's own
folder is allowed). Redirects are never followed and each request has a total deadline.

Operation names map from our logical names (the reference WSDL's) to the integrator's through
``settings.onec.soap.operations``; arguments are passed by position, so renamed parameters in the
same order still work. Credentials go to a ``requests`` session as UTF-8 bytes. Every HTTP request
(WSDL, XSD and calls) is counted by a response hook. Faults and transport failures are classified
in :func:`classify`, the one place that maps them onto the connector's error tree.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from connector.config import OneCSoap
from connector.errors import AuthError, NotFound, PermanentError, Rejected, TransientError, UpstreamError
from connector.ports import RequestCounter
from connector.redact import add_secret
from connector.upstream import GuardedSession, transport_error

SYSTEM = "onec"
NS = "http://connector.example/1c/exchange"
REFERENCE_WSDL = Path(__file__).with_name("reference.wsdl")
OPERATIONS = ("GetUsers", "GetCounterparties", "GetCounterparty", "GetDocumentsSince", "GetDebts", "CreateTask",
              "FindTaskByMarker", "SetResponsible")
READS = {"GetUsers", "GetCounterparties", "GetCounterparty", "GetDocumentsSince", "GetDebts", "FindTaskByMarker"}
_CTRL = re.compile(r"[\x00-\x1f\x7f]+")


def _clean(text: Any, limit: int = 300) -> str:
    t = _CTRL.sub(" ", str(text or "")).strip()
    return t if len(t) <= limit else t[: limit - 1] + "…"


def classify(exc: BaseException, *, op: str, write: bool, status: int | None = None) -> UpstreamError:
    """The one place that turns zeep/requests failures of a 1C web service into the error tree.

    ``ExchangeFault/Code`` in the fault detail decides first (NotFound, Conflict, Invalid, Busy);
    otherwise a ``Client`` fault is a refusal and a ``Server`` fault (a BSL exception) refuses a
    write or fails a read transiently. Fault texts echo inputs: they are shortened, not trusted.
    """
    from zeep.exceptions import Fault, TransportError, XMLParseError, XMLSyntaxError
    from zeep.exceptions import LookupError as ZeepLookupError

    obj = f"ws {op}"
    if isinstance(exc, UpstreamError):
        return exc
    known = transport_error(exc, system=SYSTEM, obj=obj)
    if known is not None:
        return known
    if isinstance(exc, Fault) and isinstance(exc.detail, (bytes, str)):
        # zeep's "Unknown fault": a non-200 reply that parsed as XML but is no SOAP fault (an HTML
        # error page of the web server); only the HTTP status tells what happened
        exc = TransportError("not a SOAP reply", status_code=status or 0)
    if isinstance(exc, Fault):
        code = None
        if exc.detail is not None:
            found = exc.detail.find(f".//{{{NS}}}Code")
            code = found.text.strip() if found is not None and found.text else None
        msg = _clean(exc.message) or "SOAP fault"
        kw: dict[str, Any] = {"system": SYSTEM, "obj": obj, "code": code or _clean(exc.code, 60) or None}
        if code == "NotFound":
            return NotFound(msg, **kw)
        if code in ("Conflict", "Invalid"):
            return Rejected(msg, **kw)
        if code == "Busy":
            return TransientError(msg, **kw)
        if "client" in str(exc.code or "").lower() or "sender" in str(exc.code or "").lower():
            return Rejected(msg, **kw)
        return Rejected(msg, **kw) if write else TransientError(msg, **kw)
    status = None
    if isinstance(exc, TransportError) and exc.status_code:
        status = exc.status_code
    elif isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
    if status is not None:
        kw = {"system": SYSTEM, "obj": obj, "status": status}
        if status in (401, 403):
            return AuthError("authentication failed: check the 1C user and password (sent as UTF-8) and the "
                             "user's right to the web service", **kw)
        if status == 404:
            return PermanentError("web service not found at this address (publication, alias or endpoint)", **kw)
        if status >= 500 or status == 429:
            return TransientError(f"server error HTTP {status}", **kw)
        return PermanentError(f"unexpected HTTP {status}", **kw)
    if isinstance(exc, TransportError):
        return TransientError("the server did not answer with SOAP", system=SYSTEM, obj=obj)
    if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
        return TransientError(f"connection failed ({type(exc).__name__})", system=SYSTEM, obj=obj)
    if isinstance(exc, (XMLSyntaxError, XMLParseError, ZeepLookupError, ValueError, AttributeError, TypeError)):
        return PermanentError(f"the service does not match the expected WSDL ({type(exc).__name__}: {_clean(exc, 200)})",
                              system=SYSTEM, obj=obj)
    if isinstance(exc, requests.RequestException):
        return PermanentError(f"request failed ({type(exc).__name__})", system=SYSTEM, obj=obj)
    raise exc


def host_key(url: str | None) -> str | None:
    """``host:port`` of an http(s) URL (default ports filled in), None for anything else."""
    if not url:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    return f"{parts.hostname.lower()}:{port}"


def service_endpoint(cfg: OneCSoap) -> str:
    """Where the operations go: ``endpoint``, else the WSDL URL without its query (1C's layout)."""
    if cfg.endpoint:
        return cfg.endpoint
    if host_key(cfg.wsdl):
        parts = urlsplit(cfg.wsdl)
        return parts._replace(query="", fragment="").geturl()
    raise PermanentError("wsdl: reference (or a local WSDL file) needs onec.soap.endpoint", system=SYSTEM, obj="ws")


def guarded_transport(*, wsdl_source: str, trusted: set[str], allow_hosts: list[str], local_folders: list[Path],
                      session: requests.Session, public: requests.Session, timeout: float,
                      operation_timeout: float) -> Any:
    """A zeep transport that fetches imports only from where they may come, credentials only at home."""
    from zeep.transports import Transport

    allowed = {a.strip().lower() for a in allow_hosts if a.strip() and not a.strip().lower().startswith("file:")}
    folders = list(local_folders) + [Path(unquote(urlsplit(a.strip()).path)).resolve()
                                     for a in allow_hosts if a.strip().lower().startswith("file:")]

    class GuardedTransport(Transport):
        def load(self, url: str) -> bytes:
            if url == wsdl_source:  # the configured document itself
                return super().load(url)
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme in ("http", "https"):
                key = host_key(url)
                if key in trusted:
                    return super().load(url)
                host = (parts.hostname or "").lower()
                if key in allowed or host in allowed:
                    response = public.get(url, timeout=self.load_timeout)  # no credentials
                    response.raise_for_status()
                    return response.content
                raise PermanentError(f"the WSDL refers to {host or url!r}, which is not the configured 1C host: not fetched, "
                                     f"so the credentials stay home (list the host in onec.soap.allow_hosts to fetch it "
                                     f"without credentials)", system=SYSTEM, obj="WSDL")
            if scheme in ("", "file"):
                path = Path(unquote(parts.path) if scheme == "file" else url).resolve()
                if any(path.is_relative_to(folder) for folder in folders):
                    return path.read_bytes()
                raise PermanentError(f"the WSDL refers to the local file {str(path)!r}: refused (list its folder as "
                                     f"file:///folder/ in onec.soap.allow_hosts if that is intended)", system=SYSTEM, obj="WSDL")
            raise PermanentError(f"the WSDL refers to a {scheme}: URL: refused", system=SYSTEM, obj="WSDL")

        def _check(self, address: str) -> None:
            if host_key(address) not in trusted:
                raise PermanentError(f"refusing to call {urlsplit(address).hostname!r}: only the configured endpoint gets "
                                     f"the credentials", system=SYSTEM, obj="ws")

        def get(self, address: str, params: Any, headers: dict) -> Any:
            self._check(address)
            return super().get(address, params, headers)

        def post(self, address: str, message: Any, headers: dict) -> Any:
            """1C operation names may be Cyrillic, and so is the SOAPAction that zeep puts in a header;
            ``http.client`` would encode it as latin-1 and fail, so non-ASCII values go as UTF-8 bytes."""
            self._check(address)
            fixed = {k: (v.encode("utf-8") if isinstance(v, str) and not v.isascii() else v) for k, v in headers.items()}
            return super().post(address, message, fixed)

    return GuardedTransport(session=session, timeout=timeout, operation_timeout=operation_timeout)


class SoapClient:
    """A zeep client bound to the configured endpoint; the WSDL is loaded on first use."""

    def __init__(self, cfg: OneCSoap, counter: RequestCounter, *, timeout: float = 30.0, operation_timeout: float = 120.0,
                 attempts: int = 3, wait: float = 1.0):
        self.cfg = cfg
        self.counter = counter
        self.timeout = timeout
        self.operation_timeout = operation_timeout
        self.attempts = attempts
        self.wait = wait
        self.ops = {name: cfg.operations.get(name, name) for name in OPERATIONS}
        unknown = sorted(set(cfg.operations) - set(OPERATIONS))
        if unknown:
            from connector.errors import ConfigError

            raise ConfigError([f"onec.soap.operations.{k}: unknown operation; known: {', '.join(OPERATIONS)}" for k in unknown])
        self.session = GuardedSession()
        if cfg.user:
            add_secret(cfg.password)
            self.session.auth = (cfg.user.encode("utf-8"), (cfg.password or "").encode("utf-8"))
        self.public = GuardedSession()  # allow_hosts imports: never with credentials
        for s in (self.session, self.public):
            s.hooks["response"].append(self._count)
        self._service: Any = None
        self._client: Any = None
        self._last_status: int | None = None

    def _count(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.counter.add(response.request.method or "POST")
        self._last_status = response.status_code

    def close(self) -> None:
        self.session.close()
        self.public.close()

    @property
    def service(self) -> Any:
        if self._service is None:
            self._connect()
        return self._service

    @property
    def endpoint(self) -> str:
        return service_endpoint(self.cfg)

    def _connect(self) -> None:
        import zeep
        from zeep.wsdl.bindings.soap import Soap11Binding

        reference = self.cfg.wsdl in ("reference", "")
        source = str(REFERENCE_WSDL) if reference else self.cfg.wsdl
        endpoint = service_endpoint(self.cfg)
        trusted = {k for k in (host_key(self.cfg.wsdl), host_key(endpoint)) if k}
        local = [] if reference or host_key(source) or "://" in source else [Path(source).resolve().parent]
        transport = guarded_transport(wsdl_source=source, trusted=trusted, allow_hosts=self.cfg.allow_hosts,
                                      local_folders=local, session=self.session, public=self.public,
                                      timeout=self.timeout, operation_timeout=self.operation_timeout)
        try:
            client = zeep.Client(source, transport=transport, settings=zeep.Settings(xml_huge_tree=True))
        except Exception as e:  # zeep raises many types while loading; classify() re-raises what it does not know  # noqa: BLE001
            raise classify(e, op="WSDL", write=False, status=self._last_status) from None
        binding = next((qn for qn, b in client.wsdl.bindings.items() if isinstance(b, Soap11Binding)), None)
        if binding is None:
            raise PermanentError("the WSDL has no SOAP 1.1 binding", system=SYSTEM, obj="ws")
        self._client = client
        self._service = client.create_service(binding, endpoint)

    def binding_address(self) -> str | None:
        """The ``soap:address`` the WSDL declares (often an internal host; for ``check``)."""
        _ = self.service
        for svc in self._client.wsdl.services.values():
            for port in svc.ports.values():
                return port.binding_options.get("address")
        return None

    def call(self, op: str, *args: Any) -> Any:
        """Call one logical operation; reads are retried on transient failures."""
        from zeep.helpers import serialize_object

        write = op not in READS
        name = self.ops[op]

        def once() -> Any:
            try:
                result = getattr(self.service, name)(*args)
            except UpstreamError:
                raise
            except Exception as e:  # zeep/requests/lxml errors, classified or re-raised by classify()  # noqa: BLE001
                raise classify(e, op=name, write=write, status=self._last_status) from None
            return serialize_object(result, dict)

        if write or self.attempts <= 1:
            return once()
        for attempt in Retrying(retry=retry_if_exception_type(TransientError), stop=stop_after_attempt(self.attempts),
                                wait=wait_exponential(multiplier=self.wait, max=30) if self.wait else (lambda s: 0),
                                reraise=True):
            with attempt:
                return once()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the operations, as plain dicts

    def users(self) -> list[dict]:
        return _list(self.call("GetUsers"), "User")

    def counterparties(self, since: datetime | None) -> list[dict]:
        return _list(self.call("GetCounterparties", since), "Counterparty")

    def counterparty(self, ref: str) -> dict | None:
        return self.call("GetCounterparty", ref) or None

    def documents_since(self, since: datetime, types: list[str]) -> list[dict]:
        return _list(self.call("GetDocumentsSince", since, ",".join(types)), "Document")

    def debts(self, as_of: datetime) -> list[dict]:
        return _list(self.call("GetDebts", as_of), "Debt")

    def create_task(self, *, counterparty: str | None, responsible: str, title: str, description: str,
                    deadline: datetime, marker: str) -> str:
        return str(self.call("CreateTask", counterparty, responsible, title, description, deadline, marker))

    def find_task(self, marker: str) -> str | None:
        found = self.call("FindTaskByMarker", marker)
        return str(found) if found else None

    def set_responsible(self, counterparty: str, manager: str, expected: str | None = None) -> str:
        return str(self.call("SetResponsible", counterparty, manager, expected))


def _list(value: Any, name: str) -> list[dict]:
    if not value:
        return []
    items = value.get(name) if isinstance(value, dict) else value
    if items is None:
        return []
    return list(items) if isinstance(items, list) else [items]
