"""Field lists of the emulated portal, in the order a real portal returns them.

Names and types follow the official docs (``crm-company-get.md``, ``crm-deal-list.md``,
``crm-activity-list.md``, ``object-fields.md#invoice``, ``tasks-task-add.md``, ``user-get.md``).
Multifields (``PHONE``/``EMAIL``/``WEB``/``IM``) and ``UF_*`` are classified by type and prefix,
which drives the ``*`` / ``UF_*`` select semantics of legacy list methods.
"""

from __future__ import annotations

import re

from bitrix.emulator.tables import ANY, BOOL, DATE, DT, FLOAT, INT, LIST_INT, LIST_STR, MONEY, MULTI, STR, YN

_ADDR = ["ADDRESS", "ADDRESS_2", "ADDRESS_CITY", "ADDRESS_POSTAL_CODE", "ADDRESS_REGION", "ADDRESS_PROVINCE",
         "ADDRESS_COUNTRY", "ADDRESS_COUNTRY_CODE", "ADDRESS_LOC_ADDR_ID"]
_UTM = ["UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM"]
_MULTI = {"PHONE": MULTI, "EMAIL": MULTI, "WEB": MULTI, "IM": MULTI}


def _s(names: list[str]) -> dict[str, str]:
    return {n: STR for n in names}


COMPANY = {
    "ID": INT, "COMPANY_TYPE": STR, "TITLE": STR, "LOGO": ANY, "LEAD_ID": INT, "HAS_PHONE": YN, "HAS_EMAIL": YN,
    "HAS_IMOL": YN, "ASSIGNED_BY_ID": INT, "CREATED_BY_ID": INT, "MODIFY_BY_ID": INT, "BANKING_DETAILS": STR,
    "INDUSTRY": STR, "REVENUE": STR, "CURRENCY_ID": STR, "EMPLOYEES": STR, "COMMENTS": STR, "DATE_CREATE": DT,
    "DATE_MODIFY": DT, "OPENED": YN, "IS_MY_COMPANY": YN, "ORIGINATOR_ID": STR, "ORIGIN_ID": STR,
    "ORIGIN_VERSION": STR, **_s(_ADDR), "ADDRESS_LEGAL": STR, **_s(["REG_" + a for a in _ADDR]), **_s(_UTM),
    "LAST_ACTIVITY_BY": INT, "LAST_ACTIVITY_TIME": DT, "LAST_COMMUNICATION_TIME": DT, **_MULTI,
    "UF_CRM_TEMPERATURE": STR, "UF_CRM_1C_GUID": STR, "UF_CRM_RFM_SCORE": STR, "UF_CRM_RFM_SEGMENT": STR,
}

CONTACT = {
    "ID": INT, "HONORIFIC": STR, "NAME": STR, "SECOND_NAME": STR, "LAST_NAME": STR, "PHOTO": ANY, "BIRTHDATE": DATE,
    "TYPE_ID": STR, "SOURCE_ID": STR, "SOURCE_DESCRIPTION": STR, "POST": STR, "COMMENTS": STR, "OPENED": YN,
    "EXPORT": YN, "HAS_PHONE": YN, "HAS_EMAIL": YN, "HAS_IMOL": YN, "ASSIGNED_BY_ID": INT, "CREATED_BY_ID": INT,
    "MODIFY_BY_ID": INT, "DATE_CREATE": DT, "DATE_MODIFY": DT, "COMPANY_ID": INT, "LEAD_ID": INT,
    "ORIGINATOR_ID": STR, "ORIGIN_ID": STR, "ORIGIN_VERSION": STR, "FACE_ID": INT, **_s(_ADDR), **_s(_UTM),
    "LAST_ACTIVITY_TIME": DT, "LAST_ACTIVITY_BY": INT, "LAST_COMMUNICATION_TIME": DT, **_MULTI,
    "UF_CRM_RFM_SCORE": STR, "UF_CRM_RFM_SEGMENT": STR,
}

