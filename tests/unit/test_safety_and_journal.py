from datetime import timedelta

from connector.errors import Rejected, TransientError
from connector.execute import Executor
from connector.journal import Journal
from connector.ports import FixedClock
from tests.unit.builders import NOW, FakeSink, world

RULE = """
- name: forgotten
  type: forgotten
  inactive_days: 60
  actions:
    - task: {title: "No contact: {{ client.title }}", deadline: 3 workdays}
"""
SAFE = """
timezone: Europe/Kyiv
store: sqlite:///{db}
bitrix24:
  webhook_url: http://127.0.0.1:1/rest/1/testsecret/
people: {{supervisor: 1}}
safety: {{max_actions_per_run: 5, max_share: 0.25, min_clients_for_share: 20}}
"""


def _base(tmp_path, n_forgotten: int, n_active: int):
    w = world(tmp_path, RULE, header=SAFE)
    for i in range(n_forgotten):
        w.activity(w.company(100 + i), 90)
    for i in range(n_active):
        w.activity(w.company(500 + i), 5)
    return w


def test_max_share_refuses_a_rule_that_would_hit_too_many_clients(tmp_path):
    w = _base(tmp_path, n_forgotten=30, n_active=10)  # 75% "forgotten": a source probably lost data
    plan, sink = w.run()
    assert plan.rules[0].refused and "max_share" in plan.rules[0].refused
    assert sink.done == [] and Journal(w.store).states() == {}
    plan, sink = w.run(force=True)
    assert len(sink.done) == 30


def test_max_actions_per_run_refuses_the_run(tmp_path):
    w = _base(tmp_path, n_forgotten=6, n_active=60)
    plan, sink = w.run()
    assert plan.refused_run and "max_actions_per_run=5" in plan.refused_run
    assert sink.done == []


def test_small_scopes_are_not_judged_by_share(tmp_path):
    w = _base(tmp_path, n_forgotten=3, n_active=2)
    _, sink = w.run()
    assert len(sink.done) == 3


def test_rerun_and_duplicate_record_are_no_ops(tmp_path):
    w = _base(tmp_path, n_forgotten=2, n_active=30)
    plan, sink = w.run()
    assert len(sink.done) == 2
    j = Journal(w.store)
    assert j.record(plan.new_actions or plan.actions, NOW, None) == 0
    _, sink2 = w.run()
    assert sink2.done == []


def test_transient_errors_retry_with_backoff_then_die(tmp_path):
    w = _base(tmp_path, n_forgotten=1, n_active=30)
    failing = FakeSink(fail_with=TransientError("boom", system="bitrix24", obj="tasks.task.add"))
    w.run(NOW, failing)
    j = Journal(w.store)
    (key, state), = j.states().items()
    assert state == "retry_wait"
    w.run(NOW, failing)  # not due yet: no second attempt
    assert j.rows()[0]["attempts"] == 1
    t = NOW
    for _ in range(6):
        t += timedelta(hours=1)
        w.run(t, failing)
    assert j.states()[key] == "dead"


def test_permanent_error_fails_without_retry(tmp_path):
    w = _base(tmp_path, n_forgotten=1, n_active=30)
    w.run(NOW, FakeSink(fail_with=Rejected("no", system="bitrix24")))
    assert list(Journal(w.store).states().values()) == ["failed"]


def test_in_flight_after_crash_is_reconciled_not_repeated(tmp_path):
    w = _base(tmp_path, n_forgotten=1, n_active=30)
    plan = w.plan()
    j = Journal(w.store)
    j.record(plan.new_actions, NOW, None)
    key = plan.new_actions[0].key
    assert j.claim([key], "dead-process", NOW) == {key}  # the process died right after the call
    sink = FakeSink()
    sink.done.append(plan.new_actions[0])  # ... and the task exists remotely
    rep = Executor(j, [sink], FixedClock(NOW)).run()
    assert rep.reconciled == 1 and len(sink.done) == 1 and j.states()[key] == "done"


def test_in_flight_message_that_cannot_be_verified_is_never_resent(tmp_path):
    from connector.errors import PermanentError
    from connector.ports import PlannedAction

    class Sms(FakeSink):
        def reconcile(self, action):
            raise PermanentError("cannot tell", system="sms")

    w = _base(tmp_path, n_forgotten=0, n_active=1)
    j = Journal(w.store)
    a = PlannedAction("r:s:p:0", "r", "sms", "sms", "s", None, {"phone": "+380501234567", "text": "hi"}, "why")
    j.record([a], NOW, None)
    j.claim([a.key], "dead-process", NOW)
    sink = Sms(system="sms")
    rep = Executor(j, [sink], FixedClock(NOW)).run()
    assert rep.uncertain == 1 and sink.done == [] and j.states()[a.key] == "uncertain"


def test_action_without_a_configured_channel_is_skipped_not_lost(tmp_path):
    from connector.ports import PlannedAction

    w = _base(tmp_path, n_forgotten=0, n_active=1)
    j = Journal(w.store)
    a = PlannedAction("r:s:p:0", "r", "email", "nowhere", "s", None, {"to": "a@b.c"}, "why")
    j.record([a], NOW, None)
    rep = Executor(j, [FakeSink()], FixedClock(NOW)).run()
    assert rep.skipped == 1 and "канал не налаштовано" in j.rows()[0]["detail"]
