"""A read-only view of the store for one evaluation, shaped for rules.

Rules ask set-based questions (:mod:`connector.evidence`: which clients qualify) and get Python
objects only for the candidates: :meth:`Snapshot.clients` loads a client with its phones, its
latest contact of each kind, purchases, open deals and contacts in a few chunked queries. The
journal is read by index (rule and subject, episode), never scanned whole. Everything is read
in one transaction, so a concurrent sync cannot tear the view.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Text, func, select, type_coerce

from connector.config import Settings, Where
from connector.domain import make_key
from connector.evidence import Evidence, aware
from connector.i18n import _
from connector.matching import primary_system
from connector.store import (
    Store,
    calls,
    client_phones,
    clients,
    deal_clients,
    deals,
    debts,
    documents,
    episodes,
    invoices,
    journal,
    links,
    managers,
    payments,
    tasks,
)

MARKER_PREFIX = "[cn-"  # the planner writes "[<PlannedAction.marker>]" into every remote text


@dataclass
class ManagerView:
    key: str
    name: str
    email: str | None
    active: bool


@dataclass(slots=True)  # tens of thousands per plan: smaller and faster to make
class ClientView:
    key: str
    system: str
    kind: str
    title: str
    responsible_key: str | None
    company_key: str | None = None
    first_name: str | None = None
    segment: str | None = None
    tax_id: str | None = None
    phones: list[str] = field(default_factory=list)  # E.164
    emails: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    birthday: date | None = None
    created_at: datetime | None = None
    _contact: dict[str, datetime] = field(default_factory=dict, repr=False)  # kind -> latest contact (see ``contact``)
    future_task: bool = False
    purchases: list[tuple[datetime, float, str]] = field(default_factory=list)  # (when, amount, what)
    deal_keys: list[str] = field(default_factory=list)  # open deals
    contact_keys: list[str] = field(default_factory=list)  # the company's contacts
    # fills ``contact`` of this client and of every client loaded with it, on the first read: a rule
    # that never asks about contact (lost, unpaid) does not read the contacts of thousands of candidates
    contact_loader: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def contact(self) -> dict[str, datetime]:
        """Kind -> the latest contact of that kind."""
        if self.contact_loader is not None:
            self.contact_loader()
        return self._contact

    def last_contact(self, kinds: Iterable[str] | None = None) -> tuple[datetime | None, str | None]:
        best: tuple[datetime | None, str | None] = (None, None)
        wanted = set(kinds) if kinds is not None else None
        for kind, at in self.contact.items():
            if wanted is not None and kind not in wanted:
                continue
            if best[0] is None or at > best[0]:
                best = (at, kind)
        return best


@dataclass
class InvoiceView:
    key: str
    system: str
    title: str
    number: str
    client_key: str | None
    amount: float
    currency: str
    due_date: date | None
    issued_at: datetime | None
    responsible_key: str | None
    paid: bool


@dataclass
class DebtView:
    key: str
    client_key: str | None  # primary client
    foreign_key: str
    amount: float
    currency: str
    overdue_amount: float | None
    overdue_since: date | None
    documents: list[dict] = field(default_factory=list)  # oldest first: number, date, amount, unpaid, due


@dataclass
class CrmInvoiceView:
    """A Bitrix24 smart invoice as the 1C sync sees it: any outcome, its stage, deal and read fields."""

    key: str
    title: str
    number: str
    client_key: str | None  # the invoice's own client
    clients: set[str]  # the primary clients it counts for (its client, and a contact's company)
    amount: float
    currency: str
    stage_id: str
    outcome: str  # open | won | lost
    issued_at: datetime | None
    deal_key: str | None
    responsible_key: str | None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class DocView:
    """A 1C document with the primary clients its counterparty is linked to."""

    key: str
    doc_type: str
    number: str
    date: datetime
    amount: float
    currency: str
    posted: bool
    paid: bool | None
    basis_key: str | None
    status: str | None
    owner_key: str | None  # the 1C counterparty
    client_key: str | None  # the client the counterparty is linked to (itself when 1C is the CRM)
    clients: set[str] = field(default_factory=set)  # every primary client it counts for


@dataclass
class DealView:
    key: str
    title: str
    stage_id: str
    outcome: str
    amount: float
    currency: str
    modified_at: datetime | None
    closed_at: datetime | None
    client_keys: list[str] = field(default_factory=list)  # its company and contact


@dataclass
class CounterpartyView:
    """A 1C counterparty no CRM client is linked to (``onec.create_missing``)."""

    key: str
    title: str
    guid: str
    tax_id: str | None
    phones: list[str]
    emails: list[str]
    responsible_key: str | None  # a 1C user


@dataclass
class CallView:
    key: str
    phone: str | None  # E.164
    raw_phone: str
    direction: str
    started_at: datetime
    answered: bool
    talk_s: int
    wait_s: int
    final: bool
    client_key: str | None


@dataclass(slots=True)
class JournalEntry:
    key: str
    rule: str
    subject: str
    episode: str
    state: str
    type: str
    created_at: datetime | None
    done_at: datetime | None
    stored_payload: str | dict | None = None  # the JSON text as stored, decoded when first read
    client_key: str | None = None
    remote_key: str | None = None

    @property
    def payload(self) -> dict | None:
        """The action's payload; most entries a plan reads are only counted, never opened."""
        if isinstance(self.stored_payload, str):
            self.stored_payload = json.loads(self.stored_payload)
        return self.stored_payload


