"""Recurring: a deal marked regular gets an invoice every period.

A deal is regular when its ``period_field`` holds a period: ``monthly``, ``quarterly``, ``yearly``,
``weekly``, ``N days``, ``N weeks`` or ``N months`` (English, Ukrainian or Russian words; a list
field's values through ``periods``). Invoices are due on ``start + k × period`` (the start date
from ``start_field``, k = 0, 1, ...; without one, the deal's close or creation date, k = 1, 2, ...,
since the deal's own sale covered the first period). Months are added to the start, never chained,
so a schedule from 31 January is due on 28 (29) February, then 31 March.

The invoice of a period is keyed ``recurring:<deal>:<issue date>:i`` and carries its key's marker
in the comments: a rerun, a crash or a retry never makes a second one for that period. If the last
invoice the connector issued for the deal is still unpaid when the next one is due, the manager gets
a task instead (``previous_unpaid: task``; or the invoice anyway, or nothing). After a pause (the
connector was down), periods missed since the last invoice it issued are issued too, at most
``max_catch_up`` of them; a deal that just became regular gets only the current period's.

An invoice the connector issued is its own footprint, never the client's contact or purchase.
A period's episode holds while its invoice is unpaid (so an escalation ladder can follow it) and
ends when it is paid or the next period begins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import func, select

from connector.calendar import BusinessCalendar
from connector.config import RecurringRule, TaskAction
from connector.evidence import aware
from connector.i18n import _, day, money
from connector.rules.base import DONE_STATES, FINAL_STATES, Builtin, Evaluation, Finding, in_scope
from connector.snapshot import EpisodeView, JournalEntry, Snapshot, split_episode
from connector.store import deal_clients, deals, invoices, payments, product_lines

# words people put into a "period" field, in English, Ukrainian and Russian
WORDS: dict[str, relativedelta] = {}
for _step, _words in (
    (relativedelta(weeks=1), "weekly week щотижня щотижнево тиждень еженедельно неделя"),
    (relativedelta(months=1), "monthly month щомісяця щомісячно місяць ежемесячно месяц"),
    (relativedelta(months=3), "quarterly quarter щокварталу щоквартально квартал ежеквартально"),
    (relativedelta(months=6), "half-yearly semiannually півроку полгода"),
    (relativedelta(years=1), "yearly annually annual year щороку щорічно рік ежегодно год"),
):
    for _w in _words.split():
        WORDS[_w] = _step
# named in the note on a value the rule cannot read (values, not words to translate)
KNOWN_PERIODS = "monthly, quarterly, half-yearly, yearly, weekly, 10 days, 2 weeks, 2 months, щомісяця, щокварталу, щороку, ежемесячно"
_NUMBERED = re.compile(r"^(\d+)\s*([^\d\s.]*)\.?$")
_UNITS = (("days", ("", "d", "day", "days", "дн", "дні", "днів", "день", "дня", "дней")),
          ("weeks", ("w", "week", "weeks", "тиж", "тижні", "тижнів", "тиждень", "нед", "недели", "недель", "неделя")),
          ("months", ("m", "mo", "month", "months", "міс", "місяці", "місяців", "місяць", "мес", "месяца", "месяцев", "месяц")))


def parse_period(text: Any, aliases: dict[str, str] | None = None) -> relativedelta | None:
    """A period field's value -> the step between invoices; None when it names no period."""
    raw = " ".join(str(text if not isinstance(text, list) else (text[0] if text else "")).split())
    if not raw:
        return None
    raw = (aliases or {}).get(raw, raw)
    value = raw.casefold()
    if value in WORDS:
        return WORDS[value]
    m = _NUMBERED.match(value)
    if m and int(m.group(1)) > 0:
        n = int(m.group(1))
        for unit, words in _UNITS:
            if m.group(2) in words:
                return relativedelta(**{unit: n})
    return None


def issue_date(start: date, step: relativedelta, k: int) -> date:
    """The k-th issue date: ``start + k × step`` counted from the start, so month ends never drift."""
    return start + relativedelta(years=step.years * k, months=step.months * k, days=step.days * k)


def current_period(start: date, step: relativedelta, first: int, today: date) -> int | None:
    """The latest k >= ``first`` whose issue date is today or earlier (None: none yet)."""
    if issue_date(start, step, first) > today:
        return None
    lo, hi = first, first + 1
    while issue_date(start, step, hi) <= today:
        lo, hi = hi, hi * 2 + 1
    while hi - lo > 1:  # issue dates grow with k: the last one not after today
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if issue_date(start, step, mid) <= today else (lo, mid)
    return lo


