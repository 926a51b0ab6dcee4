"""1C as streams of batches: users, counterparties, documents, debts.

Every cycle starts from the base's ``$metadata`` (:mod:`onec.metadata`, cached in the store's kv):
each object and field the preset names is resolved against it, a required one missing stops the
source with an error naming the override, an optional one switches its feature off with one
warning. Selects only ever name fields the base has.

Standard OData has no change feed (reference §8), so each stream is built to make the common
case — nothing changed — cost almost nothing (two requests with a document journal):

* **users**: read on the periodic sweep (``onec.sweep_every_hours``) or when a counterparty or
  document names a manager the connector has not seen; otherwise no request at all.
* **counterparties**: a ``/$count`` per cycle; the full ``Ref_Key,DataVersion`` listing only on the
  sweep or when the count moved. Full objects are fetched only for changed ``DataVersion``\\ s, by
  key batches or by a wide paged read, whichever needs fewer requests.
* **documents**: with a document journal (``onec.objects.journal``: a ``DocumentJournal_*`` that
  lists the documents), one window query on the journal per cycle finds new, changed (by its
  columns), re-posted, deletion-marked and vanished documents of every type at once, and only
  those are fetched; each type's ``DataVersion`` window is compared on the sweep, which also
  catches edits the journal's columns do not show, and learns which types the journal does not
  list (those are polled per type every cycle). Without a journal: one
  ``Date ge datetime'<since - overlap_days>'`` window query per document object. A weekly wide
  re-read catches back-dated edits and yields a :class:`Sweep`.
* **debts**: the receivables ``Balance`` (and the УТ 11 terms register's) is read only when a
  document changed, on the sweep, or on a first pull. Overdue comes from the terms register where
  the configuration has one, else from first-in first-out ageing of the debtors' shipments
  (:mod:`onec.ageing`) with the contracts' payment terms. Between reads the overdue part is
  recomputed from the cursor once a day, without a request (it grows with the calendar).

A cursor is JSON holding what the next cycle compares against. It is only ever yielded with the
last batch of a pull, so a crash mid-pull repeats work but never skips it. Flags one stream leaves
for another (a document changed, a manager is unknown) live in the store's kv and are cleared only
after the batch that acted on them is committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connector.config import OneC
from connector.domain import Batch, Debt, Document, Sweep
from connector.errors import TransientError, UpstreamError
from connector.ports import Context
from onec.ageing import CENT, Shipment, age, with_register_dues
from onec.client import SYSTEM, ODataClient, lit_dt, lit_str
from onec.mapping import (
    counterparty_key,
    currency_code,
    doc_select,
    document_key,
    line_products,
    make_debt,
    map_counterparty,
    map_document,
    map_lines,
    map_soap_counterparty,
    map_soap_debt,
    map_soap_document,
    map_soap_user,
    map_user,
    number,
    overdue_buckets,
    parse_day,
    parse_wall,
    receivable_balances,
    ref,
    to_wall,
)
from onec.metadata import MetadataCache, Resolution, Schema, interest, resolve_against
from onec.presets import DOC_TYPES, Names, for_config

log = logging.getLogger("onec.source")

BATCH = 500
DOCUMENT_SWEEP = timedelta(days=7)
STREAMS = ["users", "counterparties", "documents", "debts"]
KV_DEBTS_DIRTY = "onec:debts:dirty"  # "1": a document changed since the balance was last read
KV_USERS = "onec:users"  # the manager keys the users stream last read
KV_USERS_STALE = "onec:users:stale"  # "1": a record named a manager not among them
KV_PRODUCTS = "onec:products"  # product GUID -> [article, name, group] read from the products catalog (emptied by a full read)
SCHEMA_CODES = ("6", "8")  # 1C's "no such property" / "no such set": the base changed under the cache


def _load(cursor: str | None) -> dict:
    if not cursor:
        return {}
    try:
        st = json.loads(cursor)
    except ValueError:
        return {}
    return st if isinstance(st, dict) else {}


def _dump(st: dict) -> str:
    return json.dumps(st, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _due(st: dict, every: timedelta, now: datetime, key: str = "swept") -> bool:
    last = st.get(key)
    if not last:
        return True
    try:
        return now - datetime.fromisoformat(last) >= every
    except (TypeError, ValueError):
        return True


def _sel(*names: str) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


def _chunks(items: list, n: int = BATCH) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _dim(field: str) -> str:
    """A register dimension as ``Dimensions`` wants it: without the ``_Key`` suffix."""
    return field[:-4] if field.endswith("_Key") else field


def catalog_sweep_every(cfg: OneC) -> timedelta:
    return timedelta(hours=float(getattr(cfg, "sweep_every_hours", None) or 6))


def counterparty_select(n: Names) -> list[str]:
    """The wide ``$select`` of counterparties: standard fields + the mapped ones."""
    select = _sel("Ref_Key", "DataVersion", "DeletionMark", "IsFolder", n.f("counterparty.name"),
                  *n.fs("counterparty.tax_id"), n.f("counterparty.kind"), n.f("counterparty.manager"))
    if n.obj("partners"):
        select.append(n.f("counterparty.partner"))
    if not n.obj("contact_info"):
        select.append(n.f("contact.table"))
    return _sel(*select)


def _fingerprint(row: dict) -> str:
    """What a journal row shows of its document; any change of it means "fetch the document"."""
    clean = {k: v for k, v in row.items() if not k.startswith("odata.") and "@" not in k}
    return hashlib.sha1(json.dumps(clean, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:12]


def _set_of(type_text: Any) -> str:
    t = str(type_text or "")
    return t[len("StandardODATA."):] if t.startswith("StandardODATA.") else t


class ODataSource:
    """Reads one 1C base through the standard OData interface."""

    system = SYSTEM

    def __init__(self, cfg: OneC, ctx: Context, *, timezone: str = "Europe/Kyiv", client: ODataClient | None = None):
        assert cfg.odata is not None
        self.cfg = cfg
        self.ctx = ctx
        self.configured: Names = for_config(cfg)
        self.names: Names = self.configured  # effective names once resolved against $metadata
        self.schema: Schema | None = None
        self.tz = ZoneInfo(timezone)
        self.client = client or ODataClient(cfg.odata.url, cfg.odata.user, cfg.odata.password, ctx.counter(SYSTEM),
                                            timeout=cfg.odata.timeout, page_size=cfg.odata.page_size)
        self.overlap = timedelta(days=cfg.overlap_days)
        self.catalog_sweep = catalog_sweep_every(cfg)
        self._memory: dict[str, str] = {}  # kv when the context has no store (tests, benchmarks)
        self.metadata = MetadataCache(self.client.root, interest(self.configured), self.client.metadata,
                                      every=timedelta(hours=cfg.metadata_every_hours), kv_get=self._kv_get, kv_set=self._kv_set)
        self._resolved = False
        self._fresh = False  # $metadata downloaded by this instance (a cycle)
        self._currency: dict[str, str] = {}  # shared by documents and debts within a cycle
        self._sales: dict[str, list[tuple]] | None = None  # a full documents read hands its sales to debts

    def streams(self) -> list[str]:
        return list(STREAMS)

    # -- kv and metadata

    def _kv_get(self, name: str) -> str | None:
        return self.ctx.kv_get(name) if self.ctx.kv_get is not None else self._memory.get(name)

    def _kv_set(self, name: str, value: str) -> None:
        if self.ctx.kv_set is not None:
            self.ctx.kv_set(name, value)
        else:
            self._memory[name] = value

    def prepare(self, *, refresh: bool = False) -> Resolution:
        """Resolve the configured names against the base's ``$metadata`` (cached); once a cycle.

        A cache that says a required name is missing is re-read at once, so an admin who just
        published the object is believed on the next cycle.
        """
        now = self.ctx.clock.now()
        try:
            schema, fresh = self.metadata.load(now, refresh=refresh)
        except TransientError as e:  # half a minute of XML timed out: yesterday's description beats no cycle
            stale = self.metadata.cached(now, any_age=True)
            if stale is None:
                raise
            log.warning("onec: $metadata could not be re-read (%s); using the cached description", e)
            schema, fresh = stale, False
        res = resolve_against(self.configured, schema)
        if res.required_missing and not fresh:
            schema, fresh = self.metadata.load(now, refresh=True)
            res = resolve_against(self.configured, schema)
        self._fresh = self._fresh or fresh
        if res.required_missing:
            raise res.error()
        warning = res.warning()
        if warning:
            log.warning("%s", warning)
        self.names, self.schema, self._resolved = res.names, schema, True
        return res

    def _keep(self, obj: str, fields: Iterable[str]) -> list[str]:
        """A ``$select`` with only the fields this base has (never a 400 code 6)."""
        names = _sel(*fields)
        return self.schema.keep(obj, names) if self.schema is not None else names

    def pull(self, stream: str, cursor: str | None, *, full: bool = False) -> Iterator[Batch]:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        st = _load(cursor)
        return self._pull(stream, st, full or not st)

    def _pull(self, stream: str, st: dict, full: bool) -> Iterator[Batch]:
        if not self._resolved:
            self.prepare()
        pull = getattr(self, f"_pull_{stream}")
        try:
            yield from pull(st, full)
        except UpstreamError as e:
            if self._fresh or str(e.code) not in SCHEMA_CODES:
                raise
            # the base no longer has something the cached $metadata promised: re-read it and retry
            # the stream once (batches already applied are idempotent upserts; the cursor comes last)
            log.warning("onec: %s; re-reading the base's $metadata", e)
            self.prepare(refresh=True)
            yield from pull(st, full)

    # -- helpers

    def _cheaper_by_keys(self, changed: int, total: int) -> bool:
        return math.ceil(changed / self.client.key_batch) <= math.ceil(max(total, 1) / self.client.page_size)

    def _rows(self, obj: str, refs: Iterable[str], select: list[str], total: int,
              filter: str | None = None, orderby: str = "Ref_Key") -> Iterator[list[dict]]:
        """Full rows of ``refs``: key batches, or one wide paged read when that is cheaper."""
        want = {r.lower() for r in refs}
        if not want:
            return
        if self._cheaper_by_keys(len(want), total):
            yield from self.client.by_keys(obj, sorted(want), select=select)
            return
        for page in self.client.pages(obj, select=select, filter=filter, orderby=orderby):
            rows = [r for r in page if (ref(r.get("Ref_Key")) or "") in want]
            if rows:
                yield rows

    def _currencies(self, keys: Iterable[str | None]) -> dict[str, str]:
        """Currency references -> ISO codes; the (tiny) catalog is read only when a key is new."""
        known = self._currency
        if any(k and k not in known for k in keys) and self.names.obj("currencies"):
            obj = self.names.obj("currencies")
            for page in self.client.pages(obj, select=self._keep(obj, ["Ref_Key", self.names.f("currency.code"), "Description"])):
                for r in page:
                    g = ref(r.get("Ref_Key"))
                    if g:
                        known[g] = currency_code(r, self.names)
        return known

    def _note_managers(self, keys: Iterable[str | None]) -> None:
        """Flag the users stream when a record names a manager it has not read."""
        raw = self._kv_get(KV_USERS)
        if raw is None:
            return
        known = set(json.loads(raw))
        if any(k and k not in known for k in keys):
            self._kv_set(KV_USERS_STALE, "1")

    # -- users

    def _pull_users(self, st: dict, full: bool) -> Iterator[Batch]:
        n = self.names
        obj = n.obj("users")
        now = self.ctx.clock.now()
        if not full and not _due(st, self.catalog_sweep, now) and self._kv_get(KV_USERS_STALE) != "1":
            return
        select = self._keep(obj, ["Ref_Key", "DeletionMark", n.f("user.name"), n.f("user.inactive"), n.f("user.contacts")])
        managers, live, total = [], set(), 0
        for page in self.client.pages(obj, select=select):
            total += len(page)
            for r in page:
                m = map_user(r, n)
                managers.append(m)
                live.add(m.source_id)
        yield Batch("users", records=managers, sweep=Sweep(SYSTEM, "user", live),
                    cursor=_dump({"n": total, "swept": now.isoformat()}), total_hint=len(managers))
        self._kv_set(KV_USERS, json.dumps(sorted(m.key for m in managers), ensure_ascii=False))
        self._kv_set(KV_USERS_STALE, "0")

    # -- counterparties

    def _contacts(self, refs: list[str], everything: bool) -> dict[str, list[dict]]:
        """Contact rows from ``InformationRegister_КонтактнаяИнформация`` (УТ 10.3 / УТП) by object."""
        n = self.names
        reg = n.obj("contact_info")
        out: dict[str, list[dict]] = {}
        if not reg or not refs:
            return out
        fo, ft, fx = n.f("contact.object"), n.f("contact.type"), n.f("contact.text")
        kinds = f"({ft} eq {lit_str(n.f('contact.phone'))} or {ft} eq {lit_str(n.f('contact.email'))})"
        select = self._keep(reg, [fo, ft, fx])
        if everything:
            flt = f"{kinds} and {fo}_Type eq {lit_str('StandardODATA.' + n.obj('counterparties'))}"
            pages = self.client.pages(reg, select=select, filter=flt, orderby=f"{fo},{ft},{fx}", key=None)
        else:
            pages = self.client.by_keys(reg, refs, select=select, field=fo, literal=lit_str)
        for page in pages:
            for r in page:
                g = ref(r.get(fo))
                if g and (r.get(ft) in (n.f("contact.phone"), n.f("contact.email"))):
                    out.setdefault(g, []).append(r)
        return out

    def _pull_counterparties(self, st: dict, full: bool) -> Iterator[Batch]:
        n = self.names
        obj, pobj = n.obj("counterparties"), n.obj("partners")
        pfield = n.f("counterparty.partner") if pobj else ""
        now = self.ctx.clock.now()
        if not full and not _due(st, self.catalog_sweep, now):
            if self.client.count(obj) == st.get("n"):
                return
        old_v: dict[str, str] = {} if full else st.get("v", {})
        old_p: dict[str, str] = {} if full else st.get("p", {})
        wide = self._keep(obj, counterparty_select(n))
        rows: dict[str, dict] = {}
        listing: list[dict] = []
        if full:
            for page in self.client.pages(obj, select=wide):
                listing += page
            rows = {ref(r.get("Ref_Key")) or "": r for r in listing}
        else:
            for page in self.client.pages(obj, select=self._keep(obj, ["Ref_Key", "DataVersion", "IsFolder", pfield])):
                listing += page
        p_ver: dict[str, str] = {}
        p_rows: dict[str, dict] = {}
        p_wide = self._keep(pobj, ["Ref_Key", "DataVersion", "DeletionMark", n.f("partner.manager"), n.f("contact.table")]) if pobj else []
        if pobj:
            for page in self.client.pages(pobj, select=p_wide if full else ["Ref_Key", "DataVersion"]):
                for r in page:
                    g = ref(r.get("Ref_Key"))
                    if g:
                        p_ver[g] = str(r.get("DataVersion"))
                        if full:
                            p_rows[g] = r
        versions: dict[str, str] = {}
        changed: list[str] = []
        partner_of: dict[str, str | None] = {}
        for r in listing:
            g = ref(r.get("Ref_Key"))
            if not g or r.get("IsFolder"):
                continue
            partner = ref(r.get(pfield)) if pfield else None
            partner_of[g] = partner
            versions[g] = f"{r.get('DataVersion')}|{partner or ''}"
            if old_v.get(g) != versions[g] or (partner and old_p.get(partner) != p_ver.get(partner)):
                changed.append(g)
        if not full:
            for page in self._rows(obj, changed, wide, len(listing)):
                for r in page:
                    rows[ref(r.get("Ref_Key")) or ""] = r
            if pobj:
                need = {partner_of[g] for g in changed if partner_of.get(g)}
                for page in self._rows(pobj, need, p_wide, len(p_ver)):
                    for r in page:
                        p_rows[ref(r.get("Ref_Key")) or ""] = r
        contacts = self._contacts(changed, full or not self._cheaper_by_keys(len(changed), len(listing)))
        clients, deleted = [], []
        for g in changed:
            r = rows.get(g)
            if r is None:
                continue  # deleted between the listing and the read: the next sweep sees it
            if r.get("DeletionMark"):
                deleted.append(counterparty_key(g))
                continue
            partner = p_rows.get(partner_of.get(g) or "")
            clients.append(map_counterparty(r, n, partner=partner, contacts=contacts.get(g, ())))
        if not full:
            self._note_managers(c.responsible_key for c in clients)
        chunks = list(_chunks(clients)) or [[]]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            yield Batch(
                "counterparties", records=chunk, deleted=deleted if last else [], total_hint=len(clients),
                sweep=Sweep(SYSTEM, "counterparty", set(versions)) if last else None,
                cursor=_dump({"v": versions, "p": p_ver, "n": len(listing), "swept": now.isoformat()}) if last else None,
            )

    # -- documents

    def _pull_documents(self, st: dict, full: bool) -> Iterator[Batch]:
        now = self.ctx.clock.now()
        if not full and _due(st, DOCUMENT_SWEEP, now):
            full = True
        self._currency.update(st.get("cur", {}))
        if full:
            yield from self._documents_full(st, now)
        elif self.names.obj("journal") and "j" in st and not _due(st, self.catalog_sweep, now, key="checked"):
            yield from self._documents_journal(st, now)
        else:
            yield from self._documents_window(st, now)

    def _map_docs(self, rows: list[dict], doc_type: str) -> list:
        cur_field = self.names.f(f"{doc_type}.currency")
        if cur_field:
            self._currencies(ref(r.get(cur_field)) for r in rows)
        return [map_document(r, doc_type, self.names, self.tz, self._currency) for r in rows]

    def _lines(self, rows: list[dict], doc_type: str) -> list:
        """The goods of sales and orders read with them (``doc.lines``), each product named from the catalog."""
        refs = set().union(*(line_products(r, doc_type, self.names) for r in rows)) if rows else set()
        products = self._products(refs)
        return [x for r in rows if (x := map_lines(r, doc_type, self.names, products)) is not None]

    def _products(self, refs: set[str]) -> dict[str, tuple[str, str, str]]:
        """``(article, name, group)`` per product reference: from the store's kv, else read by key from
        the products catalog (and the folders they sit in, whose names are the groups)."""
        raw = self._kv_get(KV_PRODUCTS)
        known: dict[str, list[str]] = json.loads(raw) if raw else {}
        obj = self.names.obj("products")
        need = sorted(g for g in refs if g not in known)
        if obj and need:
            n = self.names
            name_f, art_f, grp_f = n.f("product.name"), n.f("product.article"), n.f("product.group")
            rows: dict[str, dict] = {}
            for page in self.client.by_keys(obj, need, select=self._keep(obj, ["Ref_Key", name_f, art_f, grp_f])):
                rows.update({g: r for r in page if (g := ref(r.get("Ref_Key")))})
            folders = sorted({p for r in rows.values() if grp_f and (p := ref(r.get(grp_f))) and "folder:" + p not in known})
            for page in (self.client.by_keys(obj, folders, select=self._keep(obj, ["Ref_Key", name_f])) if folders else []):
                for r in page:
                    if (g := ref(r.get("Ref_Key"))):
                        known["folder:" + g] = ["", str(r.get(name_f) or "").strip(), ""]
            for g in need:
                r = rows.get(g)
                if r is None:
                    known[g] = ["", "", ""]  # deleted or hidden by rights: remembered, not asked again this week
                    continue
                parent = ref(r.get(grp_f)) if grp_f else None
                known[g] = [str(r.get(art_f) or "").strip() if art_f else "", str(r.get(name_f) or "").strip(),
                            known.get("folder:" + parent, ["", "", ""])[1] if parent else ""]
            self._kv_set(KV_PRODUCTS, json.dumps(known, ensure_ascii=False, separators=(",", ":")))
        return {g: (v[0], v[1], v[2]) for g, v in known.items() if not g.startswith("folder:")}

    def _doc_select(self, obj: str, doc_type: str) -> list[str]:
        return self._keep(obj, doc_select(self.names, doc_type))

    def _journal(self, start: datetime) -> dict[str, list]:
        """The journal's window: ``{document GUID: [set name, fingerprint, date]}``."""
        obj = self.names.obj("journal")
        select = sorted(self.schema.props(obj)) if self.schema is not None and self.schema.has(obj) else []
        out: dict[str, list] = {}
        for page in self.client.pages(obj, select=select or ["Ref", "Ref_Type", "Date", "Number", "Posted", "DeletionMark"],
                                      filter=f"Date ge {lit_dt(start)}", orderby="Date,Ref", key="Ref"):
            for r in page:
                g = ref(r.get("Ref"))
                if g:
                    when = _wall_of(r)
                    out[g] = [_set_of(r.get("Ref_Type")), _fingerprint(r), when.isoformat() if when else ""]
        return out

    def _uncovered(self, journal: dict[str, list], listing: dict[str, list[tuple[str, str, datetime | None]]],
                   start: datetime) -> list[str]:
        """Document objects with documents in the window that the journal does not list."""
        out = sorted(obj for obj, items in listing.items() if any(when and when >= start and g not in journal for g, _, when in items))
        if out:
            log.warning("onec: journal %s does not list %s; those documents are polled with one query per type every cycle",
                        self.names.obj("journal"), ", ".join(out))
        return out

    def _mark_documents_changed(self) -> None:
        self._kv_set(KV_DEBTS_DIRTY, "1")

    def _documents_full(self, st: dict, now: datetime) -> Iterator[Batch]:
        now_wall = to_wall(now, self.tz)
        live: set[str] = set()
        seen: dict[str, list[tuple[str, str, datetime | None]]] = {}
        newest: datetime | None = None
        total = 0
        sales: dict[str, list[tuple]] = defaultdict(list)
        cp_f, contract_f = self.names.f("sale.counterparty"), self.names.f("sale.contract")
        self._kv_set(KV_PRODUCTS, "{}")  # the weekly full read also re-reads the products' names
        for doc_type, obj in self.names.doc_objects():
            for page in self.client.pages(obj, select=self._doc_select(obj, doc_type), orderby="Date,Ref_Key"):
                docs = self._map_docs(page, doc_type)
                for r, d in zip(page, docs, strict=False):
                    live.add(d.source_id)
                    when = _wall_of(r)
                    seen.setdefault(obj, []).append((d.source_id, str(r.get("DataVersion")), when))
                    if when and when <= now_wall and (newest is None or when > newest):
                        newest = when
                    if doc_type == "sale" and d.posted and not d.deleted and ref(r.get(cp_f)):
                        sales[ref(r.get(cp_f)) or ""].append(_sale(r, d.amount, contract_f))
                total += len(docs)
                yield Batch("documents", records=[*docs, *self._lines(page, doc_type)])
        since = newest or now_wall
        start = since - self.overlap
        window = {obj: {g: dv for g, dv, when in items if when and when >= start} for obj, items in seen.items()}
        state = {"since": since.isoformat(), "v": window, "cur": dict(self._currency), "swept": now.isoformat(),
                 "checked": now.isoformat()}
        if self.names.obj("journal"):
            state["j"] = self._journal(start)
            state["unc"] = self._uncovered(state["j"], seen, start)
        self._sales = dict(sales)
        self._mark_documents_changed()
        yield Batch("documents", sweep=Sweep(SYSTEM, "document", live), total_hint=total, cursor=_dump(state))

    def _window_listing(self, obj: str, start: datetime) -> list[tuple[str, str, datetime | None]]:
        items: list[tuple[str, str, datetime | None]] = []
        for page in self.client.pages(obj, select=["Ref_Key", "DataVersion", "Date"], filter=f"Date ge {lit_dt(start)}",
                                      orderby="Date,Ref_Key"):
            items += [(ref(r.get("Ref_Key")) or "", str(r.get("DataVersion")), _wall_of(r)) for r in page]
        return items

    def _refetch(self, obj: str, doc_type: str, refs: list[str]) -> tuple[list, set[str], dict[str, str]]:
        """Documents by key: ``(mapped, found GUIDs, {GUID: DataVersion})``."""
        records, found, versions = [], set(), {}
        for page in self.client.by_keys(obj, refs, select=self._doc_select(obj, doc_type)):
            docs = self._map_docs(page, doc_type)
            for r, d in zip(page, docs, strict=False):
                found.add(d.source_id)
                versions[d.source_id] = str(r.get("DataVersion"))
            records += [*docs, *self._lines(page, doc_type)]
        return records, found, versions

    def _documents_window(self, st: dict, now: datetime) -> Iterator[Batch]:
        """Each document object's ``DataVersion`` window (no journal, or the journal's periodic check)."""
        now_wall = to_wall(now, self.tz)
        since = _since(st, now_wall)
        start = since - self.overlap
        old: dict[str, dict[str, str]] = st.get("v", {})
        records, deleted = [], []
        listing: dict[str, list[tuple[str, str, datetime | None]]] = {}
        newest = since
        for doc_type, obj in self.names.doc_objects():
            items = self._window_listing(obj, start)
            listing[obj] = items
            known = old.get(obj, {})
            changed = [g for g, dv, _ in items if known.get(g) != dv]
            in_window = {g for g, _, _ in items}
            vanished = [g for g in known if g not in in_window]
            select = self._doc_select(obj, doc_type)
            for page in self._rows(obj, changed, select, len(items), filter=f"Date ge {lit_dt(start)}", orderby="Date,Ref_Key"):
                records += [*self._map_docs(page, doc_type), *self._lines(page, doc_type)]
            docs, found, _ = self._refetch(obj, doc_type, vanished)
            records += docs
            deleted += [document_key(g) for g in vanished if g not in found]
            for _, _, when in items:
                if when and newest < when <= now_wall:
                    newest = when
        new_start = newest - self.overlap
        window = {obj: {g: dv for g, dv, when in items if when and when >= new_start} for obj, items in listing.items()}
        state = {"since": newest.isoformat(), "v": window, "cur": dict(self._currency), "swept": st.get("swept"),
                 "checked": now.isoformat()}
        if self.names.obj("journal"):
            journal = self._journal(start)
            state["unc"] = self._uncovered(journal, listing, start)
            state["j"] = {g: v for g, v in journal.items() if v[2] and v[2] >= new_start.isoformat()}
            if any(v[0] not in listing for g, v in journal.items() if st.get("j", {}).get(g, [None, None])[1] != v[1]):
                self._mark_documents_changed()  # a document of another type (a return, an adjustment) moved
        yield from self._emit_documents(records, deleted, state)

    def _documents_journal(self, st: dict, now: datetime) -> Iterator[Batch]:
        """One query on the document journal finds what changed across every type it lists."""
        now_wall = to_wall(now, self.tz)
        since = _since(st, now_wall)
        start = since - self.overlap
        objects = {obj: doc_type for doc_type, obj in self.names.doc_objects()}
        uncovered = [obj for obj in st.get("unc", []) if obj in objects]
        old_j: dict[str, list] = st.get("j", {})
        old_v: dict[str, dict[str, str]] = st.get("v", {})
        journal = self._journal(start)
        changed: dict[str, list[str]] = defaultdict(list)
        vanished: dict[str, list[str]] = defaultdict(list)
        other = False
        for g, (obj, fp, _) in journal.items():
            if old_j.get(g, [None, None])[1] != fp:
                if obj in objects:
                    changed[obj].append(g)
                else:
                    other = True
        for g, (obj, _, _) in old_j.items():
            if g not in journal:
                if obj in objects:
                    vanished[obj].append(g)
                else:
                    other = True
        records, deleted = [], []
        window = {obj: dict(old_v.get(obj, {})) for obj in objects}
        newest = since
        listing: dict[str, list[tuple[str, str, datetime | None]]] = {}
        for obj in uncovered:  # types the journal does not list: their own window, as without a journal
            items = listing[obj] = self._window_listing(obj, start)
            known = old_v.get(obj, {})
            changed[obj] += [g for g, dv, _ in items if known.get(g) != dv]
            in_window = {g for g, _, _ in items}
            vanished[obj] += [g for g in known if g not in in_window]
            for _, _, when in items:
                if when and newest < when <= now_wall:
                    newest = when
        for obj in objects:
            refs = sorted(set(changed.get(obj, [])) | set(vanished.get(obj, [])))
            if not refs:
                continue
            docs, found, versions = self._refetch(obj, objects[obj], refs)
            records += docs
            window[obj].update(versions)
            for g in vanished.get(obj, []):
                if g not in found:
                    deleted.append(document_key(g))
                    window[obj].pop(g, None)
        for _, _, when in journal.values():
            w = datetime.fromisoformat(when) if when else None
            if w and newest < w <= now_wall:
                newest = w
        new_start = newest - self.overlap
        keep = {g for g, v in journal.items() if v[2] and v[2] >= new_start.isoformat()}
        keep |= {g for items in listing.values() for g, _, when in items if when and when >= new_start}
        window = {obj: {g: dv for g, dv in refs.items() if g in keep} for obj, refs in window.items()}
        if other:
            self._mark_documents_changed()
        state = {"since": newest.isoformat(), "v": window, "cur": dict(self._currency), "swept": st.get("swept"),
                 "checked": st.get("checked"), "j": {g: v for g, v in journal.items() if g in keep}, "unc": uncovered}
        yield from self._emit_documents(records, deleted, state)

    def _emit_documents(self, records: list, deleted: list[str], state: dict) -> Iterator[Batch]:
        if records or deleted:
            self._mark_documents_changed()
            self._note_managers(d.responsible_key for d in records if isinstance(d, Document))
        chunks = list(_chunks(records)) or [[]]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            yield Batch("documents", records=chunk, deleted=deleted if last else [], total_hint=len(records),
                        cursor=_dump(state) if last else None)

    # -- debts

    def _resolve_analytics(self, known: dict[str, str], keys: Iterable[str | None]) -> dict[str, str]:
        obj = self.names.obj("analytics")
        unknown = sorted({k for k in keys if k and k not in known})
        if obj and unknown:
            field = self.names.f("analytics.counterparty")
            for page in self.client.by_keys(obj, unknown, select=["Ref_Key", field]):
                for r in page:
                    g = ref(r.get("Ref_Key"))
                    if g:
                        known[g] = ref(r.get(field)) or ""
        return known

    def _shipments(self, debtors: list[str], start: date) -> dict[str, list[tuple]]:
        """Posted sales of the debtors since ``start``: ``{counterparty: [(ref, number, day, amount, contract)]}``.

        After a full documents read in this cycle they are already here; otherwise one key batch
        per 30 debtors and sales object.
        """
        if self._sales is not None:
            return {cp: [s for s in self._sales.get(cp, []) if s[2] >= start.isoformat()] for cp in debtors}
        n = self.names
        cp_f, amount_f, contract_f = n.f("sale.counterparty"), n.f("sale.amount"), n.f("sale.contract")
        out: dict[str, list[tuple]] = defaultdict(list)
        also = f"Date ge {lit_dt(datetime.combine(start, datetime.min.time()))} and Posted eq true and DeletionMark eq false"
        for obj in n.objs("sale"):
            select = self._keep(obj, ["Ref_Key", "Number", "Date", cp_f, amount_f, contract_f])
            for page in self.client.by_keys(obj, debtors, select=select, field=cp_f, also=also):
                for r in page:
                    cp = ref(r.get(cp_f))
                    if cp:
                        out[cp].append(_sale(r, number(r.get(amount_f)), contract_f))
        return out

    def _terms(self, known: dict[str, int | None], contracts: Iterable[str]) -> dict[str, int | None]:
        """Payment terms (days) of contracts, read by key only for contracts not seen before."""
        n = self.names
        obj, field = n.obj("contracts"), n.f("contract.term")
        need = sorted({c for c in contracts if c and c not in known})
        if not obj or not field or not need:
            return known
        for page in self.client.by_keys(obj, need, select=["Ref_Key", field]):
            for r in page:
                g = ref(r.get("Ref_Key"))
                if g:
                    days = number(r.get(field))
                    known[g] = int(days) if days > 0 else None
        for c in need:
            known.setdefault(c, None)
        return known

    def _pull_debts(self, st: dict, full: bool) -> Iterator[Batch]:
        n = self.names
        reg = n.obj("receivables")
        now = self.ctx.clock.now()
        period = to_wall(now, self.tz)
        today = period.date()
        if not reg:
            if st.get("d"):  # the feature was switched off: stored debts must not keep reminding anyone
                yield Batch("debts", sweep=Sweep(SYSTEM, "debt", set()), cursor=_dump({"off": now.isoformat()}))
            return
        sweep_due = _due(st, self.catalog_sweep, now, key="read")
        if not (full or "d" not in st or sweep_due or self._kv_get(KV_DEBTS_DIRTY) == "1"):
            if st.get("day") == today.isoformat():
                return
            # nothing was posted, but a day passed: more of the same debts may be overdue now
            state = st["d"]
            debts = [_debt(cp, s, now, today) for cp, s in sorted(state.items())]
            yield Batch("debts", records=debts, sweep=Sweep(SYSTEM, "debt", set(state)), total_hint=len(debts),
                        cursor=_dump({**st, "day": today.isoformat()}))
            return
        dim, cur_f = n.f("receivables.counterparty"), n.f("receivables.currency")
        rows = self.client.balance(reg, period=period, dimensions=_sel(_dim(dim), _dim(cur_f)))
        amap: dict[str, str] = dict(st.get("ak", {}))
        self._currency.update(st.get("cur", {}))
        terms: dict[str, int | None] = {} if sweep_due else dict(st.get("terms", {}))
        register = bool(n.obj("overdue")) and self.cfg.overdue_from != "shipments"
        overdue_rows: list[dict] = []
        if register:  # every due date, not only the passed ones: tomorrow's overdue needs no request
            odim, odue = n.f("overdue.counterparty"), n.f("overdue.due")
            overdue_rows = self.client.balance(n.obj("overdue"), period=period, dimensions=_sel(_dim(odim), _dim(odue)))
        to_cp = None
        if n.obj("analytics"):  # УТ 11: the dimension is an analytics key, not the counterparty
            keys = [ref(r.get(dim)) for r in rows] + [ref(r.get(n.f("overdue.counterparty"))) for r in overdue_rows]
            to_cp = self._resolve_analytics(amap, keys)
        if cur_f:
            self._currencies(ref(r.get(cur_f)) for r in rows)
        balances = receivable_balances(rows, n, to_counterparty=to_cp, currencies=self._currency,
                                       default_currency=n.f("currency.default"))
        debtors = {cp: v for cp, v in balances.items() if v[0] > CENT}
        buckets = overdue_buckets(overdue_rows, n, to_counterparty=to_cp) if register else {}
        start = today - timedelta(days=self.cfg.ageing_window_days)
        sales = self._shipments(sorted(debtors), start)
        terms = self._terms(terms, (s[4] for cp in debtors for s in sales.get(cp, [])))
        state: dict[str, dict] = {}
        for cp, (amount, currency) in debtors.items():
            parts = age(amount, [Shipment(s[0], s[1], date.fromisoformat(s[2]), s[3], terms.get(s[4] or "")) for s in sales.get(cp, [])],
                        default_term_days=self.cfg.payment_terms_days, window_start=start)
            if register:
                due = buckets.get(cp, [])
                parts = with_register_dues(parts, due)
            else:
                due = [(p.due, p.unpaid) for p in parts]
            state[cp] = {"a": amount, "c": currency, "b": [[d.isoformat(), round(v, 2)] for d, v in due],
                         "docs": [p.as_dict() for p in parts]}
        debts = [_debt(cp, s, now, today) for cp, s in sorted(state.items())]
        yield Batch("debts", records=debts, sweep=Sweep(SYSTEM, "debt", set(state)), total_hint=len(debts),
                    cursor=_dump({"ak": amap, "cur": dict(self._currency), "terms": terms, "d": state, "day": today.isoformat(),
                                  "read": now.isoformat() if sweep_due else st.get("read")}))
        self._kv_set(KV_DEBTS_DIRTY, "0")


