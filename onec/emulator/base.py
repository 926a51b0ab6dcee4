"""The emulated 1C infobase: entity sets per configuration flavour, seeded from the synthetic company.

Schemas are written out with literal 1C names (not read from :mod:`onec.presets`), so the
emulator is an independent description of what each configuration publishes; the adapter's
presets are tested against it. Values are stored the way 1C's JSON spells them: GUID text, dates
as naive Kyiv wall time ``YYYY-MM-DDTHH:MM:SS``, Int64 (``LineNumber``) as strings, the zero
GUID and ``0001-01-01T00:00:00`` for empty values.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connector.sandbox import PRODUCTS, SyntheticCompany, spell_phone

KYIV = ZoneInfo("Europe/Kyiv")
ZERO = "00000000-0000-0000-0000-000000000000"
EMPTY_DATE = "0001-01-01T00:00:00"
_NS = uuid.UUID("6f1c1c6e-2b1a-4c55-9a3e-1c0000000001")

EDM = {"s": "Edm.String", "g": "Edm.Guid", "d": "Edm.DateTime", "b": "Edm.Boolean", "n": "Edm.Double", "i": "Edm.Int64"}
DEFAULTS = {"s": "", "g": ZERO, "d": EMPTY_DATE, "b": False, "n": 0, "i": "0"}

CATALOG_STD = {"Ref_Key": "g", "DataVersion": "s", "DeletionMark": "b", "Predefined": "b", "PredefinedDataName": "s",
               "Parent_Key": "g", "IsFolder": "b", "Code": "s", "Description": "s"}
DOC_STD = {"Ref_Key": "g", "DataVersion": "s", "DeletionMark": "b", "Number": "s", "Date": "d", "Posted": "b"}
TASK_STD = {"Ref_Key": "g", "DataVersion": "s", "DeletionMark": "b", "Number": "s", "Date": "d", "Description": "s",
            "Executed": "b", "BusinessProcess": "s", "BusinessProcess_Type": "s"}
CONTACT_ROW = {"Тип": "s", "Вид_Key": "g", "Представление": "s", "НомерТелефона": "s", "АдресЭП": "s"}
GOODS_ROW = {"Номенклатура_Key": "g", "Количество": "n", "Цена": "n", "Сумма": "n"}
# a document journal's standard columns (reference §2: key Ref + Ref_Type) and the two graphs ours has
JOURNAL_PROPS = {"Ref": "s", "Ref_Type": "s", "Type": "s", "Date": "d", "DeletionMark": "b", "Number": "s", "Posted": "b",
                 "Контрагент_Key": "g", "Сумма": "n"}
JOURNAL = "DocumentJournal_ДокументыПродаж"  # not a typical configuration's name: one the admin publishes
REGULAR_TERM_DAYS = 10  # contract term of every seeded counterparty but the debtor


def wall(dt: datetime) -> str:
    """An aware datetime as 1C's wall-time text (Kyiv)."""
    return dt.astimezone(KYIV).strftime("%Y-%m-%dT%H:%M:%S")


def gid(*parts: object) -> str:
    return str(uuid.uuid5(_NS, ":".join(map(str, parts))))


def item_ref(article: str) -> str:
    """The ``Catalog_Номенклатура`` Ref_Key of a product of :data:`connector.sandbox.PRODUCTS` ("" is the generic item)."""
    return gid("item", article) if article else gid("item", 1)


@dataclass
class EntitySet:
    name: str
    kind: str  # catalog | document | task | inforeg | accreg | journal
    props: dict[str, str]  # property -> type letter (see EDM)
    tables: dict[str, dict[str, str]] = field(default_factory=dict)
    maxlen: dict[str, int] = field(default_factory=dict)
    dims: list[str] = field(default_factory=list)  # accreg dimensions / inforeg key
    resources: list[str] = field(default_factory=list)
    rows: dict[str, dict] = field(default_factory=dict)  # keyed kinds, by Ref_Key
    records: list[dict] = field(default_factory=list)  # inforeg rows, accreg movements
    seq: int = 0
    view: Callable[[], list[dict]] | None = None  # a journal's rows, computed from the documents it lists
    covers: list[str] = field(default_factory=list)  # the document sets a journal lists

    @property
    def keyed(self) -> bool:
        return self.kind in ("catalog", "document", "task")

    def all_rows(self) -> list[dict]:
        if self.view is not None:
            return self.view()
        return list(self.rows.values()) if self.keyed else list(self.records)

    def blank(self) -> dict:
        row = {k: DEFAULTS[t] for k, t in self.props.items()}
        for t in self.tables:
            row[t] = []
        return row


