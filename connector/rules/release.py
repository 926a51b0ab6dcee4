"""Release: a client this connector marked forgotten, still not contacted ``grace_days`` after the
reminder was created, goes to another, active manager from the pool.

Counting starts when the forgotten rule's reminder was actually done (journal), not when the
client became forgotten, so deploying the connector never releases a client overnight.
"""

from __future__ import annotations

from datetime import timedelta

from connector.calendar import BusinessCalendar
from connector.config import ForgottenRule, ReleaseRule
from connector.rules.base import DONE_STATES, Evaluation, Finding, in_scope, person_key
from connector.snapshot import Snapshot


def evaluate(rule: ReleaseRule, snap: Snapshot, cal: BusinessCalendar, forgotten: ForgottenRule) -> Evaluation:
    kinds = list(rule.contact_kinds or forgotten.contact_kinds)
    pool = [person_key(snap, p) for p in rule.reassign.to]
    assigned: dict[str, int] = {}
    for e in snap.journal_by_rule.get(rule.name, []):  # releases already made, for round robin
        if e.type == "reassign" and e.payload:
            assigned[e.payload.get("to")] = assigned.get(e.payload.get("to"), 0) + 1
    load = dict(snap.load)
    episodes: dict[str, list] = {}
    for e in snap.journal_by_rule.get(forgotten.name, []):
        episodes.setdefault(e.episode, []).append(e)
    findings, scope = [], 0
    for episode, entries in sorted(episodes.items()):
        done = [e for e in entries if e.type == "task" and e.state in DONE_STATES and e.done_at]
        if not done:
            continue
        subject = entries[0].subject
        c = snap.clients.get(subject)
        if c is None or not in_scope(c, rule.where, snap):
            continue
        scope += 1
        marked_at = min(e.done_at for e in done)
        last, kind = c.last_contact(kinds)
        if last is not None and last >= marked_at:
            continue  # contacted after the reminder: the episode is over
        owner_then = next((e.payload.get("responsible") for e in done if e.payload), None)
        if owner_then and c.responsible_key != owner_then:
            continue  # someone already moved the client by hand
        if snap.now < marked_at + timedelta(days=rule.grace_days):
            continue
        candidates = [p for p in pool if p != c.responsible_key and (m := snap.managers.get(p)) and m.active]
        if not candidates:
            continue
        if rule.reassign.strategy == "least_loaded":
            target = min(candidates, key=lambda p: (load.get(p, 0), pool.index(p)))
        else:
            target = min(candidates, key=lambda p: (assigned.get(p, 0), pool.index(p)))
        assigned[target] = assigned.get(target, 0) + 1
        load[target] = load.get(target, 0) + 1
        days = (snap.now - (last or c.created_at or marked_at)).days
        prev = snap.managers.get(c.responsible_key or "")
        findings.append(
            Finding(
                subject_key=c.key, client=c, period=episode.rsplit(":", 1)[-1],
                reason=f"forgotten since {cal.local(marked_at).date()} and not contacted for {rule.grace_days}+ days more "
                f"(no contact for {days} days); moved from {prev.name if prev else c.responsible_key}",
                vars={"days": days, "grace_days": rule.grace_days},
                reassign_to=target, previous_key=c.responsible_key,
            )
        )
    return Evaluation(findings, max(scope, 1))
