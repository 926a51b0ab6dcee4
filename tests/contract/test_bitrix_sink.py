"""bitrix.sink against the emulated portal: every action type, its remote effect, and reconcile."""

from __future__ import annotations

import pytest

from bitrix.client import BitrixClient
from bitrix.sink import BitrixSink
from connector.config import Bitrix24
from connector.errors import NotFound, PermanentError, Rejected, TransientError
from connector.ports import Context, PlannedAction, SystemClock
from connector.sandbox import generate


@pytest.fixture(scope="module")
def company():
    return generate(companies=25, activities_per_company=2)




@pytest.fixture
def sink(portal):
    ctx = Context(clock=SystemClock())
    cfg = Bitrix24(webhook_url=portal.server.webhook_url)
    s = BitrixSink(cfg, ctx, BitrixClient(cfg, ctx, sleep=lambda _: None, attempts=2))
    s.ctx = ctx  # type: ignore[attr-defined]
    yield s
    s.close()


def action(type_: str, payload: dict, key: str = "forgotten:bitrix24:company:3:2026-11:0") -> PlannedAction:
    return PlannedAction(key=key, rule=key.split(":")[0], type=type_, system="bitrix24",
                         subject_key="bitrix24:company:3", client_key="bitrix24:company:3", payload=payload,
                         reason="test")


def test_supports_the_crm_action_types_only(sink):
    assert all(sink.supports(t) for t in ("task", "field", "reassign", "comment", "notify", "trigger", "workflow", "close_task"))
    assert not sink.supports("sms") and not sink.supports("email")


def test_task_is_created_bound_to_the_client_with_the_marker_and_reconciled(portal, sink, company):
    cid = company.stories["forgotten"]
    a = action("task", {"title": "No contact: Karpaty", "description": "Call the client.",
                        "responsible": "bitrix24:user:5", "deadline": "2026-11-26T18:00:00+02:00",
                        "bindings": [f"bitrix24:company:{cid}", "onec:counterparty:x"]})
    res = sink.execute(a)
    row = portal.table("task")[int(res.remote_id)]
    assert row["TITLE"] == "No contact: Karpaty" and row["RESPONSIBLE_ID"] == 5
    assert row["UF_CRM_TASK"] == [f"CO_{cid}"] and a.marker in row["DESCRIPTION"]
    assert row["DEADLINE"].isoformat().startswith("2026-11-26T18:00:00")
    found = sink.reconcile(a)
    assert found is not None and found.remote_id == res.remote_id
    other = action("task", dict(a.payload), key="forgotten:bitrix24:company:3:2026-12:0")
    assert sink.reconcile(other) is None  # certainly not done: the executor may send it


def test_task_create_failing_ambiguously_is_not_doubled(portal, sink, company):
    cid = company.stories["lost_warm"]
    a = action("task", {"title": "Win back", "description": "", "responsible": "bitrix24:user:6",
                        "deadline": "2026-11-26T18:00:00+02:00", "bindings": [f"bitrix24:company:{cid}"]})
    portal.inject_fault("tasks.task.add", 500, "INTERNAL_SERVER_ERROR", "Internal server error")
    before = sink.ctx.counter("bitrix24").requests
    with pytest.raises(TransientError) as e:
        sink.execute(a)  # not retried in place: a 5xx may have created it
    assert e.value.ambiguous and sink.ctx.counter("bitrix24").requests - before == 1
    assert sink.reconcile(a) is None  # the executor looks first: it did not land
    sink.execute(a)
    assert sum(a.marker in (t.get("DESCRIPTION") or "") for t in portal.table("task").values()) == 1


def test_many_actions_go_in_one_batch_and_a_rejected_command_fails_alone(portal, sink, company):
    cids = [company.stories[s] for s in ("lost_warm", "lost_cold", "debtor")]
    acts = [action("task", {"title": f"T{i}", "responsible": "bitrix24:user:6", "bindings": [f"bitrix24:company:{c}"]},
                   key=f"lost:bitrix24:company:{c}:2026-11-01#0:0") for i, c in enumerate(cids)]
    acts.append(action("field", {"entity": "bitrix24:company:999999", "fields": {"UF_CRM_TEMPERATURE": "x"}}, key="r:s:p:1"))
    acts.append(action("comment", {"entity": f"bitrix24:company:{cids[0]}", "text": "note"}, key="r:s:p:2"))
    before = sink.ctx.counter("bitrix24").requests
    out = sink.execute_batch(acts)
    assert sink.ctx.counter("bitrix24").requests - before == 1
    assert isinstance(out["r:s:p:1"], NotFound)
    assert all(out[a.key].remote_key for a in acts if a.key != "r:s:p:1")
    found = sink.reconcile_batch(acts[:3] + [acts[4]])
    assert all(found[a.key] is not None and found[a.key].remote_id == out[a.key].remote_id for a in acts[:3] + [acts[4]])


