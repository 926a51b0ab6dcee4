"""End-to-end: the connector installed as the portal's local application (the CLI as subprocesses
against the sandbox): install -> robots and triggers registered -> a rule fires "Client forgotten"
-> the portal's robot asks "pick the next manager" and gets a pool user, once per event_token; a
forged call is refused; a PBX call lands on the client card once across a kill -9."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import requests

from bitrix import app as A
from connector.config import Bitrix24App
from tests.e2e.conftest import ANCHOR, ROOT, Env

CLIENT_ID = "local.65f1c0a2b3d4e5.00000016"
SECRET = "app-secret-for-issue-16"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(env: Env, name: str, *, rules: str = "", binotel: bool = False, lease: bool = False) -> tuple[str, str]:
    portal = env.service("portal")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    text = f"""
timezone: Europe/Kyiv
store: "${{CONNECTOR_STORE}}"
phone_region: UA
bitrix24:
  fields: [UF_CRM_TEMPERATURE]
  app:
    client_id: {CLIENT_ID}
    client_secret: {SECRET}
    public_url: "{base}"
    listen: "127.0.0.1:{port}"
    token_url: "{portal.base_url}/oauth/token/"
messaging:
  sms: {{provider: turbosms, token: "${{TURBOSMS_TOKEN}}", sender: MyShop, url: "${{TURBOSMS_URL}}"}}
people: {{supervisor: 1}}
safety: {{max_actions_per_run: 500, max_share: 1.0}}
"""
    if lease:
        text += "lease_seconds: 5\n"
    if binotel:
        text += """binotel:
  key: "${BINOTEL_KEY}"
  secret: "${BINOTEL_SECRET}"
  url: "${BINOTEL_URL}"
  min_interval_seconds: 0
  settle_seconds: 0
"""
    text += rules
    path = env.tmp / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path), base


class Serve:
    """``connector app serve CONFIG`` in the background, until stopped."""

    def __init__(self, env: Env, cfg: str, base: str):
        self.base = base
        self.log = env.tmp / "serve.log"
        self.fh = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "connector.cli", "app", "serve", cfg], env=env.env, stdout=self.fh,
                                     stderr=subprocess.STDOUT, cwd=ROOT)
        end = time.monotonic() + 60  # a bound for a slow machine, not a speed assertion
        while time.monotonic() < end:
            try:
                if requests.get(base + A.APP_PATH, timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("app serve did not start:\n" + self.log.read_text())

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.fh.close()
        return self.log.read_text()


def install(env: Env, cfg: str, base: str) -> Serve:
    portal = env.service("portal")
    serve = Serve(env, cfg, base)
    d = portal.install_app(CLIENT_ID, SECRET, install_url=base + A.INSTALL_PATH)
    assert d.status == 200, d.body
    return serve


RULES = """
rules:
  - name: forgotten
    type: forgotten
    inactive_days: 60
    where: {{responsible: [{owner}]}}
    actions:
      - trigger: client_forgotten
  - name: release
    type: release
    after: forgotten
    grace_days: 14
    reassign: {{to: [7, 9]}}
