"""Requests the 1C OData source needs: a first pull of ~10k documents, then cycles after it.

    python bench/onec_pull.py [--companies 8300] [--preset ut11] [--page-size 500] [--changed 25] [--journal both]
                              [--edit amount]

Seeds the loopback OData emulator from the synthetic company (each 1C sale becomes the chain
order -> invoice -> sale -> payment, so ~8.3k companies give ~10k documents) and pulls every
stream through :class:`onec.source.ODataSource`, counting HTTP requests with the connector's
request counter (the emulator's own log must agree). The source keeps its cached ``$metadata``
and cross-stream flags in a kv, as the store's kv does in production. Then, one hour later on the
same clock: a cycle where nothing changed, and a cycle where the amounts (``--edit comment``: the
comments) of ``--changed`` recent documents were corrected. Each is run without a document journal (one window query per document
type) and with one (``onec.objects.journal``: one query for every type).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.config import OneC, OneCOData
from connector.ports import Context, FixedClock
from connector.sandbox import generate
from onec.client import ODataClient
from onec.emulator import OneCSandbox
from onec.emulator.base import JOURNAL
from onec.source import ODataSource


def cycle(src: ODataSource, ctx: Context, cursors: dict[str, str], emulator_log: list) -> tuple[int, int, dict, float]:
    before, logged = ctx.counter("onec").requests, len(emulator_log)
    rows: dict[str, int] = {}
    started = time.monotonic()
    for stream in src.streams():
        for batch in src.pull(stream, cursors.get(stream)):
            rows[stream] = rows.get(stream, 0) + len(batch.records) + len(batch.deleted)
            if batch.cursor is not None:
                cursors[stream] = batch.cursor
    requests = ctx.counter("onec").requests - before
    assert requests == len(emulator_log) - logged, "client and emulator disagree on the request count"
    return requests, sum(rows.values()), rows, time.monotonic() - started


def run(args: argparse.Namespace, journal: bool) -> None:
    co = generate(companies=args.companies)
    sb = OneCSandbox(co, args.preset)
    env = sb.start()
    try:
        docs = sum(len(s.rows) for s in sb.ib.sets.values() if s.kind == "document")
        counterparties = len(sb.ib.sets["Catalog_Контрагенты"].rows)
        print(f"1C base ({args.preset}, {'with journal ' + JOURNAL if journal else 'no document journal'}): {docs} documents, "
              f"{counterparties} counterparty rows, {len(co.managers)} users; page size {args.page_size}")
        clock = FixedClock(co.anchor)
        kv: dict[str, str] = {}
        ctx = Context(clock=clock, kv_get=kv.get, kv_set=kv.__setitem__)
        cfg = OneC(odata=OneCOData(url=env["ONEC_ODATA_URL"], user=env["ONEC_USER"], password=env["ONEC_PASSWORD"],
                                   page_size=args.page_size), preset=args.preset, objects={"journal": JOURNAL} if journal else {})
        cursors: dict[str, str] = {}
        log = sb.odata.requests

        def one_cycle() -> tuple[int, int, dict, float]:
            return cycle(ODataSource(cfg, ctx), ctx, cursors, log)  # a new source per cycle, as sync_all builds it

        n, rows, per, secs = one_cycle()
        print(f"  first pull (full):        {n:5d} requests, {rows:6d} rows {per} in {secs:.1f}s")

        clock.at = co.anchor + timedelta(hours=1)
        n, rows, per, secs = one_cycle()
        print(f"  no-change cycle:          {n:5d} requests, {rows:6d} rows {per} in {secs:.2f}s")

        writer = ODataClient(env["ONEC_ODATA_URL"], env["ONEC_USER"], env["ONEC_PASSWORD"], ctx.counter("bench-writer"))
        names = ODataSource(cfg, ctx).configured
        newest = sorted(((r["Date"], o, r["Ref_Key"], r["СуммаДокумента"]) for _, o in names.doc_objects()
                         for r in sb.ib.sets[o].rows.values()))
        recent = newest[-args.changed:]  # inside the overlap window; older edits wait for the weekly re-read
        for _, obj, ref, amount in recent:
            writer.patch(obj, ref, {"СуммаДокумента": round(amount + 1.0, 2)} if args.edit == "amount" else {"Комментарий": "edited"})
        clock.at = co.anchor + timedelta(hours=2)
        n, rows, per, secs = one_cycle()
        print(f"  {len(recent)} documents changed ({args.edit}): {n:3d} requests, {rows:6d} rows {per} in {secs:.2f}s")
    finally:
        sb.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--companies", type=int, default=8300)
    ap.add_argument("--preset", default="ut11", choices=["ut11", "unf", "utp"])
    ap.add_argument("--page-size", type=int, default=500)
    ap.add_argument("--changed", type=int, default=25)
    ap.add_argument("--journal", default="both", choices=["both", "yes", "no"])
    ap.add_argument("--edit", default="amount", choices=["amount", "comment"])
    args = ap.parse_args()
    for journal in {"both": (False, True), "yes": (True,), "no": (False,)}[args.journal]:
        run(args, journal)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
