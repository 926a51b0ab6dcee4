"""The benchmark a user would run: the whole ``connector`` process against a seeded portal at scale.

    python bench/portal.py [--clients 100000] [--quick] [--time-scale 0.05] [--repeat 3] [--no-run]
                           [--skip-baseline] [--baseline-cap 120] [--workdir DIR] [--serve] [--write-results]

A child process seeds the project's own emulators from :func:`connector.sandbox.generate_at_scale`
(Bitrix24 with the standard plan's leaky bucket and modelled operating time, Binotel, 1C OData
УТ 11) and serves them on loopback, so the connector's process is measured alone. Per 100k
clients: ~130k contacts, ~300k deals, ~2M activities, ~50k invoices, ~20k tasks (some due in the
future, keeping quiet clients), ~27k Binotel calls, ~30k 1C sales (each an order -> invoice ->
sale -> payment chain, ~120k documents). ``--clients`` scales every table; ``--quick`` is 5,000
clients. Seeding 100k clients takes about 80 s and 3 GiB in the emulators' process.

Each step is ``python -m connector.cli ...`` as a subprocess with ``--now`` pinned to the seed's
anchor, a config written here and a store in the work directory:

1. ``sync`` (first, full); 2. ``sync`` again (nothing changed); 3. ``sync`` after 1% of companies,
deals and activities were edited in the emulator; 4. ``plan`` on an empty journal; 5. ``run
--once`` (write-back; the config's safety limits let it act on everything); 6. ``plan`` the day
after (``--now`` + 1 day, journal full). Steps 4 and 6 run ``--repeat`` times (median, min, max).
Then the same workload through plain fast-bitrix24 on a freshly seeded portal, one process per
stage: every table with ``get_all`` (each stopped after ``--baseline-cap`` seconds: its offset
pages recount the table, so on a big table it waits for the method's operating-time budget for
hours), timeline comments per company with ``call``, and the write commands the connector sent
in step 5 replayed with ``call`` (fast-bitrix24's own batching, 50 per batch).

Figures per step: rows synced per system (the store's stream counters), HTTP requests per system
as each emulator counted them, the Bitrix24 API's minimum for those rows (``ceil(rows / 2500)``
per list, 50-row pages x 50 commands per batch, plus ``ceil(companies / 50)`` for timeline
comments, which can only be listed per company) or for the write-back (``ceil(actions / 50)``),
wall time and peak RSS of the process (``os.wait4``: that child's own ``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CODE = "portalbench0001"
QUICK_CLIENTS = 5000
PAGE_ROWS = 2500  # 50-row pages x 50 commands per batch
BATCH = 50
LIST_TABLES = ("user", "company", "contact", "deal", "activity", "invoice", "task")  # what a full read lists

CONFIG = """\
timezone: Europe/Kyiv
store: sqlite:///{db}
calendar: {{country: UA, workdays: [mon, tue, wed, thu, fri], hours: "09:00-18:00"}}
phone_region: UA
bitrix24:
  webhook_url: "{bitrix}"
  fields: [UF_CRM_TEMPERATURE]
  guid_field: UF_CRM_1C_GUID
onec:
  odata: {{url: "{onec_url}", user: "{onec_user}", password: "{onec_password}"}}
  preset: ut11
  objects: {{journal: DocumentJournal_ДокументыПродаж}}  # published by the admin: one request finds changed documents
  match: [tax_id, guid_field, phone]
binotel: {{key: "{binotel_key}", secret: "{binotel_secret}", url: "{binotel_url}"}}
people: {{supervisor: 1, duty_manager: 2}}
safety: {{max_actions_per_run: 100000000, max_share: 1}}
rules:
  - name: forgotten
    type: forgotten
    clients: companies
    inactive_days: 60
    keep_while_future_task: true
    actions: [{{task: {{title: "No contact: {{{{ client.title }}}}", deadline: 3 workdays}}}}]
  - name: release
    type: release
    after: forgotten
    grace_days: 14
    reassign: {{to: [7, 9], strategy: round_robin}}
    actions: [{{notify: [supervisor, previous_responsible]}}]
  - name: lost
    type: lost
    clients: companies
    min_purchases: 2
    after_days: 180
    cadence: {{field: UF_CRM_TEMPERATURE, days: {{warm: 14, cold: 30}}, default_days: 30}}
    actions: [{{task: {{title: "Win back: {{{{ client.title }}}}", deadline: 1 workdays}}}}]
  - name: unpaid
    type: unpaid
    overdue_days: 3
    actions: [{{task: {{title: "Unpaid: {{{{ invoice.title }}}}", deadline: 1 workdays}}}}]
  - name: debtors
    type: debtors
    min_amount: 1000
    overdue_days: 7
    actions: [{{task: {{title: "Debt {{{{ debt.amount | money }}}}: {{{{ client.title }}}}", deadline: 1 workdays}}}}]
  - name: missed_call
    type: missed_call
    callback_within_minutes: 15
    actions: [{{task: {{title: "Call back {{{{ call.phone }}}}", deadline: 2 hours}}}}]
