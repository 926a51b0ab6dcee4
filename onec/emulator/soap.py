"""A loopback 1C web service implementing ``onec/reference.wsdl`` over the emulated infobase.

Serves the WSDL at ``/base/ws/exchange.1cws?wsdl`` with ``soap:address`` left at the internal
host 1C would generate (``srv-1c-app01.corp.local``), so a client only works if it overrides the
endpoint. SOAP 1.1 envelopes, Basic auth (UTF-8), soap:Server / soap:Client faults over HTTP 500
with ``ExchangeFault/Code`` in the detail, like a BSL ``ВызватьИсключение`` in an integrator's
module. ``renames`` serves a WSDL whose operations carry the integrator's names.
Fault injection: ``fail_next`` (502), ``fault_next`` ((faultcode, code, message) for the next call).
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lxml import etree

from connector import loopback
from onec.emulator.base import ZERO, Infobase
from onec.soap import NS, REFERENCE_WSDL

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PATH = "/base/ws/exchange.1cws"
DOC_TYPES = ("order", "invoice", "sale", "payment")


class SoapFault(Exception):
    def __init__(self, message: str, *, code: str | None = None, faultcode: str = "soap:Server"):
        super().__init__(message)
        self.message, self.code, self.faultcode = message, code, faultcode


class SoapEmulator:
    def __init__(self, ib: Infobase, *, user: str = "Администратор", password: str = "пароль-1С",
                 renames: dict[str, str] | None = None):
        self.ib = ib
        self.user = user
        self.password = password
        self.renames = dict(renames or {})
        self.requests: list[tuple[str, str]] = []
        self.calls: list[str] = []
        self.fail_next = 0
        self.fault_next: tuple[str, str | None, str] | None = None
        self._server: ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def endpoint(self) -> str:
        return self.origin + PATH

    @property
    def wsdl_url(self) -> str:
        return self.endpoint + "?wsdl"

    def wsdl(self) -> bytes:
        text = REFERENCE_WSDL.read_text(encoding="utf-8")
        for ours, theirs in self.renames.items():
            text = text.replace(ours, theirs)
        return text.encode("utf-8")

    def start(self) -> str:
        emulator = self

        class Handler(_Handler):
            emu = emulator

        self._server = loopback.start_http(Handler, "onec-soap")
        return self.wsdl_url

    def stop(self) -> None:
        loopback.stop(self._server)
        self._server = None

    # -- the operations, over the infobase (what the integrator's BSL module would do)

    def handle(self, op: str, args: dict[str, Any]) -> etree._Element:
        ib, fl = self.ib, self.ib.fl
        with ib.lock:
            if op == "GetUsers":
                out = _el("return")
                for r in ib.sets["Catalog_Пользователи"].rows.values():
                    emails = [c["Представление"] for c in r.get("КонтактнаяИнформация", []) if c.get("Тип") == "АдресЭлектроннойПочты"]
                    _add(out, "User", [("Ref", r["Ref_Key"]), ("Name", r["Description"]), ("Email", emails[0] if emails else None),
                                       ("Active", not r["Недействителен"] and not r["DeletionMark"])])
                return out
            if op in ("GetCounterparties", "GetCounterparty"):
                since = args.get("since")
                out = _el("return")
                cps = ib.sets[fl["counterparties"]].rows
                if op == "GetCounterparty":
                    row = cps.get(str(args.get("ref", "")).lower())
                    if row is None or row["IsFolder"]:
                        raise SoapFault("Контрагент не найден", code="NotFound")
                    return self._counterparty(out, row)
                for row in cps.values():
                    if row["IsFolder"]:
                        continue
                    if since and self._changed(row) < since:
                        continue
                    self._counterparty(_sub(out, "Counterparty"), row)
                return out
            if op == "GetDocumentsSince":
                since = args.get("since") or "0001-01-01T00:00:00"
                types = [t.strip() for t in str(args.get("types") or "").split(",") if t.strip()]
                out = _el("return")
                for t in types:
                    if t not in DOC_TYPES:
                        raise SoapFault(f"Неизвестный тип документа: {t}", code="Invalid")
                    for obj in fl["docs"][t]:
                        for r in ib.sets[obj].rows.values():
                            if r["Date"] < since and ib.changed_at.get(r["Ref_Key"], "") < since:
                                continue
                            _add(out, "Document", [
                                ("Ref", r["Ref_Key"]), ("Type", t), ("Number", r["Number"]), ("Date", r["Date"]),
                                ("CounterpartyRef", _nz(r.get("Контрагент_Key"))), ("Amount", f"{float(r['СуммаДокумента']):.2f}"),
                                ("Currency", "UAH"), ("Posted", r["Posted"]), ("DeletionMark", r["DeletionMark"]),
                                ("ManagerRef", _nz(r.get(fl["doc_manager"]))), ("BasisRef", _nz(r.get("ДокументОснование"))),
                                ("DueDate", _day(r.get("СрокОплаты"))),
                            ])
                return out
            if op == "GetDebts":
                as_of = str(args.get("asOf") or ib.now_wall())
                return self._debts(as_of)
            if op == "CreateTask":
                return _el("return", self._create_task(args))
            if op == "FindTaskByMarker":
                marker = str(args.get("marker") or "")
                s = ib.sets[fl["task"]]
                hit = next((r["Ref_Key"] for r in s.rows.values() if marker and marker in str(r.get(fl["task_text"]) or "")), None)
                return _el("return", hit)
            if op == "SetResponsible":
                return _el("return", self._set_responsible(args))
        raise SoapFault(f"Метод {op} не найден", faultcode="soap:Client")

    def _changed(self, row: dict) -> str:
        at = self.ib.changed_at.get(row["Ref_Key"], "")
        partner = row.get("Партнер_Key")
        if partner:
            at = max(at, self.ib.changed_at.get(partner, ""))
        return at

    def _holder(self, cp: dict) -> tuple[dict, str]:
        fl = self.ib.fl
        if fl["partners"]:
            return self.ib.sets[fl["partners"]].rows[cp["Партнер_Key"]], fl["partner_manager"]
        return cp, fl["cp_manager"]

    def _counterparty(self, out: etree._Element, row: dict) -> etree._Element:
        ib, fl = self.ib, self.ib.fl
        holder, field = self._holder(row)
        contacts = list(row.get("КонтактнаяИнформация", []))
        if holder is not row:
            contacts += holder.get("КонтактнаяИнформация", [])
        if fl["contact_register"]:
            contacts += [r for r in ib.sets[fl["contact_register"]].records if r["Объект"] == row["Ref_Key"]]
        phones = _el("Phones")
        for c in contacts:
            if c.get("Тип") == "Телефон":
                _sub(phones, "Phone", c["Представление"])
        emails = _el("Emails")
        for c in contacts:
            if c.get("Тип") == "АдресЭлектроннойПочты":
                _sub(emails, "Email", c["Представление"])
        for name, value in [("Ref", row["Ref_Key"]), ("DataVersion", row["DataVersion"]), ("DeletionMark", row["DeletionMark"]),
                            ("Name", row["Description"]), ("TaxId", row.get("КодПоЕДРПОУ") or row.get("ИНН") or None),
                            ("Kind", row.get("ЮрФизЛицо") or None), ("ManagerRef", _nz(holder.get(field)))]:
            if value is not None:
                _sub(out, name, value)
        out.append(phones)
        out.append(emails)
        changed = self._changed(row)
        if changed:
            _sub(out, "Changed", changed)
        return out

    def _debts(self, as_of: str) -> etree._Element:
        ib, fl = self.ib, self.ib.fl
        dim = fl["rec_cp"]
        res = fl["rec_res"][0] + "Balance"
        to_cp = {}
        if fl["analytics"]:
            to_cp = {k: r["Контрагент_Key"] for k, r in ib.sets[fl["analytics"]].rows.items()}
        totals: dict[str, float] = {}
        for r in ib.balance(fl["receivables"], as_of, None, [dim]):
            cp = to_cp.get(r[dim], r[dim])
            totals[cp] = totals.get(cp, 0.0) + r[res]
        overdue: dict[str, list] = {}
        if fl["overdue"]:
            today = as_of[:10] + "T00:00:00"
            for r in ib.balance(fl["overdue"], as_of, lambda rec: rec["ДатаПлановогоПогашения"] < today,
                                ["АналитикаУчетаПоПартнерам_Key", "ДатаПлановогоПогашения"]):
                cp = to_cp.get(r["АналитикаУчетаПоПартнерам_Key"], ZERO)
                acc = overdue.setdefault(cp, [0.0, None])
                acc[0] += r["ДолгУпрBalance"]
                if r["ДолгУпрBalance"] > 0 and (acc[1] is None or r["ДатаПлановогоПогашения"] < acc[1]):
                    acc[1] = r["ДатаПлановогоПогашения"]
        out = _el("return")
        for cp, amount in sorted(totals.items()):
            if amount <= 0.005:
                continue
            o = overdue.get(cp)
            _add(out, "Debt", [("CounterpartyRef", cp), ("Amount", f"{amount:.2f}"), ("Currency", "UAH"),
                               ("OverdueAmount", f"{max(o[0] if o else 0.0, 0):.2f}" if fl["overdue"] else None),
                               ("OverdueSince", o[1][:10] if o and o[1] else None)])
        return out

    def _create_task(self, args: dict[str, Any]) -> str:
        ib, fl = self.ib, self.ib.fl
        s = ib.sets[fl["task"]]
        responsible = str(args.get("responsible") or "")
        if responsible not in ib.sets["Catalog_Пользователи"].rows:
            raise SoapFault(f"Пользователь {responsible} не найден", code="NotFound")
        cp = str(args.get("counterparty") or "")
        if cp and cp not in ib.sets[fl["counterparties"]].rows:
            raise SoapFault(f"Контрагент {cp} не найден", code="NotFound")
        ref = str(uuid.uuid4())
        s.seq += 1
        row = s.blank()
        text = str(args.get("description") or "")
        marker = str(args.get("marker") or "")
        if marker and marker not in text:
            text = f"{text}\n[{marker}]"
        row.update({"Ref_Key": ref, "Number": f"00-{s.seq:08d}", "Date": ib.now_wall(), "DataVersion": ib.version(),
                    fl["task_title"]: str(args.get("title") or "")[:150], fl["task_text"]: text,
                    fl["task_responsible"]: responsible, fl["task_deadline"]: str(args.get("deadline") or "")[:19]})
        if cp:
            if fl["task_subject"].endswith("_Key"):
                row[fl["task_subject"]] = cp
            else:
                row[fl["task_subject"]], row[f"{fl['task_subject']}_Type"] = cp, f"StandardODATA.{fl['counterparties']}"
        s.rows[ref] = row
        ib.touch(ref)
        return ref

    def _set_responsible(self, args: dict[str, Any]) -> str:
        ib, fl = self.ib, self.ib.fl
        cp = ib.sets[fl["counterparties"]].rows.get(str(args.get("counterparty") or "").lower())
        if cp is None:
            raise SoapFault("Контрагент не найден", code="NotFound")
        manager = str(args.get("manager") or "").lower()
        if manager not in ib.sets["Catalog_Пользователи"].rows:
            raise SoapFault(f"Пользователь {manager} не найден", code="NotFound")
        holder, field = self._holder(cp)
        current = holder.get(field)
        expected = str(args.get("expected") or "").lower() or None
        if expected and current not in (expected, manager):
            raise SoapFault("Ответственный изменился с момента планирования", code="Conflict")
        if current != manager:
            holder[field] = manager
            holder["DataVersion"] = ib.version()
            ib.touch(holder["Ref_Key"])
        return manager


def _el(name: str, text: Any = None) -> etree._Element:
    e = etree.Element(f"{{{NS}}}{name}", nsmap={"m": NS})
    if text is not None:
        e.text = _text(text)
    return e


def _sub(parent: etree._Element, name: str, text: Any = None) -> etree._Element:
    e = etree.SubElement(parent, f"{{{NS}}}{name}")
    if text is not None:
        e.text = _text(text)
    return e


def _add(parent: etree._Element, name: str, fields: list) -> None:
    e = _sub(parent, name)
    for f in fields:
        if f is None:
            continue
        k, v = f
        if v is not None:
            _sub(e, k, v)


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _day(v: Any) -> str | None:
    return v[:10] if isinstance(v, str) and v and not v.startswith("0001") else None


def _nz(v: Any) -> str | None:
    return v if v and v != ZERO else None


def _envelope(body: etree._Element) -> bytes:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    b = etree.SubElement(env, f"{{{SOAP_ENV}}}Body")
    b.append(body)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


class _Handler(BaseHTTPRequestHandler):
    emu: SoapEmulator
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and body in one segment: no Nagle / delayed-ACK stall on keep-alive

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _auth(self) -> bool:
        h = self.headers.get("Authorization", "")
        if not h.startswith("Basic "):
            return False
        try:
            user, _, pwd = base64.b64decode(h[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.emu.user and pwd == self.emu.password

    def _gate(self, method: str) -> bool:
        self.emu.requests.append((method, self.path))
        if self.emu.fail_next > 0:
            self.emu.fail_next -= 1
            self._send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return False
        if self.path.split("?")[0] != PATH:
            self._send(404, b"<html><body><h1>404 Not Found</h1></body></html>", "text/html")
            return False
        if not self._auth():
            self._send(401, b"", "text/html", {"WWW-Authenticate": 'Basic realm="1C"'})
            return False
        return True

    def do_GET(self) -> None:
        if not self._gate("GET"):
            return
        if self.path.lower().endswith("?wsdl"):
            return self._send(200, self.emu.wsdl(), "text/xml; charset=utf-8")
        self._send(405, b"", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else b""
        if not self._gate("POST"):
            return
        try:
            try:
                doc = etree.fromstring(payload)
                body = doc.find(f"{{{SOAP_ENV}}}Body")
                call = body[0]
            except (etree.XMLSyntaxError, TypeError, IndexError, ValueError):
                raise SoapFault("Ошибка разбора XML", faultcode="soap:Client") from None
            local = etree.QName(call).localname
            back = {v: k for k, v in self.emu.renames.items()}
            op = back.get(local, local)
            self.emu.calls.append(op)
            if self.emu.fault_next:
                faultcode, code, message = self.emu.fault_next
                self.emu.fault_next = None
                raise SoapFault(message, code=code, faultcode=faultcode)
            args = {etree.QName(ch).localname: (ch.text if len(ch) == 0 else ch) for ch in call}
            args = {k: (None if v is None else _arg(v)) for k, v in args.items()}
            result = self.emu.handle(op, args)
            resp = etree.Element(f"{{{NS}}}{self.emu.renames.get(op, op)}Response", nsmap={"m": NS})
            resp.append(result)
            self._send(200, _envelope(resp), "text/xml; charset=utf-8")
        except SoapFault as f:
            fault = etree.Element(f"{{{SOAP_ENV}}}Fault")
            etree.SubElement(fault, "faultcode").text = f.faultcode
            etree.SubElement(fault, "faultstring").text = f.message
            if f.code:
                detail = etree.SubElement(fault, "detail")
                ef = etree.SubElement(detail, f"{{{NS}}}ExchangeFault", nsmap={"m": NS})
                etree.SubElement(ef, f"{{{NS}}}Code").text = f.code
                etree.SubElement(ef, f"{{{NS}}}Message").text = f.message
            self._send(500, _envelope(fault), "text/xml; charset=utf-8")


def _arg(v: Any) -> Any:
    """Request values as the BSL module sees them: dateTime text cut to 1C's wall-time form."""
    if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] == "T":
        try:
            return datetime.fromisoformat(v).strftime("%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return v
    return v
