"""Repeat sales against the emulators: deal product rows (crm.item.productrow.*), smart invoices made
with their rows and found again by marker, and the goods of 1C documents with their catalog names."""

from __future__ import annotations

import pytest
import requests

from bitrix.client import BitrixClient
from bitrix.sink import BitrixSink
from bitrix.source import BitrixSource
from connector.config import Bitrix24, OneC, OneCOData
from connector.domain import ProductLines
from connector.errors import UpstreamError
from connector.ports import Context, FixedClock, PlannedAction, SystemClock
from connector.sandbox import generate
from onec.emulator import OneCSandbox
from onec.source import ODataSource


@pytest.fixture(scope="module")
def company():
    return generate(companies=30, activities_per_company=2)


def call(portal, method: str, params: dict) -> dict:
    return requests.post(f"{portal.server.webhook_url}{method}.json", json=params, timeout=10).json()


def bitrix_cfg(portal, *, product_rows: bool = True) -> Bitrix24:
    cfg = Bitrix24(webhook_url=portal.server.webhook_url)
    cfg._product_rows = product_rows
    cfg._deal_fields = ["UF_CRM_RECURRING", "UF_CRM_RECURRING_START"]
    return cfg


def sync(portal, cursors: dict, ctx: Context, *, product_rows: bool = True) -> dict[str, list]:
    cfg = bitrix_cfg(portal, product_rows=product_rows)
    src = BitrixSource(cfg, ctx, BitrixClient(cfg, ctx, sleep=lambda s: None))
    out: dict[str, list] = {}
    try:
        for stream in src.streams():
            for b in src.pull(stream, cursors.get(stream), full=cursors.get(stream) is None):
                out.setdefault(stream, []).extend(b.records)
                if b.cursor is not None:
                    cursors[stream] = b.cursor
    finally:
        src.close()
    return out


# ---------------------------------------------------------------- the emulator's product rows


def test_productrow_list_needs_one_owner_and_pages_by_id(portal, company):
    deal = next(d for d in company.deals if d.products)
    assert call(portal, "crm.item.productrow.list", {"filter": {"=ownerId": deal.id}})["error"] == "REQUIRED_ARG_MISSING"
    assert call(portal, "crm.item.productrow.list", {"filter": {"=ownerType": "D", "=ownerId": 999999}})["error"] == "ACCESS_DENIED"
    rows = [{"productName": f"Item {n}", "price": 10, "quantity": 1} for n in range(60)]
    set_ = call(portal, "crm.item.productrow.set", {"ownerType": "D", "ownerId": deal.id, "productRows": rows})
    assert len(set_["result"]["productRows"]) == 60
    assert portal.table("deal")[deal.id]["OPPORTUNITY"] == 600.0  # the deal's amount follows its rows
    first = call(portal, "crm.item.productrow.list", {"filter": {"=ownerType": "D", "=ownerId": deal.id}, "order": {"id": "asc"},
                                                       "start": -1})
    assert len(first["result"]["productRows"]) == 50 and "total" not in first
    last_id = first["result"]["productRows"][-1]["id"]
    rest = call(portal, "crm.item.productrow.list", {"filter": {"=ownerType": "D", "=ownerId": deal.id, ">id": last_id},
                                                      "order": {"id": "asc"}, "start": -1})
    assert len(rest["result"]["productRows"]) == 10


# ---------------------------------------------------------------- the source


