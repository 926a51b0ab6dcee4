"""Bitrix24 wire rows -> domain records: pure functions, no HTTP.

Legacy CRM lists (``crm.company.list`` and friends) return every value as a string or null, an
empty date as ``""`` and multifields (PHONE, EMAIL) only when selected; ``crm.item.list`` returns
typed camelCase values; ``tasks.task.list`` returns camelCase strings; ``user.get`` mixes a boolean
``ACTIVE`` with an int array ``UF_DEPARTMENT``. Everything here tolerates all of those spellings,
so a field that a portal leaves out degrades to "unknown" instead of crashing a sync.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timezone
from typing import Any

from connector.domain import (
    Activity,
    ActivityKind,
    Client,
    ClientKind,
    Deal,
    Invoice,
    Manager,
    Outcome,
    ProductLine,
    ProductLines,
    Task,
    make_key,
)

SYSTEM = "bitrix24"

# CRM object type ids (``OWNER_TYPE_ID``, ``ENTITY_TYPE_ID``) and binding prefixes (``UF_CRM_TASK``).
OWNER_TYPES = {2: "deal", 3: "contact", 4: "company"}
TYPE_IDS = {v: k for k, v in OWNER_TYPES.items()}
BINDING_PREFIXES = {"CO": "company", "C": "contact", "D": "deal"}
# Writing: what a key may be bound to / fired on. Smart invoices (``SI_17``, ``SMART_INVOICE_17``)
# take tasks, triggers and workflows; reading keeps only client and deal owners.
KIND_PREFIX = {**{v: k for k, v in BINDING_PREFIXES.items()}, "invoice": "SI"}
KIND_WORD = {"company": "COMPANY", "contact": "CONTACT", "deal": "DEAL", "invoice": "SMART_INVOICE"}
BIZPROC_DOCUMENT = {"company": "CCrmDocumentCompany", "contact": "CCrmDocumentContact", "deal": "CCrmDocumentDeal",
                    "invoice": "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice"}
LEGACY_KINDS = ("company", "contact", "deal")  # crm.<kind>.get/update, timeline ENTITY_TYPE words

SEMANTIC_OUTCOME = {"S": Outcome.WON, "F": Outcome.LOST}
TASK_DONE = "5"


def key(kind: str, source_id: object) -> str:
    return make_key(SYSTEM, kind, source_id)


def user_key(source_id: object) -> str | None:
    i = to_int(source_id)
    return key("user", i) if i else None


# ---------------------------------------------------------------- scalar parsing


def empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def to_int(value: Any) -> int | None:
    """``"12"`` / ``12`` / ``12.0`` -> 12; ``""``, ``None``, ``"0"`` (Bitrix's "no link") -> None."""
    if empty(value) or isinstance(value, bool):
        return None
    try:
        i = int(float(value))
    except (TypeError, ValueError):
        return None
    return i or None


def to_float(value: Any) -> float:
    if empty(value) or isinstance(value, bool):
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().upper() in {"Y", "1", "TRUE", "YES"}


_DMY = re.compile(r"^(\d{2})\.(\d{2})\.(\d{4})(?:\s+(\d{2}):(\d{2})(?::(\d{2}))?)?$")


def parse_dt(value: Any, default_tz: timezone = UTC) -> datetime | None:
    """ISO datetime with offset (the REST default) -> aware datetime; ``""``/None -> None.

    A value without an offset (``user.get`` local formats, ``LAST_ACTIVITY_DATE``) gets
    ``default_tz``: the domain never holds a naive datetime.
    """
    if empty(value):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    text = str(value).strip()
    m = _DMY.match(text)
    if m:
        d, mo, y, hh, mm, ss = m.groups()
        return datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=default_tz)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=default_tz)


def parse_date(value: Any) -> date | None:
    """A ``date`` field: Bitrix renders it as local midnight (``2001-11-11T02:00:00+02:00``), so
    the calendar date is the one written, not its UTC conversion."""
    if empty(value):
        return None
    text = str(value).strip()
    m = _DMY.match(text)
    if m:
        d, mo, y = m.group(1), m.group(2), m.group(3)
        try:
            return date(int(y), int(mo), int(d))
        except ValueError:
            return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def multifield(value: Any) -> tuple[str, ...]:
    """``[{"VALUE": "+380...", "VALUE_TYPE": "WORK", ...}]`` -> ``("+380...",)``; missing -> ()."""
    if empty(value):
        return ()
    if isinstance(value, Mapping):  # PHP renders a 0..n map as a list, but be lenient
        value = list(value.values())
    out: list[str] = []
    for item in value if isinstance(value, list) else [value]:
        v = item.get("VALUE") if isinstance(item, Mapping) else item
        if not empty(v) and str(v).strip() not in out:
            out.append(str(v).strip())
    return tuple(out)


