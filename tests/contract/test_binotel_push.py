"""The Binotel webhook receiver against the emulator's webhook sender, over loopback."""

from __future__ import annotations

import http.client
import json
import logging
from urllib.parse import urlencode

import pytest

from binotel.adapter import ADAPTER
from binotel.emulator import SUCCESS_BODY, BinotelEmulator, post_form
from binotel.push import PushServer
from connector.config import Binotel, BinotelPush, Settings
from connector.sandbox import generate
from connector.store import Store

TOKEN = "push-token-3f9a1c77e2"


@pytest.fixture(scope="module")
def emulator():
    emu = BinotelEmulator(generate(companies=30))  # only its sender and records are used: no server
    yield emu


class Recorder:
    def __init__(self) -> None:
        self.calls: list = []
        self.fail_next = 0

    def __call__(self, calls: list) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("disk full")
        self.calls.extend(calls)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def start_server(recorder, **kw) -> PushServer:
    settings = BinotelPush(**{"listen": "127.0.0.1:0", "token": TOKEN, **kw})
    server = PushServer(settings, recorder)
    server.start()
    return server


@pytest.fixture
def server(recorder):
    srv = start_server(recorder)
    yield srv
    srv.stop()


def url_of(server: PushServer, token: str = TOKEN) -> str:
    host, port = server.address
    return f"http://{host}:{port}/binotel/{token}"


def answered_call_id(emu: BinotelEmulator) -> str:
    return next(cid for cid, r in emu.calls.items() if r["disposition"] == "ANSWER" and r["employeeData"])


def test_valid_push_records_one_call_and_answers_the_literal_success_body(server, recorder, emulator) -> None:
    cid = answered_call_id(emulator)
    attempts = emulator.push_completed(cid, url_of(server))
    assert [(a.attempts_counter, a.status, a.body) for a in attempts] == [(1, 200, SUCCESS_BODY)]
    assert len(recorder.calls) == 1
    call = recorder.calls[0]
    wire = emulator.calls[cid]
    assert call.key == f"binotel:call:{cid}" and call.phone == wire["externalNumber"]
    assert call.answered and call.final and call.manager_key == f"binotel:user:{wire['employeeData']['email'].lower()}"
    assert call.talk_s == int(wire["billsec"]) and call.wait_s == int(wire["waitsec"])


def test_success_answer_is_json_typed_and_byte_exact(server, emulator) -> None:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("POST", f"/binotel/{TOKEN}", body=urlencode(emulator.completed_form(answered_call_id(emulator), 1)),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
    assert resp.read() == b'{"status":"success"}'
    conn.close()


def test_missed_queue_call_push_maps_employee_data_sent_as_empty_string(server, recorder, emulator) -> None:
    cid = next(cid for cid, r in emulator.calls.items() if r["disposition"] == "NOANSWER" and r["employeeData"] == [])
    form = dict(emulator.completed_form(cid, 1))
    assert form["callDetails[employeeData]"] == "" and form["callDetails[customerData]"] == ""
    emulator.push_completed(cid, url_of(server))
    [call] = recorder.calls
    assert not call.answered and call.final and call.manager_key is None


def test_replay_gives_the_same_key_and_the_store_keeps_one_row(server, recorder, emulator, tmp_path) -> None:
    cid = answered_call_id(emulator)
    emulator.push_completed(cid, url_of(server))
    emulator.push_completed(cid, url_of(server))
    assert [c.key for c in recorder.calls] == [f"binotel:call:{cid}"] * 2
    store = Store(f"sqlite:///{tmp_path / 'push.db'}")
    store.write(recorder.calls[:1])
    store.write(recorder.calls[1:])
    from sqlalchemy import func, select

    from connector.store import calls as calls_table

    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(calls_table)).scalar() == 1


def test_sender_retries_with_increasing_counter_until_success(server, recorder, emulator) -> None:
    recorder.fail_next = 2  # the store fails twice: no success body, Binotel redelivers
    attempts = emulator.push_completed(answered_call_id(emulator), url_of(server), max_attempts=7)
    assert [a.attempts_counter for a in attempts] == [1, 2, 3]
    assert [a.status for a in attempts] == [500, 500, 200] and attempts[-1].body == SUCCESS_BODY
    assert len(recorder.calls) == 1


def test_sender_gives_up_after_max_attempts(server, recorder, emulator) -> None:
    attempts = emulator.push_completed(answered_call_id(emulator), url_of(server, "wrong-token"), max_attempts=4)
    assert [a.attempts_counter for a in attempts] == [1, 2, 3, 4]
    assert all(a.status == 404 for a in attempts)
    assert recorder.calls == []


def test_wrong_token_is_refused_and_logged_without_the_token(server, recorder, emulator, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="binotel.push")
    form = emulator.completed_form(answered_call_id(emulator), 1)
    for token in ("wrong-token", TOKEN[:-1], TOKEN + "x", ""):
        status, _ = post_form(url_of(server, token), form)
        assert status == 404
    status, _ = post_form(url_of(server).replace("/binotel/", "/other/"), form)
    assert status == 404  # not a route at all: the shared server answers it
    assert recorder.calls == [] and server.refused == 4
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


