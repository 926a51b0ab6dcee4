"""Unpaid: an invoice (Bitrix24 smart invoice or 1C invoice for payment) still unpaid
``overdue_days`` after its due date. Paid means a success stage, or 1C payments covering it;
the episode is the due date, so a moved due date starts over and payment stops the ladder.
"""

from __future__ import annotations

from datetime import timedelta

from connector.calendar import BusinessCalendar
from connector.config import UnpaidRule
from connector.rules.base import Evaluation, Finding, in_scope
from connector.snapshot import Snapshot


def evaluate(rule: UnpaidRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    findings, scope = [], 0
    today = cal.today(snap.now)
    for inv in snap.invoices:
        c = snap.clients.get(inv.client_key or "")
        if c is None or inv.due_date is None or not in_scope(c, rule.where, snap):
            continue
        scope += 1
        if inv.paid or inv.amount < rule.min_amount:
            continue
        overdue = (today - inv.due_date).days
        if today < inv.due_date + timedelta(days=rule.overdue_days):
            continue
        findings.append(
            Finding(
                subject_key=inv.key, client=c, period=inv.due_date.isoformat(),
                reason=f"{inv.title}: {inv.amount:.2f} {inv.currency} due {inv.due_date}, unpaid {overdue} days after due",
                vars={"invoice": {"key": inv.key, "id": inv.key.rsplit(":", 1)[-1], "title": inv.title, "number": inv.number,
                                  "amount": inv.amount, "currency": inv.currency, "due_date": inv.due_date.isoformat(),
                                  "days_overdue": overdue}, "days": overdue},
                # a 1C invoice's manager is a 1C user: tasks go to the CRM client's responsible
                responsible_key=inv.responsible_key if (inv.responsible_key or "").startswith(c.system + ":") else c.responsible_key,
            )
        )
    return Evaluation(findings, scope)
