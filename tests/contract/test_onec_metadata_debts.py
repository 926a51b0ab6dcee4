"""1C in depth (issue 14): metadata first, debts aged on every preset, a two-request no-change cycle.

Every test runs the real source or adapter against the loopback emulator, whose ``$metadata``
describes only what it publishes (``unpublished`` sets and ``hidden`` fields are absent).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from urllib.parse import unquote

import pytest

from connector.config import OneC, OneCOData, Settings
from connector.domain import make_key
from connector.errors import ConfigError, TransientError
from connector.ports import Context, FixedClock
from connector.sandbox import generate
from onec.adapter import ADAPTER
from onec.emulator import OneCSandbox
from onec.emulator.base import JOURNAL, KYIV, gid, wall
from onec.source import ODataSource

USER, PASSWORD = "Администратор", "Пароль-sandbox-1C"
CP = "Catalog_Контрагенты"
CONTRACTS = "Catalog_ДоговорыКонтрагентов"
SALE = {"ut11": "Document_РеализацияТоваровУслуг", "unf": "Document_РасходнаяНакладная", "utp": "Document_РеализацияТоваровУслуг"}


@pytest.fixture(params=["ut11", "unf", "utp"])
def base(request):
    sb = OneCSandbox(generate(), request.param, user=USER, password=PASSWORD)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def ut11():
    sb = OneCSandbox(generate(), "ut11", user=USER, password=PASSWORD)
    sb.start()
    yield sb
    sb.stop()


class World:
    """One base, a clock and a kv that outlive the per-cycle sources (as the store's kv does)."""

    def __init__(self, sb: OneCSandbox, **cfg):
        self.sb = sb
        self.clock = FixedClock(sb.company.anchor)
        self.kv: dict[str, str] = {}
        self.ctx = Context(clock=self.clock, kv_get=self.kv.get, kv_set=self.kv.__setitem__)
        self.cfg = OneC(odata=OneCOData(url=sb.odata.url, user=USER, password=PASSWORD), preset=sb.preset, **cfg)
        self.cursors: dict[str, str] = {}

    def source(self) -> ODataSource:
        src = ODataSource(self.cfg, self.ctx)
        src.client.wait = 0
        return src

    def cycle(self, streams: list[str] | None = None) -> tuple[dict[str, list], int]:
        """One sync cycle with a fresh source: ``({stream: records}, requests)``."""
        before = len(self.sb.odata.requests)
        src = self.source()
        out: dict[str, list] = {}
        for stream in streams or src.streams():
            for b in src.pull(stream, self.cursors.get(stream)):
                out.setdefault(stream, []).extend(b.records)
                out.setdefault(f"{stream}:deleted", []).extend(b.deleted)
                if b.cursor is not None:
                    self.cursors[stream] = b.cursor
        return out, len(self.sb.odata.requests) - before

    def paths(self, since: int) -> list[str]:
        return [unquote(p) for _, p in self.sb.odata.requests[since:]]


def debtor(sb: OneCSandbox):
    co = sb.company
    return co.company(co.stories["debtor"])


def debtor_sale(sb: OneCSandbox):
    d = debtor(sb)
    return next(x for x in sb.company.onec_docs if x.type == "sale" and x.counterparty_guid == d.guid)


# ---------------------------------------------------------------- the no-change budget (issue 11)

def test_a_no_change_cycle_costs_two_requests_with_a_document_journal(base):
    w = World(base, objects={"journal": JOURNAL})
    w.cycle()
    w.clock.at += timedelta(hours=1)
    got, requests = w.cycle()
    assert requests == 2 and not any(got.get(s) for s in ("users", "counterparties", "documents", "debts"))
    count, journal = w.paths(len(base.odata.requests) - 2)
    assert count.split("?")[0].endswith(f"{CP}/$count") and journal.split("?")[0].endswith(JOURNAL)
    assert "$metadata" not in " ".join(w.paths(0)[1:])  # read once, on the first pull, then cached in kv


def test_without_a_journal_a_no_change_cycle_is_one_count_and_one_window_per_document_type(base):
    w = World(base)
    w.cycle()
    w.clock.at += timedelta(hours=1)
    _, requests = w.cycle()
    assert requests == 1 + len(w.source().configured.doc_objects())


def test_the_journal_finds_new_changed_marked_and_vanished_documents_of_every_type(ut11):
    ib, co = ut11.ib, ut11.company
    recent = wall(co.anchor - timedelta(hours=5))
    order, invoice, sale = (str(uuid.uuid4()) for _ in range(3))
    ib.put("Document_ЗаказКлиента", {"Ref_Key": order, "Number": "ЗК-1", "Date": recent, "Posted": True, "СуммаДокумента": 10.0,
                                     "Контрагент_Key": co.companies[1].guid})
    ib.put("Document_СчетНаОплатуКлиенту", {"Ref_Key": invoice, "Number": "СЧ-1", "Date": recent, "Posted": True,
                                            "СуммаДокумента": 20.0, "Контрагент_Key": co.companies[1].guid})
    ib.put(SALE["ut11"], {"Ref_Key": sale, "Number": "РН-1", "Date": recent, "Posted": True, "СуммаДокумента": 30.0,
                          "Контрагент_Key": co.companies[1].guid})
    w = World(ut11, objects={"journal": JOURNAL})
    w.cycle()
    ib.sets["Document_ЗаказКлиента"].rows[order]["СуммаДокумента"] = 1.5  # a corrected amount (a journal column)
    ib.sets["Document_ЗаказКлиента"].rows[order]["DataVersion"] = ib.version()
    del ib.sets["Document_СчетНаОплатуКлиенту"].rows[invoice]  # physically deleted ("Удаление помеченных объектов")
    ib.sets[SALE["ut11"]].rows[sale]["DeletionMark"] = True
    new = str(uuid.uuid4())
    ib.put(SALE["ut11"], {"Ref_Key": new, "Number": "РН-NEW", "Date": wall(co.anchor + timedelta(minutes=30)), "Posted": True,
                          "Контрагент_Key": co.companies[0].guid, "СуммаДокумента": 777.0})
    w.clock.at += timedelta(hours=1)
    before = len(ut11.odata.requests)
    got, requests = w.cycle()
    assert {d.source_id: (d.amount, d.deleted) for d in got["documents"]} == {order: (1.5, False), new: (777.0, False), sale: (30.0, True)}
    assert got["documents:deleted"] == [make_key("onec", "document", invoice)]
    # count and journal; the order, the invoice and the two sales by key; both balances; the debtors' shipments
    assert requests == 2 + 3 + 2 + 1
    assert not any("$metadata" in p for p in w.paths(before))


def test_a_type_the_journal_does_not_list_is_learned_on_the_check_and_then_polled(ut11, caplog):
    cash_obj = "Document_ПриходныйКассовыйОрдер"
    ut11.ib.sets[JOURNAL].covers.remove(cash_obj)
    cash = str(uuid.uuid4())
    ut11.ib.put(cash_obj, {"Ref_Key": cash, "Number": "ПКО-1", "Date": wall(ut11.company.anchor - timedelta(hours=3)), "Posted": True,
                           "СуммаДокумента": 50.0, "Контрагент_Key": ut11.company.companies[2].guid})
    w = World(ut11, objects={"journal": JOURNAL})
    with caplog.at_level(logging.WARNING, logger="onec.source"):
        w.cycle()
    assert any(f"does not list {cash_obj}" in r.message for r in caplog.records)
    row = ut11.ib.sets[cash_obj].rows[cash]
    row["СуммаДокумента"], row["DataVersion"] = 55.0, ut11.ib.version()
    w.clock.at += timedelta(hours=1)
    got, requests = w.cycle()
    assert [(d.source_id, d.amount) for d in got["documents"]] == [(cash, 55.0)]
    assert any(f"{cash_obj}?" in p and "Date ge" in p for p in w.paths(len(ut11.odata.requests) - requests))


# ---------------------------------------------------------------- debts by ageing

def test_an_overdue_debt_is_found_by_ageing_with_the_contract_term(base):
    cfg = {"overdue_from": "shipments", "fields": {"contract.term": "СрокОплаты"}} if base.preset == "ut11" else {}
    w = World(base, **cfg)
    got, _ = w.cycle()
    sale, due = debtor_sale(base), base.company.debts[0].due
    [debt] = got["debts"]
    assert debt.client_key == make_key("onec", "counterparty", debtor(base).guid)
    assert (debt.amount, debt.overdue_amount, debt.overdue_since) == (42000.0, 42000.0, due)
    assert debt.documents == ({"number": sale.number, "date": sale.date.astimezone(KYIV).date().isoformat(), "amount": 42000.0,
                               "unpaid": 42000.0, "due": due.isoformat()},)
    assert (due - sale.date.astimezone(KYIV).date()).days == 15  # the contract's term, not the default


def test_without_a_contract_term_the_configured_default_term_applies(base):
    contract = base.ib.sets[CONTRACTS].rows[gid("contract", debtor(base).guid)]
    contract[base.ib.fl["contract_term"]] = 0  # the contract names no term
    w = World(base, overdue_from="shipments", payment_terms_days=21)
    got, _ = w.cycle()
    [debt] = got["debts"]
    shipped = debtor_sale(base).date.astimezone(KYIV).date()
    assert (debt.overdue_amount, debt.overdue_since) == (42000.0, shipped + timedelta(days=21))
    assert debt.documents[0]["due"] == (shipped + timedelta(days=21)).isoformat()


def test_a_base_without_the_contract_term_field_ages_by_the_default_with_one_warning(base, caplog):
    base.odata.hidden[CONTRACTS] = {base.ib.fl["contract_term"]}
    ut11 = {"overdue_from": "shipments", "fields": {"contract.term": "СрокОплаты"}} if base.preset == "ut11" else {}
    w = World(base, payment_terms_days=10, **ut11)
    with caplog.at_level(logging.WARNING, logger="onec.source"):
        got, _ = w.cycle()
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "onec.fields.contract.term" in warnings[0] and base.ib.fl["contract_term"] in warnings[0]
    shipped = debtor_sale(base).date.astimezone(KYIV).date()
    assert got["debts"][0].overdue_since == shipped + timedelta(days=10)


class Ut11Ledger:
    """Sales and payments of fresh counterparties of the emulated УТ 11, posted the way 1C posts
    them: receivables by analytics key, and the terms register by due date, payments closing the
    oldest due amounts first."""

    def __init__(self, sb: OneCSandbox):
        self.ib, self.anchor = sb.ib, sb.company.anchor
        self.uah = gid("currency", "980")
        self.n = 0

    def counterparty(self, term: int) -> str:
        self.n += 1
        cp = gid("ledger-cp", self.n)
        self.ib.put(CP, {"Ref_Key": cp, "Description": f"Ledger {self.n}", "Code": f"L{self.n:08d}", "Партнер_Key": gid("partner", cp)})
        self.ib.put("Catalog_Партнеры", {"Ref_Key": gid("partner", cp), "Description": f"Ledger {self.n}"})
        self.ib.put("Catalog_КлючиАналитикиУчетаПоПартнерам", {"Ref_Key": gid("analytics", cp), "Контрагент_Key": cp})
        self.ib.put(CONTRACTS, {"Ref_Key": gid("contract", cp), "Owner_Key": cp, "СрокОплаты": term})
        return cp

    def _move(self, reg: str, recorder: str, when: datetime, kind: str, values: dict) -> None:
        doc = SALE["ut11"] if kind == "Receipt" else "Document_ПоступлениеБезналичныхДенежныхСредств"
        self.ib.put(reg, {"Recorder": recorder, "Recorder_Type": f"StandardODATA.{doc}", "Period": wall(when),
                          "LineNumber": "1", "Active": True, "RecordType": kind, **values})

    def ship(self, cp: str, days_ago: int, amount: float) -> None:
        when = self.anchor - timedelta(days=days_ago)
        sale = gid("ledger-sale", cp, days_ago)
        term = self.ib.sets[CONTRACTS].rows[gid("contract", cp)]["СрокОплаты"]
        self.ib.put(SALE["ut11"], {"Ref_Key": sale, "Number": f"РН-L{days_ago}", "Date": wall(when), "Posted": True, "Контрагент_Key": cp,
                                   "СуммаДокумента": amount, "Договор_Key": gid("contract", cp), "Валюта_Key": self.uah})
        analytics = gid("analytics", cp)
        self._move("AccumulationRegister_РасчетыСКлиентами", sale, when, "Receipt",
                   {"АналитикаУчетаПоПартнерам_Key": analytics, "ОбъектРасчетов_Key": sale, "Валюта_Key": self.uah, "Сумма": amount})
        self._move("AccumulationRegister_РасчетыСКлиентамиПоСрокам", sale, when, "Receipt",
                   {"АналитикаУчетаПоПартнерам_Key": analytics, "ОбъектРасчетов_Key": sale,
                    "ДатаПлановогоПогашения": wall(when + timedelta(days=term)), "ДолгУпр": amount})

    def pay(self, cp: str, days_ago: int, amount: float) -> None:
        when = self.anchor - timedelta(days=days_ago)
        pay = gid("ledger-pay", cp, days_ago)
        analytics = gid("analytics", cp)
        self._move("AccumulationRegister_РасчетыСКлиентами", pay, when, "Expense",
                   {"АналитикаУчетаПоПартнерам_Key": analytics, "Валюта_Key": self.uah, "Сумма": amount})
        open_dues = sorted((r["ДатаПлановогоПогашения"], r["ДолгУпрBalance"]) for r in self.ib.balance(
            "AccumulationRegister_РасчетыСКлиентамиПоСрокам", None, lambda r: r["АналитикаУчетаПоПартнерам_Key"] == analytics,
            ["ДатаПлановогоПогашения"]))
        for due, owed in open_dues:  # the oldest due amounts are closed first
            take = min(owed, amount)
            if take <= 0:
                break
            self._move("AccumulationRegister_РасчетыСКлиентамиПоСрокам", pay, when, "Expense",
                       {"АналитикаУчетаПоПартнерам_Key": analytics, "ДатаПлановогоПогашения": due, "ДолгУпр": take})
            amount -= take


def test_register_and_ageing_agree_on_the_ut11_base(ut11):
    ledger = Ut11Ledger(ut11)
    a = ledger.counterparty(term=30)  # partly paid, what is left is not due yet
    ledger.ship(a, 60, 10000.0)
    ledger.ship(a, 20, 5000.0)
    ledger.pay(a, 5, 12000.0)
    b = ledger.counterparty(term=7)  # an old shipment partly unpaid and overdue, a recent one not yet due
    ledger.ship(b, 50, 4000.0)
    ledger.ship(b, 40, 6000.0)
    ledger.ship(b, 3, 2000.0)
    ledger.pay(b, 10, 5000.0)
    c = ledger.counterparty(term=10)  # one shipment, overdue
    ledger.ship(c, 15, 8000.0)
    d = ledger.counterparty(term=45)  # paid up: no debt either way
    ledger.ship(d, 30, 3000.0)
    ledger.pay(d, 2, 3000.0)

    def debts(**cfg) -> dict:
        got, _ = World(ut11, **cfg).cycle()
        return {x.client_key: x for x in got["debts"]}

    by_register = debts()
    by_ageing = debts(overdue_from="shipments", fields={"contract.term": "СрокОплаты"})
    key = lambda cp: make_key("onec", "counterparty", cp)  # noqa: E731
    assert set(by_register) == set(by_ageing) == {key(a), key(b), key(c), key(debtor(ut11).guid)}
    for k in by_register:
        r, g = by_register[k], by_ageing[k]
        # the documented rounding: amounts to kopecks, dates to the day
        assert (r.amount, r.overdue_amount, r.overdue_since) == (g.amount, g.overdue_amount, g.overdue_since), k
        assert [x["unpaid"] for x in r.documents] == [x["unpaid"] for x in g.documents]
    anchor = ut11.company.anchor.astimezone(KYIV).date()
    assert (by_register[key(a)].amount, by_register[key(a)].overdue_amount) == (3000.0, 0.0)
    assert (by_register[key(b)].overdue_amount, by_register[key(b)].overdue_since) == (5000.0, anchor - timedelta(days=33))
    assert (by_register[key(c)].overdue_amount, by_register[key(c)].overdue_since) == (8000.0, anchor - timedelta(days=5))
    assert [x["number"] for x in by_register[key(b)].documents] == ["РН-L40", "РН-L3"]


def test_debts_are_not_reread_without_a_document_change_and_age_with_the_calendar(base):
    ib, co = base.ib, base.company
    cp = debtor(base).guid
    # a second shipment, due in two days
    when = co.anchor - timedelta(days=13)
    sale = str(uuid.uuid4())
    fl = ib.fl
    ib.put(SALE[base.preset], {"Ref_Key": sale, "Number": "РН-2ND", "Date": wall(when), "Posted": True, "Контрагент_Key": cp,
                               "СуммаДокумента": 1000.0, fl["doc_contract"]: gid("contract", cp)})
    rec = next(r for r in ib.sets[fl["receivables"]].records if r.get(fl["rec_cp"]) in (cp, gid("analytics", cp)))
    ib.put(fl["receivables"], {**rec, "Recorder": sale, "Period": wall(when), "RecordType": "Receipt",
                               **{res: 1000.0 for res in fl["rec_res"]}})
    if fl["overdue"]:
        ovd = next(r for r in ib.sets[fl["overdue"]].records if r["АналитикаУчетаПоПартнерам_Key"] == gid("analytics", cp))
        ib.put(fl["overdue"], {**ovd, "Recorder": sale, "Period": wall(when), "ДатаПлановогоПогашения": wall(when + timedelta(days=15)),
                               "ДолгУпр": 1000.0, "Долг": 1000.0})
    w = World(base, sweep_every_hours=100, metadata_every_hours=100)  # no periodic re-read: only the calendar moves
    got, _ = w.cycle()
    assert [(d.amount, d.overdue_amount) for d in got["debts"]] == [(43000.0, 42000.0)]
    w.clock.at += timedelta(hours=2)
    got, requests = w.cycle(["debts"])
    assert requests == 0 and not got.get("debts")  # nothing posted, same day: not even the balance
    w.clock.at = co.anchor + timedelta(days=3)
    got, requests = w.cycle(["debts"])
    assert requests == 0  # recomputed from the cursor: the second shipment is overdue now
    [debt] = got["debts"]
    assert (debt.amount, debt.overdue_amount, debt.overdue_since) == (43000.0, 43000.0, co.debts[0].due)
    assert debt.as_of == w.clock.at


def test_a_posted_payment_rereads_the_balance_and_the_debt_disappears(base):
    w = World(base, objects={"journal": JOURNAL})
    w.cycle()
    ib, co, fl = base.ib, base.company, base.ib.fl
    cp = debtor(base).guid
    when = wall(co.anchor + timedelta(minutes=20))
    pay = str(uuid.uuid4())
    ib.put(fl["docs"]["payment"][0], {"Ref_Key": pay, "Number": "ПП-1", "Date": when, "Posted": True, "Контрагент_Key": cp,
                                      "СуммаДокумента": 42000.0})
    own = gid("analytics", cp) if base.preset == "ut11" else cp
    for reg, dim in ((fl["receivables"], fl["rec_cp"]), (fl["overdue"], "АналитикаУчетаПоПартнерам_Key")):
        for r in [r for r in ib.sets[reg].records if r.get(dim) == own] if reg else []:
            ib.put(reg, {**r, "Recorder": pay, "Period": when, "RecordType": "Expense"})
    w.clock.at += timedelta(hours=1)
    src, seen = w.source(), []
    for stream in src.streams():
        for b in src.pull(stream, w.cursors.get(stream)):
            if b.stream == "debts":
                seen.append((b.records, b.sweep.live_ids if b.sweep else None))
            if b.cursor is not None:
                w.cursors[stream] = b.cursor
    assert seen == [([], set())]  # read again because a payment was posted; the sweep marks the stored debt deleted


# ---------------------------------------------------------------- metadata first

OPTIONAL_FIELD = {"ut11": (CP, "ЮрФизЛицо", "counterparty.kind"), "unf": (CP, "КонтактнаяИнформация", "contact.table"),
                  "utp": ("InformationRegister_КонтактнаяИнформация", "Представление", "contact.text")}


def test_a_base_without_an_optional_field_still_syncs_with_one_warning_per_cycle(base, caplog):
    obj, field, logical = OPTIONAL_FIELD[base.preset]
    base.odata.hidden[obj] = {field}
    w = World(base)
    for cycle in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            got, _ = w.cycle()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.message for r in warnings]
        assert f"onec.fields.{logical}" in warnings[0].message and field in warnings[0].message
        if cycle == 0:
            in_onec = [c for c in base.company.companies if c.in_onec]
            assert len(got["counterparties"]) == len(in_onec) and got["documents"] and got["debts"]
            if logical == "counterparty.kind":
                assert all(c.segment is None for c in got["counterparties"])
            else:
                assert all(c.phones == () for c in got["counterparties"])
        w.clock.at += timedelta(hours=1)
    assert not any(field in p.split("?", 1)[-1] for p in w.paths(0) if f"/{obj}?" in p)


