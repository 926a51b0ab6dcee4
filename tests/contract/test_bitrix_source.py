"""bitrix.source against the emulated portal: batched ID windows, cursors, incremental cycles,
sweeps and the mapping of what comes over the wire."""

from __future__ import annotations

import json
import math
from datetime import date

import pytest

import bitrix.source as source_mod
from bitrix.client import BitrixClient
from bitrix.emulator import EmulatorServer, Portal
from bitrix.source import BitrixSource
from connector.config import Bitrix24
from connector.domain import ActivityKind, Outcome
from connector.ports import Context, SystemClock
from connector.sandbox import generate
from tests.contract.conftest import CODE, portal_clock


@pytest.fixture(scope="module")
def company():
    return generate(companies=150, activities_per_company=4)




class Cycle:
    """One sync cycle the way connector.sync runs it: a fresh source, streams in order."""

    def __init__(self, portal, ctx: Context | None = None, **settings):
        self.ctx = ctx or Context(clock=SystemClock())
        cfg = Bitrix24(webhook_url=portal.server.webhook_url, fields=["UF_CRM_TEMPERATURE"],
                       guid_field="UF_CRM_1C_GUID", **settings)
        self.source = BitrixSource(cfg, self.ctx, BitrixClient(cfg, self.ctx, sleep=lambda s: None))
        self.batches: dict[str, list] = {}

    def run(self, cursors: dict[str, str], *, full: bool = False) -> dict[str, list]:
        before = self.requests
        for stream in self.source.streams():
            cur = None if full else cursors.get(stream)
            for b in self.source.pull(stream, cur, full=full or cur is None):
                self.batches.setdefault(stream, []).append(b)
                if b.cursor is not None:
                    cursors[stream] = b.cursor
        self.source.close()
        self.cost = self.requests - before
        return self.batches

    @property
    def requests(self) -> int:
        return self.ctx.counter("bitrix24").requests

    def records(self, stream: str) -> dict:
        return {r.key: r for b in self.batches.get(stream, []) for r in b.records}


def test_first_full_sync_reads_everything_in_a_few_batches(portal):
    cursors: dict[str, str] = {}
    cycle = Cycle(portal)
    cycle.run(cursors)
    expect = {"users": "user", "companies": "company", "contacts": "contact", "deals": "deal",
              "activities": "activity", "invoices": "invoice", "comments": "comment"}
    for stream, table in expect.items():
        got = {int(k.rsplit(":", 1)[1]) for k in cycle.records(stream)}
        assert got == set(portal.table(table)), stream
    crm_tasks = {i for i, t in portal.table("task").items() if t.get("UF_CRM_TASK")}
    assert {int(k.rsplit(":", 1)[1]) for k in cycle.records("tasks")} == crm_tasks
    # every request is a batch: one per stream here (each table < 2,500 rows), one for the
    # companies' requisites, and one per 50 companies for their timeline comments
    assert cycle.ctx.counter("bitrix24").by_method == {"batch": cycle.cost}
    assert cycle.cost == 7 + 1 + math.ceil(len(portal.table("company")) / 50)
    assert all(json.loads(c)["mode"] == "inc" for c in cursors.values())
    # every stream's cursor starts at the cycle's first request, so the next cycle needs one probe
    assert len({json.loads(c)["since"] for c in cursors.values()}) == 1


def test_full_read_pages_over_several_batches_with_a_monotone_watermark(portal, monkeypatch):
    monkeypatch.setattr(source_mod, "BATCH", 3)  # 2 windows + the max probe per request
    cycle = Cycle(portal)
    batches = list(cycle.source.pull("activities", None, full=True))
    ids = [int(r.source_id) for b in batches for r in b.records]
    assert sorted(ids) == sorted(portal.table("activity")) and len(ids) == len(set(ids))
    assert len(batches) > 5
    marks = [json.loads(b.cursor)["after"] for b in batches[:-1]]
    assert marks == sorted(marks) and marks[-1] == max(portal.table("activity"))
    assert batches[-1].sweep is not None and batches[-1].sweep.live_ids == {str(i) for i in portal.table("activity")}


