"""The supervisor's control report: who forgot whom, who was released to whom, who did not call.

Built from the store and the journal alone (no sync): the connector's own footprint is in the
journal (every task, reassignment and message it made, with its time), the episodes table says
when a client became forgotten or lost and when that ended, and the synced ``tasks`` say whether
and when a manager completed the connector's task. Every figure is one SQL query (or a pass over
a handful of rows), per manager and for the company.

Definitions (the README repeats them for people):

- *clients held*: live clients of the primary CRM (companies, and contacts without a company)
  whose responsible the manager is now;
- *forgotten now* / *newly forgotten*: open episodes of ``forgotten`` rules / episodes opened in
  the period; *released from* / *to*: reassignments the connector did in the period;
- *connector tasks*: the tasks it created in the period, split into done on time (closed by their
  deadline), done late, still open and open past their deadline (as of now);
- *lost*: episodes of ``lost`` rules opened in the period; *won back*: those that ended in the
  period with a purchase after the client was lost (the revenue is those purchases); *still
  lost*: open ones; the loss reasons are the clients' ``reason_field`` values;
- *unpaid invoices*, *1C debts*: overdue now (count, amount, the most days overdue);
- *missed calls*: unanswered inbound calls of the period, called back (an answered call with the
  number) within N minutes, later, or not at all;
- *greetings*: messages sent in the period, and call tasks due in it done by their deadline or
  missed.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select

from connector.calendar import BusinessCalendar
from connector.config import GreetingsRule, LostRule, MissedCallRule, Settings
from connector.evidence import Evidence, aware
from connector.i18n import _, day, money, number
from connector.journal import DONE_STATES
from connector.matching import primary_system
from connector.snapshot import load_snapshot, split_episode
from connector.store import Store, calls, client_phones, clients, episodes, ev_contact, journal, tasks

DONE = tuple(str(s) for s in DONE_STATES)
WEEKS = 12
# figures where more is worse: the worst three (a manager's share of the company's total) are highlighted
BAD = ("forgotten_now", "released_from", "tasks_overdue", "tasks_late", "lost_still", "missed_not_called", "greetings_missed",
       "debts_amount", "unpaid_amount")
FIGURES = ("clients", "forgotten_now", "forgotten_new", "released_from", "released_to", "tasks_created", "tasks_on_time",
           "tasks_late", "tasks_open", "tasks_overdue", "lost_new", "won_back", "won_back_revenue", "lost_still",
           "unpaid_count", "unpaid_amount", "unpaid_days", "debts_count", "debts_amount", "debts_days", "missed_calls",
           "missed_called_back", "missed_late", "missed_not_called", "greetings_done", "greetings_missed")
MONEY = {"won_back_revenue", "unpaid_amount", "debts_amount"}
MAX = {"unpaid_days", "debts_days"}  # the most, not the sum, across managers


def labels() -> dict[str, str]:
    """Column names people read (translated)."""
    return {
        "clients": _("clients held"), "forgotten_now": _("forgotten now"), "forgotten_new": _("newly forgotten"),
        "released_from": _("released from them"), "released_to": _("released to them"), "tasks_created": _("tasks created"),
        "tasks_on_time": _("done on time"), "tasks_late": _("done late"), "tasks_open": _("still open"),
        "tasks_overdue": _("open and overdue"), "lost_new": _("newly lost"), "won_back": _("won back"),
        "won_back_revenue": _("won-back revenue"), "lost_still": _("still lost"), "unpaid_count": _("unpaid invoices"),
        "unpaid_amount": _("unpaid amount"), "unpaid_days": _("unpaid: most days overdue"), "debts_count": _("1C debts"),
        "debts_amount": _("1C debts amount"), "debts_days": _("1C debts: most days overdue"), "missed_calls": _("missed calls"),
        "missed_called_back": _("called back in time"), "missed_late": _("called back late"),
        "missed_not_called": _("not called back"), "greetings_done": _("greetings done"), "greetings_missed": _("greetings missed"),
    }


# ---------------------------------------------------------------------- the period


@dataclass
class Period:
    start: datetime  # inclusive, aware
    end: datetime  # exclusive, aware
    first_day: date
    last_day: date

    @property
    def key(self) -> str:
        return self.first_day.isoformat()

    def text(self) -> str:
        return f"{day(self.first_day)} – {day(self.last_day)}"


def resolve_period(spec: str, now: datetime, cal: BusinessCalendar) -> Period:
    """``week`` (the last full Monday-Sunday week), ``month`` (the last full month), ``7d`` (the
    seven days up to now) or ``FROM..TO`` (ISO dates, both included)."""
    today = cal.today(now)

    def span(a: date, b: date) -> Period:
        return Period(datetime.combine(a, time(0), cal.tz), datetime.combine(b + timedelta(days=1), time(0), cal.tz), a, b)

    if spec == "week":
        monday = today - timedelta(days=today.weekday())
        return span(monday - timedelta(days=7), monday - timedelta(days=1))
    if spec == "month":
        first = today.replace(day=1)
        last = first - timedelta(days=1)
        return span(last.replace(day=1), last)
    if spec == "7d":
        start = now - timedelta(days=7)
        return Period(start, now, cal.local(start).date(), today)
    if ".." in spec:
        a, b = spec.split("..", 1)
        try:
            first, last = date.fromisoformat(a.strip()), date.fromisoformat(b.strip())
        except ValueError:
            raise ValueError(f"expected FROM..TO as ISO dates (2026-11-01..2026-11-30), got {spec!r}") from None
        if last < first:
            raise ValueError(f"the period ends before it starts: {spec!r}")
        return span(first, last)
    raise ValueError(f"unknown period {spec!r}: week, month, 7d or FROM..TO")


# ---------------------------------------------------------------------- the figures


@dataclass
class Row:
    key: str | None  # manager key (None: no manager, e.g. a call from an unknown number)
    name: str
    figures: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FIGURES, 0))


@dataclass
class ControlReport:
    title: str
    period: Period
    generated: datetime
    timezone: str
    currency: str
    callback_minutes: int
    rows: list[Row]
    total: Row
    worst: list[tuple[str, str, str, float]]  # (manager key, manager name, figure, value)
    released: list[dict]  # {client, from, to, at}
    lost_reasons: list[tuple[str, int]]
    won_back: list[dict]  # {client, manager, revenue}
    weeks: list[dict]  # {week, forgotten, released}
    funnel: dict[str, int]  # lost, called, returned
    greetings: list[dict]  # {client, manager, rule, channel, state}
    notes: list[str] = field(default_factory=list)

    def value(self, row: Row, name: str) -> str:
        v = row.figures.get(name, 0)
        return money(v, self.currency) if name in MONEY else number(v, 0)

    def summary(self) -> list[str]:
        t = self.total.figures
        f = lambda n: number(t[n], 0)  # noqa: E731
        m = lambda n: money(t[n], self.currency)  # noqa: E731
        lines = [
            _("Control report for {period} ({who})").format(period=self.period.text(), who=self.title),
            _("Clients held: {clients}; forgotten now: {now} (newly: {new}); released: {released}").format(
                clients=f("clients"), now=f("forgotten_now"), new=f("forgotten_new"), released=f("released_from")),
            _("Connector tasks: {created} created, {on_time} done on time, {late} done late, {open} still open, "
              "{overdue} overdue").format(created=f("tasks_created"), on_time=f("tasks_on_time"), late=f("tasks_late"),
                                          open=f("tasks_open"), overdue=f("tasks_overdue")),
            _("Lost clients: {new} newly lost, {won} won back ({revenue}), {still} still lost").format(
                new=f("lost_new"), won=f("won_back"), revenue=m("won_back_revenue"), still=f("lost_still")),
            _("Unpaid invoices: {n} for {amount}, up to {days} days overdue; 1C debts: {dn} for {damount}, up to {ddays} days").format(
                n=f("unpaid_count"), amount=m("unpaid_amount"), days=f("unpaid_days"), dn=f("debts_count"),
                damount=m("debts_amount"), ddays=f("debts_days")),
            _("Missed calls: {n}; called back within {minutes} minutes: {ok}, later: {late}, not called back: {no}").format(
                n=f("missed_calls"), minutes=self.callback_minutes, ok=f("missed_called_back"), late=f("missed_late"),
                no=f("missed_not_called")),
            _("Greetings: {done} done, {missed} missed").format(done=f("greetings_done"), missed=f("greetings_missed")),
        ]
        names = labels()
        for _key, who, what, v in self.worst:
            shown = money(v, self.currency) if what in MONEY else number(v, 0)
            lines.append(_("Worst: {manager}: {figure} {value}").format(manager=who, figure=names[what], value=shown))
        return lines


def _in(col: Any, p: Period) -> Any:
    return and_(col >= p.start, col < p.end)


def build(settings: Settings, store: Store, period: Period, now: datetime, *, manager: str | None = None) -> ControlReport:
    """Every figure of the report for ``period``, as of ``now``; ``manager`` (a manager key) narrows it to one."""
    cal = BusinessCalendar(settings.calendar, settings.timezone)
    primary = primary_system(settings)
    by_type: dict[str, list[str]] = defaultdict(list)
    for r in settings.rules:
        by_type[r.type].append(r.name)
    greet_rules = [r.name for r in settings.rules if isinstance(r, GreetingsRule)]
    reason_fields = [r.reason_field for r in settings.rules if isinstance(r, LostRule) and r.reason_field]
    missed_rule = next((r for r in settings.rules if isinstance(r, MissedCallRule)), None)
    minutes = missed_rule.callback_within_minutes if missed_rule else 15
    rows: dict[str | None, Row] = {}
    notes: list[str] = []

    with load_snapshot(settings, store, now) as snap:
        conn = snap.conn
        names = {k: m.name for k, m in snap.managers.items()}

        def row(key: str | None) -> Row:
            if key not in rows:
                rows[key] = Row(key, names.get(key or "", key.rsplit(":", 1)[-1] if key else _("no manager")))
            return rows[key]

        def add(key: str | None, figure: str, n: float = 1) -> None:
            r = row(key or None)
            r.figures[figure] = max(r.figures[figure], n) if figure in MAX else r.figures[figure] + n

        for k in names:
            if snap.managers[k].active and k.startswith(primary + ":"):
                row(k)
        holder = or_(clients.c.kind == "company", clients.c.company_key.is_(None))
        for key, n in conn.execute(select(clients.c.responsible_key, func.count()).where(
                clients.c.system == primary, clients.c.deleted.is_(False), holder).group_by(clients.c.responsible_key)):
            add(key, "clients", n)

        # forgotten: episodes of forgotten rules, by the client's responsible now
        resp = clients.alias("rc")
        ep_with_resp = (select(episodes.c.episode, episodes.c.rule, episodes.c.client_key, episodes.c.opened_at, episodes.c.closed_at,
                               episodes.c.close_reason, resp.c.responsible_key, resp.c.title, resp.c.fields)
                        .outerjoin(resp, resp.c.key == episodes.c.client_key))
        if by_type["forgotten"]:
            q = ep_with_resp.where(episodes.c.rule.in_(by_type["forgotten"]))
            for r in conn.execute(q):
                if r.closed_at is None:
                    add(r.responsible_key, "forgotten_now")
                if r.opened_at is not None and period.start <= r.opened_at < period.end:
                    add(r.responsible_key, "forgotten_new")

        # releases the connector did, with the client names
        released: list[dict] = []
        for r in conn.execute(select(journal.c.payload, journal.c.done_at).where(
                journal.c.type == "reassign", journal.c.state.in_(DONE), _in(journal.c.done_at, period)).order_by(journal.c.done_at)):
            p = r.payload or {}
            add(p.get("from"), "released_from")
            add(p.get("to"), "released_to")
            released.append({"client": p.get("_title", ""), "from": p.get("from_name") or names.get(p.get("from"), ""),
                             "to": p.get("to_name") or names.get(p.get("to"), ""), "at": day(cal.local(r.done_at)),
                             "from_key": p.get("from"), "to_key": p.get("to")})

        # the connector's tasks created in the period, and what became of them
        tq = (select(journal.c.key, journal.c.rule, journal.c.remote_key, journal.c.payload, tasks.c.responsible_key,
                     tasks.c.deadline, tasks.c.completed, tasks.c.closed_at)
              .outerjoin(tasks, tasks.c.key == journal.c.remote_key)
              .where(journal.c.type == "task", journal.c.state.in_(DONE), journal.c.remote_key.is_not(None), _in(journal.c.done_at, period)))
        for r in conn.execute(tq):
            p = r.payload or {}
            who = r.responsible_key or p.get("responsible")
            deadline = r.deadline or (datetime.fromisoformat(p["deadline"]) if p.get("deadline") else None)
            add(who, "tasks_created")
            if r.completed:
                add(who, "tasks_late" if deadline is not None and r.closed_at is not None and r.closed_at > deadline else "tasks_on_time")
            elif deadline is not None and deadline < now:
                add(who, "tasks_overdue")
            else:
                add(who, "tasks_open")

        # lost, won back (with the revenue of the returning purchases), still lost, loss reasons, funnel
        won_back: list[dict] = []
        reasons: Counter = Counter()
        funnel = {"lost": 0, "called": 0, "returned": 0}
        if by_type["lost"]:
            eps = conn.execute(ep_with_resp.where(episodes.c.rule.in_(by_type["lost"]),
                                                  episodes.c.opened_at < period.end,
                                                  or_(episodes.c.closed_at.is_(None), episodes.c.closed_at >= period.start))).all()
            ev = Evidence(conn, primary, now)
            bought = ev.purchases(sorted({r.client_key for r in eps if r.client_key}))
            fams = [r.episode for r in eps]
            family_tasks: dict[str, list[str]] = defaultdict(list)
            for ep, remote in conn.execute(select(journal.c.episode, journal.c.remote_key).where(
                    journal.c.rule.in_(by_type["lost"]), journal.c.type == "task", journal.c.state.in_(DONE),
                    journal.c.remote_key.is_not(None))):
                fam = ep.split("#", 1)[0]
                if fam in fams:
                    family_tasks[fam].append(remote)
            done_tasks = {k for (k,) in conn.execute(select(tasks.c.key).where(
                tasks.c.key.in_([t for ts in family_tasks.values() for t in ts] or [""]), tasks.c.completed.is_(True)))}
            calls_after = {ck: at for ck, at in conn.execute(select(ev_contact.c.client_key, ev_contact.c.at).where(
                ev_contact.c.kind == "call", ev_contact.c.client_key.in_([r.client_key for r in eps if r.client_key] or [""])))}
            for r in eps:
                base = split_episode(r.episode)[2].split("#", 1)[0]
                later = [x for x in bought.get(r.client_key, []) if cal.local(x.at).date().isoformat() > base and x.at < period.end]
                returned = r.closed_at is not None and r.closed_at < period.end and bool(later)
                funnel["lost"] += 1
                called = any(t in done_tasks for t in family_tasks.get(r.episode, [])) or (
                    r.client_key in calls_after and r.opened_at is not None and aware(calls_after[r.client_key]) > r.opened_at)
                funnel["called"] += int(called or returned)
                funnel["returned"] += int(returned)
                if r.opened_at is not None and period.start <= r.opened_at < period.end:
                    add(r.responsible_key, "lost_new")
                if r.closed_at is None:
                    add(r.responsible_key, "lost_still")
                elif returned and r.closed_at >= period.start:
                    revenue = sum(x.amount for x in later)
                    add(r.responsible_key, "won_back")
                    add(r.responsible_key, "won_back_revenue", revenue)
                    won_back.append({"client": r.title or r.client_key, "manager": names.get(r.responsible_key or "", ""),
                                     "manager_key": r.responsible_key, "revenue": revenue})
                for fname in reason_fields:
                    value = str((r.fields or {}).get(fname) or "").strip()
                    reasons[value or _("not recorded")] += 1
                    break

        # unpaid invoices and 1C debts, overdue now
        today = cal.today(now)
        for inv in snap.invoices(due_before=today - timedelta(days=1)):
            if inv.paid or inv.due_date is None:
                continue
            c = snap.client(inv.client_key)
            who = c.responsible_key if c else inv.responsible_key
            add(who, "unpaid_count")
            add(who, "unpaid_amount", inv.amount)
            add(who, "unpaid_days", (today - inv.due_date).days)
        for debt in snap.debts():
            if not debt.overdue_amount or debt.overdue_amount <= 0:
                continue
            c = snap.client(debt.client_key)
            who = c.responsible_key if c else None
            add(who, "debts_count")
            add(who, "debts_amount", debt.overdue_amount)
            if debt.overdue_since:
                add(who, "debts_days", (today - debt.overdue_since).days)

        # missed calls of the period: called back in time, later, or not at all
        missed = conn.execute(select(calls.c.key, calls.c.phone_e164, calls.c.started_at).where(
            calls.c.direction == "in", calls.c.answered.is_(False), calls.c.final.is_(True), calls.c.deleted.is_(False),
            _in(calls.c.started_at, period))).all()
        phones = sorted({r.phone_e164 for r in missed if r.phone_e164})
        answered: dict[str, list[datetime]] = defaultdict(list)
        owner: dict[str, str] = {}
        if phones:
            for ph, at in conn.execute(select(calls.c.phone_e164, calls.c.started_at).where(
                    calls.c.phone_e164.in_(phones), calls.c.answered.is_(True), calls.c.deleted.is_(False), calls.c.started_at <= now)):
                answered[ph].append(at)
            for ph, resp_key in conn.execute(select(client_phones.c.phone, clients.c.responsible_key)
                                             .join(clients, clients.c.key == client_phones.c.client_key)
                                             .where(client_phones.c.phone.in_(phones), clients.c.system == primary,
                                                    clients.c.deleted.is_(False)).order_by(clients.c.key)):
                owner.setdefault(ph, resp_key)
        for r in missed:
            who = owner.get(r.phone_e164 or "")
            add(who, "missed_calls")
            later = [t for t in answered.get(r.phone_e164 or "", []) if t > r.started_at]
            if any(t <= r.started_at + timedelta(minutes=minutes) for t in later):
                add(who, "missed_called_back")
            elif later:
                add(who, "missed_late")
            else:
                add(who, "missed_not_called")

        # greetings: messages sent in the period; call tasks due in it, done by their deadline or missed
        greetings: list[dict] = []
        if greet_rules:
            gq = (select(journal.c.key, journal.c.rule, journal.c.type, journal.c.state, journal.c.payload, journal.c.done_at,
                         journal.c.client_key, tasks.c.responsible_key, tasks.c.deadline, tasks.c.completed, tasks.c.closed_at,
                         clients.c.responsible_key.label("client_resp"))
                  .outerjoin(tasks, tasks.c.key == journal.c.remote_key).outerjoin(clients, clients.c.key == journal.c.client_key)
                  .where(journal.c.rule.in_(greet_rules), journal.c.state.in_(DONE)))
            for r in conn.execute(gq):
                p = r.payload or {}
                if r.type == "task":
                    deadline = r.deadline or (datetime.fromisoformat(p["deadline"]) if p.get("deadline") else None)
                    if deadline is None or not (period.start <= deadline < period.end):
                        continue
                    who = r.responsible_key or p.get("responsible")
                    if r.completed and (r.closed_at is None or r.closed_at <= deadline):
                        state = "done"
                    elif deadline < now:
                        state = "missed"
                    else:
                        continue  # due later today: neither yet
                else:
                    if r.done_at is None or not (period.start <= r.done_at < period.end):
                        continue
                    who, state = r.client_resp, "done"
                add(who, "greetings_done" if state == "done" else "greetings_missed")
                greetings.append({"client": p.get("_title", ""), "manager": names.get(who or "", ""), "rule": r.rule,
                                  "channel": r.type, "state": state})

        # forgotten and released per week over the last 12 weeks
        week0 = period.last_day - timedelta(days=period.last_day.weekday()) - timedelta(weeks=WEEKS - 1)
        starts = [week0 + timedelta(weeks=i) for i in range(WEEKS)]
        edge = datetime.combine(week0, time(0), cal.tz)
        weeks = {s: {"week": s.isoformat(), "forgotten": 0, "released": 0} for s in starts}

        def bucket(t: datetime | None) -> date | None:
            if t is None:
                return None
            d = cal.local(t).date()
            s = d - timedelta(days=d.weekday())
            return s if s in weeks else None

        if by_type["forgotten"]:
            for (opened,) in conn.execute(select(episodes.c.opened_at).where(episodes.c.rule.in_(by_type["forgotten"]),
                                                                              episodes.c.opened_at >= edge)):
                if (b := bucket(opened)) is not None:
                    weeks[b]["forgotten"] += 1
        for (done_at,) in conn.execute(select(journal.c.done_at).where(journal.c.type == "reassign", journal.c.state.in_(DONE),
                                                                        journal.c.done_at >= edge)):
            if (b := bucket(done_at)) is not None:
                weeks[b]["released"] += 1

        currency = Counter([i.currency for i in snap.invoices()] + [d_.currency for d_ in snap.debts()]).most_common(1)
    title = _("company")
    selected = list(rows.values())
    if manager is not None:
        selected = [r for r in selected if r.key == manager]
        if not selected:
            selected = [Row(manager, names.get(manager, manager.rsplit(":", 1)[-1]))]
        title = selected[0].name
        released = [x for x in released if manager in (x["from_key"], x["to_key"])]
        won_back = [x for x in won_back if x["manager_key"] == manager]
        greetings = [x for x in greetings if x["manager"] == selected[0].name]
    total = Row(None, _("company") if manager is None else title)
    for r in selected:
        for k in FIGURES:
            v = r.figures[k]
            total.figures[k] = max(total.figures[k], v) if k in MAX else total.figures[k] + v
    people = sorted((r for r in selected if r.key is not None), key=lambda r: r.name)
    people += [r for r in selected if r.key is None and any(r.figures.values())]
    return ControlReport(
        title=title, period=period, generated=now, timezone=settings.timezone,
        currency=(currency[0][0] if currency and currency[0][0] else "UAH"), callback_minutes=minutes, rows=people, total=total,
        worst=_worst(people, total), released=released, lost_reasons=reasons.most_common(), won_back=won_back,
        weeks=[weeks[s] for s in starts], funnel=funnel, greetings=greetings, notes=notes)


def _worst(rows: list[Row], total: Row) -> list[tuple[str, str, str, float]]:
    """The three worst figures: a manager's share of the company's total of a bad figure, largest first."""
    scored = []
    for r in rows:
        if r.key is None:
            continue
        for k in BAD:
            v, t = r.figures[k], total.figures[k]
            if v > 0 and t > 0:
                scored.append((v / t, v, r.name, k, r.key))
    scored.sort(key=lambda x: (-x[0], -x[1], x[2], x[3]))
    return [(key, name, k, v) for _share, v, name, k, key in scored[:3]]


# ---------------------------------------------------------------------- plain formats


def to_json(rep: ControlReport) -> str:
    data = {
        "title": rep.title, "period": {"from": rep.period.first_day.isoformat(), "to": rep.period.last_day.isoformat()},
        "generated": rep.generated.isoformat(), "currency": rep.currency, "callback_minutes": rep.callback_minutes,
        "summary": rep.summary(), "total": rep.total.figures,
        "managers": [{"key": r.key, "name": r.name, **r.figures} for r in rep.rows],
        "worst": [{"manager": m, "figure": k, "value": v} for _key, m, k, v in rep.worst],
        "released": [{k: v for k, v in x.items() if not k.endswith("_key")} for x in rep.released],
        "lost_reasons": [{"reason": k, "clients": n} for k, n in rep.lost_reasons],
        "won_back": [{k: v for k, v in x.items() if k != "manager_key"} for x in rep.won_back],
        "weeks": rep.weeks, "funnel": rep.funnel, "greetings": rep.greetings,
    }
    return json.dumps(data, ensure_ascii=False, indent=2, default=str)


def to_csv(rep: ControlReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["manager", *FIGURES])
    w.writerow([rep.total.name, *[_plain(rep.total.figures[k]) for k in FIGURES]])
    for r in rep.rows:
        w.writerow([r.name, *[_plain(r.figures[k]) for k in FIGURES]])
    return buf.getvalue()


def _plain(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}"


def to_markdown(rep: ControlReport) -> str:
    names = labels()
    worst = {(key, k) for key, _m, k, _v in rep.worst}
    lines = [f"# {rep.summary()[0]}", ""]
    lines += [f"- {x}" for x in rep.summary()[1:]] + [""]
    cols = ["clients", "forgotten_now", "forgotten_new", "released_from", "released_to", "tasks_created", "tasks_on_time",
            "tasks_late", "tasks_open", "tasks_overdue", "lost_new", "won_back", "won_back_revenue", "lost_still",
            "unpaid_count", "unpaid_amount", "debts_count", "debts_amount", "missed_calls", "missed_not_called",
            "greetings_done", "greetings_missed"]
    lines.append("| " + " | ".join([_("manager")] + [names[c] for c in cols]) + " |")
    lines.append("|" + "---|" * (len(cols) + 1))
    for r in [rep.total, *rep.rows]:
        cells = [f"**{r.name}**" if r is rep.total else r.name]
        for c in cols:
            v = rep.value(r, c)
            cells.append(f"**{v}** ⚠" if r is not rep.total and (r.key, c) in worst else v)
        lines.append("| " + " | ".join(cells) + " |")
    if rep.released:
        lines += ["", f"## {_('Released clients')}", ""]
        lines += [f"- {x['at']}: {x['client']}: {x['from']} → {x['to']}" for x in rep.released]
    if rep.lost_reasons:
        lines += ["", f"## {_('Why lost clients stopped buying')}", ""]
        lines += [f"- {reason}: {n}" for reason, n in rep.lost_reasons]
    if rep.won_back:
        lines += ["", f"## {_('Won back')}", ""]
        lines += [f"- {x['client']} ({x['manager']}): {money(x['revenue'], rep.currency)}" for x in rep.won_back]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- charts and HTML


def charts(rep: ControlReport, fmt: str = "svg") -> dict[str, bytes]:
    """The four charts, drawn by matplotlib: SVG for the HTML file, PNG for e-mail clients that show no SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.family": "DejaVu Sans", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    out: dict[str, bytes] = {}

    def save(name: str, fig: Any) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches="tight", dpi=110 if fmt == "png" else None, metadata=_meta(fmt))
        plt.close(fig)
        out[name] = buf.getvalue()

    fig, ax = plt.subplots(figsize=(7.2, 2.8))
    xs = range(len(rep.weeks))
    ax.bar([x - 0.2 for x in xs], [w["forgotten"] for w in rep.weeks], width=0.4, label=_("newly forgotten"), color="#e8a33d")
    ax.bar([x + 0.2 for x in xs], [w["released"] for w in rep.weeks], width=0.4, label=_("released"), color="#c0392b")
    ax.set_xticks(list(xs), [day(date.fromisoformat(w["week"]))[:5] for w in rep.weeks])
    ax.set_title(_("Forgotten and released per week, last 12 weeks"))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False)
    save("weeks", fig)

    people = [r for r in rep.rows if r.key is not None]
    for name, figure, colour, title in (
            ("overdue", "tasks_overdue", "#c0392b", _("Connector tasks open and overdue, per manager")),
            ("revenue", "won_back_revenue", "#27ae60", _("Won-back revenue, per manager"))):
        fig, ax = plt.subplots(figsize=(7.2, 0.45 * max(len(people), 2) + 0.8))
        vals = [r.figures[figure] for r in people]
        ax.barh([r.name for r in people], vals, color=colour)
        ax.invert_yaxis()
        ax.set_xlim(0, max([*vals, 1]) * 1.25)
        ax.set_title(title)
        if figure not in MONEY:
            ax.xaxis.get_major_locator().set_params(integer=True)
        for y, v in enumerate(vals):
            if v:
                ax.text(v, y, " " + (money(v, rep.currency) if figure in MONEY else number(v, 0)), va="center", fontsize=8)
        save(name, fig)

    fig, ax = plt.subplots(figsize=(7.2, 1.9))
    steps = [(_("lost"), rep.funnel["lost"]), (_("called"), rep.funnel["called"]), (_("returned"), rep.funnel["returned"])]
    ax.barh([s for s, _n in steps], [n for _s, n in steps], color=["#7f8c8d", "#2980b9", "#27ae60"])
    ax.invert_yaxis()
    for y, (_s, n) in enumerate(steps):
        ax.text(n, y, f" {n}", va="center")
    ax.set_title(_("Lost clients: lost, called, returned"))
    ax.xaxis.get_major_locator().set_params(integer=True)
    save("funnel", fig)
    return out


