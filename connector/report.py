"""What the CLI and the demo print: sync figures, plans, execution summaries.

Text that comes from an upstream or a config (client titles such as ``Chernihiv [/] Grain``, 1C
names, error texts) is never parsed as rich markup and loses its control characters: it goes
through :func:`safe` inside a markup string, :func:`cell` into a table, or ``markup=False``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from connector import i18n, words
from connector.i18n import _, ngettext
from connector.redact import redact, strip_controls

console = Console(highlight=False, soft_wrap=True)  # one line per line, whatever the terminal: grep and logs stay whole


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
    t = Table(_("source"), _("rows"), _("requests"), _("seconds"), _("status"))
    for s in rep.sources:
        t.add_row(s.system, str(s.rows), str(s.requests), i18n.number(s.seconds, 1),
                  _("ok") if not s.error else Text(_("FAILED: {error}").format(error=plain(s.error)), style="red"))
    console.print(t)
    if rep.links:
        console.print(_("1C counterparties: {linked} linked, {ambiguous} ambiguous, {unmatched} unmatched (see `connector status`)").format(
            linked=rep.links.get("linked", 0), ambiguous=rep.links.get("ambiguous", 0), unmatched=rep.links.get("unmatched", 0)),
            markup=False)


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
        return _("task “{title}” due {deadline}").format(title=p.get("title"), deadline=_deadline(p.get("deadline")))
    if t == "reassign":
        n = len(p.get("entities", []))
        return ngettext("reassign {n} record from {previous} to {manager}", "reassign {n} records from {previous} to {manager}", n).format(
            n=n, previous=p.get("from_name", p.get("from")), manager=p.get("to_name", p.get("to")))
    if t == "notify":
        return _("notify {person}: “{text}”").format(person=p.get("user_name") or p.get("user"), text=p.get("text"))
    if t == "sms":
        return _("SMS to {phone}: “{text}”").format(phone=p.get("phone"), text=p.get("text"))
    if t == "email":
        return _("e-mail to {to}: “{subject}”").format(to=p.get("to"), subject=p.get("subject"))
    if t == "comment":
        return _("timeline comment: “{text}”").format(text=p.get("text"))
    if t == "trigger":
        if p.get("sms"):
            return _("automation trigger {code} (sends an SMS to {phone}: “{text}”)").format(
                code=p.get("code"), phone=p["sms"].get("phone"), text=p["sms"].get("text"))
        return _("automation trigger {code}").format(code=p.get("code"))
    if t == "field":
        return _("set {fields}").format(fields=", ".join(f"{k}={v}" for k, v in p.get("fields", {}).items()))
    if t == "workflow":
        return _("business process {template}").format(template=p.get("template_id"))
    if t == "close_task":
        return _("complete the connector's task {task}").format(task=p.get("task"))
    return words.action(t)


def _deadline(iso: str | None) -> str:
    """An ISO deadline (already local) as people read it: ``12.11.2026 14:05``."""
    if not iso:
        return ""
    try:
        return i18n.moment(datetime.fromisoformat(iso))
    except ValueError:
        return iso[:16].replace("T", " ")


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
    t = Table(_("rule"), _("in scope"), _("found"), _("new actions"), _("already done/pending"), _("refused"), title=_("plan"))
    for rp in plan.rules:
        c = per[rp.rule]
        t.add_row(rp.rule, str(rp.scope), str(rp.findings), str(c["new"]), str(sum(v for k, v in c.items() if k not in ("new", "refused"))),
                  str(c["refused"]))
    if managers:
        t.caption = _("new actions by manager: {counts}").format(counts=", ".join(f"{m} {n}" for m, n in managers.most_common()))
    return t


def print_plan(plan, *, as_json: bool = False, limit: int | None = None) -> None:
    if as_json:
        stream_plan_json(plan, sys.stdout)
        return
    console.print(_summary(plan))
    for rp in plan.rules:
        n = len(rp.actions)
        console.print(f"[bold]{escape(rp.rule)}[/] " + escape(ngettext(
            "({type}): {found} of {scope} in scope, {n} action", "({type}): {found} of {scope} in scope, {n} actions", n).format(
            type=rp.type, found=rp.findings, scope=rp.scope, n=n)))
        if rp.refused:
            console.print("  " + _("REFUSED: {reason}").format(reason=plain(rp.refused)), style="red", markup=False)
        for x in rp.refusals:
            console.print("  " + _("REFUSED: {reason}").format(reason=plain(x)), style="red", markup=False)
        for x in rp.notes:
            console.print("  " + _("note: {text}").format(text=plain(x)), markup=False)
        for e in rp.errors:
            console.print("  " + _("error: {error}").format(error=plain(e)), style="red", markup=False)
        shown = 0
        for a in rp.actions:
            if limit is not None and shown >= limit:
                console.print("  " + _("… and {n} more (--all to list them, --out FILE or --json for everything)").format(n=n - shown),
                              markup=False)
                break
            r = _row(plan, rp, a)
            desc = _describe(r)
            if r["not_before"]:
                desc = _("{action} (waits until {time})").format(action=desc, time=_deadline(r["not_before"]))
            console.print(plain(f"  {words.state(r['state']):<9} {desc}"), markup=False)
            console.print(plain(f"            {r['client']} · {r['manager']} · {r['reason']}"), markup=False)
            shown += 1
    for c in plan.cleared:
        console.print("  " + _("ended: {rule}: {subject}: {reason}").format(rule=c.rule, subject=c.subject_key, reason=plain(c.reason)),
                      markup=False)
    if plan.refused_run:
        console.print(_("REFUSED: {reason}").format(reason=plain(plan.refused_run)), style="red", markup=False)


def print_exec(rep) -> None:
    e = rep.execution
    if rep.plan is not None:
        known = len(rep.plan.actions) - len(rep.plan.new_actions) if not rep.plan.refused_run else len(rep.plan.known)
        console.print(_("planned: {n} actions, {new} of them new, {known} already in the journal; {cancelled} cancelled; "
                        "{ended} episodes ended").format(n=len(rep.plan.actions), new=rep.recorded, known=known,
                                                          cancelled=rep.cancelled, ended=rep.closed), markup=False)
        for line in rep.plan.refusals:
            console.print(_("REFUSED: {reason}").format(reason=plain(line)), style="red", markup=False)
        for rp in rep.plan.rules:
            for x in rp.notes:
                console.print("  " + _("note: {rule}: {text}").format(rule=rp.rule, text=x), markup=False, soft_wrap=True)
    if e is not None:
        console.print(_("executed: {done} done, {adopted} already there (adopted), {reconciled} reconciled after an interruption, "
                        "{retry} to retry, {failed} failed, {uncertain} uncertain, {skipped} skipped (no channel), "
                        "{cancelled} cancelled, {deferred} waiting, {delivered} delivered; requests: {requests}").format(
            done=e.done, adopted=e.adopted, reconciled=e.reconciled, retry=e.retry, failed=e.failed, uncertain=e.uncertain,
            skipped=e.skipped, cancelled=e.cancelled, deferred=e.deferred, delivered=e.delivered, requests=e.requests),
            markup=False)
        for rule, counts in sorted(e.by_rule.items()):
            console.print(f"  {rule}: {words.counts(counts)}", markup=False)
        for p in e.notes:
            console.print(plain(f"  - {p}"), markup=False)
        for p in e.problems:
            console.print(f"  [yellow]![/] {safe(p)}")
    for n in rep.notes:
        console.print(f"[red]{safe(n)}[/]")
