import itertools
import random
from datetime import timedelta

from sqlalchemy import select, update

from connector import domain as d
from connector import i18n
from connector.config import DEFAULT_RFM_SEGMENTS, RfmRule
from connector.rules import rfm
from connector.store import clients, links
from tests.unit.builders import NOW, world

RFM = """
- name: rfm
  type: rfm
  fields: {score: UF_CRM_RFM_SCORE, segment: UF_CRM_RFM_SEGMENT}
"""

RFM_THRESHOLDS = """
- name: rfm
  type: rfm
  fields: {score: UF_CRM_RFM_SCORE, segment: UF_CRM_RFM_SEGMENT}
  thresholds: {recency_days: [30, 60, 120, 240], frequency: [2, 3, 4, 6], monetary: [1000, 2000, 5000, 10000]}
"""


def written(sink) -> dict[str, dict]:
    return {a.payload["entity"]: a.payload["fields"] for a in sink.done if a.type == "field"}


def sync_back(w, fields: dict[str, dict]) -> None:
    """What the next sync brings: the CRM fields as the connector wrote them."""
    with w.store.tx() as conn:
        for key, values in fields.items():
            have = conn.execute(select(clients.c.fields).where(clients.c.key == key)).scalar_one() or {}
            conn.execute(update(clients).where(clients.c.key == key).values(fields={**have, **values}))


def link_1c(w, client: str, guid: str = "g1") -> str:
    cp = f"onec:counterparty:{guid}"
    w.store.write([d.Client(cp, "onec", guid, d.ClientKind.COMPANY, "1C " + guid, tax_id="123")])
    with w.store.tx() as conn:
        w.store._upsert(conn, links, [{"foreign_key": cp, "client_key": client, "method": "tax_id", "candidates": None,
                                       "updated_at": NOW}], ["foreign_key"])
    return cp


def sale_1c(w, cp: str, days_ago: float, amount: float, currency: str = "UAH") -> None:
    i = w._id()
    w.store.write([d.Document(f"onec:document:s{i}", "onec", f"s{i}", d.DocumentType.SALE, NOW - timedelta(days=days_ago), cp,
                              number=f"РН-{i}", amount=amount, currency=currency)])


# ---------------------------------------------------------------- scoring


def test_quintile_ties_get_one_score_whatever_the_order_of_clients():
    values = [5.0, 1.0, 3.0, 3.0, 10.0, 3.0, 7.0, 1.0]
    scores = dict(zip(values, rfm.quintiles(values), strict=True))
    assert scores == {1.0: 1, 3.0: 3, 5.0: 4, 7.0: 5, 10.0: 5}  # mid-rank: three 3s sit at 2.5..5 of 8
    for _ in range(20):
        shuffled = random.Random(_).sample(values, len(values))
        assert dict(zip(shuffled, rfm.quintiles(shuffled), strict=True)) == scores
    assert rfm.quintiles([2.0] * 9) == [3] * 9  # everyone alike: the middle, not the top
    assert rfm.quintiles([float(i) for i in range(10)]) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_quintiles_with_fewer_than_five_clients_spread_over_one_to_five():
    assert rfm.quintiles([]) == []
    assert rfm.quintiles([42.0]) == [3]
    assert rfm.quintiles([1.0, 9.0]) == [2, 4]
    assert rfm.quintiles([1.0, 5.0, 9.0]) == [1, 3, 5]
    assert rfm.quintiles([1.0, 2.0, 3.0, 4.0]) == [1, 2, 4, 5]


def test_thresholds_score_recency_lower_is_better_and_frequency_higher_is_better():
    cuts = [30, 60, 120, 240]
    assert [rfm.by_thresholds(d_, cuts, lower_is_better=True) for d_ in (0, 30, 31, 60, 120, 240, 241)] == [5, 5, 4, 4, 3, 2, 1]
    assert [rfm.by_thresholds(n, [2, 3, 4, 6]) for n in (0, 1, 2, 3, 4, 5, 6, 40)] == [1, 1, 2, 3, 4, 4, 5, 5]


