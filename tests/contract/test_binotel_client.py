"""Binotel client and source against the loopback emulator (plus `responses` for raw envelopes)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
import responses

from binotel.adapter import ADAPTER
from binotel.client import BinotelClient
from binotel.emulator import BinotelEmulator
from binotel.source import DAY, BinotelSource, chunks
from connector.config import Binotel, Settings
from connector.errors import AuthError, PermanentError, RateLimited, Rejected, TransientError
from connector.ports import Context, FixedClock, SystemClock
from connector.sandbox import generate


class FakeTime:
    """A monotonic clock that only moves when the client sleeps: back-off without waiting."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(round(s, 3))
        self.t += s


@pytest.fixture(scope="module")
def company():
    return generate(companies=40)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def emulator(company, fake_time):
    emu = BinotelEmulator(company, monotonic=fake_time.monotonic)
    emu.start()
    yield emu
    emu.stop()


def make_settings(emu: BinotelEmulator, **kw) -> Binotel:
    return Binotel(**{"key": emu.key, "secret": emu.secret, "url": emu.url, "min_interval_seconds": 0, **kw})


def make_client(settings: Binotel, fake_time: FakeTime, ctx: Context | None = None, **kw) -> BinotelClient:
    ctx = ctx or Context(clock=SystemClock())
    return BinotelClient(settings, ctx, sleep=fake_time.sleep, monotonic=fake_time.monotonic,
                         rate_backoff=10.0, transient_backoff=2.0, **kw)


# ---------------------------------------------------------------- envelope

@responses.activate
def test_envelope_posts_json_with_key_and_secret_merged_and_counts_requests(fake_time) -> None:
    url = "https://api.binotel.com/api/4.0/stats/incoming-calls-for-period.json"
    responses.post(url, json={"status": "success", "callDetails": []})
    settings = Binotel(key="abc123-4567890", secret="aaaaaa-bbbbbb-cccccc-dddddd-eeeeeeee", min_interval_seconds=0)
    ctx = Context(clock=SystemClock())
    client = make_client(settings, fake_time, ctx)
    assert client.calls_for_period("in", 100, 200) == []
    req = responses.calls[0].request
    assert req.headers["Content-Type"] == "application/json"
    assert json.loads(req.body) == {"startTime": 100, "stopTime": 200, "key": "abc123-4567890",
                                    "secret": "aaaaaa-bbbbbb-cccccc-dddddd-eeeeeeee"}
    assert ctx.counter("binotel").requests == 1
    assert ctx.counter("binotel").by_method == {"stats/incoming-calls-for-period": 1}


@responses.activate
@pytest.mark.parametrize("empty", [[], {}, ""])
def test_empty_call_details_in_any_shape_is_no_calls(fake_time, empty) -> None:
    responses.post("https://api.binotel.com/api/4.0/stats/outgoing-calls-for-period.json",
                   json={"status": "success", "callDetails": empty})
    client = make_client(Binotel(key="k-123456", secret="s-123456", min_interval_seconds=0), fake_time)
    assert client.calls_for_period("out", 1, 2) == []


@responses.activate
def test_error_code_as_numeric_string_is_classified(fake_time) -> None:
    responses.post("https://api.binotel.com/api/4.0/settings/list-of-employees.json",
                   json={"status": "error", "code": "121", "message": "Your key or secret is wrong"})
    client = make_client(Binotel(key="k-123456", secret="s-123456", min_interval_seconds=0), fake_time)
    with pytest.raises(AuthError) as ei:
        client.employees()
    assert ei.value.code == 121 and "list-of-employees" in str(ei.value)


@responses.activate
def test_105_is_retried_for_reads_only_and_calls_are_never_retried(fake_time) -> None:
    base = "https://api.binotel.com/api/4.0"
    responses.post(f"{base}/stats/call-details.json", json={"status": "error", "code": 105, "message": "Something went wrong"})
    responses.post(f"{base}/stats/call-details.json", json={"status": "success", "callDetails": {"7": {"generalCallID": "7"}}})
    responses.post(f"{base}/calls/internal-number-to-external-number.json",
                   json={"status": "error", "code": 105, "message": "Something went wrong"})
    client = make_client(Binotel(key="k-123456", secret="s-123456", min_interval_seconds=0), fake_time)
    assert client.call_details(["7"]) == [{"generalCallID": "7"}]
    assert fake_time.slept == [2.0]
    with pytest.raises(TransientError):
        client.call("calls", "internal-number-to-external-number", {"internalNumber": "901", "externalNumber": "0501234567"})
    assert len([c for c in responses.calls if "/calls/" in c.request.url]) == 1


