from datetime import datetime, timedelta

from connector import domain as d
from connector import i18n
from connector.journal import Journal
from tests.unit.builders import KYIV, NOW, world
from tests.unit.test_rule_rfm import link_1c

RULE = """
- name: replenish
  type: replenish
  products:
    - {id: water, title: "Water 19 l", match: {article: [W-19], name_contains: [water 19]}, days_per_unit: 3}
    - {id: filters, match: {group: [Фільтри]}, days_per_unit: 90}
  remind_days_before: 2
  expire_days: 10
  actions:
    - task: {title: "Offer {{ product.title }} to {{ client.title }}: runs out {{ product.runs_out }}"}
"""

EXTRA = "messaging: {sms: {provider: log}, quiet_hours: \"21:00-09:00\", workdays_only: false}\n"


def bought(w, client: str, days_ago: float, lines: list[tuple[str, str, str, float]], *, system: str = "bitrix24",
           cp: str | None = None) -> str:
    """A purchase with product lines ``(article, name, group, quantity)``: a won deal, or a 1C sale of ``cp``."""
    if system == "bitrix24":
        key = w.deal(client, days_ago, amount=100.0)
    else:
        i = w._id()
        key = f"onec:document:s{i}"
        w.store.write([d.Document(key, "onec", f"s{i}", d.DocumentType.SALE, NOW - timedelta(days=days_ago), cp, amount=100.0)])
    w.store.write([d.ProductLines(key, system, tuple(d.ProductLine(n, article=a, name=nm, group=g, quantity=q)
                                                     for n, (a, nm, g, q) in enumerate(lines, start=1)))])
    return key


def titles(sink) -> list[str]:
    return sorted(a.payload["title"] for a in sink.done if a.type == "task")


def test_five_bottles_bought_before_a_month_end_are_remembered_two_days_before_they_run_out_in_the_next_month(tmp_path):
    w = world(tmp_path, RULE)
    c = w.company(1)
    bought(w, c, 3, [("", "Water 19 l Karpatska", "", 5)])  # 20 November: 15 days of water
    _, sink = w.run()
    assert sink.done == []
    _, sink = w.run(NOW + timedelta(days=9))  # 2 December: not yet
    assert sink.done == []
    _, sink = w.run(NOW + timedelta(days=10))  # 3 December, two days before 5 December
    assert titles(sink) == ["Offer Water 19 l to Client 1: runs out 2026-12-05"]
    _, sink = w.run(NOW + timedelta(days=11))
    assert sink.done == []  # once


def test_a_new_purchase_of_the_product_cancels_the_reminder_not_yet_sent_and_closes_its_task(tmp_path):
    w = world(tmp_path, RULE + """    - sms: {text: "Your water runs out on {{ product.runs_out }}. Order more?"}
""", extra=EXTRA)
    c = w.company(1, phones=("+380501234567",))
    bought(w, c, 3, [("W-19", "Вода 19 л", "Вода", 5)])
    late = datetime(2026, 12, 3, 22, 0, tzinfo=KYIV)  # quiet hours: the SMS waits for the morning
    plan, sink = w.run(late)
    assert titles(sink) and [a.type for a in plan.new_actions] == ["task", "sms"]
    sms_key = next(a.key for a in plan.new_actions if a.type == "sms")
    assert Journal(w.store).states_for([sms_key])[sms_key] == "planned"
    bought(w, c, -10.05, [("W-19", "Вода 19 л", "Вода", 6)])  # that night the client orders again
    plan, sink = w.run(late + timedelta(hours=2))
    assert Journal(w.store).states_for([sms_key])[sms_key] == "cancelled"
    assert [(x.rule, x.episode.rsplit(":", 1)[1]) for x in plan.cleared] == [("replenish", "water@2026-11-20")]
    assert sink.done == []  # the reminder of the new purchase is weeks away


def test_a_purchase_in_both_systems_the_same_day_counts_once_and_groups_match_1c_lines(tmp_path):
    w = world(tmp_path, RULE)
    c = w.company(1)
    cp = link_1c(w, c)
    bought(w, c, 10, [("", "Water 19 l", "", 4)])  # the deal in the CRM ...
    bought(w, c, 10, [("W-19", "Вода питна 19 л", "Вода", 4), ("F-10", "Картридж", "Фільтри", 1)], system="onec", cp=cp)  # ... its sale
    _, sink = w.run(NOW + timedelta(days=0))  # 13 November + 12 days = 25 November: reminded on 23 November
    assert titles(sink) == ["Offer Water 19 l to Client 1: runs out 2026-11-25"]
    _, sink = w.run(NOW + timedelta(days=78))  # the cartridge: 13 November + 90 days, two days before
    assert titles(sink) == ["Offer filters to Client 1: runs out 2027-02-11"]


def test_reminders_stop_when_the_run_out_date_passed_long_ago(tmp_path):
    w = world(tmp_path, RULE)
    c = w.company(1)
    bought(w, c, 60, [("W-19", "Water", "", 5)])  # ran out 45 days ago
    plan, sink = w.run()
    assert sink.done == [] and plan.rules[0].findings == 0
    other = w.company(2)
    bought(w, other, 14, [("W-19", "Water", "", 5)])  # ran out yesterday: still worth a reminder
    _, sink = w.run()
    assert len(titles(sink)) == 1
    i18n.use("en")
    try:
        plan, _ = w.run(NOW + timedelta(days=12))
    finally:
        i18n.use("uk")
    assert [x.reason for x in plan.cleared] == ["it ran out on 24.11.2026 and nothing was bought since: reminders stop"]


def test_lines_of_lost_deals_and_unmatched_products_never_count(tmp_path):
    w = world(tmp_path, RULE)
    c = w.company(1)
    key = w.deal(c, 13, outcome="lost")
    w.store.write([d.ProductLines(key, "bitrix24", (d.ProductLine(1, name="Water 19 l", quantity=5),))])
    bought(w, c, 13, [("", "Coffee beans", "", 5)])
    plan, sink = w.run()
    assert sink.done == [] and plan.rules[0].findings == 0
