"""1C wire rows -> connector.domain records: pure functions, no HTTP.

1C dates are the server's wall-clock time without a zone (``2024-01-31T00:00:00``); the empty
date is ``0001-01-01T00:00:00`` and the empty reference the zero GUID. Both mean "none" here.
Field names come from :class:`onec.presets.Names`, so these functions serve every configuration.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from connector.domain import Client, ClientKind, Debt, Document, DocumentType, Manager, ProductLine, ProductLines, make_key
from onec.ageing import overdue
from onec.presets import Names

SYSTEM = "onec"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NON_DIGITS = re.compile(r"\D+")
_PHONE_SPLIT = re.compile(r"[,;]|\s{2,}")
# ISO 4217 numeric codes as 1C stores them in Catalog_Валюты.Code
ISO_NUMERIC = {"980": "UAH", "840": "USD", "978": "EUR", "643": "RUB", "985": "PLN", "826": "GBP", "933": "BYN",
               "398": "KZT", "756": "CHF", "203": "CZK", "949": "TRY", "156": "CNY", "498": "MDL"}


def ref(value: Any) -> str | None:
    """A reference value, or None for the zero GUID / empty / non-GUID text."""
    if not value or not isinstance(value, str) or not _GUID.match(value) or value == ZERO_GUID:
        return None
    return value.lower()


def parse_wall(value: Any, tz: ZoneInfo) -> datetime | None:
    """1C wall time -> aware datetime in the base's zone; the empty date -> None."""
    if not value or not isinstance(value, str) or value.startswith("0001-01-01"):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=tz)


def to_wall(dt: datetime, tz: ZoneInfo) -> datetime:
    """An aware datetime as the naive wall time a 1C server in ``tz`` uses."""
    return dt.astimezone(tz).replace(tzinfo=None, microsecond=0)


def parse_day(value: Any) -> date | None:
    d = parse_wall(value, ZoneInfo("UTC"))
    return d.date() if d else None


def digits(value: Any) -> str | None:
    text = _NON_DIGITS.sub("", str(value or ""))
    return text or None


def number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def currency_code(row: Mapping[str, Any], names: Names) -> str:
    """``Catalog_Валюты`` row -> ISO code when the numeric code is known, else its text."""
    code = str(row.get(names.f("currency.code")) or "").strip()
    return ISO_NUMERIC.get(code.zfill(3) if code.isdigit() else code, code or str(row.get("Description") or ""))


def contact_values(rows: Iterable[Mapping[str, Any]] | None, names: Names, kind: str) -> list[str]:
    """Texts of contact-information rows of one kind (``contact.phone`` / ``contact.email``).

    ``Представление`` is what people typed; one row may hold several numbers separated by
    commas or semicolons. Spelling is kept: the core normalises phones when matching.
    """
    want = names.f(kind)
    out: list[str] = []
    for r in rows or ():
        if str(r.get(names.f("contact.type")) or "") != want:
            continue
        text = str(r.get(names.f("contact.text")) or "").strip()
        parts = [p.strip() for p in _PHONE_SPLIT.split(text)] if kind == "contact.phone" else [text]
        for p in parts:
            if p and p not in out:
                out.append(p)
    return out


def user_key(guid: Any) -> str | None:
    g = ref(guid)
    return make_key(SYSTEM, "user", g) if g else None


def counterparty_key(guid: str) -> str:
    return make_key(SYSTEM, "counterparty", guid.lower())


def document_key(guid: str) -> str:
    return make_key(SYSTEM, "document", guid.lower())


def debt_key(counterparty_guid: str) -> str:
    return make_key(SYSTEM, "debt", counterparty_guid.lower())


def map_user(row: Mapping[str, Any], names: Names) -> Manager:
    """``Catalog_Пользователи`` -> Manager; an invalid or deletion-marked user is inactive."""
    guid = ref(row.get("Ref_Key")) or str(row.get("Ref_Key"))
    inactive_field = names.f("user.inactive")
    inactive = bool(row.get(inactive_field)) if inactive_field else False
    table = names.f("user.contacts")
    emails = contact_values(row.get(table), names, "contact.email") if table else []
    phones = contact_values(row.get(table), names, "contact.phone") if table else []
    return Manager(
        key=make_key(SYSTEM, "user", guid), system=SYSTEM, source_id=guid,
        name=str(row.get(names.f("user.name")) or row.get("Description") or guid).strip(),
        active=not inactive and not row.get("DeletionMark", False),
        email=emails[0] if emails else None, phone=phones[0] if phones else None,
    )


