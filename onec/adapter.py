"""The 1C:Enterprise / BAS adapter object registered under the ``connector.adapters`` entry point.

Reading goes through the standard OData interface when ``onec.odata`` is configured, else through
the reference web service (``onec.soap``). Write-back (``onec.write_back``): ``auto`` uses OData
when configured, else SOAP; ``none`` writes nothing to 1C.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from connector.errors import ConnectorError
from connector.ports import CheckResult, Context

SYSTEM = "onec"  # onec.client's; the clients are imported only when 1C is read, written or checked

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
            from onec.presets import for_config

            names = for_config(cfg)
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
    """``$metadata`` first: what to publish and what is missing, then the exact reads the source makes."""
    from onec.client import ODataClient
    from onec.mapping import doc_select
    from onec.metadata import MetadataCache, interest, parse_edmx, resolve_against
    from onec.metadata import russian_name as russian
    from onec.source import counterparty_select

    client = ODataClient(cfg.odata.url, cfg.odata.user, cfg.odata.password, ctx.counter(SYSTEM), timeout=cfg.odata.timeout,
                         attempts=2, wait=0.5)
    out: list[CheckResult] = []
    try:
        try:
            raw = client.metadata()
            schema = parse_edmx(raw)
        except ConnectorError as e:
            return [CheckResult(SYSTEM, "reach OData", False, str(e))]
        except ValueError as e:
            return [CheckResult(SYSTEM, "reach OData", False, f"$metadata: {e}")]
        out.append(CheckResult(SYSTEM, "reach OData", True, f"preset {cfg.preset}, user accepted, {len(schema.sets)} sets published"))
        res = resolve_against(names, schema)
        # what `connector sync` would use: refresh its cache now, so a fix is seen on the next cycle
        cache = MetadataCache(client.root, interest(names), lambda: raw, every=timedelta(hours=cfg.metadata_every_hours),
                              kv_get=ctx.kv_get, kv_set=ctx.kv_set)
        if ctx.kv_set is not None:
            cache.refresh(ctx.clock.now())
        unpublished = [m for m in res.missing if not m.is_field]
        out.append(CheckResult(SYSTEM, "objects to publish (Настройка стандартного интерфейса OData)", not unpublished,
                               ", ".join(res.publish) + (". Not published: " + ", ".join(russian(m.wire) for m in unpublished)
                                                        if unpublished else "")))
        for m in res.missing:
            what = ("required" if m.required else "optional") + (" field" if m.is_field else " object")
            out.append(CheckResult(SYSTEM, f"{what} {m.logical}", False, m.text()))
        n = res.names
        if not n.obj("journal"):
            journals = ", ".join(schema.journals) or "none"
            out.append(CheckResult(SYSTEM, "document journal", True,
                                   f"none configured: a no-change cycle costs {1 + len(n.doc_objects())} requests; with "
                                   f"onec.objects.journal naming a journal that lists the documents, 2. Published journals: {journals}"))
        if res.required_missing:
            return out
        probes: list[tuple[str, str, list[str]]] = [
            ("users", n.obj("users"), ["Ref_Key", n.f("user.name")]),
            ("counterparties", n.obj("counterparties"), counterparty_select(n)),
        ]
        if n.obj("partners"):
            probes.append(("partners", n.obj("partners"), ["Ref_Key", n.f("partner.manager")]))
        if n.obj("analytics"):
            probes.append(("analytics", n.obj("analytics"), ["Ref_Key", n.f("analytics.counterparty")]))
        if n.obj("contact_info"):
            probes.append(("contact information", n.obj("contact_info"),
                           [n.f("contact.object"), n.f("contact.type"), n.f("contact.text")]))
        if n.obj("contracts"):
            probes.append(("contracts", n.obj("contracts"), ["Ref_Key", n.f("contract.term")]))
        if n.obj("journal"):
            probes.append(("document journal", n.obj("journal"), ["Ref", "Ref_Type", "Date"]))
        if n.obj("task"):
            probes.append(("task", n.obj("task"), ["Ref_Key", n.f("task.text"), n.f("task.responsible")]))
        for doc_type, obj in n.doc_objects():
            probes.append((doc_type, obj, doc_select(n, doc_type)))
        for label, obj, select in probes:
            try:
                client.get(obj, [("$select", ",".join(schema.keep(obj, dict.fromkeys(f for f in select if f)))), ("$top", "1")])
                out.append(CheckResult(SYSTEM, f"read {label} ({obj})", True, "ok"))
            except ConnectorError as e:
                out.append(CheckResult(SYSTEM, f"read {label} ({obj})", False, str(e)))
        from datetime import datetime

        for label in ("receivables", "overdue"):
            reg = n.obj(label)
            if not reg:
                continue
            try:
                dim = n.f(f"{label}.counterparty")
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
