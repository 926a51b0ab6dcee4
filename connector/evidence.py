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
(``ev_contact``, about 1-2 s per million activities) and read by every rule in a fraction of that;
so is every client's list of purchases (``ev_buy``: whose, paid or won, undated by ``now``, which a
read applies), the lost rule's candidates and its candidates' purchases.
With an rfm rule, each client's purchases per local day and currency are derived with it
(``ev_purchase``: one purchase a day, a day in two systems once), so the rule's recency,
frequency and money are one indexed aggregate per evaluation.
A simulation in the past (``--now`` before some evidence) derives exact temporary copies instead,
so it sees nothing later than its ``now`` and never touches what a real run reads.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    union,
    union_all,
    update,
)
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
    ev_buy,
    ev_contact,
    ev_owner,
    ev_purchase,
    ev_rfm,
    ev_stale,
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
LATEST_KV = "evidence.latest"  # the latest contact the stored derivation holds (ISO; "" for none): a plan compares its now
RFM_KV = "evidence.rfm"  # the rfm_key() ev_rfm was derived with; "" when it was not

FOREVER = datetime(9999, 1, 1, tzinfo=UTC)
PARTIAL_MIN = 20_000  # up to this many touched owners the partial derivation is always the cheaper one
BUY_COLUMNS = ["client_key", "key", "at", "amount", "what", "system", "currency"]

_tmp = MetaData()
tmp_owner = Table("ev_owner_now", _tmp, Column("owner_key", String(200)), Column("client_key", String(200)), prefixes=["TEMPORARY"])
tmp_contact = Table("ev_contact_now", _tmp, Column("client_key", String(200)), Column("kind", String(20)), Column("at", UTCType),
                    prefixes=["TEMPORARY"])
# a plan's candidates (thousands of client keys), joined once instead of in IN lists of 500
tmp_keys = Table("ev_keys_now", _tmp, Column("client_key", String(200), primary_key=True), prefixes=["TEMPORARY"])
MANY = 500  # more keys than this go through tmp_keys
tmp_stale = Table("ev_stale_clients", _tmp, Column("client_key", String(200), primary_key=True), prefixes=["TEMPORARY"])
tmp_purchase = Table("ev_purchase_now", _tmp, Column("client_key", String(200)), Column("day", String(10)), Column("currency", String(10)),
                     Column("amount", Float), Column("at", UTCType), Column("first", Integer), prefixes=["TEMPORARY"])


@dataclass(slots=True)
class Purchase:
    at: datetime
    amount: float
    what: str  # deal | invoice | 1c sale | 1c order
    key: str


@dataclass
class Record:
    """One store record that is (or is not) evidence, as ``explain`` shows it (raw values; the
    report puts them into words)."""

    kind: str  # call, email, meeting, task, comment, document, deal, invoice, other
    at: datetime | None  # when it happened (an open task: its deadline)
    key: str
    what: str = ""  # its subject or title; a document's type and number
    phone: str | None = None  # a PBX call's number (E.164)
    direction: str | None = None  # in | out
    seconds: int | None = None  # talk time
    amount: float | None = None
    currency: str | None = None
    open: bool = False  # an open task or a planned activity


# ---------------------------------------------------------------------- the derivations


