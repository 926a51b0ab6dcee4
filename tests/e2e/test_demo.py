import os
import re
import subprocess
import sys

from connector.demo import packaged_demo_config
from tests.e2e.conftest import DEMO, ROOT


def test_demo_runs_every_rule_and_exits_0_speaking_ukrainian_from_any_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "connector.cli", "demo"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for word in ("forgotten", "release", "lost", "unpaid", "debtors", "missed_call", "invoice_sync", "SMS на", "(з 1С)",
                 "дзвінок зараховано як контакт"):
        assert word in out, word
    assert "з них нових: 0" in out  # the rerun did nothing twice
    assert re.search(r"передача: .+ → .+ \(виконано\)", out)  # 16 days later the ignored client was released
    # built-in texts in Ukrainian: headings, reasons, the summary; money and dates by the Ukrainian locale
    for text in ("Компанія-пісочниця", "Що зробило кожне правило", "немає контакту", "останній контакт:",
                 "не передзвонили", "строк оплати", "виконання: виконано"):
        assert text in out, text
    assert re.search(r"42[\s\u00a0\u202f]000,00 ₴", out) and re.search(r"\b\d\d\.\d\d\.2026\b", out)
    # the demo config's own texts are Ukrainian too, with objects rendered as text
    assert "Немає контакту: " in out and "Нагадуємо про заборгованість: 42 000,00 ₴, прострочено з" in out
    for english in ("no contact for", "dear client", "overdue since", "planned ", "executed:", "Closed automatically",
                    "SMS to", "REFUSED", "18500.00", "42 000.00"):
        assert english not in out, english
    report = tmp_path / "connector-demo-report.html"
    assert str(report) in out and report.read_text(encoding="utf-8").count("<svg") == 4  # the control report, with its charts
    assert [p.name for p in tmp_path.iterdir()] == ["connector-demo-report.html"]  # only the report it said it wrote


def test_the_packaged_demo_config_is_config_demo_yaml():
    """`connector demo` reads the copy shipped in the package; the repository's config/demo.yaml is the one people read."""
    assert packaged_demo_config().read_text(encoding="utf-8") == DEMO.read_text(encoding="utf-8")