def first_value(value: Any) -> str | None:
    """A UF field that may be single or multiple -> its first non-empty value as text."""
    if isinstance(value, list):
        value = next((v for v in value if not empty(v)), None)
    return None if empty(value) else str(value).strip()


def uf_value(value: Any) -> Any:
    """Custom field value as stored: arrays stay lists, empty strings become None."""
    if isinstance(value, list):
        return [v for v in value if not empty(v)]
    return None if value == "" else value


def digits(value: Any) -> str | None:
    d = re.sub(r"\D", "", str(value or ""))
    return d or None


def _get(row: Mapping[str, Any], *names: str) -> Any:
    """First present of several spellings (``responsibleId`` / ``RESPONSIBLE_ID``)."""
    for n in names:
        if n in row:
            return row[n]
    return None


# ---------------------------------------------------------------- users


def manager(row: Mapping[str, Any], departments: Mapping[str, str] | None = None) -> Manager:
    """``user.get`` row -> Manager; inactive (fired) users are kept, flagged ``active=False``."""
    uid = str(row.get("ID"))
    name = " ".join(p for p in (str(row.get("NAME") or "").strip(), str(row.get("LAST_NAME") or "").strip()) if p)
    email = (row.get("EMAIL") or None) and str(row["EMAIL"]).strip()
    depts = row.get("UF_DEPARTMENT") or []
    if not isinstance(depts, list):
        depts = [depts]
    names = tuple((departments or {}).get(str(d), str(d)) for d in depts if not empty(d))
    phone = first_value(row.get("PERSONAL_MOBILE")) or first_value(row.get("WORK_PHONE"))
    return Manager(
        key=key("user", uid), system=SYSTEM, source_id=uid, name=name or email or f"User {uid}",
        active=to_bool(row.get("ACTIVE", True)), email=email or None, departments=names, phone=phone,
        extension=first_value(row.get("UF_PHONE_INNER")),
    )


# ---------------------------------------------------------------- clients


def requisite_tax_id(row: Mapping[str, Any]) -> str | None:
    """EDRPOU (Ukrainian preset) first, else INN: digits only."""
    return digits(row.get("RQ_EDRPOU")) or digits(row.get("RQ_INN"))


def _client_common(row: Mapping[str, Any], *, fields: Iterable[str], guid_field: str | None,
                   segment_field: str | None, opt_out_field: str | None) -> dict[str, Any]:
    custom = {f: uf_value(row.get(f)) for f in fields if f in row}
    for extra in (segment_field, opt_out_field):
        if extra and extra in row:
            custom[extra] = uf_value(row.get(extra))
    out: dict[str, Any] = {
        "responsible_key": user_key(row.get("ASSIGNED_BY_ID")),
        "phones": multifield(row.get("PHONE")),
        "emails": multifield(row.get("EMAIL")),
        "guid": first_value(row.get(guid_field)) if guid_field else None,
        "fields": custom,
        "created_at": parse_dt(row.get("DATE_CREATE")),
        "modified_at": parse_dt(row.get("DATE_MODIFY")),
    }
    if segment_field and first_value(row.get(segment_field)):
        out["segment"] = first_value(row.get(segment_field))
    return out


def company(row: Mapping[str, Any], *, tax_id: str | None = None, fields: Iterable[str] = (),
            guid_field: str | None = None, segment_field: str | None = None,
            opt_out_field: str | None = None) -> Client:
    cid = str(row.get("ID"))
    common = _client_common(row, fields=fields, guid_field=guid_field, segment_field=segment_field,
                            opt_out_field=opt_out_field)
    common.setdefault("segment", first_value(row.get("COMPANY_TYPE")))
    return Client(key=key("company", cid), system=SYSTEM, source_id=cid, kind=ClientKind.COMPANY,
                  title=str(row.get("TITLE") or "").strip() or f"Company {cid}", tax_id=tax_id, **common)


