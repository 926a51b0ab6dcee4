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
from datetime import UTC, date, datetime
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


def _minute(iso: str | None) -> str:
    """A planned moment (ISO, in the company's zone, as the planner writes it) to the minute: ``26.11.2026 18:00``."""
    from connector.i18n import moment

    if not iso:
        return ""
    try:
        return moment(datetime.fromisoformat(iso))
    except ValueError:
        return iso


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
    if t in ("invoice_stage", "deal_stage", "create_company"):
        return _describe_sync(t, p)
    if t == "invoice":
        return _("invoice “{title}” {amount}, due {due}, {rows} product rows").format(
            title=p.get("title"), amount=i18n.money(float(p.get("amount") or 0), p.get("currency") or "UAH"), due=_deadline(p.get("due")),
            rows=len(p.get("rows") or []))
    return words.action(t)


_DEADLINES: dict[tuple[str, str], str] = {}  # a plan's thousands of tasks share a few deadlines


def _deadline(iso: str | None) -> str:
    """An ISO deadline (already local) as people read it: ``12.11.2026 14:05``."""
    if not iso:
        return ""
    key = (iso, i18n.current())
    if key not in _DEADLINES:
        if len(_DEADLINES) > 4096:
            _DEADLINES.clear()
        _DEADLINES[key] = _read_deadline(iso)
    return _DEADLINES[key]


def _read_deadline(iso: str) -> str:
    try:
        return i18n.moment(datetime.fromisoformat(iso))
    except ValueError:
        return iso[:16].replace("T", " ")


def _describe_sync(t: str, p: dict) -> str:
    """The 1C <-> Bitrix24 sync writes, in words."""
    from connector.i18n import _

    if t == "invoice_stage":
        if p.get("to"):
            return _("move invoice {invoice} from stage {stage} to {target}").format(
                invoice=p.get("number") or p.get("invoice"), stage=p.get("from"), target=p.get("to"))
        return _("move invoice {invoice} from stage {stage} to the paid stage of its funnel").format(
            invoice=p.get("number") or p.get("invoice"), stage=p.get("from"))
    if t == "deal_stage":
        return _("move deal “{deal}” from stage {stage} to {target}").format(deal=p.get("title"), stage=p.get("from"), target=p.get("to"))
    return _("create company “{title}” with 1C GUID {guid} and tax id {tax_id}").format(
        title=p.get("title"), guid=p.get("guid"), tax_id=p.get("tax_id") or "—")


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
    if console.is_terminal:
        def say(text: str, style: str | None = None) -> None:
            console.print(text, style=style, markup=False)
    else:  # a file or a pipe: tens of thousands of plain lines, written as they are (rich costs ~0.1 ms a line)
        out = console.file

        def say(text: str, style: str | None = None) -> None:
            out.write(text + "\n")
    for rp in plan.rules:
        n = len(rp.actions)
        console.print(f"[bold]{escape(rp.rule)}[/] " + escape(ngettext(
            "({type}): {found} of {scope} in scope, {n} action", "({type}): {found} of {scope} in scope, {n} actions", n).format(
            type=rp.type, found=rp.findings, scope=rp.scope, n=n)))
        if rp.refused:
            say("  " + _("REFUSED: {reason}").format(reason=plain(rp.refused)), "red")
        for x in rp.refusals:
            say("  " + _("REFUSED: {reason}").format(reason=plain(x)), "red")
        for x in rp.notes:
            say("  " + _("note: {text}").format(text=plain(x)))
        for e in rp.errors:
            say("  " + _("error: {error}").format(error=plain(e)), "red")
        shown = 0
        for a in rp.actions:
            if limit is not None and shown >= limit:
                say("  " + _("… and {n} more (--all to list them, --out FILE or --json for everything)").format(n=n - shown))
                break
            r = _row(plan, rp, a)
            desc = _describe(r)
            if r["not_before"]:
                desc = _("{action} (waits until {time})").format(action=desc, time=_deadline(r["not_before"]))
            say(plain(f"  {words.state(r['state']):<9} {desc}"))
            say(plain(f"            {r['client']} · {r['manager']} · {r['reason']}"))
            shown += 1
    for c in plan.cleared:
        say("  " + _("ended: {rule}: {subject}: {reason}").format(rule=c.rule, subject=c.subject_key, reason=plain(c.reason)))
    if plan.refused_run:
        say(_("REFUSED: {reason}").format(reason=plain(plan.refused_run)), "red")


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