"""


# ---------------------------------------------------------------- the emulators, in a child process


def _rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process, MiB."""
    status = Path("/proc/self/status").read_text()
    cur = re.search(r"VmRSS:\s+(\d+)", status)
    peak = re.search(r"VmHWM:\s+(\d+)", status)
    if cur and peak:
        return int(cur.group(1)) / 1024, int(peak.group(1)) / 1024
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak_kb / 1024, peak_kb / 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _serve(conn: Any, clients: int, time_scale: float, seed: int) -> None:
    """Seed Bitrix24, Binotel and 1C from one company at scale, serve them, answer the pipe."""
    from binotel.emulator import BinotelEmulator
    from bitrix.emulator import EmulatorServer, Portal
    from bitrix.emulator.tables import INDEXED_FROM
    from connector.sandbox import generate_at_scale
    from onec.emulator import SANDBOX_PASSWORD, SANDBOX_USER
    from onec.emulator.base import seed as onec_seed
    from onec.emulator.odata import ODataEmulator

    t0 = time.monotonic()
    co = generate_at_scale(clients, seed=seed)
    t1 = time.monotonic()
    portal = Portal.from_company(co, webhook_user=1, webhook_code=CODE, plan="standard", rate_limit=True,
                                 time_scale=time_scale, compact=True)
    # a real portal has its indexes before anyone asks "what changed since": build the emulator's
    # (modify stamps, last activity) now, so no step pays for them
    for table in portal.tables.values():
        for fname in ("DATE_MODIFY", "LAST_UPDATED", "updatedTime", "CHANGED_DATE", "LAST_ACTIVITY_TIME"):
            if fname in table.schema and len(table.rows) >= INDEXED_FROM:
                table.stamp_index(fname, table.schema[fname])
    t2 = time.monotonic()
    binotel = BinotelEmulator(co)
    ib = onec_seed(co, "ut11")
    odata = ODataEmulator(ib, user=SANDBOX_USER, password=SANDBOX_PASSWORD)
    t3 = time.monotonic()
    anchor = co.anchor
    sizes = {name: len(t.rows) for name, t in portal.tables.items()}
    sizes["binotel calls"] = len(binotel.calls)
    sizes["1C documents"] = sum(len(s.rows) for s in ib.sets.values() if s.kind == "document")
    sizes["1C counterparties"] = len(ib.sets["Catalog_Контрагенты"].rows)
    del co
    gc.collect()
    # The synthetic rows are stamped up to the anchor; a real portal never holds a row modified
    # in the future, so the portal clock starts that evening and runs in real time.
    start, base = time.monotonic(), anchor.replace(hour=23, minute=59, second=0)
    portal.clock = lambda: base + timedelta(seconds=time.monotonic() - start)
    srv = EmulatorServer(portal).start()
    # a client that gives up mid-batch (the baseline on a 429) leaves broken pipes: not news
    srv.httpd.handle_error = lambda request, client_address: None
    binotel_url = binotel.start()
    odata_url = odata.start()
    rss, peak = _rss_mib()
    conn.send({
        "anchor": anchor.isoformat(), "bitrix": srv.webhook_url, "binotel_url": binotel_url, "binotel_key": binotel.key,
        "binotel_secret": binotel.secret, "onec_url": odata_url, "onec_user": odata.user, "onec_password": odata.password,
        "sizes": sizes, "seconds": {"generate": t1 - t0, "bitrix24": t2 - t1, "binotel + 1C": t3 - t2},
        "rss_mib": rss, "peak_mib": peak,
    })
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "stats":
                s = portal.stats
                conn.send({"bitrix24": s.requests, "bitrix24 writes": s.write_requests,
                           "bitrix24 rejected": sum(s.rejected.values()), "bitrix24 operating": sum(s.operating.values()),
                           "1c": odata.count(), "binotel": len(binotel.requests), "rss_mib": _rss_mib()[0],
                           "cpu": _cpu(), "returned": dict(s.returned)})
            elif cmd == "drained in":
                conn.send(portal.bucket_drained_in())
            elif cmd == "change":
                conn.send(_change(portal, arg))
            elif cmd == "record":
                portal.write_log = [] if arg else None
                conn.send(True)
            elif cmd == "writes":
                conn.send(list(portal.write_log or []))
            elif cmd == "stop":
                conn.send(True)
                return
    finally:
        srv.stop()
        binotel.stop()
        odata.stop()