def contact(row: Mapping[str, Any], *, tax_id: str | None = None, fields: Iterable[str] = (),
            guid_field: str | None = None, segment_field: str | None = None,
            opt_out_field: str | None = None) -> Client:
    cid = str(row.get("ID"))
    common = _client_common(row, fields=fields, guid_field=guid_field, segment_field=segment_field,
                            opt_out_field=opt_out_field)
    common.setdefault("segment", first_value(row.get("TYPE_ID")))
    first = str(row.get("NAME") or "").strip()
    parts = [first, str(row.get("SECOND_NAME") or "").strip(), str(row.get("LAST_NAME") or "").strip()]
    title = " ".join(p for p in parts if p)
    company_id = to_int(row.get("COMPANY_ID"))
    return Client(key=key("contact", cid), system=SYSTEM, source_id=cid, kind=ClientKind.CONTACT,
                  title=title or f"Contact {cid}", first_name=first or None,
                  company_key=key("company", company_id) if company_id else None,
                  birthday=parse_date(row.get("BIRTHDATE")), tax_id=tax_id, **common)


# ---------------------------------------------------------------- deals


def deal(row: Mapping[str, Any], fields: Iterable[str] = ()) -> Deal:
    """``crm.deal.list`` row; ``fields``: the custom deal fields a rule reads (a regular deal's period)."""
    did = str(row.get("ID"))
    semantic = str(row.get("STAGE_SEMANTIC_ID") or "P").upper()
    outcome = SEMANTIC_OUTCOME.get(semantic, Outcome.OPEN)
    clients = []
    if to_int(row.get("COMPANY_ID")):
        clients.append(key("company", to_int(row["COMPANY_ID"])))
    if to_int(row.get("CONTACT_ID")):
        clients.append(key("contact", to_int(row["CONTACT_ID"])))
    closed = parse_dt(row.get("CLOSEDATE")) if outcome is not Outcome.OPEN or to_bool(row.get("CLOSED")) else None
    return Deal(
        key=key("deal", did), system=SYSTEM, source_id=did, title=str(row.get("TITLE") or "").strip(),
        client_keys=tuple(clients), stage_id=str(row.get("STAGE_ID") or ""), outcome=outcome,
        amount=to_float(row.get("OPPORTUNITY")), currency=str(row.get("CURRENCY_ID") or ""),
        responsible_key=user_key(row.get("ASSIGNED_BY_ID")), created_at=parse_dt(row.get("DATE_CREATE")),
        closed_at=closed, modified_at=parse_dt(row.get("DATE_MODIFY")),
        fields={f: uf_value(row.get(f)) for f in fields if f in row},
    )


# ---------------------------------------------------------------- product rows


def product_lines(deal_id: Any, rows: Iterable[Mapping[str, Any]]) -> ProductLines:
    """Every ``crm.item.productrow.list`` row of one deal (``productRows``): name, catalog product id,
    quantity and the line's total (``price`` is per unit, after discounts and taxes). Rows carry no
    article or section: products are matched by name or id."""
    lines = []
    for n, r in enumerate(sorted(rows, key=lambda r: (to_int(r.get("sort")) or 0, to_int(r.get("id")) or 0)), start=1):
        qty = to_float(r.get("quantity"))
        lines.append(ProductLine(line_no=n, product_id=str(to_int(r.get("productId")) or ""),
                                 name=str(r.get("productName") or "").strip(), quantity=qty,
                                 amount=round(to_float(r.get("price")) * qty, 2)))
    return ProductLines(key=key("deal", to_int(deal_id)), system=SYSTEM, lines=tuple(lines))


# ---------------------------------------------------------------- activities

_TYPE_KIND = {"1": ActivityKind.MEETING, "2": ActivityKind.CALL, "3": ActivityKind.TASK, "4": ActivityKind.EMAIL}
_PROVIDER_KIND = {"CRM_TODO": ActivityKind.TASK, "CRM_CALL_TRACKER": ActivityKind.CALL,
                  "VOXIMPLANT_CALL": ActivityKind.CALL, "CRM_EMAIL": ActivityKind.EMAIL}