def test_a_batch_the_portal_applied_but_answered_late_is_ambiguous_and_found_again(portal, sink, company):
    import time as _time

    cid = company.stories["kept_by_future_task"]
    acts = [action("task", {"title": f"Late {i}", "responsible": "bitrix24:user:6", "bindings": [f"bitrix24:company:{cid}"]},
                   key=f"forgotten:bitrix24:company:{cid}:2026-09-0{i}:0") for i in range(1, 4)]

    def slow(method, status, body):
        _time.sleep(1.5)  # longer than the client's timeout: the write landed, the answer did not
        return None

    ctx = Context(clock=SystemClock())
    cfg = Bitrix24(webhook_url=portal.server.webhook_url, timeout=1)
    hasty = BitrixSink(cfg, ctx, BitrixClient(cfg, ctx, sleep=lambda _: None, attempts=2))
    portal.after_request = slow
    try:
        out = hasty.execute_batch(acts)
    finally:
        portal.after_request = None
        hasty.close()
    assert all(isinstance(out[a.key], TransientError) and out[a.key].ambiguous for a in acts)
    found = sink.reconcile_batch(acts)
    assert all(found[a.key] is not None for a in acts)  # nothing is created twice: the executor adopts them


def test_close_task_completes_the_connectors_task_with_a_result_comment(portal, sink, company):
    cid = company.stories["lost_cold"]
    t = sink.execute(action("task", {"title": "Win back", "responsible": "bitrix24:user:6", "bindings": [f"bitrix24:company:{cid}"]}))
    mirror = [r for r in portal.table("activity").values() if r.get("ASSOCIATED_ENTITY_ID") == int(t.remote_id)]
    assert len(mirror) == 1 and mirror[0]["TYPE_ID"] == 3 and mirror[0]["COMPLETED"] == "N"  # how the portal shows a CRM task
    c = action("close_task", {"task": t.remote_key, "text": "Closed automatically: bought again on 2026-11-20."}, key="lost:x:p:x0")
    assert sink.reconcile(c) is None
    sink.execute(c)
    assert portal.table("task")[int(t.remote_id)]["STATUS"] == 5 and mirror[0]["COMPLETED"] == "Y"
    assert portal.task_comments[-1]["POST_MESSAGE"].startswith("Closed automatically: bought again")
    assert sink.reconcile(c) is not None


def test_field_change_and_reconcile_by_reading_back(portal, sink, company):
    cid = company.stories["lost_cold"]
    a = action("field", {"entity": f"bitrix24:company:{cid}", "fields": {"UF_CRM_TEMPERATURE": "warm"}})
    assert sink.reconcile(a) is None  # the seed has it cold
    res = sink.execute(a)
    assert res.remote_id == str(cid) and portal.table("company")[cid]["UF_CRM_TEMPERATURE"] == "warm"
    assert sink.reconcile(a) is not None


def test_reassign_moves_every_entity_in_one_batch(portal, sink, company):
    cid = company.stories["forgotten"]
    deals = [d.id for d in company.deals if d.company_id == cid]
    contacts = [c.id for c in company.contacts if c.company_id == cid]
    keys = [f"bitrix24:company:{cid}"] + [f"bitrix24:deal:{d}" for d in deals] + \
        [f"bitrix24:contact:{c}" for c in contacts] + ["bitrix24:deal:999999"]
    a = action("reassign", {"entities": keys, "to": "bitrix24:user:7", "from": "bitrix24:user:3"})
    assert sink.reconcile(a) is None
    before = sink.ctx.counter("bitrix24").requests
    res = sink.execute(a)
    assert sink.ctx.counter("bitrix24").requests - before == 1
    assert portal.table("company")[cid]["ASSIGNED_BY_ID"] == 7
    assert all(portal.table("deal")[d]["ASSIGNED_BY_ID"] == 7 for d in deals)
    assert all(portal.table("contact")[c]["ASSIGNED_BY_ID"] == 7 for c in contacts)
    assert "not found: deal 999999" in res.detail
    assert sink.reconcile(a) is not None