@responses.activate
def test_http_failures_are_transient_and_never_show_the_secret(fake_time) -> None:
    responses.post("https://api.binotel.com/api/4.0/settings/list-of-employees.json", status=502, body="bad gateway")
    responses.post("https://api.binotel.com/api/4.0/settings/list-of-employees.json",
                   body=requests.ConnectionError("refused secret-xyz-123"))
    client = make_client(Binotel(key="key-abc-123", secret="secret-xyz-123", min_interval_seconds=0), fake_time, attempts=2)
    with pytest.raises(TransientError) as ei:
        client.employees()
    assert "secret-xyz-123" not in str(ei.value) and "key-abc-123" not in str(ei.value)
    assert len(responses.calls) == 2


# ---------------------------------------------------------------- error codes over loopback

def test_bad_key_is_auth_error_121(emulator, fake_time) -> None:
    client = make_client(make_settings(emulator, secret="wrong-secret-000"), fake_time)
    with pytest.raises(AuthError) as ei:
        client.employees()
    assert ei.value.code == 121
    assert "wrong-secret-000" not in str(ei.value)
    assert len(emulator.requests) == 1  # permanent: not retried


def test_company_disabled_is_auth_error_120(emulator, fake_time) -> None:
    emulator.company_disabled = True
    with pytest.raises(AuthError) as ei:
        make_client(make_settings(emulator), fake_time).employees()
    assert ei.value.code == 120


def test_unknown_method_is_permanent_102_and_missing_params_rejected_103(emulator, fake_time) -> None:
    client = make_client(make_settings(emulator), fake_time)
    with pytest.raises(PermanentError) as ei:
        client.call("stats", "no-such-method")
    assert ei.value.code == 102 and not isinstance(ei.value, Rejected)
    with pytest.raises(Rejected) as ei:
        client.call("stats", "incoming-calls-for-period", {"startTime": 1})
    assert ei.value.code == 103
    assert len(emulator.requests) == 2


def test_window_over_24_hours_is_rejected_104(emulator, fake_time) -> None:
    client = make_client(make_settings(emulator), fake_time)
    t = int(emulator.now())
    with pytest.raises(Rejected) as ei:
        client.calls_for_period("all", t - DAY - 1, t)
    assert ei.value.code == 104
    assert isinstance(client.calls_for_period("all", t - DAY, t), list)
    with pytest.raises(Rejected):
        client.call("stats", "outgoing-calls-for-period", {"startTime": "yesterday", "stopTime": t})


def test_106_backs_off_exponentially_then_succeeds(emulator, fake_time) -> None:
    emulator.rate_limit(2, per_second=1 / 25)  # two requests, then one more every 25 s
    client = make_client(make_settings(emulator), fake_time)
    client.employees()
    client.employees()
    employees = client.employees()  # 106, wait 10 s, 106, wait 20 s, then a token is back
    assert employees
    assert fake_time.slept == [10.0, 20.0]
    assert [r for r, _ in emulator.requests].count("settings/list-of-employees") == 5


def test_106_gives_up_as_rate_limited_after_the_attempts(emulator, fake_time) -> None:
    emulator.rate_limit(0)
    client = make_client(make_settings(emulator), fake_time, attempts=3)
    with pytest.raises(RateLimited) as ei:
        client.employees()
    assert ei.value.code == 106
    assert fake_time.slept == [10.0, 20.0]


def test_requests_are_spaced_by_min_interval(emulator, fake_time) -> None:
    client = make_client(make_settings(emulator, min_interval_seconds=3), fake_time)
    for _ in range(3):
        client.employees()
    assert fake_time.slept == [3.0, 3.0]


# ---------------------------------------------------------------- loose types through the source

def test_loose_wire_types_map_through_the_source(emulator, company, fake_time) -> None:
    at = int(company.anchor.timestamp()) - 3600
    emulator.add_call({"generalCallID": 99000001, "startTime": at, "callType": 1, "externalNumber": "Unknown",
                       "internalNumber": "", "waitsec": "4", "billsec": 12.0, "disposition": "ANSWER",
                       "customerData": [], "employeeData": "", "historyData": ""})
    ctx = Context(clock=FixedClock(company.anchor))
    src = BinotelSource(make_settings(emulator), ctx, client=make_client(make_settings(emulator), fake_time, ctx))
    calls = {c.source_id: c for b in src.pull("calls", None) for c in b.records}
    c = calls["99000001"]
    assert (c.direction, c.phone, c.wait_s, c.talk_s, c.answered, c.manager_key) == ("out", "Unknown", 4, 12, True, None)


