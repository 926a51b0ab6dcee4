"""Bitrix24 streams and cursors: reads with as few HTTP requests as the API allows.

How rows are read (reference §2.3, §2.4, §6; ``settings/performance/huge-data.md``):

* No offset paging on big tables: every page with ``start >= 0`` recomputes COUNT. Lists are
  read with ``start=-1``, ``order ID ASC`` and ID filters only.
* A full read is a set of **ID-range windows** packed 50 per ``batch``:
  ``filter[>=ID]=a & filter[<ID]=b``, one command per window. The cycle's first request (users)
  also asks every table for its largest ID (``order ID DESC``), so each scan knows where to stop
  (a stream read on its own asks in its first batch). Windows start 50 IDs wide (a
  window that wide can never overflow a 50-row page), widen when IDs are sparse, and a window
  that comes back with a full page is continued from its last ID in the next batch. Paging uses
  documented filters only (no ``$result`` chaining between pages, whose behaviour on a short page
  is undocumented). Dense IDs give 2,500 rows a request.
* An incremental cycle asks only for rows changed since the cursor (``DATE_MODIFY``,
  ``LAST_UPDATED``, ``updatedTime``, ``CHANGED_DATE``; minus ``overlap_seconds``), keyset on ID
  inside the changed set. The first stream pulled (users) sends the first change page of every
  stream in the same batch as the users page; later streams use it when their cursor agrees
  (every stream's cursor starts at that request), so a quiet cycle costs ONE request.
* Timeline comments can only be listed per company: a full read asks for every company's (one
  command each, 50 per batch), a cycle only for companies whose timeline moved
  (``LAST_ACTIVITY_TIME``) or that changed.
* Deletions: every ``sweep_every_hours`` a stream re-reads its live IDs (``select ID`` windows)
  and yields ``Sweep``; a full read yields one for free.

Application mode with events (``bitrix24.app``, :mod:`bitrix.app`): the portal reports edits of
companies, contacts, deals, activities and smart invoices; the sync hands the reported records over
(:meth:`BitrixSource.hint_changes`; offline events are fetched here with ``event.offline.get``,
``clear=1``). Between full change polls (every ``poll_every_minutes``, still the ground truth) a cycle
reads only those records: ONE request (their ``@ID`` lists and their requisites in one ``batch``),
no cursor moves, a record that is gone is marked deleted. A poll also reads any reported record the
change filter did not return (a deletion). A lost event costs latency until the next poll, never data.

The cursor is JSON: ``{"v":1, "mode": "full"|"inc", "since": <server ISO time>, "after": <ID
read up to, full mode>, "swept": <unix>}`` (+ ``"stages"`` for invoices). ``since`` is the
portal's own clock (``time.date_start`` of the cycle's first request), never ours.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bitrix import mapping as m
from bitrix.client import BitrixClient
from connector.config import Bitrix24
from connector.domain import Batch, Record, Sweep
from connector.errors import NotFound, PermanentError
from connector.ports import Context

log = logging.getLogger("bitrix.source")

PAGE = 50  # Bitrix24 list page size, fixed
BATCH = 50  # commands per batch, fixed
TARGET_ROWS = 45  # rows a widened window aims at: a little under a page, so few windows overflow
MAX_WIDTH = 10_000_000

STREAMS = ["users", "companies", "contacts", "deals", "activities", "invoices", "tasks", "comments"]
REPORTED = {"company": "companies", "contact": "contacts", "deal": "deals", "activity": "activities", "invoice": "invoices"}
REGISTERED_KV = "bitrix24.app.registered"  # what the installed application bound (bitrix.app)
ENTITY_EVENTS = {
    **{f"ONCRM{w}{op}": k for w, k in (("COMPANY", "company"), ("CONTACT", "contact"), ("DEAL", "deal"),
                                       ("ACTIVITY", "activity")) for op in ("ADD", "UPDATE", "DELETE")},
    **{f"ONCRMDYNAMICITEM{op}": "invoice" for op in ("ADD", "UPDATE", "DELETE")},
}
SMART_INVOICE = 31
WINDOWED = ("companies", "contacts", "deals", "activities", "invoices", "tasks", "requisites:4", "requisites:3")


@dataclass(frozen=True)
class Entity:
    """One list method and how to page it by ID."""

    kind: str
    method: str
    select: tuple[str, ...]
    changed: str | None  # filter field for "changed since"
    fid: str = "ID"  # ID name in filter/order
    rid: str = "ID"  # ID name in result rows
    wrap: str | None = None  # result wrapper key ("items", "tasks")
    params: tuple[tuple[str, Any], ...] = ()
    base: tuple[tuple[str, Any], ...] = ()  # filter always applied

    def rows(self, result: Any) -> list[dict]:
        if self.wrap and isinstance(result, Mapping):
            result = result.get(self.wrap)
        if isinstance(result, Mapping):  # PHP map rendered as object
            result = list(result.values())
        return [r for r in (result or []) if isinstance(r, Mapping)]

    def row_id(self, row: Mapping[str, Any]) -> int:
        return int(row.get(self.rid) if self.rid in row else row.get(self.rid.upper(), row.get(self.rid.lower())))

    def query(self, *, filt: Mapping[str, Any] | None = None, select: Iterable[str] | None = None,
              order: str = "ASC") -> dict[str, Any]:
        q: dict[str, Any] = dict(self.params)
        q["order"] = {self.fid: order}
        q["filter"] = {**dict(self.base), **dict(filt or {})}
        q["select"] = list(select if select is not None else self.select)
        q["start"] = -1
        return q


def _entities(cfg: Bitrix24) -> dict[str, Entity]:
    uf = tuple(dict.fromkeys(f for f in [*cfg.pulled_fields(), cfg.guid_field, cfg.segment_field, cfg.opt_out_field] if f))
    return {
        "companies": Entity("company", "crm.company.list", (
            "ID", "TITLE", "COMPANY_TYPE", "ASSIGNED_BY_ID", "DATE_CREATE", "DATE_MODIFY", "LAST_ACTIVITY_TIME",
            "PHONE", "EMAIL", *uf), "DATE_MODIFY"),
        "contacts": Entity("contact", "crm.contact.list", (
            "ID", "NAME", "SECOND_NAME", "LAST_NAME", "TYPE_ID", "COMPANY_ID", "BIRTHDATE", "ASSIGNED_BY_ID",
            "DATE_CREATE", "DATE_MODIFY", "PHONE", "EMAIL", *uf), "DATE_MODIFY"),
        "deals": Entity("deal", "crm.deal.list", (
            "ID", "TITLE", "STAGE_ID", "STAGE_SEMANTIC_ID", "CATEGORY_ID", "OPPORTUNITY", "CURRENCY_ID", "COMPANY_ID",
            "CONTACT_ID", "ASSIGNED_BY_ID", "DATE_CREATE", "DATE_MODIFY", "CLOSEDATE", "CLOSED", *cfg._deal_fields), "DATE_MODIFY"),
        "activities": Entity("activity", "crm.activity.list", (
            "ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "PROVIDER_ID", "SUBJECT", "COMPLETED", "START_TIME",
            "END_TIME", "DEADLINE", "LAST_UPDATED", "RESPONSIBLE_ID", "DIRECTION", "ASSOCIATED_ENTITY_ID"), "LAST_UPDATED"),
        "invoices": Entity("invoice", "crm.item.list", (
            "id", "title", "accountNumber", "stageId", "categoryId", "opportunity", "currencyId", "begindate",
            "closedate", "companyId", "contactId", "assignedById", "createdTime", "updatedTime", "movedTime",
            "parentId2", "comments", *dict.fromkeys(f for f in cfg.invoice_fields() if f != "accountNumber")), "updatedTime", fid="id", rid="id", wrap="items", params=(("entityTypeId", 31),)),
        "tasks": Entity("task", "tasks.task.list", (
            "ID", "TITLE", "DESCRIPTION", "RESPONSIBLE_ID", "DEADLINE", "STATUS", "CREATED_DATE", "CLOSED_DATE",
            "CHANGED_DATE", "UF_CRM_TASK"), "CHANGED_DATE", rid="id", wrap="tasks"),
        # internal: tax ids of companies (4) and contacts (3)
        "requisites:4": Entity("requisite", "crm.requisite.list", ("ID", "ENTITY_ID", "RQ_INN", "RQ_EDRPOU"),
                               "DATE_MODIFY", base=(("ENTITY_TYPE_ID", 4),)),
        "requisites:3": Entity("requisite", "crm.requisite.list", ("ID", "ENTITY_ID", "RQ_INN", "RQ_EDRPOU"),
                               "DATE_MODIFY", base=(("ENTITY_TYPE_ID", 3),)),
        # internal: companies with new timeline activity (comments live in the timeline)
        "touched": Entity("company", "crm.company.list", ("ID",), "LAST_ACTIVITY_TIME"),
    }


def _label(name: str) -> str:
    """Batch command label of a table's largest-ID probe."""
    return "max_" + name.replace(":", "_")


