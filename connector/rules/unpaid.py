"""Unpaid: an invoice (Bitrix24 smart invoice or 1C invoice for payment) still unpaid
``overdue_days`` after its due date. Paid means a success stage, or 1C payments covering it;
the episode is the due date, so a moved due date starts over and payment stops the ladder and
closes the connector's task about it.
"""

from __future__ import annotations

from datetime import timedelta

from connector import i18n
from connector.calendar import BusinessCalendar
from connector.config import UnpaidRule
from connector.i18n import _
from connector.rules.base import Evaluation, Finding, in_scope
from connector.snapshot import EpisodeView, Snapshot, split_episode
from connector.templates import day_var, invoice_var


def evaluate(rule: UnpaidRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    findings, scope = [], 0
    today = cal.today(snap.now)
    # without a where filter the scope is counted in SQL and only invoices already overdue are loaded
    invoices = snap.invoices(due_before=None if rule.where else today - timedelta(days=rule.overdue_days))
    if rule.where is None:  # paid and small invoices are no finding, and the scope is counted in SQL: their clients stay unread
        invoices = [i for i in invoices if not i.paid and i.amount >= rule.min_amount]
    snap.clients([i.client_key for i in invoices if i.client_key])
    for inv in invoices:
        c = snap.client(inv.client_key)
        if c is None or inv.due_date is None or not in_scope(c, rule.where, snap):
            continue
        scope += 1
        if inv.paid or inv.amount < rule.min_amount:
            continue
        overdue = (today - inv.due_date).days
        if today < inv.due_date + timedelta(days=rule.overdue_days):
            continue
        findings.append(Finding(
            subject_key=inv.key, client=c, period=inv.due_date.isoformat(),
            reason=_("{title}: {amount} due {date}, unpaid {days} days after the due date").format(
                title=inv.title, amount=i18n.money(inv.amount, inv.currency), date=day_var(inv.due_date), days=overdue),
            vars={"invoice": invoice_var(key=inv.key, title=inv.title, number=inv.number, amount=inv.amount, currency=inv.currency,
                                         due_date=inv.due_date, days_overdue=overdue), "days": overdue},
            # a 1C invoice's manager is a 1C user: tasks go to the CRM client's responsible
            responsible_key=inv.responsible_key if (inv.responsible_key or "").startswith(c.system + ":") else c.responsible_key,
        ))
    return Evaluation(findings, scope if rule.where else snap.count_invoices())


def clear_reason(rule: UnpaidRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    found = snap.invoices(keys=[ep.subject_key])
    if not found:
        return _("the invoice was deleted or cancelled")
    inv = found[0]
    if inv.paid:
        return _("{title} was paid").format(title=inv.title)
    if inv.due_date is not None and inv.due_date.isoformat() != split_episode(ep.episode)[2]:
        return _("the due date moved to {date}").format(date=day_var(inv.due_date))
    return _("the invoice is no longer in the rule's scope")