def test_emulator_serves_the_captured_loose_types(emulator, company, fake_time) -> None:
    client = make_client(make_settings(emulator), fake_time)
    t = int(company.anchor.timestamp())
    rows = client.calls_for_period("in", t - 5 * DAY, t)
    assert rows
    assert all(isinstance(r["startTime"], str) and isinstance(r["callType"], str) and isinstance(r["isNewCall"], str)
               for r in rows)
    assert all(isinstance(r["waitsec"], int) for r in rows)
    assert {type(r["billsec"]) for r in rows} == {str, int}  # mixed within one response
    assert all(r["customerData"] == "" for r in rows)
    assert any(r["employeeData"] == [] for r in rows)
    assert any(len(r["historyData"]) >= 2 for r in rows)  # multi-attempt ring history


# ---------------------------------------------------------------- windows, overlap, provisional calls

def test_chunks_cover_the_window_without_gaps_or_overlaps() -> None:
    parts = chunks(1000, 1000 + 2 * DAY + 5)
    assert parts == [(1000, 1000 + DAY - 1), (1000 + DAY, 1000 + 2 * DAY - 1), (1000 + 2 * DAY, 1000 + 2 * DAY + 5)]
    assert chunks(10, 9) == []


def test_first_run_fetches_lookback_in_day_chunks_each_call_once(emulator, company, fake_time) -> None:
    ctx = Context(clock=FixedClock(company.anchor))
    settings = make_settings(emulator)
    src = BinotelSource(settings, ctx, client=make_client(settings, fake_time, ctx), lookback_days=30, settle_seconds=60)
    batches = list(src.pull("calls", None))
    end = int(company.anchor.timestamp()) - 60
    start = end - 30 * DAY + 1
    windows = [(p["startTime"], p["stopTime"]) for m, p in emulator.requests if m == "stats/list-of-calls-for-period"]
    assert windows == chunks(start, end)
    assert all(b - a < DAY for a, b in windows)
    assert len(emulator.requests) == len(windows)  # one request a day, both directions
    seen = [c.source_id for b in batches for c in b.records]
    assert len(seen) == len(set(seen))
    expected = {cid for cid, r in emulator.calls.items() if start <= int(r["startTime"]) <= end}
    assert set(seen) == expected
    assert json.loads(batches[-1].cursor)["t"] == end
    # cursors only move forward, one per chunk
    ts = [json.loads(b.cursor)["t"] for b in batches]
    assert ts == sorted(ts) and len(ts) == len(windows)
    # the stories' calls are there: missed, called back, hidden number
    missed = [c for b in batches for c in b.records if c.direction == "in" and not c.answered and c.final]
    assert any(c.phone == "Unknown" for c in missed)
    assert any(c.internal_number == "Sales queue" for c in missed)


def test_online_call_is_provisional_then_refetched_final_through_the_overlap(emulator, company, fake_time) -> None:
    settings = make_settings(emulator)
    ctx = Context(clock=FixedClock(company.anchor))
    src = BinotelSource(settings, ctx, client=make_client(settings, fake_time, ctx))
    first = list(src.pull("calls", None))
    live_id = next(iter(emulator.live))
    online = [c for b in first for c in b.records if c.source_id == live_id]
    assert len(online) == 1 and online[0].final is False and online[0].disposition == "ONLINE"
    cursor = first[-1].cursor
    assert live_id in json.loads(cursor)["open"]

    emulator.advance(15 * 60)  # the call ends 5 minutes after the anchor
    ctx.clock = FixedClock(company.anchor + timedelta(minutes=15))
    emulator.requests.clear()
    second = list(src.pull("calls", cursor))
    windows = [(p["startTime"], p["stopTime"]) for m, p in emulator.requests if m == "stats/list-of-calls-for-period"]
    assert windows[0][0] == json.loads(cursor)["t"] - settings.overlap_seconds  # overlap re-fetch
    done = [c for b in second for c in b.records if c.source_id == live_id]
    assert len(done) == 1
    assert done[0].key == online[0].key
    assert done[0].final and done[0].answered and done[0].disposition == "ANSWER" and done[0].talk_s > 0
    assert live_id not in json.loads(second[-1].cursor)["open"]