@dataclass
class RegularDeal:
    key: str
    title: str
    amount: float
    currency: str
    responsible_key: str | None
    client_keys: list[str]
    period_text: str
    step: relativedelta
    start: date
    first: int  # 0: the start date is itself an issue date (start_field), 1: the deal's own date is not


def _date(value: Any) -> date | None:
    if value in (None, "", []):
        return None
    text = str(value[0] if isinstance(value, list) else value)
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def regular_deals(rule: RecurringRule, snap: Snapshot, cal: BusinessCalendar) -> tuple[list[RegularDeal], list[str]]:
    """Live, not lost deals whose period field names a period; and notes for values it could not read (once per snapshot)."""
    cache: dict[str, tuple[list[RegularDeal], list[str]]] = snap.__dict__.setdefault("_recurring", {})
    if rule.name not in cache:
        cache[rule.name] = _regular_deals(rule, snap, cal)
    found, notes = cache[rule.name]
    return list(found), list(notes)


def _regular_deals(rule: RecurringRule, snap: Snapshot, cal: BusinessCalendar) -> tuple[list[RegularDeal], list[str]]:
    period = snap._json_text(deals.c.fields, rule.period_field)
    q = (select(deals.c.key, deals.c.title, deals.c.amount, deals.c.currency, deals.c.responsible_key, deals.c.fields,
                deals.c.created_at, deals.c.closed_at, deals.c.outcome)
         .where(deals.c.deleted.is_(False), func.coalesce(deals.c.outcome, "open") != "lost", period.is_not(None), period != "")
         .order_by(deals.c.key))
    rows = snap.conn.execute(q).all()
    owners: dict[str, list[str]] = {}
    keys = [r.key for r in rows]
    for i in range(0, len(keys), 500):
        for dk, ck in snap.conn.execute(select(deal_clients.c.deal_key, deal_clients.c.client_key)
                                        .where(deal_clients.c.deal_key.in_(keys[i:i + 500])).order_by(deal_clients.c.client_key)):
            owners.setdefault(dk, []).append(ck)
    out, notes = [], []
    for r in rows:
        fields = dict(r.fields or {})
        step = parse_period(fields.get(rule.period_field), rule.periods)
        if step is None:
            notes.append(_("{deal}: the period {value} is not one the rule knows ({known})").format(
                deal=r.title or r.key, value=repr(fields.get(rule.period_field)), known=KNOWN_PERIODS))
            continue
        start = _date(fields.get(rule.start_field)) if rule.start_field else None
        first = 0
        if start is None:
            when = r.closed_at if r.closed_at is not None and r.outcome == "won" else r.created_at
            if when is None:
                continue
            start, first = cal.local(aware(when)).date(), 1
        companies = sorted(k for k in owners.get(r.key, []) if ":company:" in k or ":counterparty:" in k)
        contacts = sorted(k for k in owners.get(r.key, []) if ":contact:" in k)
        out.append(RegularDeal(r.key, r.title or r.key, float(r.amount or 0.0), r.currency or "", r.responsible_key,
                               companies + contacts, str(fields.get(rule.period_field)), step, start, first))
    return out, notes


def invoice_states(snap: Snapshot, keys: list[str]) -> dict[str, str]:
    """Invoices the connector issued: ``paid``, ``unpaid`` or ``gone`` (deleted, declined); absent: not synced yet."""
    out: dict[str, str] = {}
    paid = (select(payments.c.invoice_key, func.sum(payments.c.amount).label("paid"))
            .where(payments.c.deleted.is_(False), payments.c.invoice_key.is_not(None)).group_by(payments.c.invoice_key).subquery())
    for i in range(0, len(keys), 500):
        q = (select(invoices.c.key, invoices.c.deleted, invoices.c.outcome, invoices.c.amount, paid.c.paid)
             .outerjoin(paid, paid.c.invoice_key == invoices.c.key).where(invoices.c.key.in_(keys[i:i + 500])))
        for key, deleted, outcome, amount, got in snap.conn.execute(q):
            if deleted or outcome == "lost":
                out[key] = "gone"
            elif outcome == "won" or (amount and (got or 0) >= amount - 0.005):
                out[key] = "paid"
            else:
                out[key] = "unpaid"
    return out


def _lines(snap: Snapshot, deal_key: str) -> list[dict]:
    q = select(product_lines).where(product_lines.c.owner_key == deal_key).order_by(product_lines.c.line_no)
    out = []
    for r in snap.conn.execute(q):
        qty = float(r.quantity or 0.0) or 1.0
        out.append({"product_id": r.product_id or "", "name": r.name or "", "quantity": qty,
                    "price": round(float(r.amount or 0.0) / qty, 2), "system": r.system or ""})
    return out