def test_sparse_ids_are_read_completely_with_wider_windows(portal, monkeypatch):
    monkeypatch.setattr(source_mod, "BATCH", 6)
    acts = sorted(portal.table("activity"))
    for i in acts:
        if i % 7 and not (200 <= i < 320):  # keep a dense run, thin out the rest to one in seven
            portal.delete("activity", i)
    left = set(portal.table("activity"))
    cycle = Cycle(portal)
    ids = [int(r.source_id) for b in cycle.source.pull("activities", None, full=True) for r in b.records]
    assert sorted(ids) == sorted(left) and len(ids) == len(set(ids))


def test_a_broken_full_read_resumes_from_its_cursor(portal, monkeypatch):
    monkeypatch.setattr(source_mod, "BATCH", 3)
    first = Cycle(portal)
    it = first.source.pull("activities", None, full=True)
    seen = [next(it), next(it)]
    cursor = seen[-1].cursor
    assert json.loads(cursor)["mode"] == "full"
    again = Cycle(portal)
    rest = list(again.source.pull("activities", cursor))
    ids = {int(r.source_id) for b in seen + rest for r in b.records}
    assert ids == set(portal.table("activity"))
    assert rest[-1].sweep is None  # a resumed read has not seen every row: no sweep from it
    assert json.loads(rest[-1].cursor)["mode"] == "inc"


def test_a_quiet_cycle_costs_one_request(portal):
    cursors: dict[str, str] = {}
    Cycle(portal).run(cursors)
    quiet = Cycle(portal)
    quiet.run(cursors)
    assert quiet.cost == 1  # users + every stream's change probe in one batch
    assert sum(len(quiet.records(s)) for s in quiet.source.streams() if s != "users") == 0


def test_incremental_cycle_picks_up_a_touched_company_with_its_tax_id(portal):
    cursors: dict[str, str] = {}
    full = Cycle(portal)
    full.run(cursors)
    cid = next(i for i, c in portal.table("company").items() if i > 20)
    before = full.records("companies")[f"bitrix24:company:{cid}"]
    portal.touch("company", cid, TITLE="Renamed Trade LLC")
    cycle = Cycle(portal)
    cycle.run(cursors)
    got = cycle.records("companies")
    assert list(got) == [f"bitrix24:company:{cid}"]
    assert got[f"bitrix24:company:{cid}"].title == "Renamed Trade LLC"
    assert got[f"bitrix24:company:{cid}"].tax_id == before.tax_id and before.tax_id
    assert cycle.cost <= 3  # the probe, the requisites of the changed company, its comments


def test_many_changes_are_read_with_keyset_windows(portal):
    cursors: dict[str, str] = {}
    Cycle(portal).run(cursors)
    changed = [i for i in portal.table("deal")][::2]
    for i in changed:
        portal.touch("deal", i, TITLE=f"Deal {i} v2")
    cycle = Cycle(portal)
    cycle.run(cursors)
    got = cycle.records("deals")
    assert set(got) == {f"bitrix24:deal:{i}" for i in changed}
    assert all(d.title.endswith("v2") for d in got.values())


def test_new_timeline_comment_is_picked_up_next_cycle(portal, company):
    cursors: dict[str, str] = {}
    Cycle(portal).run(cursors)
    cid = company.stories["lost_cold"]
    client_cfg = Bitrix24(webhook_url=portal.server.webhook_url)
    with BitrixClient(client_cfg, Context(clock=SystemClock())) as c:
        new_id = c.result("crm.timeline.comment.add", {"fields": {"ENTITY_ID": cid, "ENTITY_TYPE": "company",
                                                                   "COMMENT": "Called from the road"}})
    cycle = Cycle(portal)
    cycle.run(cursors)
    comments = cycle.records("comments")
    assert f"bitrix24:comment:{new_id}" in comments
    assert comments[f"bitrix24:comment:{new_id}"].owner_keys == (f"bitrix24:company:{cid}",)


def test_periodic_sweep_reports_deleted_rows(portal):
    cursors: dict[str, str] = {}
    Cycle(portal).run(cursors)
    gone = sorted(portal.table("deal"))[3]
    portal.delete("deal", gone)
    cycle = Cycle(portal, sweep_every_hours=0)
    cycle.run(cursors)
    sweeps = {b.stream: b.sweep for bs in cycle.batches.values() for b in bs if b.sweep}
    assert str(gone) not in sweeps["deals"].live_ids
    assert sweeps["deals"].live_ids == {str(i) for i in portal.table("deal")}
    assert sweeps["deals"].kind == "deal" and "activities" in sweeps and "comments" not in sweeps
    quiet = Cycle(portal)  # the sweep time is in the cursor: not due again
    quiet.run(cursors)
    assert quiet.cost == 1


