"""The Bitrix24 part of ``connector sandbox``/``demo``: an emulated portal seeded from the synthetic company."""

from __future__ import annotations

from bitrix.emulator import EmulatorServer, Portal
from connector.sandbox import SyntheticCompany


class BitrixSandbox:
    """Starts the emulator on 127.0.0.1:0 and hands out the webhook URL a config uses."""

    def __init__(self, company: SyntheticCompany, *, rate_limit: bool = True, time_scale: float = 0.0):
        self.company = company
        self.rate_limit = rate_limit
        self.time_scale = time_scale
        self.portal: Portal | None = None
        self.server: EmulatorServer | None = None

    def start(self) -> dict[str, str]:
        self.portal = Portal.from_company(self.company, rate_limit=self.rate_limit, time_scale=self.time_scale)
        self.server = EmulatorServer(self.portal).start()
        return {"BITRIX24_WEBHOOK_URL": self.server.webhook_url}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
