"""The Bitrix24 emulator speaks the REST v1 wire format (raw ``requests`` over loopback).

Each test states one behaviour of a real portal (docs: bitrix24/b24restdocs; observed responses:
fast_bitrix24 ``tests/real_responses``) and checks the emulator reproduces it byte-for-byte where
it matters (envelope keys, string vs typed values, error bodies, HTTP statuses).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest
import requests

from bitrix.emulator import EmulatorServer, Portal
from bitrix.emulator.phpquery import http_build_query
from bitrix.emulator.tables import KYIV
from connector.sandbox import generate


class FakeTime:
    """A controllable ``time.time`` for the rate limiter, operating windows and token expiry."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def company():
    return generate(companies=130, seed=11)


@pytest.fixture()
def portal(company):
    p = Portal.from_company(company, rate_limit=False)
    return p


@pytest.fixture()
def srv(portal):
    s = EmulatorServer(portal).start()
    yield s
    s.stop()


def call(srv, method, params=None, **kw):
    return requests.post(srv.webhook_url + method, json=params or {}, timeout=10, **kw)


# ---------------------------------------------------------------- URLs and auth

def test_webhook_url_shapes_and_case_insensitive_method_names(srv):
    for suffix in ("crm.company.list", "CRM.Company.List.json", "crm.company.list/", "crm.company.list.json/"):
        r = requests.get(srv.webhook_url + suffix + "?start=-1", timeout=10)
        assert r.status_code == 200, suffix
        assert len(r.json()["result"]) == 50


def test_wrong_webhook_code_is_401_no_auth_found(srv):
    r = requests.post(srv.base_url + "/rest/1/wrongcode/crm.company.list", json={}, timeout=10)
    assert r.status_code == 401
    assert r.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}


def test_unknown_method_is_404_method_not_found(srv):
    r = call(srv, "crm.nothing.here")
    assert r.status_code == 404
    assert r.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


def test_missing_scope_is_403_insufficient_scope(company):
    p = Portal.from_company(company, rate_limit=False, scopes=("crm",))
    with EmulatorServer(p) as s:
        r = call(s, "tasks.task.list")
        assert r.status_code == 403
        assert r.json()["error"] == "insufficient_scope"
        assert call(s, "crm.deal.list").status_code == 200
        assert call(s, "scope").json()["result"] == ["crm"]
    brief = Portal.from_company(company, rate_limit=False, scopes=("user_brief",))
    with EmulatorServer(brief) as s:
        assert call(s, "user.get").status_code == 200 and call(s, "department.get").status_code == 403


def test_application_only_methods_refuse_webhooks(company):
    p = Portal.from_company(company, rate_limit=False, scopes=("crm", "bizproc", "telephony", "messageservice"))
    with EmulatorServer(p) as s:
        r = call(s, "telephony.externalCall.register", {"USER_ID": 1, "PHONE_NUMBER": "+380501234567", "TYPE": 2})
        assert r.status_code == 403 and r.json()["error"] == "WRONG_AUTH_TYPE"
        for method in ("bizproc.robot.add", "crm.automation.trigger.add", "messageservice.sender.add", "event.bind"):
            r = call(s, method, {"CODE": "x", "NAME": "x", "event": "ONCRMDEALUPDATE", "handler": "https://x/"})
            assert r.status_code == 400, method
            assert r.json() == {"error": "ACCESS_DENIED", "error_description": "Application context required"}
        # the UI "incoming webhook" trigger works from a webhook
        assert call(s, "crm.automation.trigger", {"target": "COMPANY_1", "code": "abc"}).json()["result"] is True


def test_oauth_token_expiry_and_refresh_rotation(company):
    p = Portal.from_company(company, rate_limit=False)
    clock = FakeTime()
    p.limit_time = clock
    access, refresh = p.issue_oauth("app.1", "s3cret")
    with EmulatorServer(p) as s:
        ok = requests.post(s.base_url + "/rest/user.current", json={"auth": access}, timeout=10)
        assert ok.status_code == 200 and ok.json()["result"]["ID"] == "1"
        # auth also as query or form parameter
        assert requests.get(s.base_url + f"/rest/profile.json?auth={access}", timeout=10).json()["result"]["ID"] == 1
        assert requests.post(s.base_url + "/rest/scope", data={"auth": access}, timeout=10).status_code == 200
        bad = requests.post(s.base_url + "/rest/user.current", json={"auth": "nope"}, timeout=10)
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_token"
        clock.t += p.token_ttl + 1
        exp = requests.post(s.base_url + "/rest/crm.company.list", json={"auth": access}, timeout=10)
        assert exp.status_code == 401
        assert exp.json() == {"error": "expired_token", "error_description": "The access token provided has expired"}
        q = {"grant_type": "refresh_token", "client_id": "app.1", "client_secret": "s3cret", "refresh_token": refresh}
        tok = requests.get(s.base_url + "/oauth/token/", params=q, timeout=10).json()
        assert tok["refresh_token"] != refresh and tok["access_token"] != access
        assert tok["client_endpoint"] == s.base_url + "/rest/"
        assert tok["expires_in"] == 3600 and tok["expires"] == int(clock.t + 3600)
        assert {"domain", "member_id", "scope", "status", "user_id", "server_endpoint"} <= set(tok)
        again = requests.get(s.base_url + "/oauth/token/", params=q, timeout=10)  # the old refresh token is spent
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
        r = requests.post(s.base_url + "/rest/crm.company.list", json={"auth": tok["access_token"]}, timeout=10)
        assert r.status_code == 200
        p.expire_tokens()
        r = requests.post(s.base_url + "/rest/crm.company.list", json={"auth": tok["access_token"]}, timeout=10)
        assert r.json()["error"] == "expired_token"
        # an application may call app-only methods
        r = requests.post(s.base_url + "/rest/crm.automation.trigger.add",
                          json={"auth": requests.get(s.base_url + "/oauth/token/", params={**q, "refresh_token": tok["refresh_token"]},
                                                     timeout=10).json()["access_token"], "CODE": "late", "NAME": "Late"},
                          timeout=10)
        assert r.json()["result"] is True


