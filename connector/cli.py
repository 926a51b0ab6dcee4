"""The ``connector`` command: validate, schema, check, sync, status, journal, explain, plan, run,
report, sandbox, demo.

Exit codes: 0 fine, 1 a source or an action failed, 2 bad config or usage, 3 something was
refused (the safety brake, an empty release pool), 4 the store is held by another process.
A user's mistake never ends in a Python traceback: :func:`entry` turns it into a message and 2.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.console import Console

from connector.config import Settings, json_schema, load_settings
from connector.errors import ConfigError, ConnectorError, StoreError
from connector.i18n import _, ngettext
from connector.logs import FORMATS, LEVELS
from connector.logs import setup as setup_logging
from connector.ports import FixedClock, SystemClock
from connector.redact import redact
from connector.report import console, plain, print_exec, print_plan, print_sync

log = logging.getLogger("connector.cli")
GC_THRESHOLD = 50_000
err = Console(stderr=True, highlight=False)


def _now_option(f):
    return click.option("--now", "now", default=None,
                        help="Pretend it is this ISO 8601 moment (simulation, tests); without an offset, in the config's timezone.")(f)


def _clock(now: str | None, timezone: str = "UTC"):
    """``--now``: an ISO 8601 moment; one written without an offset is the company's wall clock."""
    if not now:
        return SystemClock()
    try:
        t = datetime.fromisoformat(now)
    except ValueError:
        raise click.BadParameter(_("not an ISO 8601 date and time: {value}").format(value=repr(now)), param_hint="--now") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(timezone))
    return FixedClock(t)


def _load(path: str) -> Settings:
    from connector import i18n

    try:
        s = load_settings(path)
        i18n.use(s.language)
        return s
    except UnicodeDecodeError:
        click.echo(_("{path}:1: (file): cannot read: not UTF-8 text").format(path=path), err=True)
        sys.exit(2)
    except ConfigError as e:
        _language_of(path)
        # plain lines, never wrapped to the terminal's width: one problem per line, for grep and editors
        for p in e.problems:
            click.echo(plain(p), err=True)
        click.echo(ngettext("{n} problem in {file}; nothing was run.", "{n} problems in {file}; nothing was run.",
                            len(e.problems)).format(n=len(e.problems), file=path), err=True)
        sys.exit(2)


def _language_of(path: str) -> None:
    """A config that did not load still says in which language its summary line is wanted."""
    import re

    from connector import i18n

    try:
        m = re.search(r"^language:\s*[\"']?(uk|ru|en)\b", Path(path).read_text(encoding="utf-8"), re.M)
    except (OSError, UnicodeDecodeError):
        return
    if m:
        i18n.use(m.group(1))


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Same as --log-level debug (secrets are masked).")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default=None,
              help="debug, info, warning or error (default: warning; the daemon: info).")
@click.option("--log-format", type=click.Choice(FORMATS, case_sensitive=False), default="text", show_default=True,
              help="text for people, json (one object a line, secrets masked) for a log shipper.")
@click.version_option(package_name="client-keeper-connector")
@click.pass_context
def main(ctx: click.Context, verbose: bool, log_level: str | None, log_format: str) -> None:
    """Keeps customers from slipping away: Bitrix24 + 1C + Binotel follow-up rules."""
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = "debug" if verbose else (log_level or "").lower() or None
    setup_logging(ctx.obj["log_level"] or "warning", log_format.lower())


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def validate(config: str) -> None:
    """Check a config file: every problem as FILE:LINE: path: message."""
    s = _load(config)
    click.echo(ngettext("{file}: OK ({n} rule: {names})", "{file}: OK ({n} rules: {names})", len(s.rules)).format(
        file=config, n=len(s.rules), names=", ".join(r.name for r in s.rules) or _("none")))


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
    click.echo(ngettext("{n} check failed.", "{n} checks failed.", bad).format(n=bad) if bad else _("All checks passed."))
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
        ctx = make_context(store, CappedClock(_clock(now, s.timezone)))
        rep = sync_all(s, store, ctx, full=full, progress=sys.stdout.isatty())
    print_sync(rep)
    sys.exit(0 if rep.ok else 1)


def _open(s: Settings):
    from connector.runner import open_store

    try:
        return open_store(s)
    except StoreError as e:
        err.print(_("store: {error}").format(error=e), markup=False)
        sys.exit(1)


