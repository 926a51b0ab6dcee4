"""Plan time and peak memory for a big store: 100k clients / 2M activities (defaults).

    python bench/rules.py [--clients 100000] [--activities 2000000] [--purchases 300000] [--db /tmp/bench-rules.db]

Fills an SQLite store directly (bulk inserts, not timed), then times what ``connector plan``
does after sync: loading the rule snapshot and planning the four core rules. Prints wall time
and peak memory (ru_maxrss of the whole process, filling included).

Then the ``rfm`` rule over the same store, with purchases topped up to ``--purchases`` by 1C sales
of counterparties linked to the CRM clients (so every client buys in both systems): its planning
on the first run (every client's fields empty: every client gets a write) and in a steady cycle
(the fields hold what the rule computes; 1% of clients bought since), and what it adds to planning
the core rules.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import bindparam, func, select, update

from connector import evidence
from connector.calendar import BusinessCalendar
from connector.config import load_settings
from connector.journal import Journal
from connector.plan import Planner
from connector.snapshot import load_snapshot
from connector.store import Store, activities, clients, deal_clients, deals, documents, invoices, links, managers

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

CONFIG = """
timezone: Europe/Kyiv
store: sqlite:///{db}
bitrix24: {{webhook_url: "http://127.0.0.1:1/rest/1/benchsecret/"}}
people: {{supervisor: 1}}
safety: {{max_actions_per_run: 1000000, max_share: 1.0}}
rules:
  - {{name: forgotten, type: forgotten, inactive_days: 60, actions: [{{task: {{title: "No contact: {{{{ client.title }}}}", deadline: 3 workdays}}}}]}}
  - {{name: release, type: release, after: forgotten, grace_days: 14, reassign: {{to: [7, 9]}}, actions: [{{notify: [supervisor]}}]}}
  - name: lost
    type: lost
    min_purchases: 2
    after_days: 180
    cadence: {{field: UF_CRM_TEMPERATURE, days: {{warm: 14, cold: 30}}, default_days: 30}}
    actions: [{{task: {{title: "Win back: {{{{ client.title }}}}", deadline: 1 workdays}}}}]
  - {{name: unpaid, type: unpaid, overdue_days: 3, actions: [{{task: {{title: "Unpaid: {{{{ invoice.title }}}}", deadline: 1 workdays}}}}]}}
  - {{name: rfm, type: rfm, fields: {{score: UF_CRM_RFM_SCORE, segment: UF_CRM_RFM_SEGMENT}}}}