# ---------------------------------------------------------------- envelopes per family

def test_legacy_list_envelope_strings_and_paging(srv, portal):
    r = call(srv, "crm.company.list", {"order": {"ID": "ASC"}})
    body = r.json()
    assert list(body) == ["result", "next", "total", "time"]
    assert body["total"] == len(portal.table("company")) and body["next"] == 50 and len(body["result"]) == 50
    row = body["result"][0]
    assert isinstance(row["ID"], str) and isinstance(row["ASSIGNED_BY_ID"], str)
    assert row["DATE_CREATE"][-6:] in ("+02:00", "+03:00") and "T" in row["DATE_CREATE"]
    assert "PHONE" not in row and "UF_CRM_TEMPERATURE" in row  # default select: * + UF_*, no multifields
    assert set(body["time"]) >= {"start", "finish", "duration", "processing", "date_start", "date_finish",
                                 "operating", "operating_reset_at"}
    seen = [x["ID"] for x in body["result"]]
    start = body["next"]
    while True:
        page = call(srv, "crm.company.list", {"order": {"ID": "ASC"}, "start": start, "select": ["ID"]}).json()
        seen += [x["ID"] for x in page["result"]]
        if "next" not in page:
            break
        assert page["next"] == start + 50
        start = page["next"]
    assert [int(x) for x in seen] == sorted(portal.table("company"))


def test_start_minus_one_skips_count(srv):
    body = call(srv, "crm.company.list", {"start": -1, "order": {"ID": "ASC"}}).json()
    assert body["total"] == 0 and "next" not in body and len(body["result"]) == 50


def test_keyset_pages_cover_the_table(srv, portal):
    last, ids = 0, []
    while True:
        page = call(srv, "crm.activity.list", {"order": {"ID": "ASC"}, "filter": {">ID": last}, "start": -1,
                                              "select": ["ID"]}).json()["result"]
        ids += [int(x["ID"]) for x in page]
        if len(page) < 50:
            break
        last = int(page[-1]["ID"])
    assert ids == sorted(portal.table("activity"))


def test_money_dates_and_flags_in_legacy_deal(srv, portal):
    did = next(iter(portal.table("deal")))
    deal = call(srv, "crm.deal.get", {"id": did}).json()["result"]
    assert deal["OPPORTUNITY"].endswith(".00") and deal["CURRENCY_ID"] == "UAH"
    assert deal["CLOSED"] in ("Y", "N") and deal["STAGE_SEMANTIC_ID"] in ("P", "S", "F")
    # date-only fields come back as UTC midnight in portal time
    assert deal["BEGINDATE"][10:] in ("T02:00:00+02:00", "T03:00:00+03:00")


def test_select_multifields_only_when_named(srv):
    rows = call(srv, "crm.company.list", {"select": ["ID", "TITLE", "PHONE", "EMAIL"], "start": -1}).json()["result"]
    assert set(rows[0]) == {"ID", "TITLE", "PHONE", "EMAIL"}
    assert set(rows[0]["PHONE"][0]) == {"ID", "VALUE_TYPE", "VALUE", "TYPE_ID"}
    rows = call(srv, "crm.company.list", {"select": ["TITLE", "UF_*"], "start": -1}).json()["result"]
    assert set(rows[0]) == {"TITLE", "UF_CRM_TEMPERATURE", "UF_CRM_1C_GUID", "UF_CRM_RFM_SCORE", "UF_CRM_RFM_SEGMENT", "ID"}