DEAL = {
    "ID": INT, "TITLE": STR, "TYPE_ID": STR, "STAGE_ID": STR, "PROBABILITY": INT, "CURRENCY_ID": STR,
    "OPPORTUNITY": MONEY, "IS_MANUAL_OPPORTUNITY": YN, "TAX_VALUE": MONEY, "LEAD_ID": INT, "COMPANY_ID": INT,
    "CONTACT_ID": INT, "QUOTE_ID": INT, "BEGINDATE": DATE, "CLOSEDATE": DATE, "ASSIGNED_BY_ID": INT,
    "CREATED_BY_ID": INT, "MODIFY_BY_ID": INT, "DATE_CREATE": DT, "DATE_MODIFY": DT, "OPENED": YN, "CLOSED": YN,
    "COMMENTS": STR, "ADDITIONAL_INFO": STR, "LOCATION_ID": STR, "CATEGORY_ID": INT, "STAGE_SEMANTIC_ID": STR,
    "IS_NEW": YN, "IS_RECURRING": YN, "IS_RETURN_CUSTOMER": YN, "IS_REPEATED_APPROACH": YN, "SOURCE_ID": STR,
    "SOURCE_DESCRIPTION": STR, "ORIGINATOR_ID": STR, "ORIGIN_ID": STR, "MOVED_BY_ID": INT, "MOVED_TIME": DT,
    **_s(_UTM), "LAST_ACTIVITY_TIME": DT, "LAST_ACTIVITY_BY": INT, "LAST_COMMUNICATION_TIME": DT,
    "UF_CRM_RECURRING": STR, "UF_CRM_RECURRING_START": DATE,
}

ACTIVITY = {
    "ID": INT, "OWNER_ID": INT, "OWNER_TYPE_ID": INT, "TYPE_ID": INT, "PROVIDER_ID": STR, "PROVIDER_TYPE_ID": STR,
    "PROVIDER_GROUP_ID": STR, "ASSOCIATED_ENTITY_ID": INT, "SUBJECT": STR, "CREATED": DT, "LAST_UPDATED": DT,
    "START_TIME": DT, "END_TIME": DT, "DEADLINE": DT, "COMPLETED": YN, "STATUS": INT, "RESPONSIBLE_ID": INT,
    "PRIORITY": INT, "NOTIFY_TYPE": INT, "NOTIFY_VALUE": INT, "DESCRIPTION": STR, "DESCRIPTION_TYPE": INT,
    "DIRECTION": INT, "LOCATION": STR, "SETTINGS": ANY, "ORIGINATOR_ID": STR, "ORIGIN_ID": STR, "AUTHOR_ID": INT,
    "EDITOR_ID": INT, "PROVIDER_PARAMS": ANY, "PROVIDER_DATA": STR, "RESULT_MARK": INT, "RESULT_VALUE": STR,
    "RESULT_SUM": STR, "RESULT_CURRENCY_ID": STR, "RESULT_STATUS": INT, "RESULT_STREAM": INT,
    "RESULT_SOURCE_ID": STR, "AUTOCOMPLETE_RULE": INT,
    # returned only when named in select
    "COMMUNICATIONS": ANY, "FILES": ANY, "BINDINGS": ANY,
}
ACTIVITY_EXPLICIT = {"COMMUNICATIONS", "FILES", "BINDINGS"}

REQUISITE = {
    "ID": INT, "ENTITY_TYPE_ID": INT, "ENTITY_ID": INT, "PRESET_ID": INT, "DATE_CREATE": DT, "DATE_MODIFY": DT,
    "CREATED_BY_ID": INT, "MODIFY_BY_ID": INT, "NAME": STR, "CODE": STR, "XML_ID": STR, "ORIGINATOR_ID": STR,
    "ACTIVE": YN, "ADDRESS_ONLY": YN, "SORT": INT, "RQ_NAME": STR, "RQ_FIRST_NAME": STR, "RQ_LAST_NAME": STR,
    "RQ_SECOND_NAME": STR, "RQ_COMPANY_ID": STR, "RQ_COMPANY_NAME": STR, "RQ_COMPANY_FULL_NAME": STR,
    "RQ_COMPANY_REG_DATE": STR, "RQ_DIRECTOR": STR, "RQ_ACCOUNTANT": STR, "RQ_CONTACT": STR, "RQ_EMAIL": STR,
    "RQ_PHONE": STR, "RQ_FAX": STR, "RQ_INN": STR, "RQ_KPP": STR, "RQ_OGRN": STR, "RQ_OGRNIP": STR, "RQ_OKPO": STR,
    "RQ_OKTMO": STR, "RQ_OKVED": STR, "RQ_EDRPOU": STR, "RQ_DRFO": STR, "RQ_VAT_PAYER": YN, "RQ_VAT_ID": STR,
    "RQ_VAT_CERT_NUM": STR, "RQ_RESIDENCE_COUNTRY": STR,
}