def _owner_select(primary: str, only: Any | None = None) -> Any:
    """``(owner_key, client_key)``: a client counts for itself; a contact for its company; a deal for
    its clients (and their companies); a linked 1C counterparty for its client (and its company).
    ``only``: a subquery of client keys, the rows of those clients alone."""
    c, co = clients.alias("c"), clients.alias("co")
    live_c = and_(c.c.system == primary, c.c.deleted.is_(False))
    live_co = and_(co.c.system == primary, co.c.deleted.is_(False))
    itself = select(c.c.key.label("owner_key"), c.c.key.label("client_key")).where(live_c)
    company = select(c.c.key, co.c.key).join(co, co.c.key == c.c.company_key).where(live_c, live_co)
    if only is not None:
        itself, company = itself.where(c.c.key.in_(only)), company.where(co.c.key.in_(only))
    targets = union(itself, company).subquery("t")
    dl = select(deals.c.key).where(deals.c.deleted.is_(False)).subquery("dl")
    return union(
        select(targets.c.owner_key, targets.c.client_key),
        select(deal_clients.c.deal_key, targets.c.client_key)
        .join(targets, targets.c.owner_key == deal_clients.c.client_key).join(dl, dl.c.key == deal_clients.c.deal_key),
        select(links.c.foreign_key, targets.c.client_key).join(targets, targets.c.owner_key == links.c.client_key),
    )


def _contact_conditions(upto: datetime) -> dict[str, tuple]:
    """What makes a record contact, per source table: the one definition that the derivation below
    and :meth:`Evidence.contact_records` (``explain``) both use."""
    return {
        "activities": (activities.c.completed.is_(True), activities.c.deleted.is_(False), activities.c.own.is_(False),
                       activities.c.happened_at <= upto),
        "tasks": (tasks.c.completed.is_(True), tasks.c.deleted.is_(False), tasks.c.own.is_(False), tasks.c.closed_at <= upto),
        "deals": (deals.c.deleted.is_(False), deals.c.created_at <= upto),
        "invoices": (invoices.c.deleted.is_(False), invoices.c.own.is_(False), invoices.c.issued_at <= upto,
                     invoices.c.client_key.is_not(None)),
        "documents": (documents.c.deleted.is_(False), documents.c.posted.is_(True), documents.c.date <= upto,
                      documents.c.client_key.is_not(None)),
        "calls": (calls.c.answered.is_(True), calls.c.talk_s > 0, calls.c.deleted.is_(False), calls.c.started_at <= upto),
    }


def _contact_select(owners: Any, upto: datetime, owner_filter: Any | None = None) -> Any:
    """``(client_key, kind, at)``: the latest contact of each kind per client, up to ``upto``.
    ``owner_filter``: a subquery of owner keys; each source reads those owners' rows by its index."""
    a = activities
    cond = _contact_conditions(upto)

    def mine(col: Any) -> tuple:
        return () if owner_filter is None else (col.in_(owner_filter),)

    per_owner = union_all(
        select(a.c.owner_key.label("owner_key"), a.c.kind.label("kind"), func.max(a.c.happened_at).label("at"))
        .where(*cond["activities"], *mine(a.c.owner_key))
        .group_by(a.c.owner_key, a.c.kind),
        select(task_owners.c.owner_key, literal("task"), func.max(tasks.c.closed_at))
        .join(tasks, tasks.c.key == task_owners.c.task_key)
        .where(*cond["tasks"], *mine(task_owners.c.owner_key))
        .group_by(task_owners.c.owner_key),
        select(deals.c.key, literal("deal"), deals.c.created_at).where(*cond["deals"], *mine(deals.c.key)),
        select(invoices.c.client_key, literal("invoice"), func.max(invoices.c.issued_at))
        .where(*cond["invoices"], *mine(invoices.c.client_key))
        .group_by(invoices.c.client_key),
        select(documents.c.client_key, literal("document"), func.max(documents.c.date))
        .where(*cond["documents"], *mine(documents.c.client_key))
        .group_by(documents.c.client_key),
        select(client_phones.c.client_key, literal("call"), func.max(calls.c.started_at))
        .join(calls, calls.c.phone_e164 == client_phones.c.phone)
        .where(*cond["calls"], *mine(client_phones.c.client_key),
               # the owners' numbers first, then their calls by number: never every call against every owner
               *(() if owner_filter is None else
                 (calls.c.phone_e164.in_(select(client_phones.c.phone).where(client_phones.c.client_key.in_(owner_filter))),)))
        .group_by(client_phones.c.client_key),
    ).subquery("e")
    return (select(owners.c.client_key, per_owner.c.kind, func.max(per_owner.c.at))
            .join(owners, owners.c.owner_key == per_owner.c.owner_key)
            .group_by(owners.c.client_key, per_owner.c.kind))


