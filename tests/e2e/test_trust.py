"""Trust in production: one runner per store, exactly once across processes and stores, the
connector never mistaking its own writes for a manager's contact, episodes that end, simulation
that moves nothing a real run depends on, refusals that are loud."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
from collections import Counter
from datetime import datetime, timedelta

import pytest

from connector.demo import Sandbox
from connector.sandbox import generate
from tests.e2e.conftest import ANCHOR, DEMO, ROOT, Env

# The trust tests' own config: the sandbox's connections, and rules written for each test
# (independent of the wording of config/demo.yaml).
CONNECTIONS = DEMO.read_text(encoding="utf-8").split("\nrules:", 1)[0].replace("language: uk", "language: en")  # mechanics, in English
RULES = """
rules:
  - name: forgotten
    type: forgotten
    inactive_days: {inactive}
    actions:
      - task: {{title: "No contact: {{{{ client.title }}}}", deadline: 3 workdays}}{forgotten_extra}
  - name: release
    type: release
    after: forgotten
    grace_days: 14
    reassign: {{to: {pool}}}
    actions:
      - notify: [supervisor, previous_responsible]
  - name: lost
    type: lost
    min_purchases: 2
    after_days: 180
    cadence: {{field: UF_CRM_TEMPERATURE, days: {{warm: 14, cold: 30}}, default_days: 30}}
    actions:
      - task: {{title: "Win back: {{{{ client.title }}}} #{{{{ callback_number }}}}", deadline: 1 workdays}}{lost_extra}
  - name: unpaid
    type: unpaid
    overdue_days: 3
    actions:
      - task: {{title: "Unpaid: {{{{ invoice.title }}}}", deadline: 1 workdays}}
  - name: missed_call
    type: missed_call
    actions:
      - sms: {{text: "Sorry we missed your call."}}
      - task: {{title: "Call back {{{{ call.phone }}}}", deadline: 2 hours}}