def _change(portal: Any, share: float) -> dict[str, int]:
    """Users edit ``share`` of companies, deals and activities (each edit stamps its modify time)."""
    rng = random.Random(42)
    done = {}
    for entity, fname in (("company", "COMMENTS"), ("deal", "COMMENTS"), ("activity", "DESCRIPTION")):
        ids = list(portal.tables[entity].rows)
        picked = rng.sample(ids, max(1, round(len(ids) * share)))
        for rid in picked:
            portal.touch(entity, rid, **{fname: "edited by a user"})
        done[entity] = len(picked)
    return done


class Emulators:
    """The child process holding every emulator; a pipe asks it for counters and edits."""

    def __init__(self, clients: int, time_scale: float, seed: int):
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, clients, time_scale, seed), daemon=True)
        self.proc.start()
        self.info: dict = self.conn.recv()

    def ask(self, cmd: str, arg: Any = None) -> Any:
        self.conn.send((cmd, arg))
        return self.conn.recv()

    def rested(self) -> None:
        """Wait until the portal's leaky bucket is empty: every measured process starts on a
        rested portal, as a cycle 15 minutes after the last one would (not part of any figure)."""
        time.sleep(self.ask("drained in"))

    def stop(self) -> None:
        try:
            self.ask("stop")
        finally:
            self.proc.join(30)


# ---------------------------------------------------------------- one measured process


@dataclass
class Proc:
    wall: float
    peak_mib: float
    code: int
    out: str


def run_process(argv: list[str], log: Path, env: dict[str, str], *, cap: float | None = None) -> Proc:
    """Run ``argv`` to its end (or kill it after ``cap`` seconds); wall time and that child's
    own peak RSS (``os.wait4``)."""
    with open(log, "w", encoding="utf-8") as fh:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        timer = threading.Timer(cap, p.kill) if cap else None
        if timer:
            timer.start()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        if timer:
            timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    return Proc(wall, usage.ru_maxrss / 1024, p.returncode, log.read_text(encoding="utf-8", errors="replace"))


@dataclass
class Step:
    name: str
    command: str = ""
    runs: list[Proc] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # per system
    requests: dict[str, int] = field(default_factory=dict)  # per system, and "bitrix24 writes"/"rejected"
    emulator_cpu: float | None = None  # CPU seconds the emulators spent serving this step
    operating: float | None = None  # Bitrix24's modelled execution seconds (what its per-method budget counts)
    minimum: int | None = None  # Bitrix24 reads
    actions: int | None = None  # planned (plan) or executed (run)
    write_minimum: int | None = None
    note: str = ""
    stages: bool = False  # runs are consecutive parts of one workload (summed), not repeats (median)

    @property
    def wall(self) -> float:
        if not self.runs:
            return 0.0
        walls = [r.wall for r in self.runs]
        return sum(walls) if self.stages else statistics.median(walls)

    @property
    def peak(self) -> float:
        if not self.runs:
            return 0.0
        peaks = [r.peak_mib for r in self.runs]
        return max(peaks) if self.stages else statistics.median(peaks)


