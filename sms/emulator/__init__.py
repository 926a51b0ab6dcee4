"""Loopback emulators for the message channels: the TurboSMS HTTP API and an SMTP sink."""

from sms.emulator.smtp import ReceivedMail, SmtpSink
from sms.emulator.turbosms import SentSms, TurboSmsEmulator, sms_parts

__all__ = ["ReceivedMail", "SentSms", "SmtpSink", "TurboSmsEmulator", "sms_parts"]
