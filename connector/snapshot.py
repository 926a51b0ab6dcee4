"""A read-only view of the store shaped for rules: one row per client with its evidence.

Contact evidence is gathered in a handful of set-based queries (not per client): activities,
completed tasks, new deals and invoices bound to the client, its contacts or its deals; 1C
documents of linked counterparties; answered PBX calls from any of its phone numbers. Rules then
read plain Python objects and stay pure.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from connector.config import Settings
from connector.matching import primary_system
from connector.store import (
    Store,
    activities,
    calls,
    client_phones,
    clients,
    deal_clients,
    deals,
    debts,
    documents,
    invoices,
    journal,
    links,
    managers,
    payments,
    task_owners,
    tasks,
)

MARKER_PREFIX = "[cn-"  # the planner writes "[<PlannedAction.marker>]" into every remote text


@dataclass
class ManagerView:
    key: str
    name: str
    email: str | None
    active: bool


@dataclass
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
    contact: dict[str, datetime] = field(default_factory=dict)  # kind -> latest contact
    future_task: bool = False
    pbx_call_at: datetime | None = None  # latest answered PBX call with talk time (already in contact["call"])
    crm_contact_at: datetime | None = None  # latest contact of any kind that is not a PBX call
    purchases: list[tuple[datetime, float, str]] = field(default_factory=list)  # (when, amount, what)
    deal_keys: list[str] = field(default_factory=list)  # open deals
    contact_keys: list[str] = field(default_factory=list)  # the company's contacts

    def last_contact(self, kinds: list[str] | None = None) -> tuple[datetime | None, str | None]:
        best: tuple[datetime | None, str | None] = (None, None)
        for kind, at in self.contact.items():
            if kinds is not None and kind not in kinds:
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


@dataclass
class JournalEntry:
    key: str
    rule: str
    subject: str
    episode: str
    state: str
    type: str
    created_at: datetime | None
    done_at: datetime | None
    payload: dict | None = None
    client_key: str | None = None


@dataclass
class Snapshot:
    now: datetime
    primary: str
    clients: dict[str, ClientView]
    managers: dict[str, ManagerView]
    invoices: list[InvoiceView]
    debts: list[DebtView]
    calls: list[CallView]
    journal: dict[str, list[JournalEntry]]  # episode -> entries
    journal_by_rule: dict[str, list[JournalEntry]]
    messages_by_client: dict[str, list[JournalEntry]]  # client messages (sms, email) for per-client caps
    load: dict[str, int]  # manager key -> clients owned

    def manager(self, key: str | None) -> ManagerView | None:
        return self.managers.get(key) if key else None


def load_snapshot(settings: Settings, store: Store, now: datetime, *, call_lookback_hours: int = 48) -> Snapshot:
    primary = primary_system(settings)
    with store.tx() as conn:
        mgrs = {
            r.key: ManagerView(r.key, r.name or r.key, r.email, bool(r.active))
            for r in conn.execute(select(managers.c.key, managers.c.name, managers.c.email, managers.c.active).where(managers.c.deleted.is_(False)))
        }
        cl: dict[str, ClientView] = {}
        for r in conn.execute(select(clients).where(clients.c.system == primary, clients.c.deleted.is_(False))):
            cl[r.key] = ClientView(
                key=r.key, system=r.system, kind=r.kind, title=r.title or r.key, responsible_key=r.responsible_key,
                company_key=r.company_key, first_name=r.first_name, segment=r.segment, tax_id=r.tax_id,
                emails=list(r.emails or []), fields=dict(r.fields or {}), birthday=r.birthday, created_at=r.created_at,
            )
        for phone, key in conn.execute(select(client_phones.c.phone, client_phones.c.client_key)):
            if key in cl:
                cl[key].phones.append(phone)

        # owner -> clients it counts for
        owner: dict[str, set[str]] = defaultdict(set)
        for k, c in cl.items():
            owner[k].add(k)
            if c.company_key and c.company_key in cl:
                owner[k].add(c.company_key)
                cl[c.company_key].contact_keys.append(k)
        for dk, ck, outcome in conn.execute(
            select(deal_clients.c.deal_key, deal_clients.c.client_key, deals.c.outcome).join(deals, deals.c.key == deal_clients.c.deal_key).where(deals.c.deleted.is_(False))
        ):
            for target in owner.get(ck, ()):
                owner[dk].add(target)
            if ck in cl and outcome == "open":
                cl[ck].deal_keys.append(dk)
        for fk, ck in conn.execute(select(links.c.foreign_key, links.c.client_key).where(links.c.client_key.is_not(None))):
            for target in owner.get(ck, ()):
                owner[fk].add(target)

        def bump(keys: set[str] | None, kind: str, at: datetime | None, pbx: bool = False) -> None:
            if at is None or not keys or at > now:
                return
            for k in keys:
                cur = cl[k].contact.get(kind)
                if cur is None or at > cur:
                    cl[k].contact[kind] = at
                if not pbx and (cl[k].crm_contact_at is None or at > cl[k].crm_contact_at):
                    cl[k].crm_contact_at = at

        # 1) activities: latest completed per owner and kind, aggregated in SQL
        q = (
            select(activities.c.owner_key, activities.c.kind, func.max(activities.c.happened_at))
            .where(activities.c.completed.is_(True), activities.c.deleted.is_(False))
            .group_by(activities.c.owner_key, activities.c.kind)
        )
        for owner_key, kind, at in conn.execute(q):
            bump(owner.get(owner_key), kind, _aware(at))
        # planned (not completed) activities with a future deadline keep a client
        for (owner_key,) in conn.execute(
            select(activities.c.owner_key).where(activities.c.completed.is_(False), activities.c.deleted.is_(False), activities.c.deadline > now).distinct()
        ):
            for k in owner.get(owner_key, ()):
                cl[k].future_task = True
        # 2) tasks: completed ones are contact; open future ones (not ours) keep a client
        for owner_key, completed, closed_at, deadline, desc in conn.execute(
            select(task_owners.c.owner_key, tasks.c.completed, tasks.c.closed_at, tasks.c.deadline, tasks.c.description)
            .join(tasks, tasks.c.key == task_owners.c.task_key).where(tasks.c.deleted.is_(False))
        ):
            targets = owner.get(owner_key)
            if not targets:
                continue
            ours = MARKER_PREFIX in (desc or "")
            if completed and not ours:  # closing the connector's own reminder is not contact
                bump(targets, "task", closed_at)
            elif not completed and not ours and deadline is not None and deadline > now:
                for k in targets:
                    cl[k].future_task = True
        # 3) new deals, won deals (purchases)
        for dk, created_at, closed_at, modified_at, outcome, amount in conn.execute(
            select(deals.c.key, deals.c.created_at, deals.c.closed_at, deals.c.modified_at, deals.c.outcome, deals.c.amount).where(deals.c.deleted.is_(False))
        ):
            targets = owner.get(dk)
            bump(targets, "deal", created_at)
            if outcome == "won" and targets:
                when = closed_at or modified_at
                if when and when <= now:
                    for k in targets:
                        if cl[k].kind == "company" or cl[k].company_key is None:
                            cl[k].purchases.append((when, amount or 0.0, "deal"))
        # 4) invoices: new invoice is contact; paid invoices not tied to a deal are purchases
        inv_views: list[InvoiceView] = []
        paid_by_payments: dict[str, float] = defaultdict(float)
        for ik, amount in conn.execute(select(payments.c.invoice_key, payments.c.amount).where(payments.c.deleted.is_(False), payments.c.invoice_key.is_not(None))):
            paid_by_payments[ik] += amount or 0
        for r in conn.execute(select(invoices).where(invoices.c.deleted.is_(False))):
            targets = owner.get(r.client_key or "")
            bump(targets, "invoice", r.issued_at)
            paid = r.outcome == "won" or (r.amount and paid_by_payments.get(r.key, 0) >= r.amount - 0.005)
            paid_when = r.paid_at or r.modified_at or r.issued_at
            if paid and not r.deal_key and targets and paid_when and paid_when <= now:
                for k in targets:
                    cl[k].purchases.append((paid_when, r.amount or 0.0, "invoice"))
            if r.outcome != "lost":
                primary_client = next(iter(targets)) if targets and len(targets) == 1 else (r.client_key if r.client_key in cl else None)
                inv_views.append(InvoiceView(r.key, r.system, r.title or r.number or r.key, r.number or "", primary_client, r.amount or 0.0,
                                             r.currency or "", r.due_date, r.issued_at, r.responsible_key, bool(paid)))
        # 5) 1C documents: contact, sales (and paid orders) are purchases, invoices feed unpaid
        doc_paid: dict[str, float] = defaultdict(float)
        doc_rows = conn.execute(select(documents).where(documents.c.deleted.is_(False), documents.c.posted.is_(True))).all()
        for r in doc_rows:
            if r.doc_type == "payment" and r.basis_key:
                doc_paid[r.basis_key] += r.amount or 0
        for r in doc_rows:
            targets = owner.get(r.client_key or "")
            bump(targets, "document", r.date)
            if not targets:
                continue
            if r.date and r.date <= now and (r.doc_type == "sale" or (r.doc_type == "order" and (r.paid or doc_paid.get(r.key, 0) >= (r.amount or 0) > 0))):
                for k in targets:
                    cl[k].purchases.append((r.date, r.amount or 0.0, "1c " + r.doc_type))
            if r.doc_type == "invoice":
                paid = bool(r.paid) or doc_paid.get(r.key, 0) >= (r.amount or 0) - 0.005
                inv_views.append(InvoiceView(r.key, r.system, f"Invoice {r.number}".strip(), r.number or "", next(iter(targets)),
                                             r.amount or 0.0, r.currency or "", r.due_date or (r.date.date() if r.date else None),
                                             r.date, r.responsible_key, paid))
        # 6) calls: answered with talk time count as contact for the clients owning the number
        by_phone: dict[str, set[str]] = defaultdict(set)
        for phone, key in conn.execute(select(client_phones.c.phone, client_phones.c.client_key)):
            for target in owner.get(key, ()):
                by_phone[phone].add(target)
        for phone, at in conn.execute(
            select(calls.c.phone_e164, func.max(calls.c.started_at)).where(calls.c.answered.is_(True), calls.c.talk_s > 0, calls.c.deleted.is_(False), calls.c.phone_e164.is_not(None)).group_by(calls.c.phone_e164)
        ):
            at = _aware(at)
            bump(by_phone.get(phone), "call", at, pbx=True)
            for k in by_phone.get(phone, ()):
                if at <= now and (cl[k].pbx_call_at is None or at > cl[k].pbx_call_at):
                    cl[k].pbx_call_at = at
        recent = []
        since = now - timedelta(hours=call_lookback_hours)
        for r in conn.execute(select(calls).where(calls.c.started_at >= since, calls.c.deleted.is_(False)).order_by(calls.c.started_at)):
            targets = by_phone.get(r.phone_e164 or "", set())
            recent.append(CallView(r.key, r.phone_e164, r.phone or "", r.direction, r.started_at, bool(r.answered), r.talk_s or 0,
                                   r.wait_s or 0, bool(r.final), sorted(targets)[0] if len(targets) == 1 else (sorted(targets)[0] if targets else None)))
        # 7) receivables, mapped onto primary clients
        dv = []
        for r in conn.execute(select(debts).where(debts.c.deleted.is_(False))):
            targets = owner.get(r.client_key or "")
            dv.append(DebtView(r.key, next(iter(targets)) if targets else None, r.client_key, r.amount or 0.0, r.currency or "",
                               r.overdue_amount, r.overdue_since, list(r.documents or [])))
        # 8) the journal, grouped by episode
        jr: dict[str, list[JournalEntry]] = defaultdict(list)
        jbr: dict[str, list[JournalEntry]] = defaultdict(list)
        msgs: dict[str, list[JournalEntry]] = defaultdict(list)
        for r in conn.execute(select(journal.c.key, journal.c.rule, journal.c.subject_key, journal.c.episode, journal.c.state,
                                     journal.c.type, journal.c.created_at, journal.c.done_at, journal.c.payload, journal.c.client_key)):
            e = JournalEntry(r.key, r.rule, r.subject_key, r.episode, r.state, r.type, r.created_at, r.done_at, r.payload, r.client_key)
            jr[r.episode].append(e)
            jbr[r.rule].append(e)
            if r.client_key and (r.type in ("sms", "email") or (r.payload or {}).get("sms")):
                msgs[r.client_key].append(e)
    load: dict[str, int] = defaultdict(int)
    for c in cl.values():
        if c.responsible_key:
            load[c.responsible_key] += 1
    for c in cl.values():
        c.purchases.sort()
    return Snapshot(now, primary, cl, mgrs, inv_views, dv, recent, dict(jr), dict(jbr), dict(msgs), dict(load))


def _aware(v: Any) -> datetime | None:
    """Raw SQL aggregates bypass the column type: parse and mark as UTC."""

    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v
