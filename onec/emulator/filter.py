"""The ``$filter`` subset 1C's OData v3 interface understands (reference §3), for the emulator.

Operators ``eq ne gt ge lt le and or not`` with parentheses, arithmetic ``add sub mul div``,
literals ``'text'`` (apostrophes doubled), ``guid'…'``, ``datetime'…'``, numbers, ``true/false/
null``, functions ``substringof startswith endswith year month day hour minute second`` and the
``Rows/any(d: d/Field eq …)`` lambda over tabular sections. Values compare the way 1C's JSON
spells them: dates as ``YYYY-MM-DDTHH:MM:SS`` text, GUIDs case-insensitively, Int64 text as numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class FilterError(Exception):
    """Syntax the emulated 1C refuses (error code 14)."""


class UnknownProperty(Exception):
    """A property the entity does not have (error code 6)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<typed>(?:guid|datetime|datetimeoffset|time)'[^']*')
    | (?P<str>'(?:[^']|'')*')
    | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDlLfF]?)
    | (?P<name>[^\W\d][\w]*(?:/[^\W\d][\w]*)*)
    | (?P<punct>[(),:])
    )""",
    re.X,
)
_CMP = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCS = {"substringof", "startswith", "endswith", "year", "month", "day", "hour", "minute", "second",
          "tolower", "toupper", "length", "trim", "concat"}


@dataclass
class Lit:
    value: Any
    kind: str  # str | guid | datetime | num | bool | null


def tokenize(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"unexpected text at position {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class _Parser:
    def __init__(self, text: str):
        self.toks = tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise FilterError("unexpected end of $filter")
        self.i += 1
        return t

    def word(self, *words: str) -> str | None:
        t = self.peek()
        if t and t[0] == "name" and t[1].lower() in words:
            self.i += 1
            return t[1].lower()
        return None

    def punct(self, p: str) -> None:
        t = self.take()
        if t != ("punct", p):
            raise FilterError(f"expected {p!r}, got {t[1]!r}")

    def parse(self) -> Any:
        node = self.or_()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.peek()[1]!r}")
        return node

    def or_(self) -> Any:
        node = self.and_()
        while self.word("or"):
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Any:
        node = self.not_()
        while self.word("and"):
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Any:
        if self.word("not"):
            return ("not", self.not_())
        return self.cmp()

    def cmp(self) -> Any:
        left = self.add()
        op = self.word(*_CMP)
        if op:
            return (op, left, self.add())
        return left

    def add(self) -> Any:
        node = self.mul()
        while True:
            op = self.word("add", "sub")
            if not op:
                return node
            node = (op, node, self.mul())

    def mul(self) -> Any:
        node = self.primary()
        while True:
            op = self.word("mul", "div", "mod")
            if not op:
                return node
            node = (op, node, self.primary())

    def primary(self) -> Any:
        kind, text = self.take()
        if (kind, text) == ("punct", "("):
            node = self.or_()
            self.punct(")")
            return node
        if kind == "str":
            return Lit(text[1:-1].replace("''", "'"), "str")
        if kind == "typed":
            prefix, _, rest = text.partition("'")
            value = rest[:-1]
            if prefix == "guid":
                if not re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", value):
                    raise FilterError(f"Не удалось разобрать строку '{value}' как значение типа Edm.Guid!")
                return Lit(value.lower(), "guid")
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?", value):
                raise FilterError(f"Не удалось разобрать строку '{value}' как значение типа Edm.DateTime!")
            return Lit(value if len(value) == 19 else value + ":00", "datetime")
        if kind == "num":
            return Lit(float(text.rstrip("mMdDlLfF")), "num")
        if kind == "name":
            low = text.lower()
            if low in ("true", "false"):
                return Lit(low == "true", "bool")
            if low == "null":
                return Lit(None, "null")
            nxt = self.peek()
            if low in _FUNCS and nxt == ("punct", "("):
                self.take()
                args = [self.or_()]
                while self.peek() == ("punct", ","):
                    self.take()
                    args.append(self.or_())
                self.punct(")")
                return ("fn", low, args)
            if text.endswith("/any") or text.endswith("/all"):
                coll, _, which = text.rpartition("/")
                self.punct("(")
                var = self.take()
                if var[0] != "name":
                    raise FilterError("lambda variable expected")
                self.punct(":")
                body = self.or_()
                self.punct(")")
                return ("lambda", which, coll, var[1], body)
            return ("prop", text)
        raise FilterError(f"unexpected {text!r}")


def parse(text: str) -> Any:
    """Parse a ``$filter`` into a small tuple tree; :class:`FilterError` on bad syntax."""
    return _Parser(text).parse()


def _num(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _norm(a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, (int, float)) and not isinstance(a, bool) or isinstance(b, (int, float)) and not isinstance(b, bool):
        return _num(a), _num(b)
    if isinstance(a, str) and isinstance(b, str):
        if re.fullmatch(r"[0-9a-fA-F-]{36}", a) and re.fullmatch(r"[0-9a-fA-F-]{36}", b):
            return a.lower(), b.lower()
    return a, b


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}


def evaluate(node: Any, row: Mapping[str, Any], env: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """Evaluate against one entity (``row``); ``env`` binds lambda variables to tabular rows."""
    if isinstance(node, Lit):
        return node.value
    tag = node[0]
    if tag == "prop":
        path = node[1]
        head, _, rest = path.partition("/")
        if env and head in env:
            if rest not in env[head]:
                raise UnknownProperty(rest)
            return env[head][rest]
        if "/" in path:
            raise UnknownProperty(path)
        if path not in row:
            raise UnknownProperty(path)
        return row[path]
    if tag == "and":
        return bool(evaluate(node[1], row, env)) and bool(evaluate(node[2], row, env))
    if tag == "or":
        return bool(evaluate(node[1], row, env)) or bool(evaluate(node[2], row, env))
    if tag == "not":
        return not evaluate(node[1], row, env)
    if tag in _OPS:
        a, b = _norm(evaluate(node[1], row, env), evaluate(node[2], row, env))
        try:
            return _OPS[tag](a, b)
        except TypeError:
            return False
    if tag in ("add", "sub", "mul", "div", "mod"):
        a, b = _num(evaluate(node[1], row, env)), _num(evaluate(node[2], row, env))
        try:
            return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b if b else 0, "mod": a % b if b else 0}[tag]
        except TypeError:
            raise FilterError("arithmetic on a non-number") from None
    if tag == "fn":
        name, args = node[1], [evaluate(a, row, env) for a in node[2]]
        if name == "substringof":
            return str(args[0]).lower() in str(args[1] or "").lower()
        if name == "startswith":
            return str(args[0] or "").startswith(str(args[1]))
        if name == "endswith":
            return str(args[0] or "").endswith(str(args[1]))
        if name in ("year", "month", "day", "hour", "minute", "second"):
            text = str(args[0] or "")
            m = re.match(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})", text)
            if not m:
                return None
            return float(m.group(("year", "month", "day", "hour", "minute", "second").index(name) + 1))
        if name == "tolower":
            return str(args[0] or "").lower()
        if name == "toupper":
            return str(args[0] or "").upper()
        if name == "length":
            return float(len(str(args[0] or "")))
        if name == "trim":
            return str(args[0] or "").strip()
        if name == "concat":
            return "".join(str(a or "") for a in args)
    if tag == "lambda":
        which, coll, var, body = node[1], node[2], node[3], node[4]
        if coll not in row or not isinstance(row[coll], list):
            raise UnknownProperty(coll)
        results = (bool(evaluate(body, row, {**(env or {}), var: r})) for r in row[coll])
        return any(results) if which == "any" else all(results)
    raise FilterError(f"unsupported expression {tag!r}")
