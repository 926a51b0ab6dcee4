"""The local store: SQLAlchemy Core tables, numbered migrations, batch upserts.

SQLite by default, PostgreSQL by URL. Each source batch (records + deletions + cursor) is written
in one transaction, so a cursor never runs ahead of its data. Datetimes are stored as naive UTC
and come back timezone-aware.

A SQLite store is private: created 0600 (its -wal and -shm files inherit that), in a 0700 folder
when the connector creates the folder. Values in the ``kv`` table (rotated OAuth tokens) are
encrypted with Fernet when ``CONNECTOR_SECRET_KEY`` is set; a value written before the key was set
is still read, and encrypted on its next write. The store URL is only ever shown redacted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields as dc_fields
from datetime import UTC as UTC_TZ
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError, StatementError

from connector import domain as d
from connector.errors import StoreError
from connector.phones import normalize
from connector.redact import add_secret, redact, redact_url, url_password


class UTC(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; naive UTC on disk."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise StoreError(f"naive datetime {value!r} reached the store")
        return value.astimezone(UTC_TZ).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC_TZ) if value is not None else None

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        # SQLite keeps the text SQLAlchemy wrote (``2026-11-23 09:00:00.000000``): parsed and made aware in
        # one call, where the generic path took three per value (a plan reads hundreds of thousands)
        parse, utc = datetime.fromisoformat, UTC_TZ

        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            return (value if isinstance(value, datetime) else parse(value)).replace(tzinfo=utc)

        return process


class JSONText(TypeDecorator):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        if value is None:
            return None
        if value == "[]":  # most clients' e-mails and fields: a plan reads tens of thousands
            return []
        if value == "{}":
            return {}
        return json.loads(value)


metadata = MetaData()

K = lambda name="key": Column(name, String(200), primary_key=True)  # noqa: E731


def _common() -> list[Column]:
    return [Column("system", String(20), nullable=False), Column("source_id", String(100), nullable=False),
            Column("deleted", Boolean, nullable=False, default=False)]


meta = Table("meta", metadata, Column("name", String(50), primary_key=True), Column("value", Text))
kv = Table("kv", metadata, Column("name", String(100), primary_key=True), Column("value", Text))

managers = Table(
    "managers", metadata, K(), *_common(),
    Column("name", String(200)), Column("email", String(200), index=True), Column("active", Boolean),
    Column("departments", JSONText), Column("phone", String(50)), Column("extension", String(50)),
)
clients = Table(
    "clients", metadata, K(), *_common(),
    Column("kind", String(10), nullable=False), Column("title", String(500)), Column("responsible_key", String(200), index=True),
    Column("company_key", String(200), index=True), Column("first_name", String(200)), Column("phones", JSONText),
    Column("emails", JSONText), Column("birthday", Date), Column("tax_id", String(40), index=True), Column("guid", String(64), index=True),
    Column("segment", String(100)), Column("fields", JSONText), Column("created_at", UTC), Column("modified_at", UTC),
)
client_phones = Table(
    "client_phones", metadata, Column("phone", String(30), primary_key=True), Column("client_key", String(200), primary_key=True),
    Index("ix_client_phones_client", "client_key"),  # a client's numbers (its calls), not only a number's clients
)
deals = Table(
    "deals", metadata, K(), *_common(),
    Column("title", String(500)), Column("stage_id", String(50)), Column("outcome", String(10)), Column("amount", Float),
    Column("currency", String(10)), Column("responsible_key", String(200)), Column("created_at", UTC), Column("closed_at", UTC),
    Column("modified_at", UTC), Column("fields", JSONText),
)
deal_clients = Table(
    "deal_clients", metadata, Column("deal_key", String(200), primary_key=True), Column("client_key", String(200), primary_key=True),
    Index("ix_deal_clients_client", "client_key"),
)
invoices = Table(
    "invoices", metadata, K(), *_common(),
    Column("title", String(500)), Column("client_key", String(200), index=True), Column("number", String(50)),
    Column("amount", Float), Column("currency", String(10)), Column("stage_id", String(50)), Column("outcome", String(10)),
    Column("issued_at", UTC), Column("due_date", Date), Column("paid_at", UTC), Column("responsible_key", String(200)),
    Column("deal_key", String(200)), Column("modified_at", UTC), Column("fields", JSONText),
    # an invoice the connector issued (recurring): its marker in the comments, or the journal's record of it; never evidence
    Column("marker", String(20), index=True), Column("own", Boolean, nullable=False, default=False),
)
payments = Table(
    "payments", metadata, K(), *_common(),
    Column("client_key", String(200), index=True), Column("amount", Float), Column("currency", String(10)),
    Column("paid_at", UTC), Column("invoice_key", String(200), index=True),
)
activities = Table(
    "activities", metadata, Column("key", String(200), primary_key=True), Column("owner_key", String(200), primary_key=True),
    *_common(), Column("kind", String(20)), Column("completed", Boolean), Column("happened_at", UTC), Column("deadline", UTC),
    Column("responsible_key", String(200)), Column("direction", String(5)), Column("subject", String(500)), Column("duration_s", Integer),
    # the connector's own footprint: a marker in its text, or the mirror of a task the connector created
    Column("marker", String(20)), Column("ref_key", String(200)), Column("own", Boolean, nullable=False, default=False),
    # covers the contact query: latest completed activity per (owner, kind) that is not ours, an index-only scan
    Index("ix_activities_evidence", "owner_key", "kind", "completed", "deleted", "own", "happened_at"),
    Index("ix_activities_key", "key"),
    Index("ix_activities_marker", "marker"),
    Index("ix_activities_ref", "ref_key"),
    Index("ix_activities_deadline", "deadline"),  # open activities with a future deadline keep a client (few of millions)
)
tasks = Table(
    "tasks", metadata, K(), *_common(),
    Column("title", String(500)), Column("responsible_key", String(200)), Column("deadline", UTC), Column("completed", Boolean),
    Column("created_at", UTC), Column("closed_at", UTC), Column("changed_at", UTC), Column("description", Text),
    Column("marker", String(20), index=True), Column("own", Boolean, nullable=False, default=False),
    Index("ix_tasks_deadline", "deadline"),
)
task_owners = Table(
    "task_owners", metadata, Column("task_key", String(200), primary_key=True), Column("owner_key", String(200), primary_key=True),
    Index("ix_task_owners_owner", "owner_key"),
)
documents = Table(
    "documents", metadata, K(), *_common(),
    Column("doc_type", String(10)), Column("date", UTC), Column("client_key", String(200), index=True), Column("number", String(50)),
    Column("amount", Float), Column("currency", String(10)), Column("posted", Boolean), Column("responsible_key", String(200)),
    Column("basis_key", String(200)), Column("due_date", Date), Column("paid", Boolean), Column("status", String(100)),
)
debts = Table(
    "debts", metadata, K(), Column("system", String(20)), Column("deleted", Boolean, default=False),
    Column("client_key", String(200), index=True), Column("amount", Float), Column("currency", String(10)), Column("as_of", UTC),
    Column("overdue_amount", Float), Column("overdue_since", Date), Column("documents", JSONText),
)
# What was sold, line by line: a deal's product rows, a 1C document's goods (replaced whole per owner)
product_lines = Table(
    "product_lines", metadata, Column("owner_key", String(200), primary_key=True), Column("line_no", Integer, primary_key=True),
    Column("system", String(20)), Column("product_id", String(100), index=True), Column("article", String(100)),
    Column("name", String(500)), Column("group_name", String(200)), Column("quantity", Float), Column("amount", Float),
)
calls = Table(
    "calls", metadata, K(), *_common(),
    Column("direction", String(5)), Column("phone", String(50)), Column("phone_e164", String(30), index=True),
    Column("started_at", UTC, index=True), Column("wait_s", Integer), Column("talk_s", Integer), Column("disposition", String(20)),
    Column("answered", Boolean), Column("internal_number", String(100)), Column("manager_key", String(200)), Column("final", Boolean),
)
links = Table(
    "links", metadata, Column("foreign_key", String(200), primary_key=True), Column("client_key", String(200), index=True),
    Column("method", String(20)), Column("candidates", JSONText), Column("updated_at", UTC),
)
cursors = Table(
    "cursors", metadata, Column("system", String(20), primary_key=True), Column("stream", String(50), primary_key=True),
    Column("cursor", Text), Column("rows", Integer, default=0), Column("updated_at", UTC),
)
runs = Table(
    "runs", metadata, Column("id", Integer, primary_key=True, autoincrement=True), Column("command", String(20)),
    Column("started_at", UTC), Column("finished_at", UTC), Column("clock", UTC), Column("status", String(20)), Column("summary", JSONText),
)
journal = Table(
    "journal", metadata, Column("key", String(300), primary_key=True), Column("rule", String(100), index=True),
    Column("type", String(20)), Column("system", String(20)), Column("subject_key", String(200), index=True),
    Column("client_key", String(200), index=True), Column("payload", JSONText), Column("reason", Text), Column("mode", String(10)),
    Column("state", String(20), index=True), Column("attempts", Integer, default=0), Column("next_attempt_at", UTC),
    Column("not_before", UTC), Column("remote_id", String(100)), Column("detail", Text), Column("created_at", UTC),
    Column("updated_at", UTC), Column("done_at", UTC), Column("run_id", Integer), Column("episode", String(200), index=True),
    # who claimed an in_flight row (lease owner + claim id), the store key of what the action created, the keys it
    # waits for, and whether the last failure may have been applied remotely (then a retry looks for the marker first)
    Column("holder", String(120)), Column("remote_key", String(200), index=True), Column("depends_on", JSONText),
    Column("ambiguous", Boolean, nullable=False, default=False),
    Index("ix_journal_rule_subject", "rule", "subject_key"),
)
# Derived evidence (connector.evidence rebuilds them after a sync that changed anything): whose each
# record owner is, and each client's latest contact of each kind.
ev_owner = Table(
    "ev_owner", metadata, Column("owner_key", String(200), primary_key=True), Column("client_key", String(200), primary_key=True),
    Index("ix_ev_owner_client", "client_key"),
)
ev_contact = Table(
    "ev_contact", metadata, Column("client_key", String(200), primary_key=True), Column("kind", String(20), primary_key=True),
    Column("at", UTC),
)
# each client's purchases per local day and currency (one purchase a day; a day in two systems once), derived
# when an rfm rule needs them: the rule's aggregates read this instead of every purchase
ev_purchase = Table(
    "ev_purchase", metadata, Column("client_key", String(200), primary_key=True), Column("day", String(10), primary_key=True),
    Column("currency", String(10), primary_key=True), Column("amount", Float), Column("at", UTC),
    Column("first", Integer),  # 1 on the day's first currency: counts the day once
)
# every client's purchases as the rules count them (whose, which kind of client, paid or won), derived
# with ev_owner: the lost rule's candidates are one aggregate over it, not a join of every won deal
ev_buy = Table(
    "ev_buy", metadata, Column("client_key", String(200), nullable=False), Column("key", String(200), nullable=False),
    Column("at", UTC), Column("amount", Float), Column("what", String(40)), Column("system", String(20)), Column("currency", String(10)),
    Index("ix_ev_buy_client", "client_key", "at"),
)
# owners whose records changed since the evidence was derived (their clients are derived again, not every client)
ev_stale = Table("ev_stale", metadata, Column("owner_key", String(200), primary_key=True))
# the rfm rule's per-client aggregate over ev_purchase for one window, base currency and rates (derived with it)
ev_rfm = Table(
    "ev_rfm", metadata, Column("client_key", String(200), primary_key=True), Column("last", String(10)), Column("n", Integer),
    Column("m", Float), Column("unpriced", Integer),
)
lease = Table(
    "lease", metadata, Column("name", String(50), primary_key=True), Column("owner", String(120), nullable=False),
    Column("pid", Integer), Column("host", String(200)), Column("acquired_at", UTC), Column("heartbeat_at", UTC),
    Column("expires_at", UTC),
)
episodes = Table(
    "episodes", metadata, Column("episode", String(300), primary_key=True), Column("rule", String(100), index=True),
    Column("subject_key", String(200)), Column("client_key", String(200), index=True), Column("opened_at", UTC),
    Column("closed_at", UTC), Column("close_reason", Text), Column("data", JSONText),
)
rule_state = Table(
    "rule_state", metadata, Column("rule", String(100), primary_key=True), Column("subject_key", String(200), primary_key=True),
    Column("state", String(20)), Column("since", UTC), Column("data", JSONText), Column("updated_at", UTC),
)
# Records a remote system reported changed (Bitrix24 application events): the next sync reads them first.
dirty = Table(
    "dirty", metadata, Column("system", String(20), primary_key=True), Column("kind", String(20), primary_key=True),
    Column("source_id", String(100), primary_key=True), Column("at", UTC, nullable=False),
)

ENTITY_TABLE: dict[type, Table] = {
    d.Manager: managers, d.Client: clients, d.Deal: deals, d.Invoice: invoices, d.Payment: payments,
    d.Task: tasks, d.Document: documents, d.Debt: debts, d.Call: calls,
}
KIND_TABLES = {  # record kind (from the key) -> table, for sweeps and deletions
    "user": managers, "employee": managers, "company": clients, "contact": clients, "counterparty": clients, "deal": deals,
    "invoice": invoices, "payment": payments, "activity": activities, "comment": activities, "task": tasks,
    "document": documents, "debt": debts, "call": calls,
}


# ---------------------------------------------------------------- migrations

def _m1(conn: Connection) -> None:
    """The initial schema (create_all skips what exists, so it is idempotent)."""
    metadata.create_all(conn)


def _m2(conn: Connection) -> None:
    """Due-action lookups of the executor: journal by (state, not_before)."""
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_journal_state_due ON journal (state, not_before)"))


def _add_column(conn: Connection, table: str, column: str, ddl: str) -> None:
    if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))


def _m3(conn: Connection) -> None:
    """Trust: the runner lease, CAS journal columns, own-footprint markers, episodes, evidence index."""
    boolean = "BOOLEAN NOT NULL DEFAULT FALSE" if conn.dialect.name == "postgresql" else "BOOLEAN NOT NULL DEFAULT 0"
    for col, ddl in [("marker", "VARCHAR(20)"), ("ref_key", "VARCHAR(200)"), ("own", boolean)]:
        _add_column(conn, "activities", col, ddl)
    for col, ddl in [("marker", "VARCHAR(20)"), ("own", boolean)]:
        _add_column(conn, "tasks", col, ddl)
    for col, ddl in [("holder", "VARCHAR(120)"), ("remote_key", "VARCHAR(200)"), ("depends_on", "TEXT"), ("ambiguous", boolean)]:
        _add_column(conn, "journal", col, ddl)
    for t in (lease, episodes, ev_owner, ev_contact):
        t.create(conn, checkfirst=True)
    conn.execute(text("DROP INDEX IF EXISTS ix_activities_contact"))
    for ix in [*activities.indexes, *tasks.indexes, *journal.indexes, *episodes.indexes, *ev_owner.indexes]:
        ix.create(conn, checkfirst=True)


def _m4(conn: Connection) -> None:
    """Debts carry the documents they are made of (1C ageing: number, date, amount, unpaid, due)."""
    _add_column(conn, "debts", "documents", "TEXT")


def _m5(conn: Connection) -> None:
    """Payments found by what they pay: a 1C order's payments (documents.basis_key) in one index seek."""
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_documents_basis ON documents (basis_key)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_deal_clients_deal ON deal_clients (deal_key)"))


