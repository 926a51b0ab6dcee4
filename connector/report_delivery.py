"""Scheduled delivery of the control report, exactly once per period, through the journal.

For each ``reports`` entry the daemon asks, every cycle, which period the latest scheduled moment
(cron, in the company's time zone) covers. Its deliveries are journaled actions with
deterministic keys ``report:<name>:<period start>:<step>``, planned like any other, so the
executor's exactly-once machinery applies: a restart, a second cycle or a second process plans
the same keys and the journal makes them no-ops. Per recipient:

- ``email``: one HTML e-mail (the charts as inline PNG images: most e-mail clients show no SVG)
  with the summary lines as its plain-text part (``m<i>``);
- ``bitrix24``: the HTML file uploaded to the person's Bitrix24 Drive (``f<i>``), then a
  notification with the summary lines naming the file (``n<i>``, after the upload).
"""

from __future__ import annotations

import logging
from datetime import datetime

from croniter import croniter

from connector import control, i18n
from connector.calendar import BusinessCalendar
from connector.config import ReportSpec, Settings
from connector.i18n import _
from connector.journal import Journal
from connector.matching import primary_system
from connector.ports import PlannedAction
from connector.rules.base import person_key
from connector.snapshot import load_snapshot
from connector.store import Store

log = logging.getLogger("connector.report")
RULE = "report"


def due_period(spec: ReportSpec, now: datetime, cal: BusinessCalendar) -> tuple[datetime, control.Period]:
    """The latest scheduled moment at or before ``now`` and the period it reports on."""
    local = cal.local(now)
    fire = croniter(spec.schedule.cron, local).get_prev(datetime)
    if croniter.match(spec.schedule.cron, local.replace(second=0, microsecond=0)):
        fire = local.replace(second=0, microsecond=0)
    return fire, control.resolve_period(spec.period, fire, cal)


def keys_for(spec: ReportSpec, period: control.Period, recipients: int) -> list[str]:
    base = f"{RULE}:{spec.name}:{period.key}"
    out = []
    for i in range(recipients):
        if "email" in spec.via:
            out.append(f"{base}:m{i}")
        if "bitrix24" in spec.via:
            out += [f"{base}:f{i}", f"{base}:n{i}"]
    return out


def plan_deliveries(settings: Settings, store: Store, now: datetime, *, known: set[str] | None = None) -> list[PlannedAction]:
    """The deliveries due now that the journal does not hold yet (the report is built only then)."""
    if not settings.reports:
        return []
    i18n.use(settings.language)
    cal = BusinessCalendar(settings.calendar, settings.timezone)
    journal = Journal(store)
    out: list[PlannedAction] = []
    for spec in settings.reports:
        _fire, period = due_period(spec, now, cal)
        with load_snapshot(settings, store, now) as snap:
            people: list[tuple[str, str, str | None]] = []
            for ref in spec.to:
                ident = settings.people.supervisor if ref == "supervisor" else ref
                if ident is None or ref in ("responsible", "previous_responsible"):
                    log.warning("report %s: %s names nobody here; skipped", spec.name, ref)
                    continue
                key = person_key(snap, ident)
                m = snap.manager(key)
                people.append((key, m.name if m else key, m.email if m else None))
        keys = keys_for(spec, period, len(people))
        have = set(journal.states_for(keys)) | (known or set())
        if all(k in have for k in keys):
            continue
        rep = control.build(settings, store, period, now)
        summary = rep.summary()
        html_file, _none = control.to_html(rep, images="svg")
        html_mail, images = control.to_html(rep, images="cid")
        name = f"{spec.name}-{period.first_day.isoformat()}-{period.last_day.isoformat()}.html"
        base = f"{RULE}:{spec.name}:{period.key}"
        why = _("the {name} report for {period}, scheduled {cron}").format(name=spec.name, period=period.text(), cron=spec.schedule.cron)
        for i, (who, who_name, email) in enumerate(people):
            if "email" in spec.via:
                if email:
                    out.append(_action(f"{base}:m{i}", spec, "email", "sms", why, who_name, {
                        "to": email, "subject": summary[0], "text": "\n".join(summary) + "\n",
                        "html": html_mail, "images": {cid: control.b64(data) for cid, data in images.items()}}))
                else:
                    log.warning("report %s: %s has no e-mail address in the CRM; not sent by e-mail", spec.name, who_name)
            if "bitrix24" in spec.via and who.startswith(primary_system(settings) + ":"):
                up = _action(f"{base}:f{i}", spec, "disk_upload", who.split(":", 1)[0], why, who_name,
                             {"user": who, "name": name, "content": html_file})
                note = "\n".join(summary) + "\n" + _("The full report with charts is on your Bitrix24 Drive: {file}").format(file=name)
                nt = _action(f"{base}:n{i}", spec, "notify", who.split(":", 1)[0], why, who_name,
                             {"user": who, "user_name": who_name, "text": note})
                nt.depends_on = [up.key]
                out += [up, nt]
    return [a for a in out if a.key not in (known or set())]


def _action(key: str, spec: ReportSpec, type_: str, system: str, why: str, who_name: str, payload: dict) -> PlannedAction:
    return PlannedAction(key=key, rule=RULE, type=type_, system=system, subject_key=spec.name, client_key=None, payload=payload,
                         reason=why, client_title=spec.name, manager_name=who_name)


def record_deliveries(settings: Settings, store: Store, now: datetime) -> int:
    """Journal the deliveries due now (the caller holds the store lease); the next execution sends them."""
    actions = plan_deliveries(settings, store, now)
    return Journal(store).record(actions, now, None) if actions else 0