@dataclass
class EpisodeView:
    episode: str
    rule: str
    subject_key: str
    client_key: str | None
    opened_at: datetime | None
    stored_data: str | dict | None = None  # JSON text as stored, decoded when first read

    @property
    def data(self) -> dict:
        if not isinstance(self.stored_data, dict):
            self.stored_data = json.loads(self.stored_data) if self.stored_data else {}
        return self.stored_data


class Snapshot:
    """One evaluation's view of the store; close it (or use ``with``) to end its read transaction."""

    def __init__(self, settings: Settings, store: Store, now: datetime, *, call_lookback_hours: int = 48):
        self.settings = settings
        self.store = store
        self.now = now
        self.primary = primary_system(settings)
        self.call_lookback_hours = call_lookback_hours
        self.conn = store.engine.connect()
        self._tx = self.conn.begin()
        self.ev = Evidence(self.conn, self.primary, now)
        self.managers: dict[str, ManagerView] = {
            r.key: ManagerView(r.key, r.name or r.key, r.email, bool(r.active))
            for r in self.conn.execute(select(managers.c.key, managers.c.name, managers.c.email, managers.c.active)
                                       .where(managers.c.deleted.is_(False)))
        }
        self._clients: dict[str, ClientView | None] = {}
        self._entries: dict[str, list[JournalEntry]] = {}  # journal entries per episode read so far
        self._open: dict[str, list[EpisodeView]] = {}  # open episodes per rule
        self._load: dict[str, int] | None = None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self._tx.rollback()
            finally:
                self.conn.close()
                self.conn = None  # type: ignore[assignment]

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close must not keep a SQLite read lock forever
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

    # ------------------------------------------------------------------ people

    def manager(self, key: str | None) -> ManagerView | None:
        return self.managers.get(key) if key else None

    @property
    def load(self) -> dict[str, int]:
        """Clients owned per manager (least-loaded release)."""
        if self._load is None:
            q = (select(clients.c.responsible_key, func.count()).where(clients.c.system == self.primary, clients.c.deleted.is_(False))
                 .group_by(clients.c.responsible_key))
            self._load = {k: n for k, n in self.conn.execute(q) if k}
        return self._load

    # ------------------------------------------------------------------ clients

    def person_key(self, ident: int | str) -> str:
        """A user id from the config as a manager key of the primary CRM."""
        text = str(ident)
        return text if text.count(":") >= 2 else make_key(self.primary, "user", text)

    def scope(self, where: Where | None, kind: str | None = None) -> list[Any]:
        """SQL conditions on ``clients`` for a rule's scope (the primary CRM's live clients)."""
        person_key = Snapshot.person_key
        conds: list[Any] = [clients.c.system == self.primary, clients.c.deleted.is_(False)]
        if kind:
            conds.append(clients.c.kind == kind)
        if where is None:
            return conds
        if where.segment is not None:
            conds.append(func.coalesce(clients.c.segment, "").in_(where.segment))
        if where.responsible is not None:
            conds.append(clients.c.responsible_key.in_([person_key(self, r) for r in where.responsible]))
        if where.not_responsible is not None:
            keys = [person_key(self, r) for r in where.not_responsible]
            conds.append(func.coalesce(clients.c.responsible_key, "").not_in(keys))
        for name, wanted in (where.field or {}).items():
            values = [str(v) for v in (wanted if isinstance(wanted, list) else [wanted])]
            conds.append(self._json_text(clients.c.fields, name).in_(values))
        if where.rfm is not None:
            conds.append(clients.c.key.in_(self.rfm_clients(where.rfm)))
        return conds

    def rfm_segment(self, key: str) -> str | None:
        """The segment the config's rfm rule gives ``key`` in this evaluation (None: not in its scope)."""
        from connector.rules import rfm

        return rfm.segments_of(self).get(key)

    def rfm_clients(self, segments: list[str]) -> Any:
        """SQL ``select`` of the clients the rfm rule puts in ``segments`` in this evaluation."""
        from connector.rules import rfm

        return rfm.segment_select(self, segments)

    def _json_text(self, col: Any, name: str) -> Any:
        if self.conn.dialect.name == "postgresql":
            return func.cast(col, _jsonb()).op("->>")(name)
        return func.cast(func.json_extract(col, f'$."{name}"'), _text())

    def scope_count(self, where: Where | None, kind: str | None = None) -> int:
        return self.conn.execute(select(func.count()).select_from(clients).where(*self.scope(where, kind))).scalar_one()

    def client(self, key: str | None) -> ClientView | None:
        if not key:
            return None
        if key not in self._clients:
            self.clients([key])
        return self._clients.get(key)

    def clients(self, keys: Iterable[str], *, purchases: bool = False) -> dict[str, ClientView]:
        """Load clients (primary CRM, live) with their evidence; cached for the snapshot's life."""
        want = [k for k in dict.fromkeys(keys) if k and (k not in self._clients or (purchases and not self._has_purchases(k)))]
        fresh = [k for k in want if k not in self._clients]
        if fresh:
            self._load_clients(fresh)
        if purchases:
            need = [k for k in want if self._clients.get(k) is not None]
            found = self.ev.purchases(need)
            for k in need:
                c = self._clients[k]
                assert c is not None
                c.purchases = [(p.at, p.amount, p.what) for p in found.get(k, [])]
                self._with_purchases.add(k)
        return {k: c for k in keys if (c := self._clients.get(k)) is not None}

    _with_purchases: set[str]

    def _has_purchases(self, key: str) -> bool:
        return key in getattr(self, "_with_purchases", set())

    def _load_clients(self, keys: list[str]) -> None:
        if not hasattr(self, "_with_purchases"):
            self._with_purchases = set()
        loaded: dict[str, ClientView] = {}
        for within in self.ev.key_filters(keys):
            c = clients.c
            for r in self.conn.execute(select(c.key, c.system, c.kind, c.title, c.responsible_key, c.company_key, c.first_name,
                                              c.segment, c.tax_id, c.emails, c.fields, c.birthday, c.created_at)
                                       .where(within(c.key), c.system == self.primary, c.deleted.is_(False))):
                loaded[r.key] = ClientView(
                    key=r.key, system=r.system, kind=r.kind, title=r.title or r.key, responsible_key=r.responsible_key,
                    company_key=r.company_key, first_name=r.first_name, segment=r.segment, tax_id=r.tax_id,
                    emails=list(r.emails or []), fields=dict(r.fields or {}), birthday=r.birthday, created_at=r.created_at,
                )
            for phone, ck in self.conn.execute(select(client_phones.c.phone, client_phones.c.client_key)
                                               .where(within(client_phones.c.client_key))):
                if ck in loaded:
                    loaded[ck].phones.append(phone)
            for dk, ck in self.conn.execute(select(deal_clients.c.deal_key, deal_clients.c.client_key)
                                            .join(deals, deals.c.key == deal_clients.c.deal_key)
                                            .where(within(deal_clients.c.client_key), deals.c.deleted.is_(False),
                                                   deals.c.outcome == "open")
                                            .order_by(deal_clients.c.deal_key)):
                if ck in loaded:
                    loaded[ck].deal_keys.append(dk)
            for kk, co in self.conn.execute(select(clients.c.key, clients.c.company_key)
                                            .where(within(clients.c.company_key), clients.c.deleted.is_(False))
                                            .order_by(clients.c.key)):
                if co in loaded:
                    loaded[co].contact_keys.append(kk)
        present = list(loaded)

        def load_contacts() -> None:
            for view in loaded.values():
                view.contact_loader = None
            for ck, kinds in self.ev.contacts_of(present).items():
                loaded[ck]._contact = dict(kinds)

        for view in loaded.values():
            view.contact_loader = load_contacts
        for ck in self.ev.kept(present):
            loaded[ck].future_task = True
        for k in keys:
            self._clients[k] = loaded.get(k)

    # ------------------------------------------------------------------ invoices, debts, calls

    def invoices(self, *, due_before: date | None = None, keys: list[str] | None = None) -> list[InvoiceView]:
        """Open invoices (Bitrix24 smart invoices, 1C invoices for payment) with a due date, mapped
        onto primary clients; paid ones are included with ``paid=True``."""
        out: list[InvoiceView] = []
        o = self.ev.owners
        paid = (select(payments.c.invoice_key, func.sum(payments.c.amount).label("paid"))
                .where(payments.c.deleted.is_(False), payments.c.invoice_key.is_not(None)).group_by(payments.c.invoice_key).subquery())
        q = (select(invoices, paid.c.paid, o.c.client_key.label("primary_client")).outerjoin(paid, paid.c.invoice_key == invoices.c.key)
             .outerjoin(o, o.c.owner_key == invoices.c.client_key)
             .where(invoices.c.deleted.is_(False), invoices.c.outcome != "lost", invoices.c.due_date.is_not(None)))
        if due_before is not None:
            q = q.where(invoices.c.due_date <= due_before)
        if keys is not None:
            q = q.where(invoices.c.key.in_(keys))
        seen: set[str] = set()
        for r in self.conn.execute(q.order_by(invoices.c.key)):
            if r.key in seen:
                continue
            seen.add(r.key)
            is_paid = r.outcome == "won" or bool(r.amount and (r.paid or 0) >= r.amount - 0.005)
            out.append(InvoiceView(r.key, r.system, r.title or r.number or r.key, r.number or "", r.primary_client, r.amount or 0.0,
                                   r.currency or "", r.due_date, r.issued_at, r.responsible_key, is_paid))
        # 1C invoices for payment: paid when flagged or covered by posted payments; due on their date
        # when 1C names no due date
        dp = (select(documents.c.basis_key, func.sum(documents.c.amount).label("paid_sum"))
              .where(documents.c.deleted.is_(False), documents.c.posted.is_(True), documents.c.doc_type == "payment",
                     documents.c.basis_key.is_not(None)).group_by(documents.c.basis_key).subquery())
        q = (select(documents, dp.c.paid_sum, o.c.client_key.label("primary_client"))
             .outerjoin(dp, dp.c.basis_key == documents.c.key).outerjoin(o, o.c.owner_key == documents.c.client_key)
             .where(documents.c.deleted.is_(False), documents.c.posted.is_(True), documents.c.doc_type == "invoice"))
        if keys is not None:
            q = q.where(documents.c.key.in_(keys))
        for r in self.conn.execute(q.order_by(documents.c.key)):
            due_d = r.due_date or (aware(r.date).date() if r.date else None)
            if r.key in seen or (due_before is not None and (due_d is None or due_d > due_before)):
                continue
            seen.add(r.key)
            is_paid = bool(r.paid) or (r.paid_sum or 0) >= (r.amount or 0) - 0.005
            out.append(InvoiceView(r.key, r.system, _("Invoice {number}").format(number=r.number or "").strip(), r.number or "", r.primary_client, r.amount or 0.0,
                                   r.currency or "", due_d, r.date, r.responsible_key, is_paid))
        return out

    def count_invoices(self) -> int:
        """Invoices with a due date mapped onto a primary client (the unpaid rule's scope)."""
        o = self.ev.owners
        crm = (select(func.count(invoices.c.key.distinct())).join(o, o.c.owner_key == invoices.c.client_key)
               .where(invoices.c.deleted.is_(False), invoices.c.outcome != "lost", invoices.c.due_date.is_not(None)))
        onec = (select(func.count(documents.c.key.distinct())).join(o, o.c.owner_key == documents.c.client_key)
                .where(documents.c.deleted.is_(False), documents.c.posted.is_(True), documents.c.doc_type == "invoice"))
        return self.conn.execute(crm).scalar_one() + self.conn.execute(onec).scalar_one()

    def debts(self) -> list[DebtView]:
        o = self.ev.owners
        out, seen = [], set()
        for r in self.conn.execute(select(debts, o.c.client_key.label("primary_client")).outerjoin(o, o.c.owner_key == debts.c.client_key)
                                   .where(debts.c.deleted.is_(False)).order_by(debts.c.key)):
            if r.key in seen:
                continue
            seen.add(r.key)
            out.append(DebtView(r.key, r.primary_client, r.client_key, r.amount or 0.0, r.currency or "", r.overdue_amount, r.overdue_since,
                                list(r.documents or [])))
        return out

    def calls(self, since: datetime | None = None, phones: list[str] | None = None) -> list[CallView]:
        """Calls since ``since`` (default: the lookback), each with the primary client holding the number."""
        since = since or self.now - timedelta(hours=self.call_lookback_hours)
        q = select(calls).where(calls.c.started_at >= since, calls.c.started_at <= self.now, calls.c.deleted.is_(False))
        if phones is not None:
            q = q.where(calls.c.phone_e164.in_(phones))
        rows = self.conn.execute(q.order_by(calls.c.started_at, calls.c.key)).all()
        owners_of = self._phone_clients([r.phone_e164 for r in rows if r.phone_e164])
        out = []
        for r in rows:
            targets = sorted(owners_of.get(r.phone_e164 or "", ()))
            out.append(CallView(r.key, r.phone_e164, r.phone or "", r.direction, r.started_at, bool(r.answered), r.talk_s or 0,
                                r.wait_s or 0, bool(r.final), targets[0] if targets else None))
        return out

    def _phone_clients(self, phones: list[str]) -> dict[str, set[str]]:
        o = self.ev.owners
        out: dict[str, set[str]] = defaultdict(set)
        for chunk in _chunks(sorted(set(phones))):
            for phone, ck in self.conn.execute(select(client_phones.c.phone, o.c.client_key)
                                               .join(o, o.c.owner_key == client_phones.c.client_key)
                                               .where(client_phones.c.phone.in_(chunk))):
                out[phone].add(ck)
        return out

    # ------------------------------------------------------------------ 1C <-> CRM sync (invoice_sync, order_status, create_missing)

    def crm_invoices(self, *, keys: Iterable[str] | None = None, deals: Iterable[str] | None = None,
                     open_only: bool = False) -> list[CrmInvoiceView]:
        """Live Bitrix24 smart invoices (open ones, by ``keys`` or of ``deals``), each with the primary
        clients it counts for."""
        o = self.ev.owners
        base = (select(invoices, o.c.client_key.label("primary_client")).outerjoin(o, o.c.owner_key == invoices.c.client_key)
                .where(invoices.c.deleted.is_(False), invoices.c.system == "bitrix24"))
        if open_only:
            base = base.where(invoices.c.outcome == "open")
        queries = [base]
        for col, values in ((invoices.c.key, keys), (invoices.c.deal_key, deals)):
            if values is not None:
                queries = [q.where(col.in_(chunk)) for q in queries for chunk in _chunks(list(dict.fromkeys(values)))]
        out: dict[str, CrmInvoiceView] = {}
        for q in queries:
            for r in self.conn.execute(q.order_by(invoices.c.key)):
                v = out.get(r.key)
                if v is None:
                    v = out[r.key] = CrmInvoiceView(
                        r.key, r.title or r.number or r.key, r.number or "", r.client_key, set(), r.amount or 0.0, r.currency or "",
                        r.stage_id or "", r.outcome or "open", r.issued_at, r.deal_key, r.responsible_key, dict(r.fields or {}))
                if r.primary_client:
                    v.clients.add(r.primary_client)
        return list(out.values())

    def onec_documents(self, types: Iterable[str], *, since: datetime | None = None, keys: Iterable[str] | None = None,
                       basis: Iterable[str] | None = None, clients: Iterable[str] | None = None,
                       posted_only: bool = True) -> list[DocView]:
        """Live 1C documents of ``types``, narrowed by date, keys, basis documents or primary clients."""
        o = self.ev.owners
        direct = links.c.client_key if self.primary != "onec" else documents.c.client_key
        q = (select(documents, o.c.client_key.label("primary_client"), direct.label("direct_client"))
             .outerjoin(o, o.c.owner_key == documents.c.client_key)
             .where(documents.c.deleted.is_(False), documents.c.doc_type.in_(list(types))))
        if self.primary != "onec":
            q = q.outerjoin(links, links.c.foreign_key == documents.c.client_key)
        if posted_only:
            q = q.where(documents.c.posted.is_(True))
        if since is not None:
            q = q.where(documents.c.date >= since)
        queries = [q]
        for col, values in ((documents.c.key, keys), (documents.c.basis_key, basis)):
            if values is not None:
                queries = [x.where(col.in_(chunk)) for x in queries for chunk in _chunks(list(dict.fromkeys(values)))]
        if clients is not None:
            inner = select(o.c.owner_key).where(o.c.client_key.in_(list(dict.fromkeys(clients))))
            queries = [x.where(documents.c.client_key.in_(inner)) for x in queries]
        out: dict[str, DocView] = {}
        for x in queries:
            for r in self.conn.execute(x.order_by(documents.c.date, documents.c.key)):
                v = out.get(r.key)
                if v is None:
                    v = out[r.key] = DocView(r.key, r.doc_type, r.number or "", r.date, r.amount or 0.0, r.currency or "",
                                             bool(r.posted), r.paid, r.basis_key, r.status, r.client_key, r.direct_client)
                if r.primary_client:
                    v.clients.add(r.primary_client)
        return sorted(out.values(), key=lambda d: (d.date, d.key))

    def crm_deals(self, *, keys: Iterable[str] | None = None, stages: Iterable[str] | None = None,
                  changed_since: datetime | None = None) -> list[DealView]:
        """Live deals by key, or in ``stages`` changed (or closed) since ``changed_since``, with their clients."""
        q = select(deals).where(deals.c.deleted.is_(False))
        if stages is not None:
            q = q.where(deals.c.stage_id.in_(list(stages)))
        if changed_since is not None:
            q = q.where(func.coalesce(deals.c.modified_at, deals.c.closed_at, deals.c.created_at) >= changed_since)
        queries = [q.where(deals.c.key.in_(chunk)) for chunk in _chunks(list(dict.fromkeys(keys)))] if keys is not None else [q]
        out: dict[str, DealView] = {}
        for x in queries:
            for r in self.conn.execute(x.order_by(deals.c.key)):
                out[r.key] = DealView(r.key, r.title or r.key, r.stage_id or "", r.outcome or "open", r.amount or 0.0,
                                      r.currency or "", r.modified_at, r.closed_at)
        for chunk in _chunks(list(out)):
            for dk, ck in self.conn.execute(select(deal_clients.c.deal_key, deal_clients.c.client_key)
                                            .where(deal_clients.c.deal_key.in_(chunk)).order_by(deal_clients.c.client_key)):
                out[dk].client_keys.append(ck)
        return list(out.values())

    def unmatched_counterparties(self) -> list[CounterpartyView]:
        """1C counterparties linked to no CRM client (not ambiguous ones) that have a posted document."""
        has_doc = select(documents.c.client_key).where(documents.c.deleted.is_(False), documents.c.posted.is_(True))
        q = (select(clients.c.key, clients.c.title, clients.c.source_id, clients.c.guid, clients.c.tax_id, clients.c.emails,
                    clients.c.responsible_key)
             .join(links, links.c.foreign_key == clients.c.key)
             .where(clients.c.system == "onec", clients.c.deleted.is_(False), links.c.method == "unmatched",
                    clients.c.key.in_(has_doc)).order_by(clients.c.key))
        out = {r.key: CounterpartyView(r.key, r.title or r.source_id, (r.guid or r.source_id).lower(), r.tax_id, [],
                                       list(r.emails or []), r.responsible_key) for r in self.conn.execute(q)}
        for chunk in _chunks(list(out)):
            for phone, ck in self.conn.execute(select(client_phones.c.phone, client_phones.c.client_key)
                                               .where(client_phones.c.client_key.in_(chunk)).order_by(client_phones.c.phone)):
                out[ck].phones.append(phone)
        return list(out.values())

    def count_crm_invoices(self) -> int:
        """Live Bitrix24 invoices of any outcome that belong to a client (the invoice_sync rule's scope)."""
        return self.conn.execute(select(func.count()).select_from(invoices)
                                 .where(invoices.c.deleted.is_(False), invoices.c.system == "bitrix24",
                                        invoices.c.client_key.is_not(None))).scalar_one()

    def count_counterparties(self) -> int:
        return self.conn.execute(select(func.count()).select_from(clients)
                                 .where(clients.c.system == "onec", clients.c.deleted.is_(False))).scalar_one()

    def linked_client(self, foreign_key: str) -> str | None:
        """The CRM client a 1C counterparty is linked to, if any."""
        return self.conn.execute(select(links.c.client_key).where(links.c.foreign_key == foreign_key)).scalar()

    # ------------------------------------------------------------------ the journal and episodes

    def journal_for(self, rule: str, subjects: Iterable[str] | None = None) -> dict[str, list[JournalEntry]]:
        """A rule's journal entries by subject (all of the rule's when ``subjects`` is None)."""
        out: dict[str, list[JournalEntry]] = defaultdict(list)
        base = select(*_JCOLS).where(journal.c.rule == rule)
        filters = [None] if subjects is None else self.ev.key_filters(list(dict.fromkeys(subjects)))
        for within in filters:
            q = base if within is None else base.where(within(journal.c.subject_key))
            for r in self.conn.execute(q).all():
                out[r.subject_key].append(_je(r))
        return out

    def episode_entries(self, episodes_: Iterable[str]) -> dict[str, list[JournalEntry]]:
        """Journal entries per episode; an episode is read once per snapshot (the planner and the release
        rule both ask for the forgotten episodes; the journal does not change within one read)."""
        wanted = list(dict.fromkeys(episodes_))
        cache = self._entries
        missing = [e for e in wanted if e not in cache]
        if missing:
            for e in missing:
                cache[e] = []
            for within in self.ev.key_filters(missing):  # thousands: one join, not IN lists of 500
                for r in self.conn.execute(select(*_JCOLS).where(within(journal.c.episode))).all():
                    cache[r.episode].append(_je(r))
        out: dict[str, list[JournalEntry]] = defaultdict(list)
        out.update({e: list(cache[e]) for e in wanted if cache[e]})
        return out

    def family_entries(self, families: Iterable[str]) -> dict[str, list[JournalEntry]]:
        """Entries of episode families (a lost episode's call-backs ``base#0``, ``base#1``... are one family)."""
        fams = list(dict.fromkeys(families))
        out: dict[str, list[JournalEntry]] = defaultdict(list)
        by_rule_subject: dict[tuple[str, str], list[str]] = defaultdict(list)
        for f in fams:
            rule, subject, _ = split_episode(f)
            by_rule_subject[(rule, subject)].append(f)
        for (rule, subject), fs in by_rule_subject.items():
            for r in self.conn.execute(select(*_JCOLS).where(journal.c.rule == rule, journal.c.subject_key == subject)):
                fam = family_of(r.episode)
                if fam in fs:
                    out[fam].append(_je(r))
        return out

    def open_episodes(self, rule: str) -> list[EpisodeView]:
        if rule not in self._open:  # read once per snapshot: the planner and the release rule both ask
            e = episodes.c
            q = (select(e.episode, e.rule, e.subject_key, e.client_key, e.opened_at, type_coerce(e.data, Text))
                 .where(e.rule == rule, e.closed_at.is_(None)).order_by(e.episode))
            self._open[rule] = [EpisodeView(*r) for r in self.conn.execute(q)]
        return list(self._open[rule])

    def pending_keys(self, rule: str) -> list[tuple[str, str]]:
        """``(key, episode)`` of the rule's actions not yet started (planned or waiting to retry)."""
        q = select(journal.c.key, journal.c.episode).where(journal.c.rule == rule, journal.c.state.in_(("planned", "retry_wait")))
        return [(k, e) for k, e in self.conn.execute(q)]

    def messages_of(self, client_keys: Iterable[str]) -> dict[str, list[JournalEntry]]:
        """Client messages (sms, e-mail, SMS by trigger) per client, for per-client caps and variant rotation."""
        out: dict[str, list[JournalEntry]] = defaultdict(list)
        for within in self.ev.key_filters(list(dict.fromkeys(client_keys))):
            for r in self.conn.execute(select(*_JCOLS).where(within(journal.c.client_key),
                                                             journal.c.type.in_(("sms", "email", "trigger")))).all():
                e = _je(r)
                if e.type in ("sms", "email") or (e.payload or {}).get("sms"):
                    out[r.client_key].append(e)
        return out

    def open_tasks(self, remote_keys: Iterable[str]) -> dict[str, dict]:
        """The connector's tasks among ``remote_keys`` still open in the synced data, with deadline."""
        out: dict[str, dict] = {}
        for chunk in _chunks([k for k in dict.fromkeys(remote_keys) if k]):
            for r in self.conn.execute(select(tasks.c.key, tasks.c.deadline, tasks.c.responsible_key)
                                       .where(tasks.c.key.in_(chunk), tasks.c.completed.is_(False), tasks.c.deleted.is_(False))):
                out[r.key] = {"deadline": r.deadline, "responsible": r.responsible_key}
        return out


