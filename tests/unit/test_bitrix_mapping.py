"""bitrix.mapping on hand-built wire rows: strings everywhere, "" dates, missing multifields."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from bitrix import mapping as m
from bitrix.client import classify, command, describe
from connector.domain import ActivityKind, ClientKind, Outcome
from connector.errors import AuthError, NotFound, PermanentError, RateLimited, Rejected, TransientError

KYIV = timezone(timedelta(hours=2))


def test_parse_dt_keeps_offset_and_treats_empty_as_unknown():
    assert m.parse_dt("2024-08-30T14:29:00+02:00") == datetime(2024, 8, 30, 14, 29, tzinfo=KYIV)
    assert m.parse_dt("") is None and m.parse_dt(None) is None and m.parse_dt([]) is None
    naive = m.parse_dt("2024-08-30T14:29:00")
    assert naive is not None and naive.tzinfo is not None  # never naive in the domain
    assert m.parse_dt("24.08.2023 13:19:39") == datetime(2023, 8, 24, 13, 19, 39, tzinfo=UTC)
    assert m.parse_dt("not a date") is None


def test_parse_date_keeps_the_calendar_date_written_not_utc():
    # BIRTHDATE is local midnight: converting to UTC would give the 10th.
    assert m.parse_date("2001-11-11T00:00:00+02:00") == date(2001, 11, 11)
    assert m.parse_date("11.11.1999") == date(1999, 11, 11)
    assert m.parse_date("") is None


def test_company_from_string_row_with_multifields_requisite_and_uf_fields():
    row = {
        "ID": "12", "TITLE": "Karpaty Timber LLC", "COMPANY_TYPE": "CUSTOMER", "ASSIGNED_BY_ID": "5",
        "DATE_CREATE": "2024-01-02T10:00:00+02:00", "DATE_MODIFY": "", "LAST_ACTIVITY_TIME": None,
        "PHONE": [{"ID": "1", "VALUE_TYPE": "WORK", "VALUE": "+38 (067) 123-45-67", "TYPE_ID": "PHONE"},
                  {"ID": "2", "VALUE_TYPE": "MOBILE", "VALUE": "", "TYPE_ID": "PHONE"}],
        "UF_CRM_TEMP": "warm", "UF_CRM_TAGS": ["a", "", "b"], "UF_CRM_GUID": "",
        "UF_CRM_1C": ["9c3f-guid", ""],
    }
    c = m.company(row, tax_id="30000444", fields=["UF_CRM_TEMP", "UF_CRM_TAGS", "UF_CRM_GUID", "UF_CRM_NOT_SELECTED"],
                  guid_field="UF_CRM_1C")
    assert c.key == "bitrix24:company:12" and c.kind is ClientKind.COMPANY
    assert c.responsible_key == "bitrix24:user:5"
    assert c.phones == ("+38 (067) 123-45-67",)  # the empty value is dropped
    assert c.emails == ()  # EMAIL not selected at all
    assert c.segment == "CUSTOMER"
    assert c.tax_id == "30000444" and c.guid == "9c3f-guid"
    assert c.fields == {"UF_CRM_TEMP": "warm", "UF_CRM_TAGS": ["a", "b"], "UF_CRM_GUID": None}
    assert c.modified_at is None and c.created_at is not None


def test_segment_field_overrides_company_type():
    c = m.company({"ID": "1", "TITLE": "X", "COMPANY_TYPE": "CUSTOMER", "UF_SEG": "VIP"}, segment_field="UF_SEG")
    assert c.segment == "VIP" and c.fields["UF_SEG"] == "VIP"


def test_contact_birthday_company_link_and_name():
    row = {"ID": "7", "NAME": "Olena", "SECOND_NAME": "", "LAST_NAME": "Shevchenko", "TYPE_ID": "CLIENT",
           "COMPANY_ID": "12", "BIRTHDATE": "1985-03-01T00:00:00+02:00", "ASSIGNED_BY_ID": "3",
           "EMAIL": [{"VALUE": "olena@mail.example", "VALUE_TYPE": "WORK"}]}
    c = m.contact(row)
    assert c.kind is ClientKind.CONTACT and c.title == "Olena Shevchenko" and c.first_name == "Olena"
    assert c.company_key == "bitrix24:company:12" and c.birthday == date(1985, 3, 1)
    assert c.segment == "CLIENT" and c.emails == ("olena@mail.example",) and c.phones == ()


def test_contact_without_company_and_empty_birthdate():
    c = m.contact({"ID": "8", "NAME": "", "LAST_NAME": "", "COMPANY_ID": None, "BIRTHDATE": ""})
    assert c.company_key is None and c.birthday is None and c.title == "Contact 8" and c.first_name is None


def test_requisite_prefers_edrpou_and_keeps_digits_only():
    assert m.requisite_tax_id({"RQ_EDRPOU": " 3000 0444 ", "RQ_INN": "1234567890"}) == "30000444"
    assert m.requisite_tax_id({"RQ_EDRPOU": "", "RQ_INN": "7736050003"}) == "7736050003"
    assert m.requisite_tax_id({"RQ_INN": None}) is None


@pytest.mark.parametrize("semantic,outcome", [("P", Outcome.OPEN), ("S", Outcome.WON), ("F", Outcome.LOST),
                                              ("", Outcome.OPEN), (None, Outcome.OPEN)])
def test_deal_outcome_from_stage_semantics(semantic, outcome):
    d = m.deal({"ID": "3", "TITLE": "Order", "STAGE_ID": "C1:WON", "STAGE_SEMANTIC_ID": semantic,
                "OPPORTUNITY": "19999.99", "CURRENCY_ID": "UAH", "COMPANY_ID": "12", "CONTACT_ID": "0",
                "CLOSEDATE": "2024-09-09T02:00:00+02:00", "CLOSED": "N"})
    assert d.outcome is outcome
    assert d.amount == pytest.approx(19999.99) and d.client_keys == ("bitrix24:company:12",)
    assert (d.closed_at is not None) == (outcome is not Outcome.OPEN)


@pytest.mark.parametrize("type_id,provider,kind", [
    ("1", "CRM_MEETING", ActivityKind.MEETING), ("2", "VOXIMPLANT_CALL", ActivityKind.CALL),
    ("4", "CRM_EMAIL", ActivityKind.EMAIL), ("6", "CRM_TODO", ActivityKind.TASK),
    ("6", "CRM_SMS", ActivityKind.OTHER), ("3", "TASKS", ActivityKind.TASK), ("", None, ActivityKind.OTHER),
])
def test_activity_kind(type_id, provider, kind):
    assert m.activity_kind(type_id, provider) is kind


def test_completed_call_happened_at_end_and_owner_keys_from_bindings():
    a = m.activity({"ID": "20", "OWNER_ID": "15", "OWNER_TYPE_ID": "2", "TYPE_ID": "2", "PROVIDER_ID": "VOXIMPLANT_CALL",
                    "SUBJECT": "Call", "COMPLETED": "Y", "START_TIME": "2024-05-01T10:00:00+03:00",
                    "END_TIME": "2024-05-01T10:05:00+03:00", "DEADLINE": "2024-05-01T10:00:00+03:00",
                    "LAST_UPDATED": "2024-05-02T09:00:00+03:00", "RESPONSIBLE_ID": "505", "DIRECTION": "1",
                    "BINDINGS": [{"OWNER_TYPE_ID": "2", "OWNER_ID": "15"}, {"OWNER_TYPE_ID": "4", "OWNER_ID": "12"},
                                 {"OWNER_TYPE_ID": "1", "OWNER_ID": "99"}]})
    assert a.kind is ActivityKind.CALL and a.completed and a.direction == "in" and a.duration_s == 300
    assert a.happened_at == datetime(2024, 5, 1, 10, 5, tzinfo=timezone(timedelta(hours=3)))
    assert a.owner_keys == ("bitrix24:deal:15", "bitrix24:company:12")  # lead dropped, no duplicate


def test_completed_activity_without_end_uses_last_updated_and_open_one_has_not_happened():
    done = m.activity({"ID": "21", "OWNER_ID": "12", "OWNER_TYPE_ID": "4", "TYPE_ID": "4", "COMPLETED": "Y",
                       "END_TIME": "", "LAST_UPDATED": "2024-05-02T09:00:00+03:00"})
    assert done.happened_at == datetime(2024, 5, 2, 9, 0, tzinfo=timezone(timedelta(hours=3)))
    todo = m.activity({"ID": "22", "OWNER_ID": "12", "OWNER_TYPE_ID": "4", "TYPE_ID": "6", "PROVIDER_ID": "CRM_TODO",
                       "COMPLETED": "N", "DEADLINE": "2024-06-01T10:00:00+03:00"})
    assert todo.happened_at is None and todo.deadline is not None and todo.kind is ActivityKind.TASK


def test_invoice_paid_from_status_semantics_and_due_date_from_closedate():
    sem = m.stage_semantics([{"STATUS_ID": "DT31_1:N", "SEMANTICS": None}, {"STATUS_ID": "DT31_1:P", "SEMANTICS": "S"},
                             {"STATUS_ID": "DT31_1:D", "SEMANTICS": "F"}])
    paid = m.invoice({"id": 17, "title": "Invoice #17", "stageId": "DT31_1:P", "categoryId": 1, "opportunity": 1250.5,
                      "begindate": "2024-05-01T03:00:00+03:00", "closedate": "2024-05-15T03:00:00+03:00",
                      "companyId": 12, "contactId": 0, "assignedById": 6, "movedTime": "2024-05-10T12:00:00+03:00",
                      "updatedTime": "2024-05-10T12:00:00+03:00", "parentId2": 0}, sem)
    assert paid.outcome is Outcome.WON and paid.paid_at is not None and paid.due_date == date(2024, 5, 15)
    assert paid.client_key == "bitrix24:company:12" and paid.deal_key is None and paid.amount == 1250.5
    open_ = m.invoice({"id": 18, "stageId": "DT31_1:N", "companyId": 0, "contactId": 7, "closedate": ""}, sem)
    assert open_.outcome is Outcome.OPEN and open_.client_key == "bitrix24:contact:7" and open_.due_date is None
    assert m.invoice({"id": 19, "stageId": "DT31_1:D"}, sem).outcome is Outcome.LOST


def test_invoice_outcome_without_dictionary_falls_back_to_default_stage_codes():
    assert m.invoice_outcome("DT31_5:P", {}) is Outcome.WON
    assert m.invoice_outcome("DT31_5:D", {}) is Outcome.LOST
    assert m.invoice_outcome("DT31_5:S", {}) is Outcome.OPEN


def test_task_bindings_status_and_camel_case_fields():
    t = m.task({"id": "3711", "title": "Call back", "description": "see cn-abc", "responsibleId": "15",
                "deadline": "2024-05-01T10:00:00+03:00", "status": "5", "createdDate": "2024-04-01T10:00:00+03:00",
                "closedDate": "2024-04-02T10:00:00+03:00", "changedDate": "", "ufCrmTask": ["CO_12", "C_5", "D_7", "L_4", "T80_6"]})
    assert t.owner_keys == ("bitrix24:company:12", "bitrix24:contact:5", "bitrix24:deal:7")
    assert t.completed and t.responsible_key == "bitrix24:user:15" and t.changed_at is None
    assert not m.task({"id": "1", "status": "3", "ufCrmTask": False}).completed
    assert m.task_bindings({"ufCrmTask": False}) == ()


def test_comment_is_a_completed_contact_with_the_company():
    a = m.comment({"ID": "999", "ENTITY_ID": "2", "ENTITY_TYPE": "company", "CREATED": "2020-03-02T12:00:00+03:00",
                   "COMMENT": "Agreed the new order\nin Telegram", "AUTHOR_ID": "1", "FILES": {}})
    assert a.key == "bitrix24:comment:999" and a.kind is ActivityKind.COMMENT and a.completed
    assert a.owner_keys == ("bitrix24:company:2",) and a.subject == "Agreed the new order"


def test_manager_inactive_and_departments():
    mg = m.manager({"ID": "4", "ACTIVE": False, "NAME": "Petro", "LAST_NAME": "Bondarenko", "EMAIL": "p@x",
                    "UF_DEPARTMENT": [2], "UF_PHONE_INNER": "904"}, {"2": "Sales"})
    assert not mg.active and mg.departments == ("Sales",) and mg.extension == "904" and mg.name == "Petro Bondarenko"
    assert m.manager({"ID": "5", "ACTIVE": "Y", "UF_DEPARTMENT": 3}).departments == ("3",)


def test_binding_of_and_entity_parts():
    assert m.binding_of("bitrix24:company:12") == "CO_12"
    assert m.binding_of("bitrix24:contact:5") == "C_5"
    assert m.binding_of("bitrix24:invoice:17") == "SI_17"  # tasks may be bound to a smart invoice
    assert m.binding_keys(["SI_17", "CO_12"]) == ("bitrix24:company:12",)  # but owners are clients/deals
    for bad in ("onec:counterparty:abc", "bitrix24:user:5", "bitrix24:company:", "bitrix24"):
        with pytest.raises(ValueError):
            m.entity_parts(bad)


# ---------------------------------------------------------------- the client's pure parts


@pytest.mark.parametrize("status,body,cls", [
    (503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}, RateLimited),
    (429, {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked"}, RateLimited),
    (500, {"error": "INTERNAL_SERVER_ERROR", "error_description": "boom"}, TransientError),
    (502, None, TransientError),
    (401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}, AuthError),
    (403, {"error": "insufficient_scope", "error_description": ""}, AuthError),
    (400, {"error": "invalid_grant", "error_description": ""}, AuthError),
    (400, {"error": "", "error_description": "Not found"}, NotFound),
    (400, {"error": "NOT_FOUND", "error_description": "Element not found"}, NotFound),
    (400, {"error": "", "error_description": "Parameter 'filter' must be array."}, Rejected),
    (403, {"error": "ACCESS_DENIED", "error_description": "Access denied"}, Rejected),
    (404, {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}, PermanentError),
])
def test_classify(status, body, cls):
    err = classify(status, body, what="crm.company.update id=12")
    assert type(err) is cls


def test_classify_429_waits_until_operating_reset_and_names_the_object():
    err = classify(429, {"error": "OPERATION_TIME_LIMIT"}, what="crm.deal.list", reset_at=1000.0, now=940.0)
    assert isinstance(err, RateLimited) and err.retry_after == pytest.approx(60.0)
    nf = classify(400, {"error": "", "error_description": "Not found"}, what="crm.company.update id=12")
    assert str(nf).startswith("bitrix24 crm.company.update id=12: Not found")


def test_expired_token_is_not_an_auth_error_but_a_refresh_signal():
    from bitrix.client import TokenExpired

    assert isinstance(classify(401, {"error": "expired_token"}, what="x"), TokenExpired)


def test_describe_and_command_encoding():
    assert describe("crm.company.update", {"id": 12, "fields": {}}) == "crm.company.update id=12"
    assert describe("crm.timeline.comment.add", {"fields": {"ENTITY_ID": 3, "ENTITY_TYPE": "deal"}}) == \
        "crm.timeline.comment.add deal=3"
    cmd = command("crm.deal.list", {"filter": {">=DATE_MODIFY": "2024-05-01T10:00:00+03:00", "@ID": [1, 2]},
                                    "start": -1})
    assert cmd.startswith("crm.deal.list?")
    assert "filter[%3E%3DDATE_MODIFY]=2024-05-01T10%3A00%3A00%2B03%3A00" in cmd  # "+" must not become a space
    assert "filter[@ID][1]=2" in cmd and cmd.endswith("start=-1")
