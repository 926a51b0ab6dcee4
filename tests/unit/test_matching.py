"""Linking 1C counterparties to CRM clients: tax id, stored GUID, phone; ambiguity is reported."""

from connector import domain as d
from connector.matching import link_clients, link_report
from tests.unit.builders import NOW, world

ONEC = """
onec:
  odata: {url: "http://127.0.0.1:1/base/odata/standard.odata", user: u, password: p}
  match: [tax_id, guid_field, phone]
"""


def cp(w, guid: str, title: str, *, tax: str | None = None, phones: tuple = ()) -> str:
    key = d.make_key("onec", "counterparty", guid)
    w.store.write([d.Client(key, "onec", guid, d.ClientKind.COMPANY, title, tax_id=tax, guid=guid, phones=phones)])
    return key


def test_links_by_tax_id_guid_and_phone_and_reports_the_rest(tmp_path):
    w = world(tmp_path, "[]", extra=ONEC)
    by_tax = w.company(1, "Tax Co", tax_id="30000037")
    by_guid = w.company(2, "Guid Co")
    w.store.write([d.Client(by_guid, "bitrix24", "2", d.ClientKind.COMPANY, "Guid Co", guid="AAAAAAAA-0000-4000-8000-000000000001")])
    by_phone = w.company(3, "Phone Co", phones=("+38 (067) 765-43-21",))
    w.company(4, "Twin A", tax_id="41111111")
    w.company(5, "Twin B", tax_id="41111111")
    cp(w, "g1", "ТОВ Tax", tax="30000037")
    cp(w, "aaaaaaaa-0000-4000-8000-000000000001", "Guid")
    cp(w, "g3", "Phone", phones=("0677654321",))
    cp(w, "g4", "Twin", tax="41111111")
    cp(w, "g5", "Nobody", tax="99999999", phones=("0991112233",))
    stats = link_clients(w.settings, w.store, NOW)
    assert stats == {"linked": 3, "ambiguous": 1, "unmatched": 1}
    from sqlalchemy import select

    from connector.store import links

    with w.store.tx() as conn:
        got = {r.foreign_key: (r.client_key, r.method) for r in conn.execute(select(links))}
    assert got["onec:counterparty:g1"] == (by_tax, "tax_id")
    assert got["onec:counterparty:aaaaaaaa-0000-4000-8000-000000000001"] == (by_guid, "guid_field")
    assert got["onec:counterparty:g3"] == (by_phone, "phone")
    report = {r["title"]: r for r in link_report(w.store)}
    assert report["Twin"]["status"] == "ambiguous" and sorted(report["Twin"]["candidates"]) == sorted(
        [d.make_key("bitrix24", "company", 4), d.make_key("bitrix24", "company", 5)])
    assert report["Nobody"]["status"] == "unmatched"


def test_match_order_is_configurable(tmp_path):
    w = world(tmp_path, "[]", extra=ONEC.replace("[tax_id, guid_field, phone]", "[phone]"))
    w.company(1, "Tax Co", tax_id="30000037")
    cp(w, "g1", "Tax", tax="30000037")
    assert link_clients(w.settings, w.store, NOW) == {"linked": 0, "ambiguous": 0, "unmatched": 1}


def test_linked_1c_sales_are_purchases_and_documents_are_contact(tmp_path):
    from datetime import timedelta

    w = world(tmp_path, """
- name: lost
  type: lost
  min_purchases: 2
  after_days: 180
  actions: [{task: {title: "Win back {{ client.title }}"}}]
""", extra=ONEC)
    c = w.company(1, "Buyer", tax_id="30000037")
    key = cp(w, "g1", "Buyer", tax="30000037")
    for days in (200, 260):
        w.store.write([d.Document(f"onec:document:s{days}", "onec", f"s{days}", d.DocumentType.SALE, NOW - timedelta(days=days), key, amount=10.0)])
    link_clients(w.settings, w.store, NOW)
    snap = w.snapshot()
    assert snap.client(c).contact["document"].date() == (NOW - timedelta(days=200)).date()
    assert [a.subject_key for a in w.plan().actions] == [c]
