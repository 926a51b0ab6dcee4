"""Binotel wire records -> domain Call/Manager, with the loose types seen in captures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from binotel.client import as_int, keyed_records, records
from binotel.mapping import call_from_wire, manager_from_wire
from binotel.push import BadRequest, parse_php_form
from connector.errors import RecordError

# The captured stats record of reference §5 (anonymised): billsec a string, waitsec a number.
CAPTURED = {
    "companyID": "14", "generalCallID": "432726635", "startTime": "1510642692", "callType": "0",
    "internalNumber": "937", "internalAdditionalData": "882 > ", "externalNumber": "0501234567",
    "waitsec": 56, "billsec": "147", "disposition": "ANSWER", "isNewCall": "0", "customerData": "",
    "employeeData": {"name": "Ivan Petrenko", "email": "IP@example.ua"},
    "pbxNumberData": {"number": "0443334023", "name": "Sales 044"},
    "historyData": [{"internalNumber": "882 > 937", "internalAdditionalData": "",
                     "employeeData": {"name": "Ivan Petrenko", "email": "ip@example.ua"},
                     "waitsec": 56, "billsec": "147", "disposition": "ANSWER"}],
}


def test_captured_record_maps_to_an_answered_inbound_call() -> None:
    c = call_from_wire(CAPTURED)
    assert c.key == "binotel:call:432726635" and c.source_id == "432726635" and c.system == "binotel"
    assert c.direction == "in"
    assert c.phone == "0501234567"  # as Binotel spelled it; the core normalises
    assert c.started_at == datetime(2017, 11, 14, 6, 58, 12, tzinfo=UTC)
    assert c.started_at.tzinfo is not None
    assert (c.wait_s, c.talk_s) == (56, 147)
    assert c.disposition == "ANSWER" and c.answered and c.final
    assert c.internal_number == "937"
    assert c.manager_key == "binotel:user:ip@example.ua"


def test_numbers_as_numbers_and_strings_are_the_same_call() -> None:
    loose = dict(CAPTURED, startTime=1510642692, callType=0, waitsec="56", billsec=147, generalCallID=432726635)
    a, b = call_from_wire(CAPTURED), call_from_wire(loose)
    assert (a.key, a.started_at, a.direction, a.wait_s, a.talk_s) == (b.key, b.started_at, b.direction, b.wait_s, b.talk_s)


def test_outgoing_call_direction() -> None:
    rec = dict(CAPTURED, callType="1", historyData=[{"pbxNumberData": {"number": "0443334023"}, "waitsec": 3,
                                                    "billsec": 40, "disposition": "ANSWER"}])
    assert call_from_wire(rec).direction == "out"


def test_missed_queue_call_with_ring_attempts_is_not_answered_and_has_no_manager() -> None:
    rec = dict(CAPTURED, internalNumber="Sales queue", billsec=0, disposition="NOANSWER", employeeData=[],
               historyData=[
                   {"internalNumber": "Sales queue > 901", "employeeData": {"name": "A", "email": "a@x.ua"},
                    "waitsec": 10, "billsec": 0, "disposition": "NOANSWER"},
                   {"internalNumber": "Sales queue > 902", "employeeData": {"name": "B", "email": "b@x.ua"},
                    "waitsec": 10, "billsec": "0", "disposition": "NOANSWER"}])
    c = call_from_wire(rec)
    assert not c.answered and c.final and c.manager_key is None
    assert c.internal_number == "Sales queue"


def test_transfer_answered_in_history_names_the_employee_who_answered() -> None:
    rec = dict(CAPTURED, disposition="TRANSFER", employeeData=[], historyData=[
        {"internalNumber": "901", "employeeData": [], "waitsec": 5, "billsec": 0, "disposition": "NOANSWER"},
        {"internalNumber": "902", "employeeData": {"name": "B", "email": "b@x.ua"}, "waitsec": 4, "billsec": "80",
         "disposition": "TRANSFER"}])
    c = call_from_wire(rec)
    assert c.answered and c.manager_key == "binotel:user:b@x.ua"


def test_answer_with_zero_billsec_and_no_history_is_not_answered() -> None:
    assert not call_from_wire(dict(CAPTURED, billsec="0", historyData=[])).answered
    assert call_from_wire(dict(CAPTURED, billsec=12, historyData=[])).answered


@pytest.mark.parametrize("disposition", ["ONLINE", "", "online"])
def test_in_progress_calls_are_provisional(disposition: str) -> None:
    c = call_from_wire(dict(CAPTURED, disposition=disposition, historyData=[]))
    assert c.final is False


@pytest.mark.parametrize("disposition", ["BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL", "VM",
                                         "VM-SUCCESS", "SMS-SUCCESS", "FAILED"])
def test_failed_dispositions_are_final_and_not_answered(disposition: str) -> None:
    c = call_from_wire(dict(CAPTURED, disposition=disposition, billsec="0", historyData=[]))
    assert c.final and not c.answered and c.disposition == disposition


def test_hidden_number_and_empty_objects_are_tolerated() -> None:
    rec = dict(CAPTURED, externalNumber="Unknown", employeeData="", customerData=[], historyData="", waitsec="",
               billsec=None, internalNumber="")
    c = call_from_wire(rec)
    assert c.phone == "Unknown" and c.wait_s == 0 and c.talk_s == 0 and c.manager_key is None
    assert c.internal_number == ""


def test_push_form_record_with_history_as_a_keyed_map() -> None:
    # parse_php_form turns 0..n-1 keyed maps into lists; a partial map still maps
    rec = dict(CAPTURED, historyData={"1": {"disposition": "ANSWER", "billsec": "5"}})
    assert call_from_wire(rec).answered


@pytest.mark.parametrize("bad", [{"generalCallID": ""}, {"startTime": ""}, {"startTime": "0"}, {"callType": "7"},
                                 {"callType": ""}])
def test_unmappable_records_raise_record_error(bad: dict) -> None:
    with pytest.raises(RecordError):
        call_from_wire(dict(CAPTURED, **bad))


def test_employee_maps_to_manager_without_sip_password() -> None:
    item = {"employeeID": "37537", "email": "Olena.K@shop.example", "name": "Olena Koval", "presenceState": "inactive",
            "department": "Sales", "mobileNumber": "0501234567",
            "endpointData": {"id": "1", "login": "sip1", "password": "s3cr3t-sip", "internalNumber": "901"}}
    m = manager_from_wire("Olena.K@shop.example", item)
    assert m is not None
    assert m.key == "binotel:user:olena.k@shop.example" and m.source_id == "olena.k@shop.example"
    assert m.email == "Olena.K@shop.example" and m.name == "Olena Koval" and m.extension == "901"
    assert m.departments == ("Sales",) and m.active and m.phone == "0501234567"
    assert "s3cr3t-sip" not in repr(m)


def test_unlinked_sip_line_is_not_a_manager() -> None:
    item = {"employeeID": 0, "email": "", "name": "", "endpointData": {"internalNumber": "999", "password": "x"}}
    assert manager_from_wire("notLinkedToUser_1999", item) is None


@pytest.mark.parametrize("empty", [[], {}, "", None])
def test_empty_call_details_in_every_shape(empty) -> None:
    assert records(empty) == [] and keyed_records(empty) == []


def test_call_details_keyed_object_and_list() -> None:
    assert [r["generalCallID"] for r in records({"1": {"generalCallID": "1"}, "2": {"generalCallID": "2"}})] == ["1", "2"]
    assert records([{"generalCallID": "1"}, "junk"]) == [{"generalCallID": "1"}]


@pytest.mark.parametrize("raw, n", [("147", 147), (147, 147), ("", 0), (None, 0), ([], 0), ("12.0", 12), ("x", 0)])
def test_loose_ints(raw, n: int) -> None:
    assert as_int(raw) == n


def test_php_bracket_form_parses_to_nested_record() -> None:
    body = ("requestType=apiCallCompleted&attemptsCounter=1&callDetails%5BgeneralCallID%5D=4683310794"
            "&callDetails%5BstartTime%5D=1702107076&callDetails%5BcallType%5D=0&callDetails%5BcustomerData%5D="
            "&callDetails%5BemployeeData%5D%5Bname%5D=Ivan&callDetails%5BemployeeData%5D%5Bemail%5D=ivan%40example.ua"
            "&callDetails%5BhistoryData%5D%5B0%5D%5Bdisposition%5D=ANSWER"
            "&callDetails%5BhistoryData%5D%5B0%5D%5Bbillsec%5D=17&callDetails%5Bbillsec%5D=17&language=ru")
    data = parse_php_form(body)
    d = data["callDetails"]
    assert data["requestType"] == "apiCallCompleted" and data["language"] == "ru"
    assert d["employeeData"] == {"name": "Ivan", "email": "ivan@example.ua"}
    assert d["historyData"] == [{"disposition": "ANSWER", "billsec": "17"}]
    assert d["customerData"] == ""
    c = call_from_wire(d)
    assert c.key == "binotel:call:4683310794" and c.answered and c.manager_key == "binotel:user:ivan@example.ua"


@pytest.mark.parametrize("body", ["[x]=1", "a[b=1", "a]b[=1", "a" + "[x]" * 10 + "=1"])
def test_php_form_rejects_malformed_keys(body: str) -> None:
    with pytest.raises(BadRequest):
        parse_php_form(body)


def test_adapter_system_name_is_the_clients():
    """The adapter names the system without importing its client (a plan never loads requests for it)."""
    from binotel import adapter, client

    assert adapter.SYSTEM == client.SYSTEM


def test_adapters_name_their_systems_without_their_clients():
    """Every adapter's system constant agrees with its client's: the adapters are loaded by every plan."""
    from onec import adapter as onec_adapter
    from onec import client as onec_client
    from sms import adapter as sms_adapter
    from sms import sink as sms_sink

    assert onec_adapter.SYSTEM == onec_client.SYSTEM
    assert sms_adapter.SYSTEM == sms_sink.SYSTEM
