"""Loopback Binotel API emulator and webhook sender, seeded from the synthetic company."""

from binotel.emulator.server import SUCCESS_BODY, BinotelEmulator, PushAttempt, php_form, post_form

__all__ = ["BinotelEmulator", "PushAttempt", "SUCCESS_BODY", "php_form", "post_form"]