def test_crm_item_list_is_typed_camel_case(srv, portal):
    body = call(srv, "crm.item.list", {"entityTypeId": 31, "order": {"id": "ASC"}}).json()
    assert list(body) == ["result", "total", "time"] and body["total"] == len(portal.table("invoice"))
    item = body["result"]["items"][0]
    assert isinstance(item["id"], int) and isinstance(item["companyId"], int)
    assert isinstance(item["opportunity"], (int, float)) and item["stageId"].startswith("DT31_1:")
    assert {"begindate", "closedate", "currencyId", "assignedById", "updatedTime", "createdTime"} <= set(item)
    paid = call(srv, "crm.item.list", {"entityTypeId": 31, "filter": {"stageId": "DT31_1:P"}, "select": ["id", "stageId"]})
    assert all(set(i) == {"id", "stageId"} and i["stageId"] == "DT31_1:P" for i in paid.json()["result"]["items"])
    companies = call(srv, "crm.item.list", {"entityTypeId": 4, "select": ["id", "title", "assignedById"],
                                            "filter": {">id": 3}, "order": {"id": "ASC"}}).json()
    assert companies["result"]["items"][0]["id"] > 3 and isinstance(companies["result"]["items"][0]["assignedById"], int)
    err = call(srv, "crm.item.list", {"entityTypeId": 31, "filter": {"nope": 1}})
    assert err.status_code == 400 and err.json()["error"] == "INVALID_ARG_VALUE"
    assert call(srv, "crm.item.get", {"entityTypeId": 999, "id": 1}).json()["error_description"] == "SPA not found"


def test_crm_item_update_and_get(srv, portal):
    iid = next(iter(portal.table("invoice")))
    r = call(srv, "crm.item.update", {"entityTypeId": 31, "id": iid, "fields": {"assignedById": 7, "stageId": "DT31_1:P"}})
    assert r.json()["result"]["item"]["assignedById"] == 7
    got = call(srv, "crm.item.get", {"entityTypeId": 31, "id": iid}).json()["result"]["item"]
    assert got["stageId"] == "DT31_1:P" and got["previousStageId"] is not None
    missing = call(srv, "crm.item.get", {"entityTypeId": 31, "id": 999999})
    assert missing.status_code == 400 and missing.json() == {"error": "NOT_FOUND", "error_description": "Element not found"}


def test_tasks_family_shapes(srv, portal):
    body = call(srv, "tasks.task.list", {}).json()
    ids = [int(t["id"]) for t in body["result"]["tasks"]]
    assert ids == sorted(ids, reverse=True)  # default order ID desc
    t0 = body["result"]["tasks"][0]
    assert isinstance(t0["id"], str) and isinstance(t0["status"], str) and "ufCrmTask" not in t0
    sel = call(srv, "tasks.task.list", {"select": ["ID", "TITLE", "UF_CRM_TASK"],
                                        "filter": {"UF_CRM_TASK": portal.table("task")[ids[-1]]["UF_CRM_TASK"][0]}}).json()
    assert sel["result"]["tasks"][0]["ufCrmTask"] == portal.table("task")[ids[-1]]["UF_CRM_TASK"]
    no_title = call(srv, "tasks.task.add", {"fields": {"RESPONSIBLE_ID": 2}})
    assert no_title.status_code == 400
    assert no_title.json() == {"error": "ERROR_CORE", "error_description": "Task title is not specified<br>"}
    assert "\\u003Cbr\\u003E" in no_title.text  # Bitrix's Json::encode hex-escapes tags
    made = call(srv, "tasks.task.add", {"fields": {"TITLE": "Call back", "DESCRIPTION": "marker:abc-1",
                                                   "RESPONSIBLE_ID": 3, "DEADLINE": "2026-12-01T10:00:00+02:00",
                                                   "UF_CRM_TASK": ["CO_3"]}}).json()["result"]["task"]
    assert made["title"] == "Call back" and made["responsibleId"] == "3" and made["deadline"] == "2026-12-01T10:00:00+02:00"
    found = call(srv, "tasks.task.list", {"filter": {"%DESCRIPTION": "abc-1"}, "select": ["ID", "DESCRIPTION"]}).json()
    assert [t["id"] for t in found["result"]["tasks"]] == [made["id"]]
    upd = call(srv, "tasks.task.update", {"taskId": made["id"], "fields": {"RESPONSIBLE_ID": 5}}).json()
    assert upd["result"]["task"]["responsibleId"] == "5"
    got = call(srv, "tasks.task.get", {"taskId": made["id"], "select": ["ID", "UF_CRM_TASK"]}).json()
    assert got["result"]["task"]["ufCrmTask"] == ["CO_3"]
    gone = call(srv, "tasks.task.update", {"taskId": 999999, "fields": {"TITLE": "x"}})
    assert gone.status_code == 400 and gone.json()["error"] == "0"


