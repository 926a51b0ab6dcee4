"""Working days, working hours and quiet hours in the company's timezone.

Public holidays come from the ``holidays`` package for ``calendar.country``; ``extra_holidays``
adds company days off. Deadlines in ``workdays`` end at the close of business of the N-th working
day after today, so "3 workdays" set on a Friday evening before a holiday Monday lands on Thursday.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from connector.config import WEEKDAYS, Calendar, parse_duration, parse_hours


class BusinessCalendar:
    def __init__(self, cal: Calendar, timezone: str):
        self.tz = ZoneInfo(timezone)
        self.workdays = {WEEKDAYS.index(w) for w in cal.workdays}
        self.open, self.close = parse_hours(cal.hours)
        self.country = cal.country
        self.subdivision = cal.subdivision
        self.extra = {date.fromisoformat(x) for x in cal.extra_holidays}

    @lru_cache(maxsize=64)  # noqa: B019
    def _holidays(self, year: int) -> frozenset[date]:
        if not self.country:
            return frozenset()
        return frozenset(holidays_lib.country_holidays(self.country, subdiv=self.subdivision, years=year).keys())

    def is_workday(self, d: date) -> bool:
        return d.weekday() in self.workdays and d not in self._holidays(d.year) and d not in self.extra

    def local(self, t: datetime) -> datetime:
        return t.astimezone(self.tz)

    def today(self, now: datetime) -> date:
        return self.local(now).date()

    def end_of_day(self, d: date) -> datetime:
        return datetime.combine(d, self.close, self.tz)

    def next_workday(self, d: date, n: int = 1) -> date:
        """The n-th working day after ``d`` (n=0: ``d`` itself if it is one, else the next)."""
        if n == 0:
            while not self.is_workday(d):
                d += timedelta(days=1)
            return d
        while n > 0:
            d += timedelta(days=1)
            if self.is_workday(d):
                n -= 1
        return d

    def deadline(self, now: datetime, spec: str) -> datetime:
        """``"3 workdays"``, ``"2 days"``, ``"2 hours"``, ``"4 workhours"``, ``"30 minutes"`` from ``now``."""
        memo = self.__dict__.setdefault("_deadlines", {})  # a plan asks the same (now, spec) thousands of times
        if (now, spec) not in memo:
            if len(memo) > 1024:
                memo.clear()
            memo[(now, spec)] = self._deadline(now, spec)
        return memo[(now, spec)]

    def _deadline(self, now: datetime, spec: str) -> datetime:
        n, unit = parse_duration(spec)
        local = self.local(now)
        if unit == "workdays":
            return self.end_of_day(self.next_workday(local.date(), n) if n else self.next_workday(local.date(), 0))
        if unit == "days":
            return self.end_of_day(local.date() + timedelta(days=n))
        if unit == "hours":
            return (local + timedelta(hours=n)).replace(microsecond=0)
        if unit == "minutes":
            return (local + timedelta(minutes=n)).replace(microsecond=0)
        if unit == "workhours":
            return self.add_work_time(local, timedelta(hours=n))
        raise ValueError(unit)

    def add_work_time(self, start: datetime, span: timedelta) -> datetime:
        t = self.local(start)
        left = span
        while left > timedelta(0):
            d = t.date()
            if not self.is_workday(d) or t.time() >= self.close:
                t = datetime.combine(self.next_workday(d), self.open, self.tz)
                continue
            if t.time() < self.open:
                t = datetime.combine(d, self.open, self.tz)
            room = datetime.combine(d, self.close, self.tz) - t
            step = min(room, left)
            t += step
            left -= step
        return t

    def next_allowed(self, t: datetime, quiet_hours: str | None, workdays_only: bool) -> datetime:
        """Earliest moment at or after ``t`` when a client may be messaged.

        ``quiet_hours`` like ``"21:00-09:00"`` may cross midnight; with ``workdays_only`` the
        weekend and public holidays are quiet all day.
        """
        local = self.local(t)
        q_start, q_end = parse_hours(quiet_hours) if quiet_hours else (None, None)
        for _ in range(400):
            d, tm = local.date(), local.time()
            if workdays_only and not self.is_workday(d):
                local = datetime.combine(d + timedelta(days=1), q_end or time(0), self.tz)
                continue
            if q_start is None:
                return local
            if q_start > q_end:  # crosses midnight: quiet if tm >= start or tm < end
                if tm >= q_start:
                    local = datetime.combine(d + timedelta(days=1), q_end, self.tz)
                    continue
                if tm < q_end:
                    local = datetime.combine(d, q_end, self.tz)
                    continue
                return local
            if q_start <= tm < q_end:
                local = datetime.combine(d, q_end, self.tz)
                continue
            return local
        raise ValueError("no allowed time within a year: check quiet_hours and the calendar")