# ---------------------------------------------------------------- flavours (reference §7, §9, §10)

FLAVOURS: dict[str, dict[str, Any]] = {
    "ut11": {
        "counterparties": "Catalog_Контрагенты", "partners": "Catalog_Партнеры",
        "analytics": "Catalog_КлючиАналитикиУчетаПоПартнерам", "contact_register": None,
        "cp_manager": None, "partner_manager": "ОсновнойМенеджер_Key",
        "docs": {"order": ["Document_ЗаказКлиента"], "invoice": ["Document_СчетНаОплатуКлиенту"],
                 "sale": ["Document_РеализацияТоваровУслуг"],
                 "payment": ["Document_ПоступлениеБезналичныхДенежныхСредств", "Document_ПриходныйКассовыйОрдер"]},
        "doc_currency": "Валюта_Key", "doc_manager": "Менеджер_Key", "doc_partner": "Партнер_Key",
        # УТ 11 keeps payment terms in payment schedules (unverified); this emulator's contracts carry a plain
        # day count so ageing can be compared with the terms register (the ut11 preset reads it only by override)
        "doc_contract": "Договор_Key", "contract_term": "СрокОплаты",
        "order_status": "Статус",  # an enum rendered as its value name
        "receivables": "AccumulationRegister_РасчетыСКлиентами",
        "rec_dims": {"АналитикаУчетаПоПартнерам_Key": "g", "ОбъектРасчетов_Key": "g", "Валюта_Key": "g"},
        "rec_res": ["Сумма", "КОплате"], "rec_cp": "АналитикаУчетаПоПартнерам_Key",
        "overdue": "AccumulationRegister_РасчетыСКлиентамиПоСрокам",
        "ovd_dims": {"АналитикаУчетаПоПартнерам_Key": "g", "ОбъектРасчетов_Key": "g", "ДатаПлановогоПогашения": "d"},
        "ovd_res": ["ДолгУпр", "Долг"],
        "task": "Task_ЗадачаИсполнителя",
        "task_props": {"Содержание": "s", "Исполнитель_Key": "g", "СрокИсполнения": "d", "Предмет": "s",
                       "Предмет_Type": "s", "Автор_Key": "g", "Важность": "s"},
        "task_text": "Содержание", "task_responsible": "Исполнитель_Key", "task_deadline": "СрокИсполнения",
        "task_subject": "Предмет", "task_title": "Description",
        "user_contacts": True,
    },
    "unf": {
        "counterparties": "Catalog_Контрагенты", "partners": None, "analytics": None, "contact_register": None,
        "cp_manager": "Ответственный_Key", "partner_manager": None,
        "docs": {"order": ["Document_ЗаказПокупателя"], "invoice": ["Document_СчетНаОплату"],
                 "sale": ["Document_РасходнаяНакладная"],
                 "payment": ["Document_ПоступлениеНаСчет", "Document_ПоступлениеВКассу"]},
        "doc_currency": "ВалютаДокумента_Key", "doc_manager": "Ответственный_Key", "doc_partner": None,
        "doc_contract": "Договор_Key", "contract_term": "СрокОплатыПокупателя",
        "receivables": "AccumulationRegister_РасчетыСПокупателями",
        "rec_dims": {"Организация_Key": "g", "Контрагент_Key": "g", "Договор_Key": "g", "Документ": "s", "Документ_Type": "s"},
        "rec_res": ["Сумма", "СуммаВал"], "rec_cp": "Контрагент_Key",
        "overdue": None,
        "task": "Document_Событие",
        "task_props": {"Тема": "s", "Содержание": "s", "Ответственный_Key": "g", "ДатаНачала": "d", "ДатаОкончания": "d",
                       "Контрагент_Key": "g", "ТипСобытия": "s", "Состояние_Key": "g"},
        "task_text": "Содержание", "task_responsible": "Ответственный_Key", "task_deadline": "ДатаОкончания",
        "task_subject": "Контрагент_Key", "task_title": "Тема",
        "user_contacts": True,
    },
    "utp": {
        "counterparties": "Catalog_Контрагенты", "partners": None, "analytics": None,
        "contact_register": "InformationRegister_КонтактнаяИнформация",
        "cp_manager": "ОсновнойМенеджерПокупателя_Key", "partner_manager": None,
        "docs": {"order": ["Document_ЗаказПокупателя"], "invoice": ["Document_СчетНаОплатуПокупателю"],
                 "sale": ["Document_РеализацияТоваровУслуг"],
                 "payment": ["Document_ПлатежноеПоручениеВходящее", "Document_ПриходныйКассовыйОрдер"]},
        "doc_currency": "ВалютаДокумента_Key", "doc_manager": "Ответственный_Key", "doc_partner": None,
        "doc_contract": "ДоговорКонтрагента_Key", "contract_term": "ДопустимоеЧислоДнейЗадолженности",
        "receivables": "AccumulationRegister_ВзаиморасчетыСКонтрагентами",
        "rec_dims": {"Организация_Key": "g", "Контрагент_Key": "g", "ДоговорКонтрагента_Key": "g", "Сделка": "s", "Сделка_Type": "s"},
        "rec_res": ["СуммаВзаиморасчетов", "СуммаУпр"], "rec_cp": "Контрагент_Key",
        "overdue": None,
        "task": "Document_Событие",
        "task_props": {"Тема": "s", "Описание": "s", "Ответственный_Key": "g", "ДатаНачала": "d", "ДатаОкончания": "d",
                       "Контрагент_Key": "g", "ВидСобытия": "s"},
        "task_text": "Описание", "task_responsible": "Ответственный_Key", "task_deadline": "ДатаОкончания",
        "task_subject": "Контрагент_Key", "task_title": "Тема",
        "user_contacts": False,
    },
}


