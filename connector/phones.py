"""Phone numbers as one canonical E.164 string, so CRM, 1C and PBX spellings meet.

``+380 44 123 45 67``, ``044 123-45-67``, ``380441234567`` and ``0441234567`` are the same number
with region UA. Binotel's foreign form ``00<country>...`` is international. Anything the
``phonenumbers`` library cannot make a valid number of is returned as None: flagged, never guessed.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

_DIGITS = re.compile(r"\D+")


@lru_cache(maxsize=200_000)
def normalize(raw: str | None, region: str = "UA") -> str | None:
    """Return E.164 (``+380501234567``) or None when the text is not a valid number."""
    if not raw:
        return None
    text = str(raw).strip()
    if not text or text.lower() in {"unknown", "anonymous", "private"}:
        return None
    digits = _DIGITS.sub("", text)
    if not digits:
        return None
    candidates: list[str] = []
    if text.startswith("+"):
        candidates.append("+" + digits)
    elif digits.startswith("00"):
        candidates.append("+" + digits[2:])
    else:
        candidates.append(text)
        if region == "UA":
            if len(digits) == 12 and digits.startswith("380"):
                candidates.insert(0, "+" + digits)
            elif len(digits) == 11 and digits.startswith("80"):
                candidates.insert(0, "+3" + digits)
            elif len(digits) == 9:
                candidates.insert(0, "+380" + digits)
        candidates.append("+" + digits)
    for cand in candidates:
        try:
            num = phonenumbers.parse(cand, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return None


def national(e164: str, region: str = "UA") -> str:
    """``+380501234567`` -> ``0501234567`` (what Binotel expects in requests)."""
    num = phonenumbers.parse(e164, region)
    return _DIGITS.sub("", phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL))


def is_mobile(e164: str) -> bool:
    try:
        t = phonenumbers.number_type(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return False
    return t in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
