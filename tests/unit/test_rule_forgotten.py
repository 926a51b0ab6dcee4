from datetime import timedelta

from tests.unit.builders import NOW, k, world

RULE = """
- name: forgotten
  type: forgotten
  clients: companies
  inactive_days: 60
  keep_while_future_task: true
  actions:
    - task: {title: "No contact: {{ client.title }}", deadline: 3 workdays}
"""


def test_forgotten_after_inactive_days_with_reason(tmp_path):
    w = world(tmp_path, RULE)
    old = w.company(1, "Old Co")
    fresh = w.company(2, "Fresh Co")
    w.activity(old, 90, "call")
    w.activity(fresh, 10, "email")
    plan = w.plan()
    acts = plan.actions
    assert [a.subject_key for a in acts] == [old]
    a = acts[0]
    assert a.type == "task" and a.payload["title"] == "No contact: Old Co"
    assert a.payload["responsible"] == k("user", 3) and a.payload["bindings"] == [old]
    assert "немає контакту 90 днів; останній контакт: дзвінок 25.08.2026" in a.reason
    # 3 workdays from Monday 23 Nov 2026 -> Thursday 26 Nov, close of business
    assert a.payload["deadline"].startswith("2026-11-26T18:00")
    assert f"[{a.marker}]" in a.payload["description"]


def test_planned_activity_is_not_contact(tmp_path):
    w = world(tmp_path, RULE)
    c = w.company(1)
    w.activity(c, 90, "call")
    w.activity(c, 5, "call", completed=False, deadline_in_days=-1)
    assert [a.subject_key for a in w.plan().actions] == [c]


def test_future_task_keeps_client_but_connectors_own_task_does_not(tmp_path):
    w = world(tmp_path, RULE)
    kept = w.company(1)
    ours = w.company(2)
    w.activity(kept, 90)
    w.activity(ours, 90)
    w.task(kept, completed=False, deadline_in_days=10)
    w.task(ours, completed=False, deadline_in_days=10, description="No contact\n\n[cn-0123456789ab]")
    assert [a.subject_key for a in w.plan().actions] == [ours]


def test_keep_while_future_task_off_ignores_future_tasks(tmp_path):
    w = world(tmp_path, RULE.replace("keep_while_future_task: true", "keep_while_future_task: false"))
    c = w.company(1)
    w.activity(c, 90)
    w.task(c, completed=False, deadline_in_days=10)
    assert len(w.plan().actions) == 1


def test_contact_through_contact_person_deal_comment_or_call_clears(tmp_path):
    w = world(tmp_path, RULE)
    via_contact = w.company(1)
    person = w.company(11, kind="contact", company=1)
    w.activity(person, 5, "email")
    via_deal = w.company(2)
    deal = w.deal(via_deal, 300, "open")
    w.activity(deal, 3, "meeting")
    via_comment = w.company(3)
    w.activity(via_comment, 20, "comment")
    via_phone = w.company(4, phones=("(050) 123-45-67",))
    w.call("0501234567", 60 * 24 * 7, answered=True, talk_s=120)
    for c in (via_contact, via_deal, via_comment, via_phone):
        w.activity(c, 100)
    assert w.plan().actions == []


def test_unanswered_call_does_not_count(tmp_path):
    w = world(tmp_path, RULE)
    c = w.company(4, phones=("+380501234567",))
    w.activity(c, 100)
    w.call("0501234567", 60, answered=False)
    assert [a.subject_key for a in w.plan().actions] == [c]


def test_contact_kinds_are_configurable(tmp_path):
    w = world(tmp_path, RULE.replace("keep_while_future_task: true", "keep_while_future_task: true\n  contact_kinds: [call, meeting]"))
    c = w.company(1)
    w.activity(c, 100, "call")
    w.activity(c, 2, "email")
    assert len(w.plan().actions) == 1


def test_new_contact_ends_episode_and_key_is_stable(tmp_path):
    w = world(tmp_path, RULE)
    c = w.company(1)
    w.activity(c, 90)
    key1 = w.plan().actions[0].key
    assert w.plan(NOW + timedelta(days=1)).actions[0].key == key1  # same episode, same key
    w.activity(c, 0.5)
    assert w.plan().actions == []


def test_where_filters_by_segment_and_dry_run_is_never_journaled(tmp_path):
    rule = RULE.replace("keep_while_future_task: true", "keep_while_future_task: true\n  mode: dry_run\n  where: {segment: [VIP]}")
    w = world(tmp_path, rule)
    vip = w.company(1, segment="VIP")
    other = w.company(2, segment="CUSTOMER")
    w.activity(vip, 90)
    w.activity(other, 90)
    plan, sink = w.run()
    assert [a.subject_key for a in plan.actions] == [vip] and plan.actions[0].mode == "dry_run"
    assert sink.done == []


