"""Shared fixtures of the adapter contract tests."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from bitrix.emulator import EmulatorServer, Portal

CODE = "sandboxsecret0001"


def portal_clock(company):
    """Portal time that runs from the end of the synthetic company's "today", so the portal never
    holds a row modified in its future (a real portal cannot)."""
    start, base = time.monotonic(), company.anchor.replace(hour=23, minute=59, second=0)
    return lambda: base + timedelta(seconds=time.monotonic() - start)


@pytest.fixture
def portal(company):
    """A Bitrix24 emulator on 127.0.0.1:0 seeded from the module's company, real rate limit."""
    p = Portal.from_company(company, webhook_user=1, webhook_code=CODE, plan="standard", rate_limit=True, time_scale=0.0)
    p.clock = portal_clock(company)
    with EmulatorServer(p) as srv:
        p.server = srv  # type: ignore[attr-defined]
        yield p
