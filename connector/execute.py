"""Executes due journal entries through the sinks, exactly once, many per request.

One cycle:

1. **Adopt.** An action whose marker already exists in the synced data (a task or comment the
   connector made before a crash, or from another store) is recorded ``done``, not made again.
2. **Re-check.** Entries left ``in_flight`` by a dead process, and retries after an *ambiguous*
   failure (a timeout or 5xx after which the remote may still apply the write), are looked up
   remotely first (``reconcile_batch``). A message whose fate cannot be checked becomes
   ``uncertain`` and is never resent.
3. **Execute in waves.** An episode's steps run in dependency order (the reassignment before the
   messages about it): a step runs only when every step it depends on is done, and is cancelled
   when one of them failed. Each wave hands every sink all its runnable actions; the sink packs
   them into batches (``batch_size``). A batch is claimed ``in_flight`` (compare-and-set) *before*
   the call and every action's own result is recorded in one transaction *after* it.

The executor acts only while it holds the store lease (checked before every remote call).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from connector import words
from connector.errors import PermanentError, RateLimited, TransientError, UpstreamError
from connector.i18n import _
from connector.journal import BROKEN_STATES, DONE_STATES, Change, Entry, Journal, State
from connector.ports import ActionResult, Clock, DeliveryTracking, PlannedAction, Sink

log = logging.getLogger("connector.execute")

MAX_ATTEMPTS = 5
# Actions that leave nothing remote to check: when their outcome is unknown they are never resent.
AT_MOST_ONCE = {"sms", "email", "notify", "trigger", "workflow"}
SETTLE = timedelta(minutes=2)  # an ambiguous write is looked for again only after the remote had time to apply it
S = State


@dataclass
class ExecReport:
    done: int = 0
    adopted: int = 0
    reconciled: int = 0
    retry: int = 0
    failed: int = 0
    uncertain: int = 0
    skipped: int = 0
    cancelled: int = 0
    deferred: int = 0
    delivered: int = 0
    requests: int = 0  # sink calls made (one batch = one)
    by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # deferrals and cancellations worth showing, with names

    def count(self, rule: str, what: str, n: int = 1) -> None:
        self.by_rule.setdefault(rule, {}).setdefault(what, 0)
        self.by_rule[rule][what] += n


class Executor:
    def __init__(self, journal: Journal, sinks: list[Sink], clock: Clock, *, lease=None, owner: str = "local",
                 find_markers=None, settle: timedelta = SETTLE):
        self.journal = journal
        self.sinks = sinks
        self.clock = clock
        self.lease = lease  # connector.lease.Lease or None (unit tests)
        self.owner = lease.owner if lease is not None else owner
        self.find_markers = find_markers if find_markers is not None else journal.store.find_markers
        self.settle = settle

    def sink_for(self, action: PlannedAction) -> Sink | None:
        for s in self.sinks:
            if s.system == action.system and s.supports(action.type):
                return s
        return None

    # ------------------------------------------------------------------ the cycle

    def run(self) -> ExecReport:
        rep = ExecReport()
        now = self.clock.now()
        entries = {e.action.key: e for e in self.journal.due(now)}
        self._adopt(entries, rep)
        self._recheck(entries, rep)
        self._waves(entries, rep)
        self._track_delivery(rep)
        return rep

    # ------------------------------------------------------------------ 1. adopt

    def _adopt(self, entries: dict[str, Entry], rep: ExecReport) -> None:
        if not entries:
            return
        found = self.find_markers([e.action.marker for e in entries.values()])
        changes = []
        for key, e in list(entries.items()):
            hit = found.get(e.action.marker)
            if hit is None:
                continue
            remote_key, at = hit
            at = min(at, self.clock.now()) if at is not None else None  # a simulated now: never done in its future
            res = ActionResult(remote_id=remote_key.rsplit(":", 1)[-1], remote_key=remote_key, at=at,
                               detail=_("already exists ({remote}): adopted, not made again").format(remote=remote_key))
            changes.append(Change(key, S.DONE, (State(e.state),), result=res))
        moved = self.journal.apply(changes, self.clock.now())
        for key in moved:
            e = entries.pop(key)
            rep.adopted += 1
            rep.count(e.action.rule, "adopted")
            self._log(e.action, "adopted", key)

    # ------------------------------------------------------------------ 2. re-check

    def _recheck(self, entries: dict[str, Entry], rep: ExecReport) -> None:
        now = self.clock.now()
        todo = [e for e in entries.values() if e.state == S.IN_FLIGHT or (e.state == S.RETRY_WAIT and e.ambiguous)]
        by_sink: dict[int, tuple[Sink, list[Entry]]] = {}
        for e in todo:
            sink = self.sink_for(e.action)
            if sink is not None:
                by_sink.setdefault(id(sink), (sink, []))[1].append(e)
        for sink, items in by_sink.values():
            for chunk in _chunks(items, max(1, sink.batch_size)):
                if not self._may_call():
                    return
                try:
                    found = sink.reconcile_batch([e.action for e in chunk])
                except UpstreamError as err:  # the whole lookup failed: nothing learned
                    found = {e.action.key: err for e in chunk}
                rep.requests += 1
                changes: list[Change] = []
                for e in chunk:
                    a = e.action
                    res = found.get(a.key)
                    frm = (State(e.state),)
                    if isinstance(res, ActionResult):
                        to = State(res.status) if res.status in ("done", "sent", "delivered") else S.DONE
                        changes.append(Change(a.key, to, frm, result=res, detail=res.detail or _("found remotely after an interruption")))
                    elif res is None and a.key in found:
                        # certainly not done: eligible to run now (an in-flight leftover goes back to retry_wait first)
                        if e.state == S.IN_FLIGHT:
                            changes.append(Change(a.key, S.RETRY_WAIT, frm, detail=_("interrupted before it happened remotely")))
                        e.ambiguous = False
                    else:
                        err = res if isinstance(res, UpstreamError) else TransientError(_("no answer for this action"), system=sink.system)
                        changes.append(self._cannot_tell(e, err))
                moved = self.journal.apply(changes, now)
                for c in changes:
                    e = entries[c.key]
                    if c.key not in moved:
                        entries.pop(c.key)  # somebody else moved it: leave it alone
                        continue
                    if c.to in DONE_STATES:
                        entries.pop(c.key)
                        rep.reconciled += 1
                        rep.count(e.action.rule, "done")
                        self._log(e.action, "reconciled", c.key, c.result)
                    elif c.to == S.RETRY_WAIT and not c.ambiguous and c.next_attempt_at is None:
                        e.state = S.RETRY_WAIT  # runs in this cycle's waves
                    else:
                        entries.pop(c.key)
                        self._count_failure(e.action, c, rep)

    def _cannot_tell(self, e: Entry, err: UpstreamError) -> Change:
        a, frm = e.action, (State(e.state),)
        if a.type in AT_MOST_ONCE or isinstance(err, PermanentError):
            return Change(a.key, S.UNCERTAIN, frm, detail=_("interrupted; cannot verify remotely, not resent: {error}").format(error=err))
        if e.attempts >= MAX_ATTEMPTS:
            return Change(a.key, S.DEAD, frm, detail=_("gave up after {n} attempts; the last one could not be verified: {error}").format(
                n=e.attempts, error=err))
        return Change(a.key, S.RETRY_WAIT, frm, detail=_("could not verify yet: {error}").format(error=err), ambiguous=True,
                      next_attempt_at=self.clock.now() + self.settle)

    # ------------------------------------------------------------------ 3. waves

    def _waves(self, entries: dict[str, Entry], rep: ExecReport) -> None:
        waiting = {k: e for k, e in entries.items() if e.state in (S.PLANNED, S.RETRY_WAIT)}
        deps = {d for e in waiting.values() for d in e.action.depends_on}
        dep_state = self.journal.states_for(deps) if deps else {}
        while waiting:
            runnable, cancel = [], []
            for e in waiting.values():
                states = [dep_state.get(d) for d in e.action.depends_on]
                broken = [d for d, s in zip(e.action.depends_on, states, strict=True) if s in BROKEN_STATES]
                if broken:
                    cancel.append((e, broken))
                elif all(s in DONE_STATES for s in states):
                    runnable.append(e)
            for e, broken in cancel:
                waiting.pop(e.action.key)
                why = _("not sent: the step it depends on did not happen ({keys})").format(keys=", ".join(broken))
                if self.journal.apply([Change(e.action.key, S.CANCELLED, (State(e.state),), detail=why)], self.clock.now()):
                    rep.cancelled += 1
                    rep.count(e.action.rule, "cancelled")
                    rep.notes.append(_("{rule}: {client}: {action}: {reason}").format(
                        rule=e.action.rule, client=e.action.client_title or e.action.subject_key, action=words.action(e.action.type),
                        reason=why))
            if not runnable:
                break
            for e in runnable:
                waiting.pop(e.action.key)
            for key, state in self._execute(runnable, rep).items():
                dep_state[key] = state
            if not self._may_call(quiet=True):
                break
        for e in waiting.values():
            rep.deferred += 1
            rep.count(e.action.rule, "deferred")
            rep.notes.append(_("{rule}: {client}: {action} waits for {keys}").format(
                rule=e.action.rule, client=e.action.client_title or e.action.subject_key, action=words.action(e.action.type),
                keys=", ".join(e.action.depends_on)))

    def _execute(self, entries: list[Entry], rep: ExecReport) -> dict[str, str]:
        """Run one wave; returns the new state of every action it touched."""
        states: dict[str, str] = {}
        by_sink: dict[int, tuple[Sink, list[Entry]]] = {}
        now = self.clock.now()
        skipped = []
        for e in entries:
            sink = self.sink_for(e.action)
            if sink is None:
                skipped.append(e)
            else:
                by_sink.setdefault(id(sink), (sink, []))[1].append(e)
        for e in skipped:
            a = e.action
            why = _("no sink for {action} on {system}: channel not configured").format(action=words.action(a.type), system=a.system)
            if self.journal.apply([Change(a.key, S.SKIPPED, (State(e.state),), detail=why)], now):
                states[a.key] = S.SKIPPED
                rep.skipped += 1
                rep.count(a.rule, "skipped")
                rep.notes.append(_("{rule}: {client}: {action} skipped ({reason})").format(
                    rule=a.rule, client=a.client_title or a.subject_key, action=words.action(a.type), reason=why))
        for sink, items in by_sink.values():
            for chunk in _chunks(items, max(1, sink.batch_size)):
                if not self._may_call():
                    return states
                claimed = self.journal.claim([e.action.key for e in chunk], self.owner, self.clock.now())
                batch = [e for e in chunk if e.action.key in claimed]
                if not batch:
                    continue
                try:
                    outcomes = sink.execute_batch([e.action for e in batch])
                except UpstreamError as err:  # the request as a whole failed; each action shares its fate
                    outcomes = {e.action.key: err for e in batch}
                rep.requests += 1
                changes = [self._outcome(e, outcomes.get(e.action.key)) for e in batch]
                moved = self.journal.apply(changes, self.clock.now())
                for c, e in zip(changes, batch, strict=True):
                    if c.key not in moved:
                        continue
                    states[c.key] = c.to
                    if c.to in DONE_STATES:
                        rep.done += 1
                        rep.count(e.action.rule, "done")
                        self._log(e.action, "done", c.key, c.result)
                    else:
                        self._count_failure(e.action, c, rep)
        return states

    def _outcome(self, e: Entry, out: ActionResult | UpstreamError | None) -> Change:
        a = e.action
        attempts = e.attempts + 1
        frm = (S.IN_FLIGHT,)
        if isinstance(out, ActionResult):
            if out.status == "failed":
                return Change(a.key, S.FAILED, frm, result=out)
            to = State(out.status) if out.status in ("done", "sent", "delivered") else S.DONE
            return Change(a.key, to, frm, result=out)
        if out is None:  # the sink said nothing about it: it may or may not have happened
            out = TransientError(_("no result returned for this action"), system=a.system, obj=a.key, ambiguous=True)
        if isinstance(out, TransientError):
            ambiguous = bool(out.ambiguous)
            if ambiguous and a.type in AT_MOST_ONCE:
                return Change(a.key, S.UNCERTAIN, frm, detail=_("outcome unknown, not resent: {error}").format(error=out))
            if attempts >= MAX_ATTEMPTS:
                return Change(a.key, S.DEAD, frm, detail=_("gave up after {n} attempts: {error}").format(n=attempts, error=out))
            wait = timedelta(minutes=2 ** max(attempts - 1, 0))
            if isinstance(out, RateLimited) and out.retry_after:
                wait = max(wait, timedelta(seconds=out.retry_after))
            if ambiguous:
                wait = max(wait, self.settle)
            return Change(a.key, S.RETRY_WAIT, frm, detail=str(out), next_attempt_at=self.clock.now() + wait, ambiguous=ambiguous)
        if out.ambiguous:
            return Change(a.key, S.UNCERTAIN, frm, detail=_("outcome unknown, not resent: {error}").format(error=out))
        return Change(a.key, S.FAILED, frm, detail=str(out))

    def _count_failure(self, a: PlannedAction, c: Change, rep: ExecReport) -> None:
        who = a.client_title or a.subject_key
        if c.to == S.RETRY_WAIT:
            rep.retry += 1
            rep.count(a.rule, "retry")
            log.warning("%s %s for %s will be retried: %s", a.rule, a.type, who, c.detail)
        elif c.to == S.UNCERTAIN:
            rep.uncertain += 1
            rep.count(a.rule, "uncertain")
            rep.problems.append(_("{key} ({client}): {state}: {detail}").format(key=a.key, client=who, state=words.state("uncertain"),
                                                                               detail=c.detail))
            log.warning("%s %s for %s is uncertain: %s", a.rule, a.type, who, c.detail)
        else:
            rep.failed += 1
            rep.count(a.rule, str(c.to))
            rep.problems.append(_("{key} ({client}): {state}: {detail}").format(key=a.key, client=who, state=words.state(str(c.to)),
                                                                               detail=c.detail))
            log.warning("%s %s for %s %s: %s", a.rule, a.type, who, c.to, c.detail)

    # ------------------------------------------------------------------ helpers

    def _may_call(self, *, quiet: bool = False) -> bool:
        if self.lease is None or self.lease.held:
            return True
        if not quiet:
            log.error("the store lease was lost: stopping before the next remote call")
        return False

    def _log(self, a: PlannedAction, what: str, key: str, res: ActionResult | None = None) -> None:
        """One INFO line per executed action; its fields are JSON keys with ``--log-format json``."""
        remote = (res.remote_key or res.remote_id or "") if res else ""
        log.info("%s: %s %s for %s -> %s%s", a.rule, a.type, what, a.client_title or a.subject_key, remote, f" ({key})",
                 extra={"event": "action", "rule": a.rule, "client": a.client_title or a.subject_key, "client_key": a.client_key,
                        "action": a.type, "result": what, "state": res.status if res else None,
                        "remote_id": remote or None, "key": key})

    def _track_delivery(self, rep: ExecReport) -> None:
        by_sink: dict[int, tuple[Sink, list[tuple[str, str]]]] = defaultdict(lambda: (None, []))  # type: ignore[arg-type]
        for entry in self.journal.sent():
            sink = self.sink_for(entry.action)
            if sink is None or not isinstance(sink, DeliveryTracking) or not entry.remote_id:
                continue
            if id(sink) not in by_sink:
                by_sink[id(sink)] = (sink, [])
            by_sink[id(sink)][1].append((entry.action.key, entry.remote_id))
        for sink, items in by_sink.values():
            try:
                results: dict[str, ActionResult] = sink.delivery(items)
            except UpstreamError as e:
                rep.problems.append(_("delivery status from {system}: {error}").format(system=sink.system, error=e))
                continue
            changes = [Change(key, State(res.status), (S.SENT,), result=res) for key, res in results.items()
                       if res.status in ("delivered", "failed")]
            moved = self.journal.apply(changes, self.clock.now())
            rep.delivered += sum(1 for c in changes if c.key in moved and c.to == S.DELIVERED)


def _chunks(items: list, n: int) -> list[list]:
    return [items[i : i + n] for i in range(0, len(items), n)]

