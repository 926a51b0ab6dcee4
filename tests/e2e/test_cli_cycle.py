"""The product as an admin uses it: plan, run, rerun, simulate time, fail safely, survive kill -9."""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from datetime import datetime, timedelta

from tests.e2e.conftest import ANCHOR, DEMO


def connector_tasks(portal) -> list[dict]:
    return [t for t in portal.table("task").values() if "[cn-" in (t.get("DESCRIPTION") or "")]


def test_plan_writes_nothing_run_writes_what_plan_showed_and_a_rerun_writes_nothing(sandbox):
    portal = sandbox.service("portal")
    turbosms = sandbox.service("turbosms")
    tasks_before = len(portal.table("task"))
    plan = sandbox.plan_json()
    new = [a for a in plan["actions"] if a["state"] == "new"]
    assert {a["rule"] for a in new} == {"forgotten", "lost", "unpaid", "debtors", "missed_call", "invoice_sync"}
    assert len(portal.table("task")) == tasks_before and turbosms.outbox == []  # plan wrote nothing

    r = sandbox.cli("run", str(DEMO), "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    planned_titles = sorted(a["payload"]["title"] for a in new if a["type"] == "task")
    assert sorted(t["TITLE"] for t in connector_tasks(portal)) == planned_titles
    planned_sms = sorted((a["payload"]["phone"], a["payload"]["text"]) for a in new if a["type"] == "sms")
    assert sorted(("+" + m.phone, m.text) for m in turbosms.outbox) == planned_sms

    r = sandbox.cli("run", str(DEMO), "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "з них нових: 0" in r.stdout
    assert sorted(t["TITLE"] for t in connector_tasks(portal)) == planned_titles
    assert len(turbosms.outbox) == len(planned_sms)


def test_sixteen_days_later_releases_the_ignored_client_and_repeats_the_warm_callback(sandbox):
    portal = sandbox.service("portal")
    company = sandbox.sb.company
    forgotten_id = company.stories["forgotten"]
    assert sandbox.cli("run", str(DEMO), "--once", "--now", ANCHOR).returncode == 0
    owner_before = portal.table("company")[forgotten_id]["ASSIGNED_BY_ID"]

    later = (datetime.fromisoformat(ANCHOR) + timedelta(days=16)).isoformat()
    r = sandbox.cli("run", str(DEMO), "--once", "--now", later)
    assert r.returncode == 0, r.stdout + r.stderr
    owner_after = portal.table("company")[forgotten_id]["ASSIGNED_BY_ID"]
    assert str(owner_before) != str(owner_after) and str(owner_after) in ("7", "9")
    comments = [c for c in portal.table("comment").values() if c["ENTITY_ID"] == forgotten_id and "[cn-" in c["COMMENT"]]
    assert len(comments) == 1
    titles = Counter(t["TITLE"] for t in connector_tasks(portal))
    warm = company.company(company.stories["lost_warm"]).title
    assert titles[f"Повернути клієнта: {warm} (дзвінок №1, кожні 14 дн.)"] == 1
    assert titles[f"Повернути клієнта: {warm} (дзвінок №2, кожні 14 дн.)"] == 1
    cold = company.company(company.stories["lost_cold"]).title
    assert titles[f"Повернути клієнта: {cold} (дзвінок №1, кожні 30 дн.)"] == 1
    assert titles[f"Повернути клієнта: {cold} (дзвінок №2, кожні 30 дн.)"] == 0  # cold waits 30 days

    r = sandbox.cli("run", str(DEMO), "--once", "--now", later)  # and nothing twice
    assert r.returncode == 0 and Counter(t["TITLE"] for t in connector_tasks(portal)) == titles


def test_a_failing_source_writes_nothing_and_exits_non_zero(sandbox):
    portal = sandbox.service("portal")
    turbosms = sandbox.service("turbosms")
    tasks_before = len(portal.table("task"))
    portal.inject_fault(None, 401, "NO_AUTH_FOUND", "Wrong authorization data", times=1000)
    r = sandbox.cli("run", str(DEMO), "--once", "--now", ANCHOR)
    assert r.returncode == 1
    assert "правила не перевірялися" in r.stdout
    assert "sandboxsecret0001" not in r.stdout + r.stderr
    assert len(portal.table("task")) == tasks_before and turbosms.outbox == []


def test_kill_9_after_the_portal_applied_a_batch_then_rerun_leaves_exactly_one_of_each(sandbox):
    portal = sandbox.service("portal")
    turbosms = sandbox.service("turbosms")
    plan = sandbox.plan_json()
    new = [a for a in plan["actions"] if a["state"] == "new"]
    proc = sandbox.spawn("run", str(DEMO), "--once", "--now", ANCHOR)

    def kill_before_answering(method, status, body):
        # the portal has applied the write batch; the connector dies before it can journal the results
        if method == "batch" and any(str(k).startswith("a0_") for k in (body.get("result", {}).get("result") or {})):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        return None

    portal.after_request = kill_before_answering
    proc.wait(timeout=240)
    portal.after_request = None
    assert proc.returncode == -9, proc.stdout.read() + proc.stderr.read()
    assert connector_tasks(portal)  # the killed run's batch did land
    r = sandbox.cli("run", str(DEMO), "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^  \w+: .*вже було [1-9]", r.stdout, re.M), r.stdout  # a rule's tasks found already made
    titles = Counter(t["TITLE"] for t in connector_tasks(portal))
    assert sorted(titles) == sorted(a["payload"]["title"] for a in new if a["type"] == "task")
    assert set(titles.values()) == {1}
    phones = Counter(m.phone for m in turbosms.outbox)
    assert set(phones.values()) <= {1}
    status = sandbox.cli("status", str(DEMO))
    assert status.returncode == 0 and "виконано" in status.stdout  # the journal states


def test_missed_call_one_sms_and_one_task_and_none_for_the_call_called_back(sandbox):
    company = sandbox.sb.company
    missed = company.company(company.stories["missed_call"])
    called_back = company.company(company.stories["called_back"])
    plan = sandbox.plan_json()
    mc = [a for a in plan["actions"] if a["rule"] == "missed_call"]
    assert sorted(a["type"] for a in mc) == ["sms", "task"]
    assert all(a["client"] == missed.title for a in mc)
    assert not any(a["client"] == called_back.title for a in plan["actions"])


def test_calls_count_as_contact_and_1c_feeds_debtors_and_lost(sandbox):
    company = sandbox.sb.company
    plan = sandbox.plan_json()
    forgotten = {a["client"] for a in plan["actions"] if a["rule"] == "forgotten"}
    assert company.company(company.stories["phone_only"]).title not in forgotten  # calls count as contact
    assert company.company(company.stories["forgotten"]).title in forgotten
    assert company.company(company.stories["kept_by_future_task"]).title not in forgotten
    assert company.company(company.stories["comment_counts"]).title not in forgotten
    debt = [a for a in plan["actions"] if a["rule"] == "debtors"]
    assert debt and debt[0]["client"] == company.company(company.stories["debtor"]).title
    lost = {a["client"] for a in plan["actions"] if a["rule"] == "lost"}
    assert company.company(company.stories["lost_from_1c"]).title in lost


def test_validate_reports_file_line_and_field_and_exits_2(sandbox):
    bad = sandbox.tmp / "bad.yaml"
    bad.write_text(DEMO.read_text(encoding="utf-8").replace("inactive_days: 60", "inactive_dayz: 60"), encoding="utf-8")
    r = sandbox.cli("validate", str(bad))
    assert r.returncode == 2
    assert f"{bad}:" in r.stderr and "rules[0].inactive_dayz: unknown key" in r.stderr
    r = sandbox.cli("run", str(bad), "--once")
    assert r.returncode == 2


def test_debug_logs_of_a_whole_run_never_contain_a_secret(sandbox):
    r = sandbox.cli("-v", "run", str(DEMO), "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert "DEBUG" in out  # the debug log was really on
    for name in ("BITRIX24_WEBHOOK_URL", "ONEC_PASSWORD", "BINOTEL_SECRET", "TURBOSMS_TOKEN"):
        value = sandbox.env[name]
        secret = value.rstrip("/").rsplit("/", 1)[-1] if name == "BITRIX24_WEBHOOK_URL" else value
        assert secret not in out, name
