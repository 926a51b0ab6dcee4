"""Fill a store's journal as a successful ``connector run`` would, so ``plan`` can be timed the day after.

    python bench/dayafter.py CONFIG --now 2026-11-23T09:00:00Z

The issue's "plan the day after a run" needs a journal full of done actions. Writing 22k actions
into a portal takes a portal (``bench/portal.py`` measures that at 5k clients); here the cycle is
the real one (plan, journal, executor: waves, batches, claims, results) and only the sink is a
stand-in that answers every command with success, as a portal that accepted them would. The
store is not synced afterwards, so the created tasks are not mirrored back: the plan the next day
finds every finding already journaled (the journal lookups the issue measured), not new evidence.

Prints the journal's states and the seconds the cycle took; then time the whole process with

    connector plan CONFIG --no-sync --now <the next day>
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select

from connector.config import load_settings
from connector.ports import ActionResult, Context, FixedClock, PlannedAction
from connector.runner import cycle, make_lease, open_store
from connector.store import journal


class AcceptingSink:
    """Answers every command of one system with success, in batches of 50 like the Bitrix24 sink."""

    batch_size = 50

    def __init__(self, system: str):
        self.system = system
        self.calls = 0

    def supports(self, action_type: str) -> bool:
        return True

    def execute_batch(self, actions: list[PlannedAction]) -> dict[str, ActionResult]:
        self.calls += 1
        return {a.key: ActionResult(remote_id=f"bench-{self.calls}-{i}", status="done") for i, a in enumerate(actions)}

    def reconcile_batch(self, actions: list[PlannedAction]) -> dict[str, ActionResult | None]:
        return {a.key: None for a in actions}

    def close(self) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--now", required=True, help="ISO time of the run, e.g. 2026-11-23T09:00:00Z")
    a = ap.parse_args()
    settings = load_settings(a.config)
    store = open_store(settings)
    now = datetime.fromisoformat(a.now.replace("Z", "+00:00"))
    ctx = Context(clock=FixedClock(now), kv_get=store.kv_get, kv_set=store.kv_set)
    systems = {"bitrix24", "onec", "binotel", "sms", "email"}
    sinks = [AcceptingSink(s) for s in sorted(systems)]
    started = time.monotonic()
    with make_lease(settings, store) as lease:
        rep = cycle(settings, store, ctx, execute=True, sync=False, sinks=sinks, lease=lease, force=True)
    took = time.monotonic() - started
    with store.engine.connect() as conn:
        states = Counter(dict(conn.execute(select(journal.c.state, func.count()).group_by(journal.c.state)).all()))
    planned = sum(len(r.actions) for r in rep.plan.rules) if rep.plan else 0
    print(f"planned {planned} actions; journal: {dict(sorted(states.items()))}; "
          f"sink batches: {sum(s.calls for s in sinks)}; cycle {took:.1f} s")


if __name__ == "__main__":
    main()