# ---------------------------------------------------------------------- local times, cursors

_UNIX_RANGE = (1_000_000_000, 4_000_000_000)  # 2001..2096: a number in a cursor that is a Unix time


def when(t: datetime | date | None, tz: str) -> str:
    """A moment as people here read it: local, to the minute (``23.11.2026 10:00``); a date as a date."""
    from connector.i18n import day, moment

    if t is None:
        return ""
    if isinstance(t, datetime):
        return moment(t if t.tzinfo else t.replace(tzinfo=UTC), tz)
    return day(t)


def _cursor_value(v: object, tz: str) -> str | None:
    from connector.i18n import moment, ngettext

    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float) and _UNIX_RANGE[0] <= v <= _UNIX_RANGE[1]:
        return when(datetime.fromtimestamp(v, UTC), tz)
    if isinstance(v, int | float):
        return f"{v:g}"
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            return v if len(v) <= 40 else v[:39] + "…"
        if len(v) == 10:
            return when(t.date(), tz)
        # a naive time in a cursor is the source's own wall clock (1C): shown as it is
        return when(t, tz) if t.tzinfo else moment(t.replace(tzinfo=UTC), "UTC")
    if isinstance(v, dict | list):
        return ngettext("{n} entry", "{n} entries", len(v)).format(n=len(v))
    return None


def render_cursor(text: str | None, tz: str) -> str:
    """A stored cursor made readable: times as local dates to the minute, an ID as it is, a JSON
    state as ``name value`` pairs with nested maps counted rather than printed."""
    if not text:
        return "-"
    try:
        data = json.loads(text)
    except ValueError:
        return _cursor_value(text, tz) or text[:60]
    if isinstance(data, dict):
        parts = [f"{k} {shown}" for k, v in data.items() if (shown := _cursor_value(v, tz)) is not None]
        return ", ".join(parts) or "-"
    return _cursor_value(data, tz) or text[:60]


# ---------------------------------------------------------------------- status


def live_counts(store) -> dict[tuple[str, str], int]:
    """Live (not deleted) records per source system and record type: what the store holds now."""
    from sqlalchemy import func, select

    from connector.store import activities, calls, clients, deals, debts, documents, invoices, managers, payments, tasks

    out: dict[tuple[str, str], int] = {}
    with store.tx() as conn:
        for name, table in [("managers", managers), ("clients", clients), ("deals", deals), ("invoices", invoices),
                            ("payments", payments), ("tasks", tasks), ("documents", documents), ("debts", debts), ("calls", calls)]:
            for system, n in conn.execute(select(table.c.system, func.count()).where(table.c.deleted.is_(False))
                                          .group_by(table.c.system)):
                out[(system or "-", name)] = n
        # an activity bound to several owners is stored once per owner: count it once
        for system, n in conn.execute(select(activities.c.system, func.count(activities.c.key.distinct()))
                                      .where(activities.c.deleted.is_(False)).group_by(activities.c.system)):
            out[(system or "-", "activities")] = n
    return out