USER = {
    "ID": INT, "XML_ID": STR, "ACTIVE": BOOL, "NAME": STR, "LAST_NAME": STR, "SECOND_NAME": STR, "TITLE": STR,
    "EMAIL": STR, "LAST_LOGIN": DT, "DATE_REGISTER": DT, "TIME_ZONE": STR, "IS_ONLINE": YN,
    "TIME_ZONE_OFFSET": STR, "PERSONAL_GENDER": STR, "PERSONAL_PROFESSION": STR, "PERSONAL_WWW": STR,
    "PERSONAL_BIRTHDAY": DATE, "PERSONAL_PHOTO": STR, "PERSONAL_MOBILE": STR, "PERSONAL_CITY": STR,
    "WORK_PHONE": STR, "WORK_POSITION": STR, "UF_EMPLOYMENT_DATE": STR, "UF_DEPARTMENT": LIST_INT,
    "UF_PHONE_INNER": STR, "USER_TYPE": STR,
}

DEPARTMENT = {"ID": INT, "NAME": STR, "SORT": INT, "PARENT": INT, "UF_HEAD": INT}

INVOICE = {
    "id": INT, "xmlId": STR, "title": STR, "createdBy": INT, "updatedBy": INT, "movedBy": INT, "createdTime": DT,
    "updatedTime": DT, "movedTime": DT, "categoryId": INT, "opened": YN, "stageId": STR, "previousStageId": STR,
    "begindate": DATE, "closedate": DATE, "companyId": INT, "contactId": INT, "opportunity": MONEY,
    "isManualOpportunity": YN, "taxValue": MONEY, "currencyId": STR, "mycompanyId": INT, "sourceId": STR,
    "sourceDescription": STR, "assignedById": INT, "lastActivityBy": INT, "lastActivityTime": DT, "parentId2": INT,
    "accountNumber": STR, "comments": STR, "observers": LIST_INT, "contactIds": LIST_INT,
}

TASK = {
    "ID": INT, "PARENT_ID": INT, "TITLE": STR, "DESCRIPTION": STR, "MARK": STR, "PRIORITY": INT, "MULTITASK": YN,
    "NOT_VIEWED": YN, "REPLICATE": YN, "STAGE_ID": INT, "CREATED_BY": INT, "CREATED_DATE": DT,
    "RESPONSIBLE_ID": INT, "CHANGED_BY": INT, "CHANGED_DATE": DT, "STATUS_CHANGED_BY": INT, "CLOSED_BY": INT,
    "CLOSED_DATE": DT, "ACTIVITY_DATE": DT, "DATE_START": DT, "DEADLINE": DT, "START_DATE_PLAN": DT,
    "END_DATE_PLAN": DT, "GUID": STR, "XML_ID": STR, "COMMENTS_COUNT": INT, "SERVICE_COMMENTS_COUNT": INT,
    "ALLOW_CHANGE_DEADLINE": YN, "ALLOW_TIME_TRACKING": YN, "TASK_CONTROL": YN, "ADD_IN_REPORT": YN,
    "FORKED_BY_TEMPLATE_ID": INT, "TIME_ESTIMATE": INT, "TIME_SPENT_IN_LOGS": INT, "MATCH_WORK_TIME": YN,
    "FORUM_TOPIC_ID": INT, "FORUM_ID": INT, "SITE_ID": STR, "SUBORDINATE": YN, "EXCHANGE_MODIFIED": STR,
    "EXCHANGE_ID": STR, "OUTLOOK_VERSION": INT, "VIEWED_DATE": DT, "SORTING": STR, "DURATION_FACT": INT,
    "IS_MUTED": YN, "IS_PINNED": YN, "IS_PINNED_IN_GROUP": YN, "FLOW_ID": INT, "DESCRIPTION_IN_BBCODE": YN,
    "STATUS": INT, "STATUS_CHANGED_DATE": DT, "DURATION_PLAN": INT, "DURATION_TYPE": STR, "FAVORITE": YN,
    "GROUP_ID": INT, "AUDITORS": LIST_INT, "ACCOMPLICES": LIST_INT, "REAL_STATUS": INT,
    "UF_CRM_TASK": LIST_STR, "UF_TASK_WEBDAV_FILES": LIST_STR, "UF_MAIL_MESSAGE": INT,
}
TASK_UF = ("UF_CRM_TASK", "UF_TASK_WEBDAV_FILES", "UF_MAIL_MESSAGE")

