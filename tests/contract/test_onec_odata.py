"""The 1C OData client, source and sink against the loopback emulator (reference §14)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from urllib.parse import quote

import pytest
import requests

from connector.config import OneC, OneCOData
from connector.domain import Client, make_key
from connector.errors import AuthError, NotFound, PermanentError, Rejected, TransientError
from connector.ports import Context, FixedClock, PlannedAction, RequestCounter
from connector.sandbox import generate
from onec.client import ODataClient, lit_guid, lit_str
from onec.emulator import OneCSandbox
from onec.emulator.base import wall
from onec.sink import ODataSink
from onec.source import ODataSource

USER, PASSWORD = "Администратор", "Пароль-sandbox-1C"
CP = "Catalog_Контрагенты"


@pytest.fixture(params=["ut11"])
def onec(request):
    sb = OneCSandbox(generate(), request.param, user=USER, password=PASSWORD)
    env = sb.start()
    sb.env = env
    yield sb
    sb.stop()


@pytest.fixture(params=["ut11", "unf", "utp"])
def any_onec(request):
    sb = OneCSandbox(generate(), request.param, user=USER, password=PASSWORD)
    sb.env = sb.start()
    yield sb
    sb.stop()


def client(sb: OneCSandbox, **kw) -> ODataClient:
    kw.setdefault("wait", 0)
    return ODataClient(sb.odata.url, USER, PASSWORD, kw.pop("counter", RequestCounter()), **kw)


def settings(sb: OneCSandbox, page_size: int = 500) -> OneC:
    return OneC(odata=OneCOData(url=sb.odata.url, user=USER, password=PASSWORD, page_size=page_size), preset=sb.preset)


def source(sb: OneCSandbox, ctx: Context, page_size: int = 500) -> ODataSource:
    src = ODataSource(settings(sb, page_size), ctx)
    src.client.wait = 0
    return src


def pull(src: ODataSource, stream: str, cursor: str | None) -> tuple[list, list, str | None, list]:
    records, deleted, sweeps = [], [], []
    for b in src.pull(stream, cursor):
        records += b.records
        deleted += b.deleted
        if b.sweep:
            sweeps.append(b.sweep)
        if b.cursor is not None:
            cursor = b.cursor
    return records, deleted, cursor, sweeps


def raw_get(sb: OneCSandbox, path_and_query: str, auth: tuple = (USER.encode(), PASSWORD.encode())) -> requests.Response:
    return requests.get(sb.odata.origin + path_and_query, auth=auth, timeout=10)


ROOT = "/base/odata/standard.odata/"


# ---------------------------------------------------------------- reading

def test_paging_returns_every_counterparty_once_over_several_pages(onec):
    c = client(onec, page_size=7)
    pages = list(c.pages(CP, select=["Ref_Key", "Description"]))
    refs = [r["Ref_Key"] for p in pages for r in p]
    assert len(pages) == 7  # 43 rows (42 counterparties + a folder) in pages of 7
    assert len(refs) == len(set(refs)) == len(onec.ib.sets[CP].rows)
    assert c.counter.requests == 7
    assert all("$orderby=Ref_Key" in p and "$top=7" in p for _, p in onec.odata.requests)
    assert not any("nextLink" in json.dumps(r) for p in pages for r in p)


def test_a_server_repeating_the_same_page_is_refused_not_looped(onec):
    onec.odata.ignore_skip = True
    c = client(onec, page_size=7)
    with pytest.raises(PermanentError, match="same page came back twice"):
        list(c.pages(CP, select=["Ref_Key"]))
    assert c.counter.requests == 2


def test_client_never_sends_plus_and_literal_plus_survives_as_2B(onec):
    ib = onec.ib
    ib.put(CP, {"Ref_Key": str(uuid.uuid4()), "Description": "Plus+Minus LLC", "Code": "999"})
    c = client(onec)
    rows = [r for p in c.pages(CP, select=["Ref_Key", "Description"], filter=f"Description eq {lit_str('Plus+Minus LLC')}")
            for r in p]
    assert [r["Description"] for r in rows] == ["Plus+Minus LLC"]
    ctx = Context(clock=FixedClock(onec.company.anchor))
    src = source(onec, ctx)
    for stream in src.streams():
        pull(src, stream, None)
    assert onec.odata.requests and not any("+" in path for _, path in onec.odata.requests)
    assert any("%20" in path for _, path in onec.odata.requests)


def test_emulator_ignores_a_filter_whose_spaces_came_as_plus(onec):
    total = len(onec.ib.sets[CP].rows)
    flt = "Code eq '000000002'"
    good = raw_get(onec, f"{ROOT}{quote(CP)}?$format=json&$filter={quote(flt)}").json()["value"]
    trap = raw_get(onec, f"{ROOT}{quote(CP)}?$format=json&$filter={flt.replace(' ', '+')}").json()["value"]
    assert len(good) == 1
    assert len(trap) == total  # silently unfiltered, as 1C does


def test_emulator_filter_subset(onec):
    c = client(onec)
    sale = "Document_РеализацияТоваровУслуг"
    rows = onec.ib.sets[sale].rows.values()
    item = next(iter(rows))["Товары"][0]["Номенклатура_Key"]

    def refs(flt: str) -> set[str]:
        return {r["Ref_Key"] for p in c.pages(sale, select=["Ref_Key"], filter=flt) for r in p}

    everything = {r["Ref_Key"] for r in rows}
    year = next(iter(rows))["Date"][:4]
    assert refs(f"year(Date) eq {year}") == {r["Ref_Key"] for r in rows if r["Date"].startswith(year)}
    assert refs(f"Товары/any(d: d/Номенклатура_Key eq guid'{item}')") == {
        r["Ref_Key"] for r in rows if any(g["Номенклатура_Key"] == item for g in r["Товары"])}
    assert len(everything) - 1 == len(refs(f"Товары/any(d: d/Номенклатура_Key eq guid'{item}')"))  # the water sale sells other goods
    assert refs("not (Posted eq true) or СуммаДокумента gt 1000000") == {r["Ref_Key"] for r in rows if not r["Posted"]}
    assert refs("(СуммаДокумента ge 100 and СуммаДокумента lt 200) or Number eq 'x''y'") == {
        r["Ref_Key"] for r in rows if 100 <= r["СуммаДокумента"] < 200}
    first = next(iter(rows))
    assert refs(f"substringof('{first['Number'][-5:]}', Number) and Ref_Key eq guid'{first['Ref_Key'].upper()}'") == {first["Ref_Key"]}
    with pytest.raises(Rejected) as e:
        c.get(sale, [("$filter", "НетПоля eq 1")])
    assert e.value.code == "6" and "НетПоля" in str(e.value)


def test_cyrillic_basic_auth_needs_utf8(onec):
    assert client(onec).count(CP) == len(onec.ib.sets[CP].rows)
    with pytest.raises(UnicodeEncodeError):  # what plain requests does with a str Cyrillic user name
        requests.get(onec.odata.url + "/", auth=(USER, PASSWORD), timeout=10)
    cp1251 = raw_get(onec, ROOT + "?$format=json", auth=(USER.encode("cp1251"), PASSWORD.encode("cp1251")))
    assert cp1251.status_code == 401 and b"odata.error" not in cp1251.content
    bad = ODataClient(onec.odata.url, USER, "wrong-password-1", RequestCounter(), wait=0)
    with pytest.raises(AuthError) as e:
        bad.count(CP)
    assert "wrong-password-1" not in str(e.value) and e.value.status == 401


def test_json_only_on_request_atom_by_default_and_metadata_declares_functions(onec):
    atom = raw_get(onec, f"{ROOT}{quote('Catalog_Валюты')}?$top=1")
    assert atom.headers["Content-Type"].startswith("application/atom+xml") and b"<m:properties>" in atom.content
    js = raw_get(onec, f"{ROOT}{quote('Catalog_Валюты')}?$format=json&$inlinecount=allpages&$top=1").json()
    assert js["odata.count"] == "2" and len(js["value"]) == 1 and "odata.metadata" in js
    bare = raw_get(onec, f"{ROOT}{quote('Catalog_Валюты')}?$format=application/json;odata=nometadata").json()
    assert "odata.metadata" not in bare
    partner = onec.ib.sets[CP].rows[onec.company.companies[0].guid]["Партнер_Key"]
    one = raw_get(onec, f"{ROOT}{quote('Catalog_Партнеры')}({lit_guid(partner)})?$format=json").json()
    assert one["odata.metadata"].endswith("#Catalog_Партнеры/@Element") and one["КонтактнаяИнформация"][0]["LineNumber"] == "1"
    assert one["ОсновнойМенеджер@navigationLinkUrl"].endswith("/ОсновнойМенеджер") and one["Parent_Key"] == "00000000-0000-0000-0000-000000000000"
    meta = raw_get(onec, ROOT + "$metadata").text
    assert 'FunctionImport Name="Post"' in meta and 'FunctionImport Name="Balance"' in meta and 'DataServiceVersion="3.0"' in meta
    service = raw_get(onec, ROOT)
    assert b"<atom:title>Default</atom:title>" in service.content


def test_error_mapping_names_object_and_code(onec):
    c = client(onec, attempts=2)
    with pytest.raises(NotFound) as e:
        c.one(CP, str(uuid.uuid4()))
    assert e.value.code == "9" and e.value.status == 404 and f"onec {CP}:" in str(e.value)
    with pytest.raises(Rejected) as e:
        c.get(CP, [("$select", "Ref_Key,НетТакогоПоля")])
    assert e.value.code == "6" and "НетТакогоПоля" in str(e.value)
    with pytest.raises(Rejected) as e:
        c.get(CP, [("$filter", "(Description eq 'x'")])
    assert e.value.code == "14"
    with pytest.raises(Rejected) as e:
        c.get(CP, [("$filter", "Ref_Key eq guid'not-a-guid'")])
    assert e.value.code in ("1", "14")
    with pytest.raises(PermanentError) as e:
        c.get("Catalog_НетТакого", [])
    assert type(e.value) is PermanentError and "Catalog_НетТакого" in str(e.value)
    onec.odata.write_failures[CP] = "Не заполнен ИНН (обработчик ПередЗаписью)"
    with pytest.raises(Rejected) as e:
        c.create(CP, {"Description": "x"})
    assert e.value.code == "-1" and e.value.status == 500
    doc = next(iter(onec.ib.sets["Document_РеализацияТоваровУслуг"].rows))
    onec.odata.posting_failures[doc] = "Недостаточно товара на складе"
    with pytest.raises(Rejected) as e:
        c.post_document("Document_РеализацияТоваровУслуг", doc)
    assert e.value.code == "-1" and "Недостаточно" in str(e.value)
    onec.odata.publication_missing = True
    with pytest.raises(PermanentError) as e:
        c.count(CP)
    assert type(e.value) is PermanentError and "publication" in str(e.value)


def test_bom_before_json_is_tolerated_in_bodies_and_errors(onec):
    onec.odata.bom = True
    c = client(onec)
    assert c.get("Catalog_Валюты", [])["value"]
    with pytest.raises(NotFound) as e:
        c.one(CP, str(uuid.uuid4()))
    assert e.value.code == "9"


def test_502_is_retried_then_transient(onec):
    counter = RequestCounter()
    c = client(onec, attempts=3, counter=counter)
    onec.odata.fail_next = 1
    assert c.count(CP) > 0 and counter.requests == 2
    onec.odata.fail_next = 5
    with pytest.raises(TransientError) as e:
        c.count(CP)
    assert e.value.status == 502


def test_long_key_batches_are_split_after_iis_404_15(onec):
    guids = [c.guid for c in onec.company.companies if c.in_onec]
    onec.odata.max_url = 1500  # ~8 guids per URL
    c = client(onec, key_batch=30)
    rows = [r for p in c.by_keys(CP, guids, select=["Ref_Key"]) for r in p]
    assert {r["Ref_Key"] for r in rows} == set(guids)
    assert any(len(p) > 1500 for _, p in onec.odata.requests)  # refused ones were really sent
    assert max(len(p) for _, p in onec.odata.requests[-3:]) <= 1500


def test_full_pull_maps_every_stream(any_onec):
    ctx = Context(clock=FixedClock(any_onec.company.anchor))
    src = source(any_onec, ctx, page_size=20)
    users, _, _, user_sweeps = pull(src, "users", None)
    clients, _, _, _ = pull(src, "counterparties", None)
    docs, _, _, doc_sweeps = pull(src, "documents", None)
    debts, _, _, _ = pull(src, "debts", None)
    co = any_onec.company
    assert {m.source_id for m in users} == {m.guid for m in co.managers}
    assert user_sweeps[0].kind == "user"
    in_onec = [c for c in co.companies if c.in_onec]
    assert len(clients) == len(in_onec) and all(isinstance(c, Client) for c in clients)
    by_guid = {c.guid: c for c in clients}
    for c in in_onec:
        got = by_guid[c.guid]
        assert got.tax_id == c.tax_id and got.title == c.title
        assert got.responsible_key == make_key("onec", "user", co.manager(c.responsible).guid)
        assert len(got.phones) == len(c.phones) and c.emails[0] in got.emails
    assert doc_sweeps[0].kind == "document"
    types = {d.doc_type for d in docs}
    assert types == {"order", "invoice", "sale", "payment"}
    sales = {d.source_id: d for d in docs if d.doc_type == "sale"}
    for s in (x for x in co.onec_docs if x.type == "sale"):
        assert sales[s.guid].amount == s.amount and sales[s.guid].client_key == make_key("onec", "counterparty", s.counterparty_guid)
        assert sales[s.guid].date == s.date.replace(microsecond=0)  # 1C keeps seconds; same instant in Kyiv wall time
    payments = [d for d in docs if d.doc_type == "payment"]
    assert payments and all(p.basis_key and p.basis_key.startswith("onec:document:") for p in payments)
    debtor = co.company(co.stories["debtor"])
    assert [d.client_key for d in debts] == [make_key("onec", "counterparty", debtor.guid)]
    assert debts[0].amount == 42000.0
    # УТ 11 from its terms register, УНФ / УТП by ageing the shipment against its contract's term
    assert debts[0].overdue_amount == 42000.0 and debts[0].overdue_since == co.debts[0].due and debts[0].currency == "UAH"
    sale = next(x for x in co.onec_docs if x.type == "sale" and x.counterparty_guid == debtor.guid)
    assert debts[0].documents == ({"number": sale.number, "date": sale.date.date().isoformat(), "amount": 42000.0, "unpaid": 42000.0,
                                   "due": co.debts[0].due.isoformat()},)


def test_incremental_pull_fetches_only_changed_documents(onec):
    ib, co = onec.ib, onec.company
    clock = FixedClock(co.anchor)
    ctx = Context(clock=clock)
    src = source(onec, ctx)
    sale_obj = "Document_РеализацияТоваровУслуг"
    c = client(onec)
    recent = [c.create(sale_obj, {"Date": wall(co.anchor - timedelta(days=1, hours=i)), "СуммаДокумента": 10.0 + i,
                                  "Контрагент_Key": co.companies[i].guid}) for i in range(3)]
    for r in recent:
        c.post_document(sale_obj, r["Ref_Key"])
    oldest = min(ib.sets[sale_obj].rows.values(), key=lambda r: r["Date"])
    _, _, cursor, _ = pull(src, "documents", None)
    # a no-change cycle: one narrow window query per document object
    before = ctx.counter("onec").requests
    records, deleted, cursor, _ = pull(src, "documents", cursor)
    assert records == [] and deleted == []
    assert ctx.counter("onec").requests - before == len(src.names.doc_objects()) == 5
    window = [p for _, p in onec.odata.requests[-5:]]
    assert all("$select=Ref_Key,DataVersion,Date" in p and "Date%20ge%20datetime'" in p for p in window)
    # now: edit one, mark one deleted, unpost one, create one dated "now", edit an old one
    c.patch(sale_obj, recent[0]["Ref_Key"], {"Комментарий": "edited"})
    c.patch(sale_obj, recent[1]["Ref_Key"], {"DeletionMark": True})
    c.unpost_document(sale_obj, recent[2]["Ref_Key"])
    new = c.create(sale_obj, {"Date": wall(co.anchor), "Контрагент_Key": co.companies[0].guid, "СуммаДокумента": 99.5,
                              "Posted": True})
    assert new["Posted"] is False and new["DataVersion"] == "AAAAAAAAAAA="  # created unposted; Posted in a body is ignored
    c.post_document(sale_obj, new["Ref_Key"])
    c.patch(sale_obj, oldest["Ref_Key"], {"СуммаДокумента": 1.0})  # back-dated edit: outside the window
    before = ctx.counter("onec").requests
    records, deleted, cursor, _ = pull(src, "documents", cursor)
    by_id = {d.source_id: d for d in records}
    assert set(by_id) == {recent[0]["Ref_Key"], recent[1]["Ref_Key"], recent[2]["Ref_Key"], new["Ref_Key"]}
    assert by_id[recent[1]["Ref_Key"]].deleted is True
    assert by_id[recent[2]["Ref_Key"]].posted is False
    assert by_id[new["Ref_Key"]].posted is True and by_id[new["Ref_Key"]].amount == 99.5
    assert ctx.counter("onec").requests - before == 5 + 1  # window queries + one key batch
    records, _, cursor, _ = pull(src, "documents", cursor)
    assert records == []
    clock.at = co.anchor + timedelta(days=8)  # the weekly wide re-read catches the back-dated edit
    records, _, cursor, sweeps = pull(src, "documents", cursor)
    assert {d.source_id: d.amount for d in records}[oldest["Ref_Key"]] == 1.0 and sweeps[0].kind == "document"


def test_a_physically_deleted_document_in_the_window_is_reported_deleted(onec):
    ib, co = onec.ib, onec.company
    ctx = Context(clock=FixedClock(co.anchor))
    src = source(onec, ctx)
    sale_obj = "Document_РеализацияТоваровУслуг"
    c = client(onec)
    doc = c.create(sale_obj, {"Date": wall(co.anchor - timedelta(hours=2)), "СуммаДокумента": 10.0})
    _, _, cursor, _ = pull(src, "documents", None)
    c.delete(sale_obj, doc["Ref_Key"])
    assert doc["Ref_Key"] not in ib.sets[sale_obj].rows
    records, deleted, _, _ = pull(src, "documents", cursor)
    assert records == [] and deleted == [make_key("onec", "document", doc["Ref_Key"])]


def test_catalog_no_change_cycle_is_one_count_and_a_new_counterparty_is_found(onec):
    co = onec.company
    clock = FixedClock(co.anchor)
    ctx = Context(clock=clock)
    src = source(onec, ctx, page_size=500)
    _, _, cursor, _ = pull(src, "counterparties", None)
    clock.at = co.anchor + timedelta(hours=1)
    before = ctx.counter("onec").requests
    records, _, cursor, _ = pull(src, "counterparties", cursor)
    assert records == [] and ctx.counter("onec").requests - before == 1
    c = client(onec)
    created = c.create(CP, {"Description": "Новий клієнт ТОВ", "КодПоЕДРПОУ": "43210987",
                            "КонтактнаяИнформация": [{"LineNumber": 1, "Тип": "Телефон", "Представление": "+38 (067) 111-22-33"}]})
    before = ctx.counter("onec").requests
    records, _, cursor, sweeps = pull(src, "counterparties", cursor)
    assert [r.guid for r in records] == [created["Ref_Key"]]
    assert records[0].tax_id == "43210987" and records[0].phones == ("+38 (067) 111-22-33",)
    assert ctx.counter("onec").requests - before == 4  # count, key listing, partner listing, one key batch
    assert sweeps and created["Ref_Key"] in sweeps[0].live_ids


def test_partner_manager_change_reaches_the_client_on_the_sweep(onec):
    co = onec.company
    clock = FixedClock(co.anchor)
    ctx = Context(clock=clock)
    src = source(onec, ctx)
    _, _, cursor, _ = pull(src, "counterparties", None)
    target = co.companies[3]
    partner = onec.ib.sets[CP].rows[target.guid]["Партнер_Key"]
    new_manager = co.managers[8].guid
    client(onec).patch("Catalog_Партнеры", partner, {"ОсновнойМенеджер_Key": new_manager})
    clock.at = co.anchor + timedelta(hours=7)  # the catalog sweep is due
    records, deleted, _, _ = pull(src, "counterparties", cursor)
    assert [r.guid for r in records] == [target.guid]
    assert records[0].responsible_key == make_key("onec", "user", new_manager)


def test_balance_accepts_both_condition_quote_styles(onec):
    co = onec.company
    debtor = co.company(co.stories["debtor"])
    key = next(r["Ref_Key"] for r in onec.ib.sets["Catalog_КлючиАналитикиУчетаПоПартнерам"].rows.values()
               if r["Контрагент_Key"] == debtor.guid)
    reg = quote("AccumulationRegister_РасчетыСКлиентами")
    period = wall(co.anchor)
    doubled = f"Condition='АналитикаУчетаПоПартнерам_Key eq guid''{key}'''"
    nested = f"Condition='АналитикаУчетаПоПартнерам_Key eq guid'{key}''"
    results = []
    for cond in (doubled, nested):
        path = f"{ROOT}{reg}/Balance(Period=datetime'{period}',{quote(cond, safe=chr(39) + '=')},Dimensions='{quote('АналитикаУчетаПоПартнерам')}')?$format=json"
        r = raw_get(onec, path)
        assert r.status_code == 200, r.text
        results.append(r.json()["value"])
    assert results[0] == results[1] and len(results[0]) == 1 and results[0][0]["СуммаBalance"] == 42000.0
    c = client(onec)
    rows = c.balance("AccumulationRegister_РасчетыСКлиентамиПоСрокам", period=datetime.fromisoformat(period),
                     condition=f"ДатаПлановогоПогашения lt datetime'{wall(co.anchor)[:10]}T00:00:00'",
                     dimensions=["АналитикаУчетаПоПартнерам", "ДатаПлановогоПогашения"])
    assert [r["ДолгУпрBalance"] for r in rows] == [42000.0]
    with pytest.raises(Rejected) as e:
        c.get(CP, [], path=f"{CP}/Balance()")
    assert e.value.code == "6"


# ---------------------------------------------------------------- writing

def _sink(sb: OneCSandbox) -> tuple[ODataSink, Context]:
    ctx = Context(clock=FixedClock(sb.company.anchor))
    sink = ODataSink(settings(sb), ctx)
    sink.client.wait = 0
    return sink, ctx


def _task_action(sb: OneCSandbox, key: str = "debtors:onec:debt:x:2026-11-03:0") -> PlannedAction:
    c = sb.company.companies[0]
    m = sb.company.manager(c.responsible)
    cp_key = make_key("onec", "counterparty", c.guid)
    a = PlannedAction(key=key, rule="debtors", type="task", system="onec", subject_key=cp_key, client_key=cp_key,
                      payload={"title": f"Debt: {c.title}", "description": "owes 42000 UAH", "responsible": make_key("onec", "user", m.guid),
                               "deadline": "2026-11-24T18:00:00+02:00", "bindings": [cp_key]}, reason="test")
    a.payload["description"] += f"\n\n[{a.marker}]"
    return a


def test_task_is_created_unposted_with_marker_and_reconciled(any_onec):
    sink, ctx = _sink(any_onec)
    a = _task_action(any_onec)
    assert sink.supports("task") and sink.reconcile(a) is None
    res = sink.execute(a)
    task_set = any_onec.ib.sets[any_onec.ib.fl["task"]]
    row = task_set.rows[res.remote_id]
    assert a.marker in row[any_onec.ib.fl["task_text"]]
    assert row.get("Posted", False) is False and row.get("Executed", False) is False
    assert row[any_onec.ib.fl["task_deadline"]] == "2026-11-24T18:00:00"
    assert row[any_onec.ib.fl["task_responsible"]] == any_onec.company.manager(any_onec.company.companies[0].responsible).guid
    assert sink.reconcile(a).remote_id == res.remote_id
    again = sink.execute(a)  # an executor retry after an ambiguous failure: no second task
    assert again.remote_id == res.remote_id and len(task_set.rows) == 1
    assert any("substringof('cn-" in requests.utils.unquote(p) for _, p in any_onec.odata.requests)


def test_task_create_failing_in_1c_business_logic_is_rejected(onec):
    sink, _ = _sink(onec)
    onec.odata.write_failures["Task_ЗадачаИсполнителя"] = "Не указан исполнитель"
    with pytest.raises(Rejected) as e:
        sink.execute(_task_action(onec))
    assert "Task_ЗадачаИсполнителя" in str(e.value) and e.value.code == "-1"


def _reassign(sb: OneCSandbox, to: str, frm: str) -> PlannedAction:
    cp = sb.company.companies[0]
    return PlannedAction(key="release:x:1:r", rule="release", type="reassign", system="onec", subject_key="s", client_key=None,
                         payload={"entities": [make_key("onec", "counterparty", cp.guid)], "to": make_key("onec", "user", to),
                                  "from": make_key("onec", "user", frm)}, reason="test")


def test_reassign_patches_the_manager_field_guarded_by_dataversion(any_onec):
    sb = any_onec
    sink, ctx = _sink(sb)
    cp = sb.company.companies[0]
    old, new = sb.company.manager(cp.responsible).guid, sb.company.managers[6].guid
    ib = sb.ib
    holder = ib.sets["Catalog_Партнеры"].rows[ib.sets[CP].rows[cp.guid]["Партнер_Key"]] if ib.fl["partners"] else ib.sets[CP].rows[cp.guid]
    field = ib.fl["partner_manager"] or ib.fl["cp_manager"]
    version = holder["DataVersion"]
    a = _reassign(sb, new, old)
    assert sink.reconcile(a) is None
    sink.execute(a)
    assert holder[field] == new and holder["DataVersion"] != version
    assert sink.reconcile(a).detail == "manager already set"
    patches = [p for m, p in sb.odata.requests if m == "PATCH"]
    assert len(patches) == 1
    sink.execute(a)  # idempotent
    assert len([1 for m, _ in sb.odata.requests if m == "PATCH"]) == 1


def test_reassign_refuses_to_overwrite_a_manager_changed_in_1c(onec):
    sink, _ = _sink(onec)
    co = onec.company
    cp = co.companies[0]
    holder = onec.ib.sets["Catalog_Партнеры"].rows[onec.ib.sets[CP].rows[cp.guid]["Партнер_Key"]]
    holder["ОсновнойМенеджер_Key"] = co.managers[7].guid  # a human moved the client meanwhile
    with pytest.raises(Rejected, match="changed in 1C"):
        sink.execute(_reassign(onec, co.managers[6].guid, co.manager(cp.responsible).guid))
    assert holder["ОсновнойМенеджер_Key"] == co.managers[7].guid


def test_guarded_patch_decides_again_when_dataversion_moves_between_reads(onec):
    sink, _ = _sink(onec)
    co = onec.company
    cp = co.companies[0]
    holder = onec.ib.sets["Catalog_Партнеры"].rows[onec.ib.sets[CP].rows[cp.guid]["Партнер_Key"]]
    real_one = sink.client.one
    calls = {"n": 0}

    def racing_one(obj, guid, select=None):  # a concurrent save lands between our read and re-read
        row = real_one(obj, guid, select)
        calls["n"] += 1
        if calls["n"] == 2 and obj == "Catalog_Партнеры":
            holder["DataVersion"] = onec.ib.version()
        return row

    sink.client.one = racing_one
    a = _reassign(onec, co.managers[6].guid, co.manager(cp.responsible).guid)
    sink.execute(a)
    assert holder["ОсновнойМенеджер_Key"] == co.managers[6].guid
    assert calls["n"] == 5  # counterparty, read, stale re-read, read, re-read


def test_comment_is_appended_once_to_the_counterparty(onec):
    sink, _ = _sink(onec)
    cp = onec.company.companies[0]
    a = PlannedAction(key="release:x:1:rc", rule="release", type="comment", system="onec", subject_key="s", client_key=None,
                      payload={"entity": make_key("onec", "counterparty", cp.guid), "text": "Released to Ivan"}, reason="t")
    a.payload["text"] += f" [{a.marker}]"
    row = onec.ib.sets[CP].rows[cp.guid]
    row["Комментарий"] = "VIP, call before noon"
    assert sink.reconcile(a) is None
    sink.execute(a)
    sink.execute(a)
    assert row["Комментарий"].startswith("VIP, call before noon\n") and row["Комментарий"].count(a.marker) == 1
    assert sink.reconcile(a) is not None


def test_write_semantics_of_the_emulator_match_1c(onec):
    c = client(onec)
    cp = onec.company.companies[0].guid
    before = onec.ib.sets[CP].rows[cp]["DataVersion"]
    out = c.patch(CP, cp, {"НетТакогоПоля": 1, "Description": "x" * 400, "Ref_Key": str(uuid.uuid4())})
    assert out["Ref_Key"] == cp and len(out["Description"]) == 150 and out["DataVersion"] != before
    assert c.patch(CP, cp, {})["DataVersion"] != out["DataVersion"]  # even a no-op write
    with pytest.raises(Rejected) as e:
        c.patch(CP, cp, {"КонтактнаяИнформация": [{"Тип": "Телефон", "Представление": "1"}]})
    assert e.value.code == "-1"
    r = requests.post(onec.odata.url + "/" + quote(CP) + "?$format=json", auth=(USER.encode(), PASSWORD.encode()),
                      data=json.dumps({"Description": "Локація"}).encode(), timeout=10)
    assert r.status_code == 201 and "ETag" not in r.headers
    assert "Catalog_Контрагенты".encode() in r.headers["Location"].encode("latin-1")  # raw UTF-8 bytes
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    stale = requests.patch(onec.odata.url + "/" + quote(CP) + f"({lit_guid(cp)})?$format=json", timeout=10,
                           headers={"Authorization": "Basic " + auth, "If-Match": '"AAAAAAAAAAA="'}, data=b'{"Code":"Z1"}')
    assert stale.status_code == 200 and stale.json()["Code"] == "Z1"  # no optimistic locking


# ---------------------------------------------------------------- the adapter as the core uses it

def test_check_probes_the_exact_reads_and_names_a_wrong_preset(any_onec):
    from connector.config import Settings
    from onec.adapter import ADAPTER

    ctx = Context(clock=FixedClock(any_onec.company.anchor))
    right = ADAPTER.check(Settings(onec=settings(any_onec)), ctx)
    assert right and all(r.ok for r in right), [r for r in right if not r.ok]
    wrong_preset = "unf" if any_onec.preset != "unf" else "ut11"
    wrong = ADAPTER.check(Settings(onec=OneC(odata=settings(any_onec).odata, preset=wrong_preset)), ctx)
    assert any(not r.ok for r in wrong)


def test_onec_only_config_runs_debtors_and_lost_into_1c(onec, tmp_path, monkeypatch):
    from pathlib import Path

    from connector.config import load_settings
    from connector.runner import cycle, make_context, open_store

    for k, v in onec.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CONNECTOR_STORE", f"sqlite:///{tmp_path / 'onec.db'}")
    cfg = load_settings(Path(__file__).resolve().parents[2] / "config" / "onec-only.yaml")
    assert cfg.bitrix24 is None and cfg.onec is not None
    store = open_store(cfg)
    co = onec.company
    rep = cycle(cfg, store, make_context(store, FixedClock(co.anchor)), execute=True)
    assert rep.sync.ok and rep.execution is not None
    assert rep.execution.by_rule.get("debtors") == {"done": 1} and rep.execution.by_rule.get("lost") == {"done": 1}
    tasks = list(onec.ib.sets["Task_ЗадачаИсполнителя"].rows.values())
    debtor = co.company(co.stories["debtor"])
    debt_task = next(t for t in tasks if t["Description"].startswith("Борг"))
    assert debt_task["Предмет"] == debtor.guid and debt_task["Исполнитель_Key"] == co.manager(debtor.responsible).guid
    assert "[cn-" in debt_task["Содержание"]
    again = cycle(cfg, store, make_context(store, FixedClock(co.anchor + timedelta(hours=1))), execute=True)
    assert again.execution.done == 0 and len(onec.ib.sets["Task_ЗадачаИсполнителя"].rows) == 2
    assert again.sync.sources[0].requests <= 10


# ---------------------------------------------------------------- redirects and a total deadline


def test_a_redirect_is_not_followed_and_the_basic_credentials_do_not_reach_its_target():
    from tests.contract.hostile import Recorder, Redirector

    target = Recorder("127.0.0.2")
    redirect = Redirector(target.origin)
    try:
        c = ODataClient(redirect.origin + "/base/odata/standard.odata", USER, PASSWORD, RequestCounter(), attempts=1)
        with pytest.raises(PermanentError, match="redirected the request to 127.0.0.2"):
            c.count("Catalog_Контрагенты")
        assert redirect.hits == 1 and target.requests == []
    finally:
        redirect.stop()
        target.stop()


def test_a_dripping_server_ends_in_a_clear_timeout_within_the_deadline():
    from tests.contract.hostile import DripServer, http_answer

    drip = DripServer(http_answer(b'{"value": []}'), interval=0.05)
    try:
        c = ODataClient(drip.url + "/base/odata/standard.odata", USER, PASSWORD, RequestCounter(), attempts=1, timeout=1.0)
        with pytest.raises(TransientError, match="no complete answer within 1 s"):
            c.get("Catalog_Контрагенты", [])
        assert drip.completed == 0
    finally:
        drip.stop()
