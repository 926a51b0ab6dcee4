"""Binotel as a source: employees, then calls polled by time windows.

Binotel has no cursor, paging or "modified since": a stats method returns every call that
*started* in its window. So the source keeps a watermark ``T`` and each run fetches
``[T - overlap, now - settle]`` in chunks of at most 24 hours, one ``list-of-calls-for-period``
per chunk (both directions; a PBX that answers 102 "No such method" to it is read with
``incoming-`` plus ``outgoing-calls-for-period`` instead), yielding each chunk with the cursor set
to the chunk's end. The overlap (``overlap_seconds``,
4 h by default) re-fetches recent calls, so a call first seen ``ONLINE`` comes back with its final
disposition and the core's upsert by key replaces it. A provisional call that started before
the overlap is still remembered in the cursor and re-read through ``stats/call-details`` until it
is final (or two days old), so a very long call cannot stay ``ONLINE`` forever.

Cursor: JSON ``{"t": <Unix s, inclusive end of the last chunk>, "open": {"<id>": <start>}}``.

The employee list changes a few times a year, so it is read on a first or full sync and then at
most once per ``EMPLOYEES_EVERY`` (its cursor is the Unix time of the last read): a cycle where
nothing changed costs one request, the one calls window.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from binotel.client import SYSTEM, BinotelClient
from binotel.mapping import call_from_wire, manager_from_wire
from connector.config import Binotel
from connector.domain import Batch, Call, Sweep
from connector.errors import PermanentError, RecordError, Rejected
from connector.ports import Context

log = logging.getLogger("binotel.source")

DAY = 86400
OPEN_GIVE_UP_S = 2 * DAY  # stop re-reading a provisional call after this long
DETAILS_CHUNK = 50
EMPLOYEES_EVERY = 3600  # seconds between two reads of settings/list-of-employees


def chunks(start: int, end: int, size: int = DAY) -> list[tuple[int, int]]:
    """Split the inclusive window ``[start, end]`` into inclusive pieces of at most ``size`` seconds."""
    out: list[tuple[int, int]] = []
    a = start
    while a <= end:
        b = min(a + size - 1, end)
        out.append((a, b))
        a = b + 1
    return out


def map_calls(rows: list[dict]) -> list[Call]:
    """Map wire records, skipping (with a warning) the ones that cannot be mapped."""
    out: list[Call] = []
    for row in rows:
        try:
            out.append(call_from_wire(row))
        except RecordError as e:
            log.warning("%s: skipped", e)
    return out


class BinotelSource:
    system = SYSTEM

    def __init__(self, settings: Binotel, ctx: Context, *, client: BinotelClient | None = None,
                 lookback_days: int = 30, settle_seconds: int = 60):
        self.settings = settings
        self.ctx = ctx
        self.client = client or BinotelClient(settings, ctx)
        self.lookback_s = int(lookback_days * DAY)
        self.settle_s = int(settle_seconds)
        self.overlap_s = int(settings.overlap_seconds)
        self._both_ways = True  # list-of-calls-for-period until the PBX says it has no such method

    def streams(self) -> list[str]:
        return ["employees", "calls"]

    def pull(self, stream: str, cursor: str | None, *, full: bool = False) -> Iterator[Batch]:
        if stream == "employees":
            now = int(self.ctx.clock.now().timestamp())
            if full or not _employees_fresh(cursor, now):
                yield self._employees(now)
        elif stream == "calls":
            yield from self._calls(None if full else cursor)
        else:
            raise ValueError(f"binotel has no stream {stream!r}")

    def _employees(self, now: int) -> Batch:
        managers = []
        for map_key, item in self.client.employees():
            m = manager_from_wire(map_key, item)
            if m is not None:
                managers.append(m)
        return Batch("employees", records=list(managers), sweep=Sweep(SYSTEM, "user", {m.source_id for m in managers}),
                     total_hint=len(managers), cursor=str(now))

    def _period(self, a: int, b: int) -> list[dict]:
        """Every call that started in ``[a, b]``: one request where the PBX has the both-ways method."""
        if self._both_ways:
            try:
                return self.client.calls_for_period("all", a, b)
            except PermanentError as e:
                if e.code != 102:
                    raise
                log.warning("%s: reading incoming and outgoing calls separately (two requests per day)", e)
                self._both_ways = False
        return self.client.calls_for_period("in", a, b) + self.client.calls_for_period("out", a, b)

    def _calls(self, cursor: str | None) -> Iterator[Batch]:
        now = int(self.ctx.clock.now().timestamp())
        end = now - self.settle_s
        state = _parse_cursor(cursor)
        if state is None:
            start = end - self.lookback_s + 1
            opened: dict[str, int] = {}
        else:
            watermark, opened = state
            start = watermark - self.overlap_s
            batch = self._recheck_open(opened, start, now, watermark)
            if batch is not None:
                yield batch
        pieces = chunks(start, end)
        for i, (a, b) in enumerate(pieces, 1):
            rows = self._period(a, b)
            calls = map_calls(rows)
            for c in calls:
                if c.final:
                    opened.pop(c.source_id, None)
                else:
                    opened[c.source_id] = int(c.started_at.timestamp())
            _forget_old(opened, now)
            if self.ctx.progress:
                self.ctx.progress("calls", i, len(pieces))
            yield Batch("calls", records=list(calls), cursor=_dump_cursor(b, opened))

    def _recheck_open(self, opened: dict[str, int], start: int, now: int, watermark: int) -> Batch | None:
        """Re-read provisional calls the overlap window no longer covers."""
        _forget_old(opened, now)
        stale = [cid for cid, s in opened.items() if s < start]
        if not stale:
            return None
        calls: list[Call] = []
        for i in range(0, len(stale), DETAILS_CHUNK):
            part = stale[i:i + DETAILS_CHUNK]
            try:
                calls += map_calls(self.client.call_details(part))
            except Rejected as e:
                log.warning("%s: no longer re-reading %d provisional call(s)", e, len(part))
                for cid in part:
                    opened.pop(cid, None)
        for c in calls:
            if c.final:
                opened.pop(c.source_id, None)
        return Batch("calls", records=list(calls), cursor=_dump_cursor(watermark, opened))


def _forget_old(opened: dict[str, int], now: int) -> None:
    for cid in [cid for cid, s in opened.items() if s < now - OPEN_GIVE_UP_S]:
        log.warning("binotel call %s still provisional after %d days; no longer re-read", cid, OPEN_GIVE_UP_S // DAY)
        del opened[cid]


def _employees_fresh(cursor: str | None, now: int) -> bool:
    """Read within the last ``EMPLOYEES_EVERY`` (a clock set back, or an old cursor, reads again)."""
    try:
        last = int(cursor or "")
    except ValueError:
        return False
    return 0 <= now - last < EMPLOYEES_EVERY


def _parse_cursor(cursor: str | None) -> tuple[int, dict[str, int]] | None:
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
        return int(data["t"]), {str(k): int(v) for k, v in (data.get("open") or {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("binotel calls cursor %r unreadable; starting over", cursor)
        return None


def _dump_cursor(t: int, opened: dict[str, int]) -> str:
    return json.dumps({"t": int(t), "open": dict(sorted(opened.items()))}, separators=(",", ":"))
