"""Deriving the evidence after a sync that changed a little: the touched clients alone against everything.

    python bench/evidence.py --db /tmp/bench-rules.db [--share 0.01] [--seed 7]

Works on a copy of a store filled by ``bench/rules.py`` (100k clients, 2M activities by default;
the original is never written). Writes a cycle's worth of changes the way a source does
(``Store.apply``: ``share`` of the companies edited, as many deals changed, ten times as many
activities new or moved to another client), then times :func:`connector.evidence.refresh` twice
on the same changes: as it runs (the clients of the owners the writes touched) and whole (what
every changing cycle cost before). The two derivations are compared row by row.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select

from connector import domain as d
from connector import evidence
from connector.store import Store, activities, clients, deal_clients, deals, ev_buy, ev_contact, ev_owner, ev_stale, kv

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def digest(store: Store) -> tuple[str, int]:
    """A checksum of the three derived tables, and their rows."""
    h, n = hashlib.sha256(), 0
    with store.tx() as conn:
        for t in (ev_owner, ev_contact, ev_buy):
            for r in conn.execute(select(t).order_by(*t.c)):
                h.update(repr(tuple(r)).encode())
                n += 1
    return h.hexdigest()[:16], n


def changes(store: Store, share: float, rng: random.Random) -> list[d.Batch]:
    """A cycle's changes as a source would write them, read back from the store and edited."""
    with store.tx() as conn:
        companies = [k for (k,) in conn.execute(select(clients.c.key).where(clients.c.kind == "company", clients.c.system == "bitrix24"))]
        n = max(1, int(len(companies) * share))
        picked = rng.sample(companies, n)
        rows = conn.execute(select(clients).where(clients.c.key.in_(picked[:500]))).all()
        deal_rows = conn.execute(select(deals).limit(n)).all()
        acts = conn.execute(select(activities).where(activities.c.key.in_(
            select(activities.c.key).order_by(func.random()).limit(5 * n).scalar_subquery()))).all()
        deal_owner = {dk: ck for dk, ck in conn.execute(select(deal_clients.c.deal_key, deal_clients.c.client_key)
                                                        .where(deal_clients.c.deal_key.in_([r.key for r in deal_rows])))}
    batches: list[d.Batch] = []
    edited = [d.Client(r.key, r.system, r.source_id, d.ClientKind(r.kind), (r.title or "") + " (edited)", responsible_key=r.responsible_key,
                       company_key=r.company_key, phones=tuple(r.phones or ()), emails=tuple(r.emails or ()), tax_id=r.tax_id,
                       fields=dict(r.fields or {}), created_at=r.created_at) for r in rows]
    batches.append(d.Batch("company", edited))
    won = [d.Deal(r.key, r.system, r.source_id, r.title or "", (deal_owner.get(r.key) or rng.choice(companies),), outcome=d.Outcome.WON,
                  amount=r.amount or 1000.0, created_at=r.created_at, closed_at=NOW - timedelta(days=rng.randint(1, 30)),
                  modified_at=NOW - timedelta(hours=1)) for r in deal_rows]
    batches.append(d.Batch("deal", won))
    moved = []
    for r in acts:  # moved to another company or completed now: both clients' latest contacts change
        moved.append(d.Activity(r.key, r.system, r.source_id, d.ActivityKind(r.kind), (rng.choice(companies),), True,
                                NOW - timedelta(minutes=rng.randint(1, 600))))
    fresh = [d.Activity(f"bitrix24:activity:9{i:08d}", "bitrix24", f"9{i:08d}", d.ActivityKind.CALL, (rng.choice(companies),), True,
                        NOW - timedelta(minutes=rng.randint(1, 600))) for i in range(5 * n)]
    for i in range(0, len(moved + fresh), 2500):
        batches.append(d.Batch("activity", (moved + fresh)[i : i + 2500]))
    return batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="/tmp/bench-rules.db", help="a store filled by bench/rules.py (copied, never written)")
    ap.add_argument("--share", type=float, default=0.01, help="share of companies edited (deals as many, activities ten times)")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "evidence.db"
        shutil.copyfile(a.db, copy)
        store = Store(f"sqlite:///{copy}")
        t = time.perf_counter()
        evidence.refresh(store, "bitrix24", now=NOW)  # as the store was: derived (once, if the copy was stale)
        with store.tx() as conn:
            store.mark_evidence_dirty(conn)
        evidence.refresh(store, "bitrix24", now=NOW)
        print(f"store: {a.db}; the whole derivation first: {time.perf_counter() - t:.1f} s (not timed below)")
        batches = changes(store, a.share, random.Random(a.seed))
        t = time.perf_counter()
        for b in batches:
            store.apply("bitrix24", b, NOW)
        written = time.perf_counter() - t
        records = sum(len(b.records) for b in batches)
        with store.tx() as conn:
            stale = conn.execute(select(func.count()).select_from(ev_stale)).scalar_one()
            full = conn.execute(select(kv.c.value).where(kv.c.name == Store.EVIDENCE_FULL)).scalar()
        print(f"changes: {records:,} records in {len(batches)} batches, written in {written:.2f} s; owners noted {stale:,}; "
              f"whole derivation pending: {full != '0'}")
        shutil.copyfile(copy, Path(tmp) / "same.db")
        t = time.perf_counter()
        evidence.refresh(store, "bitrix24", now=NOW)
        partial = time.perf_counter() - t
        got = digest(store)
        whole_store = Store(f"sqlite:///{Path(tmp) / 'same.db'}")
        with whole_store.tx() as conn:
            whole_store.mark_evidence_dirty(conn)
        t = time.perf_counter()
        evidence.refresh(whole_store, "bitrix24", now=NOW)
        whole = time.perf_counter() - t
        want = digest(whole_store)
        print(f"derivation after the changes: touched clients {partial:.2f} s, everything {whole:.2f} s "
              f"({whole / max(partial, 1e-9):.0f}x); derived rows {got[1]:,}; identical: {got == want}")
        if got != want:
            sys.exit(1)


if __name__ == "__main__":
    main()
