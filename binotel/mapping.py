"""Binotel wire records -> domain: pure functions, the only place that knows Binotel field names.

A call keeps ``externalNumber`` exactly as Binotel spelled it (``0501234567``, ``0037…``,
``Unknown``); the core normalises it with :func:`connector.phones.normalize`. Employees are keyed
by e-mail (lower-cased), which is also how a call's ``employeeData`` names its employee.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from binotel.client import SYSTEM, as_dict, as_int, as_str
from connector.domain import Call, Manager, make_key
from connector.errors import RecordError

ANSWERED = {"ANSWER", "TRANSFER"}
PROVISIONAL = {"", "ONLINE"}  # still ringing / talking: may change on the next fetch
DIRECTIONS = {"0": "in", "1": "out"}


def manager_key(email: str) -> str:
    return make_key(SYSTEM, "user", email.strip().lower())


def _employee_email(data: Any) -> str | None:
    email = as_str(as_dict(data).get("email")).strip()
    return email or None


def call_from_wire(rec: Mapping[str, Any]) -> Call:
    """One ``callDetails`` item (stats or the push webhook) -> :class:`Call`.

    Raises :class:`RecordError` when the record has no id, no start time or an unknown
    ``callType``: the source skips it with a warning instead of guessing.
    """
    call_id = as_str(rec.get("generalCallID")).strip()
    if not call_id:
        raise RecordError("no generalCallID", system=SYSTEM)
    start = as_int(rec.get("startTime"), default=-1)
    if start <= 0:
        raise RecordError(f"bad startTime {rec.get('startTime')!r}", system=SYSTEM, record_id=call_id)
    call_type = as_str(rec.get("callType")).strip()
    direction = DIRECTIONS.get(str(as_int(call_type, -1)) if call_type else "")
    if direction is None:
        raise RecordError(f"unknown callType {rec.get('callType')!r}", system=SYSTEM, record_id=call_id)
    disposition = as_str(rec.get("disposition")).strip().upper()
    billsec = as_int(rec.get("billsec"))
    history = rec.get("historyData")
    items = [h for h in (history.values() if isinstance(history, dict) else history or []) if isinstance(h, dict)]
    answered_items = [h for h in items if as_str(h.get("disposition")).strip().upper() in ANSWERED]
    answered = bool(answered_items) or (disposition in ANSWERED and billsec > 0)
    email = _employee_email(rec.get("employeeData"))
    if email is None:
        email = next((e for e in (_employee_email(h.get("employeeData")) for h in answered_items) if e), None)
    return Call(
        key=make_key(SYSTEM, "call", call_id),
        system=SYSTEM,
        source_id=call_id,
        direction=direction,
        phone=as_str(rec.get("externalNumber")).strip(),
        started_at=datetime.fromtimestamp(start, UTC),
        wait_s=as_int(rec.get("waitsec")),
        talk_s=billsec,
        disposition=disposition,
        answered=answered,
        internal_number=as_str(rec.get("internalNumber")).strip(),
        manager_key=manager_key(email) if email else None,
        final=disposition not in PROVISIONAL,
    )


def manager_from_wire(map_key: str, rec: Mapping[str, Any]) -> Manager | None:
    """One ``listOfEmployees`` item -> :class:`Manager`; None for a SIP line without a user.

    Only name, e-mail, department and extension are kept: ``endpointData.password`` is the SIP
    secret and never leaves this function. A listed employee is ``active`` (``presenceState`` is
    at-desk presence, not employment; removed employees disappear from the list and are swept).
    """
    email = as_str(rec.get("email")).strip()
    if not email and "@" in map_key and not map_key.startswith("notLinkedToUser_"):
        email = map_key.strip()
    if not email:
        return None
    endpoint = as_dict(rec.get("endpointData"))
    ext = as_str(endpoint.get("internalNumber")).strip() or None
    dept = as_str(rec.get("department")).strip()
    mobile = as_str(rec.get("mobileNumber")).strip() or None
    name = as_str(rec.get("name")).strip() or email
    return Manager(
        key=manager_key(email),
        system=SYSTEM,
        source_id=email.lower(),
        name=name,
        active=True,
        email=email,
        departments=(dept,) if dept else (),
        phone=mobile,
        extension=ext,
    )