def build_schema(flavour: str) -> dict[str, EntitySet]:
    fl = FLAVOURS[flavour]
    sets: dict[str, EntitySet] = {}

    def add(s: EntitySet) -> None:
        sets[s.name] = s

    add(EntitySet("Catalog_Пользователи", "catalog", {**CATALOG_STD, "Недействителен": "b", "Комментарий": "s"},
                  tables={"КонтактнаяИнформация": CONTACT_ROW} if fl["user_contacts"] else {},
                  maxlen={"Description": 100}))
    add(EntitySet("Catalog_Валюты", "catalog", {**CATALOG_STD, "НаименованиеПолное": "s"}, maxlen={"Description": 10}))
    add(EntitySet("Catalog_Организации", "catalog", {**CATALOG_STD, "КодПоЕДРПОУ": "s"}))
    add(EntitySet("Catalog_Номенклатура", "catalog", {**CATALOG_STD, "Артикул": "s", "НаименованиеПолное": "s",
                                                     "ЕдиницаИзмерения_Key": "g"}, maxlen={"Description": 100, "Артикул": 25}))
    cp_props = {**CATALOG_STD, "НаименованиеПолное": "s", "ИНН": "s", "КПП": "s", "КодПоЕДРПОУ": "s", "ЮрФизЛицо": "s",
                "Комментарий": "s"}
    if fl["partners"]:
        cp_props["Партнер_Key"] = "g"
    if fl["cp_manager"]:
        cp_props[fl["cp_manager"]] = "g"
    add(EntitySet(fl["counterparties"], "catalog", cp_props,
                  tables={} if fl["contact_register"] else {"КонтактнаяИнформация": CONTACT_ROW},
                  maxlen={"Description": 150, "ИНН": 12, "КодПоЕДРПОУ": 10}))
    if fl["partners"]:
        add(EntitySet(fl["partners"], "catalog", {**CATALOG_STD, "НаименованиеПолное": "s", "ОсновнойМенеджер_Key": "g",
                                                  "Клиент": "b", "Комментарий": "s"},
                      tables={"КонтактнаяИнформация": CONTACT_ROW}, maxlen={"Description": 150}))
    if fl["analytics"]:
        add(EntitySet(fl["analytics"], "catalog", {**CATALOG_STD, "Партнер_Key": "g", "Контрагент_Key": "g",
                                                   "Организация_Key": "g", "Договор_Key": "g"}))
    add(EntitySet("Catalog_ДоговорыКонтрагентов", "catalog", {**CATALOG_STD, "Owner_Key": "g", "Организация_Key": "g",
                                                             "ВидДоговора": "s", fl["contract_term"]: "n"}))
    if fl["contact_register"]:
        add(EntitySet(fl["contact_register"], "inforeg",
                      {"Объект": "s", "Объект_Type": "s", "Тип": "s", "Вид_Key": "g", "Представление": "s",
                       "Поле1": "s", "Комментарий": "s"}, dims=["Объект", "Тип", "Вид_Key"]))
    for doc_type, objs in fl["docs"].items():
        for obj in objs:
            props = {**DOC_STD, "Контрагент_Key": "g", "Организация_Key": "g", "СуммаДокумента": "n",
                     fl["doc_currency"]: "g", fl["doc_contract"]: "g", "Комментарий": "s"}
            if doc_type != "payment":
                props[fl["doc_manager"]] = "g"
            if fl["doc_partner"] and doc_type != "payment":
                props[fl["doc_partner"]] = "g"
            if doc_type != "order":
                props.update({"ДокументОснование": "s", "ДокументОснование_Type": "s"})
            if doc_type == "invoice":
                props["СрокОплаты"] = "d"
            if doc_type == "order" and fl.get("order_status"):
                props[fl["order_status"]] = "s"
            add(EntitySet(obj, "document", props, tables={"Товары": GOODS_ROW} if doc_type != "payment" else {},
                          maxlen={"Number": 11}))
    def journal_rows() -> list[dict]:
        return [{"Ref": r["Ref_Key"], "Ref_Type": f"StandardODATA.{obj}", "Type": obj.split("_", 1)[1], "Date": r["Date"],
                 "DeletionMark": r["DeletionMark"], "Number": r["Number"], "Posted": r["Posted"],
                 "Контрагент_Key": r.get("Контрагент_Key", ZERO), "Сумма": r.get("СуммаДокумента", 0)}
                for obj in sets[JOURNAL].covers for r in sets[obj].rows.values()]

    add(EntitySet(JOURNAL, "journal", dict(JOURNAL_PROPS), dims=["Ref", "Ref_Type"], view=journal_rows,
                  covers=[obj for objs in fl["docs"].values() for obj in objs]))
    task_kind = "task" if fl["task"].startswith("Task_") else "document"
    add(EntitySet(fl["task"], task_kind, {**(TASK_STD if task_kind == "task" else DOC_STD), **fl["task_props"]},
                  maxlen={"Description": 150, "Тема": 150}))
    for reg, dims, res in ((fl["receivables"], fl["rec_dims"], fl["rec_res"]),
                           (fl["overdue"], fl.get("ovd_dims"), fl.get("ovd_res"))):
        if reg:
            props = {"Recorder": "s", "Recorder_Type": "s", "Period": "d", "LineNumber": "i", "Active": "b",
                     "RecordType": "s", **dims, **{r: "n" for r in res}}
            add(EntitySet(reg, "accreg", props, dims=list(dims), resources=list(res)))
    return sets


