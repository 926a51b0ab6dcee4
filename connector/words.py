"""Names of the things people read about, in the config's language.

Codes stay codes in the store, the journal and JSON output (``call``, ``done``, ``sms``); a person
reads their names: a reason says "останній контакт: дзвінок 12.11.2026", a summary "виконано 3".
Each name is looked up when asked (never at import), so :func:`connector.i18n.use` applies.
"""

from __future__ import annotations

from collections.abc import Callable

from connector import i18n
from connector.i18n import _

_built: dict[tuple[str, str], dict[str, str]] = {}


def _names(what: str, build: Callable[[], dict[str, str]]) -> dict[str, str]:
    """The table ``build`` makes, once per language: a plan names tens of thousands of things."""
    key = (what, i18n.current())
    names = _built.get(key)
    if names is None:
        names = _built[key] = build()
    return names


def contact_kind(kind: str | None) -> str:
    """``call`` -> "дзвінок": what a contact was (an activity kind of :mod:`connector.domain`)."""
    names = _names("contact_kind", lambda: {
        "call": _("call"),
        "email": _("e-mail"),
        "meeting": _("meeting"),
        "task": _("task"),
        "comment": _("comment"),
        "document": _("1C document"),
        "deal": _("new deal"),
        "invoice": _("new invoice"),
        "other": _("other contact"),
    })
    return names.get(kind or "", kind or _("no contact"))


def purchase_kind(what: str | None) -> str:
    """``1c sale`` -> "реалізація в 1С": what a purchase was (see ``Evidence._purchase_rows``)."""
    names = _names("purchase_kind", lambda: {
        "deal": _("won deal"),
        "invoice": _("paid invoice"),
        "1c sale": _("1C sale"),
        "1c order": _("paid 1C order"),
    })
    return names.get(what or "", what or "")


def action(type_: str) -> str:
    """``close_task`` -> "закриття завдання": an action of the plan."""
    names = _names("action", lambda: {
        "task": _("task"),
        "reassign": _("reassignment"),
        "notify": _("notification"),
        "sms": _("SMS"),
        "email": _("e-mail"),
        "comment": _("comment"),
        "trigger": _("automation trigger"),
        "field": _("field update"),
        "workflow": _("business process"),
        "close_task": _("task completion"),
        "invoice_stage": _("invoice stage"),
        "deal_stage": _("deal stage"),
        "create_company": _("company from 1C"),
    })
    return names.get(type_, type_)


def state(code: str) -> str:
    """A journal state or a summary count (``done``, ``retry``, ``new``) as a person reads it."""
    names = _names("state", lambda: {
        "new": _("new"),
        "planned": _("planned"),
        "in_flight": _("in progress"),
        "retry_wait": _("waiting to retry"),
        "retry": _("to retry"),
        "done": _("done"),
        "sent": _("sent"),
        "delivered": _("delivered"),
        "failed": _("failed"),
        "dead": _("gave up"),
        "uncertain": _("uncertain"),
        "cancelled": _("cancelled"),
        "skipped": _("skipped"),
        "refused": _("refused"),
        "adopted": _("already there"),
        "deferred": _("waiting"),
    })
    return names.get(code, code)


def counts(values: dict[str, int]) -> str:
    """``{"done": 3, "failed": 1}`` -> "виконано 3, помилка 1" (sorted by code, so stable)."""
    return ", ".join(_("{what} {n}").format(what=state(k), n=v) for k, v in sorted(values.items()))
