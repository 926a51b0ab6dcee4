"""Repeat sales on the sandbox, as an admin runs them: RFM labels written in batches and only when
they change, a replenishment reminder, and a regular deal's invoice made once."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import requests

from tests.e2e.conftest import ANCHOR

HEADER = """
timezone: Europe/Kyiv
store: "${CONNECTOR_STORE}"
calendar: {country: UA, workdays: [mon, tue, wed, thu, fri], hours: "09:00-18:00"}
bitrix24:
  webhook_url: "${BITRIX24_WEBHOOK_URL}"
  guid_field: UF_CRM_1C_GUID
onec:
  odata: {url: "${ONEC_ODATA_URL}", user: "${ONEC_USER}", password: "${ONEC_PASSWORD}"}
  preset: ut11
messaging:
  sms: {provider: log}
  quiet_hours: null
people: {supervisor: 1}
safety: {max_actions_per_run: 5000, max_share: 1.0}
rules:
"""

RFM = """
  - name: rfm
    type: rfm
    clients: companies
    fields: {score: UF_CRM_RFM_SCORE, segment: UF_CRM_RFM_SEGMENT}
"""

REPEAT = """
  - name: replenish
    type: replenish
    products:
      - {id: water, title: "water 19 l", match: {article: [W-19], name: [Вода питна 19 л]}, days_per_unit: 3}
    remind_days_before: 2
    actions:
      - task: {title: "Offer {{ product.title }}: {{ client.title }} runs out {{ product.runs_out }}", deadline: 1 workdays}
  - name: recurring
    type: recurring
    period_field: UF_CRM_RECURRING
    start_field: UF_CRM_RECURRING_START
    invoice: {title: "{{ deal.title }}: {{ period.label }}", payment_days: 10}
"""


def config(sandbox, rules: str):
    path = sandbox.tmp / "repeat.yaml"
    path.write_text(HEADER + rules, encoding="utf-8")
    return str(path)


def test_rfm_labels_every_client_in_one_cycle_in_batches_and_a_quiet_second_cycle_writes_nothing(sandbox):
    portal = sandbox.service("portal")
    cfg = config(sandbox, RFM)
    r = sandbox.cli("sync", cfg, "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    before, updates_before = portal.stats.requests, portal.stats.by_method["crm.company.update"]

    r = sandbox.cli("run", cfg, "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    companies = portal.table("company")
    labelled = {cid: (row.get("UF_CRM_RFM_SCORE"), row.get("UF_CRM_RFM_SEGMENT")) for cid, row in companies.items()}
    changed = portal.stats.by_method["crm.company.update"] - updates_before
    assert changed == len(companies) and all(seg for _, seg in labelled.values())
    assert sum(1 for s, _ in labelled.values() if s and s.startswith("R")) > len(companies) // 2  # buyers get a score
    # the sync that starts the cycle (one request when nothing changed) + the field writes, 50 a request
    assert portal.stats.requests - before <= math.ceil(changed / 50) + 3, portal.stats.requests - before

    before = portal.stats.requests
    r = sandbox.cli("run", cfg, "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert portal.stats.by_method["crm.company.update"] - updates_before == changed  # nothing written again
    assert {cid: (row.get("UF_CRM_RFM_SCORE"), row.get("UF_CRM_RFM_SEGMENT")) for cid, row in portal.table("company").items()} == labelled
    assert portal.stats.requests - before <= 3  # the sync brought our own writes back; they equal what is computed


def test_a_replenishment_reminder_and_a_regular_deals_invoice_are_made_once(sandbox):
    portal = sandbox.service("portal")
    company = sandbox.sb.company
    cfg = config(sandbox, REPEAT)
    r = sandbox.cli("run", cfg, "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    water = company.company(company.stories["replenish"])
    tasks = [t for t in portal.table("task").values() if "[cn-" in (t.get("DESCRIPTION") or "")]
    assert [t["TITLE"] for t in tasks] == [f"Offer water 19 l: {water.title} runs out 2026-11-25"]
    regular = next(d for d in company.deals if d.recurring)
    made = [i for i in portal.table("invoice").values() if "cn-" in (i.get("comments") or "")]
    assert len(made) == 1 and made[0]["parentId2"] == regular.id and made[0]["opportunity"] == regular.amount
    assert made[0]["companyId"] == regular.company_id
    rows = [(r["productName"], r["quantity"]) for r in portal.table("productrow").values()
            if r["ownerType"] == "SI" and r["ownerId"] == made[0]["id"]]
    assert rows == [("Картридж фільтра", 2.0)]

    r = sandbox.cli("run", cfg, "--once", "--now", ANCHOR)  # again: nothing twice
    assert r.returncode == 0, r.stdout + r.stderr
    assert len([i for i in portal.table("invoice").values() if "cn-" in (i.get("comments") or "")]) == 1
    assert len([t for t in portal.table("task").values() if "[cn-" in (t.get("DESCRIPTION") or "")]) == 1

    # two days later the client buys water again (a won deal with its product row): the reminder's task is closed
    anchor = datetime.fromisoformat(ANCHOR)
    deal = portal.add("deal", {"TITLE": "Water again", "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S", "CLOSED": "Y",
                               "COMPANY_ID": water.id, "OPPORTUNITY": 960, "CURRENCY_ID": "UAH", "ASSIGNED_BY_ID": water.responsible,
                               "BEGINDATE": (anchor + timedelta(days=2)).date(), "CLOSEDATE": (anchor + timedelta(days=2)).date()})
    requests.post(f"{sandbox.env['BITRIX24_WEBHOOK_URL']}crm.item.productrow.set.json", timeout=10, json={
        "ownerType": "D", "ownerId": deal, "productRows": [{"productName": "Вода питна 19 л", "price": 120, "quantity": 8}]})
    r = sandbox.cli("run", cfg, "--once", "--now", (anchor + timedelta(days=3)).isoformat())
    assert r.returncode == 0, r.stdout + r.stderr
    task = next(t for t in portal.table("task").values() if "[cn-" in (t.get("DESCRIPTION") or ""))
    assert task["STATUS"] == 5  # completed: the condition cleared with the new purchase
