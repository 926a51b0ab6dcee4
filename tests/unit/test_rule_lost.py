from datetime import timedelta

from tests.unit.builders import NOW, world

RULE = """
- name: lost
  type: lost
  clients: companies
  min_purchases: 2
  after_days: 180
  cadence: {field: UF_CRM_TEMPERATURE, days: {warm: 14, cold: 30}, default_days: 30}
  actions:
    - task: {title: "Win back: {{ client.title }} #{{ callback_number }}", deadline: 1 workdays}
"""


def test_lost_needs_min_purchases_and_silence(tmp_path):
    w = world(tmp_path, RULE)
    once = w.company(1)
    w.deal(once, 200)
    twice = w.company(2, fields={"UF_CRM_TEMPERATURE": "warm"})
    w.deal(twice, 200)
    w.deal(twice, 260)
    recent = w.company(3)
    w.deal(recent, 20)
    w.deal(recent, 300)
    lost_deal = w.company(4)
    w.deal(lost_deal, 250, "lost")
    w.deal(lost_deal, 300, "lost")
    acts = w.plan().actions
    assert [a.subject_key for a in acts] == [twice]
    assert "покупок: 2, остання — успішна угода" in acts[0].reason and "кожні 14 дн. (warm)" in acts[0].reason


def test_warm_callbacks_repeat_every_14_days_and_cold_every_30(tmp_path):
    w = world(tmp_path, RULE)
    warm = w.company(1, fields={"UF_CRM_TEMPERATURE": "warm"})
    cold = w.company(2, fields={"UF_CRM_TEMPERATURE": "Cold"})
    for c in (warm, cold):
        w.deal(c, 200)
        w.deal(c, 230)
    _, sink = w.run(NOW)
    assert sorted(a.payload["title"] for a in sink.done) == ["Win back: Client 1 #1", "Win back: Client 2 #1"]
    _, sink = w.run(NOW + timedelta(days=1))
    assert sink.done == []
    _, sink = w.run(NOW + timedelta(days=16))
    assert [a.payload["title"] for a in sink.done] == ["Win back: Client 1 #2"]
    _, sink = w.run(NOW + timedelta(days=31))
    assert sorted(a.payload["title"] for a in sink.done) == ["Win back: Client 1 #3", "Win back: Client 2 #2"]


def test_new_purchase_returns_client_to_active_and_stops_callbacks(tmp_path):
    w = world(tmp_path, RULE)
    c = w.company(1, fields={"UF_CRM_TEMPERATURE": "warm"})
    w.deal(c, 200)
    w.deal(c, 230)
    w.run(NOW)
    w.deal(c, -3)  # bought again three days after NOW
    _, sink = w.run(NOW + timedelta(days=16))
    assert sink.done == []


def test_auto_threshold_uses_the_clients_own_rhythm(tmp_path):
    w = world(tmp_path, RULE.replace("after_days: 180", "after_days: auto\n  auto_factor: 2\n  auto_min_days: 30\n  auto_max_days: 365"))
    monthly = w.company(1)
    for d in (70, 100, 130, 160):  # every 30 days, silent for 70 -> lost after 60
        w.deal(monthly, d)
    yearly = w.company(2)
    for d in (70, 435):  # once a year -> threshold clamps to 365
        w.deal(yearly, d)
    assert [a.subject_key for a in w.plan().actions] == [monthly]


def test_one_purchase_per_day_across_sources(tmp_path):
    w = world(tmp_path, RULE)
    c = w.company(1)
    w.deal(c, 200)
    w.deal(c, 200)  # the deal and a second record of the same day are one purchase
    assert w.plan().actions == []


def _purchases_both_ways(w, clients, now):
    """Purchases and the candidates' summary from the stored derivation and from the live join."""
    from sqlalchemy import select

    from connector.evidence import Evidence

    with w.snapshot(now) as snap:
        ev = Evidence(snap.conn, "bitrix24", now)
        assert ev.buys is not None  # the derivation is fresh: it is what the rule reads
        stored = ({k: [(p.key, p.at) for p in v] for k, v in ev.purchases(clients).items()},
                  sorted(snap.conn.execute(select(ev.purchase_summary_q())).all()))
        ev.buys = None
        live = ({k: [(p.key, p.at) for p in v] for k, v in ev.purchases(clients).items()},
                sorted(snap.conn.execute(select(ev.purchase_summary_q())).all()))
    return stored, live


def test_derived_purchases_equal_the_live_join_before_and_after_now(tmp_path):
    w = world(tmp_path, RULE)
    a = w.company(1)
    b = w.company(2)
    for days in (400, 200, 30, -20):  # -20: dated after NOW (a simulation later sees it, one at NOW does not)
        w.deal(a, days)
    w.deal(b, 100)
    w.deal(b, 100, "lost")
    w.invoice(a, 50, paid=True)
    keys = [a, b]
    for now in (NOW - timedelta(days=150), NOW, NOW + timedelta(days=30)):
        stored, live = _purchases_both_ways(w, keys, now)
        assert stored == live
    early, _ = _purchases_both_ways(w, keys, NOW - timedelta(days=150))
    late, _ = _purchases_both_ways(w, keys, NOW + timedelta(days=30))
    assert len(early[0][a]) == 2 and len(late[0][a]) == 5  # 400 and 200 days ago; every deal and the paid invoice


def test_a_store_from_before_the_derivation_derives_purchases_on_its_next_evaluation(tmp_path):
    from sqlalchemy import select

    from connector.store import Store, _m10, ev_buy, kv

    w = world(tmp_path, RULE)
    c = w.company(1)
    w.deal(c, 200)
    w.deal(c, 260)
    assert [a.subject_key for a in w.plan().actions] == [c]
    with w.store.tx() as conn:  # as a store made before ev_buy: the table new and empty, the flags of then
        conn.execute(ev_buy.delete())
        _m10(conn)
        assert conn.execute(select(kv.c.value).where(kv.c.name == Store.PURCHASES_DIRTY)).first() is None
    assert [a.subject_key for a in w.plan().actions] == [c]
    with w.store.tx() as conn:
        assert len(conn.execute(select(ev_buy)).all()) == 2
