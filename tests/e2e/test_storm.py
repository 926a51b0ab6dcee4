"""A storm: more than fifty SIGKILLs at seeded points of runs with a few hundred actions, with 500s,
503 bursts, timeouts whose write still lands, partial batch failures and expired OAuth tokens in
between. Afterwards every planned task, comment and reassignment exists exactly once, nothing is
left pending, and messages went out at most once, every unsent one reported."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connector.demo import Sandbox
from connector.sandbox import generate
from tests.e2e.conftest import ANCHOR, DEMO, ROOT, Env

PENDING = ("planned", "retry_wait", "in_flight")


def _config(tmp, sb: Sandbox, portal) -> str:
    server = next(s for s in sb._services if hasattr(s, "portal")).server
    access, refresh = portal.issue_oauth("app.storm", "storm-secret-0001")
    text = DEMO.read_text(encoding="utf-8").split("\nrules:", 1)[0]
    text = re.sub(r"bitrix24:\n  webhook_url: .*\n", (
        "bitrix24:\n"
        "  oauth:\n"
        f"    domain: {server.base_url}\n"
        "    client_id: app.storm\n"
        "    client_secret: storm-secret-0001\n"
        f"    refresh_token: {refresh}\n"
        f"    access_token: {access}\n"
        f"    token_url: {server.base_url}/oauth/token/\n"
        "  timeout: 2\n"), text)
    text = re.sub(r"\nsafety: .*\n", "\nsafety: {max_actions_per_run: 5000, max_share: 1.0}\nlease_seconds: 3\n", text)
    text += """
rules:
  - name: forgotten
    type: forgotten
    inactive_days: 7
    actions:
      - task: {title: "No contact: {{ client.title }}", deadline: 3 workdays}
      - comment: "Forgotten: a task went to {{ manager.name }}."
  - name: release
    type: release
    after: forgotten
    grace_days: 14
    reassign: {to: [7, 9]}
    actions:
      - notify: [supervisor, previous_responsible]
  - name: lost
    type: lost
    min_purchases: 2
    after_days: 180
    actions:
      - task: {title: "Win back: {{ client.title }} #{{ callback_number }}", deadline: 1 workdays}
  - name: missed_call
    type: missed_call
    actions:
      - sms: {text: "Sorry we missed your call."}
      - task: {title: "Call back {{ call.phone }}", deadline: 2 hours}
"""
    path = tmp / "storm.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _is_write(body) -> bool:
    """A batch of the sink's write commands (labelled ``a<i>_<j>``), as the portal answered it."""
    outer = body.get("result") if isinstance(body, dict) else None
    inner = outer.get("result") if isinstance(outer, dict) else None
    return isinstance(inner, dict) and any(str(k).startswith("a") and "_" in str(k) for k in inner)