class Windows:
    """ID-range windows over one list, 50 commands per ``batch``; yields ``(rows, watermark)``.

    ``watermark`` is the highest ID below which every row has been yielded, so a cursor built
    from it never runs ahead of the data.
    """

    def __init__(self, client: BitrixClient, ent: Entity, *, filt: Mapping[str, Any] | None = None,
                 select: Iterable[str] | None = None, after: int = 0, width: int = PAGE, max_id: int | None = None):
        self.client, self.ent = client, ent
        self.filt = dict(filt or {})
        self.select = list(select) if select is not None else list(ent.select)
        self.after, self.width, self.max_id = after, max(PAGE, width), max_id

    def __iter__(self) -> Iterator[tuple[list[dict], int]]:
        ent, fid = self.ent, self.ent.fid
        pending: deque[tuple[int, int]] = deque()
        next_lo, width, max_id = self.after + 1, self.width, self.max_id
        while True:
            cmds: dict[str, tuple[str, dict]] = {}
            if max_id is None:
                cmds["max"] = (ent.method, ent.query(filt=self.filt, select=[fid], order="DESC"))
            windows: dict[str, tuple[int, int]] = {}

            def add(lo: int, hi: int) -> None:
                label = f"w{len(windows)}"  # noqa: B023 - called within this iteration
                windows[label] = (lo, hi)  # noqa: B023
                window = {**self.filt, f">={fid}": lo, f"<{fid}": hi}
                cmds[label] = (ent.method, ent.query(filt=window, select=self.select))  # noqa: B023

            while pending and len(cmds) < BATCH:
                add(*pending.popleft())
            while len(cmds) < BATCH and (max_id is None or next_lo <= max_id):
                hi = next_lo + width if max_id is None else min(next_lo + width, max_id + 1)
                add(next_lo, hi)
                next_lo = hi
            if not windows:
                return
            reply = self.client.batch(cmds)
            reply.raise_first()
            if "max" in cmds:
                top = ent.rows(reply.results.get("max"))
                max_id = ent.row_id(top[0]) if top else self.after
            out: list[dict] = []
            seen_rows = seen_ids = 0
            for label, (lo, hi) in windows.items():
                rows = ent.rows(reply.results.get(label))
                out.extend(rows)
                if len(rows) >= PAGE and hi - lo > PAGE:
                    last = max(ent.row_id(r) for r in rows)
                    if last + 1 < hi:
                        pending.append((last + 1, hi))
                    seen_ids += last + 1 - lo
                else:
                    seen_ids += max(0, (hi if max_id is None else min(hi, max_id + 1)) - lo)
                seen_rows += len(rows)
            if seen_rows == 0:
                width = min(width * 8, MAX_WIDTH)
            elif seen_ids > 0:
                density = seen_rows / seen_ids
                width = PAGE if density * PAGE >= TARGET_ROWS else min(MAX_WIDTH, int(TARGET_ROWS / density))
            if pending:
                watermark = min(lo for lo, _ in pending) - 1
            else:
                watermark = max(self.after, min(next_lo - 1, max_id if max_id is not None else next_lo - 1))
            yield out, watermark
            if not pending and max_id is not None and next_lo > max_id:
                return