def _m6(conn: Connection) -> None:
    """Records a remote system reported changed (application events), read by the next sync."""
    dirty.create(conn, checkfirst=True)




def _m7(conn: Connection) -> None:
    """Repeat sales: product lines, custom fields of deals, the own footprint of invoices the connector issued, and
    the derived purchase days of the rfm rule."""
    boolean = "BOOLEAN NOT NULL DEFAULT FALSE" if conn.dialect.name == "postgresql" else "BOOLEAN NOT NULL DEFAULT 0"
    _add_column(conn, "deals", "fields", "TEXT")
    _add_column(conn, "invoices", "marker", "VARCHAR(20)")
    _add_column(conn, "invoices", "own", boolean)
    product_lines.create(conn, checkfirst=True)
    ev_purchase.create(conn, checkfirst=True)
    ev_rfm.create(conn, checkfirst=True)
    for ix in [*product_lines.indexes, *invoices.indexes]:
        ix.create(conn, checkfirst=True)


def _m8(conn: Connection) -> None:
    """1C <-> CRM sync: invoice fields a rule reads (the 1C number, the 1C GUID), a 1C order's own status."""
    _add_column(conn, "invoices", "fields", "TEXT")
    _add_column(conn, "documents", "status", "VARCHAR(100)")


def _m9(conn: Connection) -> None:
    """Future deadlines by index: "kept by an open task" read 2M activities to find a few thousand."""
    for ix in [*activities.indexes, *tasks.indexes]:
        ix.create(conn, checkfirst=True)