def _suffix(e: JournalEntry) -> str:
    return e.key.rsplit(":", 1)[-1]


def evaluate(rule: RecurringRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    today = cal.today(snap.now)
    found, notes = regular_deals(rule, snap, cal)
    snap.clients([d.client_keys[0] for d in found if d.client_keys])
    history = snap.journal_for(rule.name, [d.key for d in found])
    issued = [e.remote_key for es in history.values() for e in es if _suffix(e) == "i" and e.state in DONE_STATES and e.remote_key]
    states = invoice_states(snap, issued)
    findings: list[Finding] = []
    scope = 0
    for deal in found:
        client = snap.client(deal.client_keys[0]) if deal.client_keys else None
        if client is None:
            notes.append(_("{deal}: no client in the CRM to invoice").format(deal=deal.title))
            continue
        if not in_scope(client, rule.where, snap):
            continue
        scope += 1
        cur = current_period(deal.start, deal.step, deal.first, today)
        if cur is None:
            continue
        by_period: dict[str, list[JournalEntry]] = {}
        for e in history.get(deal.key, []):
            by_period.setdefault(split_episode(e.episode)[2], []).append(e)
        ks = _periods(rule, deal, cur, by_period)
        for k in ks:
            f = _finding(rule, snap, cal, deal, client, k, by_period, states, notes)
            if f is not None:
                findings.append(f)
    return Evaluation(findings, scope, notes=notes)


def _periods(rule: RecurringRule, deal: RegularDeal, cur: int, by_period: dict[str, list[JournalEntry]]) -> list[int]:
    """The periods to look at: the current one, those with something still pending, and (after a
    pause) the ones missed since the last period the connector acted on."""
    ks = {cur}
    known = []
    for period, entries in by_period.items():
        try:
            when = date.fromisoformat(period)
        except ValueError:
            continue
        k = current_period(deal.start, deal.step, deal.first, when)
        if k is None or issue_date(deal.start, deal.step, k) != when or k > cur:
            continue  # the schedule changed since: that period is no longer one of this deal's
        known.append(k)
        if any(e.state not in FINAL_STATES for e in entries):
            ks.add(k)
    if known:
        ks.update(range(max(max(known) + 1, cur - rule.max_catch_up), cur + 1))
    return sorted(ks)


def _finding(rule: RecurringRule, snap: Snapshot, cal: BusinessCalendar, deal: RegularDeal, client: Any, k: int,
             by_period: dict[str, list[JournalEntry]], states: dict[str, str], notes: list[str]) -> Finding | None:
    when = issue_date(deal.start, deal.step, k)
    entries = by_period.get(when.isoformat(), [])
    inv = next((e for e in entries if _suffix(e) == "i"), None)
    task = next((e for e in entries if _suffix(e) == "u"), None)
    prev = _previous(deal, when, by_period)
    prev_state = states.get(prev.remote_key or "") if prev is not None else None
    due = when + timedelta(days=rule.invoice.payment_days)
    base_vars = _vars(deal, when, k, due, prev, prev_state)
    if inv is not None:
        if inv.state in DONE_STATES and states.get(inv.remote_key or "") == "paid":
            return None  # issued and paid: nothing holds
        return _invoice(rule, snap, deal, client, when, due, base_vars,
                        _("regular deal ({every}): the invoice for {date} is issued").format(every=deal.period_text, date=day(when)))
    unpaid = prev is not None and prev_state == "unpaid"
    if prev is not None and prev.state in DONE_STATES and prev.remote_key and prev_state is None:
        notes.append(_("{deal}: waiting for invoice {invoice} to arrive from the CRM before the next one").format(
            deal=deal.title, invoice=prev.remote_key))
        return None
    if task is not None and (unpaid or task.state not in DONE_STATES):
        return _unpaid_task(rule, deal, client, when, base_vars, prev)
    if unpaid and rule.previous_unpaid == "task":
        return _unpaid_task(rule, deal, client, when, base_vars, prev)
    if unpaid and rule.previous_unpaid == "skip":
        notes.append(_("{deal}: no invoice for {date}: the previous one is still unpaid").format(deal=deal.title, date=day(when)))
        return None
    return _invoice(rule, snap, deal, client, when, due, base_vars,
                    _("regular deal ({every}): invoice for the period from {date}, {amount}").format(
                        every=deal.period_text, date=day(when), amount=money(deal.amount, deal.currency or "UAH")))


def _previous(deal: RegularDeal, when: date, by_period: dict[str, list[JournalEntry]]) -> JournalEntry | None:
    """The last invoice the connector issued (or is issuing) for the deal before ``when``."""
    earlier = [e for period, es in by_period.items() if period < when.isoformat() for e in es if _suffix(e) == "i"
               and e.state not in ("cancelled", "skipped", "failed", "dead")]
    return max(earlier, key=lambda e: split_episode(e.episode)[2], default=None)


def _vars(deal: RegularDeal, when: date, k: int, due: date, prev: JournalEntry | None, prev_state: str | None) -> dict[str, Any]:
    prev_payload = (prev.payload or {}) if prev is not None else {}
    return {
        "deal": {"key": deal.key, "id": deal.key.rsplit(":", 1)[-1], "title": deal.title, "amount": deal.amount,
                 "currency": deal.currency},
        "period": {"start": when.isoformat(), "label": day(when), "number": k, "every": deal.period_text},
        "previous_invoice": {"key": (prev.remote_key or "") if prev is not None else "",
                             "id": (prev.remote_key or "").rsplit(":", 1)[-1] if prev is not None else "",
                             "title": prev_payload.get("title", ""), "amount": prev_payload.get("amount", 0.0),
                             "currency": prev_payload.get("currency", ""), "due_date": prev_payload.get("due", ""),
                             "state": prev_state or ""},
        "days": 0,
    }


def _invoice(rule: RecurringRule, snap: Snapshot, deal: RegularDeal, client: Any, when: date, due: date, base: dict[str, Any],
             reason: str) -> Finding:
    companies = [k for k in deal.client_keys if ":contact:" not in k]
    contacts = [k for k in deal.client_keys if ":contact:" in k]
    rows = _lines(snap, deal.key) if rule.invoice.products else []
    payload = {"title": rule.invoice.title, "comment": rule.invoice.comment or "", "deal": deal.key,
               "company": companies[0] if companies else None, "contact": contacts[0] if contacts else None,
               "amount": deal.amount, "currency": deal.currency, "responsible": deal.responsible_key or client.responsible_key,
               "issued": when.isoformat(), "due": due.isoformat(), "stage": rule.invoice.stage, "rows": rows}
    vars_ = {**base, "invoice": {"title": "", "amount": deal.amount, "currency": deal.currency, "due_date": due.isoformat()}}
    return Finding(subject_key=deal.key, client=client, period=when.isoformat(), reason=reason, vars=vars_,
                   responsible_key=deal.responsible_key, builtin=[Builtin("i", "invoice", payload, render=("title", "comment"), first=True)])


def _unpaid_task(rule: RecurringRule, deal: RegularDeal, client: Any, when: date, base: dict[str, Any],
                 prev: JournalEntry | None) -> Finding:
    prev_title = (prev.payload or {}).get("title", "") if prev is not None else ""
    reason = _("regular deal ({every}): the previous invoice {invoice} is still unpaid, so none is issued for {date}; "
               "check the payment with the client").format(every=deal.period_text, invoice=prev_title or (prev.remote_key if prev else ""),
                                                          date=day(when))
    vars_ = {**base, "invoice": {"title": "", "amount": deal.amount, "currency": deal.currency, "due_date": ""}}
    return Finding(subject_key=deal.key, client=client, period=when.isoformat(), reason=reason, vars=vars_,
                   responsible_key=deal.responsible_key, configured=False,
                   builtin=[Builtin("u", action=TaskAction(task=rule.unpaid_task))])


def clear_reason(rule: RecurringRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    row = snap.conn.execute(select(deals.c.deleted, deals.c.outcome, deals.c.fields).where(deals.c.key == ep.subject_key)).first()
    if row is None or row.deleted:
        return _("the deal was deleted")
    if row.outcome == "lost" or parse_period((row.fields or {}).get(rule.period_field), rule.periods) is None:
        return _("the deal is no longer marked regular")
    period = split_episode(ep.episode)[2]
    entries = snap.episode_entries([ep.episode]).get(ep.episode, [])
    issued = [e.remote_key for e in entries if _suffix(e) == "i" and e.state in DONE_STATES and e.remote_key]
    if issued and invoice_states(snap, issued).get(issued[0]) == "paid":
        return _("the invoice for {date} was paid").format(date=day(date.fromisoformat(period)))
    found = next((d for d in regular_deals(rule, snap, cal)[0] if d.key == ep.subject_key), None)
    if found is not None:
        cur = current_period(found.start, found.step, found.first, cal.today(snap.now))
        if cur is not None and issue_date(found.start, found.step, cur).isoformat() > period:
            return _("the next period began on {date}").format(date=day(issue_date(found.start, found.step, cur)))
    return None
