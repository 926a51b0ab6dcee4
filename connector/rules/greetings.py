"""Greetings: birthdays, company days and holidays, by SMS, e-mail or a manager's call.

Once a day, not before ``at`` (local time), the rule finds the clients whose occasion is today
and greets each through the first channel whose ``where`` fits and that reaches them (a mobile
phone for SMS, an e-mail address, an active responsible manager for a call task). A call task
is due at the end of the occasion's day; when that day is off or the manager is away
(``people.absences``) it moves to the last working day before, and is created that morning.
An optional offer goes out ``offer.days_before`` days ahead.

Exactly once: the episode is ``<occasion>-<year>`` (``<occasion>-offer-<year>`` for the offer),
so the keys hold the occasion and the year; a second greetings rule for the same occasion skips
a client already greeted that year. Variants rotate per client and occasion over the years (the
count of earlier greetings picks the next text), so nobody gets the same text two years
running. A 29 February birthday is greeted on 28 February in other years. A client no channel
reaches is reported, never a crash.
"""

from __future__ import annotations

import calendar as _cal
import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select

from connector.calendar import BusinessCalendar
from connector.config import EmailAction, EmailSpec, GreetingChannel, GreetingsRule, SmsAction, SmsSpec, TaskAction
from connector.i18n import _, day
from connector.phones import is_mobile
from connector.rules.base import DONE_STATES, FINAL_STATES, Evaluation, Finding, in_scope, kind_of, person_key
from connector.snapshot import ClientView, EpisodeView, Snapshot, split_episode
from connector.store import clients
from connector.templates import pick_variant

LOOK_BACK_DAYS = 31  # how far a call task may move back before its day (holidays, a long absence)


def titles() -> dict[str, str]:
    return {"birthday": _("birthday"), "company_day": _("company day"), "new_year": _("New Year"),
            "womens_day": _("International Women's Day"), "holiday": _("holiday")}


def occurrence(month: int, dom: int, year: int) -> date:
    """The occasion's day in ``year``: 29 February is 28 February in a common year."""
    if month == 2 and dom == 29 and not _cal.isleap(year):
        return date(year, 2, 28)
    return date(year, month, dom)


_DMY = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})")