def _derive_for_stale(conn: Connection, primary: str, upto: datetime) -> None:
    """Derive owners, latest contacts and purchases again for the clients the stale owners count for
    (before the change, from the stored owners; after it, a client among them itself), exactly as the
    whole derivation would for them: a cycle that touched a thousand records reads their clients'
    records, not two million activities."""
    tmp_stale.drop(conn, checkfirst=True)
    tmp_stale.create(conn)
    stale = select(ev_stale.c.owner_key)
    conn.execute(tmp_stale.insert().from_select(["client_key"], union(
        select(ev_owner.c.client_key).where(ev_owner.c.owner_key.in_(stale)),
        select(clients.c.key).where(clients.c.key.in_(stale), clients.c.system == primary))))
    only = select(tmp_stale.c.client_key)
    conn.execute(delete(ev_owner).where(ev_owner.c.client_key.in_(only)))
    conn.execute(ev_owner.insert().from_select(["owner_key", "client_key"], _owner_select(primary, only)))
    theirs = select(ev_owner).where(ev_owner.c.client_key.in_(only)).subquery("theirs")
    their_owners = select(theirs.c.owner_key)
    conn.execute(delete(ev_contact).where(ev_contact.c.client_key.in_(only)))
    conn.execute(ev_contact.insert().from_select(["client_key", "kind", "at"], _contact_select(theirs, upto, their_owners)))
    conn.execute(delete(ev_buy).where(ev_buy.c.client_key.in_(only)))
    conn.execute(ev_buy.insert().from_select(BUY_COLUMNS, _purchase_join(theirs, FOREVER, BUY_COLUMNS[1:], their_owners).distinct()))


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
        # The write lock (SQLite) and the flag's row (PostgreSQL) first, the flags read under them: a
        # writer that commits meanwhile (a push receiver) would otherwise have its owners marked
        # derived unseen. Its own mark waits for this transaction and says "dirty" after it.
        conn.execute(update(kv).where(kv.c.name == Store.EVIDENCE_DIRTY).values(value=kv.c.value))
        flags = dict(conn.execute(select(kv.c.name, kv.c.value).where(kv.c.name.in_(
            [Store.EVIDENCE_DIRTY, Store.PURCHASES_DIRTY, Store.EVIDENCE_FULL, PRIMARY_KV, PURCHASE_KV, RFM_KV]))).all())
        same_primary = flags.get(PRIMARY_KV) == primary
        contacts_kept = flags.get(Store.EVIDENCE_DIRTY) == "0" and same_primary
        purchases_kept = same_primary and flags.get(Store.PURCHASES_DIRTY) == "0" and \
            (flags.get(PURCHASE_KV) or "") == (days_key or "") and (flags.get(RFM_KV) or "") == (agg_key or "")
        if contacts_kept and purchases_kept:
            return False
        buys_done = False
        if not contacts_kept:
            stale = conn.execute(select(func.count()).select_from(ev_stale)).scalar_one()
            # the touched clients alone while they are a fifth of the owners at most (measured: 16k of 250k owners,
            # 3.0 s against 8.4 s for everything at 100k clients); beyond that one pass over everything is cheaper
            few = stale <= PARTIAL_MIN or stale * 5 <= conn.execute(select(func.count()).select_from(ev_owner)).scalar_one()
            if same_primary and flags.get(Store.EVIDENCE_FULL) == "0" and few:
                _derive_for_stale(conn, primary, real_now)  # the clients of the owners a sync touched
            else:
                conn.execute(delete(ev_contact))
                conn.execute(delete(ev_owner))
                conn.execute(ev_owner.insert().from_select(["owner_key", "client_key"], _owner_select(primary)))
                conn.execute(ev_contact.insert().from_select(["client_key", "kind", "at"], _contact_select(ev_owner, real_now)))
                conn.execute(delete(ev_buy))
                # every purchase, whatever its date: a read keeps those up to its own ``now`` (the date is
                # the only thing that depends on it), so a simulation before or after this moment is exact
                conn.execute(ev_buy.insert().from_select(BUY_COLUMNS, _purchase_join(ev_owner, FOREVER, BUY_COLUMNS[1:]).distinct()))
            buys_done = True
            conn.execute(delete(ev_stale))
            latest = conn.execute(select(func.max(ev_contact.c.at))).scalar()
            store._upsert(conn, kv, [{"name": LATEST_KV, "value": latest.isoformat() if latest else ""},
                                     {"name": Store.EVIDENCE_FULL, "value": "0"}], ["name"])
        if not purchases_kept:
            if not buys_done and flags.get(Store.PURCHASES_DIRTY) != "0":  # purchases alone marked (a store from before ev_buy)
                conn.execute(delete(ev_buy))
                conn.execute(ev_buy.insert().from_select(BUY_COLUMNS, _purchase_join(ev_owner, FOREVER, BUY_COLUMNS[1:]).distinct()))
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


