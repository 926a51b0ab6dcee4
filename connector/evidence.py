"""What counts as evidence: contact, purchase, an open future task, and whose it is.

The domain's most argued definitions live here, once, as set-based SQL over the store, so the
rules' candidate queries, ``plan``'s reasons and ``explain`` can never disagree:

- **Whose.** A record counts for a CRM client when it belongs to the client itself, to one of its
  contacts (a company's), to one of its deals, or to a 1C counterparty linked to it. PBX calls
  count for every client holding the number (:data:`ev_owner` maps owners to clients).
- **Contact.** Completed activities (calls, e-mails, meetings, ...), completed tasks, timeline
  comments, new deals and invoices, posted 1C documents, answered calls with talk time.
- **Never evidence.** Anything the connector wrote itself (``own``: its marker, the CRM activity
  mirroring its task, or a record its journal created), and anything after ``now``.
- **Purchase.** A won deal, a paid invoice not tied to a deal, a posted 1C sale or paid order;
  it counts for a company, or for a contact without one.
- **Kept.** An open task (not the connector's) or a planned activity due after ``now``.

The latest contact of each kind per client is derived once after a sync that changed anything
(``ev_contact``, about 1-2 s per million activities) and read by every rule in a fraction of that.
With an rfm rule, each client's purchases per local day and currency are derived with it
(``ev_purchase``: one purchase a day, a day in two systems once), so the rule's recency,
frequency and money are one indexed aggregate per evaluation.
A simulation in the past (``--now`` before some evidence) derives exact temporary copies instead,
so it sees nothing later than its ``now`` and never touches what a real run reads.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, and_, case, delete, func, literal, or_, select, union, union_all
from sqlalchemy.engine import Connection

from connector.store import (
    UTC as UTCType,
)
from connector.store import (
    Store,
    activities,
    calls,
    client_phones,
    clients,
    deal_clients,
    deals,
    documents,
    ev_contact,
    ev_owner,
    ev_purchase,
    ev_rfm,
    invoices,
    kv,
    links,
    payments,
    product_lines,
    task_owners,
    tasks,
)

CONTACT_KINDS = ("call", "email", "meeting", "task", "comment", "document", "deal", "invoice", "other")
PRIMARY_KV = "evidence.primary"
PURCHASE_KV = "evidence.purchase_days"  # "<UTC offset minutes>|<base currency>" ev_purchase was derived with; "" when it was not
RFM_KV = "evidence.rfm"  # the rfm_key() ev_rfm was derived with; "" when it was not

_tmp = MetaData()
tmp_owner = Table("ev_owner_now", _tmp, Column("owner_key", String(200)), Column("client_key", String(200)), prefixes=["TEMPORARY"])
tmp_contact = Table("ev_contact_now", _tmp, Column("client_key", String(200)), Column("kind", String(20)), Column("at", UTCType),
                    prefixes=["TEMPORARY"])
tmp_purchase = Table("ev_purchase_now", _tmp, Column("client_key", String(200)), Column("day", String(10)), Column("currency", String(10)),
                     Column("amount", Float), Column("at", UTCType), Column("first", Integer), prefixes=["TEMPORARY"])


@dataclass
class Purchase:
    at: datetime
    amount: float
    what: str  # deal | invoice | 1c sale | 1c order
    key: str


# ---------------------------------------------------------------------- the derivations


def _owner_select(primary: str) -> Any:
    """``(owner_key, client_key)``: a client counts for itself; a contact for its company; a deal for
    its clients (and their companies); a linked 1C counterparty for its client (and its company)."""
    c, co = clients.alias("c"), clients.alias("co")
    live_c = and_(c.c.system == primary, c.c.deleted.is_(False))
    live_co = and_(co.c.system == primary, co.c.deleted.is_(False))
    targets = union(
        select(c.c.key.label("owner_key"), c.c.key.label("client_key")).where(live_c),
        select(c.c.key, co.c.key).join(co, co.c.key == c.c.company_key).where(live_c, live_co),
    ).subquery("t")
    dl = select(deals.c.key).where(deals.c.deleted.is_(False)).subquery("dl")
    return union(
        select(targets.c.owner_key, targets.c.client_key),
        select(deal_clients.c.deal_key, targets.c.client_key)
        .join(targets, targets.c.owner_key == deal_clients.c.client_key).join(dl, dl.c.key == deal_clients.c.deal_key),
        select(links.c.foreign_key, targets.c.client_key).join(targets, targets.c.owner_key == links.c.client_key),
    )


def _contact_select(owners: Table, upto: datetime) -> Any:
    """``(client_key, kind, at)``: the latest contact of each kind per client, up to ``upto``."""
    a = activities
    per_owner = union_all(
        select(a.c.owner_key.label("owner_key"), a.c.kind.label("kind"), func.max(a.c.happened_at).label("at"))
        .where(a.c.completed.is_(True), a.c.deleted.is_(False), a.c.own.is_(False), a.c.happened_at <= upto)
        .group_by(a.c.owner_key, a.c.kind),
        select(task_owners.c.owner_key, literal("task"), func.max(tasks.c.closed_at))
        .join(tasks, tasks.c.key == task_owners.c.task_key)
        .where(tasks.c.completed.is_(True), tasks.c.deleted.is_(False), tasks.c.own.is_(False), tasks.c.closed_at <= upto)
        .group_by(task_owners.c.owner_key),
        select(deals.c.key, literal("deal"), deals.c.created_at).where(deals.c.deleted.is_(False), deals.c.created_at <= upto),
        select(invoices.c.client_key, literal("invoice"), func.max(invoices.c.issued_at))
        .where(invoices.c.deleted.is_(False), invoices.c.own.is_(False), invoices.c.issued_at <= upto, invoices.c.client_key.is_not(None))
        .group_by(invoices.c.client_key),
        select(documents.c.client_key, literal("document"), func.max(documents.c.date))
        .where(documents.c.deleted.is_(False), documents.c.posted.is_(True), documents.c.date <= upto,
               documents.c.client_key.is_not(None))
        .group_by(documents.c.client_key),
        select(client_phones.c.client_key, literal("call"), func.max(calls.c.started_at))
        .join(calls, calls.c.phone_e164 == client_phones.c.phone)
        .where(calls.c.answered.is_(True), calls.c.talk_s > 0, calls.c.deleted.is_(False), calls.c.started_at <= upto)
        .group_by(client_phones.c.client_key),
    ).subquery("e")
    return (select(owners.c.client_key, per_owner.c.kind, func.max(per_owner.c.at))
            .join(owners, owners.c.owner_key == per_owner.c.owner_key)
            .group_by(owners.c.client_key, per_owner.c.kind))


@dataclass(frozen=True)
class RfmSpec:
    """What an rfm rule aggregates: the zone of its days, its base currency, window and rates."""

    timezone: str
    currency: str
    window_days: int
    rates: tuple[tuple[str, float], ...] = ()

    def keys(self, at: datetime) -> tuple[str, str]:
        """``(purchase days key, aggregate key)`` as of ``at``: what the derivations depend on."""
        offset = utc_offset_minutes(self.timezone, at)
        since = (at.astimezone(ZoneInfo(self.timezone)).date() - timedelta(days=self.window_days)).isoformat()
        return f"{offset}|{self.currency.upper()}", rfm_key(offset, self.currency, since, dict(self.rates))


def rfm_key(offset: int, currency: str, since_day: str, rates: dict[str, float]) -> str:
    return json.dumps([offset, currency.upper(), since_day, sorted((k.upper(), float(v)) for k, v in rates.items())])


def refresh(store: Store, primary: str, *, rfm: RfmSpec | None = None, now: datetime | None = None) -> bool:
    """Re-derive the stored evidence if a sync changed anything since (or the primary CRM changed).

    ``rfm``: also derive each client's purchases per local day in the rule's zone and the rule's
    per-client aggregate for its window. They are rebuilt when something purchases are made of
    changed (deals, invoices, payments, documents, clients, links), when the day (the window) or
    the zone's offset moved; a sync of activities or calls alone keeps them. Derived as of the
    real clock: a later evaluation at an earlier ``now`` notices and derives exact temporary
    copies instead (``now`` replaces the real clock for a benchmark's fixed date). Returns whether
    it rebuilt."""
    real_now = now or datetime.now(UTC)
    days_key, agg_key = rfm.keys(real_now) if rfm is not None else (None, None)
    with store.tx() as conn:
        flags = dict(conn.execute(select(kv.c.name, kv.c.value).where(kv.c.name.in_(
            [Store.EVIDENCE_DIRTY, Store.PURCHASES_DIRTY, PRIMARY_KV, PURCHASE_KV, RFM_KV]))).all())
        same_primary = flags.get(PRIMARY_KV) == primary
        contacts_kept = flags.get(Store.EVIDENCE_DIRTY) == "0" and same_primary
        purchases_kept = same_primary and flags.get(Store.PURCHASES_DIRTY) == "0" and \
            (flags.get(PURCHASE_KV) or "") == (days_key or "") and (flags.get(RFM_KV) or "") == (agg_key or "")
        if contacts_kept and purchases_kept:
            return False
        if not contacts_kept:
            conn.execute(delete(ev_contact))
            conn.execute(delete(ev_owner))
            conn.execute(ev_owner.insert().from_select(["owner_key", "client_key"], _owner_select(primary)))
            conn.execute(ev_contact.insert().from_select(["client_key", "kind", "at"], _contact_select(ev_owner, real_now)))
        if not purchases_kept:
            conn.execute(delete(ev_purchase))
            conn.execute(delete(ev_rfm))
            if rfm is not None and days_key is not None and agg_key is not None:
                offset, _, since_day, _ = json.loads(agg_key)
                conn.execute(ev_purchase.insert().from_select(["client_key", "day", "currency", "amount", "at", "first"],
                                                              _purchase_day_select(ev_owner, real_now, offset, rfm.currency, conn.dialect.name)))
                conn.execute(ev_rfm.insert().from_select(["client_key", "last", "n", "m", "unpriced"],
                                                         _rfm_select(ev_purchase, since_day, rfm.currency, dict(rfm.rates))))
        store._upsert(conn, kv, [{"name": Store.EVIDENCE_DIRTY, "value": "0"}, {"name": Store.PURCHASES_DIRTY, "value": "0"},
                                 {"name": PRIMARY_KV, "value": primary}, {"name": PURCHASE_KV, "value": days_key or ""},
                                 {"name": RFM_KV, "value": agg_key or ""}], ["name"])
    return True


# ---------------------------------------------------------------------- purchases


def _purchase_rows(upto: datetime) -> Any:
    """``(owner_key, at, amount, what, key, system, currency)`` of every purchase up to ``upto``.

    An invoice the connector issued (``own``) is never a purchase by itself: what it sold shows
    as the client's payment or the 1C sale it led to."""
    now = upto
    paid = (select(payments.c.invoice_key, func.sum(payments.c.amount).label("paid"))
            .where(payments.c.deleted.is_(False), payments.c.invoice_key.is_not(None)).group_by(payments.c.invoice_key).subquery("pp"))
    doc_paid = (select(documents.c.basis_key, func.sum(documents.c.amount).label("paid"))
                .where(documents.c.deleted.is_(False), documents.c.posted.is_(True), documents.c.doc_type == "payment",
                       documents.c.basis_key.is_not(None)).group_by(documents.c.basis_key).subquery("dp"))
    inv_when = func.coalesce(invoices.c.paid_at, invoices.c.modified_at, invoices.c.issued_at)
    deal_when = func.coalesce(deals.c.closed_at, deals.c.modified_at)
    return union_all(
        select(deal_clients.c.client_key.label("owner_key"), deal_when.label("at"), func.coalesce(deals.c.amount, 0.0).label("amount"),
               literal("deal").label("what"), deals.c.key.label("key"), deals.c.system.label("system"),
               deals.c.currency.label("currency"))
        .join(deals, deals.c.key == deal_clients.c.deal_key)
        .where(deals.c.deleted.is_(False), deals.c.outcome == "won", deal_when <= now),
        select(invoices.c.client_key, inv_when, func.coalesce(invoices.c.amount, 0.0), literal("invoice"), invoices.c.key,
               invoices.c.system, invoices.c.currency)
        .outerjoin(paid, paid.c.invoice_key == invoices.c.key)
        .where(invoices.c.deleted.is_(False), invoices.c.own.is_(False), invoices.c.deal_key.is_(None), inv_when <= now,
               or_(invoices.c.outcome == "won",
                   and_(invoices.c.amount > 0, func.coalesce(paid.c.paid, 0.0) >= invoices.c.amount - 0.005))),
        select(documents.c.client_key, documents.c.date, func.coalesce(documents.c.amount, 0.0),
               literal("1c ") + documents.c.doc_type, documents.c.key, documents.c.system, documents.c.currency)
        .outerjoin(doc_paid, doc_paid.c.basis_key == documents.c.key)
        .where(documents.c.deleted.is_(False), documents.c.posted.is_(True), documents.c.date <= now,
               or_(documents.c.doc_type == "sale",
                   and_(documents.c.doc_type == "order",
                        or_(documents.c.paid.is_(True),
                            and_(documents.c.amount > 0, func.coalesce(doc_paid.c.paid, 0.0) >= documents.c.amount))))),
    ).subquery("p")


def _purchase_join(owners: Table, upto: datetime, cols: list) -> Any:
    """Purchases per client: a company's, or a contact's without a company (its company's otherwise)."""
    p = _purchase_rows(upto)
    pc = clients.alias("pc")
    return (select(owners.c.client_key, *[getattr(p.c, c) for c in cols]).join(owners, owners.c.owner_key == p.c.owner_key)
            .join(pc, and_(pc.c.key == owners.c.client_key, or_(pc.c.kind == "company", pc.c.company_key.is_(None)))))


def local_day(col: Any, offset_minutes: int, dialect: str) -> Any:
    """``YYYY-MM-DD`` of a stored (UTC) moment at a fixed offset from UTC, in SQL."""
    if dialect == "postgresql":
        from sqlalchemy import text

        return func.to_char(col + text(f"interval '{int(offset_minutes)} minutes'"), "YYYY-MM-DD")
    return func.date(col, f"{int(offset_minutes):+d} minutes")


def _purchase_day_select(owners: Table, upto: datetime, offset_minutes: int, base_currency: str, dialect: str) -> Any:
    """``(client_key, day, currency, amount, at, first)``: each client's purchases per local day and
    currency (a purchase without one is in ``base_currency``); ``first`` marks one row a day.

    One day of one system is the sum of its purchases there (two deals on one day are two); the
    same day in two systems counts once, at the larger sum (a won deal, its paid invoice and the
    1C sale of that order are one purchase)."""
    j = _purchase_join(owners, upto, ["at", "amount", "key", "system", "currency"]).subquery("pj")
    cp = select(j.c.client_key, j.c.key, j.c.at, j.c.amount, j.c.system, j.c.currency).distinct().subquery("cp")
    day = local_day(cp.c.at, offset_minutes, dialect)
    cur = func.upper(func.coalesce(func.nullif(cp.c.currency, ""), base_currency))
    per_sys = (select(cp.c.client_key, day.label("day"), cur.label("currency"), func.sum(cp.c.amount).label("amount"),
                      func.max(cp.c.at).label("at"))
               .group_by(cp.c.client_key, day, cp.c.system, cur).subquery("ps"))
    per_cur = (select(per_sys.c.client_key, per_sys.c.day, per_sys.c.currency, func.max(per_sys.c.amount).label("amount"),
                      func.max(per_sys.c.at).label("at"))
               .group_by(per_sys.c.client_key, per_sys.c.day, per_sys.c.currency).subquery("pc"))
    first = func.row_number().over(partition_by=(per_cur.c.client_key, per_cur.c.day), order_by=per_cur.c.currency)
    return select(per_cur.c.client_key, per_cur.c.day, per_cur.c.currency, per_cur.c.amount, per_cur.c.at,
                  case((first == 1, 1), else_=0))


def _rfm_select(t: Table, since_day: str, base_currency: str, rates: dict[str, float]) -> Any:
    """``(client_key, last, n, m, unpriced)`` over purchase days ``t``: the latest purchase day ever,
    and from ``since_day`` on the purchase days and the money in the base currency. An amount in a
    currency without a rate counts for the day (recency, frequency) but not for the money
    (``unpriced`` counts such days)."""
    whens: list[Any] = [(t.c.currency == base_currency.upper(), t.c.amount)]
    whens += [(t.c.currency == code.upper(), t.c.amount * float(rate)) for code, rate in sorted(rates.items())]
    converted = case(*whens, else_=None)
    inside = t.c.day >= since_day
    return (select(t.c.client_key, func.max(t.c.day).label("last"),
                   func.sum(case((and_(inside, t.c.first == 1), 1), else_=0)).label("n"),
                   func.sum(case((inside, converted), else_=0.0)).label("m"),
                   func.count(case((and_(inside, converted.is_(None)), t.c.day), else_=None).distinct()).label("unpriced"))
            .group_by(t.c.client_key))


def utc_offset_minutes(timezone: str, at: datetime) -> int:
    """The zone's offset from UTC at ``at``, in minutes (the local day of purchases)."""
    off = at.astimezone(ZoneInfo(timezone)).utcoffset()
    return int(off.total_seconds() // 60) if off is not None else 0


# ---------------------------------------------------------------------- queries for one evaluation


class Evidence:
    """Evidence as of ``now`` over one connection: the stored derivation, or exact temporary
    copies when ``now`` is earlier than some evidence (a simulation in the past) or the stored
    one is stale and may not be rebuilt here (``plan`` while another process holds the store)."""

    def __init__(self, conn: Connection, primary: str, now: datetime):
        self.conn = conn
        self.primary = primary
        self.now = now
        fresh = conn.execute(select(kv.c.value).where(kv.c.name == Store.EVIDENCE_DIRTY)).scalar() == "0" and \
            conn.execute(select(kv.c.value).where(kv.c.name == PRIMARY_KV)).scalar() == primary
        later = fresh and conn.execute(select(ev_contact.c.client_key).where(ev_contact.c.at > now).limit(1)).first() is not None
        self.stored = fresh and not later
        self._purchase_days: dict[int, Table] = {}
        if fresh and not later:
            self.owners, self.contact = ev_owner, ev_contact
        else:
            self.owners, self.contact = tmp_owner, tmp_contact
            for t in (tmp_contact, tmp_owner):
                t.drop(conn, checkfirst=True)
                t.create(conn)
            conn.execute(tmp_owner.insert().from_select(["owner_key", "client_key"], _owner_select(primary)))
            conn.exec_driver_sql("CREATE INDEX ix_ev_owner_now ON ev_owner_now (owner_key)")
            conn.exec_driver_sql("CREATE INDEX ix_ev_owner_now_client ON ev_owner_now (client_key)")
            conn.execute(tmp_contact.insert().from_select(["client_key", "kind", "at"], _contact_select(tmp_owner, now)))
            conn.exec_driver_sql("CREATE INDEX ix_ev_contact_now ON ev_contact_now (client_key, kind)")

    # -- contact

    def last_contact_q(self, kinds: Iterable[str]) -> Any:
        """Subquery ``(client_key, last)``: the latest contact of the given kinds per client."""
        t = self.contact
        return (select(t.c.client_key, func.max(t.c.at).label("last"))
                .where(t.c.kind.in_(list(kinds))).group_by(t.c.client_key).subquery("lc"))

    def contacts_of(self, client_keys: list[str], kinds: Iterable[str] | None = None) -> dict[str, dict[str, datetime]]:
        """Per client, the latest contact of each kind (reasons, ``explain``, release)."""
        t = self.contact
        out: dict[str, dict[str, datetime]] = defaultdict(dict)
        for chunk in _chunks(client_keys):
            q = select(t.c.client_key, t.c.kind, t.c.at).where(t.c.client_key.in_(chunk))
            if kinds is not None:
                q = q.where(t.c.kind.in_(list(kinds)))
            for ck, kind, at in self.conn.execute(q):
                if at is not None:
                    out[ck][kind] = at
        return out

    # -- kept by a future task

    def kept_q(self) -> Any:
        """Subquery ``(client_key)``: clients with an open task (not ours) or planned activity due after now."""
        o, now = self.owners, self.now
        future = union(
            select(activities.c.owner_key.label("owner_key"))
            .where(activities.c.completed.is_(False), activities.c.deleted.is_(False), activities.c.own.is_(False),
                   activities.c.deadline > now),
            select(task_owners.c.owner_key).join(tasks, tasks.c.key == task_owners.c.task_key)
            .where(tasks.c.completed.is_(False), tasks.c.deleted.is_(False), tasks.c.own.is_(False), tasks.c.deadline > now),
        ).subquery("f")
        return select(o.c.client_key).join(future, future.c.owner_key == o.c.owner_key).distinct().subquery("kept")

    def kept(self, client_keys: list[str]) -> set[str]:
        k = self.kept_q()
        out: set[str] = set()
        for chunk in _chunks(client_keys):
            out |= {r[0] for r in self.conn.execute(select(k.c.client_key).where(k.c.client_key.in_(chunk)))}
        return out

    # -- purchases

    def _purchase_rows(self) -> Any:
        """``(owner_key, at, amount, what, key, system, currency)`` of every purchase up to now (see :func:`_purchase_rows`)."""
        return _purchase_rows(self.now)

    def _purchase_join(self, cols: list) -> Any:
        return _purchase_join(self.owners, self.now, cols)

    def purchase_summary_q(self) -> Any:
        """Subquery ``(client_key, n, last)``: purchases and the latest one per client."""
        j = self._purchase_join(["at", "key"]).subquery("pj")
        return (select(j.c.client_key, func.count(j.c.key.distinct()).label("n"), func.max(j.c.at).label("last"))
                .group_by(j.c.client_key).subquery("ps"))

    def purchases(self, client_keys: list[str]) -> dict[str, list[Purchase]]:
        out: dict[str, list[Purchase]] = defaultdict(list)
        base = self._purchase_join(["at", "amount", "what", "key"]).subquery("pj")
        for chunk in _chunks(client_keys):
            seen: set[tuple[str, str]] = set()
            for ck, at, amount, what, key in self.conn.execute(select(base).where(base.c.client_key.in_(chunk))):
                if at is None or (ck, key) in seen:
                    continue
                seen.add((ck, key))
                out[ck].append(Purchase(aware(at), float(amount or 0.0), what, key))
        for v in out.values():
            v.sort(key=lambda x: (x.at, x.key))
        return out

    # -- repeat sales: per-client aggregates and what was bought

    def client_purchases_q(self) -> Any:
        """Subquery ``(client_key, key, at, amount, system, currency)``: each purchase once per client
        (a deal bound to a company and its contact counts once for the company)."""
        j = self._purchase_join(["at", "amount", "key", "system", "currency"]).subquery("pj")
        return select(j.c.client_key, j.c.key, j.c.at, j.c.amount, j.c.system, j.c.currency).distinct().subquery("cp")

    def purchase_days(self, offset_minutes: int, base_currency: str) -> Table:
        """Each client's purchases per local day and currency (:func:`_purchase_day_select`): the stored
        derivation when it was made for this offset and holds nothing after ``now``, else an exact
        temporary copy (made once per evaluation)."""
        wanted = f"{offset_minutes}|{base_currency.upper()}"
        if wanted in self._purchase_days:
            return self._purchase_days[wanted]
        table: Table = ev_purchase
        derived = self.conn.execute(select(kv.c.value).where(kv.c.name == PURCHASE_KV)).scalar()
        if not (self.stored and derived == wanted) or \
                self.conn.execute(select(ev_purchase.c.client_key).where(ev_purchase.c.at > self.now).limit(1)).first() is not None:
            table = tmp_purchase
            tmp_purchase.drop(self.conn, checkfirst=True)
            tmp_purchase.create(self.conn)
            self.conn.execute(tmp_purchase.insert().from_select(
                ["client_key", "day", "currency", "amount", "at", "first"],
                _purchase_day_select(self.owners, self.now, offset_minutes, base_currency, self.conn.dialect.name)))
            self.conn.exec_driver_sql("CREATE INDEX ix_ev_purchase_now ON ev_purchase_now (client_key, day)")
        self._purchase_days = {wanted: table}
        return table

    def rfm_q(self, *, since_day: str, offset_minutes: int, base_currency: str, rates: dict[str, float]) -> Any:
        """Subquery ``(client_key, last, n, m, unpriced)`` per client with a purchase: the local day
        (``YYYY-MM-DD``) of the latest purchase ever, and from ``since_day`` on the purchase days and
        the money spent in the base currency (:func:`_rfm_select`). The aggregate derived after the
        sync when it was made for this very window, currency and rates; else computed here."""
        t = self.purchase_days(offset_minutes, base_currency)
        if t is ev_purchase and self.conn.execute(select(kv.c.value).where(kv.c.name == RFM_KV)).scalar() == \
                rfm_key(offset_minutes, base_currency, since_day, rates):
            return select(ev_rfm).subquery("rfm")
        return _rfm_select(t, since_day, base_currency, rates).subquery("rfm")

    def purchase_lines_q(self, since: datetime) -> Any:
        """Subquery ``(client_key, key, at, system, line_no, product_id, article, name, group_name,
        quantity, amount)``: the product lines of every purchase since ``since`` (deals' product
        rows, 1C documents' goods)."""
        cp = self.client_purchases_q()
        pl = product_lines
        return (select(cp.c.client_key, cp.c.key, cp.c.at, cp.c.system, pl.c.line_no, pl.c.product_id, pl.c.article, pl.c.name,
                       pl.c.group_name, pl.c.quantity, pl.c.amount)
                .join(pl, pl.c.owner_key == cp.c.key).where(cp.c.at >= since).subquery("lines"))


def aware(v: Any) -> datetime:
    """SQL aggregates bypass the column type on SQLite: parse and mark as UTC."""
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def _chunks(items: list[str], n: int = 500) -> list[list[str]]:
    return [items[i : i + n] for i in range(0, len(items), n)]
