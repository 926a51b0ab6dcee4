"""PHP's view of request parameters and of JSON, as a Bitrix24 portal has it.

A portal is PHP: a query string or form body is parsed by ``parse_str`` (nested brackets,
``[]`` appends, numeric keys), a JSON body becomes the same array tree, and answers are
``json_encode``-d, which renders an empty map as ``[]`` and a map keyed ``0..n-1`` as a list.
The emulator keeps these quirks in this one module so every other part works on plain dicts.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, unquote_plus

_INT_KEY = re.compile(r"^(0|-?[1-9][0-9]*)$")


def _php_key(k: str) -> int | str:
    """PHP turns canonical decimal strings into integer array keys."""
    if _INT_KEY.match(k) and len(k) < 19:
        return int(k)
    return k


def _split_key(raw: str) -> list[str] | None:
    """``a[b][]`` -> ``["a", "b", ""]`` the way PHP's parser splits a variable name."""
    raw = raw.lstrip(" ")
    i = raw.find("[")
    if not raw or i == 0:
        return None
    if i < 0:
        return [re.sub(r"[ .]", "_", raw)]
    base = re.sub(r"[ .]", "_", raw[:i])
    parts = [base]
    rest = raw[i:]
    while rest.startswith("["):
        j = rest.find("]")
        if j < 0:
            if len(parts) == 1:  # an unmatched bracket stays in the name, as '_'
                return [base + "_" + re.sub(r"[ .]", "_", rest[1:])]
            break
        parts.append(rest[1:j])
        rest = rest[j + 1:]
    return parts


def assign(tree: dict, parts: list[str], value: Any) -> None:
    """Put ``value`` at the bracket path ``parts`` into ``tree`` (PHP array semantics)."""
    node = tree
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        if part == "" and n > 0:
            ints = [k for k in node if isinstance(k, int)]
            key: int | str = (max(ints) + 1) if ints else 0
        else:
            key = _php_key(part)
        if last:
            node[key] = value
        else:
            nxt = node.get(key)
            if not isinstance(nxt, dict):
                nxt = {}
                node[key] = nxt
            node = nxt


def parse_pairs(pairs: list[tuple[str, Any]], into: dict | None = None) -> dict:
    """Build the PHP array tree from already-decoded ``(name, value)`` pairs."""
    tree: dict = into if into is not None else {}
    for name, value in pairs:
        parts = _split_key(name)
        if parts:
            assign(tree, parts, value)
    return tree


def parse_qs(qs: str, into: dict | None = None) -> dict:
    """``parse_str``: ``filter[>ID]=5&select[]=ID`` -> ``{"filter": {">ID": "5"}, "select": {0: "ID"}}``."""
    pairs = []
    for chunk in qs.split("&"):
        if not chunk:
            continue
        name, _, value = chunk.partition("=")
        pairs.append((unquote_plus(name), unquote_plus(value)))
    return parse_pairs(pairs, into)


def normalize(value: Any) -> Any:
    """Give a JSON body and a parsed form the same shape: lists become int-keyed maps' values.

    PHP has one array type; here a map keyed exactly ``0..n-1`` becomes a list (as JSON
    decoding of a list would give), so handlers see one shape whichever encoding was sent.
    """
    if isinstance(value, dict):
        out = {(_php_key(k) if isinstance(k, str) else k): normalize(v) for k, v in value.items()}
        if out and all(isinstance(k, int) for k in out) and sorted(out) == list(range(len(out))):
            return [out[i] for i in range(len(out))]
        return out
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def http_build_query(params: Any, prefix: str = "") -> str:
    """PHP's ``http_build_query`` (RFC 3986 quoting), used by tests and batch command builders."""
    out: list[str] = []

    def walk(v: Any, key: str) -> None:
        if isinstance(v, dict):
            for k, sub in v.items():
                walk(sub, f"{key}[{k}]" if key else str(k))
        elif isinstance(v, (list, tuple)):
            for i, sub in enumerate(v):
                walk(sub, f"{key}[{i}]")
        elif v is None:
            return
        else:
            if v is True:
                v = 1
            elif v is False:
                v = 0
            out.append(f"{quote(key, safe='[]')}={quote(str(v), safe='')}")

    walk(params, prefix)
    return "&".join(out)


def php_shape(value: Any) -> Any:
    """Apply ``json_encode``'s view of PHP arrays: ``{}`` -> ``[]``, ``{"0":..,"1":..}`` -> list."""
    if isinstance(value, dict):
        if not value:
            return []
        keys = list(value.keys())
        if all(isinstance(k, int) or (isinstance(k, str) and _INT_KEY.match(k)) for k in keys):
            if [int(k) for k in keys] == list(range(len(keys))):
                return [php_shape(v) for v in value.values()]
        return {str(k): php_shape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [php_shape(v) for v in value]
    return value


def json_encode(value: Any) -> bytes:
    """Bitrix's ``Json::encode``: PHP array quirks, ASCII with ``\\uXXXX``, ``\\/`` and hex tags."""
    text = json.dumps(php_shape(value), ensure_ascii=True, separators=(",", ":"))
    text = text.replace("/", "\\/").replace("<", "\\u003C").replace(">", "\\u003E").replace("&", "\\u0026")
    return text.encode("ascii")
