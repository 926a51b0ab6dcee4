"""Tables, field types and the query engine of the emulated portal.

Rows are stored with typed Python values (ints, floats, aware datetimes, dates, "Y"/"N"
strings, lists) under the portal's own field names; each method family renders them in its own
wire shape (legacy CRM strings, crm.item typed camelCase, tasks camelCase strings...). Filtering
follows Bitrix24's prefix language (``>=DATE_MODIFY``, ``@ID``, ``%TITLE``...) and compares by
field type, so datetimes compare across offsets and IDs compare as numbers.

Every table keeps its IDs sorted, so a keyset page (``>ID`` + ``order ID`` + ``start=-1``)
is a bisect plus a scan of at most a page of matching rows. A "changed since" filter
(``>=DATE_MODIFY``) on a big table starts from a sorted index of that field plus the rows
written since it was built, so a quiet cycle does not scan millions of rows.

Benchmark portals hold millions of rows: :func:`compactor` stores a row as a :class:`SlimRow`
(its own values only; the values every row of the table shares are kept once), which reads and
writes like the plain dict a small portal uses.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

KYIV = ZoneInfo("Europe/Kyiv")
UTC = UTC

# Field types
INT, STR, MONEY, FLOAT, DT, DATE, YN, BOOL, MULTI, LIST_INT, LIST_STR, ANY = (
    "int", "str", "money", "float", "datetime", "date", "yn", "bool", "multi", "list_int", "list_str", "any")
LISTLIKE = {MULTI, LIST_INT, LIST_STR}


class ApiError(Exception):
    """A Bitrix24 error answer: HTTP status plus the ``error``/``error_description`` body."""

    def __init__(self, status: int, error: str | int, description: str = ""):
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict:
        return {"error": self.error, "error_description": self.description}


# ---------------------------------------------------------------- values

def iso(v: datetime) -> str:
    """``2024-08-30T14:29:00+02:00`` in the portal's zone (Kyiv: +02:00 winter, +03:00 summer)."""
    if v.tzinfo is None:
        v = v.replace(tzinfo=KYIV)
    return v.astimezone(KYIV).isoformat(timespec="seconds")


def iso_date(d: date) -> str:
    """A ``date`` field as a real portal renders it: UTC midnight shown in portal time (T02:00+02:00)."""
    return datetime(d.year, d.month, d.day, tzinfo=UTC).astimezone(KYIV).isoformat(timespec="seconds")


_DMY = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")


def parse_dt(v: Any) -> datetime | None:
    """Accept what portals accept: ISO 8601 with/without offset, ``YYYY-MM-DD``, ``DD.MM.YYYY[ hh:mm[:ss]]``."""
    if v is None or v == "" or isinstance(v, bool):
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=KYIV)
    if isinstance(v, date):
        return datetime.combine(v, time(), KYIV)
    if isinstance(v, (int, float)):
        return datetime.fromtimestamp(v, KYIV)
    s = str(v).strip()
    m = _DMY.match(s)
    if m:
        d, mo, y, hh, mm, ss = m.groups()
        return datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=KYIV)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    s = s.replace(" ", "T", 1) if re.match(r"^\d{4}-\d{2}-\d{2} \d", s) else s
    try:
        out = datetime.fromisoformat(s)
    except ValueError:
        return None
    return out if out.tzinfo else out.replace(tzinfo=KYIV)


def parse_date(v: Any) -> date | None:
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    dt = parse_dt(v)
    if dt is None:
        return None
    if isinstance(v, str) and re.search(r"T\d", v) and dt.utcoffset() is not None:
        # a date rendered as UTC midnight in portal time reads back as the same date
        return dt.astimezone(UTC).date() if dt.astimezone(UTC).time() == time() else dt.astimezone(KYIV).date()
    return dt.date()