@pytest.mark.parametrize("what", ["object", "field"])
def test_a_required_object_or_field_missing_fails_naming_it_and_its_override(base, what):
    if what == "object":
        base.odata.unpublished.add(CP)
        needles = ["Справочник.Контрагенты", CP, "onec.objects.counterparties"]
    else:
        base.odata.hidden[SALE[base.preset]] = {"Контрагент_Key"}
        needles = [SALE[base.preset], "Контрагент_Key", "onec.fields.sale.counterparty"]
    w = World(base)
    with pytest.raises(ConfigError) as e:
        w.cycle()
    assert all(n in str(e.value) for n in needles), str(e.value)
    assert len(e.value.problems) == 1
    base.odata.unpublished.clear()
    base.odata.hidden.clear()
    got, _ = w.cycle()  # published meanwhile: the cache that said "missing" is not trusted
    assert got["counterparties"]


def test_a_field_dropped_after_the_metadata_was_cached_is_noticed_and_the_stream_retried(base, caplog):
    w = World(base)
    w.cycle()
    row = base.ib.sets[CP].rows[base.company.companies[0].guid]
    row["Description"], row["DataVersion"] = "Renamed LLC", base.ib.version()
    base.odata.hidden[CP] = {"ЮрФизЛицо"}
    w.clock.at += timedelta(hours=7)  # the catalog sweep is due: the counterparties are read wide
    with caplog.at_level(logging.WARNING, logger="onec.source"):
        got, _ = w.cycle(["counterparties"])
    assert any("re-reading the base's $metadata" in r.message for r in caplog.records)
    assert any("onec.fields.counterparty.kind" in r.message for r in caplog.records)
    assert [c.title for c in got["counterparties"]] == ["Renamed LLC"]


