"""The benchmark portal (bench/portal.py): compact rows, the "changed since" index and the
request counters behave exactly like the plain emulator the other tests use."""

from __future__ import annotations

import pytest
import requests

from bitrix.emulator import EmulatorServer, Portal
from bitrix.emulator.tables import INDEXED_FROM, SlimRow, compactor, iso
from connector.sandbox import generate_at_scale


@pytest.fixture(scope="module")
def company():
    return generate_at_scale(300, seed=3)


def _same(a, b) -> bool:
    return list(a.items()) == list(b.items()) and [type(v) for v in a.values()] == [type(v) for v in b.values()]


def test_compact_portal_holds_the_same_rows_as_the_plain_one(company):
    plain = Portal.from_company(company, rate_limit=False)
    slim = Portal.from_company(company, rate_limit=False, compact=True)
    assert isinstance(slim.table("activity")[next(iter(slim.table("activity")))], SlimRow)
    for name, table in plain.tables.items():
        rows = slim.tables[name].rows
        assert list(rows) == list(table.rows), name
        assert all(_same(r, dict(rows[k])) for k, r in table.rows.items()), name


def test_compact_portal_answers_lists_and_writes_like_the_plain_one(company):
    answers = []
    for compact in (False, True):
        p = Portal.from_company(company, rate_limit=False, compact=compact)
        p.clock = lambda: company.anchor
        with EmulatorServer(p) as srv, requests.Session() as http:
            def call(method, params, srv=srv, http=http):
                body = http.post(srv.webhook_url + method, json=params, timeout=10).json()
                body.pop("time", None)
                return body
            got = [call("crm.company.update", {"id": 20, "fields": {"TITLE": "Renamed", "PHONE": [{"VALUE": "+380501112233"}]}})]
            got.append(call("tasks.task.add", {"fields": {"TITLE": "Call", "RESPONSIBLE_ID": 2, "UF_CRM_TASK": ["CO_21"]}}))
            for method, extra in (("crm.company.list", {}), ("crm.contact.list", {}), ("crm.deal.list", {}),
                                  ("crm.requisite.list", {}), ("crm.item.list", {"entityTypeId": 31}),
                                  ("tasks.task.list", {}), ("crm.activity.list", {})):
                select = ["*", "UF_*", "PHONE", "EMAIL"] if method != "crm.activity.list" else ["*", "BINDINGS", "COMMUNICATIONS"]
                got.append(call(method, {"order": {"ID": "ASC"}, "filter": {">ID": 15}, "select": select, "start": -1, **extra}))
            answers.append(got)
    assert answers[0] == answers[1]


def test_changed_since_filter_finds_what_a_full_scan_finds(company):
    p = Portal.from_company(company, rate_limit=False, compact=True)
    acts = p.table("activity")
    assert len(acts) > INDEXED_FROM  # the index is used
    stamps = sorted(r["LAST_UPDATED"] for r in acts.values())
    since = stamps[len(stamps) - 120]
    edited = next(i for i, r in acts.items() if r["LAST_UPDATED"] < since)
    p.clock = lambda: since
    with EmulatorServer(p) as srv, requests.Session() as http:
        def changed():
            out, after = [], 0
            while True:
                page = http.post(srv.webhook_url + "crm.activity.list", timeout=10, json={
                    "order": {"ID": "ASC"}, "filter": {">=LAST_UPDATED": iso(since), ">ID": after}, "select": ["ID"],
                    "start": -1}).json()["result"]
                out += [int(r["ID"]) for r in page]
                if len(page) < 50:
                    return out
                after = out[-1]

        assert changed() == sorted(i for i, r in acts.items() if r["LAST_UPDATED"] >= since)
        p.touch("activity", edited, DESCRIPTION="edited")  # the index follows the table's writes
        assert edited in changed()
        older = next(i for i, r in acts.items() if r["LAST_UPDATED"] < since)
        acts[older]["LAST_UPDATED"] = since  # a write that does not say which row: the index is rebuilt
        p.tables["activity"].touched()
        assert changed() == sorted(i for i, r in acts.items() if r["LAST_UPDATED"] >= since) and older in changed()


def test_slim_row_keeps_its_own_value_for_a_shared_field():
    make = compactor(["ID"], {"ID": 1, "OPENED": "Y", "SETTINGS": {}})
    a, b = make({"ID": 2, "OPENED": "Y", "SETTINGS": {}}), make({"ID": 3, "OPENED": "N", "SETTINGS": {}, "NEW": 1})
    assert (a.extra, dict(b)) == (None, {"ID": 3, "OPENED": "N", "SETTINGS": {}, "NEW": 1})
    a["OPENED"] = "N"
    del a["SETTINGS"]
    assert dict(a) == {"ID": 2, "OPENED": "N"} and "SETTINGS" not in a
    assert b.setdefault("ID", 9) == 3 and a.get("SETTINGS", "none") == "none"


def test_counts_requests_that_write_once_per_batch_and_records_the_commands(company):
    p = Portal.from_company(company, rate_limit=False, compact=True)
    p.write_log = []
    with EmulatorServer(p) as srv, requests.Session() as http:
        def post(method, params):
            assert http.post(srv.webhook_url + method, json=params, timeout=10).status_code == 200

        post("batch", {"cmd": {"a": "crm.company.list?start=-1", "b": "user.get"}})
        assert (p.stats.requests, p.stats.write_requests) == (1, 0)
        post("batch", {"cmd": {f"t{i}": f"tasks.task.add?fields[TITLE]=T{i}&fields[RESPONSIBLE_ID]=2" for i in range(3)}
                       | {"l": "crm.deal.list?start=-1"}})
        post("im.notify.system.add", {"USER_ID": 2, "MESSAGE": "hello"})
        post("crm.deal.get", {"id": 1})
    assert (p.stats.requests, p.stats.write_requests) == (4, 2)
    assert [m for m, _ in p.write_log] == ["tasks.task.add"] * 3 + ["im.notify.system.add"]
    assert p.write_log[0][1]["fields"]["TITLE"] == "T0"
