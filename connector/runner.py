"""One cycle of the main job: sync -> evidence -> plan -> journal -> execute.

``plan`` stops after planning and writes nothing to any external system; ``run`` refuses to
evaluate any rule when a source failed, because a half-synced store makes every client look
forgotten. Sources stamp their cursors with the real clock at the latest (a simulated ``--now``
in the future never makes the next real sync skip data). Only the holder of the store lease
syncs, derives evidence and executes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import insert, update

from connector import evidence
from connector.calendar import BusinessCalendar
from connector.config import Settings
from connector.execute import ExecReport, Executor
from connector.i18n import _
from connector.journal import Journal
from connector.lease import Lease
from connector.matching import primary_system
from connector.plan import Plan, Planner, add_own_actions
from connector.ports import CappedClock, Context, Sink
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
    closed: int = 0  # episodes whose condition cleared
    run_id: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.sync.ok and (self.execution is None or not self.execution.failed)

    @property
    def refused(self) -> list[str]:
        return self.plan.refusals if self.plan is not None else []


def open_store(settings: Settings) -> Store:
    return Store(settings.store, phone_region=settings.phone_region)


def make_context(store: Store, clock) -> Context:
    return Context(clock=clock, kv_get=store.kv_get, kv_set=store.kv_set)


def make_lease(settings: Settings, store: Store, *, wait: float | None = None) -> Lease:
    return Lease(store, ttl=settings.lease_seconds, wait=wait)


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


def cycle(settings: Settings, store: Store, ctx: Context, *, execute: bool, force: bool = False, full: bool = False,
          progress: bool = False, sinks: list[Sink] | None = None, lease: Lease | None = None, sync: bool = True,
          only: set[str] | None = None, should_stop=None) -> CycleReport:
    """One cycle. ``lease`` is held by the caller for ``run`` (and for a ``plan`` that syncs);
    ``should_stop`` is polled between the phases and by the sync between batches (SIGTERM during a
    sync stops it there, before anything is evaluated or executed)."""
    now = ctx.clock.now()
    run_id = _start_run(store, "run" if execute else "plan", now, now)
    if sync:
        sync_ctx = replace(ctx, clock=CappedClock(ctx.clock))
        report = CycleReport(sync=sync_all(settings, store, sync_ctx, full=full, progress=progress, should_stop=should_stop),
                             run_id=run_id)
    else:
        report = CycleReport(sync=SyncReport(), run_id=run_id)
        report.notes.append(_("not synced: evaluated the store as it is"))
    summary: dict = {"sources": {s.system: {"rows": s.rows, "requests": s.requests, "error": s.error} for s in report.sync.sources}}
    if report.sync.stopped:
        report.notes.append(_("Stopped during the sync (signal): nothing was evaluated or executed."))
        _finish_run(store, run_id, "stopped", summary, ctx.clock.now())
        return report
    if not report.sync.ok:
        report.notes.append(_("a source failed: no rule was evaluated and nothing was written"))
        _finish_run(store, run_id, "source_failed", summary, ctx.clock.now())
        return report
    if should_stop is not None and should_stop():
        report.notes.append(_("stopped after the sync (signal): nothing was evaluated or executed"))
        _finish_run(store, run_id, "stopped", summary, ctx.clock.now())
        return report
    if lease is not None and lease.held:
        store.refresh_own()
        rfm = next((r for r in settings.rules if r.type == "rfm"), None)
        spec = evidence.RfmSpec(settings.timezone, rfm.currency, rfm.window_days, tuple(sorted(rfm.rates.items()))) if rfm else None
        evidence.refresh(store, primary_system(settings), rfm=spec)
    cal = BusinessCalendar(settings.calendar, settings.timezone)
    journal = Journal(store)
    with load_snapshot(settings, store, now, call_lookback_hours=_lookback(settings)) as snap:
        report.plan = Planner(settings, snap, cal, journal=journal).plan(force=force, only=only)
        if not only:
            add_own_actions(report.plan, settings, snap, journal)
    summary["planned"] = {r.rule: len(r.actions) for r in report.plan.rules}
    summary["refused"] = report.plan.refusals
    if execute:
        report.recorded, report.closed, report.cancelled = record_plan(journal, report.plan, now, run_id)
        if should_stop is not None and should_stop():
            report.notes.append(_("stopped before executing (signal): the plan is journaled and runs next time"))
        else:
            own_sinks = sinks is None
            active = build_sinks(settings, ctx) if own_sinks else sinks
            try:
                report.execution = Executor(journal, active, ctx.clock, lease=lease).run()
            finally:
                if own_sinks:
                    for s in active:
                        s.close()
            store.refresh_own()
            summary["executed"] = report.execution.by_rule
    _finish_run(store, run_id, "ok" if report.ok else "failed", summary, ctx.clock.now())
    return report


def record_plan(journal: Journal, plan: Plan, now: datetime, run_id: int | None) -> tuple[int, int, int]:
    """Journal a plan: new intents, the episodes they open, the episodes that ended, cancellations.
    Returns (recorded, episodes closed, cancelled)."""
    recorded = closed = 0
    if not plan.refused_run:
        recorded = journal.record(plan.new_actions, now, run_id)
        journal.open_episodes(plan.new_actions, now)
        refused_rules = {r.rule for r in plan.rules if r.refused}
        closed = journal.close_episodes([(c.episode, c.reason) for c in plan.cleared if c.rule not in refused_rules], now)
    by_reason: dict[str, list[str]] = {}
    for key, why in plan.cancel:
        by_reason.setdefault(why, []).append(key)
    cancelled = sum(journal.cancel(keys, now, _("cancelled: {reason}").format(reason=why)) for why, keys in by_reason.items())
    return recorded, closed, cancelled


def _lookback(settings: Settings) -> int:
    hours = [r.lookback_hours for r in settings.rules if r.type == "missed_call"]
    return max(hours + [48])
