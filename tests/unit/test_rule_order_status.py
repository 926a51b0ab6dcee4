"""order_status: one message per document and state; a second run sends nothing; old history never."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connector import domain as d
from connector.calendar import BusinessCalendar
from connector.errors import ConfigError
from connector.execute import Executor
from connector.journal import Journal
from connector.plan import Planner
from connector.ports import FixedClock
from connector.runner import record_plan
from tests.unit.builders import NOW, FakeSink, k, settings, world
from tests.unit.test_rule_invoice_sync import ONEC, doc, link

SHIPPED = """
- name: order_shipped
  type: order_status
  document: order
  states: [shipped, paid]
  within_days: 3
  actions:
    - sms: {text: "Your order {{ order.number }} is {{ order.state }}."}
"""


def sms(sink_or_plan) -> list[tuple[str, str]]:
    items = sink_or_plan.done if hasattr(sink_or_plan, "done") else sink_or_plan.actions
    return sorted((a.subject_key, a.payload["text"]) for a in items if a.type == "sms")


def _world(tmp_path, rule: str = SHIPPED):
    w = world(tmp_path, rule, extra=ONEC)
    c = w.company(1, "Buyer", phones=("+380501234567",))
    return w, c, link(w, "g1", c)


def test_an_order_shipped_is_one_message_keyed_by_the_order_and_the_state(tmp_path):
    w, c, cp = _world(tmp_path)
    order = doc(w, "o1", "order", cp, 1000.0, number="ЗК-1", days_ago=10)
    doc(w, "s1", "sale", cp, 1000.0, number="РН-1", days_ago=1, basis="o1")
    doc(w, "s2", "sale", cp, 1000.0, number="РН-2", days_ago=0.5, basis="o1")  # a second shipment: the same state
    plan = w.plan()
    assert [(a.key, a.type) for a in plan.actions] == [(f"order_shipped:{order}:shipped:0", "sms")]
    assert sms(plan) == [(order, "Your order ЗК-1 is shipped.")]
    assert "ЗК-1" in plan.actions[0].reason and "РН-1" in plan.actions[0].reason
    w.run()
    again = w.plan(NOW + timedelta(hours=2))
    assert [a.key for a in again.actions] == [f"order_shipped:{order}:shipped:0"] and again.new_actions == []


def test_the_client_gets_the_message_and_a_second_run_sends_nothing(tmp_path):
    w, c, cp = _world(tmp_path)
    order = doc(w, "o1", "order", cp, 1000.0, number="ЗК-1", days_ago=10)
    doc(w, "s1", "sale", cp, 1000.0, number="РН-1", days_ago=1, basis="o1")
    messages = FakeSink("sms")

    def run(now):
        cal = BusinessCalendar(w.settings.calendar, w.settings.timezone)
        with w.snapshot(now) as snap:
            plan = Planner(w.settings, snap, cal, journal=Journal(w.store)).plan()
        record_plan(Journal(w.store), plan, now, None)
        Executor(Journal(w.store), [FakeSink(), messages], FixedClock(now)).run()

    run(NOW)
    assert [(a.subject_key, a.payload["phone"], a.payload["text"]) for a in messages.done] == [
        (order, "+380501234567", "Your order ЗК-1 is shipped.")]
    run(NOW + timedelta(hours=1))
    run(NOW + timedelta(days=5))  # out of the window: the episode ends, nothing is sent
    assert len(messages.done) == 1


def test_old_history_is_never_messaged(tmp_path):
    w, c, cp = _world(tmp_path)
    doc(w, "o1", "order", cp, 1000.0, number="ЗК-1", days_ago=40)
    doc(w, "s1", "sale", cp, 1000.0, number="РН-1", days_ago=30, basis="o1")
    doc(w, "p1", "payment", cp, 1000.0, days_ago=29, basis="o1")
    assert w.plan().actions == []


def test_paid_is_reached_by_the_payment_that_completes_the_order_through_its_invoice(tmp_path):
    w, c, cp = _world(tmp_path)
    order = doc(w, "o1", "order", cp, 1000.0, number="ЗК-1", days_ago=10)
    doc(w, "i1", "invoice", cp, 1000.0, number="СЧ-1", days_ago=9, basis="o1")
    doc(w, "p1", "payment", cp, 400.0, days_ago=8, basis="i1")
    assert w.plan().actions == []  # part paid, long ago
    doc(w, "p2", "payment", cp, 600.0, days_ago=1, basis="o1")
    assert [(a.subject_key, a.key.split(":")[-2]) for a in w.plan().actions] == [(order, "paid")]


def test_a_1c_order_status_and_a_messages_quiet_hours(tmp_path):
    rule = """