"""
CORE = {"forgotten", "release", "lost", "unpaid"}


def fill(store: Store, n_clients: int, n_acts: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    t0 = time.monotonic()
    with store.tx() as conn:
        conn.execute(managers.insert(), [{"key": f"bitrix24:user:{i}", "system": "bitrix24", "source_id": str(i), "name": f"M{i}",
                                          "active": True, "deleted": False} for i in range(1, 41)])
    batch = 20000
    for start in range(0, n_clients, batch):
        rows, drows, dc, inv = [], [], [], []
        for i in range(start, min(n_clients, start + batch)):
            rows.append({"key": f"bitrix24:company:{i}", "system": "bitrix24", "source_id": str(i), "kind": "company", "title": f"Company {i}",
                         "responsible_key": f"bitrix24:user:{2 + i % 38}", "fields": {"UF_CRM_TEMPERATURE": rng.choice(["warm", "cold"])},
                         "created_at": NOW - timedelta(days=900), "deleted": False, "phones": [], "emails": []})
            for j in range(rng.randint(0, 3)):
                dk = f"bitrix24:deal:{i}_{j}"
                closed = NOW - timedelta(days=rng.uniform(1, 700))
                drows.append({"key": dk, "system": "bitrix24", "source_id": f"{i}_{j}", "title": "d", "outcome": rng.choice(["won", "won", "lost", "open"]),
                              "amount": 100.0, "created_at": closed - timedelta(days=10), "closed_at": closed, "deleted": False})
                dc.append({"deal_key": dk, "client_key": f"bitrix24:company:{i}"})
            if rng.random() < 0.1:
                inv.append({"key": f"bitrix24:invoice:{i}", "system": "bitrix24", "source_id": str(i), "title": f"Invoice {i}",
                            "client_key": f"bitrix24:company:{i}", "amount": 500.0, "outcome": rng.choice(["won", "open"]),
                            "due_date": (NOW - timedelta(days=rng.uniform(-20, 40))).date(), "deleted": False})
        with store.tx() as conn:
            conn.execute(clients.insert(), rows)
            if drows:
                conn.execute(deals.insert(), drows)
                conn.execute(deal_clients.insert(), dc)
            if inv:
                conn.execute(invoices.insert(), inv)
    kinds = ["call", "call", "email", "meeting", "comment"]
    for start in range(0, n_acts, 50000):
        rows = []
        for a in range(start, min(n_acts, start + 50000)):
            owner = rng.randrange(n_clients)
            # one client in ten went quiet 70+ days ago: the forgotten rule has work to do
            at = NOW - timedelta(days=(70 if owner % 10 == 0 else 0) + rng.expovariate(1 / 60))
            rows.append({"key": f"bitrix24:activity:{a}", "owner_key": f"bitrix24:company:{owner}", "system": "bitrix24",
                         "source_id": str(a), "kind": rng.choice(kinds), "completed": rng.random() < 0.9, "happened_at": at, "deadline": at,
                         "deleted": False})
        with store.tx() as conn:
            conn.execute(activities.insert(), rows)
    print(f"filled {n_clients} clients / {n_acts} activities in {time.monotonic() - t0:.1f} s (not part of the figures)")


def fill_purchases(store: Store, n_clients: int, target: int, seed: int = 2) -> int:
    """Top purchases up to ``target`` with posted 1C sales of counterparties linked to the CRM clients."""
    rng = random.Random(seed)
    with store.tx() as conn:
        have = conn.execute(select(func.count()).select_from(deals).where(deals.c.outcome == "won")).scalar_one()
        have += conn.execute(select(func.count()).select_from(invoices).where(invoices.c.outcome == "won")).scalar_one()
    for start in range(0, n_clients, 20000):
        cps, lk = [], []
        for i in range(start, min(n_clients, start + 20000)):
            cps.append({"key": f"onec:counterparty:{i}", "system": "onec", "source_id": str(i), "kind": "company",
                        "title": f"Counterparty {i}", "deleted": False, "phones": [], "emails": []})
            lk.append({"foreign_key": f"onec:counterparty:{i}", "client_key": f"bitrix24:company:{i}", "method": "tax_id"})
        with store.tx() as conn:
            conn.execute(clients.insert(), cps)
            conn.execute(links.insert(), lk)
    sales = max(0, target - have)
    for start in range(0, sales, 50000):
        rows = []
        for n in range(start, min(sales, start + 50000)):
            rows.append({"key": f"onec:document:s{n}", "system": "onec", "source_id": f"s{n}", "doc_type": "sale",
                         "date": NOW - timedelta(days=rng.uniform(1, 700)), "client_key": f"onec:counterparty:{rng.randrange(n_clients)}",
                         "amount": float(rng.randint(1, 200) * 50), "currency": "UAH", "posted": True, "deleted": False})
        with store.tx() as conn:
            conn.execute(documents.insert(), rows)
    return have + sales


def settle_rfm(settings, store: Store) -> None:
    """Write what the rfm rule computes into every client's fields, as after its first run and the
    sync that reads them back: a steady cycle's starting point."""
    from connector.rules import rfm

    rule = next(r for r in settings.rules if r.type == "rfm")
    with load_snapshot(settings, store, NOW) as snap:
        res = rfm.compute(rule, snap)
        scored, values = res.segments(), dict(zip(res.keys, res.score, strict=True))
    with store.tx() as conn:
        rows = conn.execute(select(clients.c.key, clients.c.fields).where(clients.c.system == "bitrix24")).all()
        batch = [{"k": key, "f": {**(fields or {}), rule.fields.score: values[key], rule.fields.segment: scored[key]}}
                 for key, fields in rows if key in scored]
        conn.execute(update(clients).where(clients.c.key == bindparam("k")).values(fields=bindparam("f")), batch)
        store.mark_evidence_dirty(conn)


def buy_again(store: Store, n_clients: int, share: float, seed: int) -> int:
    """``share`` of the clients buy once more an hour before NOW (a cycle's new purchases)."""
    rng = random.Random(seed)
    buyers = rng.sample(range(n_clients), int(n_clients * share))
    with store.tx() as conn:
        conn.execute(documents.insert(), [{"key": f"onec:document:again{seed}-{n}", "system": "onec", "source_id": f"again{seed}-{n}",
                                           "doc_type": "sale", "date": NOW - timedelta(hours=1), "client_key": f"onec:counterparty:{i}",
                                           "amount": 5000.0, "currency": "UAH", "posted": True, "deleted": False}
                                          for n, i in enumerate(buyers)])
        store.mark_evidence_dirty(conn)
    return len(buyers)


