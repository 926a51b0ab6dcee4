"""Audit the deployment pins (constraints.txt) with pip-audit, where its advisory data can be reached.

CI reaches the package registries and nothing else: pip-audit's PyPI service (advisories from
PyPI's JSON API) may answer through the registry, the OSV service cannot. So the pins are audited
with the PyPI service; a known vulnerability fails CI (exit 1), while an advisory source that
cannot be reached, or that answers for none of the pins, is said on one clear line and does not.
pip-audit runs from a venv of its own (.venv-audit), so it never shifts the project's pins.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "constraints.txt"
VENV = ROOT / ".venv-audit"


def say(line: str) -> None:
    print(f"pip-audit: {line}", flush=True)


def tool() -> Path | None:
    exe = VENV / "bin" / "pip-audit"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "pip-audit"], check=True,
                       capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        say(f"cannot be installed here ({type(e).__name__}); the pins in {PINS.name} were NOT audited")
        return None
    return exe


def main() -> int:
    exe = tool()
    if exe is None:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        try:
            run = subprocess.run([str(exe), "-r", str(PINS), "--no-deps", "--disable-pip", "-s", "pypi", "-f", "json",
                                  "-o", str(report), "--progress-spinner", "off"], capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            say(f"the advisory source did not answer in time; the pins in {PINS.name} were NOT audited")
            return 0
        if not report.exists():
            last = (run.stderr.strip().splitlines() or ["no output"])[-1][:200]
            say(f"the advisory source (PyPI's JSON API) is not reachable from here ({last}); "
                f"the pins in {PINS.name} were NOT audited")
            return 0
        data = json.loads(report.read_text(encoding="utf-8") or "{}")
    deps = data.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    found = [(d, v) for d in audited for v in d.get("vulns", [])]
    for d, v in found:
        say(f"{d['name']} {d['version']}: {v.get('id')} (fixed in {', '.join(v.get('fix_versions') or ['?'])})")
    if found:
        say(f"{len(found)} known vulnerability(ies) in {PINS.name}: raise the pins (and the lower bounds in pyproject.toml)")
        return 1
    if not audited:
        say(f"PyPI's advisory data answered for none of the {len(deps)} pins (not reachable from here); "
            f"the pins in {PINS.name} were NOT audited")
        return 0
    say(f"{len(audited)} pins audited against PyPI's advisories: no known vulnerability"
        + (f" ({len(deps) - len(audited)} could not be audited)" if len(deps) > len(audited) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