def _journal_states() -> list[str]:
    from connector.journal import State

    return [str(x) for x in State]


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def status(config: str) -> None:
    """Sources and positions, live record counts, last runs and refusals, the lease, journal states."""
    from connector.report import print_status

    s = _load(config)
    print_status(_open(s), s.timezone)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--rule", "rules", multiple=True, help="Only this rule's entries (repeatable).")
@click.option("--state", "states", multiple=True, type=click.Choice([str(x) for x in _journal_states()]),
              help="Only entries in this state (repeatable).")
@click.option("--client", "client", default=None, help="Only this client's entries: id, key, phone, tax id or name.")
@click.option("--since", "since", default=None, help="Only entries changed since this date or ISO moment (local time).")
@click.option("--limit", default=200, show_default=True, help="At most this many entries, the latest first.")
@click.option("--json", "as_json", is_flag=True, help="The entries as a JSON array (local times with their offset).")
def journal(config: str, rules: tuple[str, ...], states: tuple[str, ...], client: str | None, since: str | None, limit: int,
            as_json: bool) -> None:
    """The action journal: what was planned and done, for whom, with which result."""
    from sqlalchemy import or_, select

    from connector.report import print_journal
    from connector.store import journal as jt

    s = _load(config)
    _known_rules(s, rules, config)
    store = _open(s)
    q = select(jt).order_by(jt.c.updated_at.desc(), jt.c.key).limit(limit)
    if rules:
        q = q.where(jt.c.rule.in_(rules))
    if states:
        q = q.where(jt.c.state.in_(states))
    if since:
        q = q.where(jt.c.updated_at >= _clock(since, s.timezone).now())
    if client:
        keys = [m.key for m in _find_client(s, store, client, single=False)]
        q = q.where(or_(jt.c.client_key.in_(keys), jt.c.subject_key.in_(keys)))
    with store.tx() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    print_journal(rows, s.timezone, as_json=as_json)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("client")
@click.option("--json", "as_json", is_flag=True, help="The verdicts and the evidence as JSON.")
@_now_option
def explain(config: str, client: str, as_json: bool, now: str | None) -> None:
    """Why CLIENT (id, key, phone, tax id or name) is or is not on each rule's list, with the
    evidence, from the store as it is: nothing is synced or written."""
    from connector.explain import explain as run_explain
    from connector.report import print_explanation

    s = _load(config)
    store = _open(s)
    match = _find_client(s, store, client, single=True)[0]
    print_explanation(run_explain(s, store, match.key, _clock(now, s.timezone).now()), as_json=as_json)


def _known_rules(s: Settings, rules: tuple[str, ...], config: str) -> None:
    unknown = [r for r in rules if r not in {x.name for x in s.all_rules()}]
    if unknown:
        err.print(_("--rule: no rule named {names} in {config} (its rules: {known})").format(
            names=", ".join(unknown), config=config, known=", ".join(x.name for x in s.all_rules()) or "-"), markup=False)
        sys.exit(2)


def _find_client(s: Settings, store, query: str, *, single: bool) -> list:
    """The clients ``query`` names; none, or several where one is needed, is a usage error (2)."""
    from connector.explain import find_clients
    from connector.matching import primary_system

    found = find_clients(store, primary_system(s), query, region=s.phone_region)
    if not found:
        err.print(_("No client matches {query} (an id, a store key, a phone, a tax id or a part of the name).").format(
            query=repr(query)), markup=False)
        sys.exit(2)
    if single and len(found) > 1:
        err.print(_("{query} matches {n} clients; name one by its key:").format(query=repr(query), n=len(found)), markup=False)
        for m in found[:50]:
            extra = ", ".join(x for x in [m.tax_id or "", *m.phones[:2]] if x)
            err.print(f"  {m.key}  {m.title}" + (f"  ({extra})" if extra else ""), markup=False)
        sys.exit(2)
    return found


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
    _known_rules(s, rules, config)
    store = _open(s)
    ctx = make_context(store, _clock(now, s.timezone))
    # Holding the store lets the plan bring the derived evidence up to date once for every later
    # evaluation (with --no-sync too); without it the plan derives a private copy, slower, and
    # changes nothing another process depends on.
    lease = make_lease(s, store)
    try:
        lease.acquire()
    except LeaseHeld as e:
        if not no_sync:
            err.print(_("{reason}: evaluating the store as it is (no sync)").format(reason=e), markup=False)
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
        err.print(_("a source failed: no rule was evaluated"), markup=False)
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

        if not (click.get_current_context().find_root().obj or {}).get("log_level"):  # a service reports each cycle and action
            logging.getLogger().setLevel(logging.INFO)
        lease = _lease(s, store, wait)
        try:
            sys.exit(Daemon(config, s, clock=_clock(now, s.timezone), lease=lease).serve())
        finally:
            lease.release()
    with _lease(s, store, wait) as lease:
        ctx = make_context(store, _clock(now, s.timezone))
        rep = cycle(s, store, ctx, execute=True, force=force, progress=sys.stdout.isatty(), lease=lease)
    print_sync(rep.sync)
    print_exec(rep)
    if not rep.sync.ok:
        sys.exit(1)
    if rep.refused:
        sys.exit(3)
    sys.exit(0 if rep.ok else 1)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--period", default="week", show_default=True, help="week (the last full week), month (the last full month), "
              "7d (the last seven days) or FROM..TO (ISO dates).")
