"""Sandboxed Jinja2 texts with a fixed vocabulary per rule type.

An unknown variable is a ``validate`` error, not a blank in a client's SMS: every template in
the config is rendered at load time against a sample context that has exactly the variables the
rule will provide.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Iterable
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, pass_context
from jinja2.sandbox import SandboxedEnvironment

from connector import i18n, words
from connector.i18n import _

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)

LANGUAGE = "_language"  # put into every context by render(): filters format by the config's language wherever they run


def _speaking(language: str | None, fn: Any, *args: Any) -> Any:
    """Call ``fn`` with ``language`` current (in a copied context: the caller's stays as it was)."""
    def call() -> Any:
        if language in i18n.LANGUAGES:
            i18n.use(language)
        return fn(*args)

    return contextvars.copy_context().run(call)


def _plain(text: str) -> str:
    """Babel groups digits with no-break spaces; texts for people (an SMS above all) get a plain
    space, which looks the same and keeps a Latin SMS in the cheaper GSM-7 alphabet."""
    return text.replace("\u202f", " ").replace("\xa0", " ")


@pass_context
def money(ctx: Any, value: float | int | str, currency: str | int | None = None, decimals: int = 2) -> str:
    """The ``money`` filter, by the config's language: ``{{ 42000 | money }}`` -> ``42 000,00``,
    ``{{ debt.amount | money(debt.currency) }}`` -> ``42 000,00 ₴``; ``money(0)`` rounds to whole units."""
    if isinstance(currency, int) and not isinstance(currency, bool):
        currency, decimals = None, currency
    amount = float(value)
    if currency:
        def fmt() -> str:
            if decimals == 2:
                return i18n.money(amount, str(currency))
            from babel.numbers import parse_pattern

            pattern = parse_pattern(i18n.locale().currency_formats["standard"])
            pattern.frac_prec = (decimals, decimals)
            return pattern.apply(amount, i18n.locale(), currency=str(currency), currency_digits=False)
        return _plain(_speaking(ctx.get(LANGUAGE), fmt))
    return _plain(_speaking(ctx.get(LANGUAGE), i18n.number, amount, decimals))


_env.filters["money"] = money


# ---------------------------------------------------------------- what variables are
# Objects render as text (``{{ last_contact }}`` -> "дзвінок 12.11.2026") while their attributes
# still work (``{{ last_contact.kind }}``). The text is made when the context is built, in the
# config's language; underneath they are a dict, a str and a float, so they pickle (a render may
# happen in another process) and the immutable sandbox renders them without calling back into
# the connector.


class Text(dict):
    """An object variable: attributes as keys, and how it reads as a whole (``str``)."""

    def __init__(self, text: str, /, **attrs: Any) -> None:
        super().__init__(attrs)
        self._text = text

    def __str__(self) -> str:
        return self._text


class TextList(list):
    """A list variable (``debt.documents``) that reads as one line."""

    def __init__(self, items: Iterable[Any], text: str) -> None:
        super().__init__(items)
        self._text = text

    def __str__(self) -> str:
        return self._text


class When(str):
    """A date (``12.11.2026``) or a local time to the minute (``12.11.2026 14:05``) as people here
    write it; ``.iso`` is the ISO 8601 form (``2026-11-12``) for fields and comparisons."""

    iso: str

    def __new__(cls, text: str, iso: str = "") -> When:
        obj = super().__new__(cls, text)
        obj.iso = iso or text
        return obj


class Amount(float):
    """A number that reads grouped by the locale (``42 000,00``) and still counts (``> 1000``)."""

    def __new__(cls, value: float, text: str = "") -> Amount:
        obj = super().__new__(cls, value)
        obj._text = text
        return obj

    def __str__(self) -> str:
        return getattr(self, "_text", "") or float.__repr__(self)


def day_var(d: date | datetime | str | None) -> When:
    """``date(2026, 11, 12)`` (or its ISO text) -> ``12.11.2026`` with ``.iso``; empty when unknown."""
    if d is None or d == "":
        return When("", "")
    if isinstance(d, str):
        try:
            d = date.fromisoformat(d[:10])
        except ValueError:
            return When(d, d)
    if isinstance(d, datetime):
        d = d.date()
    return When(i18n.day(d), d.isoformat())


def moment_var(t: datetime) -> When:
    """A local time (already in the config's time zone) -> ``12.11.2026 14:05`` with ``.iso``."""
    return When(i18n.moment(t), t.isoformat(timespec="minutes"))


def amount_var(value: float | int | None) -> Amount:
    v = float(value or 0.0)
    return Amount(v, _plain(i18n.number(v)))


def _money(amount: float, currency: str) -> str:
    return _plain(i18n.money(amount, currency or "UAH"))


def person_var(key: str | None, name: str | None, email: str | None = None) -> Text:
    """``manager``, ``supervisor``, ``previous_manager``: reads as the name."""
    shown = name or _("your manager")
    return Text(shown, id=(key or "").rsplit(":", 1)[-1], key=key or "", name=shown, email=email or "",
                first_name=shown.split()[0] if name else shown)


def client_var(*, key: str = "", title: str = "", first_name: str | None = None, phone: str = "", email: str = "",
               segment: str = "", tax_id: str = "", kind: str = "", fields: dict | None = None, system: str = "") -> Text:
    """``client``: reads as its title (an unknown caller: the phone number)."""
    shown = title or _("unknown client")
    return Text(shown, key=key, id=key.rsplit(":", 1)[-1] if key else "", title=shown, name=shown, first_name=first_name,
                greeting_name=first_name or _("dear client"), phone=phone, email=email, segment=segment, tax_id=tax_id,
                kind=kind, fields=dict(fields or {}), system=system)


def rule_var(name: str, type_: str) -> Text:
    return Text(name, name=name, type=type_)


def last_contact_var(kind: str | None, when: date | datetime | None) -> Text:
    """``last_contact``: "дзвінок 12.11.2026"; with none, "контактів ще не було" (``kind`` ``none``)."""
    if not kind or kind == "none" or when is None:
        return Text(_("no contact yet"), kind="none", name=words.contact_kind(None), date=day_var(when))
    d = day_var(when)
    return Text(_("{kind} on {date}").format(kind=words.contact_kind(kind), date=d), kind=kind,
                name=words.contact_kind(kind), date=d)


def last_purchase_var(when: date | datetime, amount: float, what: str) -> Text:
    """``last_purchase`` (lost): "реалізація в 1С від 12.11.2026 на суму 42 000,00"."""
    d, a = day_var(when), amount_var(amount)
    return Text(_("{kind} of {date} for {amount}").format(kind=words.purchase_kind(what), date=d, amount=str(a)),
                date=d, amount=a, kind=what, name=words.purchase_kind(what))


def invoice_var(*, key: str, title: str, number: str, amount: float, currency: str, due_date: date | None,
                days_overdue: int) -> Text:
    """``invoice`` (unpaid): "Рахунок №17 на суму 1 250,50 ₴, сплатити до 01.01.2026"."""
    d = day_var(due_date)
    return Text(_("{title} for {amount}, due {date}").format(title=title, amount=_money(amount, currency), date=d),
                key=key, id=key.rsplit(":", 1)[-1], title=title, number=number, amount=amount_var(amount),
                currency=currency, due_date=d, days_overdue=days_overdue)


def document_var(doc: dict[str, Any], currency: str) -> Text:
    """One shipment a debt is made of: "РН-000123 від 18.12.2025: не сплачено 1 500,00 ₴, строк 01.01.2026"."""
    attrs = dict(doc)
    for k in ("date", "due"):
        if k in attrs:
            attrs[k] = day_var(attrs[k])
    for k in ("amount", "unpaid"):
        if isinstance(attrs.get(k), int | float):
            attrs[k] = amount_var(attrs[k])
    unpaid = doc.get("unpaid", doc.get("amount"))
    text = _("{number} of {date}: {unpaid} unpaid, due {due}").format(
        number=doc.get("number") or "", date=attrs.get("date", ""),
        unpaid=_money(float(unpaid or 0.0), currency), due=attrs.get("due", ""))
    return Text(text, **attrs)


def debt_var(*, amount: float, currency: str, overdue_amount: float, overdue_since: date | None, days_overdue: int,
             documents: Iterable[dict[str, Any]] = ()) -> Text:
    """``debt`` (debtors): "42 000,00 ₴, з них 12 000,00 ₴ прострочено з 01.10.2026"."""
    since = day_var(overdue_since)
    if abs(overdue_amount - amount) < 0.005:
        text = _("{amount} overdue since {date}").format(amount=_money(amount, currency), date=since)
    else:
        text = _("{amount}, of which {overdue} overdue since {date}").format(
            amount=_money(amount, currency), overdue=_money(overdue_amount, currency), date=since)
    docs = [document_var(x, currency) for x in documents]
    return Text(text, amount=amount_var(amount), currency=currency, overdue_amount=amount_var(overdue_amount),
                overdue_since=since, days_overdue=days_overdue, documents=TextList(docs, "; ".join(str(x) for x in docs)))


def call_var(*, id: str, phone: str, started_at: datetime, wait_s: int) -> Text:
    """``call`` (missed_call): "дзвінок з номера +380501234567 (12.11.2026 14:05)"; ``started_at`` is local."""
    at = moment_var(started_at)
    return Text(_("call from {phone} at {time}").format(phone=phone, time=at), id=id, phone=phone, started_at=at,
                wait_s=wait_s)


# ---------------------------------------------------------------- the vocabulary per rule type

_SAMPLE_NOW = datetime(2026, 1, 1, 10, 0)

# Sample values of every variable, built by the same functions as the real ones: ``validate``
# renders every template against them (only the names matter there, not the language).
BASE_VARS: dict[str, Any] = {
    "client": client_var(key="bitrix24:company:12", title="Acme LLC", first_name="Olena", phone="+380501234567",
                         email="client@example.com", segment="VIP", tax_id="12345678", kind="company", system="bitrix24"),
    "manager": person_var("bitrix24:user:7", "Ivan Petrenko", "m@example.com"),
    "supervisor": person_var("bitrix24:user:1", "Head Of Sales", "m@example.com"),
    "rule": rule_var("rule", "forgotten"),
    "days": 60,
    "reason": "no contact for 60 days",
    "now": moment_var(_SAMPLE_NOW),
    "today": day_var(_SAMPLE_NOW.date()),
    "last_contact": last_contact_var("call", _SAMPLE_NOW.date()),
}

EXTRA_VARS: dict[str, dict[str, Any]] = {
    "release": {"previous_manager": person_var("bitrix24:user:9", "Petro Ivanenko", "p@example.com"), "grace_days": 14},
    "lost": {
        "purchases": 3,
        "last_purchase": last_purchase_var(_SAMPLE_NOW.date(), 100.0, "deal"),
        "cadence_days": 14,
        "callback_number": 1,
        "temperature": "warm",
    },
    "unpaid": {
        "invoice": invoice_var(key="bitrix24:invoice:17", title="Invoice #17", number="17", amount=1250.5, currency="UAH",
                               due_date=_SAMPLE_NOW.date(), days_overdue=5),
    },
    "debtors": {
        "debt": debt_var(amount=1500.0, currency="UAH", overdue_amount=1500.0, overdue_since=_SAMPLE_NOW.date(), days_overdue=10,
                         documents=[{"number": "РН-000123", "date": "2025-12-18", "amount": 1500.0, "unpaid": 1500.0,
                                     "due": "2026-01-01"}]),
    },
    "missed_call": {
        "call": call_var(id="1", phone="+380501234567", started_at=_SAMPLE_NOW, wait_s=20),
        "callback_minutes": 15,
    },
    "forgotten": {},
}


def variables_for(rule_type: str) -> dict[str, Any]:
    return {**BASE_VARS, **EXTRA_VARS.get(rule_type, {})}


@lru_cache(maxsize=1024)
def _compiled(template: str):
    return _env.from_string(template)


def render(template: str, context: dict[str, Any]) -> str:
    """Render a template; raises :class:`jinja2.TemplateError` on unknown variables."""
    return _compiled(template).render(**{**context, LANGUAGE: i18n.current()})


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
        for base, obj in parts:
            for loc, text in _texts(obj, base):
                try:
                    render(text, ctx)
                except TemplateError as e:
                    problems.append((loc, f"template error: {e.message or e}"))
    return problems
