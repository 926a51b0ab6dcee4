"""A 1C debt carries the shipments it is made of: store migration, snapshot, debtors vars and reason."""

from datetime import timedelta

from sqlalchemy import inspect, text

from connector import domain as d
from connector.store import SCHEMA_VERSION, Store
from tests.unit.builders import NOW, world

DEBTORS = """
- name: debtors
  type: debtors
  min_amount: 1000
  overdue_days: 7
  actions:
    - task: {title: "Debt: {{ client.title }}", description: "{% for x in debt.documents %}{{ x.number }} of {{ x.date }}: {{ x.unpaid }} due {{ x.due }}; {% endfor %}", deadline: 1 workdays}
"""

DOCS = ({"number": "РН-000017", "date": "2026-10-01", "amount": 30000.0, "unpaid": 12000.0, "due": "2026-10-15"},
        {"number": "РН-000031", "date": "2026-10-20", "amount": 30000.0, "unpaid": 30000.0, "due": "2026-11-03"})


def test_an_older_store_gets_the_documents_column_and_keeps_its_debts(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    store.write([d.Debt("onec:debt:a", "onec", "onec:counterparty:a", 500.0, "UAH", NOW)])
    with store.engine.begin() as conn:  # what a store of the previous release looks like
        conn.execute(text("ALTER TABLE debts DROP COLUMN documents"))
        conn.execute(text("UPDATE meta SET value = '2' WHERE name = 'schema_version'"))
    again = Store(url)
    with again.engine.begin() as conn:
        assert "documents" in {c["name"] for c in inspect(conn).get_columns("debts")}
        assert conn.execute(text("SELECT value FROM meta WHERE name = 'schema_version'")).scalar_one() == str(SCHEMA_VERSION)
        assert conn.execute(text("SELECT amount FROM debts")).scalar_one() == 500.0
    assert again.migrate() == SCHEMA_VERSION  # idempotent


def test_debtors_names_the_unpaid_documents_in_its_reason_and_templates(tmp_path):
    w = world(tmp_path, DEBTORS)
    client = w.company(1, "Textile")
    from connector.store import links

    w.store.write([d.Client("onec:counterparty:a", "onec", "a", d.ClientKind.COMPANY, "Textile 1C"),
                   d.Debt("onec:debt:a", "onec", "onec:counterparty:a", 42000.0, "UAH", NOW, overdue_amount=12000.0,
                          overdue_since=(NOW - timedelta(days=20)).date(), documents=DOCS)])
    with w.store.tx() as conn:
        w.store._upsert(conn, links, [{"foreign_key": "onec:counterparty:a", "client_key": client, "method": "tax_id",
                                       "candidates": None, "updated_at": NOW}], ["foreign_key"])
    with w.snapshot() as snap:
        assert snap.debts()[0].documents == list(DOCS)
    plan, sink = w.run(NOW)
    [action] = sink.done
    assert action.payload["description"].startswith("РН-000017 of 01.10.2026: 12 000,00 due 15.10.2026; РН-000031 of 20.10.2026")
    reason = action.reason.replace("\xa0", " ")
    assert "найстаріший неоплачений документ: РН-000017 від 01.10.2026, 12 000,00 ₴, строк оплати 15.10.2026" in reason
