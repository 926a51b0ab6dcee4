"""The REST methods of the emulated portal, each rendering its own family's wire shape.

Handlers take the PHP-normalised parameter tree and the caller, return an :class:`Out` (payload
plus list metadata and the work done, which the server turns into ``total``/``next``/``time``
and modelled operating time) or raise :class:`ApiError` with the body a real portal sends.
Shapes and error texts follow the official docs (see the module docstrings of ``schema``/``server``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bitrix.emulator.apps import AppMethods
from bitrix.emulator.schema import (
    ACTIVITY_EXPLICIT,
    FIELD_TYPES,
    ITEM_TABLE,
    REQUISITE_PRESETS,
    STAMPS,
    TASK_UF,
    UF_LABELS,
    item_name,
    task_name,
)
from bitrix.emulator.tables import (
    ANY,
    BOOL,
    DATE,
    DT,
    FLOAT,
    INT,
    LIST_INT,
    LIST_STR,
    MONEY,
    MULTI,
    STR,
    YN,
    ApiError,
    Compiled,
    Table,
    as_list,
    cache_key_of,
    coerce,
    compile_filter,
    intval,
    iso,
    iso_date,
    parse_dt,
    parse_order,
    run_query,
    split_key,
    truthy,
)

if TYPE_CHECKING:
    from bitrix.emulator.portal import Caller

PAGE = 50
OWNER_TABLE = {4: "company", 3: "contact", 2: "deal", 31: "invoice"}
ENTITY_TYPE_WORD = {"company": 4, "contact": 3, "deal": 2, "lead": 1}


@dataclass
class Out:
    """A method's answer plus what it cost: ``counted`` rows visited by COUNT, ``returned`` rows rendered."""

    result: Any
    total: int | None = None
    next: int | None = None
    counted: int = 0
    returned: int = 0


class Params:
    """A request's parameter tree with Bitrix's case-insensitive lookup (``FILTER`` == ``filter``)."""

    def __init__(self, data: dict):
        self.data = data if isinstance(data, dict) else {}
        self._upper = {str(k).upper(): k for k in self.data}

    def get(self, name: str, default: Any = None, *, exact: bool = False) -> Any:
        if name in self.data:
            return self.data[name]
        if exact:
            return default
        k = self._upper.get(name.upper())
        return self.data[k] if k is not None else default

    def has(self, name: str) -> bool:
        return name.upper() in self._upper


def _start(p: Params) -> int:
    v = p.get("start")
    if v is None or v == "":
        return 0
    n = intval(v)
    return -1 if n < 0 else n


def _filter_map(p: Params, name: str = "filter", *, exact: bool = False) -> dict:
    flt = p.get(name, exact=exact)
    if flt is None or flt == "" or flt == []:
        return {}
    if isinstance(flt, list):
        return {i: v for i, v in enumerate(flt)}
    if not isinstance(flt, dict):
        raise ApiError(400, "", f"Parameter '{name}' must be array.")
    return flt


# ---------------------------------------------------------------- value renderers

def legacy_value(ftype: str, v: Any) -> Any:
    """Legacy CRM: everything a string (``"37"``, ``"1000.00"``, ``"Y"``) or null."""
    if v is None:
        return None
    if ftype == INT:
        return str(v)
    if ftype == MONEY:
        return f"{float(v):.2f}"
    if ftype == FLOAT:
        return str(v)
    if ftype == DT:
        return iso(v)
    if ftype == DATE:
        return iso_date(v)
    if ftype == BOOL:
        return "Y" if v else "N"
    if ftype == MULTI:
        return [{"ID": str(e["ID"]), "VALUE_TYPE": e["VALUE_TYPE"], "VALUE": e["VALUE"], "TYPE_ID": e["TYPE_ID"]}
                for e in v]
    if ftype == LIST_INT:
        return [str(x) for x in v]
    return v


def typed_value(ftype: str, v: Any) -> Any:
    """crm.item: ints, numbers, ISO dates, ``"Y"``/``"N"``."""
    if v is None:
        return None
    if ftype == INT:
        return int(v)
    if ftype in (MONEY, FLOAT):
        f = float(v)
        return int(f) if f.is_integer() else f
    if ftype == DT:
        return iso(v)
    if ftype == DATE:
        return iso_date(v)
    if ftype == LIST_INT:
        return [int(x) for x in v]
    return v


def task_value(ftype: str, v: Any) -> Any:
    """tasks.*: ids and numbers as strings, dates ISO, flags ``"Y"``/``"N"``."""
    if v is None:
        return None
    if ftype == INT:
        return str(v)
    if ftype == DT:
        return iso(v)
    if ftype == DATE:
        return iso_date(v)
    if ftype == LIST_INT:
        return [str(x) for x in v]
    if ftype == BOOL:
        return "Y" if v else "N"
    return v