- name: ready
  type: order_status
  states: [КОтгрузке]
  actions:
    - sms: {text: "Order {{ order.number }} is ready to ship."}
"""
    w, c, cp = _world(tmp_path, rule)
    key = k("document", "o1", "onec")
    w.store.write([d.Document(key, "onec", "o1", d.DocumentType.ORDER, NOW - timedelta(days=1), cp, number="ЗК-9", amount=10.0,
                              status="КОтгрузке")])
    w.store.write([d.Document(k("document", "o2", "onec"), "onec", "o2", d.DocumentType.ORDER, NOW - timedelta(days=1), cp,
                              number="ЗК-10", amount=10.0, status="Закрыт")])
    night = NOW.replace(hour=22)
    plan = w.plan(night)
    assert [(a.subject_key, a.key.split(":")[-2]) for a in plan.actions] == [(key, "КОтгрузке")]
    assert plan.actions[0].not_before is not None and plan.actions[0].not_before > night  # quiet hours apply


def test_a_shipment_names_the_order_it_is_based_on(tmp_path):
    rule = """
- name: shipped
  type: order_status
  document: sale
  states: [shipped]
  actions:
    - email: {subject: "Shipped", text: "Order {{ order.number }}: shipment {{ order.shipment_number }}"}
"""
    w, c, cp = _world(tmp_path, rule)
    doc(w, "o1", "order", cp, 1000.0, number="ЗК-1", days_ago=10)
    sale = doc(w, "s1", "sale", cp, 1000.0, number="РН-1", days_ago=1, basis="o1")
    plan = w.plan()
    assert [(a.subject_key, a.payload["text"]) for a in plan.actions] == [(sale, "Order ЗК-1: shipment РН-1")]


def test_a_deal_stage_tells_the_deals_contact(tmp_path):
    rule = """
- name: deal_won
  type: order_status
  document: deal
  states: ["C1:WON"]
  actions:
    - sms: {text: "{{ client.greeting_name }}, your order is on its way."}
"""
    w = world(tmp_path, rule)
    co = w.company(1, "Firm", phones=("+380441234567",))
    person = w.company(2, "Olena", kind="contact", company=1, phones=("+380671234567",))
    deal = k("deal", 5)
    w.store.write([d.Deal(deal, "bitrix24", "5", "Order", (co, person), stage_id="C1:WON", outcome=d.Outcome.WON,
                          modified_at=NOW - timedelta(hours=3), closed_at=NOW - timedelta(hours=3))])
    w.store.write([d.Deal(k("deal", 6), "bitrix24", "6", "Old", (co,), stage_id="C1:WON", outcome=d.Outcome.WON,
                          modified_at=NOW - timedelta(days=30), closed_at=NOW - timedelta(days=30))])
    plan = w.plan()
    assert [(a.key, a.payload["phone"]) for a in plan.actions] == [(f"deal_won:{deal}:C1.WON:0", "+380671234567")]


def test_a_shipment_has_one_state(tmp_path):
    with pytest.raises(ConfigError) as e:
        settings(tmp_path, "- {name: s, type: order_status, document: sale, states: [paid]}\n", extra=ONEC)
    assert any("rules[0].states: a shipment has one state: shipped" in p for p in e.value.problems)