def test_rate_limit_during_a_sync_is_waited_out(portal):
    portal.inject_fault("batch", 503, "QUERY_LIMIT_EXCEEDED", "Too many requests", times=2)
    cursors: dict[str, str] = {}
    cycle = Cycle(portal)
    cycle.run(cursors)
    assert len(cycle.records("companies")) == len(portal.table("company"))


def test_wire_rows_map_to_the_domain(portal, company):
    cycle = Cycle(portal)
    cycle.run({})
    stories = company.stories
    users = cycle.records("users")
    fired = users["bitrix24:user:4"]
    assert not fired.active and fired.departments == ("Sales",) and fired.extension == "904"
    companies = cycle.records("companies")
    guid = companies[f"bitrix24:company:{stories['guid_match']}"]
    assert guid.guid == company.company(stories["guid_match"]).guid and guid.tax_id is None
    karpaty = companies[f"bitrix24:company:{stories['forgotten']}"]
    src = company.company(stories["forgotten"])
    assert karpaty.tax_id == src.tax_id and karpaty.segment == src.segment and karpaty.phones
    assert karpaty.fields == {"UF_CRM_TEMPERATURE": "warm"}
    contacts = cycle.records("contacts")
    ct = next(c for c in company.contacts if c.birthday)
    assert contacts[f"bitrix24:contact:{ct.id}"].birthday == ct.birthday
    assert contacts[f"bitrix24:contact:{ct.id}"].company_key == f"bitrix24:company:{ct.company_id}"
    invoices = cycle.records("invoices")
    unpaid = next(i for i in invoices.values() if i.client_key == f"bitrix24:company:{stories['unpaid']}")
    assert unpaid.outcome is Outcome.OPEN and isinstance(unpaid.due_date, date) and unpaid.amount == 18500.0
    assert any(i.outcome is Outcome.WON for i in invoices.values())
    comments = cycle.records("comments")
    assert [c.owner_keys for c in comments.values()] == [(f"bitrix24:company:{stories['comment_counts']}",)]
    assert all(c.kind is ActivityKind.COMMENT for c in comments.values())
    tasks = cycle.records("tasks")
    kept = [t for t in tasks.values() if t.owner_keys == (f"bitrix24:company:{stories['kept_by_future_task']}",)]
    assert kept and not kept[0].completed and kept[0].deadline is not None
    deals = cycle.records("deals")
    assert {d.outcome for d in deals.values()} == {Outcome.OPEN, Outcome.WON, Outcome.LOST}


def test_a_stream_without_its_scope_fails_alone_and_loudly(company):
    from connector.errors import AuthError

    p = Portal.from_company(company, webhook_code=CODE, scopes=("crm", "user", "department"))
    p.clock = portal_clock(company)
    with EmulatorServer(p) as srv:
        p.server = srv  # type: ignore[attr-defined]
        cycle = Cycle(p)
        src = cycle.source
        got = {s: sum(len(b.records) for b in src.pull(s, None, full=True)) for s in ("users", "companies", "invoices")}
        assert got["users"] and got["companies"] and got["invoices"]
        with pytest.raises(AuthError, match="tasks.task.list"):
            list(src.pull("tasks", None, full=True))
        src.close()


def test_more_than_a_page_of_users_stays_one_request_per_quiet_cycle(portal):
    for n in range(60):
        portal.add("user", {"NAME": f"Temp{n}", "LAST_NAME": "Agent", "ACTIVE": n % 2 == 0, "UF_DEPARTMENT": [2]})
    cursors: dict[str, str] = {}
    full = Cycle(portal)
    full.run(cursors)
    assert len(full.records("users")) == len(portal.table("user")) > 50
    quiet = Cycle(portal)
    quiet.run(cursors)
    assert quiet.cost == 1 and set(quiet.records("users")) == set(full.records("users"))