def print_status(store, tz: str, *, runs_shown: int = 5) -> None:
    """Sources and their positions, live record counts, last runs with their refusals, the lease
    holder, journal states: every time local, to the minute."""
    from sqlalchemy import select

    from connector.i18n import _
    from connector.journal import Journal
    from connector.lease import Lease
    from connector.matching import link_report
    from connector.redact import redact_url
    from connector.store import runs

    console.print(plain(f"store: {redact_url(store.url)}"), markup=False)
    t = Table(_("system"), _("stream"), _("synced"), _("position"), title=_("Sources"))
    for c in store.cursors():
        t.add_row(cell(c["system"]), cell(c["stream"]), when(c["updated_at"], tz), cell(render_cursor(c["cursor"], tz)))
    console.print(t)

    counts = live_counts(store)
    kinds = sorted({k for _s, k in counts})
    systems = sorted({s for s, _k in counts})
    ct = Table(_("records"), *systems, title=_("Records in the store (live, not deleted)"))
    for k in kinds:
        ct.add_row(k, *[str(counts.get((s, k), "")) for s in systems])
    console.print(ct)

    with store.tx() as conn:
        last = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(runs_shown)).all()
    rt = Table(_("run"), _("command"), _("started"), _("took"), _("status"), _("refused, failed"), title=_("Last runs"))
    for r in last:
        summary = r.summary or {}
        notes = [redact(x) for x in summary.get("refused") or []]
        notes += [f"{system}: {redact(v['error'])}" for system, v in (summary.get("sources") or {}).items() if v.get("error")]
        started = when(r.started_at, tz)
        if r.clock is not None and r.started_at is not None and abs((r.clock - r.started_at).total_seconds()) > 60:
            started += " " + _("(simulated {moment})").format(moment=when(r.clock, tz))
        took = f"{(r.finished_at - r.started_at).total_seconds():.0f} s" if r.finished_at and r.started_at else ""
        rt.add_row(str(r.id), r.command or "", started, took, r.status or "", cell("\n".join(notes)))
    console.print(rt)

    holder = Lease(store).holder()
    if holder is None:
        console.print(_("Lease: free (no process holds the store)."), markup=False, soft_wrap=True)
    else:
        expired = holder.expires_at is not None and holder.expires_at < datetime.now(UTC)
        text = _("Lease: held by PID {pid} on {host} since {since}, renewed until {until}.") if not expired else \
            _("Lease: last held by PID {pid} on {host} since {since}; expired at {until} (the next runner takes it over).")
        console.print(text.format(pid=holder.pid, host=holder.host, since=when(holder.since, tz), until=when(holder.expires_at, tz)),
                      markup=False, soft_wrap=True)

    states = Journal(store).summary()
    console.print(_("Journal: {states}").format(states=words.counts(states) or _("empty")),
                  markup=False, soft_wrap=True)
    problems = link_report(store)
    if problems:
        lt = Table(_("1C counterparty"), _("status"), _("candidates"))
        for p in problems:
            lt.add_row(cell(p["title"] or p["key"]), cell(p["status"]), cell(", ".join(p["candidates"])))
        console.print(lt)


# ---------------------------------------------------------------------- journal


def journal_row(r: dict, tz: str) -> dict:
    """One journal row for people and for JSON: local times (ISO with the offset), no internals."""
    from zoneinfo import ZoneInfo

    def iso(t: datetime | None) -> str | None:
        return t.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds") if t else None

    p = dict(r.get("payload") or {})
    return {
        "key": r["key"], "rule": r["rule"], "type": r["type"], "state": r["state"], "client": p.pop("_title", None) or r["client_key"],
        "client_key": r["client_key"], "subject": r["subject_key"], "manager": p.pop("_manager", None), "reason": r["reason"],
        "attempts": r["attempts"], "remote_id": r["remote_id"], "detail": redact(r["detail"] or "") or None,
        "created": iso(r["created_at"]), "updated": iso(r["updated_at"]), "done": iso(r["done_at"]),
        "not_before": iso(r["not_before"]), "next_attempt": iso(r["next_attempt_at"]), "episode": r["episode"],
    }


def print_journal(rows: list[dict], tz: str, *, as_json: bool = False) -> None:
    from connector.i18n import _, ngettext

    if as_json:
        sys.stdout.write(json.dumps([journal_row(r, tz) for r in rows], ensure_ascii=False, indent=1) + "\n")
        return
    head = (_("updated"), _("rule"), _("client"), _("action"), _("state"), _("tries"), _("remote id"), _("detail"))
    lines = []
    for r in rows:
        j = journal_row(r, tz)
        lines.append((when(r["updated_at"], tz), j["rule"], j["client"] or "", j["type"], j["state"], str(j["attempts"] or 0),
                      j["remote_id"] or "", j["detail"] or ""))
    if not console.is_terminal:  # piped: one entry a line, tab-separated, never wrapped (grep, cut, a spreadsheet)
        for line in [head, *lines]:
            sys.stdout.write("\t".join(x.replace("\t", " ").replace("\n", " ") for x in line) + "\n")
        return
    t = Table(*head)
    for line in lines:
        t.add_row(*[cell(x) for x in line[:-1]], cell(line[-1][:80]))
    console.print(t)
    console.print(ngettext("{n} entry", "{n} entries", len(rows)).format(n=len(rows)), markup=False)


