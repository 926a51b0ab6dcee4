"""1C payments close Bitrix24 invoices: exactly once across a kill -9, never on a partial payment."""

from __future__ import annotations

import os
import signal

from tests.e2e.conftest import ANCHOR, DEMO


def test_a_1c_payment_closes_the_invoice_exactly_once_across_a_kill_9_and_a_partial_payment_does_not(sandbox):
    portal = sandbox.service("portal")
    company = sandbox.sb.company
    full, part = [i for i in company.invoices if i.company_id == company.stories["paid_in_1c"]]
    deal = next(d for d in company.deals if d.company_id == company.stories["paid_in_1c"])

    plan = sandbox.plan_json()
    moves = [a for a in plan["actions"] if a["rule"] == "invoice_sync"]
    assert [(a["type"], a["payload"].get("invoice") or a["payload"].get("deal")) for a in moves] == [
        ("invoice_stage", f"bitrix24:invoice:{full.id}"), ("deal_stage", f"bitrix24:deal:{deal.id}")]
    assert f"INV-{full.id:05d}" in moves[0]["reason"] and "ПН-" in moves[0]["reason"]  # the 1C document is the reason
    assert portal.stats.by_method["crm.item.update"] == 0  # plan wrote nothing

    proc = sandbox.spawn("run", str(DEMO), "--once", "--now", ANCHOR)

    def kill_after_the_move(method, status, body):
        # the portal has moved the invoice; the connector dies before it can journal the result
        results = (body.get("result") or {}).get("result") if method == "batch" else None
        for r in (results.values() if isinstance(results, dict) else results or []):
            if isinstance(r, dict) and isinstance(r.get("item"), dict) and r["item"].get("id") == full.id:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        return None

    portal.after_request = kill_after_the_move
    try:
        proc.wait(timeout=240)
    finally:
        portal.after_request = None
    assert proc.returncode == -9, proc.stdout.read() + proc.stderr.read()
    assert portal.table("invoice")[full.id]["stageId"] == "DT31_1:P"  # the killed run's write did land
    assert portal.stats.by_method["crm.item.update"] == 1

    r = sandbox.cli("run", str(DEMO), "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert portal.stats.by_method["crm.item.update"] == 1  # found by reading it back, not moved again
    assert portal.table("deal")[deal.id]["STAGE_ID"] == "WON"  # the deal followed its last invoice
    assert portal.table("invoice")[part.id]["stageId"] == "DT31_1:S"  # paid in part in 1C: not closed

    r = sandbox.cli("run", str(DEMO), "--once", "--now", ANCHOR)
    assert r.returncode == 0 and "з них нових: 0" in r.stdout, r.stdout  # the config speaks Ukrainian
    assert portal.stats.by_method["crm.item.update"] == 1 and portal.stats.by_method["crm.deal.update"] == 1