def test_default_segments_name_every_one_of_the_125_scores():
    rule = RfmRule(name="rfm", type="rfm", fields={"segment": "UF_S"})
    names = {rfm.segment_for(rule, r, f, m) for r, f, m in itertools.product(range(1, 6), repeat=3)}
    assert names == {s["name"] for s in DEFAULT_RFM_SEGMENTS}
    assert rfm.segment_for(rule, 5, 5, 1) == "champions" and rfm.segment_for(rule, 1, 5, 5) == "can't lose"
    assert rfm.segment_for(rule, 5, 1, 1) == "new" and rfm.segment_for(rule, 1, 1, 5) == "lost"


def test_segments_and_scores_from_yaml_override_the_defaults(tmp_path):
    w = world(tmp_path, """
- name: rfm
  type: rfm
  fields: {segment: UF_S}
  segments: [{name: vip, r: "4-5", f: 5}, {name: the rest, r: "*"}]
""")
    rule = w.settings.rules[0]
    assert rfm.segment_for(rule, 4, 5, 1) == "vip" and rfm.segment_for(rule, 3, 5, 5) == "the rest"


# ---------------------------------------------------------------- purchases from every source


def test_a_client_buying_in_both_systems_counts_a_day_once_and_every_day(tmp_path):
    w = world(tmp_path, RFM_THRESHOLDS)
    both = w.company(1)
    cp = link_1c(w, both)
    w.deal(both, 10, amount=1000.0)
    sale_1c(w, cp, 10, 1000.0)  # the same order in 1C: one purchase, not two
    sale_1c(w, cp, 40, 500.0)  # bought in 1C only
    w.deal(both, 40.2, amount=300.0)  # and a smaller deal the same day: the larger system's day counts
    w.deal(both, 500, amount=9000.0)  # outside the window: recency history, not frequency or money
    crm_only = w.company(2)
    w.deal(crm_only, 3, amount=200.0)
    w.deal(crm_only, 3.1, amount=300.0)  # two deals on one day in one system are both money
    with w.snapshot() as snap:
        res = rfm.compute(w.settings.rules[0], snap)
        b, c = res.scored[both], res.scored[crm_only]
    assert (b.recency_days, b.frequency, b.monetary) == (10, 2, 1500.0)
    assert (c.recency_days, c.frequency, c.monetary) == (3, 1, 500.0)
    assert b.score == "R5F2M2" and c.score == "R5F1M1"


def test_money_in_another_currency_needs_a_rate_and_is_noted_without_one(tmp_path):
    w = world(tmp_path, RFM_THRESHOLDS.replace("  thresholds:", "  rates: {USD: 40}\n  thresholds:"))
    c = w.company(1)
    cp = link_1c(w, c)
    sale_1c(w, cp, 5, 100.0, "USD")
    sale_1c(w, cp, 6, 100.0, "EUR")
    with w.snapshot() as snap:
        s = rfm.compute(w.settings.rules[0], snap).scored[c]
        notes = rfm.evaluate(w.settings.rules[0], snap, None).notes
    assert (s.frequency, s.monetary, s.unpriced) == (2, 4000.0, 1)
    assert any("1" in n for n in notes[1:])


def test_a_client_who_never_bought_gets_the_no_purchase_segment_and_an_empty_score(tmp_path):
    w = world(tmp_path, RFM)
    never = w.company(1)
    buyer = w.company(2)
    w.deal(buyer, 5)
    _, sink = w.run()
    assert written(sink)[never] == {"UF_CRM_RFM_SCORE": "", "UF_CRM_RFM_SEGMENT": "prospects"}
    assert written(sink)[buyer] == {"UF_CRM_RFM_SCORE": "R3F3M3", "UF_CRM_RFM_SEGMENT": "loyal"}


# ---------------------------------------------------------------- writes only what changed, once


def test_a_segment_change_is_written_once_and_unchanged_segments_are_not_written(tmp_path):
    w = world(tmp_path, RFM_THRESHOLDS)
    keys = [w.company(i) for i in range(1, 7)]
    for n, c in enumerate(keys):
        for j in range(n + 1):
            w.deal(c, 5 + 50 * j, amount=800.0)
    _, sink = w.run()
    first = written(sink)
    assert set(first) == set(keys)
    _, sink = w.run()
    assert written(sink) == {}  # the CRM has not been read back yet: the same keys, nothing twice
    sync_back(w, first)
    plan, sink = w.run()
    assert written(sink) == {} and plan.rules[0].findings == 0
    w.deal(keys[0], 1, amount=20000.0)  # client 1 buys big: only its values change
    _, sink = w.run()
    assert list(written(sink)) == [keys[0]]
    assert written(sink)[keys[0]]["UF_CRM_RFM_SCORE"] == "R5F2M5"
    _, sink = w.run()
    assert written(sink) == {}
    sync_back(w, {keys[0]: {"UF_CRM_RFM_SCORE": "R5F2M5", "UF_CRM_RFM_SEGMENT": "new"}})
    _, sink = w.run()
    assert written(sink) == {}


