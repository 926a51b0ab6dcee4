"""Replenish: a consumable a client bought runs out; remind ``remind_days_before`` it does.

What a client bought comes from the product lines of its purchases (Bitrix24 deal product rows,
the goods of 1C sales and paid orders), matched to a configured consumable by 1C GUID (or
Bitrix24 product id), article, name, part of the name or group. For each client and consumable
the latest purchase day counts: its quantity times ``days_per_unit`` is the expected run-out
date. On one day the lines of one system are added up and two systems count once (a won deal
and the 1C sale of the same order are one purchase, at the larger quantity).

The episode is ``replenish:<client>:<consumable>@<purchase day>``: it is found from the reminder
date until ``expire_days`` after the run-out date. A newer purchase of that consumable starts a
new episode, so the old one ends ("bought again") and what it had not yet sent is cancelled.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import or_, select

from connector.calendar import BusinessCalendar
from connector.config import Consumable, ReplenishRule
from connector.evidence import aware
from connector.i18n import _, day
from connector.i18n import number as fmt_number
from connector.rules.base import Evaluation, Finding, kind_of
from connector.snapshot import EpisodeView, Snapshot, split_episode
from connector.store import clients, product_lines


def _norm(text: Any) -> str:
    return " ".join(str(text or "").split()).casefold()


def matches(c: Consumable, product_id: str, article: str, name: str, group: str) -> bool:
    """Whether a purchase line is this consumable (every comparison ignores case and extra spaces)."""
    m = c.match
    pid, art, nm, grp = _norm(product_id), _norm(article), _norm(name), _norm(group)
    return bool((pid and pid in {_norm(x) for x in m.guid}) or (art and art in {_norm(x) for x in m.article})
                or (nm and nm in {_norm(x) for x in m.name}) or (nm and any(_norm(x) in nm for x in m.name_contains))
                or (grp and grp in {_norm(x) for x in m.group}))


def consumable_of(rule: ReplenishRule, product_id: str, article: str, name: str, group: str) -> Consumable | None:
    """The first configured consumable a line is (a line counts for one consumable only)."""
    return next((c for c in rule.products if matches(c, product_id, article, name, group)), None)


@dataclass
class Bought:
    """One client's purchases of one consumable, by local day: ``{day: quantity}``."""

    client_key: str
    consumable: Consumable
    days: dict[date, float]
    names: dict[date, str]

    def latest(self) -> tuple[date, float]:
        d = max(self.days)
        return d, self.days[d]


def runs_out(c: Consumable, bought: date, quantity: float) -> date:
    return bought + timedelta(days=math.floor(quantity * c.days_per_unit))


def purchases(rule: ReplenishRule, snap: Snapshot, cal: BusinessCalendar) -> dict[tuple[str, str], Bought]:
    """Each client's purchases of each consumable since ``lookback_days``; once per snapshot."""
    cache: dict[str, dict] = snap.__dict__.setdefault("_replenish", {})
    if rule.name in cache:
        return cache[rule.name]
    # the products sold at all are few: match them here, then read only their lines
    ids: set[str] = set()
    names: set[str] = set()
    for pid, art, nm, grp in snap.conn.execute(select(product_lines.c.product_id, product_lines.c.article, product_lines.c.name,
                                                      product_lines.c.group_name).distinct()):
        if consumable_of(rule, pid or "", art or "", nm or "", grp or "") is None:
            continue
        if pid:
            ids.add(pid)
        else:
            names.add(nm or "")
    out: dict[tuple[str, str], Bought] = {}
    if ids or names:
        lines = snap.ev.purchase_lines_q(snap.now - timedelta(days=rule.lookback_days))
        conds = []
        if ids:
            conds.append(lines.c.product_id.in_(sorted(ids)))
        if names:
            conds.append(lines.c.name.in_(sorted(names)))
        q = (select(lines.c.client_key, lines.c.key, lines.c.at, lines.c.system, lines.c.product_id, lines.c.article, lines.c.name,
                    lines.c.group_name, lines.c.quantity, lines.c.line_no)
             .join(clients, clients.c.key == lines.c.client_key)
             .where(*snap.scope(rule.where, kind_of(rule.clients)), or_(*conds)))
        per_system: dict[tuple[str, str, date, str], float] = defaultdict(float)
        label: dict[tuple[str, str, date], str] = {}
        seen: set[tuple[str, str, int]] = set()
        for ck, key, at, system, pid, art, nm, grp, qty, line_no in snap.conn.execute(q):
            if (ck, key, line_no) in seen:
                continue
            seen.add((ck, key, line_no))
            c = consumable_of(rule, pid or "", art or "", nm or "", grp or "")
            if c is None:
                continue
            d = cal.local(aware(at)).date()
            per_system[(ck, c.id, d, system)] += float(qty or 0.0)
            label.setdefault((ck, c.id, d), nm or "")
        by_id = {c.id: c for c in rule.products}
        for (ck, cid, d, _system), qty in per_system.items():
            b = out.setdefault((ck, cid), Bought(ck, by_id[cid], {}, {}))
            b.days[d] = max(b.days.get(d, 0.0), qty)
            b.names[d] = label[(ck, cid, d)]
    cache[rule.name] = out
    return out


