"""``connector explain CONFIG CLIENT``: why a client is (or is not) on each rule's list.

The verdicts are the plan's own: :func:`explain` runs the very :class:`~connector.plan.Planner`
that ``plan --no-sync`` runs, over the store as it is (no sync, nothing written), and reads the
client's part of it: the rule's findings, the actions planned with their journal states, the
episodes that end. Nothing here decides again who is forgotten or lost, so ``plan`` and
``explain`` cannot disagree. The evidence shown beside a verdict comes from
:mod:`connector.evidence` (the same definitions of contact, purchase, "kept" and "own") and from
the rules' own helpers (``lost.purchase_days``, ``lost.threshold_days``), so the numbers are the
ones the rules compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from connector.calendar import BusinessCalendar
from connector.config import (
    DebtorsRule,
    ForgottenRule,
    LostRule,
    MissedCallRule,
    ReleaseRule,
    Settings,
    UnpaidRule,
)
from connector.evidence import Purchase, Record
from connector.i18n import _, day, money, ngettext, number
from connector.journal import Journal
from connector.phones import normalize
from connector.plan import Plan, Planner
from connector.ports import PlannedAction
from connector.rules.base import DONE_STATES, kind_of
from connector.rules.lost import cadence_days, purchase_days, threshold_days
from connector.snapshot import CallView, ClientView, DebtView, InvoiceView, Snapshot, load_snapshot, split_episode
from connector.store import Store, client_phones, clients, deal_clients, deals, documents, episodes, invoices, journal


@dataclass
class Match:
    key: str
    title: str
    kind: str
    tax_id: str | None
    phones: list[str]


@dataclass
class Verdict:
    """One rule's verdict on the client."""

    rule: str
    type: str
    status: str  # listed | waiting | ended | not_listed | disabled
    reason: str  # the rule's own reason when listed; why not otherwise
    facts: list[str] = field(default_factory=list)
    actions: list[tuple[PlannedAction, str]] = field(default_factory=list)  # with its state: new, refused or the journal's
    refused: str | None = None  # the safety brake refused the rule's new actions in this plan


@dataclass
class Explanation:
    client: ClientView
    manager: str
    now: datetime
    timezone: str
    contacts: dict[str, Record]
    kept: list[Record]
    own: list[Record]
    purchases: list[Purchase]
    titles: dict[str, str]  # record key -> title, for purchases
    deals: list[dict]
    invoices: list[InvoiceView]
    debts: list[DebtView]
    calls: list[CallView]
    journal: list[dict]
    episodes: list[dict]
    verdicts: list[Verdict]


# ---------------------------------------------------------------------- finding the client


def find_clients(store: Store, primary: str, query: str, *, region: str = "UA") -> list[Match]:
    """Clients of the primary CRM matching ``query``: a store key, an id, a phone, a tax id, or a
    name (an exact name first, else every name containing it, case-insensitive)."""
    q = query.strip()
    keys: list[str] = []
    with store.tx() as conn:
        live = (clients.c.system == primary, clients.c.deleted.is_(False))
        if ":" in q:
            keys += [k for (k,) in conn.execute(select(clients.c.key).where(clients.c.key == q, *live))]
        if q.isdigit():
            keys += [k for (k,) in conn.execute(select(clients.c.key).where(clients.c.source_id == q, *live))]
        if q:
            keys += [k for (k,) in conn.execute(select(clients.c.key).where(clients.c.tax_id == q, *live))]
        phone = normalize(q, region) if any(ch.isdigit() for ch in q) else None
        if phone:
            keys += [k for (k,) in conn.execute(select(clients.c.key).join(client_phones, client_phones.c.client_key == clients.c.key)
                                                .where(client_phones.c.phone == phone, *live))]
        if not keys and q:
            wanted = q.casefold()
            titles = conn.execute(select(clients.c.key, clients.c.title).where(*live)).all()
            exact = [k for k, t in titles if (t or "").casefold() == wanted]
            keys = exact or [k for k, t in titles if wanted in (t or "").casefold()]
        keys = list(dict.fromkeys(keys))
        rows = conn.execute(select(clients.c.key, clients.c.title, clients.c.kind, clients.c.tax_id).where(clients.c.key.in_(keys[:200])))
        found = {r.key: Match(r.key, r.title or r.key, r.kind, r.tax_id, []) for r in rows}
        for ph, ck in conn.execute(select(client_phones.c.phone, client_phones.c.client_key).where(client_phones.c.client_key.in_(list(found)))):
            found[ck].phones.append(ph)
    return [found[k] for k in keys if k in found]


