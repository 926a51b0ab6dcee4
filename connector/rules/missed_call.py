"""Missed call: an inbound call nobody answered, not called back within
``callback_within_minutes`` -> apology SMS to the caller and a call-back task.

One episode per caller and local day. A later answered call with the same number (a call-back or
the client calling again) ends the episode, and the planner cancels whatever of it is not yet
sent.
"""

from __future__ import annotations

from datetime import timedelta

from connector.calendar import BusinessCalendar
from connector.config import MissedCallRule
from connector.rules.base import Evaluation, Finding, local_date
from connector.snapshot import Snapshot


def evaluate(rule: MissedCallRule, snap: Snapshot, cal: BusinessCalendar, duty_key: str | None) -> Evaluation:
    findings: dict[str, Finding] = {}
    since = snap.now - timedelta(hours=rule.lookback_hours)
    calls = [c for c in snap.calls if c.started_at >= since]
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
        if (episode_id, period) in {(f.subject_key, f.period) for f in findings.values()}:
            continue
        client = snap.clients.get(call.client_key or "")
        responsible = client.responsible_key if client else duty_key
        waited = int((snap.now - call.started_at).total_seconds() // 60)
        findings[episode_id + period] = Finding(
            subject_key=episode_id, client=client, period=period,
            reason=f"missed inbound call from {call.phone} at {cal.local(call.started_at):%Y-%m-%d %H:%M}, "
            f"not called back for {waited} minutes" + ("" if client else " (unknown number: duty manager)"),
            vars={"call": {"id": call.key.rsplit(':', 1)[-1], "phone": call.phone, "wait_s": call.wait_s,
                           "started_at": f"{cal.local(call.started_at):%Y-%m-%d %H:%M}"},
                  "callback_minutes": rule.callback_within_minutes, "days": 0},
            responsible_key=responsible, phone=call.phone,
        )
    return Evaluation(list(findings.values()), scope)