def test_provisional_call_older_than_the_overlap_is_reread_by_call_details(emulator, company, fake_time) -> None:
    settings = make_settings(emulator, overlap_seconds=300)
    ctx = Context(clock=FixedClock(company.anchor))
    src = BinotelSource(settings, ctx, client=make_client(settings, fake_time, ctx))
    cursor = list(src.pull("calls", None))[-1].cursor
    live_id = next(iter(emulator.live))
    emulator.complete(live_id)
    ctx.clock = FixedClock(company.anchor + timedelta(minutes=30))
    emulator.requests.clear()
    batches = list(src.pull("calls", cursor))
    assert emulator.requests[0] == ("stats/call-details", {"generalCallID": [live_id]})
    first = batches[0]
    assert [c.source_id for c in first.records] == [live_id] and first.records[0].final
    assert json.loads(first.cursor) == {"t": json.loads(cursor)["t"], "open": {}}


def test_full_pull_ignores_the_cursor(emulator, company, fake_time) -> None:
    settings = make_settings(emulator)
    ctx = Context(clock=FixedClock(company.anchor))
    src = BinotelSource(settings, ctx, client=make_client(settings, fake_time, ctx), lookback_days=2)
    far = json.dumps({"t": int(company.anchor.timestamp()) - 60, "open": {}})
    assert len(list(src.pull("calls", far, full=True))) == 2


# ---------------------------------------------------------------- other read methods

def test_employees_stream_keyed_by_email_without_sip_secrets(emulator, company, fake_time) -> None:
    settings = make_settings(emulator)
    ctx = Context(clock=FixedClock(company.anchor))
    src = BinotelSource(settings, ctx, client=make_client(settings, fake_time, ctx))
    [batch] = list(src.pull("employees", None))
    active = [m for m in company.managers if m.active]
    assert {m.key for m in batch.records} == {f"binotel:user:{m.email.lower()}" for m in active}
    assert {m.extension for m in batch.records} == {m.extension for m in active}
    assert batch.sweep is not None and batch.sweep.kind == "user" and batch.sweep.live_ids == {m.source_id for m in batch.records}
    assert "fake-sip-secret" not in repr(batch)
    raw = make_client(settings, fake_time).employees()
    assert any(k.startswith("notLinkedToUser_") for k, _ in raw)
    assert all("password" not in item.get("endpointData", {}) for _, item in raw)


def test_call_record_link_works_then_expires(emulator, company, fake_time) -> None:
    client = make_client(make_settings(emulator), fake_time)
    answered = next(cid for cid, r in emulator.calls.items() if r["disposition"] == "ANSWER")
    url = client.call_record_url(answered)
    assert url.startswith("http://127.0.0.1:")
    assert requests.get(url, timeout=5).status_code == 200
    emulator.advance(15 * 60 + 1)
    assert requests.get(url, timeout=5).status_code == 404
    missed = next(cid for cid, r in emulator.calls.items() if r["disposition"] == "NOANSWER")
    with pytest.raises(Rejected):
        client.call_record_url(missed)


def test_lost_calls_today_both_names_and_incoming_since(emulator, company, fake_time) -> None:
    client = make_client(make_settings(emulator), fake_time)
    a = client.call("stats", "list-of-lost-calls-today")["callDetails"]
    b = client.call("stats", "list-of-lost-calls-for-today")["callDetails"]
    assert a == b and a
    assert all(r["comment"] == "" and r["callType"] == "0" for r in a.values())
    missed_story = next(c for c in company.calls if c.disposition == "NOANSWER" and c.external_number != "Unknown"
                        and c.start > company.anchor - timedelta(hours=1))
    assert str(missed_story.id) in a
    since = client.call("stats", "all-incoming-calls-since", {"timestamp": int(company.anchor.timestamp()) - 3600})
    assert all(r["callType"] == "0" for r in since["callDetails"].values())
    with pytest.raises(Rejected):
        client.call_details(["1"])


