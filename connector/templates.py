"""Sandboxed Jinja2 texts with a fixed vocabulary per rule type.

An unknown variable is a ``validate`` error, not a blank in a client's SMS: every template in
the config is rendered at load time against a sample context that has exactly the variables the
rule will provide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def money(value: float | int | str, decimals: int = 2) -> str:
    """``42000`` -> ``42 000.00``: space-grouped as in Ukrainian business letters (a plain space,
    so a Latin SMS stays in the cheaper GSM-7 alphabet)."""
    return f"{float(value):,.{decimals}f}".replace(",", " ")


_env.filters["money"] = money


def _person(name: str) -> dict[str, Any]:
    return {"id": "7", "key": "bitrix24:user:7", "name": name, "email": "m@example.com", "first_name": name.split()[0]}


_CLIENT = {
    "key": "bitrix24:company:12",
    "id": "12",
    "title": "Acme LLC",
    "name": "Acme LLC",
    "first_name": "Olena",
    "greeting_name": "Olena",
    "phone": "+380501234567",
    "email": "client@example.com",
    "segment": "VIP",
    "tax_id": "12345678",
    "kind": "company",
    "fields": {},
    "system": "bitrix24",
}

BASE_VARS: dict[str, Any] = {
    "client": _CLIENT,
    "manager": _person("Ivan Petrenko"),
    "supervisor": _person("Head Of Sales"),
    "rule": {"name": "rule", "type": "forgotten"},
    "days": 60,
    "reason": "no contact for 60 days",
    "now": "2026-01-01 10:00",
    "today": "2026-01-01",
    "last_contact": {"kind": "call", "date": "2026-01-01"},
}

EXTRA_VARS: dict[str, dict[str, Any]] = {
    "release": {"previous_manager": _person("Petro Ivanenko"), "grace_days": 14},
    "lost": {
        "purchases": 3,
        "last_purchase": {"date": "2026-01-01", "amount": 100.0, "kind": "deal"},
        "cadence_days": 14,
        "callback_number": 1,
        "temperature": "warm",
    },
    "unpaid": {
        "invoice": {
            "key": "bitrix24:invoice:17",
            "id": "17",
            "title": "Invoice #17",
            "number": "17",
            "amount": 1250.5,
            "currency": "UAH",
            "due_date": "2026-01-01",
            "days_overdue": 5,
        }
    },
    "debtors": {
        "debt": {
            "amount": 1500.0,
            "currency": "UAH",
            "overdue_amount": 1500.0,
            "overdue_since": "2026-01-01",
            "days_overdue": 10,
            "documents": [{"number": "РН-000123", "date": "2025-12-18", "amount": 1500.0, "unpaid": 1500.0, "due": "2026-01-01"}],
        }
    },
    "missed_call": {
        "call": {"phone": "+380501234567", "started_at": "2026-01-01 10:00", "wait_s": 20, "id": "1"},
        "callback_minutes": 15,
    },
    "forgotten": {},
    "rfm": {
        "rfm": {"score": "R4F5M3", "segment": "champions", "r": 4, "f": 5, "m": 3, "recency_days": 12, "frequency": 9,
                "monetary": 42000.0, "previous_score": "R3F5M3", "previous_segment": "loyal"},
    },
    "replenish": {
        "product": {"id": "water", "title": "Drinking water 19 l", "quantity": 5.0, "days_per_unit": 3.0, "bought": "2026-01-01",
                    "runs_out": "2026-01-16", "days_left": 2, "name": "Water 19 l"},
    },
    "recurring": {
        "deal": {"key": "bitrix24:deal:7", "id": "7", "title": "Water supply 2026", "amount": 1250.0, "currency": "UAH"},
        "period": {"start": "2026-01-31", "label": "31.01.2026", "number": 3, "every": "monthly"},
        "invoice": {"title": "Water supply 2026: 31.01.2026", "amount": 1250.0, "currency": "UAH", "due_date": "2026-02-10"},
        "previous_invoice": {"key": "bitrix24:invoice:17", "id": "17", "title": "Water supply 2026: 31.12.2025", "amount": 1250.0,
                             "currency": "UAH", "due_date": "2026-01-10"},
    },
}


def variables_for(rule_type: str) -> dict[str, Any]:
    return {**BASE_VARS, **EXTRA_VARS.get(rule_type, {})}


@lru_cache(maxsize=1024)
def _compiled(template: str):
    return _env.from_string(template)


def render(template: str, context: dict[str, Any]) -> str:
    """Render a template; raises :class:`jinja2.TemplateError` on unknown variables."""
    return _compiled(template).render(**context)


def pick_variant(variants: list[str], client_key: str, sent_before: int) -> str:
    """A client's own starting text, then the next one each time: with two or more variants a
    client never gets the same text twice in a row (``sent_before`` counts earlier sends)."""
    h = int(hashlib.sha1(client_key.encode()).hexdigest(), 16)
    return variants[(h + sent_before) % len(variants)]


def _texts(obj: Any, loc: tuple) -> Iterable[tuple[tuple, str]]:
    """Every template string inside an action model, with its config location."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            alias = type(obj).model_fields[name].alias or name
            yield from _texts(value, loc + (alias,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _texts(v, loc + (i,))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _texts(v, loc + (k,))
    elif isinstance(obj, str) and ("{{" in obj or "{%" in obj):
        yield loc, obj


def check_templates(settings: Any) -> list[tuple[tuple, str]]:
    """Render every template of every rule against its rule type's vocabulary."""
    problems: list[tuple[tuple, str]] = []
    for ri, rule in enumerate(settings.rules):
        ctx = variables_for(rule.type)
        parts: list[tuple[tuple, Any]] = [(("rules", ri, "actions"), rule.actions)]
        for si, step in enumerate(rule.escalate):
            parts.append((("rules", ri, "escalate", si, "actions"), step.actions))
        if rule.type == "release":
            parts.append((("rules", ri, "reassign"), rule.reassign))
        if rule.type == "recurring":
            parts += [(("rules", ri, "invoice"), rule.invoice), (("rules", ri, "unpaid_task"), rule.unpaid_task)]
        for base, obj in parts:
            for loc, text in _texts(obj, base):
                try:
                    render(text, ctx)
                except TemplateError as e:
                    problems.append((loc, f"template error: {e.message or e}"))
    return problems