def test_metadata_is_reread_on_its_schedule_not_every_cycle(base):
    w = World(base, metadata_every_hours=24)
    w.cycle()
    for hours in (1, 2, 23):
        w.clock.at = base.company.anchor + timedelta(hours=hours)
        w.cycle()
    assert sum(1 for p in w.paths(0) if p.endswith("$metadata")) == 1
    w.clock.at = base.company.anchor + timedelta(hours=24)
    w.cycle()
    assert sum(1 for p in w.paths(0) if p.endswith("$metadata")) == 2


def test_users_are_read_on_the_sweep_or_when_a_record_names_an_unknown_manager(ut11):
    w = World(ut11)
    w.cycle()
    w.clock.at += timedelta(hours=1)
    got, _ = w.cycle()
    assert not got.get("users")  # not due, nobody unknown: no request for users
    new_user, cp, partner = (str(uuid.uuid4()) for _ in range(3))
    ut11.ib.put("Catalog_Пользователи", {"Ref_Key": new_user, "Description": "Новий Менеджер"})
    ut11.ib.put("Catalog_Партнеры", {"Ref_Key": partner, "Description": "Новий клієнт", "ОсновнойМенеджер_Key": new_user})
    ut11.ib.put(CP, {"Ref_Key": cp, "Description": "Новий клієнт", "Партнер_Key": partner})
    w.clock.at += timedelta(minutes=15)
    got, _ = w.cycle()  # the new counterparty names a manager nobody has read yet ...
    assert not got.get("users") and got["counterparties"][0].responsible_key == make_key("onec", "user", new_user)
    w.clock.at += timedelta(minutes=15)
    got, _ = w.cycle()  # ... so the next cycle reads the users
    assert make_key("onec", "user", new_user) in {m.key for m in got["users"]}
    w.clock.at += timedelta(minutes=15)
    got, _ = w.cycle()
    assert not got.get("users")


