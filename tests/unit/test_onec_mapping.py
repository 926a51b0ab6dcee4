"""1C wire rows -> domain, per configuration preset, on hand-built rows (no emulator, no network)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connector.domain import ClientKind, DocumentType, make_key
from connector.errors import AuthError, ConfigError, NotFound, PermanentError, Rejected, TransientError
from onec.client import build_query, classify, keys_filter, lit_guid, lit_str, parse_error
from onec.errors import UrlTooLong
from onec.mapping import (
    doc_select,
    make_debt,
    map_counterparty,
    map_document,
    map_soap_document,
    map_user,
    overdue_buckets,
    parse_wall,
    receivable_balances,
)
from onec.presets import resolve

KYIV = ZoneInfo("Europe/Kyiv")
ZERO = "00000000-0000-0000-0000-000000000000"
CP = "6b4cb242-4a23-4596-a217-beaddbc496cb"
PARTNER = "11111111-2222-4333-8444-555555555555"
MGR = "d23f0824-128b-4f33-8c5c-7fd0a6a3a450"
MGR2 = "9531985d-5d9d-49f8-9818-e811892f902b"
DOC = "cc2b9e3a-2516-5abc-83b3-171bb8366b2c"
BASIS = "e7ac47f9-d6c8-51e3-8b5a-6386fd3e3378"
UAH = "0f4c15ba-4617-561e-b829-c7d077c7c989"


def phone(text: str, kind: str = "Телефон") -> dict:
    return {"Ref_Key": CP, "LineNumber": "1", "Тип": kind, "Вид_Key": ZERO, "Представление": text}


# ---------------------------------------------------------------- counterparties

def test_ut11_counterparty_takes_manager_and_phones_from_its_partner():
    n = resolve("ut11")
    row = {"Ref_Key": CP.upper(), "DataVersion": "AAAAAAAAAAE=", "DeletionMark": False, "IsFolder": False,
           "Description": " Karpaty Timber LLC ", "КодПоЕДРПОУ": "", "ИНН": "30-000-037", "ЮрФизЛицо": "ЮрЛицо",
           "Партнер_Key": PARTNER, "КонтактнаяИнформация": [phone("067-111-22-33"), phone("office@k.example", "АдресЭлектроннойПочты")]}
    partner = {"Ref_Key": PARTNER, "ОсновнойМенеджер_Key": MGR,
               "КонтактнаяИнформация": [phone("+38 (050) 933-92-87, 044 123-45-67"), phone("067-111-22-33")]}
    c = map_counterparty(row, n, partner=partner)
    assert c.key == make_key("onec", "counterparty", CP) and c.guid == CP and c.kind is ClientKind.COMPANY
    assert c.title == "Karpaty Timber LLC" and c.tax_id == "30000037"  # ИНН when КодПоЕДРПОУ is empty, digits only
    assert c.responsible_key == make_key("onec", "user", MGR)
    assert c.phones == ("067-111-22-33", "+38 (050) 933-92-87", "044 123-45-67")  # several numbers in one presentation
    assert c.emails == ("office@k.example",) and c.segment == "ЮрЛицо"


def test_ut11_counterparty_without_partner_has_no_manager():
    n = resolve("ut11")
    c = map_counterparty({"Ref_Key": CP, "Description": "X", "КодПоЕДРПОУ": "12345678", "Партнер_Key": ZERO}, n,
                         partner={"Ref_Key": PARTNER, "ОсновнойМенеджер_Key": ZERO})
    assert c.responsible_key is None and c.tax_id == "12345678" and c.phones == ()


def test_unf_counterparty_manager_is_its_own_responsible():
    n = resolve("unf")
    c = map_counterparty({"Ref_Key": CP, "Description": "X", "КодПоЕДРПОУ": "40000001", "ИНН": "1234567890",
                          "Ответственный_Key": MGR, "КонтактнаяИнформация": [phone("0501234567")]}, n)
    assert c.responsible_key == make_key("onec", "user", MGR) and c.tax_id == "40000001" and c.phones == ("0501234567",)


def test_utp_counterparty_contacts_come_from_the_information_register():
    n = resolve("utp")
    assert n.obj("contact_info") == "InformationRegister_КонтактнаяИнформация"
    rows = [{"Объект": CP, "Тип": "Телефон", "Представление": "(050) 123-45-67"},
            {"Объект": CP, "Тип": "АдресЭлектроннойПочты", "Представление": "a@b.example"},
            {"Объект": CP, "Тип": "Адрес", "Представление": "Київ"}]
    c = map_counterparty({"Ref_Key": CP, "Description": "X", "ОсновнойМенеджерПокупателя_Key": MGR2}, n, contacts=rows)
    assert c.responsible_key == make_key("onec", "user", MGR2)
    assert c.phones == ("(050) 123-45-67",) and c.emails == ("a@b.example",)


def test_users_map_to_managers_and_invalid_ones_are_inactive():
    n = resolve("ut11")
    m = map_user({"Ref_Key": MGR, "Description": "Оксана Олійник", "Недействителен": False, "DeletionMark": False,
                  "КонтактнаяИнформация": [phone("o@shop.example", "АдресЭлектроннойПочты")]}, n)
    assert m.key == make_key("onec", "user", MGR) and m.name == "Оксана Олійник" and m.active and m.email == "o@shop.example"
    assert not map_user({"Ref_Key": MGR, "Description": "x", "Недействителен": True}, n).active
    assert not map_user({"Ref_Key": MGR, "Description": "x", "DeletionMark": True}, resolve("utp")).active


# ---------------------------------------------------------------- documents

@pytest.mark.parametrize(("preset", "currency_field", "manager_field"), [
    ("ut11", "Валюта_Key", "Менеджер_Key"),
    ("unf", "ВалютаДокумента_Key", "Ответственный_Key"),
    ("utp", "ВалютаДокумента_Key", "Ответственный_Key"),
])
def test_invoice_maps_per_preset(preset, currency_field, manager_field):
    n = resolve(preset)
    select = doc_select(n, "invoice")
    assert {currency_field, manager_field, "Контрагент_Key", "СуммаДокумента", "ДокументОснование", "ДокументОснование_Type",
            "СрокОплаты", "Posted", "DeletionMark"} <= set(select)
    row = {"Ref_Key": DOC, "DataVersion": "AAAAAAAAAAI=", "DeletionMark": False, "Number": "КП-0000001 ",
           "Date": "2026-07-19T12:15:00", "Posted": True, "Контрагент_Key": CP, "СуммаДокумента": 18500.5,
           currency_field: UAH, manager_field: MGR, "ДокументОснование": BASIS,
           "ДокументОснование_Type": "StandardODATA.Document_ЗаказКлиента", "СрокОплаты": "2026-08-01T00:00:00"}
    d = map_document(row, "invoice", n, KYIV, {UAH: "UAH"})
    assert d.key == make_key("onec", "document", DOC) and d.doc_type is DocumentType.INVOICE
    assert d.date == datetime(2026, 7, 19, 9, 15, tzinfo=UTC)  # Kyiv summer time, +03:00
    assert d.client_key == make_key("onec", "counterparty", CP) and d.amount == 18500.5 and d.currency == "UAH"
    assert d.number == "КП-0000001" and d.posted and not d.deleted and d.paid is None
    assert d.responsible_key == make_key("onec", "user", MGR) and d.basis_key == make_key("onec", "document", BASIS)
    assert d.due_date == date(2026, 8, 1)


def test_payment_select_has_no_manager_and_basis_of_a_non_document_is_ignored():
    n = resolve("ut11")
    assert "Менеджер_Key" not in doc_select(n, "payment") and "ДокументОснование" not in doc_select(n, "order")
    row = {"Ref_Key": DOC, "Date": "2026-01-05T00:00:00", "Posted": False, "DeletionMark": True, "Контрагент_Key": ZERO,
           "СуммаДокумента": 5, "ДокументОснование": BASIS, "ДокументОснование_Type": "StandardODATA.Catalog_Договоры"}
    d = map_document(row, "payment", n, KYIV)
    assert d.deleted and not d.posted and d.client_key is None and d.basis_key is None and d.responsible_key is None


def test_empty_1c_values_mean_none():
    assert parse_wall("0001-01-01T00:00:00", KYIV) is None and parse_wall("", KYIV) is None
    d = map_document({"Ref_Key": DOC, "Date": "0001-01-01T00:00:00", "СрокОплаты": "0001-01-01T00:00:00"}, "invoice", resolve("unf"), KYIV)
    assert d.due_date is None and d.date.year == 1


def test_soap_document_dates_get_the_base_timezone():
    d = map_soap_document({"Ref": DOC, "Type": "sale", "Number": "1", "Date": datetime(2026, 11, 20, 10, 0), "CounterpartyRef": CP,
                           "Amount": "100.50", "Posted": True, "DeletionMark": False, "BasisRef": ZERO}, KYIV)
    assert d.date.utcoffset() == timedelta(hours=2) and d.amount == 100.5 and d.basis_key is None and d.doc_type == "sale"


# ---------------------------------------------------------------- receivables

def test_ut11_debts_resolve_analytics_keys_and_overdue_terms():
    n = resolve("ut11")
    a1, a2, a3 = (f"aaaaaaaa-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
    other = "bbbbbbbb-0000-4000-8000-000000000001"
    usd = "cccccccc-0000-4000-8000-000000000001"
    balance = [
        {"АналитикаУчетаПоПартнерам_Key": a1, "Валюта_Key": UAH, "СуммаBalance": 30000.0},
        {"АналитикаУчетаПоПартнерам_Key": a2, "Валюта_Key": UAH, "СуммаBalance": 12000.0},  # same counterparty, other contract
        {"АналитикаУчетаПоПартнерам_Key": a1, "Валюта_Key": usd, "СуммаBalance": 100.0},
        {"АналитикаУчетаПоПартнерам_Key": a3, "Валюта_Key": UAH, "СуммаBalance": -5000.0},  # an advance: we owe them
    ]
    overdue = [
        {"АналитикаУчетаПоПартнерам_Key": a1, "ДатаПлановогоПогашения": "2026-11-03T00:00:00", "ДолгУпрBalance": 20000.0},
        {"АналитикаУчетаПоПартнерам_Key": a2, "ДатаПлановогоПогашения": "2026-10-20T00:00:00", "ДолгУпрBalance": 2000.0},
        {"АналитикаУчетаПоПартнерам_Key": a2, "ДатаПлановогоПогашения": "2026-09-01T00:00:00", "ДолгУпрBalance": -1000.0},
    ]
    as_of = datetime(2026, 11, 23, 10, tzinfo=KYIV)
    to_cp = {a1: CP, a2: CP, a3: other}
    balances = receivable_balances(balance, n, to_counterparty=to_cp, currencies={UAH: "UAH", usd: "USD"})
    assert balances == {CP: (42000.0, "UAH"), other: (-5000.0, "UAH")}  # the advance is kept; the caller skips it
    buckets = overdue_buckets(overdue, n, to_counterparty=to_cp)
    assert buckets == {CP: [(date(2026, 9, 1), -1000.0), (date(2026, 10, 20), 2000.0), (date(2026, 11, 3), 20000.0)]}
    d = make_debt(CP, 42000.0, "UAH", buckets[CP], [], as_of=as_of, today=as_of.date())
    assert d.key == make_key("onec", "debt", CP) and d.client_key == make_key("onec", "counterparty", CP)
    assert d.amount == 42000.0 and d.currency == "UAH" and d.as_of == as_of
    assert d.overdue_amount == 21000.0 and d.overdue_since == date(2026, 10, 20)
    # the same debt a week earlier: only the October part had passed its due date
    earlier = make_debt(CP, 42000.0, "UAH", buckets[CP], [], as_of=as_of, today=date(2026, 11, 1))
    assert (earlier.overdue_amount, earlier.overdue_since) == (1000.0, date(2026, 10, 20))


def test_debts_without_a_terms_register_take_buckets_and_documents_from_ageing():
    n = resolve("utp")
    balances = receivable_balances([{"Контрагент_Key": CP, "СуммаВзаиморасчетовBalance": 900.0}], n,
                                   default_currency=n.f("currency.default"))
    assert balances == {CP: (900.0, "UAH")}
    docs = [{"number": "РН-1", "date": "2026-10-01", "amount": 900.0, "unpaid": 900.0, "due": "2026-10-15"}]
    d = make_debt(CP, 900.0, "UAH", [(date(2026, 10, 15), 900.0)], docs, as_of=datetime(2026, 11, 1, tzinfo=KYIV), today=date(2026, 11, 1))
    assert (d.overdue_amount, d.overdue_since, d.documents) == (900.0, date(2026, 10, 15), tuple(docs))
    assert receivable_balances([{"Контрагент_Key": CP, "СуммаBalance": 0.001}], resolve("unf")) == {CP: (0.0, "")}


# ---------------------------------------------------------------- presets

def test_yaml_overrides_replace_names_and_per_type_fields_fall_back_to_doc():
    n = resolve("unf", objects={"task": "Document_см_Задача", "payment": "Document_ПоступлениеНаСчет"},
                fields={"sale.amount": "СуммаВсего", "counterparty.tax_id": "НалоговыйНомер"})
    assert n.obj("task") == "Document_см_Задача" and n.objs("payment") == ["Document_ПоступлениеНаСчет"]
    assert n.f("sale.amount") == "СуммаВсего" and n.f("order.amount") == "СуммаДокумента"
    assert n.fs("counterparty.tax_id") == ["НалоговыйНомер"]
    assert resolve("ut11").objs("payment") == ["Document_ПоступлениеБезналичныхДенежныхСредств", "Document_ПриходныйКассовыйОрдер"]
    assert [t for t, _ in resolve("ut11").doc_objects()] == ["order", "invoice", "sale", "payment", "payment"]


def test_unknown_override_names_are_config_errors_not_silent():
    with pytest.raises(ConfigError) as e:
        resolve("ut11", objects={"invoices": "X"}, fields={"counterparty.taxid": "Y"})
    assert len(e.value.problems) == 2 and "onec.objects.invoices" in e.value.problems[0]


# ---------------------------------------------------------------- wire text

def test_query_strings_use_percent_20_never_plus():
    q = build_query([("$format", "json"), ("$filter", "Description eq 'A+B' and Date ge datetime'2026-01-01T00:00:00'"),
                     ("$select", "Ref_Key,КодПоЕДРПОУ")])
    assert "+" not in q and "%2B" in q and "%20eq%20" in q and "$filter=" in q
    assert "%D0%9A%D0%BE%D0%B4" in q  # Cyrillic as UTF-8 percent escapes
    assert lit_str("O'Brien") == "'O''Brien'"
    assert keys_filter([CP]) == f"Ref_Key eq guid'{CP}'"
    with pytest.raises(ValueError):
        lit_guid("x' or true or Ref_Key eq guid'")


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(("status", "body", "write", "expected", "code"), [
    (401, b"401 - Unauthorized", False, AuthError, None),
    (404, '{"odata.error":{"code":"9","message":{"lang":"ru","value":"Экземпляр сущности не найден"}}}'.encode(), False, NotFound, "9"),
    (404, BOM + '{"odata.error":{"code":"8","message":{"lang":"ru","value":"Тип сущности не найден"}}}'.encode(), False, PermanentError, "8"),
    (404, b"<html><body><h1>Not Found</h1></body></html>", False, PermanentError, None),
    (404, b"<h3>HTTP Error 404.15 - Not Found</h3> query string is too long", False, UrlTooLong, None),
    (414, b"", False, UrlTooLong, None),
    (400, '{"odata.error":{"code":"1","message":{"lang":"ru","value":"Не удалось разобрать"}}}'.encode(), False, Rejected, "1"),
    (400, '{"odata.error":{"code":"6","message":{"lang":"ru","value":"Сегмент пути X не найден!"}}}'.encode(), False, Rejected, "6"),
    (400, '{"odata.error":{"code":"14","message":{"lang":"ru","value":"Ошибка разбора"}}}'.encode(), False, Rejected, "14"),
    (500, '{"odata.error":{"code":"-1","message":{"lang":"ru","value":"Не удалось провести"}}}'.encode(), True, Rejected, "-1"),
    (500, b'{"odata.error":{"code":"-1","message":{"lang":"ru","value":"joins can have at most 32767 columns"}}}', False, TransientError, "-1"),
    (502, b"<html>Bad Gateway</html>", False, TransientError, None),
    (503, b"", True, TransientError, None),
    (500, '<m:error xmlns:m="x"><m:code>-1</m:code><m:message xml:lang="ru">Ошибка</m:message></m:error>'.encode(), True, Rejected, "-1"),
])
def test_classify_is_the_one_error_table(status, body, write, expected, code):
    e = classify(status, body, obj="Document_РеализацияТоваровУслуг", write=write)
    assert type(e) is expected and e.code == code and e.status == status
    assert str(e).startswith("onec Document_РеализацияТоваровУслуг: ")


def test_error_text_is_shortened_and_control_characters_dropped():
    value = "echo of input\r\n" + "x" * 1000
    code, text = parse_error(('{{"odata.error":{{"code":"6","message":{{"lang":"ru","value":"{}"}}}}}}'.format(value.replace("\r\n", "\\r\\n"))).encode())
    e = classify(400, ('{{"odata.error":{{"code":"6","message":{{"lang":"ru","value":"{}"}}}}}}'.format(value.replace("\r\n", "\\r\\n"))).encode(), obj="X")
    assert code == "6" and "\n" not in str(e) and len(e.message) <= 300
