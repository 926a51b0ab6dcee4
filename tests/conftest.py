"""Every test starts in the default language (Ukrainian) whatever an earlier test switched to."""

from __future__ import annotations

import pytest

from connector import i18n


@pytest.fixture(autouse=True)
def _default_language():
    i18n.use("uk")
    yield
    i18n.use("uk")