def evaluate(rule: ReplenishRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    kind = kind_of(rule.clients)
    today = cal.today(snap.now)
    due: list[tuple[Bought, date, float, date]] = []
    for b in purchases(rule, snap, cal).values():
        bought, qty = b.latest()
        out = runs_out(b.consumable, bought, qty)
        if out - timedelta(days=rule.remind_days_before) <= today <= out + timedelta(days=rule.expire_days):
            due.append((b, bought, qty, out))
    views = snap.clients(sorted({b.client_key for b, *_ in due}))
    findings = []
    for b, bought, qty, out in sorted(due, key=lambda x: (x[0].client_key, x[0].consumable.id)):
        client = views.get(b.client_key)
        if client is None:
            continue
        c = b.consumable
        title = c.title or c.id
        left = (out - today).days
        if left >= 0:
            reason = _("bought {quantity} × {product} on {date}: at {per_unit} days a unit it runs out on {runs_out}, "
                       "in {days} days").format(quantity=fmt_number(qty, 0 if qty.is_integer() else 2), product=title,
                                               date=day(bought), per_unit=fmt_number(c.days_per_unit, 0 if float(c.days_per_unit).is_integer() else 1),
                                               runs_out=day(out), days=left)
        else:
            reason = _("bought {quantity} × {product} on {date}: it ran out on {runs_out}, {days} days ago, and nothing was "
                       "bought since").format(quantity=fmt_number(qty, 0 if qty.is_integer() else 2), product=title, date=day(bought),
                                             runs_out=day(out), days=-left)
        findings.append(Finding(
            subject_key=b.client_key, client=client, period=f"{c.id}@{bought.isoformat()}", reason=reason,
            vars={"product": {"id": c.id, "title": title, "quantity": qty, "days_per_unit": c.days_per_unit,
                              "bought": bought.isoformat(), "runs_out": out.isoformat(), "days_left": left,
                              "name": b.names.get(bought, "")},
                  "days": (today - bought).days},
        ))
    return Evaluation(findings, snap.scope_count(rule.where, kind))


def clear_reason(rule: ReplenishRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    period = split_episode(ep.episode)[2]
    cid, _sep, when = period.partition("@")
    c = next((x for x in rule.products if x.id == cid), None)
    if c is None:
        return _("the product is no longer in the rule")
    try:
        bought = date.fromisoformat(when)
    except ValueError:
        return None
    b = purchases(rule, snap, cal).get((ep.subject_key, cid))
    if b is None:
        return _("the client is no longer in the rule's scope")
    latest, _qty = b.latest()
    if latest > bought:
        return _("bought again: {product} on {date}").format(product=c.title or c.id, date=day(latest))
    out = runs_out(c, bought, b.days.get(bought, 0.0))
    if cal.today(snap.now) > out + timedelta(days=rule.expire_days):
        return _("it ran out on {date} and nothing was bought since: reminders stop").format(date=day(out))
    return None
