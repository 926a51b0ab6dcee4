"""Create missing: a 1C counterparty no CRM client is linked to becomes a Bitrix24 company
(``onec.create_missing: true``), so a 1C-first company's CRM fills itself.

Only counterparties with a posted document are created (customers, not every supplier, bank and
tax office of the catalog); an *ambiguous* one (several CRM candidates) never is. The company
carries the counterparty's name, phones, e-mails and 1C GUID (``bitrix24.guid_field``, by which it
is found again after a crash and linked on the next sync) and gets its tax id as a requisite. Its
responsible is the Bitrix24 user with the e-mail of the counterparty's 1C manager, else the
supervisor. One episode per counterparty (``new``): the journal makes it exactly once, and the
safety brake refuses a first run that would create thousands unless forced.
"""

from __future__ import annotations

from connector.calendar import BusinessCalendar
from connector.config import CreateMissingRule, Settings
from connector.i18n import _
from connector.rules.base import Builtin, Evaluation, Finding, person_key
from connector.snapshot import ClientView, EpisodeView, Snapshot

PERIOD = "new"


def evaluate(rule: CreateMissingRule, snap: Snapshot, cal: BusinessCalendar, settings: Settings) -> Evaluation:
    assert settings.onec is not None and settings.bitrix24 is not None
    crm_by_email = {m.email.strip().lower(): m.key for m in snap.managers.values()
                    if m.key.startswith("bitrix24:") and m.active and m.email}
    sup = settings.people.supervisor
    fallback = person_key(snap, sup) if sup is not None else None
    findings = []
    for cp in snap.unmatched_counterparties():
        manager = snap.manager(cp.responsible_key)
        responsible = crm_by_email.get((manager.email or "").strip().lower()) if manager is not None else None
        responsible = responsible or fallback
        view = ClientView(key=cp.key, system="onec", kind="company", title=cp.title, responsible_key=responsible,
                          tax_id=cp.tax_id, phones=list(cp.phones), emails=list(cp.emails))
        if cp.tax_id:
            reason = _("1C counterparty {title} (tax id {tax_id}) has documents but no client in Bitrix24: a company is "
                       "created for it.").format(title=cp.title, tax_id=cp.tax_id)
        else:
            reason = _("1C counterparty {title} has documents but no client in Bitrix24: a company is created for it.").format(
                title=cp.title)
        payload = {
            "title": cp.title, "guid": cp.guid, "guid_field": settings.bitrix24.guid_field, "tax_id": cp.tax_id,
            "preset": settings.onec.create_missing_preset, "phones": list(cp.phones), "emails": list(cp.emails),
            "responsible": responsible,
            "comment": _("Created by the connector from the 1C counterparty {guid}.").format(guid=cp.guid),
        }
        findings.append(Finding(subject_key=cp.key, client=view, period=PERIOD, reason=reason, responsible_key=responsible,
                                builtin=[Builtin("c", "create_company", payload, system="bitrix24")]))
    return Evaluation(findings, snap.count_counterparties())


def clear_reason(rule: CreateMissingRule, ep: EpisodeView, snap: Snapshot, cal: BusinessCalendar) -> str | None:
    linked = snap.linked_client(ep.subject_key)
    if linked:
        c = snap.client(linked)
        return _("the counterparty is linked to {client}").format(client=c.title if c else linked)
    return None