def store_rows(db: Path) -> dict[str, int]:
    """Rows the connector has written per system so far (its per-stream counters)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        try:
            return {system: int(n or 0) for system, n in conn.execute("SELECT system, SUM(rows) FROM cursors GROUP BY system")}
        except sqlite3.OperationalError:  # a store laid out differently: no row figures, the rest stands
            return {}


def journal_states(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        try:
            return dict(conn.execute("SELECT state, COUNT(*) FROM journal GROUP BY state").fetchall())
        except sqlite3.OperationalError:
            return {}


def planned_actions(out: str) -> int | None:
    """Actions a ``plan`` printed (its per-rule lines: "rule (type): F of S in scope, N actions")."""
    found = re.findall(r"in scope, (\d+) actions?\b", out)
    return sum(int(n) for n in found) if found else None


def list_minimum(sizes: dict[str, int]) -> int:
    """Requests the Bitrix24 API needs at least to list every table once (see the docstring)."""
    n = sum(max(1, math.ceil(sizes.get(t, 0) / PAGE_ROWS)) for t in LIST_TABLES)
    return n + math.ceil(sizes.get("company", 0) / BATCH)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.a = args
        self.dir = workdir
        self.db = workdir / "store.db"
        self.cfg = workdir / "portal.yaml"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.steps: list[Step] = []

    def connector(self, emu: Emulators, step: Step, args: list[str], *, repeat: int = 1) -> Step:
        argv = [sys.executable, "-m", "connector.cli", *args]
        step.command = "connector " + " ".join(a if not a.endswith(".yaml") else self.cfg.name for a in args)
        before, rows0, jour0 = emu.ask("stats"), store_rows(self.db), journal_states(self.db)
        for n in range(repeat):
            emu.rested()
            slug = re.sub(r"[^a-z0-9]+", "-", step.name.lower()).strip("-")
            proc = run_process(argv, self.dir / f"{len(self.steps) + 1:02d}-{slug}-{n + 1}.log", self.env)
            step.runs.append(proc)
            print(f"  {step.name}: exit {proc.code}, {proc.wall:.1f} s, peak {proc.peak_mib:.0f} MiB", flush=True)
            if proc.code not in (0,):
                step.note = f"exit {proc.code}: " + " ".join(proc.out.strip().splitlines()[-3:])[:300]
        after, rows1, jour1 = emu.ask("stats"), store_rows(self.db), journal_states(self.db)
        for k in ("bitrix24", "1c", "binotel", "bitrix24 writes", "bitrix24 rejected"):
            step.requests[k] = round((after[k] - before[k]) / repeat)
        step.emulator_cpu = (after["cpu"] - before["cpu"]) / repeat
        step.operating = (after["bitrix24 operating"] - before["bitrix24 operating"]) / repeat
        step.rows = {k: round((rows1.get(k, 0) - rows0.get(k, 0)) / repeat) for k in rows1}
        if args[0] == "plan":
            step.actions = planned_actions(step.runs[-1].out)
        if args[0] == "run":
            acted = sum(v for k, v in jour1.items() if k != "planned") - sum(v for k, v in jour0.items() if k != "planned")
            step.actions = acted
            step.write_minimum = math.ceil(acted / BATCH)
            step.note = (step.note + " " if step.note else "") + "journal: " + ", ".join(f"{k} {v}" for k, v in sorted(jour1.items()))
        self.steps.append(step)
        return step

    def run(self) -> tuple[dict, list[Step]]:
        a = self.a
        print(f"seeding the emulators ({a.clients:,} clients) in a child process ...", flush=True)
        emu = Emulators(a.clients, a.time_scale, a.seed)
        info = emu.info
        try:
            print(f"  seeded in {sum(info['seconds'].values()):.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in info['seconds'].items())}); "
                  f"emulator RSS {info['rss_mib']:,.0f} MiB (peak {info['peak_mib']:,.0f})", flush=True)
            print("  " + ", ".join(f"{k} {v:,}" for k, v in info["sizes"].items() if v), flush=True)
            anchor = datetime.fromisoformat(info["anchor"])
            now, tomorrow = anchor.isoformat(), (anchor + timedelta(days=1)).isoformat()
            self.cfg.write_text(CONFIG.format(db=self.db, **info), encoding="utf-8")
            cfg = str(self.cfg)

            first = self.connector(emu, Step("first full sync"), ["sync", cfg, "--now", now])
            first.minimum = list_minimum(info["sizes"])
            self.connector(emu, Step("no-change sync"), ["sync", cfg, "--now", now])
            changed = emu.ask("change", 0.01)
            step = self.connector(emu, Step("1% changed sync"), ["sync", cfg, "--now", now])
            step.note = "edited: " + ", ".join(f"{k} {v:,}" for k, v in changed.items())
            self.connector(emu, Step("plan, empty journal"), ["plan", cfg, "--now", now], repeat=a.repeat)
            shutil.copyfile(self.db, self.dir / "store-empty-journal.db")
            writes: list = []
            if not a.no_run:
                emu.ask("record", True)
                self.connector(emu, Step("run --once"), ["run", cfg, "--once", "--now", now])
                writes = emu.ask("writes")
                emu.ask("record", False)
                (self.dir / "writes.json").write_text(json.dumps(writes, ensure_ascii=False), encoding="utf-8")
                self.connector(emu, Step("plan, next day"), ["plan", cfg, "--now", tomorrow], repeat=a.repeat)
            info["rss_after_mib"] = emu.ask("stats")["rss_mib"]
            if a.serve:
                self.serve(info, now, tomorrow)
        finally:
            emu.stop()
        base = [] if a.skip_baseline else self.baseline(writes)
        return info, base

    def baseline(self, writes: list) -> list[Step]:
        """The same workload through plain fast-bitrix24 on a freshly seeded portal: one process
        per table (``get_all``, stopped after ``--baseline-cap`` seconds), one for the timeline
        comments of every company, one replaying the connector's write commands."""
        print("baseline: plain fast-bitrix24 on a freshly seeded portal ...", flush=True)
        wfile = self.dir / "writes.json"
        wfile.write_text(json.dumps(writes, ensure_ascii=False), encoding="utf-8")
        cap = self.a.baseline_cap
        emu = Emulators(self.a.clients, self.a.time_scale, self.a.seed)
        url, sizes = emu.info["bitrix"], emu.info["sizes"]
        reads = Step("fast-bitrix24 get_all", command=f"get_all per table, each stopped after {cap:g} s", stages=True)
        reads.minimum = list_minimum(sizes)
        write = Step("fast-bitrix24 call (writes)", command="call(method, [params...]) per method, batches of 50")
        stages = [(name, ["read", url, name]) for name, *_ in READS]
        stages.append(("comments", ["comments", url, str(sizes.get("company", 0))]))
        notes = []
        try:
            for name, argv in stages:
                proc, delta = self._baseline_process(emu, f"91-baseline-{name}", argv, cap)
                method = READ_METHODS.get(name, "crm.timeline.comment.list")
                got = delta["returned"].get(method, 0)
                reads.runs.append(proc)
                _add(reads.requests, delta)
                reads.emulator_cpu = (reads.emulator_cpu or 0.0) + delta["cpu"]
                reads.operating = (reads.operating or 0.0) + delta["bitrix24 operating"]
                if name not in ("requisites", "departments"):
                    reads.rows["bitrix24"] = reads.rows.get("bitrix24", 0) + got
                table_rows = sizes.get(READ_TABLES.get(name, ""), 0)
                state = "done" if proc.code == 0 and got >= table_rows else (
                    f"stopped at {cap:g} s" if proc.wall >= cap else f"exit {proc.code}")
                need = get_all_hours(table_rows) if name in READ_TABLES else 0
                notes.append(f"{name} {got:,}" + (f" of {table_rows:,}" if name in READ_TABLES else "") +
                             f" in {proc.wall:,.0f} s, {state}" + (f" (get_all needs >= {need:,.1f} h)" if need >= 0.1 else "")
                             + (f": {_error_of(proc.out)}" if proc.code not in (0, -9) else ""))
                print(f"  {notes[-1]}", flush=True)
            if writes:
                proc, delta = self._baseline_process(emu, "92-baseline-writes", ["writes", url, str(wfile)], None)
                write.runs.append(proc)
                _add(write.requests, delta)
                write.emulator_cpu = delta["cpu"]
                write.operating = delta["bitrix24 operating"]
                write.actions = int(_last_json(proc.out).get("written", 0))
                write.write_minimum = math.ceil(len(writes) / BATCH)
                write.note = f"{len(writes):,} write commands of the connector's run replayed" + (
                    f"; {_error_of(proc.out)}" if proc.code else "")
                print(f"  writes: exit {proc.code}, {proc.wall:,.1f} s, {write.requests['bitrix24']} requests", flush=True)
        finally:
            emu.stop()
        reads.note = "; ".join(notes)
        return [reads] + ([write] if write.runs else [])

    def _baseline_process(self, emu: Emulators, log: str, argv: list[str], cap: float | None) -> tuple[Proc, dict]:
        emu.rested()
        before = emu.ask("stats")
        proc = run_process([sys.executable, __file__, "--baseline-worker", *argv], self.dir / f"{log}.log", self.env, cap=cap)
        after = emu.ask("stats")
        delta = {k: after[k] - before[k] for k in ("bitrix24", "bitrix24 writes", "bitrix24 rejected", "cpu",
                                                   "bitrix24 operating")}
        delta["returned"] = {m: n - before["returned"].get(m, 0) for m, n in after["returned"].items()}
        return proc, delta

    def serve(self, info: dict, now: str, tomorrow: str) -> None:
        """Keep the emulators up so whole-process timings can be taken by hand, until the file
        ``stop`` appears in the work directory (or Ctrl-C)."""
        empty = self.dir / "portal-empty-journal.yaml"
        empty.write_text(self.cfg.read_text(encoding="utf-8").replace(str(self.db), str(self.dir / "store-empty-journal.db")),
                         encoding="utf-8")
        print(f"\nserving; time any command against these, then `touch {self.dir / 'stop'}`:\n"
              f"  cd {ROOT} && {sys.executable} -m connector.cli plan {empty} --now {now}\n"
              f"  cd {ROOT} && {sys.executable} -m connector.cli plan {self.cfg} --now {tomorrow}", flush=True)
        try:
            while not (self.dir / "stop").exists():
                time.sleep(2)
        except KeyboardInterrupt:
            pass


