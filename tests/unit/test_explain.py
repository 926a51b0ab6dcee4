"""``explain`` gives each rule's verdict on one client with its evidence, and agrees with ``plan``."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from connector import domain as d
from connector import i18n
from connector.cli import main
from connector.explain import explain, find_clients
from connector.matching import primary_system
from tests.unit.builders import NOW, k, world


@pytest.fixture(autouse=True)
def english():
    """These tests read the English texts; the config says so, and the default comes back after."""
    i18n.use("en")
    yield
    i18n.use("uk")

RULES = """
- name: forgotten
  type: forgotten
  clients: companies
  inactive_days: 60
  keep_while_future_task: true
  actions:
    - task: {title: "No contact: {{ client.title }}", deadline: 3 workdays}
- name: lost
  type: lost
  clients: companies
  min_purchases: 2
  after_days: 180
  actions:
    - task: {title: "Win back: {{ client.title }}", deadline: 1 workdays}
- name: unpaid
  type: unpaid
  overdue_days: 3
  actions:
    - task: {title: "Unpaid: {{ invoice.title }}", deadline: 1 workdays}
"""


def _world(tmp_path):
    w = world(tmp_path, RULES, extra="language: en\n")
    forgotten = w.company(1, "Forgotten Timber", phones=("+380501110001",), tax_id="11110001")
    w.activity(forgotten, 90, "call")
    kept = w.company(2, "Kept Dairy", phones=("+380501110002",))
    w.activity(kept, 90, "email")
    w.task(kept, completed=False, deadline_in_days=10)
    lost = w.company(3, "Lost Food Trade")
    w.activity(lost, 20, "call")  # contacted, so not forgotten; but no purchase for 200 days
    w.deal(lost, 400)
    w.deal(lost, 200)
    fresh = w.company(4, "Fresh Steel", phones=("+380501110004",))
    w.activity(fresh, 5, "meeting")
    w.call("+380501110004", 60 * 24 * 2, answered=True, talk_s=120)  # a PBX call 2 days ago: later than the meeting
    w.invoice(fresh, due_days_ago=1)  # due, but not overdue by 3 days yet
    return w, {"forgotten": forgotten, "kept": kept, "lost": lost, "fresh": fresh}


def _plan_keys(plan, client: str) -> dict[str, set[str]]:
    return {rp.rule: {a.key for a in rp.actions if a.client_key == client or a.subject_key == client} for rp in plan.rules}


def _explain_keys(x) -> dict[str, set[str]]:
    return {v.rule: {a.key for a, _state in v.actions} for v in x.verdicts}


def test_explain_verdicts_are_the_plans_for_a_forgotten_a_kept_a_lost_and_a_fresh_client(tmp_path):
    w, c = _world(tmp_path)
    plan = w.plan()
    for name, key in c.items():
        x = explain(w.settings, w.store, key, NOW)
        assert _explain_keys(x) == _plan_keys(plan, key), name
        for v in x.verdicts:
            assert (v.status == "listed") == bool(_plan_keys(plan, key)[v.rule]), (name, v)
    by = {name: {v.rule: v for v in explain(w.settings, w.store, key, NOW).verdicts} for name, key in c.items()}
    assert by["forgotten"]["forgotten"].status == "listed"
    assert "no contact for 90 days" in by["forgotten"]["forgotten"].reason
    assert by["kept"]["forgotten"].status == "not_listed" and "Kept" in by["kept"]["forgotten"].reason
    assert by["lost"]["lost"].status == "listed" and by["lost"]["forgotten"].status == "not_listed"
    assert "Contacted 20 days ago" in by["lost"]["forgotten"].reason
    assert by["fresh"]["unpaid"].status == "not_listed" and any("listed from" in f for f in by["fresh"]["unpaid"].facts)


def test_explain_shows_the_records_behind_each_contact_kind_and_what_keeps_the_client(tmp_path):
    w, c = _world(tmp_path)
    w.snapshot().close()  # derive the evidence as a sync would
    kept = explain(w.settings, w.store, c["kept"], NOW)
    assert [r.what for r in kept.kept] == ["t"] and kept.kept[0].at == NOW + timedelta(days=10)
    assert kept.contacts["email"].at == NOW - timedelta(days=90)
    fresh = explain(w.settings, w.store, c["fresh"], NOW)
    call = fresh.contacts["call"]  # the PBX call (2 days ago) is later than any CRM call activity
    assert call.key.startswith("binotel:call:") and call.phone == "+380501110004" and call.seconds == 120
    assert fresh.contacts["meeting"].at == NOW - timedelta(days=5)
    lost = explain(w.settings, w.store, c["lost"], NOW)
    assert [p.what for p in lost.purchases] == ["deal", "deal"]
    with w.snapshot() as snap:  # the records are the ones behind the derived figures
        for kind, rec in fresh.contacts.items():
            assert snap.ev.contacts_of([c["fresh"]])[c["fresh"]][kind] == rec.at


def test_the_connectors_own_task_is_listed_as_excluded_not_as_contact(tmp_path):
    w, c = _world(tmp_path)
    w.task(c["forgotten"], completed=True, deadline_in_days=-1, closed_days_ago=1, description="No contact\n\n[cn-0123456789ab]")
    x = explain(w.settings, w.store, c["forgotten"], NOW)
    assert "task" not in x.contacts
    assert [r.kind for r in x.own] == ["task"]
    assert {v.rule: v.status for v in x.verdicts}["forgotten"] == "listed"


def test_explain_lists_journal_entries_and_episodes_after_a_run(tmp_path):
    w, c = _world(tmp_path)
    w.run()
    x = explain(w.settings, w.store, c["forgotten"], NOW + timedelta(hours=1))
    assert [r["rule"] for r in x.journal] == ["forgotten"] and x.journal[0]["state"] == "done"
    assert [e["rule"] for e in x.episodes] == ["forgotten"]
    v = {v.rule: v for v in x.verdicts}["forgotten"]
    assert [state for _a, state in v.actions] == ["done"]


def test_find_clients_by_id_key_phone_tax_id_and_name(tmp_path):
    w, c = _world(tmp_path)
    w.store.write([d.Client(k("contact", 5), "bitrix24", "5", d.ClientKind.CONTACT, "Olena Forgotten-Timberova",
                            created_at=NOW - timedelta(days=10))])
    p = primary_system(w.settings)

    def keys(q: str) -> list[str]:
        return [m.key for m in find_clients(w.store, p, q)]

    assert keys("1") == [c["forgotten"]]
    assert keys(c["kept"]) == [c["kept"]]
    assert keys("050 111 0002") == [c["kept"]]
    assert keys("11110001") == [c["forgotten"]]
    assert keys("lost food") == [c["lost"]]
    assert keys("Forgotten Timber") == [c["forgotten"]]  # an exact name wins over names containing it
    assert sorted(keys("timber")) == sorted([c["forgotten"], k("contact", 5)])
    assert keys("nobody") == []


def test_explain_command_prints_local_times_and_json_and_refuses_an_ambiguous_name(tmp_path):
    w, c = _world(tmp_path)
    cfg = str(tmp_path / "c.yaml")
    r = CliRunner().invoke(main, ["explain", cfg, "Forgotten Timber", "--now", "2026-11-23T11:00"])
    assert r.exit_code == 0, r.output
    assert "forgotten (forgotten)" in r.output and "25.08.2026 12:00" in r.output  # 09:00 UTC: Kyiv summer time, to the minute
    r = CliRunner().invoke(main, ["explain", cfg, "1", "--json", "--now", "2026-11-23T11:00"])
    data = json.loads(r.output)
    assert data["client"]["key"] == c["forgotten"] and data["now"] == "2026-11-23T11:00:00+02:00"
    assert {v["rule"]: v["status"] for v in data["verdicts"]} == {"forgotten": "listed", "lost": "not_listed", "unpaid": "not_listed"}
    assert data["last_contact"]["call"]["at"] == "2026-08-25T12:00:00+03:00"
    w.company(6, "Forgotten Timber Two")
    r = CliRunner().invoke(main, ["explain", cfg, "timber"])
    assert r.exit_code == 2 and c["forgotten"] in r.output and k("company", 6) in r.output
    r = CliRunner().invoke(main, ["explain", cfg, "nobody"])
    assert r.exit_code == 2 and "No client matches" in r.output


def test_explain_speaks_the_configs_language(tmp_path):
    w = world(tmp_path, RULES)  # language: uk by default
    kept = w.company(2, "Kept Dairy")
    w.activity(kept, 90, "email")
    w.task(kept, completed=False, deadline_in_days=10)
    lost = w.company(3, "Lost Food Trade")
    w.deal(lost, 400)
    w.deal(lost, 200)
    out = CliRunner().invoke(main, ["explain", str(tmp_path / "c.yaml"), "Kept Dairy", "--now", "2026-11-23T11:00"]).output
    assert "не у списку" in out and "Утримується: є відкрите завдання" in out and "станом на 23.11.2026 11:00" in out
    out = CliRunner().invoke(main, ["explain", str(tmp_path / "c.yaml"), "Lost Food Trade", "--now", "2026-11-23T11:00"]).output
    assert "У СПИСКУ" in out and "Купував 2 рази" in out
