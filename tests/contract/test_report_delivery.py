"""Scheduled control report: e-mail with inline charts, the HTML file on the supervisor's Bitrix24
Drive and a notification, exactly once per period, through the real sinks and the emulators."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from connector.config import load_settings
from connector.demo import Sandbox
from connector.execute import Executor
from connector.journal import Journal
from connector.ports import FixedClock
from connector.report_delivery import plan_deliveries, record_deliveries
from connector.runner import build_sinks, cycle, make_context, open_store

ROOT = Path(__file__).resolve().parents[2]
REPORTS = """
reports:
  - name: weekly
    schedule: {cron: "0 9 * * mon"}
    period: week
    to: [supervisor]
    via: [email, bitrix24]
"""


@pytest.fixture
def env(tmp_path):
    with Sandbox() as sb:
        cfg = tmp_path / "c.yaml"
        cfg.write_text((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8") + REPORTS, encoding="utf-8")
        os.environ["CONNECTOR_STORE"] = f"sqlite:///{tmp_path / 'r.db'}"
        try:
            s = load_settings(cfg)
            store = open_store(s)
            cycle(s, store, make_context(store, FixedClock(sb.company.anchor)), execute=True)
            yield sb, s, store
        finally:
            os.environ.pop("CONNECTOR_STORE", None)


def _svc(sb, attr):
    return next(getattr(x, attr) for x in sb._services if hasattr(x, attr))


def _deliver(s, store, now):
    n = record_deliveries(s, store, now)
    ctx = make_context(store, FixedClock(now))
    sinks = build_sinks(s, ctx)
    try:
        rep = Executor(Journal(store), sinks, FixedClock(now)).run()
    finally:
        for x in sinks:
            x.close()
    return n, rep


def test_the_weekly_report_goes_out_once_by_email_and_to_the_supervisors_drive(env):
    sb, s, store = env
    monday = sb.company.anchor + timedelta(days=7, minutes=-55)  # Monday 30 Nov 2026, 09:05 Kyiv
    n, rep = _deliver(s, store, monday)
    assert n == 3 and rep.failed == 0 and rep.uncertain == 0, rep.problems
    states = {k: v for k, v in Journal(store).states().items() if k.startswith("report:")}
    assert set(states) == {"report:weekly:2026-11-23:m0", "report:weekly:2026-11-23:f0", "report:weekly:2026-11-23:n0"}
    assert set(states.values()) <= {"done", "sent"}

    (mail,) = [m for m in _svc(sb, "smtp").messages]
    msg = mail.message
    assert msg["To"].endswith("@shop.example") and "23.11.2026" in msg["Subject"]
    html = msg.get_body(preferencelist=("html",))
    images = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 4 and all(len(p.get_content()) > 1000 for p in images)
    assert all(f"cid:{p['Content-ID'].strip('<>')}" in html.get_content() for p in images)

    portal = _svc(sb, "portal")
    files = portal.drive_files(1)
    assert list(files) == ["weekly-2026-11-23-2026-11-29.html"]
    body = next(iter(files.values())).decode("utf-8")
    assert body.count("<svg") == 4 and "cid:" not in body
    notes = [r for r in portal.table("notify").values() if r["USER_ID"] == 1]
    assert len(notes) == 1 and "weekly-2026-11-23-2026-11-29.html" in notes[0]["MESSAGE"]

    # the same period again (another cycle, a restart): nothing is planned, nothing is sent twice
    n, _ = _deliver(s, store, monday + timedelta(hours=3))
    assert n == 0 and len(_svc(sb, "smtp").messages) == 1 and len(portal.drive_files(1)) == 1


def test_nothing_goes_out_before_the_schedule_and_the_next_week_is_a_new_period(env):
    sb, s, store = env
    sunday = sb.company.anchor + timedelta(days=6)
    keys = [a.key for a in plan_deliveries(s, store, sunday)]
    assert keys and all(":2026-11-16:" in k for k in keys)  # Sunday: the report due is last Monday's (the week before)
    later = [a.key for a in plan_deliveries(s, store, sunday + timedelta(days=1, hours=1))]
    assert later and all(":2026-11-23:" in k for k in later)


def test_an_upload_interrupted_before_its_answer_is_found_by_name_not_doubled(env):
    sb, s, store = env
    monday = sb.company.anchor + timedelta(days=7, minutes=-55)
    portal = _svc(sb, "portal")
    record_deliveries(s, store, monday)
    answered = []

    def lose_answer(method, status, body):  # the upload lands, its answer is lost (a timeout)
        if method == "disk.folder.uploadfile" and not answered:
            answered.append(method)
            return 504, {"error": "GATEWAY_TIMEOUT", "error_description": "timeout"}
        return None

    portal.after_request = lose_answer
    ctx = make_context(store, FixedClock(monday))
    sinks = build_sinks(s, ctx)
    try:
        Executor(Journal(store), sinks, FixedClock(monday), settle=timedelta(0)).run()
        Executor(Journal(store), sinks, FixedClock(monday + timedelta(minutes=5)), settle=timedelta(0)).run()
    finally:
        for x in sinks:
            x.close()
    assert answered and len(portal.drive_files(1)) == 1
    assert Journal(store).states()["report:weekly:2026-11-23:f0"] == "done"