@click.option("--format", "fmt", type=click.Choice(["html", "md", "csv", "json"]), default=None,
              help="Default: html with --out FILE.html, else md.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Write the report to this file.")
@click.option("--manager", "manager", default=None, help="Only this manager (a user id).")
@_now_option
def report(config: str, period: str, fmt: str | None, out: str | None, manager: str | None, now: str | None) -> None:
    """The supervisor's control report from the store and the journal (no sync): per manager and for the company."""
    from connector import control
    from connector.calendar import BusinessCalendar
    from connector.rules.base import person_key
    from connector.snapshot import load_snapshot

    s = _load(config)
    store = _open(s)
    clock = _clock(now, s.timezone).now()
    try:
        p = control.resolve_period(period, clock, BusinessCalendar(s.calendar, s.timezone))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--period") from None
    who = None
    if manager is not None:
        with load_snapshot(s, store, clock) as snap:
            who = person_key(snap, manager)
    rep = control.build(s, store, p, clock, manager=who)
    fmt = fmt or ("html" if out and out.lower().endswith((".html", ".htm")) else "md")
    text = control.render(rep, fmt)
    if out:
        from connector.private import write_private_text

        write_private_text(out, text)  # client names and figures: owner only (0600)
        for line in rep.summary():
            click.echo(line)
        click.echo(str(out))
    else:
        click.echo(text, nl=False)


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
    with Sandbox(company=generate(companies=companies, anchor=datetime.now(UTC), sync_stories=True)) as sb:
        lines = [f"{k}={v}" for k, v in sb.env.items()]
        console.print(_("Sandbox running on loopback. Point a config at it with:"), markup=False)
        for line in lines:
            console.print(f"  export {line}", markup=False)
        if env_file:
            from connector.private import write_private_text

            write_private_text(env_file, "\n".join(lines) + "\n")  # secrets inside: owner only (0600)
            console.print(_("(also written to {file}; try: connector plan config/demo.yaml)").format(file=env_file), markup=False)
        console.print(_("Ctrl-C to stop."), markup=False)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@main.command()
@click.option("--config", "config_path", default=None, help="Demo config (default: the one shipped in the package, a copy of config/demo.yaml).")
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


def entry() -> None:
    """The ``connector`` executable: click handles usage errors (exit 2); what escapes it becomes
    one clear line, never a traceback: a file that cannot be read is the user's mistake (2), an
    interrupt exits 130, anything else is reported as an internal error (1) with the traceback
    only at ``--log-level debug``."""
    # A plan allocates hundreds of thousands of small acyclic objects (rows, views, texts). At CPython's
    # default, a collection every 700 allocations, the collector walked the live ones again and again:
    # a fifth of a 100k-client plan (bench/RESULTS.md). Cycles are rare here; they are still collected.
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    gc.freeze()  # what start-up imported lives as long as the process: never walk it
    try:
        main(prog_name="connector")
    except ConfigError as e:
        for p in e.problems:
            click.echo(redact(p), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo(_("Interrupted."), err=True)
        sys.exit(130)
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(_("Error: {where}{problem}").format(where=where, problem=e.strerror or e), err=True)
        sys.exit(2)
    except ConnectorError as e:
        click.echo(_("Error: {where}{problem}").format(where="", problem=redact(str(e))), err=True)
        sys.exit(1)
    except Exception as e:
        log.debug("internal error", exc_info=True)
        click.echo(_("Internal error: {problem}. Please report it; --log-level debug shows where it happened.").format(
            problem=redact(f"{type(e).__name__}: {e}")), err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    entry()
