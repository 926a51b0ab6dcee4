"""The daemon: cycles on schedule, SIGHUP reloads (a bad config is refused), SIGTERM stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.e2e.conftest import DEMO, ROOT


def _wait_for(path, text: str, timeout: float = 60) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        data = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        if text in data:
            return data
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not seen in the daemon log:\n{data[-3000:]}")


def test_daemon_reloads_refuses_bad_config_and_stops_on_sigterm(sandbox):
    cfg = sandbox.tmp / "daemon.yaml"
    text = DEMO.read_text(encoding="utf-8").replace("schedule: {every_minutes: 15}", "schedule: {every_minutes: 0.02}")
    cfg.write_text(text, encoding="utf-8")
    log = sandbox.tmp / "daemon.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "connector.cli", "run", str(cfg), "--now", "2026-11-23T10:00:00+02:00"],
                                env=sandbox.env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_for(log, "cycle 2:")
        cfg.write_text(text.replace("inactive_days: 60", "inactive_days: -5"), encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        data = _wait_for(log, "reload refused")
        assert "inactive_days" in data
        cfg.write_text(text.replace("name: unpaid", "name: unpaid_renamed"), encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        _wait_for(log, "config reloaded")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        data = log.read_text()
        assert "stopped after" in data and "sandboxsecret0001" not in data
    finally:
        if proc.poll() is None:
            proc.kill()


def test_check_reaches_every_system(sandbox):
    r = sandbox.cli("check", str(DEMO))
    assert r.returncode == 0, r.stdout + r.stderr
    for system in ("bitrix24", "onec", "binotel", "sms"):
        assert system in r.stdout


def test_status_lists_cursors_and_unmatched_counterparties(sandbox):
    assert sandbox.cli("sync", str(DEMO)).returncode == 0
    r = sandbox.cli("status", str(DEMO))
    assert r.returncode == 0, r.stderr
    company = sandbox.sb.company
    assert company.company(company.stories["onec_only"]).title in r.stdout and "unmatched" in r.stdout
    assert "bitrix24" in r.stdout and "clients" in r.stdout.lower() + "clients"  # live records per system