def _purchase_rows(upto: datetime, owners: Any | None = None) -> Any:
    """``(owner_key, at, amount, what, key, system, currency)`` of every purchase up to ``upto`` (of
    ``owners`` only, a subquery of owner keys, when given: the filter goes into each source's index).

    An invoice the connector issued (``own``) is never a purchase by itself: what it sold shows
    as the client's payment or the 1C sale it led to. What an invoice or a 1C order was paid is
    looked up per row (an index seek), not aggregated over every payment."""
    now = upto
    paid = (select(func.coalesce(func.sum(payments.c.amount), 0.0))
            .where(payments.c.invoice_key == invoices.c.key, payments.c.deleted.is_(False)).scalar_subquery())
    pay = documents.alias("pay")
    doc_paid = (select(func.coalesce(func.sum(pay.c.amount), 0.0))
                .where(pay.c.basis_key == documents.c.key, pay.c.deleted.is_(False), pay.c.posted.is_(True),
                       pay.c.doc_type == "payment").scalar_subquery())
    inv_when = func.coalesce(invoices.c.paid_at, invoices.c.modified_at, invoices.c.issued_at)
    deal_when = func.coalesce(deals.c.closed_at, deals.c.modified_at)
    deal_q = (select(deal_clients.c.client_key.label("owner_key"), deal_when.label("at"), func.coalesce(deals.c.amount, 0.0).label("amount"),
                     literal("deal").label("what"), deals.c.key.label("key"), deals.c.system.label("system"),
                     deals.c.currency.label("currency"))
              .join(deals, deals.c.key == deal_clients.c.deal_key)
              .where(deals.c.deleted.is_(False), deals.c.outcome == "won", deal_when <= now))
    inv_q = (select(invoices.c.client_key, inv_when, func.coalesce(invoices.c.amount, 0.0), literal("invoice"), invoices.c.key,
                    invoices.c.system, invoices.c.currency)
             .where(invoices.c.deleted.is_(False), invoices.c.own.is_(False), invoices.c.deal_key.is_(None), inv_when <= now,
                    or_(invoices.c.outcome == "won", and_(invoices.c.amount > 0, paid >= invoices.c.amount - 0.005))))
    doc_q = (select(documents.c.client_key, documents.c.date, func.coalesce(documents.c.amount, 0.0),
                    literal("1c ") + documents.c.doc_type, documents.c.key, documents.c.system, documents.c.currency)
             .where(documents.c.deleted.is_(False), documents.c.posted.is_(True), documents.c.date <= now,
                    or_(documents.c.doc_type == "sale",
                        and_(documents.c.doc_type == "order",
                             or_(documents.c.paid.is_(True), and_(documents.c.amount > 0, doc_paid >= documents.c.amount))))))
    if owners is not None:
        deal_q = deal_q.where(deal_clients.c.client_key.in_(owners))
        inv_q = inv_q.where(invoices.c.client_key.in_(owners))
        doc_q = doc_q.where(documents.c.client_key.in_(owners))
    return union_all(deal_q, inv_q, doc_q).subquery("p")


