"""``status`` and ``journal``: local times to the minute, cursors readable, live counts, filters."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from connector import domain as d
from connector import i18n
from connector.cli import main
from connector.report import live_counts, render_cursor
from tests.unit.builders import NOW, k, world


@pytest.fixture(autouse=True)
def english():
    """These tests read the English texts; the config says so, and the default comes back after."""
    i18n.use("en")
    yield
    i18n.use("uk")

RULE = """
- name: forgotten
  type: forgotten
  clients: companies
  inactive_days: 60
  actions:
    - task: {title: "No contact: {{ client.title }}", deadline: 3 workdays}
"""


def test_cursors_are_rendered_as_local_dates_ids_and_short_json():
    tz = "Europe/Kyiv"
    assert render_cursor("2026-11-23T08:00:00+00:00", tz) == "23.11.2026 10:00"
    assert render_cursor('{"t":1796173521,"open":{}}', tz) == "t 02.12.2026 03:05, open 0 entries"
    assert render_cursor('{"mode":"inc","since":"2026-07-01T10:00:00+03:00","v":1}', tz) == "mode inc, since 01.07.2026 10:00, v 1"
    assert render_cursor('{"day":"2026-11-23","p":{"a":"x","b":"y"}}', tz) == "day 23.11.2026, p 2 entries"
    assert render_cursor("4711", tz) == "4711"
    assert render_cursor(None, tz) == "-"


def _world_with_runs(tmp_path):
    w = world(tmp_path, RULE, extra="language: en\n")
    for i in range(1, 4):
        c = w.company(i, f"Client {i}")
        w.activity(c, 90 if i < 3 else 5)
    w.store.write([d.Client(k("company", 99), "bitrix24", "99", d.ClientKind.COMPANY, "Gone", created_at=NOW)])
    w.store.apply("bitrix24", d.Batch("companies", [], cursor='{"since":"2026-11-23T10:59:00+02:00"}', deleted=[k("company", 99)]), NOW)
    w.run()
    return w


def test_live_counts_leave_out_deleted_records(tmp_path):
    w = _world_with_runs(tmp_path)
    counts = live_counts(w.store)
    assert counts[("bitrix24", "clients")] == 3
    assert counts[("bitrix24", "activities")] == 3


def test_status_shows_local_times_to_the_minute_and_readable_cursors(tmp_path):
    _world_with_runs(tmp_path)
    r = CliRunner().invoke(main, ["status", str(tmp_path / "c.yaml")], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "since 23.11.2026 10:59" in r.output  # the cursor, in Kyiv time
    assert "23.11.2026 11:00" in r.output  # when the stream was synced
    assert "Lease: free" in r.output and "Journal: done 2" in r.output
    assert ".0000" not in r.output and "+00:00" not in r.output  # no microseconds, no raw UTC


def test_journal_filters_and_json_with_local_times(tmp_path):
    _world_with_runs(tmp_path)
    cfg = str(tmp_path / "c.yaml")
    r = CliRunner().invoke(main, ["journal", cfg, "--json"])
    rows = json.loads(r.output)
    assert sorted(x["client"] for x in rows) == ["Client 1", "Client 2"]
    assert all(x["updated"] == "2026-11-23T11:00:00+02:00" and x["state"] == "done" for x in rows)
    one = json.loads(CliRunner().invoke(main, ["journal", cfg, "--json", "--client", "Client 2"]).output)
    assert [x["client_key"] for x in one] == [k("company", 2)]
    assert json.loads(CliRunner().invoke(main, ["journal", cfg, "--json", "--state", "failed"]).output) == []
    assert json.loads(CliRunner().invoke(main, ["journal", cfg, "--json", "--since", "2026-11-23T11:01"]).output) == []
    assert len(json.loads(CliRunner().invoke(main, ["journal", cfg, "--json", "--since", "2026-11-23"]).output)) == 2
    r = CliRunner().invoke(main, ["journal", cfg, "--rule", "forgoten"])
    assert r.exit_code == 2 and "no rule named forgoten" in r.output
    plain = CliRunner().invoke(main, ["journal", cfg, "--rule", "forgotten"]).output.splitlines()
    assert len(plain) == 3 and plain[1].split("\t")[:5] == ["23.11.2026 11:00", "forgotten", "Client 1", "task", "done"]


def test_status_names_the_lease_holder(tmp_path):
    from connector.lease import Lease

    w = _world_with_runs(tmp_path)
    with Lease(w.store):
        r = CliRunner().invoke(main, ["status", str(tmp_path / "c.yaml")], terminal_width=200)
    today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Kyiv")).strftime("%d.%m.%Y")
    assert f"Lease: held by PID {os.getpid()}" in r.output and f"since {today}" in r.output and "renewed until" in r.output
