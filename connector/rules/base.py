"""What every rule returns, and the small helpers rules share.

A rule is ``evaluate(rule, snapshot, calendar) -> Evaluation``: it decides *who* and *why* and
names the episode (``period``); the planner turns findings into actions, keys, texts, deadlines
and escalation steps. Rules ask the snapshot set-based questions (:mod:`connector.evidence`) and
build objects only for candidates. No rule touches an API or writes the store.

``clear_reason`` answers, for an open episode the rule no longer finds, *why* it ended (the
contact, the purchase, the payment) — or ``None`` when absence proves nothing (a missed call that
merely left the lookback window), so that nothing pending is cancelled by mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector.calendar import BusinessCalendar
from connector.config import Where
from connector.i18n import _
from connector.journal import DONE_STATES as _DONE
from connector.journal import FINAL_STATES as _FINAL
from connector.snapshot import ClientView, EpisodeView, Snapshot, family_of

FINAL_STATES = {str(s) for s in _FINAL}
DONE_STATES = {str(s) for s in _DONE}


class Lazy:
    """A template variable built only if one of the rule's templates reads it: a plan of 20k
    findings would otherwise build 20k ``last_purchase`` texts that no text shows."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


@dataclass
class Builtin:
    """An action the rule makes by itself, besides its configured ``actions`` (the rfm field write,
    the recurring invoice): a payload action of ``type`` whose ``render`` keys are templates, or a
    configured-style ``action`` (a TaskAction) rendered like the rule's own. ``first``: the rule's
    configured actions wait for it (an e-mail about an invoice goes only after the invoice)."""

    suffix: str  # the key's last part: rule:subject:period:<suffix>
    type: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    render: tuple[str, ...] = ()
    action: Any = None
    first: bool = False
    system: str | None = None  # the sink it goes to (default: the client's CRM; a company from 1C goes to bitrix24)
    after: list[str] = field(default_factory=list)  # keys of earlier runs or other findings it waits for (a deal after its invoices)
    reason: str | None = None  # its own reason, when it differs from the finding's


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
    actions: list[Any] | None = None  # this finding's own actions instead of the rule's (greetings: the client's channel)
    deadline: datetime | None = None  # tasks are due exactly then (greetings: the end of the day of the call)
    send_at: datetime | None = None  # client messages wait until then, not for the usual quiet days (greetings: on the day)
    builtin: list[Builtin] = field(default_factory=list)  # actions the rule makes itself (before the configured ones)
    configured: bool = True  # False: only the builtin actions (a recurring deal's unpaid-invoice task)


@dataclass
class Evaluation:
    findings: list[Finding]
    scope: int  # how many subjects the rule looked at (for the safety brake's share)
    refusals: list[str] = field(default_factory=list)  # what the rule could not do, with names (never silent)
    notes: list[str] = field(default_factory=list)  # deliberate skips worth showing (a client moved by hand)
    holding: set[str] = field(default_factory=set)  # episode families that still hold with nothing to do now (between call-backs)


def episode_of(rule_name: str, subject: str, period: str) -> str:
    return f"{rule_name}:{subject}:{period}"


def person_key(snap: Snapshot, ident: int | str) -> str:
    """A user id from the config as a manager key of the primary CRM."""
    return snap.person_key(ident)


def in_scope(c: ClientView, where: Where | None, snap: Snapshot) -> bool:
    """The Python twin of :meth:`Snapshot.scope`, for rules whose subjects are few (invoices, debts, calls)."""
    if where is None:
        return True
    if where.segment is not None and (c.segment or "") not in where.segment:
        return False
    if where.responsible is not None and c.responsible_key not in {person_key(snap, r) for r in where.responsible}:
        return False
    if where.not_responsible is not None and c.responsible_key in {person_key(snap, r) for r in where.not_responsible}:
        return False
    for name, wanted in (where.field or {}).items():
        have = c.fields.get(name)
        values = wanted if isinstance(wanted, list) else [wanted]
        if str(have) not in {str(v) for v in values}:
            return False
    if where.rfm is not None and snap.rfm_segment(c.key) not in where.rfm:
        return False
    return True


def kind_of(which: str) -> str:
    return "company" if which == "companies" else "contact"


def local_date(cal: BusinessCalendar, t: datetime) -> str:
    return cal.local(t).date().isoformat()


def default_clear_reason(ep: EpisodeView, snap: Snapshot) -> str | None:
    c = snap.client(ep.client_key) if ep.client_key else None
    if ep.client_key and c is None:
        return _("the client was deleted or merged")
    return _("the condition no longer holds")


__all__ = ["DONE_STATES", "FINAL_STATES", "Builtin", "Evaluation", "Finding", "episode_of", "family_of", "in_scope", "person_key"]