class Methods(AppMethods):
    """Mixed into :class:`Portal`: one ``m_<method>`` per REST method (dots as underscores)."""

    # provided by Portal
    tables: dict[str, Table]
    cache: Any
    scopes: tuple[str, ...]
    admins: set[int]
    workflow_templates: dict[int, str] | None
    app_state: dict[str, list]
    uf_labels: dict[tuple[str, str], str]
    now: Callable[[], datetime]
    next_fm_id: Callable[[], int]
    task_guid: Callable[[int], str]

    # ------------------------------------------------------------ helpers

    def _resolver(self, t: Table, exclude: set[str] = frozenset()) -> Callable[[str], tuple[str, str] | None]:
        def resolve(name: str) -> tuple[str, str] | None:
            c = t.canon(name)
            if c is None or c in exclude:
                return None
            return c, t.schema[c]
        return resolve

    def _page(self, entity: str, comp: Compiled, order: list, start: int, key: Any) -> Any:
        return run_query(self.tables[entity], comp, order, start, cache=self.cache, cache_key=key)

    def _legacy_fields(self, t: Table, select: Any, explicit: set[str] = frozenset(), add_id: bool = True) -> list[str]:
        std = [f for f, ft in t.schema.items() if ft != MULTI and not f.startswith("UF_") and f not in explicit]
        uf = [f for f in t.schema if f.startswith("UF_")]
        sel = [str(s) for s in as_list(select) if isinstance(s, (str, int))]
        if not sel:
            return std + uf
        out: list[str] = []
        for s in sel:
            if s == "*":
                out += std
            elif s.upper() == "UF_*":
                out += uf
            else:
                c = t.canon(s)
                if c:
                    out.append(c)
        out = list(dict.fromkeys(out))
        if add_id and t.id_field not in out:
            out.append(t.id_field)
        return out

    def _legacy_row(self, t: Table, row: dict, fields: list[str]) -> dict:
        out = {}
        for f in fields:
            ft = t.schema[f]
            v = row.get(f)
            if ft == MULTI:
                if v:
                    out[f] = legacy_value(ft, v)
                continue
            out[f] = legacy_value(ft, v)
        return out

    def _legacy_list(self, entity: str, p: Params, *, default_order: list | None = None,
                     explicit: set[str] = frozenset(), add_id: bool = True, flt: dict | None = None) -> Out:
        t = self.tables[entity]
        flt = _filter_map(p) if flt is None else flt
        resolve = self._resolver(t)
        comp = compile_filter(flt, resolve)
        order = parse_order(p.get("order"), resolve) or (default_order or [])
        start = _start(p)
        page = self._page(entity, comp, order, start, cache_key_of(entity, flt))
        fields = self._legacy_fields(t, p.get("select"), explicit, add_id)
        rows = [self._legacy_row(t, r, fields) for r in page.rows]
        return Out(rows, total=page.total if page.total is not None else 0, next=page.next,
                   counted=page.counted, returned=len(rows))

    def _id_param(self, p: Params, name: str = "id") -> int:
        v = p.get(name)
        n = intval(v) if v is not None and re.match(r"^\s*\d+\s*$", str(v)) else 0
        if n <= 0:
            raise ApiError(400, "", "ID is not defined or invalid.")
        return n

    def _stamp(self, entity: str, row: dict, creating: bool) -> datetime:
        now = self.now()
        created, modified = STAMPS[entity]
        if creating and created:
            row[created] = now
        if modified:
            row[modified] = now
        return now

    def _bump_owner(self, owner_type: int, owner_id: int, when: datetime, who: int) -> None:
        """An activity, comment or task written against a CRM object moves its last-activity time."""
        entity = {4: "company", 3: "contact", 2: "deal"}.get(owner_type)
        if not entity:
            return
        t = self.tables[entity]
        row = t.rows.get(owner_id)
        if row is None:
            return
        row["LAST_ACTIVITY_TIME"] = when
        row["LAST_ACTIVITY_BY"] = who
        row["DATE_MODIFY"] = when
        t.touched(owner_id)

    def _merge_multi(self, current: list, value: Any, kind: str) -> list:
        """Multifield update semantics (crm-contact-update.md): by ID overwrite/delete, no ID append."""
        cur = [dict(e) for e in (current or [])]
        for it in as_list(value):
            if not isinstance(it, dict):
                continue
            iid = it.get("ID")
            val = it.get("VALUE")
            if iid not in (None, ""):
                found = next((e for e in cur if e["ID"] == intval(iid)), None)
                if found is None:
                    continue
                if str(it.get("DELETE", "")).upper() == "Y" or val in (None, ""):
                    cur.remove(found)
                else:
                    found["VALUE"] = str(val)
                    if it.get("VALUE_TYPE"):
                        found["VALUE_TYPE"] = str(it["VALUE_TYPE"])
            elif val not in (None, ""):
                cur.append({"ID": self.next_fm_id(), "VALUE_TYPE": str(it.get("VALUE_TYPE") or "WORK"),
                            "VALUE": str(val), "TYPE_ID": kind})
        return cur

    _READONLY = {"ID", "DATE_CREATE", "DATE_MODIFY", "CREATED_BY_ID", "MODIFY_BY_ID", "HAS_PHONE", "HAS_EMAIL",
                 "HAS_IMOL", "LAST_ACTIVITY_TIME", "LAST_ACTIVITY_BY", "STAGE_SEMANTIC_ID", "MOVED_TIME", "MOVED_BY_ID"}

    def _legacy_apply(self, entity: str, row: dict, fields: dict, caller: "Caller", creating: bool) -> None:
        t = self.tables[entity]
        for k, v in fields.items():
            name = t.canon(str(k))
            if name is None or name in self._READONLY:
                continue  # unknown keys are silently ignored (crm-deal-update.md)
            ft = t.schema[name]
            if ft == MULTI:
                row[name] = self._merge_multi(row.get(name) or [], v, name)
            else:
                row[name] = coerce(ft, v)
        if "PHONE" in t.schema:
            row["HAS_PHONE"] = "Y" if row.get("PHONE") else "N"
            row["HAS_EMAIL"] = "Y" if row.get("EMAIL") else "N"
        if entity == "deal":
            sem = self._stage_semantic("DEAL_STAGE", row.get("STAGE_ID") or "NEW")
            if row.get("STAGE_SEMANTIC_ID") != sem or creating:
                row["MOVED_TIME"] = self.now()
                row["MOVED_BY_ID"] = caller.user_id
            row["STAGE_SEMANTIC_ID"] = sem
            row["CLOSED"] = "Y" if sem in ("S", "F") else "N"
            row.setdefault("CATEGORY_ID", 0)
            row.setdefault("CURRENCY_ID", "UAH")
        row["MODIFY_BY_ID"] = caller.user_id
        if creating:
            row["CREATED_BY_ID"] = caller.user_id
            if row.get("ASSIGNED_BY_ID") is None:
                row["ASSIGNED_BY_ID"] = caller.user_id
            row.setdefault("OPENED", "Y")
        self._stamp(entity, row, creating)

    def _stage_semantic(self, entity_id: str, status_id: str) -> str:
        for r in self.tables["status"].rows.values():
            if r["ENTITY_ID"] == entity_id and r["STATUS_ID"] == status_id:
                return r["SEMANTICS"] or "P"
        return "P"

    def _fields(self, p: Params, name: str = "fields", *, exact: bool = False) -> dict:
        f = p.get(name, exact=exact)
        if f is None:
            return {}
        if not isinstance(f, dict):
            if isinstance(f, list) and not f:
                return {}
            raise ApiError(400, "", f"Parameter '{name}' must be array")
        return f

    # ------------------------------------------------------------ basic

    def m_scope(self, p: Params, caller: "Caller") -> Out:
        if truthy(p.get("full", False)):
            return Out(list(dict.fromkeys([*self.scopes, "basic"])))
        return Out(list(caller.scopes))

    def m_server_time(self, p: Params, caller: "Caller") -> Out:
        return Out(iso(self.now()))

    def m_profile(self, p: Params, caller: "Caller") -> Out:
        u = self.tables["user"].rows.get(caller.user_id, {})
        return Out({"ID": caller.user_id, "ADMIN": caller.user_id in self.admins, "NAME": u.get("NAME", ""),
                    "LAST_NAME": u.get("LAST_NAME", ""), "PERSONAL_GENDER": "", "PERSONAL_PHOTO": "",
                    "TIME_ZONE": "", "TIME_ZONE_OFFSET": 0})

    def m_user_current(self, p: Params, caller: "Caller") -> Out:
        row = self.tables["user"].rows.get(caller.user_id)
        if row is None:
            raise ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        return Out(self._user_row(row), returned=1)

    # ------------------------------------------------------------ users & departments

    def _user_row(self, row: dict) -> dict:
        t = self.tables["user"]
        out: dict[str, Any] = {}
        for f, ft in t.schema.items():
            v = row.get(f)
            if f == "ID":
                out[f] = str(v)
            elif ft == BOOL:
                out[f] = bool(v)
            elif ft == LIST_INT:
                out[f] = [int(x) for x in (v or [])]
            elif ft == DT:
                out[f] = iso(v) if v else ""
            elif ft == DATE:
                out[f] = iso_date(v) if v else ""
            else:
                out[f] = "" if v is None else v
        return out

    _USER_RESERVED = {"SORT", "ORDER", "START", "FILTER", "ADMIN_MODE", "SELECT", "AUTH"}

    def m_user_get(self, p: Params, caller: "Caller") -> Out:
        t = self.tables["user"]
        flt = dict(_filter_map(p, "FILTER")) if p.has("FILTER") else {}
        for k, v in p.data.items():
            if str(k).upper() not in self._USER_RESERVED:
                flt.setdefault(k, v)
        search = next((v for k, v in flt.items() if str(k).upper() in ("NAME_SEARCH", "FIND")), None)
        flt = {k: v for k, v in flt.items() if str(k).upper() not in ("NAME_SEARCH", "FIND")}
        resolve = self._resolver(t)
        # user filters accept '%' wildcards in plain values (CUser::GetList)
        flt2 = {}
        for k, v in flt.items():
            key = str(k)
            if isinstance(v, str) and "%" in v and key[:1].isalpha():
                flt2["=%" + key] = v
            else:
                flt2[key] = v
        comp = compile_filter(flt2, resolve)
        if search:
            words = str(search).casefold().split()
            comp.preds.append(lambda r: all(any(w in str(r.get(f) or "").casefold() for f in ("NAME", "LAST_NAME", "EMAIL"))
                                            for w in words))
        sort = p.get("sort")
        order_p = p.get("order")
        if isinstance(order_p, dict):
            order = parse_order(order_p, resolve)
        elif sort:
            order = parse_order({str(sort): str(order_p or "ASC")}, resolve)
        else:
            order = []
        page = self._page("user", comp, order, _start(p), cache_key_of("user", flt2, search))
        rows = [self._user_row(r) for r in page.rows]
        return Out(rows, total=page.total if page.total is not None else 0, next=page.next,
                   counted=page.counted, returned=len(rows))

    def m_department_get(self, p: Params, caller: "Caller") -> Out:
        t = self.tables["department"]
        # PHP keys are case-sensitive here: lowercase sort/order sort, UPPERCASE keys filter
        flt = {k: v for k, v in p.data.items() if str(k) in ("ID", "NAME", "SORT", "PARENT", "UF_HEAD")}
        resolve = self._resolver(t)
        comp = compile_filter(flt, resolve)
        sort = p.get("sort")
        order = parse_order({str(sort): str(p.get("order") or "ASC")}, resolve) if sort else []
        page = self._page("department", comp, order, _start(p), cache_key_of("department", flt))
        rows = []
        for r in page.rows:
            d = {"ID": str(r["ID"]), "NAME": r["NAME"], "SORT": r["SORT"]}
            if r.get("PARENT"):
                d["PARENT"] = str(r["PARENT"])
            if r.get("UF_HEAD"):
                d["UF_HEAD"] = str(r["UF_HEAD"])
            rows.append(d)
        return Out(rows, total=page.total if page.total is not None else 0, next=page.next,
                   counted=page.counted, returned=len(rows))

    # ------------------------------------------------------------ legacy CRM: company / contact / deal

    def _crm_get(self, entity: str, p: Params) -> Out:
        rid = self._id_param(p)
        t = self.tables[entity]
        row = t.rows.get(rid)
        if row is None:
            raise ApiError(400, "", "Not found")
        fields = [f for f in t.schema]
        return Out(self._legacy_row(t, row, fields), returned=1)

    def _crm_add(self, entity: str, p: Params, caller: "Caller") -> Out:
        fields = self._fields(p)
        row: dict = {}
        self._legacy_apply(entity, row, fields, caller, creating=True)
        rid = self.tables[entity].insert(row)
        return Out(rid)

    _NOT_FOUND_UPDATE = {"company": "Company is not found", "contact": "Contact is not found", "deal": "Not found"}

    def _crm_update(self, entity: str, p: Params, caller: "Caller") -> Out:
        rid = self._id_param(p)
        t = self.tables[entity]
        row = t.rows.get(rid)
        if row is None:
            raise ApiError(400, "", self._NOT_FOUND_UPDATE[entity])
        fields = self._fields(p)
        self._legacy_apply(entity, row, fields, caller, creating=False)
        t.touched(rid)
        return Out(True)

    def _crm_delete(self, entity: str, p: Params) -> Out:
        rid = self._id_param(p)
        if not self.tables[entity].remove(rid):
            raise ApiError(400, "", "Not found")
        return Out(True)

    _WIRE_TYPES = {INT: "integer", STR: "string", MONEY: "double", DT: "datetime", DATE: "date", YN: "char",
                   MULTI: "crm_multifield", ANY: "string", LIST_INT: "integer", LIST_STR: "string", BOOL: "char"}
    _ITEM_READONLY = {"id", "createdTime", "updatedTime", "createdBy", "updatedBy", "movedBy", "movedTime", "previousStageId"}

    def m_crm_item_fields(self, p: Params, caller: "Caller") -> Out:
        """crm-item-fields.md: ``{"fields": {camelName: {type, isRequired, ..., title, upperName}}}``."""
        _etid, entity = self._item_entity(p)
        t = self.tables[entity]
        out = {}
        for camel, stored in self._item_names(entity).items():
            ft = t.schema[stored]
            upper = stored if stored.isupper() or "_" in stored else re.sub(r"([A-Z])", r"_\1", stored).upper()
            uf = upper.startswith("UF_")
            out[camel] = {"type": self._WIRE_TYPES.get(ft, "string"), "isRequired": False,
                          "isReadOnly": camel in self._ITEM_READONLY, "isImmutable": False,
                          "isMultiple": ft in (MULTI, LIST_INT, LIST_STR), "isDynamic": uf,
                          "title": self.uf_labels.get((entity, stored)) or UF_LABELS.get(stored) or camel, "upperName": upper}
        return Out({"fields": out})

    def m_crm_requisite_preset_list(self, p: Params, caller: "Caller") -> Out:
        """The requisite templates of a fresh portal (crm-requisite-preset-list.md), all active."""
        rows = [{"ID": str(i), "ENTITY_TYPE_ID": "8", "COUNTRY_ID": "1", "NAME": name, "ACTIVE": "Y", "SORT": str(500 + i),
                 "XML_ID": f"#CRM_REQUISITE_PRESET_DEF_{i}#"} for i, name in sorted(REQUISITE_PRESETS.items())]
        return Out(rows, total=len(rows))

    def _crm_fields(self, entity: str) -> Out:
        """Every field with its wire type; custom fields (isDynamic) carry the labels people see."""
        t = self.tables[entity]
        names = self._WIRE_TYPES
        out = {}
        for f, ft in t.schema.items():
            uf = f.startswith("UF_")
            desc = {"type": names.get(ft, "string") if uf else FIELD_TYPES.get(f, names.get(ft, "string")),
                    "isRequired": f == "TITLE", "isReadOnly": f in self._READONLY, "isImmutable": False,
                    "isMultiple": ft in (MULTI, LIST_INT, LIST_STR), "isDynamic": uf, "title": f}
            if uf:
                label = self.uf_labels.get((entity, f)) or UF_LABELS.get(f) or f
                desc |= {"listLabel": label, "formLabel": label, "filterLabel": label, "settings": {}}
            out[f] = desc
        return Out(out)

    # ------------------------------------------------------------ requisites

    def m_crm_requisite_list(self, p: Params, caller: "Caller") -> Out:
        return self._legacy_list("requisite", p, add_id=False)

    def m_crm_requisite_get(self, p: Params, caller: "Caller") -> Out:
        return self._crm_get("requisite", p)

    def m_crm_requisite_add(self, p: Params, caller: "Caller") -> Out:
        """Errors as ``crm-requisite-add.md`` lists them: the owner type, the owner, the template, each checked."""
        fields = self._fields(p)
        t = self.tables["requisite"]
        row: dict = {}
        for k, v in fields.items():
            c = t.canon(str(k))
            if c and c != "ID":
                row[c] = coerce(t.schema[c], v)
        owner_table = {3: "contact", 4: "company"}.get(row.get("ENTITY_TYPE_ID") or 0)
        if owner_table is None:
            raise ApiError(400, "", "ENTITY_TYPE_ID is not defined or invalid.")
        if not row.get("ENTITY_ID") or row["ENTITY_ID"] <= 0:
            raise ApiError(400, "", "ENTITY_ID is not defined or invalid.")
        if row.get("PRESET_ID") not in REQUISITE_PRESETS:
            raise ApiError(400, "", "PRESET_ID is not defined or invalid.")
        if row["ENTITY_ID"] not in self.tables[owner_table].rows:
            raise ApiError(400, "", "Entity not found.")
        row.setdefault("ACTIVE", "Y")
        row.setdefault("NAME", "Organization")
        self._stamp("requisite", row, True)
        return Out(t.insert(row))

    # ------------------------------------------------------------ activities

    def m_crm_activity_list(self, p: Params, caller: "Caller") -> Out:
        """Default order START_TIME ascending; ``BINDINGS`` filters on any bound owner (crm-activity-list.md)."""
        flt = dict(_filter_map(p))
        pairs: list[tuple[int, int | None]] = []
        for key in [k for k in flt if str(k).upper() == "BINDINGS"]:
            for b in as_list(flt.pop(key)):
                if isinstance(b, dict):
                    bp = Params(b)
                    owner = bp.get("OWNER_ID")
                    pairs.append((intval(bp.get("OWNER_TYPE_ID")), None if owner in (None, "") else intval(owner)))
        t = self.tables["activity"]
        resolve = self._resolver(t)
        comp = compile_filter(flt, resolve)
        if pairs:
            comp.preds.append(lambda r: any(ot == pt and (pid is None or oid == pid)
                                            for ot, oid in (r.get("BINDINGS") or []) for pt, pid in pairs))
        order = parse_order(p.get("order"), resolve) or [("START_TIME", DT, False)]
        page = self._page("activity", comp, order, _start(p), cache_key_of("activity", flt, pairs))
        fields = self._legacy_fields(t, p.get("select"), ACTIVITY_EXPLICIT)
        rows = [self._activity_row(r, fields) for r in page.rows]
        return Out(rows, total=page.total if page.total is not None else 0, next=page.next,
                   counted=page.counted, returned=len(rows))

    def _activity_row(self, row: dict, fields: list[str]) -> dict:
        t = self.tables["activity"]
        out = self._legacy_row(t, row, [f for f in fields if f not in ACTIVITY_EXPLICIT])
        if "BINDINGS" in fields:
            out["BINDINGS"] = [{"OWNER_ID": str(oid), "OWNER_TYPE_ID": str(ot)} for ot, oid in row.get("BINDINGS") or []]
        if "COMMUNICATIONS" in fields:
            out["COMMUNICATIONS"] = self._communications(row)
        if "FILES" in fields:
            out["FILES"] = []
        return out

    def _communications(self, row: dict) -> list:
        kind = {2: "PHONE", 4: "EMAIL"}.get(row.get("TYPE_ID"))
        owner = self.tables.get(OWNER_TABLE.get(row.get("OWNER_TYPE_ID"), ""), None)
        if not kind or owner is None:
            return []
        o = owner.rows.get(row.get("OWNER_ID"), {})
        vals = o.get(kind) or []
        if not vals:
            return []
        return [{"ID": str(row["ID"]), "TYPE": kind, "VALUE": vals[0]["VALUE"], "ENTITY_ID": str(row["OWNER_ID"]),
                 "ENTITY_TYPE_ID": str(row["OWNER_TYPE_ID"])}]

    def m_crm_activity_get(self, p: Params, caller: "Caller") -> Out:
        rid = self._id_param(p)
        row = self.tables["activity"].rows.get(rid)
        if row is None:
            raise ApiError(400, "", "Not found")
        return Out(self._activity_row(row, list(self.tables["activity"].schema)), returned=1)

    def m_crm_activity_todo_add(self, p: Params, caller: "Caller") -> Out:
        ot, oid = intval(p.get("ownerTypeId", exact=True)), intval(p.get("ownerId", exact=True))
        deadline = p.get("deadline", exact=True)
        if not ot or not oid or not deadline:
            raise ApiError(400, "100", "Required fields are not provided")
        when = parse_dt(deadline)
        if when is None:
            raise ApiError(400, "WRONG_DATETIME_FORMAT", "Wrong datetime format")
        owner = self.tables.get(OWNER_TABLE.get(ot, ""), None)
        if owner is None or oid not in owner.rows:
            raise ApiError(400, "OWNER_NOT_FOUND", "Owner not found.")
        now = self.now()
        resp = intval(p.get("responsibleId", exact=True)) or caller.user_id
        row = {"OWNER_ID": oid, "OWNER_TYPE_ID": ot, "TYPE_ID": 6, "PROVIDER_ID": "CRM_TODO", "PROVIDER_TYPE_ID": "TODO",
               "ASSOCIATED_ENTITY_ID": 0, "SUBJECT": str(p.get("title", "", exact=True) or ""),
               "DESCRIPTION": str(p.get("description", "", exact=True) or ""), "DESCRIPTION_TYPE": 1,
               "CREATED": now, "LAST_UPDATED": now, "START_TIME": when, "END_TIME": when, "DEADLINE": when,
               "COMPLETED": "N", "STATUS": 1, "RESPONSIBLE_ID": resp, "PRIORITY": 2, "NOTIFY_TYPE": 0,
               "NOTIFY_VALUE": 0, "DIRECTION": 0, "SETTINGS": {}, "PROVIDER_PARAMS": {}, "AUTHOR_ID": caller.user_id,
               "EDITOR_ID": caller.user_id, "BINDINGS": [(ot, oid)]}
        rid = self.tables["activity"].insert(row)
        self._bump_owner(ot, oid, now, caller.user_id)
        return Out({"id": rid})

    # ------------------------------------------------------------ crm.status

    def m_crm_status_list(self, p: Params, caller: "Caller") -> Out:
        t = self.tables["status"]
        resolve = self._resolver(t)
        flt = _filter_map(p)
        comp = compile_filter(flt, resolve)
        order = parse_order(p.get("order"), resolve) or [("SORT", INT, False)]
        page = self._page("status", comp, order, _start(p), cache_key_of("status", flt))
        rows = []
        for r in page.rows:
            d = {"ID": str(r["ID"]), "ENTITY_ID": r["ENTITY_ID"], "STATUS_ID": r["STATUS_ID"], "NAME": r["NAME"],
                 "NAME_INIT": r["NAME_INIT"], "SORT": str(r["SORT"]), "SYSTEM": r["SYSTEM"],
                 "CATEGORY_ID": None if r["CATEGORY_ID"] is None else str(r["CATEGORY_ID"]), "COLOR": r["COLOR"],
                 "SEMANTICS": r["SEMANTICS"]}
            if r.get("EXTRA") is not None:
                d["EXTRA"] = dict(r["EXTRA"])
            rows.append(d)
        return Out(rows, total=page.total if page.total is not None else 0, next=page.next,
                   counted=page.counted, returned=len(rows))

    # ------------------------------------------------------------ crm.item (universal)

    def _item_entity(self, p: Params) -> tuple[int, str]:
        etid = intval(p.get("entityTypeId", exact=True))
        entity = ITEM_TABLE.get(etid)
        if entity is None:
            if etid == 5:
                raise ApiError(400, "ENTITY_TYPE_NOT_SUPPORTED", "Entity type `Invoice` is not supported")
            raise ApiError(400, "NOT_FOUND", "SPA not found")
        return etid, entity

    def _item_names(self, entity: str) -> dict[str, str]:
        """wire (camelCase) name -> stored name."""
        t = self.tables[entity]
        if entity == "invoice":
            return {f: f for f in t.schema}
        return {item_name(f): f for f, ft in t.schema.items() if ft != MULTI}

    def _item_resolver(self, entity: str) -> Callable[[str], tuple[str, str] | None]:
        names = self._item_names(entity)
        lower = {k.lower(): v for k, v in names.items()}
        t = self.tables[entity]

        def resolve(name: str) -> tuple[str, str] | None:
            stored = names.get(name) or lower.get(name.lower())
            return None if stored is None else (stored, t.schema[stored])
        return resolve

    _ZERO_IF_EMPTY = {"companyId", "contactId", "mycompanyId", "categoryId", "parentId2"}

    def _item_row(self, etid: int, entity: str, row: dict, select: Any) -> dict:
        t = self.tables[entity]
        names = self._item_names(entity)
        sel = [str(s) for s in as_list(select) if isinstance(s, str)]
        if not sel or "*" in sel:
            wanted = list(names)
        else:
            lower = {k.lower(): k for k in names}
            wanted = ["id"] + [lower[s.lower()] for s in sel if s.lower() in lower and s.lower() != "id"]
        out: dict[str, Any] = {}
        for w in wanted:
            stored = names[w]
            v = typed_value(t.schema[stored], row.get(stored))
            if v is None and w in self._ZERO_IF_EMPTY:
                v = 0
            out[w] = v
        if not sel or "*" in sel:
            out["entityTypeId"] = etid
        return out

    def m_crm_item_list(self, p: Params, caller: "Caller") -> Out:
        etid, entity = self._item_entity(p)
        resolve = self._item_resolver(entity)
        flt = _filter_map(p, exact=True)
        comp = compile_filter(flt, resolve, id_field=self.tables[entity].id_field, allow_logic=True,
                              strict=lambda n: ApiError(400, "INVALID_ARG_VALUE",
                                                        f"Invalid filter: field '{n}' is not allowed in filter"))
        order = parse_order(p.get("order", exact=True), resolve)
        page = self._page(entity, comp, order, _start(p), cache_key_of("item", etid, flt))
        items = [self._item_row(etid, entity, r, p.get("select", exact=True)) for r in page.rows]
        return Out({"items": items}, total=page.total if page.total is not None else 0, next=page.next,
                   counted=page.counted, returned=len(items))

    def _item_get_row(self, p: Params) -> tuple[int, str, dict]:
        etid, entity = self._item_entity(p)
        rid = intval(p.get("id", exact=True))
        row = self.tables[entity].rows.get(rid)
        if row is None:
            raise ApiError(400, "NOT_FOUND", "Element not found")
        return etid, entity, row

    def m_crm_item_get(self, p: Params, caller: "Caller") -> Out:
        etid, entity, row = self._item_get_row(p)
        return Out({"item": self._item_row(etid, entity, row, None)}, returned=1)

    def _item_apply(self, etid: int, entity: str, row: dict, fields: dict, caller: "Caller", creating: bool) -> None:
        if entity != "invoice":
            names = self._item_names(entity)
            lower = {k.lower(): v for k, v in names.items()}
            legacy = {}
            for k, v in fields.items():
                stored = names.get(str(k)) or lower.get(str(k).lower())
                if stored:
                    legacy[stored] = v
            self._legacy_apply(entity, row, legacy, caller, creating)
            return
        t = self.tables["invoice"]
        changed = creating
        for k, v in fields.items():
            c = t.canon(str(k))
            if c is None or c in ("id", "createdTime", "updatedTime", "createdBy", "updatedBy"):
                continue
            value = coerce(t.schema[c], v)
            if c == "stageId" and value and not creating:
                funnel = row.get("categoryId") or 1
                if not any(r["ENTITY_ID"] == f"SMART_INVOICE_STAGE_{funnel}" and r["STATUS_ID"] == value
                           for r in self.tables["status"].rows.values()):
                    raise ApiError(400, "CRM_FIELD_ERROR_VALUE_NOT_VALID", 'Invalid value for field "Stage"')
            if c == "stageId" and row.get("stageId") != value:
                row["previousStageId"] = row.get("stageId")
                row["movedTime"] = self.now()
                row["movedBy"] = caller.user_id
            changed = changed or row.get(c) != value
            row[c] = value
        if not changed:
            return  # crm-item-update.md: nothing changed, nothing is saved
        row["updatedBy"] = caller.user_id
        if creating:
            row["createdBy"] = caller.user_id
            row.setdefault("assignedById", caller.user_id)
            row.setdefault("stageId", "DT31_1:N")
            row.setdefault("categoryId", 1)
            row.setdefault("currencyId", "UAH")
            row.setdefault("opened", "Y")
        self._stamp("invoice", row, creating)

    def m_crm_item_update(self, p: Params, caller: "Caller") -> Out:
        etid, entity, row = self._item_get_row(p)
        self._item_apply(etid, entity, row, self._fields(p, exact=True), caller, creating=False)
        self.tables[entity].touched(row[self.tables[entity].id_field])
        return Out({"item": self._item_row(etid, entity, row, None)}, returned=1)

    def m_crm_item_add(self, p: Params, caller: "Caller") -> Out:
        etid, entity = self._item_entity(p)
        row: dict = {}
        self._item_apply(etid, entity, row, self._fields(p, exact=True), caller, creating=True)
        rid = self.tables[entity].insert(row)
        if entity == "invoice":  # what the portal fills itself (crm-item-add.md: begindate today, closedate +7 days)
            today = self.now().date()
            row.setdefault("begindate", today)
            row["begindate"] = row["begindate"] or today
            row["closedate"] = row.get("closedate") or row["begindate"] + timedelta(days=7)
            row["accountNumber"] = row.get("accountNumber") or str(rid)
            row.setdefault("isManualOpportunity", "N")
        return Out({"item": self._item_row(etid, entity, row, None)}, returned=1)

    # ------------------------------------------------------------ product rows (crm.item.productrow.*)

    _ROW_OWNERS = {"D": ("deal", "OPPORTUNITY", "IS_MANUAL_OPPORTUNITY", "DATE_MODIFY"),
                   "SI": ("invoice", "opportunity", "isManualOpportunity", "updatedTime")}

    def _row_owner(self, owner_type: Any, owner_id: Any) -> tuple[str, dict]:
        """The owner of product rows: ACCESS_DENIED when it does not exist or takes no rows (productrow list docs)."""
        spec = self._ROW_OWNERS.get(str(owner_type or ""))
        row = self.tables[spec[0]].rows.get(intval(owner_id)) if spec else None
        if spec is None or row is None:
            raise ApiError(400, "ACCESS_DENIED", "Access denied")
        return str(owner_type), row

    def _productrow_out(self, r: dict) -> dict:
        t = self.tables["productrow"]
        return {f: typed_value(t.schema[f], r.get(f)) for f in t.schema}

    def m_crm_item_productrow_list(self, p: Params, caller: "Caller") -> Out:
        """``filter`` needs ``=ownerType`` and ``=ownerId`` (camelCase, one owner); ``id``/``productId`` filter,
        anything else is ignored; ``order`` by id or sort (default sort); 50 a page; no ``select``."""
        flt = _filter_map(p, exact=True)
        for k, v in flt.items():
            if isinstance(v, (list, dict)) and not str(k).startswith("@"):
                raise ApiError(400, "INVALID_ARG_VALUE", f"Invalid value for the filter key {k}")
        if "=ownerType" not in flt or "=ownerId" not in flt:
            raise ApiError(400, "REQUIRED_ARG_MISSING", "Required filter keys =ownerType and =ownerId are missing")
        owner_type, owner = self._row_owner(flt["=ownerType"], flt["=ownerId"])
        oid = owner[self.tables[self._ROW_OWNERS[owner_type][0]].id_field]
        t = self.tables["productrow"]
        kept = {k: v for k, v in flt.items() if split_key(str(k))[1] in ("id", "productId")}
        comp = compile_filter(kept, self._resolver(t), id_field="id")
        comp.preds.append(lambda r: r.get("ownerType") == owner_type and r.get("ownerId") == oid)
        resolve = self._resolver(t)
        order = [o for o in parse_order(p.get("order", exact=True), resolve) if o[0] in ("id", "sort")] or [("sort", INT, False)]
        page = self._page("productrow", comp, order, _start(p), cache_key_of("productrow", owner_type, oid, kept))
        rows = [self._productrow_out(r) for r in page.rows]  # start=-1: no total at all (productrow list docs)
        return Out({"productRows": rows}, total=page.total, next=page.next, counted=page.counted, returned=len(rows))

    def m_crm_item_productrow_set(self, p: Params, caller: "Caller") -> Out:
        """Replace every row of the owner; the owner's amount follows the rows unless it is manual."""
        owner_type, owner = self._row_owner(p.get("ownerType", exact=True), p.get("ownerId", exact=True))
        entity, amount_f, manual_f, stamp_f = self._ROW_OWNERS[owner_type]
        oid = owner[self.tables[entity].id_field]
        items = p.get("productRows", exact=True)
        if not isinstance(items, (list, dict)):
            raise ApiError(400, "100", "Could not find value for parameter {productRows}")
        t = self.tables["productrow"]
        new_rows = []
        for n, raw in enumerate(as_list(items)):
            f = Params(raw if isinstance(raw, dict) else {})
            if not f.get("productId") and not f.get("productName"):
                raise ApiError(400, "INVALID_ARG_VALUE", f"Row {n}: productId or productName is required")
            price, qty = float(f.get("price") or 0), float(f.get("quantity") or 1)
            new_rows.append({"ownerId": oid, "ownerType": owner_type, "productId": intval(f.get("productId")),
                             "productName": str(f.get("productName") or f"Product {intval(f.get('productId'))}"),
                             "price": price, "priceAccount": price, "priceExclusive": price, "priceNetto": price, "priceBrutto": price,
                             "quantity": qty, "discountTypeId": intval(f.get("discountTypeId") or 2),
                             "discountRate": float(f.get("discountRate") or 0), "discountSum": float(f.get("discountSum") or 0),
                             "taxRate": f.get("taxRate"), "taxIncluded": str(f.get("taxIncluded") or "N"),
                             "taxName": str(f.get("taxName") or "No VAT"), "customized": "Y", "measureCode": intval(f.get("measureCode") or 796),
                             "measureName": "pcs", "sort": intval(f.get("sort") or (n + 1) * 10), "xmlId": "", "type": 4, "storeId": None})
        for rid in [r["id"] for r in list(t.rows.values()) if r.get("ownerType") == owner_type and r.get("ownerId") == oid]:
            t.remove(rid)
        for r in new_rows:
            t.insert(r)
        if str(owner.get(manual_f) or "N") != "Y":
            owner[amount_f] = round(sum(r["price"] * r["quantity"] for r in new_rows), 2)
        owner[stamp_f] = self.now()
        self.tables[entity].touched()
        return Out({"productRows": [self._productrow_out(r) for r in new_rows]}, returned=len(new_rows))

    def m_crm_item_delete(self, p: Params, caller: "Caller") -> Out:
        etid, entity, row = self._item_get_row(p)
        self.tables[entity].remove(row[self.tables[entity].id_field])
        return Out([])

    # ------------------------------------------------------------ timeline comments

    def m_crm_timeline_comment_list(self, p: Params, caller: "Caller") -> Out:
        flt = _filter_map(p)
        keys = {str(k).upper() for k in flt}
        if "ENTITY_ID" not in keys or "ENTITY_TYPE" not in keys:
            raise ApiError(400, "", "Access denied.")
        out = self._legacy_list("comment", p, default_order=[("ID", INT, False)], add_id=False, flt=flt)
        for r in out.result:
            if "FILES" in r and not r["FILES"]:
                r["FILES"] = {}
        return out

    def m_crm_timeline_comment_add(self, p: Params, caller: "Caller") -> Out:
        fields = p.get("fields", exact=True)  # only lowercase 'fields' since crm 23.100.0
        if not isinstance(fields, dict) or not fields:
            raise ApiError(400, "100", "Could not find value for parameter {fields}")
        f = Params(fields)
        etype = str(f.get("ENTITY_TYPE") or "").lower()
        eid = intval(f.get("ENTITY_ID"))
        text = f.get("COMMENT")
        if not etype or not eid:
            raise ApiError(400, "100", "Required fields are not provided")
        ot = ENTITY_TYPE_WORD.get(etype)
        owner = self.tables.get(OWNER_TABLE.get(ot, ""), None) if ot else None
        if owner is None or eid not in owner.rows:
            raise ApiError(400, "OWNER_NOT_FOUND", "Owner of the item not found")
        if text is None or str(text).strip() == "":
            raise ApiError(400, "INVALID_ARG_VALUE", "Empty comment")
        now = self.now()
        rid = self.tables["comment"].insert({"ENTITY_ID": eid, "ENTITY_TYPE": etype, "CREATED": now,
                                             "COMMENT": str(text), "AUTHOR_ID": caller.user_id, "FILES": {}})
        self._bump_owner(ot, eid, now, caller.user_id)
        return Out(rid)

    # ------------------------------------------------------------ tasks

    def _task_resolver(self) -> Callable[[str], tuple[str, str] | None]:
        t = self.tables["task"]
        camel = {task_name(f).lower(): f for f in t.schema}
        alias = {"AUDITOR": "AUDITORS", "ACCOMPLICE": "ACCOMPLICES"}

        def resolve(name: str) -> tuple[str, str] | None:
            c = t.canon(alias.get(name.upper(), name)) or camel.get(name.lower())
            return None if c is None else (c, t.schema[c])
        return resolve

    _TASK_BASE = [f for f in (
        "ID", "PARENT_ID", "TITLE", "DESCRIPTION", "MARK", "PRIORITY", "MULTITASK", "NOT_VIEWED", "REPLICATE",
        "STAGE_ID", "CREATED_BY", "CREATED_DATE", "RESPONSIBLE_ID", "CHANGED_BY", "CHANGED_DATE",
        "STATUS_CHANGED_BY", "CLOSED_BY", "CLOSED_DATE", "ACTIVITY_DATE", "DATE_START", "DEADLINE",
        "START_DATE_PLAN", "END_DATE_PLAN", "GUID", "XML_ID", "COMMENTS_COUNT", "SERVICE_COMMENTS_COUNT",
        "ALLOW_CHANGE_DEADLINE", "ALLOW_TIME_TRACKING", "TASK_CONTROL", "ADD_IN_REPORT", "FORKED_BY_TEMPLATE_ID",
        "TIME_ESTIMATE", "TIME_SPENT_IN_LOGS", "MATCH_WORK_TIME", "FORUM_TOPIC_ID", "FORUM_ID", "SITE_ID",
        "SUBORDINATE", "EXCHANGE_MODIFIED", "EXCHANGE_ID", "OUTLOOK_VERSION", "VIEWED_DATE", "SORTING",
        "DURATION_FACT", "IS_MUTED", "IS_PINNED", "IS_PINNED_IN_GROUP", "FLOW_ID", "DESCRIPTION_IN_BBCODE",
        "STATUS", "STATUS_CHANGED_DATE", "DURATION_PLAN", "DURATION_TYPE", "FAVORITE", "GROUP_ID", "AUDITORS",
        "ACCOMPLICES")]

    def _task_fields(self, select: Any) -> list[str]:
        sel = [str(s).upper() for s in as_list(select) if isinstance(s, str)]
        if not sel:
            return list(self._TASK_BASE)
        resolve = self._task_resolver()
        out: list[str] = []
        for s in sel:
            if s == "*":
                out += self._TASK_BASE
            elif s == "UF_*" or s in TASK_UF:
                out += list(TASK_UF)
            else:
                r = resolve(s)
                if r:
                    out.append(r[0])
        out = list(dict.fromkeys(out))
        if "ID" not in out:
            out.insert(0, "ID")
        return out

    def _user_brief(self, uid: int | None) -> dict | list:
        u = self.tables["user"].rows.get(uid) if uid else None
        if u is None:
            return []
        return {"id": str(uid), "name": f"{u.get('NAME', '')} {u.get('LAST_NAME', '')}".strip(),
                "link": f"/company/personal/user/{uid}/", "icon": "/bitrix/images/tasks/default_avatar.png",
                "workPosition": u.get("WORK_POSITION") or ""}

    def _task_row(self, row: dict, fields: list[str]) -> dict:
        t = self.tables["task"]
        out: dict[str, Any] = {}
        for f in fields:
            v = row.get(f)
            if f in ("UF_CRM_TASK", "UF_TASK_WEBDAV_FILES"):
                out[task_name(f)] = list(v) if v else False
                continue
            out[task_name(f)] = task_value(t.schema[f], v)
        if "STATUS" in fields:
            out["subStatus"] = str(self._sub_status(row))
        out["group"] = []
        if "CREATED_BY" in fields:
            out["creator"] = self._user_brief(row.get("CREATED_BY"))
        if "RESPONSIBLE_ID" in fields:
            out["responsible"] = self._user_brief(row.get("RESPONSIBLE_ID"))
        return out

    def _sub_status(self, row: dict) -> int:
        st = row.get("STATUS") or 2
        dl = row.get("DEADLINE")
        if st in (2, 3) and dl is not None and dl < self.now():
            return -1
        return st

    def m_tasks_task_list(self, p: Params, caller: "Caller") -> Out:
        resolve = self._task_resolver()
        flt = dict(_filter_map(p, exact=True))
        extra = []
        for k in list(flt):
            if str(k).upper() in ("STATUS", "=STATUS"):
                wanted = [intval(x) for x in as_list(flt[k])] if isinstance(flt[k], (list, dict)) else [intval(flt[k])]
                if any(w < 0 for w in wanted):
                    flt.pop(k)
                    extra.append(lambda r, wanted=wanted: (self._sub_status(r) in wanted) or (r.get("STATUS") in wanted))
        comp = compile_filter(flt, resolve)
        comp.preds.extend(extra)
        order = parse_order(p.get("order", exact=True), resolve) or [("ID", INT, True)]
        page = self._page("task", comp, order, _start(p), cache_key_of("task", flt, str(self.now())))
        fields = self._task_fields(p.get("select", exact=True))
        tasks = [self._task_row(r, fields) for r in page.rows]
        return Out({"tasks": tasks}, total=page.total if page.total is not None else 0, next=page.next,
                   counted=page.counted, returned=len(tasks))

    def _task_id(self, p: Params) -> int:
        v = p.get("taskId", exact=True)
        if v is None:
            raise ApiError(400, "100", "CTaskItem All parameters in the constructor must have real class type (internal error)")
        if not re.match(r"^\s*\d+\s*$", str(v)):
            raise ApiError(400, "0", "wrong task id")
        return int(str(v).strip())

    def _task_or_denied(self, tid: int) -> dict:
        row = self.tables["task"].rows.get(tid)
        if row is None:
            raise ApiError(400, "0", "Action on the task is not allowed (internal error)")
        return row

    def m_tasks_task_get(self, p: Params, caller: "Caller") -> Out:
        row = self._task_or_denied(self._task_id(p))
        select = p.get("select", exact=True)
        if select is not None and not isinstance(select, list):
            raise ApiError(400, "100", "Invalid value {} to match with parameter {select}. Should be value of type array. (internal error)")
        return Out({"task": self._task_row(row, self._task_fields(select))}, returned=1)

    def _task_apply(self, row: dict, fields: dict, caller: "Caller", creating: bool) -> None:
        resolve = self._task_resolver()
        for k, v in fields.items():
            r = resolve(str(k))
            if r is None or r[0] in ("ID", "CREATED_DATE", "CHANGED_DATE", "GUID"):
                continue
            name, ft = r
            if name == "RESPONSIBLE_ID" and intval(v) not in self.tables["user"].rows:
                raise ApiError(400, "ERROR_CORE", 'The user specified in the "Responsible" field was not found<br>')
            if name == "STATUS" and intval(v) not in (1, 2, 3, 4, 5, 6, 7):
                raise ApiError(400, "ERROR_CORE", "Invalid status<br>")
            row[name] = coerce(ft, v)
        now = self.now()
        if "STATUS" in row:
            row["REAL_STATUS"] = row["STATUS"]
            if row["STATUS"] == 5 and not row.get("CLOSED_DATE"):
                row["CLOSED_DATE"] = now
                row["CLOSED_BY"] = caller.user_id
        row["CHANGED_BY"] = caller.user_id
        row["ACTIVITY_DATE"] = now
        self._stamp("task", row, creating)
        for b in row.get("UF_CRM_TASK") or []:
            prefix, _, num = str(b).partition("_")
            ot = {"CO": 4, "C": 3, "D": 2}.get(prefix)
            if ot and num.isdigit():
                self._bump_owner(ot, int(num), now, caller.user_id)

    def m_tasks_task_add(self, p: Params, caller: "Caller") -> Out:
        fields = p.get("fields", exact=True)
        if not isinstance(fields, dict) or not fields:
            raise ApiError(400, "100", "Could not find value for parameter {fields} (internal error)")
        f = Params(fields)
        title = f.get("TITLE")
        if title is None or str(title).strip() == "":
            raise ApiError(400, "ERROR_CORE", "Task title is not specified<br>")
        defaults = {"PRIORITY": 1, "MULTITASK": "N", "NOT_VIEWED": "N", "REPLICATE": "N", "STAGE_ID": 0,
                    "CREATED_BY": caller.user_id, "RESPONSIBLE_ID": caller.user_id, "ALLOW_CHANGE_DEADLINE": "N",
                    "ALLOW_TIME_TRACKING": "N", "TASK_CONTROL": "N", "ADD_IN_REPORT": "N", "TIME_ESTIMATE": 0,
                    "MATCH_WORK_TIME": "N", "SITE_ID": "s1", "SUBORDINATE": "Y", "OUTLOOK_VERSION": 1, "IS_MUTED": "N",
                    "IS_PINNED": "N", "IS_PINNED_IN_GROUP": "N", "DESCRIPTION_IN_BBCODE": "Y", "STATUS": 2,
                    "DURATION_TYPE": "days", "FAVORITE": "N", "GROUP_ID": 0, "AUDITORS": [], "ACCOMPLICES": [],
                    "DESCRIPTION": ""}
        row = dict(defaults)
        self._task_apply(row, fields, caller, creating=True)
        row["STATUS_CHANGED_DATE"] = row["CREATED_DATE"]
        tid = self.tables["task"].insert(row)
        row["GUID"] = self.task_guid(tid)
        self._mirror_task(tid, row, caller)
        return Out({"task": self._task_row(row, self._task_fields(None))}, returned=1)

    def _mirror_task(self, tid: int, row: dict, caller: "Caller") -> None:
        """A task bound to CRM records appears in their activity list as a TYPE_ID 3 ``TASKS`` activity
        (``ASSOCIATED_ENTITY_ID`` = the task; subject and description copied), completed with the task."""
        owners = []
        for b in row.get("UF_CRM_TASK") or []:
            prefix, _, num = str(b).partition("_")
            ot = {"CO": 4, "C": 3, "D": 2, "L": 1}.get(prefix)
            if ot and num.isdigit():
                owners.append((ot, int(num)))
        acts = self.tables["activity"]
        mirrors = self.__dict__.get("_task_mirrors")
        if mirrors is None:  # task -> its activity, found once: a scan per task cost 0.2 s at 2M activities
            mirrors = self.__dict__["_task_mirrors"] = {a.get("ASSOCIATED_ENTITY_ID"): aid for aid, a in acts.rows.items()
                                                         if a.get("PROVIDER_ID") == "TASKS"}
        existing = acts.rows.get(mirrors.get(tid, 0))
        if existing is not None and not (existing.get("PROVIDER_ID") == "TASKS" and existing.get("ASSOCIATED_ENTITY_ID") == tid):
            existing = None  # deleted, its id reused
        if not owners and existing is None:
            return
        now = self.now()
        done = row.get("STATUS") == 5
        if existing is None:
            mirrors[tid] = acts.insert({
                "OWNER_TYPE_ID": owners[0][0], "OWNER_ID": owners[0][1], "TYPE_ID": 3, "PROVIDER_ID": "TASKS",
                "PROVIDER_TYPE_ID": "TASK", "ASSOCIATED_ENTITY_ID": tid, "SUBJECT": row.get("TITLE"),
                "DESCRIPTION": row.get("DESCRIPTION") or "", "DESCRIPTION_TYPE": 1, "CREATED": now, "LAST_UPDATED": now,
                "START_TIME": now, "END_TIME": row.get("DEADLINE"), "DEADLINE": row.get("DEADLINE"),
                "COMPLETED": "Y" if done else "N", "STATUS": 2 if done else 1, "RESPONSIBLE_ID": row.get("RESPONSIBLE_ID"),
                "PRIORITY": 2, "DIRECTION": 0, "AUTHOR_ID": caller.user_id, "EDITOR_ID": caller.user_id, "BINDINGS": owners,
            })
        else:
            existing.update({"SUBJECT": row.get("TITLE"), "DESCRIPTION": row.get("DESCRIPTION") or "", "LAST_UPDATED": now,
                             "COMPLETED": "Y" if done else "N", "STATUS": 2 if done else 1, "RESPONSIBLE_ID": row.get("RESPONSIBLE_ID"),
                             "DEADLINE": row.get("DEADLINE"), "END_TIME": now if done else row.get("DEADLINE")})
            acts.touched()

    def m_tasks_task_complete(self, p: Params, caller: "Caller") -> Out:
        """``tasks.task.complete {taskId}`` -> ``{"task": {...}}`` with status 5 (completed)."""
        tid = self._task_id(p)
        row = self._task_or_denied(tid)
        self._task_apply(row, {"STATUS": 5}, caller, creating=False)
        self.tables["task"].touched()
        self._mirror_task(tid, row, caller)
        return Out({"task": self._task_row(row, self._task_fields(None))}, returned=1)

    def m_task_commentitem_add(self, p: Params, caller: "Caller") -> Out:
        """``task.commentitem.add {TASKID, FIELDS: {POST_MESSAGE}}`` -> the new comment's id."""
        v = p.get("TASKID", exact=True)
        if v is None or not re.match(r"^\s*\d+\s*$", str(v)):
            raise ApiError(400, "ERROR_CORE", 'TASKS_ERROR_EXCEPTION_#256; Param #0 (taskId) for method ctaskcommentitem::add() '
                           'expected to be of type "integer", but given something else.; 256/TE/WRONG_ARGUMENTS')
        row = self.tables["task"].rows.get(int(str(v).strip()))
        if row is None:
            raise ApiError(400, "ERROR_CORE", "Insufficient permissions to add a comment.<br>")
        fields = p.get("FIELDS", exact=True)
        text = fields.get("POST_MESSAGE") if isinstance(fields, dict) else None
        if text is None or str(text).strip() == "":
            raise ApiError(400, "ERROR_CORE", "Comment text not specified<br>")
        with self.lock:
            self.task_comments.append({"TASK_ID": row["ID"], "POST_MESSAGE": str(text), "AUTHOR_ID": caller.user_id,
                                       "POST_DATE": self.now()})
            cid = len(self.task_comments)
        row["COMMENTS_COUNT"] = (row.get("COMMENTS_COUNT") or 0) + 1
        return Out(cid)

    def m_tasks_task_update(self, p: Params, caller: "Caller") -> Out:
        tid = self._task_id(p)
        row = self._task_or_denied(tid)
        fields = p.get("fields", exact=True)
        if not isinstance(fields, dict) or not fields:
            raise ApiError(400, "100", "Could not find value for parameter {fields} (internal error)")
        self._task_apply(row, fields, caller, creating=False)
        self.tables["task"].touched(tid)
        self._mirror_task(tid, row, caller)
        return Out({"task": self._task_row(row, self._task_fields(None))}, returned=1)

    def m_tasks_task_delete(self, p: Params, caller: "Caller") -> Out:
        tid = self._task_id(p)
        self._task_or_denied(tid)
        self.tables["task"].remove(tid)
        return Out({"task": True})


    # ------------------------------------------------------------ Drive (disk.*)

    def _disk(self) -> dict:
        """Storages (a user's own Drive appears with the user, as on a real portal) and their files."""
        state = self.app_state.setdefault("disk", [])
        if not state:
            state.append({"storages": {}, "objects": {}, "next": 100})
        d = state[0]
        if not any(st["ENTITY_TYPE"] == "common" for st in d["storages"].values()):
            self._new_storage(d, "Shared drive", "common", "shared_files_s1")
        for uid in self.tables["user"].rows:
            if not any(st["ENTITY_TYPE"] == "user" and st["ENTITY_ID"] == str(uid) for st in d["storages"].values()):
                self._new_storage(d, f"User {uid}", "user", str(uid))
        return d

    def _new_storage(self, d: dict, name: str, etype: str, eid: str) -> None:
        sid, root = d["next"], d["next"] + 1
        d["next"] += 2
        d["storages"][sid] = {"ID": str(sid), "NAME": name, "CODE": None, "MODULE_ID": "disk", "ENTITY_TYPE": etype,
                              "ENTITY_ID": eid, "ROOT_OBJECT_ID": str(root)}
        d["objects"][root] = {"ID": root, "NAME": name, "TYPE": "folder", "STORAGE_ID": str(sid), "PARENT_ID": None,
                              "REAL_OBJECT_ID": root, "DELETED_TYPE": 0, "CREATE_TIME": iso(self.now())}

    def _may_use(self, storage: dict, caller: "Caller") -> bool:
        """A user's own Drive, the shared one, and (administrators) every Drive."""
        return (caller.user_id in self.admins or storage["ENTITY_TYPE"] in ("common", "group")
                or (storage["ENTITY_TYPE"] == "user" and storage["ENTITY_ID"] == str(caller.user_id)))

    def m_disk_storage_getlist(self, p: Params, caller: "Caller") -> Out:
        d = self._disk()
        flt = {str(k).upper(): v for k, v in _filter_map(p).items()}
        rows = [st for st in d["storages"].values() if self._may_use(st, caller)
                and all(str(st.get(k)) == str(v) for k, v in flt.items() if k in st)]
        start = max(_start(p), 0)
        page = rows[start:start + PAGE]
        return Out(page, total=len(rows), next=start + PAGE if start + PAGE < len(rows) else None, returned=len(page))

    def _folder(self, p: Params, caller: "Caller") -> tuple[dict, dict]:
        if p.get("id") in (None, ""):
            raise ApiError(400, "ERROR_ARGUMENT", "Invalid value of parameter {Parameter #0}")
        d = self._disk()
        fid = intval(p.get("id"))
        obj = d["objects"].get(fid)
        if obj is None or obj["TYPE"] != "folder":
            raise ApiError(400, "ERROR_NOT_FOUND", f"Could not find entity with id `{fid}`")
        storage = d["storages"][int(obj["STORAGE_ID"])]
        if not self._may_use(storage, caller):
            raise ApiError(403, "ACCESS_DENIED", "Access denied")
        return obj, storage

    def _file_row(self, obj: dict, storage: dict) -> dict:
        return {k: obj.get(k) for k in ("ID", "NAME", "CODE", "STORAGE_ID", "TYPE", "PARENT_ID", "DELETED_TYPE",
                                         "GLOBAL_CONTENT_VERSION", "FILE_ID", "SIZE", "CREATE_TIME", "UPDATE_TIME", "DELETE_TIME",
                                         "CREATED_BY", "UPDATED_BY", "DELETED_BY", "DOWNLOAD_URL", "DETAIL_URL")}

    def m_disk_folder_getchildren(self, p: Params, caller: "Caller") -> Out:
        folder, storage = self._folder(p, caller)
        d = self._disk()
        flt = {str(k).upper(): v for k, v in _filter_map(p).items()}
        rows = [self._file_row(o, storage) if o["TYPE"] == "file" else dict(o) for o in d["objects"].values()
                if str(o.get("PARENT_ID")) == str(folder["ID"]) and all(str(o.get(k)) == str(v) for k, v in flt.items())]
        return Out(rows, total=len(rows), returned=len(rows))

    def m_disk_folder_uploadfile(self, p: Params, caller: "Caller") -> Out:
        import base64
        import binascii

        folder, storage = self._folder(p, caller)
        data = p.get("data") if isinstance(p.get("data"), dict) else {}
        name = str(data.get("NAME") or data.get("name") or "").strip()
        content = p.get("fileContent")
        if content in (None, "", []):  # no content: the two-step upload (an upload URL), which the connector does not use
            return Out({"field": "file", "uploadUrl": f"/rest/upload.json?token=disk%7C{folder['ID']}"})
        if not name:
            raise ApiError(400, "DISK_BASE_SERVICE_22001", "Error: required parameter NAME (DISK_BASE_SERVICE_22001)")
        parts = as_list(content)
        try:
            raw = base64.b64decode(str(parts[-1]), validate=True)
        except (binascii.Error, ValueError, IndexError):
            raise ApiError(400, "ERROR_COULD_NOT_SAVE_FILE", "Could not save file") from None
        d = self._disk()
        siblings = {o["NAME"] for o in d["objects"].values() if str(o.get("PARENT_ID")) == str(folder["ID"])}
        if name in siblings:
            if not truthy(p.get("generateUniqueName")):
                raise ApiError(400, "DISK_OBJ_22000", "Object with same name already exists")
            stem, dot, ext = name.rpartition(".")
            n = 1
            while (cand := f"{stem or ext} ({n}){dot}{ext if stem else ''}") in siblings:
                n += 1
            name = cand
        oid = d["next"]
        d["next"] += 1
        now = iso(self.now())
        obj = {"ID": oid, "NAME": name, "CODE": None, "STORAGE_ID": storage["ID"], "TYPE": "file", "PARENT_ID": str(folder["ID"]),
               "DELETED_TYPE": 0, "GLOBAL_CONTENT_VERSION": 1, "FILE_ID": 30000 + oid, "SIZE": str(len(raw)), "CREATE_TIME": now,
               "UPDATE_TIME": now, "DELETE_TIME": None, "CREATED_BY": str(caller.user_id), "UPDATED_BY": str(caller.user_id),
               "DELETED_BY": None, "DOWNLOAD_URL": f"/rest/download.json?token=disk%7C{oid}",
               "DETAIL_URL": f"/company/personal/user/{storage['ENTITY_ID']}/disk/file/{name}", "CONTENT": raw}
        d["objects"][oid] = obj
        return Out(self._file_row(obj, storage))

    # ------------------------------------------------------------ notifications

    def _notify(self, p: Params, caller: "Caller", kind: str) -> Out:
        uid = intval(p.get("USER_ID"))
        msg = p.get("MESSAGE")
        if uid <= 0:
            raise ApiError(400, "USER_ID_EMPTY", "User ID can't be empty")
        if msg is None or str(msg).strip() == "":
            raise ApiError(400, "MESSAGE_EMPTY", "Message can't be empty")
        if uid not in self.tables["user"].rows:
            return Out(False)
        rid = self.tables["notify"].insert({
            "USER_ID": uid, "FROM_USER_ID": caller.user_id if kind == "personal" else 0, "TYPE": kind,
            "MESSAGE": str(msg).strip(), "MESSAGE_OUT": p.get("MESSAGE_OUT"), "TAG": p.get("TAG"),
            "SUB_TAG": p.get("SUB_TAG"), "DATE_CREATE": self.now()})
        return Out(rid)

    def m_im_notify_system_add(self, p: Params, caller: "Caller") -> Out:
        return self._notify(p, caller, "system")

    def m_im_notify_personal_add(self, p: Params, caller: "Caller") -> Out:
        return self._notify(p, caller, "personal")

    def m_im_notify(self, p: Params, caller: "Caller") -> Out:
        return self._notify(p, caller, "system" if str(p.get("TYPE", "")).upper() == "SYSTEM" else "personal")

    # ------------------------------------------------------------ automation

    _TRIGGER_TYPES = {"LEAD": 1, "DEAL": 2, "CONTACT": 3, "COMPANY": 4, "QUOTE": 7, "ORDER": 14, "SMART_INVOICE": 31}

    def m_crm_automation_trigger(self, p: Params, caller: "Caller") -> Out:
        target = p.get("target")
        if target in (None, ""):
            raise ApiError(400, "", "Target is not set.")
        m = re.match(r"^([A-Za-z_0-9]+?)_(\d+)$", str(target))
        if not m:
            raise ApiError(400, "", "Incorrect target format.")
        tname, tid = m.group(1).upper(), int(m.group(2))
        etid = self._TRIGGER_TYPES.get(tname)
        if etid is None and not tname.startswith("DYNAMIC_"):
            raise ApiError(400, "", "Target is not found.")
        table = self.tables.get(OWNER_TABLE.get(etid or 0, ""), None)
        if table is None or tid not in table.rows:
            raise ApiError(400, "ACCESS_DENIED", "Access denied! There are no permissions to update the entity.")
        self.tables["trigger"].insert({"TARGET": f"{tname}_{tid}", "ENTITY_TYPE_ID": etid, "ENTITY_ID": tid,
                                       "CODE": str(p.get("code") or ""), "USER_ID": caller.user_id,
                                       "DATE_CREATE": self.now()})
        return Out(True)

    _DOC_CLASSES = {"CCrmDocumentCompany": "COMPANY", "CCrmDocumentDeal": "DEAL", "CCrmDocumentContact": "CONTACT",
                    "CCrmDocumentLead": "LEAD", "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice": "SMART_INVOICE"}

    def m_bizproc_workflow_start(self, p: Params, caller: "Caller") -> Out:
        if caller.user_id not in self.admins:
            raise ApiError(403, "ACCESS_DENIED", "Access denied!")
        tpl = intval(p.get("TEMPLATE_ID"))
        if tpl <= 0:
            raise ApiError(400, "ERROR_WRONG_WORKFLOW_ID", "Empty TEMPLATE_ID")
        if self.workflow_templates is not None and tpl not in self.workflow_templates:
            raise ApiError(400, "ERROR_WRONG_WORKFLOW_ID", "Template not found")
        doc = as_list(p.get("DOCUMENT_ID"))
        if len(doc) != 3 or not all(isinstance(x, (str, int)) for x in doc):
            raise ApiError(400, "", "Wrong DOCUMENT_ID!")
        module, cls, docid = (str(x) for x in doc)
        kind = self._DOC_CLASSES.get(cls)
        if module != "crm" or kind is None:
            raise ApiError(400, "", "Incorrect document type!")
        if self.workflow_templates is not None and self.workflow_templates[tpl] != cls:
            raise ApiError(400, "", "Template type and DOCUMENT_ID mismatch!")
        m = re.match(rf"^{kind}_(\d+)$", docid)
        table = self.tables.get(OWNER_TABLE.get(self._TRIGGER_TYPES.get(kind, 0), ""), None)
        if not m or table is None or int(m.group(1)) not in table.rows:
            raise ApiError(400, "", "Wrong DOCUMENT_ID!")
        wid = f"{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}"
        self.tables["workflow"].insert({"WORKFLOW_ID": wid, "TEMPLATE_ID": tpl, "DOCUMENT_ID": [module, cls, docid],
                                        "PARAMETERS": p.get("PARAMETERS") or {}, "USER_ID": caller.user_id,
                                        "STARTED": self.now()})
        return Out(wid)