# crm_item_product_row (crm/data-types.md): what crm.item.productrow.* return, always every field
PRODUCTROW = {
    "id": INT, "ownerId": INT, "ownerType": STR, "productId": INT, "productName": STR, "price": FLOAT, "priceAccount": FLOAT,
    "priceExclusive": FLOAT, "priceNetto": FLOAT, "priceBrutto": FLOAT, "quantity": FLOAT, "discountTypeId": INT,
    "discountRate": FLOAT, "discountSum": FLOAT, "taxRate": FLOAT, "taxIncluded": YN, "taxName": STR, "customized": YN,
    "measureCode": INT, "measureName": STR, "sort": INT, "xmlId": STR, "type": INT, "storeId": INT,
}

COMMENT = {"ID": INT, "ENTITY_ID": INT, "ENTITY_TYPE": STR, "CREATED": DT, "COMMENT": STR, "AUTHOR_ID": INT,
           "FILES": ANY}

STATUS = {"ID": INT, "ENTITY_ID": STR, "STATUS_ID": STR, "NAME": STR, "NAME_INIT": STR, "SORT": INT, "SYSTEM": YN,
          "CATEGORY_ID": INT, "COLOR": STR, "SEMANTICS": STR, "EXTRA": ANY}

NOTIFY = {"ID": INT, "USER_ID": INT, "FROM_USER_ID": INT, "TYPE": STR, "MESSAGE": STR, "MESSAGE_OUT": STR,
          "TAG": STR, "SUB_TAG": STR, "DATE_CREATE": DT}
TRIGGER = {"ID": INT, "TARGET": STR, "ENTITY_TYPE_ID": INT, "ENTITY_ID": INT, "CODE": STR, "USER_ID": INT,
           "DATE_CREATE": DT}
WORKFLOW = {"ID": INT, "WORKFLOW_ID": STR, "TEMPLATE_ID": INT, "DOCUMENT_ID": ANY, "PARAMETERS": ANY,
            "USER_ID": INT, "STARTED": DT}

SCHEMAS: dict[str, dict[str, str]] = {
    "company": COMPANY, "contact": CONTACT, "deal": DEAL, "activity": ACTIVITY, "requisite": REQUISITE,
    "user": USER, "department": DEPARTMENT, "invoice": INVOICE, "task": TASK, "comment": COMMENT,
    "status": STATUS, "notify": NOTIFY, "trigger": TRIGGER, "workflow": WORKFLOW, "productrow": PRODUCTROW,
}
ID_FIELD = {"invoice": "id", "productrow": "id"}

# crm.<entity>.fields (crm/companies/crm-company-fields.md): wire types of the reference fields, and the
# labels a person sees for custom fields (whose `title` is their code).
FIELD_TYPES = {
    "ASSIGNED_BY_ID": "user", "CREATED_BY_ID": "user", "MODIFY_BY_ID": "user", "LAST_ACTIVITY_BY": "user",
    "MOVED_BY_ID": "user", "COMPANY_TYPE": "crm_status", "INDUSTRY": "crm_status", "EMPLOYEES": "crm_status",
    "TYPE_ID": "crm_status", "SOURCE_ID": "crm_status", "HONORIFIC": "crm_status", "STAGE_ID": "crm_status",
    "CURRENCY_ID": "crm_currency", "LEAD_ID": "crm_lead", "COMPANY_ID": "crm_company", "CONTACT_ID": "crm_contact",
    "CATEGORY_ID": "crm_category", "LOGO": "file", "PHOTO": "file", "REVENUE": "double",
}
UF_LABELS = {"UF_CRM_TEMPERATURE": "Temperature", "UF_CRM_1C_GUID": "1C counterparty GUID", "UF_CRM_RFM_SCORE": "RFM score",
             "UF_CRM_RFM_SEGMENT": "RFM segment", "UF_CRM_RECURRING": "Regular: period", "UF_CRM_RECURRING_START": "Regular: from"}
