"""The ``connector`` command: validate, schema, check, sync, status, plan, run, sandbox, demo.

Exit codes: 0 fine, 1 a source or an action failed, 2 bad config or usage, 3 something was
refused (the safety brake, an empty release pool), 4 the store is held by another process.
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
    from connector import i18n

    try:
        s = load_settings(path)
        i18n.use(s.language)
        return s
    except ConfigError as e:
        # plain lines, never wrapped to the terminal's width: one problem per line, for grep and editors
        for p in e.problems:
            click.echo(plain(p), err=True)
        click.echo(f"{len(e.problems)} problem(s) in {path}; nothing was run.", err=True)
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
    click.echo(f"{config}: OK ({len(s.rules)} rules: {', '.join(r.name for r in s.rules) or 'none'})")


@main.command()
def schema() -> None:
    """Print the JSON Schema of the config (for editor autocompletion)."""
    click.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def check(config: str) -> None:
    """Reach each configured system; check scopes, permissions and every user, field and code the config names."""
    from connector.ports import CheckResult
    from connector.registry import adapters
    from connector.runner import make_context, open_store

    s = _load(config)
    store = open_store(s)
    ctx = make_context(store, SystemClock())
    results: list[CheckResult] = []
    for adapter in adapters().values():
        if not adapter.configured(s):
            continue
        try:
            results += adapter.check(s, ctx)
        except ConnectorError as e:
            results.append(CheckResult(adapter.name, "reach", False, str(e)))
    # one plain line per check, never wrapped to the terminal: problems name FILE:LINE for editors and grep
    for r in results:
        word, colour = (("skip", "yellow") if not r.checked else ("FAIL", "red") if not r.ok else
                        ("WARN", "yellow") if r.warning else ("ok", "green"))
        click.echo(f"{click.style(f'{word:<4}', fg=colour)}  {plain(r.system):<8}  {plain(r.what)}: {plain(r.detail)}")
    bad = sum(not r.ok for r in results)
    click.echo(f"{bad} check(s) failed." if bad else "All checks passed.")
    sys.exit(1 if bad else 0)


def _wait_option(f):
    return click.option("--wait", "wait", type=float, default=None, metavar="SECONDS",
                        help="Wait this long for another process to release the store (default: exit 4 at once).")(f)


def _lease(s: Settings, store, wait: float | None):
    """Take the store's runner lease or exit 4 naming its holder."""
    from connector.lease import LeaseHeld
    from connector.runner import make_lease

    lease = make_lease(s, store, wait=wait)
    try:
        lease.acquire()
    except LeaseHeld as e:
        err.print(f"{e}", markup=False)
        sys.exit(4)
    return lease


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--full", is_flag=True, help="Ignore cursors and re-read everything.")
@_now_option
@_wait_option
def sync(config: str, full: bool, now: str | None, wait: float | None) -> None:
    """Pull every configured source into the local store."""
    from connector.ports import CappedClock
    from connector.runner import make_context
    from connector.sync import sync_all

    s = _load(config)
    store = _open(s)
    with _lease(s, store, wait):
        ctx = make_context(store, CappedClock(_clock(now)))
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (streamed).")
@click.option("--force", is_flag=True, help="Override the safety brake (shown, not executed here).")
@click.option("--no-sync", "no_sync", is_flag=True, help="Evaluate the store as it is, without syncing first.")
@click.option("--rule", "rules", multiple=True, help="Evaluate only this rule (repeatable).")
@click.option("--all", "show_all", is_flag=True, help="List every action, not the first --limit per rule.")
@click.option("--limit", default=20, show_default=True, help="Actions listed per rule on a terminal.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Also write the whole plan as JSON to this file.")
@_now_option
def plan(config: str, as_json: bool, force: bool, no_sync: bool, rules: tuple[str, ...], show_all: bool, limit: int,
         out: str | None, now: str | None) -> None:
    """Sync, evaluate and print every planned action with its reason. Writes to no external system.

    A simulated --now never moves what a real run depends on: cursors are stamped with the real
    clock at the latest. When another process holds the store, the store is evaluated as it is."""
    from connector.lease import LeaseHeld
    from connector.runner import cycle, make_context, make_lease

    s = _load(config)
    unknown = [r for r in rules if r not in {x.name for x in s.rules}]
    if unknown:
        err.print(f"--rule: no rule named {', '.join(unknown)} in {config}", markup=False)
        sys.exit(2)
    store = _open(s)
    ctx = make_context(store, _clock(now))
    lease = None
    if not no_sync:
        lease = make_lease(s, store)
        try:
            lease.acquire()
        except LeaseHeld as e:
            err.print(f"{e}: evaluating the store as it is (no sync)", markup=False)
            lease, no_sync = None, True
    try:
        rep = cycle(s, store, ctx, execute=False, force=force, progress=not as_json and sys.stdout.isatty(), lease=lease,
                    sync=not no_sync, only=set(rules) or None)
    finally:
        if lease is not None:
            lease.release()
    if not rep.sync.ok:
        if not as_json:
            print_sync(rep.sync)
        err.print("a source failed: no rule was evaluated", markup=False)
        sys.exit(1)
    if out:
        from connector.report import write_plan_json

        write_plan_json(rep.plan, out)
    print_plan(rep.plan, as_json=as_json, limit=None if (show_all or not sys.stdout.isatty()) else limit)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--once", is_flag=True, help="One cycle, then exit (non-zero if a source failed).")
