"""Deriving the evidence of the clients a sync touched must give exactly what deriving everything gives.

Random rounds of the changes a sync brings (activities moved, completed, deleted; contacts moving
between companies; companies deleted; deals, invoices, payments, calls, tasks, 1C documents and
links), each followed by the partial derivation, which is then compared with a whole one.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from connector import domain as d
from connector import evidence
from connector.matching import link_clients
from connector.store import Store, ev_buy, ev_contact, ev_owner, ev_stale, kv

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
LINKING = SimpleNamespace(onec=SimpleNamespace(match=["tax_id"]), bitrix24=object())  # what link_clients reads of the settings


def k(kind: str, i: object, system: str = "bitrix24") -> str:
    return d.make_key(system, kind, i)


def derived(store: Store) -> dict[str, list]:
    with store.tx() as conn:
        return {t.name: sorted(tuple(str(v) for v in r) for r in conn.execute(select(t))) for t in (ev_owner, ev_contact, ev_buy)}


def flag(store: Store, name: str) -> str | None:
    with store.tx() as conn:
        return conn.execute(select(kv.c.value).where(kv.c.name == name)).scalar()


def derive_whole(store: Store) -> None:
    with store.tx() as conn:
        store.mark_evidence_dirty(conn)  # owners unknown: everything
    evidence.refresh(store, "bitrix24", now=NOW)


class Sync:
    """Random records of a small portal and 1C base, written the way sources write them."""

    def __init__(self, store: Store, rng: random.Random):
        self.store, self.rng, self.n = store, rng, 0
        self.companies = [k("company", i) for i in range(1, 9)]
        self.contacts = [k("contact", i) for i in range(1, 11)]
        self.counterparties = [k("counterparty", i, "onec") for i in range(1, 5)]
        self.deals: list[str] = []
        self.activities: list[str] = []
        self.invoices: list[str] = []
        self.documents: list[str] = []
        self.phones = [f"+38067000{i:04d}" for i in range(12)]

    def when(self) -> datetime:
        return NOW - timedelta(days=self.rng.randint(1, 400), minutes=self.rng.randint(0, 1440))

    def id(self) -> int:
        self.n += 1
        return self.n

    def company(self, key: str) -> d.Client:
        return d.Client(key, "bitrix24", key.rsplit(":", 1)[1], d.ClientKind.COMPANY, key, phones=tuple(self.rng.sample(self.phones, 1)),
                        tax_id=f"3{key.rsplit(':', 1)[1]:0>7}", created_at=NOW - timedelta(days=500))

    def contact(self, key: str) -> d.Client:
        return d.Client(key, "bitrix24", key.rsplit(":", 1)[1], d.ClientKind.CONTACT, key,
                        company_key=self.rng.choice([*self.companies, None]), phones=tuple(self.rng.sample(self.phones, 1)),
                        created_at=NOW - timedelta(days=500))

    def counterparty(self, key: str) -> d.Client:
        return d.Client(key, "onec", key.rsplit(":", 1)[1], d.ClientKind.COMPANY, key,
                        tax_id=f"3{self.rng.randint(1, 8):0>7}", created_at=NOW - timedelta(days=500))

    def owner(self) -> str:
        return self.rng.choice(self.companies + self.contacts + (self.deals or self.companies))

    def activity(self, key: str | None = None) -> d.Activity:
        key = key or k("activity", self.id())
        done = self.rng.random() < 0.8
        at = self.when()
        return d.Activity(key, "bitrix24", key.rsplit(":", 1)[1], self.rng.choice(list(d.ActivityKind)),
                          tuple({self.owner() for _ in range(self.rng.randint(1, 2))}), done, at if done else None, deadline=at)

    def deal(self, key: str | None = None) -> d.Deal:
        key = key or k("deal", self.id())
        outcome = self.rng.choice(list(d.Outcome))
        at = self.when()
        return d.Deal(key, "bitrix24", key.rsplit(":", 1)[1], key,
                      tuple({self.rng.choice(self.companies + self.contacts) for _ in range(self.rng.randint(1, 2))}),
                      outcome=outcome, amount=float(self.rng.randint(1, 9) * 100), created_at=at - timedelta(days=3),
                      closed_at=at if outcome != d.Outcome.OPEN else None, modified_at=at)

    def invoice(self, key: str | None = None) -> d.Invoice:
        key = key or k("invoice", self.id())
        return d.Invoice(key, "bitrix24", key.rsplit(":", 1)[1], key, client_key=self.rng.choice(self.companies + self.contacts),
                         amount=500.0, outcome=self.rng.choice([d.Outcome.OPEN, d.Outcome.WON]), issued_at=self.when(),
                         deal_key=self.rng.choice([None, None, *self.deals[:1]]))

    def document(self) -> d.Document:
        key = k("document", self.id(), "onec")
        basis = self.rng.choice([None, *self.documents]) if self.documents else None
        kind = d.DocumentType.PAYMENT if basis else self.rng.choice([d.DocumentType.SALE, d.DocumentType.ORDER])
        return d.Document(key, "onec", key.rsplit(":", 1)[1], kind, self.when(), self.rng.choice(self.counterparties),
                          amount=300.0, basis_key=basis)

    def first(self) -> list:
        records: list = [self.company(c) for c in self.companies] + [self.contact(c) for c in self.contacts]
        records += [self.counterparty(c) for c in self.counterparties]
        for _ in range(6):
            records.append(self.deal())
            self.deals.append(records[-1].key)
        for _ in range(25):
            records.append(self.activity())
            self.activities.append(records[-1].key)
        for _ in range(4):
            records.append(self.invoice())
            self.invoices.append(records[-1].key)
        for _ in range(5):
            records.append(self.document())
            self.documents.append(records[-1].key)
        return records

    def change(self) -> tuple[list, list[str]]:
        """One round: a handful of random changes, as records and deleted keys."""
        records: list = []
        deleted: list[str] = []
        for _ in range(self.rng.randint(2, 8)):
            what = self.rng.randrange(12)
            if what == 0:
                records.append(self.activity())
                self.activities.append(records[-1].key)
            elif what == 1 and self.activities:
                records.append(self.activity(self.rng.choice(self.activities)))  # moved, completed or reopened
            elif what == 2 and self.activities:
                deleted.append(self.rng.choice(self.activities))
            elif what == 3:
                records.append(self.contact(self.rng.choice(self.contacts)))  # another company, other phones
            elif what == 4:
                gone = self.rng.choice(self.companies)
                deleted.append(gone) if self.rng.random() < 0.5 else records.append(self.company(gone))
            elif what == 5:
                records.append(self.deal(self.rng.choice([None, *self.deals])))
                self.deals.append(records[-1].key)
            elif what == 6:
                records.append(self.invoice(self.rng.choice([None, *self.invoices])))
                self.invoices.append(records[-1].key)
            elif what == 7 and self.invoices:
                inv = self.rng.choice(self.invoices)
                records.append(d.Payment(k("payment", self.id()), "bitrix24", str(self.n), None, 500.0, self.when(), invoice_key=inv))
            elif what == 8:
                records.append(d.Call(k("call", self.id(), "binotel"), "binotel", str(self.n), "in", self.rng.choice(self.phones),
                                      self.when(), talk_s=self.rng.choice([0, 30]), answered=True))
            elif what == 9:
                records.append(d.Task(k("task", self.id()), "bitrix24", str(self.n), "t", None, (self.owner(),), NOW,
                                      completed=True, closed_at=self.when()))
            elif what == 10:
                records.append(self.document())
                self.documents.append(records[-1].key)
            elif what == 11:
                records.append(self.counterparty(self.rng.choice(self.counterparties)))  # another tax id: another link
        return records, deleted


@pytest.mark.parametrize("seed", range(16))
def test_deriving_the_touched_clients_again_equals_deriving_everything(tmp_path, seed):
    rng = random.Random(seed)
    store = Store(f"sqlite:///{tmp_path / 'e.db'}")
    sync = Sync(store, rng)
    store.apply("bitrix24", d.Batch("all", sync.first()), NOW)
    link_clients(LINKING, store, NOW)
    assert evidence.refresh(store, "bitrix24", now=NOW)
    assert flag(store, Store.EVIDENCE_FULL) == "0"
    partial = 0
    for _ in range(12):
        records, deleted = sync.change()
        by_system: dict[str, list] = {}
        for r in records:
            by_system.setdefault(r.system, []).append(r)
        for system, recs in by_system.items():
            store.apply(system, d.Batch("changes", recs, [x for x in deleted if x.startswith(system)]), NOW)
        for x in deleted:
            if not any(x.startswith(s) for s in by_system):
                store.apply(x.split(":", 1)[0], d.Batch("changes", [], [x]), NOW)
        link_clients(LINKING, store, NOW)
        if flag(store, Store.EVIDENCE_DIRTY) != "1":
            continue
        assert flag(store, Store.EVIDENCE_FULL) == "0"  # every change said which owners it touched
        with store.tx() as conn:
            partial += conn.execute(select(func.count()).select_from(ev_stale)).scalar_one() > 0
        evidence.refresh(store, "bitrix24", now=NOW)
        got = derived(store)
        derive_whole(store)
        assert got == derived(store)
    assert partial >= 8


def test_a_first_sync_notes_no_owners_and_the_next_change_notes_only_its_own(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'e.db'}")
    sync = Sync(store, random.Random(1))
    first = sync.first()
    store.apply("bitrix24", d.Batch("all", first), NOW)
    with store.tx() as conn:
        assert conn.execute(select(func.count()).select_from(ev_stale)).scalar_one() == 0  # derived whole anyway
    evidence.refresh(store, "bitrix24", now=NOW)
    old = next(r for r in first if r.key == sync.activities[0])
    moved = sync.activity(old.key)
    store.apply("bitrix24", d.Batch("changes", [moved]), NOW)
    with store.tx() as conn:
        stale = {o for (o,) in conn.execute(select(ev_stale.c.owner_key))}
    assert stale == set(old.owner_keys) | set(moved.owner_keys)  # its owners before and after, nothing else
    assert flag(store, Store.EVIDENCE_FULL) == "0"


def test_what_becomes_the_connectors_own_is_derived_again_for_its_clients_alone(tmp_path):
    from connector.store import journal

    store = Store(f"sqlite:///{tmp_path / 'e.db'}")
    sync = Sync(store, random.Random(3))
    store.apply("bitrix24", d.Batch("all", sync.first()), NOW)
    evidence.refresh(store, "bitrix24", now=NOW)
    task = d.Task(k("task", 900), "bitrix24", "900", "ours", None, (sync.companies[0],), NOW, completed=True, closed_at=NOW - timedelta(days=1))
    mirror = d.Activity(k("activity", 901), "bitrix24", "901", d.ActivityKind.TASK, (sync.companies[0],), True, NOW - timedelta(days=1),
                        ref_key=task.key)
    store.apply("bitrix24", d.Batch("changes", [task, mirror]), NOW)
    evidence.refresh(store, "bitrix24", now=NOW)
    assert ("bitrix24:company:1", "task") in {(r[0], r[1]) for r in derived(store)["ev_contact"]}  # a manager's work, so far
    with store.tx() as conn:  # then the journal says the connector made it
        conn.execute(journal.insert().values(key="forgotten:x:1:0", rule="forgotten", type="task", state="done", remote_key=task.key,
                                             ambiguous=False))
    store.refresh_own()
    with store.tx() as conn:
        stale = {o for (o,) in conn.execute(select(ev_stale.c.owner_key))}
    assert stale == {sync.companies[0]} and flag(store, Store.EVIDENCE_FULL) == "0"
    evidence.refresh(store, "bitrix24", now=NOW)
    got = derived(store)
    derive_whole(store)
    assert got == derived(store)
    assert ("bitrix24:company:1", "task", str(NOW - timedelta(days=1))) not in {tuple(r) for r in got["ev_contact"]}


def test_past_the_limit_of_touched_owners_the_next_derivation_is_whole_and_no_list_is_kept(tmp_path, monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'e.db'}")
    sync = Sync(store, random.Random(5))
    store.apply("bitrix24", d.Batch("all", sync.first()), NOW)
    evidence.refresh(store, "bitrix24", now=NOW)
    monkeypatch.setattr(Store, "STALE_LIMIT", 3)
    store.apply("bitrix24", d.Batch("changes", [sync.activity(a) for a in sync.activities[:2]]), NOW)
    store.apply("bitrix24", d.Batch("changes", [sync.activity(a) for a in sync.activities[2:4]]), NOW)  # together past the limit
    with store.tx() as conn:
        assert conn.execute(select(func.count()).select_from(ev_stale)).scalar_one() == 0
    assert flag(store, Store.EVIDENCE_FULL) == "1"
    evidence.refresh(store, "bitrix24", now=NOW)
    got = derived(store)
    derive_whole(store)
    assert got == derived(store) and flag(store, Store.EVIDENCE_FULL) == "0"


def test_when_the_touched_owners_are_many_of_all_one_pass_over_everything_is_taken(tmp_path, monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'e.db'}")
    sync = Sync(store, random.Random(6))
    store.apply("bitrix24", d.Batch("all", sync.first()), NOW)
    evidence.refresh(store, "bitrix24", now=NOW)
    partial: list[int] = []
    real = evidence._derive_for_stale
    monkeypatch.setattr(evidence, "_derive_for_stale", lambda *a: partial.append(1) or real(*a))
    monkeypatch.setattr(evidence, "PARTIAL_MIN", 0)
    store.apply("bitrix24", d.Batch("changes", [sync.activity(sync.activities[0])]), NOW)
    evidence.refresh(store, "bitrix24", now=NOW)
    assert partial == [1]  # a few of many: the touched clients alone
    store.apply("bitrix24", d.Batch("changes", [sync.company(c) for c in sync.companies] + [sync.contact(c) for c in sync.contacts]), NOW)
    evidence.refresh(store, "bitrix24", now=NOW)
    assert partial == [1]  # every client touched: everything in one pass
    got = derived(store)
    derive_whole(store)
    assert got == derived(store)
