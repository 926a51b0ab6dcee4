"""bitrix.sink's 1C sync writes against the emulated portal: invoice and deal stages (forward
only, reconciled by reading back) and companies created from 1C (found again by their GUID)."""

from __future__ import annotations

import time

import pytest
import requests

from bitrix.client import BitrixClient
from bitrix.sink import BitrixSink
from connector.config import Bitrix24
from connector.errors import NotFound, Rejected, TransientError
from connector.ports import Context, PlannedAction, SystemClock
from connector.sandbox import generate

GUID = "0b1c2d3e-0000-4000-8000-00000000000a"


@pytest.fixture(scope="module")
def company():
    return generate(companies=25, activities_per_company=2, sync_stories=True)


@pytest.fixture
def sink(portal):
    ctx = Context(clock=SystemClock())
    cfg = Bitrix24(webhook_url=portal.server.webhook_url, guid_field="UF_CRM_1C_GUID")
    s = BitrixSink(cfg, ctx, BitrixClient(cfg, ctx, sleep=lambda _: None, attempts=2))
    s.ctx = ctx  # type: ignore[attr-defined]
    yield s
    s.close()


def action(type_: str, payload: dict, key: str) -> PlannedAction:
    return PlannedAction(key=key, rule=key.split(":")[0], type=type_, system="bitrix24", subject_key=key.rsplit(":", 2)[0],
                         client_key=None, payload=payload, reason="test")


def paid_story(company):
    cid = company.stories["paid_in_1c"]
    return [i for i in company.invoices if i.company_id == cid]  # [paid in full in 1C, paid in part]


def move(inv_id: int, **extra) -> PlannedAction:
    return action("invoice_stage", {"invoice": f"bitrix24:invoice:{inv_id}", "from": "DT31_1:S", "funnel": 1, "to": None, **extra},
                  key=f"invoice_sync:bitrix24:invoice:{inv_id}:paid:s")


def test_supports_the_sync_action_types(sink):
    assert all(sink.supports(t) for t in ("invoice_stage", "deal_stage", "create_company"))


def test_an_invoice_moves_to_the_success_stage_of_its_funnel_and_is_reconciled_by_reading_it_back(portal, sink, company):
    inv, _part = paid_story(company)
    a = move(inv.id)
    assert sink.reconcile(a) is None  # still "sent": certainly not done
    before = sink.ctx.counter("bitrix24").requests
    res = sink.execute(a)
    assert sink.ctx.counter("bitrix24").requests - before == 2  # one read (the invoice, its funnel's stages), one write
    row = portal.table("invoice")[inv.id]
    assert (row["stageId"], row["previousStageId"]) == ("DT31_1:P", "DT31_1:S") and "moved" in res.detail
    assert sink.reconcile(a) is not None
    moved_at = row["movedTime"]
    again = sink.execute(a)  # the executor never does this, but a repeat is harmless: nothing is written
    assert "already paid" in again.detail and row["movedTime"] == moved_at


def test_an_invoice_a_person_declined_meanwhile_is_left_alone(portal, sink, company):
    _full, part = paid_story(company)
    portal.table("invoice")[part.id]["stageId"] = "DT31_1:D"
    res = sink.execute(move(part.id))
    assert "declined" in res.detail and portal.table("invoice")[part.id]["stageId"] == "DT31_1:D"


def test_an_explicit_stage_the_funnel_lacks_is_refused_by_the_portal(portal, sink, company):
    inv, _part = paid_story(company)
    with pytest.raises(Rejected) as e:
        sink.execute(move(inv.id, to="DT31_1:NOPE"))
    assert e.value.code == "CRM_FIELD_ERROR_VALUE_NOT_VALID" and portal.table("invoice")[inv.id]["stageId"] == "DT31_1:S"


def test_a_deleted_invoice_is_not_found(sink):
    with pytest.raises(NotFound):
        sink.execute(move(999999))


def test_sixty_invoices_cost_one_read_and_two_writes(portal, sink, company):
    rows = portal.table("invoice")
    template = dict(next(iter(rows.values())))
    for i in range(1000, 1060):
        portal.tables["invoice"].insert({**template, "stageId": "DT31_1:N", "categoryId": 1}, rid=i)
    before = sink.ctx.counter("bitrix24").requests
    out = sink.execute_batch([move(i) for i in range(1000, 1060)])
    assert [r for r in out.values() if isinstance(r, Exception)] == []
    assert {rows[i]["stageId"] for i in range(1000, 1060)} == {"DT31_1:P"}
    assert sink.ctx.counter("bitrix24").requests - before == 3


