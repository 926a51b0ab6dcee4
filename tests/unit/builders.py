"""Hand-built stores and configs for rule tests: no emulator, no network."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from connector import domain as d
from connector import evidence, i18n
from connector.calendar import BusinessCalendar
from connector.config import Settings, load_settings
from connector.execute import Executor
from connector.journal import Journal
from connector.matching import primary_system
from connector.plan import Plan, Planner
from connector.ports import ActionResult, FixedClock, OneByOneSink, PlannedAction
from connector.runner import record_plan
from connector.snapshot import load_snapshot
from connector.store import Store

KYIV = timezone(timedelta(hours=2))
NOW = datetime(2026, 11, 23, 11, 0, tzinfo=KYIV)  # a Monday

HEADER = """
timezone: Europe/Kyiv
store: sqlite:///{db}
calendar: {{country: UA, workdays: [mon, tue, wed, thu, fri], hours: "09:00-18:00"}}
bitrix24:
  webhook_url: http://127.0.0.1:1/rest/1/testsecret/
people: {{supervisor: 1, duty_manager: 2}}
safety: {{max_actions_per_run: 500, max_share: 1.0, min_clients_for_share: 20}}
"""


def settings(tmp_path: Path, rules_yaml: str, *, extra: str = "", header: str = HEADER) -> Settings:
    text = header.format(db=tmp_path / "t.db") + textwrap.dedent(extra) + "rules:\n" + textwrap.indent(textwrap.dedent(rules_yaml), "  ")
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    s = load_settings(p)
    i18n.use(s.language)  # as the CLI does
    return s


def k(kind: str, i: object, system: str = "bitrix24") -> str:
    return d.make_key(system, kind, i)


@dataclass
class World:
    store: Store
    settings: Settings
    seq: int = 0

    def _id(self) -> int:
        self.seq += 1
        return self.seq

    def manager(self, i: int, name: str = "", active: bool = True, email: str | None = None) -> str:
        self.store.write([d.Manager(k("user", i), "bitrix24", str(i), name or f"Manager {i}", active=active, email=email)])
        return k("user", i)

    def company(self, i: int, title: str = "", responsible: int = 3, *, created_days: int = 400, phones: tuple = (),
                fields: dict | None = None, tax_id: str | None = None, segment: str | None = None, kind: str = "company",
                company: int | None = None, emails: tuple = ()) -> str:
        key = k(kind, i)
        self.store.write([d.Client(key, "bitrix24", str(i), d.ClientKind(kind), title or f"Client {i}", responsible_key=k("user", responsible),
                                   company_key=k("company", company) if company else None, phones=phones, emails=emails,
                                   tax_id=tax_id, segment=segment, fields=fields or {}, created_at=NOW - timedelta(days=created_days))])
        return key

    def activity(self, owner: str, days_ago: float, kind: str = "call", completed: bool = True, deadline_in_days: float | None = None) -> None:
        i = self._id()
        at = NOW - timedelta(days=days_ago)
        self.store.write([d.Activity(k("activity", i), "bitrix24", str(i), d.ActivityKind(kind), (owner,), completed,
                                     at if completed else None, deadline=NOW + timedelta(days=deadline_in_days) if deadline_in_days is not None else at)])

    def task(self, owner: str, *, completed: bool, deadline_in_days: float, description: str = "", closed_days_ago: float | None = None) -> None:
        i = self._id()
        self.store.write([d.Task(k("task", i), "bitrix24", str(i), "t", k("user", 3), (owner,), NOW + timedelta(days=deadline_in_days),
                                 completed, NOW - timedelta(days=30), NOW - timedelta(days=closed_days_ago) if closed_days_ago is not None else None,
                                 description=description)])

    def deal(self, client: str, days_ago: float, outcome: str = "won", amount: float = 1000.0) -> str:
        i = self._id()
        self.store.write([d.Deal(k("deal", i), "bitrix24", str(i), f"Deal {i}", (client,), outcome=d.Outcome(outcome), amount=amount,
                                 created_at=NOW - timedelta(days=days_ago + 5), closed_at=NOW - timedelta(days=days_ago) if outcome != "open" else None)])
        return k("deal", i)

    def invoice(self, client: str, due_days_ago: int, paid: bool = False, amount: float = 500.0, responsible: int = 3) -> str:
        i = self._id()
        self.store.write([d.Invoice(k("invoice", i), "bitrix24", str(i), f"Invoice #{i}", client_key=client, amount=amount, currency="UAH",
                                    outcome=d.Outcome.WON if paid else d.Outcome.OPEN, issued_at=NOW - timedelta(days=due_days_ago + 14),
                                    due_date=(NOW - timedelta(days=due_days_ago)).date(), responsible_key=k("user", responsible))])
        return k("invoice", i)

    def call(self, phone: str, minutes_ago: float, *, direction: str = "in", answered: bool = False, talk_s: int = 0) -> str:
        i = self._id()
        self.store.write([d.Call(k("call", i, "binotel"), "binotel", str(i), direction, phone, NOW - timedelta(minutes=minutes_ago),
                                 talk_s=talk_s, answered=answered, disposition="ANSWER" if answered else "NOANSWER")])
        return k("call", i, "binotel")

    def snapshot(self, now: datetime = NOW):
        self.store.refresh_own()
        evidence.refresh(self.store, primary_system(self.settings))
        return load_snapshot(self.settings, self.store, now)

    def plan(self, now: datetime = NOW, *, force: bool = False) -> Plan:
        cal = BusinessCalendar(self.settings.calendar, self.settings.timezone)
        with self.snapshot(now) as snap:
            return Planner(self.settings, snap, cal, journal=Journal(self.store)).plan(force=force)

    def run(self, now: datetime = NOW, sink: "FakeSink | None" = None, *, force: bool = False,
            sms: "FakeSink | None" = None) -> tuple[Plan, "FakeSink"]:
        """Plan, journal and execute through a recording sink (the unit-test double of a CRM)."""
        sink = sink or FakeSink()
        plan = self.plan(now, force=force)
        j = Journal(self.store)
        record_plan(j, plan, now, None)
        Executor(j, [sink, sms or FakeSink("sms")], FixedClock(now)).run()
        self.store.refresh_own()
        return plan, sink


@dataclass
class FakeSink(OneByOneSink):
    """Records what it was asked to do; ``fail_with`` makes every call fail with that error."""

    system: str = "bitrix24"
    done: list[PlannedAction] = field(default_factory=list)
    fail_with: Exception | None = None
    batch_size: int = 50

    def supports(self, action_type: str) -> bool:
        return True

    def execute(self, action: PlannedAction) -> ActionResult:
        if self.fail_with:
            raise self.fail_with
        self.done.append(action)
        return ActionResult(remote_id=str(len(self.done)))

    def reconcile(self, action: PlannedAction) -> ActionResult | None:
        return next((ActionResult(remote_id="r") for a in self.done if a.key == action.key), None)


def world(tmp_path: Path, rules_yaml: str, **kw) -> World:
    s = settings(tmp_path, rules_yaml, **kw)
    w = World(Store(s.store), s)
    for i in (1, 2, 3, 4, 7, 9):
        w.manager(i, active=(i != 4))
    return w