# ---------------------------------------------------------------------- explain


def _record_line(r, tz: str) -> str:
    from connector.explain import kind_word
    from connector.i18n import _, money

    parts = [kind_word(r.kind), when(r.at, tz)]
    if r.what:
        parts.append(f"“{r.what}”")
    if r.phone:
        parts.append(r.phone)
    if r.direction:
        parts.append({"in": _("inbound"), "out": _("outbound")}.get(r.direction, r.direction))
    if r.seconds:
        parts.append(_("{seconds} s of talk").format(seconds=r.seconds))
    if r.amount is not None:
        parts.append(money(r.amount, r.currency or "UAH"))
    parts.append(f"[{r.key}]")
    return " · ".join(p for p in parts if p)





def explanation_json(x) -> dict:
    """The verdicts and the evidence as data (``explain --json``): local ISO times."""
    from zoneinfo import ZoneInfo

    def iso(t) -> str | None:
        if t is None:
            return None
        return t.astimezone(ZoneInfo(x.timezone)).isoformat(timespec="seconds") if isinstance(t, datetime) else t.isoformat()

    def rec(r) -> dict:
        return {"kind": r.kind, "at": iso(r.at), "key": r.key, "what": r.what or None, "phone": r.phone, "direction": r.direction,
                "seconds": r.seconds, "amount": r.amount, "currency": r.currency}

    c = x.client
    return {
        "client": {"key": c.key, "title": c.title, "kind": c.kind, "tax_id": c.tax_id, "phones": c.phones, "manager": x.manager},
        "now": iso(x.now),
        "verdicts": [{"rule": v.rule, "type": v.type, "status": v.status, "reason": v.reason, "facts": v.facts, "refused": v.refused,
                      "actions": [{"key": a.key, "type": a.type, "state": state} for a, state in v.actions]} for v in x.verdicts],
        "last_contact": {k: rec(r) for k, r in x.contacts.items()},
        "kept_by": [rec(r) for r in x.kept],
        "own_records_excluded": [rec(r) for r in x.own],
        "purchases": [{"at": iso(p.at), "amount": p.amount, "what": p.what, "key": p.key, "title": x.titles.get(p.key)} for p in x.purchases],
        "open_deals": [{"key": d["key"], "title": d["title"], "amount": d["amount"], "currency": d["currency"],
                        "created": iso(d["created_at"])} for d in x.deals],
        "invoices": [{"key": i.key, "title": i.title, "amount": i.amount, "currency": i.currency, "due": iso(i.due_date), "paid": i.paid}
                     for i in x.invoices],
        "debts": [{"key": d.key, "amount": d.amount, "currency": d.currency, "overdue_amount": d.overdue_amount,
                   "overdue_since": iso(d.overdue_since)} for d in x.debts],
        "calls": [{"key": k.key, "at": iso(k.started_at), "phone": k.phone, "direction": k.direction, "answered": k.answered,
                   "talk_s": k.talk_s} for k in x.calls],
        "journal": [journal_row(r, x.timezone) for r in x.journal],
        "episodes": [{"episode": e["episode"], "rule": e["rule"], "opened": iso(e["opened_at"]), "closed": iso(e["closed_at"]),
                      "reason": e["close_reason"]} for e in x.episodes],
    }


def cal_date(t: datetime, tz: str) -> date:
    """The local calendar day of a moment (a purchase is a day, not a minute)."""
    from zoneinfo import ZoneInfo

    return t.astimezone(ZoneInfo(tz)).date()