def _legacy_family(entity: str) -> None:
    """crm.<entity>.list/get/add/update/delete/fields for the three legacy CRM objects."""
    setattr(Methods, f"m_crm_{entity}_list", lambda self, p, caller: self._legacy_list(entity, p))
    setattr(Methods, f"m_crm_{entity}_get", lambda self, p, caller: self._crm_get(entity, p))
    setattr(Methods, f"m_crm_{entity}_add", lambda self, p, caller: self._crm_add(entity, p, caller))
    setattr(Methods, f"m_crm_{entity}_update", lambda self, p, caller: self._crm_update(entity, p, caller))
    setattr(Methods, f"m_crm_{entity}_delete", lambda self, p, caller: self._crm_delete(entity, p))
    setattr(Methods, f"m_crm_{entity}_fields", lambda self, p, caller: self._crm_fields(entity))


for _entity in ("company", "contact", "deal"):
    _legacy_family(_entity)

# method name -> (scope, handler, app-only error or None)
APP_ONLY_TELEPHONY = ("WRONG_AUTH_TYPE", 403, "Current authorization type is denied for this method")
APP_ONLY = ("ACCESS_DENIED", 400, "Application context required")


def _registry() -> dict[str, tuple[str, str, tuple | None]]:
    reg: dict[str, tuple[str, str, tuple | None]] = {}
    for name in dir(Methods):
        if not name.startswith("m_"):
            continue
        method = name[2:].replace("_", ".")
        scope = method.split(".")[0]
        scope = {"tasks": "task", "server": "basic", "profile": "basic", "scope": "basic", "event": "basic",
                 "voximplant": "telephony"}.get(scope, scope)
        if method == "user.current":
            scope = "basic"
        app_only = None
        if method.startswith("telephony.externalcall."):
            app_only = APP_ONLY_TELEPHONY
        elif method.startswith(("bizproc.robot.", "messageservice.", "event.")) or \
                method.startswith("crm.automation.trigger."):
            app_only = APP_ONLY
        reg[method] = (scope, name, app_only)
    return reg


METHODS = _registry()
