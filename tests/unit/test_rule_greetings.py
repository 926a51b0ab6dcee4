"""Greetings: the day (leap years, time zones), the channel per segment, call tasks moved off days
off and absences, variants over the years, exactly once per occasion and year."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from connector import domain as d
from connector.journal import Journal
from tests.unit.builders import HEADER, KYIV, World, k, world

SMS = "messaging: {sms: {provider: log}, email: {smtp: 'smtp://127.0.0.1:1', from: shop@example.com}, quiet_hours: '21:00-08:00'}\n"

BIRTHDAY = """
- name: birthday
  type: greetings
  occasion: birthday
  at: "09:00"
  channels:
    - where: {segment: [VIP]}
      task: {title: "Call {{ client.name }}: {{ occasion.title }}"}
    - sms: {variants: ["A {{ client.greeting_name }}", "B {{ client.greeting_name }}", "C {{ client.greeting_name }}"]}
    - email: {subject: "Happy birthday", text: "Dear {{ client.greeting_name }}"}
"""


def contact(w: World, i: int, born: date | None, *, phone: str | None = "+380501230000", email: str | None = None,
            segment: str | None = None, responsible: int = 3) -> str:
    key = k("contact", i)
    w.store.write([d.Client(key, "bitrix24", str(i), d.ClientKind.CONTACT, f"Contact {i}", responsible_key=k("user", responsible),
                            first_name=f"Name{i}", phones=(phone,) if phone else (), emails=(email,) if email else (),
                            birthday=born, segment=segment, created_at=datetime(2020, 1, 1, tzinfo=UTC))])
    return key


def at(y: int, m: int, dd: int, hh: int = 10, mm: int = 0) -> datetime:
    return datetime(y, m, dd, hh, mm, tzinfo=KYIV)


def test_leap_day_birthday_is_greeted_on_28_february_in_common_years_and_on_29_in_leap_years(tmp_path):
    w = world(tmp_path, BIRTHDAY, extra=SMS)
    c = contact(w, 1, date(2000, 2, 29))
    assert [a.subject_key for a in w.plan(at(2027, 2, 28)).actions] == [c]
    assert w.plan(at(2027, 3, 1)).actions == []
    assert w.plan(at(2028, 2, 28)).actions == []
    (a,) = w.plan(at(2028, 2, 29)).actions
    assert a.type == "sms" and a.key.endswith(":birthday-2028:0")


def test_the_day_is_the_companys_local_day_around_midnight(tmp_path):
    w = world(tmp_path, BIRTHDAY.replace('at: "09:00"', 'at: "00:00"'), extra=SMS)
    late = contact(w, 1, date(1990, 11, 23))
    early = contact(w, 2, date(1990, 11, 24), phone="+380501230001")
    # 22:30 UTC on the 23rd is 00:30 on the 24th in Kyiv: the 24th's birthday, not the 23rd's
    keys = [a.subject_key for a in w.plan(datetime(2026, 11, 23, 22, 30, tzinfo=UTC)).actions]
    assert keys == [early]
    # 21:30 UTC on the 23rd is still the 23rd in Kyiv (23:30): quiet hours would hold the SMS until 08:00 on the 24th ...
    (a,) = w.plan(datetime(2026, 11, 23, 21, 30, tzinfo=UTC)).actions
    assert a.subject_key == late and a.not_before is not None and a.not_before.astimezone(KYIV).hour == 8
    w.run(datetime(2026, 11, 23, 21, 30, tzinfo=UTC))
    # ... but at 00:30 local on the 24th its day is over: the late greeting is cancelled, never sent a day late
    plan = w.plan(datetime(2026, 11, 23, 22, 30, tzinfo=UTC))
    assert a.key in [key for key, _why in plan.cancel]


def test_nothing_before_the_configured_time_of_day(tmp_path):
    w = world(tmp_path, BIRTHDAY, extra=SMS)
    contact(w, 1, date(1990, 11, 23))
    assert w.plan(at(2026, 11, 23, 8, 59)).actions == []
    assert len(w.plan(at(2026, 11, 23, 9, 0)).actions) == 1


def test_a_call_task_for_a_saturday_birthday_is_due_on_friday(tmp_path):
    w = world(tmp_path, BIRTHDAY, extra=SMS)
    contact(w, 1, date(1980, 11, 28), segment="VIP")  # Saturday 28 Nov 2026
    assert w.plan(at(2026, 11, 26)).actions == []
    (a,) = w.plan(at(2026, 11, 27)).actions
    assert a.type == "task" and a.payload["responsible"] == k("user", 3)
    assert datetime.fromisoformat(a.payload["deadline"]) == datetime(2026, 11, 27, 18, 0, tzinfo=KYIV)
    assert "28.11.2026" in a.reason and "27.11.2026" in a.reason  # moved to the Friday
    # on the Saturday itself the same key is planned (a no-op in the journal), never a second task
    w.run(at(2026, 11, 27))
    plan = w.plan(at(2026, 11, 28))
    assert [x.key for x in plan.new_actions] == []


def test_a_company_holiday_moves_the_call_task_to_the_working_day_before(tmp_path):
    w = world(tmp_path, BIRTHDAY, extra=SMS)
    w.settings.calendar.extra_holidays.append("2026-11-27")
    contact(w, 1, date(1980, 11, 27), segment="VIP")  # Friday, a company day off
    (a,) = w.plan(at(2026, 11, 26)).actions
    assert datetime.fromisoformat(a.payload["deadline"]).date() == date(2026, 11, 26)


def test_a_managers_absence_moves_the_call_task_before_it(tmp_path):
    header = HEADER.replace("people: {{supervisor: 1, duty_manager: 2}}",
                            "people: {{supervisor: 1, absences: [{{user: 3, from: 2026-11-25, to: 2026-11-27}}]}}")
    w = world(tmp_path, BIRTHDAY, extra=SMS, header=header)
    contact(w, 1, date(1980, 11, 27), segment="VIP")
    assert w.plan(at(2026, 11, 23)).actions == []
    (a,) = w.plan(at(2026, 11, 24)).actions
    assert datetime.fromisoformat(a.payload["deadline"]) == datetime(2026, 11, 24, 18, 0, tzinfo=KYIV)


def test_variants_over_five_years_never_repeat_two_years_running_and_greet_once_a_year(tmp_path):
    w = world(tmp_path, BIRTHDAY, extra=SMS)
    contact(w, 1, date(1975, 6, 10))
    texts = []
    for year in range(2026, 2031):
        plan, _ = w.run(at(year, 6, 10))
        w.run(at(year, 6, 10, 15))  # a second cycle the same day, and a restart, change nothing
        sent = [a for a in plan.new_actions if a.type == "sms"]
        assert len(sent) == 1
        texts.append(sent[0].payload["text"])
    assert all(x != y for x, y in zip(texts, texts[1:], strict=False)), texts
    assert len(set(texts)) == 3
    keys = [r for r in Journal(w.store).states() if ":birthday-" in r]
    assert len(keys) == 5


def test_a_client_no_channel_reaches_is_reported_not_a_crash(tmp_path):
    w = world(tmp_path, BIRTHDAY, extra=SMS)
    contact(w, 1, date(1990, 11, 23), phone=None)
    reachable = contact(w, 2, date(1990, 11, 23), phone=None, email="x@example.com")
    plan = w.plan(at(2026, 11, 23))
    assert [(a.type, a.subject_key) for a in plan.actions] == [("email", reachable)]
    (rp,) = plan.rules
    assert any("Contact 1" in n for n in rp.notes)


def test_the_segment_picks_the_channel(tmp_path):
    w = world(tmp_path, BIRTHDAY, extra=SMS)
    vip = contact(w, 1, date(1990, 11, 23), segment="VIP")
    other = contact(w, 2, date(1990, 11, 23), phone="+380501230002")
    got = {a.subject_key: a.type for a in w.plan(at(2026, 11, 23)).actions}
    assert got == {vip: "task", other: "sms"}


def test_two_rules_for_one_occasion_never_greet_a_client_twice_a_year(tmp_path):
    w = world(tmp_path, BIRTHDAY + BIRTHDAY.replace("name: birthday", "name: birthday-2"), extra=SMS)
    contact(w, 1, date(1990, 11, 23))
    plan, _ = w.run(at(2026, 11, 23))
    assert len([a for a in plan.new_actions if a.type == "sms"]) == 1


def test_offer_days_before_uses_the_last_purchases(tmp_path):
    rules = BIRTHDAY + """
  offer:
    days_before: 5
    channels:
      - sms: {text: "{{ client.greeting_name }}: -10% before your {{ occasion.title }} ({{ occasion.date }}); last {{ last_purchase.amount | money }}"}
