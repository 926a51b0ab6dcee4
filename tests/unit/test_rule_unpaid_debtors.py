from datetime import timedelta

from connector import domain as d
from tests.unit.builders import NOW, k, world

UNPAID = """
- name: unpaid
  type: unpaid
  overdue_days: 3
  actions:
    - task: {title: "Unpaid: {{ invoice.title }}", deadline: 1 workdays}
  escalate:
    - after_days: 7
      actions: [{notify: [supervisor]}]
"""


def test_unpaid_after_overdue_days_then_escalates_then_stops_when_paid(tmp_path):
    w = world(tmp_path, UNPAID)
    c = w.company(1, "Payer")
    overdue = w.invoice(c, 5)
    later = w.invoice(c, 2)  # due two days ago: within grace
    w.invoice(c, 30, paid=True)
    plan, sink = w.run(NOW)
    assert [(a.subject_key, a.type) for a in sink.done] == [(overdue, "task")]
    assert sink.done[0].payload["title"].startswith("Unpaid: Invoice #")
    _, sink = w.run(NOW + timedelta(days=6))
    assert [(a.subject_key, a.type) for a in sink.done] == [(later, "task")]  # the second one is overdue now
    _, sink = w.run(NOW + timedelta(days=6))
    assert sink.done == []
    _, sink = w.run(NOW + timedelta(days=8))
    assert [(a.type, a.payload.get("user")) for a in sink.done] == [("notify", k("user", 1))]


def test_payment_stops_the_ladder(tmp_path):
    w = world(tmp_path, UNPAID)
    c = w.company(1)
    inv = w.invoice(c, 5)
    w.run(NOW)
    w.store.write([d.Invoice(inv, "bitrix24", inv.rsplit(":", 1)[1], "Invoice", client_key=c, amount=500.0, outcome=d.Outcome.WON,
                             due_date=(NOW - timedelta(days=5)).date())])
    _, sink = w.run(NOW + timedelta(days=8))
    assert sink.done == []


def test_1c_invoice_paid_when_payments_cover_it(tmp_path):
    w = world(tmp_path, UNPAID)
    c = w.company(1)
    w.store.write([d.Client("onec:counterparty:g1", "onec", "g1", d.ClientKind.COMPANY, "C1", tax_id="123")])
    from connector.store import links

    with w.store.tx() as conn:
        w.store._upsert(conn, links, [{"foreign_key": "onec:counterparty:g1", "client_key": c, "method": "tax_id", "candidates": None,
                                       "updated_at": NOW}], ["foreign_key"])
    due = (NOW - timedelta(days=10))
    inv = d.Document("onec:document:i1", "onec", "i1", d.DocumentType.INVOICE, due, "onec:counterparty:g1", number="СЧ-1", amount=900.0,
                     due_date=due.date())
    inv2 = d.Document("onec:document:i2", "onec", "i2", d.DocumentType.INVOICE, due, "onec:counterparty:g1", number="СЧ-2", amount=400.0,
                      due_date=due.date())
    pay = d.Document("onec:document:p1", "onec", "p1", d.DocumentType.PAYMENT, NOW - timedelta(days=1), "onec:counterparty:g1", amount=900.0,
                     basis_key="onec:document:i1")
    w.store.write([inv, inv2, pay])
    assert [a.subject_key for a in w.plan().actions] == ["onec:document:i2"]


DEBTORS = """
- name: debtors
  type: debtors
  min_amount: 1000
  overdue_days: 7
  actions:
    - task: {title: "Debt {{ debt.amount }} {{ debt.currency }}: {{ client.title }}", deadline: 1 workdays}
  escalate:
    - after_days: 7
      actions: [{notify: [supervisor]}]
"""


def _debt(w, cp: str, amount: float, overdue_days: int):
    w.store.write([d.Debt(f"onec:debt:{cp}", "onec", f"onec:counterparty:{cp}", amount, "UAH", NOW, overdue_amount=amount,
                          overdue_since=(NOW - timedelta(days=overdue_days)).date())])


def _link(w, cp: str, client: str):
    from connector.store import links

    w.store.write([d.Client(f"onec:counterparty:{cp}", "onec", cp, d.ClientKind.COMPANY, cp)])
    with w.store.tx() as conn:
        w.store._upsert(conn, links, [{"foreign_key": f"onec:counterparty:{cp}", "client_key": client, "method": "tax_id",
                                       "candidates": None, "updated_at": NOW}], ["foreign_key"])


def test_debtors_threshold_overdue_escalation_and_stop(tmp_path):
    w = world(tmp_path, DEBTORS)
    big, small, fresh = w.company(1, "Big"), w.company(2, "Small"), w.company(3, "Fresh")
    for cp, c in (("a", big), ("b", small), ("c", fresh)):
        _link(w, cp, c)
    _debt(w, "a", 42000, 20)
    _debt(w, "b", 500, 20)
    _debt(w, "c", 5000, 3)
    _, sink = w.run(NOW)
    assert [a.payload["title"] for a in sink.done] == ["Debt 42 000,00 UAH: Big"]
    _, sink = w.run(NOW + timedelta(days=7))
    assert sorted(a.type for a in sink.done) == ["notify", "task"]  # escalation for Big, first reminder for Fresh
    from connector.store import debts
    with w.store.tx() as conn:
        conn.execute(debts.update().values(deleted=True))
    _, sink = w.run(NOW + timedelta(days=20))
    assert sink.done == []