def _purchase_join(owners: Table, upto: datetime, cols: list, owner_filter: Any | None = None) -> Any:
    """Purchases per client: a company's, or a contact's without a company (its company's otherwise)."""
    p = _purchase_rows(upto, owner_filter)
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
        self._kept: set[str] | None = None
        self._keys_made = False
        self._keys_held: list[str] = []  # what tmp_keys holds now: a second ask for the same keys costs nothing
        fresh = conn.execute(select(kv.c.value).where(kv.c.name == Store.EVIDENCE_DIRTY)).scalar() == "0" and \
            conn.execute(select(kv.c.value).where(kv.c.name == PRIMARY_KV)).scalar() == primary
        latest = conn.execute(select(kv.c.value).where(kv.c.name == LATEST_KV)).scalar() if fresh else None
        if latest is not None:  # the derivation's latest contact, kept with it: no scan of every client's contacts
            later = bool(latest) and datetime.fromisoformat(latest) > now
        else:
            later = fresh and conn.execute(select(ev_contact.c.client_key).where(ev_contact.c.at > now).limit(1)).first() is not None
        self.stored = fresh and not later
        # purchases derived with the stored owners (ev_buy), unless something they are made of changed since;
        # undated by ``now``, they serve a simulation in the past too (the owners' derivation has no date)
        self.buys: Table | None = ev_buy if fresh and conn.execute(
            select(kv.c.value).where(kv.c.name == Store.PURCHASES_DIRTY)).scalar() == "0" else None
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

    def silent_since(self, kinds: Iterable[str], cutoff: datetime) -> Any:
        """Condition on ``clients``: the latest contact of ``kinds`` or, with none, the creation is at or
        before ``cutoff`` (``coalesce(last contact, created_at) <= cutoff``), as index probes per client:
        half the time of joining every client's latest contact."""
        t, wanted = self.contact, list(kinds)
        mine = (t.c.client_key == clients.c.key, t.c.kind.in_(wanted))
        since = select(literal(1)).where(*mine, t.c.at > cutoff).exists()
        ever = select(literal(1)).where(*mine, t.c.at.is_not(None)).exists()
        return and_(~since, or_(clients.c.created_at <= cutoff, ever))

    def keyset(self, keys: Iterable[str]) -> Table:
        """``keys`` in a temporary table (its previous keys replaced): a query joins thousands of
        candidates once, where IN lists of 500 would cost a query and a plan each."""
        unique = [k for k in dict.fromkeys(keys) if k]
        if self._keys_made and unique == self._keys_held:
            return tmp_keys
        if not self._keys_made:
            tmp_keys.drop(self.conn, checkfirst=True)
            tmp_keys.create(self.conn)
            self._keys_made = True
        else:
            self.conn.execute(tmp_keys.delete())
        if unique:
            # the driver's own executemany: SQLAlchemy's per-row parameter handling cost more than the inserts
            sql = str(tmp_keys.insert().compile(dialect=self.conn.dialect))
            named = self.conn.dialect.paramstyle in ("named", "pyformat")
            self.conn.exec_driver_sql(sql, [{"client_key": k} for k in unique] if named else [(k,) for k in unique])
        self._keys_held = unique
        return tmp_keys

    def key_filters(self, keys: list[str]) -> list[Callable[[Any], Any]]:
        """``within(column)`` conditions that keep a column to ``keys``, one per round of queries: an
        IN list for a few keys, a subquery of :meth:`keyset` (one round) for many."""
        if len(keys) > MANY:
            k = self.keyset(keys)
            return [lambda col: col.in_(select(k.c.client_key))]
        return [lambda col, chunk=chunk: col.in_(chunk) for chunk in _chunks(keys)]

    def contacts_of(self, client_keys: list[str], kinds: Iterable[str] | None = None) -> dict[str, dict[str, datetime]]:
        """Per client, the latest contact of each kind (reasons, ``explain``, release)."""
        t = self.contact
        out: dict[str, dict[str, datetime]] = defaultdict(dict)
        for within in self.key_filters(client_keys):
            q = select(t.c.client_key, t.c.kind, t.c.at).where(within(t.c.client_key))
            if kinds is not None:
                q = q.where(t.c.kind.in_(list(kinds)))
            for ck, kind, at in self.conn.execute(q):
                if at is not None:
                    out[ck][kind] = at
        return out

    # -- kept by a future task

    def _kept_conditions(self) -> dict[str, tuple]:
        """What keeps a client (an open task not the connector's, a planned activity, due after now),
        per source table: shared by :meth:`kept_q` and :meth:`kept_records`."""
        now = self.now
        return {
            "activities": (activities.c.completed.is_(False), activities.c.deleted.is_(False), activities.c.own.is_(False),
                           activities.c.deadline > now),
            "tasks": (tasks.c.completed.is_(False), tasks.c.deleted.is_(False), tasks.c.own.is_(False), tasks.c.deadline > now),
        }

    def kept_q(self) -> Any:
        """Subquery ``(client_key)``: clients with an open task (not ours) or planned activity due after now."""
        o, cond = self.owners, self._kept_conditions()
        future = union(
            select(activities.c.owner_key.label("owner_key")).where(*cond["activities"]),
            select(task_owners.c.owner_key).join(tasks, tasks.c.key == task_owners.c.task_key).where(*cond["tasks"]),
        ).subquery("f")
        return select(o.c.client_key).join(future, future.c.owner_key == o.c.owner_key).distinct().subquery("kept")

    def kept(self, client_keys: list[str]) -> set[str]:
        """Which of ``client_keys`` are kept; the kept set is read once per evaluation (one scan of
        the open tasks and activities), then answered from memory."""
        if self._kept is None:
            k = self.kept_q()
            self._kept = {r[0] for r in self.conn.execute(select(k.c.client_key))}
        return self._kept.intersection(client_keys)

    # -- one client's records (``explain``): the same conditions, the records behind the figures

    def owner_keys(self, client_key: str) -> list[str]:
        """Whose records count for the client: itself, its contacts, its deals, linked 1C counterparties."""
        o = self.owners
        return sorted({k for (k,) in self.conn.execute(select(o.c.owner_key).where(o.c.client_key == client_key))})

    def _phones(self, owners: list[str]) -> list[str]:
        return sorted({p for (p,) in self.conn.execute(select(client_phones.c.phone).where(client_phones.c.client_key.in_(owners)))})

    def contact_records(self, client_key: str, kinds: Iterable[str] | None = None) -> dict[str, Record]:
        """Per kind, the record behind the client's latest contact of that kind (the time
        :meth:`contacts_of` reports), found with the very conditions the derivation uses."""
        owners = self.owner_keys(client_key) or [client_key]
        cond = _contact_conditions(self.now)
        wanted = list(kinds) if kinds is not None else list(CONTACT_KINDS)
        found: list[Record] = []
        a = activities
        for kind in wanted:
            r = self.conn.execute(select(a.c.key, a.c.happened_at, a.c.subject, a.c.direction, a.c.duration_s)
                                  .where(a.c.owner_key.in_(owners), a.c.kind == kind, *cond["activities"])
                                  .order_by(a.c.happened_at.desc(), a.c.key).limit(1)).first()
            if r is not None:
                found.append(Record(kind, aware(r.happened_at), r.key, r.subject or "", direction=r.direction, seconds=r.duration_s))
        if "task" in wanted:
            r = self.conn.execute(select(tasks.c.key, tasks.c.closed_at, tasks.c.title).join(task_owners, task_owners.c.task_key == tasks.c.key)
                                  .where(task_owners.c.owner_key.in_(owners), *cond["tasks"])
                                  .order_by(tasks.c.closed_at.desc(), tasks.c.key).limit(1)).first()
            if r is not None:
                found.append(Record("task", aware(r.closed_at), r.key, r.title or ""))
        if "deal" in wanted:
            r = self.conn.execute(select(deals.c.key, deals.c.created_at, deals.c.title, deals.c.amount, deals.c.currency)
                                  .where(deals.c.key.in_(owners), *cond["deals"])
                                  .order_by(deals.c.created_at.desc(), deals.c.key).limit(1)).first()
            if r is not None:
                found.append(Record("deal", aware(r.created_at), r.key, r.title or "", amount=r.amount, currency=r.currency))
        if "invoice" in wanted:
            r = self.conn.execute(select(invoices.c.key, invoices.c.issued_at, invoices.c.title, invoices.c.amount, invoices.c.currency)
                                  .where(invoices.c.client_key.in_(owners), *cond["invoices"])
                                  .order_by(invoices.c.issued_at.desc(), invoices.c.key).limit(1)).first()
            if r is not None:
                found.append(Record("invoice", aware(r.issued_at), r.key, r.title or "", amount=r.amount, currency=r.currency))
        if "document" in wanted:
            r = self.conn.execute(select(documents.c.key, documents.c.date, documents.c.doc_type, documents.c.number, documents.c.amount,
                                         documents.c.currency)
                                  .where(documents.c.client_key.in_(owners), *cond["documents"])
                                  .order_by(documents.c.date.desc(), documents.c.key).limit(1)).first()
            if r is not None:
                found.append(Record("document", aware(r.date), r.key, f"{r.doc_type} {r.number or ''}".strip(), amount=r.amount,
                                    currency=r.currency))
        phones = self._phones(owners) if "call" in wanted else []
        if phones:
            r = self.conn.execute(select(calls.c.key, calls.c.started_at, calls.c.phone_e164, calls.c.direction, calls.c.talk_s)
                                  .where(calls.c.phone_e164.in_(phones), *cond["calls"])
                                  .order_by(calls.c.started_at.desc(), calls.c.key).limit(1)).first()
            if r is not None:
                found.append(Record("call", aware(r.started_at), r.key, phone=r.phone_e164, direction=r.direction, seconds=r.talk_s))
        latest: dict[str, Record] = {}
        for x in found:  # a CRM call activity and a PBX call are both kind "call": the later one counts
            if x.kind not in latest or (x.at is not None and latest[x.kind].at is not None and x.at > latest[x.kind].at):
                latest[x.kind] = x
        return dict(sorted(latest.items(), key=lambda kv: kv[1].at or _EPOCH, reverse=True))

    def kept_records(self, client_key: str) -> list[Record]:
        """The open tasks and planned activities that keep the client (the conditions of :meth:`kept_q`)."""
        owners = self.owner_keys(client_key) or [client_key]
        cond = self._kept_conditions()
        out = [Record("task", aware(r.deadline), r.key, r.title or "", open=True)
               for r in self.conn.execute(select(tasks.c.key, tasks.c.deadline, tasks.c.title)
                                          .join(task_owners, task_owners.c.task_key == tasks.c.key)
                                          .where(task_owners.c.owner_key.in_(owners), *cond["tasks"]).distinct())]
        out += [Record(r.kind, aware(r.deadline), r.key, r.subject or "", open=True)
                for r in self.conn.execute(select(activities.c.key, activities.c.kind, activities.c.deadline, activities.c.subject)
                                           .where(activities.c.owner_key.in_(owners), *cond["activities"]).distinct())]
        return sorted(out, key=lambda x: (x.at or _EPOCH, x.key))

    def own_records(self, client_key: str, limit: int = 20) -> list[Record]:
        """The connector's own records on the client (its tasks, their CRM mirrors, its comments):
        never evidence, listed so that nobody wonders why a closed reminder did not count."""
        owners = self.owner_keys(client_key) or [client_key]
        out = [Record("task", _first(r.closed_at, r.created_at), r.key, r.title or "", open=not r.completed)
               for r in self.conn.execute(select(tasks.c.key, tasks.c.title, tasks.c.completed, tasks.c.closed_at, tasks.c.created_at)
                                          .join(task_owners, task_owners.c.task_key == tasks.c.key)
                                          .where(task_owners.c.owner_key.in_(owners), tasks.c.own.is_(True), tasks.c.deleted.is_(False))
                                          .distinct())]
        out += [Record(r.kind, _first(r.happened_at, r.deadline), r.key, r.subject or "", open=not r.completed)
                for r in self.conn.execute(select(activities.c.key, activities.c.kind, activities.c.subject, activities.c.completed,
                                                  activities.c.happened_at, activities.c.deadline)
                                           .where(activities.c.owner_key.in_(owners), activities.c.own.is_(True),
                                                  activities.c.deleted.is_(False)).distinct())]
        out.sort(key=lambda x: (x.at or _EPOCH, x.key), reverse=True)
        return out[:limit]

    # -- purchases

    def _purchase_rows(self, owners: Any | None = None) -> Any:
        """``(owner_key, at, amount, what, key, system, currency)`` of every purchase up to now (see :func:`_purchase_rows`)."""
        return _purchase_rows(self.now, owners)

    def _purchase_join(self, cols: list, owners: Any | None = None) -> Any:
        return _purchase_join(self.owners, self.now, cols, owners)

    def purchase_summary_q(self) -> Any:
        """Subquery ``(client_key, n, last)``: purchases and the latest one per client."""
        if self.buys is not None:
            b = self.buys
            return (select(b.c.client_key, func.count(b.c.key.distinct()).label("n"), func.max(b.c.at).label("last"))
                    .where(b.c.at <= self.now).group_by(b.c.client_key).subquery("ps"))
        j = self._purchase_join(["at", "key"]).subquery("pj")
        return (select(j.c.client_key, func.count(j.c.key.distinct()).label("n"), func.max(j.c.at).label("last"))
                .group_by(j.c.client_key).subquery("ps"))

    def purchases(self, client_keys: list[str]) -> dict[str, list[Purchase]]:
        out: dict[str, list[Purchase]] = defaultdict(list)
        o = self.owners
        # the candidates' owners go into each source's index (a few in IN lists, many through the keyset:
        # 10k of 100k clients with 300k purchases, 0.3 s against 1.8 s for a pass over every purchase)
        wanted = set(client_keys)
        seen: set[tuple[str, str]] = set()
        for within in self.key_filters(client_keys):
            if self.buys is not None:
                b = self.buys
                rows = self.conn.execute(select(b.c.client_key, b.c.at, b.c.amount, b.c.what, b.c.key)
                                         .where(within(b.c.client_key), b.c.at <= self.now))
            else:
                base = self._purchase_join(["at", "amount", "what", "key"], select(o.c.owner_key).where(within(o.c.client_key))).subquery("pj")
                rows = self.conn.execute(select(base))
            for ck, at, amount, what, key in rows:
                if ck not in wanted or at is None or (ck, key) in seen:  # an owner shared with a client not asked for
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _first(*values: Any) -> datetime | None:
    v = next((x for x in values if x is not None), None)
    return aware(v) if v is not None else None


def aware(v: Any) -> datetime:
    """SQL aggregates bypass the column type on SQLite: parse and mark as UTC."""
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def _chunks(items: list[str], n: int = 500) -> list[list[str]]:
    return [items[i : i + n] for i in range(0, len(items), n)]