def parse_day(value: Any) -> date | None:
    """A date as CRMs hold it: ``1985-03-14``, ``1985-03-14T00:00:00+03:00`` or ``14.03.1985``."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    m = _DMY.match(text)
    try:
        if m:
            return date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _absences(snap: Snapshot) -> dict[str, list[tuple[date, date]]]:
    out: dict[str, list[tuple[date, date]]] = {}
    for a in snap.settings.people.absences:
        out.setdefault(person_key(snap, a.user), []).append((a.from_, a.to))
    return out


def call_day(cal: BusinessCalendar, occasion_day: date, away: Callable[[date], bool]) -> date:
    """The last working day on or before the occasion when the manager is in."""
    d = occasion_day
    for _n in range(LOOK_BACK_DAYS + 1):
        if cal.is_workday(d) and not away(d):
            return d
        d -= timedelta(days=1)
    return occasion_day


def _month_days(start: date, days: int) -> list[str]:
    out = {(start + timedelta(days=n)).strftime("%m-%d") for n in range(days + 1)}
    if "02-28" in out:
        out.add("02-29")  # a leap-day birthday is greeted on 28 February in common years
    return sorted(out)


class _Picker:
    """Channel choice and reachability for one evaluation."""

    def __init__(self, rule: GreetingsRule, snap: Snapshot):
        self.rule, self.snap = rule, snap
        m = snap.settings.messaging
        self.sms_ok = bool(m and m.sms)
        self.email_ok = bool(m and m.email)

    def reaches(self, ch: GreetingChannel, c: ClientView) -> bool:
        if ch.sms is not None:
            return self.sms_ok and any(is_mobile(p) for p in c.phones)
        if ch.email is not None:
            return self.email_ok and bool(c.emails)
        mgr = self.snap.manager(c.responsible_key)
        return mgr is not None and mgr.active

    def pick(self, channels: list[GreetingChannel], c: ClientView) -> GreetingChannel | None:
        for ch in channels:
            if in_scope(c, ch.where, self.snap) and self.reaches(ch, c):
                return ch
        return None


def _occasion_days(rule: GreetingsRule, snap: Snapshot, kind: str, today: date, horizon: int) -> dict[str, date]:
    """Clients (in scope) whose occasion falls within ``today .. today + horizon``, with its day."""
    scope = snap.scope(rule.where, kind)
    fixed = rule.month_day()
    out: dict[str, date] = {}

    def upcoming(md: tuple[int, int]) -> date | None:
        for year in (today.year, today.year + 1):
            d = occurrence(md[0], md[1], year)
            if today <= d <= today + timedelta(days=horizon):
                return d
        return None

    if fixed is not None:
        d = upcoming((int(fixed[:2]), int(fixed[3:])))
        if d is None:
            return {}
        return {k: d for (k,) in snap.conn.execute(select(clients.c.key).where(*scope).order_by(clients.c.key))}
    wanted = _month_days(today, horizon)
    if rule.field:
        col = snap._json_text(clients.c.fields, rule.field)
        q = select(clients.c.key, col).where(*scope, col.is_not(None), col != "")
    else:
        md = func.to_char(clients.c.birthday, "MM-DD") if snap.conn.dialect.name == "postgresql" else \
            func.strftime("%m-%d", clients.c.birthday)
        q = select(clients.c.key, clients.c.birthday).where(*scope, clients.c.birthday.is_not(None), md.in_(wanted))
    for key, value in snap.conn.execute(q.order_by(clients.c.key)):
        born = parse_day(value)
        if born is None:
            continue
        d = upcoming((born.month, born.day))
        if d is not None:
            out[key] = d
    return out


def _sent_before(entries: list, occasion: str, year: int, offer: bool) -> int:
    """Earlier greetings (or offers) of this occasion that went out: the variant rotation counter."""
    n = 0
    for e in entries:
        period = split_episode(e.episode)[2]
        m = re.match(rf"^{re.escape(occasion)}-(offer-)?(\d{{4}})$", period)
        if m and bool(m.group(1)) == offer and int(m.group(2)) < year and e.state in DONE_STATES and e.type in ("sms", "email", "trigger"):
            n += 1
    return n


def _action(ch: GreetingChannel, client_key: str, sent_before: int) -> Any:
    """The channel as one planner action; variants are resolved here, per client and occasion."""
    if ch.sms is not None:
        spec = ch.sms
        text = spec.text or pick_variant(spec.variants or [""], client_key, sent_before)
        return SmsAction(sms=SmsSpec(text=text, marketing=spec.marketing, to="client"))
    if ch.email is not None:
        spec_e = ch.email
        text = spec_e.text or pick_variant(spec_e.variants or [""], client_key, sent_before)
        return EmailAction(email=EmailSpec(subject=spec_e.subject, text=text, to=spec_e.to))
    return TaskAction(task=ch.task)


def evaluate(rule: GreetingsRule, snap: Snapshot, cal: BusinessCalendar) -> Evaluation:
    kind = kind_of(rule.clients)
    scope_n = snap.scope_count(rule.where, kind)
    local = cal.local(snap.now)
    today = local.date()
    hh, mm = (int(x) for x in rule.at.split(":"))
    if local.time() < time(hh, mm):
        return Evaluation([], scope_n)  # not before the configured time of day
    offer_days = rule.offer.days_before if rule.offer else 0
    days = _occasion_days(rule, snap, kind, today, LOOK_BACK_DAYS + offer_days)
    if not days:
        return Evaluation([], scope_n)
    views = snap.clients(list(days), purchases=True)
    history = snap.journal_for(rule.name, list(views))
    others = [r for r in snap.settings.rules if isinstance(r, GreetingsRule) and r.name != rule.name and r.occasion == rule.occasion
              and r.enabled]
    mine = next(i for i, r in enumerate(snap.settings.rules) if r.name == rule.name)
    earlier = [r for r in others if snap.settings.rules.index(r) < mine and r.clients == rule.clients]
    elsewhere: dict[str, list] = {}
    for other in others:
        for subject, entries in snap.journal_for(other.name, list(views)).items():
            elsewhere.setdefault(subject, []).extend(entries)
    away_by = _absences(snap)
    picker = _Picker(rule, snap)
    title = rule.title or titles()[rule.occasion]
    findings: list[Finding] = []
    notes: list[str] = []
    msg = snap.settings.messaging
    quiet = msg.quiet_hours if msg else "21:00-09:00"
    for key, c in views.items():
        d = days[key]
        year = d.year
        period = f"{rule.occasion}-{year}"
        if any(in_scope(c, r.where, snap) for r in earlier):
            continue  # the first rule for this occasion whose where fits the client greets it
        if any(split_episode(e.episode)[2] == period and (e.state in DONE_STATES or e.state not in FINAL_STATES)
               for e in elsewhere.get(key, [])):
            notes.append(_("{client}: already greeted for this occasion in {year} by another rule").format(client=c.title, year=year))
            continue
        purchases = [{"date": day(w), "amount": a, "kind": what} for w, a, what in reversed(c.purchases[-3:])]
        base_vars = {"occasion": {"name": rule.occasion, "title": title, "date": day(d), "year": year},
                     "purchases": purchases, "last_purchase": purchases[0] if purchases else {"date": "", "amount": 0.0, "kind": ""}}
        away = away_by.get(c.responsible_key or "", [])

        def is_away(x: date, away: list = away) -> bool:
            return any(a <= x <= b for a, b in away)

        # the greeting itself
        ch = picker.pick(rule.channels, c)
        if ch is None:
            if today == d:
                notes.append(_("{client}: no channel reaches this client (no mobile phone, no e-mail, no active manager); "
                               "not greeted").format(client=c.title))
        else:
            fire = call_day(cal, d, is_away) if ch.task is not None else d
            if fire <= today <= d:
                start = datetime.combine(d, time(hh, mm), cal.tz)
                send_at = cal.next_allowed(max(snap.now, start), quiet, False) if ch.task is None else None
                deadline = cal.end_of_day(max(fire, today)) if ch.task is not None else None
                why = (_("{occasion} of {client} on {date}: a call by the manager, due {due}").format(
                    occasion=title, client=c.title, date=day(d), due=day(max(fire, today)))
                    if ch.task is not None else
                    _("{occasion} of {client} on {date}").format(occasion=title, client=c.title, date=day(d)))
                if ch.task is not None and fire < d:
                    why += " " + (_("(moved: {date} is a day off or the manager is away)").format(date=day(d)))
                findings.append(Finding(
                    subject_key=key, client=c, period=period, reason=why, vars=dict(base_vars),
                    actions=[_action(ch, key, _sent_before(history.get(key, []), rule.occasion, year, False))],
                    deadline=deadline, send_at=send_at))
        # the offer, days before
        if rule.offer is not None and today == d - timedelta(days=rule.offer.days_before):
            och = picker.pick(rule.offer.channels, c)
            if och is None:
                notes.append(_("{client}: no channel reaches this client for the offer; not sent").format(client=c.title))
                continue
            start = datetime.combine(today, time(hh, mm), cal.tz)
            send_at = cal.next_allowed(max(snap.now, start), quiet, False) if och.task is None else None
            findings.append(Finding(
                subject_key=key, client=c, period=f"{rule.occasion}-offer-{year}",
                reason=_("offer {days} days before the {occasion} of {client} on {date}").format(
                    days=rule.offer.days_before, occasion=title, client=c.title, date=day(d)),
                vars=dict(base_vars),
                actions=[_action(och, key, _sent_before(history.get(key, []), rule.occasion, year, True))],
                deadline=cal.end_of_day(today) if och.task is not None else None,
                send_at=send_at))
    return Evaluation(findings, scope_n, notes=notes)


def occasion_day(rule: GreetingsRule, c: ClientView | None, year: int) -> date | None:
    """The occasion's day in ``year`` for a client (None when the client has no such date any more)."""
    fixed = rule.month_day()
    if fixed is not None:
        return occurrence(int(fixed[:2]), int(fixed[3:]), year)
    if c is None:
        return None
    born = parse_day(c.fields.get(rule.field)) if rule.field else c.birthday
    return occurrence(born.month, born.day, year) if born else None


def clear_reason(rule: GreetingsRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    """A greeting's episode ends when its day is over (its call task is left as it is)."""
    period = split_episode(ep.episode)[2]
    m = re.match(r"^.+?-(offer-)?(\d{4})$", period)
    today = cal.today(snap.now)
    if m is None:
        return _("the occasion's day is over")
    d = occasion_day(rule, snap.client(ep.client_key), int(m.group(2)))
    if m.group(1) and rule.offer is not None and d is not None:
        d -= timedelta(days=rule.offer.days_before)
    if d is not None and today <= d:
        return None
    return _("the occasion's day is over")