# ---------------------------------------------------------------------- the explanation


def explain(settings: Settings, store: Store, client_key: str, now: datetime) -> Explanation:
    """Plan over the store as it is (as ``plan --no-sync`` does) and read the client's part of it."""
    from connector.runner import _lookback

    cal = BusinessCalendar(settings.calendar, settings.timezone)
    with load_snapshot(settings, store, now, call_lookback_hours=_lookback(settings)) as snap:
        plan = Planner(settings, snap, cal, journal=Journal(store)).plan()
        c = snap.clients([client_key], purchases=True).get(client_key)
        if c is None:
            raise LookupError(client_key)
        owners = snap.ev.owner_keys(client_key)
        x = Explanation(
            client=c, manager=_manager(snap, c.responsible_key), now=now, timezone=settings.timezone,
            contacts=snap.ev.contact_records(client_key), kept=snap.ev.kept_records(client_key), own=snap.ev.own_records(client_key),
            purchases=snap.ev.purchases([client_key]).get(client_key, []), titles={}, deals=_open_deals(snap, owners),
            invoices=[i for i in snap.invoices() if i.client_key == client_key],
            debts=[d for d in snap.debts() if d.client_key == client_key],
            calls=snap.calls(since=now - timedelta(days=30), phones=_phones_of(snap, owners)) if owners else [],
            journal=_journal_rows(snap, client_key), episodes=_episode_rows(snap, client_key), verdicts=[],
        )
        x.titles = _titles(snap, [p.key for p in x.purchases])
        by_name = {r.rule: r for r in plan.rules}
        for rule in settings.rules:
            rp = by_name.get(rule.name)
            if rp is None:
                x.verdicts.append(Verdict(rule.name, rule.type, "disabled", _("The rule is disabled (enabled: false).")))
                continue
            x.verdicts.append(_verdict(rule, rp, plan, snap, cal, c, settings))
    return x


def _verdict(rule: Any, rp: Any, plan: Plan, snap: Snapshot, cal: BusinessCalendar, c: ClientView, settings: Settings) -> Verdict:
    key = c.key
    ev = rp.evaluation
    mine = [f for f in ev.findings if (f.client is not None and f.client.key == key) or f.subject_key == key]
    acts = [(a, plan.known.get(a.key, "refused" if (rp.refused or plan.refused_run) else "new"))
            for a in rp.actions if a.client_key == key or a.subject_key == key]
    ended = [e for e in plan.cleared if e.rule == rule.name and (e.client_key == key or e.subject_key == key)]
    holding = [h for h in ev.holding if split_episode(h)[1] == key]
    said = [n for n in [*rp.refusals, *rp.notes] if n.startswith(f"{c.title}:")]
    v = Verdict(rule.name, rule.type, "not_listed", "", actions=acts, refused=rp.refused if acts else None)
    v.facts += said
    if mine:
        v.status = "listed"
        v.reason = "; ".join(dict.fromkeys(f.reason for f in mine))
    elif holding:
        v.status = "waiting"
        v.reason = _("Still on the list, with nothing to do now: waiting for the next step of the episode.")
        if isinstance(rule, LostRule):
            v.facts += _next_callback(rule, snap, cal, c, holding)
    elif ended:
        v.status = "ended"
        v.reason = "; ".join(e.reason for e in ended)
    if v.status == "not_listed" or rule.type == "lost":
        why, facts = _why(rule, snap, cal, c, settings)
        if v.status == "not_listed":
            v.reason = why
        v.facts += facts
    return v


def _next_callback(rule: LostRule, snap: Snapshot, cal: BusinessCalendar, c: ClientView, holding: list[str]) -> list[str]:
    """When a lost client's next call-back is due: ``cadence`` days after the last one was done
    (the rule's own arithmetic, from the journal)."""
    cadence, temperature = cadence_days(rule, c)
    base = split_episode(holding[0])[2]
    entries = [e for es in snap.journal_for(rule.name, [c.key]).values() for e in es
               if split_episode(e.episode)[2].startswith(base + "#")]
    if not entries:
        return []
    n = max(int(split_episode(e.episode)[2].split("#")[1]) for e in entries)
    finished = [e.done_at or e.created_at for e in entries if split_episode(e.episode)[2] == f"{base}#{n}" and (e.done_at or e.created_at)]
    if not finished:
        return []
    last = max(finished)
    return [_("Call-back #{n} was done on {done}; the next one is due on {due} (every {days} days, {temperature}).").format(
        n=n + 1, done=day(cal.local(last)), due=day(cal.local(last + timedelta(days=cadence))), days=cadence, temperature=temperature)]