def print_explanation(x, *, as_json: bool = False) -> None:
    """Every rule's verdict on one client, then the evidence behind it, local times to the minute."""
    from connector.i18n import _, money, number

    if as_json:
        sys.stdout.write(json.dumps(explanation_json(x), ensure_ascii=False, indent=1, default=str) + "\n")
        return
    tz, c = x.timezone, x.client

    def out(text: str = "") -> None:  # keys hold ":phone:", which rich would turn into an emoji
        console.print(text, markup=False, emoji=False, soft_wrap=True)

    out(_("{title} [{key}] · responsible: {manager} · as of {now}").format(title=c.title, key=c.key, manager=x.manager,
                                                                            now=when(x.now, tz)))
    words = {"listed": _("ON THE LIST"), "waiting": _("on the list, waiting"), "ended": _("episode ends"),
             "not_listed": _("not on the list"), "disabled": _("disabled")}
    out("")
    out(_("Rules"))
    for v in x.verdicts:
        out(f"  {v.rule} ({v.type}): {words.get(v.status, v.status)}")
        if v.reason:
            out(f"      {v.reason}")
        for f in v.facts:
            out(f"      - {redact(f)}")
        if v.refused:
            out("      " + _("REFUSED by the safety brake in this plan: {why}").format(why=redact(v.refused)))
        for a, state in v.actions:
            out(f"      → {state:<9} {a.type} [{a.key}]")

    out("")
    out(_("Last contact of each kind (what counts as contact; the connector's own records never do)"))
    for r in x.contacts.values():
        out(f"  {_record_line(r, tz)}")
    if not x.contacts:
        out("  " + _("none"))
    out(_("Open tasks and planned activities with a future deadline (they keep a client)"))
    for r in x.kept:
        out(f"  {_record_line(r, tz)}")
    if not x.kept:
        out("  " + _("none"))
    out(_("Purchases"))
    for p in x.purchases:
        out(f"  {when(cal_date(p.at, tz), tz)} · {p.what} · {number(p.amount)} · {x.titles.get(p.key, '')} [{p.key}]")
    if not x.purchases:
        out("  " + _("none"))
    if x.deals:
        out(_("Open deals"))
        for d in x.deals:
            out(f"  {when(d['created_at'], tz)} · “{d['title'] or ''}” · {money(d['amount'] or 0, d['currency'] or 'UAH')} [{d['key']}]")
    if x.invoices:
        out(_("Invoices"))
        for i in x.invoices:
            line = _("{invoice} · {amount} · due {due} · paid") if i.paid else _("{invoice} · {amount} · due {due} · unpaid")
            out("  " + line.format(invoice=i.title, amount=money(i.amount, i.currency), due=when(i.due_date, tz)) + f" [{i.key}]")
    if x.debts:
        out(_("Debts (1C)"))
        for d in x.debts:
            overdue = d.overdue_amount if d.overdue_amount is not None else d.amount
            out("  " + _("owes {amount}, overdue {overdue} since {since}").format(
                amount=money(d.amount, d.currency), overdue=money(overdue, d.currency), since=when(d.overdue_since, tz)))
    if x.calls:
        out(_("Calls in the last 30 days (PBX)"))
        for k in x.calls:
            state = _("answered") if k.answered else _("missed")
            direction = {"in": _("inbound"), "out": _("outbound")}.get(k.direction, k.direction)
            out(f"  {when(k.started_at, tz)} · {k.phone or k.raw_phone} · {direction} · {state}"
                + (" · " + _("{seconds} s of talk").format(seconds=k.talk_s) if k.talk_s else ""))
    if x.own:
        out(_("The connector's own records (excluded from the evidence)"))
        for r in x.own:
            out(f"  {_record_line(r, tz)}")
    out(_("Journal"))
    for r in x.journal:
        j = journal_row(r, tz)
        out(f"  {when(r['updated_at'], tz)} · {j['rule']} · {j['type']} · {j['state']} [{j['key']}]")
    if not x.journal:
        out("  " + _("empty"))
    if x.episodes:
        out(_("Episodes"))
        for e in x.episodes:
            if e["closed_at"] is None:
                line = _("{episode}: open since {opened}").format(episode=e["episode"], opened=when(e["opened_at"], tz))
            else:
                line = _("{episode}: {opened} – {closed}: {reason}").format(
                    episode=e["episode"], opened=when(e["opened_at"], tz), closed=when(e["closed_at"], tz), reason=e["close_reason"] or "")
            out("  " + line)
