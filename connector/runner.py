"""One cycle of the main job: sync -> snapshot -> plan -> journal -> execute.

``plan`` stops after planning and writes nothing anywhere but the local mirror of the sources.
``run`` refuses to evaluate any rule when a source failed, because a half-synced store makes
every client look forgotten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, update

from connector.calendar import BusinessCalendar
from connector.config import Settings
from connector.execute import ExecReport, Executor
from connector.journal import Journal
from connector.plan import Plan, Planner
from connector.ports import Context, Sink
from connector.registry import adapters
from connector.snapshot import load_snapshot
from connector.store import Store, runs
from connector.sync import SyncReport, sync_all

log = logging.getLogger("connector.run")


@dataclass
class CycleReport:
    sync: SyncReport
    plan: Plan | None = None
    execution: ExecReport | None = None
    recorded: int = 0
    cancelled: int = 0
    run_id: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.sync.ok and (self.execution is None or not self.execution.failed)


def open_store(settings: Settings) -> Store:
    return Store(settings.store, phone_region=settings.phone_region)


def make_context(store: Store, clock) -> Context:
    return Context(clock=clock, kv_get=store.kv_get, kv_set=store.kv_set)


def build_sinks(settings: Settings, ctx: Context) -> list[Sink]:
    sinks = []
    for adapter in adapters().values():
        if adapter.configured(settings):
            sink = adapter.sink(settings, ctx)
            if sink is not None:
                sinks.append(sink)
    return sinks


def _start_run(store: Store, command: str, now: datetime, clock_now: datetime) -> int:
    with store.tx() as conn:
        return conn.execute(insert(runs).values(command=command, started_at=now, clock=clock_now, status="running")).inserted_primary_key[0]


def _finish_run(store: Store, run_id: int, status: str, summary: dict, now: datetime) -> None:
    with store.tx() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(status=status, summary=summary, finished_at=now))


def cycle(settings: Settings, store: Store, ctx: Context, *, execute: bool, force: bool = False,
          full: bool = False, progress: bool = False, sinks: list[Sink] | None = None) -> CycleReport:
    now = ctx.clock.now()
    run_id = _start_run(store, "run" if execute else "plan", now, now)
    report = CycleReport(sync=sync_all(settings, store, ctx, full=full, progress=progress), run_id=run_id)
    summary: dict = {"sources": {s.system: {"rows": s.rows, "requests": s.requests, "error": s.error} for s in report.sync.sources}}
    if not report.sync.ok:
        report.notes.append("a source failed: no rule was evaluated and nothing was written")
        _finish_run(store, run_id, "source_failed", summary, ctx.clock.now())
        return report
    cal = BusinessCalendar(settings.calendar, settings.timezone)
    snap = load_snapshot(settings, store, now, call_lookback_hours=_lookback(settings))
    journal = Journal(store)
    report.plan = Planner(settings, snap, cal, known=journal.states()).plan(force=force)
    summary["planned"] = {r.rule: len(r.actions) for r in report.plan.rules}
    if execute:
        if report.plan.refused_run:
            report.notes.append(report.plan.refused_run)
        else:
            report.recorded = journal.record(report.plan.new_actions, now, run_id)
        report.cancelled = journal.cancel(report.plan.cancel, now)
        executor = Executor(journal, sinks if sinks is not None else build_sinks(settings, ctx), ctx.clock)
        report.execution = executor.run()
        summary["executed"] = report.execution.by_rule
    _finish_run(store, run_id, "ok" if report.ok else "failed", summary, ctx.clock.now())
    return report


def _lookback(settings: Settings) -> int:
    hours = [r.lookback_hours for r in settings.rules if r.type == "missed_call"]
    return max(hours + [48])
