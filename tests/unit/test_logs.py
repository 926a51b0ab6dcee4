"""Logs: one structured INFO line per executed action; JSON on request; secrets masked in both formats."""

from __future__ import annotations

import json
import logging

import pytest

from connector.logs import setup
from connector.redact import add_secret
from tests.unit.builders import world

RULE = """
- name: forgotten
  type: forgotten
  clients: companies
  inactive_days: 60
  actions:
    - task: {title: "No contact: {{ client.title }}", deadline: 3 workdays}
"""


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_log_has_one_info_line_per_executed_action_with_its_fields(tmp_path, capsys, restore_logging):
    w = world(tmp_path, RULE)
    c = w.company(1, "Karpaty Timber")
    w.activity(c, 90)
    setup("info", "json")
    w.run()
    actions = [x for x in _lines(capsys.readouterr().err) if x.get("event") == "action"]
    assert len(actions) == 1
    a = actions[0]
    assert a["level"] == "INFO" and a["logger"] == "connector.execute"
    assert (a["rule"], a["client"], a["client_key"], a["action"], a["result"], a["remote_id"]) == \
        ("forgotten", "Karpaty Timber", c, "task", "done", "1")
    assert a["key"].startswith(f"forgotten:{c}:") and a["time"]


def test_warning_level_hides_normal_actions(tmp_path, capsys, restore_logging):
    w = world(tmp_path, RULE)
    w.activity(w.company(1), 90)
    setup("warning", "text")
    w.run()
    assert capsys.readouterr().err == ""


def test_secrets_are_masked_in_json_messages_fields_and_tracebacks(capsys, restore_logging):
    add_secret("hunter2-secret-token")
    setup("debug", "json")
    log = logging.getLogger("connector.test")
    try:
        raise RuntimeError("auth failed with hunter2-secret-token")
    except RuntimeError:
        log.error("call to https://portal.example/rest/1/hunter2-secret-token/crm.deal.list failed", exc_info=True,
                  extra={"url": "https://x/?token=hunter2-secret-token"})
    err = capsys.readouterr().err
    assert "hunter2-secret-token" not in err
    line = _lines(err)[0]
    assert "***" in line["message"] and "***" in line["url"] and "RuntimeError" in line["exc_info"]


def test_text_format_masks_a_traceback_too(capsys, restore_logging):
    add_secret("another-secret-value")
    setup("info", "text")
    try:
        raise ValueError("bad another-secret-value")
    except ValueError:
        logging.getLogger("connector.test").warning("failed", exc_info=True)
    err = capsys.readouterr().err
    assert "another-secret-value" not in err and "ValueError: bad ***" in err