def test_product_rows_of_won_and_regular_deals_are_read_once_then_only_when_a_deal_changes(portal, company):
    ctx = Context(clock=SystemClock())
    cursors: dict[str, str] = {}
    first = sync(portal, cursors, ctx)
    lines = {r.key: r for r in first["productrows"] if isinstance(r, ProductLines)}
    water = next(d for d in company.deals if d.products and d.products[0][0].startswith("Вода"))
    got = lines[f"bitrix24:deal:{water.id}"]
    assert [(ln.name, ln.quantity, ln.amount) for ln in got.lines] == [("Вода питна 19 л", 5.0, 600.0)]
    won = {d.id for d in company.deals if d.semantic == "S" or d.recurring}
    assert {int(k.rsplit(":", 1)[1]) for k in lines} == won
    regular = next(d for d in company.deals if d.recurring)
    deals = {r.key: r for r in first["deals"]}
    assert deals[f"bitrix24:deal:{regular.id}"].fields["UF_CRM_RECURRING"] == "monthly"

    before = ctx.counter("bitrix24").requests
    quiet = sync(portal, cursors, ctx)
    assert quiet.get("productrows", []) == [] and ctx.counter("bitrix24").requests - before == 1  # the cycle's single probe

    call(portal, "crm.item.productrow.set", {"ownerType": "D", "ownerId": water.id,
                                             "productRows": [{"productName": "Вода питна 19 л", "price": 120, "quantity": 8}]})
    again = sync(portal, cursors, ctx)
    assert [(r.key, [ln.quantity for ln in r.lines]) for r in again["productrows"]] == [(f"bitrix24:deal:{water.id}", [8.0])]


def test_without_a_rule_that_reads_them_no_product_rows_are_asked_for(portal):
    ctx = Context(clock=SystemClock())
    out = sync(portal, {}, ctx, product_rows=False)
    assert "productrows" not in out and "crm.item.productrow.list" not in portal.stats.by_method


# ---------------------------------------------------------------- the invoice action


def invoice_action(co, key: str = "recurring:bitrix24:deal:7:2026-11-23:i", **over) -> PlannedAction:
    cid = co.stories["recurring"]
    deal = next(d for d in co.deals if d.recurring)
    payload = {"title": "Filter service: 23.11.2026", "comment": "Issued automatically.", "deal": f"bitrix24:deal:{deal.id}",
               "company": f"bitrix24:company:{cid}", "contact": None, "amount": 900.0, "currency": "UAH",
               "responsible": "bitrix24:user:3", "issued": "2026-11-23", "due": "2026-12-03", "stage": None,
               "rows": [{"product_id": "", "name": "Картридж фільтра", "quantity": 2.0, "price": 450.0, "system": "bitrix24"}]}
    payload.update(over)
    return PlannedAction(key=key, rule="recurring", type="invoice", system="bitrix24", subject_key=payload["deal"],
                         client_key=payload["company"], payload=payload, reason="test")


@pytest.fixture
def sink(portal):
    ctx = Context(clock=FixedClock(generate(companies=1).anchor))
    cfg = Bitrix24(webhook_url=portal.server.webhook_url)
    s = BitrixSink(cfg, ctx, BitrixClient(cfg, ctx, sleep=lambda _: None, attempts=2))
    yield s
    s.close()


def test_an_invoice_is_made_with_the_deals_rows_and_marker_in_one_request_and_found_again(portal, sink, company):
    a = invoice_action(company)
    before = portal.stats.requests
    res = sink.execute(a)
    assert portal.stats.requests - before == 1  # crm.item.add and crm.item.productrow.set in one batch
    inv = portal.table("invoice")[int(res.remote_id)]
    assert res.remote_key == f"bitrix24:invoice:{res.remote_id}" and a.marker in inv["comments"]
    assert inv["title"] == "Filter service: 23.11.2026" and inv["opportunity"] == 900.0 and inv["parentId2"] == int(a.payload["deal"].rsplit(":", 1)[1])
    assert str(inv["begindate"]) == "2026-11-23" and str(inv["closedate"]) == "2026-12-03" and inv["accountNumber"]
    rows = [r for r in portal.table("productrow").values() if r["ownerType"] == "SI" and r["ownerId"] == inv["id"]]
    assert [(r["productName"], r["quantity"], r["price"]) for r in rows] == [("Картридж фільтра", 2.0, 450.0)]
    found = sink.reconcile(a)
    assert found is not None and found.remote_key == res.remote_key
    assert sink.reconcile(invoice_action(company, key="recurring:bitrix24:deal:7:2026-12-23:i")) is None