def map_counterparty(row: Mapping[str, Any], names: Names, *, partner: Mapping[str, Any] | None = None,
                     contacts: Iterable[Mapping[str, Any]] = ()) -> Client:
    """``Catalog_Контрагенты`` (+ its ``Catalog_Партнеры`` in УТ 11) -> Client(kind=company).

    The responsible manager is the partner's main manager in УТ 11 and the counterparty's own
    field elsewhere. Phones and e-mails come from both contact-information tables and from the
    ``InformationRegister_КонтактнаяИнформация`` rows the caller found (``contacts``, УТ 10.3 / УТП).
    """
    guid = ref(row.get("Ref_Key")) or str(row.get("Ref_Key"))
    tax = None
    for f in names.fs("counterparty.tax_id"):
        tax = digits(row.get(f))
        if tax:
            break
    manager = None
    if partner is not None and names.f("partner.manager"):
        manager = user_key(partner.get(names.f("partner.manager")))
    if manager is None and names.f("counterparty.manager"):
        manager = user_key(row.get(names.f("counterparty.manager")))
    table = names.f("contact.table")
    phones: list[str] = []
    emails: list[str] = []
    for rows in (row.get(table), (partner or {}).get(table), list(contacts)):
        for p in contact_values(rows, names, "contact.phone"):
            if p not in phones:
                phones.append(p)
        for e in contact_values(rows, names, "contact.email"):
            if e not in emails:
                emails.append(e)
    title = str(row.get(names.f("counterparty.name")) or row.get(names.f("counterparty.full_name")) or "").strip()
    kind_field = names.f("counterparty.kind")
    return Client(
        key=counterparty_key(guid), system=SYSTEM, source_id=guid, kind=ClientKind.COMPANY, title=title or guid,
        responsible_key=manager, phones=tuple(phones), emails=tuple(emails), tax_id=tax, guid=guid,
        segment=(str(row.get(kind_field)) or None) if kind_field and row.get(kind_field) else None,
    )


def composite_ref(row: Mapping[str, Any], field: str, *, type_prefix: str = "StandardODATA.Document_") -> str | None:
    """A reference held in a ``*_Key`` field, or in a composite ``<Name>`` + ``<Name>_Type`` pair."""
    if not field:
        return None
    if field.endswith("_Key"):
        return ref(row.get(field))
    typ = row.get(f"{field}_Type")
    if typ and not str(typ).startswith(type_prefix):
        return None
    return ref(row.get(field))


def map_document(row: Mapping[str, Any], doc_type: str, names: Names, tz: ZoneInfo,
                 currencies: Mapping[str, str] | None = None) -> Document:
    """A document row -> Document. ``deleted`` is the deletion mark; unposting shows as ``posted``."""
    guid = ref(row.get("Ref_Key")) or str(row.get("Ref_Key"))
    cp = ref(row.get(names.f(f"{doc_type}.counterparty")))
    cur_field = names.f(f"{doc_type}.currency")
    cur = ref(row.get(cur_field)) if cur_field else None
    paid_field = names.f(f"{doc_type}.paid")
    basis = composite_ref(row, names.f(f"{doc_type}.basis"))
    due_field = names.f(f"{doc_type}.due") if doc_type == "invoice" else ""
    when = parse_wall(row.get("Date"), tz)
    return Document(
        key=document_key(guid), system=SYSTEM, source_id=guid, doc_type=DocumentType(doc_type),
        date=when or datetime(1, 1, 1, tzinfo=tz), client_key=counterparty_key(cp) if cp else None,
        number=str(row.get("Number") or "").strip(), amount=number(row.get(names.f(f"{doc_type}.amount"))),
        currency=(currencies or {}).get(cur, "") if cur else "", posted=bool(row.get("Posted", False)),
        deleted=bool(row.get("DeletionMark", False)),
        responsible_key=user_key(row.get(names.f(f"{doc_type}.manager"))) if names.f(f"{doc_type}.manager") else None,
        basis_key=document_key(basis) if basis else None,
        due_date=parse_day(row.get(due_field)) if due_field else None,
        paid=bool(row.get(paid_field)) if paid_field and paid_field in row else None,
        status=_status(row, names.f(f"{doc_type}.status")),
    )


def _status(row: Mapping[str, Any], field: str) -> str | None:
    """A status as 1C renders it (an enum value name); a reference field gives its GUID."""
    if not field:
        return None
    value = row.get(field)
    text = str(value).strip() if value not in (None, "") else ""
    return None if not text or text == ZERO_GUID else text[:100]


