"""Forgotten: no contact with a client for longer than ``inactive_days``.

The episode starts the day the client became forgotten (last contact + threshold), so any new
contact moves the start and ends the episode: the mark clears itself. A client with an open task
or planned activity due in the future is kept (vacations, messenger deals), but the connector's
own reminder never counts as such a task, nor as contact when it is closed.

Which clients qualify is one SQL query over the derived evidence; objects are built only for them.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from connector import words
from connector.calendar import BusinessCalendar
from connector.config import ForgottenRule
from connector.i18n import _, ngettext
from connector.rules.base import Evaluation, Finding, Lazy, kind_of, local_date
from connector.snapshot import EpisodeView, Snapshot, split_episode
from connector.store import clients
from connector.templates import day_var, last_contact_var


def evaluate(rule: ForgottenRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    kind = kind_of(rule.clients)
    scope = snap.scope(rule.where, kind)
    cutoff = snap.now - timedelta(days=rule.inactive_days)
    q = select(clients.c.key).where(*scope, snap.ev.silent_since(rule.contact_kinds, cutoff))
    if rule.keep_while_future_task:
        kept = snap.ev.kept_q()
        q = q.where(clients.c.key.not_in(select(kept.c.client_key)))
    keys = [k for (k,) in snap.conn.execute(q.order_by(clients.c.key))]
    findings = []
    for key, c in snap.clients(keys).items():
        last, last_kind = c.last_contact(rule.contact_kinds)
        ref = last or c.created_at
        if ref is None:
            continue
        since = ref + timedelta(days=rule.inactive_days)
        days = (snap.now - ref).days
        if last is not None:
            reason = ngettext("no contact for {days} day; last contact: {kind} on {date}",
                              "no contact for {days} days; last contact: {kind} on {date}", days).format(
                days=days, kind=words.contact_kind(last_kind), date=day_var(cal.local(last)))
        else:
            reason = ngettext("no contact ever; the client was created {days} day ago, on {date}",
                              "no contact ever; the client was created {days} days ago, on {date}", days).format(
                days=days, date=day_var(cal.local(ref)))
        findings.append(Finding(
            subject_key=key, client=c, period=local_date(cal, since), reason=reason,
            vars={"days": days,
                  "last_contact": Lazy(lambda k=last_kind, w=last: last_contact_var(k, cal.local(w) if w else None))},
        ))
    return Evaluation(findings, snap.scope_count(rule.where, kind))


def clear_reason(rule: ForgottenRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    c = snap.client(ep.subject_key)
    if c is None:
        return _("the client was deleted or merged")
    period = split_episode(ep.episode)[2]
    last, kind = c.last_contact(rule.contact_kinds)
    if last is not None and local_date(cal, last + timedelta(days=rule.inactive_days)) > period:
        return _("contact: {kind} on {date}").format(kind=words.contact_kind(kind), date=day_var(cal.local(last)))
    if rule.keep_while_future_task and c.future_task:
        return _("an open task with a future deadline keeps the client")
    return _("the client is no longer in the rule's scope")