def _in_scope(snap: Snapshot, rule: Any, c: ClientView) -> bool:
    kind = kind_of(rule.clients) if hasattr(rule, "clients") else None
    q = select(func.count()).select_from(clients).where(*snap.scope(rule.where, kind), clients.c.key == c.key)
    return bool(snap.conn.execute(q).scalar_one())


def _why(rule: Any, snap: Snapshot, cal: BusinessCalendar, c: ClientView, settings: Settings) -> tuple[str, list[str]]:
    """Why the rule does not list the client, in the rule's own terms, with the figures it compared."""
    now = snap.now
    if isinstance(rule, ForgottenRule):
        if not _in_scope(snap, rule, c):
            return _("Not in the rule's scope (its clients: or where: filter)."), []
        last, kind = c.last_contact(rule.contact_kinds)
        ref = last or c.created_at
        if ref is not None and ref > now - timedelta(days=rule.inactive_days):
            days = (now - ref).days
            if last is not None:
                return _("Contacted {days} days ago ({kind} on {date}); forgotten after {limit} days without contact.").format(
                    days=days, kind=kind_word(kind), date=day(cal.local(last)), limit=rule.inactive_days), []
            return _("Created {days} days ago with no contact yet; forgotten after {limit} days.").format(
                days=days, limit=rule.inactive_days), []
        if rule.keep_while_future_task and c.future_task:
            return _("Kept: an open task or a planned activity with a future deadline (see below)."), []
        return _("Not listed by the rule."), []
    if isinstance(rule, LostRule):
        if not _in_scope(snap, rule, c):
            return _("Not in the rule's scope (its clients: or where: filter)."), []
        bought = purchase_days(c, cal)
        if len(bought) < rule.min_purchases:
            return ngettext("Bought {n} time; the rule needs at least {min}.", "Bought {n} times; the rule needs at least {min}.",
                            len(bought)).format(n=len(bought), min=rule.min_purchases), []
        when, amount, what = bought[-1]
        days = threshold_days(rule, bought)
        fact = ngettext("Bought {n} time; the last purchase: {what} on {date} ({amount}), {silent} days ago; lost after {limit} days "
                        "without a purchase.",
                        "Bought {n} times; the last purchase: {what} on {date} ({amount}), {silent} days ago; lost after {limit} days "
                        "without a purchase.", len(bought)).format(n=len(bought), what=what, date=day(cal.local(when)), amount=number(amount),
                                               silent=(now - when).days, limit=days)
        if now < when + timedelta(days=days):
            return _("Still buying: the last purchase is {silent} days old, fewer than {limit}.").format(
                silent=(now - when).days, limit=days), [fact]
        return _("Not listed by the rule."), [fact]
    if isinstance(rule, ReleaseRule):
        eps = [e for e in snap.open_episodes(rule.after) if e.subject_key == c.key]
        if not eps:
            return _("Not released: the client has no open episode of the rule {rule}.").format(rule=rule.after), []
        entries = [e for es in snap.episode_entries([e.episode for e in eps]).values() for e in es]
        done = [e for e in entries if e.type == "task" and e.state in DONE_STATES and e.done_at]
        if not done:
            return _("Not released: the reminder of the rule {rule} is not done yet.").format(rule=rule.after), []
        marked = min(e.done_at for e in done)
        target = next((r for r in settings.rules if r.name == rule.after and isinstance(r, ForgottenRule)), None)
        last, kind = c.last_contact(list(rule.contact_kinds or (target.contact_kinds if target else [])))
        if last is not None and last >= marked:
            return _("Not released: contacted ({kind} on {date}) after the reminder of {marked}.").format(
                kind=kind_word(kind), date=day(cal.local(last)), marked=day(cal.local(marked))), []
        if now < marked + timedelta(days=rule.grace_days):
            return _("Not released yet: the reminder was done on {marked}; released after {grace} more days, on {due}.").format(
                marked=day(cal.local(marked)), grace=rule.grace_days, due=day(cal.local(marked + timedelta(days=rule.grace_days)))), []
        return _("Not released (see the notes)."), []
    if isinstance(rule, UnpaidRule):
        mine = [i for i in snap.invoices() if i.client_key == c.key]
        if not mine:
            return _("No invoice with a due date."), []
        today = cal.today(now)
        facts = []
        for i in mine:
            if i.paid:
                facts.append(_("{invoice}: paid.").format(invoice=i.title))
            elif i.amount < rule.min_amount:
                facts.append(_("{invoice}: {amount}, below min_amount.").format(invoice=i.title, amount=money(i.amount, i.currency)))
            elif i.due_date is not None and today < i.due_date + timedelta(days=rule.overdue_days):
                facts.append(_("{invoice}: {amount} due {due}; listed from {start}.").format(
                    invoice=i.title, amount=money(i.amount, i.currency), due=day(i.due_date),
                    start=day(i.due_date + timedelta(days=rule.overdue_days))))
        return _("No invoice of the client is overdue by {days} days or more.").format(days=rule.overdue_days), facts
    if isinstance(rule, DebtorsRule):
        mine = [d for d in snap.debts() if d.client_key == c.key]
        if not mine:
            return _("No receivable in 1C."), []
        today = cal.today(now)
        facts = []
        for d in mine:
            overdue = d.overdue_amount if d.overdue_amount is not None else d.amount
            since = day(d.overdue_since) if d.overdue_since else "-"
            facts.append(_("Owes {amount}, overdue {overdue} since {since} ({days} days); listed from {min} and {limit} days.").format(
                amount=money(d.amount, d.currency), overdue=money(overdue, d.currency), since=since,
                days=(today - d.overdue_since).days if d.overdue_since else 0, min=money(rule.min_amount, d.currency),
                limit=rule.overdue_days))
        return _("The debt is below the threshold or not overdue long enough."), facts
    if isinstance(rule, MissedCallRule):
        phones = set(c.phones)
        since = now - timedelta(hours=rule.lookback_hours)
        missed = [x for x in snap.calls(since=since, phones=sorted(phones)) if x.direction == "in" and not x.answered] if phones else []
        if not missed:
            return _("No missed inbound call from the client's numbers in the last {hours} hours.").format(hours=rule.lookback_hours), []
        return _("Every missed call was answered or called back later, or is within {minutes} minutes.").format(
            minutes=rule.callback_within_minutes), []
    return _("Not listed by the rule."), []