"""
    w = world(tmp_path, rules, extra=SMS)
    c = contact(w, 1, date(1990, 11, 28))
    w.deal(c, 30, amount=2500.0)
    (a,) = w.plan(at(2026, 11, 23)).actions
    assert a.key.endswith(":birthday-offer-2026:0")
    assert "28.11.2026" in a.payload["text"] and "2 500,00" in a.payload["text"]


def test_new_year_greets_everyone_in_scope_despite_the_share_brake(tmp_path):
    w = world(tmp_path, """
- name: new-year
  type: greetings
  occasion: new_year
  clients: companies
  channels:
    - sms: {text: "Happy New Year, {{ client.name }}!"}
""", extra=SMS)
    for i in range(25):
        w.company(i + 1, phones=(f"+38050123{i:04d}",))
    w.settings.safety.max_share = 0.25
    plan = w.plan(datetime(2027, 1, 1, 10, tzinfo=KYIV))
    assert len(plan.actions) == 25 and not plan.refusals


def test_the_episode_ends_after_its_day_and_the_call_task_is_left_open(tmp_path):
    w = world(tmp_path, BIRTHDAY, extra=SMS)
    contact(w, 1, date(1980, 11, 23), segment="VIP")
    w.run(at(2026, 11, 23))
    plan = w.plan(at(2026, 11, 24) + timedelta(hours=1))
    assert [c.reason for c in plan.cleared] and not [a for a in plan.actions if a.type == "close_task"]