def test_a_value_that_comes_back_later_is_written_again(tmp_path):
    w = world(tmp_path, RFM_THRESHOLDS)
    c = w.company(1)
    w.deal(c, 100, amount=500.0)
    _, sink = w.run()
    a = written(sink)[c]
    sync_back(w, {c: a})
    w.deal(c, -1, amount=500.0)  # a purchase the day after: recency jumps
    _, sink = w.run(NOW + timedelta(days=2))
    b = written(sink)[c]
    assert b != a
    sync_back(w, {c: b})
    _, sink = w.run(NOW + timedelta(days=120))  # months later the client looks as it did at first
    again = written(sink)[c]
    assert again["UF_CRM_RFM_SCORE"][0:2] == a["UF_CRM_RFM_SCORE"][0:2] and len(sink.done) == 1


def test_a_first_run_is_held_by_the_safety_brake_unless_forced(tmp_path):
    w = world(tmp_path, RFM)
    w.settings.safety.max_share = 0.25
    for i in range(1, 25):
        w.deal(w.company(i), i)
    plan = w.plan()
    assert plan.rules[0].refused and "max_share" in plan.rules[0].refused
    assert not w.plan(force=True).rules[0].refused


# ---------------------------------------------------------------- other rules read this cycle's segments


def test_where_rfm_gives_other_rules_this_cycles_segments(tmp_path):
    w = world(tmp_path, RFM_THRESHOLDS + """
- name: forgotten-champions
  type: forgotten
  inactive_days: 30
  contact_kinds: [call]
  where: {rfm: [champions]}
  actions: [{task: {title: "Call {{ client.title }}"}}]
""")
    champion = w.company(1, created_days=400)
    for j in range(6):
        w.deal(champion, 2 + j * 10, amount=3000.0)
    new = w.company(2, created_days=400)
    w.deal(new, 3, amount=100.0)
    w.activity(champion, 50)
    w.activity(new, 50)
    plan = w.plan()
    forgotten = next(r for r in plan.rules if r.rule == "forgotten-champions")
    assert [a.subject_key for a in forgotten.actions] == [champion]  # the CRM field is still empty: segments are this cycle's


def test_plan_notes_and_counts_give_clients_per_segment(tmp_path):
    try:
        w = world(tmp_path, RFM_THRESHOLDS, extra="language: en\n")
        for i in range(1, 4):
            w.deal(w.company(i), 3, amount=100.0)
        w.company(9)
        plan = w.plan()
        assert plan.rules[0].notes[0] == "segments: new 3, prospects 1"
        with w.snapshot() as snap:
            assert rfm.counts(snap) == {"new": 3, "prospects": 1}
        assert rfm.segment_counts(w.settings, w.store, NOW) == {"new": 3, "prospects": 1}
    finally:
        i18n.use("uk")


def test_purchase_days_derived_after_a_sync_give_what_the_evaluation_computes_itself(tmp_path):
    from connector import evidence
    from connector.store import ev_purchase

    w = world(tmp_path, RFM_THRESHOLDS)
    c = w.company(1)
    cp = link_1c(w, c)
    w.deal(c, 10, amount=1000.0)
    sale_1c(w, cp, 10, 1000.0)
    w.deal(w.company(2), 3, amount=300.0)
    with w.snapshot() as snap:  # no rfm day table stored: a temporary copy
        computed = {k: (s.recency_days, s.frequency, s.monetary) for k, s in rfm.compute(w.settings.rules[0], snap).scored.items()}
    with w.store.tx() as conn:
        w.store.mark_evidence_dirty(conn)
    spec = evidence.RfmSpec("Europe/Kyiv", "UAH", 365)
    assert evidence.refresh(w.store, "bitrix24", rfm=spec)
    with w.store.tx() as conn:
        assert conn.execute(select(ev_purchase.c.client_key, ev_purchase.c.currency, ev_purchase.c.amount)
                            .order_by(ev_purchase.c.client_key)).all() == [("bitrix24:company:1", "UAH", 1000.0),
                                                                           ("bitrix24:company:2", "UAH", 300.0)]
    assert not evidence.refresh(w.store, "bitrix24", rfm=spec)  # nothing changed: kept
    with w.snapshot() as snap:
        stored = {k: (s.recency_days, s.frequency, s.monetary) for k, s in rfm.compute(w.settings.rules[0], snap).scored.items()}
    assert stored == computed