def kind_word(kind: str | None) -> str:
    """A contact kind as a word people read."""
    words = {"call": _("call"), "email": _("e-mail"), "meeting": _("meeting"), "task": _("task"), "comment": _("comment"),
             "document": _("1C document"), "deal": _("deal"), "invoice": _("invoice"), "other": _("activity")}
    return words.get(kind or "", kind or "-")


# ---------------------------------------------------------------------- small readers


def _manager(snap: Snapshot, key: str | None) -> str:
    m = snap.manager(key)
    return m.name if m else (key or "-")


def _phones_of(snap: Snapshot, owners: list[str]) -> list[str]:
    return sorted({p for (p,) in snap.conn.execute(select(client_phones.c.phone).where(client_phones.c.client_key.in_(owners)))})


def _open_deals(snap: Snapshot, owners: list[str]) -> list[dict]:
    q = (select(deals.c.key, deals.c.title, deals.c.amount, deals.c.currency, deals.c.created_at, deals.c.stage_id)
         .join(deal_clients, deal_clients.c.deal_key == deals.c.key)
         .where(deal_clients.c.client_key.in_(owners), deals.c.deleted.is_(False), deals.c.outcome == "open")
         .distinct().order_by(deals.c.created_at.desc()))
    return [dict(r._mapping) for r in snap.conn.execute(q)] if owners else []


def _titles(snap: Snapshot, keys: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    if not keys:
        return out
    for k, t in snap.conn.execute(select(deals.c.key, deals.c.title).where(deals.c.key.in_(keys))):
        out[k] = t or k
    for k, t in snap.conn.execute(select(invoices.c.key, invoices.c.title).where(invoices.c.key.in_(keys))):
        out[k] = t or k
    for k, n in snap.conn.execute(select(documents.c.key, documents.c.number).where(documents.c.key.in_(keys))):
        out[k] = n or k
    return out


def _journal_rows(snap: Snapshot, client_key: str) -> list[dict]:
    q = (select(journal).where((journal.c.client_key == client_key) | (journal.c.subject_key == client_key))
         .order_by(journal.c.created_at, journal.c.key))
    return [dict(r._mapping) for r in snap.conn.execute(q)]


def _episode_rows(snap: Snapshot, client_key: str) -> list[dict]:
    q = (select(episodes).where((episodes.c.client_key == client_key) | (episodes.c.subject_key == client_key))
         .order_by(episodes.c.opened_at, episodes.c.episode))
    return [dict(r._mapping) for r in snap.conn.execute(q)]
