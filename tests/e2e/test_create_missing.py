"""onec.create_missing through the CLI: a 1C-only customer becomes a Bitrix24 company once and is
linked to it on the next sync."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from connector.demo import Sandbox
from connector.sandbox import SOneCDoc, generate
from tests.e2e.conftest import ANCHOR, DEMO, ROOT, Env


@pytest.fixture
def first_1c(tmp_path):
    co = generate(sync_stories=True)
    cp = co.company(co.stories["onec_only"])
    co.onec_docs.append(SOneCDoc(guid="7d1c2d3e-0000-4000-8000-000000000777", type="order", number="ЗК-000777",
                                 date=co.anchor - timedelta(days=3), counterparty_guid=cp.guid, amount=5000.0, posted=True,
                                 deletion_mark=False, manager_guid=co.manager(cp.responsible).guid))
    config = tmp_path / "first-1c.yaml"
    config.write_text(DEMO.read_text(encoding="utf-8").replace(
        "  match: [tax_id, guid_field, phone]\n", "  match: [tax_id, guid_field, phone]\n  create_missing: true\n"), encoding="utf-8")
    with Sandbox(company=co) as sb:
        env = {**os.environ, **sb.env, "CONNECTOR_STORE": f"sqlite:///{tmp_path / 'e2e.db'}", "PYTHONPATH": str(ROOT)}
        yield Env(sb, env, tmp_path), config, cp


def test_an_unmatched_1c_customer_becomes_one_company_and_is_linked_to_it(first_1c):
    sandbox, config, cp = first_1c
    portal = sandbox.service("portal")
    r = sandbox.cli("plan", str(config), "--json", "--now", ANCHOR)
    assert r.returncode == 0, r.stderr
    creates = [a for a in json.loads(r.stdout)["actions"] if a["type"] == "create_company"]
    assert [(a["rule"], a["client"], a["payload"]["guid"], a["payload"]["tax_id"]) for a in creates] == [
        ("create_missing", cp.title, cp.guid, cp.tax_id)]
    before = len(portal.table("company"))
    r = sandbox.cli("run", str(config), "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    made = [c for c in portal.table("company").values() if c.get("UF_CRM_1C_GUID") == cp.guid]
    assert len(made) == 1 and len(portal.table("company")) == before + 1 and made[0]["TITLE"] == cp.title
    assert [q["RQ_EDRPOU"] for q in portal.table("requisite").values() if q["ENTITY_ID"] == made[0]["ID"]] == [cp.tax_id]
    r = sandbox.cli("run", str(config), "--once", "--now", ANCHOR)  # the sync links it: the episode ends, nothing twice
    assert r.returncode == 0 and "не знайдено 0" in r.stdout and "з них нових: 0" in r.stdout, r.stdout  # in Ukrainian
    assert len(portal.table("company")) == before + 1
