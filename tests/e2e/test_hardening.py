"""Hostile input as a user meets it: markup in upstream names, private files, runaway templates."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from connector.demo import Sandbox
from connector.sandbox import generate
from tests.e2e.conftest import ANCHOR, DEMO, ROOT, Env

MARKUP = "Chernihiv [/] Grain"


@pytest.fixture
def markup_sandbox(tmp_path):
    co = generate()
    co.company(co.stories["forgotten"]).title = MARKUP  # in the CRM and in 1C: a task title, a plan line
    co.company(co.stories["onec_only"]).title = MARKUP + " Trade\x1b[2J\x07"  # 1C only: unmatched, listed by status
    with Sandbox(company=co) as sb:
        env = {**os.environ, **sb.env, "CONNECTOR_STORE": f"sqlite:///{tmp_path / 'e2e.db'}", "PYTHONPATH": str(ROOT)}
        yield Env(sb, env, tmp_path)


def test_a_markup_title_syncs_plans_and_shows_in_status_plan_and_check(markup_sandbox):
    sb = markup_sandbox
    r = sb.cli("sync", str(DEMO), "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    r = sb.cli("plan", str(DEMO), "--now", ANCHOR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Немає контакту: {MARKUP}" in r.stdout
    r = sb.cli("status", str(DEMO))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{MARKUP} Trade" in r.stdout and "\x1b" not in r.stdout and "\x07" not in r.stdout
    bad = sb.tmp / "bad.yaml"  # a 1C object name with markup: check fails on it, readably
    bad.write_text(DEMO.read_text(encoding="utf-8").replace("  preset: ut11\n", "  preset: ut11\n  objects: {counterparties: \"Catalog_[/]Missing\"}\n"),
                   encoding="utf-8")
    r = sb.cli("check", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "Catalog_[/]Missing" in r.stdout.replace("\n", "")
    for out in (r.stdout, r.stderr):
        assert "MarkupError" not in out


def test_sandbox_env_file_is_written_for_the_owner_only(tmp_path):
    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen([sys.executable, "-m", "connector.cli", "sandbox", "--companies", "5", "--env-file", str(env_file)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0o022))
    try:
        end = time.monotonic() + 120  # a safety bound for a slow machine, not a speed assertion
        while not (env_file.exists() and env_file.stat().st_size) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        assert env_file.exists(), "the sandbox wrote no env file"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert "BINOTEL_SECRET=" in env_file.read_text(encoding="utf-8")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_validate_refuses_nested_range_loops_quickly_naming_the_template(tmp_path):
    cfg = tmp_path / "loops.yaml"
    text = DEMO.read_text(encoding="utf-8").replace(
        'title: "Немає контакту: {{ client.title }}"',
        'title: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"')
    cfg.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "range(100000)" in t)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **{k: "https://x.test/rest/1/abcdef123/" if "URL" in k else "value-1234567890"
                                                      for k in ("BITRIX24_WEBHOOK_URL", "ONEC_ODATA_URL", "ONEC_USER", "ONEC_PASSWORD",
                                                                "BINOTEL_KEY", "BINOTEL_SECRET", "BINOTEL_URL", "TURBOSMS_TOKEN",
                                                                "TURBOSMS_URL", "SMTP_URL")}}
    env["SMTP_URL"] = "smtp://127.0.0.1:2525"
    r = subprocess.run([sys.executable, "-m", "connector.cli", "validate", str(cfg)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)  # the old code never came back
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{cfg}:{line}: rules[0].actions[0].task.title: template error: range() of 100000 items" in r.stderr.replace("\n", "")
