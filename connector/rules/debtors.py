"""Debtors: a receivable balance (1C) of at least ``min_amount`` overdue ``overdue_days`` or more.
The episode is the date the debt became overdue; when the balance is paid the debt disappears
from the store, the ladder stops and the connector's task about it is closed. ``debt.documents``
are the shipments the balance is made of (oldest first), so a reminder can name them.
"""

from __future__ import annotations

from connector import i18n
from connector.calendar import BusinessCalendar
from connector.config import DebtorsRule
from connector.i18n import _
from connector.rules.base import Evaluation, Finding, in_scope
from connector.snapshot import EpisodeView, Snapshot
from connector.templates import day_var, debt_var


def evaluate(rule: DebtorsRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    findings, scope = [], 0
    today = cal.today(snap.now)
    debts = snap.debts()
    snap.clients([d.client_key for d in debts if d.client_key])
    for debt in debts:
        c = snap.client(debt.client_key)
        if c is None or not in_scope(c, rule.where, snap):
            continue
        scope += 1
        amount = debt.overdue_amount if debt.overdue_amount is not None else debt.amount
        if debt.amount < rule.min_amount or amount <= 0 or debt.overdue_since is None:
            continue
        overdue = (today - debt.overdue_since).days
        if overdue < rule.overdue_days:
            continue
        debt_text = debt_var(amount=round(debt.amount, 2), currency=debt.currency, overdue_amount=round(amount, 2),
                             overdue_since=debt.overdue_since, days_overdue=overdue, documents=debt.documents)
        oldest = next((x for x in debt.documents if x.get("number")), None)
        if oldest:
            reason = _("owes {debt} ({days} days); the oldest unpaid: {number} of {date}, {unpaid} due {due}").format(
                debt=debt_text, days=overdue, number=oldest["number"], date=day_var(oldest.get("date")),
                unpaid=i18n.money(float(oldest.get("unpaid") or 0.0), debt.currency), due=day_var(oldest.get("due")))
        else:
            reason = _("owes {debt} ({days} days)").format(debt=debt_text, days=overdue)
        findings.append(
            Finding(
                subject_key=debt.key, client=c, period=debt.overdue_since.isoformat(), reason=reason,
                vars={"debt": debt_text, "days": overdue},
            )
        )
    return Evaluation(findings, scope)


def clear_reason(rule: DebtorsRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    debt = next((d for d in snap.debts() if d.key == ep.subject_key), None)
    if debt is None or debt.amount <= 0:
        return _("the debt was paid")
    if debt.amount < rule.min_amount:
        return _("the debt fell to {amount}, below {minimum}").format(
            amount=i18n.money(debt.amount, debt.currency), minimum=i18n.money(rule.min_amount, debt.currency))
    return _("the debt is no longer overdue")
