"""The embedded sandbox and the demo: every emulator seeded with one synthetic company.

``connector demo`` needs nothing but this package: it starts the emulated Bitrix24, 1C, Binotel
and SMS gateway on loopback, points ``config/demo.yaml`` at them through environment variables,
and runs the real job (sync, plan, run) on a simulated date, then again 16 days later.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from datetime import timedelta
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from connector.errors import ConfigError
from connector.ports import FixedClock
from connector.registry import adapters
from connector.report import print_exec, print_plan, print_sync
from connector.sandbox import SyntheticCompany, generate


class Sandbox:
    """Context manager: start every adapter's emulator; ``env`` points a config at them."""

    def __init__(self, *, companies: int = 40, company: SyntheticCompany | None = None):
        self.company = company or generate(companies=companies)
        self.env: dict[str, str] = {}
        self._services: list[Any] = []
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> "Sandbox":
        try:
            for adapter in adapters().values():
                service = adapter.sandbox(self.company)
                if service is None:
                    continue
                self.env.update(service.start())
                self._services.append(service)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        for k, v in self.env.items():
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        return self

    def __exit__(self, *exc: object) -> None:
        for service in reversed(self._services):
            try:
                service.stop()
            except Exception:  # stopping one emulator must not keep the others running  # noqa: BLE001, S110
                pass
        self._services.clear()
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


DEMO_CONFIG = "data/demo.yaml"  # inside the package (a copy of config/demo.yaml; a test keeps them equal)


def packaged_demo_config() -> Traversable:
    """The demo config shipped in the package, so ``connector demo`` runs from any folder after ``pip install``."""
    return files("connector").joinpath(DEMO_CONFIG)


def run_demo(config_path: str | None, *, companies: int = 40, console: Console | None = None) -> int:
    with ExitStack() as stack:
        cfg = Path(config_path) if config_path else stack.enter_context(as_file(packaged_demo_config()))
        return _run_demo(cfg, companies=companies, console=console or Console())


def _run_demo(cfg: Path, *, companies: int, console: Console) -> int:
    from connector.config import load_settings
    from connector.runner import cycle, make_context, open_store

    with tempfile.TemporaryDirectory(prefix="connector-demo-") as tmp, Sandbox(companies=companies) as sb:
        os.environ["CONNECTOR_STORE"] = f"sqlite:///{Path(tmp) / 'demo.db'}"
        try:
            settings = load_settings(cfg)
        except ConfigError as e:
            for p in e.problems:
                console.print(p, markup=False)
            return 2
        store = open_store(settings)
        today = sb.company.anchor
        console.rule(f"Sandbox company: {len(sb.company.companies)} clients, {len(sb.company.managers)} managers; simulated date {today:%Y-%m-%d %H:%M %Z}")
        console.print(f"Config: {cfg}", markup=False)

        console.rule("1. connector plan  (sync, evaluate, show; writes nothing)")
        rep = cycle(settings, store, make_context(store, FixedClock(today)), execute=False)
        print_sync(rep.sync)
        if not rep.sync.ok:
            return 1
        print_plan(rep.plan)

        console.rule("2. connector run --once  (the same, executed through the APIs)")
        rep = cycle(settings, store, make_context(store, FixedClock(today)), execute=True)
        print_exec(rep)
        first = rep

        console.rule("3. connector run --once again  (nothing is done twice)")
        rep = cycle(settings, store, make_context(store, FixedClock(today)), execute=True)
        print_exec(rep)

        later = today + timedelta(days=16)
        console.rule(f"4. connector run --once --now {later:%Y-%m-%d}  (16 days later: release, next call-back)")
        rep16 = cycle(settings, store, make_context(store, FixedClock(later)), execute=True)
        print_plan(rep16.plan)
        print_exec(rep16)

        console.rule("What each rule did")
        t = Table("rule", "type", "today", "16 days later")
        for rp in first.plan.rules:
            a = first.execution.by_rule.get(rp.rule, {}) if first.execution else {}
            b = rep16.execution.by_rule.get(rp.rule, {}) if rep16.execution else {}
            t.add_row(rp.rule, rp.type, _fmt(a), _fmt(b))
        console.print(t)
        highlights = _highlights(store) + _calls_as_contact(settings, store, today)
        for line in highlights:
            console.print(f"  - {line}", markup=False)
        ok = first.ok and rep16.ok
        return 0 if ok else 1


def _calls_as_contact(settings, store, now) -> list[str]:
    """Clients kept off the forgotten list only by their phone calls."""
    from connector.config import ForgottenRule
    from connector.snapshot import load_snapshot

    rule = next((r for r in settings.rules if isinstance(r, ForgottenRule)), None)
    if rule is None:
        return []
    from datetime import timedelta

    out = []
    with load_snapshot(settings, store, now) as snap:
        pbx: dict[str, object] = {}
        for call in snap.calls(since=now - timedelta(days=rule.inactive_days)):
            if call.answered and call.talk_s > 0 and call.client_key:
                pbx[call.client_key] = max(call.started_at, pbx.get(call.client_key, call.started_at))
        for key, c in snap.clients(list(pbx)).items():
            crm_last, _ = c.last_contact([k for k in rule.contact_kinds if k != "call"])
            if crm_last is None or (now - crm_last).days > rule.inactive_days:
                crm = f"nothing in the CRM or 1C for {(now - crm_last).days} days" if crm_last else "nothing in the CRM or 1C"
                out.append(f"call counted as contact: {c.title}: {crm}, but a Binotel call on {pbx[key]:%Y-%m-%d} "
                           f"keeps it off the forgotten list")
    return out


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to do"


def _highlights(store) -> list[str]:
    from connector.journal import Journal

    out = []
    for row in Journal(store).rows(limit=500):
        p = row["payload"] or {}
        title = p.get("_title", "")
        if row["type"] == "reassign":
            out.append(f"release: {title} moved from {p.get('from_name', p.get('from'))} to {p.get('to_name', p.get('to'))} ({row['state']})")
        elif row["type"] in ("sms",) or (row["type"] == "trigger" and p.get("sms")):
            sms = p.get("sms", p)
            out.append(f"{row['rule']}: SMS to {sms.get('phone')} “{sms.get('text')}” ({row['state']})")
        elif row["type"] == "task" and row["rule"] in ("debtors",) or (row["type"] == "task" and "1c" in (row["reason"] or "")):
            out.append(f"{row['rule']} (from 1C): {p.get('title')} ({row['state']})")
    return sorted(set(out))
