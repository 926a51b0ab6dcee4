"""The action journal: intent before the call, result after it, one row per deterministic key.

States and their allowed transitions are written once, in :data:`TRANSITIONS`. Every transition
is a compare-and-set (``UPDATE ... WHERE key IN (...) AND state IN (expected)``), so two
processes can never both move one row, and a row claimed ``in_flight`` names its holder (the
store lease owner plus a claim id). Inserting a key twice is a no-op, so a rerun can never plan a
second copy.

- ``planned -> in_flight -> done | sent -> delivered | failed``;
- ``retry_wait`` between attempts (``ambiguous`` when the remote may have applied the last one:
  the next attempt looks for the action's marker first), ``dead`` when attempts run out;
- ``uncertain`` when an interrupted action's effect cannot be checked remotely (never resent);
- ``cancelled`` when the condition cleared, or a step it depends on failed, before it ran;
- ``skipped`` when no channel is configured for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from connector.ports import ActionResult, PlannedAction
from connector.store import Store, episodes, journal


class State(StrEnum):
    PLANNED = "planned"
    IN_FLIGHT = "in_flight"
    RETRY_WAIT = "retry_wait"
    DONE = "done"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD = "dead"
    UNCERTAIN = "uncertain"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    # adopted (its marker already exists remotely), cancelled, no channel, claimed for execution
    S.PLANNED: frozenset({S.IN_FLIGHT, S.DONE, S.SENT, S.CANCELLED, S.SKIPPED}),
    # found on re-check, cancelled, no channel, claimed again, re-check postponed, gave up, re-check impossible for a message
    S.RETRY_WAIT: frozenset({S.IN_FLIGHT, S.DONE, S.SENT, S.CANCELLED, S.SKIPPED, S.RETRY_WAIT, S.DEAD, S.UNCERTAIN}),
    S.IN_FLIGHT: frozenset({S.DONE, S.SENT, S.DELIVERED, S.FAILED, S.RETRY_WAIT, S.UNCERTAIN, S.DEAD}),
    S.DONE: frozenset(),
    S.SENT: frozenset({S.DELIVERED, S.FAILED}),
}
PENDING = (S.PLANNED, S.RETRY_WAIT, S.IN_FLIGHT)
DONE_STATES = frozenset({S.DONE, S.SENT, S.DELIVERED})
FINAL_STATES = frozenset(set(State) - set(PENDING))
BROKEN_STATES = frozenset({S.FAILED, S.DEAD, S.UNCERTAIN, S.CANCELLED, S.SKIPPED})  # a dependent step must not run


def _check(frm: Iterable[State], to: State) -> tuple[str, ...]:
    frm = tuple(frm)
    for f in frm:
        if to not in TRANSITIONS.get(f, frozenset()):
            raise ValueError(f"journal transition {f} -> {to} is not allowed")
    return tuple(str(f) for f in frm)


@dataclass
class Entry:
    action: PlannedAction
    state: str
    attempts: int
    remote_id: str | None
    ambiguous: bool = False
    holder: str | None = None


@dataclass
class Change:
    """One journal transition to apply: the key, the target state and the values that go with it."""

    key: str
    to: State
    expect: tuple[State, ...]
    result: ActionResult | None = None
    detail: str | None = None
    next_attempt_at: datetime | None = None
    ambiguous: bool = False


class Journal:
    def __init__(self, store: Store):
        self.store = store

    # -- planning side

    def states_for(self, keys: Iterable[str]) -> dict[str, str]:
        """Current state of each of ``keys`` that is in the journal (indexed lookups, not a scan)."""
        wanted = list(dict.fromkeys(keys))
        out: dict[str, str] = {}
        with self.store.tx() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                out.update({k: s for k, s in conn.execute(select(journal.c.key, journal.c.state).where(journal.c.key.in_(chunk)))})
        return out

    def record(self, actions: Iterable[PlannedAction], now: datetime, run_id: int | None) -> int:
        """Insert new intents; keys already present are left untouched. Returns how many were new."""
        rows = [
            {
                "key": a.key, "rule": a.rule, "type": a.type, "system": a.system, "subject_key": a.subject_key,
                "client_key": a.client_key, "payload": {**a.payload, "_title": a.client_title, "_manager": a.manager_name},
                "reason": a.reason, "mode": a.mode, "state": S.PLANNED.value, "attempts": 0, "next_attempt_at": None,
                "not_before": a.not_before, "created_at": now, "updated_at": now, "run_id": run_id,
                "episode": a.key.rsplit(":", 1)[0], "depends_on": a.depends_on or None, "ambiguous": False,
            }
            for a in actions
            if a.mode == "live"
        ]
        if not rows:
            return 0
        if self.store.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        # one statement, many parameter sets (the driver's executemany): a multi-row VALUES of 500 rows
        # was compiled anew for every chunk, 10x slower for a plan of 20k actions
        with self.store.tx() as conn:
            res = conn.execute(insert(journal).on_conflict_do_nothing(index_elements=["key"]), rows)
        counted = res.rowcount
        return counted if counted is not None and 0 <= counted <= len(rows) else len(rows)

    def open_episodes(self, actions: Iterable[PlannedAction], now: datetime) -> int:
        """Record the episodes new actions belong to (a family: a lost client's call-backs are one);
        an episode that had ended and holds again is reopened."""
        rows: dict[str, dict] = {}
        for a in actions:
            last = a.key.rsplit(":", 1)[-1]
            if a.mode != "live" or last.startswith("x"):
                continue
            episode = a.key.rsplit(":", 1)[0].split("#", 1)[0]
            rows.setdefault(episode, {"episode": episode, "rule": a.rule, "subject_key": a.subject_key, "client_key": a.client_key,
                                      "opened_at": now, "closed_at": None, "close_reason": None})
        if not rows:
            return 0
        if self.store.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        with self.store.tx() as conn:
            stmt = insert(episodes).on_conflict_do_update(index_elements=["episode"], set_={"closed_at": None, "close_reason": None})
            conn.execute(stmt, list(rows.values()))
        return len(rows)

    def close_episodes(self, ended: Iterable[tuple[str, str]], now: datetime) -> int:
        """``(episode, reason)``: the episode's condition cleared; its end is kept for reports."""
        n = 0
        with self.store.tx() as conn:
            for episode, reason in ended:
                n += conn.execute(update(episodes).where(episodes.c.episode == episode, episodes.c.closed_at.is_(None))
                                  .values(closed_at=now, close_reason=reason)).rowcount or 0
        return n

    def cancel(self, keys: list[str], now: datetime, why: str = "condition cleared before execution") -> int:
        """Cancel what has not started (``planned``, ``retry_wait``); an in-flight action is left alone."""
        n = 0
        for i in range(0, len(keys), 500):
            n += self._cas(keys[i : i + 500], S.CANCELLED, (S.PLANNED, S.RETRY_WAIT), {"detail": why, "updated_at": now})
        return n

    # -- execution side

    def due(self, now: datetime) -> list[Entry]:
        """In-flight leftovers first (they need reconciling), then what may run now."""
        with self.store.tx() as conn:
            rows = conn.execute(
                select(journal).where(
                    or_(
                        journal.c.state == S.IN_FLIGHT,
                        and_(journal.c.state == S.PLANNED, or_(journal.c.not_before.is_(None), journal.c.not_before <= now)),
                        and_(journal.c.state == S.RETRY_WAIT, or_(journal.c.next_attempt_at.is_(None), journal.c.next_attempt_at <= now)),
                    )
                ).order_by((journal.c.state != S.IN_FLIGHT), journal.c.created_at, journal.c.key)
            ).all()
        return [_entry(r) for r in rows]

    def claim(self, keys: list[str], owner: str, now: datetime) -> set[str]:
        """Move ``keys`` from planned/retry_wait to in_flight for ``owner``; returns the keys it got."""
        if not keys:
            return set()
        claim = f"{owner}/{uuid.uuid4().hex[:8]}"
        expect = _check((S.PLANNED, S.RETRY_WAIT), S.IN_FLIGHT)
        with self.store.tx() as conn:
            for i in range(0, len(keys), 500):
                conn.execute(update(journal).where(journal.c.key.in_(keys[i : i + 500]), journal.c.state.in_(expect))
                             .values(state=S.IN_FLIGHT.value, holder=claim, updated_at=now, attempts=journal.c.attempts + 1))
            got: set[str] = set()
            for i in range(0, len(keys), 500):
                got |= {k for (k,) in conn.execute(select(journal.c.key).where(journal.c.key.in_(keys[i : i + 500]),
                                                                                journal.c.holder == claim))}
        return got

    def apply(self, changes: list[Change], now: datetime) -> set[str]:
        """Apply transitions in one transaction; returns the keys that moved (CAS held)."""
        moved: set[str] = set()
        if not changes:
            return moved
        with self.store.tx() as conn:
            for c in changes:
                expect = _check(c.expect, c.to)
                values: dict[str, Any] = {"state": c.to.value, "updated_at": now, "next_attempt_at": c.next_attempt_at,
                                          "ambiguous": c.ambiguous}
                if c.result is not None:
                    if c.result.remote_id:
                        values["remote_id"] = c.result.remote_id
                    if c.result.remote_key:
                        values["remote_key"] = c.result.remote_key
                    values["detail"] = c.result.detail or None
                if c.detail is not None:
                    values["detail"] = c.detail
                if c.to in (S.DONE, S.SENT):
                    values["done_at"] = (c.result.at if c.result is not None and c.result.at else None) or now
                if c.to is not S.IN_FLIGHT:
                    values["holder"] = None
                res = conn.execute(update(journal).where(journal.c.key == c.key, journal.c.state.in_(expect)).values(**values))
                if res.rowcount == 1:
                    moved.add(c.key)
        return moved

    def sent(self) -> list[Entry]:
        with self.store.tx() as conn:
            rows = conn.execute(select(journal).where(journal.c.state == S.SENT)).all()
        return [_entry(r) for r in rows]

    def states(self) -> dict[str, str]:
        """Every key's state (tests and small stores; planning uses :meth:`states_for`)."""
        with self.store.tx() as conn:
            return {k: s for k, s in conn.execute(select(journal.c.key, journal.c.state))}

    def _cas(self, keys: list[str], to: State, frm: tuple[State, ...], values: dict) -> int:
        expect = _check(frm, to)
        with self.store.tx() as conn:
            res = conn.execute(update(journal).where(journal.c.key.in_(keys), journal.c.state.in_(expect))
                               .values(state=to.value, **values))
            return res.rowcount or 0

    # -- reading

    def rows(self, *, limit: int = 50, states: tuple[str, ...] | None = None) -> list[dict]:
        with self.store.tx() as conn:
            q = select(journal).order_by(journal.c.updated_at.desc(), journal.c.key).limit(limit)
            if states:
                q = q.where(journal.c.state.in_(states))
            return [dict(r._mapping) for r in conn.execute(q)]

    def summary(self) -> dict[str, int]:
        with self.store.tx() as conn:
            return {s: n for s, n in conn.execute(select(journal.c.state, func.count()).group_by(journal.c.state))}


def _entry(r: Any) -> Entry:
    return Entry(action_from_row(r), r.state, r.attempts or 0, r.remote_id, bool(r.ambiguous), r.holder)


def action_from_row(r: Any) -> PlannedAction:
    payload = dict(r.payload or {})
    title = payload.pop("_title", "")
    manager = payload.pop("_manager", "")
    return PlannedAction(
        key=r.key, rule=r.rule, type=r.type, system=r.system, subject_key=r.subject_key, client_key=r.client_key,
        payload=payload, reason=r.reason or "", mode=r.mode or "live", not_before=r.not_before, client_title=title,
        manager_name=manager, depends_on=list(r.depends_on or []),
    )