# which field a write stamps (created, modified)
STAMPS = {
    "company": ("DATE_CREATE", "DATE_MODIFY"), "contact": ("DATE_CREATE", "DATE_MODIFY"),
    "deal": ("DATE_CREATE", "DATE_MODIFY"), "activity": ("CREATED", "LAST_UPDATED"),
    "requisite": ("DATE_CREATE", "DATE_MODIFY"), "invoice": ("createdTime", "updatedTime"),
    "task": ("CREATED_DATE", "CHANGED_DATE"), "comment": ("CREATED", None), "notify": ("DATE_CREATE", None),
    "trigger": ("DATE_CREATE", None), "workflow": ("STARTED", None), "user": ("DATE_REGISTER", None),
    "department": (None, None), "status": (None, None), "productrow": (None, None),
}

ITEM_TABLE = {2: "deal", 3: "contact", 4: "company", 31: "invoice"}  # crm.item entityTypeId -> table

PROVIDERS = {  # TYPE_ID -> (PROVIDER_ID, PROVIDER_TYPE_ID)
    1: ("CRM_MEETING", "MEETING"), 2: ("VOXIMPLANT_CALL", "CALL"), 3: ("TASKS", "TASK"),
    4: ("CRM_EMAIL", "EMAIL"), 6: ("CRM_TODO", "TODO"),
}

# crm.item camelCase names of legacy fields that do not follow the plain snake->camel rule
_ITEM_SPECIAL = {
    "DATE_CREATE": "createdTime", "DATE_MODIFY": "updatedTime", "CREATED_BY_ID": "createdBy",
    "MODIFY_BY_ID": "updatedBy", "MOVED_BY_ID": "movedBy", "COMPANY_TYPE": "typeId", "LAST_ACTIVITY_BY": "lastActivityBy",
    "BEGINDATE": "begindate", "CLOSEDATE": "closedate", "BIRTHDATE": "birthdate",
}


def snake_to_camel(name: str) -> str:
    parts = name.lower().split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def uf_camel(name: str) -> str:
    """``UF_CRM_2_1639669411830`` -> ``ufCrm2_1639669411830``; ``UF_CRM_TEMPERATURE`` -> ``ufCrmTemperature``."""
    m = re.match(r"^UF_CRM_(\d+)_(.+)$", name)
    if m:
        return f"ufCrm{m.group(1)}_{m.group(2)}"
    return snake_to_camel(name)


def item_name(legacy: str) -> str:
    if legacy in _ITEM_SPECIAL:
        return _ITEM_SPECIAL[legacy]
    if legacy.startswith("UF_"):
        return uf_camel(legacy)
    return snake_to_camel(legacy)


def task_name(upper: str) -> str:
    return snake_to_camel(upper)


DEAL_STAGES = [  # STATUS_ID, NAME, SORT, COLOR, SEMANTICS(short)
    ("NEW", "New", 10, "#39A8EF", None), ("PREPARATION", "Document preparation", 20, "#2FC6F6", None),
    ("PREPAYMENT_INVOICE", "Prepayment invoice", 30, "#55D0E0", None), ("EXECUTING", "In progress", 40, "#47E4C2", None),
    ("FINAL_INVOICE", "Final invoice", 50, "#FFA900", None), ("WON", "Deal successful", 60, "#7BD500", "S"),
    ("LOSE", "Deal failed", 70, "#FF5752", "F"), ("APOLOGY", "Analyze failure", 80, "#FF5752", "F"),
]
INVOICE_STAGES = [
    ("DT31_1:N", "New", 10, "#22B9FF", None), ("DT31_1:S", "Sent", 20, "#2FC6F6", None),
    ("DT31_1:P", "Paid", 30, "#7BD500", "S"), ("DT31_1:D", "Declined", 40, "#FF5752", "F"),
]
# crm.requisite.preset.list of a fresh portal (tutorials/crm/how-to-add-crm-objects/how-to-add-company-with-requisite.md)
REQUISITE_PRESETS = {1: "Organization", 3: "Sole Proprietorship", 5: "Individual"}
COMPANY_TYPES = [("CUSTOMER", "Client", 10), ("VIP", "VIP client", 15), ("SUPPLIER", "Supplier", 20),
                 ("COMPETITOR", "Competitor", 30), ("PARTNER", "Partner", 40), ("OTHER", "Other", 50)]
SEMANTIC_WORD = {None: "process", "S": "success", "F": "failure"}
