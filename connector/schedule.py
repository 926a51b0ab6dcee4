"""When the daemon runs: ``schedule.cron`` read on the company's wall clock, DST included.

``*/10 8-20 * * mon-fri`` with ``timezone: Europe/Kyiv`` means 08:00-20:50 Kyiv time all year,
whatever the offset from UTC that day: croniter is given a start time in the zone, so it counts
local hours across a change of daylight saving time (a local time skipped in spring runs at the
first minute that exists; one repeated in autumn may run twice, which a cycle tolerates).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from connector.config import Schedule

DEFAULT_EVERY_MINUTES = 15


def next_run(schedule: Schedule, timezone: str, after: datetime) -> datetime:
    """The first scheduled moment strictly after ``after`` (an aware time), in the company's zone."""
    local = after.astimezone(ZoneInfo(timezone))
    if schedule.cron:
        return croniter(schedule.cron, local).get_next(datetime)
    return local + timedelta(minutes=schedule.every_minutes or DEFAULT_EVERY_MINUTES)


def overdue_after(schedule: Schedule, timezone: str, last: datetime, intervals: int = 3) -> datetime:
    """The moment by which ``intervals`` scheduled cycles after ``last`` should have run; a daemon
    whose last good cycle is older than this is unhealthy (a cron's night or weekend pause is not)."""
    t = last
    for _ in range(intervals):
        t = next_run(schedule, timezone, t)
    return t