def _meta(fmt: str) -> dict:
    return {"Date": None} if fmt == "svg" else {}


def _svg_inline(data: bytes) -> str:
    text = data.decode("utf-8")
    return text[text.index("<svg"):]


HTML = """<!DOCTYPE html>
<html lang="{{ lang }}"><head><meta charset="utf-8"><title>{{ heading }}</title>
<style>
body{font-family:"DejaVu Sans",Arial,sans-serif;color:#222;margin:24px;max-width:1100px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} .muted{color:#777;font-size:12px}
ul.summary{padding-left:18px} ul.summary li{margin:3px 0}
table{border-collapse:collapse;font-size:12px;margin:8px 0 12px} th,td{border:1px solid #ddd;padding:4px 6px;text-align:right}
th{background:#f4f4f4;font-weight:600} td.name,th.name{text-align:left} tr.total td{font-weight:700;background:#fafafa}
td.worst{background:#fde2e1;color:#b03a2e;font-weight:700}
.charts{display:flex;flex-wrap:wrap;gap:12px} .chart{flex:1 1 520px} .chart svg,.chart img{max-width:100%;height:auto}
</style></head><body>
<h1>{{ heading }}</h1>
<div class="muted">{{ generated }}</div>
<ul class="summary">{% for line in summary %}<li>{{ line }}</li>{% endfor %}</ul>
<h2>{{ t.table }}</h2>
{% for g in groups %}<table><tr><th class="name">{{ t.manager }}</th>{% for c in g.cols %}<th>{{ names[c] }}</th>{% endfor %}</tr>
{% for r in g.rows %}<tr class="{{ 'total' if loop.first else '' }}"><td class="name">{{ r.name }}</td>
{% for c in r.cells %}<td class="{{ 'worst' if c.worst else '' }}">{{ c.text }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endfor %}
<h2>{{ t.charts }}</h2>
<div class="charts">{% for c in charts %}<div class="chart" id="chart-{{ c.name }}">{{ c.body }}</div>{% endfor %}</div>
{% if released %}<h2>{{ t.released }}</h2><table><tr><th class="name">{{ t.date }}</th><th class="name">{{ t.client }}</th>
<th class="name">{{ t.from }}</th><th class="name">{{ t.to }}</th></tr>
{% for x in released %}<tr><td class="name">{{ x.at }}</td><td class="name">{{ x.client }}</td><td class="name">{{ x.from }}</td>
<td class="name">{{ x.to }}</td></tr>{% endfor %}</table>{% endif %}
{% if reasons %}<h2>{{ t.reasons }}</h2><table>{% for reason, n in reasons %}<tr><td class="name">{{ reason }}</td><td>{{ n }}</td></tr>
{% endfor %}</table>{% endif %}
{% if won_back %}<h2>{{ t.won_back }}</h2><table>{% for x in won_back %}<tr><td class="name">{{ x.client }}</td>
<td class="name">{{ x.manager }}</td><td>{{ x.revenue }}</td></tr>{% endfor %}</table>{% endif %}
</body></html>
"""