@click.option("--force", is_flag=True, help="Override the safety brake for this run.")
@_now_option
@_wait_option
def run(config: str, once: bool, force: bool, now: str | None, wait: float | None) -> None:
    """Sync, evaluate, execute. Without --once: the daemon (SIGTERM stops, SIGHUP reloads).

    Exit 1 when a source or an action failed, 3 when anything was refused, 4 when another
    process holds the store."""
    from connector.runner import cycle, make_context

    s = _load(config)
    store = _open(s)
    if not once:
        from connector.daemon import Daemon

        if logging.getLogger().level > logging.INFO:  # a service reports each cycle
            logging.getLogger().setLevel(logging.INFO)
        lease = _lease(s, store, wait)
        try:
            sys.exit(Daemon(config, s, clock=_clock(now), lease=lease).serve())
        finally:
            lease.release()
    with _lease(s, store, wait) as lease:
        ctx = make_context(store, _clock(now))
        rep = cycle(s, store, ctx, execute=True, force=force, progress=sys.stdout.isatty(), lease=lease)
    print_sync(rep.sync)
    print_exec(rep)
    if not rep.sync.ok:
        sys.exit(1)
    if rep.refused:
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


@main.group()
def app() -> None:
    """The connector as the portal's local application: robots, triggers, events, calls on the card, SMS provider."""


def _hosted(s: Settings, config: str) -> list:
    """Adapters whose application mode the config enables (``connector.ports.HostedApplication``)."""
    from connector.i18n import _
    from connector.ports import HostedApplication
    from connector.registry import adapters

    found = [a for a in adapters().values() if isinstance(a, HostedApplication) and a.app_configured(s)]
    if not found:
        err.print(_("{config}: no application is configured (add bitrix24.app).").format(config=config), markup=False)
        sys.exit(2)
    return found


@app.command("install-info")
@click.argument("config", type=click.Path(dir_okay=False))
def app_install_info(config: str) -> None:
    """What the portal's admin enters to install the connector as a local application."""
    s = _load(config)
    for adapter in _hosted(s, config):
        for label, value in adapter.app_install_info(s):
            click.echo(f"{plain(label)}: {plain(value)}")


@app.command("serve")
@click.argument("config", type=click.Path(dir_okay=False))
def app_serve(config: str) -> None:
    """Serve the application's endpoint (and the Binotel push receiver when configured) until SIGTERM.

    Needed for the installation; `connector run` (the daemon) serves the same endpoint itself, so
    run one of the two."""
    import signal
    import threading

    from connector.daemon import Endpoints
    from connector.i18n import _
    from connector.runner import make_context

    if logging.getLogger().level > logging.INFO:  # a service reports what arrives
        logging.getLogger().setLevel(logging.INFO)
    s = _load(config)
    _hosted(s, config)
    store = _open(s)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: done.set())
    signal.signal(signal.SIGINT, lambda *_a: done.set())
    endpoints = Endpoints(s, store, make_context(store, SystemClock()))
    try:
        endpoints.start()
    except OSError as e:
        err.print(_("cannot listen: {error}").format(error=e), markup=False)
        sys.exit(1)
    for server in endpoints.servers:
        host, port = server.address
        click.echo(_("Listening on {host}:{port}; Ctrl-C or SIGTERM stops.").format(host=host, port=port))
    try:
        while not done.wait(1.0):
            pass
    finally:
        endpoints.stop()


@app.command("uninstall")
@click.argument("config", type=click.Path(dir_okay=False))
def app_uninstall(config: str) -> None:
    """Remove the application's robots, triggers, event handlers and SMS provider from the portal
    (before deleting the application there)."""
    from connector.runner import make_context

    s = _load(config)
    store = _open(s)
    ctx = make_context(store, SystemClock())
    failed = False
    for adapter in _hosted(s, config):
        try:
            for line in adapter.app_uninstall(s, ctx):
                click.echo(plain(line))
        except ConnectorError as e:
            err.print(str(e), markup=False)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
