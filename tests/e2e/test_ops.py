"""Operations: metrics and /healthz scraped from a running daemon, SIGTERM during a first sync,
JSON logs from a real cycle, and user errors that end in a message, never a traceback."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import ANCHOR, DEMO, ROOT
from tests.e2e.test_cli_cycle import connector_tasks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{([^}]*)\})? (\S+)$", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(3) or "").split(","))).strip(",") == want:
            return float(m.group(4))
    return None


def _poll(fn, what: str, tries: int = 600):
    """Ask ``fn`` until it answers something truthy (a daemon cycle or a server start), 0.1 s apart."""
    stop = threading.Event()
    for _ in range(tries):
        try:
            got = fn()
        except OSError:
            got = None
        if got:
            return got
        stop.wait(0.1)
    raise AssertionError(f"never saw {what}")


def _after_cycles(base: str, n: int) -> str | None:
    """The metrics text once ``n`` good cycles are counted in it."""
    text = _get(base + "/metrics")[1]
    return text if (_sample(text, "connector_cycles_total", outcome="ok") or 0) >= n else None


def _daemon_config(sandbox, extra: str) -> str:
    cfg = sandbox.tmp / "daemon.yaml"
    text = DEMO.read_text(encoding="utf-8").replace("schedule: {every_minutes: 15}", "schedule: {every_minutes: 0.02}")
    cfg.write_text(text + extra, encoding="utf-8")
    return str(cfg)


def test_a_running_daemon_serves_metrics_that_change_after_a_cycle_and_healthz(sandbox):
    port = _free_port()
    cfg = _daemon_config(sandbox, f'metrics: {{listen: "127.0.0.1:{port}"}}\n')
    portal = sandbox.service("portal")
    syncing, go_on = threading.Event(), threading.Event()

    def hold_the_first_sync(method, status, body):
        syncing.set()
        go_on.wait(60)  # the first request waits until the test has scraped the daemon before any cycle ended

    portal.after_request = hold_the_first_sync
    proc = sandbox.spawn("--log-format", "json", "run", cfg, "--now", ANCHOR)
    base = f"http://127.0.0.1:{port}"
    try:
        _poll(syncing.is_set, "the first sync start")
        status, before = _poll(lambda: _get(base + "/metrics"), "the metrics endpoint")
        assert status == 200 and _sample(before, "connector_cycles_total", outcome="ok") is None
        assert _sample(before, "connector_lease_held") == 1.0
        status, body = _get(base + "/healthz")
        assert status == 200 and json.loads(body)["reason"] == "no cycle has finished yet"
        go_on.set()
        portal.after_request = None
        after = _poll(lambda: _after_cycles(base, 1), "a finished cycle in the metrics")
        assert _sample(after, "connector_rows_synced_total", source="bitrix24") > 0
        assert _sample(after, "connector_actions_total", rule="forgotten", state="done") >= 1
        assert _sample(after, "connector_cycle_duration_seconds_count") >= 1
        assert _sample(after, "connector_last_success_timestamp_seconds") > 0
        status, body = _get(base + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok" and json.loads(body)["last_success"]
        later = _poll(lambda: _after_cycles(base, 2), "a second cycle")
        assert _sample(later, "connector_cycle_duration_seconds_count") > _sample(after, "connector_cycle_duration_seconds_count")
    finally:
        go_on.set()
        portal.after_request = None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    actions = [x for x in lines if x.get("event") == "action"]
    assert actions and all(x["level"] == "INFO" and x["rule"] and x["action"] and x["result"] for x in actions)
    assert "sandboxsecret0001" not in err


def test_sigterm_during_a_slow_first_sync_exits_0_within_10_s_and_executes_nothing(sandbox):
    cfg = _daemon_config(sandbox, "")
    portal = sandbox.service("portal")
    turbosms = sandbox.service("turbosms")
    tasks_before = len(connector_tasks(portal))
    started, slow = threading.Event(), threading.Event()

    def slow_portal(method, status, body):
        started.set()
        slow.wait(0.5)  # every portal answer takes half a second: a first sync of many seconds

    portal.after_request = slow_portal
    proc = sandbox.spawn("run", cfg, "--now", ANCHOR)
    try:
        _poll(started.is_set, "the first sync start")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        portal.after_request = None
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "stopped" in err
    r = sandbox.cli("journal", str(DEMO), "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    assert len(connector_tasks(portal)) == tasks_before and turbosms.outbox == []
    status = sandbox.cli("status", str(DEMO))
    assert "stopped" in status.stdout


@pytest.mark.parametrize(("args", "says"), [  # what the message must name, in any language
    (["validate", "/nonexistent/config.yaml"], "/nonexistent/config.yaml"),
    (["validate", "/tmp"], "/tmp"),
    (["status", str(ROOT / "README.md")], "README.md"),
    (["plan", "{cfg}", "--no-sync", "--now", "next tuesday"], "--now"),
    (["plan", "{cfg}", "--no-sync", "--rule", "forgoten"], "forgoten"),
    (["journal", "{cfg}", "--state", "finished"], "finished"),
    (["explain", "{cfg}", "No Such Client Anywhere"], "No Such Client Anywhere"),
    (["demo", "--config", "/nonexistent/demo.yaml"], "/nonexistent/demo.yaml"),
    (["validate", sys.executable], "UTF-8"),
])
def test_user_errors_end_in_a_message_and_exit_2_never_a_traceback(sandbox, args, says):
    args = [a.replace("{cfg}", str(DEMO)) for a in args]
    r = subprocess.run([sys.executable, "-m", "connector.cli", *args], env=sandbox.env, capture_output=True, text=True,
                       timeout=120, cwd=sandbox.tmp)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert says in r.stdout + r.stderr
