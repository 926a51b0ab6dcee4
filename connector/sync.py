"""Pull every configured source into the store; report, never hide, a failed source.

A source that fails leaves its cursor where its last committed batch put it, and the run is
marked failed: the caller must then not evaluate rules, because a half-synced store makes
clients look forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from connector.config import Settings
from connector.errors import ConnectorError, RecordError, Stopped, UpstreamError
from connector.matching import link_clients
from connector.ports import ChangeHints, Context
from connector.registry import adapters
from connector.store import Store

log = logging.getLogger("connector.sync")


@dataclass
class SourceReport:
    system: str
    rows: int = 0
    requests: int = 0
    seconds: float = 0.0
    streams: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass
class SyncReport:
    sources: list[SourceReport] = field(default_factory=list)
    links: dict[str, int] = field(default_factory=dict)
    stopped: bool = False  # told to stop part-way: the store is half-synced, nothing may be evaluated

    @property
    def ok(self) -> bool:
        return not self.stopped and all(s.error is None for s in self.sources)

    @property
    def failed(self) -> list[SourceReport]:
        return [s for s in self.sources if s.error]


def sync_all(settings: Settings, store: Store, ctx: Context, *, full: bool = False, progress: bool = False,
             should_stop: Callable[[], bool] | None = None) -> SyncReport:
    """Pull every configured source; on success, relink 1C counterparties to CRM clients.

    ``should_stop`` is polled between batches and streams (and by the clients' back-off sleeps,
    through ``ctx``): once it answers true the sync ends after the batch in hand, whose records
    and cursor are committed together, and the report says ``stopped``."""
    report = SyncReport()
    bar = _Progress() if progress else None
    should_stop = should_stop or ctx.should_stop
    if should_stop is not None and ctx.should_stop is None:
        ctx = replace(ctx, should_stop=should_stop)

    def stop_now() -> bool:
        if should_stop is not None and should_stop():
            report.stopped = True
        return report.stopped

    for name, adapter in adapters().items():
        if not adapter.configured(settings) or stop_now():
            continue
        rep = SourceReport(system=name)
        report.sources.append(rep)
        started = time.monotonic()
        before = ctx.counter(name).requests
        hinted: dict = {}
        try:
            source = adapter.source(settings, ctx)
            if source is None:
                continue
            if isinstance(source, ChangeHints):  # records the remote reported changed (events): read them first
                hinted = store.dirty(source.system)
                source.hint_changes(hinted)
            for stream in source.streams():
                if stop_now():
                    break
                cursor = None if full else store.cursor(source.system, stream)
                batches = source.pull(stream, cursor, full=full or cursor is None)
                for batch in batches:
                    n = store.apply(source.system, batch, ctx.clock.now())
                    rep.rows += n
                    rep.streams[stream] = rep.streams.get(stream, 0) + n
                    if bar:
                        bar.advance(f"{name}:{stream}", n, batch.total_hint)
                    if stop_now():
                        close = getattr(batches, "close", None)
                        if close is not None:
                            close()  # a generator's finally blocks run now, not at garbage collection
                        break
        except Stopped:
            report.stopped = True
            log.info("source %s: stopped part-way (signal); its cursors stay at the last committed batch", name)
        except UpstreamError as e:
            rep.error = str(e)
            log.error("source %s failed: %s", name, e)
        except RecordError as e:  # a source that cannot skip a bad record fails as a whole
            rep.error = str(e)
            log.error("source %s failed on a record: %s", name, e)
        except ConnectorError as e:
            rep.error = str(e)
            log.error("source %s failed: %s", name, e)
        finally:
            rep.seconds = time.monotonic() - started
            rep.requests = ctx.counter(name).requests - before
        if hinted and rep.error is None:
            store.clear_dirty(name, hinted)  # read; a mark renewed meanwhile stays for the next sync
    if bar:
        bar.close()
    if report.stopped:
        log.info("sync stopped on request: nothing is evaluated from a half-synced store")
    elif report.ok:
        report.links = link_clients(settings, store, ctx.clock.now())
    return report


class _Progress:
    """rich progress bars for a first full sync (one bar per stream)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
        self.tasks: dict[str, int] = {}
        self.p.start()

    def advance(self, name: str, n: int, total: int | None) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.p.add_task(name, total=total)
        tid = self.tasks[name]
        if total is not None:
            self.p.update(tid, total=total)
        self.p.advance(tid, n)

    def close(self) -> None:
        self.p.stop()