# ---------------------------------------------------------------- connector check

PUBLISH = {"ut11": ["Справочник.Контрагенты", "Справочник.Партнеры", "Документ.РеализацияТоваровУслуг",
                    "РегистрНакопления.РасчетыСКлиентами", "РегистрНакопления.РасчетыСКлиентамиПоСрокам"],
           "unf": ["Справочник.Контрагенты", "Документ.РасходнаяНакладная", "РегистрНакопления.РасчетыСПокупателями",
                   "Справочник.ДоговорыКонтрагентов"],
           "utp": ["Справочник.Контрагенты", "Документ.РеализацияТоваровУслуг", "РегистрСведений.КонтактнаяИнформация",
                   "РегистрНакопления.ВзаиморасчетыСКонтрагентами", "Справочник.ДоговорыКонтрагентов"]}


def test_check_lists_the_objects_to_publish_and_what_it_could_not_find(base):
    settings = Settings(onec=OneC(odata=OneCOData(url=base.odata.url, user=USER, password=PASSWORD), preset=base.preset))
    ctx = Context(clock=FixedClock(base.company.anchor))
    results = ADAPTER.check(settings, ctx)
    publish = next(r for r in results if r.what.startswith("objects to publish"))
    assert publish.ok and all(name in publish.detail for name in PUBLISH[base.preset]), publish.detail
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    base.odata.unpublished.add("Catalog_Валюты")
    base.odata.hidden[CP] = {"ЮрФизЛицо"}
    results = ADAPTER.check(settings, ctx)
    publish = next(r for r in results if r.what.startswith("objects to publish"))
    assert not publish.ok and publish.detail.endswith("Not published: Справочник.Валюты")
    failed = {r.what: r.detail for r in results if not r.ok}
    assert "onec.objects.currencies" in failed["optional object currencies"]
    assert "ЮрФизЛицо" in failed["optional field counterparty.kind"] and "onec.fields.counterparty.kind" in failed["optional field counterparty.kind"]