def test_user_and_department_shapes(srv, portal):
    users = call(srv, "user.get", {}).json()
    u = users["result"][0]
    assert u["ID"] == "1" and u["ACTIVE"] is True and u["UF_DEPARTMENT"] == [1]
    active = call(srv, "user.get", {"FILTER": {"ACTIVE": True}}).json()["result"]
    assert "4" not in [x["ID"] for x in active] and len(active) == len(portal.table("user")) - 1
    top = call(srv, "user.get", {"ACTIVE": "Y", "UF_DEPARTMENT": 2, "start": -1}).json()
    assert top["total"] == 0 and all(x["UF_DEPARTMENT"] == [2] for x in top["result"])
    me = call(srv, "user.current").json()["result"]
    assert me["ID"] == "1"
    deps = call(srv, "department.get", {}).json()
    assert deps["result"][1] == {"ID": "2", "NAME": "Sales", "SORT": 500, "PARENT": "1", "UF_HEAD": "1"}
    assert deps["total"] == 2


def test_requisites_activities_and_statuses(srv, portal, company):
    story = company.stories["guid_match"]
    rq = call(srv, "crm.requisite.list", {"filter": {"ENTITY_TYPE_ID": 4, "@ENTITY_ID": [1, 2, story]},
                                          "select": ["ENTITY_ID", "RQ_INN", "RQ_EDRPOU"]}).json()["result"]
    assert {r["ENTITY_ID"] for r in rq} == {"1", "2"}  # the guid_in_crm company has no requisite
    assert rq[0]["RQ_INN"] == company.company(1).tax_id and set(rq[0]) == {"ENTITY_ID", "RQ_INN", "RQ_EDRPOU"}
    assert portal.table("company")[story]["UF_CRM_1C_GUID"] == company.company(story).guid
    acts = call(srv, "crm.activity.list", {"filter": {"BINDINGS": [{"OWNER_TYPE_ID": 4, "OWNER_ID": 1}]},
                                           "select": ["ID", "TYPE_ID", "PROVIDER_ID", "COMPLETED", "OWNER_ID"]}).json()
    assert acts["result"] and all(a["OWNER_ID"] == "1" for a in acts["result"])
    assert acts["result"][0]["PROVIDER_ID"] in ("VOXIMPLANT_CALL", "CRM_EMAIL", "CRM_MEETING", "CRM_TODO")
    st = call(srv, "crm.status.list", {"filter": {"ENTITY_ID": "SMART_INVOICE_STAGE_1"}}).json()["result"]
    assert {s["STATUS_ID"]: s["SEMANTICS"] for s in st} == {"DT31_1:N": None, "DT31_1:S": None, "DT31_1:P": "S", "DT31_1:D": "F"}
    assert "EXTRA" not in st[0]
    deal = call(srv, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}}).json()["result"]
    assert {s["STATUS_ID"]: s["EXTRA"]["SEMANTICS"] for s in deal}["WON"] == "success"


def test_timeline_comments_need_entity_and_lowercase_fields(srv, portal):
    r = call(srv, "crm.timeline.comment.list", {"filter": {"ENTITY_ID": 3}})
    assert r.status_code == 400 and r.json()["error"] == ""
    r = call(srv, "crm.timeline.comment.add", {"FIELDS": {"ENTITY_ID": 3, "ENTITY_TYPE": "company", "COMMENT": "x"}})
    assert r.status_code == 400
    before = portal.table("company")[3]["LAST_ACTIVITY_TIME"]
    r = call(srv, "crm.timeline.comment.add", {"fields": {"ENTITY_ID": 3, "ENTITY_TYPE": "company", "COMMENT": "hi"}})
    cid = r.json()["result"]
    assert isinstance(cid, int)
    assert portal.table("company")[3]["LAST_ACTIVITY_TIME"] > before
    rows = call(srv, "crm.timeline.comment.list", {"filter": {"ENTITY_ID": 3, "ENTITY_TYPE": "company"}}).json()
    assert rows["result"][-1]["ID"] == str(cid) and rows["result"][-1]["COMMENT"] == "hi"


# ---------------------------------------------------------------- writes and errors

def test_update_unknown_ids_give_documented_bodies(srv):
    for method, text in (("crm.deal.update", "Not found"), ("crm.company.update", "Company is not found"),
                         ("crm.contact.update", "Contact is not found"), ("crm.company.get", "Not found")):
        r = call(srv, method, {"id": 999999, "fields": {"TITLE": "x"}})
        assert r.status_code == 400 and r.json() == {"error": "", "error_description": text}, method
    r = call(srv, "crm.company.get", {"id": "abc"})
    assert r.json()["error_description"] == "ID is not defined or invalid."