def keyset(client: BitrixClient, ent: Entity, first: list[dict], *, filt: Mapping[str, Any],
           select: Iterable[str] | None = None) -> Iterator[list[dict]]:
    """Rest of a changed set whose first keyset page is ``first``: windows from its last ID."""
    if len(first) < PAGE:
        return
    ids = sorted(ent.row_id(r) for r in first)
    span = max(1, ids[-1] - ids[0] + 1)
    width = max(PAGE, int(TARGET_ROWS * span / len(ids)))
    for rows, _ in Windows(client, ent, filt=filt, select=select, after=ids[-1], width=width):
        yield rows


@dataclass
class _State:
    mode: str = "inc"
    since: str | None = None
    after: int = 0
    swept: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def decode(cls, cursor: str | None) -> "_State | None":
        if not cursor:
            return None
        try:
            d = json.loads(cursor)
        except ValueError:
            log.warning("bitrix24: unreadable cursor, reading the stream in full")
            return None
        if not isinstance(d, dict) or d.get("v") != 1:
            return None
        return cls(mode=d.get("mode", "inc"), since=d.get("since"), after=int(d.get("after") or 0),
                   swept=d.get("swept"), extra={k: v for k, v in d.items()
                                                if k not in {"v", "mode", "since", "after", "swept"}})

    def encode(self) -> str:
        d: dict[str, Any] = {"v": 1, "mode": self.mode, "since": self.since}
        if self.mode == "full":
            d["after"] = self.after
        if self.swept is not None:
            d["swept"] = self.swept
        d.update(self.extra)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))


