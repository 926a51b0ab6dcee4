"""Missed call: an inbound call nobody answered, not called back within
``callback_within_minutes`` -> apology SMS to the caller and a call-back task.

One episode per caller and local day. A later answered call with the same number (a call-back or
the client calling again) ends the episode: the planner cancels what is not yet sent and closes
the call-back task. A call that merely left the lookback window proves nothing: an apology
deferred by quiet hours on Friday night is still sent on Monday morning.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from connector import i18n
from connector.calendar import BusinessCalendar
from connector.config import MissedCallRule
from connector.i18n import _, ngettext
from connector.rules.base import Evaluation, Finding, local_date
from connector.snapshot import EpisodeView, Snapshot, split_episode
from connector.templates import call_var


def evaluate(rule: MissedCallRule, snap: Snapshot, cal: BusinessCalendar, duty_key: str | None) -> Evaluation:
    findings: dict[str, Finding] = {}
    since = snap.now - timedelta(hours=rule.lookback_hours)
    calls = snap.calls(since=since)
    snap.clients([c.client_key for c in calls if c.client_key])
    scope = 0
    for call in calls:
        if call.direction != "in" or call.answered or not call.final or not call.phone:
            continue
        scope += 1
        if snap.now < call.started_at + timedelta(minutes=rule.callback_within_minutes):
            continue
        later = [x for x in calls if x.phone == call.phone and x.started_at > call.started_at and x.answered]
        if later:
            continue
        period = local_date(cal, call.started_at)
        episode_id = f"phone:{call.phone}"
        if episode_id + period in findings:
            continue
        client = snap.client(call.client_key)
        responsible = client.responsible_key if client else duty_key
        waited = int((snap.now - call.started_at).total_seconds() // 60)
        at = i18n.moment(cal.local(call.started_at))
        if client:
            reason = ngettext("missed inbound call from {phone} at {time}, not called back for {minutes} minute",
                              "missed inbound call from {phone} at {time}, not called back for {minutes} minutes", waited)
        else:
            reason = ngettext("missed inbound call from {phone} at {time}, not called back for {minutes} minute "
                              "(an unknown number: for the duty manager)",
                              "missed inbound call from {phone} at {time}, not called back for {minutes} minutes "
                              "(an unknown number: for the duty manager)", waited)
        findings[episode_id + period] = Finding(
            subject_key=episode_id, client=client, period=period,
            reason=reason.format(phone=call.phone, time=at, minutes=waited),
            vars={"call": call_var(id=call.key.rsplit(':', 1)[-1], phone=call.phone, wait_s=call.wait_s,
                                   started_at=cal.local(call.started_at)),
                  "callback_minutes": rule.callback_within_minutes, "days": 0},
            responsible_key=responsible, phone=call.phone,
        )
    return Evaluation(list(findings.values()), scope)


def clear_reason(rule: MissedCallRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    """Ended only by an answered call with the number after the missed one; anything else is unknown."""
    subject, day = split_episode(ep.episode)[1:]
    phone = subject.removeprefix("phone:")
    start = datetime.combine(datetime.fromisoformat(day).date(), time(0), cal.tz)
    calls = snap.calls(since=start, phones=[phone])
    missed = [c for c in calls if c.direction == "in" and not c.answered and local_date(cal, c.started_at) == day]
    if not missed:
        return None
    answered = [c for c in calls if c.answered and c.started_at > missed[0].started_at]
    if answered:
        c = answered[0]
        at = i18n.moment(cal.local(c.started_at))
        if c.direction == "out":
            return _("called back at {time}").format(time=at)
        return _("the client called again and was answered at {time}").format(time=at)
    return None
