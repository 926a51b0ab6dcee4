"""One module per rule; :func:`evaluate` and :func:`clear_reason` dispatch on the rule type."""

from __future__ import annotations

from connector.calendar import BusinessCalendar
from connector.config import ForgottenRule, Settings
from connector.rules import (
    create_missing,
    debtors,
    forgotten,
    greetings,
    invoice_sync,
    lost,
    missed_call,
    order_status,
    recurring,
    release,
    replenish,
    rfm,
    unpaid,
)
from connector.rules.base import Evaluation, Finding, person_key
from connector.snapshot import EpisodeView, Snapshot

__all__ = ["Evaluation", "Finding", "clear_reason", "evaluate"]

MODULES = {"forgotten": forgotten, "release": release, "lost": lost, "unpaid": unpaid, "debtors": debtors,
           "missed_call": missed_call, "greetings": greetings, "rfm": rfm, "replenish": replenish, "recurring": recurring,
           "invoice_sync": invoice_sync, "order_status": order_status, "create_missing": create_missing}


def evaluate(rule, snap: Snapshot, cal: BusinessCalendar, settings: Settings) -> Evaluation:
    if rule.type == "release":
        target = next(r for r in settings.rules if r.name == rule.after and isinstance(r, ForgottenRule))
        return release.evaluate(rule, snap, cal, target)
    if rule.type == "missed_call":
        duty = settings.people.duty_manager or (settings.binotel.duty_manager if settings.binotel else None) or settings.people.supervisor
        return missed_call.evaluate(rule, snap, cal, person_key(snap, duty) if duty is not None else None)
    if rule.type == "create_missing":
        return create_missing.evaluate(rule, snap, cal, settings)
    module = MODULES.get(rule.type)
    if module is None:
        raise ValueError(f"unknown rule type {rule.type}")
    return module.evaluate(rule, snap, cal)


def clear_reason(rule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    """Why an open episode the rule no longer finds has ended; None when its absence proves nothing."""
    return MODULES[rule.type].clear_reason(rule, ep, snap, cal)
