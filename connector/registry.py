"""Finds adapters through the ``connector.adapters`` entry-point group.

This is the one place that turns names into adapter objects, so the core never imports an
adapter package by name.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from connector.ports import Adapter


@lru_cache(maxsize=1)
def adapters() -> dict[str, Adapter]:
    """All installed adapters by name, in a stable order (CRMs first, channels last)."""
    found: dict[str, Adapter] = {}
    for ep in entry_points(group="connector.adapters"):
        adapter = ep.load()
        found[adapter.name] = adapter
    order = ["bitrix24", "onec", "binotel", "sms", "email"]
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 99, kv[0])))