def doc_select(names: Names, doc_type: str) -> list[str]:
    """The narrow ``$select`` of one document type: standard fields + the mapped ones."""
    out = ["Ref_Key", "DataVersion", "DeletionMark", "Number", "Date", "Posted"]
    for f in ("counterparty", "amount", "currency", "manager", "paid", "status"):
        name = names.f(f"{doc_type}.{f}")
        if name and name not in out:
            out.append(name)
    basis = names.f(f"{doc_type}.basis")
    if basis:
        out += [basis] if basis.endswith("_Key") else [basis, f"{basis}_Type"]
    if doc_type == "invoice" and names.f("invoice.due"):
        out.append(names.f("invoice.due"))
    if doc_type == "sale" and names.f("sale.contract"):
        out.append(names.f("sale.contract"))  # the contract whose payment term ages the shipment
    if doc_type in ("sale", "order") and names.f(f"{doc_type}.lines"):
        out.append(names.f(f"{doc_type}.lines"))  # the goods, a tabular section read with the document
    return out


def line_products(row: Mapping[str, Any], doc_type: str, names: Names) -> set[str]:
    """The product references (``Номенклатура_Key``) of a document's goods, when they were read."""
    table = names.f(f"{doc_type}.lines") if doc_type in ("sale", "order") else ""
    if not table or not isinstance(row.get(table), list):
        return set()
    return {g for r in row[table] if isinstance(r, Mapping) and (g := ref(r.get(names.f("line.product"))))}


def map_lines(row: Mapping[str, Any], doc_type: str, names: Names,
              products: Mapping[str, tuple[str, str, str]]) -> ProductLines | None:
    """A sale's or order's goods -> every line of the document (None when the goods were not read).

    ``products`` gives each product reference its ``(article, name, group)`` from ``Catalog_Номенклатура``;
    a product it does not know keeps its GUID only."""
    table = names.f(f"{doc_type}.lines") if doc_type in ("sale", "order") else ""
    if not table or not isinstance(row.get(table), list):
        return None
    guid = ref(row.get("Ref_Key")) or str(row.get("Ref_Key"))
    lines = []
    for r in row[table]:
        if not isinstance(r, Mapping):
            continue
        pid = ref(r.get(names.f("line.product"))) or ""
        article, name, group = products.get(pid, ("", "", ""))
        try:
            line_no = int(str(r.get("LineNumber") or 0))
        except ValueError:
            line_no = 0
        lines.append(ProductLine(line_no=line_no or len(lines) + 1, product_id=pid, article=article, name=name, group=group,
                                 quantity=number(r.get(names.f("line.quantity"))), amount=number(r.get(names.f("line.amount")))))
    return ProductLines(document_key(guid), SYSTEM, tuple(sorted(lines, key=lambda ln: ln.line_no)))


def receivable_balances(balance: Iterable[Mapping[str, Any]], names: Names, *,
                        to_counterparty: Mapping[str, str] | None = None, currencies: Mapping[str, str] | None = None,
                        default_currency: str = "") -> dict[str, tuple[float, str]]:
    """Rows of ``Receivables/Balance(...)`` -> ``{counterparty GUID: (balance, currency)}``.

    In УТ 11 the register's dimension is an analytics key that ``to_counterparty`` resolves to a
    counterparty GUID. A counterparty settled in several currencies is reported in the currency
    it owes most in. Credit balances (advances) are kept: the caller decides what is a debt.
    """
    dim = names.f("receivables.counterparty")
    amount_f = names.f("receivables.amount") + "Balance"
    cur_f = names.f("receivables.currency")
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in balance:
        cp = _counterparty(r, dim, to_counterparty)
        if cp is None:
            continue
        cur = (currencies or {}).get(ref(r.get(cur_f)) or "", default_currency) if cur_f else default_currency
        per[cp][cur] += number(r.get(amount_f))
    return {cp: (round(amount, 2), cur) for cp, by_cur in sorted(per.items())
            for cur, amount in [max(by_cur.items(), key=lambda kv: kv[1])]}


def overdue_buckets(rows: Iterable[Mapping[str, Any]], names: Names, *,
                    to_counterparty: Mapping[str, str] | None = None) -> dict[str, list[tuple[date, float]]]:
    """Rows of the terms register's ``Balance`` by due date (УТ 11 ``РасчетыСКлиентамиПоСрокам``)
    -> ``{counterparty GUID: [(due date, amount)]}``, summed per day, oldest first."""
    dim, amount_f, due_f = names.f("overdue.counterparty"), names.f("overdue.amount") + "Balance", names.f("overdue.due")
    per: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        cp, due = _counterparty(r, dim, to_counterparty), parse_day(r.get(due_f))
        if cp is not None and due is not None:
            per[cp][due] += number(r.get(amount_f))
    return {cp: sorted(days.items()) for cp, days in per.items()}


