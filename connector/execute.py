"""Executes due journal entries through the sinks, exactly once.

Order of events per action: ``in_flight`` is committed *before* the remote call and the result
*after* it. An entry found ``in_flight`` at start-up was interrupted (crash, kill -9): the sink
reconciles it with the remote system (the action's marker) before anything is retried; when the
remote cannot tell, the entry becomes ``uncertain`` and is reported, never resent.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta

from connector.errors import ConnectorError, PermanentError, RateLimited, TransientError, UpstreamError
from connector.journal import Journal
from connector.ports import ActionResult, Clock, PlannedAction, Sink

log = logging.getLogger("connector.execute")

MAX_ATTEMPTS = 5
MESSAGE_TYPES = {"sms", "email", "notify"}


@dataclass
class ExecReport:
    done: int = 0
    reconciled: int = 0
    retry: int = 0
    failed: int = 0
    uncertain: int = 0
    skipped: int = 0
    delivered: int = 0
    by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def count(self, rule: str, what: str) -> None:
        self.by_rule.setdefault(rule, {}).setdefault(what, 0)
        self.by_rule[rule][what] += 1


class Executor:
    def __init__(self, journal: Journal, sinks: list[Sink], clock: Clock):
        self.journal = journal
        self.sinks = sinks
        self.clock = clock
        self._calls = 0
        # Test hook: SIGKILL this process right after the N-th remote call returns, before its
        # result is recorded -- the worst moment for a crash. Used by the kill -9 end-to-end test.
        kill = os.environ.get("CONNECTOR_TEST_KILL_AFTER_CALLS")
        self._kill_after = int(kill) if kill else None

    def sink_for(self, action: PlannedAction) -> Sink | None:
        for s in self.sinks:
            if s.system == action.system and s.supports(action.type):
                return s
        return None

    def run(self) -> ExecReport:
        rep = ExecReport()
        for entry in self.journal.due(self.clock.now()):
            a = entry.action
            now = self.clock.now()
            sink = self.sink_for(a)
            if sink is None:
                self.journal.mark(a.key, "skipped", now, detail=f"no sink for {a.type} on {a.system}: channel not configured")
                rep.skipped += 1
                rep.count(a.rule, "skipped")
                continue
            if entry.state == "in_flight":
                try:
                    found = sink.reconcile(a)
                except ConnectorError as e:
                    if a.type in MESSAGE_TYPES or isinstance(e, PermanentError):
                        self.journal.mark(a.key, "uncertain", now, detail=f"interrupted; cannot verify remotely, not resent: {e}")
                        rep.uncertain += 1
                        rep.count(a.rule, "uncertain")
                        rep.problems.append(f"{a.key}: uncertain after a crash ({e})")
                        continue
                    self._retry(a, entry.attempts, e, rep)
                    continue
                if found is not None:
                    self.journal.mark(a.key, found.status if found.status in ("done", "sent", "delivered") else "done", now, result=found,
                                      detail="reconciled after interruption")
                    rep.reconciled += 1
                    rep.count(a.rule, "done")
                    continue
            self.journal.mark(a.key, "in_flight", now, bump_attempts=True)
            try:
                result = sink.execute(a)
            except TransientError as e:
                self._maybe_die()
                self._retry(a, entry.attempts + 1, e, rep)
                continue
            except UpstreamError as e:
                self._maybe_die()
                self.journal.mark(a.key, "failed", self.clock.now(), detail=str(e))
                rep.failed += 1
                rep.count(a.rule, "failed")
                rep.problems.append(f"{a.key}: {e}")
                continue
            self._maybe_die()
            state = result.status if result.status in ("done", "sent", "delivered") else "done"
            if result.status == "failed":
                state = "failed"
            self.journal.mark(a.key, state, self.clock.now(), result=result)
            if state == "failed":
                rep.failed += 1
                rep.count(a.rule, "failed")
            else:
                rep.done += 1
                rep.count(a.rule, "done")
        self._track_delivery(rep)
        return rep

    def _maybe_die(self) -> None:
        self._calls += 1
        if self._kill_after is not None and self._calls >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def _retry(self, a: PlannedAction, attempts: int, e: Exception, rep: ExecReport) -> None:
        now = self.clock.now()
        if attempts >= MAX_ATTEMPTS:
            self.journal.mark(a.key, "dead", now, detail=f"gave up after {attempts} attempts: {e}")
            rep.failed += 1
            rep.count(a.rule, "dead")
            rep.problems.append(f"{a.key}: dead after {attempts} attempts ({e})")
            return
        wait = timedelta(minutes=2 ** max(attempts - 1, 0))
        if isinstance(e, RateLimited) and e.retry_after:
            wait = max(wait, timedelta(seconds=e.retry_after))
        self.journal.mark(a.key, "retry_wait", now, detail=str(e), next_attempt_at=now + wait)
        rep.retry += 1
        rep.count(a.rule, "retry")

    def _track_delivery(self, rep: ExecReport) -> None:
        sent = self.journal.sent()
        by_sink: dict[int, tuple[Sink, list[tuple[str, str]]]] = {}
        for entry in sent:
            sink = self.sink_for(entry.action)
            if sink is None or not hasattr(sink, "delivery") or not entry.remote_id:
                continue
            by_sink.setdefault(id(sink), (sink, []))[1].append((entry.action.key, entry.remote_id))
        for sink, items in by_sink.values():
            try:
                results: dict[str, ActionResult] = sink.delivery(items)  # type: ignore[attr-defined]
            except UpstreamError as e:
                rep.problems.append(f"delivery status from {sink.system}: {e}")
                continue
            for key, res in results.items():
                if res.status in ("delivered", "failed"):
                    self.journal.mark(key, res.status, self.clock.now(), result=res)
                    if res.status == "delivered":
                        rep.delivered += 1