def money(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(str(v).replace(",", ".").replace(" ", ""))
    except ValueError:
        return None


def intval(v: Any) -> int:
    """PHP ``intval``: leading integer of a string, 0 otherwise."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    m = re.match(r"^\s*([+-]?\d+)", str(v) if v is not None else "")
    return int(m.group(1)) if m else 0


def truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("y", "yes", "1", "true", "on")
    return bool(v)


def yn(v: Any) -> str:
    if isinstance(v, str) and v.upper() in ("Y", "N"):
        return v.upper()
    return "Y" if truthy(v) else "N"


def coerce(ftype: str, v: Any) -> Any:
    """A written value, stored in the field's type (what the portal would save)."""
    if v is None:
        return None
    if ftype == INT:
        if v == "" or v == []:
            return None
        return intval(v)
    if ftype in (MONEY, FLOAT):
        return money(v)
    if ftype == DT:
        return parse_dt(v)
    if ftype == DATE:
        return parse_date(v)
    if ftype == YN:
        return yn(v)
    if ftype == BOOL:
        return truthy(v)
    if ftype == LIST_INT:
        return [intval(x) for x in as_list(v) if x not in ("", None)]
    if ftype == LIST_STR:
        return [str(x) for x in as_list(v) if x not in ("", None)]
    if ftype == STR:
        return v if isinstance(v, str) else ("" if v is False else str(v) if not isinstance(v, (dict, list)) else v)
    return v


def as_list(v: Any) -> list:
    if v is None:
        return []
    if isinstance(v, list):
        return v
    if isinstance(v, dict):
        return list(v.values())
    return [v]


# ---------------------------------------------------------------- compact rows

_GONE = object()  # a shared field this row does not have


class Layout:
    """Where a compact row keeps its own values, and the values all rows of a table share."""

    __slots__ = ("pos", "shared", "order")

    def __init__(self, varying: Sequence[str], shared: dict[str, Any], order: Sequence[str]):
        self.pos = {name: i for i, name in enumerate(varying)}
        self.shared = shared
        self.order = tuple(dict.fromkeys([*order, *varying]))  # field order of the row it was made from


class SlimRow(MutableMapping):
    """A table row that stores only its own values (about a quarter of a plain dict's memory).

    Reads and writes like the dict it was made from: a value set on one row stays on that row,
    even for a field the layout shares.
    """

    __slots__ = ("layout", "vals", "extra")

    def __init__(self, layout: Layout, vals: list | tuple, extra: dict | None = None):
        self.layout = layout
        self.vals = vals
        self.extra = extra

    def get(self, key: Any, default: Any = None) -> Any:
        extra = self.extra
        if extra is not None and key in extra:
            v = extra[key]
            return default if v is _GONE else v
        i = self.layout.pos.get(key)
        if i is not None:
            return self.vals[i]
        return self.layout.shared.get(key, default)

    def __getitem__(self, key: Any) -> Any:
        v = self.get(key, _GONE)
        if v is _GONE:
            raise KeyError(key)
        return v

    def __setitem__(self, key: Any, value: Any) -> None:
        i = self.layout.pos.get(key)
        if i is not None:
            if type(self.vals) is tuple:  # seeded rows hold a tuple until their first write
                self.vals = list(self.vals)
            self.vals[i] = value
            if self.extra is not None:
                self.extra.pop(key, None)
            return
        if self.extra is None:
            self.extra = {}
        self.extra[key] = value

    def __delitem__(self, key: Any) -> None:
        if key not in self:
            raise KeyError(key)
        if self.extra is None:
            self.extra = {}
        if key in self.layout.pos or key in self.layout.shared:
            self.extra[key] = _GONE
        else:
            del self.extra[key]

    def __contains__(self, key: object) -> bool:
        extra = self.extra
        if extra is not None and key in extra:
            return extra[key] is not _GONE
        return key in self.layout.pos or key in self.layout.shared

    def __iter__(self) -> Iterator[str]:
        extra = self.extra or {}
        for name in self.layout.order:
            if extra.get(name) is not _GONE:
                yield name
        for name, v in extra.items():
            if v is not _GONE and name not in self.layout.pos and name not in self.layout.shared:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"SlimRow({dict(self)!r})"


def compactor(varying: Sequence[str], first: dict) -> Callable[[dict], SlimRow]:
    """A function turning rows shaped like ``first`` into :class:`SlimRow`\\ s.

    ``varying`` names the fields each row keeps; every other field of ``first`` is shared by
    value. A row that differs from the shared values (or lacks or adds a field) keeps the
    difference itself, so the result always reads exactly like the dict it was made from.
    Shared values are shared objects: the emulator replaces a value on write, never edits one
    in place.
    """
    varying = list(varying)
    names = set(varying)
    shared = {k: v for k, v in first.items() if k not in names}
    layout = Layout(varying, shared, list(first))
    shared_keys, shared_vals = list(shared), list(shared.values())
    shared_types = [type(v) for v in shared_vals]
    width = len(varying) + len(shared)

    def same(mine: Any, v: Any) -> bool:
        return mine is v or (type(mine) is type(v) and mine == v)

    def make(row: dict) -> SlimRow:
        vals = [row.get(k, _GONE) for k in varying]
        if len(row) == width and _GONE not in vals:
            theirs = [row.get(k, _GONE) for k in shared_keys]
            if theirs == shared_vals and list(map(type, theirs)) == shared_types:
                return SlimRow(layout, tuple(vals))
        extra: dict[str, Any] = {}
        for i, k in enumerate(varying):
            if vals[i] is _GONE:
                vals[i] = None
                extra[k] = _GONE
        for k, v in shared.items():
            mine = row.get(k, _GONE)
            if not same(mine, v):
                extra[k] = mine
        for k, v in row.items():
            if k not in names and k not in shared:
                extra[k] = v
        return SlimRow(layout, vals, extra or None)

    return make


# ---------------------------------------------------------------- tables

class Table:
    """Rows by ID plus a sorted ID list; ``version`` changes on every write (query cache key)."""

    def __init__(self, name: str, schema: dict[str, str], id_field: str = "ID"):
        self.name = name
        self.schema = dict(schema)
        self.id_field = id_field
        self.rows: dict[int, dict] = {}
        self.ids: list[int] = []
        self.next_id = 1
        self.version = 0
        self._upper = {k.upper(): k for k in self.schema}
        # field -> (sorted keys, their IDs, position in the change log when built)
        self._stamps: dict[str, tuple[list, list[int], int]] = {}
        self._changes: list[int | None] = []  # IDs written since the first index (None: an unknown row)

    def canon(self, name: str) -> str | None:
        """The stored name of a field, case-insensitively; None if the table has no such field."""
        if name in self.schema:
            return name
        return self._upper.get(name.upper())

    def add_field(self, name: str, ftype: str) -> None:
        self.schema[name] = ftype
        self._upper[name.upper()] = name

    def insert(self, row: dict, rid: int | None = None) -> int:
        if rid is None:
            rid = self.next_id
        row[self.id_field] = rid
        if rid in self.rows:
            self.rows[rid] = row
        else:
            self.rows[rid] = row
            if not self.ids or rid > self.ids[-1]:
                self.ids.append(rid)
            else:
                bisect.insort(self.ids, rid)
        self.next_id = max(self.next_id, rid + 1)
        self.touched(rid)
        return rid

    def bulk_load(self, rows: Iterable[dict]) -> None:
        """Seed many rows at once (IDs already set)."""
        for row in rows:
            self.rows[row[self.id_field]] = row
        self.ids = sorted(self.rows)
        self.next_id = (self.ids[-1] + 1) if self.ids else 1
        self.version += 1
        self._stamps.clear()
        self._changes.clear()

    def remove(self, rid: int) -> bool:
        if rid not in self.rows:
            return False
        del self.rows[rid]
        i = bisect.bisect_left(self.ids, rid)
        if i < len(self.ids) and self.ids[i] == rid:
            self.ids.pop(i)
        self.version += 1
        return True

    def touched(self, rid: int | None = None) -> None:
        """A row was written (``rid``; None when the writer cannot say which)."""
        self.version += 1
        if self._stamps:  # the log only serves the indexes built so far
            self._changes.append(rid)

    def stamp_index(self, fname: str, ftype: str) -> tuple[list, list[int], set[int]]:
        """Comparable keys of ``fname`` in ascending order and the IDs holding them (rows with
        no value left out), as of when the index was built, plus the IDs written since (their
        keys may have moved). Rebuilt when an unknown row was written or many rows were."""
        cached = self._stamps.get(fname)
        if cached is not None:
            since = self._changes[cached[2]:]
            if None not in since and len(since) <= max(1000, len(self.rows) // 20):
                return cached[0], cached[1], set(since)
        pairs = []
        for rid, row in self.rows.items():
            v = row.get(fname)
            if v is not None:
                k = _key(ftype, v)
                if k is not None:
                    pairs.append((k, rid))
        pairs.sort()
        keys, ids = [k for k, _ in pairs], [i for _, i in pairs]
        self._stamps[fname] = (keys, ids, len(self._changes))
        return keys, ids, set()


# ---------------------------------------------------------------- filters

PREFIXES = sorted(["!=%", "!%=", "!><", "=%", "%=", "!%", ">=", "<=", "!@", "!=", "><", "%", "=", "!", ">", "<", "@"],
                  key=len, reverse=True)


def split_key(key: str) -> tuple[str, str]:
    for p in PREFIXES:
        if key.startswith(p) and len(key) > len(p):
            return p, key[len(p):]
    return "", key


def _key(ftype: str, v: Any) -> Any:
    """A comparable key for a stored or a filter value of type ``ftype``."""
    if ftype in (INT, LIST_INT):
        return intval(v)
    if ftype in (MONEY, FLOAT):
        m = money(v)
        return 0.0 if m is None else m
    if ftype in (DT, DATE):
        d = parse_dt(v)
        return None if d is None else d.timestamp()
    if ftype == BOOL:
        return truthy(v)
    if ftype == YN:
        return yn(v) if isinstance(v, bool) else str(v).casefold()
    if isinstance(v, bool):
        return "1" if v else ""
    return str(v).casefold()


def _elements(ftype: str, v: Any) -> list:
    if v is None:
        return []
    if ftype == MULTI:
        return [e.get("VALUE") for e in v]
    if ftype in (LIST_INT, LIST_STR):
        return list(v)
    return [v]


def _like_regex(pattern: str) -> re.Pattern:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(out), re.S | re.I)


def _elem_type(ftype: str) -> str:
    return {MULTI: STR, LIST_INT: INT, LIST_STR: STR}.get(ftype, ftype)


Pred = Callable[[dict], bool]


def make_pred(op: str, fname: str, ftype: str, value: Any) -> Pred:
    """One filter condition as a row predicate (SQL-ish: negations include NULL rows)."""
    et = _elem_type(ftype)

    def elems(row: dict) -> list:
        return _elements(ftype, row.get(fname))

    if op in ("", "="):
        if isinstance(value, (list, dict)):
            return make_pred("@", fname, ftype, value)
        if value is None or value == "":
            def empty(row: dict) -> bool:
                es = [e for e in elems(row) if e not in (None, "")]
                return not es or (et == INT and all(intval(e) == 0 for e in es))
            return empty
        k = _key(et, value)
        if k is None:
            return lambda row: False
        return lambda row: any(e is not None and _key(et, e) == k for e in elems(row))
    if op in ("!", "!="):
        pos = make_pred("=", fname, ftype, value)
        return lambda row: not pos(row)
    if op == "@":
        vals = as_list(value)
        keys = {_key(et, v) for v in vals if v is not None}
        return lambda row: any(e is not None and _key(et, e) in keys for e in elems(row))
    if op == "!@":
        pos = make_pred("@", fname, ftype, value)
        return lambda row: not pos(row)
    if op in (">", ">=", "<", "<="):
        if isinstance(value, (list, dict)):
            value = as_list(value)[0] if as_list(value) else ""
        k = _key(et, value)
        if k is None:
            return lambda row: False
        cmp = {">": lambda a: a > k, ">=": lambda a: a >= k, "<": lambda a: a < k, "<=": lambda a: a <= k}[op]

        def compare(row: dict) -> bool:
            for e in elems(row):
                if e is None:
                    continue
                a = _key(et, e)
                if a is not None and cmp(a):
                    return True
            return False
        return compare
    if op in ("><", "!><"):
        lo, hi = (as_list(value) + [None, None])[:2]
        a = make_pred(">=", fname, ftype, lo)
        b = make_pred("<=", fname, ftype, hi)
        if op == "><":
            return lambda row: a(row) and b(row)
        return lambda row: not (a(row) and b(row))
    if op in ("%", "!%"):
        vals = [str(v).casefold() for v in as_list(value)] if isinstance(value, (list, dict)) else [str(value).casefold()]

        def like(row: dict) -> bool:
            return any(e is not None and any(v in str(e).casefold() for v in vals) for e in elems(row))
        return like if op == "%" else (lambda row: not like(row))
    if op in ("=%", "%=", "!=%", "!%="):
        rx = _like_regex(str(value))

        def likep(row: dict) -> bool:
            return any(e is not None and rx.fullmatch(str(e)) is not None for e in elems(row))
        return likep if op in ("=%", "%=") else (lambda row: not likep(row))
    return lambda row: True


@dataclass
class Compiled:
    preds: list[Pred] = field(default_factory=list)
    lo: int | None = None  # inclusive lower ID bound
    hi: int | None = None  # inclusive upper ID bound
    exact: set[int] | None = None  # ID IN
    floors: list[tuple[str, str, Any, bool]] = field(default_factory=list)  # (field, type, key, strict) of >, >= on dates


Resolver = Callable[[str], "tuple[str, str] | None"]


def compile_filter(flt: Any, resolve: Resolver, *, id_field: str = "ID", allow_logic: bool = False,
                   strict: Callable[[str], ApiError] | None = None) -> Compiled:
    """Turn a Bitrix filter map into predicates plus the ID bounds a sorted index can use.

    ``resolve(name)`` maps a wire field name to ``(stored_name, type)``; unknown fields are
    ignored (legacy CRM behaviour) unless ``strict`` builds the error to raise (crm.item).
    """
    out = Compiled()
    if not isinstance(flt, dict):
        return out
    for raw_key, value in flt.items():
        key = str(raw_key)
        if allow_logic and (isinstance(raw_key, int) or key.isdigit()) and isinstance(value, dict):
            sub = dict(value)
            logic = str(sub.pop("logic", sub.pop("LOGIC", "AND"))).upper()
            parts = [compile_filter({k: v}, resolve, id_field=id_field, allow_logic=True, strict=strict)
                     for k, v in sub.items()]
            if logic == "OR":
                preds = [p.preds for p in parts]
                out.preds.append(lambda row, preds=preds: any(all(q(row) for q in ps) for ps in preds))
            else:
                for p in parts:
                    out.preds.extend(p.preds)
            continue
        if key.upper() == "LOGIC":
            continue
        op, name = split_key(key)
        res = resolve(name)
        if res is None:
            if strict is not None:
                raise strict(name)
            continue
        fname, ftype = res
        if fname == id_field and ftype == INT:
            _narrow(out, op, value)
        elif op in (">", ">=") and ftype in (DT, DATE) and not isinstance(value, (list, dict)):
            k = _key(ftype, value)
            if k is not None:
                out.floors.append((fname, ftype, k, op == ">"))
        out.preds.append(make_pred(op, fname, ftype, value))
    return out


def _narrow(c: Compiled, op: str, value: Any) -> None:
    if op in ("", "=", "@"):
        if isinstance(value, (list, dict)) or op == "@":
            vals = {intval(v) for v in as_list(value)}
        elif value in (None, ""):
            return
        else:
            vals = {intval(value)}
        c.exact = vals if c.exact is None else (c.exact & vals)
        return
    if isinstance(value, (list, dict)):
        return
    v = intval(value)
    if op == ">":
        c.lo = v + 1 if c.lo is None else max(c.lo, v + 1)
    elif op == ">=":
        c.lo = v if c.lo is None else max(c.lo, v)
    elif op == "<":
        c.hi = v - 1 if c.hi is None else min(c.hi, v - 1)
    elif op == "<=":
        c.hi = v if c.hi is None else min(c.hi, v)


# ---------------------------------------------------------------- query

@dataclass
class Page:
    rows: list[dict]
    total: int | None  # None when start=-1 (no COUNT)
    counted: int  # rows a COUNT(*) had to visit (drives the modelled cost)
    next: int | None = None


class QueryCache:
    """Matched-ID lists per (table version, filter, order): offset paging does not re-filter."""

    def __init__(self, size: int = 32):
        self.size = size
        self.data: dict[tuple, list[int]] = {}

    def get(self, key: tuple) -> list[int] | None:
        return self.data.get(key)

    def put(self, key: tuple, ids: list[int]) -> None:
        if len(self.data) >= self.size:
            self.data.pop(next(iter(self.data)))
        self.data[key] = ids


def sort_key(ftype: str) -> Callable[[Any], tuple]:
    et = _elem_type(ftype)

    def k(v: Any) -> tuple:
        if v is None or v == "" and ftype != STR:
            return (0, 0)
        if ftype in LISTLIKE:
            v = (_elements(ftype, v) or [None])[0]
            if v is None:
                return (0, 0)
        kk = _key(et, v)
        return (0, 0) if kk is None else (1, kk)
    return k


INDEXED_FROM = 5000  # candidate rows from which a date floor is looked up in the stamp index


def run_query(table: Table, comp: Compiled, order: list[tuple[str, str, bool]], start: int, *,
              cache: QueryCache | None = None, cache_key: Any = None, limit: int = 50) -> Page:
    """Filter, order and page ``table``; ``start < 0`` means no COUNT (``start=-1``)."""
    ids = table.ids
    lo = 0 if comp.lo is None else bisect.bisect_left(ids, comp.lo)
    hi = len(ids) if comp.hi is None else bisect.bisect_right(ids, comp.hi)
    if comp.exact is not None:
        cand: list[int] = sorted(i for i in comp.exact if i in table.rows
                                 and (comp.lo is None or i >= comp.lo) and (comp.hi is None or i <= comp.hi))
    elif comp.floors and hi - lo >= INDEXED_FROM:
        # only rows at or above the floor when indexed, or written since, can match: the
        # predicates below still decide
        fname, ftype, k, strict = comp.floors[0]
        keys, kids, since = table.stamp_index(fname, ftype)
        above = since.union(kids[(bisect.bisect_right if strict else bisect.bisect_left)(keys, k):])
        cand = sorted(i for i in above if i in table.rows and (comp.lo is None or i >= comp.lo)
                      and (comp.hi is None or i <= comp.hi))
    else:
        cand = ids[lo:hi]
    rows = table.rows
    preds = comp.preds
    id_only = not order or (len(order) == 1 and order[0][0] == table.id_field)
    desc = bool(order and order[0][2]) if id_only else False

    def ok(i: int) -> bool:
        r = rows[i]
        for p in preds:
            if not p(r):
                return False
        return True

    if id_only and start < 0:
        seq = reversed(cand) if desc else cand
        out = []
        for i in seq:
            if ok(i):
                out.append(rows[i])
                if len(out) >= limit:
                    break
        return Page(out, None, 0)

    key = (table.name, table.version, cache_key, tuple(order)) if cache is not None and cache_key is not None else None
    matched = cache.get(key) if key is not None else None
    if matched is None:
        matched = [i for i in cand if ok(i)]
        if id_only:
            if desc:
                matched.reverse()
        else:
            mrows = [rows[i] for i in matched]
            for fname, ftype, d in reversed(order):
                sk = sort_key(ftype)
                mrows.sort(key=lambda r, f=fname, sk=sk: sk(r.get(f)), reverse=d)
            matched = [r[table.id_field] for r in mrows]
        if key is not None:
            cache.put(key, matched)
    s = max(start, 0)
    page = [rows[i] for i in matched[s:s + limit]]
    if start < 0:
        return Page(page, None, 0)
    total = len(matched)
    return Page(page, total, total, next=(s + limit) if total > s + limit else None)


def cache_key_of(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def parse_order(order: Any, resolve: Resolver) -> list[tuple[str, str, bool]]:
    """``{"DATE_MODIFY": "DESC", "ID": "ASC"}`` -> ``[(field, type, desc), ...]`` (unknown fields dropped)."""
    out: list[tuple[str, str, bool]] = []
    if isinstance(order, dict):
        items = list(order.items())
    elif isinstance(order, list):
        items = [(o, "ASC") for o in order if isinstance(o, str)]
    else:
        return out
    for name, direction in items:
        res = resolve(str(name))
        if res is None:
            continue
        out.append((res[0], res[1], str(direction).strip().upper() == "DESC"))
    return out
