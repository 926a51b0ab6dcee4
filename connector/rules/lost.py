"""Lost: a client who bought at least ``min_purchases`` times and then stopped.

A client is lost ``after_days`` after its last purchase (or, with ``auto``, after its own median
interval between purchases times ``auto_factor``, clamped). Each lost episode is keyed by the last
purchase date, so a new purchase ends it (the client is Active again and call-backs stop). Within
an episode call-backs repeat every ``cadence`` days by the client's temperature (warm 14, cold
30): call-back ``n+1`` is due ``cadence`` days after call-back ``n`` was done.
"""

from __future__ import annotations

import statistics
from datetime import timedelta

from connector.calendar import BusinessCalendar
from connector.config import LostRule
from connector.rules.base import FINAL_STATES, Evaluation, Finding, clients_of_kind, entries_for, in_scope, local_date
from connector.snapshot import ClientView, Snapshot


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
    return rule.cadence.default_days, temp or "unknown"


def evaluate(rule: LostRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    findings = []
    scope = [c for c in clients_of_kind(snap, rule.clients) if in_scope(c, rule.where, snap)]
    for c in scope:
        purchases = purchase_days(c, cal)
        if len(purchases) < rule.min_purchases:
            continue
        last_when, last_amount, last_what = purchases[-1]
        days = threshold_days(rule, purchases)
        lost_since = last_when + timedelta(days=days)
        if snap.now < lost_since:
            continue
        base = local_date(cal, last_when)
        cadence, temperature = cadence_days(rule, c)
        done_n: dict[int, list] = {}
        for e in entries_for(snap, rule.name, c.key):
            period = e.episode.rsplit(":", 1)[-1]
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
                    continue
                n += 1
        silent = (snap.now - last_when).days
        reason = (
            f"bought {len(purchases)} times, last {last_what} on {base}; no purchase for {silent} days "
            f"(lost after {days}); call-back #{n + 1}, every {cadence} days ({temperature})"
        )
        findings.append(
            Finding(
                subject_key=c.key, client=c, period=f"{base}#{n}", reason=reason,
                vars={
                    "days": silent, "purchases": len(purchases), "cadence_days": cadence, "callback_number": n + 1,
                    "temperature": temperature,
                    "last_purchase": {"date": base, "amount": last_amount, "kind": last_what},
                },
            )
        )
    return Evaluation(findings, len(scope))
