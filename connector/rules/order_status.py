"""Order status: a message to the client when a 1C order or shipment, or a Bitrix24 deal, reaches a
configured state, once per document and state (the episode is the document and the state, so the
journal turns a second run into a no-op).

States and when they were reached:

- ``document: order`` — ``created`` (the posted order, on its date), ``paid`` (posted payments
  based on it, or on a 1C invoice made from it, cover it: on the date of the payment that completed
  it), ``shipped`` (a posted shipment based on it, on its date), or a value of the order's own 1C
  status (``onec.fields`` ``order.status``; 1C does not say when a status changed, so the order's
  date stands in);
- ``document: sale`` — ``shipped`` (the posted shipment, on its date; the order's number when it is
  based on one);
- ``document: deal`` — a stage id (on the deal's last change).

Only states reached within ``within_days`` count, so switching the rule on never messages old
history. Quiet hours and opt-outs apply as for every client message.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from connector.calendar import BusinessCalendar
from connector.config import OrderStatusRule
from connector.i18n import _, day, ngettext
from connector.rules.base import DONE_STATES, Evaluation, Finding, in_scope
from connector.snapshot import ClientView, DealView, DocView, EpisodeView, Snapshot
from connector.templates import Text, order_var

DERIVED = ("created", "paid", "shipped")
PENDING = {"planned", "retry_wait", "in_flight"}


def period_of(state: str) -> str:
    """An episode's period names the state; a colon would split it (deal stages are ``C1:WON``)."""
    return state.replace(":", ".")


@dataclass
class _Event:
    subject: str
    client_key: str | None
    state: str
    at: datetime
    reason: str
    order: Text