# ---------------------------------------------------------------- the infobase

class Infobase:
    """All sets of one base behind one lock; both servers (OData and SOAP) share it."""

    def __init__(self, flavour: str, *, clock: Callable[[], datetime] | None = None):
        self.flavour = flavour
        self.fl = FLAVOURS[flavour]
        self.sets = build_schema(flavour)
        self.lock = threading.RLock()
        self._version = 0
        self.clock = clock or (lambda: datetime.now(KYIV))
        self.changed_at: dict[str, str] = {}  # Ref_Key -> wall time of the last write (for the SOAP service)

    def version(self) -> str:
        """A fresh ``DataVersion`` (opaque 8-byte base64 that changes on every write)."""
        self._version += 1
        return base64.b64encode(self._version.to_bytes(8, "big")).decode()

    def now_wall(self) -> str:
        return wall(self.clock())

    def touch(self, ref: str, at: str | None = None) -> None:
        """Remember when a record was written: the change tracking an integrator's service keeps."""
        self.changed_at[ref] = at or self.now_wall()

    def put(self, set_name: str, values: dict) -> dict:
        """Insert a seeded row (keyed kinds) or record (registers) with defaults filled."""
        s = self.sets[set_name]
        row = s.blank()
        row.update(values)
        if s.keyed:
            row["DataVersion"] = self.version()
            for t, rows in list(row.items()):
                if t in s.tables:
                    row[t] = [{"Ref_Key": row["Ref_Key"], "LineNumber": str(i + 1), **{k: DEFAULTS[v] for k, v in s.tables[t].items()}, **r}
                              for i, r in enumerate(rows)]
            s.rows[row["Ref_Key"]] = row
        else:
            s.records.append(row)
        return row

    # -- registers

    def balance(self, set_name: str, period: str | None, condition: Callable[[dict], bool] | None,
                dims: list[str] | None) -> list[dict]:
        """``Balance(Period, Condition, Dimensions)``: receipts minus expenses before ``period``."""
        s = self.sets[set_name]
        dims = dims if dims is not None else [d for d in s.dims if not d.endswith("_Type")]
        cols: list[str] = []
        for d in dims:
            cols.append(d)
            if f"{d}_Type" in s.props:
                cols.append(f"{d}_Type")
        sums: dict[tuple, dict[str, float]] = {}
        for rec in s.records:
            if period and rec["Period"] >= period:
                continue
            if not rec.get("Active", True):
                continue
            if condition is not None and not condition(rec):
                continue
            sign = 1 if rec["RecordType"] == "Receipt" else -1
            k = tuple(rec.get(c) for c in cols)
            acc = sums.setdefault(k, {r: 0.0 for r in s.resources})
            for r in s.resources:
                acc[r] += sign * float(rec.get(r) or 0)
        out = []
        for k, acc in sums.items():
            if all(abs(v) < 0.005 for v in acc.values()):
                continue  # 1C returns no row for a zero balance
            row = dict(zip(cols, k, strict=False))
            row.update({f"{r}Balance": round(v, 2) for r, v in acc.items()})
            out.append(row)
        return out