def test_company_update_assigns_and_stamps_date_modify(srv, portal):
    fixed = datetime(2026, 7, 1, 12, 0, tzinfo=KYIV)
    portal.clock = lambda: fixed
    r = call(srv, "crm.company.update", {"id": 2, "fields": {"ASSIGNED_BY_ID": 9, "UNKNOWN_FIELD": 1,
                                                            "PHONE": [{"VALUE": "+380501112233", "VALUE_TYPE": "WORK"}]}})
    assert r.json()["result"] is True
    row = call(srv, "crm.company.get", {"ID": 2}).json()["result"]
    assert row["ASSIGNED_BY_ID"] == "9" and row["DATE_MODIFY"] == "2026-07-01T12:00:00+03:00"
    assert row["PHONE"][-1]["VALUE"] == "+380501112233"
    new = call(srv, "crm.deal.add", {"fields": {"TITLE": "New", "COMPANY_ID": 2, "STAGE_ID": "WON", "OPPORTUNITY": 10}})
    deal = call(srv, "crm.deal.get", {"id": new.json()["result"]}).json()["result"]
    assert deal["STAGE_SEMANTIC_ID"] == "S" and deal["CLOSED"] == "Y" and deal["OPPORTUNITY"] == "10.00"


def test_simulated_user_edits_are_visible_to_incremental_filters(srv, portal):
    portal.clock = lambda: datetime(2030, 1, 2, 9, 0, tzinfo=KYIV)
    portal.touch("company", 5, TITLE="Renamed")
    new_id = portal.add("company", {"TITLE": "Fresh", "ASSIGNED_BY_ID": 2})
    portal.delete("company", 6)
    rows = call(srv, "crm.company.list", {"filter": {">=DATE_MODIFY": "2030-01-02T07:00:00+00:00"},
                                          "select": ["ID", "TITLE"]}).json()["result"]
    assert {r["ID"] for r in rows} == {"5", str(new_id)}
    assert call(srv, "crm.company.get", {"id": 6}).status_code == 400
    portal.clock = lambda: datetime(2030, 1, 3, 9, 0, tzinfo=KYIV)
    act = portal.add("activity", {"OWNER_TYPE_ID": 4, "OWNER_ID": 7, "TYPE_ID": 2, "SUBJECT": "Call",
                                  "START_TIME": "2030-01-03T08:50:00+02:00", "COMPLETED": "Y", "DIRECTION": 1})
    got = call(srv, "crm.activity.list", {"filter": {"BINDINGS": [{"OWNER_TYPE_ID": 4, "OWNER_ID": 7}],
                                                     ">LAST_UPDATED": "2030-01-01T00:00:00+02:00"}}).json()["result"]
    assert [(a["ID"], a["PROVIDER_ID"], a["COMPLETED"]) for a in got] == [(str(act), "VOXIMPLANT_CALL", "Y")]
    assert call(srv, "crm.company.get", {"id": 7}).json()["result"]["LAST_ACTIVITY_TIME"] == "2030-01-03T09:00:00+02:00"


def test_notifications_triggers_and_workflows(srv, portal):
    n = call(srv, "im.notify.system.add", {"USER_ID": 3, "MESSAGE": "Invoice [B]#17[/B] is overdue"}).json()["result"]
    assert isinstance(n, int) and portal.table("notify")[n]["TYPE"] == "system"
    assert call(srv, "im.notify.personal.add", {"USER_ID": 0, "MESSAGE": "x"}).json()["error"] == "USER_ID_EMPTY"
    assert call(srv, "crm.automation.trigger", {"target": "DEAL57"}).json()["error_description"] == "Incorrect target format."
    assert call(srv, "crm.automation.trigger", {}).json()["error_description"] == "Target is not set."
    assert call(srv, "crm.automation.trigger", {"target": "FOO_1"}).json()["error_description"] == "Target is not found."
    wid = call(srv, "bizproc.workflow.start", {"TEMPLATE_ID": 42, "DOCUMENT_ID": ["crm", "CCrmDocumentCompany", "COMPANY_1"],
                                               "PARAMETERS": {"resp": "user_3"}}).json()["result"]
    assert isinstance(wid, str) and "." in wid
    bad = call(srv, "bizproc.workflow.start", {"TEMPLATE_ID": 42, "DOCUMENT_ID": ["crm", "CCrmDocumentCompany", "DEAL_1"]})
    assert bad.status_code == 400 and bad.json()["error_description"] == "Wrong DOCUMENT_ID!"


def test_activity_writes_move_company_last_activity(srv, portal):
    portal.clock = lambda: datetime(2031, 3, 3, 10, 0, tzinfo=KYIV)
    r = call(srv, "crm.activity.todo.add", {"ownerTypeId": 4, "ownerId": 7, "deadline": "2031-03-05T10:00:00+02:00",
                                            "title": "Follow up", "responsibleId": 3})
    assert set(r.json()["result"]) == {"id"}
    row = call(srv, "crm.company.get", {"id": 7}).json()["result"]
    assert row["LAST_ACTIVITY_TIME"] == "2031-03-03T10:00:00+02:00" and row["DATE_MODIFY"] == row["LAST_ACTIVITY_TIME"]


# ---------------------------------------------------------------- filters