def _counterparty(row: Mapping[str, Any], field: str, to_counterparty: Mapping[str, str] | None) -> str | None:
    v = ref(row.get(field))
    if v and to_counterparty is not None:
        v = ref(to_counterparty.get(v))
    return v


def make_debt(counterparty: str, amount: float, currency: str, buckets: Iterable[tuple[date, float]],
              documents: Iterable[Mapping[str, Any]], *, as_of: datetime, today: date) -> Debt:
    """One counterparty's debt as of ``today``: overdue from its ``(due date, amount)`` buckets
    (the terms register's, or the aged shipments'), the aged shipments as its documents."""
    o_amount, o_since = overdue(buckets, today)
    return Debt(key=debt_key(counterparty), system=SYSTEM, client_key=counterparty_key(counterparty), amount=round(amount, 2),
                currency=currency, as_of=as_of, overdue_amount=o_amount, overdue_since=o_since,
                documents=tuple(dict(d) for d in documents))


# ---------------------------------------------------------------- the reference SOAP service

def _aware(value: Any, tz: ZoneInfo) -> datetime | None:
    if isinstance(value, datetime):
        if value.year <= 1:
            return None
        return value if value.tzinfo else value.replace(tzinfo=tz)
    return parse_wall(value, tz)


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date() if value.year > 1 else None
    if isinstance(value, date):
        return value if value.year > 1 else None
    return parse_day(value)


def _items(value: Any, name: str) -> list:
    """zeep renders ``<Phones><Phone>…</Phone></Phones>`` as ``{"Phone": [...]}`` or None."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = value.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def map_soap_user(row: Mapping[str, Any]) -> Manager:
    guid = ref(row.get("Ref")) or str(row.get("Ref"))
    return Manager(key=make_key(SYSTEM, "user", guid), system=SYSTEM, source_id=guid,
                   name=str(row.get("Name") or guid).strip(), active=bool(row.get("Active", True)),
                   email=(str(row["Email"]).strip() or None) if row.get("Email") else None)


def map_soap_counterparty(row: Mapping[str, Any]) -> Client:
    guid = ref(row.get("Ref")) or str(row.get("Ref"))
    return Client(key=counterparty_key(guid), system=SYSTEM, source_id=guid, kind=ClientKind.COMPANY,
                  title=str(row.get("Name") or guid).strip(), responsible_key=user_key(row.get("ManagerRef")),
                  phones=tuple(str(p) for p in _items(row.get("Phones"), "Phone") if p),
                  emails=tuple(str(e) for e in _items(row.get("Emails"), "Email") if e),
                  tax_id=digits(row.get("TaxId")), guid=guid, segment=str(row.get("Kind") or "") or None)


def map_soap_document(row: Mapping[str, Any], tz: ZoneInfo) -> Document:
    guid = ref(row.get("Ref")) or str(row.get("Ref"))
    cp, basis = ref(row.get("CounterpartyRef")), ref(row.get("BasisRef"))
    return Document(
        key=document_key(guid), system=SYSTEM, source_id=guid, doc_type=DocumentType(str(row.get("Type"))),
        date=_aware(row.get("Date"), tz) or datetime(1, 1, 1, tzinfo=tz), client_key=counterparty_key(cp) if cp else None,
        number=str(row.get("Number") or "").strip(), amount=number(row.get("Amount")), currency=str(row.get("Currency") or ""),
        posted=bool(row.get("Posted", True)), deleted=bool(row.get("DeletionMark", False)),
        responsible_key=user_key(row.get("ManagerRef")), basis_key=document_key(basis) if basis else None,
        due_date=_day(row.get("DueDate")), paid=row.get("Paid") if isinstance(row.get("Paid"), bool) else None,
    )


def map_soap_debt(row: Mapping[str, Any], as_of: datetime) -> Debt:
    cp = ref(row.get("CounterpartyRef")) or str(row.get("CounterpartyRef"))
    overdue = row.get("OverdueAmount")
    return Debt(key=debt_key(cp), system=SYSTEM, client_key=counterparty_key(cp), amount=round(number(row.get("Amount")), 2),
                currency=str(row.get("Currency") or ""), as_of=as_of,
                overdue_amount=round(number(overdue), 2) if overdue is not None else None,
                overdue_since=_day(row.get("OverdueSince")))
