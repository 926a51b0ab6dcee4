"""Forgotten: no contact with a client for longer than ``inactive_days``.

The episode starts the day the client became forgotten (last contact + threshold), so any new
contact moves the start and ends the episode: the mark clears itself. A client with an open task
or planned activity due in the future is kept (vacations, messenger deals), but the connector's
own reminder never counts as such a task.
"""

from __future__ import annotations

from datetime import timedelta

from connector.calendar import BusinessCalendar
from connector.config import ForgottenRule
from connector.rules.base import Evaluation, Finding, clients_of_kind, in_scope, local_date
from connector.snapshot import Snapshot


def evaluate(rule: ForgottenRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    findings = []
    scope = [c for c in clients_of_kind(snap, rule.clients) if in_scope(c, rule.where, snap)]
    for c in scope:
        last, kind = c.last_contact(list(rule.contact_kinds))
        ref = last or c.created_at
        if ref is None:
            continue
        since = ref + timedelta(days=rule.inactive_days)
        if snap.now < since:
            continue
        if rule.keep_while_future_task and c.future_task:
            continue
        days = (snap.now - ref).days
        if last is not None:
            reason = f"no contact for {days} days; last: {kind} on {local_date(cal, last)}"
        else:
            reason = f"no contact ever; created {days} days ago on {local_date(cal, ref)}"
        findings.append(
            Finding(
                subject_key=c.key, client=c, period=local_date(cal, since), reason=reason,
                vars={"days": days, "last_contact": {"kind": kind or "none", "date": local_date(cal, ref)}},
            )
        )
    return Evaluation(findings, len(scope))