_JCOLS = (journal.c.key, journal.c.rule, journal.c.subject_key, journal.c.episode, journal.c.state, journal.c.type,
          journal.c.created_at, journal.c.done_at, type_coerce(journal.c.payload, Text).label("payload"), journal.c.client_key,
          journal.c.remote_key)


def _je(r: Any) -> JournalEntry:
    return JournalEntry(r.key, r.rule, r.subject_key, r.episode, r.state, r.type, r.created_at, r.done_at, r.payload,
                        r.client_key, r.remote_key)


def split_episode(episode: str) -> tuple[str, str, str]:
    """``rule:subject:period`` (the subject is a record key and contains colons)."""
    rule, rest = episode.split(":", 1)
    subject, period = rest.rsplit(":", 1)
    return rule, subject, period


def family_of(episode: str) -> str:
    """The episode family: a lost client's call-backs (``…:2026-05-01#3``) share ``…:2026-05-01``."""
    return episode.split("#", 1)[0]


def load_snapshot(settings: Settings, store: Store, now: datetime, *, call_lookback_hours: int = 48) -> Snapshot:
    return Snapshot(settings, store, now, call_lookback_hours=call_lookback_hours)


def _chunks(items: list[str], n: int = 500) -> list[list[str]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _jsonb() -> Any:
    from sqlalchemy.dialects.postgresql import JSONB

    return JSONB()


def _text() -> Any:
    from sqlalchemy import Text

    return Text()

