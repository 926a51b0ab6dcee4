"""End-to-end: the CLI as a user runs it (a subprocess) against the sandbox emulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from connector.demo import Sandbox

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.yaml"
ANCHOR = "2026-11-23T10:00:00+02:00"  # the synthetic company's "today"


@dataclass
class Env:
    sb: Sandbox
    env: dict[str, str]
    tmp: Path

    def cli(self, *args: str, extra_env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
        env = {**self.env, **(extra_env or {})}
        return subprocess.run([sys.executable, "-m", "connector.cli", *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)

    def spawn(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """The CLI as a background process (for kills and concurrency)."""
        env = {**self.env, **(extra_env or {})}
        return subprocess.Popen([sys.executable, "-m", "connector.cli", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def plan_json(self, *args: str) -> dict:
        r = self.cli("plan", str(DEMO), "--json", "--now", ANCHOR, *args)
        assert r.returncode == 0, r.stderr + r.stdout
        return json.loads(r.stdout)

    def service(self, attr: str):
        for s in self.sb._services:
            if hasattr(s, attr):
                return getattr(s, attr)
        raise AssertionError(f"no sandbox service has {attr!r}")


@pytest.fixture
def sandbox(tmp_path):
    with Sandbox() as sb:
        env = {**os.environ, **sb.env, "CONNECTOR_STORE": f"sqlite:///{tmp_path / 'e2e.db'}", "PYTHONPATH": str(ROOT)}
        env.pop("CONNECTOR_TEST_KILL_AFTER_CALLS", None)
        yield Env(sb, env, tmp_path)
