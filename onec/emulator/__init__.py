"""Loopback 1C: the standard OData interface and the reference web service over one seeded base."""

from __future__ import annotations

from connector.sandbox import SyntheticCompany
from onec.emulator.base import Infobase, seed
from onec.emulator.odata import ODataEmulator
from onec.emulator.soap import SoapEmulator

SANDBOX_USER = "Администратор"  # Cyrillic on purpose: proves UTF-8 Basic auth end to end
SANDBOX_PASSWORD = "Пароль-sandbox-1C"


class OneCSandbox:
    """``connector demo``'s 1C: both servers on 127.0.0.1, seeded from the synthetic company."""

    def __init__(self, company: SyntheticCompany, preset: str = "ut11", *, user: str = SANDBOX_USER,
                 password: str = SANDBOX_PASSWORD):
        self.company = company
        self.preset = preset
        self.ib: Infobase = seed(company, preset)
        self.odata = ODataEmulator(self.ib, user=user, password=password)
        self.soap = SoapEmulator(self.ib, user=user, password=password)

    def start(self) -> dict[str, str]:
        self.odata.start()
        try:
            self.soap.start()
        except BaseException:
            self.odata.stop()
            raise
        return {"ONEC_ODATA_URL": self.odata.url, "ONEC_USER": self.odata.user, "ONEC_PASSWORD": self.odata.password,
                "ONEC_WSDL_URL": self.soap.wsdl_url, "ONEC_SOAP_ENDPOINT": self.soap.endpoint,
                "ONEC_SUPERVISOR": self.company.manager(self.company.supervisor_id).guid}

    def stop(self) -> None:
        self.soap.stop()
        self.odata.stop()


__all__ = ["OneCSandbox", "ODataEmulator", "SoapEmulator", "Infobase", "seed"]
