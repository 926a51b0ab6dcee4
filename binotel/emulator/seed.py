"""Render the synthetic company as Binotel wire records, with Binotel's loose types.

Types follow the captured responses (reference §5): ``startTime``/``callType``/``isNewCall`` are
strings, ``waitsec`` a number, ``billsec`` a string in some records and a number in others (mixed
within one response), ``customerData`` ``""``, ``employeeData`` ``[]`` when nobody, and
``historyData`` lists ring attempts. Besides the company's own calls, a few extra calls with
numbers no client owns cover every disposition, hidden and foreign numbers, a call that crosses
midnight and one still ``ONLINE`` that completes later; the missed ones are older than a day, so
they never start a missed-call story in the sandbox.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connector.sandbox import SCall, SManager, SyntheticCompany

COMPANY_ID = "62770"
PBX_NUMBER = {"number": "0443334023", "name": "Sales 044"}
RECORDED = {"ANSWER", "VM-SUCCESS", "SUCCESS", "TRANSFER"}


@dataclass
class LiveCall:
    """A call served ``ONLINE`` until ``ends_at`` (emulator clock), then as ``final``."""

    call_id: str
    ends_at: float
    final: SCall
    final_record: dict | None = None


def _employee(m: SManager | None) -> Any:
    return {"name": m.full_name, "email": m.email} if m else []


def _billsec(call_id: int, value: int, flip: bool = False) -> Any:
    """Mixed string/number within one response, as captured."""
    as_string = (call_id % 2 == 0) != flip
    return str(value) if as_string else value


def render_call(c: SCall, managers: dict[str, SManager], first_call: bool,
                others: list[SManager]) -> dict:
    """One :class:`SCall` as a ``callDetails`` item."""
    emp = managers.get(c.employee_email or "")
    rec: dict[str, Any] = {
        "companyID": COMPANY_ID,
        "generalCallID": str(c.id),
        "callID": str(c.id),
        "startTime": str(int(c.start.timestamp())),
        "callType": str(c.call_type),
        "internalNumber": c.internal_number,
        "internalAdditionalData": "",
        "externalNumber": c.external_number,
        "waitsec": int(c.wait),
        "billsec": _billsec(c.id, c.bill),
        "disposition": c.disposition,
        "recordingStatus": "uploaded" if c.disposition in RECORDED else "",
        "isNewCall": "1" if first_call and c.call_type == 0 else "0",
        "whoHungUp": "",
        "customerData": "",
        "employeeData": _employee(emp),
        "pbxNumberData": dict(PBX_NUMBER) if c.call_type == 0 else {"number": PBX_NUMBER["number"]},
    }
    history: list[dict] = []
    if c.call_type == 1:
        history.append({"pbxNumberData": {"number": PBX_NUMBER["number"]}, "waitsec": int(c.wait),
                        "billsec": _billsec(c.id, c.bill, flip=True), "disposition": c.disposition})
    elif c.disposition in ("ANSWER", "TRANSFER") and emp is not None:
        if c.wait > 10 and others:
            # rang a colleague first, then the one who answered
            first = next((o for o in others if o.email != emp.email), None)
            if first is not None:
                history.append({"internalNumber": first.extension, "internalAdditionalData": "",
                                "employeeData": _employee(first), "waitsec": c.wait // 2, "billsec": "0",
                                "disposition": "NOANSWER"})
        history.append({"internalNumber": c.internal_number, "internalAdditionalData": "",
                        "employeeData": _employee(emp), "waitsec": c.wait - (c.wait // 2 if history else 0),
                        "billsec": _billsec(c.id, c.bill, flip=True), "disposition": c.disposition})
    elif c.disposition not in ("VM", "VM-SUCCESS", "ONLINE", ""):
        # a queue rang two employees, nobody picked up
        for o in others[:2]:
            history.append({"internalNumber": f"{c.internal_number} > {o.extension}" if not c.internal_number.isdigit() else o.extension,
                            "internalAdditionalData": "", "employeeData": _employee(o), "waitsec": max(c.wait // 2, 1),
                            "billsec": 0, "disposition": "NOANSWER" if c.disposition != "CANCEL" else "CANCEL"})
    rec["historyData"] = history
    return rec


def extra_calls(co: SyntheticCompany, first_id: int) -> tuple[list[SCall], LiveCall]:
    """Calls that exercise the wire's corners, with numbers no client owns."""
    rng = random.Random(11)
    taken = {p for c in co.companies for p in c.phones} | {p for ct in co.contacts for p in ct.phones}

    def landline() -> str:
        while True:
            n = f"044{rng.randint(2000000, 5999999)}"
            if n not in taken:
                taken.add(n)
                return n

    sales = [m for m in co.managers if m.active and m.id != co.supervisor_id] or co.managers
    m1, m2 = sales[0], sales[1 % len(sales)]
    a = co.anchor
    ids = iter(range(first_id, first_id + 100))
    day3 = (a - timedelta(days=3)).replace(hour=10, minute=5, second=0)
    out = [
        SCall(next(ids), day3, 0, "0048601234567", "Sales queue", 40, 0, "NOANSWER", None),
        SCall(next(ids), day3 + timedelta(minutes=30), 0, "Unknown", "", 25, 31, "VM-SUCCESS", None),
        SCall(next(ids), day3 + timedelta(hours=1), 0, landline(), "Sales queue", 9, 0, "VM", None),
        SCall(next(ids), day3 + timedelta(hours=2), 1, landline(), m1.extension, 30, 0, "BUSY", m1.email),
        SCall(next(ids), day3 + timedelta(hours=3), 1, landline(), m1.extension, 2, 0, "CHANUNAVAIL", m1.email),
        SCall(next(ids), day3 + timedelta(hours=4), 1, landline(), m2.extension, 1, 0, "CONGESTION", m2.email),
        SCall(next(ids), day3 + timedelta(hours=5), 0, landline(), m2.extension, 14, 95, "TRANSFER", m2.email),
        SCall(next(ids), day3 + timedelta(hours=6), 0, landline(), "Sales queue", 7, 0, "CANCEL", None),
        SCall(next(ids), day3 + timedelta(hours=7), 1, "442071234567", m2.extension, 5, 64, "ANSWER", m2.email),
        # crosses midnight: starts at 23:59:30 local two days before the anchor, lasts 10 minutes
        SCall(next(ids), (a - timedelta(days=2)).replace(hour=23, minute=59, second=30), 0, landline(),
              m1.extension, 6, 600, "ANSWER", m1.email),
    ]
    live_id = next(ids)
    live_start = a - timedelta(minutes=15)
    out.append(SCall(live_id, live_start, 0, landline(), m1.extension, 8, 0, "ONLINE", m1.email))
    done = SCall(live_id, live_start, 0, out[-1].external_number, m1.extension, 8, 20 * 60 - 8, "ANSWER", m1.email)
    return out, LiveCall(str(live_id), (a + timedelta(minutes=5)).timestamp(), done)


