"""Log lines for people (text) or for a log shipper (JSON, one object a line), secrets masked in both.

Levels mean something: DEBUG for the wire, INFO for what the connector did (one line per executed
action, one per cycle), WARNING only for what someone should look at (a refusal, a failed
action, a source that failed), ERROR when a cycle could not run. Structured fields are passed with
``extra=`` (``rule``, ``client``, ``action``, ``result``, ``remote_id``, ``key``) and become JSON
keys; the text format shows the message alone.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from connector.redact import install_logging_filter

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def json_formatter() -> logging.Formatter:
    """``{"time": ..., "level": "INFO", "logger": ..., "message": ..., <extra fields>}``."""
    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                         datefmt="%Y-%m-%dT%H:%M:%S%z", json_ensure_ascii=False)


def setup(level: str = "warning", fmt: str = "text") -> None:
    """Configure the root logger once per process: one stderr handler, the chosen format, and the
    redacting filter (which runs before either formatter, so JSON carries no secret either)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    install_logging_filter()