def test_every_filter_prefix(srv, portal):
    comp = portal.table("company")
    ids = sorted(comp)

    def got(flt, method="crm.company.list"):
        res = call(srv, method, {"filter": flt, "select": ["ID"], "order": {"ID": "ASC"}}).json()
        out = [int(r["ID"]) for r in res["result"]]
        while "next" in res:
            res = call(srv, method, {"filter": flt, "select": ["ID"], "order": {"ID": "ASC"}, "start": res["next"]}).json()
            out += [int(r["ID"]) for r in res["result"]]
        return out

    assert got({"ID": 5}) == [5] and got({"=ID": 5}) == [5]
    assert got({"!ID": 5}) == [i for i in ids if i != 5] and got({"!=ID": 5}) == [i for i in ids if i != 5]
    assert got({">ID": 100}) == [i for i in ids if i > 100] and got({">=ID": 100}) == [i for i in ids if i >= 100]
    assert got({"<ID": 10}) == [i for i in ids if i < 10] and got({"<=ID": 10}) == [i for i in ids if i <= 10]
    assert got({"@ID": [3, 4, 9]}) == [3, 4, 9] and got({"ID": [3, 4]}) == [3, 4]
    assert got({"!@ID": [3, 4]}) == [i for i in ids if i not in (3, 4)]
    word = comp[1]["TITLE"].split()[0]
    like = [i for i in ids if word.lower() in comp[i]["TITLE"].lower()]
    assert got({"%TITLE": word.lower()}) == like
    assert got({"!%TITLE": word}) == [i for i in ids if i not in like]
    starts = [i for i in ids if comp[i]["TITLE"].startswith(word)]
    assert got({"=%TITLE": word + "%"}) == starts and got({"%=TITLE": word + "%"}) == starts
    assert got({"!=%TITLE": word + "%"}) == [i for i in ids if i not in starts]
    assert got({"!%=TITLE": word + "%"}) == [i for i in ids if i not in starts]
    assert got({"ASSIGNED_BY_ID": 2, "COMPANY_TYPE": "VIP"}) == [
        i for i in ids if comp[i]["ASSIGNED_BY_ID"] == 2 and comp[i]["COMPANY_TYPE"] == "VIP"]
    guid = [i for i in ids if comp[i]["UF_CRM_1C_GUID"]]
    assert got({"!UF_CRM_1C_GUID": ""}) == guid and len(got({"UF_CRM_1C_GUID": ""})) == len(ids) - len(guid)
    phone = comp[1]["PHONE"][0]["VALUE"]
    assert got({"PHONE": phone}) == [1]


