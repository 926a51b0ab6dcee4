"""The source-agnostic domain every adapter maps into and every rule reads.

A record's ``key`` is ``<system>:<kind>:<source id>`` (``bitrix24:company:12``,
``onec:counterparty:<guid>``, ``binotel:call:4683310794``): globally unique, stable, and enough
to route a write-back to the system that owns the record. Datetimes are timezone-aware (UTC or
with the source's offset); a naive datetime never enters the domain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any


def make_key(system: str, kind: str, source_id: object) -> str:
    """Build a record key; the one place that knows the format."""
    return f"{system}:{kind}:{source_id}"


MARKER = re.compile(r"\bcn-[0-9a-f]{12}\b")


def find_marker(*texts: str | None) -> str | None:
    """The connector's marker (``cn-`` + 12 hex) in a remote text: proof the record is its own."""
    for t in texts:
        if t:
            m = MARKER.search(t)
            if m:
                return m.group(0)
    return None


def split_key(key: str) -> tuple[str, str, str]:
    """Inverse of :func:`make_key` (source ids may contain ``:``, system and kind may not)."""
    system, kind, source_id = key.split(":", 2)
    return system, kind, source_id


class ClientKind(StrEnum):
    COMPANY = "company"
    CONTACT = "contact"


class Outcome(StrEnum):
    """Semantics of a deal or invoice stage (Bitrix24 P/S/F, 1C posted/paid)."""

    OPEN = "open"
    WON = "won"
    LOST = "lost"


class ActivityKind(StrEnum):
    CALL = "call"
    EMAIL = "email"
    MEETING = "meeting"
    TASK = "task"
    COMMENT = "comment"
    DOCUMENT = "document"  # a 1C document (order, sale, payment)
    DEAL = "deal"  # a new deal
    INVOICE = "invoice"  # a new invoice
    OTHER = "other"


class DocumentType(StrEnum):
    ORDER = "order"
    INVOICE = "invoice"
    SALE = "sale"
    PAYMENT = "payment"


@dataclass(slots=True)
class Manager:
    key: str
    system: str
    source_id: str
    name: str
    active: bool = True
    email: str | None = None
    departments: tuple[str, ...] = ()
    phone: str | None = None
    extension: str | None = None  # PBX internal number, when known


@dataclass(slots=True)
class Client:
    key: str
    system: str
    source_id: str
    kind: ClientKind
    title: str
    responsible_key: str | None = None
    company_key: str | None = None  # for a contact: the company it belongs to
    first_name: str | None = None  # for greetings: "Dear <first_name>"
    phones: tuple[str, ...] = ()  # as the source spells them; matching normalises
    emails: tuple[str, ...] = ()
    birthday: date | None = None
    tax_id: str | None = None  # EDRPOU / INN, digits only
    guid: str | None = None  # 1C Ref_Key stored on the CRM side, or the 1C record's own
    segment: str | None = None  # COMPANY_TYPE / TYPE_ID / 1C type
    fields: dict[str, Any] = field(default_factory=dict)  # configured custom fields (UF_*)
    created_at: datetime | None = None
    modified_at: datetime | None = None


@dataclass(slots=True)
class Deal:
    key: str
    system: str
    source_id: str
    title: str
    client_keys: tuple[str, ...] = ()  # company and/or contact keys
    stage_id: str = ""
    outcome: Outcome = Outcome.OPEN
    amount: float = 0.0
    currency: str = ""
    responsible_key: str | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None
    modified_at: datetime | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # custom fields a rule reads (a regular deal's period)


@dataclass(slots=True)
class Invoice:
    key: str
    system: str
    source_id: str
    title: str
    client_key: str | None = None
    number: str = ""
    amount: float = 0.0
    currency: str = ""
    stage_id: str = ""
    outcome: Outcome = Outcome.OPEN  # WON = paid
    issued_at: datetime | None = None
    due_date: date | None = None
    paid_at: datetime | None = None
    responsible_key: str | None = None
    deal_key: str | None = None
    modified_at: datetime | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # invoice fields a rule reads (the 1C number, the 1C GUID)
    text: str = ""  # the comments, where the connector's marker sits on an invoice it issued; not stored