def _last_json(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    return {}


# ---------------------------------------------------------------- the baseline script

# What an integrator lists with fast-bitrix24: (stage, method, params), the connector's fields.
READS: list[tuple[str, str, dict]] = [
    ("users", "user.get", {}),
    ("departments", "department.get", {}),
    ("companies", "crm.company.list", {"select": [
        "ID", "TITLE", "COMPANY_TYPE", "ASSIGNED_BY_ID", "DATE_CREATE", "DATE_MODIFY", "LAST_ACTIVITY_TIME", "PHONE",
        "EMAIL", "UF_CRM_TEMPERATURE", "UF_CRM_1C_GUID"]}),
    ("requisites", "crm.requisite.list", {"select": ["ID", "ENTITY_TYPE_ID", "ENTITY_ID", "RQ_INN", "RQ_EDRPOU"]}),
    ("contacts", "crm.contact.list", {"select": [
        "ID", "NAME", "SECOND_NAME", "LAST_NAME", "TYPE_ID", "COMPANY_ID", "BIRTHDATE", "ASSIGNED_BY_ID", "DATE_CREATE",
        "DATE_MODIFY", "PHONE", "EMAIL"]}),
    ("deals", "crm.deal.list", {"select": [
        "ID", "TITLE", "STAGE_ID", "STAGE_SEMANTIC_ID", "CATEGORY_ID", "OPPORTUNITY", "CURRENCY_ID", "COMPANY_ID",
        "CONTACT_ID", "ASSIGNED_BY_ID", "DATE_CREATE", "DATE_MODIFY", "CLOSEDATE", "CLOSED"]}),
    ("activities", "crm.activity.list", {"select": [
        "ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "PROVIDER_ID", "SUBJECT", "COMPLETED", "START_TIME", "END_TIME",
        "DEADLINE", "LAST_UPDATED", "RESPONSIBLE_ID", "DIRECTION"]}),
    ("invoices", "crm.item.list", {"entityTypeId": 31}),
    ("tasks", "tasks.task.list", {"select": [
        "ID", "TITLE", "DESCRIPTION", "RESPONSIBLE_ID", "DEADLINE", "STATUS", "CREATED_DATE", "CLOSED_DATE",
        "CHANGED_DATE", "UF_CRM_TASK"]}),
]
READ_METHODS = {name: method for name, method, _ in READS}
READ_TABLES = {"users": "user", "companies": "company", "requisites": "requisite", "contacts": "contact",
               "deals": "deal", "activities": "activity", "invoices": "invoice", "tasks": "task"}


def get_all_hours(rows: int) -> float:
    """Hours ``get_all`` needs at least for a table of ``rows``: its offset pages each recount the
    table, and the portal allows a method 480 s of (modelled) execution per 10 minutes."""
    from bitrix.emulator import Portal

    p = Portal(rate_limit=False)
    pages = max(1, math.ceil(rows / 50))
    operating = pages * (p.cost_base + rows * p.cost_count_row) + rows * p.cost_row
    return operating / p.operating_limit * p.operating_window / 3600 if operating > p.operating_limit else 0.0


def _add(into: dict, delta: dict) -> None:
    for k in ("bitrix24", "bitrix24 writes", "bitrix24 rejected"):
        into[k] = into.get(k, 0) + delta[k]


def _error_of(out: str) -> str:
    """How a fast-bitrix24 process ended, in a few words."""
    if "OPERATION_TIME_LIMIT" in out:
        return "429 OPERATION_TIME_LIMIT inside a batch (fast-bitrix24 raises it)"
    if "All attempts to get data from server exhausted" in out and "503" in out:
        return "503 QUERY_LIMIT_EXCEEDED answers until fast-bitrix24 gave up"
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:200]


