"""Metrics are read from each cycle's report; /healthz follows the schedule (three intervals)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest

from connector.execute import ExecReport
from connector.metrics import Metrics
from connector.plan import Plan, RulePlan
from connector.runner import CycleReport
from connector.sync import SourceReport, SyncReport
from tests.unit.builders import settings


@dataclass
class FakeLease:
    held: bool = True


@dataclass
class FakeDaemon:
    settings: object
    reports: list = field(default_factory=list)
    lease: FakeLease = field(default_factory=FakeLease)

    def run_cycle(self, store=None):
        rep = self.reports.pop(0)
        if isinstance(rep, Exception):
            raise rep
        return rep


def _good(rows: int = 10) -> CycleReport:
    ex = ExecReport()
    ex.count("forgotten", "done", 2)
    ex.count("forgotten", "failed", 1)
    plan = Plan([RulePlan("forgotten", "forgotten", 40, 3), RulePlan("release", "release", 1, 0, refusals=["Client: no pool"])], {})
    return CycleReport(sync=SyncReport([SourceReport("bitrix24", rows=rows), SourceReport("binotel", rows=1)]), plan=plan, execution=ex)


def _failed() -> CycleReport:
    return CycleReport(sync=SyncReport([SourceReport("bitrix24", error="bitrix24: crm.deal.list: 401 NO_AUTH_FOUND")]))


def _value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels or None)


@pytest.fixture
def daemon(tmp_path):
    return FakeDaemon(settings(tmp_path, "[]", extra="schedule: {every_minutes: 10}\nmetrics: {listen: \"127.0.0.1:0\"}\n"))


def test_cycle_figures_are_recorded_from_the_report(daemon):
    m = Metrics(daemon)
    daemon.reports += [_good(10), _good(5), _failed()]
    for _ in range(3):
        daemon.run_cycle()
    assert _value(m, "connector_rows_synced_total", source="bitrix24") == 15
    assert _value(m, "connector_actions_total", rule="forgotten", state="done") == 4
    assert _value(m, "connector_actions_total", rule="forgotten", state="failed") == 2
    assert _value(m, "connector_refusals_total", rule="release") == 2
    assert _value(m, "connector_source_failures_total", source="bitrix24") == 1
    assert _value(m, "connector_cycles_total", outcome="ok") == 2
    assert _value(m, "connector_cycles_total", outcome="source_failed") == 1
    assert _value(m, "connector_cycle_duration_seconds_count") == 3
    assert _value(m, "connector_last_success_timestamp_seconds") == m.last_ok.timestamp()
    assert _value(m, "connector_lease_held") == 1.0
    daemon.lease.held = False
    assert _value(m, "connector_lease_held") == 0.0


def test_an_exception_in_the_cycle_is_counted_and_raised_again(daemon):
    m = Metrics(daemon)
    daemon.reports.append(RuntimeError("store: database is locked"))
    with pytest.raises(RuntimeError):
        daemon.run_cycle()
    assert _value(m, "connector_cycles_total", outcome="error") == 1
    assert "database is locked" in m.last_problem


def test_health_is_ok_within_three_intervals_of_the_last_good_cycle(daemon):
    m = Metrics(daemon)
    daemon.reports += [_good(), _failed()]
    daemon.run_cycle()
    ok_at = m.last_ok
    daemon.run_cycle()
    healthy, body = m.health(ok_at + timedelta(minutes=29))
    assert healthy and body["status"] == "ok" and "401" in body["reason"]
    healthy, body = m.health(ok_at + timedelta(minutes=31))
    assert not healthy and "no good cycle since" in body["reason"] and "401" in body["reason"]


def test_health_before_the_first_cycle_counts_from_the_start(daemon):
    m = Metrics(daemon)
    assert m.health(m.started_at + timedelta(minutes=5))[0]
    healthy, body = m.health(m.started_at + timedelta(hours=1))
    assert not healthy and "since the start" in body["reason"]


def test_a_cron_weekend_pause_is_healthy(tmp_path):
    d = FakeDaemon(settings(tmp_path, "[]", extra='schedule: {cron: "*/10 8-20 * * mon-fri"}\n'))
    m = Metrics(d)
    d.reports.append(_good())
    d.run_cycle()
    m.last_ok = datetime(2026, 11, 27, 18, 50, tzinfo=UTC)  # Friday 20:50 in Kyiv
    assert m.health(datetime(2026, 11, 29, 12, 0, tzinfo=UTC))[0]  # Sunday
    assert not m.health(datetime(2026, 11, 30, 7, 0, tzinfo=UTC))[0]  # Monday 09:00: three runs missed


def test_the_endpoint_serves_metrics_and_healthz(daemon):
    m = Metrics(daemon)
    app = m.app()
    got = {}

    def start_response(status, headers):
        got["status"] = status

    def call(path: str) -> bytes:
        return b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": "", "wsgi.input": io.BytesIO()},
                            start_response))

    body = json.loads(call("/healthz"))
    assert got["status"].startswith("200") and body["status"] == "ok"
    m.started_at -= timedelta(hours=2)
    assert json.loads(call("/healthz"))["status"] == "unhealthy" and got["status"].startswith("503")
    assert b"connector_cycle_duration_seconds" in call("/metrics")
    assert generate_latest(m.registry).count(b"# HELP") >= 8


def test_a_taken_port_is_a_config_error_naming_the_line(tmp_path):
    import socket

    from connector.errors import ConfigError
    from connector.metrics import install

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = FakeDaemon(settings(tmp_path, "[]", extra=f'metrics: {{listen: "127.0.0.1:{port}"}}\n'))
        with pytest.raises(ConfigError) as e:
            install(d)
    problem = e.value.problems[0]
    assert "c.yaml:9: metrics.listen: " in problem and f"127.0.0.1:{port}" in problem


def test_the_server_answers_on_the_bound_port_and_stops(daemon):
    import urllib.request

    m = Metrics(daemon)
    host, port = m.start("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            assert r.status == 200 and b"connector_lease_held 1.0" in r.read()
    finally:
        m.stop()