def test_rows_the_portal_refuses_never_make_the_invoice_a_failure_to_retry(portal, sink, company):
    a = invoice_action(company, key="recurring:bitrix24:deal:7:2027-01-23:i", rows=[{"name": "", "quantity": 1, "price": 1}])
    res = sink.execute(a)
    assert "product rows were not set" in res.detail and res.remote_key


def test_an_invoice_needs_a_client_in_bitrix24(sink, company):
    with pytest.raises(UpstreamError):
        sink.execute(invoice_action(company, key="recurring:x:2027-02-23:i", company="onec:counterparty:abc"))


# ---------------------------------------------------------------- 1C goods


@pytest.fixture
def onec_base(company):
    sb = OneCSandbox(company, "ut11", user="u", password="p")
    sb.start()
    yield sb
    sb.stop()


def onec_source(sb: OneCSandbox, ctx: Context, *, lines: bool) -> ODataSource:
    cfg = OneC(odata=OneCOData(url=sb.odata.url, user="u", password="p"), preset="ut11")
    cfg._product_lines = lines
    src = ODataSource(cfg, ctx)
    src.client.wait = 0
    return src


def test_1c_sales_bring_their_goods_with_article_name_and_group(onec_base, company):
    ctx = Context(clock=FixedClock(company.anchor))
    src = onec_source(onec_base, ctx, lines=True)
    for stream in ("users", "counterparties"):
        list(src.pull(stream, None, full=True))
    records = [r for b in src.pull("documents", None, full=True) for r in b.records]
    lines = {r.key: r for r in records if isinstance(r, ProductLines)}
    water = next(d for d in company.onec_docs if d.lines)
    got = lines[f"onec:document:{water.guid}"]
    assert [(ln.article, ln.name, ln.group, ln.quantity, ln.amount) for ln in got.lines] == [("W-19", "Вода питна 19 л", "Вода", 5.0, 600.0)]
    generic = next(r for k, r in lines.items() if k != got.key)
    assert [(ln.name, ln.group) for ln in generic.lines] == [("Товар", "")]
    asked = [p for _, p in onec_base.odata.requests if "Catalog_%D0%9D%D0%BE%D0%BC" in p or "Номенклатура" in p]
    assert 1 <= len(asked) <= 3  # the products and their folders by key, once (then from the store's kv)


def test_1c_goods_are_not_read_when_no_rule_needs_them(onec_base, company):
    ctx = Context(clock=FixedClock(company.anchor))
    src = onec_source(onec_base, ctx, lines=False)
    for stream in ("users", "counterparties"):
        list(src.pull(stream, None, full=True))
    records = [r for b in src.pull("documents", None, full=True) for r in b.records]
    assert not any(isinstance(r, ProductLines) for r in records)
    assert not any("%D0%A2%D0%BE%D0%B2%D0%B0%D1%80%D1%8B" in p or "Товары" in p for _, p in onec_base.odata.requests)



def test_a_base_that_does_not_publish_the_products_catalog_still_syncs_its_goods_by_guid(onec_base, company, caplog):
    onec_base.odata.unpublished = {"Catalog_Номенклатура"}
    ctx = Context(clock=FixedClock(company.anchor))
    src = onec_source(onec_base, ctx, lines=True)
    with caplog.at_level("WARNING"):
        for stream in ("users", "counterparties"):
            list(src.pull(stream, None, full=True))
        records = [r for b in src.pull("documents", None, full=True) for r in b.records]
    water = next(d for d in company.onec_docs if d.lines)
    got = next(r for r in records if isinstance(r, ProductLines) and r.key == f"onec:document:{water.guid}")
    assert [(ln.article, ln.name, ln.quantity) for ln in got.lines] == [("", "", 5.0)] and got.lines[0].product_id
    assert any("onec.objects.products" in m for m in caplog.messages)
