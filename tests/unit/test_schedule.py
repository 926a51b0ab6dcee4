"""The schedule is read on the company's clock: cron hours are Kyiv hours, summer and winter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connector.cli import _clock
from connector.config import Schedule
from connector.daemon import Daemon
from connector.schedule import next_run, overdue_after
from tests.unit.builders import settings

KYIV = ZoneInfo("Europe/Kyiv")
WORKDAYS = Schedule(cron="*/10 8-20 * * mon-fri", every_minutes=None)


def _utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


@pytest.mark.parametrize(("last_friday_run", "monday_first_utc"), [
    # summer time starts on Sunday 29 March 2026: Friday is UTC+2, Monday UTC+3
    (_utc(2026, 3, 27, 18, 50), _utc(2026, 3, 30, 5, 0)),
    # summer time ends on Sunday 25 October 2026: Friday is UTC+3, Monday UTC+2
    (_utc(2026, 10, 23, 17, 50), _utc(2026, 10, 26, 6, 0)),
])
def test_cron_hours_are_kyiv_hours_across_the_dst_change(last_friday_run, monday_first_utc):
    assert last_friday_run.astimezone(KYIV).strftime("%a %H:%M") == "Fri 20:50"
    first = next_run(WORKDAYS, "Europe/Kyiv", last_friday_run)
    assert first == monday_first_utc
    assert first.astimezone(KYIV).strftime("%a %H:%M") == "Mon 08:00"
    runs = [first]
    for _ in range(3):
        runs.append(next_run(WORKDAYS, "Europe/Kyiv", runs[-1]))
    assert [r.astimezone(KYIV).strftime("%H:%M") for r in runs] == ["08:00", "08:10", "08:20", "08:30"]


def test_a_whole_week_of_runs_stays_within_local_working_hours_across_the_spring_change():
    t = _utc(2026, 3, 26, 0, 0)
    hours = set()
    while t < _utc(2026, 4, 2, 0, 0):
        t = next_run(WORKDAYS, "Europe/Kyiv", t)
        local = t.astimezone(KYIV)
        hours.add(local.hour)
        assert local.weekday() < 5
    assert hours == set(range(8, 21))


def test_daily_cron_moves_one_utc_hour_on_the_dst_sunday():
    daily = Schedule(cron="0 9 * * *", every_minutes=None)
    saturday = next_run(daily, "Europe/Kyiv", _utc(2026, 3, 27, 12, 0))
    sunday = next_run(daily, "Europe/Kyiv", saturday)
    assert (saturday, sunday) == (_utc(2026, 3, 28, 7, 0), _utc(2026, 3, 29, 6, 0))


def test_daemon_waits_until_the_next_local_run(tmp_path):
    s = settings(tmp_path, "[]", extra='schedule: {cron: "*/10 8-20 * * mon-fri"}\n')
    d = Daemon(str(tmp_path / "c.yaml"), s)
    # Friday 27 March 2026 20:55 Kyiv (18:55 UTC): next run Monday 08:00 Kyiv summer time = 05:00 UTC
    now = _utc(2026, 3, 27, 18, 55)
    assert d.next_delay(now) == (_utc(2026, 3, 30, 5, 0) - now).total_seconds()


def test_every_minutes_and_health_deadlines():
    every = Schedule(every_minutes=15)
    t = _utc(2026, 11, 23, 8, 0)
    assert next_run(every, "Europe/Kyiv", t) == t + timedelta(minutes=15)
    assert overdue_after(every, "Europe/Kyiv", t) == t + timedelta(minutes=45)
    # a good cycle on Friday evening stays healthy over the weekend: three runs are due Monday 08:00-08:20
    assert overdue_after(WORKDAYS, "Europe/Kyiv", _utc(2026, 11, 27, 18, 50)) == _utc(2026, 11, 30, 6, 20)


def test_now_without_an_offset_is_the_company_wall_clock():
    assert _clock("2026-11-23T10:00", "Europe/Kyiv").now() == _utc(2026, 11, 23, 8, 0)
    assert _clock("2026-07-01T10:00", "Europe/Kyiv").now() == _utc(2026, 7, 1, 7, 0)
    assert _clock("2026-11-23T10:00:00+00:00", "Europe/Kyiv").now() == _utc(2026, 11, 23, 10, 0)
