"""The message-channel adapter (``sms``): SMS via TurboSMS or the log, e-mail via SMTP.

The ``bitrix24`` SMS provider is not handled here: the core plans those messages as Bitrix24
automation triggers, so this adapter is configured for SMS only with ``turbosms`` or ``log``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.errors import ConnectorError
from connector.ports import CheckResult, Context

SYSTEM = "sms"  # sms.sink's; the clients are imported only when a message goes out or is checked

if TYPE_CHECKING:
    from connector.config import Settings
    from connector.sandbox import SyntheticCompany
    from sms.sink import MessageSink


class SmsSandbox:
    """TurboSMS emulator plus an SMTP sink (STARTTLS with a throw-away certificate), both on loopback port 0."""

    def __init__(self, company: "SyntheticCompany | None" = None):
        from sms.emulator import SmtpSink, TurboSmsEmulator
        from sms.emulator.smtp import self_signed

        self.turbosms = TurboSmsEmulator(balance=500.0, auto_advance=True)
        self.smtp = SmtpSink(certificate=self_signed())  # STARTTLS, as a real relay: the client requires it

    def start(self) -> dict[str, str]:
        turbosms_url = self.turbosms.start()
        try:
            smtp_url = self.smtp.start()
        except BaseException:
            self.turbosms.stop()
            raise
        return {"TURBOSMS_TOKEN": self.turbosms.token, "TURBOSMS_URL": turbosms_url, "SMTP_URL": smtp_url,
                "SMTP_CA_FILE": self.smtp.ca_file or ""}

    def stop(self) -> None:
        self.smtp.stop()
        self.turbosms.stop()


class SmsAdapter:
    name = SYSTEM

    def configured(self, settings: "Settings") -> bool:
        m = settings.messaging
        if m is None:
            return False
        return bool(m.email) or bool(m.sms and m.sms.provider != "bitrix24")

    def source(self, settings: "Settings", ctx: Context) -> None:
        return None

    def sink(self, settings: "Settings", ctx: Context) -> "MessageSink | None":
        from sms.sink import MessageSink

        if not self.configured(settings):
            return None
        return MessageSink(settings.messaging, ctx, phone_region=settings.phone_region)

    def check(self, settings: "Settings", ctx: Context) -> list[CheckResult]:
        """TurboSMS: token valid and money on the account. SMTP: connect, log in, NOOP."""
        m = settings.messaging
        if m is None:
            return []
        from sms.smtp import SmtpClient
        from sms.turbosms import TurboSmsClient

        out: list[CheckResult] = []
        if m.sms and m.sms.provider == "turbosms":
            client = TurboSmsClient(m.sms, ctx, attempts=2, timeout=20)
            try:
                balance = client.balance()  # the cheapest authenticated call: proves the token
                out.append(CheckResult("turbosms", "token and balance", balance > 0, f"balance {balance:.2f}" if balance > 0 else
                                       f"{settings.where('messaging', 'sms', 'token')}: balance {balance:.2f}: messages will fail (203)"))
            except ConnectorError as e:
                out.append(CheckResult("turbosms", "token and balance", False, f"{settings.where('messaging', 'sms', 'token')}: {e}"))
            finally:
                client.close()
            out.append(CheckResult("turbosms", "sender", True, f"{settings.where('messaging', 'sms', 'sender')}: "
                                   f"`{m.sms.sender}` cannot be checked without sending a message; it must be a sender name "
                                   "registered in the TurboSMS account", checked=False))
        elif m.sms and m.sms.provider == "log":
            out.append(CheckResult(SYSTEM, "sms provider", True, "log: messages are written to the log, not sent"))
        if m.email:
            client = SmtpClient(m.email.smtp, m.email.from_, ctx, timeout=20, insecure=m.email.insecure, ca_file=m.email.ca_file)
            try:
                out.append(CheckResult("smtp", "connect, TLS and log in", True, client.noop()))
            except ConnectorError as e:
                out.append(CheckResult("smtp", "connect, TLS and log in", False, f"{settings.where('messaging', 'email', 'smtp')}: {e}"))
            if client.plain_text_allowed():
                out.append(CheckResult("smtp", "insecure: true", True, "a server without STARTTLS gets the password and the "
                                       "messages in clear text; keep it for a trusted local relay only", warning=True))
        return out

    def sandbox(self, company: "SyntheticCompany") -> SmsSandbox:
        return SmsSandbox(company)


ADAPTER = SmsAdapter()
