"""Render a :class:`connector.sandbox.SyntheticCompany` into the portal's tables.

Only what lives in the CRM is rendered: companies with ``in_bitrix`` and everything hanging off
them. Phones are spelled the many ways people type them (``spell_phone`` styles), timestamps are
shown in Kyiv time (+02:00 winter, +03:00 summer) like a real Ukrainian portal, the 1C GUID sits
in ``UF_CRM_1C_GUID`` only for the ``guid_in_crm`` companies, which have no requisite (tax id).
Built with plain dicts and one bulk load per table, so 10k companies / 100k activities seed in
a couple of seconds. ``compact=True`` (benchmark portals with millions of rows) stores the rows
as :class:`~bitrix.emulator.tables.SlimRow`\\ s, which read and write like the same dicts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from bitrix.emulator.schema import COMPANY_TYPES, DEAL_STAGES, INVOICE_STAGES, PROVIDERS, SEMANTIC_WORD
from bitrix.emulator.tables import compactor
from connector.sandbox import SyntheticCompany, spell_phone

if TYPE_CHECKING:
    from bitrix.emulator.portal import Portal

OWNER_TYPE = {"company": 4, "contact": 3, "deal": 2}

# Fields a seeded row of each big table holds for itself in a compact portal; the rest are the
# same on every seeded row and stored once (a row that differs keeps its own value anyway).
VARYING = {
    "company": ("ID", "COMPANY_TYPE", "TITLE", "HAS_PHONE", "HAS_EMAIL", "ASSIGNED_BY_ID", "MODIFY_BY_ID",
                "DATE_CREATE", "DATE_MODIFY", "LAST_ACTIVITY_BY", "LAST_ACTIVITY_TIME", "PHONE", "EMAIL",
                "UF_CRM_TEMPERATURE", "UF_CRM_1C_GUID"),
    "requisite": ("ID", "ENTITY_ID", "DATE_CREATE", "DATE_MODIFY", "RQ_COMPANY_NAME", "RQ_COMPANY_FULL_NAME", "RQ_INN",
                  "RQ_EDRPOU"),
    "contact": ("ID", "NAME", "LAST_NAME", "BIRTHDATE", "HAS_PHONE", "HAS_EMAIL", "ASSIGNED_BY_ID", "MODIFY_BY_ID",
                "DATE_CREATE", "DATE_MODIFY", "COMPANY_ID", "LAST_ACTIVITY_TIME", "LAST_ACTIVITY_BY", "PHONE", "EMAIL"),
    "deal": ("ID", "TITLE", "STAGE_ID", "OPPORTUNITY", "COMPANY_ID", "CONTACT_ID", "BEGINDATE", "CLOSEDATE",
             "ASSIGNED_BY_ID", "CREATED_BY_ID", "MODIFY_BY_ID", "DATE_CREATE", "DATE_MODIFY", "CLOSED",
             "STAGE_SEMANTIC_ID", "IS_NEW", "MOVED_BY_ID", "MOVED_TIME", "LAST_ACTIVITY_TIME", "LAST_ACTIVITY_BY"),
    "activity": ("ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "PROVIDER_ID", "PROVIDER_TYPE_ID", "SUBJECT", "CREATED",
                 "LAST_UPDATED", "START_TIME", "END_TIME", "DEADLINE", "COMPLETED", "STATUS", "RESPONSIBLE_ID",
                 "DIRECTION", "AUTHOR_ID", "EDITOR_ID", "BINDINGS"),
    "invoice": ("id", "title", "createdBy", "updatedBy", "movedBy", "createdTime", "updatedTime", "movedTime", "stageId",
                "previousStageId", "begindate", "closedate", "companyId", "opportunity", "assignedById",
                "lastActivityBy", "lastActivityTime", "accountNumber"),
    "task": ("ID", "TITLE", "DESCRIPTION", "CREATED_BY", "CREATED_DATE", "RESPONSIBLE_ID", "CHANGED_BY", "CHANGED_DATE",
             "STATUS_CHANGED_BY", "CLOSED_BY", "CLOSED_DATE", "ACTIVITY_DATE", "DEADLINE", "GUID", "STATUS",
             "REAL_STATUS", "STATUS_CHANGED_DATE", "UF_CRM_TASK"),
}


def _compacted(entity: str, rows: list) -> list:
    if not rows:
        return rows
    make = compactor(VARYING[entity], rows[0])
    return [make(r) for r in rows]


def seed(portal: "Portal", co: SyntheticCompany, *, compact: bool = False) -> None:
    """Fill ``portal``'s tables from ``co`` (replaces whatever was there); ``compact`` stores
    the big tables' rows as slim rows (same reads and writes, a fraction of the memory)."""
    t = portal.tables
    fm = portal.next_fm_id
    anchor = co.anchor

    def multi(kind: str, values: list[str], first_type: str, other_type: str) -> list[dict]:
        out = []
        for n, v in enumerate(values):
            out.append({"ID": fm(), "VALUE_TYPE": first_type if n == 0 else other_type, "VALUE": v, "TYPE_ID": kind})
        return out

    # ---- users & departments
    users = []
    for m in co.managers:
        users.append({
            "ID": m.id, "XML_ID": m.guid, "ACTIVE": m.active, "NAME": m.name, "LAST_NAME": m.last_name,
            "SECOND_NAME": "", "TITLE": "", "EMAIL": m.email,
            "LAST_LOGIN": anchor - timedelta(hours=m.id * 3) if m.active else anchor - timedelta(days=120),
            "DATE_REGISTER": anchor - timedelta(days=900 - m.id), "TIME_ZONE": "", "IS_ONLINE": "N",
            "TIME_ZONE_OFFSET": "0", "PERSONAL_GENDER": "", "PERSONAL_PROFESSION": "", "PERSONAL_WWW": "",
            "PERSONAL_BIRTHDAY": None, "PERSONAL_PHOTO": "", "PERSONAL_MOBILE": "", "PERSONAL_CITY": "Kyiv",
            "WORK_PHONE": "", "WORK_POSITION": "Head of sales" if m.id == co.supervisor_id else "Sales manager",
            "UF_EMPLOYMENT_DATE": "", "UF_DEPARTMENT": [m.department], "UF_PHONE_INNER": m.extension,
            "USER_TYPE": "employee",
        })
    t["user"].bulk_load(users)
    portal.admins = {co.supervisor_id}
    t["department"].bulk_load([
        {"ID": 1, "NAME": "Shop", "SORT": 500, "PARENT": None, "UF_HEAD": co.supervisor_id},
        {"ID": 2, "NAME": "Sales", "SORT": 500, "PARENT": 1, "UF_HEAD": co.supervisor_id},
    ])

    # ---- dictionaries
    statuses = []
    sid = 100
    for status_id, name, sort, color, sem in DEAL_STAGES:
        sid += 1
        statuses.append({"ID": sid, "ENTITY_ID": "DEAL_STAGE", "STATUS_ID": status_id, "NAME": name,
                         "NAME_INIT": name if status_id in ("NEW", "WON", "LOSE") else "", "SORT": sort,
                         "SYSTEM": "Y" if status_id in ("NEW", "WON", "LOSE") else "N", "CATEGORY_ID": None,
                         "COLOR": color, "SEMANTICS": sem, "EXTRA": {"SEMANTICS": SEMANTIC_WORD[sem], "COLOR": color}})
    for status_id, name, sort, color, sem in INVOICE_STAGES:
        sid += 1
        statuses.append({"ID": sid, "ENTITY_ID": "SMART_INVOICE_STAGE_1", "STATUS_ID": status_id, "NAME": name,
                         "NAME_INIT": name, "SORT": sort, "SYSTEM": "Y" if sem or status_id.endswith(":N") else "N",
                         "CATEGORY_ID": 1, "COLOR": color, "SEMANTICS": sem, "EXTRA": None})
    for status_id, name, sort in COMPANY_TYPES:
        sid += 1
        statuses.append({"ID": sid, "ENTITY_ID": "COMPANY_TYPE", "STATUS_ID": status_id, "NAME": name,
                         "NAME_INIT": name, "SORT": sort, "SYSTEM": "N", "CATEGORY_ID": None, "COLOR": None,
                         "SEMANTICS": None, "EXTRA": None})
    t["status"].bulk_load(statuses)

    # ---- companies, requisites
    companies, requisites = [], []
    in_crm: set[int] = set()
    rq_id = 0
    for c in co.companies:
        if not c.in_bitrix:
            continue
        in_crm.add(c.id)
        phones = [spell_phone(p, c.id + n) for n, p in enumerate(c.phones)]
        companies.append({
            "ID": c.id, "COMPANY_TYPE": c.segment, "TITLE": c.title, "LOGO": None, "LEAD_ID": None,
            "HAS_PHONE": "Y" if phones else "N", "HAS_EMAIL": "Y" if c.emails else "N", "HAS_IMOL": "N",
            "ASSIGNED_BY_ID": c.responsible, "CREATED_BY_ID": co.supervisor_id, "MODIFY_BY_ID": c.responsible,
            "BANKING_DETAILS": None, "INDUSTRY": "OTHER", "REVENUE": "0", "CURRENCY_ID": "UAH", "EMPLOYEES": "EMPLOYEES_1",
            "COMMENTS": "", "DATE_CREATE": c.created, "DATE_MODIFY": c.modified, "OPENED": "Y", "IS_MY_COMPANY": "N",
            "LAST_ACTIVITY_BY": c.responsible, "LAST_ACTIVITY_TIME": c.created,
            "PHONE": multi("PHONE", phones, "WORK", "MOBILE"), "EMAIL": multi("EMAIL", c.emails, "WORK", "WORK"),
            "UF_CRM_TEMPERATURE": c.temperature or "", "UF_CRM_1C_GUID": c.guid if c.guid_in_crm else None,
        })
        if not c.guid_in_crm:
            rq_id += 1
            requisites.append({
                "ID": rq_id, "ENTITY_TYPE_ID": 4, "ENTITY_ID": c.id, "PRESET_ID": 1, "DATE_CREATE": c.created,
                "DATE_MODIFY": c.created, "CREATED_BY_ID": co.supervisor_id, "MODIFY_BY_ID": co.supervisor_id,
                "NAME": "Organization", "ACTIVE": "Y", "ADDRESS_ONLY": "N", "SORT": 500,
                "RQ_COMPANY_NAME": c.title, "RQ_COMPANY_FULL_NAME": c.title, "RQ_INN": c.tax_id,
                "RQ_EDRPOU": c.tax_id, "RQ_VAT_PAYER": "N", "RQ_RESIDENCE_COUNTRY": "UA",
            })
    by_company = {row["ID"]: row for row in companies}

    # ---- contacts
    contacts = []
    for ct in co.contacts:
        if ct.company_id is not None and ct.company_id not in in_crm:
            continue
        phones = [spell_phone(p, ct.id + 3 + n) for n, p in enumerate(ct.phones)]
        contacts.append({
            "ID": ct.id, "HONORIFIC": None, "NAME": ct.name, "SECOND_NAME": None, "LAST_NAME": ct.last_name,
            "PHOTO": None, "BIRTHDATE": ct.birthday, "TYPE_ID": "CLIENT", "SOURCE_ID": "CALL", "POST": None,
            "COMMENTS": None, "OPENED": "Y", "EXPORT": "Y", "HAS_PHONE": "Y" if phones else "N",
            "HAS_EMAIL": "Y" if ct.emails else "N", "HAS_IMOL": "N", "ASSIGNED_BY_ID": ct.responsible,
            "CREATED_BY_ID": co.supervisor_id, "MODIFY_BY_ID": ct.responsible, "DATE_CREATE": ct.created,
            "DATE_MODIFY": ct.modified, "COMPANY_ID": ct.company_id, "LAST_ACTIVITY_TIME": ct.created,
            "LAST_ACTIVITY_BY": ct.responsible,
            "PHONE": multi("PHONE", phones, "MOBILE", "WORK"), "EMAIL": multi("EMAIL", ct.emails, "WORK", "HOME"),
        })
    by_contact = {row["ID"]: row for row in contacts}

    # ---- deals
    deals = []
    for d in co.deals:
        if d.company_id is not None and d.company_id not in in_crm:
            continue
        closed = d.semantic in ("S", "F")
        moved = d.closed or d.created
        deals.append({
            "ID": d.id, "TITLE": d.title, "TYPE_ID": "SALE", "STAGE_ID": d.stage, "PROBABILITY": None,
            "CURRENCY_ID": "UAH", "OPPORTUNITY": d.amount, "IS_MANUAL_OPPORTUNITY": "N", "TAX_VALUE": 0.0,
            "LEAD_ID": None, "COMPANY_ID": d.company_id, "CONTACT_ID": d.contact_id, "QUOTE_ID": None,
            "BEGINDATE": d.created.date(), "CLOSEDATE": (d.closed or d.created + timedelta(days=14)).date(),
            "ASSIGNED_BY_ID": d.responsible, "CREATED_BY_ID": d.responsible, "MODIFY_BY_ID": d.responsible,
            "DATE_CREATE": d.created, "DATE_MODIFY": d.modified, "OPENED": "Y", "CLOSED": "Y" if closed else "N",
            "COMMENTS": None, "ADDITIONAL_INFO": None, "LOCATION_ID": None, "CATEGORY_ID": 0,
            "STAGE_SEMANTIC_ID": d.semantic, "IS_NEW": "N" if d.stage != "NEW" else "Y", "IS_RECURRING": "N",
            "IS_RETURN_CUSTOMER": "N", "IS_REPEATED_APPROACH": "N", "SOURCE_ID": "CALL", "SOURCE_DESCRIPTION": None,
            "MOVED_BY_ID": d.responsible, "MOVED_TIME": moved, "LAST_ACTIVITY_TIME": d.created,
            "LAST_ACTIVITY_BY": d.responsible, "UF_CRM_RECURRING": d.recurring or "", "UF_CRM_RECURRING_START": d.recurring_start,
        })
    by_deal = {row["ID"]: row for row in deals}

    # ---- deal product rows (crm.item.productrow.*): free-text rows, no catalog product behind them
    rows = []
    for d in co.deals:
        if d.id not in by_deal:
            continue
        for n, (name, qty, price) in enumerate(d.products, start=1):
            rows.append({"id": len(rows) + 1, "ownerId": d.id, "ownerType": "D", "productId": 0, "productName": name, "price": price,
                         "priceAccount": price, "priceExclusive": price, "priceNetto": price, "priceBrutto": price, "quantity": qty,
                         "discountTypeId": 2, "discountRate": 0.0, "discountSum": 0.0, "taxRate": None, "taxIncluded": "Y",
                         "taxName": "No VAT", "customized": "Y", "measureCode": 796, "measureName": "pcs", "sort": n * 10,
                         "xmlId": "", "type": 4, "storeId": None})
    t["productrow"].bulk_load(rows)
    owners = {4: by_company, 3: by_contact, 2: by_deal}

    def bump(owner_type: int, owner_id: int, when, who: int) -> None:
        row = owners[owner_type].get(owner_id)
        if row is not None and (row.get("LAST_ACTIVITY_TIME") is None or when > row["LAST_ACTIVITY_TIME"]):
            row["LAST_ACTIVITY_TIME"] = when
            row["LAST_ACTIVITY_BY"] = who

    # ---- activities
    activities: list = []
    make_activity = None
    bindings: dict[tuple[int, int], list] = {}
    for a in co.activities:
        ot = OWNER_TYPE[a.owner_type]
        if a.owner_id not in owners[ot]:
            continue
        provider, ptype = PROVIDERS.get(a.type_id, ("CRM_TODO", "TODO"))
        activities.append({
            "ID": a.id, "OWNER_ID": a.owner_id, "OWNER_TYPE_ID": ot, "TYPE_ID": a.type_id, "PROVIDER_ID": provider,
            "PROVIDER_TYPE_ID": ptype, "PROVIDER_GROUP_ID": None, "ASSOCIATED_ENTITY_ID": 0, "SUBJECT": a.subject,
            "CREATED": a.created, "LAST_UPDATED": a.modified, "START_TIME": a.start, "END_TIME": a.end,
            "DEADLINE": a.deadline, "COMPLETED": "Y" if a.completed else "N", "STATUS": 2 if a.completed else 1,
            "RESPONSIBLE_ID": a.responsible, "PRIORITY": 2, "NOTIFY_TYPE": 0, "NOTIFY_VALUE": 0, "DESCRIPTION": "",
            "DESCRIPTION_TYPE": 1, "DIRECTION": a.direction, "LOCATION": "", "SETTINGS": {}, "ORIGINATOR_ID": None,
            "ORIGIN_ID": None, "AUTHOR_ID": a.responsible, "EDITOR_ID": a.responsible, "PROVIDER_PARAMS": {},
            "PROVIDER_DATA": None, "RESULT_MARK": 0, "RESULT_VALUE": None, "RESULT_SUM": None,
            "RESULT_CURRENCY_ID": None, "RESULT_STATUS": 0, "RESULT_STREAM": 0, "RESULT_SOURCE_ID": None,
            "AUTOCOMPLETE_RULE": 0, "BINDINGS": [(ot, a.owner_id)],
        })
        if compact:  # millions of rows: never hold them all as dicts; one BINDINGS list per owner
            make_activity = make_activity or compactor(VARYING["activity"], activities[-1])
            activities[-1]["BINDINGS"] = bindings.setdefault((ot, a.owner_id), activities[-1]["BINDINGS"])
            activities[-1] = make_activity(activities[-1])
        if a.completed or a.start <= anchor:
            bump(ot, a.owner_id, a.created, a.responsible)

    # ---- comments
    comments = []
    for cm in co.comments:
        ot = OWNER_TYPE[cm.entity_type]
        if cm.entity_id not in owners[ot]:
            continue
        comments.append({"ID": cm.id, "ENTITY_ID": cm.entity_id, "ENTITY_TYPE": cm.entity_type, "CREATED": cm.created,
                         "COMMENT": cm.text, "AUTHOR_ID": cm.author, "FILES": {}})
        bump(ot, cm.entity_id, cm.created, cm.author)

    # ---- smart invoices (entityTypeId 31, funnel 1)
    invoices = []
    for inv in co.invoices:
        if inv.company_id not in in_crm:
            continue
        invoices.append({
            "id": inv.id, "xmlId": None, "title": inv.title, "createdBy": inv.responsible, "updatedBy": inv.responsible,
            "movedBy": inv.responsible, "createdTime": inv.created, "updatedTime": inv.modified, "movedTime": inv.modified,
            "categoryId": 1, "opened": "Y", "stageId": inv.stage, "previousStageId": "DT31_1:N" if inv.stage != "DT31_1:N" else None,
            "begindate": inv.begindate.date(), "closedate": inv.closedate.date(), "companyId": inv.company_id,
            "contactId": 0, "opportunity": inv.amount, "isManualOpportunity": "N", "taxValue": 0.0, "currencyId": "UAH",
            "mycompanyId": 0, "sourceId": None, "sourceDescription": None, "assignedById": inv.responsible,
            "lastActivityBy": inv.responsible, "lastActivityTime": inv.modified, "parentId2": inv.deal_id or 0,
            "accountNumber": inv.account_number or f"INV-{inv.id:05d}", "comments": "", "observers": [], "contactIds": [],
        })

    # ---- tasks
    tasks = []
    for tk in co.tasks:
        tasks.append({
            "ID": tk.id, "PARENT_ID": None, "TITLE": tk.title, "DESCRIPTION": tk.description, "MARK": None,
            "PRIORITY": 1, "MULTITASK": "N", "NOT_VIEWED": "N", "REPLICATE": "N", "STAGE_ID": 0,
            "CREATED_BY": tk.created_by, "CREATED_DATE": tk.created, "RESPONSIBLE_ID": tk.responsible,
            "CHANGED_BY": tk.created_by, "CHANGED_DATE": tk.changed, "STATUS_CHANGED_BY": tk.responsible,
            "CLOSED_BY": tk.responsible if tk.closed else None, "CLOSED_DATE": tk.closed, "ACTIVITY_DATE": tk.changed,
            "DATE_START": None, "DEADLINE": tk.deadline, "GUID": portal.task_guid(tk.id), "ALLOW_CHANGE_DEADLINE": "Y",
            "ALLOW_TIME_TRACKING": "N", "TASK_CONTROL": "N", "ADD_IN_REPORT": "N", "TIME_ESTIMATE": 0,
            "MATCH_WORK_TIME": "N", "SITE_ID": "s1", "SUBORDINATE": "N", "OUTLOOK_VERSION": 1, "IS_MUTED": "N",
            "IS_PINNED": "N", "IS_PINNED_IN_GROUP": "N", "DESCRIPTION_IN_BBCODE": "Y", "STATUS": tk.status,
            "REAL_STATUS": tk.status, "STATUS_CHANGED_DATE": tk.closed or tk.created, "DURATION_TYPE": "days",
            "FAVORITE": "N", "GROUP_ID": 0, "AUDITORS": [], "ACCOMPLICES": [], "UF_CRM_TASK": list(tk.bindings),
            "UF_TASK_WEBDAV_FILES": [], "UF_MAIL_MESSAGE": None,
        })

    if compact:
        companies, requisites, contacts, deals = (_compacted(e, rows) for e, rows in (
            ("company", companies), ("requisite", requisites), ("contact", contacts), ("deal", deals)))
        invoices, tasks = _compacted("invoice", invoices), _compacted("task", tasks)
    t["company"].bulk_load(companies)
    t["requisite"].bulk_load(requisites)
    t["contact"].bulk_load(contacts)
    t["deal"].bulk_load(deals)
    t["activity"].bulk_load(activities)
    t["comment"].bulk_load(comments)
    t["invoice"].bulk_load(invoices)
    t["task"].bulk_load(tasks)