def test_the_deal_moves_forward_and_a_closed_deal_is_left_alone(portal, sink, company):
    deal = next(dl for dl in company.deals if dl.company_id == company.stories["paid_in_1c"])
    a = action("deal_stage", {"deal": f"bitrix24:deal:{deal.id}", "from": "EXECUTING", "to": "WON"},
               key="invoice_sync:bitrix24:invoice:1:paid:d")
    assert sink.reconcile(a) is None
    sink.execute(a)
    row = portal.table("deal")[deal.id]
    assert (row["STAGE_ID"], row["STAGE_SEMANTIC_ID"], row["CLOSED"]) == ("WON", "S", "Y")
    assert sink.reconcile(a) is not None
    lost = next(dl for dl in company.deals if dl.semantic == "F")
    res = sink.execute(action("deal_stage", {"deal": f"bitrix24:deal:{lost.id}", "to": "WON"}, key="invoice_sync:x:paid:d"))
    assert "left alone" in res.detail and portal.table("deal")[lost.id]["STAGE_ID"] == lost.stage


def create(guid: str = GUID, **extra) -> PlannedAction:
    payload = {"title": "Chernihiv Grain Trade", "guid": guid, "guid_field": "UF_CRM_1C_GUID", "tax_id": "30000518", "preset": 1,
               "phones": ["+380501234567"], "emails": ["office@grain.example"], "responsible": "bitrix24:user:5",
               "comment": "Created by the connector from the 1C counterparty."}
    return action("create_company", {**payload, **extra}, key=f"create_missing:onec:counterparty:{guid}:new:c")


def test_a_company_from_1c_carries_its_guid_and_gets_its_tax_id_requisite_in_the_same_request(portal, sink):
    a = create()
    assert sink.reconcile(a) is None
    before = sink.ctx.counter("bitrix24").requests
    res = sink.execute(a)
    assert sink.ctx.counter("bitrix24").requests - before == 1
    cid = int(res.remote_id)
    row = portal.table("company")[cid]
    assert (row["TITLE"], row["UF_CRM_1C_GUID"], row["ASSIGNED_BY_ID"]) == ("Chernihiv Grain Trade", GUID, 5)
    assert a.marker in row["COMMENTS"] and [p["VALUE"] for p in row["PHONE"]] == ["+380501234567"]
    (req,) = [r for r in portal.table("requisite").values() if r["ENTITY_ID"] == cid and r["ENTITY_TYPE_ID"] == 4]
    assert (req["RQ_EDRPOU"], req["PRESET_ID"]) == ("30000518", 1)
    assert res.remote_key == f"bitrix24:company:{cid}"
    found = sink.reconcile(a)
    assert found is not None and found.remote_key == res.remote_key
    assert sink.reconcile(create("0b1c2d3e-0000-4000-8000-00000000000b")) is None


def test_a_refused_requisite_does_not_undo_the_company(portal, sink):
    res = sink.execute(create(preset=99, tax_id="1234567890"))
    assert "requisite was refused" in res.detail and "PRESET_ID is not defined or invalid." in res.detail
    assert portal.table("company")[int(res.remote_id)]["UF_CRM_1C_GUID"] == GUID


def test_a_company_the_portal_created_but_answered_late_is_found_again_not_doubled(portal, sink):
    def slow(method, status, body):
        time.sleep(1.5)  # longer than the client's timeout: the company landed, the answer did not
        return None

    ctx = Context(clock=SystemClock())
    cfg = Bitrix24(webhook_url=portal.server.webhook_url, timeout=1, guid_field="UF_CRM_1C_GUID")
    hasty = BitrixSink(cfg, ctx, BitrixClient(cfg, ctx, sleep=lambda _: None, attempts=2))
    a = create()
    portal.after_request = slow
    try:
        out = hasty.execute_batch([a])
    finally:
        portal.after_request = None
        hasty.close()
    assert isinstance(out[a.key], TransientError) and out[a.key].ambiguous
    assert sink.reconcile(a) is not None  # the executor adopts it instead of creating a second one
    assert sum(r.get("UF_CRM_1C_GUID") == GUID for r in portal.table("company").values()) == 1


@pytest.mark.parametrize(("fields", "message"), [
    ({"ENTITY_ID": 1, "PRESET_ID": 1}, "ENTITY_TYPE_ID is not defined or invalid."),
    ({"ENTITY_TYPE_ID": 4, "PRESET_ID": 1}, "ENTITY_ID is not defined or invalid."),
    ({"ENTITY_TYPE_ID": 4, "ENTITY_ID": 1}, "PRESET_ID is not defined or invalid."),
    ({"ENTITY_TYPE_ID": 4, "ENTITY_ID": 999999, "PRESET_ID": 1}, "Entity not found."),
])
def test_the_emulator_refuses_a_requisite_as_the_docs_say(portal, fields, message):
    r = requests.post(portal.server.webhook_url + "crm.requisite.add.json", json={"fields": {"NAME": "x", **fields}}, timeout=10)
    assert r.status_code == 400 and r.json() == {"error": "", "error_description": message}