GROUPS = (("clients", "forgotten_now", "forgotten_new", "released_from", "released_to", "tasks_created", "tasks_on_time",
           "tasks_late", "tasks_open", "tasks_overdue", "lost_new", "won_back", "won_back_revenue", "lost_still"),
          ("unpaid_count", "unpaid_amount", "unpaid_days", "debts_count", "debts_amount", "debts_days", "missed_calls",
           "missed_called_back", "missed_late", "missed_not_called", "greetings_done", "greetings_missed"))


def to_html(rep: ControlReport, *, images: str = "svg") -> tuple[str, dict[str, bytes]]:
    """The report as one self-contained HTML file: charts inline as SVG (``images="svg"``), or as
    ``cid:`` references to PNG images returned beside it (``images="cid"``, for e-mail)."""
    from jinja2 import Environment
    from markupsafe import Markup

    from connector import i18n

    env = Environment(autoescape=True)
    worst = {(key, k) for key, _m, k, _v in rep.worst}
    groups = [{"cols": cols, "rows": [{"name": r.name, "cells": [{"text": rep.value(r, c),
                                                                   "worst": r is not rep.total and (r.key, c) in worst} for c in cols]}
                                       for r in [rep.total, *rep.rows]]} for cols in GROUPS]
    drawn = charts(rep, "svg" if images == "svg" else "png")
    parts = []
    attached: dict[str, bytes] = {}
    for name, data in drawn.items():
        if images == "svg":
            parts.append({"name": name, "body": Markup(_svg_inline(data))})
        else:
            cid = f"chart-{name}"
            attached[cid] = data
            parts.append({"name": name, "body": Markup(f'<img src="cid:{cid}" alt="{name}">')})
    t = {"table": _("Managers"), "manager": _("manager"), "charts": _("Charts"), "released": _("Released clients"),
         "reasons": _("Why lost clients stopped buying"), "won_back": _("Won back"), "date": _("date"), "client": _("client"),
         "from": _("from"), "to": _("to")}
    html = env.from_string(HTML).render(
        lang=i18n.current(), heading=rep.summary()[0],
        generated=_("Made {moment} from the connector's store and journal").format(moment=i18n.moment(rep.generated, rep.timezone)),
        summary=rep.summary()[1:], t=t, names=labels(), groups=groups, charts=parts, released=rep.released,
        reasons=rep.lost_reasons, won_back=[{**x, "revenue": money(x["revenue"], rep.currency)} for x in rep.won_back])
    return html, attached


def render(rep: ControlReport, fmt: str) -> str:
    if fmt == "json":
        return to_json(rep)
    if fmt == "csv":
        return to_csv(rep)
    if fmt == "md":
        return to_markdown(rep)
    if fmt == "html":
        return to_html(rep)[0]
    raise ValueError(f"unknown format {fmt!r}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


