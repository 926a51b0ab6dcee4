"""TurboSMS client and the message sink against the loopback TurboSMS emulator."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from connector.config import Messaging, Settings, Sms
from connector.errors import AuthError, PermanentError, Rejected, TransientError
from connector.ports import Context, PlannedAction, SystemClock
from sms.adapter import ADAPTER
from sms.emulator import TurboSmsEmulator, sms_parts
from sms.log import LogProvider
from sms.sink import MessageSink
from sms.turbosms import TurboSmsClient, classify, sequence_id

CLIENT = "+380501234567"


@pytest.fixture
def emulator():
    emu = TurboSmsEmulator(balance=10.0, price_per_part=1.0, stoplist={"380671112233"}, undeliverable={"380931112233"})
    emu.start()
    yield emu
    emu.stop()


def messaging(emu: TurboSmsEmulator, **kw) -> Messaging:
    return Messaging(sms=Sms(**{"provider": "turbosms", "token": emu.token, "sender": "MyShop", "url": emu.url, **kw}))


def sink_for(emu: TurboSmsEmulator, ctx: Context | None = None) -> MessageSink:
    return MessageSink(messaging(emu), ctx or Context(clock=SystemClock()))


def sms_action(key: str = "missed_call:phone:+380501234567:2026-11-23:0", phone: str = CLIENT,
               text: str = "Вибачте, ми пропустили ваш дзвінок. Передзвонимо!") -> PlannedAction:
    return PlannedAction(key=key, rule="missed_call", type="sms", system="sms", subject_key=f"phone:{phone}",
                         client_key=None, payload={"phone": phone, "text": text, "client_key": None}, reason="test")


# ---------------------------------------------------------------- send

def test_send_posts_bearer_json_and_returns_sent_with_message_id(emulator) -> None:
    ctx = Context(clock=SystemClock())
    res = sink_for(emulator, ctx).execute(sms_action())
    assert res.status == "sent" and res.remote_id == emulator.outbox[0].message_id
    [(path, auth, data)] = emulator.requests
    assert (path, auth) == ("/message/send.json", "bearer")
    assert data["recipients"] == ["380501234567"] and data["sms"]["sender"] == "MyShop"
    assert data["sequence_id"] == sequence_id(sms_action().key)
    assert emulator.outbox[0].text.startswith("Вибачте")
    assert ctx.counter("sms").requests == 1


def test_sequence_id_replay_sends_no_second_message(emulator) -> None:
    sink = sink_for(emulator)
    first = sink.execute(sms_action())
    balance = emulator.balance
    again = sink.execute(sms_action())  # the executor retrying after a timeout
    assert again.remote_id == first.remote_id and "earlier result" in again.detail
    assert len(emulator.outbox) == 1 and emulator.balance == balance
    other = sink.execute(sms_action(key="missed_call:other:0"))
    assert other.remote_id != first.remote_id and len(emulator.outbox) == 2


def test_reconcile_resends_with_the_same_sequence_id_and_never_duplicates(emulator) -> None:
    sink = sink_for(emulator)
    done = sink.execute(sms_action())
    found = sink.reconcile(sms_action())
    assert found is not None and found.remote_id == done.remote_id and "earlier request" in found.detail
    assert len(emulator.outbox) == 1
    lost = sink.reconcile(sms_action(key="k:lost:0"))  # the first request never arrived
    assert lost is not None and len(emulator.outbox) == 2


def test_partial_accept_reads_the_per_recipient_items(emulator) -> None:
    client = TurboSmsClient(messaging(emulator).sms, Context(clock=SystemClock()))
    data = client.request("message", "send", {"recipients": ["380501234567", "380671112233", "380441234567"],
                                              "sms": {"sender": "MyShop", "text": "Hello"}})
    assert data["response_code"] == 802
    codes = {i["phone"]: (i["response_code"], bool(i["message_id"])) for i in data["response_result"]}
    assert codes == {"380501234567": (0, True), "380671112233": (404, False), "380441234567": (305, False)}
    assert len(emulator.outbox) == 1 and emulator.balance == 9.0  # only the accepted part is charged


def test_stoplist_number_is_rejected_and_never_resent(emulator) -> None:
    with pytest.raises(Rejected) as ei:
        sink_for(emulator).execute(sms_action(phone="+380671112233"))
    assert ei.value.code == 404 and "stop-list" in str(ei.value)
    assert emulator.outbox == []


def test_invalid_phone_at_the_gateway_is_rejected(emulator) -> None:
    client = TurboSmsClient(messaging(emulator).sms, Context(clock=SystemClock()))
    with pytest.raises(Rejected) as ei:
        client.send("+380441234567", "Hello", seq_id=None)  # a landline: the gateway refuses it
    assert ei.value.code == 305


@pytest.mark.parametrize("phone", ["+380441234567", "0441234567", "Unknown", "12345", "", "0800501234"])
def test_sink_refuses_non_mobile_numbers_before_calling(emulator, phone: str) -> None:
    with pytest.raises(Rejected, match="not a mobile number"):
        sink_for(emulator).execute(sms_action(phone=phone))
    assert emulator.requests == []


def test_national_spelling_is_sent_as_380_digits(emulator) -> None:
    sink_for(emulator).execute(sms_action(phone="(050) 123-45-67"))
    assert emulator.outbox[0].phone == "380501234567"


def test_no_money_is_permanent(emulator) -> None:
    emulator.balance = 0.5
    with pytest.raises(PermanentError) as ei:
        sink_for(emulator).execute(sms_action())
    assert ei.value.code == 203 and not isinstance(ei.value, (Rejected, TransientError))
    assert emulator.outbox == []


def test_bad_token_is_auth_error_without_the_token(emulator) -> None:
    bad = MessageSink(messaging(emulator, token="wrong-token-0123456789"), Context(clock=SystemClock()))
    with pytest.raises(AuthError) as ei:
        bad.execute(sms_action())
    assert ei.value.code == 105 and "wrong-token-0123456789" not in str(ei.value)
    emulator.blocked = True
    with pytest.raises(AuthError) as ei:
        sink_for(emulator).execute(sms_action())
    assert ei.value.code == 106


# ---------------------------------------------------------------- delivery

def test_delivery_status_progression(emulator) -> None:
    sink = sink_for(emulator)
    ok = sink.execute(sms_action(key="a:0"))
    bad = sink.execute(sms_action(key="b:0", phone="+380931112233"))
    sent = [("a:0", ok.remote_id), ("b:0", bad.remote_id), ("email:0", "<cn-x@shop.example>")]
    assert sink.delivery(sent) == {}  # Queued: in transit
    emulator.advance()
    assert sink.delivery(sent) == {}  # Sent: still in transit
    emulator.advance()
    res = sink.delivery(sent)
    assert res["a:0"].status == "delivered" and res["b:0"].status == "failed" and "Undelivered" in res["b:0"].detail
    assert "email:0" not in res
    assert emulator.outbox[0].history == ["Queued", "Sent", "Delivered"]
    [(path, _, data)] = [r for r in emulator.requests if r[0] == "/message/status.json"][-1:]
    assert data == {"messages": [ok.remote_id, bad.remote_id]}


def test_unknown_message_id_is_failed(emulator) -> None:
    assert sink_for(emulator).delivery([("x:0", "00000000-0000-0000-0000-000000000000")])["x:0"].status == "failed"


# ---------------------------------------------------------------- gateway details

@pytest.mark.parametrize("kind", ["query", "form", "basic", "bearer"])
def test_emulator_accepts_every_auth_variant(emulator, kind: str) -> None:
    url = f"{emulator.url}/user/balance.json"
    t = emulator.token
    if kind == "query":
        r = requests.get(url, params={"token": t}, timeout=5)
    elif kind == "form":
        r = requests.post(url, data={"token": t}, timeout=5)
    elif kind == "basic":
        r = requests.post(url, headers={"Authorization": f"Basic {t}"}, timeout=5)
    else:
        r = requests.post(url, json={}, headers={"Authorization": f"Bearer {t}"}, timeout=5)
    assert r.status_code == 200 and r.json() == {"response_code": 0, "response_status": "OK",
                                                   "response_result": {"balance": 10.0}}
    assert emulator.requests[-1][1] == kind
    assert requests.get(url, timeout=5).json()["response_code"] == 103
    assert requests.post(url, data={"token": "nope"}, timeout=5).json()["response_code"] == 105
    assert requests.get(f"{emulator.url}/message/ping", timeout=5).json()["response_status"] == "PONG"


def test_form_encoded_send_with_query_token(emulator) -> None:
    r = requests.post(f"{emulator.url}/message/send.json?token={emulator.token}",
                      data={"recipients[]": ["380501234567"], "sms[sender]": "MyShop", "sms[text]": "Hi"}, timeout=5)
    assert r.status_code == 200 and r.json()["response_code"] == 800


def test_balance_decreases_per_part() -> None:
    assert sms_parts("a" * 160) == 1 and sms_parts("a" * 161) == 2 and sms_parts("a" * 306) == 2 and sms_parts("a" * 307) == 3
    assert sms_parts("я" * 70) == 1 and sms_parts("я" * 71) == 2 and sms_parts("я" * 134) == 2 and sms_parts("я" * 135) == 3
    assert sms_parts("[" * 80) == 1 and sms_parts("[" * 81) == 2  # GSM extension characters count twice
    emu = TurboSmsEmulator(balance=10.0, price_per_part=1.0)
    emu.start()
    try:
        client = TurboSmsClient(Sms(provider="turbosms", token=emu.token, sender="MyShop", url=emu.url),
                                Context(clock=SystemClock()))
        client.send(CLIENT, "я" * 71, seq_id=None)
        assert client.balance() == 8.0
        client.send(CLIENT, "ok", seq_id=None)
        assert client.balance() == 7.0
    finally:
        emu.stop()


@pytest.mark.parametrize("code, cls", [(105, AuthError), (106, AuthError), (301, AuthError), (203, PermanentError),
                                       (404, Rejected), (305, Rejected), (103, Rejected), (400, Rejected),
                                       (502, Rejected), (503, TransientError), (999, TransientError)])
def test_response_codes_classify(code: int, cls: type) -> None:
    err = classify(code, "X", what="message/send")
    assert type(err) is cls


@responses.activate
def test_http_and_transport_failures_are_transient() -> None:
    responses.post("https://api.turbosms.ua/message/send.json", status=503)
    responses.post("https://api.turbosms.ua/message/send.json", body=requests.ConnectionError("down"))
    client = TurboSmsClient(Sms(provider="turbosms", token="tok-123456", sender="MyShop"), Context(clock=SystemClock()))
    for _ in range(2):
        with pytest.raises(TransientError):
            client.send(CLIENT, "x", seq_id="s1")
    assert responses.calls[0].request.headers["Authorization"] == "Bearer tok-123456"
    assert json.loads(responses.calls[0].request.body)["sequence_id"] == "s1"


def test_log_provider_records_and_reconciles(tmp_path) -> None:
    kv: dict[str, str] = {}
    ctx = Context(clock=SystemClock(), kv_get=kv.get, kv_set=kv.__setitem__)
    provider = LogProvider(ctx, outbox_path=tmp_path / "outbox.jsonl")
    sink = MessageSink(Messaging(sms=Sms(provider="log")), ctx, log_provider=provider)
    assert sink.supports("sms") and not sink.supports("email")
    res = sink.execute(sms_action())
    assert res.status == "delivered" and res.remote_id.startswith("log-")
    assert json.loads((tmp_path / "outbox.jsonl").read_text().splitlines()[0])["to"] == CLIENT
    fresh = MessageSink(Messaging(sms=Sms(provider="log")), ctx)  # after a restart: memory is empty
    assert fresh.reconcile(sms_action()).remote_id == res.remote_id
    assert fresh.reconcile(sms_action(key="never:0")) is None


def test_adapter_configured_check_and_sandbox() -> None:
    assert not ADAPTER.configured(Settings())
    assert not ADAPTER.configured(Settings(messaging=Messaging(sms=Sms(provider="bitrix24", trigger_code="SMS"))))
    sb = ADAPTER.sandbox(None)
    env = sb.start()
    try:
        assert set(env) == {"TURBOSMS_TOKEN", "TURBOSMS_URL", "SMTP_URL", "SMTP_CA_FILE"}
        s = Settings(messaging=Messaging(sms=Sms(provider="turbosms", token=env["TURBOSMS_TOKEN"], sender="MyShop",
                                                  url=env["TURBOSMS_URL"]),
                                          email={"smtp": env["SMTP_URL"], "from": "shop@example.com",
                                                 "ca_file": env["SMTP_CA_FILE"]}))
        assert ADAPTER.configured(s)
        ctx = Context(clock=SystemClock())
        sink = ADAPTER.sink(s, ctx)
        assert sink.supports("sms") and sink.supports("email") and not sink.supports("task")
        results = ADAPTER.check(s, ctx)
        assert [(r.what, r.ok, r.checked) for r in results] == [
            ("token and balance", True, True), ("sender", True, False), ("connect, TLS and log in", True, True)], results
        assert results[1].detail.startswith("messaging.sms.sender: `MyShop` cannot be checked without sending")
        s.messaging.sms.token = "bad-token-999999"
        bad = ADAPTER.check(s, ctx)[0]
        assert not bad.ok and bad.detail.startswith("messaging.sms.token: ") and "bad-token-999999" not in bad.detail
    finally:
        sb.stop()


def test_sandbox_emulator_advances_on_each_status_query() -> None:
    emu = TurboSmsEmulator(auto_advance=True)
    emu.start()
    try:
        sink = MessageSink(Messaging(sms=Sms(provider="turbosms", token=emu.token, sender="MyShop", url=emu.url)),
                           Context(clock=SystemClock()))
        sent = [("k:0", sink.execute(sms_action(key="k:0")).remote_id)]
        assert sink.delivery(sent) == {}  # Queued -> Sent
        assert sink.delivery(sent)["k:0"].status == "delivered"
    finally:
        emu.stop()


# ---------------------------------------------------------------- redirects and a total deadline


def test_a_redirect_is_not_followed_and_the_token_does_not_reach_its_target() -> None:
    from tests.contract.hostile import Recorder, Redirector

    target = Recorder("127.0.0.2")
    redirect = Redirector(target.origin)
    try:
        settings = Sms(provider="turbosms", token="turbo-token-123456", sender="MyShop", url=redirect.origin)
        client = TurboSmsClient(settings, Context(clock=SystemClock()), attempts=1)
        with pytest.raises(PermanentError, match="redirected the request to 127.0.0.2"):
            client.send("+380501234567", "text", seq_id="cn1")
        assert redirect.hits == 1 and target.requests == []
    finally:
        redirect.stop()
        target.stop()


def test_a_dripping_server_ends_in_a_clear_timeout_within_the_deadline() -> None:
    from tests.contract.hostile import DripServer, http_answer

    drip = DripServer(http_answer(b'{"response_code":0,"response_result":{"balance":1}}'), interval=0.05)
    try:
        settings = Sms(provider="turbosms", token="turbo-token-123456", sender="MyShop", url=drip.url)
        client = TurboSmsClient(settings, Context(clock=SystemClock()), attempts=1, timeout=1.0)
        with pytest.raises(TransientError, match="no complete answer within 1 s"):
            client.balance()
        assert drip.completed == 0
    finally:
        drip.stop()
