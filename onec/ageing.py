"""First-in first-out ageing of a receivable balance against the shipments that made it.

УНФ and УТ 10.3 / УТП keep a customer's receivable as one balance per counterparty (and contract)
with no due dates, so "how overdue" has to be reconstructed. The rule accountants use, and the one
1C's own ageing reports use: payments close the oldest shipments first, so whatever is still owed
sits on the most recent shipments. Each unpaid part is due ``term_days`` after its shipment (the
contract's term where the contract carries one, else a default), and the debt is overdue by its
oldest part whose due date has passed.

Pure functions, no HTTP: the source reads the balance and the shipments, this module decides.
Money is rounded to kopecks (2 decimals) on output only; dates are calendar days in the base's
own time zone. A due date counts as passed from the next day on (``due < today``), the same test
the УТ 11 terms register is read with, so both methods agree on the same base.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

CENT = 0.005


@dataclass(frozen=True)
class Shipment:
    """One posted sales document of the counterparty (``Document_РеализацияТоваровУслуг`` …)."""

    ref: str
    number: str
    day: date
    amount: float
    term_days: int | None = None  # the contract's term; None or <= 0 means "not set", the default applies


@dataclass(frozen=True)
class Part:
    """The unpaid part of one shipment (``ref`` None: owed from before every shipment read)."""

    ref: str | None
    number: str
    day: date
    amount: float
    unpaid: float
    due: date

    def as_dict(self) -> dict:
        """The shape ``debt.documents`` has in the store and in templates (dates as ISO text)."""
        return {"number": self.number, "date": self.day.isoformat(), "amount": round(self.amount, 2),
                "unpaid": round(self.unpaid, 2), "due": self.due.isoformat()}


def term_of(shipment: Shipment, default_term_days: int) -> int:
    return shipment.term_days if shipment.term_days is not None and shipment.term_days > 0 else default_term_days


def age(balance: float, shipments: Iterable[Shipment], *, default_term_days: int, window_start: date) -> list[Part]:
    """Attribute ``balance`` to the newest shipments first; returns the unpaid parts, oldest first.

    A credit or zero balance (an advance, or everything paid) has no parts. When the balance is
    larger than every shipment read since ``window_start``, the rest is older than the window
    (an opening balance, or a shipment before it): it becomes one part dated ``window_start`` and
    due ``default_term_days`` later, i.e. overdue *at least* since then.
    """
    remaining = float(balance)
    if remaining <= CENT:
        return []
    parts: list[Part] = []
    for s in sorted(shipments, key=lambda s: (s.day, s.ref), reverse=True):
        if remaining <= CENT:
            break
        if s.amount <= CENT:
            continue
        unpaid = min(s.amount, remaining)
        remaining -= unpaid
        parts.append(Part(s.ref, s.number, s.day, s.amount, unpaid, s.day + timedelta(days=term_of(s, default_term_days))))
    if remaining > CENT:
        parts.append(Part(None, "", window_start, remaining, remaining, window_start + timedelta(days=default_term_days)))
    return sorted(parts, key=lambda p: (p.day, p.ref or ""))


def with_register_dues(parts: list[Part], buckets: Iterable[tuple[date, float]]) -> list[Part]:
    """The aged parts with the due dates a terms register gives (УТ 11 ``РасчетыСКлиентамиПоСрокам``).

    The register knows when each amount is due but not which shipment it belongs to; both sides
    are newest-first, so the register's latest due amounts are laid over the newest parts. A part
    takes the earliest due date of the amounts laid on it; what the register does not cover keeps
    the contract-term due date.
    """
    pool = sorted(((due, amount) for due, amount in buckets if amount > CENT), reverse=True)
    out: list[Part] = []
    for p in sorted(parts, key=lambda p: (p.day, p.ref or ""), reverse=True):
        need, due = p.unpaid, None
        while need > CENT and pool:
            d, amount = pool[0]
            take = min(need, amount)
            need -= take
            due = d
            if amount - take > CENT:
                pool[0] = (d, amount - take)
            else:
                pool.pop(0)
        out.append(Part(p.ref, p.number, p.day, p.amount, p.unpaid, due or p.due))
    return sorted(out, key=lambda p: (p.day, p.ref or ""))


def overdue(buckets: Iterable[tuple[date, float]], today: date) -> tuple[float, date | None]:
    """``(overdue amount, overdue since)`` of ``(due date, amount)`` buckets as of ``today``.

    ``since`` is the earliest due date among the overdue buckets: the debt is as old as its oldest
    overdue part. Buckets may be negative (an advance against a later due date); they count in the
    amount, which is never below zero.
    """
    total = 0.0
    since: date | None = None
    for due, amount in buckets:
        if due < today:
            total += amount
            if amount > CENT and (since is None or due < since):
                since = due
    total = round(max(total, 0.0), 2)
    return total, since if total > CENT else None
