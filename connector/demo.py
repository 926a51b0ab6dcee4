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

from connector import i18n, words
from connector.errors import ConfigError
from connector.i18n import _
from connector.ports import FixedClock
from connector.registry import adapters
from connector.report import cell, plain, print_exec, print_plan, print_sync
from connector.sandbox import SyntheticCompany, generate


class Sandbox:
    """Context manager: start every adapter's emulator; ``env`` points a config at them."""

    def __init__(self, *, companies: int = 40, company: SyntheticCompany | None = None):
        self.company = company or generate(companies=companies, sync_stories=True)
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
    from connector.runner import cycle, make_context, make_lease, open_store

    with tempfile.TemporaryDirectory(prefix="connector-demo-") as tmp, Sandbox(companies=companies) as sb, ExitStack() as stack:
        os.environ["CONNECTOR_STORE"] = f"sqlite:///{Path(tmp) / 'demo.db'}"
        try:
            settings = load_settings(cfg)
        except ConfigError as e:
            for p in e.problems:
                console.print(plain(p), markup=False)
            return 2
        i18n.use(settings.language)
        store = open_store(settings)
        # held as `run` holds it: only the lease holder tells the connector's own tasks from people's
        # (without it the demo's own reminder kept its client, and nobody was ever released)
        lease = stack.enter_context(make_lease(settings, store))
        today = sb.company.anchor
        console.rule(_("Sandbox company: {clients} clients, {managers} managers; simulated date {date}").format(
            clients=len(sb.company.companies), managers=len(sb.company.managers), date=i18n.moment(today)))
        console.print(plain(_("Config: {file}").format(file=cfg)), markup=False)

        console.rule(_("1. connector plan  (sync, evaluate, show; writes nothing)"))
        rep = cycle(settings, store, make_context(store, FixedClock(today)), execute=False, lease=lease)
        print_sync(rep.sync)
        if not rep.sync.ok:
            return 1
        print_plan(rep.plan)

        console.rule(_("2. connector run --once  (the same, executed through the APIs)"))
        rep = cycle(settings, store, make_context(store, FixedClock(today)), execute=True, lease=lease)
        print_exec(rep)
        first = rep

        console.rule(_("3. connector run --once again  (nothing is done twice)"))
        rep = cycle(settings, store, make_context(store, FixedClock(today)), execute=True, lease=lease)
        print_exec(rep)

        later = today + timedelta(days=16)
        console.rule(_("4. connector run --once --now {date}  (16 days later: release, next call-back)").format(date=f"{later:%Y-%m-%d}"))
        rep16 = cycle(settings, store, make_context(store, FixedClock(later)), execute=True, lease=lease)
        print_plan(rep16.plan)
        print_exec(rep16)

        console.rule(_("What each rule did"))
        t = Table(_("rule"), _("type"), _("today"), _("16 days later"))
        for rp in first.plan.rules:
            a = first.execution.by_rule.get(rp.rule, {}) if first.execution else {}
            b = rep16.execution.by_rule.get(rp.rule, {}) if rep16.execution else {}
            t.add_row(cell(rp.rule), cell(rp.type), cell(_fmt(a)), cell(_fmt(b)))
        console.print(t)
        highlights = _highlights(store) + _calls_as_contact(settings, store, today)
        for line in highlights:
            console.print(plain(f"  - {line}"), markup=False)
        _control_report(settings, store, today, later, console)
        ok = first.ok and rep16.ok
        return 0 if ok else 1


def _control_report(settings, store, start, end, console: Console) -> Path:
    """The supervisor's view of the two runs: the one-screen summary, and the HTML report with its charts."""
    from connector import control
    from connector.calendar import BusinessCalendar
    from connector.i18n import _
    from connector.private import write_private_text

    period = control.resolve_period(f"{start.date()}..{end.date()}", end, BusinessCalendar(settings.calendar, settings.timezone))
    rep = control.build(settings, store, period, end)
    console.rule(_("The supervisor's control report"))
    for line in rep.summary():
        console.print(line, markup=False)
    out = Path.cwd() / "connector-demo-report.html"
    write_private_text(out, control.render(rep, "html"))
    console.print(_("The full report with charts: {path}").format(path=out), markup=False)
    return out


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
            crm_last = c.last_contact([k for k in rule.contact_kinds if k != "call"])[0]
            if crm_last is None or (now - crm_last).days > rule.inactive_days:
                if crm_last:
                    line = _("call counted as contact: {client}: nothing in the CRM or 1C for {days} days, but a Binotel call "
                             "on {date} keeps it off the forgotten list")
                else:
                    line = _("call counted as contact: {client}: nothing in the CRM or 1C, but a Binotel call on {date} keeps "
                             "it off the forgotten list")
                out.append(line.format(client=c.title, days=(now - crm_last).days if crm_last else 0,
                                       date=i18n.day(pbx[key])))
    return out


def _fmt(counts: dict[str, int]) -> str:
    return words.counts(counts) or _("nothing to do")


def _highlights(store) -> list[str]:
    from connector.journal import Journal

    out = []
    for row in Journal(store).rows(limit=500):
        p = row["payload"] or {}
        title = p.get("_title", "")
        state = words.state(row["state"])
        if row["type"] == "reassign":
            out.append(_("release: {client} moved from {previous} to {manager} ({state})").format(
                client=title, previous=p.get("from_name", p.get("from")), manager=p.get("to_name", p.get("to")), state=state))
        elif row["type"] in ("sms",) or (row["type"] == "trigger" and p.get("sms")):
            sms = p.get("sms", p)
            out.append(_("{rule}: SMS to {phone} “{text}” ({state})").format(rule=row["rule"], phone=sms.get("phone"),
                                                                           text=sms.get("text"), state=state))
        elif row["type"] == "task" and (row["rule"] in ("debtors",) or any(
                words.purchase_kind(k) in (row["reason"] or "") for k in ("1c sale", "1c order"))):
            out.append(_("{rule} (from 1C): {title} ({state})").format(rule=row["rule"], title=p.get("title"), state=state))
    return sorted(set(out))
