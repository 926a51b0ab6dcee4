"""Object and field names per 1C configuration, overridable from the YAML.

1C names every object in its own configuration's words: the same "invoice for payment" is
``Document_СчетНаОплатуКлиенту`` in УТ 11, ``Document_СчетНаОплату`` in УНФ and
``Document_СчетНаОплатуПокупателю`` in УТ 10.3 / УТП. A preset is the table of those names
(reference §7, §9, §10); ``settings.onec.objects`` and ``settings.onec.fields`` replace any entry
by its logical name, so a customised base (``см_…`` prefixes, renamed attributes) needs no code.

Logical object names: ``counterparties partners users currencies analytics contact_info order
invoice sale payment receivables overdue contracts journal task products``. Document objects may list
several names separated by commas (УТ 11 has a bank and a cash receipt). An empty name means
"this configuration has no such object" (``journal`` is empty in every preset: a document journal
that lists the documents is something the admin publishes and names, see the README).

Names marked (unverified) in the reference are used as the best available guess; the YAML
override exists precisely for them. Every cycle resolves them against the base's ``$metadata``
(:mod:`onec.metadata`): :data:`OBJECT_ROLES` and :data:`FIELD_ROLES` say which ones the source
cannot work without (a missing one is an error naming the override) and which only switch a
feature off (one warning per cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.errors import ConfigError

DOC_TYPES = ("order", "invoice", "sale", "payment")

_COMMON_FIELDS: dict[str, str] = {
    "counterparty.name": "Description",
    "counterparty.full_name": "НаименованиеПолное",
    "counterparty.tax_id": "КодПоЕДРПОУ,ИНН",  # first non-empty wins
    "counterparty.kind": "ЮрФизЛицо",
    "counterparty.partner": "",
    "counterparty.manager": "",
    "counterparty.comment": "Комментарий",
    "partner.manager": "",
    "contact.table": "КонтактнаяИнформация",
    "contact.type": "Тип",
    "contact.text": "Представление",
    "contact.object": "Объект",
    "contact.phone": "Телефон",
    "contact.email": "АдресЭлектроннойПочты",
    "user.name": "Description",
    "user.inactive": "Недействителен",
    "user.contacts": "КонтактнаяИнформация",
    "currency.code": "Code",
    "currency.default": "UAH",  # a value, not a field: for registers that carry no currency dimension
    "doc.counterparty": "Контрагент_Key",
    "doc.amount": "СуммаДокумента",
    "doc.currency": "ВалютаДокумента_Key",
    "doc.manager": "Ответственный_Key",
    "doc.basis": "ДокументОснование",  # composite: value + _Type (unverified per configuration)
    "doc.contract": "Договор_Key",  # the contract whose payment term ages a shipment
    "invoice.due": "СрокОплаты",  # (unverified)
    "order.paid": "",
    "invoice.paid": "",
    "order.basis": "",
    "order.status": "",  # the order's own status, when the configuration keeps one as text (order_status rule)
    "payment.manager": "",
    "receivables.counterparty": "Контрагент_Key",
    "receivables.amount": "Сумма",
    "receivables.currency": "",
    "analytics.counterparty": "Контрагент_Key",
    "overdue.counterparty": "",
    "overdue.amount": "",
    "overdue.due": "",
    "task.title": "Тема",
    "task.text": "Содержание",
    "task.responsible": "Ответственный_Key",
    "task.deadline": "ДатаОкончания",
    "task.subject": "Контрагент_Key",  # a *_Key reference, or a composite field name
    "contract.term": "",  # days to pay after a shipment, on Catalog_ДоговорыКонтрагентов
    "doc.lines": "Товары",  # the goods tabular section of sales and orders (read only when a rule needs product lines)
    "line.product": "Номенклатура_Key",
    "line.quantity": "Количество",
    "line.amount": "Сумма",
    "product.name": "Description",
    "product.article": "Артикул",
    "product.group": "Parent_Key",  # the product's folder: its name is the group
}

PRESETS: dict[str, dict[str, dict[str, str]]] = {
    # УТ 11 / ERP 2 / КА 2 / BAS УТ 3 (Russian identifiers also in BAS)
    "ut11": {
        "objects": {
            "counterparties": "Catalog_Контрагенты",
            "partners": "Catalog_Партнеры",
            "users": "Catalog_Пользователи",
            "currencies": "Catalog_Валюты",
            "analytics": "Catalog_КлючиАналитикиУчетаПоПартнерам",
            "contact_info": "",
            "order": "Document_ЗаказКлиента",
            "invoice": "Document_СчетНаОплатуКлиенту",
            "sale": "Document_РеализацияТоваровУслуг",
            "payment": "Document_ПоступлениеБезналичныхДенежныхСредств,Document_ПриходныйКассовыйОрдер",
            "receivables": "AccumulationRegister_РасчетыСКлиентами",
            "overdue": "AccumulationRegister_РасчетыСКлиентамиПоСрокам",
            "contracts": "Catalog_ДоговорыКонтрагентов",
            "journal": "",
            "products": "Catalog_Номенклатура",
            "task": "Task_ЗадачаИсполнителя",
        },
        "fields": {
            "counterparty.partner": "Партнер_Key",
            "partner.manager": "ОсновнойМенеджер_Key",
            "doc.currency": "Валюта_Key",
            "doc.manager": "Менеджер_Key",
            "order.status": "Статус",  # enum СтатусыЗаказовКлиентов: НеСогласован, КОбеспечению, КОтгрузке, Закрыт (unverified)
            "receivables.counterparty": "АналитикаУчетаПоПартнерам_Key",
            "receivables.currency": "Валюта_Key",
            "overdue.counterparty": "АналитикаУчетаПоПартнерам_Key",
            "overdue.amount": "ДолгУпр",
            "overdue.due": "ДатаПлановогоПогашения",
            "task.title": "Description",
            "task.text": "Содержание",
            "task.responsible": "Исполнитель_Key",
            "task.deadline": "СрокИсполнения",
            "task.subject": "Предмет",
        },
    },
    # УНФ 1.6 / 3.0
    "unf": {
        "objects": {
            "counterparties": "Catalog_Контрагенты",
            "partners": "",
            "users": "Catalog_Пользователи",
            "currencies": "Catalog_Валюты",
            "analytics": "",
            "contact_info": "",
            "order": "Document_ЗаказПокупателя",
            "invoice": "Document_СчетНаОплату",
            "sale": "Document_РасходнаяНакладная",
            "payment": "Document_ПоступлениеНаСчет,Document_ПоступлениеВКассу",
            "receivables": "AccumulationRegister_РасчетыСПокупателями",
            "overdue": "",
            "contracts": "Catalog_ДоговорыКонтрагентов",
            "journal": "",
            "products": "Catalog_Номенклатура",
            "task": "Document_Событие",
        },
        "fields": {
            "counterparty.manager": "Ответственный_Key",
            "contract.term": "СрокОплатыПокупателя",  # seen in public integration code reading УНФ contracts
        },
    },
    # УТ 10.3 / УПП / КА 1.1 / УТП (UA)
    "utp": {
        "objects": {
            "counterparties": "Catalog_Контрагенты",
            "partners": "",
            "users": "Catalog_Пользователи",
            "currencies": "Catalog_Валюты",
            "analytics": "",
            "contact_info": "InformationRegister_КонтактнаяИнформация",
            "order": "Document_ЗаказПокупателя",
            "invoice": "Document_СчетНаОплатуПокупателю",
            "sale": "Document_РеализацияТоваровУслуг",
            "payment": "Document_ПлатежноеПоручениеВходящее,Document_ПриходныйКассовыйОрдер",
            "receivables": "AccumulationRegister_ВзаиморасчетыСКонтрагентами",
            "overdue": "",
            "contracts": "Catalog_ДоговорыКонтрагентов",
            "journal": "",
            "products": "Catalog_Номенклатура",
            "task": "Document_Событие",
        },
        "fields": {
            "counterparty.manager": "ОсновнойМенеджерПокупателя_Key",
            "receivables.amount": "СуммаВзаиморасчетов",
            "task.text": "Описание",
            "user.contacts": "",
            "doc.contract": "ДоговорКонтрагента_Key",
            "contract.term": "ДопустимоеЧислоДнейЗадолженности",  # seen in several public УТ 10.3 / УПП clients
        },
    },
}


@dataclass(frozen=True)
class Names:
    """The resolved names of one base: preset, then the YAML overrides."""

    preset: str
    objects: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)

    def obj(self, logical: str) -> str:
        """One wire object name ("" when the configuration has none)."""
        return self.objs(logical)[0] if self.objs(logical) else ""

    def objs(self, logical: str) -> list[str]:
        return [x.strip() for x in self.objects.get(logical, "").split(",") if x.strip()]

    def f(self, logical: str) -> str:
        """A wire field name; per-type keys (``order.amount``) fall back to ``doc.*``."""
        if logical in self.fields:
            return self.fields[logical]
        head, _, tail = logical.partition(".")
        if head in DOC_TYPES and f"doc.{tail}" in self.fields:
            return self.fields[f"doc.{tail}"]
        return ""

    def fs(self, logical: str) -> list[str]:
        return [x.strip() for x in self.f(logical).split(",") if x.strip()]

    def doc_objects(self) -> list[tuple[str, str]]:
        """``[(doc_type, object name)]`` in a stable order."""
        return [(t, o) for t in DOC_TYPES for o in self.objs(t)]


def resolve(preset: str, objects: Mapping[str, str] | None = None, fields: Mapping[str, str] | None = None) -> Names:
    """Preset names with overrides; an unknown logical name is a config error, not a silent no-op."""
    if preset not in PRESETS:
        raise ConfigError([f"onec.preset: unknown preset {preset!r}; one of {sorted(PRESETS)}"])
    base = PRESETS[preset]
    objs = dict(base["objects"])
    flds = {**_COMMON_FIELDS, **base["fields"]}
    problems = []
    for k, v in (objects or {}).items():
        if k not in objs:
            problems.append(f"onec.objects.{k}: unknown object name; known: {', '.join(sorted(objs))}")
        objs[k] = v
    per_type = {f"{t}.{k.split('.', 1)[1]}" for t in DOC_TYPES for k in flds if k.startswith("doc.")}
    for k, v in (fields or {}).items():
        if k not in flds and k not in per_type:
            problems.append(f"onec.fields.{k}: unknown field name; known: {', '.join(sorted(flds))} (doc.* also per type, e.g. sale.amount)")
        flds[k] = v
    if problems:
        raise ConfigError(problems)
    return Names(preset, objs, flds)


def for_config(cfg: Any) -> Names:
    """The names a configured base is read and written with. The goods of documents and the products
    catalog only when a rule reads them (``OneC._product_lines``): a base that does not publish
    ``Catalog_Номенклатура`` is asked for nothing more. Source, sink and ``check`` use the same names,
    so they share one cached ``$metadata``."""
    objects, fields = dict(cfg.objects), dict(cfg.fields)
    if not getattr(cfg, "_product_lines", False):
        objects.setdefault("products", "")
        fields.setdefault("doc.lines", "")
    return resolve(cfg.preset, objects, fields)


# ---------------------------------------------------------------- what the source can do without

# logical object -> (required, what it feeds). A required object missing from the base's
# $metadata stops the 1C source with an error; an optional one switches its feature off.
OBJECT_ROLES: dict[str, tuple[bool, str]] = {
    "counterparties": (True, "clients"),
    "users": (True, "managers"),
    "partners": (True, "managers and phones kept on partners"),
    "sale": (True, "sales (purchases)"),
    "currencies": (False, "currency codes of documents and debts"),
    "analytics": (False, "debts (the receivables register is keyed by analytics keys)"),
    "contact_info": (False, "phones and e-mails of counterparties"),
    "order": (False, "orders"),
    "invoice": (False, "1C invoices (the unpaid rule)"),
    "payment": (False, "payments"),
    "receivables": (False, "debts"),
    "overdue": (False, "due dates from the terms register (debts are aged by shipments instead)"),
    "contracts": (False, "contract payment terms (onec.payment_terms_days applies instead)"),
    "journal": (False, "one-request change detection of documents (each document type is polled instead)"),
    "task": (False, "tasks and notifications written to 1C"),
    "products": (False, "articles, names and groups of the goods sold (the replenish rule matches them)"),
}

# logical field -> (logical object, required for that object, what it feeds). A required field
# missing switches its object off (or stops the source when the object itself is required).
FIELD_ROLES: dict[str, tuple[str, bool, str]] = {
    "counterparty.name": ("counterparties", True, "client names"),
    "counterparty.full_name": ("counterparties", False, "full names"),
    "counterparty.tax_id": ("counterparties", False, "matching by tax id"),
    "counterparty.kind": ("counterparties", False, "segments"),
    "counterparty.partner": ("counterparties", True, "managers and phones kept on partners"),
    "counterparty.manager": ("counterparties", False, "responsible managers"),
    "counterparty.comment": ("counterparties", False, "comments written to 1C"),
    "partner.manager": ("partners", False, "responsible managers"),
    "user.name": ("users", True, "manager names"),
    "user.inactive": ("users", False, "inactive managers"),
    "user.contacts": ("users", False, "managers' e-mails"),
    "currency.code": ("currencies", False, "currency codes"),
    "analytics.counterparty": ("analytics", True, "debts"),
    "receivables.counterparty": ("receivables", True, "debts"),
    "receivables.amount": ("receivables", True, "debts"),
    "receivables.currency": ("receivables", False, "debt currencies"),
    "overdue.counterparty": ("overdue", True, "due dates from the terms register"),
    "overdue.amount": ("overdue", True, "due dates from the terms register"),
    "overdue.due": ("overdue", True, "due dates from the terms register"),
    "contract.term": ("contracts", False, "contract payment terms"),
    "task.text": ("task", True, "tasks written to 1C"),
    "task.responsible": ("task", True, "tasks written to 1C"),
    "task.title": ("task", False, "task titles"),
    "task.deadline": ("task", False, "task deadlines"),
    "task.subject": ("task", False, "tasks bound to their counterparty"),
    "product.name": ("products", True, "names of the goods sold"),
    "product.article": ("products", False, "articles of the goods sold"),
    "product.group": ("products", False, "groups of the goods sold"),
}

# per document type: field suffix -> (required, what it feeds); ``contract`` only ages sales and
# ``due`` only exists on invoices
DOC_FIELD_ROLES: dict[str, tuple[bool, str]] = {
    "counterparty": (True, "documents of a client"),
    "amount": (True, "document amounts"),
    "currency": (False, "document currencies"),
    "manager": (False, "document managers"),
    "basis": (False, "payments matched to their invoices"),
    "paid": (False, "paid marks"),
    "contract": (False, "contract payment terms"),
    "due": (False, "invoice due dates"),
    "status": (False, "order statuses (the order_status rule)"),
}
