"""The base's $metadata against the preset: parsing, resolution, the kv cache (pure, no HTTP)."""

from datetime import UTC, datetime, timedelta

import pytest

from connector.sandbox import generate
from onec.emulator.base import seed
from onec.emulator.odata import metadata
from onec.metadata import MetadataCache, Schema, interest, parse_edmx, resolve_against, russian_name
from onec.presets import resolve

NOW = datetime(2026, 11, 23, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def bases():
    co = generate()
    return {p: seed(co, p) for p in ("ut11", "unf", "utp")}


def schema_of(ib, unpublished=(), hidden=None) -> Schema:
    return parse_edmx(metadata(ib, set(unpublished), hidden or {}).encode())


def test_russian_names_are_what_the_admin_ticks_and_only_the_prefix_splits():
    assert russian_name("Catalog_Контрагенты") == "Справочник.Контрагенты"
    assert russian_name("Document_РеализацияТоваровУслуг") == "Документ.РеализацияТоваровУслуг"
    assert russian_name("AccumulationRegister_РасчетыСКлиентами") == "РегистрНакопления.РасчетыСКлиентами"
    assert russian_name("InformationRegister_см_ОчередьДействий") == "РегистрСведений.см_ОчередьДействий"
    assert russian_name("DocumentJournal_ДокументыПродаж") == "ЖурналДокументов.ДокументыПродаж"
    assert russian_name("Task_ЗадачаИсполнителя") == "Задача.ЗадачаИсполнителя"


def test_parse_reads_properties_tabular_sections_and_balance_results(bases):
    s = schema_of(bases["ut11"])
    cp = s.sets["Catalog_Контрагенты"]
    assert {"Ref_Key", "DataVersion", "ИНН", "Партнер_Key"} <= cp.props and "КонтактнаяИнформация" not in cp.props
    assert {"Тип", "Представление", "LineNumber"} <= cp.tables["КонтактнаяИнформация"]
    reg = s.sets["AccumulationRegister_РасчетыСКлиентамиПоСрокам"]
    assert {"АналитикаУчетаПоПартнерам_Key", "ДатаПлановогоПогашения", "ДолгУпрBalance"} <= reg.balance
    assert s.journals == ["DocumentJournal_ДокументыПродаж"] and {"Ref", "Ref_Type", "Date"} <= s.sets[s.journals[0]].props


def test_parse_takes_tabular_rows_from_their_own_set_and_ignores_namespaces():
    edmx = b"""<?xml version="1.0"?><edmx:Edmx xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" Version="1.0">
    <edmx:DataServices><Schema xmlns="http://schemas.microsoft.com/ado/2008/09/edm" Namespace="StandardODATA">
    <EntityType Name="Catalog_X"><Key><PropertyRef Name="Ref_Key"/></Key><Property Name="Ref_Key" Type="Edm.Guid"/>
      <Property Name="Rows" Type="Collection(StandardODATA.Catalog_X_Rows_RowType)"/></EntityType>
    <EntityType Name="Catalog_X_Rows"><Property Name="Ref_Key" Type="Edm.Guid"/><Property Name="Phone" Type="Edm.String"/></EntityType>
    <EntityContainer Name="C"><EntitySet Name="Catalog_X" EntityType="StandardODATA.Catalog_X"/>
      <EntitySet Name="Catalog_X_Rows" EntityType="StandardODATA.Catalog_X_Rows"/></EntityContainer>
    </Schema></edmx:DataServices></edmx:Edmx>"""
    s = parse_edmx(edmx)
    assert s.sets["Catalog_X"].props == {"Ref_Key"} and s.sets["Catalog_X"].tables == {"Rows": {"Ref_Key", "Phone"}}
    with pytest.raises(ValueError):
        parse_edmx(b"<html>not metadata</html>")
    with pytest.raises(ValueError):
        parse_edmx(b"<broken")


@pytest.mark.parametrize("preset", ["ut11", "unf", "utp"])
def test_every_preset_resolves_cleanly_against_its_emulated_configuration(bases, preset):
    res = resolve_against(resolve(preset), schema_of(bases[preset]))
    assert res.missing == [] and res.warning() is None
    assert res.names.objects == resolve(preset).objects or preset == "ut11"  # ut11 reads no contract term: contracts unused
    assert "Справочник.Контрагенты" in res.publish


def test_the_ut11_contracts_are_not_needed_until_a_contract_term_is_named(bases):
    s = schema_of(bases["ut11"], unpublished={"Catalog_ДоговорыКонтрагентов"})
    plain = resolve_against(resolve("ut11"), s)
    assert plain.missing == [] and "Справочник.ДоговорыКонтрагентов" not in plain.publish and plain.names.obj("contracts") == ""
    named = resolve_against(resolve("ut11", fields={"contract.term": "СрокОплаты"}), s)
    assert [m.logical for m in named.optional_missing] == ["contracts"] and named.names.f("contract.term") == ""


def test_one_missing_name_of_a_list_keeps_the_others(bases):
    s = schema_of(bases["ut11"], hidden={"Catalog_Контрагенты": {"КодПоЕДРПОУ"}})
    res = resolve_against(resolve("ut11"), s)
    assert res.names.f("counterparty.tax_id") == "ИНН"
    [m] = res.missing
    assert (m.logical, m.wire, m.obj, m.required) == ("counterparty.tax_id", "КодПоЕДРПОУ", "Catalog_Контрагенты", False)
    assert "onec.fields.counterparty.tax_id" in res.warning()


def test_a_required_field_of_an_optional_document_switches_only_that_object_off(bases):
    s = schema_of(bases["ut11"], hidden={"Document_ПриходныйКассовыйОрдер": {"СуммаДокумента"}})
    res = resolve_against(resolve("ut11"), s)
    assert res.required_missing == []
    assert res.names.objs("payment") == ["Document_ПоступлениеБезналичныхДенежныхСредств"]
    assert "payments, which need it" in res.warning()


def test_an_optional_document_field_is_blanked_for_its_type_only(bases):
    s = schema_of(bases["unf"], hidden={"Document_СчетНаОплату": {"ВалютаДокумента_Key"}})
    res = resolve_against(resolve("unf"), s)
    assert res.names.f("invoice.currency") == "" and res.names.f("sale.currency") == "ВалютаДокумента_Key"


def test_required_names_missing_are_errors_that_say_where_to_fix_them(bases):
    s = schema_of(bases["unf"], unpublished={"Catalog_Пользователи"}, hidden={"Document_РасходнаяНакладная": {"СуммаДокумента"}})
    res = resolve_against(resolve("unf"), s)
    problems = res.error().problems
    assert len(problems) == 2
    assert "Справочник.Пользователи (Catalog_Пользователи)" in problems[0] and "onec.objects.users" in problems[0]
    assert "Document_РасходнаяНакладная has no field СуммаДокумента" in problems[1] and "onec.fields.sale.amount" in problems[1]


def test_without_analytics_keys_the_ut11_receivables_cannot_be_read(bases):
    s = schema_of(bases["ut11"], unpublished={"Catalog_КлючиАналитикиУчетаПоПартнерам"})
    res = resolve_against(resolve("ut11"), s)
    assert res.required_missing == [] and res.names.obj("receivables") == "" and res.names.obj("overdue") == ""
    assert "debts" in res.warning()


def test_without_the_terms_register_ut11_falls_back_to_ageing(bases):
    s = schema_of(bases["ut11"], hidden={"AccumulationRegister_РасчетыСКлиентамиПоСрокам": {"ДатаПлановогоПогашения"}})
    res = resolve_against(resolve("ut11"), s)
    assert res.names.obj("overdue") == "" and res.names.obj("receivables") == "AccumulationRegister_РасчетыСКлиентами"
    assert "debts are aged by shipments instead" in res.warning()


def test_a_journal_without_its_standard_columns_is_not_used(bases):
    s = schema_of(bases["utp"], hidden={"DocumentJournal_ДокументыПродаж": {"Ref_Type"}})
    res = resolve_against(resolve("utp", objects={"journal": "DocumentJournal_ДокументыПродаж"}), s)
    assert res.names.obj("journal") == "" and "each document type is polled instead" in res.warning()


def test_keep_drops_only_what_the_set_lacks(bases):
    s = schema_of(bases["ut11"], hidden={"Catalog_Контрагенты": {"ЮрФизЛицо"}})
    assert s.keep("Catalog_Контрагенты", ["Ref_Key", "ЮрФизЛицо", "КонтактнаяИнформация", "Партнер/Description"]) == [
        "Ref_Key", "КонтактнаяИнформация", "Партнер/Description"]
    assert s.keep("Catalog_Unknown", ["A", "", "B"]) == ["A", "B"]


def test_the_cache_keeps_the_subset_and_is_reread_on_schedule_on_new_names_or_garbage(bases):
    raw = metadata(bases["unf"], set(), {}).encode()
    kv: dict[str, str] = {}
    fetches = []

    def fetch() -> bytes:
        fetches.append(1)
        return raw

    names = resolve("unf")
    cache = MetadataCache("http://x/odata/", interest(names), fetch, every=timedelta(hours=24), kv_get=kv.get, kv_set=kv.__setitem__)
    schema, fresh = cache.load(NOW)
    assert fresh and len(fetches) == 1
    again, fresh = cache.load(NOW + timedelta(hours=23))
    assert not fresh and len(fetches) == 1 and set(again.sets) == interest(names) & set(schema.sets)
    assert len(kv["onec:metadata"]) < len(raw) / 3  # the subset, not the document
    _, fresh = cache.load(NOW + timedelta(hours=24))
    assert fresh and len(fetches) == 2
    other = MetadataCache("http://x/odata/", interest(resolve("unf", objects={"journal": "DocumentJournal_ДокументыПродаж"})), fetch,
                          every=timedelta(hours=24), kv_get=kv.get, kv_set=kv.__setitem__)
    _, fresh = other.load(NOW + timedelta(hours=25))
    assert fresh and len(fetches) == 3  # new names: the cached subset cannot answer for them
    kv["onec:metadata"] = "{not json"
    _, fresh = other.load(NOW + timedelta(hours=25))
    assert fresh and len(fetches) == 4


def test_a_register_without_a_balance_type_is_checked_against_its_record_type():
    edmx = """<?xml version="1.0"?><edmx:Edmx xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" Version="1.0">
    <edmx:DataServices><Schema xmlns="http://schemas.microsoft.com/ado/2009/11/edm" Namespace="StandardODATA">
    <EntityType Name="AccumulationRegister_R"><Property Name="Recorder" Type="Edm.String"/></EntityType>
    <EntityType Name="AccumulationRegister_R_RecordType"><Property Name="Recorder" Type="Edm.String"/>
      <Property Name="Контрагент_Key" Type="Edm.Guid"/><Property Name="Сумма" Type="Edm.Double"/></EntityType>
    <EntityContainer Name="C"><EntitySet Name="AccumulationRegister_R" EntityType="StandardODATA.AccumulationRegister_R"/>
      <EntitySet Name="AccumulationRegister_R_RecordType" EntityType="StandardODATA.AccumulationRegister_R_RecordType"/>
    </EntityContainer></Schema></edmx:DataServices></edmx:Edmx>""".encode()
    s = parse_edmx(edmx)
    assert s.sets["AccumulationRegister_R"].balance is None and {"Контрагент_Key", "Сумма"} <= s.sets["AccumulationRegister_R"].props
    names = resolve("unf", objects={"receivables": "AccumulationRegister_R"})
    res = resolve_against(names, s)
    assert not any(m.logical.startswith("receivables") for m in res.missing)
