"""The Binotel adapter object registered under the ``connector.adapters`` entry point.

Binotel is a source only (employees and calls): it has no SMS API, and the connector does not
place calls. The core daemon asks :meth:`BinotelAdapter.push_server` for the optional webhook
receiver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from connector.domain import Call
from connector.errors import ConnectorError
from connector.ports import CheckResult, Context

SYSTEM = "binotel"  # binotel.client's; the client (requests) is imported only when the PBX is read

if TYPE_CHECKING:
    from binotel.push import PushServer
    from binotel.source import BinotelSource
    from connector.config import Settings
    from connector.httpserver import HttpServer
    from connector.sandbox import SyntheticCompany


class BinotelSandbox:
    """The emulator as a sandbox service: seeded from the synthetic company, loopback, port 0."""

    def __init__(self, company: "SyntheticCompany"):
        from binotel.emulator import BinotelEmulator

        self.emulator = BinotelEmulator(company)

    def start(self) -> dict[str, str]:
        url = self.emulator.start()
        return {"BINOTEL_KEY": self.emulator.key, "BINOTEL_SECRET": self.emulator.secret, "BINOTEL_URL": url}

    def stop(self) -> None:
        self.emulator.stop()


class BinotelAdapter:
    name = SYSTEM

    def configured(self, settings: "Settings") -> bool:
        return settings.binotel is not None

    def source(self, settings: "Settings", ctx: Context) -> "BinotelSource | None":
        from binotel.source import BinotelSource

        return (BinotelSource(settings.binotel, ctx, lookback_days=settings.binotel.lookback_days,
                              settle_seconds=settings.binotel.settle_seconds) if settings.binotel else None)

    def sink(self, settings: "Settings", ctx: Context) -> None:
        return None

    def check(self, settings: "Settings", ctx: Context) -> list[CheckResult]:
        """The key is valid and the employee list is readable (one request)."""
        cfg = settings.binotel
        if cfg is None:
            return []
        from binotel.client import BinotelClient

        client = BinotelClient(cfg, ctx, attempts=2, rate_backoff=2.0, transient_backoff=1.0, max_wait=5.0, timeout=20)
        try:
            employees = client.employees()
        except ConnectorError as e:
            return [CheckResult(SYSTEM, "key and employees", False, str(e))]
        finally:
            client.close()
        linked = sum(1 for k, _ in employees if not k.startswith("notLinkedToUser_"))
        out = [CheckResult(SYSTEM, "key and employees", True, f"{linked} employee(s), {len(employees) - linked} unlinked line(s)")]
        if cfg.push is not None:
            where = ", ".join(cfg.push.allow_from) or "loopback only"
            out.append(CheckResult(SYSTEM, "push receiver", True, f"listens on {cfg.push.listen}, accepts {where}"))
        return out

    def sandbox(self, company: "SyntheticCompany") -> BinotelSandbox:
        return BinotelSandbox(company)

    def record_url(self, settings: "Settings", ctx: Context, call_id: str) -> str | None:
        """A fresh link to a call's recording (``connector.ports.CallRecordings``); it expires in 15
        minutes, so it is asked for when somebody downloads it, never stored."""
        if settings.binotel is None:
            return None
        from binotel.client import BinotelClient

        client = BinotelClient(settings.binotel, ctx, attempts=2, rate_backoff=2.0, transient_backoff=1.0, max_wait=5.0, timeout=20)
        try:
            return client.call_record_url(call_id) or None
        except ConnectorError:
            return None
        finally:
            client.close()

    def push_server(self, settings: "Settings", on_calls: Callable[[list[Call]], None], *,
                    server: "HttpServer | None" = None) -> "PushServer | None":
        """The webhook receiver when ``binotel.push`` is configured; the caller starts and stops it
        (or, with ``server``, only mounts the route there: a listener shared with other endpoints)."""
        if settings.binotel is None or settings.binotel.push is None:
            return None
        from binotel.push import PushServer

        return PushServer(settings.binotel.push, on_calls, server=server)


ADAPTER = BinotelAdapter()