def test_adapter_check_and_sandbox(company) -> None:
    sb = ADAPTER.sandbox(company)
    env = sb.start()
    try:
        assert env["BINOTEL_URL"].startswith("http://127.0.0.1:") and env["BINOTEL_URL"].endswith("/api/4.0")
        good = Settings(binotel=Binotel(key=env["BINOTEL_KEY"], secret=env["BINOTEL_SECRET"], url=env["BINOTEL_URL"],
                                        min_interval_seconds=0))
        ctx = Context(clock=FixedClock(company.anchor))
        assert ADAPTER.configured(good) and not ADAPTER.configured(Settings())
        assert ADAPTER.sink(good, ctx) is None
        assert ADAPTER.push_server(good, lambda calls: None) is None
        [res] = ADAPTER.check(good, ctx)
        assert res.ok, res.detail
        bad = Settings(binotel=Binotel(key=env["BINOTEL_KEY"], secret="nope-nope", url=env["BINOTEL_URL"],
                                       min_interval_seconds=0))
        [res] = ADAPTER.check(bad, ctx)
        assert not res.ok and "121" in res.detail
    finally:
        sb.stop()


# ---------------------------------------------------------------- redirects and a total deadline


def test_a_redirect_is_not_followed_and_the_key_and_secret_do_not_reach_its_target():
    from tests.contract.hostile import Recorder, Redirector

    target = Recorder("127.0.0.2")
    redirect = Redirector(target.origin)
    try:
        settings = Binotel(key="key-abcdef-123", secret="secret-abcdef-123", url=redirect.origin + "/api/4.0",
                           min_interval_seconds=0)
        client = BinotelClient(settings, Context(clock=SystemClock()), attempts=1)
        with pytest.raises(PermanentError, match="redirected the request to 127.0.0.2") as e:
            client.employees()
        assert redirect.hits == 1 and target.requests == []
        assert "secret-abcdef-123" not in str(e.value)
    finally:
        redirect.stop()
        target.stop()


def test_a_dripping_server_ends_in_a_clear_timeout_within_the_deadline():
    from tests.contract.hostile import DripServer, http_answer

    drip = DripServer(http_answer(b'{"status":"success","listOfEmployees":[]}'), interval=0.05)
    try:
        settings = Binotel(key="key-abcdef-123", secret="secret-abcdef-123", url=drip.url + "/api/4.0", min_interval_seconds=0)
        client = BinotelClient(settings, Context(clock=SystemClock()), attempts=1, timeout=1.0)
        with pytest.raises(TransientError, match="no complete answer within 1 s"):
            client.employees()
        assert drip.completed == 0
    finally:
        drip.stop()


def test_a_pbx_without_the_both_ways_method_is_read_incoming_and_outgoing(emulator, company, fake_time, caplog) -> None:
    del emulator.methods["stats/list-of-calls-for-period"]  # answers 102 "No such method"
    ctx = Context(clock=FixedClock(company.anchor))
    settings = make_settings(emulator)
    src = BinotelSource(settings, ctx, client=make_client(settings, fake_time, ctx), lookback_days=3, settle_seconds=60)
    batches = list(src.pull("calls", None))
    methods = [m for m, _ in emulator.requests]
    assert methods[0] == "stats/list-of-calls-for-period"  # asked once, then never again
    assert methods[1:] == ["stats/incoming-calls-for-period", "stats/outgoing-calls-for-period"] * 3
    end = int(company.anchor.timestamp()) - 60
    expected = {cid for cid, r in emulator.calls.items() if end - 3 * DAY < int(r["startTime"]) <= end}
    assert {c.source_id for b in batches for c in b.records} == expected
    assert "No such method" in caplog.text and "separately" in caplog.text


def test_employees_are_read_at_most_once_an_hour(emulator, company, fake_time) -> None:
    ctx = Context(clock=FixedClock(company.anchor))
    settings = make_settings(emulator)
    src = BinotelSource(settings, ctx, client=make_client(settings, fake_time, ctx))
    first = list(src.pull("employees", None, full=True))
    assert len(first) == 1 and first[0].records and first[0].cursor == str(int(company.anchor.timestamp()))
    ctx.clock = FixedClock(company.anchor + timedelta(minutes=59))
    assert list(src.pull("employees", first[0].cursor)) == []
    assert len(list(src.pull("employees", first[0].cursor, full=True))) == 1  # a full sync reads them anyway
    ctx.clock = FixedClock(company.anchor + timedelta(minutes=61))
    assert len(list(src.pull("employees", first[0].cursor))) == 1
    ctx.clock = FixedClock(company.anchor - timedelta(minutes=5))  # a clock set back reads again
    assert len(list(src.pull("employees", first[0].cursor))) == 1
    assert [m for m, _ in emulator.requests].count("settings/list-of-employees") == 4