def timed_plan(settings, store: Store, cal, only: set[str]) -> tuple[float, float, object]:
    """``(snapshot seconds, plan seconds, plan)`` for the rules in ``only``."""
    t0 = time.monotonic()
    snap = load_snapshot(settings, store, NOW)
    t1 = time.monotonic()
    plan = Planner(settings, snap, cal, journal=Journal(store)).plan(force=True, only=only)
    t2 = time.monotonic()
    snap.close()
    return t1 - t0, t2 - t1, plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100_000)
    ap.add_argument("--activities", type=int, default=2_000_000)
    ap.add_argument("--purchases", type=int, default=300_000)
    ap.add_argument("--db", default=None)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    db = Path(args.db or Path(tmp.name) / "bench.db")
    fresh = not db.exists()
    cfg = Path(tmp.name) / "bench.yaml"
    cfg.write_text(CONFIG.format(db=db), encoding="utf-8")
    settings = load_settings(cfg)
    store = Store(settings.store)
    if fresh:
        fill(store, args.clients, args.activities)
    cal = BusinessCalendar(settings.calendar, settings.timezone)
    t0 = time.monotonic()
    rebuilt = evidence.refresh(store, "bitrix24")  # after a sync that changed anything (once, not per plan)
    t1 = time.monotonic()
    with load_snapshot(settings, store, NOW) as snap:
        plan = Planner(settings, snap, cal, journal=Journal(store)).plan(force=True, only=CORE)
        n_clients = snap.scope_count(None)
    t2 = time.monotonic()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"clients={n_clients} activities={args.activities}")
    print(f"evidence_seconds={t1 - t0:.2f} (rebuilt={rebuilt}) plan_seconds={t2 - t1:.2f} total_seconds={t2 - t0:.2f}")
    print(f"peak_memory_max_rss_mb={rss:.0f}")
    for r in plan.rules:
        print(f"rule={r.rule} scope={r.scope} findings={r.findings} actions={len(r.actions)}")

    # ---- rfm over the same store, purchases in both systems; evidence derived as after a sync
    if fresh:
        purchases = fill_purchases(store, args.clients, args.purchases)
        print(f"purchases={purchases} (won deals, paid invoices, 1C sales of linked counterparties)")
        with store.tx() as conn:
            store.mark_evidence_dirty(conn)
    t0 = time.monotonic()
    evidence.refresh(store, "bitrix24", now=NOW)
    plain = time.monotonic() - t0
    with store.tx() as conn:
        store.mark_evidence_dirty(conn)
    t0 = time.monotonic()
    evidence.refresh(store, "bitrix24", rfm=evidence.RfmSpec(settings.timezone, "UAH", 365), now=NOW)
    with_rfm = time.monotonic() - t0
    with store.tx() as conn:
        store.mark_evidence_dirty(conn, purchases=False)
    t0 = time.monotonic()
    evidence.refresh(store, "bitrix24", rfm=evidence.RfmSpec(settings.timezone, "UAH", 365), now=NOW)
    print(f"evidence derivation after a sync: {plain:.2f} s; with the rfm purchase days {with_rfm:.2f} s; "
          f"with them after a sync of activities only (kept) {time.monotonic() - t0:.2f} s")
    snap_s, first_s, first = timed_plan(settings, store, cal, {"rfm"})
    r = first.rules[0]
    print(f"rfm first run: snapshot_seconds={snap_s:.2f} plan_seconds={first_s:.2f} findings={r.findings} actions={len(r.actions)}")
    print(f"rfm {r.notes[0]}")
    if not fresh:
        return
    settle_rfm(settings, store)
    for share, seed in ((0.001, 11), (0.009, 12)):  # a 15-minute cycle's buyers, then a busy day's (1% in all)
        bought = buy_again(store, args.clients, share, seed)
        t0 = time.monotonic()
        evidence.refresh(store, "bitrix24", rfm=evidence.RfmSpec(settings.timezone, "UAH", 365), now=NOW)
        derive_s = time.monotonic() - t0
        c0 = time.process_time()
        _, rfm_s, steady = timed_plan(settings, store, cal, {"rfm"})
        r = steady.rules[0]
        print(f"rfm steady cycle after {bought} new purchases: plan_seconds={rfm_s:.2f} (cpu {time.process_time() - c0:.2f}) "
              f"findings={r.findings} actions={len(r.actions)}; evidence derivation before it {derive_s:.2f} s")
    print(f"peak_memory_max_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
