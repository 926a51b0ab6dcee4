"""Words for people: gettext catalogs per language, and numbers, money and dates by the locale.

Every built-in text a manager, a director or a client reads (reasons, default task and
notification texts, ``plan``/``run``/``status``/``demo`` output, reports) is an English msgid
wrapped in :func:`_` (or :func:`ngettext`), translated in ``connector/locale/<lang>/LC_MESSAGES/
connector.po``. The catalogs are compiled from the ``.po`` files when first used (Babel), so a
checkout needs no build step. The language is the config's ``language`` (``uk`` by default),
set once per command with :func:`use`.

Extraction: ``pybabel extract -F babel.cfg -o connector/locale/connector.pot .`` then
``pybabel update -i connector/locale/connector.pot -d connector/locale -D connector``.
"""

from __future__ import annotations

import gettext
import io
from contextvars import ContextVar
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import NumberPattern, format_currency, format_decimal, get_currency_precision, parse_pattern

LANGUAGES = ("uk", "ru", "en")
LOCALES = {"uk": "uk_UA", "ru": "ru_UA", "en": "en_GB"}  # Ukrainian companies: ru_UA formats as in Ukraine
DOMAIN = "connector"
CATALOGS = Path(__file__).parent / "locale"

_language: ContextVar[str] = ContextVar("connector_language", default="uk")


def use(language: str) -> None:
    """Set the language of everything printed or written from here on (this context)."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; one of {', '.join(LANGUAGES)}")
    _language.set(language)


def current() -> str:
    return _language.get()


@lru_cache(maxsize=8)
def translations(language: str) -> gettext.NullTranslations:
    po = CATALOGS / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == "en" or not po.is_file():
        return gettext.NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=language, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def _(message: str) -> str:
    """Translate ``message`` into the current language (an English msgid; ``{name}`` placeholders
    are filled by the caller with ``.format``). A plan renders thousands of texts: one dict lookup."""
    table = _tables.get(_language.get())
    if table is None:
        table = _table(_language.get())
    return table.get(message) or message


_tables: dict[str, dict[str, str]] = {}


def _table(language: str) -> dict[str, str]:
    tr = translations(language)
    catalog = getattr(tr, "_catalog", {})
    _tables[language] = {k: v for k, v in catalog.items() if isinstance(k, str)}
    return _tables[language]


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current()).ngettext(singular, plural, n)


def locale() -> Locale:
    return _locale(current())


@lru_cache(maxsize=8)
def _locale(language: str) -> Locale:
    return Locale.parse(LOCALES[language])


def money(amount: float | int, currency: str = "UAH") -> str:
    """``42000, "UAH"`` -> ``42 000,00 ₴`` in Ukrainian; the currency symbol where the locale has one."""
    currency = currency or "UAH"
    shape = _money_shape(current(), currency)
    if shape is None or not _plain_amount(amount):
        return format_currency(amount, currency, locale=locale())
    template, decimals = shape
    return template.format(number(amount, decimals))


def number(value: float | int, decimals: int = 2) -> str:
    """``42000`` -> ``42 000,00`` (grouped and with the locale's decimal sign)."""
    if not _plain_amount(value):
        return format_decimal(value, format=_grouped(decimals), locale=locale())
    # what babel does (the float's shortest decimal form, half-even), without its per-call pattern
    # machinery: a plan formats tens of thousands of amounts
    group, point = _separators(current())
    q = Decimal(str(value)).quantize(_STEPS[decimals], rounding=ROUND_HALF_EVEN) if decimals in _STEPS else None
    if q is None:
        return format_decimal(value, format=_grouped(decimals), locale=locale())
    return f"{q:,f}".translate({44: group, 46: point})


_STEPS = {n: Decimal(1).scaleb(-n) for n in range(7)}


def _plain_amount(value: object) -> bool:
    """A finite, non-negative int or float (signs and exotic values are left to babel)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e15


@lru_cache(maxsize=8)
def _separators(language: str) -> tuple[str, str]:
    """The locale's group and decimal signs, read off what babel writes for 1234.5."""
    s = format_decimal(1234.5, format="#,##0.0", locale=_locale(language))  # "1 234,5"
    return s[1], s[5]


@lru_cache(maxsize=64)
def _money_shape(language: str, currency: str) -> tuple[str, int] | None:
    """``("{} ₴", 2)``: where the locale puts the number and the symbol, and the currency's digits;
    None when the number does not appear as :func:`number` writes it (then babel formats each)."""
    digits = get_currency_precision(currency)
    sample = format_currency(1234567.5, currency, locale=_locale(language))
    token = f"{Decimal('1234567.5').quantize(_STEPS[digits]):,f}".translate(
        {44: _separators(language)[0], 46: _separators(language)[1]}) if digits in _STEPS else None
    if token is None or sample.count(token) != 1 or "{" in sample or "}" in sample:
        return None
    return sample.replace(token, "{}"), digits


@lru_cache(maxsize=8)
def _grouped(decimals: int) -> NumberPattern:
    """Parsed once: amounts babel formats itself."""
    return parse_pattern("#,##0" + ("." + "0" * decimals if decimals else ""))


def day(d: date | datetime) -> str:
    """A date as people here write it: ``12.11.2026`` (the same digits in every language we speak)."""
    return f"{d:%d.%m.%Y}"


def moment(t: datetime, tz: str | None = None) -> str:
    """A local time to the minute: ``12.11.2026 14:05``."""
    if tz is not None:
        t = t.astimezone(_zone(tz)) if t.tzinfo else t.replace(tzinfo=_zone(tz))
    return f"{t:%d.%m.%Y %H:%M}"


@lru_cache(maxsize=16)
def _zone(tz: str):
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)
