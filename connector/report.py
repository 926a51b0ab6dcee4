"""What the CLI and the demo print: sync figures, plans, execution summaries."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connector.redact import redact

console = Console(highlight=False)


def print_sync(rep) -> None:
    t = Table("source", "rows", "requests", "seconds", "status")
    for s in rep.sources:
        t.add_row(s.system, str(s.rows), str(s.requests), f"{s.seconds:.1f}", "ok" if not s.error else f"[red]FAILED[/] {redact(s.error)}")
    console.print(t)
    if rep.links:
        console.print(f"1C counterparties: {rep.links.get('linked', 0)} linked, {rep.links.get('ambiguous', 0)} ambiguous, "
                      f"{rep.links.get('unmatched', 0)} unmatched (see `connector status`)", markup=False)


def _row(plan, rp, a) -> dict:
    return {
        "rule": a.rule, "type": a.type, "key": a.key, "system": a.system, "client": a.client_title,
        "manager": a.manager_name, "reason": a.reason, "mode": a.mode,
        "state": plan.known.get(a.key, "refused" if (rp.refused or plan.refused_run) else "new"),
        "not_before": a.not_before.isoformat() if a.not_before else None, "payload": a.payload,
        "depends_on": a.depends_on or None,
    }


def _plan_rows(plan) -> Iterator[dict]:
    for rp in plan.rules:
        for a in rp.actions:
            yield _row(plan, rp, a)


def _describe(a: dict) -> str:
    p = a["payload"]
    t = a["type"]
    if t == "task":
        return f"task “{p.get('title')}” due {p.get('deadline', '')[:16].replace('T', ' ')}"
    if t == "reassign":
        return f"reassign {len(p.get('entities', []))} record(s) from {p.get('from_name', p.get('from'))} to {p.get('to_name', p.get('to'))}"
    if t == "notify":
        return f"notify {p.get('user_name') or p.get('user')}: “{p.get('text')}”"
    if t == "sms":
        return f"SMS to {p.get('phone')}: “{p.get('text')}”"
    if t == "email":
        return f"e-mail to {p.get('to')}: “{p.get('subject')}”"
    if t == "comment":
        return "timeline comment"
    if t == "trigger":
        return f"automation trigger {p.get('code')}" + (" (sends SMS)" if p.get("sms") else "")
    if t == "field":
        return "set " + ", ".join(f"{k}={v}" for k, v in p.get("fields", {}).items())
    if t == "workflow":
        return f"business process {p.get('template_id')}"
    if t == "close_task":
        return f"complete the connector's task {p.get('task')}"
    if t == "invoice":
        rows = len(p.get("rows") or [])
        return f"invoice “{p.get('title')}” {p.get('amount')} {p.get('currency', '')}, due {p.get('due')}, {rows} product row(s)"
    return t


def _head(plan) -> dict:
    return {"refused_run": plan.refused_run, "refusals": plan.refusals,
            "rules": [{"rule": r.rule, "type": r.type, "scope": r.scope, "findings": r.findings, "refused": r.refused,
                       "refusals": r.refusals, "notes": r.notes, "errors": r.errors} for r in plan.rules],
            "cleared": [{"episode": c.episode, "rule": c.rule, "reason": c.reason} for c in plan.cleared],
            "cancel": [{"key": k, "reason": why} for k, why in plan.cancel]}


def stream_plan_json(plan, out: IO[str]) -> None:
    """The plan as one JSON document, written action by action (thousands never sit in one string)."""
    head = json.dumps(_head(plan), ensure_ascii=False, default=str)
    out.write(head[:-1] + ', "actions": [\n')
    first = True
    for row in _plan_rows(plan):
        out.write(("" if first else ",\n") + json.dumps(row, ensure_ascii=False, default=str))
        first = False
    out.write("\n]}\n")


def write_plan_json(plan, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        stream_plan_json(plan, f)


def _summary(plan) -> Table:
    """New actions per rule and manager: what each manager will find in the CRM."""
    per: dict[str, Counter] = {}
    managers: Counter = Counter()
    for rp in plan.rules:
        c = per.setdefault(rp.rule, Counter())
        for a in rp.actions:
            state = plan.known.get(a.key, "refused" if (rp.refused or plan.refused_run) else "new")
            c[state] += 1
            if state == "new":
                managers[a.manager_name or "-"] += 1
    t = Table("rule", "in scope", "found", "new", "already done/pending", "refused", title="plan")
    for rp in plan.rules:
        c = per[rp.rule]
        t.add_row(rp.rule, str(rp.scope), str(rp.findings), str(c["new"]), str(sum(v for k, v in c.items() if k not in ("new", "refused"))),
                  str(c["refused"]))
    if managers:
        t.caption = "new actions by manager: " + ", ".join(f"{m} {n}" for m, n in managers.most_common())
    return t


def print_plan(plan, *, as_json: bool = False, limit: int | None = None) -> None:
    if as_json:
        stream_plan_json(plan, sys.stdout)
        return
    console.print(_summary(plan))
    for rp in plan.rules:
        n = len(rp.actions)
        console.print(f"[bold]{escape(rp.rule)}[/] ({rp.type}): {rp.findings} of {rp.scope} in scope, {n} action{'s' if n != 1 else ''}")
        if rp.refused:
            console.print(f"  [red]REFUSED[/]: {escape(rp.refused)}")
        for x in rp.refusals:
            console.print(f"  [red]REFUSED[/]: {escape(redact(x))}")
        for x in rp.notes:
            console.print(f"  note: {x}", markup=False)
        for e in rp.errors:
            console.print(f"  [red]error[/]: {escape(redact(e))}")
        shown = 0
        for a in rp.actions:
            if limit is not None and shown >= limit:
                console.print(f"  … and {n - shown} more (--all to list them, --out FILE or --json for everything)", markup=False)
                break
            r = _row(plan, rp, a)
            desc = _describe(r) + (f" (waits until {r['not_before'][:16]})" if r["not_before"] else "")
            console.print(f"  {r['state']:<9} {desc}", markup=False, soft_wrap=True)
            console.print(f"            {r['client']} · {r['manager']} · {r['reason']}", markup=False, soft_wrap=True)
            shown += 1
    for c in plan.cleared:
        console.print(f"  ended: {c.rule}: {c.subject_key}: {c.reason}", markup=False, soft_wrap=True)
    if plan.refused_run:
        console.print(f"[red]REFUSED[/]: {escape(plan.refused_run)}")


def print_exec(rep) -> None:
    e = rep.execution
    if rep.plan is not None:
        known = len(rep.plan.actions) - len(rep.plan.new_actions) if not rep.plan.refused_run else len(rep.plan.known)
        console.print(f"planned {len(rep.plan.actions)} action(s): {rep.recorded} new, {known} already in the journal; "
                      f"{rep.cancelled} cancelled; {rep.closed} episode(s) ended", markup=False)
        for line in rep.plan.refusals:
            console.print(f"[red]REFUSED[/]: {escape(redact(line))}")
        for rp in rep.plan.rules:
            for x in rp.notes:
                console.print(f"  note: {rp.rule}: {x}", markup=False, soft_wrap=True)
    if e is not None:
        console.print(f"executed: {e.done} done, {e.adopted} adopted (already there), {e.reconciled} reconciled after an "
                      f"interruption, {e.retry} to retry, {e.failed} failed, {e.uncertain} uncertain, {e.skipped} skipped "
                      f"(no channel), {e.cancelled} cancelled, {e.deferred} waiting, {e.delivered} delivered; "
                      f"{e.requests} request(s)", markup=False)
        for rule, counts in sorted(e.by_rule.items()):
            console.print(f"  {rule}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), markup=False)
        for p in e.notes:
            console.print(f"  - {redact(p)}", markup=False, soft_wrap=True)
        for p in e.problems:
            console.print(f"  [yellow]![/] {escape(redact(p))}")
    for n in rep.notes:
        console.print(f"[red]{escape(redact(n))}[/]")