"""


def test_install_robots_and_triggers_then_a_rule_fires_and_the_portals_robot_gets_a_pool_manager(sandbox):
    portal = sandbox.service("portal")
    company = sandbox.sb.company
    forgotten = company.stories["forgotten"]
    owner = portal.table("company")[forgotten]["ASSIGNED_BY_ID"]
    # automation exists on deals, not companies: every client of that manager gets an open deal to fire on
    mine = [cid for cid, row in portal.table("company").items() if row["ASSIGNED_BY_ID"] == owner]
    for cid in mine:
        portal.add("deal", {"TITLE": "Open order", "COMPANY_ID": cid, "STAGE_ID": "NEW", "STAGE_SEMANTIC_ID": "P",
                            "ASSIGNED_BY_ID": owner, "CLOSED": "N", "OPPORTUNITY": 100, "CURRENCY_ID": "UAH"})
    cfg, base = write_config(sandbox, "app", rules=RULES.format(owner=owner))
    info = sandbox.cli("app", "install-info", cfg)
    assert info.returncode == 0 and base + A.INSTALL_PATH in info.stdout and "telephony" in info.stdout
    serve = install(sandbox, cfg, base)
    try:
        app = portal.app_of(CLIENT_ID)
        assert set(app.robots) == set(A.ROBOT_CODES) and set(app.triggers) == set(A.TRIGGERS)
        portal.on_trigger("client_forgotten", "connector_pick_manager")  # the admin's automation rule in the portal
        r = sandbox.cli("run", cfg, "--once", "--now", ANCHOR)
        assert r.returncode == 0, r.stdout + r.stderr
        fired = [f for f in portal.trigger_fires if f["code"] == "client_forgotten"]
        assert fired and all(f["owner_type"] == 2 for f in fired)
        portal.drain()
        runs = list(portal.robot_runs.values())
        assert len(runs) == len(fired)
        assert all(run["sends"] == 1 and int(run["return_values"]["manager_id"]) in (7, 9) for run in runs)
        # a repeated delivery of the same event_token does nothing twice
        token = next(iter(portal.robot_runs))
        before = dict(portal.robot_runs[token]["return_values"])
        portal.redeliver_robot(token)
        portal.drain()
        assert portal.robot_runs[token]["sends"] == 1 and portal.robot_runs[token]["return_values"] == before
        # a second run fires nothing again (the journal)
        again = sandbox.cli("run", cfg, "--once", "--now", ANCHOR)
        assert again.returncode == 0, again.stdout + again.stderr
        assert len([f for f in portal.trigger_fires if f["code"] == "client_forgotten"]) == len(fired)
        # a call with a wrong application_token is refused and changes nothing
        db = sandbox.env["CONNECTOR_STORE"].removeprefix("sqlite:///")
        with sqlite3.connect(db) as c:
            journal_before = c.execute("SELECT key, state FROM journal ORDER BY key").fetchall()
            dirty_before = c.execute("SELECT * FROM dirty").fetchall()
        forged = {"event": "ONCRMCOMPANYUPDATE", "data[FIELDS][ID]": "1", "event_token": "x|y|z", "code": "connector_pick_manager",
                  "auth[member_id]": portal.member_id, "auth[application_token]": "0" * 32}
        for path in (A.EVENT_PATH, A.ROBOT_PATH + "/connector_pick_manager"):
            assert requests.post(base + path, data=forged, timeout=10).status_code == 401
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT key, state FROM journal ORDER BY key").fetchall() == journal_before
            assert c.execute("SELECT * FROM dirty").fetchall() == dirty_before
    finally:
        log = serve.stop()
    assert SECRET not in log and "refused" in log


def test_a_pbx_call_appears_on_the_client_card_once_with_its_record_link_across_a_kill_9(sandbox):
    portal = sandbox.service("portal")
    binotel = sandbox.service("emulator")
    cfg, base = write_config(sandbox, "calls", binotel=True, lease=True)
    serve = install(sandbox, cfg, base)
    serve.stop()  # the cycles below need no endpoint: the record link is served when the portal downloads it
    company_id = 5
    phone = next(x["VALUE"] for x in portal.table("company")[company_id]["PHONE"])
    binotel.advance(datetime.now().timestamp() - binotel.now())  # the PBX's clock is the real one from here
    gid = "990016"
    start = datetime.now(UTC) + timedelta(seconds=1)  # after the installation
    binotel.add_call({"companyID": "1", "generalCallID": gid, "callID": gid, "startTime": str(int(start.timestamp())),
                      "callType": "0", "internalNumber": "906", "externalNumber": phone, "waitsec": 5, "billsec": 95,
                      "disposition": "ANSWER", "recordingStatus": "uploaded", "isNewCall": "0", "whoHungUp": "",
                      "customerData": "", "employeeData": {"name": "Roman", "email": "roman.boiko6@shop.example"},
                      "pbxNumberData": {"number": "0443334455"}})
    time.sleep(max(0.0, start.timestamp() - time.time()) + 0.5)  # the call must have started before the poll asks for it
    proc = sandbox.spawn("run", cfg, "--once")
    seen = {"kills": 0}

    def kill_after_the_call_landed(method, status, body):
        results = (body.get("result") or {}).get("result") if isinstance(body, dict) else None
        if method == "batch" and isinstance(results, dict) and any(isinstance(v, dict) and "CALL_ID" in v for v in results.values()):
            seen["kills"] += 1
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        return None

    portal.after_request = kill_after_the_call_landed
    try:
        proc.communicate(timeout=300)
    finally:
        portal.after_request = None
    assert proc.returncode == -9 and seen["kills"] == 1
    landed = [c for c in portal.external_calls.values() if c["EXTERNAL_CALL_ID"] == gid]
    assert len(landed) == 1 and landed[0]["finished"] is not None
    r = sandbox.cli("run", cfg, "--once", "--wait", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    landed = [c for c in portal.external_calls.values() if c["EXTERNAL_CALL_ID"] == gid]
    assert len(landed) == 1  # found by EXTERNAL_CALL_ID (voximplant.statistic.get), never registered again
    acts = [a for a in portal.call_activities() if a["ORIGIN_ID"] == f"VI_{landed[0]['CALL_ID']}"]
    assert len(acts) == 1 and acts[0]["OWNER_TYPE_ID"] == 4 and acts[0]["OWNER_ID"] == company_id
    assert acts[0]["RESPONSIBLE_ID"] == 6 and acts[0]["COMPLETED"] == "Y"
    link = A.record_link(Bitrix24App(client_id=CLIENT_ID, client_secret=SECRET, public_url=base), gid)
    assert landed[0]["record_url"] == link and acts[0]["FILES"][0]["url"] == link
    db = sandbox.env["CONNECTOR_STORE"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT state FROM journal WHERE key = ?", (f"telephony:{gid}",)).fetchone() == ("done",)
