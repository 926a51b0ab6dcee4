"""The 1C:Enterprise / BAS adapter object registered under the ``connector.adapters`` entry point.

Reading goes through the standard OData interface when ``onec.odata`` is configured, else through
the reference web service (``onec.soap``). Write-back (``onec.write_back``): ``auto`` uses OData
when configured, else SOAP; ``none`` writes nothing to 1C.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector.errors import ConnectorError
from connector.ports import CheckResult, Context
from onec.client import SYSTEM, ODataClient
from onec.mapping import doc_select
from onec.presets import resolve

if TYPE_CHECKING:
    from connector.config import Settings
    from connector.ports import SandboxService, Sink, Source
    from connector.sandbox import SyntheticCompany


class OneCAdapter:
    name = SYSTEM

    def configured(self, settings: "Settings") -> bool:
        return settings.onec is not None

    def source(self, settings: "Settings", ctx: Context) -> "Source | None":
        cfg = settings.onec
        if cfg is None:
            return None
        from onec.source import ODataSource, SoapSource

        if cfg.odata is not None:
            return ODataSource(cfg, ctx, timezone=settings.timezone)
        return SoapSource(cfg, ctx, timezone=settings.timezone)

    def sink(self, settings: "Settings", ctx: Context) -> "Sink | None":
        cfg = settings.onec
        if cfg is None or cfg.write_back == "none":
            return None
        from onec.sink import ODataSink, SoapSink

        channel = cfg.write_back
        if channel == "auto":
            channel = "odata" if cfg.odata is not None else "soap"
        if channel == "odata" and cfg.odata is not None:
            return ODataSink(cfg, ctx, timezone=settings.timezone)
        if channel == "soap" and cfg.soap is not None:
            return SoapSink(cfg, ctx, timezone=settings.timezone)
        return None

    def check(self, settings: "Settings", ctx: Context) -> list[CheckResult]:
        """Reach each channel, then try the exact narrow reads and operations the connector uses."""
        cfg = settings.onec
        if cfg is None:
            return []
        out: list[CheckResult] = []
        try:
            names = resolve(cfg.preset, cfg.objects, cfg.fields)
        except ConnectorError as e:
            return [CheckResult(SYSTEM, "preset and overrides", False, str(e))]
        if cfg.odata is not None:
            out += _check_odata(cfg, names, ctx)
        if cfg.soap is not None:
            out += _check_soap(cfg, ctx)
        return out

    def sandbox(self, company: "SyntheticCompany") -> "SandboxService | None":
        from onec.emulator import OneCSandbox

        return OneCSandbox(company, preset="ut11")


def _check_odata(cfg: Any, names: Any, ctx: Context) -> list[CheckResult]:
    from onec.source import counterparty_select

    client = ODataClient(cfg.odata.url, cfg.odata.user, cfg.odata.password, ctx.counter(SYSTEM), timeout=cfg.odata.timeout,
                         attempts=2, wait=0.5)
    out: list[CheckResult] = []
    try:
        try:
            client.count(names.obj("users"))
        except ConnectorError as e:
            return [CheckResult(SYSTEM, "reach OData", False, str(e))]
        out.append(CheckResult(SYSTEM, "reach OData", True, f"preset {cfg.preset}, user accepted"))
        probes: list[tuple[str, str, list[str]]] = [
            ("users", names.obj("users"), ["Ref_Key", names.f("user.name")]),
            ("counterparties", names.obj("counterparties"), counterparty_select(names)),
        ]
        if names.obj("partners"):
            probes.append(("partners", names.obj("partners"), ["Ref_Key", names.f("partner.manager")]))
        if names.obj("analytics"):
            probes.append(("analytics", names.obj("analytics"), ["Ref_Key", names.f("analytics.counterparty")]))
        if names.obj("contact_info"):
            probes.append(("contact information", names.obj("contact_info"),
                           [names.f("contact.object"), names.f("contact.type"), names.f("contact.text")]))
        if names.obj("task"):
            probes.append(("task", names.obj("task"), ["Ref_Key", names.f("task.text"), names.f("task.responsible")]))
        for doc_type, obj in names.doc_objects():
            probes.append((doc_type, obj, doc_select(names, doc_type)))
        for label, obj, select in probes:
            try:
                client.get(obj, [("$select", ",".join(dict.fromkeys(f for f in select if f))), ("$top", "1")])
                out.append(CheckResult(SYSTEM, f"read {label} ({obj})", True, "ok"))
            except ConnectorError as e:
                out.append(CheckResult(SYSTEM, f"read {label} ({obj})", False, str(e)))
        from datetime import datetime

        for label in ("receivables", "overdue"):
            reg = names.obj(label)
            if not reg:
                continue
            try:
                dim = names.f(f"{label}.counterparty")
                client.balance(reg, period=datetime(2000, 1, 1), dimensions=[dim[:-4] if dim.endswith("_Key") else dim])
                out.append(CheckResult(SYSTEM, f"balance {label} ({reg})", True, "ok"))
            except ConnectorError as e:
                out.append(CheckResult(SYSTEM, f"balance {label} ({reg})", False, str(e)))
        return out
    finally:
        client.close()


def _check_soap(cfg: Any, ctx: Context) -> list[CheckResult]:
    from onec.soap import SoapClient

    out: list[CheckResult] = []
    try:
        client = SoapClient(cfg.soap, ctx.counter(SYSTEM), attempts=1)
        service = client.service
    except ConnectorError as e:
        return [CheckResult(SYSTEM, "load WSDL", False, str(e))]
    address = client.binding_address()
    endpoint = client.endpoint  # always the configured (or derived) one, never the WSDL's
    detail = f"endpoint {endpoint}" + (f" (WSDL says {address}, not used)" if address and address != endpoint else "")
    out.append(CheckResult(SYSTEM, "load WSDL", True, detail))
    for ours, theirs in client.ops.items():
        ok = hasattr(service, theirs)
        try:
            getattr(service, theirs)
        except AttributeError:
            ok = False
        out.append(CheckResult(SYSTEM, f"operation {ours}", ok, theirs if ok else f"{theirs} not in the WSDL"))
    try:
        client.users()
        out.append(CheckResult(SYSTEM, "call GetUsers", True, "ok"))
    except ConnectorError as e:
        out.append(CheckResult(SYSTEM, "call GetUsers", False, str(e)))
    client.close()
    return out


ADAPTER = OneCAdapter()
