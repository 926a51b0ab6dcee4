from datetime import date, datetime
from zoneinfo import ZoneInfo

from connector.calendar import BusinessCalendar
from connector.config import Calendar

KYIV = ZoneInfo("Europe/Kyiv")


def cal(**kw):
    return BusinessCalendar(Calendar(**kw), "Europe/Kyiv")


def test_workdays_skip_weekends_and_public_holidays():
    c = cal(country="UA")
    assert not c.is_workday(date(2026, 11, 21))  # Saturday
    assert not c.is_workday(date(2021, 1, 7))  # Orthodox Christmas, a Thursday
    assert c.is_workday(date(2026, 11, 23))


def test_deadline_in_workdays_ends_at_close_of_business():
    c = cal(country="UA")
    fri = datetime(2026, 11, 20, 17, 0, tzinfo=KYIV)
    assert c.deadline(fri, "1 workdays") == datetime(2026, 11, 23, 18, 0, tzinfo=KYIV)
    assert c.deadline(fri, "3 workdays") == datetime(2026, 11, 25, 18, 0, tzinfo=KYIV)
    assert c.deadline(fri, "2 hours") == datetime(2026, 11, 20, 19, 0, tzinfo=KYIV)
    assert c.deadline(fri, "2 workhours") == datetime(2026, 11, 23, 10, 0, tzinfo=KYIV)


def test_extra_holidays_move_deadlines():
    c = cal(country=None, extra_holidays=["2026-11-24"])
    mon = datetime(2026, 11, 23, 12, 0, tzinfo=KYIV)
    assert c.deadline(mon, "1 workdays") == datetime(2026, 11, 25, 18, 0, tzinfo=KYIV)


def test_quiet_hours_cross_midnight():
    c = cal(country=None)
    evening = datetime(2026, 11, 24, 22, 30, tzinfo=KYIV)  # Tuesday
    assert c.next_allowed(evening, "21:00-09:00", True) == datetime(2026, 11, 25, 9, 0, tzinfo=KYIV)
    early = datetime(2026, 11, 25, 6, 0, tzinfo=KYIV)
    assert c.next_allowed(early, "21:00-09:00", True) == datetime(2026, 11, 25, 9, 0, tzinfo=KYIV)
    day = datetime(2026, 11, 25, 12, 0, tzinfo=KYIV)
    assert c.next_allowed(day, "21:00-09:00", True) == day


def test_quiet_hours_skip_weekend_and_public_holiday():
    c = cal(country="UA", extra_holidays=["2026-11-30"])
    fri_night = datetime(2026, 11, 27, 23, 0, tzinfo=KYIV)
    # Saturday, Sunday, and the Monday holiday are quiet all day -> Tuesday 09:00
    assert c.next_allowed(fri_night, "21:00-09:00", True) == datetime(2026, 12, 1, 9, 0, tzinfo=KYIV)
    assert c.next_allowed(fri_night, "21:00-09:00", False) == datetime(2026, 11, 28, 9, 0, tzinfo=KYIV)


def test_public_holiday_is_quiet_all_day():
    # Ukraine suspended public days off under martial law (the holidays package has none since
    # 2023), so the pre-war calendar and Poland's show the rule: Christmas 2021, 11 Nov 2026.
    ua = cal(country="UA")
    t = datetime(2021, 1, 6, 22, 0, tzinfo=KYIV)  # Wednesday evening before Christmas
    # Christmas (Thu 7 Jan), the bridge day off (Fri 8 Jan), the weekend -> Monday 09:00
    assert ua.next_allowed(t, "21:00-09:00", True) == datetime(2021, 1, 11, 9, 0, tzinfo=KYIV)
    pl = cal(country="PL")
    t = datetime(2026, 11, 11, 12, 0, tzinfo=KYIV)
    assert pl.next_allowed(t, "21:00-09:00", True) == datetime(2026, 11, 12, 9, 0, tzinfo=KYIV)