# ---------------------------------------------------------------- seeding

def seed(co: SyntheticCompany, flavour: str = "ut11") -> Infobase:
    """Render the synthetic company as one 1C base of the given flavour."""
    anchor = co.anchor
    ib = Infobase(flavour, clock=lambda: anchor)
    fl = ib.fl
    uah = gid("currency", "980")
    org = gid("organization", 1)
    ib.put("Catalog_Валюты", {"Ref_Key": uah, "Code": "980", "Description": "грн.", "НаименованиеПолное": "Гривня"})
    ib.put("Catalog_Валюты", {"Ref_Key": gid("currency", "840"), "Code": "840", "Description": "USD",
                              "НаименованиеПолное": "Долар США"})
    ib.put("Catalog_Организации", {"Ref_Key": org, "Code": "000000001", "Description": "ТОВ «Наш магазин»",
                                   "КодПоЕДРПОУ": "40000001"})
    for n, group in enumerate(sorted({g for _, g in PRODUCTS.values() if g}), start=1):
        ib.put("Catalog_Номенклатура", {"Ref_Key": gid("item-folder", group), "IsFolder": True, "Code": f"{n:011d}",
                                        "Description": group})
    for n, (article, (name, group)) in enumerate(sorted(PRODUCTS.items()), start=1):
        ib.put("Catalog_Номенклатура", {"Ref_Key": item_ref(article), "Code": f"{100 + n:011d}", "Description": name,
                                        "НаименованиеПолное": name, "Артикул": article,
                                        "Parent_Key": gid("item-folder", group) if group else ZERO})
    for m in co.managers:
        row = {"Ref_Key": m.guid, "Code": f"{m.id:09d}", "Description": m.full_name, "Недействителен": not m.active}
        if fl["user_contacts"]:
            row["КонтактнаяИнформация"] = [{"Тип": "АдресЭлектроннойПочты", "Представление": m.email, "АдресЭП": m.email}]
        ib.put("Catalog_Пользователи", row)
    cp_set = fl["counterparties"]
    folder = gid("folder", "buyers")
    ib.put(cp_set, {"Ref_Key": folder, "IsFolder": True, "Code": "000000001", "Description": "Покупатели"})
    analytics: dict[str, str] = {}
    for n, c in enumerate((c for c in co.companies if c.in_onec), start=2):
        mgr = co.manager(c.responsible).guid
        spelled = [spell_phone(p, c.id + k) for k, p in enumerate(c.phones)]
        row: dict[str, Any] = {
            "Ref_Key": c.guid, "Code": f"{n:09d}", "Description": c.title, "НаименованиеПолное": f"ТОВ «{c.title}»",
            "Parent_Key": folder, "КодПоЕДРПОУ": c.tax_id, "ИНН": c.tax_id if flavour == "unf" else "",
            "ЮрФизЛицо": "ЮрЛицо",
        }
        contacts = [{"Тип": "Телефон", "Представление": p, "НомерТелефона": p} for p in spelled]
        contacts += [{"Тип": "АдресЭлектроннойПочты", "Представление": e, "АдресЭП": e} for e in c.emails]
        if fl["partners"]:
            partner = gid("partner", c.guid)
            row["Партнер_Key"] = partner
            # УТ 11 keeps phones mostly on the partner; the second number sits on the counterparty
            ib.put(fl["partners"], {"Ref_Key": partner, "Code": f"{n:09d}", "Description": c.title, "Клиент": True,
                                    "НаименованиеПолное": c.title, "ОсновнойМенеджер_Key": mgr,
                                    "КонтактнаяИнформация": contacts[:1] + contacts[len(spelled):]})
            row["КонтактнаяИнформация"] = contacts[1:len(spelled)]
        else:
            row[fl["cp_manager"]] = mgr
        if fl["contact_register"]:
            for ct in contacts:
                ib.put(fl["contact_register"], {"Объект": c.guid, "Объект_Type": f"StandardODATA.{cp_set}", "Тип": ct["Тип"],
                                                "Вид_Key": gid("kind", ct["Тип"], ct["Представление"]),
                                                "Представление": ct["Представление"]})
        elif not fl["partners"]:
            row["КонтактнаяИнформация"] = contacts
        ib.put(cp_set, row)
        ib.touch(c.guid, wall(c.modified))
        ib.put("Catalog_ДоговорыКонтрагентов", {"Ref_Key": gid("contract", c.guid), "Owner_Key": c.guid, "Code": f"{n:09d}",
                                                "Description": "Основной договор", "Организация_Key": org,
                                                "ВидДоговора": "СПокупателем", fl["contract_term"]: REGULAR_TERM_DAYS})
        if fl["analytics"]:
            key = gid("analytics", c.guid)
            analytics[c.guid] = key
            ib.put(fl["analytics"], {"Ref_Key": key, "Description": c.title, "Контрагент_Key": c.guid,
                                     "Партнер_Key": row.get("Партнер_Key", ZERO), "Организация_Key": org})
    _seed_documents(ib, co, uah, org, analytics)
    return ib


