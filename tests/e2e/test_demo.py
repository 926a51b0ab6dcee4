import os
import subprocess
import sys

from connector.demo import packaged_demo_config
from tests.e2e.conftest import DEMO, ROOT


def test_demo_runs_every_rule_and_exits_0_from_any_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "connector.cli", "demo"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for word in ("forgotten", "release", "lost", "unpaid", "debtors", "missed_call", "SMS to", "from 1C", "call counted as contact"):
        assert word in out, word
    assert "planned" in out and "0 new" in out  # the rerun did nothing twice
    assert not any(tmp_path.iterdir())  # nothing left behind in the folder it ran from


def test_the_packaged_demo_config_is_config_demo_yaml():
    """`connector demo` reads the copy shipped in the package; the repository's config/demo.yaml is the one people read."""
    assert packaged_demo_config().read_text(encoding="utf-8") == DEMO.read_text(encoding="utf-8")
