"""The ``log`` provider: messages are written to the log and an outbox, never sent.

For sandboxes and dry installs. Each message is logged, kept in memory, appended as a JSON line to
an optional outbox file, and remembered in the connector's durable key-value store (when the
context has one), so that after a crash :meth:`LogProvider.find` can tell whether it was "sent".
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.ports import Context

log = logging.getLogger("sms.log")
KV_PREFIX = "sms.log.outbox."


class LogProvider:
    def __init__(self, ctx: Context, *, outbox_path: str | Path | None = None):
        self.ctx = ctx
        self.outbox: list[dict[str, Any]] = []
        self.outbox_path = Path(outbox_path) if outbox_path else None
        self._lock = threading.Lock()

    @staticmethod
    def message_id(action_key: str) -> str:
        return "log-" + hashlib.sha256(action_key.encode("utf-8")).hexdigest()[:24]

    def send(self, *, channel: str, to: str, text: str, action_key: str, subject: str = "") -> str:
        """Record the message as sent; returns its id (derived from the action key)."""
        mid = self.message_id(action_key)
        entry = {"id": mid, "channel": channel, "to": to, "subject": subject, "text": text, "action": action_key,
                 "at": datetime.now(UTC).isoformat(timespec="seconds")}
        with self._lock:
            self.outbox.append(entry)
            if self.outbox_path is not None:
                with self.outbox_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if self.ctx.kv_set is not None:
            self.ctx.kv_set(KV_PREFIX + action_key, json.dumps(entry, ensure_ascii=False))
        log.warning("%s to %s (not sent: log provider)%s: %s", channel.upper(), to,
                    f" [{subject}]" if subject else "", text)
        return mid

    def find(self, action_key: str) -> dict[str, Any] | None:
        """The outbox entry of an action, if it was recorded (memory, kv store or outbox file)."""
        with self._lock:
            for entry in self.outbox:
                if entry["action"] == action_key:
                    return entry
        if self.ctx.kv_get is not None:
            raw = self.ctx.kv_get(KV_PREFIX + action_key)
            if raw:
                return json.loads(raw)
        if self.outbox_path is not None and self.outbox_path.is_file():
            with self.outbox_path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if entry.get("action") == action_key:
                        return entry
        return None
