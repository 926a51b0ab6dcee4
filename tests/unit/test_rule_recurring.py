from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from connector import domain as d
from connector.journal import Journal
from connector.ports import ActionResult, PlannedAction
from connector.rules.recurring import current_period, issue_date, parse_period
from tests.unit.builders import KYIV, FakeSink, World, k, world

RULE = """
- name: recurring
  type: recurring
  period_field: UF_CRM_RECURRING
  start_field: UF_CRM_RECURRING_START
  invoice: {title: "{{ deal.title }}: {{ period.label }}", payment_days: 10}
  unpaid_task: {title: "Unpaid: {{ previous_invoice.title }}", deadline: 1 workdays}
  max_catch_up: 2
  actions:
    - email: {subject: "Invoice {{ invoice.title }}{{ period.label }}", text: "Dear {{ client.greeting_name }}, {{ deal.amount | money }} is due {{ invoice.due_date }}."}
"""


def at(y: int, m: int, d_: int) -> datetime:
    return datetime(y, m, d_, 11, 0, tzinfo=KYIV)


@dataclass
class Portal(FakeSink):
    """A CRM that makes invoices: each one lands in the store as the next sync would bring it."""

    world: World | None = None
    paid: bool = False
    marker: bool = True  # False: someone edited the marker out of the comments
    made: list[PlannedAction] = field(default_factory=list)

    def execute(self, action: PlannedAction) -> ActionResult:
        res = super().execute(action)
        if action.type != "invoice":
            return res
        self.made.append(action)
        p = action.payload
        n = len(self.made)
        key = k("invoice", 1000 + n)
        self.world.store.write([d.Invoice(key, "bitrix24", str(1000 + n), p["title"], client_key=p["company"], amount=p["amount"],
                                          currency="UAH", outcome=d.Outcome.WON if self.paid else d.Outcome.OPEN,
                                          issued_at=datetime.fromisoformat(p["issued"] + "T09:00:00+02:00"),
                                          due_date=date.fromisoformat(p["due"]), deal_key=p["deal"],
                                          text=f"[{action.marker}]" if self.marker else "")])
        return ActionResult(remote_id=str(1000 + n), remote_key=key)


def regular(w: World, period: str = "monthly", start: str = "2027-01-31", amount: float = 900.0) -> tuple[str, str]:
    client = w.company(1, emails=("office@client.example",))
    deal = k("deal", 500)
    w.store.write([d.Deal(deal, "bitrix24", "500", "Filter service", (client,), outcome=d.Outcome.WON, amount=amount, currency="UAH",
                          responsible_key=k("user", 3), created_at=at(2027, 1, 1), closed_at=at(2027, 1, 5),
                          fields={"UF_CRM_RECURRING": period, "UF_CRM_RECURRING_START": start})])
    w.store.write([d.ProductLines(deal, "bitrix24", (d.ProductLine(1, product_id="17", name="Cartridge", quantity=2, amount=900.0),))])
    return client, deal


def invoices(sink: Portal) -> list[str]:
    return [a.payload["issued"] for a in sink.made]


def pay_all(w: World) -> None:
    from sqlalchemy import update

    from connector.store import invoices as table

    with w.store.tx() as conn:
        conn.execute(update(table).values(outcome="won"))


def test_periods_add_months_to_the_start_so_month_ends_never_drift():
    monthly = parse_period("Monthly")
    assert [issue_date(date(2027, 1, 31), monthly, n) for n in range(4)] == [date(2027, 1, 31), date(2027, 2, 28), date(2027, 3, 31),
                                                                              date(2027, 4, 30)]
    assert issue_date(date(2028, 1, 31), monthly, 1) == date(2028, 2, 29)
    assert current_period(date(2027, 1, 31), monthly, 0, date(2027, 3, 30)) == 1
    assert current_period(date(2027, 1, 31), monthly, 1, date(2027, 1, 31)) is None
    assert parse_period("щоквартально") == parse_period("quarterly") == parse_period("3 міс") != parse_period("14 днів")
    assert parse_period("every now and then") is None


def test_an_invoice_each_month_across_month_ends_once_with_the_deals_products_and_amount(tmp_path):
    w = world(tmp_path, RULE)
    regular(w)
    sink = Portal(world=w, paid=True)
    for day in (at(2027, 1, 30), at(2027, 1, 31), at(2027, 2, 1), at(2027, 2, 27), at(2027, 2, 28), at(2027, 3, 1), at(2027, 3, 31)):
        w.run(day, sink)
    assert invoices(sink) == ["2027-01-31", "2027-02-28", "2027-03-31"]
    first = sink.made[0]
    assert first.key == "recurring:bitrix24:deal:500:2027-01-31:i"
    assert first.payload["title"] == "Filter service: 31.01.2027" and first.payload["due"] == "2027-02-10"
    assert first.payload["amount"] == 900.0 and first.payload["rows"] == [
        {"product_id": "17", "name": "Cartridge", "quantity": 2.0, "price": 450.0, "system": "bitrix24"}]
    emails = [a for a in sink.done if a.type == "email"]
    assert emails == []  # e-mails go through the messaging sink, after their invoice
    assert all(a.depends_on == [first.key] for a in w.plan(at(2027, 1, 31)).rules[0].actions if a.key != first.key)


def test_a_leap_february_gets_its_29th(tmp_path):
    w = world(tmp_path, RULE)
    regular(w, start="2028-01-31")
    sink = Portal(world=w, paid=True)
    for day in (at(2028, 1, 31), at(2028, 2, 28), at(2028, 2, 29)):
        w.run(day, sink)
    assert invoices(sink) == ["2028-01-31", "2028-02-29"]