def render_company(co: SyntheticCompany, *, extras: bool = True) -> tuple[dict[str, dict], list[LiveCall]]:
    """All calls keyed by generalCallID (string), plus the calls that are still in progress."""
    managers = {m.email: m for m in co.managers}
    calls = sorted(co.calls, key=lambda c: (c.start, c.id))
    live: list[LiveCall] = []
    if extras:
        more, lc = extra_calls(co, max([c.id for c in co.calls], default=4683310000) + 1000)
        calls = sorted(calls + more, key=lambda c: (c.start, c.id))
        live.append(lc)
    active = [m for m in co.managers if m.active and m.id != co.supervisor_id]
    seen: set[str] = set()
    out: dict[str, dict] = {}
    for c in calls:
        first = c.external_number not in seen and c.external_number != "Unknown"
        seen.add(c.external_number)
        others = [m for m in active if m.email != c.employee_email]
        out[str(c.id)] = render_call(c, managers, first, others)
        for lc in live:
            if lc.call_id == str(c.id):
                lc.final_record = render_call(lc.final, managers, first, others)
    return out, live


def render_employees(co: SyntheticCompany) -> dict[str, dict]:
    """``listOfEmployees``: keyed by e-mail, plus one SIP line without a user. SIP data is fake."""
    out: dict[str, dict] = {}
    for m in co.managers:
        if not m.active:  # a removed account is simply not listed
            continue
        out[m.email] = {
            "employeeID": str(37500 + m.id),
            "email": m.email,
            "name": m.full_name,
            "presenceState": "active",
            "department": "Management" if m.department == 1 else "Sales",
            "isAdministrator": "1" if m.id == co.supervisor_id else "0",
            "crmIsEnabled": "1",
            "chatIsEnabled": 0,
            "callCenterIsEnabled": "1",
            "language": "uk",
            "mobileNumber": "",
            "endpointData": _endpoint(1000 + m.id, m.extension, m.full_name),
        }
    out["notLinkedToUser_1999"] = {
        "employeeID": 0, "email": "", "name": "", "presenceState": "", "department": "",
        "endpointData": _endpoint(1999, "999", "Lobby phone"),
    }
    return out


def _endpoint(eid: int, ext: str, name: str) -> dict:
    return {
        "id": str(eid), "login": f"sip{eid}", "password": f"fake-sip-secret-{eid}", "internalNumber": ext,
        "name": name, "encryptedWithTls": "0", "deviceType": "sip", "stateOfMonitoring": "1",
        "amountOfBadNetworkAlerts": 0, "department": "",
        "status": {"status": "offline", "qualify": "", "updatedAt": str(int(datetime(2026, 1, 1).timestamp()))},
    }
