"""Pull every configured source into the store; report, never hide, a failed source.

A source that fails leaves its cursor where its last committed batch put it, and the run is
marked failed: the caller must then not evaluate rules, because a half-synced store makes
clients look forgotten.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from connector.config import Settings
from connector.errors import ConnectorError, RecordError, UpstreamError
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

    @property
    def ok(self) -> bool:
        return all(s.error is None for s in self.sources)

    @property
    def failed(self) -> list[SourceReport]:
        return [s for s in self.sources if s.error]


def sync_all(settings: Settings, store: Store, ctx: Context, *, full: bool = False, progress: bool = False) -> SyncReport:
    """Pull every configured source; on success, relink 1C counterparties to CRM clients."""
    report = SyncReport()
    bar = _Progress() if progress else None
    for name, adapter in adapters().items():
        if not adapter.configured(settings):
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
                cursor = None if full else store.cursor(source.system, stream)
                for batch in source.pull(stream, cursor, full=full or cursor is None):
                    n = store.apply(source.system, batch, ctx.clock.now())
                    rep.rows += n
                    rep.streams[stream] = rep.streams.get(stream, 0) + n
                    if bar:
                        bar.advance(f"{name}:{stream}", n, batch.total_hint)
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
    if report.ok:
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