def _seed_documents(ib: Infobase, co: SyntheticCompany, uah: str, org: str, analytics: dict[str, str]) -> None:
    """Each 1C sale of the synthetic company becomes the chain order -> invoice -> sale -> payment
    (the payment missing for a debtor's unpaid sale), and the receivable registers follow it."""
    fl = ib.fl
    anchor = co.anchor
    debts = {d.counterparty_guid: d for d in co.debts}
    numbers: dict[str, int] = {}
    movements: list[tuple[str, str, dict]] = []  # (register, record type, values)

    def number(obj: str) -> str:
        numbers[obj] = numbers.get(obj, 0) + 1
        return f"КП-{numbers[obj]:07d}"

    def doc(doc_type: str, guid: str, when: datetime, cp: str, amount: float, *, obj: str | None = None,
            manager: str | None = None, basis: tuple[str, str] | None = None, due: datetime | None = None,
            posted: bool = True, deleted: bool = False, number_text: str | None = None,
            lines: list[tuple[str, float, float]] | None = None, status: str | None = None) -> str:
        obj = obj or fl["docs"][doc_type][0]
        row: dict[str, Any] = {"Ref_Key": guid, "Number": number_text or number(obj), "Date": wall(when), "Posted": posted,
                               "DeletionMark": deleted, "Контрагент_Key": cp, "Организация_Key": org,
                               "СуммаДокумента": amount, fl["doc_currency"]: uah, fl["doc_contract"]: gid("contract", cp)}
        if doc_type != "payment":
            row[fl["doc_manager"]] = manager or ZERO
            row["Товары"] = [{"Номенклатура_Key": item_ref(article), "Количество": qty, "Цена": round(total / qty, 2) if qty else total,
                              "Сумма": total} for article, qty, total in (lines or [("", 1, amount)])]
            if fl["doc_partner"]:
                row[fl["doc_partner"]] = gid("partner", cp)
        if basis:
            row["ДокументОснование"], row["ДокументОснование_Type"] = basis[0], f"StandardODATA.{basis[1]}"
        if due is not None:
            row["СрокОплаты"] = wall(due)
        if doc_type == "order" and fl.get("order_status"):
            row[fl["order_status"]] = status or "КОтгрузке"
        ib.put(obj, row)
        ib.touch(guid, row["Date"])
        return obj

    def settle(recorder: tuple[str, str], when: datetime, cp: str, amount: float, kind: str, due: datetime,
               settlement: str) -> None:
        dims: dict[str, Any]
        if fl["rec_cp"] == "АналитикаУчетаПоПартнерам_Key":
            dims = {"АналитикаУчетаПоПартнерам_Key": analytics.get(cp, ZERO), "ОбъектРасчетов_Key": settlement, "Валюта_Key": uah}
            res = {"Сумма": amount, "КОплате": amount}
        elif fl["receivables"].endswith("РасчетыСПокупателями"):
            dims = {"Организация_Key": org, "Контрагент_Key": cp, "Договор_Key": gid("contract", cp),
                    "Документ": settlement, "Документ_Type": f"StandardODATA.{fl['docs']['sale'][0]}"}
            res = {"Сумма": amount, "СуммаВал": amount}
        else:
            dims = {"Организация_Key": org, "Контрагент_Key": cp, "ДоговорКонтрагента_Key": gid("contract", cp),
                    "Сделка": settlement, "Сделка_Type": f"StandardODATA.{fl['docs']['order'][0]}"}
            res = {"СуммаВзаиморасчетов": amount, "СуммаУпр": amount}
        base = {"Recorder": recorder[0], "Recorder_Type": f"StandardODATA.{recorder[1]}", "Period": wall(when),
                "LineNumber": "1", "Active": True, "RecordType": kind}
        movements.append((fl["receivables"], kind, {**base, **dims, **res}))
        if fl["overdue"]:
            movements.append((fl["overdue"], kind, {**base, "АналитикаУчетаПоПартнерам_Key": analytics.get(cp, ZERO),
                                                     "ОбъектРасчетов_Key": settlement, "ДатаПлановогоПогашения": wall(due),
                                                     "ДолгУпр": amount, "Долг": amount}))

    sales = sorted((d for d in co.onec_docs if d.type == "sale"), key=lambda d: d.date)
    last_sale = {d.counterparty_guid: d.guid for d in sales}
    cash = 0
    for d in sales:
        order_guid, invoice_guid = gid("order", d.guid), gid("invoice", d.guid)
        unpaid = d.counterparty_guid in debts and last_sale[d.counterparty_guid] == d.guid
        due = datetime.combine(debts[d.counterparty_guid].due, datetime.min.time(), anchor.tzinfo) if unpaid else d.date + timedelta(days=REGULAR_TERM_DAYS)
        if unpaid:  # the debtor's contract carries the term its synthetic due date implies
            contract = ib.sets["Catalog_ДоговорыКонтрагентов"].rows.get(gid("contract", d.counterparty_guid))
            if contract is not None:
                contract[fl["contract_term"]] = (debts[d.counterparty_guid].due - d.date.astimezone(KYIV).date()).days
        order_obj = doc("order", order_guid, d.date - timedelta(days=2), d.counterparty_guid, d.amount, manager=d.manager_guid,
                        lines=d.lines, status="Закрыт" if d.posted else "КОтгрузке")
        invoice_obj = doc("invoice", invoice_guid, d.date - timedelta(days=1), d.counterparty_guid, d.amount,
                          manager=d.manager_guid, basis=(order_guid, order_obj), due=due, lines=d.lines)
        sale_obj = doc("sale", d.guid, d.date, d.counterparty_guid, d.amount, manager=d.manager_guid,
                       basis=(order_guid, order_obj), posted=d.posted, deleted=d.deletion_mark, number_text=d.number, lines=d.lines)
        if d.posted:
            settle((d.guid, sale_obj), d.date, d.counterparty_guid, d.amount, "Receipt", due, order_guid)
        paid_at = d.date + timedelta(days=3)
        if not unpaid and paid_at <= anchor and d.posted:
            cash += 1
            objs = fl["docs"]["payment"]
            obj = objs[1] if cash % 4 == 0 and len(objs) > 1 else objs[0]
            pay = gid("payment", d.guid)
            doc("payment", pay, paid_at, d.counterparty_guid, d.amount, obj=obj, basis=(invoice_guid, invoice_obj))
            settle((pay, obj), paid_at, d.counterparty_guid, d.amount, "Expense", due, order_guid)
    for d in co.onec_docs:  # documents of other types the synthetic company names explicitly
        if d.type != "sale":
            basis = None
            if d.basis_guid:
                basis = (d.basis_guid, next((s.name for s in ib.sets.values() if d.basis_guid in s.rows), fl["docs"]["order"][0]))
            doc(d.type, d.guid, d.date, d.counterparty_guid, d.amount, manager=d.manager_guid, basis=basis,
                posted=d.posted, deleted=d.deletion_mark, number_text=d.number, status=d.status,
                due=datetime.combine(d.due, datetime.min.time(), anchor.tzinfo) if d.due else None)
    for reg, _, values in movements:
        ib.put(reg, values)
    # opening balances where the synthetic receivable differs from what the documents explain
    period = wall(anchor + timedelta(seconds=1))
    for cp, debt in debts.items():
        cp_dim = fl["rec_cp"]
        want = analytics.get(cp, ZERO) if cp_dim == "АналитикаУчетаПоПартнерам_Key" else cp
        have = sum(r[f"{fl['rec_res'][0]}Balance"] for r in ib.balance(fl["receivables"], period, lambda r: r.get(cp_dim) == want, [cp_dim]))  # noqa: B023 - used at once
        diff = round(debt.amount - have, 2)
        if abs(diff) > 0.005:
            due = datetime.combine(debt.due, datetime.min.time(), anchor.tzinfo)
            settle((gid("opening", cp), "Document_ВводОстатков"), due - timedelta(days=30), cp, diff, "Receipt", due,
                   gid("opening-object", cp))
            for reg, _, values in movements[-(2 if fl["overdue"] else 1):]:
                ib.put(reg, values)
