"""What the CLI and the demo print: sync figures, plans, execution summaries.

Text that comes from an upstream or a config (client titles such as ``Chernihiv [/] Grain``, 1C
names, error texts) is never parsed as rich markup and loses its control characters: it goes
through :func:`safe` inside a markup string, :func:`cell` into a table, or ``markup=False``.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from connector.redact import redact, strip_controls

console = Console(highlight=False)


def plain(value: Any) -> str:
    """Secrets masked, control characters dropped: for ``markup=False`` output."""
    return strip_controls(redact(str(value)))


def safe(value: Any) -> str:
    """:func:`plain`, with rich markup escaped: for interpolation into a markup string."""
    return escape(plain(value))


def cell(value: Any) -> Text:
    """A table cell that is never parsed as markup."""
    return Text(plain(value))


def print_sync(rep) -> None:
    t = Table("source", "rows", "requests", "seconds", "status")
    for s in rep.sources:
        t.add_row(s.system, str(s.rows), str(s.requests), f"{s.seconds:.1f}", "ok" if not s.error else f"[red]FAILED[/] {safe(s.error)}")
    console.print(t)
    if rep.links:
        console.print(f"1C counterparties: {rep.links.get('linked', 0)} linked, {rep.links.get('ambiguous', 0)} ambiguous, "
                      f"{rep.links.get('unmatched', 0)} unmatched (see `connector status`)", markup=False)


def _plan_rows(plan) -> list[dict]:
    rows = []
    for rp in plan.rules:
        for a in rp.actions:
            rows.append({
                "rule": a.rule, "type": a.type, "key": a.key, "system": a.system, "client": a.client_title,
                "manager": a.manager_name, "reason": a.reason, "mode": a.mode,
                "state": plan.known.get(a.key, "refused" if (rp.refused or plan.refused_run) else "new"),
                "not_before": a.not_before.isoformat() if a.not_before else None, "payload": a.payload,
            })
    return rows


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
    return t


def print_plan(plan, *, as_json: bool = False) -> None:
    rows = _plan_rows(plan)
    if as_json:
        click.echo(json.dumps({"actions": rows, "refused_run": plan.refused_run,
                               "rules": [{"rule": r.rule, "type": r.type, "scope": r.scope, "findings": r.findings, "refused": r.refused,
                                          "errors": r.errors} for r in plan.rules]}, indent=2, ensure_ascii=False, default=str))
        return
    for rp in plan.rules:
        n = len(rp.actions)
        console.print(f"[bold]{safe(rp.rule)}[/] ({safe(rp.type)}): {rp.findings} of {rp.scope} in scope, {n} action{'s' if n != 1 else ''}")
        if rp.refused:
            console.print(f"  [red]REFUSED[/]: {safe(rp.refused)}", markup=True)
        for e in rp.errors:
            console.print(f"  [red]error[/]: {safe(e)}")
        for r in rows:
            if r["rule"] != rp.rule:
                continue
            desc = _describe(r) + (f" (waits until {r['not_before'][:16]})" if r["not_before"] else "")
            console.print(plain(f"  {r['state']:<9} {desc}"), markup=False, soft_wrap=True)
            console.print(plain(f"            {r['client']} · {r['manager']} · {r['reason']}"), markup=False, soft_wrap=True)
    if plan.refused_run:
        console.print(f"[red]REFUSED[/]: {safe(plan.refused_run)}")


def print_exec(rep) -> None:
    e = rep.execution
    if rep.plan is not None:
        console.print(f"planned {len(rep.plan.actions)} action(s): {rep.recorded} new, {len(rep.plan.actions) - len(rep.plan.new_actions)} already in the journal; "
                      f"{rep.cancelled} cancelled", markup=False)
    if e is not None:
        console.print(f"executed: {e.done} done, {e.reconciled} reconciled after a crash, {e.retry} to retry, {e.failed} failed, "
                      f"{e.uncertain} uncertain, {e.skipped} skipped (no channel), {e.delivered} delivered", markup=False)
        for rule, counts in sorted(e.by_rule.items()):
            console.print(plain(f"  {rule}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))), markup=False)
        for p in e.problems:
            console.print(f"  [yellow]![/] {safe(p)}")
    for n in rep.notes:
        console.print(f"[red]{safe(n)}[/]")
