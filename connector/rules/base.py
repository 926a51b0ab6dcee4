"""What every rule returns, and the small helpers rules share.

A rule is a pure function ``evaluate(rule, snapshot, calendar) -> Evaluation``: it decides *who*
and *why* and names the episode (``period``); the planner turns findings into actions, keys,
texts, deadlines and escalation steps. No rule touches the store or an API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector.calendar import BusinessCalendar
from connector.config import Where
from connector.domain import make_key
from connector.snapshot import ClientView, JournalEntry, Snapshot

FINAL_STATES = {"done", "sent", "delivered", "failed", "dead", "cancelled", "skipped", "uncertain", "refused"}
DONE_STATES = {"done", "sent", "delivered"}


@dataclass
class Finding:
    subject_key: str  # client, invoice, debt or phone the episode is about
    client: ClientView | None
    period: str  # identifies the episode: same condition, same period -> same keys
    reason: str
    vars: dict[str, Any] = field(default_factory=dict)  # extra template variables
    responsible_key: str | None = None  # who gets tasks (default: the client's responsible)
    phone: str | None = None  # SMS recipient override (missed calls)
    reassign_to: str | None = None  # release: the new manager
    previous_key: str | None = None  # release: the manager who lost the client


@dataclass
class Evaluation:
    findings: list[Finding]
    scope: int  # how many subjects the rule looked at (for the safety brake's share)


def episode_of(rule_name: str, subject: str, period: str) -> str:
    return f"{rule_name}:{subject}:{period}"


def person_key(snap: Snapshot, ident: int | str) -> str:
    """A user id from the config as a manager key of the primary CRM."""
    text = str(ident)
    return text if text.count(":") >= 2 else make_key(snap.primary, "user", text)


def in_scope(c: ClientView, where: Where | None, snap: Snapshot) -> bool:
    if where is None:
        return True
    if where.segment is not None and (c.segment or "") not in where.segment:
        return False
    if where.responsible is not None and c.responsible_key not in {person_key(snap, r) for r in where.responsible}:
        return False
    if where.not_responsible is not None and c.responsible_key in {person_key(snap, r) for r in where.not_responsible}:
        return False
    if where.field:
        for name, wanted in where.field.items():
            have = c.fields.get(name)
            if isinstance(wanted, list):
                if have not in wanted and str(have) not in map(str, wanted):
                    return False
            elif have != wanted and str(have) != str(wanted):
                return False
    return True


def clients_of_kind(snap: Snapshot, which: str) -> list[ClientView]:
    kind = "company" if which == "companies" else "contact"
    return [c for c in snap.clients.values() if c.kind == kind]


def local_date(cal: BusinessCalendar, t: datetime) -> str:
    return cal.local(t).date().isoformat()


def entries_for(snap: Snapshot, rule_name: str, subject: str) -> list[JournalEntry]:
    return [e for e in snap.journal_by_rule.get(rule_name, []) if e.subject == subject]