def evaluate(rule: OrderStatusRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    since = snap.now - timedelta(days=rule.within_days)
    if rule.document == "deal":
        events = _deal_events(rule, snap, cal, since)
    elif rule.document == "sale":
        events = _sale_events(snap, cal, since)
    else:
        events = _order_events(rule, snap, cal, since)
    snap.clients([e.client_key for e in events if e.client_key])
    findings, unmatched = [], 0
    for e in sorted(events, key=lambda x: (x.at, x.subject, x.state)):
        c = snap.client(e.client_key)
        if c is None:
            unmatched += 1
            continue
        if not in_scope(c, rule.where, snap) or e.at > snap.now:
            continue
        findings.append(Finding(subject_key=e.subject, client=c, period=period_of(e.state), reason=e.reason,
                                vars={"order": e.order, "days": 0}))
    notes = []
    if unmatched:
        notes.append(ngettext("{n} document reached a state, but its counterparty is linked to no client: nobody to tell.",
                              "{n} documents reached a state, but their counterparties are linked to no client: nobody to tell.",
                              unmatched).format(n=unmatched))
    return Evaluation(findings, snap.scope_count(rule.where), notes=notes)


def _vars(doc: DocView, cal: BusinessCalendar, state: str, shipment: DocView | None = None, *, key: str | None = None) -> Text:
    return order_var(key=key or doc.key, kind=doc.doc_type, number=doc.number, when=cal.local(doc.date).date(), amount=doc.amount,
                     currency=doc.currency, state=state, shipment_number=shipment.number if shipment is not None else "")


def _order_events(rule: OrderStatusRule, snap: Snapshot, cal: BusinessCalendar, since: datetime) -> list[_Event]:
    wanted = set(rule.states)
    statuses = {s.casefold(): s for s in wanted if s not in DERIVED}
    out: list[_Event] = []
    recent = snap.onec_documents(("order",), since=since) if ("created" in wanted or statuses) else []
    for o in recent:
        d = day(cal.local(o.date))
        if "created" in wanted:
            out.append(_Event(o.key, o.client_key, "created", o.date,
                              _("1C order {number} of {date} was placed.").format(number=o.number, date=d), _vars(o, cal, "created")))
        if o.status and o.status.casefold() in statuses:
            state = statuses[o.status.casefold()]
            out.append(_Event(o.key, o.client_key, state, o.date,
                              _("1C order {number} of {date} has the status {state}.").format(number=o.number, date=d, state=o.status),
                              _vars(o, cal, state)))
    if "shipped" in wanted:
        sales = [s for s in snap.onec_documents(("sale",), since=since) if s.basis_key]
        orders = {o.key: o for o in snap.onec_documents(("order",), keys=[s.basis_key for s in sales if s.basis_key])}
        first: dict[str, DocView] = {}
        for s in sales:  # the first shipment of the order tells; a second one is the same state
            if s.basis_key in orders and s.basis_key not in first:
                first[s.basis_key] = s
        for key, s in first.items():
            o = orders[key]
            out.append(_Event(o.key, o.client_key, "shipped", s.date,
                              _("1C order {number} of {date} is shipped: shipment {shipment} of {shipped}.").format(
                                  number=o.number, date=day(cal.local(o.date)), shipment=s.number, shipped=day(cal.local(s.date))),
                              _vars(o, cal, "shipped", s)))
    if "paid" in wanted:
        out.extend(_paid_events(snap, cal, since))
    return out


def _paid_events(snap: Snapshot, cal: BusinessCalendar, since: datetime) -> list[_Event]:
    """Orders whose payments (based on them or on invoices made from them) were completed since ``since``."""
    recent = [p for p in snap.onec_documents(("payment",), since=since) if p.basis_key]
    bases = {d.key: d for d in snap.onec_documents(("order", "invoice"), keys=[p.basis_key for p in recent if p.basis_key])}
    order_keys = {b.key if b.doc_type == "order" else b.basis_key for b in bases.values()} - {None}
    orders = {o.key: o for o in snap.onec_documents(("order",), keys=[k for k in order_keys if k])}
    if not orders:
        return []
    invoices = snap.onec_documents(("invoice",), basis=list(orders))
    of_order = {i.key: i.basis_key for i in invoices}
    pays: dict[str, list[DocView]] = defaultdict(list)
    for p in snap.onec_documents(("payment",), basis=[*orders, *of_order]):
        order = p.basis_key if p.basis_key in orders else of_order.get(p.basis_key or "")
        if order:
            pays[order].append(p)
    out = []
    for key, o in orders.items():
        total, when = 0.0, None
        for p in sorted(pays.get(key, []), key=lambda x: (x.date, x.key)):
            total += p.amount
            if o.amount > 0 and total >= o.amount - 0.005:
                when = p.date
                break
        if when is None or when < since:
            continue
        out.append(_Event(o.key, o.client_key, "paid", when,
                          _("1C order {number} of {date} is paid in full on {paid}.").format(
                              number=o.number, date=day(cal.local(o.date)), paid=day(cal.local(when))),
                          _vars(o, cal, "paid")))
    return out


def _sale_events(snap: Snapshot, cal: BusinessCalendar, since: datetime) -> list[_Event]:
    sales = snap.onec_documents(("sale",), since=since)
    orders = {o.key: o for o in snap.onec_documents(("order",), keys=[s.basis_key for s in sales if s.basis_key])}
    out = []
    for s in sales:
        o = orders.get(s.basis_key or "")
        shipped = day(cal.local(s.date))
        if o is not None:
            reason = _("1C shipment {shipment} of {shipped} for order {number} is posted.").format(
                shipment=s.number, shipped=shipped, number=o.number)
            order = _vars(o, cal, "shipped", s, key=s.key)
        else:
            reason = _("1C shipment {shipment} of {shipped} is posted.").format(shipment=s.number, shipped=shipped)
            order = _vars(s, cal, "shipped", s)
        out.append(_Event(s.key, s.client_key, "shipped", s.date, reason, order))
    return out


def _deal_events(rule: OrderStatusRule, snap: Snapshot, cal: BusinessCalendar, since: datetime) -> list[_Event]:
    out = []
    for deal in snap.crm_deals(stages=rule.states, changed_since=since):
        at = deal.modified_at or deal.closed_at
        if at is None:
            continue
        out.append(_Event(deal.key, _deal_client(deal, snap), deal.stage_id, at,
                          _("Deal {deal} is in stage {stage}.").format(deal=deal.title, stage=deal.stage_id),
                          order_var(key=deal.key, kind="deal", number=deal.key.rsplit(":", 1)[-1], when=cal.local(at).date(),
                                    amount=deal.amount, currency=deal.currency, state=deal.stage_id)))
    return out


def _deal_client(deal: DealView, snap: Snapshot) -> str | None:
    """The person to tell: the deal's contact, else its company."""
    loaded: dict[str, ClientView] = snap.clients(deal.client_keys)
    people = [k for k in deal.client_keys if k in loaded and loaded[k].kind == "contact"]
    return (people or [k for k in deal.client_keys if k in loaded] or [None])[0]


def clear_reason(rule: OrderStatusRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    """Told: the episode ends once nothing of it is pending and the connector's tasks of it are done
    (a message waiting for the morning is never cancelled by the window moving on)."""
    entries = snap.family_entries([ep.episode]).get(ep.episode, [])
    if any(e.state in PENDING for e in entries):
        return None
    tasks = [e.remote_key for e in entries if e.type == "task" and e.state in DONE_STATES and e.remote_key]
    if tasks and snap.open_tasks(tasks):
        return None
    return _("the client was told")