def test_the_supervisor_hears_when_the_connectors_task_is_overdue_and_not_when_it_was_done(tmp_path):
    from datetime import datetime

    from connector import domain as d
    from connector.ports import ActionResult
    from tests.unit.builders import FakeSink

    class Portal(FakeSink):
        def execute(self, action):
            super().execute(action)
            return ActionResult(remote_id=str(len(self.done)), remote_key=k("task", 1000 + len(self.done)))

    rules = """
- name: forgotten
  type: forgotten
  inactive_days: 60
  actions:
    - task: {title: "No contact: {{ client.title }}", deadline: 3 workdays}
  escalate:
    - when: task_overdue
      actions: [{notify: [supervisor]}]
"""
    w = world(tmp_path, rules)
    late, diligent = w.company(1, "Late"), w.company(2, "Diligent")
    w.activity(late, 90)
    w.activity(diligent, 90)
    portal = Portal()
    w.run(NOW, portal)
    tasks = {a.subject_key: a for a in portal.done}
    for n, client in enumerate((late, diligent), start=1):  # what the next sync reads back from the portal
        a = tasks[client]
        w.store.write([d.Task(k("task", 1000 + n), "bitrix24", str(1000 + n), a.payload["title"], a.payload["responsible"], (client,),
                              deadline=datetime.fromisoformat(a.payload["deadline"]), completed=client == diligent,
                              closed_at=NOW + timedelta(days=1) if client == diligent else None,
                              description=a.payload["description"])])
    _, sink = w.run(NOW + timedelta(days=1), Portal())
    assert sink.done == []  # not overdue yet
    _, sink = w.run(NOW + timedelta(days=6), Portal())
    assert [(a.subject_key, a.type, a.payload["user"]) for a in sink.done] == [(late, "notify", k("user", 1))]
    _, sink = w.run(NOW + timedelta(days=7), Portal())
    assert sink.done == []  # once


def test_last_contact_is_built_only_for_a_template_that_reads_it(tmp_path, monkeypatch):
    import connector.rules.forgotten as rule_module

    built: list[str | None] = []
    real = rule_module.last_contact_var
    monkeypatch.setattr(rule_module, "last_contact_var", lambda kind, when: built.append(kind) or real(kind, when))
    w = world(tmp_path, RULE)
    c = w.company(1, "Old Co")
    w.activity(c, 90, "call")
    assert [a.subject_key for a in w.plan().actions] == [c] and built == []
    (tmp_path / "reads").mkdir()
    w = world(tmp_path / "reads", RULE.replace("No contact: {{ client.title }}", "{{ client.title }}: {{ last_contact }}"))
    c = w.company(1, "Old Co")
    w.activity(c, 90, "call")
    assert w.plan().actions[0].payload["title"] == "Old Co: дзвінок 25.08.2026" and built == ["call"]


def test_contacts_are_read_for_the_candidates_of_a_rule_that_asks(tmp_path, monkeypatch):
    """Contacts are read once per batch of candidates, on the first question, not for every client loaded."""
    from connector.evidence import Evidence

    asked: list[list[str]] = []
    real = Evidence.contacts_of
    monkeypatch.setattr(Evidence, "contacts_of", lambda self, keys, kinds=None: asked.append(list(keys)) or real(self, keys, kinds))
    w = world(tmp_path, RULE)
    a, b = w.company(1), w.company(2)
    w.activity(a, 90, "call")
    w.activity(b, 80, "email")
    with w.snapshot() as snap:
        views = snap.clients([a, b])
        assert asked == []
        assert views[b].last_contact() == (NOW.astimezone(views[b].created_at.tzinfo) - timedelta(days=80), "email")
        assert views[a].contact["call"] == NOW.astimezone(views[a].created_at.tzinfo) - timedelta(days=90)
    assert asked == [[a, b]]


def test_a_simulation_before_the_latest_stored_contact_derives_its_own_copy(tmp_path):
    from sqlalchemy import delete

    from connector.evidence import LATEST_KV, Evidence
    from connector.store import kv

    w = world(tmp_path, RULE)
    c = w.company(1)
    w.activity(c, 10, "call")  # the latest contact: 10 days before NOW
    with w.snapshot() as snap:
        assert Evidence(snap.conn, "bitrix24", NOW).stored
        assert not Evidence(snap.conn, "bitrix24", NOW - timedelta(days=20)).stored  # it would see a later call
        past = Evidence(snap.conn, "bitrix24", NOW - timedelta(days=20)).contacts_of([c])
    assert past == {}
    with w.store.tx() as conn:  # a store derived before the latest moment was kept: the same answers by a scan
        conn.execute(delete(kv).where(kv.c.name == LATEST_KV))
    with w.snapshot() as snap:
        assert Evidence(snap.conn, "bitrix24", NOW).stored
        assert not Evidence(snap.conn, "bitrix24", NOW - timedelta(days=20)).stored
