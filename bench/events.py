"""What application events save: a cycle after a few edits, with and without the portal's events.

    python bench/events.py [--companies 2000] [--activities-per-company 4] [--edits 1 10 50]

An emulated portal (in this process, no rate limit: only counts matter here) seeded with a
synthetic company, the connector installed as its local application (``bitrix24.app``) with
online events bound. After a full read and one poll, for each number of edits a manager makes to
companies, two cycles are measured on the same data:

* **poll** (``events: none``, i.e. the webhook way): the change poll of every stream (the users
  request carries every table's first change page), plus the requisites and comments of the
  changed companies;
* **events** (``events: online``): the portal called the endpoint once per edit; the cycle reads
  just those companies and their tax ids.

Printed per cycle: HTTP requests the connector made, commands the portal ran (a ``batch`` counts
one plus its commands), the modelled ``operating`` seconds the portal charged, and wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIENT_ID = "local.bench.events"
SECRET = "bench-secret-0000000016"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--companies", type=int, default=2000)
    ap.add_argument("--activities-per-company", type=float, default=4)
    ap.add_argument("--edits", type=int, nargs="+", default=[1, 10, 50])
    args = ap.parse_args()

    from datetime import timedelta

    from bitrix import app as A
    from bitrix.app_handlers import BitrixAppEndpoint
    from bitrix.emulator import EmulatorServer, Portal
    from connector.config import Settings
    from connector.httpserver import HttpServer
    from connector.ports import Context
    from connector.sandbox import generate
    from connector.store import Store
    from connector.sync import sync_all

    co = generate(companies=args.companies, activities_per_company=args.activities_per_company)
    portal = Portal.from_company(co, rate_limit=False)
    start, base = time.monotonic(), co.anchor.replace(hour=23, minute=59, second=0)
    portal.clock = lambda: base + timedelta(seconds=time.monotonic() - start)

    class Clock:
        def now(self):
            return portal.now()

    with tempfile.TemporaryDirectory() as tmp, EmulatorServer(portal) as srv:
        http = HttpServer("127.0.0.1:0", max_body_bytes=262144)
        http.start()
        host, port = http.address

        def settings(events: str) -> Settings:
            return Settings.model_validate({
                "store": f"sqlite:///{tmp}/bench.db",
                "bitrix24": {"fields": ["UF_CRM_TEMPERATURE"], "app": {
                    "client_id": CLIENT_ID, "client_secret": SECRET, "public_url": f"http://{host}:{port}",
                    "listen": f"{host}:{port}", "token_url": srv.base_url + "/oauth/token/", "events": events,
                    "sms_sender": False}}})

        with_events, poll = settings("online"), settings("none")
        store = Store(with_events.store)
        ctx = Context(clock=Clock(), kv_get=store.kv_get, kv_set=store.kv_set)
        endpoint = BitrixAppEndpoint(with_events, ctx, store)
        endpoint.mount(http)
        d = portal.install_app(CLIENT_ID, SECRET, install_url=f"http://{host}:{port}{A.INSTALL_PATH}")
        assert d.status == 200, d.body

        def cycle(s: Settings) -> tuple[int, int, float, float]:
            requests_before = ctx.counter("bitrix24").requests
            cmds_before = sum(portal.stats.by_method.values())
            op_before = sum(portal.stats.operating.values())
            t0 = time.perf_counter()
            rep = sync_all(s, store, ctx)
            assert rep.ok, [x.error for x in rep.sources]
            return (ctx.counter("bitrix24").requests - requests_before, sum(portal.stats.by_method.values()) - cmds_before,
                    sum(portal.stats.operating.values()) - op_before, time.perf_counter() - t0)

        full = cycle(poll)
        cycle(poll)
        portal.drain()
        store.clear_dirty("bitrix24", store.dirty("bitrix24"))
        print(f"portal: {args.companies} companies, {len(portal.table('contact'))} contacts, {len(portal.table('deal'))} deals, "
              f"{len(portal.table('activity'))} activities; first full read: {full[0]} requests, {full[1]} commands")
        print(f"{'edits':>5}  {'mode':<6}  {'requests':>8}  {'commands':>8}  {'operating s':>11}  {'wall s':>7}")
        ids = sorted(portal.table("company"))
        for k in args.edits:
            for mode, s in (("poll", poll), ("events", with_events)):
                for cid in ids[:k]:
                    portal.touch("company", cid, TITLE=f"Edited {mode} {k} {cid}")
                portal.drain()
                req, cmds, op, wall = cycle(s)
                print(f"{k:>5}  {mode:<6}  {req:>8}  {cmds:>8}  {op:>11.3f}  {wall:>7.2f}")
        http.stop()


if __name__ == "__main__":
    main()