def baseline_worker(mode: str, url: str, arg: str) -> None:
    """One stage of what an integrator writes with fast-bitrix24: ``read`` a table with
    ``get_all``, ``comments`` of companies 1..N with ``call``, or replay ``writes`` (the
    connector's write commands, JSON) with ``call`` per method. Prints one JSON line."""
    import logging

    from fast_bitrix24 import Bitrix

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # its abandoned tasks after a 429
    b = Bitrix(url, verbose=False)
    if mode == "read":
        _, method, params = next(r for r in READS if r[0] == arg)
        print(json.dumps({"rows": len(b.get_all(method, params) or [])}), flush=True)
    elif mode == "comments":
        res = b.call("crm.timeline.comment.list",
                     [{"filter": {"ENTITY_ID": i, "ENTITY_TYPE": "company"}} for i in range(1, int(arg) + 1)])
        print(json.dumps({"rows": sum(len(page or []) for page in (res if isinstance(res, (list, tuple)) else [res]))}))
    elif mode == "writes":
        by_method: dict[str, list] = {}
        for method, params in json.loads(Path(arg).read_text(encoding="utf-8")):
            by_method.setdefault(method, []).append(params)
        written = 0
        for method, items in by_method.items():
            res = b.call(method, items)
            written += len(res) if isinstance(res, (list, tuple)) else 1
        print(json.dumps({"written": written}), flush=True)