@pytest.mark.slow
def test_a_storm_of_kills_and_faults_leaves_every_action_exactly_once(tmp_path):
    rng = random.Random(20261202)
    with Sandbox(company=generate(companies=110)) as sb:
        env = Env(sb, {**os.environ, **sb.env, "CONNECTOR_STORE": f"sqlite:///{tmp_path / 'storm.db'}", "PYTHONPATH": str(ROOT)}, tmp_path)
        portal = env.service("portal")
        portal.rate_limit = False  # the bursts of 503 below are injected where the test wants them
        turbosms = env.service("turbosms")
        cfg = _config(tmp_path, sb, portal)
        start = datetime.fromisoformat(ANCHOR)
        kills, faults, outputs, runs, writes_seen = 0, Counter(), [], Counter(), 0
        # one simulated day per run: every day a dozen clients go silent (a task and a comment each), and
        # from day 15 on the ones silenced two weeks earlier are released (a reassignment, a comment and two
        # notifications each), so every run has a few dozen actions to write while the faults hit it
        for day in range(90):
            if day < 70:
                for n in range(12):
                    portal.add("company", {"TITLE": f"Silent {day}-{n}", "ASSIGNED_BY_ID": rng.choice([3, 5, 6, 8]),
                                           "DATE_CREATE": start - timedelta(days=200)})
            if kills >= 55 and day >= 40:
                break
            now = (start + timedelta(days=day, minutes=rng.randint(0, 600))).isoformat()
            fault = rng.choice(["late_answer", "error_after_apply", "burst_503", "partial_batch", "expired_token", "none"])
            kill = rng.choice(["after_write", "after_write", "while_held", "in_sync", "none"])
            faults[fault] += 1
            faults["kill " + kill] += 1
            proc = env.spawn("run", cfg, "--once", "--now", now, "--wait", "20")
            # a run writes its few dozen actions in one or two batches: the kill hits the first write batch
            writes = {"n": 0, "kill_at": 1, "fault_at": rng.randint(1, 2), "hold": rng.uniform(0.1, 0.8)}

            def hook(method, status, body, proc=proc, fault=fault, kill=kill, writes=writes):
                if not _is_write(body):
                    return None
                writes["n"] += 1
                if kill in ("after_write", "while_held") and writes["n"] == writes["kill_at"]:
                    if kill == "while_held":
                        time.sleep(writes["hold"])  # the portal holds the write open, then the client dies
                    os.kill(proc.pid, signal.SIGKILL)
                    return None
                if writes["n"] != writes["fault_at"]:
                    return None
                if fault == "late_answer":
                    time.sleep(2.5)  # longer than the client's timeout: the write landed, the answer did not
                elif fault == "error_after_apply":
                    return 500, {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}
                return None

            portal.after_request = hook
            if fault == "burst_503":
                portal.inject_fault(None, 503, "QUERY_LIMIT_EXCEEDED", "Too many requests", times=rng.randint(2, 4))
            elif fault == "partial_batch":
                portal.inject_fault(rng.choice(["tasks.task.add", "crm.timeline.comment.add", "crm.company.update"]),
                                    500, "INTERNAL_SERVER_ERROR", "Internal server error", times=rng.randint(1, 3))
            elif fault == "expired_token":
                portal.expire_tokens()
            timer = None
            if kill == "in_sync":
                timer = threading.Timer(rng.uniform(0.3, 1.5), lambda p=proc: p.poll() is None and os.kill(p.pid, signal.SIGKILL))
                timer.start()
            out, err = proc.communicate(timeout=300)
            if timer is not None:
                timer.join()
            portal.after_request = None
            portal.faults.clear()
            kills += proc.returncode == -9
            outputs.append(out + err)
            if proc.returncode == 1 and "oauth.token" in out + err:
                # a kill landed between the token server's rotation and the store's write (README, known
                # limits): the admin's remedy, a newly issued refresh token in the config, and the storm goes on
                _, fresh = portal.issue_oauth("app.storm", "storm-secret-0001")
                text = Path(cfg).read_text(encoding="utf-8")
                Path(cfg).write_text(re.sub(r"refresh_token: .*", f"refresh_token: {fresh}", text), encoding="utf-8")
                faults["refresh token reissued"] += 1
            assert proc.returncode in (0, 1, -9), out + err
            runs[proc.returncode] += 1
            writes_seen += writes["n"]
        failed = [o[-600:] for o in outputs if "Traceback" in o or "error" in o.lower()][-2:]
        assert kills >= 50, (kills, faults, runs, writes_seen, failed)
        # the storm is over: clean runs, later each time, until nothing is pending
        db = tmp_path / "storm.db"
        for extra in range(12):
            now = (start + timedelta(days=day + 1, hours=6 + extra * 2)).isoformat()
            r = env.cli("run", cfg, "--once", "--now", now, "--wait", "20")
            outputs.append(r.stdout + r.stderr)
            with sqlite3.connect(db) as c:
                pending = c.execute(f"SELECT count(*) FROM journal WHERE state IN {PENDING}").fetchone()[0]
            if pending == 0 and r.returncode == 0:
                break
        with sqlite3.connect(db) as c:
            states = Counter(s for (s,) in c.execute("SELECT state FROM journal"))
            rows = c.execute("SELECT key, type, state, remote_key, detail FROM journal").fetchall()
        assert not any(states[s] for s in PENDING), states

        # every task and comment the connector made exists exactly once, and each done one exists
        made: Counter = Counter()
        for t in portal.table("task").values():
            made.update(re.findall(r"cn-[0-9a-f]{12}", t.get("DESCRIPTION") or ""))
        for cm in portal.table("comment").values():
            made.update(re.findall(r"cn-[0-9a-f]{12}", cm.get("COMMENT") or ""))
        assert made and set(made.values()) == {1}, [m for m, n in made.items() if n > 1]
        from connector.ports import marker_of

        for key, typ, state, _remote, _detail in rows:
            if typ in ("task", "comment") and state == "done":
                assert made[marker_of(key)] == 1, key
        # every release moved its client once, to a pool member, and the messages about it followed it
        releases = [r for r in rows if r[1] == "reassign"]
        assert releases and all(r[2] == "done" for r in releases)
        assert len({r[0].rsplit(":", 2)[0] for r in releases}) == len(releases)
        for key, _, _, _, _ in releases:
            cid = int(key.split(":")[3])
            assert portal.table("company")[cid]["ASSIGNED_BY_ID"] in (7, 9)
        # messages at most once: TurboSMS got each text once, each notification text reached each person once
        assert set(Counter((m.phone, m.text) for m in turbosms.outbox).values()) <= {1}
        assert set(Counter((n["USER_ID"], n["MESSAGE"]) for n in portal.table("notify").values()).values()) <= {1}
        unsent = [r for r in rows if r[1] in ("sms", "notify") and r[2] in ("uncertain", "failed", "dead", "cancelled")]
        log = "\n".join(outputs)
        for key, _, state, _, _ in unsent:
            assert key in log, (key, state)  # reported, with its key, in the run that gave up on it
