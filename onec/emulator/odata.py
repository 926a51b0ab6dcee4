"""A loopback 1C standard OData interface (v3), faithful to reference §14.

What it reproduces: Atom service document and EDMX ``$metadata``; Atom by default and JSON only
with ``$format=json`` (``;odata=nometadata`` drops ``odata.metadata`` and navigation links); the
collection envelope with a *string* ``odata.count``; ``/$count``; single entities ``/@Element``;
``$filter`` (see :mod:`.filter`) **ignored when the raw query contains '+'**; ``$select`` (400
code 6 on an unknown name), ``$orderby``, ``$top``, ``$skip``, never a ``nextLink``; Basic auth
with UTF-8 credentials (401 without ``odata.error``); POST 201 with a raw UTF-8 ``Location``,
PATCH 200 (unknown fields ignored, no ETag, ``If-Match`` ignored, tabular sections replaced
whole, rows without ``LineNumber`` -> 500 code -1), strings truncated to their length,
``DataVersion`` bumped on every write, DELETE physical; ``/Post`` and ``/Unpost``;
``Balance(Period, Condition, Dimensions)`` with both quoting styles of ``Condition``; error bodies
with string codes and an optional BOM.

Fault injection (attributes of :class:`ODataEmulator`): ``fail_next`` (502 pages), ``max_url``
(IIS 404.15 HTML page above that length), ``publication_missing`` (HTML 404 everywhere),
``unpublished`` (set names left out of the composition: absent from ``$metadata`` and the service
document, 404 code 8), ``hidden`` (set -> field names the configuration does not have: absent
from ``$metadata`` and rows, 400 code 6 when named), ``write_failures`` (set -> handler message,
500 code -1), ``posting_failures`` (refs whose posting fails), ``bom`` (BOM before JSON bodies),
``ignore_skip`` (a broken server repeating the first page). ``requests`` logs every request.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

from connector import loopback
from onec.emulator.base import EDM, EMPTY_DATE, ZERO, EntitySet, Infobase
from onec.emulator.filter import FilterError, UnknownProperty, evaluate, parse

PUBLICATION = "/base"
ROOT = PUBLICATION + "/odata/standard.odata/"
_KEY = re.compile(r"^(?:Ref_Key=)?guid'([^']*)'$")
_SEG = re.compile(r"^(?P<set>[^/(]+)(?:\((?P<key>[^)]*)\))?(?:/(?P<op>.*))?$", re.S)
IIS_404_15 = (b"<!DOCTYPE html><html><head><title>IIS 10.0 Detailed Error - 404.15 - Not Found</title></head><body>"
              b"<h3>HTTP Error 404.15 - Not Found</h3><h4>The request filtering module is configured to deny a request "
              b"where the query string is too long.</h4></body></html>")
HTML_404 = (b"<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\"><html><head><title>404 Not Found</title></head>"
            b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>")
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"


class ODataError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ODataEmulator:
    """The server object; ``url`` is the service root once started."""

    def __init__(self, ib: Infobase, *, user: str = "Администратор", password: str = "пароль-1С"):
        self.ib = ib
        self.user = user
        self.password = password
        self.requests: list[tuple[str, str]] = []  # (method, raw path with query)
        self.fail_next = 0
        self.max_url = 4096
        self.publication_missing = False
        self.unpublished: set[str] = set()
        self.hidden: dict[str, set[str]] = {}
        self.write_failures: dict[str, str] = {}
        self.posting_failures: dict[str, str] = {}
        self.bom = False
        self.ignore_skip = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._count_lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}{ROOT}".rstrip("/")

    @property
    def origin(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> str:
        emulator = self

        class Handler(_Handler):
            emu = emulator

        self._server = loopback.start_http(Handler, "onec-odata")
        return self.url

    def stop(self) -> None:
        loopback.stop(self._server)
        self._server = None

    def count(self) -> int:
        return len(self.requests)

    def log(self, method: str, path: str) -> None:
        with self._count_lock:
            self.requests.append((method, path))


class _Handler(BaseHTTPRequestHandler):
    emu: ODataEmulator
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and body in one segment: no Nagle / delayed-ACK stall on keep-alive
    server_version = "Microsoft-IIS/10.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, bytes] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            # 1C sends Location with raw UTF-8 Cyrillic; http.server would insist on latin-1
            self._headers_buffer.append(k.encode("ascii") + b": " + v + b"\r\n")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, bytes] | None = None) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        if self.emu.bom:
            body = b"\xef\xbb\xbf" + body
        self._send(status, body, "application/json;odata=minimalmetadata;charset=utf-8", headers)

    def _error(self, e: ODataError, as_json: bool) -> None:
        if as_json:
            self._json(e.status, {"odata.error": {"code": e.code, "message": {"lang": "ru", "value": e.message}}})
        else:
            body = ('<?xml version="1.0" encoding="utf-8"?><m:error xmlns:m="http://schemas.microsoft.com/ado/2007/08/'
                    f'dataservices/metadata"><m:code>{escape(e.code)}</m:code><m:message xml:lang="ru">{escape(e.message)}'
                    '</m:message></m:error>').encode()
            self._send(e.status, body, "application/xml;charset=utf-8")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, pwd = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False  # cp1251 / latin-1 credentials: IIS 401 (reference §1)
        return user == self.emu.user and pwd == self.emu.password

    def _dispatch(self, method: str) -> None:
        emu = self.emu
        raw = self.path
        emu.log(method, raw)
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else b""
        if emu.fail_next > 0:
            emu.fail_next -= 1
            return self._send(502, HTML_502, "text/html")
        if len(raw) > emu.max_url:
            return self._send(404, IIS_404_15, "text/html")
        path, _, query = raw.partition("?")
        path = unquote(path)
        if emu.publication_missing or not (path + "/").startswith(ROOT):
            return self._send(404, HTML_404, "text/html")
        if not self._authorized():
            return self._send(401, b"401 - Unauthorized: Access is denied due to invalid credentials.", "text/html",
                              {"WWW-Authenticate": b'Basic realm="1C"'})
        params: dict[str, str] = {}
        for part in query.split("&") if query else []:
            k, _, v = part.partition("=")
            params[unquote(k)] = unquote(v)  # never unquote_plus: a '+' stays a '+'
        if "+" in query:
            params.pop("$filter", None)  # what 1C does: the filter is silently dropped
        fmt = params.get("$format", "")
        as_json = fmt.startswith("json") or fmt.startswith("application/json")
        nometa = "nometadata" in fmt
        try:
            with emu.ib.lock:
                self._route(method, path[len(ROOT):], params, payload, as_json, nometa)
        except ODataError as e:
            self._error(e, as_json)

    # -- routing

    def _route(self, method: str, rest: str, params: dict[str, str], payload: bytes, as_json: bool, nometa: bool) -> None:
        emu, ib = self.emu, self.emu.ib
        if rest == "":
            return self._service_doc(as_json)
        if rest == "$metadata":
            return self._send(200, metadata(ib, emu.unpublished, emu.hidden).encode("utf-8"), "application/xml;charset=utf-8")
        m = _SEG.match(rest)
        if not m:
            raise ODataError(400, "6", f"Неверный URL: Сегмент пути {rest!r} не найден!")
        name, key, op = m.group("set"), m.group("key"), m.group("op")
        s = ib.sets.get(name)
        if s is None or name in emu.unpublished:
            raise ODataError(404, "8", f"Тип сущности '{name}' не найден")
        guid = None
        if key is not None:
            km = _KEY.match(key.strip())
            if not km:
                raise ODataError(400, "7", f"Не хватает элемента ключа сущности: {key}")
            try:
                guid = str(uuid.UUID(km.group(1)))
            except ValueError:
                raise ODataError(400, "1", f"Не удалось разобрать строку '{km.group(1)}' как значение типа Edm.Guid!") from None
        if op:
            return self._operation(method, s, guid, op, params, as_json, nometa)
        if method == "GET" and guid is None:
            return self._list(s, params, as_json, nometa)
        if method == "GET":
            return self._single(s, self._row(s, guid), params, as_json, nometa)
        if method == "POST" and guid is None:
            return self._create(s, payload, as_json, nometa)
        if method == "PATCH" and guid is not None:
            return self._patch(s, self._row(s, guid), payload, as_json, nometa)
        if method == "DELETE" and guid is not None:
            self._row(s, guid)
            del s.rows[guid]
            return self._send(204, b"", "text/plain")
        raise ODataError(405, "19", "Использованный HTTP-метод запрещен в данном контексте")

    def _row(self, s: EntitySet, guid: str | None) -> dict:
        if not s.keyed:
            raise ODataError(400, "7", "Не хватает элемента ключа сущности")
        row = s.rows.get(guid or "")
        if row is None:
            raise ODataError(404, "9", "Экземпляр сущности не найден")
        return row

    def _operation(self, method: str, s: EntitySet, guid: str | None, op: str, params: dict[str, str],
                   as_json: bool, nometa: bool) -> None:
        ib = self.emu.ib
        if op == "$count" and method == "GET" and guid is None:
            rows = self._filtered(s, params)
            return self._send(200, str(len(rows)).encode(), "text/plain;charset=utf-8")
        if op in ("Post", "Unpost") and method == "POST" and guid is not None and s.kind == "document":
            row = self._row(s, guid)
            if op == "Post" and guid in self.emu.posting_failures:
                raise ODataError(500, "-1", self.emu.posting_failures[guid])
            row["Posted"] = op == "Post"
            row["DataVersion"] = ib.version()
            ib.touch(guid)
            return self._send(200, b"", "application/json;charset=utf-8")
        fm = re.match(r"^(Balance)(?:\((.*)\))?$", op, re.S)
        if fm and method == "GET" and guid is None:
            if s.kind != "accreg":
                raise ODataError(400, "6", f"Неверный URL: Сегмент пути '{op.split('(')[0]}' не найден!")
            args = _function_args(fm.group(2) or "")
            cond = None
            if args.get("Condition"):
                try:
                    ast = parse(args["Condition"])
                except FilterError as e:
                    raise ODataError(400, "14", f"Ошибка разбора опций запроса: {e}") from None

                def cond(rec: dict, ast: Any = ast) -> bool:
                    try:
                        return bool(evaluate(ast, rec))
                    except UnknownProperty as e:
                        raise ODataError(400, "6", f"Неверный URL: Сегмент пути '{e.name}' не найден!") from None
            dims = None
            if args.get("Dimensions"):
                dims = []
                for d in args["Dimensions"].split(","):
                    d = d.strip()
                    gone = self.emu.hidden.get(s.name, set())
                    name = d if d in s.dims and d not in gone else f"{d}_Key" if f"{d}_Key" in s.dims and f"{d}_Key" not in gone else None
                    if name is None:
                        raise ODataError(400, "6", f"Неверный URL: Сегмент пути '{d}' не найден!")
                    dims.append(name)
            period = args.get("Period")
            if period:
                pm = re.fullmatch(r"datetime'([^']*)'", period.strip())
                if not pm:
                    raise ODataError(400, "1", f"Не удалось разобрать строку '{period}' как значение типа Edm.DateTime!")
                period = pm.group(1)
            rows = ib.balance(s.name, period, cond, dims)
            gone = self.emu.hidden.get(s.name, set())
            if gone:
                rows = [{k: v for k, v in r.items() if k not in gone and not (k.endswith("Balance") and k[:-7] in gone)} for r in rows]
            rows = self._window(rows, params)
            return self._collection(f"{s.name}_Balance", rows, None, as_json, nometa, entity=None)
        raise ODataError(400, "6", f"Неверный URL: Сегмент пути '{op}' не найден!")

    # -- reads

    def _visible(self, s: EntitySet, rows: list[dict]) -> list[dict]:
        gone = self.emu.hidden.get(s.name)
        return [{k: v for k, v in r.items() if k not in gone} for r in rows] if gone else rows

    def _filtered(self, s: EntitySet, params: dict[str, str]) -> list[dict]:
        rows = self._visible(s, s.all_rows())
        text = params.get("$filter")
        if text:
            try:
                ast = parse(text)
                rows = [r for r in rows if evaluate(ast, r)]
            except FilterError as e:
                raise ODataError(400, "14", f"Ошибка разбора опций запроса: {e}") from None
            except UnknownProperty as e:
                raise ODataError(400, "6", f"Неверный URL: Сегмент пути '{e.name}' не найден!") from None
        return rows

    def _window(self, rows: list[dict], params: dict[str, str]) -> list[dict]:
        order = params.get("$orderby")
        if order:
            for item in reversed([x.strip() for x in order.split(",") if x.strip()]):
                name, _, direction = item.partition(" ")
                if rows and name not in rows[0]:
                    raise ODataError(400, "6", f"Неверный URL: Сегмент пути '{name}' не найден!")
                rows = sorted(rows, key=lambda r: _sort_key(r.get(name)), reverse=direction.strip().lower() == "desc")
        try:
            skip = int(params.get("$skip") or 0)
            top = int(params["$top"]) if "$top" in params else None
        except ValueError:
            raise ODataError(400, "14", "Ошибка разбора опций запроса: $top/$skip") from None
        if self.emu.ignore_skip:
            skip = 0
        rows = rows[skip:]
        return rows[:top] if top is not None else rows

    def _select(self, s: EntitySet, params: dict[str, str]) -> list[str] | None:
        text = params.get("$select")
        if not text:
            return None
        names = [x.strip() for x in text.split(",") if x.strip()]
        gone = self.emu.hidden.get(s.name, set())
        for n in names:
            if n.split("/")[0] in gone or (n not in s.props and n not in s.tables and n.split("/")[0] not in s.props):
                raise ODataError(400, "6", f"Неверный URL: Сегмент пути '{n}' не найден!")
        return names

    def _list(self, s: EntitySet, params: dict[str, str], as_json: bool, nometa: bool) -> None:
        select = self._select(s, params)
        rows = self._filtered(s, params)
        total = len(rows)
        rows = self._window(rows, params)
        count = str(total) if params.get("$inlinecount") == "allpages" else None
        self._collection(s.name, [self._project(s, r, select, nometa) for r in rows], count, as_json, nometa, entity=s)

    def _project(self, s: EntitySet, row: dict, select: list[str] | None, nometa: bool) -> dict:
        gone = self.emu.hidden.get(s.name, set())
        out = {k: row[k] for k in (select or row) if k in row and k not in gone}
        if not nometa and s.keyed:
            for k in list(out):
                if k.endswith("_Key") and k != "Ref_Key":
                    out[f"{k[:-4]}@navigationLinkUrl"] = f"{s.name}(guid'{row['Ref_Key']}')/{k[:-4]}"
        return out

    def _single(self, s: EntitySet, row: dict, params: dict[str, str], as_json: bool, nometa: bool, status: int = 200,
                headers: dict[str, bytes] | None = None) -> None:
        select = self._select(s, params)
        body = self._project(s, row, select, nometa)
        if not as_json:
            return self._send(status, atom_entry(self.emu.origin + ROOT, s, body).encode("utf-8"),
                              "application/atom+xml;type=entry;charset=utf-8", headers)
        if not nometa:
            body = {"odata.metadata": f"{self.emu.origin}{ROOT}$metadata#{s.name}/@Element", **body}
        self._json(status, body, headers)

    def _collection(self, name: str, rows: list[dict], count: str | None, as_json: bool, nometa: bool,
                    entity: EntitySet | None) -> None:
        if not as_json:
            return self._send(200, atom_feed(self.emu.origin + ROOT, name, entity, rows).encode("utf-8"),
                              "application/atom+xml;type=feed;charset=utf-8")
        body: dict[str, Any] = {}
        if not nometa:
            body["odata.metadata"] = f"{self.emu.origin}{ROOT}$metadata#{name}"
        if count is not None:
            body["odata.count"] = count
        body["value"] = rows
        self._json(200, body)

    def _service_doc(self, as_json: bool) -> None:
        names = sorted(n for n in self.emu.ib.sets if n not in self.emu.unpublished)
        if as_json:
            return self._json(200, {"odata.metadata": f"{self.emu.origin}{ROOT}$metadata",
                                    "value": [{"name": n, "url": n} for n in names]})
        cols = "".join(f'<collection href="{escape(n)}"><atom:title>{escape(n)}</atom:title></collection>' for n in names)
        body = ('<?xml version="1.0" encoding="UTF-8"?><service xmlns="http://www.w3.org/2007/app" '
                f'xmlns:atom="http://www.w3.org/2005/Atom" xml:base="{self.emu.origin}{ROOT}"><workspace>'
                f"<atom:title>Default</atom:title>{cols}</workspace></service>")
        self._send(200, body.encode("utf-8"), "application/atomsvc+xml;charset=utf-8")

    # -- writes

    def _body(self, payload: bytes) -> dict:
        try:
            body = json.loads(payload.decode("utf-8-sig") or "{}")
        except (UnicodeDecodeError, ValueError):
            raise ODataError(400, "2", "Неверный формат запроса") from None
        if not isinstance(body, dict):
            raise ODataError(400, "2", "Неверный формат запроса")
        return body

    def _apply(self, s: EntitySet, row: dict, body: dict) -> None:
        if s.name in self.emu.write_failures:
            raise ODataError(500, "-1", self.emu.write_failures[s.name])
        for k, v in body.items():
            if k in ("Ref_Key", "DataVersion", "Posted") or k.endswith("@navigationLinkUrl"):
                continue  # silently ignored, as 1C does
            if k in s.tables:
                if not isinstance(v, list):
                    raise ODataError(500, "-1", "Произошла внутренняя ошибка OData сервиса")
                rows = []
                for r in v:
                    if not isinstance(r, dict) or "LineNumber" not in r:
                        raise ODataError(500, "-1", "Произошла внутренняя ошибка OData сервиса. Не указан номер строки")
                    clean = {c: r[c] for c in s.tables[k] if c in r}
                    rows.append({"Ref_Key": row["Ref_Key"], "LineNumber": str(r["LineNumber"]), **clean})
                row[k] = rows
                continue
            t = s.props.get(k)
            if t is None:
                continue  # unknown property: 200, ignored
            if t == "i" and not str(v).lstrip("-").isdigit():
                continue  # a string into Int64: 200, value unchanged
            if t == "b" and not isinstance(v, bool):
                continue
            if t == "n" and not isinstance(v, (int, float)):
                continue
            if t == "g":
                try:
                    v = str(uuid.UUID(str(v)))
                except ValueError:
                    raise ODataError(400, "1", f"Не удалось разобрать строку '{v}' как значение типа Edm.Guid!") from None
            if t == "d" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", str(v)):
                raise ODataError(400, "1", f"Не удалось разобрать строку '{v}' как значение типа Edm.DateTime!")
            if t == "s":
                v = str(v)
                if k in s.maxlen:
                    v = v[: s.maxlen[k]]  # silently truncated
            row[k] = v
        row["DataVersion"] = self.emu.ib.version()
        self.emu.ib.touch(row["Ref_Key"])

    def _create(self, s: EntitySet, payload: bytes, as_json: bool, nometa: bool) -> None:
        if not s.keyed:
            raise ODataError(400, "13", "Создание строк табличных частей напрямую не поддерживается")
        body = self._body(payload)
        row = s.blank()
        row["Ref_Key"] = str(uuid.uuid4())
        self._apply(s, row, body)
        s.seq += 1
        if "Code" in s.props and not row.get("Code"):
            row["Code"] = f"Н{s.seq:08d}"
        if "Number" in s.props and not row.get("Number"):
            row["Number"] = f"00-{s.seq:08d}"
        if "Date" in s.props and row.get("Date") == EMPTY_DATE:
            row["Date"] = self.emu.ib.now_wall()
        row["DataVersion"] = "AAAAAAAAAAA="
        s.rows[row["Ref_Key"]] = row
        loc = f"{self.emu.origin}{ROOT}{s.name}(guid'{row['Ref_Key']}')".encode()
        self._single(s, row, {}, as_json, nometa, status=201, headers={"Location": loc})

    def _patch(self, s: EntitySet, row: dict, payload: bytes, as_json: bool, nometa: bool) -> None:
        self._apply(s, row, self._body(payload))
        self._single(s, row, {}, as_json, nometa)


def _sort_key(v: Any) -> tuple:
    if v is None:
        return (0, "")
    if isinstance(v, bool):
        return (1, int(v))
    if isinstance(v, (int, float)):
        return (2, v)
    return (3, str(v).lower())


def _function_args(text: str) -> dict[str, str]:
    """``Period=datetime'…',Condition='…',Dimensions='…'`` with either quoting style of Condition:
    inner quotes doubled (``guid''…''``) or left nested (``guid'…'``), both seen in the wild."""
    out: dict[str, str] = {}
    marks = list(re.finditer(r"(?:^|,)\s*(Period|Condition|Dimensions)\s*=", text))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        value = text[m.end():end].strip()
        if m.group(1) != "Period" and len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
            if "''" in value:
                value = value.replace("''", "'")
        out[m.group(1)] = value
    return out


# ---------------------------------------------------------------- Atom and EDMX

_ATOM_NS = ('xmlns="http://www.w3.org/2005/Atom" xmlns:d="http://schemas.microsoft.com/ado/2007/08/dataservices" '
            'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"')


def _atom_props(s: EntitySet | None, row: dict) -> str:
    out = []
    for k, v in row.items():
        if k.endswith("@navigationLinkUrl"):
            continue
        if isinstance(v, list):
            items = "".join(f"<d:element>{_atom_props(None, r)}</d:element>" for r in v)
            out.append(f'<d:{k} m:type="Collection(StandardODATA.{s.name if s else ""}_{k}_RowType)">{items}</d:{k}>')
            continue
        t = EDM.get(s.props.get(k, "s"), "Edm.String") if s else "Edm.String"
        text = "true" if v is True else "false" if v is False else escape(str(v))
        out.append(f'<d:{k} m:type="{t}">{text}</d:{k}>' if t != "Edm.String" else f"<d:{k}>{text}</d:{k}>")
    return "".join(out)


def atom_entry(base: str, s: EntitySet, row: dict, *, root: bool = True) -> str:
    ident = f"{base}{s.name}(guid'{row.get('Ref_Key', ZERO)}')"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = (f'<entry{" " + _ATOM_NS if root else ""}><id>{escape(ident)}</id>'
            f'<category term="StandardODATA.{s.name}" scheme="http://schemas.microsoft.com/ado/2007/08/dataservices/scheme"/>'
            f'<title type="text"/><updated>{now}</updated><author/><content type="application/xml">'
            f"<m:properties>{_atom_props(s, row)}</m:properties></content></entry>")
    return ('<?xml version="1.0" encoding="UTF-8"?>' + body) if root else body


def atom_feed(base: str, name: str, s: EntitySet | None, rows: list[dict]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if s is not None:
        entries = "".join(atom_entry(base, s, r, root=False) for r in rows)
    else:
        entries = "".join(f'<entry><content type="application/xml"><m:properties>{_atom_props(None, r)}</m:properties>'
                          f"</content></entry>" for r in rows)
    return (f'<?xml version="1.0" encoding="UTF-8"?><feed {_ATOM_NS} xml:base="{escape(base)}"><id>{escape(base + name)}</id>'
            f'<title type="text">{escape(name)}</title><updated>{now}</updated>{entries}</feed>')


def metadata(ib: Infobase, unpublished: set[str] | None = None, hidden: dict[str, set[str]] | None = None) -> str:
    """EDMX v3 with the published sets only: entity types, row types, sets and the bound functions.

    Unpublished sets are not in it at all (1C describes only the composition it serves), nor are
    the fields the configuration does not have (``hidden``).
    """
    types, sets, funcs = [], [], []
    for s in ib.sets.values():
        if s.name in (unpublished or ()):
            continue
        gone = (hidden or {}).get(s.name, set())
        props = "".join(f'<Property Name="{escape(k)}" Type="{EDM[t]}" Nullable="{"false" if k in ("Ref_Key", "Ref") else "true"}"/>'
                        for k, t in s.props.items() if k not in gone)
        props += "".join(f'<Property Name="{escape(t)}" Type="Collection(StandardODATA.{escape(s.name)}_{escape(t)}_RowType)" '
                         f'Nullable="false"/>' for t in s.tables if t not in gone)
        if s.kind == "accreg":
            tname = f"{s.name}_RecordType"
            key = '<Key><PropertyRef Name="Recorder"/><PropertyRef Name="LineNumber"/></Key>'
        elif s.kind in ("inforeg", "journal"):
            tname = s.name
            key = "<Key>" + "".join(f'<PropertyRef Name="{escape(d)}"/>' for d in s.dims) + "</Key>"
        else:
            tname = s.name
            key = '<Key><PropertyRef Name="Ref_Key"/></Key>'
        types.append(f'<EntityType Name="{escape(tname)}">{key}{props}</EntityType>')
        for t, cols in s.tables.items():
            if t in gone:
                continue
            rp = '<Property Name="Ref_Key" Type="Edm.Guid" Nullable="false"/><Property Name="LineNumber" Type="Edm.Int64" Nullable="false"/>'
            rp += "".join(f'<Property Name="{escape(k)}" Type="{EDM[v]}" Nullable="true"/>' for k, v in cols.items())
            types.append(f'<ComplexType Name="{escape(s.name)}_{escape(t)}_RowType">{rp}</ComplexType>')
        sets.append(f'<EntitySet Name="{escape(s.name)}" EntityType="StandardODATA.{escape(tname)}"/>')
        if s.kind == "document":
            for fn in ("Post", "Unpost"):
                extra = '<Parameter Name="PostingModeOperational" Type="Edm.Boolean" Nullable="true"/>' if fn == "Post" else ""
                funcs.append(f'<FunctionImport Name="{fn}" IsSideEffecting="true" IsBindable="true" m:IsAlwaysBindable="true">'
                             f'<Parameter Name="bindingParameter" Type="StandardODATA.{escape(s.name)}"/>{extra}</FunctionImport>')
        if s.kind == "accreg":
            bal = "".join(f'<Property Name="{escape(d)}" Type="{EDM[s.props[d]]}" Nullable="true"/>' for d in s.dims if d not in gone)
            bal += "".join(f'<Property Name="{escape(r)}Balance" Type="Edm.Double" Nullable="true"/>' for r in s.resources
                           if r not in gone)
            types.append(f'<ComplexType Name="{escape(s.name)}_Balance">{bal}</ComplexType>')
            funcs.append(f'<FunctionImport Name="Balance" ReturnType="Collection(StandardODATA.{escape(s.name)}_Balance)" '
                         f'IsSideEffecting="false" IsBindable="true" m:IsAlwaysBindable="true">'
                         f'<Parameter Name="bindingParameter" Type="Collection(StandardODATA.{escape(tname)})"/>'
                         '<Parameter Name="Period" Type="Edm.DateTime" Nullable="true"/>'
                         '<Parameter Name="Condition" Type="Edm.String" Nullable="true"/>'
                         '<Parameter Name="Dimensions" Type="Edm.String" Nullable="true"/></FunctionImport>')
    return ('<?xml version="1.0" encoding="UTF-8"?><edmx:Edmx xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" '
            'Version="1.0"><edmx:DataServices xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
            'm:DataServiceVersion="3.0"><Schema xmlns="http://schemas.microsoft.com/ado/2009/11/edm" Namespace="StandardODATA">'
            + "".join(types) + '<EntityContainer Name="EnterpriseV8" m:IsDefaultEntityContainer="true">' + "".join(sets)
            + "".join(funcs) + "</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>")