def test_disallowed_source_is_refused_even_with_forwarded_for(recorder, emulator) -> None:
    srv = start_server(recorder, allow_from=["194.88.218.114", "194.88.219.64/27"])
    try:
        host, port = srv.address
        conn = http.client.HTTPConnection(host, port, timeout=5)
        with pytest.raises(OSError):  # closed at accept: not even an HTTP answer
            conn.request("POST", f"/binotel/{TOKEN}", body=urlencode(emulator.completed_form(answered_call_id(emulator), 1)),
                         headers={"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": "194.88.218.114"})
            conn.getresponse()
        conn.close()
        assert recorder.calls == [] and srv.server.refused_peers == 1
    finally:
        srv.stop()


def test_allow_list_admits_a_listed_source_address(recorder, emulator) -> None:
    srv = start_server(recorder, allow_from=["127.0.0.2/32"])
    try:
        cid = answered_call_id(emulator)
        assert emulator.push_completed(cid, url_of(srv), source_address="127.0.0.3", max_attempts=1)[0].status == 0  # cut
        assert emulator.push_completed(cid, url_of(srv), source_address="127.0.0.2")[-1].body == SUCCESS_BODY
        assert len(recorder.calls) == 1
    finally:
        srv.stop()


def test_empty_allow_list_means_loopback_only(server) -> None:
    assert server.allowed("127.0.0.1") and server.allowed("127.5.6.7") and server.allowed("::1")
    assert server.allowed("::ffff:127.0.0.1")
    assert not server.allowed("194.88.218.114") and not server.allowed("10.0.0.1") and not server.allowed("junk")


def test_oversized_body_is_refused_unread(recorder, emulator) -> None:
    srv = start_server(recorder, max_body_bytes=512)
    try:
        status, _ = post_form(url_of(srv), emulator.completed_form(answered_call_id(emulator), 1))
        assert status == 413
        assert recorder.calls == []
    finally:
        srv.stop()


@pytest.mark.parametrize("body, content_type", [
    (b"requestType=apiCallCompleted&callDetails%5BgeneralCallID%5D=", "application/x-www-form-urlencoded"),
    (b"requestType=apiCallCompleted", "application/x-www-form-urlencoded"),
    (b"requestType=apiCallCompleted&%5Bbad%5D=1", "application/x-www-form-urlencoded"),
    (b"requestType=hangupTheCall&generalCallID=1", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
    (b'{"requestType": "apiCallCompleted", "callDetails": ', "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'{"requestType": "apiCallCompleted", "callDetails": {"generalCallID": "5", "startTime": "x", "callType": "0"}}',
     "application/json"),
])
def test_malformed_or_unknown_bodies_are_refused_and_nothing_recorded(server, recorder, body, content_type) -> None:
    status, reply = post_form(url_of(server), body, content_type=content_type)
    assert status == 400 and reply != SUCCESS_BODY
    assert recorder.calls == []


def test_json_body_is_accepted_too(server, recorder, emulator) -> None:
    cid = answered_call_id(emulator)
    body = json.dumps({"requestType": "apiCallCompleted", "attemptsCounter": 1, "callDetails": emulator.calls[cid]}).encode()
    status, reply = post_form(url_of(server), body, content_type="application/json")
    assert (status, reply) == (200, SUCCESS_BODY)
    assert recorder.calls[0].key == f"binotel:call:{cid}"


def test_api_call_settings_gets_an_empty_object(server, recorder, emulator) -> None:
    status, reply = emulator.push_call_settings(url_of(server), "0501234567")
    assert (status, reply) == (200, b"{}")
    assert recorder.calls == []


def test_only_post_is_accepted(server) -> None:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", f"/binotel/{TOKEN}")
    assert conn.getresponse().status == 405
    conn.close()


def test_adapter_builds_the_push_server_only_when_configured(recorder) -> None:
    settings = Settings(binotel=Binotel(key="k-123456", secret="s-123456",
                                        push=BinotelPush(listen="127.0.0.1:0", token=TOKEN)))
    srv = ADAPTER.push_server(settings, recorder)
    assert isinstance(srv, PushServer)
    srv.start()
    try:
        assert srv.address[0] == "127.0.0.1" and srv.address[1] > 0
    finally:
        srv.stop()


def _wait_until(condition, limit: float = 30.0) -> None:
    """Wait for the server's loop to catch up (a safety bound, not a speed assertion)."""
    import time

    end = time.monotonic() + limit
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)


def test_slow_peers_outside_the_allow_list_are_cut_at_accept_while_a_push_is_served(recorder, emulator) -> None:
    import socket

    srv = start_server(recorder, allow_from=["127.0.0.2/32"])
    slow: list[socket.socket] = []
    try:
        host, port = srv.address
        for _ in range(600):  # each would drip one byte at a time, holding a worker in the old server
            s = socket.create_connection((host, port), timeout=10, source_address=("127.0.0.3", 0))
            try:
                s.sendall(b"P")
            except OSError:
                pass  # already cut
            slow.append(s)
        cid = answered_call_id(emulator)
        attempts = emulator.push_completed(cid, url_of(srv), source_address="127.0.0.2", max_attempts=1)
        assert [(a.status, a.body) for a in attempts] == [(200, SUCCESS_BODY)] and len(recorder.calls) == 1
        _wait_until(lambda: srv.server.refused_peers >= 600 and srv.server.active == 0)
        assert srv.server.refused_peers == 600 and srv.server.active == 0
        for s in slow:  # every slow peer finds its connection closed, nothing was read from it
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for s in slow:
            s.close()
        srv.stop()
