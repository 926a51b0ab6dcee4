"""1C as streams of batches: users, counterparties, documents, debts.

Standard OData has no change feed (reference §8), so each stream is built to make the common
case — nothing changed — cost almost nothing:

* **users, counterparties** (catalogs): a ``/$count`` per cycle; the full ``Ref_Key,DataVersion``
  listing only on the periodic sweep (``settings.onec.sweep_every_hours`` if present, else 6 h)
  or when the count moved. Full objects are fetched only for changed ``DataVersion``\\ s, by key
  batches or by a wide paged read, whichever needs fewer requests.
* **documents**: one ``Date ge datetime'<since - overlap_days>'`` window query per document object
  with ``$select=Ref_Key,DataVersion,Date``; full rows only for new or changed versions; a record
  that left the window is re-read by key (gone = physically deleted). A weekly wide re-read
  catches back-dated edits and yields a :class:`Sweep`.
* **debts**: point-in-time balances recomputed each cycle: one ``Balance`` call on the
  receivables register and, where the configuration has one, one on the terms register with a
  ``Condition`` on the planned payment date (overdue only).

The cursor is JSON holding what the next cycle compares against (``DataVersion``\\ s of catalog
rows and of the documents inside the window). It is only ever yielded with the last batch of a
pull, so a crash mid-pull repeats work but never skips it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connector.config import OneC
from connector.domain import Batch, Sweep
from connector.ports import Context
from onec.client import SYSTEM, ODataClient, lit_dt, lit_str
from onec.mapping import (
    counterparty_key,
    currency_code,
    doc_select,
    document_key,
    map_counterparty,
    map_debts,
    map_document,
    map_soap_counterparty,
    map_soap_debt,
    map_soap_document,
    map_soap_user,
    map_user,
    parse_wall,
    ref,
    to_wall,
)
from onec.presets import DOC_TYPES, Names, resolve

BATCH = 500
DOCUMENT_SWEEP = timedelta(days=7)
STREAMS = ["users", "counterparties", "documents", "debts"]


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


def _due(st: dict, every: timedelta, now: datetime) -> bool:
    last = st.get("swept")
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


class ODataSource:
    """Reads one 1C base through the standard OData interface."""

    system = SYSTEM

    def __init__(self, cfg: OneC, ctx: Context, *, timezone: str = "Europe/Kyiv", client: ODataClient | None = None):
        assert cfg.odata is not None
        self.cfg = cfg
        self.ctx = ctx
        self.names: Names = resolve(cfg.preset, cfg.objects, cfg.fields)
        self.tz = ZoneInfo(timezone)
        self.client = client or ODataClient(cfg.odata.url, cfg.odata.user, cfg.odata.password, ctx.counter(SYSTEM),
                                            timeout=cfg.odata.timeout, page_size=cfg.odata.page_size)
        self.overlap = timedelta(days=cfg.overlap_days)
        self.catalog_sweep = catalog_sweep_every(cfg)

    def streams(self) -> list[str]:
        return list(STREAMS)

    def pull(self, stream: str, cursor: str | None, *, full: bool = False) -> Iterator[Batch]:
        st = _load(cursor)
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        return getattr(self, f"_pull_{stream}")(st, full or not st)

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

    def _currencies(self, known: dict[str, str], keys: Iterable[str | None]) -> dict[str, str]:
        """Currency references -> ISO codes; the (tiny) catalog is read only when a key is new."""
        if any(k and k not in known for k in keys) and self.names.obj("currencies"):
            obj = self.names.obj("currencies")
            for page in self.client.pages(obj, select=_sel("Ref_Key", self.names.f("currency.code"), "Description")):
                for r in page:
                    g = ref(r.get("Ref_Key"))
                    if g:
                        known[g] = currency_code(r, self.names)
        return known

    # -- users

    def _pull_users(self, st: dict, full: bool) -> Iterator[Batch]:
        n = self.names
        obj = n.obj("users")
        now = self.ctx.clock.now()
        if not full and not _due(st, self.catalog_sweep, now):
            if self.client.count(obj) == st.get("n"):
                return
        select = _sel("Ref_Key", "DeletionMark", n.f("user.name"), n.f("user.inactive"), n.f("user.contacts"))
        managers, live, total = [], set(), 0
        for page in self.client.pages(obj, select=select):
            total += len(page)
            for r in page:
                m = map_user(r, n)
                managers.append(m)
                live.add(m.source_id)
        yield Batch("users", records=managers, sweep=Sweep(SYSTEM, "user", live),
                    cursor=_dump({"n": total, "swept": now.isoformat()}), total_hint=len(managers))

    # -- counterparties

    def _cp_select(self) -> list[str]:
        return counterparty_select(self.names)

    def _contacts(self, refs: list[str], everything: bool) -> dict[str, list[dict]]:
        """Contact rows from ``InformationRegister_КонтактнаяИнформация`` (УТ 10.3 / УТП) by object."""
        n = self.names
        reg = n.obj("contact_info")
        out: dict[str, list[dict]] = {}
        if not reg or not refs:
            return out
        fo, ft, fx = n.f("contact.object"), n.f("contact.type"), n.f("contact.text")
        kinds = f"({ft} eq {lit_str(n.f('contact.phone'))} or {ft} eq {lit_str(n.f('contact.email'))})"
        select = _sel(fo, ft, fx)
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
        wide = self._cp_select()
        rows: dict[str, dict] = {}
        listing: list[dict] = []
        if full:
            for page in self.client.pages(obj, select=wide):
                listing += page
            rows = {ref(r.get("Ref_Key")) or "": r for r in listing}
        else:
            for page in self.client.pages(obj, select=_sel("Ref_Key", "DataVersion", "IsFolder", pfield)):
                listing += page
        p_ver: dict[str, str] = {}
        p_rows: dict[str, dict] = {}
        p_wide = _sel("Ref_Key", "DataVersion", "DeletionMark", n.f("partner.manager"), n.f("contact.table"))
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
        if full:
            yield from self._documents_full(st, now)
        else:
            yield from self._documents_window(st, now)

    def _map_docs(self, rows: list[dict], doc_type: str, cur: dict[str, str]) -> list:
        cur_field = self.names.f(f"{doc_type}.currency")
        if cur_field:
            self._currencies(cur, (ref(r.get(cur_field)) for r in rows))
        return [map_document(r, doc_type, self.names, self.tz, cur) for r in rows]

    def _documents_full(self, st: dict, now: datetime) -> Iterator[Batch]:
        cur: dict[str, str] = dict(st.get("cur", {}))
        now_wall = to_wall(now, self.tz)
        live: set[str] = set()
        seen: dict[str, list[tuple[str, str, datetime | None]]] = {}
        newest: datetime | None = None
        total = 0
        for doc_type, obj in self.names.doc_objects():
            for page in self.client.pages(obj, select=doc_select(self.names, doc_type), orderby="Date,Ref_Key"):
                docs = self._map_docs(page, doc_type, cur)
                for r, d in zip(page, docs, strict=False):
                    live.add(d.source_id)
                    when = _wall_of(r)
                    seen.setdefault(obj, []).append((d.source_id, str(r.get("DataVersion")), when))
                    if when and when <= now_wall and (newest is None or when > newest):
                        newest = when
                total += len(docs)
                yield Batch("documents", records=docs)
        since = newest or now_wall
        start = since - self.overlap
        window = {obj: {g: dv for g, dv, when in items if when and when >= start} for obj, items in seen.items()}
        yield Batch("documents", sweep=Sweep(SYSTEM, "document", live), total_hint=total,
                    cursor=_dump({"since": since.isoformat(), "v": window, "cur": cur, "swept": now.isoformat()}))

    def _documents_window(self, st: dict, now: datetime) -> Iterator[Batch]:
        cur: dict[str, str] = dict(st.get("cur", {}))
        now_wall = to_wall(now, self.tz)
        try:
            since = datetime.fromisoformat(st["since"])
        except (KeyError, TypeError, ValueError):
            since = now_wall
        start = since - self.overlap
        old: dict[str, dict[str, str]] = st.get("v", {})
        records, deleted = [], []
        listing: dict[str, list[tuple[str, str, datetime | None]]] = {}
        newest = since
        for doc_type, obj in self.names.doc_objects():
            items: list[tuple[str, str, datetime | None]] = []
            for page in self.client.pages(obj, select=["Ref_Key", "DataVersion", "Date"], filter=f"Date ge {lit_dt(start)}",
                                          orderby="Date,Ref_Key"):
                items += [(ref(r.get("Ref_Key")) or "", str(r.get("DataVersion")), _wall_of(r)) for r in page]
            listing[obj] = items
            known = old.get(obj, {})
            changed = [g for g, dv, _ in items if known.get(g) != dv]
            in_window = {g for g, _, _ in items}
            vanished = [g for g in known if g not in in_window]
            select = doc_select(self.names, doc_type)
            for page in self._rows(obj, changed, select, len(items), filter=f"Date ge {lit_dt(start)}", orderby="Date,Ref_Key"):
                records += self._map_docs(page, doc_type, cur)
            found: set[str] = set()
            for page in self.client.by_keys(obj, vanished, select=select):
                docs = self._map_docs(page, doc_type, cur)
                found |= {d.source_id for d in docs}
                records += docs
            deleted += [document_key(g) for g in vanished if g not in found]
            for _, _, when in items:
                if when and newest < when <= now_wall:
                    newest = when
        new_start = newest - self.overlap
        window = {obj: {g: dv for g, dv, when in items if when and when >= new_start} for obj, items in listing.items()}
        chunks = list(_chunks(records)) or [[]]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            yield Batch("documents", records=chunk, deleted=deleted if last else [], total_hint=len(records),
                        cursor=_dump({"since": newest.isoformat(), "v": window, "cur": cur, "swept": st.get("swept")}) if last else None)

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

    def _pull_debts(self, st: dict, full: bool) -> Iterator[Batch]:
        n = self.names
        reg = n.obj("receivables")
        if not reg:
            return
        now = self.ctx.clock.now()
        period = to_wall(now, self.tz)
        dim, cur_f = n.f("receivables.counterparty"), n.f("receivables.currency")
        rows = self.client.balance(reg, period=period, dimensions=_sel(_dim(dim), _dim(cur_f)))
        amap: dict[str, str] = dict(st.get("ak", {}))
        cur: dict[str, str] = dict(st.get("cur", {}))
        via_analytics = bool(n.obj("analytics"))  # УТ 11: the dimension is an analytics key, not the counterparty
        overdue_rows = None
        if n.obj("overdue"):
            odim, odue = n.f("overdue.counterparty"), n.f("overdue.due")
            today = period.replace(hour=0, minute=0, second=0)
            overdue_rows = self.client.balance(n.obj("overdue"), period=period, condition=f"{odue} lt {lit_dt(today)}",
                                               dimensions=_sel(_dim(odim), _dim(odue)))
        to_cp = None
        if via_analytics:
            keys = [ref(r.get(dim)) for r in rows] + [ref(r.get(n.f("overdue.counterparty"))) for r in overdue_rows or []]
            to_cp = self._resolve_analytics(amap, keys)
        if cur_f:
            self._currencies(cur, (ref(r.get(cur_f)) for r in rows))
        debts = map_debts(rows, n, as_of=now, to_counterparty=to_cp, currencies=cur, overdue=overdue_rows,
                          default_currency=n.f("currency.default"))
        yield Batch("debts", records=debts, sweep=Sweep(SYSTEM, "debt", {d.client_key.split(":", 2)[2] for d in debts}),
                    cursor=_dump({"ak": amap, "cur": cur}), total_hint=len(debts))


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
