"""The ``connector`` command: validate, schema, check, sync, status, plan, run, sandbox, demo.

Exit codes: 0 fine, 1 a source or an action failed, 2 bad config or usage, 3 refused by the
safety brake.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table

from connector.config import Settings, json_schema, load_settings
from connector.errors import ConfigError, ConnectorError, StoreError
from connector.ports import FixedClock, SystemClock
from connector.redact import install_logging_filter, redact_url
from connector.report import cell, console, plain, print_exec, print_plan, print_sync

err = Console(stderr=True, highlight=False)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_logging_filter()


def _now_option(f):
    return click.option("--now", "now", default=None, help="Pretend it is this ISO 8601 moment (simulation, tests).")(f)


def _clock(now: str | None):
    if not now:
        return SystemClock()
    try:
        t = datetime.fromisoformat(now)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 datetime: {now!r}", param_hint="--now") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return FixedClock(t)


def _load(path: str) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as e:
        for p in e.problems:
            err.print(plain(p), markup=False)
        err.print(f"{len(e.problems)} problem(s) in {path}; nothing was run.", markup=False)
        sys.exit(2)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (secrets are masked).")
@click.version_option(package_name="client-keeper-connector")
def main(verbose: bool) -> None:
    """Keeps customers from slipping away: Bitrix24 + 1C + Binotel follow-up rules."""
    _setup_logging(verbose)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def validate(config: str) -> None:
    """Check a config file: every problem as FILE:LINE: path: message."""
    s = _load(config)
    console.print(f"{config}: OK ({len(s.rules)} rules: {', '.join(r.name for r in s.rules) or 'none'})", markup=False)


@main.command()
def schema() -> None:
    """Print the JSON Schema of the config (for editor autocompletion)."""
    click.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def check(config: str) -> None:
    """Reach each configured system; report missing scopes and permissions."""
    from connector.registry import adapters
    from connector.runner import make_context, open_store

    s = _load(config)
    store = open_store(s)
    ctx = make_context(store, SystemClock())
    t = Table("system", "check", "result", "detail")
    bad = 0
    for adapter in adapters().values():
        if not adapter.configured(s):
            continue
        try:
            results = adapter.check(s, ctx)
        except ConnectorError as e:
            t.add_row(adapter.name, "reach", "[red]FAIL[/]", cell(e))
            bad += 1
            continue
        for r in results:
            bad += not r.ok
            verdict = "[red]FAIL[/]" if not r.ok else "[yellow]WARN[/]" if r.warning else "[green]ok[/]"
            t.add_row(cell(r.system), cell(r.what), verdict, cell(r.detail))
    console.print(t)
    sys.exit(1 if bad else 0)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--full", is_flag=True, help="Ignore cursors and re-read everything.")
@_now_option
def sync(config: str, full: bool, now: str | None) -> None:
    """Pull every configured source into the local store."""
    from connector.runner import make_context
    from connector.sync import sync_all

    s = _load(config)
    store = _open(s)
    ctx = make_context(store, _clock(now))
    rep = sync_all(s, store, ctx, full=full, progress=sys.stdout.isatty())
    print_sync(rep)
    sys.exit(0 if rep.ok else 1)


def _open(s: Settings):
    from connector.runner import open_store

    try:
        return open_store(s)
    except StoreError as e:
        err.print(f"store: {e}", markup=False)
        sys.exit(1)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def status(config: str) -> None:
    """Cursors, record counts, last runs, journal states, unmatched 1C counterparties."""
    from sqlalchemy import select

    from connector.journal import Journal
    from connector.matching import link_report
    from connector.store import runs

    s = _load(config)
    store = _open(s)
    console.print(f"store: {plain(redact_url(s.store))}", markup=False)
    t = Table("system", "stream", "rows", "updated", "cursor")
    for c in store.cursors():
        t.add_row(cell(c["system"]), cell(c["stream"]), str(c["rows"]), str(c["updated_at"] or ""), cell((c["cursor"] or "")[:60]))
    console.print(t)
    counts = store.counts()
    console.print("records: " + ", ".join(f"{k} {v}" for k, v in counts.items()), markup=False)
    with store.tx() as conn:
        last = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(5)).all()
    rt = Table("run", "command", "started", "clock", "status")
    for r in last:
        rt.add_row(str(r.id), cell(r.command), str(r.started_at), str(r.clock), cell(r.status))
    console.print(rt)
    console.print("journal: " + (", ".join(f"{k} {v}" for k, v in sorted(Journal(store).summary().items())) or "empty"), markup=False)
    problems = link_report(store)
    if problems:
        lt = Table("1C counterparty", "status", "candidates")
        for p in problems:
            lt.add_row(cell(p["title"] or p["key"]), cell(p["status"]), cell(", ".join(p["candidates"])))
        console.print(lt)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--force", is_flag=True, help="Override the safety brake (shown, not executed here).")
@_now_option
def plan(config: str, as_json: bool, force: bool, now: str | None) -> None:
    """Sync, evaluate and print every planned action with its reason. Writes to no external system."""
    from connector.runner import cycle, make_context

    s = _load(config)
    store = _open(s)
    ctx = make_context(store, _clock(now))
    rep = cycle(s, store, ctx, execute=False, force=force, progress=not as_json and sys.stdout.isatty())
    if not rep.sync.ok:
        if not as_json:
            print_sync(rep.sync)
        err.print("a source failed: no rule was evaluated", markup=False)
        sys.exit(1)
    print_plan(rep.plan, as_json=as_json)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--once", is_flag=True, help="One cycle, then exit (non-zero if a source failed).")
@click.option("--force", is_flag=True, help="Override the safety brake for this run.")
@_now_option
def run(config: str, once: bool, force: bool, now: str | None) -> None:
    """Sync, evaluate, execute. Without --once: the daemon (SIGTERM stops, SIGHUP reloads)."""
    from connector.runner import cycle, make_context

    if not once:
        from connector.daemon import Daemon

        s = _load(config)
        sys.exit(Daemon(config, s, clock=_clock(now)).serve())
    s = _load(config)
    store = _open(s)
    ctx = make_context(store, _clock(now))
    rep = cycle(s, store, ctx, execute=True, force=force, progress=sys.stdout.isatty())
    print_sync(rep.sync)
    print_exec(rep)
    if not rep.sync.ok:
        sys.exit(1)
    if rep.plan and rep.plan.refused_run:
        sys.exit(3)
    sys.exit(0 if rep.ok else 1)


@main.command()
@click.option("--companies", default=40, show_default=True, help="Size of the seeded company.")
@click.option("--env-file", type=click.Path(dir_okay=False), default=None, help="Also write the variables to this file.")
def sandbox(companies: int, env_file: str | None) -> None:
    """Start the emulated Bitrix24, 1C, Binotel and SMS gateway on loopback until Ctrl-C."""
    import time

    from connector.demo import Sandbox
    from connector.sandbox import generate

    # Seeded around the real "now", so configs can be tried with the real clock (the demo instead
    # pins a fixed date for reproducible output).
    with Sandbox(company=generate(companies=companies, anchor=datetime.now(UTC))) as sb:
        lines = [f"{k}={v}" for k, v in sb.env.items()]
        console.print("Sandbox running on loopback. Point a config at it with:", markup=False)
        for line in lines:
            console.print(f"  export {line}", markup=False)
        if env_file:
            from connector.private import write_private_text

            write_private_text(env_file, "\n".join(lines) + "\n")  # secrets inside: owner only (0600)
            console.print(f"(also written to {env_file}; try: connector plan config/demo.yaml)", markup=False)
        console.print("Ctrl-C to stop.", markup=False)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@main.command()
@click.option("--config", "config_path", default=None, help="Demo config (default: the packaged config/demo.yaml).")
@click.option("--companies", default=40, show_default=True)
def demo(config_path: str | None, companies: int) -> None:
    """Seed a company in the sandbox, run every rule on it twice (today and 16 days later)."""
    from connector.demo import run_demo

    sys.exit(run_demo(config_path, companies=companies, console=console))


if __name__ == "__main__":  # pragma: no cover
    main()