def test_rules_that_filter_in_python_read_the_same_segments(tmp_path):
    w = world(tmp_path, RFM_THRESHOLDS + """
- name: unpaid-prospects
  type: unpaid
  overdue_days: 3
  where: {rfm: [prospects]}
  actions: [{task: {title: "Unpaid: {{ invoice.title }}"}}]
""")
    prospect = w.company(1)
    buyer = w.company(2)
    w.deal(buyer, 5)
    w.invoice(prospect, 10)
    w.invoice(buyer, 10)
    unpaid = next(r for r in w.plan().rules if r.rule == "unpaid-prospects")
    assert [a.client_key for a in unpaid.actions] == [prospect]


def test_the_aggregate_derived_for_todays_window_gives_what_the_evaluation_computes_itself(tmp_path):
    from datetime import UTC, datetime

    from connector import evidence
    from connector.store import ev_purchase, ev_rfm

    w = world(tmp_path, RFM_THRESHOLDS.replace("  fields:", "  rates: {USD: 40}\n  fields:"))
    c = w.company(1)
    cp = link_1c(w, c)
    w.deal(c, 10, amount=1000.0)
    sale_1c(w, cp, 10, 1000.0)
    sale_1c(w, cp, 20, 10.0, "USD")
    w.deal(w.company(2), 3, amount=300.0)
    real = datetime.now(UTC)  # the derivation is as of the real clock: evaluate at it to use it
    with w.snapshot(real) as snap:
        computed = rfm.compute(w.settings.rules[0], snap).scored
    with w.store.tx() as conn:
        w.store.mark_evidence_dirty(conn)
    assert evidence.refresh(w.store, "bitrix24", rfm=evidence.RfmSpec("Europe/Kyiv", "UAH", 365, (("USD", 40.0),)))
    with w.store.tx() as conn:
        assert len(conn.execute(select(ev_rfm)).all()) == 2
        conn.execute(ev_purchase.delete())  # so only the derived aggregate can give the answer
    with w.snapshot(real) as snap:
        stored = rfm.compute(w.settings.rules[0], snap).scored
    assert stored == computed and computed[c].recency_days is not None  # the slow path would find nothing bought


def test_purchase_days_are_rebuilt_when_purchases_change_and_kept_when_only_activities_do(tmp_path):
    from datetime import UTC, datetime

    from connector import evidence
    from connector.store import ev_purchase

    w = world(tmp_path, RFM)
    c = w.company(1)
    w.deal(c, 10, amount=1000.0)
    spec = evidence.RfmSpec("Europe/Kyiv", "UAH", 365)
    now = datetime.now(UTC)
    assert evidence.refresh(w.store, "bitrix24", rfm=spec, now=now)

    def amounts() -> list[float]:
        with w.store.tx() as conn:
            return [a for (a,) in conn.execute(select(ev_purchase.c.amount))]

    with w.store.tx() as conn:
        conn.execute(update(ev_purchase).values(amount=1.0))  # a sentinel: survives only if the days are kept
    w.activity(c, 1)
    assert evidence.refresh(w.store, "bitrix24", rfm=spec, now=now) and amounts() == [1.0]
    w.deal(c, 5, amount=500.0)
    assert evidence.refresh(w.store, "bitrix24", rfm=spec, now=now) and sorted(amounts()) == [500.0, 1000.0]
    assert not evidence.refresh(w.store, "bitrix24", rfm=spec, now=now)
    assert evidence.refresh(w.store, "bitrix24", rfm=spec, now=now + timedelta(days=1))  # the window moved a day