def test_a_period_skipped_while_the_connector_was_down_is_issued_late_once(tmp_path):
    w = world(tmp_path, RULE)
    regular(w)
    sink = Portal(world=w, paid=True)
    w.run(at(2027, 1, 31), sink)
    w.run(at(2027, 3, 5), sink)  # down from 1 February to 5 March: February's invoice is still made
    assert invoices(sink) == ["2027-01-31", "2027-02-28"]
    w.run(at(2027, 3, 6), sink)
    w.run(at(2027, 3, 31), sink)
    assert invoices(sink) == ["2027-01-31", "2027-02-28", "2027-03-31"]


def test_a_crash_after_the_call_never_makes_a_second_invoice_for_the_period(tmp_path):
    w = world(tmp_path, RULE)
    regular(w)
    sink = Portal(world=w, paid=True)
    plan = w.plan(at(2027, 1, 31))
    j = Journal(w.store)
    from connector.runner import record_plan

    record_plan(j, plan, at(2027, 1, 31), None)
    key = "recurring:bitrix24:deal:500:2027-01-31:i"
    j.claim([key], "dead-process", at(2027, 1, 31))  # claimed, the portal made it, then the process died
    sink.execute(next(a for a in plan.actions if a.key == key))
    w.run(at(2027, 1, 31) + timedelta(minutes=5), sink)
    assert invoices(sink) == ["2027-01-31"] and j.states_for([key])[key] == "done"


def test_a_newly_regular_deal_gets_only_the_current_periods_invoice(tmp_path):
    w = world(tmp_path, RULE)
    regular(w, start="2026-01-31")
    sink = Portal(world=w, paid=True)
    w.run(at(2027, 3, 2), sink)
    assert invoices(sink) == ["2027-02-28"]


def test_an_unpaid_previous_invoice_gives_the_manager_a_task_instead_of_a_second_invoice(tmp_path):
    w = world(tmp_path, RULE)
    regular(w)
    sink = Portal(world=w, paid=False)
    w.run(at(2027, 1, 31), sink)
    _, _ = w.run(at(2027, 2, 28), sink)
    assert invoices(sink) == ["2027-01-31"]
    tasks = [a for a in sink.done if a.type == "task"]
    assert [t.payload["title"] for t in tasks] == ["Unpaid: Filter service: 31.01.2027"]
    assert tasks[0].key == "recurring:bitrix24:deal:500:2027-02-28:u"
    w.run(at(2027, 3, 1), sink)
    assert len([a for a in sink.done if a.type == "task"]) == 1  # once
    pay_all(w)  # the client paid: February's invoice is issued after all, and (paid too) March's on time
    sink.paid = True
    w.run(at(2027, 3, 2), sink)
    w.run(at(2027, 3, 31), sink)
    assert invoices(sink) == ["2027-01-31", "2027-02-28", "2027-03-31"]


def test_previous_unpaid_invoice_anyway_or_skip_are_configurable(tmp_path):
    w = world(tmp_path, RULE + "  previous_unpaid: skip\n")
    regular(w)
    sink = Portal(world=w, paid=False)
    w.run(at(2027, 1, 31), sink)
    plan, _ = w.run(at(2027, 2, 28), sink)
    assert invoices(sink) == ["2027-01-31"] and not [a for a in sink.done if a.type == "task"] and plan.rules[0].notes


def test_a_deal_not_marked_regular_or_with_an_unknown_period_gets_nothing(tmp_path):
    w = world(tmp_path, RULE)
    regular(w, period="sometimes")
    plan, sink = w.run(at(2027, 2, 28), Portal(world=w))
    assert sink.done == [] and plan.rules[0].notes and "sometimes" in plan.rules[0].notes[0]


def test_invoices_the_connector_issued_are_never_the_clients_contact_or_purchase(tmp_path):
    from sqlalchemy import select

    from connector.evidence import Evidence
    from connector.store import invoices as table

    w = world(tmp_path, RULE)
    client, _ = regular(w)
    sink = Portal(world=w, paid=True, marker=False)  # known as ours from the journal, not from a marker
    w.run(at(2027, 1, 31), sink)
    with w.store.tx() as conn:
        assert conn.execute(select(table.c.own)).scalars().all() == [True]
    with w.snapshot(at(2027, 2, 2)) as snap:
        ev = Evidence(snap.conn, "bitrix24", at(2027, 2, 2))
        keys = [p.key for p in ev.purchases([client]).get(client, [])]
        contact = ev.contacts_of([client]).get(client, {})
    assert keys == ["bitrix24:deal:500"] and "invoice" not in contact


def test_an_escalation_follows_an_unpaid_invoice_and_stops_when_it_is_paid(tmp_path):
    w = world(tmp_path, RULE + """  escalate:
    - after_days: 14
      actions: [{notify: [supervisor]}]
""")
    regular(w)
    sink = Portal(world=w, paid=False)
    w.run(at(2027, 1, 31), sink)
    w.run(at(2027, 2, 15), sink)
    assert [a.type for a in sink.done if a.type == "notify"] == ["notify"]
    (tmp_path / "paid").mkdir()
    w2 = world(tmp_path / "paid", RULE + """  escalate:
    - after_days: 14
      actions: [{notify: [supervisor]}]
""")
    regular(w2)
    sink2 = Portal(world=w2, paid=False)
    w2.run(at(2027, 1, 31), sink2)
    pay_all(w2)
    plan, _ = w2.run(at(2027, 2, 15), sink2)
    assert not [a for a in sink2.done if a.type == "notify"] and [c.rule for c in plan.cleared] == ["recurring"]
