"""Lost: a client who bought at least ``min_purchases`` times and then stopped.

A client is lost ``after_days`` after its last purchase (or, with ``auto``, after its own median
interval between purchases times ``auto_factor``, clamped). Each lost episode is keyed by the last
purchase date, so a new purchase ends it (the client is Active again, call-backs stop and the
connector's open win-back tasks are closed). Within an episode call-backs repeat every
``cadence`` days by the client's temperature (warm 14, cold 30): call-back ``n+1`` is due
``cadence`` days after call-back ``n`` was done.

Candidates come from one SQL query (purchases counted and dated per client); the exact test (one
purchase per local day, the automatic threshold) runs for them only.
"""

from __future__ import annotations

import statistics
from datetime import timedelta

from sqlalchemy import select

from connector import i18n, words
from connector.calendar import BusinessCalendar
from connector.config import LostRule
from connector.i18n import _
from connector.rules.base import FINAL_STATES, Evaluation, Finding, Lazy, episode_of, kind_of, local_date
from connector.snapshot import ClientView, EpisodeView, Snapshot, split_episode
from connector.store import clients
from connector.templates import day_var, last_purchase_var


def purchase_days(c: ClientView, cal: BusinessCalendar) -> list:
    """One purchase per local day: a won deal, its paid invoice and the 1C sale are one purchase."""
    seen, out = set(), []
    for when, amount, what in c.purchases:
        day = cal.local(when).date()
        if day not in seen:
            seen.add(day)
            out.append((when, amount, what))
    return out


def threshold_days(rule: LostRule, purchases: list) -> int:
    if rule.after_days != "auto":
        return int(rule.after_days)
    gaps = [(b[0] - a[0]).days for a, b in zip(purchases, purchases[1:], strict=False)]
    if not gaps:
        return rule.auto_max_days
    days = int(statistics.median(gaps) * rule.auto_factor)
    return max(rule.auto_min_days, min(rule.auto_max_days, days))


def cadence_days(rule: LostRule, c: ClientView) -> tuple[int, str]:
    temp = str(c.fields.get(rule.cadence.field, "") or "").strip().lower() if rule.cadence.field else ""
    if temp in rule.cadence.days:
        return rule.cadence.days[temp], temp
    return rule.cadence.default_days, temp or _("unknown")


def evaluate(rule: LostRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    kind = kind_of(rule.clients)
    shortest = int(rule.after_days) if rule.after_days != "auto" else rule.auto_min_days
    ps = snap.ev.purchase_summary_q()
    q = (select(clients.c.key).join(ps, ps.c.client_key == clients.c.key)
         .where(*snap.scope(rule.where, kind), ps.c.n >= rule.min_purchases, ps.c.last <= snap.now - timedelta(days=shortest)))
    keys = [k for (k,) in snap.conn.execute(q.order_by(clients.c.key))]
    views = snap.clients(keys, purchases=True)
    history = snap.journal_for(rule.name, keys)
    findings: list[Finding] = []
    holding: set[str] = set()
    for key, c in views.items():
        purchases = purchase_days(c, cal)
        if len(purchases) < rule.min_purchases:
            continue
        last_when, last_amount, last_what = purchases[-1]
        days = threshold_days(rule, purchases)
        if snap.now < last_when + timedelta(days=days):
            continue
        base = local_date(cal, last_when)
        cadence, temperature = cadence_days(rule, c)
        done_n: dict[int, list] = {}
        for e in history.get(key, []):
            period = split_episode(e.episode)[2]
            if period.startswith(base + "#"):
                done_n.setdefault(int(period.split("#")[1]), []).append(e)
        n = 0
        if done_n:
            n = max(done_n)
            entries = done_n[n]
            if all(e.state in FINAL_STATES for e in entries):
                finished = [e.done_at or e.created_at for e in entries if (e.done_at or e.created_at)]
                last_cb = max(finished) if finished else None
                if last_cb is None or snap.now < last_cb + timedelta(days=cadence):
                    holding.add(episode_of(rule.name, key, base))  # lost still: waiting for the next call-back
                    continue
                n += 1
        silent = (snap.now - last_when).days
        reason = _(
            "bought {purchases} times, the last: {kind} on {date}; no purchase for {silent} days (lost after {days}); "
            "call-back #{n}, every {cadence} days ({temperature})"
        ).format(purchases=len(purchases), kind=words.purchase_kind(last_what), date=day_var(cal.local(last_when)),
                 silent=silent, days=days, n=n + 1, cadence=cadence, temperature=temperature)
        findings.append(Finding(
            subject_key=key, client=c, period=f"{base}#{n}", reason=reason,
            vars={
                "days": silent, "purchases": len(purchases), "cadence_days": cadence, "callback_number": n + 1,
                "temperature": temperature,
                "last_purchase": Lazy(lambda w=last_when, a=last_amount, k=last_what: last_purchase_var(cal.local(w), a, k)),
            },
        ))
    return Evaluation(findings, snap.scope_count(rule.where, kind), holding=holding)


def clear_reason(rule: LostRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    c = snap.clients([ep.subject_key], purchases=True).get(ep.subject_key)
    if c is None:
        return _("the client was deleted or merged")
    base = split_episode(ep.episode)[2].split("#", 1)[0]
    later = [p for p in purchase_days(c, cal) if local_date(cal, p[0]) > base]
    if later:
        when, amount, what = later[-1]
        return _("bought again: {kind} on {date} for {amount}").format(
            kind=words.purchase_kind(what), date=day_var(cal.local(when)), amount=i18n.number(amount))
    return _("the client is no longer in the rule's scope")
