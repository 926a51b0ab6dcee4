"""What a config names in the outside systems: people, custom fields, trigger codes.

``connector check`` hands these to each adapter, which looks them up remotely; each reference
carries its config path, so a problem is reported at the line that names it
(``Settings.where(*path)``). The walk over rules lives here once, so no adapter has to know the
shape of every rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from connector.config import (
    PERSON_WORDS,
    FieldAction,
    NotifyAction,
    NotifySpec,
    ReleaseRule,
    Settings,
    TaskAction,
    TriggerAction,
)
from connector.matching import primary_system


@dataclass(frozen=True)
class Person:
    """A user the config names by id."""

    path: tuple
    system: str  # the system whose user it is (the primary CRM for a bare id)
    id: str
    must_be_active: bool  # people who receive work must be active; a filter may name a dismissed one


@dataclass(frozen=True)
class CustomField:
    """A CRM field the config names."""

    path: tuple
    name: str
    entity: str | None  # "company" or "contact" when the rule's clients say which; None: either


@dataclass(frozen=True)
class TriggerCode:
    path: tuple
    code: str


def _person(path: tuple, value: Any, settings: Settings, *, active: bool) -> Person | None:
    text = str(value).strip()
    if text in PERSON_WORDS or not text:
        return None
    parts = text.split(":")
    if len(parts) >= 3 and parts[1] == "user":  # a full key: bitrix24:user:7
        return Person(path, parts[0], ":".join(parts[2:]), active)
    return Person(path, primary_system(settings), text, active)


def _actions(rule: Any, base: tuple) -> Iterator[tuple[tuple, Any]]:
    for j, a in enumerate(rule.actions):
        yield (*base, "actions", j), a
    for k, step in enumerate(rule.escalate):
        for j, a in enumerate(step.actions):
            yield (*base, "escalate", k, "actions", j), a


def people(settings: Settings) -> list[Person]:
    """Every user the config names by id: roles, release pools, filters, task and notification recipients."""
    found: list[Person | None] = []
    for key in ("supervisor", "duty_manager"):
        if getattr(settings.people, key) is not None:
            found.append(_person(("people", key), getattr(settings.people, key), settings, active=True))
    if settings.binotel is not None and settings.binotel.duty_manager is not None:
        found.append(_person(("binotel", "duty_manager"), settings.binotel.duty_manager, settings, active=True))
    for i, rule in enumerate(settings.rules):
        base = ("rules", i)
        if isinstance(rule, ReleaseRule):
            found += [_person((*base, "reassign", "to", j), p, settings, active=True) for j, p in enumerate(rule.reassign.to)]
        if rule.where is not None:
            for key in ("responsible", "not_responsible"):
                found += [_person((*base, "where", key, j), p, settings, active=False)
                          for j, p in enumerate(getattr(rule.where, key) or [])]
        for at, a in _actions(rule, base):
            if isinstance(a, TaskAction):
                found.append(_person((*at, "task", "responsible"), a.task.responsible, settings, active=True))
            elif isinstance(a, NotifyAction):
                to, sub = (a.notify.to, ("notify", "to")) if isinstance(a.notify, NotifySpec) else (a.notify, ("notify",))
                found += [_person((*at, *sub, j), p, settings, active=True) for j, p in enumerate(to)]
    return [p for p in found if p is not None]


def _clients_entity(settings: Settings, rule: Any) -> str | None:
    if isinstance(rule, ReleaseRule):
        rule = next((r for r in settings.rules if r.name == rule.after), None)
    clients = getattr(rule, "clients", None)
    return {"companies": "company", "contacts": "contact"}.get(clients) if clients else None


def custom_fields(settings: Settings) -> list[CustomField]:
    """Every CRM field the config names: the fields to pull, link and opt-out fields, cadence,
    ``where.field`` and ``field`` actions."""
    found: list[CustomField] = []
    b = settings.bitrix24
    if b is not None:
        found += [CustomField(("bitrix24", "fields", i), f, None) for i, f in enumerate(b.fields)]
        for key in ("guid_field", "segment_field", "opt_out_field"):
            if getattr(b, key):
                found.append(CustomField(("bitrix24", key), getattr(b, key), None))
    if settings.messaging is not None and settings.messaging.opt_out_field:
        found.append(CustomField(("messaging", "opt_out_field"), settings.messaging.opt_out_field, None))
    for i, rule in enumerate(settings.rules):
        base, entity = ("rules", i), _clients_entity(settings, rule)
        cadence = getattr(rule, "cadence", None)
        if cadence is not None and cadence.field:
            found.append(CustomField((*base, "cadence", "field"), cadence.field, entity))
        if rule.where is not None and rule.where.field:
            found += [CustomField((*base, "where", "field", name), name, entity) for name in rule.where.field]
        rfm_fields = getattr(rule, "fields", None) if rule.type == "rfm" else None
        if rfm_fields is not None:
            found += [CustomField((*base, "fields", key), name, entity) for key in ("score", "segment")
                      if (name := getattr(rfm_fields, key))]
        for at, a in _actions(rule, base):
            if isinstance(a, FieldAction):
                found += [CustomField((*at, "field", name), name, entity) for name in a.field]
    return found


def trigger_codes(settings: Settings) -> list[TriggerCode]:
    """Every automation trigger code the config fires: ``trigger`` actions and the bitrix24 SMS provider's."""
    found: list[TriggerCode] = []
    sms = settings.messaging.sms if settings.messaging is not None else None
    if sms is not None and sms.provider == "bitrix24" and sms.trigger_code:
        found.append(TriggerCode(("messaging", "sms", "trigger_code"), sms.trigger_code))
    for i, rule in enumerate(settings.rules):
        for at, a in _actions(rule, ("rules", i)):
            if isinstance(a, TriggerAction):
                found.append(TriggerCode((*at, "trigger"), a.trigger))
    return found
