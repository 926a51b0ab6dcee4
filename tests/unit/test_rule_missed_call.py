from datetime import timedelta

from tests.unit.builders import NOW, k, world

RULE = """
- name: missed_call
  type: missed_call
  callback_within_minutes: 15
  actions:
    - sms: {text: "Sorry we missed your call. {{ manager.name }} will call you back today."}
    - task: {title: "Call back {{ call.phone }}", deadline: 2 hours}
"""
MSG = """
messaging:
  sms: {provider: log}
  quiet_hours: "21:00-09:00"
"""


def test_missed_call_gets_one_sms_and_one_task(tmp_path):
    w = world(tmp_path, RULE, extra=MSG)
    c = w.company(1, "Caller Co", responsible=3, phones=("+38 (067) 111-22-33",))
    w.call("0671112233", 40)
    w.call("0671112233", 35)  # the client tried twice: still one episode
    acts = w.plan().actions
    assert sorted(a.type for a in acts) == ["sms", "task"]
    sms = next(a for a in acts if a.type == "sms")
    assert sms.payload["phone"] == "+380671112233" and "Manager 3 will call you back" in sms.payload["text"]
    task = next(a for a in acts if a.type == "task")
    assert task.payload["responsible"] == k("user", 3) and task.payload["bindings"] == [c]


def test_called_back_in_time_means_nothing_to_do(tmp_path):
    w = world(tmp_path, RULE, extra=MSG)
    w.company(1, phones=("0671112233",))
    w.call("0671112233", 40)
    w.call("+380671112233", 30, direction="out", answered=True, talk_s=60)
    assert w.plan().actions == []


def test_waits_for_the_callback_window(tmp_path):
    w = world(tmp_path, RULE, extra=MSG)
    w.company(1, phones=("0671112233",))
    w.call("0671112233", 10)
    assert w.plan().actions == []


def test_unknown_number_goes_to_the_duty_manager(tmp_path):
    w = world(tmp_path, RULE, extra=MSG)
    w.call("0931234567", 60)
    task = next(a for a in w.plan().actions if a.type == "task")
    assert task.payload["responsible"] == k("user", 2) and task.client_key is None


def test_sms_waits_for_quiet_hours_then_a_callback_cancels_it(tmp_path):
    w = world(tmp_path, RULE, extra=MSG)
    w.company(1, phones=("0671112233",))
    late = NOW.replace(hour=22)
    w.call("0671112233", -(11 * 60) + 40)  # 21:20 that evening
    plan, sink = w.run(late)
    sms = next(a for a in plan.actions if a.type == "sms")
    assert sms.not_before is not None and sms.not_before.hour == 9
    assert [a.type for a in sink.done] == ["task"]
    w.call("0671112233", -(11 * 60) - 30 - 10 * 60, direction="out", answered=True, talk_s=30)  # called back at 08:30

    _, sink = w.run(late + timedelta(hours=12))
    assert sink.done == []
    from connector.journal import Journal

    assert Journal(w.store).states()[sms.key] == "cancelled"


def test_friday_night_apology_waits_for_monday_morning_and_is_never_cancelled_by_the_lookback(tmp_path):
    from datetime import datetime

    from connector import domain as d
    from tests.unit.builders import KYIV, FakeSink

    w = world(tmp_path, RULE, extra=MSG + "  workdays_only: true\n")
    w.company(1, "Caller Co", responsible=3, phones=("0671112233",))
    friday = datetime(2026, 11, 27, 21, 5, tzinfo=KYIV)  # a Friday, after quiet hours began
    w.store.write([d.Call(k("call", 1, "binotel"), "binotel", "1", "in", "0671112233", friday, disposition="NOANSWER")])
    sms = FakeSink("sms")
    plan, crm = w.run(friday + timedelta(minutes=20), sms=sms)
    deferred = next(a for a in plan.actions if a.type == "sms")
    assert deferred.not_before == datetime(2026, 11, 30, 9, 0, tzinfo=KYIV)  # Monday 09:00
    assert [a.type for a in crm.done] == ["task"] and sms.done == []  # the call-back task is not quiet; the SMS waits
    for when in (datetime(2026, 11, 28, 12, 0, tzinfo=KYIV), datetime(2026, 11, 29, 20, 0, tzinfo=KYIV)):
        plan, _ = w.run(when, sms=sms)  # Saturday, Sunday: the call is out of the 24 h lookback
        assert deferred.key not in [k_ for k_, _ in plan.cancel]
        assert sms.done == []
    w.run(datetime(2026, 11, 30, 9, 1, tzinfo=KYIV), sms=sms)
    assert [a.key for a in sms.done] == [deferred.key]
    w.run(datetime(2026, 11, 30, 10, 0, tzinfo=KYIV), sms=sms)
    assert len(sms.done) == 1


def test_an_answered_call_back_cancels_the_deferred_apology(tmp_path):
    from datetime import datetime

    from connector import domain as d
    from tests.unit.builders import KYIV, FakeSink

    w = world(tmp_path, RULE, extra=MSG + "  workdays_only: true\n")
    w.company(1, "Caller Co", responsible=3, phones=("0671112233",))
    friday = datetime(2026, 11, 27, 21, 5, tzinfo=KYIV)
    w.store.write([d.Call(k("call", 1, "binotel"), "binotel", "1", "in", "0671112233", friday, disposition="NOANSWER")])
    sms = FakeSink("sms")
    plan, _ = w.run(friday + timedelta(minutes=20), sms=sms)
    deferred = next(a for a in plan.actions if a.type == "sms")
    sat = datetime(2026, 11, 28, 11, 0, tzinfo=KYIV)
    w.store.write([d.Call(k("call", 2, "binotel"), "binotel", "2", "out", "+380671112233", sat, talk_s=90, answered=True,
                          disposition="ANSWER")])
    plan, _ = w.run(sat + timedelta(minutes=5), sms=sms)
    assert deferred.key in [k_ for k_, _ in plan.cancel]
    w.run(datetime(2026, 11, 30, 9, 1, tzinfo=KYIV), sms=sms)
    assert sms.done == []