# ---------------------------------------------------------------- output


def table(steps: list[Step], repeat: int) -> str:
    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:,}" if isinstance(v, int) else str(v)

    def rows_of(s: Step) -> str:
        parts = [f"{k} {v:,}" for k, v in s.rows.items() if v]
        return " / ".join(parts) if parts else "0"

    def wall(s: Step) -> str:
        if len(s.runs) > 1 and not s.stages:
            ws = [r.wall for r in s.runs]
            return f"{s.wall:,.1f} ({min(ws):,.1f}-{max(ws):,.1f})"
        return f"{s.wall:,.1f}"

    lines = [
        ["rows synced (read)", *[rows_of(s) for s in steps]],
        ["Bitrix24 requests", *[fmt(s.requests.get("bitrix24")) for s in steps]],
        ["Bitrix24 API minimum (reads)", *[fmt(s.minimum) for s in steps]],
        ["Bitrix24 requests with writes", *[fmt(s.requests.get("bitrix24 writes")) for s in steps]],
        ["actions (plan lists / run wrote)", *[fmt(s.actions) for s in steps]],
        ["write-back minimum ceil(actions/50)", *[fmt(s.write_minimum) for s in steps]],
        ["answered 503/429 by the portal", *[fmt(s.requests.get("bitrix24 rejected")) for s in steps]],
        ["Bitrix24 modelled operating, s", *["n/a" if s.operating is None else f"{s.operating:,.0f}" for s in steps]],
        ["1C requests", *[fmt(s.requests.get("1c")) for s in steps]],
        ["Binotel requests", *[fmt(s.requests.get("binotel")) for s in steps]],
        ["wall time, s" + (f" (median of {repeat}; min-max)" if repeat > 1 else ""), *[wall(s) for s in steps]],
        ["peak RSS of the process, MiB", *[f"{s.peak:,.0f}" for s in steps]],
        ["emulators' CPU meanwhile, s", *["n/a" if s.emulator_cpu is None else f"{s.emulator_cpu:,.1f}" for s in steps]],
    ]
    head = ["", *[s.name for s in steps]]
    widths = [max(len(str(row[i])) for row in [head, *lines]) for i in range(len(head))]
    out = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in lines]
    notes = [f"* {s.name}: `{s.command}`" + (f"; {s.note}" if s.note else "") for s in steps]
    return "\n".join(out + [""] + notes)


