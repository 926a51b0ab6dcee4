"""One module per rule; :func:`evaluate` dispatches on the rule type."""

from __future__ import annotations

from connector.calendar import BusinessCalendar
from connector.config import ForgottenRule, Settings
from connector.rules import debtors, forgotten, lost, missed_call, release, unpaid
from connector.rules.base import Evaluation, Finding, person_key
from connector.snapshot import Snapshot

__all__ = ["evaluate", "Evaluation", "Finding"]


def evaluate(rule, snap: Snapshot, cal: BusinessCalendar, settings: Settings) -> Evaluation:
    if rule.type == "forgotten":
        return forgotten.evaluate(rule, snap, cal)
    if rule.type == "release":
        target = next(r for r in settings.rules if r.name == rule.after and isinstance(r, ForgottenRule))
        return release.evaluate(rule, snap, cal, target)
    if rule.type == "lost":
        return lost.evaluate(rule, snap, cal)
    if rule.type == "unpaid":
        return unpaid.evaluate(rule, snap, cal)
    if rule.type == "debtors":
        return debtors.evaluate(rule, snap, cal)
    if rule.type == "missed_call":
        duty = settings.people.duty_manager or (settings.binotel.duty_manager if settings.binotel else None) or settings.people.supervisor
        return missed_call.evaluate(rule, snap, cal, person_key(snap, duty) if duty is not None else None)
    raise ValueError(f"unknown rule type {rule.type}")