class BitrixSource:
    """``connector.ports.Source`` for Bitrix24 (see the module docstring for the read plan)."""

    system = "bitrix24"

    def __init__(self, settings: Bitrix24, ctx: Context, client: BitrixClient | None = None):
        self.cfg = settings
        self.ctx = ctx
        self.client = client or BitrixClient(settings, ctx)
        self.ent = _entities(settings)
        self._probe: dict[str, Any] | None = None  # first change page of every stream, this cycle
        self._companies_seen: set[int] | None = None  # all company ids, after a full company read
        self._companies_changed: set[int] = set()
        self._stages: dict[str, str] = {}
        # Server time of this cycle's first request (the users pull): every stream's new cursor
        # starts there, so all cursors agree and the next cycle's single probe serves them all.
        self._cycle_since: str | None = None
        self._max_ids: dict[str, int] = {}  # largest ID per table, learnt by a full cycle's first request
        # deals whose product rows the rules need (won or regular), seen by this cycle's deals stream,
        # and how that stream read: "full" from scratch, or the incremental ``since`` it started from
        self._deals_seen: set[int] = set()
        self._deals_read: str | None = None
        self._hint: dict[str, set[int]] = {}  # records reported changed (events), by kind
        self._dirty_only = False  # this cycle reads only the reported records (events, no poll due)
        self._dirty_rows: dict[str, list[dict]] = {}  # their rows, by stream (and requisites:4/3)
        self._gone: list[str] = []  # reported records a poll found deleted

    def hint_changes(self, changed: Mapping[str, Mapping[str, Any]]) -> None:
        """Records the portal reported changed (``connector.ports.ChangeHints``)."""
        for kind, ids in changed.items():
            self._hint.setdefault(kind, set()).update(int(i) for i in ids if str(i).isdigit())

    def streams(self) -> list[str]:
        return [*STREAMS, "productrows"] if self.cfg._product_rows else list(STREAMS)

    def close(self) -> None:
        self.client.close()

    def pull(self, stream: str, cursor: str | None, *, full: bool = False) -> Iterator[Batch]:
        if stream not in self.streams():
            raise ValueError(f"unknown bitrix24 stream {stream!r}")
        state = None if full else _State.decode(cursor)
        if stream == "users":
            return self._users_or_reported(state)
        if stream == "productrows":
            return self._product_rows(state)
        if self._dirty_only:
            return self._reported(stream, state)
        if stream == "comments":
            return self._comments(state)
        return self._table(stream, state)

    # ------------------------------------------------------------ helpers

    def _server_iso(self) -> str:
        """The portal's time of the last answered request, as the portal writes it."""
        if self.client.date_start:
            return self.client.date_start
        return datetime.fromtimestamp(self.client.server_now(), UTC).isoformat(timespec="seconds")

    def _since_filter(self, since: str) -> str:
        dt = m.parse_dt(since)
        if dt is None:
            return since
        return (dt - timedelta(seconds=self.cfg.overlap_seconds)).isoformat(timespec="seconds")

    def _sweep_due(self, state: _State) -> bool:
        if state.swept is None:
            return True
        return self.client.server_now() - float(state.swept) >= self.cfg.sweep_every_hours * 3600

    def _map(self, rows: Iterable[Mapping[str, Any]], fn: Callable[[Mapping[str, Any]], Record]) -> list[Record]:
        out: list[Record] = []
        for r in rows:
            try:
                out.append(fn(r))
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                log.warning("bitrix24: skipped a bad %s row id=%s: %s", getattr(fn, "__name__", "?"),
                            r.get("ID", r.get("id")), e)
        return out

    def _changes_query(self, name: str, since: str) -> tuple[str, dict]:
        ent = self.ent[name]
        return ent.method, ent.query(filt={f">={ent.changed}": self._since_filter(since)})

    # ------------------------------------------------------------ records reported by events

    def _events(self) -> str:
        """"online"/"offline" when the installed application has its event handlers bound."""
        app = self.cfg.app
        if app is None or app.events == "none" or self.ctx.kv_get is None:
            return "none"
        try:
            registered = json.loads(self.ctx.kv_get(REGISTERED_KV) or "{}")
        except ValueError:
            return "none"
        events = registered.get("events") if isinstance(registered, dict) else None
        return events if events in ("online", "offline") and events == app.events else "none"

    def _users_or_reported(self, state: _State | None) -> Iterator[Batch]:
        mode = self._events()
        poll_due = True
        if mode != "none" and state is not None and state.mode == "inc" and state.since:
            since = m.parse_dt(state.since)
            assert self.cfg.app is not None
            poll_due = since is None or self.ctx.clock.now() - since >= timedelta(minutes=self.cfg.app.poll_every_minutes)
        if mode == "offline" and not self._offline_events():
            poll_due = True  # an event without the record's id: only a poll can tell what changed
        if mode != "none" and not poll_due:
            self._dirty_only = True
            self._dirty_rows = self._read_reported()
            return iter(())
        return self._users(state)

    def _offline_events(self) -> bool:
        """Drain the portal's offline queue into the hint; False if an event did not name its record."""
        named = True
        for _ in range(20):  # 1,000 events at most per cycle; the rest wait for the next one (or the poll)
            res = self.client.result("event.offline.get", {"clear": 1, "limit": PAGE}) or {}
            events = res.get("events") if isinstance(res, Mapping) else None
            events = list(events.values()) if isinstance(events, Mapping) else list(events or [])
            for e in events:
                kind = ENTITY_EVENTS.get(str((e or {}).get("EVENT_NAME", "")).upper()) if isinstance(e, Mapping) else None
                if kind is None:
                    continue
                data = e.get("EVENT_DATA")
                fields = data.get("FIELDS") if isinstance(data, Mapping) else None
                rid = m.to_int((fields or {}).get("ID")) if isinstance(fields, Mapping) else None
                if kind == "invoice" and m.to_int((fields or {}).get("ENTITY_TYPE_ID")) not in (None, SMART_INVOICE):
                    continue
                if rid is None:
                    named = False
                    continue
                self._hint.setdefault(kind, set()).add(rid)
            if len(events) < PAGE:
                break
        return named

    def _read_reported(self) -> dict[str, list[dict]]:
        """Every reported record and the requisites of reported clients, in as few batches as fit (one, usually)."""
        cmds: dict[str, tuple[str, dict]] = {}
        target: dict[str, tuple[str, Entity]] = {}  # batch label -> (rows key, entity)
        for kind, stream in REPORTED.items():
            ent = self.ent[stream]
            ids = sorted(self._hint.get(kind, ()))
            for n in range(0, len(ids), PAGE):
                chunk = ids[n:n + PAGE]
                cmds[f"r_{stream}_{n}"] = (ent.method, ent.query(filt={f"@{ent.fid}": chunk}))
                target[f"r_{stream}_{n}"] = (stream, ent)
                if stream in ("companies", "contacts"):
                    req = self.ent[f"requisites:{4 if stream == 'companies' else 3}"]
                    cmds[f"q_{stream}_{n}"] = (req.method, req.query(filt={"@ENTITY_ID": chunk}))
                    target[f"q_{stream}_{n}"] = (f"requisites:{stream}", req)
        out: dict[str, list[dict]] = {}
        labels = list(cmds)
        for i in range(0, len(labels), BATCH):
            reply = self.client.batch({k: cmds[k] for k in labels[i:i + BATCH]})
            reply.raise_first()
            for label in labels[i:i + BATCH]:
                key, ent = target[label]
                out.setdefault(key, []).extend(ent.rows(reply.results.get(label)))
        return out

    def _reported(self, stream: str, state: _State | None) -> Iterator[Batch]:
        """This cycle's reported records of ``stream``; the cursor stays where the last poll left it."""
        kind = {v: k for k, v in REPORTED.items()}.get(stream)
        if kind is None:
            return
        ent = self.ent[stream]
        rows = self._dirty_rows.get(stream, [])
        if stream == "invoices" and state:
            self._stages.update(state.extra.get("stages") or {})
            self._stage_map(rows)
        taxes: dict[int, str] = {}
        for r in sorted(self._dirty_rows.get(f"requisites:{stream}", []), key=lambda r: m.to_int(r.get("ID")) or 0):
            owner, tax = m.to_int(r.get("ENTITY_ID")), m.requisite_tax_id(r)
            if owner and tax and owner not in taxes:
                taxes[owner] = tax
        records = self._mapper(stream, taxes)(rows)
        found = {ent.row_id(r) for r in rows}
        gone = [m.key(ent.kind, i) for i in sorted(self._hint.get(kind, set()) - found)]
        if records or gone:
            yield Batch(stream, records, deleted=gone)

    # ------------------------------------------------------------ users (+ the cycle's probe)

    def _users(self, state: _State | None) -> Iterator[Batch]:
        """All users every cycle (a portal has tens, not thousands); on an incremental cycle the
        same request carries every other stream's first change page."""
        known = int((state.extra.get("users") or 0) if state else 0)  # how many there were last time
        cmds: dict[str, tuple[str, dict]] = {
            "users": ("user.get", {"sort": "ID", "order": "ASC", "start": 0}),
            "departments": ("department.get", {"START": 0}),
        }
        for start in range(PAGE, known + 1, PAGE):
            cmds[f"u{start}"] = ("user.get", {"sort": "ID", "order": "ASC", "start": start})
        probe_since = state.since if state and state.mode == "inc" and state.since else None
        if probe_since:
            for name in WINDOWED + ("touched",):
                cmds[name] = self._changes_query(name, probe_since)
        else:  # a full read: learn every table's largest ID now, so no read starts blind
            for name in WINDOWED:
                ent = self.ent[name]
                select = [ent.fid, "categoryId"] if name == "invoices" else [ent.fid]
                cmds[_label(name)] = (ent.method, ent.query(select=select, order="DESC"))
            # and the stage semantics of the newest invoice's funnel (a documented $result
            # reference; with no invoices it resolves to nothing and the lazy loader takes over)
            cmds["stages"] = ("crm.status.list", {
                "filter": {"ENTITY_ID": f"SMART_INVOICE_STAGE_$result[{_label('invoices')}][items][0][categoryId]"},
                "order": {"SORT": "ASC"}})
        reply = self.client.batch(cmds)
        since_now = self._server_iso()
        self._cycle_since = since_now
        user_pages = {"users", *(f"u{start}" for start in range(PAGE, known + 1, PAGE))}
        for label, err in reply.errors.items():
            if label in user_pages:
                raise err
            if label == "departments" and isinstance(err, PermanentError):
                log.warning("bitrix24: department names unavailable (%s); using department ids", err)
            elif not isinstance(err, PermanentError):
                raise err
            # a failed look-ahead for another stream: that stream asks again and reports it itself
        if probe_since:
            self._probe = {"since": probe_since, "new_since": since_now,
                           "pages": {n: reply.results[n] for n in cmds
                                     if n not in user_pages and n != "departments" and n in reply.results}}
        else:
            for name in WINDOWED:
                if _label(name) in reply.results:
                    top = self.ent[name].rows(reply.results[_label(name)])
                    self._max_ids[name] = self.ent[name].row_id(top[0]) if top else 0
            self._stages.update(m.stage_semantics(
                r for r in reply.results.get("stages") or []
                if str(r.get("ENTITY_ID", "")).startswith("SMART_INVOICE_STAGE_")))
        users = list(reply.results.get("users") or [])
        for start in range(PAGE, known + 1, PAGE):
            users.extend(reply.results.get(f"u{start}") or [])
        total = reply.totals.get("users", len(users))
        depts = list(reply.results.get("departments") or [])
        dept_total = reply.totals.get("departments", len(depts))
        more: dict[str, tuple[str, dict]] = {}
        for start in range(PAGE, total, PAGE):
            if f"u{start}" not in cmds:
                more[f"u{start}"] = ("user.get", {"sort": "ID", "order": "ASC", "start": start})
        if "departments" not in reply.errors:
            for start in range(PAGE, dept_total, PAGE):
                more[f"d{start}"] = ("department.get", {"START": start})
        labels = list(more)
        for i in range(0, len(labels), BATCH):
            r2 = self.client.batch({k: more[k] for k in labels[i:i + BATCH]})
            r2.raise_first()
            for k in labels[i:i + BATCH]:
                (users if k.startswith("u") else depts).extend(r2.results.get(k) or [])
        names = {str(d.get("ID")): str(d.get("NAME") or d.get("ID")) for d in depts if isinstance(d, Mapping)}
        unique = {str(u.get("ID")): u for u in users if isinstance(u, Mapping)}  # pages may overlap if users came
        records = self._map(unique.values(), lambda r: m.manager(r, names))
        cur = _State(mode="inc", since=since_now, extra={"users": len(unique)})
        yield Batch("users", records, cursor=cur.encode(), total_hint=len(records))

    # ------------------------------------------------------------ windowed tables

    def _table(self, stream: str, state: _State | None) -> Iterator[Batch]:
        if state is None or state.mode == "full":
            yield from self._full(stream, state)
        else:
            yield from self._incremental(stream, state)

    def _mapper(self, stream: str, taxes: Mapping[int, str] | None = None) -> Callable[[list[dict]], list[Record]]:
        cfg = self.cfg
        opts = {"fields": cfg.pulled_fields(), "guid_field": cfg.guid_field, "segment_field": cfg.segment_field,
                "opt_out_field": cfg.opt_out_field}
        taxes = taxes or {}
        if stream == "companies":
            return lambda rows: self._map(rows, lambda r: m.company(r, tax_id=taxes.get(int(r["ID"])), **opts))
        if stream == "contacts":
            return lambda rows: self._map(rows, lambda r: m.contact(r, tax_id=taxes.get(int(r["ID"])), **opts))
        if stream == "deals":
            fields = list(cfg._deal_fields)
            return lambda rows: self._map(self._note_deals(rows), lambda r: m.deal(r, fields))
        if stream == "activities":
            return lambda rows: self._map(rows, m.activity)
        if stream == "invoices":
            return lambda rows: self._map(rows, lambda r: m.invoice(r, self._stages, self.cfg.invoice_fields()))
        if stream == "tasks":
            return lambda rows: self._map([r for r in rows if m.task_bindings(r)], m.task)
        raise ValueError(stream)

    def _tax_ids(self, entity_type: int, ids: Iterable[int] | None) -> dict[int, str]:
        """Tax id per company/contact from requisites: all of them (``ids`` None) or of ``ids``."""
        ent = self.ent[f"requisites:{entity_type}"]
        rows: list[dict] = []
        if ids is None:
            for page, _ in Windows(self.client, ent, max_id=self._max_ids.pop(f"requisites:{entity_type}", None)):
                rows.extend(page)
        else:
            rows = self._by_ids(ent, "ENTITY_ID", sorted(set(ids)))
        out: dict[int, str] = {}
        for r in sorted(rows, key=ent.row_id):
            owner, tax = m.to_int(r.get("ENTITY_ID")), m.requisite_tax_id(r)
            if owner and tax and owner not in out:
                out[owner] = tax
        return out

    def _by_ids(self, ent: Entity, field_name: str, ids: list[int]) -> list[dict]:
        """Rows whose ``field_name`` is in ``ids``: one ``@`` command per 50 ids, 50 per batch;
        a command that fills a page is continued by ID."""
        out: list[dict] = []
        todo: deque[tuple[list[int], int]] = deque((ids[i:i + PAGE], 0) for i in range(0, len(ids), PAGE))
        while todo:
            cmds: dict[str, tuple[str, dict]] = {}
            parts: dict[str, tuple[list[int], int]] = {}
            while todo and len(cmds) < BATCH:
                chunk, after = todo.popleft()
                label = f"c{len(cmds)}"
                parts[label] = (chunk, after)
                cmds[label] = (ent.method, ent.query(filt={f"@{field_name}": chunk, f">{ent.fid}": after}))
            reply = self.client.batch(cmds)
            reply.raise_first()
            for label, (chunk, _after) in parts.items():
                rows = ent.rows(reply.results.get(label))
                out.extend(rows)
                if len(rows) >= PAGE:
                    todo.append((chunk, max(ent.row_id(r) for r in rows)))
        return out

    def _stage_map(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Load ``SMART_INVOICE_STAGE_<category>`` semantics for categories not yet known."""
        cats = {str(r.get("categoryId")) for r in rows if m.to_int(r.get("categoryId"))}
        cats |= {str(r.get("stageId")).split(":")[0].rsplit("_", 1)[-1] for r in rows
                 if str(r.get("stageId") or "").startswith("DT31_") and ":" in str(r.get("stageId"))}
        known = {s.split(":")[0].rsplit("_", 1)[-1] for s in self._stages}
        missing = sorted(c for c in cats - known if c.isdigit())
        if not missing:
            return
        cmds = {f"s{c}": ("crm.status.list", {"filter": {"ENTITY_ID": f"SMART_INVOICE_STAGE_{c}"},
                                               "order": {"SORT": "ASC"}}) for c in missing}
        reply = self.client.batch(cmds)
        for label, err in reply.errors.items():
            log.warning("bitrix24: invoice stages of category %s unavailable: %s", label[1:], err)
        for label in cmds:
            self._stages.update(m.stage_semantics(reply.results.get(label) or []))

    def _full(self, stream: str, state: _State | None) -> Iterator[Batch]:
        """Read everything (or resume a broken full read from ``state.after``)."""
        ent = self.ent[stream]
        resume = state is not None and state.mode == "full"
        after = state.after if resume and state else 0
        since = state.since if resume and state else self._cycle_since
        if stream == "invoices" and state:
            self._stages.update(state.extra.get("stages") or {})
        taxes = None
        if stream in ("companies", "contacts"):
            taxes = self._tax_ids(4 if stream == "companies" else 3, None)
            since = since or self._server_iso()
        to_records = self._mapper(stream, taxes)
        live: set[str] | None = None if resume else set()
        if stream == "companies" and not resume:
            self._companies_seen = set()
        if stream == "deals":
            self._deals_read = None if resume else "full"
        for rows, watermark in Windows(self.client, ent, after=after, max_id=self._max_ids.pop(stream, None)):
            since = since or self._server_iso()
            if stream == "invoices":
                self._stage_map(rows)
            records = to_records(rows)
            if live is not None:
                live.update(r.source_id for r in records)
            if self._companies_seen is not None and stream == "companies":
                self._companies_seen.update(int(r["ID"]) for r in rows)
            cur = _State(mode="full", since=since, after=watermark, extra=self._extra(stream))
            yield Batch(stream, records, cursor=cur.encode())
        since = since or self._server_iso()
        done = _State(mode="inc", since=since, swept=self.client.server_now() if live is not None else None,
                      extra=self._extra(stream))
        if live is None and state is not None:
            done.swept = state.swept
        sweep = Sweep(self.system, ent.kind, live) if live is not None else None
        yield Batch(stream, [], cursor=done.encode(), sweep=sweep)

    def _extra(self, stream: str) -> dict[str, Any]:
        return {"stages": dict(sorted(self._stages.items()))} if stream == "invoices" and self._stages else {}

    def _first_changes(self, name: str, since: str) -> tuple[list[dict], str]:
        """First keyset page of rows changed since ``since``: from this cycle's probe when it
        asked the same question, else one request. Returns the rows and the new ``since``."""
        ent = self.ent[name]
        probe = self._probe
        if probe and probe["since"] == since and name in probe["pages"]:
            return ent.rows(probe["pages"].pop(name)), probe["new_since"]
        method, q = self._changes_query(name, since)
        env = self.client.call(method, q)
        return ent.rows(env.get("result")), self._cycle_since or self._server_iso()

    def _changed_pages(self, name: str, since: str) -> tuple[Iterator[list[dict]], str]:
        """Pages of rows changed since ``since`` (first page, then keyset windows) and the new
        ``since``; pages are produced lazily, so a mass update is never held in memory at once."""
        ent = self.ent[name]
        first, new_since = self._first_changes(name, since)

        def pages() -> Iterator[list[dict]]:
            yield first
            yield from keyset(self.client, ent, first, filt={f">={ent.changed}": self._since_filter(since)})

        return pages(), new_since

    def _changed_rows(self, name: str, since: str) -> tuple[list[dict], str]:
        pages, new_since = self._changed_pages(name, since)
        return [r for page in pages for r in page], new_since

    def _incremental(self, stream: str, state: _State) -> Iterator[Batch]:
        ent = self.ent[stream]
        since = state.since or ""
        if stream == "deals":
            self._deals_read = since
        if stream == "invoices":
            self._stages.update(state.extra.get("stages") or {})
        pages, new_since = self._changed_pages(stream, since)
        if stream in ("companies", "contacts"):
            pages = self._with_requisite_changes(stream, pages, since)
        kind = {v: k for k, v in REPORTED.items()}.get(stream)
        reported = set(self._hint.get(kind, ())) if kind else set()
        if reported:
            pages = self._with_reported(ent, pages, reported)
        for rows in pages:
            if not rows:
                continue
            deleted: list[str] = []
            if stream in ("companies", "contacts"):
                taxes = self._tax_ids(4 if stream == "companies" else 3, [ent.row_id(r) for r in rows])
                records = self._mapper(stream, taxes)(rows)
                if stream == "companies":
                    self._companies_changed.update(ent.row_id(r) for r in rows)
            else:
                if stream == "invoices":
                    self._stage_map(rows)
                records = self._mapper(stream)(rows)
                if stream == "tasks":  # unbound from the CRM since: no longer ours
                    deleted = [m.key("task", ent.row_id(r)) for r in rows if not m.task_bindings(r)]
            yield Batch(stream, records, deleted=deleted)
        if self._gone:
            yield Batch(stream, [], deleted=self._gone)
            self._gone = []
        cur = _State(mode="inc", since=new_since, swept=state.swept, extra=self._extra(stream))
        sweep = None
        if self._sweep_due(state):
            sweep = Sweep(self.system, ent.kind, self._live_ids(stream))
            cur.swept = self.client.server_now()
        yield Batch(stream, [], cursor=cur.encode(), sweep=sweep)

    def _with_reported(self, ent: Entity, pages: Iterator[list[dict]], reported: set[int]) -> Iterator[list[dict]]:
        """The changed rows, then the reported records the change filter did not return (deleted
        ones are marked so)."""
        left = set(reported)
        for rows in pages:
            left -= {ent.row_id(r) for r in rows}
            yield rows
        if left:
            rows = self._by_ids(ent, ent.fid, sorted(left))
            self._gone = [m.key(ent.kind, i) for i in sorted(left - {ent.row_id(r) for r in rows})]
            yield rows

    def _with_requisite_changes(self, stream: str, pages: Iterator[list[dict]], since: str) -> Iterator[list[dict]]:
        """The changed clients, then the clients whose requisites (tax ids) changed without them."""
        ent = self.ent[stream]
        seen: set[int] = set()
        for rows in pages:
            seen.update(ent.row_id(r) for r in rows)
            yield rows
        req_rows, _ = self._changed_rows(f"requisites:{4 if stream == 'companies' else 3}", since)
        extra = sorted({i for i in (m.to_int(r.get("ENTITY_ID")) for r in req_rows) if i} - seen)
        if extra:
            yield self._by_ids(ent, "ID", extra)

    def _live_ids(self, stream: str) -> set[str]:
        """Every live ID of a stream (``select ID`` windows); tasks: only CRM-bound ones."""
        ent = self.ent[stream]
        select = [ent.fid, "UF_CRM_TASK"] if stream == "tasks" else [ent.fid]
        live: set[str] = set()
        for rows, _ in Windows(self.client, ent, select=select):
            for r in rows:
                if stream != "tasks" or m.task_bindings(r):
                    live.add(str(ent.row_id(r)))
        return live

    # ------------------------------------------------------------ product rows of deals

    def _note_deals(self, rows: list[dict]) -> list[dict]:
        """Remember the deals whose product rows a rule reads: won ones (what was bought) and
        regular ones (what the next invoice sells)."""
        fields = self.cfg._deal_fields
        for r in rows:
            if str(r.get("STAGE_SEMANTIC_ID") or "").upper() == "S" or any(not m.empty(r.get(f)) for f in fields):
                i = m.to_int(r.get("ID"))
                if i:
                    self._deals_seen.add(i)
        return rows

    def _product_rows(self, state: _State | None) -> Iterator[Batch]:
        """``crm.item.productrow.list`` of the deals that changed (all won and regular deals on a first
        read). The method wants one owner per call (``=ownerType`` + ``=ownerId``, no arrays), so it
        is one command per deal, 50 a batch, continued by ``>id`` when a deal has more than 50 rows.
        This cycle's deals stream says which deals changed when it read from the same cursor;
        otherwise (a crash between the two, a first read) the deals are listed here."""
        if state is None or state.mode == "full":
            if self._deals_read != "full":
                for rows, _ in Windows(self.client, self.ent["deals"], select=["ID", "STAGE_SEMANTIC_ID", *self.cfg._deal_fields]):
                    self._note_deals(rows)
            ids = set(self._deals_seen)
        elif self._deals_read == (state.since or ""):
            ids = set(self._deals_seen)
        else:
            rows, _ = self._changed_rows("deals", state.since or "")
            self._note_deals(rows)
            ids = set(self._deals_seen)
        since = self._cycle_since or self._server_iso()
        todo: deque[tuple[int, int]] = deque((i, 0) for i in sorted(ids))
        found: dict[int, list[dict]] = {}
        while todo:
            cmds: dict[str, tuple[str, dict]] = {}
            parts: dict[str, tuple[int, int]] = {}
            while todo and len(cmds) < BATCH:
                did, after = todo.popleft()
                label = f"p{did}_{after}"
                parts[label] = (did, after)
                flt: dict[str, Any] = {"=ownerType": "D", "=ownerId": did}
                if after:
                    flt[">id"] = after
                cmds[label] = ("crm.item.productrow.list", {"filter": flt, "order": {"id": "ASC"}, "start": -1})
            reply = self.client.batch(cmds)
            for err in reply.errors.values():
                if not isinstance(err, PermanentError):
                    raise err  # a deal deleted meanwhile answers ACCESS_DENIED: it has no rows to read
            done: list[int] = []
            for label, (did, _after) in parts.items():
                if label in reply.errors:
                    continue
                res = reply.results.get(label)
                rows = [r for r in ((res or {}).get("productRows") or [] if isinstance(res, Mapping) else []) if isinstance(r, Mapping)]
                found.setdefault(did, []).extend(rows)
                if len(rows) >= PAGE:
                    todo.append((did, max(m.to_int(r.get("id")) or 0 for r in rows)))
                else:
                    done.append(did)
            if done:
                yield Batch("productrows", [m.product_lines(did, found.pop(did)) for did in done])
        yield Batch("productrows", [], cursor=_State(mode="inc", since=since).encode())

    # ------------------------------------------------------------ comments

    def _comments(self, state: _State | None) -> Iterator[Batch]:
        """Timeline comments of companies. ``crm.timeline.comment.list`` needs ENTITY_ID +
        ENTITY_TYPE, so comments are read per company, 50 companies per batch: all companies on a
        full read, on a cycle only those whose timeline moved (``LAST_ACTIVITY_TIME``) or that
        changed."""
        full = state is None or state.mode == "full"
        since: str | None = self._cycle_since
        if full:
            if self._companies_seen is not None:
                ids = sorted(self._companies_seen)
            else:
                ids = sorted(int(i) for i in self._live_ids("companies"))
                since = since or self._server_iso()
        else:
            touched, new_since = self._changed_rows("touched", state.since or "")
            ids = sorted({self.ent["touched"].row_id(r) for r in touched} | self._companies_changed)
            since = new_since
        live: set[str] = set()
        for records in self._comment_pages(ids):
            since = since or self._server_iso()
            live.update(r.source_id for r in records)
            yield Batch("comments", records)
        since = since or self._server_iso()
        swept = self.client.server_now() if full else (state.swept if state else None)
        cur = _State(mode="inc", since=since, swept=swept)
        yield Batch("comments", [], cursor=cur.encode(), sweep=Sweep(self.system, "comment", live) if full else None)

    def _comment_pages(self, company_ids: list[int]) -> Iterator[list[Record]]:
        todo: deque[tuple[int, int]] = deque((i, 0) for i in company_ids)
        while todo:
            cmds: dict[str, tuple[str, dict]] = {}
            parts: dict[str, tuple[int, int]] = {}
            while todo and len(cmds) < BATCH:
                cid, start = todo.popleft()
                label = f"c{cid}_{start}"
                parts[label] = (cid, start)
                cmds[label] = ("crm.timeline.comment.list", {
                    "filter": {"ENTITY_ID": cid, "ENTITY_TYPE": "company"},
                    "select": ["ID", "ENTITY_ID", "ENTITY_TYPE", "CREATED", "AUTHOR_ID", "COMMENT"],
                    "order": {"ID": "ASC"}, "start": start})  # per company: a COUNT is cheap here
            reply = self.client.batch(cmds)
            for err in reply.errors.values():
                if not isinstance(err, NotFound):
                    raise err  # a company deleted meanwhile just has no comments to read
            rows: list[dict] = []
            for label, (cid, start) in parts.items():
                page = reply.results.get(label) or []
                if isinstance(page, Mapping):
                    page = list(page.values())
                rows.extend(page)
                if len(page) >= PAGE:
                    todo.append((cid, start + PAGE))
            yield self._map(rows, m.comment)