def test_comment_carries_the_marker_and_is_reconciled(portal, sink, company):
    cid = company.stories["unpaid"]
    a = action("comment", {"entity": f"bitrix24:company:{cid}", "text": "Client released to Iryna."})
    assert sink.reconcile(a) is None
    res = sink.execute(a)
    row = portal.table("comment")[int(res.remote_id)]
    assert row["ENTITY_TYPE"] == "company" and row["ENTITY_ID"] == cid
    assert row["COMMENT"].startswith("Client released to Iryna.") and a.marker in row["COMMENT"]
    assert sink.reconcile(a).remote_id == res.remote_id


def test_notify_trigger_and_workflow_reach_the_portal_but_cannot_be_reconciled(portal, sink, company):
    cid = company.stories["unpaid"]
    n = action("notify", {"user": "bitrix24:user:1", "text": "Invoice [B]#17[/B] is overdue"})
    res = sink.execute(n)
    assert res.status == "sent" and portal.table("notify")[int(res.remote_id)]["MESSAGE"] == "Invoice [B]#17[/B] is overdue"
    t = action("trigger", {"entity": f"bitrix24:deal:{company.deals[0].id}", "code": "nwly5"})
    assert sink.execute(t).remote_id == f"DEAL_{company.deals[0].id}"
    assert [(r["TARGET"], r["CODE"]) for r in portal.table("trigger").values()] == [(f"DEAL_{company.deals[0].id}", "nwly5")]
    w = action("workflow", {"entity": f"bitrix24:company:{cid}", "template_id": 42,
                            "parameters": {"resp_employee": "user_5"}})
    sink.execute(w)
    (wf,) = portal.table("workflow").values()
    assert wf["DOCUMENT_ID"] == ["crm", "CCrmDocumentCompany", f"COMPANY_{cid}"] and wf["TEMPLATE_ID"] == 42
    for a in (n, t, w):
        with pytest.raises(PermanentError, match="cannot reconcile"):
            sink.reconcile(a)


def test_a_notification_that_may_have_gone_out_is_not_resent(portal, sink):
    portal.inject_fault("im.notify.system.add", 500, "INTERNAL_SERVER_ERROR", "Internal server error")
    before = sink.ctx.counter("bitrix24").requests
    with pytest.raises(PermanentError, match="not resent") as e:
        sink.execute(action("notify", {"user": "bitrix24:user:1", "text": "hello"}))
    assert e.value.ambiguous and sink.ctx.counter("bitrix24").requests - before == 1


def test_rate_limited_create_is_retried_in_place(portal, sink, company):
    portal.inject_fault("crm.timeline.comment.add", 503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    res = sink.execute(action("comment", {"entity": f"bitrix24:company:{company.stories['debtor']}", "text": "x"}))
    assert int(res.remote_id) in portal.table("comment")


def test_unknown_entity_is_not_found_and_names_the_object(sink):
    with pytest.raises(NotFound, match=r"bitrix24 crm\.company\.update id=999999"):
        sink.execute(action("field", {"entity": "bitrix24:company:999999", "fields": {"UF_CRM_TEMPERATURE": "x"}}))
    with pytest.raises(Rejected):
        sink.execute(action("task", {"title": "x", "responsible": "onec:user:abc", "bindings": []}))


def test_an_unpaid_invoice_takes_a_bound_task_a_trigger_and_a_workflow(portal, sink, company):
    inv = next(i for i in company.invoices if i.company_id == company.stories["unpaid"])
    key = f"bitrix24:invoice:{inv.id}"
    res = sink.execute(action("task", {"title": "Unpaid", "description": "", "responsible": "bitrix24:user:5",
                                       "bindings": [key, f"bitrix24:company:{inv.company_id}"]}))
    assert portal.table("task")[int(res.remote_id)]["UF_CRM_TASK"] == [f"SI_{inv.id}", f"CO_{inv.company_id}"]
    assert sink.execute(action("trigger", {"entity": key, "code": "pay"})).remote_id == f"SMART_INVOICE_{inv.id}"
    sink.execute(action("workflow", {"entity": key, "template_id": 7}))
    (wf,) = portal.table("workflow").values()
    assert wf["DOCUMENT_ID"] == ["crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice",
                                 f"SMART_INVOICE_{inv.id}"]
    with pytest.raises(Rejected, match="invoice is not supported"):
        sink.execute(action("comment", {"entity": key, "text": "x"}))
