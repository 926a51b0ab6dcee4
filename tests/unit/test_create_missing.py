"""onec.create_missing: unmatched 1C customers become Bitrix24 companies, once, through the safety brake."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connector import domain as d
from connector.errors import ConfigError
from connector.store import links
from tests.unit.builders import NOW, k, settings, world

HEADER = """
timezone: Europe/Kyiv
store: sqlite:///{db}
calendar: {{country: UA, workdays: [mon, tue, wed, thu, fri], hours: "09:00-18:00"}}
bitrix24:
  webhook_url: http://127.0.0.1:1/rest/1/testsecret/
  guid_field: UF_CRM_1C_GUID
onec:
  odata: {{url: "http://127.0.0.1:1/base/odata/standard.odata", user: u, password: p}}
  create_missing: true
people: {{supervisor: 1, duty_manager: 2}}
safety: {{max_actions_per_run: {limit}, max_share: 1.0, min_clients_for_share: 20}}
"""


def _world(tmp_path, limit: int = 500):
    return world(tmp_path, "[]", header=HEADER.replace("{limit}", str(limit)))


def counterparties(w, n: int, *, method: str = "unmatched", with_document: bool = True, manager: str | None = None,
                   start: int = 0) -> list[str]:
    keys, records, rows = [], [], []
    for i in range(start, start + n):
        guid = f"00000000-0000-4000-8000-{i:012d}"
        key = k("counterparty", guid, "onec")
        keys.append(key)
        records.append(d.Client(key, "onec", guid, d.ClientKind.COMPANY, f"Buyer {i}", guid=guid, tax_id=f"{30000000 + i}",
                                phones=("+380501234567",) if i == start else (), emails=(f"b{i}@example.com",),
                                responsible_key=manager))
        if with_document:
            records.append(d.Document(k("document", f"s{i}", "onec"), "onec", f"s{i}", d.DocumentType.SALE,
                                      NOW - timedelta(days=3), key, number=f"РН-{i}", amount=100.0))
        rows.append({"foreign_key": key, "client_key": None, "method": method, "candidates": None, "updated_at": NOW})
    w.store.write(records)
    with w.store.tx() as conn:
        w.store._upsert(conn, links, rows, ["foreign_key"])
        w.store.mark_evidence_dirty(conn)
    return keys


def test_an_unmatched_customer_becomes_a_company_with_its_guid_tax_id_and_manager_once(tmp_path):
    w = _world(tmp_path)
    w.manager(7, "Ivan", email="ivan@shop.example")
    w.store.write([d.Manager("onec:user:u7", "onec", "u7", "Іван", email="IVAN@shop.example")])
    [buyer] = counterparties(w, 1, manager="onec:user:u7")
    counterparties(w, 1, with_document=False, start=10)  # a supplier with no sale: never created
    counterparties(w, 1, method="ambiguous", start=20)  # several CRM candidates: never guessed
    plan, sink = w.run()
    assert [(a.key, a.type, a.system) for a in sink.done] == [(f"create_missing:{buyer}:new:c", "create_company", "bitrix24")]
    p = sink.done[0].payload
    assert (p["title"], p["guid"], p["guid_field"], p["tax_id"], p["preset"], p["responsible"], p["phones"], p["emails"]) == (
        "Buyer 0", "00000000-0000-4000-8000-000000000000", "UF_CRM_1C_GUID", "30000000", 1, k("user", 7), ["+380501234567"],
        ["b0@example.com"])
    assert "Buyer 0" in sink.done[0].reason and "30000000" in sink.done[0].reason
    _, sink = w.run()
    assert sink.done == []  # the journal: never twice
    with w.store.tx() as conn:  # the next sync linked the company it created
        w.store._upsert(conn, links, [{"foreign_key": buyer, "client_key": w.company(50, "Buyer 0"), "method": "guid_field",
                                       "candidates": None, "updated_at": NOW}], ["foreign_key"])
        w.store.mark_evidence_dirty(conn)
    plan, sink = w.run()
    assert sink.done == [] and [c.rule for c in plan.cleared] == ["create_missing"] and "Buyer 0" in plan.cleared[0].reason


def test_a_first_run_on_eight_thousand_counterparties_is_refused_unless_forced(tmp_path):
    w = _world(tmp_path)
    counterparties(w, 8000)
    plan = w.plan()
    assert plan.new_actions == [] and plan.refused_run and "max_actions_per_run=500" in plan.refused_run
    assert len(plan.actions) == 8000  # shown in the plan, refused as a whole
    forced = w.plan(force=True)
    assert len(forced.new_actions) == 8000 and {a.type for a in forced.new_actions} == {"create_company"}


def test_the_share_brake_refuses_when_the_crm_looks_empty(tmp_path):
    w = world(tmp_path, "[]", header=HEADER.replace("{limit}", "100000").replace("max_share: 1.0", "max_share: 0.25"))
    counterparties(w, 100)
    plan = w.plan()
    assert plan.new_actions == [] and any("create_missing" in r and "max_share" in r for r in plan.refusals)


def test_create_missing_needs_the_guid_field_and_matching_by_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        settings(tmp_path, "[]", header=HEADER.replace("  guid_field: UF_CRM_1C_GUID\n", "").replace("{limit}", "5"))
    assert any("onec.create_missing: create_missing needs bitrix24.guid_field" in p for p in e.value.problems)
    with pytest.raises(ConfigError) as e:
        settings(tmp_path, "[]", header=HEADER.replace("  create_missing: true\n", "  create_missing: true\n  match: [tax_id]\n")
                 .replace("{limit}", "5"))
    assert any("onec.match: create_missing needs guid_field in onec.match" in p for p in e.value.problems)
    with pytest.raises(ConfigError) as e:
        settings(tmp_path, "- {name: create_missing, type: debtors}\n", header=HEADER.replace("{limit}", "5"))
    assert any("rules[0].name: `create_missing` is the name of onec.create_missing" in p for p in e.value.problems)
