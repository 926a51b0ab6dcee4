"""The Bitrix24 adapter object registered under the ``connector.adapters`` entry point."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connector import references
from connector.errors import ConnectorError, UpstreamError
from connector.i18n import _
from connector.ports import CheckResult, Context

if TYPE_CHECKING:
    from bitrix.client import BitrixClient
    from bitrix.sink import BitrixSink
    from bitrix.source import BitrixSource
    from connector.config import Settings
    from connector.ports import SandboxService
    from connector.sandbox import SyntheticCompany

# Scopes the connector uses, and what breaks without each.
NEEDED_SCOPES = {
    "crm": "companies, contacts, deals, activities, invoices, comments, reassignment",
    "task": "tasks (read and create)",
    "user": "managers (user.get)",
    "department": "department names of managers",
    "im": "notifications to managers",
    "bizproc": "workflows",
}
# Cheap reads that prove the webhook's user may see the data, one command each.
PROBES = {
    "companies": ("crm.company.list", {"select": ["ID"], "order": {"ID": "DESC"}, "start": -1}),
    "contacts": ("crm.contact.list", {"select": ["ID"], "order": {"ID": "DESC"}, "start": -1}),
    "deals": ("crm.deal.list", {"select": ["ID"], "order": {"ID": "DESC"}, "start": -1}),
    "activities": ("crm.activity.list", {"select": ["ID"], "order": {"ID": "DESC"}, "start": -1}),
    "invoices": ("crm.item.list", {"entityTypeId": 31, "select": ["id"], "order": {"id": "DESC"}, "start": -1}),
    "tasks": ("tasks.task.list", {"select": ["ID"], "order": {"ID": "DESC"}, "start": -1}),
    "users": ("user.get", {"sort": "ID", "order": "ASC", "start": 0}),
}
SYSTEM = "bitrix24"  # bitrix.client.SYSTEM; the client (aiohttp, fast-bitrix24) is imported when first used
APP_SCOPES = {"telephony": "calls on the client card", "messageservice": "the SMS provider"}
ENTITY_WORDS = {"company": "companies", "contact": "contacts"}
# No REST method lists the codes of "incoming webhook" triggers set up in a portal's automation rules:
# crm.automation.trigger.list returns only the triggers an application registered itself, and only in
# an application context (b24restdocs: crm/automation/triggers/crm-automation-trigger-list.md).
TRIGGER_UNCHECKABLE = ("not verifiable through the REST API (crm.automation.trigger.list lists only an application's "
                       "own triggers); compare it with the trigger in the portal's automation rules")


class BitrixAdapter:
    name = SYSTEM

    def configured(self, settings: "Settings") -> bool:
        return settings.bitrix24 is not None

    def source(self, settings: "Settings", ctx: Context) -> "BitrixSource | None":
        from bitrix.source import BitrixSource

        return BitrixSource(settings.bitrix24, ctx) if settings.bitrix24 else None

    def sink(self, settings: "Settings", ctx: Context) -> "BitrixSink | None":
        from bitrix.sink import BitrixSink

        return BitrixSink(settings.bitrix24, ctx) if settings.bitrix24 else None

    def check(self, settings: "Settings", ctx: Context) -> list[CheckResult]:
        """Reach the portal, compare granted scopes with the ones we need, try each read."""
        cfg = settings.bitrix24
        if cfg is None:
            return []
        from bitrix.client import BitrixClient

        out: list[CheckResult] = []
        try:
            client = BitrixClient(cfg, ctx, attempts=2, max_wait=5.0)
        except ConnectorError as e:  # application mode before the installation
            return [CheckResult(SYSTEM, "reach portal", False, str(e))]
        try:
            try:
                granted = set(client.scopes())
            except ConnectorError as e:
                return [CheckResult(SYSTEM, "reach portal", False, str(e))]
            auth = "local application (app mode)" if cfg.app else "OAuth application" if cfg.oauth else "incoming webhook"
            out.append(CheckResult(SYSTEM, "reach portal", True, f"{auth}, plan {cfg.plan}"))
            needed = {**NEEDED_SCOPES, **APP_SCOPES} if cfg.app else NEEDED_SCOPES
            for scope, why in needed.items():
                ok = scope in granted or (scope == "user" and bool(granted & {"user_basic", "user_brief"}))
                out.append(CheckResult(SYSTEM, f"scope {scope}", ok, "granted" if ok else f"missing: needed for {why}"))
            try:
                reply = client.batch({**PROBES, "profile": ("profile", {})})
            except UpstreamError as e:
                out.append(CheckResult(SYSTEM, "read access", False, str(e)))
                return out
            for label in PROBES:
                err = reply.errors.get(label)
                out.append(CheckResult(SYSTEM, f"read {label}", err is None, str(err) if err else "ok"))
            profile = reply.results.get("profile")
            if isinstance(profile, dict):
                admin = bool(profile.get("ADMIN"))
                out.append(CheckResult(SYSTEM, "administrator", True, "yes" if admin else
                                       "no: workflow actions (bizproc.workflow.start) will be refused"))
            out += self._names(settings, client)
            return out
        finally:
            client.close()

    def _names(self, settings: "Settings", client: BitrixClient) -> list[CheckResult]:
        """Look up every user, field and trigger the config names: one batch, each problem at its config line."""
        people = [p for p in references.people(settings) if p.system == SYSTEM]
        fields = references.custom_fields(settings)
        ids = sorted({int(p.id) for p in people if p.id.isdigit()})
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        if fields:
            cmds |= {"company": ("crm.company.fields", {}), "contact": ("crm.contact.fields", {})}
        for n in range(0, len(ids), 50):  # user.get pages by 50; dismissed users are listed unless ACTIVE is filtered
            cmds[f"users{n}"] = ("user.get", {"FILTER": {"@ID": ids[n:n + 50]}})
        invoice_rules = [(i, r) for i, r in enumerate(settings.rules) if r.type == "invoice_sync"]
        if invoice_rules:
            cmds["invoice_fields"] = ("crm.item.fields", {"entityTypeId": 31})
        onec = settings.onec
        if onec is not None and onec.create_missing:
            cmds["presets"] = ("crm.requisite.preset.list", {"select": ["ID", "NAME", "ACTIVE", "ENTITY_TYPE_ID"]})
        try:
            reply = client.batch(cmds)
        except UpstreamError as e:
            return [CheckResult(SYSTEM, "names in the config", False, str(e))]
        out = self._people(settings, people, reply) if people else []
        out += self._fields(settings, fields, reply) if fields else []
        out += self._invoice_fields(settings, invoice_rules, reply) if invoice_rules else []
        out += self._preset(settings, reply) if "presets" in cmds else []
        out += self._triggers(settings, client)
        return out

    def _triggers(self, settings: "Settings", client: BitrixClient) -> list[CheckResult]:
        """App mode: the config's trigger codes must be the application's own (``crm.automation.trigger.list``)."""
        codes = references.trigger_codes(settings)
        if not codes:
            return []
        if settings.bitrix24 is None or settings.bitrix24.app is None:
            return [CheckResult(SYSTEM, "trigger", True, f"{settings.where(*t.path)}: `{t.code}` {TRIGGER_UNCHECKABLE}", checked=False)
                    for t in codes]
        try:
            have = {str(t.get("CODE")) for t in client.result("crm.automation.trigger.list") or [] if isinstance(t, Mapping)}
        except UpstreamError as e:
            return [CheckResult(SYSTEM, "trigger", False, f"cannot list the application's triggers: {e}")]
        return [CheckResult(SYSTEM, "trigger", t.code in have, f"{settings.where(*t.path)}: `{t.code}` " + (
                    _("is one of the application's triggers") if t.code in have else
                    _("is not one of the application's triggers ({codes})").format(codes=", ".join(sorted(have)) or "-")))
                for t in codes]

    def _people(self, settings: "Settings", people: list[references.Person], reply: Any) -> list[CheckResult]:
        errors = [e for k, e in reply.errors.items() if k.startswith("users")]
        if errors:
            return [CheckResult(SYSTEM, "people", False, f"cannot read users: {errors[0]}")]
        users = {str(u.get("ID")): u for k, rows in reply.results.items() if k.startswith("users")
                 for u in (rows or []) if isinstance(u, Mapping)}
        out: list[CheckResult] = []
        for p in people:
            user = users.get(p.id)
            at = settings.where(*p.path)
            if not p.id.isdigit():
                out.append(CheckResult(SYSTEM, "people", False, f"{at}: `{p.id}` is not a Bitrix24 user id"))
            elif user is None:
                out.append(CheckResult(SYSTEM, "people", False, f"{at}: user {p.id} does not exist"))
            elif p.must_be_active and user.get("ACTIVE") is not True:
                name = " ".join(str(user.get(k) or "") for k in ("NAME", "LAST_NAME")).strip() or p.id
                out.append(CheckResult(SYSTEM, "people", False, f"{at}: user {p.id} ({name}) is dismissed (not active)"))
        if not out:
            out.append(CheckResult(SYSTEM, "people", True, f"all {len({p.id for p in people})} users named in the config exist"
                                   + (" and are active" if any(p.must_be_active for p in people) else "")))
        return out

    def _invoice_fields(self, settings: "Settings", rules: list[tuple[int, Any]], reply: Any) -> list[CheckResult]:
        """The invoice fields ``invoice_sync`` matches 1C documents by (crm.item.fields of smart invoices)."""
        if "invoice_fields" in reply.errors:
            return [CheckResult(SYSTEM, "invoice fields", False, f"cannot read the fields of invoices: {reply.errors['invoice_fields']}")]
        result = reply.results.get("invoice_fields")
        fields = result.get("fields") if isinstance(result, Mapping) else None
        fields = fields if isinstance(fields, Mapping) else {}
        # crm.item accepts a field by its camelCase name or its UPPER_CASE one (crm/universal/index.md)
        known = {str(k).lower() for k in fields} | {str(v.get("upperName") or "").lower() for v in fields.values() if isinstance(v, Mapping)}
        out: list[CheckResult] = []
        for i, rule in rules:
            for key in ("number_field", "basis_field"):
                name = getattr(rule, key)
                if name and name.lower() not in known:
                    hint = difflib.get_close_matches(name, [str(k) for k in fields], n=1)
                    out.append(CheckResult(SYSTEM, "invoice fields", False, f"{settings.where('rules', i, key)}: invoices have "
                                           f"no field {name}" + (f" (did you mean {hint[0]}?)" if hint else "")))
        if not out:
            names = sorted({getattr(r, k) for _, r in rules for k in ("number_field", "basis_field") if getattr(r, k)})
            out.append(CheckResult(SYSTEM, "invoice fields", True, f"{', '.join(names)} exist on invoices"))
        return out

    def _preset(self, settings: "Settings", reply: Any) -> list[CheckResult]:
        """The requisite template ``onec.create_missing`` files tax ids under (crm.requisite.add needs its PRESET_ID)."""
        assert settings.onec is not None
        want = settings.onec.create_missing_preset
        at = settings.where("onec", "create_missing_preset")
        if "presets" in reply.errors:
            return [CheckResult(SYSTEM, "requisite template", False, f"cannot list requisite templates: {reply.errors['presets']}")]
        rows = reply.results.get("presets")
        rows = [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []
        found = next((r for r in rows if str(r.get("ID")) == str(want)), None)
        listed = ", ".join(f"{r.get('ID')} {r.get('NAME')}" for r in rows) or "none"
        if found is None:
            return [CheckResult(SYSTEM, "requisite template", False, f"{at}: the portal has no requisite template {want} "
                                f"(it has: {listed})")]
        if str(found.get("ACTIVE") or "Y") != "Y":
            return [CheckResult(SYSTEM, "requisite template", False, f"{at}: requisite template {want} "
                                f"({found.get('NAME')}) is switched off")]
        return [CheckResult(SYSTEM, "requisite template", True, f"{want} ({found.get('NAME')}) for created companies")]

    def _fields(self, settings: "Settings", fields: list[references.CustomField], reply: Any) -> list[CheckResult]:
        known: dict[str, dict[str, Any]] = {}
        for entity in ENTITY_WORDS:
            if entity in reply.errors:
                return [CheckResult(SYSTEM, "custom fields", False, f"cannot read the fields of {ENTITY_WORDS[entity]}: "
                                    f"{reply.errors[entity]}")]
            result = reply.results.get(entity)
            known[entity] = dict(result) if isinstance(result, Mapping) else {}
        out: list[CheckResult] = []
        for f in fields:
            where = [f.entity] if f.entity else list(ENTITY_WORDS)
            if any(f.name in known[e] for e in where):
                continue
            entities = " or ".join(ENTITY_WORDS[e] for e in where)
            others = [ENTITY_WORDS[e] for e in ENTITY_WORDS if e not in where and f.name in known[e]]
            why = f" (only on {others[0]}; the rule's clients are {entities})" if others else _suggest(f.name, where, known)
            out.append(CheckResult(SYSTEM, "custom fields", False,
                                   f"{settings.where(*f.path)}: field {f.name} does not exist on {entities}{why}"))
        if not out:
            out.append(CheckResult(SYSTEM, "custom fields", True,
                                   f"all {len({f.name for f in fields})} fields named in the config exist"))
        return out

    def sandbox(self, company: "SyntheticCompany") -> "SandboxService | None":
        from bitrix.sandbox import BitrixSandbox

        return BitrixSandbox(company)

    # ------------------------------------------------------------ application mode (connector.ports.HostedApplication)

    def app_configured(self, settings: "Settings") -> bool:
        return settings.bitrix24 is not None and settings.bitrix24.app is not None

    def app_install_info(self, settings: "Settings") -> list[tuple[str, str]]:
        from bitrix.app import install_info

        return install_info(settings)

    def app_endpoint(self, settings: "Settings", ctx: Context, store: Any, *, wake: Any = None, recordings: Any = None) -> Any:
        from bitrix.app_handlers import BitrixAppEndpoint

        return BitrixAppEndpoint(settings, ctx, store, wake=wake, recordings=recordings)

    def app_uninstall(self, settings: "Settings", ctx: Context) -> list[str]:
        from bitrix.app import unregister

        return unregister(settings, ctx)

    def own_actions(self, settings: "Settings", snap: Any) -> dict[str, list[Any]]:
        """Calls on the client card and the SMS provider's statuses (``connector.ports.OwnActions``)."""
        if not self.app_configured(settings):
            return {}  # a webhook portal: nothing to import, nothing to add
        from bitrix.app import own_actions

        return own_actions(settings, snap)


def _suggest(name: str, entities: list[str], known: Mapping[str, Mapping[str, Any]]) -> str:
    """``; did you mean UF_CRM_TEMPERATURE ("Temperature")?`` from the codes and the labels people see."""
    labels: dict[str, str] = {}
    for e in entities:
        for code, meta in known[e].items():
            labels[code.upper()] = code
            for key in ("listLabel", "formLabel", "filterLabel"):
                label = meta.get(key) if isinstance(meta, Mapping) else None
                if isinstance(label, str) and label:
                    labels.setdefault(label.upper(), code)
    match = difflib.get_close_matches(name.upper(), list(labels), n=1, cutoff=0.6)
    if not match:
        return ""
    code = labels[match[0]]
    meta = next((known[e][code] for e in entities if code in known[e]), {})
    label = meta.get("listLabel") if isinstance(meta, Mapping) else None
    return f"; did you mean {code}" + (f" (\"{label}\")" if label and label != code else "") + "?"


ADAPTER = BitrixAdapter()
