"""invoice_sync: a 1C payment closes the matching Bitrix24 invoice once; a partial one never does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connector import domain as d
from connector.config import InvoiceSyncRule
from connector.errors import ConfigError
from connector.journal import Journal
from connector.runner import record_plan
from connector.store import links
from tests.unit.builders import NOW, k, settings, world

ONEC = """
onec:
  odata: {url: "http://127.0.0.1:1/base/odata/standard.odata", user: u, password: p}
"""

RULE = """
- name: invoice_sync
  type: invoice_sync
  deal_stage: WON
  actions:
    - comment: "Paid in 1C: {{ document.number }} of {{ document.date }}"
"""


def _world(tmp_path, rule: str = RULE):
    return world(tmp_path, rule, extra=ONEC)


def link(w, guid: str, client: str) -> str:
    cp = k("counterparty", guid, "onec")
    w.store.write([d.Client(cp, "onec", guid, d.ClientKind.COMPANY, f"1C {guid}", guid=guid)])
    with w.store.tx() as conn:
        w.store._upsert(conn, links, [{"foreign_key": cp, "client_key": client, "method": "tax_id", "candidates": None,
                                       "updated_at": NOW}], ["foreign_key"])
        w.store.mark_evidence_dirty(conn)
    return cp


def invoice(w, i: int, client: str, amount: float, *, number: str = "", stage: str = "DT31_1:S", outcome: str = "open",
            deal: str | None = None, fields: dict | None = None, issued_days_ago: int = 6) -> str:
    key = k("invoice", i)
    w.store.write([d.Invoice(key, "bitrix24", str(i), f"Invoice #{i}", client_key=client, number=number or f"INV-{i:05d}",
                             amount=amount, currency="UAH", stage_id=stage, outcome=d.Outcome(outcome),
                             issued_at=NOW - timedelta(days=issued_days_ago), due_date=(NOW + timedelta(days=8)).date(),
                             responsible_key=k("user", 3), deal_key=deal, fields=fields or {})])
    return key


def doc(w, guid: str, kind: str, cp: str, amount: float, *, number: str = "", days_ago: float = 2, basis: str | None = None,
        paid: bool | None = None, posted: bool = True) -> str:
    key = k("document", guid, "onec")
    w.store.write([d.Document(key, "onec", guid, d.DocumentType(kind), NOW - timedelta(days=days_ago), cp, number=number or guid,
                              amount=amount, currency="UAH", posted=posted, basis_key=k("document", basis, "onec") if basis else None,
                              paid=paid)])
    return key


def stage_actions(plan):
    return [(a.type, a.subject_key) for a in plan.actions if a.type in ("invoice_stage", "deal_stage")]


def test_a_1c_payment_of_the_invoice_with_the_same_number_moves_it_to_its_paid_stage_once(tmp_path):
    w = _world(tmp_path)
    c = w.company(1, "Payer")
    cp = link(w, "g1", c)
    inv = invoice(w, 17, c, 24000.0)
    doc(w, "i17", "invoice", cp, 24000.0, number="INV-00017", days_ago=6)
    doc(w, "p1", "payment", cp, 24000.0, number="ПН-000123", basis="i17")
    plan, sink = w.run()
    moves = [a for a in sink.done if a.type == "invoice_stage"]
    assert [(a.key, a.payload["invoice"], a.payload["from"], a.payload["to"], a.payload["funnel"]) for a in moves] == [
        ("invoice_sync:bitrix24:invoice:17:paid:s", inv, "DT31_1:S", None, 1)]
    assert "ПН-000123" in moves[0].reason and "INV-00017" in moves[0].reason  # the 1C document is the reason
    assert sorted(a.type for a in sink.done) == ["comment", "invoice_stage"]
    _, sink = w.run()
    assert sink.done == []  # a second run: nothing


def test_a_partial_payment_does_not_close_the_invoice(tmp_path):
    w = _world(tmp_path)
    c = w.company(1)
    cp = link(w, "g1", c)
    invoice(w, 17, c, 15000.0)
    doc(w, "i17", "invoice", cp, 15000.0, number="INV-00017", days_ago=6)
    doc(w, "p1", "payment", cp, 5000.0, basis="i17")
    doc(w, "p2", "payment", cp, 9999.0, basis="i17", days_ago=1)
    assert stage_actions(w.plan()) == []
    doc(w, "p3", "payment", cp, 1.0, basis="i17", days_ago=0.5)  # the last kopeck arrives
    assert stage_actions(w.plan()) == [("invoice_stage", k("invoice", 17))]


def test_the_payment_must_cover_the_bitrix24_amount_too(tmp_path):
    w = _world(tmp_path)
    c = w.company(1)
    cp = link(w, "g1", c)
    invoice(w, 17, c, 24000.0)
    doc(w, "i17", "invoice", cp, 10000.0, number="INV-00017", days_ago=6)
    doc(w, "p1", "payment", cp, 10000.0, basis="i17")
    plan = w.plan()
    assert stage_actions(plan) == []
    assert any("INV-00017" in n for r in plan.rules for n in r.notes)


def test_a_number_of_another_clients_document_matches_nothing(tmp_path):
    w = _world(tmp_path)
    c, other = w.company(1), w.company(2)
    link(w, "g1", c)
    cp2 = link(w, "g2", other)
    invoice(w, 17, c, 24000.0, issued_days_ago=40)
    doc(w, "i17", "invoice", cp2, 24000.0, number="INV-00017", days_ago=6)
    doc(w, "p1", "payment", cp2, 24000.0, basis="i17")
    assert stage_actions(w.plan()) == []


def test_paid_and_declined_invoices_are_never_touched(tmp_path):
    w = _world(tmp_path)
    c = w.company(1)
    cp = link(w, "g1", c)
    invoice(w, 17, c, 100.0, stage="DT31_1:P", outcome="won")
    invoice(w, 18, c, 100.0, stage="DT31_1:D", outcome="lost")
    for n in (17, 18):
        doc(w, f"i{n}", "invoice", cp, 100.0, number=f"INV-{n:05d}", days_ago=6)
        doc(w, f"p{n}", "payment", cp, 100.0, basis=f"i{n}")
    assert stage_actions(w.plan()) == []


def test_a_person_moving_the_invoice_back_wins(tmp_path):
    w = _world(tmp_path)
    c = w.company(1)
    cp = link(w, "g1", c)
    invoice(w, 17, c, 100.0)
    doc(w, "i17", "invoice", cp, 100.0, number="INV-00017", days_ago=6)
    doc(w, "p1", "payment", cp, 100.0, basis="i17")
    _, sink = w.run()
    assert sorted(a.type for a in sink.done) == ["comment", "invoice_stage"]
    invoice(w, 17, c, 100.0, stage="DT31_1:P", outcome="won")  # the sync sees it paid: the episode ends
    plan, sink = w.run()
    assert sink.done == [] and [x.rule for x in plan.cleared] == ["invoice_sync"]
    invoice(w, 17, c, 100.0, stage="DT31_1:S")  # a person moves it back to "sent"
    _, sink = w.run()
    assert sink.done == []  # never moved again: the key is done for ever


def test_amount_and_client_within_the_window_match_an_invoice_without_a_number_in_1c(tmp_path):
    w = _world(tmp_path, RULE + "  match: [number, amount]\n  amount_window_days: 10\n")
    c = w.company(1)
    cp = link(w, "g1", c)
    old = invoice(w, 17, c, 500.0, issued_days_ago=30)  # the payment came 28 days later: outside the window
    fresh = invoice(w, 18, c, 500.0, issued_days_ago=6)
    doc(w, "p1", "payment", cp, 500.0, number="ПН-1", days_ago=2)
    doc(w, "p2", "payment", cp, 499.0, number="ПН-2", days_ago=1)  # another amount
    plan = w.plan()
    assert stage_actions(plan) == [("invoice_stage", fresh)]
    assert old not in [a.subject_key for a in plan.actions]
    assert "ПН-1" in plan.actions[0].reason


def test_one_payment_closes_one_invoice_and_a_claimed_payment_is_not_reused_by_amount(tmp_path):
    w = _world(tmp_path, RULE + "  match: [number, amount]\n")
    c = w.company(1)
    cp = link(w, "g1", c)
    a = invoice(w, 17, c, 300.0, number="X-1", issued_days_ago=8)
    b = invoice(w, 18, c, 300.0, number="X-2", issued_days_ago=7)
    n = invoice(w, 19, c, 300.0, number="X-3", issued_days_ago=6)
    doc(w, "i19", "invoice", cp, 300.0, number="X-3", days_ago=6)
    doc(w, "p9", "payment", cp, 300.0, basis="i19", days_ago=3)  # pays X-3 by number, never X-1 by amount
    doc(w, "p1", "payment", cp, 300.0, days_ago=2)  # no basis: one invoice by amount, the oldest
    assert sorted(stage_actions(w.plan())) == sorted([("invoice_stage", a), ("invoice_stage", n)])
    assert b  # X-2 waits for its own payment


def test_basis_guid_kept_on_the_invoice_finds_the_1c_order_paid_through_its_invoice(tmp_path):
    w = _world(tmp_path, RULE + "  match: [basis]\n")
    c = w.company(1)
    cp = link(w, "g1", c)
    inv = invoice(w, 17, c, 700.0, fields={"xmlId": "{0B1C2D3E-0000-4000-8000-00000000000A}"})
    doc(w, "0b1c2d3e-0000-4000-8000-00000000000a", "order", cp, 700.0, number="ЗК-1", days_ago=7)
    doc(w, "i1", "invoice", cp, 700.0, number="СЧ-1", days_ago=6, basis="0b1c2d3e-0000-4000-8000-00000000000a")
    doc(w, "p1", "payment", cp, 700.0, number="ПН-7", basis="i1")
    plan = w.plan()
    assert stage_actions(plan) == [("invoice_stage", inv)]
    assert "ЗК-1" in plan.actions[0].reason and plan.actions[0].payload["method"] == "basis"


def test_a_document_marked_paid_in_1c_closes_the_invoice_of_the_same_amount(tmp_path):
    w = _world(tmp_path)
    c = w.company(1)
    cp = link(w, "g1", c)
    inv = invoice(w, 17, c, 900.0)
    doc(w, "i17", "invoice", cp, 900.0, number="INV-00017", days_ago=6, paid=True)
    assert stage_actions(w.plan()) == [("invoice_stage", inv)]


def test_the_deal_moves_after_its_last_invoice_is_paid(tmp_path):
    w = _world(tmp_path)
    c = w.company(1)
    cp = link(w, "g1", c)
    deal = k("deal", 5)
    w.store.write([d.Deal(deal, "bitrix24", "5", "Big order", (c,), stage_id="EXECUTING", amount=1000.0)])
    first = invoice(w, 17, c, 400.0, deal=deal)
    second = invoice(w, 18, c, 600.0, deal=deal)
    invoice(w, 19, c, 50.0, deal=deal, stage="DT31_1:D", outcome="lost")  # a declined one does not hold the deal
    doc(w, "i17", "invoice", cp, 400.0, number="INV-00017", days_ago=6)
    doc(w, "p17", "payment", cp, 400.0, basis="i17")
    doc(w, "i18", "invoice", cp, 600.0, number="INV-00018", days_ago=6)
    assert stage_actions(w.plan()) == [("invoice_stage", first)]  # the second invoice is unpaid: the deal waits
    doc(w, "p18", "payment", cp, 600.0, basis="i18")
    plan = w.plan()
    assert sorted(stage_actions(plan)) == sorted([("invoice_stage", first), ("invoice_stage", second), ("deal_stage", second)])
    move = next(a for a in plan.actions if a.type == "deal_stage")
    assert move.payload == {"deal": deal, "title": "Big order", "from": "EXECUTING", "to": "WON"}
    assert sorted(move.depends_on) == ["invoice_sync:bitrix24:invoice:17:paid:s", "invoice_sync:bitrix24:invoice:18:paid:s"]
    assert "Big order" in move.reason


def test_a_deal_in_another_funnel_is_not_moved_to_a_stage_of_the_general_one(tmp_path):
    w = _world(tmp_path)
    c = w.company(1)
    cp = link(w, "g1", c)
    deal = k("deal", 5)
    w.store.write([d.Deal(deal, "bitrix24", "5", "Funnel 3", (c,), stage_id="C3:EXECUTING")])
    invoice(w, 17, c, 400.0, deal=deal)
    doc(w, "i17", "invoice", cp, 400.0, number="INV-00017", days_ago=6)
    doc(w, "p17", "payment", cp, 400.0, basis="i17")
    plan = w.plan()
    assert [a.type for a in plan.actions if a.type.endswith("_stage")] == ["invoice_stage"]
    assert any("Funnel 3" in n for r in plan.rules for n in r.notes)


def test_two_1c_documents_with_the_invoice_number_are_not_guessed(tmp_path):
    w = _world(tmp_path, RULE + "  match: [number]\n")
    c = w.company(1)
    cp = link(w, "g1", c)
    invoice(w, 17, c, 100.0)
    for g in ("a", "b"):
        doc(w, f"i{g}", "invoice", cp, 100.0, number="INV-00017", days_ago=6)
        doc(w, f"p{g}", "payment", cp, 100.0, basis=f"i{g}")
    plan = w.plan()
    assert stage_actions(plan) == [] and any("INV-00017" in n for r in plan.rules for n in r.notes)


def test_invoice_sync_needs_both_systems(tmp_path):
    with pytest.raises(ConfigError) as e:
        settings(tmp_path, RULE)
    assert any("invoice_sync needs both bitrix24 and onec" in p for p in e.value.problems)


def test_the_number_and_guid_fields_are_pulled_with_the_invoices(tmp_path):
    s = settings(tmp_path, RULE + "  number_field: ufCrm_SmartInvoice_1712345678\n", extra=ONEC)
    assert isinstance(s.rules[0], InvoiceSyncRule)
    assert s.bitrix24.invoice_fields() == ["ufCrm_SmartInvoice_1712345678", "xmlId"]


def test_the_deal_move_still_waiting_is_not_cancelled_when_the_invoice_turns_paid(tmp_path):
    w = _world(tmp_path)
    c = w.company(1)
    cp = link(w, "g1", c)
    deal = k("deal", 5)
    w.store.write([d.Deal(deal, "bitrix24", "5", "Order", (c,), stage_id="EXECUTING")])
    invoice(w, 17, c, 400.0, deal=deal)
    doc(w, "i17", "invoice", cp, 400.0, number="INV-00017", days_ago=6)
    doc(w, "p17", "payment", cp, 400.0, basis="i17")
    record_plan(Journal(w.store), w.plan(), NOW, None)  # journaled; a crash before the deal's move
    invoice(w, 17, c, 400.0, deal=deal, stage="DT31_1:P", outcome="won")  # the next sync sees the invoice paid
    plan = w.plan()
    assert plan.cancel == [] and plan.cleared == []
    assert [a.type for a in plan.actions if a.type.endswith("_stage")] == []  # nothing new: the journal holds the move


def test_texts_may_name_the_deal_of_an_invoice_that_has_none(tmp_path):
    w = _world(tmp_path, RULE.replace("Paid in 1C: {{ document.number }} of {{ document.date }}",
                                      "Paid in 1C: {{ document.number }}{{ ' (deal ' ~ deal.title ~ ')' if deal.title }}"))
    c = w.company(1)
    cp = link(w, "g1", c)
    invoice(w, 17, c, 100.0)
    doc(w, "i17", "invoice", cp, 100.0, number="INV-00017", days_ago=6)
    doc(w, "p1", "payment", cp, 100.0, number="ПН-1", basis="i17")
    plan = w.plan()
    assert [r.errors for r in plan.rules] == [[]]
    assert [a.payload["text"].split(" [cn-")[0] for a in plan.actions if a.type == "comment"] == ["Paid in 1C: ПН-1"]