def write_results(cmd: str, a: argparse.Namespace, info: dict, report: str) -> None:
    path = Path(__file__).with_name("RESULTS.md")
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    title = f"## Portal scale: {a.clients:,} clients"
    sizes = ", ".join(f"{k} {v:,}" for k, v in info["sizes"].items() if v and k not in ("department", "status"))
    section = (
        f"{title}\n\n"
        f"Command: `{cmd}` ({datetime.now().astimezone():%Y-%m-%d}; emulated Bitrix24 on the standard plan with its "
        f"leaky bucket and operating-time model, time_scale {a.time_scale}; Binotel; 1C OData УТ 11 with its document journal published).\n\n"
        f"Seeded: {sizes}. Seeding took {sum(info['seconds'].values()):,.0f} s; the emulators' process held "
        f"{info['rss_mib']:,.0f} MiB after seeding, {info.get('rss_after_mib', 0):,.0f} MiB at the end.\n\n"
        f"{report}\n\n"
        "How to read it:\n\n"
        "* Every connector column is one whole `connector` process (`python -m connector.cli ...`, a subprocess "
        "with `--now` pinned to the seed's anchor, SQLite store in the work directory). `plan` includes its own "
        "sync (a no-change cycle) and lists every action its rules find, those already in the journal included "
        "(the next day: the ones `run --once` wrote). Rows: the store's per-stream counters (rows that process wrote, per system). "
        "Requests: counted by each emulator (a `batch` is one). Peak RSS: `ru_maxrss` of that process "
        "(`os.wait4`); the emulators run in another process. Each process starts on a rested portal (the "
        "harness waits until the leaky bucket is empty, as a cycle 15 minutes after the last one would).\n"
        "* Bitrix24 minimum: `ceil(rows / 2500)` per list (50-row pages, 50 commands per batch) plus "
        "`ceil(companies / 50)` for timeline comments, which can only be listed per company; write-back "
        "minimum: `ceil(actions / 50)`. 1C and Binotel have no batch: their counts are shown as they are "
        "(the issue's target for a no-change cycle is 2 per source).\n"
        "* Time: the portal's leaky bucket is real (50 requests, then 2 per second), and every call is charged a "
        "modelled execution time (0.005 s + 2.09e-5 s per row a COUNT visits + 0.0005 s per row returned) "
        "against the method's budget of 480 s per 10 minutes; the portal sleeps that time x time_scale. The "
        "budget, not the request count, paces a full read of millions of rows (2M activities are 1,000 "
        "modelled seconds, so at least ~21 minutes). Binotel keeps its real 1 s between requests.\n"
        "* fast-bitrix24: one process per stage on a freshly seeded portal (`get_all` per table, each stopped "
        "after the cap; comments of every company with `call`; then the connector's write commands of its "
        "`run --once` replayed with `call`, fast-bitrix24's own batches of 50). Rows: what the portal had "
        "answered when each stage ended; `get_all`'s offset pages each recount the table, and the note gives "
        "the hours its operating-time budget needs for the whole table.\n"
        "* The machine is shared (2 cores): the emulators' CPU row shows how much of a step's wall time the "
        "emulators themselves used.\n"
    )
    pattern = rf"^{re.escape(title)}\n.*?(?=^## |\Z)"
    if re.search(pattern, text, flags=re.M | re.S):
        text = re.sub(pattern, lambda _: section + "\n", text, flags=re.M | re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")
    print(f"written to {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=100_000, help="companies in the CRM; every table scales with it")
    ap.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_CLIENTS:,} clients, plans run once")
    ap.add_argument("--time-scale", type=float, default=0.05, help="share of the modelled server time the portal sleeps")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each plan step (median, min, max)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--no-run", action="store_true", help="skip `run --once` and the next day's plan (no write-back)")
    ap.add_argument("--workdir", default=None, help="keep the store, configs and logs here (default: a temp dir)")
    ap.add_argument("--serve", action="store_true", help="at the end keep the emulators up for timing by hand")
    ap.add_argument("--write-results", action="store_true", help="write a 'Portal scale' section into bench/RESULTS.md")
    ap.add_argument("--baseline-cap", type=float, default=120, help="seconds each fast-bitrix24 read may take")
    ap.add_argument("--baseline-only", metavar="WORKDIR", default=None,
                    help="only the fast-bitrix24 baseline, replaying WORKDIR/writes.json of an earlier run")
    ap.add_argument("--baseline-worker", nargs=3, metavar=("MODE", "URL", "ARG"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.baseline_worker:
        baseline_worker(*a.baseline_worker)
        return 0
    shown = re.sub(r"\s*--workdir[ =]\S+|\s*--serve\b", "", " ".join(sys.argv[1:]))  # no effect on the figures
    cmd = f"python bench/portal.py {shown}".strip()
    if a.quick:
        a.clients, a.repeat = QUICK_CLIENTS, 1
    tmp = None
    if a.workdir:
        workdir = Path(a.workdir)
        if workdir.exists() and any(workdir.iterdir()):
            ap.error(f"--workdir {workdir} is not empty")
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="portal-bench-")
        workdir = Path(tmp.name)
    bench = Bench(a, workdir)
    try:
        if a.baseline_only:
            writes = json.loads((Path(a.baseline_only) / "writes.json").read_text(encoding="utf-8"))
            print(table(bench.baseline(writes), 1))
            return 0
        info, base = bench.run()
        report = table(bench.steps + base, a.repeat)
        print()
        print(report)
        if a.write_results:
            write_results(cmd, a, info, report)
        return 0 if all(r.code == 0 for s in bench.steps for r in s.runs) else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
