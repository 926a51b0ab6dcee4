"""connector.phones.normalize with the spellings met in Ukrainian CRMs, 1C and Binotel."""

from __future__ import annotations

import pytest

from connector.phones import is_mobile, national, normalize


@pytest.mark.parametrize(
    "raw, e164",
    [
        ("+380 44 123 45 67", "+380441234567"),
        ("+380441234567", "+380441234567"),
        ("0441234567", "+380441234567"),
        ("044 123-45-67", "+380441234567"),
        ("(044) 123-45-67", "+380441234567"),
        ("+38 (044) 123-45-67", "+380441234567"),
        ("380501234567", "+380501234567"),
        ("0501234567", "+380501234567"),
        ("050-123-45-67", "+380501234567"),
        ("+38 050 123 45 67", "+380501234567"),
        ("8 050 123 45 67", "+380501234567"),  # the pre-2010 long-distance prefix, still typed
        ("80501234567", "+380501234567"),
        ("501234567", "+380501234567"),  # bare national significant number
        ("0322123456", "+380322123456"),  # Lviv: shorter area code, same total length
        ("0800501234", "+380800501234"),  # toll-free
        (" 093 123 45 67 ", "+380931234567"),
    ],
)
def test_ukrainian_spellings_meet_in_e164(raw: str, e164: str) -> None:
    assert normalize(raw, "UA") == e164


@pytest.mark.parametrize(
    "raw, e164",
    [
        ("0048601234567", "+48601234567"),  # Binotel's foreign form: 00 + country code
        ("00375291234567", "+375291234567"),
        ("0037061234567", "+37061234567"),
        ("442071234567", "+442071234567"),  # bare international digits seen in webhooks
        ("+1 202 555 0142", "+12025550142"),
    ],
)
def test_foreign_numbers_keep_their_country(raw: str, e164: str) -> None:
    assert normalize(raw, "UA") == e164


@pytest.mark.parametrize("raw", ["Unknown", "unknown", "anonymous", "", None, "123", "abc", "050123456",
                                 "05012345678", "+380 50 123", "---"])
def test_hidden_short_or_garbage_is_none(raw) -> None:
    assert normalize(raw, "UA") is None


def test_mobile_and_national_forms() -> None:
    assert is_mobile("+380501234567") and is_mobile("+380931234567")
    assert not is_mobile("+380441234567")
    assert not is_mobile("not a number")
    assert national("+380501234567") == "0501234567"
    assert national("+380441234567") == "0441234567"
