"""Release: a client this connector marked forgotten, still not contacted ``grace_days`` after the
reminder was made, goes to another, active manager from the pool.

Counting starts when the forgotten rule's reminder was actually done (journal), not when the
client became forgotten, so deploying the connector never releases a client overnight. A release
already begun is re-planned with the very same target (its keys are then no-ops and its pending
comment and messages stay pending): the connector's own reassignment is never taken for a manual
move. A client moved by hand since the reminder is left alone, and said so. An empty pool (every
manager inactive or unknown) is a refusal, shown with the client's name.
"""

from __future__ import annotations

from datetime import timedelta

from connector.calendar import BusinessCalendar
from connector.config import ForgottenRule, ReleaseRule
from connector.i18n import _
from connector.rules.base import DONE_STATES, Evaluation, Finding, episode_of, in_scope, person_key
from connector.snapshot import EpisodeView, Snapshot, split_episode
from connector.templates import day_var


def evaluate(rule: ReleaseRule, snap: Snapshot, cal: BusinessCalendar, forgotten: ForgottenRule) -> Evaluation:
    kinds = list(rule.contact_kinds or forgotten.contact_kinds)
    pool = [person_key(snap, p) for p in rule.reassign.to]
    open_eps = snap.open_episodes(forgotten.name)
    entries = snap.episode_entries([e.episode for e in open_eps])
    mine = snap.journal_for(rule.name, [e.subject_key for e in open_eps])
    assigned: dict[str, int] = {}  # releases already made this episode round, for round robin
    for es in snap.journal_for(rule.name).values():
        for e in es:
            if e.type == "reassign" and e.payload:
                assigned[e.payload.get("to")] = assigned.get(e.payload.get("to"), 0) + 1
    load: dict[str, int] | None = None  # clients per manager: counted over every client, so only when a release needs it
    snap.clients([e.subject_key for e in open_eps])
    ev = Evaluation([], 0)
    for ep in open_eps:
        done = [e for e in entries.get(ep.episode, []) if e.type == "task" and e.state in DONE_STATES and e.done_at]
        if not done:
            continue
        c = snap.client(ep.subject_key)
        if c is None or not in_scope(c, rule.where, snap):
            continue
        ev.scope += 1
        period = split_episode(ep.episode)[2]
        own = [e for e in mine.get(c.key, []) if e.episode == episode_of(rule.name, c.key, period) and e.type == "reassign"]
        marked_at = min(e.done_at for e in done)
        if own:  # a release of this episode is under way or done: the same target, the same keys
            p = own[0].payload or {}
            ev.findings.append(_finding(rule, snap, cal, c, period, marked_at, p.get("to"), p.get("from"), kinds))
            continue
        last = c.last_contact(kinds)[0]
        if last is not None and last >= marked_at:
            continue  # contacted after the reminder: the forgotten episode ends, nothing to release
        owner_then = next((e.payload.get("responsible") for e in done if e.payload), None)
        if owner_then and c.responsible_key != owner_then:
            ev.notes.append(_("{client}: moved by hand to {manager} since the reminder; not released").format(
                client=c.title, manager=_name(snap, c.responsible_key)))
            continue
        if snap.now < marked_at + timedelta(days=rule.grace_days):
            continue
        candidates = [p for p in pool if p != c.responsible_key and (m := snap.managers.get(p)) and m.active]
        if not candidates:
            ev.refusals.append(_("{client}: not released: no active manager in the pool {pool} other than the current one").format(
                client=c.title, pool=", ".join(str(x) for x in rule.reassign.to)))
            continue
        if load is None:
            load = dict(snap.load)
        if rule.reassign.strategy == "least_loaded":
            target = min(candidates, key=lambda p: (load.get(p, 0), pool.index(p)))
        else:
            target = min(candidates, key=lambda p: (assigned.get(p, 0), pool.index(p)))
        assigned[target] = assigned.get(target, 0) + 1
        load[target] = load.get(target, 0) + 1
        ev.findings.append(_finding(rule, snap, cal, c, period, marked_at, target, c.responsible_key, kinds))
    ev.scope = max(ev.scope, 1)
    return ev


def _finding(rule: ReleaseRule, snap: Snapshot, cal: BusinessCalendar, c, period: str, marked_at, target, previous,
             kinds: list[str]) -> Finding:
    last = c.last_contact(kinds)[0]
    days = (snap.now - (last or c.created_at or marked_at)).days
    return Finding(
        subject_key=c.key, client=c, period=period,
        reason=_("forgotten since {date} and not contacted for {grace}+ days more (no contact for {days} days); "
                 "moved from {manager}").format(date=day_var(cal.local(marked_at)), grace=rule.grace_days, days=days,
                                                manager=_name(snap, previous)),
        vars={"days": days, "grace_days": rule.grace_days}, reassign_to=target, previous_key=previous,
    )


def _name(snap: Snapshot, key: str | None) -> str:
    m = snap.manager(key)
    return m.name if m else str(key)


def clear_reason(rule: ReleaseRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    """A release ends when its steps are done; it is never cleared from outside."""
    return None