def owner_keys(pairs: Iterable[tuple[Any, Any]]) -> tuple[str, ...]:
    """(OWNER_TYPE_ID, OWNER_ID) pairs -> company/contact/deal keys; leads and others dropped."""
    out: list[str] = []
    for type_id, oid in pairs:
        kind = OWNER_TYPES.get(to_int(type_id) or 0)
        i = to_int(oid)
        if kind and i and key(kind, i) not in out:
            out.append(key(kind, i))
    return tuple(out)


def activity_kind(type_id: Any, provider_id: Any) -> ActivityKind:
    t = str(to_int(type_id) or 0)
    if t in _TYPE_KIND:
        return _TYPE_KIND[t]
    if t == "6":
        return _PROVIDER_KIND.get(str(provider_id or "").upper(), ActivityKind.OTHER)
    return ActivityKind.OTHER


def activity(row: Mapping[str, Any]) -> Activity:
    aid = str(row.get("ID"))
    pairs = [(row.get("OWNER_TYPE_ID"), row.get("OWNER_ID"))]
    for b in row.get("BINDINGS") or []:
        if isinstance(b, Mapping):
            pairs.append((b.get("OWNER_TYPE_ID"), b.get("OWNER_ID")))
    completed = to_bool(row.get("COMPLETED"))
    start, end = parse_dt(row.get("START_TIME")), parse_dt(row.get("END_TIME"))
    happened = (end or parse_dt(row.get("LAST_UPDATED"))) if completed else None
    kind = activity_kind(row.get("TYPE_ID"), row.get("PROVIDER_ID"))
    timed = kind is ActivityKind.CALL and start and end and end >= start
    duration = int((end - start).total_seconds()) if timed else None
    direction = {"1": "in", "2": "out"}.get(str(row.get("DIRECTION") or ""))
    # a task bound to the CRM shows up as a TYPE_ID 3 activity: it mirrors the task (the connector's own, maybe)
    assoc = to_int(row.get("ASSOCIATED_ENTITY_ID"))
    mirrors = key("task", assoc) if assoc and (str(row.get("TYPE_ID")) == "3" or str(row.get("PROVIDER_ID") or "").upper()
                                               in ("TASKS", "TASKS_TASK", "CRM_TASKS_TASK")) else None
    return Activity(
        key=key("activity", aid), system=SYSTEM, source_id=aid, kind=kind, owner_keys=owner_keys(pairs),
        completed=completed, happened_at=happened, deadline=parse_dt(row.get("DEADLINE")),
        responsible_key=user_key(row.get("RESPONSIBLE_ID")), direction=direction,
        subject=str(row.get("SUBJECT") or "").strip(), duration_s=duration, ref_key=mirrors,
    )


def comment(row: Mapping[str, Any]) -> Activity:
    """A timeline comment counts as contact with the client (kind ``comment``)."""
    cid = str(row.get("ID"))
    kind = str(row.get("ENTITY_TYPE") or "").lower()
    owner = to_int(row.get("ENTITY_ID"))
    text = str(row.get("COMMENT") or "").strip()
    return Activity(
        key=key("comment", cid), system=SYSTEM, source_id=cid, kind=ActivityKind.COMMENT,
        owner_keys=(key(kind, owner),) if kind in LEGACY_KINDS and owner else (), completed=True,
        happened_at=parse_dt(row.get("CREATED")), responsible_key=user_key(row.get("AUTHOR_ID")),
        subject=text.splitlines()[0][:200] if text else "", text=text,
    )


# ---------------------------------------------------------------- invoices