def test_datetime_filters_compare_across_offsets(srv, portal):
    comp = portal.table("company")
    pivot = sorted(r["DATE_MODIFY"] for r in comp.values())[len(comp) // 2]
    expect = sorted(i for i, r in comp.items() if r["DATE_MODIFY"] > pivot)
    for spelled in (pivot.isoformat(), pivot.astimezone(tz=None).isoformat(),
                    pivot.astimezone(datetime.now().astimezone().tzinfo).isoformat(),
                    (pivot - timedelta(0)).astimezone(__import__("datetime").timezone.utc).isoformat()):
        res = call(srv, "crm.company.list", {"filter": {">DATE_MODIFY": spelled}, "select": ["ID"],
                                             "order": {"ID": "ASC"}}).json()
        got = [int(r["ID"]) for r in res["result"]]
        while "next" in res:
            res = call(srv, "crm.company.list", {"filter": {">DATE_MODIFY": spelled}, "select": ["ID"],
                                                 "order": {"ID": "ASC"}, "start": res["next"]}).json()
            got += [int(r["ID"]) for r in res["result"]]
        assert got == expect, spelled


def test_order_by_any_field(srv, portal):
    rows = call(srv, "crm.company.list", {"order": {"DATE_MODIFY": "DESC"}, "select": ["ID", "DATE_MODIFY"]}).json()["result"]
    stamps = [datetime.fromisoformat(r["DATE_MODIFY"]) for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    rows = call(srv, "crm.company.list", {"order": {"TITLE": "asc"}, "select": ["TITLE"], "start": -1}).json()["result"]
    assert [r["TITLE"].lower() for r in rows] == sorted(r["TITLE"].lower() for r in rows)


def test_form_get_multipart_and_json_are_equivalent(srv):
    params = {"filter": {">ID": 5, "@ASSIGNED_BY_ID": [2, 3, 5, 6], ">=DATE_MODIFY": "2020-05-01T10:00:00+03:00"},
              "select": ["ID", "TITLE", "PHONE"], "order": {"ID": "DESC"}, "start": 0}
    as_json = call(srv, "crm.company.list", params).json()["result"]
    qs = http_build_query(params)
    as_form = requests.post(srv.webhook_url + "crm.company.list", data=qs, timeout=10,
                            headers={"Content-Type": "application/x-www-form-urlencoded"}).json()["result"]
    as_get = requests.get(srv.webhook_url + "crm.company.list?" + qs, timeout=10).json()["result"]
    files = {k: (None, v) for k, v in (pair.split("=", 1) for pair in qs.split("&"))}
    files = {requests.utils.unquote(k): (None, requests.utils.unquote(v[1])) for k, v in files.items()}
    as_multipart = requests.post(srv.webhook_url + "crm.company.list", files=files, timeout=10).json()["result"]
    upper = call(srv, "crm.company.list", {k.upper(): v for k, v in params.items()}).json()["result"]
    short = requests.get(srv.webhook_url + "crm.company.list?select[]=ID&select[]=TITLE&select[]=PHONE&order[ID]=DESC"
                         "&filter[%3EID]=5&filter[@ASSIGNED_BY_ID][]=2&filter[@ASSIGNED_BY_ID][]=3"
                         "&filter[@ASSIGNED_BY_ID][]=5&filter[@ASSIGNED_BY_ID][]=6"
                         "&filter[%3E%3DDATE_MODIFY]=2020-05-01T10:00:00%2B03:00", timeout=10).json()["result"]
    assert as_json and as_json == as_form == as_get == as_multipart == upper == short


# ---------------------------------------------------------------- batch

def test_batch_references_errors_and_php_quirks(srv, portal):
    body = call(srv, "batch", {"halt": 0, "cmd": {
        "me": "user.current",
        "dep": "department.get?ID=$result[me][UF_DEPARTMENT][0]",
        "p1": "crm.company.list?order[ID]=ASC&start=-1&select[]=ID",
        "p2": "crm.company.list?order[ID]=ASC&start=-1&select[]=ID&filter[>ID]=$result[p1][49][ID]",
        "inv": "crm.item.list?entityTypeId=31&order[id]=ASC&select[]=id",
        "inv2": "crm.item.get?entityTypeId=31&id=$result[inv][items][0][id]",
        "bad": "crm.deal.get?id=999999",
        "deals": "crm.deal.list?select[]=ID",
    }}).json()
    res = body["result"]
    assert set(res) == {"result", "result_error", "result_total", "result_next", "result_time"}
    assert res["result"]["dep"][0]["ID"] == "1"
    p1, p2 = res["result"]["p1"], res["result"]["p2"]
    assert int(p2[0]["ID"]) > int(p1[-1]["ID"])
    assert res["result"]["inv2"]["item"]["id"] == res["result"]["inv"]["items"][0]["id"]
    assert res["result_error"] == {"bad": {"error": "", "error_description": "Not found"}}
    assert res["result_total"]["p1"] == 0 and res["result_total"]["deals"] == len(portal.table("deal"))
    assert res["result_next"] == {"deals": 50}
    assert "bad" not in res["result_time"] and "operating" in res["result_time"]["me"]
    assert portal.stats.by_method["crm.company.list"] == 2


def test_batch_halt_numeric_keys_and_limits(srv, portal):
    requests_before = portal.stats.requests
    body = call(srv, "batch", {"halt": 1, "cmd": ["crm.deal.get?id=999999", "crm.deal.get?id=999998", "user.current"]}).json()
    assert body["result"]["result"] == [] and body["result"]["result_total"] == [] and body["result"]["result_next"] == []
    assert body["result"]["result_error"] == [{"error": "", "error_description": "Not found"}]  # 0..n-1 keys -> list
    body = call(srv, "batch", {"halt": 0, "cmd": ["crm.deal.get?id=999999", "crm.deal.get?id=999998"]}).json()
    assert len(body["result"]["result_error"]) == 2 and isinstance(body["result"]["result_error"], list)
    nested = call(srv, "batch", {"cmd": {"x": "batch?cmd[a]=user.current"}}).json()
    assert nested["result"]["result_error"]["x"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    big = call(srv, "batch", {"cmd": {f"c{i}": "server.time" for i in range(52)}})
    assert big.status_code == 200
    errs = big.json()["result"]["result_error"]
    assert set(errs) == {"c50", "c51"} and errs["c50"]["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
    assert len(big.json()["result"]["result"]) == 50
    missing = call(srv, "batch", {"cmd": {"a": "crm.company.list?start=-1&select[]=ID&filter[ID]=$result[zz][0][ID]"}}).json()
    assert missing["result"]["result"]["a"] == []  # unresolved reference -> "" -> empty-ID filter matches nothing
    assert portal.stats.requests == requests_before + 5  # each batch is one HTTP request
    form = requests.post(srv.webhook_url + "batch", timeout=10, data={
        "halt": "0", "cmd[a]": "crm.company.get?id=1", "cmd[b]": "crm.company.list?filter%5B%3EID%5D=100&select%5B%5D=ID"})
    assert form.json()["result"]["result"]["a"]["ID"] == "1"
    assert all(int(r["ID"]) > 100 for r in form.json()["result"]["result"]["b"])


# ---------------------------------------------------------------- limits and faults

def test_leaky_bucket_answers_503_and_drains(company):
    p = Portal.from_company(company, rate_limit=True)
    clock = FakeTime()
    p.limit_time = clock
    p._bucket_t = clock.t
    p.bucket_size, p.drain_rate = 5, 2.0
    with EmulatorServer(p) as s:
        codes = [call(s, "server.time").status_code for _ in range(7)]
        assert codes == [200] * 6 + [503]
        r = call(s, "batch", {"cmd": {"a": "server.time"}})
        assert r.status_code == 503
        assert r.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        clock.t += 1.0  # drains two
        assert [call(s, "server.time").status_code for _ in range(3)] == [200, 200, 503]
    default = Portal.from_company(company)
    assert (default.bucket_size, default.drain_rate) == (50, 2.0)
    assert (Portal.from_company(company, plan="enterprise").bucket_size) == 250


def test_operating_time_429_until_reset(company):
    p = Portal.from_company(company, rate_limit=False)
    clock = FakeTime()
    p.limit_time = clock
    p.operating_limit = 0.02
    with EmulatorServer(p) as s:
        last = None
        for _ in range(5):  # 5 x 5 ms: the fifth crosses 20 ms and still completes
            r = call(s, "server.time")
            assert r.status_code == 200
            last = r.json()["time"]
        assert last["operating"] > 0.02
        blocked = call(s, "server.time")
        assert blocked.status_code == 429
        assert blocked.json()["error"] == "OPERATION_TIME_LIMIT"
        assert call(s, "user.current").status_code == 200  # other methods are not blocked
        in_batch = call(s, "batch", {"cmd": {"t": "server.time"}}).json()
        assert in_batch["result"]["result_error"]["t"]["error"] == "OPERATION_TIME_LIMIT"
        clock.t = last["operating_reset_at"] + 0.5
        assert call(s, "server.time").status_code == 200


def test_count_cost_is_modelled_and_start_minus_one_is_cheap(company):
    p = Portal.from_company(company, rate_limit=False)
    with EmulatorServer(p) as s:
        counted = call(s, "crm.activity.list", {"select": ["ID"]}).json()["time"]["processing"]
        cheap = call(s, "crm.activity.list", {"select": ["ID"], "start": -1}).json()["time"]["processing"]
        assert counted > cheap
        assert counted >= p.cost_base + len(p.table("activity")) * p.cost_count_row
        assert p.stats.operating["crm.activity.list"] >= counted + cheap - 1e-9


def test_injected_faults(srv, portal):
    portal.inject_fault("crm.company.list", 500, "INTERNAL_SERVER_ERROR", "Internal server error", times=2)
    portal.inject_fault(None, 401, "expired_token", "The access token provided has expired")
    first = call(srv, "user.current")
    assert first.status_code == 401 and first.json()["error"] == "expired_token"
    assert [call(srv, "crm.company.list").status_code for _ in range(3)] == [500, 500, 200]
    portal.inject_fault("crm.deal.get", 503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    body = call(srv, "batch", {"cmd": {"a": "crm.deal.get?id=999999", "b": "server.time"}}).json()
    assert body["result"]["result_error"]["a"]["error"] == "QUERY_LIMIT_EXCEEDED"


# ---------------------------------------------------------------- scale

def test_seeds_10k_companies_and_pages_100k_activities_by_keyset():
    # Speed is measured in bench/sync.py, not asserted here.
    big = generate(companies=10000, activities_per_company=10, stories=False)
    p = Portal.from_company(big, rate_limit=False)
    assert len(p.table("activity")) == 100000
    with EmulatorServer(p) as s:
        with requests.Session() as http:
            http.post(s.webhook_url + "server.time", timeout=10)
            page = http.post(s.webhook_url + "crm.activity.list", timeout=10, json={
                "order": {"ID": "ASC"}, "filter": {">ID": 99000}, "start": -1, "select": ["ID", "OWNER_ID"]}).json()
            assert "total" not in page or page["total"] == 0
            assert [int(r["ID"]) for r in page["result"]] == list(range(99001, 99051))


def test_raw_json_is_php_flavoured(srv):
    raw = call(srv, "crm.company.list", {"select": ["ID"], "filter": {"ID": 999999}}).text
    assert raw.startswith('{"result":[],"total":0,"time":')
    raw = call(srv, "tasks.task.get", {"taskId": 1}).text
    assert '"link":"\\/company\\/personal\\/user\\/' in raw  # PHP escapes slashes
    assert json.loads(raw)["result"]["task"]["creator"]["link"].startswith("/company/personal/user/")


def test_department_get_sorts_with_lowercase_and_filters_with_uppercase_keys(srv, portal):
    rows = call(srv, "department.get", {"sort": "ID", "order": "DESC"}).json()["result"]
    assert [int(r["ID"]) for r in rows] == sorted((int(r["ID"]) for r in rows), reverse=True) and rows
    only = call(srv, "department.get", {"ID": rows[-1]["ID"]}).json()["result"]
    assert [r["ID"] for r in only] == [rows[-1]["ID"]]
