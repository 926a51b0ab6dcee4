"""The unmodified fast_bitrix24 library works against the emulator and reads the seeded data.

fast_bitrix24 is written against real portals (its tests replay captured responses), so its
parsing of envelopes, ``total``/``next``, batch ``result``/``result_error`` and ``time.operating``
is an independent check that the emulator speaks what real clients expect.
"""

from __future__ import annotations

import warnings

import pytest
from fast_bitrix24 import Bitrix

from bitrix.emulator import EmulatorServer, Portal
from connector.sandbox import generate


@pytest.fixture(scope="module")
def portal():
    return Portal.from_company(generate(companies=260, seed=5))


@pytest.fixture(scope="module")
def srv(portal):
    s = EmulatorServer(portal).start()
    yield s
    s.stop()


@pytest.fixture()
def bx(srv):
    warnings.simplefilter("ignore")
    return Bitrix(srv.webhook_url, ssl=False, verbose=False)


def test_get_all_reads_every_company(bx, portal):
    rows = bx.get_all("crm.company.list")
    assert len(rows) == len(portal.table("company")) > 200
    assert sorted(int(r["ID"]) for r in rows) == sorted(portal.table("company"))
    one = next(r for r in rows if r["ID"] == "1")
    assert one["TITLE"] == portal.table("company")[1]["TITLE"]


def test_get_all_with_select_and_filter(bx, portal):
    rows = bx.get_all("crm.company.list", {"select": ["ID", "TITLE", "PHONE"], "filter": {">ID": 100, "ASSIGNED_BY_ID": 3}})
    expect = sorted(i for i, r in portal.table("company").items() if i > 100 and r["ASSIGNED_BY_ID"] == 3)
    assert sorted(int(r["ID"]) for r in rows) == expect
    assert all(set(r) <= {"ID", "TITLE", "PHONE"} and r["PHONE"][0]["TYPE_ID"] == "PHONE" for r in rows)


def test_get_all_over_item_and_task_wrappers(bx, portal):
    invoices = bx.get_all("crm.item.list", {"entityTypeId": 31})
    assert sorted(i["id"] for i in invoices) == sorted(portal.table("invoice"))
    tasks = bx.get_all("tasks.task.list", {"select": ["ID", "TITLE"]})
    assert sorted(int(t["id"]) for t in tasks) == sorted(portal.table("task"))
    activities = bx.get_all("crm.activity.list", {"select": ["ID"]})
    assert len(activities) == len(portal.table("activity"))


def test_call_updates_through_batch(bx, portal):
    assert bx.call("crm.company.update", {"id": 4, "fields": {"ASSIGNED_BY_ID": 9}}) is True
    assert portal.table("company")[4]["ASSIGNED_BY_ID"] == 9
    assert bx.call("crm.company.update", [{"id": 5, "fields": {"TITLE": "A"}}, {"id": 6, "fields": {"TITLE": "B"}}]) == (True, True)
    assert portal.table("company")[6]["TITLE"] == "B"
    raw = bx.call("crm.company.get", {"id": 4}, raw=True)
    assert raw["result"]["ASSIGNED_BY_ID"] == "9" and "operating" in raw["time"]


def test_call_batch_and_get_by_id(bx, portal):
    out = bx.call_batch({"halt": 0, "cmd": {"me": "user.current", "c": "crm.company.get?id=7"}})
    assert out["me"]["ID"] == "1" and out["c"]["ID"] == "7"
    got = bx.get_by_ID("crm.company.get", [7, 8, 9])
    assert sorted(got) == ["7", "8", "9"] and got["8"]["TITLE"] == portal.table("company")[8]["TITLE"]