def stage_semantics(status_rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``crm.status.list`` rows of ``SMART_INVOICE_STAGE_<cat>`` -> {stage id: "P"|"S"|"F"}."""
    out: dict[str, str] = {}
    for r in status_rows:
        sid = r.get("STATUS_ID")
        if sid:
            out[str(sid)] = str(r.get("SEMANTICS") or "P").upper() or "P"
    return out


def invoice_outcome(stage_id: str, semantics: Mapping[str, str]) -> Outcome:
    sem = semantics.get(stage_id)
    if sem is None:  # dictionary not loaded: the default smart-invoice stages end in :P (paid) / :D (declined)
        sem = {"P": "S", "D": "F"}.get(stage_id.rsplit(":", 1)[-1], "P") if ":" in stage_id else "P"
    return SEMANTIC_OUTCOME.get(sem, Outcome.OPEN)


def invoice(item: Mapping[str, Any], semantics: Mapping[str, str], fields: Iterable[str] = ()) -> Invoice:
    """``crm.item.list`` (entityTypeId 31) item; ``closedate`` is the payment due date. ``fields``
    are kept as they are (the 1C number or GUID a rule matches on)."""
    iid = str(item.get("id"))
    stage = str(item.get("stageId") or "")
    outcome = invoice_outcome(stage, semantics)
    company_id, contact_id = to_int(item.get("companyId")), to_int(item.get("contactId"))
    client = key("company", company_id) if company_id else (key("contact", contact_id) if contact_id else None)
    deal_id = to_int(item.get("parentId2"))
    return Invoice(
        key=key("invoice", iid), system=SYSTEM, source_id=iid, title=str(item.get("title") or "").strip(),
        client_key=client, number=str(item.get("accountNumber") or ""), amount=to_float(item.get("opportunity")),
        currency=str(item.get("currencyId") or ""), stage_id=stage, outcome=outcome,
        issued_at=parse_dt(item.get("begindate")) or parse_dt(item.get("createdTime")),
        due_date=parse_date(item.get("closedate")),
        paid_at=(parse_dt(item.get("movedTime")) or parse_dt(item.get("updatedTime")))
        if outcome is Outcome.WON else None,
        responsible_key=user_key(item.get("assignedById")), deal_key=key("deal", deal_id) if deal_id else None,
        modified_at=parse_dt(item.get("updatedTime")), text=str(item.get("comments") or ""),
        fields={f: first_value(item.get(f)) for f in fields if f in item},
    )


# ---------------------------------------------------------------- tasks


def binding_keys(bindings: Any) -> tuple[str, ...]:
    """``["CO_12", "C_5", "D_7", "L_3"]`` -> company/contact/deal keys (leads, SPAs dropped)."""
    if isinstance(bindings, str):
        bindings = [bindings]
    if empty(bindings) or not isinstance(bindings, (list, tuple)):  # "no bindings" comes as false/""/[]
        return ()
    out: list[str] = []
    for b in bindings:
        prefix, _, sid = str(b).partition("_")
        kind = BINDING_PREFIXES.get(prefix.upper())
        i = to_int(sid)
        if kind and i and key(kind, i) not in out:
            out.append(key(kind, i))
    return tuple(out)


def task_bindings(row: Mapping[str, Any]) -> tuple[str, ...]:
    return binding_keys(_get(row, "ufCrmTask", "UF_CRM_TASK"))


def task(row: Mapping[str, Any]) -> Task:
    tid = str(_get(row, "id", "ID"))
    status = str(_get(row, "status", "STATUS", "realStatus", "REAL_STATUS") or "")
    return Task(
        key=key("task", tid), system=SYSTEM, source_id=tid, title=str(_get(row, "title", "TITLE") or "").strip(),
        responsible_key=user_key(_get(row, "responsibleId", "RESPONSIBLE_ID")), owner_keys=task_bindings(row),
        deadline=parse_dt(_get(row, "deadline", "DEADLINE")), completed=status == TASK_DONE,
        created_at=parse_dt(_get(row, "createdDate", "CREATED_DATE")),
        closed_at=parse_dt(_get(row, "closedDate", "CLOSED_DATE")),
        changed_at=parse_dt(_get(row, "changedDate", "CHANGED_DATE")),
        description=str(_get(row, "description", "DESCRIPTION") or ""),
    )


def binding_of(entity_key: str) -> str:
    """``bitrix24:company:12`` -> ``CO_12``, ``bitrix24:invoice:17`` -> ``SI_17`` (``UF_CRM_TASK``)."""
    kind, sid = entity_parts(entity_key)
    return f"{KIND_PREFIX[kind]}_{sid}"


def entity_parts(entity_key: str) -> tuple[str, str]:
    """Split a bitrix24 company/contact/deal/invoice key into (kind, id)."""
    parts = str(entity_key).split(":", 2)
    if len(parts) != 3 or parts[0] != SYSTEM or parts[1] not in KIND_PREFIX or not parts[2].isdigit():
        raise ValueError(f"not a bitrix24 company/contact/deal/invoice key: {entity_key}")
    return parts[1], parts[2]
