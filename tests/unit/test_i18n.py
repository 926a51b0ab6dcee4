"""Words for people: every built-in text is in the catalogs, and formats follow the locale."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from connector import i18n

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {"_": None, "ngettext": (1, 2)}


def _msgids() -> set[str]:
    ids: set[str] = set()
    for pkg in ("connector", "bitrix", "onec", "binotel", "sms"):
        for _file, _line, msg, _comments, _ctx in extract_from_dir(ROOT / pkg, method_map=[("**.py", "python")], keywords=KEYWORDS):
            ids.add(msg[0] if isinstance(msg, tuple) else msg)
    return ids


def test_every_text_in_the_code_is_translated_into_ukrainian_and_russian():
    wanted = _msgids()
    for lang in ("uk", "ru"):
        with (i18n.CATALOGS / lang / "LC_MESSAGES" / "connector.po").open("rb") as f:
            cat = read_po(f, locale=lang)
        have = {m.id if isinstance(m.id, str) else m.id[0]: m for m in cat if m.id}
        missing = sorted(m for m in wanted if m not in have or not have[m].string or (isinstance(have[m].string, tuple) and not all(have[m].string)))
        assert not missing, f"{lang}: untranslated: {missing[:10]}"
        fuzzy = sorted(m.id for m in cat if m.id and m.fuzzy)
        assert not fuzzy, f"{lang}: fuzzy translations: {fuzzy[:10]}"


def test_money_numbers_and_dates_follow_the_locale():
    i18n.use("uk")
    try:
        assert i18n.money(42000, "UAH").replace("\u202f", " ").replace("\xa0", " ") == "42 000,00 ₴"
        assert i18n.number(18500).replace("\u202f", " ").replace("\xa0", " ") == "18 500,00"
        assert i18n.day(date(2026, 11, 12)) == "12.11.2026"
        assert i18n.moment(datetime(2026, 11, 12, 12, 5, tzinfo=UTC), "Europe/Kyiv") == "12.11.2026 14:05"
        i18n.use("en")
        assert i18n.money(42000, "UAH") in ("UAH 42,000.00", "UAH42,000.00", "₴42,000.00")
    finally:
        i18n.use("uk")