def _sale(row: dict, amount: float, contract_field: str) -> tuple:
    """A shipment as the debts stream keeps it: ``(ref, number, ISO day, amount, contract)``."""
    day = parse_day(row.get("Date"))
    return (ref(row.get("Ref_Key")) or "", str(row.get("Number") or "").strip(), day.isoformat() if day else "0001-01-01",
            amount, (ref(row.get(contract_field)) if contract_field else None) or "")


def _debt(cp: str, s: dict, now: datetime, today: date) -> Debt:
    return make_debt(cp, s["a"], s["c"], [(date.fromisoformat(d), v) for d, v in s["b"]], s["docs"], as_of=now, today=today)


def _since(st: dict, now_wall: datetime) -> datetime:
    try:
        return datetime.fromisoformat(st["since"])
    except (KeyError, TypeError, ValueError):
        return now_wall


def _wall_of(row: dict) -> datetime | None:
    d = parse_wall(row.get("Date"), ZoneInfo("UTC"))
    return d.replace(tzinfo=None) if d else None


# ---------------------------------------------------------------- SOAP (our reference service)

class SoapSource:
    """Reads 1C through the reference web service (``onec/reference.wsdl``) an integrator published.

    The service tracks changes itself, so a cycle is four calls: users (on the sweep only),
    counterparties and documents changed since the last pull (minus ``overlap_days``), debts.
    """

    system = SYSTEM

    def __init__(self, cfg: OneC, ctx: Context, *, timezone: str = "Europe/Kyiv", client: Any = None):
        from onec.soap import SoapClient

        assert cfg.soap is not None
        self.cfg = cfg
        self.ctx = ctx
        self.tz = ZoneInfo(timezone)
        self.client = client or SoapClient(cfg.soap, ctx.counter(SYSTEM))
        self.overlap = timedelta(days=cfg.overlap_days)
        self.catalog_sweep = catalog_sweep_every(cfg)

    def streams(self) -> list[str]:
        return list(STREAMS)

    def pull(self, stream: str, cursor: str | None, *, full: bool = False) -> Iterator[Batch]:
        st = _load(cursor)
        full = full or not st
        now = self.ctx.clock.now()
        if stream == "users":
            if full or _due(st, self.catalog_sweep, now):
                users = [map_soap_user(u) for u in self.client.users()]
                yield Batch("users", records=users, sweep=Sweep(SYSTEM, "user", {u.source_id for u in users}),
                            cursor=_dump({"swept": now.isoformat()}))
            return
        if stream == "counterparties":
            sweep = full or _due(st, self.catalog_sweep, now) or "since" not in st
            since = None if sweep else datetime.fromisoformat(st["since"]) - self.overlap
            rows = self.client.counterparties(since)
            clients = [map_soap_counterparty(r) for r in rows if not r.get("DeletionMark")]
            deleted = [counterparty_key(str(r["Ref"])) for r in rows if r.get("DeletionMark")]
            live = {str(r["Ref"]).lower() for r in rows}
            yield Batch("counterparties", records=clients, deleted=deleted,
                        sweep=Sweep(SYSTEM, "counterparty", live) if sweep else None,
                        cursor=_dump({"since": to_wall(now, self.tz).isoformat(),
                                      "swept": now.isoformat() if sweep else st.get("swept")}))
            return
        if stream == "documents":
            sweep = full or _due(st, DOCUMENT_SWEEP, now) or "since" not in st
            since = datetime(1, 1, 1) if sweep else datetime.fromisoformat(st["since"]) - self.overlap
            docs = [map_soap_document(r, self.tz) for r in self.client.documents_since(since, list(DOC_TYPES))]
            yield Batch("documents", records=docs,
                        sweep=Sweep(SYSTEM, "document", {d.source_id for d in docs}) if sweep else None,
                        cursor=_dump({"since": to_wall(now, self.tz).isoformat(),
                                      "swept": now.isoformat() if sweep else st.get("swept")}))
            return
        if stream == "debts":
            debts = [map_soap_debt(r, now) for r in self.client.debts(to_wall(now, self.tz))]
            debts = [d for d in debts if d.amount > 0.005]
            yield Batch("debts", records=debts, sweep=Sweep(SYSTEM, "debt", {d.key.split(":", 2)[2] for d in debts}),
                        cursor=_dump({"at": now.isoformat()}))
            return
        raise ValueError(f"unknown stream {stream!r}")
