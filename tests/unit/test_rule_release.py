from datetime import timedelta

from tests.unit.builders import NOW, k, world

RULES = """
- name: forgotten
  type: forgotten
  inactive_days: 60
  actions:
    - task: {title: "No contact: {{ client.title }}", deadline: 3 workdays}
- name: release
  type: release
  after: forgotten
  grace_days: 14
  reassign: {to: [7, 9], strategy: round_robin}
  actions:
    - notify: [supervisor, previous_responsible]
"""


def test_release_only_after_grace_counted_from_the_reminder(tmp_path):
    w = world(tmp_path, RULES)
    c = w.company(1, "Sleepy", responsible=3)
    w.activity(c, 90)
    plan, sink = w.run(NOW)
    assert [a.rule for a in sink.done] == ["forgotten"]
    _, sink = w.run(NOW + timedelta(days=13))
    assert sink.done == []
    _, sink = w.run(NOW + timedelta(days=15))
    types = [(a.rule, a.type) for a in sink.done]
    assert ("release", "reassign") in types and ("release", "comment") in types
    reassign = next(a for a in sink.done if a.type == "reassign")
    assert reassign.payload["to"] == k("user", 7) and reassign.payload["from"] == k("user", 3)
    notified = {a.payload["user"] for a in sink.done if a.type == "notify"}
    assert notified == {k("user", 1), k("user", 3)}
    # a rerun does nothing twice
    _, sink = w.run(NOW + timedelta(days=15))
    assert sink.done == []


def test_contact_after_reminder_prevents_release(tmp_path):
    w = world(tmp_path, RULES)
    c = w.company(1)
    w.activity(c, 90)
    w.run(NOW)
    w.activity(c, -5)  # a call 5 days after NOW
    _, sink = w.run(NOW + timedelta(days=20))
    assert [a for a in sink.done if a.rule == "release"] == []


def test_release_skips_inactive_and_current_managers(tmp_path):
    rules = RULES.replace("to: [7, 9]", "to: [4, 3, 9]")
    w = world(tmp_path, rules)
    c = w.company(1, responsible=3)
    w.activity(c, 90)
    w.run(NOW)
    _, sink = w.run(NOW + timedelta(days=15))
    assert next(a for a in sink.done if a.type == "reassign").payload["to"] == k("user", 9)


def test_round_robin_and_least_loaded_spread_clients(tmp_path):
    w = world(tmp_path, RULES)
    for i in (1, 2, 3):
        w.activity(w.company(i, responsible=3), 90)
    w.run(NOW)
    _, sink = w.run(NOW + timedelta(days=15))
    targets = [a.payload["to"] for a in sink.done if a.type == "reassign"]
    assert sorted(targets) == sorted([k("user", 7), k("user", 9), k("user", 7)])

    (tmp_path / "b").mkdir()
    w2 = world(tmp_path / "b", RULES.replace("round_robin", "least_loaded"))
    for i in range(10, 14):
        w2.activity(w2.company(i, responsible=7), 1)  # manager 7 already owns four active clients
    for i in (1, 2):
        w2.activity(w2.company(i, responsible=3), 90)
    w2.run(NOW)
    _, sink = w2.run(NOW + timedelta(days=15))
    assert [a.payload["to"] for a in sink.done if a.type == "reassign"] == [k("user", 9), k("user", 9)]


def test_release_moves_open_deals_and_contacts(tmp_path):
    w = world(tmp_path, RULES)
    c = w.company(1, responsible=3)
    person = w.company(5, kind="contact", company=1, responsible=3)
    deal = w.deal(c, 200, "open")
    w.activity(c, 90)
    w.store.write([])  # no-op
    w.run(NOW)
    _, sink = w.run(NOW + timedelta(days=15))
    ents = next(a for a in sink.done if a.type == "reassign").payload["entities"]
    assert set(ents) == {c, deal, person}
