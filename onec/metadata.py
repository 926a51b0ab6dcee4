"""The base's own ``$metadata``: what it publishes, checked against what a preset names.

A preset names objects and fields by best guess (reference §7); a real base may lack one (a field
a release renamed, a catalog the admin did not tick in "Настройка стандартного интерфейса OData").
Before this module the first request for such a name failed and took the whole 1C source down
every cycle. Now every cycle starts from the base's ``$metadata`` (CSDL/EDMX, reference §1, §2):

* a **required** object or field missing (:data:`onec.presets.OBJECT_ROLES`, ``FIELD_ROLES``) is
  one error naming the logical name, the wire name looked for and the YAML override;
* an **optional** one missing switches its feature off, with one warning per cycle, and the rest of
  the source goes on (a missing phone field: counterparties still sync, without phones).

``$metadata`` is big (16.8 MB, 23-36 s on a real УТ 11, reference §1) and 1C sends neither
``ETag`` nor ``Last-Modified`` (none observed on any response, reference §5), so there is no
cheap conditional check. The parsed subset the connector needs is cached in the store's kv and
re-read on a schedule (``onec.metadata_every_hours``), when the configured names change, when the
cache says a required name is missing (so a fix is seen on the next cycle), and when a request
fails with "no such set" (404 code 8) or "no such property" (400 code 6) (see
:mod:`onec.source`). A no-change cycle reads none of it.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from io import BytesIO

from connector.errors import ConfigError
from onec.presets import DOC_FIELD_ROLES, DOC_TYPES, FIELD_ROLES, OBJECT_ROLES, Names

KV_KEY = "onec:metadata"
STANDARD_PREFIX = "StandardODATA."

# OData resource prefixes -> the words 1C's own settings form uses (reference §2)
RUSSIAN_PREFIX = {
    "Catalog": "Справочник", "Document": "Документ", "DocumentJournal": "ЖурналДокументов", "Constant": "Константа",
    "ExchangePlan": "ПланОбмена", "ChartOfAccounts": "ПланСчетов", "ChartOfCalculationTypes": "ПланВидовРасчета",
    "ChartOfCharacteristicTypes": "ПланВидовХарактеристик", "InformationRegister": "РегистрСведений",
    "AccumulationRegister": "РегистрНакопления", "CalculationRegister": "РегистрРасчета",
    "AccountingRegister": "РегистрБухгалтерии", "BusinessProcess": "БизнесПроцесс", "Task": "Задача",
}


def russian_name(wire: str) -> str:
    """``Catalog_Контрагенты`` -> ``Справочник.Контрагенты``, as the admin sees it in 1C.

    The prefix never contains ``_``; the object name may (reference §2), so only the first one splits.
    """
    prefix, _, rest = wire.partition("_")
    return f"{RUSSIAN_PREFIX[prefix]}.{rest}" if prefix in RUSSIAN_PREFIX and rest else wire


# ---------------------------------------------------------------- the parsed schema

@dataclass(frozen=True)
class Entity:
    """One published set: its properties, its tabular sections' row properties, and for a
    register the fields of its ``Balance`` result (``<Dimension>`` and ``<Resource>Balance``)."""

    props: frozenset[str]
    tables: dict[str, frozenset[str]] = field(default_factory=dict)
    balance: frozenset[str] | None = None

    def to_json(self) -> dict:
        out: dict = {"p": sorted(self.props)}
        if self.tables:
            out["t"] = {k: sorted(v) for k, v in sorted(self.tables.items())}
        if self.balance is not None:
            out["b"] = sorted(self.balance)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Entity":
        return cls(frozenset(data.get("p", ())), {k: frozenset(v) for k, v in data.get("t", {}).items()},
                   frozenset(data["b"]) if "b" in data else None)


@dataclass
class Schema:
    """What the base publishes, for the sets the connector asked about (``sets``) plus the names
    of every published document journal (``journals``, for ``connector check``'s hint)."""

    sets: dict[str, Entity]
    journals: list[str] = field(default_factory=list)

    def has(self, obj: str) -> bool:
        return obj in self.sets

    def props(self, obj: str) -> frozenset[str]:
        e = self.sets.get(obj)
        return e.props if e else frozenset()

    def keep(self, obj: str, names: Iterable[str]) -> list[str]:
        """The names that ``obj`` really has, in order: a ``$select`` that cannot hit 400 code 6.

        ``a/b`` navigation paths are kept when the reference ``a_Key`` exists; an unknown object
        keeps everything (nothing to check against).
        """
        e = self.sets.get(obj)
        if e is None:
            return [n for n in names if n]
        return [n for n in names if n and (n in e.props or n in e.tables or f"{n.split('/')[0]}_Key" in e.props)]

    def subset(self, interest: Iterable[str]) -> "Schema":
        return Schema({n: self.sets[n] for n in sorted(set(interest)) if n in self.sets}, list(self.journals))

    def to_json(self) -> dict:
        return {"sets": {k: v.to_json() for k, v in sorted(self.sets.items())}, "journals": self.journals}

    @classmethod
    def from_json(cls, data: dict) -> "Schema":
        return cls({k: Entity.from_json(v) for k, v in data.get("sets", {}).items()}, list(data.get("journals", [])))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _type_name(text: str | None) -> str:
    t = (text or "").strip()
    if t.startswith("Collection(") and t.endswith(")"):
        t = t[len("Collection("):-1]
    return t[len(STANDARD_PREFIX):] if t.startswith(STANDARD_PREFIX) else t


def parse_edmx(content: bytes) -> Schema:
    """Every published set of a CSDL/EDMX document, streamed (a real one is tens of megabytes).

    Entity types give properties (a register's set also takes those of its ``<Register>_RecordType``
    set, reference §2); a ``Collection(...RowType)`` property is a tabular section whose
    row properties come from its complex type (or from the ``<Set>_<Section>`` set when the base
    publishes sections as their own sets); a register's ``Balance`` result is the complex type
    ``<Register>_Balance`` (reference §9). Namespaces are ignored: 1C has shipped more than one.
    """
    types: dict[str, tuple[set[str], dict[str, str]]] = {}
    complex_types: dict[str, set[str]] = {}
    sets: dict[str, str] = {}
    props: set[str] = set()
    collections: dict[str, str] = {}
    try:
        for event, el in ET.iterparse(BytesIO(content), events=("start", "end")):
            tag = _local(el.tag)
            if event == "start":
                if tag in ("EntityType", "ComplexType"):
                    props, collections = set(), {}
                continue
            if tag == "Property":
                name, typ = el.get("Name"), el.get("Type") or ""
                if name:
                    if typ.startswith("Collection("):
                        collections[name] = _type_name(typ)
                    else:
                        props.add(name)
            elif tag == "EntityType" and el.get("Name"):
                types[el.get("Name") or ""] = (props, collections)
                el.clear()
            elif tag == "ComplexType" and el.get("Name"):
                complex_types[el.get("Name") or ""] = props
                el.clear()
            elif tag == "EntitySet" and el.get("Name"):
                sets[el.get("Name") or ""] = _type_name(el.get("EntityType"))
    except ET.ParseError as e:
        raise ValueError(f"$metadata is not readable XML: {e}") from None
    if not types and not sets:
        raise ValueError("$metadata has no entity types: is this a 1C standard OData interface?")
    out: dict[str, Entity] = {}
    for name, type_name in sets.items():
        tprops, tcols = types.get(type_name, (set(), {}))
        if f"{name}_RecordType" in sets:  # a register published as record sets: its records' fields count too
            tprops = tprops | types.get(sets[f"{name}_RecordType"], (set(), {}))[0]
        tables: dict[str, frozenset[str]] = {}
        for col, row_type in tcols.items():
            row = complex_types.get(row_type)
            if row is None and f"{name}_{col}" in sets:
                row = types.get(sets[f"{name}_{col}"], (set(), {}))[0]
            tables[col] = frozenset(row or ())
        balance = complex_types.get(f"{name}_Balance")
        out[name] = Entity(frozenset(tprops), tables, frozenset(balance) if balance is not None else None)
    return Schema(out, sorted(n for n in sets if n.startswith("DocumentJournal_")))


# ---------------------------------------------------------------- resolution

MISSING_OBJECT = ("{russian} ({wire}) is not published in the base's standard OData interface ({what}): tick it in "
                  "\"Настройка стандартного интерфейса OData\", or set onec.objects.{logical} to its name in this configuration")
MISSING_FIELD = "{obj} has no field {wire} ({what}): set onec.fields.{logical} to its name in this configuration"

@dataclass(frozen=True)
class Missing:
    """A name the configuration uses that the base does not publish."""

    logical: str  # "counterparties" (object) or "counterparty.tax_id" (field)
    wire: str  # what was looked for: "Catalog_Контрагенты" or "ИНН"
    obj: str  # the object it was looked for in (== wire for an object)
    required: bool
    feature: str

    @property
    def is_field(self) -> bool:
        return self.wire != self.obj

    def text(self) -> str:
        """One whole sentence (easy to wrap in gettext later), with the override to use."""
        if not self.is_field:
            return MISSING_OBJECT.format(russian=russian_name(self.wire), wire=self.wire, what=self.feature, logical=self.logical)
        return MISSING_FIELD.format(obj=self.obj, wire=self.wire, what=self.feature, logical=self.logical)


@dataclass
class Resolution:
    """Effective names for this base (missing optional entries blanked) and what was missing."""

    names: Names
    missing: list[Missing]
    publish: list[str]  # every object the connector reads or writes, as 1C names it (Справочник.…)

    @property
    def required_missing(self) -> list[Missing]:
        return [m for m in self.missing if m.required]

    @property
    def optional_missing(self) -> list[Missing]:
        return [m for m in self.missing if not m.required]

    def error(self) -> ConfigError:
        return ConfigError([f"onec: {m.text()}" for m in self.required_missing])

    def warning(self) -> str | None:
        """The cycle's one warning: every optional name missing, and the feature each one turns off."""
        if not self.optional_missing:
            return None
        return "onec: features switched off for this base: " + "; ".join(m.text() for m in self.optional_missing)


def interest(names: Names) -> set[str]:
    """Every wire object the names refer to (what the metadata cache keeps)."""
    return {o for logical in names.objects for o in names.objs(logical)}


def _used(names: Names, logical: str) -> bool:
    """Whether the source reads ``logical`` at all with these names (else it need not be published)."""
    if logical in ("analytics", "overdue"):
        return bool(names.obj("receivables"))
    if logical == "contracts":
        return bool(names.f("contract.term")) and bool(names.objs("sale"))
    return True


def resolve_against(names: Names, schema: Schema) -> Resolution:
    """Check every object and field ``names`` uses against ``schema``; never raises."""
    objects = {k: list(names.objs(k)) for k in names.objects}
    fields = dict(names.fields)
    missing: list[Missing] = []
    publish: list[str] = []

    def drop_object(logical: str, wire: str, required: bool, feature: str) -> None:
        missing.append(Missing(logical, wire, wire, required, feature))
        objects[logical] = [o for o in objects.get(logical, []) if o != wire]

    # 1) objects
    for logical in names.objects:
        if not _used(names, logical):
            objects[logical] = []
            continue
        required, feature = OBJECT_ROLES.get(logical, (False, logical))
        for wire in names.objs(logical):
            publish.append(russian_name(wire))
            if not schema.has(wire):
                drop_object(logical, wire, required, feature)

    def has_field(obj: str, wire: str, *, register: bool = False, amount: bool = False) -> bool:
        """A register's fields are checked against its ``Balance`` result, where a resource is ``<name>Balance``."""
        e = schema.sets[obj]
        if register and e.balance is not None:
            return (wire + "Balance" if amount else wire) in e.balance
        return wire in e.props

    # 2) plain fields of catalogs, registers and the task object
    for logical, (obj_logical, required, feature) in FIELD_ROLES.items():
        value = names.f(logical)
        objs = objects.get(obj_logical) or []
        if not value or not objs:
            continue
        if logical == "counterparty.partner" and not objects.get("partners"):
            continue
        if logical == "user.contacts":
            continue  # a table: checked with the contact fields below
        register = obj_logical in ("receivables", "overdue")
        amount = logical.endswith(".amount")
        obj = objs[0]
        wires = [w.strip() for w in value.split(",") if w.strip()]
        absent = [w for w in wires if not has_field(obj, w, register=register, amount=amount)]
        if not absent:
            continue
        obj_required = OBJECT_ROLES.get(obj_logical, (False, ""))[0]
        if required:
            for w in absent:
                missing.append(Missing(logical, w, obj, obj_required, feature if obj_required else
                                       f"{OBJECT_ROLES[obj_logical][1]}, which needs it"))
            if not obj_required:
                objects[obj_logical] = []
        else:
            for w in absent:
                missing.append(Missing(logical, w, obj, False, feature))
            fields[logical] = ",".join(w for w in wires if w not in absent)

    # 3) document fields, per type and per object of the type
    for doc_type in DOC_TYPES:
        for obj in list(objects.get(doc_type, [])):
            for suffix, (required, feature) in DOC_FIELD_ROLES.items():
                if (suffix == "contract" and doc_type != "sale") or (suffix == "due" and doc_type != "invoice"):
                    continue
                logical = f"{doc_type}.{suffix}"
                value = names.f(logical)
                if not value or value in schema.props(obj):
                    continue
                if required:
                    type_required = OBJECT_ROLES[doc_type][0]
                    missing.append(Missing(logical, value, obj, type_required,
                                           feature if type_required else f"{OBJECT_ROLES[doc_type][1]}, which need it"))
                    if not type_required:
                        objects[doc_type] = [o for o in objects[doc_type] if o != obj]
                    break
                missing.append(Missing(logical, value, obj, False, feature))
                fields[logical] = ""

    # 4) contact information: an information register (УТ 10.3 / УТП) or tabular sections
    reg = (objects.get("contact_info") or [""])[0]
    if reg:
        for logical in ("contact.object", "contact.type", "contact.text"):
            value = names.f(logical)
            if value and value not in schema.props(reg):
                missing.append(Missing(logical, value, reg, False, "phones and e-mails of counterparties, which need it"))
                objects["contact_info"] = []
                break
    for table_logical, owner_logical, feature in (("contact.table", "counterparties", "phones and e-mails of counterparties"),
                                                  ("user.contacts", "users", "managers' e-mails")):
        owner = (objects.get(owner_logical) or [""])[0]
        table = names.f(table_logical)
        if not owner or not table or (table_logical == "contact.table" and reg):
            continue
        rows = schema.sets[owner].tables.get(table)
        if rows is None:
            missing.append(Missing(table_logical, table, owner, False, feature))
            fields[table_logical] = ""
            continue
        for logical in ("contact.type", "contact.text"):
            value = names.f(logical)
            if value and value not in rows:
                missing.append(Missing(logical, value, f"{owner}.{table}", False, feature))
                fields[table_logical] = ""
                break

    # 5) the document journal needs its standard columns
    journal = (objects.get("journal") or [""])[0]
    if journal:
        absent = [f for f in ("Ref", "Ref_Type", "Date") if f not in schema.props(journal)]
        if absent:
            missing.append(Missing("journal", absent[0], journal, False, OBJECT_ROLES["journal"][1]))
            objects["journal"] = []

    # 6) dependent features: receivables keyed by analytics keys cannot be read without them
    if names.obj("analytics") and names.obj("receivables") and not objects.get("analytics"):
        objects["receivables"], objects["overdue"] = [], []
    if not objects.get("receivables"):
        objects["overdue"] = []
    if not objects.get("contracts"):
        fields["contract.term"] = ""

    effective = Names(names.preset, {k: ",".join(v) for k, v in objects.items()}, fields)
    return Resolution(effective, missing, list(dict.fromkeys(publish)))


# ---------------------------------------------------------------- the cache

def fingerprint(root: str, wanted: Iterable[str]) -> str:
    return hashlib.sha256(json.dumps([root, sorted(set(wanted))], ensure_ascii=False).encode()).hexdigest()[:16]


class MetadataCache:
    """The parsed subset of ``$metadata`` in the store's kv (or in memory without a store).

    ``fetch`` downloads the raw document (one request); everything else here is pure.
    """

    def __init__(self, root: str, wanted: Iterable[str], fetch: Callable[[], bytes], *, every: timedelta,
                 kv_get: Callable[[str], str | None] | None = None, kv_set: Callable[[str, str], None] | None = None):
        self.root = root
        self.wanted = set(wanted)
        self.fetch = fetch
        self.every = every
        self._memory: dict[str, str] = {}
        self.kv_get = kv_get or self._memory.get
        self.kv_set = kv_set or self._memory.__setitem__

    def cached(self, now: datetime, *, any_age: bool = False) -> Schema | None:
        """The cached schema if it is for this base and these names and not due for a re-read
        (``any_age``: however old, for when the base cannot serve a fresh one)."""
        raw = self.kv_get(KV_KEY)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            at = datetime.fromisoformat(data["at"])
        except (ValueError, KeyError, TypeError):
            return None
        if data.get("fp") != fingerprint(self.root, self.wanted) or (now - at >= self.every and not any_age):
            return None
        return Schema.from_json(data)

    def refresh(self, now: datetime) -> Schema:
        """Download, parse and cache; returns the full parsed schema (the cache keeps a subset)."""
        schema = parse_edmx(self.fetch())
        data = {"fp": fingerprint(self.root, self.wanted), "at": now.isoformat(), **schema.subset(self.wanted).to_json()}
        self.kv_set(KV_KEY, json.dumps(data, ensure_ascii=False, separators=(",", ":")))
        return schema

    def load(self, now: datetime, *, refresh: bool = False) -> tuple[Schema, bool]:
        """``(schema, fresh)``: the cache when valid, else a download."""
        if not refresh:
            schema = self.cached(now)
            if schema is not None:
                return schema, False
        return self.refresh(now), True