@dataclass(slots=True)
class ProductLine:
    """One line of what was sold: a deal's product row (Bitrix24) or a row of a 1C document's goods."""

    line_no: int
    product_id: str = ""  # Bitrix24 catalog product id, or the 1C Номенклатура Ref_Key
    article: str = ""  # 1C Артикул (Bitrix24 rows carry none)
    name: str = ""
    group: str = ""  # the product's group (1C: its parent folder)
    quantity: float = 0.0
    amount: float = 0.0  # the line's total in the document's currency


@dataclass(slots=True)
class ProductLines:
    """Every product line of one deal or document, complete: the store replaces what it held for
    ``key`` (the deal's or document's own key) with ``lines``; an empty tuple means it has none now."""

    key: str
    system: str
    lines: tuple[ProductLine, ...] = ()


@dataclass(slots=True)
class Payment:
    key: str
    system: str
    source_id: str
    client_key: str | None
    amount: float
    paid_at: datetime
    currency: str = ""
    invoice_key: str | None = None  # the invoice or order it pays, when the source says so


@dataclass(slots=True)
class Activity:
    """Anything that may show the manager worked with a client."""

    key: str
    system: str
    source_id: str
    kind: ActivityKind
    owner_keys: tuple[str, ...]  # bound clients, contacts or deals
    completed: bool
    happened_at: datetime | None  # when it took place (completion/end time for done ones)
    deadline: datetime | None = None
    responsible_key: str | None = None
    direction: str | None = None  # "in" | "out"
    subject: str = ""
    duration_s: int | None = None
    text: str = ""  # the whole text where it may carry the connector's marker (a comment); not stored
    ref_key: str | None = None  # the record this activity mirrors (a CRM task activity -> its task)


@dataclass(slots=True)
class Task:
    key: str
    system: str
    source_id: str
    title: str
    responsible_key: str | None
    owner_keys: tuple[str, ...] = ()
    deadline: datetime | None = None
    completed: bool = False
    created_at: datetime | None = None
    closed_at: datetime | None = None
    changed_at: datetime | None = None
    description: str = ""


@dataclass(slots=True)
class Document:
    """A 1C document: customer order, invoice for payment, sale (shipment) or incoming payment."""

    key: str
    system: str
    source_id: str
    doc_type: DocumentType
    date: datetime
    client_key: str | None
    number: str = ""
    amount: float = 0.0
    currency: str = ""
    posted: bool = True
    deleted: bool = False
    responsible_key: str | None = None
    basis_key: str | None = None  # for a payment: the order/invoice it pays
    due_date: date | None = None
    paid: bool | None = None  # for invoices/orders when the source says so
    status: str | None = None  # a 1C order's own status (``Статус``), when the configuration keeps one


@dataclass(slots=True)
class Debt:
    """A receivable balance of one client as of ``as_of`` (point in time, recomputed each sync)."""

    key: str
    system: str
    client_key: str
    amount: float
    currency: str
    as_of: datetime
    overdue_amount: float | None = None
    overdue_since: date | None = None
    # the shipments the balance is made of, oldest first: {number, date, amount, unpaid, due} (ISO dates)
    documents: tuple[dict, ...] = ()


@dataclass(slots=True)
class Call:
    """A PBX call. ``phone`` is the external party as the PBX spelled it."""

    key: str
    system: str
    source_id: str
    direction: str  # "in" | "out"
    phone: str
    started_at: datetime
    wait_s: int = 0
    talk_s: int = 0
    disposition: str = ""
    answered: bool = False
    internal_number: str = ""
    manager_key: str | None = None
    final: bool = True  # False while the PBX still reports it ONLINE / undecided


Record = Manager | Client | Deal | Invoice | Payment | Activity | Task | Document | Debt | Call | ProductLines


@dataclass(slots=True)
class Sweep:
    """The complete set of live source ids of one kind: anything else of that kind was deleted."""

    system: str
    kind: str
    live_ids: set[str]


@dataclass(slots=True)
class Batch:
    """What a source yields: records, deletions and the cursor that covers them.

    The store writes the records, deletions and cursor in one transaction, so a cursor is never
    ahead of the data it covers.
    """

    stream: str
    records: list[Record] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    cursor: str | None = None
    sweep: Sweep | None = None
    total_hint: int | None = None  # rows expected in the whole stream (progress bars)