def test_check_refreshes_the_cached_metadata_so_the_next_cycle_believes_the_fix(base):
    base.odata.hidden[CP] = {"ЮрФизЛицо"}
    w = World(base)
    w.cycle(["users"])
    base.odata.hidden.clear()
    settings = Settings(onec=w.cfg)
    ADAPTER.check(settings, w.ctx)
    before = len(base.odata.requests)
    w.source().prepare()
    assert len(base.odata.requests) == before  # resolved from the cache the check wrote
    assert w.source().prepare().optional_missing == []


def test_the_sink_does_not_offer_what_the_cached_metadata_says_is_missing(base):
    from onec.sink import ODataSink

    w = World(base)
    assert ODataSink(w.cfg, w.ctx).supports("task")  # no cache yet: as configured
    base.odata.unpublished.add(base.ib.fl["task"])
    w.cycle(["users"])  # the source caches this base's $metadata
    before = len(base.odata.requests)
    sink = ODataSink(w.cfg, w.ctx)
    assert not sink.supports("task") and not sink.supports("notify") and sink.supports("reassign")
    assert len(base.odata.requests) == before


def test_an_unreachable_metadata_falls_back_to_the_cached_one_but_never_invents_one(base, caplog):
    w = World(base, metadata_every_hours=1)
    base.odata.fail_next = 10  # the first $metadata read gets nothing but 502s
    with pytest.raises(TransientError):
        w.cycle(["users"])
    base.odata.fail_next = 0
    w.cycle()
    w.clock.at += timedelta(hours=2)  # the cache is due for a re-read, and the re-read fails
    base.odata.fail_next = 4
    with caplog.at_level(logging.WARNING, logger="onec.source"):
        _, requests = w.cycle()
    assert any("using the cached description" in r.message for r in caplog.records)
    assert requests == 4 + 1 + 5  # four failed attempts, then the cycle as usual (no journal)
