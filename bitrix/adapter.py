"""The Bitrix24 adapter object registered under the ``connector.adapters`` entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bitrix.client import SYSTEM, BitrixClient
from bitrix.sink import BitrixSink
from bitrix.source import BitrixSource
from connector.errors import ConnectorError, UpstreamError
from connector.ports import CheckResult, Context

if TYPE_CHECKING:
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


class BitrixAdapter:
    name = SYSTEM

    def configured(self, settings: "Settings") -> bool:
        return settings.bitrix24 is not None

    def source(self, settings: "Settings", ctx: Context) -> BitrixSource | None:
        return BitrixSource(settings.bitrix24, ctx) if settings.bitrix24 else None

    def sink(self, settings: "Settings", ctx: Context) -> BitrixSink | None:
        return BitrixSink(settings.bitrix24, ctx) if settings.bitrix24 else None

    def check(self, settings: "Settings", ctx: Context) -> list[CheckResult]:
        """Reach the portal, compare granted scopes with the ones we need, try each read."""
        cfg = settings.bitrix24
        if cfg is None:
            return []
        out: list[CheckResult] = []
        client = BitrixClient(cfg, ctx, attempts=2, max_wait=5.0)
        try:
            try:
                granted = set(client.scopes())
            except ConnectorError as e:
                return [CheckResult(SYSTEM, "reach portal", False, str(e))]
            auth = "OAuth application" if cfg.oauth else "incoming webhook"
            out.append(CheckResult(SYSTEM, "reach portal", True, f"{auth}, plan {cfg.plan}"))
            for scope, why in NEEDED_SCOPES.items():
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
            return out
        finally:
            client.close()

    def sandbox(self, company: "SyntheticCompany") -> "SandboxService | None":
        from bitrix.sandbox import BitrixSandbox

        return BitrixSandbox(company)


ADAPTER = BitrixAdapter()