def _m10(conn: Connection) -> None:
    """Purchases derived per client (``ev_buy``); the next evaluation derives them (purchases marked dirty)."""
    ev_buy.create(conn, checkfirst=True)
    conn.execute(kv.delete().where(kv.c.name == Store.PURCHASES_DIRTY))


def _m11(conn: Connection) -> None:
    """The owners a sync touched (``ev_stale``), so the evidence of their clients alone is derived again."""
    ev_stale.create(conn, checkfirst=True)


def _m12(conn: Connection) -> None:
    """A client's phone numbers by index: the calls of a few thousand clients were found by trying
    every call against every one of them (28 s for 1,000 companies of a 100k portal)."""
    for ix in client_phones.indexes:
        ix.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[Connection], None]] = [_m1, _m2, _m3, _m4, _m5, _m6, _m7, _m8, _m9, _m10, _m11, _m12]
MIGRATION_LOCK_ID = 0x636E6D67  # "cnmg": the advisory lock that serialises migrations on PostgreSQL
SCHEMA_VERSION = len(MIGRATIONS)


SECRET_KEY_ENV = "CONNECTOR_SECRET_KEY"
_SEALED = "fernet:"


class _Sealer:
    """Fernet for kv values; ``CONNECTOR_SECRET_KEY`` may list several keys (new first) to rotate."""

    def __init__(self, keys: str | None):
        self.fernet = None
        if not keys:
            return
        from cryptography.fernet import Fernet, MultiFernet

        add_secret(keys)
        try:
            self.fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()])
        except ValueError:
            raise StoreError(f"{SECRET_KEY_ENV} is not a Fernet key (make one with: python3 -c 'from cryptography.fernet "
                             f"import Fernet; print(Fernet.generate_key().decode())')") from None

    def seal(self, value: str) -> str:
        return value if self.fernet is None else _SEALED + self.fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def open(self, name: str, value: str) -> str:
        if not value.startswith(_SEALED):
            return value  # written before the key was set: re-encrypted on its next write
        if self.fernet is None:
            raise StoreError(f"store value {name!r} is encrypted, but {SECRET_KEY_ENV} is not set")
        from cryptography.fernet import InvalidToken

        try:
            return self.fernet.decrypt(value[len(_SEALED):].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise StoreError(f"cannot decrypt store value {name!r}: {SECRET_KEY_ENV} is not the key it was written "
                             f"with") from None


def _private_sqlite(url: str) -> None:
    """A new SQLite file is created 0600 before SQLite opens it (an existing one is tightened)."""
    from pathlib import Path

    from connector.private import create_private, tighten

    try:
        u = make_url(url)
    except Exception:  # create_engine reports it  # noqa: BLE001
        return
    db = u.database or ""
    if u.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:") or u.query.get("uri"):
        return
    path = Path(db)
    create_private(path)
    for suffix in ("-wal", "-shm", "-journal"):
        tighten(Path(str(path) + suffix))


class Store:
    """Thin, explicit SQL helpers; one instance per process."""

    def __init__(self, url: str, *, phone_region: str = "UA"):
        self.url = url
        self.phone_region = phone_region
        add_secret(url_password(url))
        self._sealer = _Sealer(os.environ.get(SECRET_KEY_ENV))
        try:
            _private_sqlite(url)
            self.engine: Engine = create_engine(url, future=True)
        except Exception as e:  # bad URL, missing driver, a folder we may not create  # noqa: BLE001
            raise StoreError(f"cannot open store {redact_url(url)}: {redact(str(e).replace(url, redact_url(url)))}") from None
        if self.engine.dialect.name == "sqlite":
            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _rec):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        self.migrate()

    # -- schema

    def migrate(self) -> int:
        """Bring the schema to this release's version, in place; refuse a newer store.

        Two processes starting on one new store must not both create it: migrations run under a
        lock (a file lock beside a SQLite file, an advisory lock on PostgreSQL)."""
        try:
            with self._migration_lock(), self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
                has_meta = inspect(conn).has_table("meta")
                version = 0
                if has_meta:
                    row = conn.execute(select(meta.c.value).where(meta.c.name == "schema_version")).first()
                    version = int(row[0]) if row else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(f"store schema v{version} is newer than this release (v{SCHEMA_VERSION}); upgrade the connector")
                for i in range(version, SCHEMA_VERSION):
                    MIGRATIONS[i](conn)
                    self._upsert(conn, meta, [{"name": "schema_version", "value": str(i + 1)}], ["name"])
                return SCHEMA_VERSION
        except OperationalError as e:
            raise StoreError(f"store {redact_url(self.url)}: {e.orig}") from None

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        path = self.sqlite_path()
        if path is None:
            yield
            return
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def sqlite_path(self) -> Path | None:
        """The database file of a file-backed SQLite store (None for memory or other engines)."""
        if self.engine.dialect.name != "sqlite":
            return None
        db = self.engine.url.database
        return Path(db).resolve() if db and db != ":memory:" and not db.startswith("file:") else None

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as e:
            raise StoreError(f"store: {e.orig}") from None
        except StatementError as e:
            if isinstance(e.orig, StoreError):
                raise e.orig from None
            raise

    def _upsert(self, conn: Connection, table: Table, rows: list[dict], keys: list[str]) -> None:
        if not rows:
            return
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        cols = [c for c in rows[0] if c not in keys]
        for i in range(0, len(rows), 500):
            chunk = rows[i : i + 500]
            stmt = insert(table).values(chunk)
            if cols:
                stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: getattr(stmt.excluded, c) for c in cols})
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=keys)
            conn.execute(stmt)

    # -- small values

    def kv_get(self, name: str) -> str | None:
        with self.tx() as conn:
            row = conn.execute(select(kv.c.value).where(kv.c.name == name)).first()
        return self._sealer.open(name, row[0]) if row and row[0] is not None else None

    def kv_set(self, name: str, value: str) -> None:
        with self.tx() as conn:
            self._upsert(conn, kv, [{"name": name, "value": self._sealer.seal(value)}], ["name"])

    # -- records reported changed (events), for the next sync

    def mark_dirty(self, system: str, items: Iterable[tuple[str, str]], at: datetime) -> int:
        """``(kind, source_id)`` of ``system`` changed remotely at ``at``; a newer mark replaces an older one."""
        rows = {(str(k), str(i)): {"system": system, "kind": str(k), "source_id": str(i), "at": at} for k, i in items}
        with self.tx() as conn:
            self._upsert(conn, dirty, list(rows.values()), ["system", "kind", "source_id"])
        return len(rows)

    def dirty(self, system: str) -> dict[str, dict[str, datetime]]:
        """Marks of ``system``: kind -> source id -> when it was reported."""
        out: dict[str, dict[str, datetime]] = {}
        with self.tx() as conn:
            for kind, sid, at in conn.execute(select(dirty.c.kind, dirty.c.source_id, dirty.c.at).where(dirty.c.system == system)):
                out.setdefault(kind, {})[sid] = at
        return out

    def clear_dirty(self, system: str, marks: dict[str, dict[str, datetime]]) -> int:
        """Drop the marks a finished sync read; a mark renewed meanwhile (a later event) stays."""
        n = 0
        with self.tx() as conn:
            for kind, ids in marks.items():
                for sid, at in ids.items():
                    n += conn.execute(delete(dirty).where(dirty.c.system == system, dirty.c.kind == kind,
                                                          dirty.c.source_id == sid, dirty.c.at <= at)).rowcount or 0
        return n

    # -- cursors

    def cursor(self, system: str, stream: str) -> str | None:
        with self.tx() as conn:
            row = conn.execute(select(cursors.c.cursor).where(cursors.c.system == system, cursors.c.stream == stream)).first()
            return row[0] if row else None

    def cursors(self) -> list[dict]:
        with self.tx() as conn:
            return [dict(r._mapping) for r in conn.execute(select(cursors).order_by(cursors.c.system, cursors.c.stream))]

    # -- writing batches

    def apply(self, system: str, batch: d.Batch, now: datetime) -> int:
        """Write one batch (records, deletions, sweep, cursor) atomically; returns rows written."""
        with self.tx() as conn:
            touched = [*(r.key for r in batch.records if isinstance(r, self.EVIDENCE_TYPES)), *batch.deleted]
            noted = self._noting(conn, touched)
            n = self._write_records(conn, batch.records)
            for key in batch.deleted:
                self._mark_deleted(conn, key)
            swept = self._apply_sweep(conn, batch.sweep) if batch.sweep is not None else []
            gone = len(swept)
            if n or batch.deleted or gone:
                owners = None if gone > self.STALE_LIMIT else noted([*touched, *swept])
                self.mark_evidence_dirty(conn, purchases=self._touches_purchases(batch.records, batch.deleted, batch.sweep if gone else None),
                                         owners=owners)
            if batch.cursor is not None or n:
                prev = conn.execute(
                    select(cursors.c.rows, cursors.c.cursor).where(cursors.c.system == system, cursors.c.stream == batch.stream)
                ).first()
                self._upsert(conn, cursors, [{
                    "system": system, "stream": batch.stream,
                    "cursor": batch.cursor if batch.cursor is not None else (prev[1] if prev else None),
                    "rows": (prev[0] if prev and prev[0] else 0) + n, "updated_at": now,
                }], ["system", "stream"])
            return n

    def write(self, records: Iterable[d.Record]) -> int:
        """Upsert records outside a source cycle (push receivers, tests)."""
        records = list(records)
        with self.tx() as conn:
            touched = [r.key for r in records if isinstance(r, self.EVIDENCE_TYPES)]
            noted = self._noting(conn, touched)
            n = self._write_records(conn, records)
            if n:
                self.mark_evidence_dirty(conn, purchases=self._touches_purchases(records), owners=noted(touched))
            return n

    EVIDENCE_DIRTY = "evidence.dirty"
    EVIDENCE_FULL = "evidence.full"  # "0": the evidence may be derived for the owners in ev_stale alone; else whole
    STALE_LIMIT = 200_000  # more touched owners than this are not listed: a resync derives everything anyway
    EVIDENCE_TYPES = (d.Activity, d.Task, d.Deal, d.Invoice, d.Payment, d.Document, d.Call, d.Client)  # what evidence is made of

    PURCHASES_DIRTY = "evidence.purchases_dirty"
    PURCHASE_TYPES = (d.Deal, d.Invoice, d.Payment, d.Document, d.Client)  # what purchases and their owners are made of
    PURCHASE_KINDS = frozenset({"deal", "invoice", "payment", "document", "company", "contact", "counterparty"})

    def mark_evidence_dirty(self, conn: Connection, *, purchases: bool = True, owners: Iterable[str] | None = None) -> None:
        """Something evidence is derived from changed: the next evaluation derives it again first.
        ``purchases=False``: nothing purchases are derived from (an activity, a call), so the rfm
        rule's purchase days are kept. ``owners``: the owner keys whose records changed, before and
        after (:meth:`_footprint`), so only their clients are derived again; None: unknown, all of them."""
        rows = [{"name": self.EVIDENCE_DIRTY, "value": "1"}]
        if purchases:
            rows.append({"name": self.PURCHASES_DIRTY, "value": "1"})
        stale = sorted({o for o in owners if o}) if owners is not None else None
        if stale:
            self._upsert(conn, ev_stale, [{"owner_key": o} for o in stale], ["owner_key"])
        if stale is None or (stale and conn.execute(select(func.count()).select_from(ev_stale)).scalar_one() > self.STALE_LIMIT):
            rows.append({"name": self.EVIDENCE_FULL, "value": "1"})  # a resync: every client anyway, no list kept
            conn.execute(ev_stale.delete())
        self._upsert(conn, kv, rows, ["name"])

    def _noting(self, conn: Connection, keys: list[str]) -> Callable[[list[str]], set[str] | None]:
        """The owners of ``keys`` before a write; the returned call adds those of the keys after it
        (None while a whole derivation is pending anyway, as after a first sync: nothing to note)."""
        if self._full_pending(conn):
            return lambda after: None
        before = self._footprint(conn, keys) if keys else set()
        return lambda after: before | self._footprint(conn, after)

    def _full_pending(self, conn: Connection) -> bool:
        """The evidence is to be derived whole anyway (or has never been): no owner needs noting."""
        return conn.execute(select(kv.c.value).where(kv.c.name == self.EVIDENCE_FULL)).scalar() != "0"

    def _footprint(self, conn: Connection, keys: Iterable[str]) -> set[str]:
        """The owners whose evidence the records ``keys`` are part of, as the store holds them now (asked
        before and after a write: an activity moved to another company touches both): an activity's
        and a task's owners, a deal and its clients, an invoice's, a payment's and a document's client
        (a payment's invoice or basis document too), the clients holding a call's number, a client and
        its company."""
        by_kind: dict[str, list[str]] = {}
        for k in keys:
            by_kind.setdefault(d.split_key(k)[1], []).append(k)
        out: set[str] = set()

        def ask(ks: list[str], query: Callable[[list[str]], Any]) -> None:
            for i in range(0, len(ks), 500):
                out.update(r[0] for r in conn.execute(query(ks[i : i + 500])) if r[0])

        pay_inv = invoices.alias("pay_inv")
        basis = documents.alias("basis")
        ask(by_kind.get("activity", []) + by_kind.get("comment", []),
            lambda c: select(activities.c.owner_key).where(activities.c.key.in_(c)))
        ask(by_kind.get("task", []), lambda c: select(task_owners.c.owner_key).where(task_owners.c.task_key.in_(c)))
        out.update(by_kind.get("deal", []))
        ask(by_kind.get("deal", []), lambda c: select(deal_clients.c.client_key).where(deal_clients.c.deal_key.in_(c)))
        ask(by_kind.get("invoice", []), lambda c: select(invoices.c.client_key).where(invoices.c.key.in_(c)))
        ask(by_kind.get("payment", []), lambda c: select(payments.c.client_key).where(payments.c.key.in_(c)))
        ask(by_kind.get("payment", []), lambda c: select(pay_inv.c.client_key).join(payments, payments.c.invoice_key == pay_inv.c.key)
            .where(payments.c.key.in_(c)))
        ask(by_kind.get("document", []), lambda c: select(documents.c.client_key).where(documents.c.key.in_(c)))
        ask(by_kind.get("document", []), lambda c: select(basis.c.client_key).join(documents, documents.c.basis_key == basis.c.key)
            .where(documents.c.key.in_(c)))
        ask(by_kind.get("call", []), lambda c: select(client_phones.c.client_key).join(calls, calls.c.phone_e164 == client_phones.c.phone)
            .where(calls.c.key.in_(c)))
        people = by_kind.get("company", []) + by_kind.get("contact", []) + by_kind.get("counterparty", [])
        out.update(people)
        ask(people, lambda c: select(clients.c.company_key).where(clients.c.key.in_(c)))
        return out

    def _touches_purchases(self, records: list[d.Record], deleted: Iterable[str] = (), sweep: d.Sweep | None = None) -> bool:
        return (any(isinstance(r, self.PURCHASE_TYPES) for r in records) or any(d.split_key(k)[1] in self.PURCHASE_KINDS for k in deleted)
                or (sweep is not None and sweep.kind in self.PURCHASE_KINDS))

    def _write_records(self, conn: Connection, records: list[d.Record]) -> int:
        by_type: dict[type, list] = {}
        for r in records:
            by_type.setdefault(type(r), []).append(r)
        for typ, items in by_type.items():
            if typ is d.Activity:
                self._write_activities(conn, items)
            elif typ is d.Client:
                self._write_clients(conn, items)
            elif typ is d.Deal:
                self._write_deals(conn, items)
            elif typ is d.Task:
                self._write_tasks(conn, items)
            elif typ is d.Invoice:
                self._write_invoices(conn, items)
            elif typ is d.ProductLines:
                self._write_product_lines(conn, items)
            elif typ is d.Call:
                rows = []
                for c in items:
                    row = _row(c)
                    row["phone_e164"] = normalize(c.phone, self.phone_region)
                    rows.append(row)
                self._upsert(conn, calls, rows, ["key"])
            else:
                table = ENTITY_TABLE[typ]
                self._upsert(conn, table, [_row(r) for r in items], ["key"])
        return len(records)

    def _write_clients(self, conn: Connection, items: list[d.Client]) -> None:
        self._upsert(conn, clients, [_row(c) for c in items], ["key"])
        keys = [c.key for c in items]
        for i in range(0, len(keys), 500):
            conn.execute(delete(client_phones).where(client_phones.c.client_key.in_(keys[i : i + 500])))
        phone_rows = {}
        for c in items:
            for p in c.phones:
                e = normalize(p, self.phone_region)
                if e:
                    phone_rows[(e, c.key)] = {"phone": e, "client_key": c.key}
        self._upsert(conn, client_phones, list(phone_rows.values()), ["phone", "client_key"])

    def _write_deals(self, conn: Connection, items: list[d.Deal]) -> None:
        self._upsert(conn, deals, [_row(x, skip=("client_keys",)) for x in items], ["key"])
        keys = [x.key for x in items]
        for i in range(0, len(keys), 500):
            conn.execute(delete(deal_clients).where(deal_clients.c.deal_key.in_(keys[i : i + 500])))
        self._upsert(conn, deal_clients, [{"deal_key": x.key, "client_key": c} for x in items for c in set(x.client_keys)],
                     ["deal_key", "client_key"])

    def _write_tasks(self, conn: Connection, items: list[d.Task]) -> None:
        rows = [_marked(_row(x, skip=("owner_keys",)), x.description) for x in items]
        self._upsert(conn, tasks, rows, ["key"])
        keys = [x.key for x in items]
        for i in range(0, len(keys), 500):
            conn.execute(delete(task_owners).where(task_owners.c.task_key.in_(keys[i : i + 500])))
        self._upsert(conn, task_owners, [{"task_key": x.key, "owner_key": o} for x in items for o in set(x.owner_keys)],
                     ["task_key", "owner_key"])

    def _write_invoices(self, conn: Connection, items: list[d.Invoice]) -> None:
        rows = [_marked(_row(x, skip=("text",)), x.text) for x in items]
        self._upsert(conn, invoices, rows, ["key"])

    def _write_product_lines(self, conn: Connection, items: list[d.ProductLines]) -> None:
        """Each owner's lines are replaced whole: a line removed at the source disappears here."""
        keys = list(dict.fromkeys(x.key for x in items))
        for i in range(0, len(keys), 500):
            conn.execute(delete(product_lines).where(product_lines.c.owner_key.in_(keys[i : i + 500])))
        rows = {(x.key, ln.line_no): {"owner_key": x.key, "line_no": ln.line_no, "system": x.system, "product_id": ln.product_id,
                                      "article": ln.article, "name": ln.name, "group_name": ln.group, "quantity": ln.quantity,
                                      "amount": ln.amount}
                for x in items for ln in x.lines}
        values = list(rows.values())
        for i in range(0, len(values), 500):
            conn.execute(product_lines.insert(), values[i : i + 500])

    def _write_activities(self, conn: Connection, items: list[d.Activity]) -> None:
        keys = [a.key for a in items]
        for i in range(0, len(keys), 500):
            conn.execute(delete(activities).where(activities.c.key.in_(keys[i : i + 500])))
        rows = []
        for a in items:
            base = _marked(_row(a, skip=("owner_keys", "text")), a.text, a.subject)
            for owner in set(a.owner_keys) or {""}:
                rows.append({**base, "owner_key": owner})
        if rows:
            for i in range(0, len(rows), 500):
                conn.execute(activities.insert(), rows[i : i + 500])

    def _mark_deleted(self, conn: Connection, key: str) -> None:
        _, kind, _ = d.split_key(key)
        table = KIND_TABLES.get(kind)
        if table is not None:
            conn.execute(update(table).where(table.c.key == key).values(deleted=True))

    def _apply_sweep(self, conn: Connection, sweep: d.Sweep) -> list[str]:
        table = KIND_TABLES[sweep.kind]
        prefix = d.make_key(sweep.system, sweep.kind, "")
        live = {d.make_key(sweep.system, sweep.kind, i) for i in sweep.live_ids}
        stored = {r[0] for r in conn.execute(select(table.c.key).where(table.c.key.like(prefix + "%"), table.c.deleted.is_(False)))}
        gone = sorted(stored - live)
        for i in range(0, len(gone), 500):
            conn.execute(update(table).where(table.c.key.in_(gone[i : i + 500])).values(deleted=True))
        return gone

    # -- the connector's own footprint

    def refresh_own(self) -> None:
        """Mark what the connector wrote so no rule takes it for a person's work: records carrying
        a marker (set on write), the CRM activities mirroring its tasks, and every record whose key
        the journal holds as the result of an action (a manager may have edited the marker out)."""
        with self.tx() as conn:
            own_tasks = select(tasks.c.key).where(tasks.c.own.is_(True))
            remote = select(journal.c.remote_key).where(journal.c.remote_key.is_not(None))
            changed: list[str] = []  # what becomes the connector's own: its clients' evidence is derived again
            for table, cond in ((tasks, tasks.c.key.in_(remote)), (activities, activities.c.key.in_(remote)), (invoices, invoices.c.key.in_(remote))):
                changed += [k for (k,) in conn.execute(select(table.c.key).where(table.c.own.is_(False), cond).distinct())]
                conn.execute(update(table).where(table.c.own.is_(False), cond).values(own=True))
                if table is tasks:  # the CRM activities mirroring the connector's tasks (those just marked too)
                    mirror = activities.c.ref_key.in_(own_tasks)
                    changed += [k for (k,) in conn.execute(select(activities.c.key).where(activities.c.own.is_(False), mirror).distinct())]
                    conn.execute(update(activities).where(activities.c.own.is_(False), mirror).values(own=True))
            own_invoices = any(d.split_key(k)[1] == "invoice" for k in changed)
            if changed:
                self.mark_evidence_dirty(conn, purchases=own_invoices, owners=self._noting(conn, [])(changed))

    def find_markers(self, markers: Iterable[str]) -> dict[str, tuple[str, datetime | None]]:
        """Records already carrying these markers in the synced data: marker -> (record key, when made)."""
        wanted = sorted(set(markers))
        out: dict[str, tuple[str, datetime | None]] = {}
        with self.tx() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                q1 = select(tasks.c.marker, tasks.c.key, tasks.c.created_at).where(tasks.c.marker.in_(chunk), tasks.c.deleted.is_(False))
                q2 = select(activities.c.marker, activities.c.key, activities.c.happened_at).where(
                    activities.c.marker.in_(chunk), activities.c.deleted.is_(False))
                q3 = select(invoices.c.marker, invoices.c.key, invoices.c.issued_at).where(invoices.c.marker.in_(chunk),
                                                                                        invoices.c.deleted.is_(False))
                for marker, key, at in [*conn.execute(q1), *conn.execute(q2), *conn.execute(q3)]:
                    out.setdefault(marker, (key, at))
        return out

    # -- counts for status

    def counts(self) -> dict[str, int]:
        out = {}
        with self.tx() as conn:
            for name, table in [("managers", managers), ("clients", clients), ("deals", deals), ("invoices", invoices),
                                ("payments", payments), ("activities", activities), ("tasks", tasks),
                                ("documents", documents), ("debts", debts), ("calls", calls)]:
                out[name] = conn.execute(select(func.count()).select_from(table).where(table.c.deleted.is_(False))).scalar_one()
        return out


def _marked(row: dict, *texts: str | None) -> dict:
    """The connector's own footprint: a record whose text carries one of its markers is never evidence."""
    row["marker"] = d.find_marker(*texts)
    row["own"] = row["marker"] is not None
    return row


def _row(rec: Any, skip: tuple[str, ...] = ()) -> dict:
    """A dataclass record as a table row: tuples become lists, enums plain strings, live unless deleted."""
    row = {}
    for f in dc_fields(rec):
        if f.name in skip:
            continue
        v = getattr(rec, f.name)
        if isinstance(v, tuple):
            v = list(v)
        elif hasattr(v, "value") and isinstance(v, str):
            v = str(v)
        row[f.name] = v
    row.setdefault("deleted", False)
    return row
