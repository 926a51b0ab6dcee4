"""The action journal: intent before the call, result after it, one row per deterministic key.

States: ``planned -> in_flight -> done | sent -> delivered | failed``, with ``retry_wait`` between
attempts, ``dead`` when attempts run out, ``uncertain`` when a crash left an action whose effect
cannot be checked remotely (never resent), ``cancelled`` when the condition cleared before it was
executed. Inserting a key twice is a no-op, so a rerun can never plan a second copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update

from connector.ports import ActionResult, PlannedAction
from connector.store import Store, journal

PENDING = ("planned", "retry_wait", "in_flight")


@dataclass
class Entry:
    action: PlannedAction
    state: str
    attempts: int
    remote_id: str | None


class Journal:
    def __init__(self, store: Store):
        self.store = store

    def states(self) -> dict[str, str]:
        with self.store.tx() as conn:
            return {k: s for k, s in conn.execute(select(journal.c.key, journal.c.state))}

    def record(self, actions: Iterable[PlannedAction], now: datetime, run_id: int | None) -> int:
        """Insert new intents; keys already present are left untouched. Returns how many were new."""
        rows = [
            {
                "key": a.key, "rule": a.rule, "type": a.type, "system": a.system, "subject_key": a.subject_key,
                "client_key": a.client_key, "payload": {**a.payload, "_title": a.client_title, "_manager": a.manager_name},
                "reason": a.reason, "mode": a.mode, "state": "planned", "attempts": 0, "next_attempt_at": None,
                "not_before": a.not_before, "created_at": now, "updated_at": now, "run_id": run_id,
                "episode": a.key.rsplit(":", 1)[0],
            }
            for a in actions
            if a.mode == "live"
        ]
        if not rows:
            return 0
        with self.store.tx() as conn:
            existing = {k for (k,) in conn.execute(select(journal.c.key).where(journal.c.key.in_([r["key"] for r in rows])))}
            fresh = [r for r in rows if r["key"] not in existing]
            if fresh:
                if self.store.engine.dialect.name == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert
                else:
                    from sqlalchemy.dialects.sqlite import insert
                for i in range(0, len(fresh), 500):
                    conn.execute(insert(journal).values(fresh[i : i + 500]).on_conflict_do_nothing(index_elements=["key"]))
            return len(fresh)

    def cancel(self, keys: list[str], now: datetime, why: str = "condition cleared before execution") -> int:
        if not keys:
            return 0
        with self.store.tx() as conn:
            res = conn.execute(
                update(journal).where(journal.c.key.in_(keys), journal.c.state.in_(("planned", "retry_wait")))
                .values(state="cancelled", detail=why, updated_at=now)
            )
            return res.rowcount or 0

    def due(self, now: datetime) -> list[Entry]:
        """In-flight leftovers first (they need reconciling), then what may run now."""
        with self.store.tx() as conn:
            rows = conn.execute(
                select(journal).where(
                    or_(
                        journal.c.state == "in_flight",
                        and_(journal.c.state == "planned", or_(journal.c.not_before.is_(None), journal.c.not_before <= now)),
                        and_(journal.c.state == "retry_wait", or_(journal.c.next_attempt_at.is_(None), journal.c.next_attempt_at <= now)),
                    )
                ).order_by((journal.c.state != "in_flight"), journal.c.created_at, journal.c.key)
            ).all()
        return [Entry(_action(r), r.state, r.attempts or 0, r.remote_id) for r in rows]

    def sent(self) -> list[Entry]:
        with self.store.tx() as conn:
            rows = conn.execute(select(journal).where(journal.c.state == "sent")).all()
        return [Entry(_action(r), r.state, r.attempts or 0, r.remote_id) for r in rows]

    def mark(self, key: str, state: str, now: datetime, *, result: ActionResult | None = None, detail: str | None = None,
             next_attempt_at: datetime | None = None, bump_attempts: bool = False) -> None:
        values: dict = {"state": state, "updated_at": now}
        if result is not None:
            if result.remote_id:
                values["remote_id"] = result.remote_id
            values["detail"] = result.detail or None
        if detail is not None:
            values["detail"] = detail
        if state in ("done", "sent", "delivered"):
            values["done_at"] = now
        if state == "delivered":
            values.pop("done_at")
        values["next_attempt_at"] = next_attempt_at
        with self.store.tx() as conn:
            stmt = update(journal).where(journal.c.key == key).values(**values)
            if bump_attempts:
                stmt = stmt.values(attempts=journal.c.attempts + 1)
            conn.execute(stmt)

    def rows(self, *, limit: int = 50, states: tuple[str, ...] | None = None) -> list[dict]:
        with self.store.tx() as conn:
            q = select(journal).order_by(journal.c.updated_at.desc(), journal.c.key).limit(limit)
            if states:
                q = q.where(journal.c.state.in_(states))
            return [dict(r._mapping) for r in conn.execute(q)]

    def summary(self) -> dict[str, int]:
        from sqlalchemy import func

        with self.store.tx() as conn:
            return {s: n for s, n in conn.execute(select(journal.c.state, func.count()).group_by(journal.c.state))}


def _action(r) -> PlannedAction:
    payload = dict(r.payload or {})
    title = payload.pop("_title", "")
    manager = payload.pop("_manager", "")
    return PlannedAction(
        key=r.key, rule=r.rule, type=r.type, system=r.system, subject_key=r.subject_key, client_key=r.client_key,
        payload=payload, reason=r.reason or "", mode=r.mode or "live", not_before=r.not_before, client_title=title,
        manager_name=manager,
    )