"""


def variant(tmp, name: str, *, inactive: int = 60, pool: str = "[7, 9]", forgotten_extra: str = "", lost_extra: str = "",
            safety: str | None = None) -> str:
    text = CONNECTIONS
    if safety is not None:
        text = re.sub(r"\nsafety: .*\n", "\n" + safety + "\n", text)
    text += RULES.format(inactive=inactive, pool=pool, forgotten_extra=forgotten_extra, lost_extra=lost_extra)
    path = tmp / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


MANY = {"inactive": 7, "safety": "safety: {max_actions_per_run: 5000, max_share: 1.0}\nlease_seconds: 5"}


def markers(portal) -> Counter:
    """How many tasks and timeline comments carry each connector marker."""
    import re

    found: Counter = Counter()
    for t in portal.table("task").values():
        for m in re.findall(r"cn-[0-9a-f]{12}", t.get("DESCRIPTION") or ""):
            found[("task", m)] += 1
    for c in portal.table("comment").values():
        for m in re.findall(r"cn-[0-9a-f]{12}", c.get("COMMENT") or ""):
            found[("comment", m)] += 1
    return found


@pytest.fixture
def big(tmp_path):
    with Sandbox(company=generate(companies=300)) as sb:
        env = {**os.environ, **sb.env, "CONNECTOR_STORE": f"sqlite:///{tmp_path / 'big.db'}", "PYTHONPATH": str(ROOT)}
        yield Env(sb, env, tmp_path)


def test_two_runs_on_one_store_one_reports_the_holder_and_nothing_is_created_twice(big):
    portal = big.service("portal")
    cfg = variant(big.tmp, "many", **MANY)
    first = big.spawn("run", cfg, "--once", "--now", ANCHOR)
    second = big.spawn("run", cfg, "--once", "--now", ANCHOR)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 4], outs
    refused = outs[0] if first.returncode == 4 else outs[1]
    assert "store is held by PID" in refused[1]
    counts = markers(portal)
    tasks = [m for (kind, m) in counts if kind == "task"]
    assert len(tasks) >= 200 and set(counts.values()) == {1}


def test_a_holder_killed_mid_run_is_taken_over_and_nothing_is_created_twice(big):
    portal = big.service("portal")
    cfg = variant(big.tmp, "many", **MANY)
    proc = big.spawn("run", cfg, "--once", "--now", ANCHOR)
    seen = {"writes": 0}

    def kill_on_second_write(method, status, body):
        if method == "batch" and any(str(k).startswith("a0_") for k in (body.get("result", {}).get("result") or {})):
            seen["writes"] += 1
            if seen["writes"] == 2:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        return None

    portal.after_request = kill_on_second_write
    proc.communicate(timeout=300)
    portal.after_request = None
    assert proc.returncode == -9
    half = len(markers(portal))
    r = big.cli("run", cfg, "--once", "--now", ANCHOR, "--wait", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    counts = markers(portal)
    assert len(counts) > half >= 50 and set(counts.values()) == {1}
    assert "adopted" in r.stdout


def test_a_fresh_store_against_the_same_portal_creates_nothing_twice(sandbox):
    portal = sandbox.service("portal")
    turbosms = sandbox.service("turbosms")
    cfg = variant(sandbox.tmp, "fresh")
    r = sandbox.cli("run", cfg, "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    made, sent = markers(portal), len(turbosms.outbox)
    assert made and sent
    os.remove(sandbox.env["CONNECTOR_STORE"].removeprefix("sqlite:///"))  # a restore, a move to PostgreSQL...
    r = sandbox.cli("run", cfg, "--once", "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    # tasks and comments are adopted from the synced data; TurboSMS answers the repeated sequence_id
    # with the earlier result (507) and sends nothing
    assert markers(portal) == made and len(turbosms.outbox) == sent
    assert "adopted" in r.stdout


def test_the_connectors_own_comment_is_not_contact_so_the_client_is_still_released(sandbox):
    portal = sandbox.service("portal")
    cid = sandbox.sb.company.stories["forgotten"]
    cfg = variant(sandbox.tmp, "comment",
                  forgotten_extra='\n      - comment: "Forgotten for {{ days }} days: a task went to {{ manager.name }}."')
    assert sandbox.cli("run", cfg, "--once", "--now", ANCHOR).returncode == 0
    assert any(c["ENTITY_ID"] == cid and "[cn-" in c["COMMENT"] for c in portal.table("comment").values())
    # the portal also lists the connector's task as a CRM activity: neither counts as the manager's contact
    assert any(a.get("TYPE_ID") == 3 and a.get("OWNER_ID") == cid for a in portal.table("activity").values())
    later = (datetime.fromisoformat(ANCHOR) + timedelta(days=16)).isoformat()
    r = sandbox.cli("run", cfg, "--once", "--now", later)
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(portal.table("company")[cid]["ASSIGNED_BY_ID"]) in ("7", "9")


def test_buying_again_closes_the_win_back_tasks_and_resets_the_label_and_paying_closes_the_unpaid_task(sandbox):
    portal = sandbox.service("portal")
    company = sandbox.sb.company
    portal.define_uf("company", "UF_CRM_STATE")
    cfg = variant(sandbox.tmp, "state", lost_extra="\n      - field: {UF_CRM_STATE: LOST}\n    on_clear: {field: {UF_CRM_STATE: ACTIVE}}")
    assert sandbox.cli("run", cfg, "--once", "--now", ANCHOR).returncode == 0
    warm = company.stories["lost_warm"]
    assert portal.table("company")[warm]["UF_CRM_STATE"] == "LOST"
    win_back = [t for t in portal.table("task").values() if f"CO_{warm}" in (t.get("UF_CRM_TASK") or []) and "[cn-" in t["DESCRIPTION"]]
    assert win_back and all(t["STATUS"] != 5 for t in win_back)
    # the client buys again, and the unpaid invoice is paid
    deal = portal.add("deal", {"TITLE": "Repeat order", "COMPANY_ID": warm, "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S",
                               "OPPORTUNITY": 9000, "CURRENCY_ID": "UAH", "ASSIGNED_BY_ID": 6, "CLOSED": "Y",
                               "CLOSEDATE": datetime.fromisoformat(ANCHOR) + timedelta(hours=1)})
    assert deal
    inv = next(i for i in company.invoices if i.company_id == company.stories["unpaid"])
    paid_stage = next(s["STATUS_ID"] for s in portal.table("status").values()
                      if str(s.get("ENTITY_ID", "")).startswith("SMART_INVOICE_STAGE") and s.get("SEMANTICS") == "S")
    portal.touch("invoice", inv.id, stageId=paid_stage)
    later = (datetime.fromisoformat(ANCHOR) + timedelta(days=1)).isoformat()
    r = sandbox.cli("run", cfg, "--once", "--now", later)
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(portal.table("task")[t["ID"]]["STATUS"] == 5 for t in win_back)
    assert portal.table("company")[warm]["UF_CRM_STATE"] == "ACTIVE"
    unpaid = [t for t in portal.table("task").values() if t["TITLE"] == f"Unpaid: {inv.title}" and "[cn-" in t["DESCRIPTION"]]
    assert len(unpaid) == 1 and unpaid[0]["STATUS"] == 5
    assert any("Closed automatically" in c["POST_MESSAGE"] for c in portal.task_comments)
    assert re.search(r"[1-9]\d* episodes ended", r.stdout)


def _times_in_cursors(db: str) -> list[tuple[str, datetime]]:
    """Every moment written into a stored cursor (ISO strings and Unix seconds), per stream."""
    import re

    out = []
    with sqlite3.connect(db) as c:
        for system, stream, cur in c.execute("SELECT system, stream, cursor FROM cursors"):
            text = str(cur or "")
            for iso in re.findall(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[+-]\d{2}:?\d{2}|Z)?", text):
                t = datetime.fromisoformat(iso.replace("Z", "+00:00").replace(" ", "T"))
                out.append((f"{system}:{stream}", t if t.tzinfo else t.astimezone()))
            for unix in re.findall(r"\b1[6-9]\d{8}\b", text):
                out.append((f"{system}:{stream}", datetime.fromtimestamp(int(unix)).astimezone()))
    return out


def test_a_plan_in_the_future_moves_no_cursor_past_the_real_clock_and_the_next_sync_skips_nothing(sandbox):
    db = sandbox.env["CONNECTOR_STORE"].removeprefix("sqlite:///")
    assert sandbox.cli("sync", str(DEMO), "--now", ANCHOR).returncode == 0
    future = (datetime.fromisoformat(ANCHOR) + timedelta(days=30)).isoformat()
    r = sandbox.cli("plan", str(DEMO), "--now", future, "--json")
    assert r.returncode == 0, r.stderr
    real = datetime.now().astimezone() + timedelta(minutes=1)
    stamps = _times_in_cursors(db)
    assert any(s.startswith("binotel") for s, _ in stamps)
    assert all(t <= real for _, t in stamps), [(s, t.isoformat()) for s, t in stamps if t > real]
    # a call made now arrives with the next real sync: nothing was skipped
    emulator = sandbox.service("emulator")
    emulator.advance(datetime.now().timestamp() - emulator.now())  # the PBX's clock is the real one from here
    start = datetime.now().astimezone() - timedelta(minutes=10)
    emulator.add_call({"companyID": "1", "generalCallID": "990001", "callID": "990001", "startTime": str(int(start.timestamp())),
                       "callType": "0", "internalNumber": "901", "externalNumber": "0671112233", "waitsec": 5, "billsec": 42,
                       "disposition": "ANSWER", "recordingStatus": "uploaded", "isNewCall": "1", "whoHungUp": "",
                       "customerData": "", "employeeData": {}, "pbxNumberData": {"number": "0443334455"}})
    assert sandbox.cli("sync", str(DEMO)).returncode == 0
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM calls WHERE source_id = '990001'").fetchone()[0] == 1


def test_a_rule_refused_by_the_brake_is_named_and_run_exits_3(sandbox):
    cfg = variant(sandbox.tmp, "brake", inactive=1, safety="safety: {max_actions_per_run: 500, max_share: 0.25, min_clients_for_share: 5}")
    r = sandbox.cli("run", cfg, "--once", "--now", ANCHOR)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "REFUSED" in r.stdout and "forgotten" in r.stdout and "max_share" in r.stdout
    j = json.loads(sandbox.cli("plan", cfg, "--json", "--now", ANCHOR).stdout)
    assert any("forgotten" in x for x in j["refusals"])


def test_an_empty_release_pool_is_a_refusal_with_the_clients_name(sandbox):
    cid = sandbox.sb.company.stories["forgotten"]
    cfg = variant(sandbox.tmp, "pool", pool="[4, 999]")
    assert sandbox.cli("run", cfg, "--once", "--now", ANCHOR).returncode == 0
    later = (datetime.fromisoformat(ANCHOR) + timedelta(days=16)).isoformat()
    r = sandbox.cli("run", cfg, "--once", "--now", later)
    title = sandbox.sb.company.company(cid).title
    assert r.returncode == 3 and "no active manager in the pool" in r.stdout and title in r.stdout


def test_a_plan_without_sync_derives_the_evidence_for_later_runs_unless_another_process_holds_the_store(sandbox):
    import socket

    db = sqlite3.connect(str(sandbox.tmp / "e2e.db"), isolation_level=None)
    assert sandbox.cli("sync", str(DEMO), "--now", ANCHOR).returncode == 0

    def dirty() -> str:
        return db.execute("SELECT value FROM kv WHERE name = 'evidence.dirty'").fetchone()[0]

    db.execute("UPDATE kv SET value = '1' WHERE name = 'evidence.dirty'")  # as after a sync that changed something
    free = sandbox.cli("plan", str(DEMO), "--no-sync", "--now", ANCHOR)
    assert free.returncode == 0, free.stderr[-2000:]
    assert dirty() == "0"  # derived once, under the lease: the next run reads it

    db.execute("UPDATE kv SET value = '1' WHERE name = 'evidence.dirty'")
    later = (datetime.now() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    db.execute("INSERT INTO lease (name, owner, pid, host, acquired_at, heartbeat_at, expires_at) VALUES "
               "('runner', 'another', ?, ?, ?, ?, ?)", (os.getpid(), socket.gethostname(), later, later, later))
    held = sandbox.cli("plan", str(DEMO), "--no-sync", "--now", ANCHOR)
    assert held.returncode == 0, held.stderr[-2000:]
    assert dirty() == "1"  # another process holds the store: the plan derived a private copy and changed nothing
    assert held.stdout == free.stdout
