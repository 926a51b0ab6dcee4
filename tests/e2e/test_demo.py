import subprocess
import sys

from tests.e2e.conftest import ROOT


def test_demo_runs_every_rule_and_exits_0():
    r = subprocess.run([sys.executable, "-m", "connector.cli", "demo"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for word in ("forgotten", "release", "lost", "unpaid", "debtors", "missed_call", "SMS to", "from 1C", "call counted as contact"):
        assert word in out, word
    assert "planned" in out and "0 new" in out  # the rerun did nothing twice
    report = ROOT / "connector-demo-report.html"
    assert str(report) in out and report.read_text(encoding="utf-8").count("<svg") == 4  # the control report, with its charts
