"""E-mail through the message sink to the loopback SMTP sink (STARTTLS with a throw-away certificate)."""

from __future__ import annotations

import pytest

from connector.config import Email, Messaging, Settings
from connector.errors import AuthError, PermanentError, Rejected, TransientError
from connector.ports import Context, PlannedAction, SystemClock
from sms.adapter import ADAPTER
from sms.emulator import SmtpSink
from sms.emulator.smtp import self_signed
from sms.sink import MessageSink
from sms.smtp import SmtpClient, message_id, parse_smtp_url, valid_address
from tests.contract.hostile import DripServer

CERT = self_signed()


@pytest.fixture
def smtp():
    server = SmtpSink(certificate=CERT)
    server.start()
    yield server
    server.stop()


def sink_for(url: str, sender: str = "Shop <shop@example.com>", **email) -> MessageSink:
    if "ca_file" not in email and "insecure" not in email:
        email["ca_file"] = CA_FILE
    return MessageSink(Messaging(email=Email(smtp=url, **{"from": sender}, **email)), Context(clock=SystemClock()))


@pytest.fixture(scope="module", autouse=True)
def _ca_file(tmp_path_factory):
    global CA_FILE
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(CERT[0])
    CA_FILE = str(path)


CA_FILE = ""


def email_action(to: str = "client@example.org", key: str = "unpaid:invoice:7:2026-11:0") -> PlannedAction:
    return PlannedAction(key=key, rule="unpaid", type="email", system="sms", subject_key="bitrix24:invoice:7",
                         client_key="bitrix24:company:3",
                         payload={"to": to, "subject": "Рахунок №7 очікує оплати", "text": "Доброго дня!\n.\nДякуємо."},
                         reason="test")


def test_sends_one_message_with_deterministic_message_id(smtp) -> None:
    sink = sink_for(smtp.url)
    assert sink.supports("email") and not sink.supports("sms")
    res = sink.execute(email_action())
    assert res.status == "done"
    [mail] = smtp.messages
    assert mail.mail_from == "shop@example.com" and mail.rcpt_tos == ["client@example.org"]
    msg = mail.message
    assert msg["Message-ID"] == res.remote_id == message_id(email_action().key, "shop@example.com")
    assert msg["Subject"] == "Рахунок №7 очікує оплати" and msg["To"] == "client@example.org"
    assert msg.get_content() == "Доброго дня!\n.\nДякуємо.\n"  # a lone dot survives dot-stuffing
    assert res.remote_id.endswith("@example.com>")


def test_same_action_gets_the_same_message_id_other_actions_differ() -> None:
    assert message_id("a:0", "shop@example.com") == message_id("a:0", "shop@example.com")
    assert message_id("a:0", "shop@example.com") != message_id("a:1", "shop@example.com")


@pytest.mark.parametrize("bad", ["", "not-an-address", "a@b", "a@@b.com", "a b@c.com", "x@example.com\r\nBcc: y@z.com",
                                 "a..b@example.com", "@example.com", "user@-bad-.com"])
def test_invalid_address_is_refused_before_connecting(smtp, bad: str) -> None:
    with pytest.raises(Rejected):
        sink_for(smtp.url).execute(email_action(to=bad))
    assert smtp.sessions == 0 and smtp.messages == []


def test_valid_address_forms() -> None:
    assert valid_address("Olena <olena.k+crm@shop.example.ua>") == "olena.k+crm@shop.example.ua"
    assert valid_address("office1@karpaty.example") == "office1@karpaty.example"


def test_refused_recipient_is_rejected_and_deferred_is_transient(smtp) -> None:
    smtp.reject.add("gone@example.org")
    smtp.defer.add("busy@example.org")
    with pytest.raises(Rejected) as ei:
        sink_for(smtp.url).execute(email_action(to="gone@example.org"))
    assert ei.value.code == 550
    with pytest.raises(TransientError):
        sink_for(smtp.url).execute(email_action(to="busy@example.org"))
    assert smtp.messages == []


def test_connection_lost_after_data_is_uncertain_and_not_retryable(smtp) -> None:
    smtp.drop_after_data = True
    with pytest.raises(PermanentError, match="uncertain") as ei:
        sink_for(smtp.url).execute(email_action())
    assert not isinstance(ei.value, TransientError)


def test_unreachable_server_is_transient() -> None:
    server = SmtpSink()
    server.start()
    url = server.url
    server.stop()
    with pytest.raises(TransientError):
        sink_for(url).execute(email_action())


def test_login_with_credentials_from_the_url_and_wrong_password() -> None:
    server = SmtpSink(user="shop", password="p@ss word", certificate=CERT)
    server.start()
    try:
        url = f"smtp://shop:p%40ss%20word@127.0.0.1:{server.port}"
        sink_for(url).execute(email_action())
        assert len(server.messages) == 1
        with pytest.raises(AuthError) as ei:
            sink_for(f"smtp://shop:wrong-pass@127.0.0.1:{server.port}").execute(email_action())
        assert "wrong-pass" not in str(ei.value)
        client = SmtpClient(url, "shop@example.com", Context(clock=SystemClock()), ca_file=CA_FILE)
        assert client.noop().endswith("answered 250")
    finally:
        server.stop()


def test_reconcile_cannot_tell_so_it_raises(smtp) -> None:
    with pytest.raises(PermanentError):
        sink_for(smtp.url).reconcile(email_action())


def test_smtp_url_forms() -> None:
    u = parse_smtp_url("smtps://user%40x:secret@mail.example.com")
    assert (u.secure, u.host, u.port, u.user, u.password) == (True, "mail.example.com", 465, "user@x", "secret")
    u = parse_smtp_url("smtp://mail.example.com:587")
    assert (u.secure, u.port, u.user) == (False, 587, None)
    with pytest.raises(PermanentError):
        parse_smtp_url("http://mail.example.com")


# ---------------------------------------------------------------- TLS is required


def test_server_that_strips_starttls_gets_no_auth_and_no_message() -> None:
    server = SmtpSink(user="shop", password="secret-pass-1", certificate=CERT, offer_starttls=False)
    server.start()
    try:
        with pytest.raises(PermanentError, match="does not offer STARTTLS") as ei:
            sink_for(f"smtp://shop:secret-pass-1@127.0.0.1:{server.port}").execute(email_action())
        assert not isinstance(ei.value, TransientError)
        assert server.auth_attempts == 0 and "MAIL" not in server.verbs and server.messages == []
        assert "secret-pass-1" not in str(ei.value)
    finally:
        server.stop()


def test_starttls_handshake_is_verified_and_the_message_goes_over_tls() -> None:
    server = SmtpSink(user="shop", password="secret-pass-1", certificate=CERT)
    server.start()
    try:
        url = f"smtp://shop:secret-pass-1@127.0.0.1:{server.port}"
        assert sink_for(url).execute(email_action()).status == "done"
        [mail] = server.messages
        assert mail.tls and server.verbs[:2] == ["EHLO", "STARTTLS"] and server.auth_attempts == 1
        # without the CA file the self-signed certificate is not trusted: nothing is sent, no AUTH either
        with pytest.raises(PermanentError, match="certificate is not trusted"):
            MessageSink(Messaging(email=Email(smtp=url, **{"from": "shop@example.com"})),
                        Context(clock=SystemClock())).execute(email_action(key="other:key:0"))
        assert server.auth_attempts == 1 and len(server.messages) == 1
    finally:
        server.stop()


def test_implicit_tls_on_smtps() -> None:
    server = SmtpSink(certificate=CERT, implicit_tls=True)
    server.start()
    try:
        assert server.url.startswith("smtps://")
        sink_for(server.url).execute(email_action())
        assert [m.tls for m in server.messages] == [True]
    finally:
        server.stop()


def test_plain_text_only_with_insecure_true_and_check_warns_about_it() -> None:
    server = SmtpSink(user="shop", password="secret-pass-1")  # no certificate: cannot offer STARTTLS
    server.start()
    try:
        url = f"smtp://shop:secret-pass-1@127.0.0.1:{server.port}"
        assert sink_for(url, insecure=True).execute(email_action()).status == "done"
        assert [m.tls for m in server.messages] == [False]
        settings = Settings(messaging=Messaging(email=Email(smtp=url, insecure=True, **{"from": "shop@example.com"})))
        results = ADAPTER.check(settings, Context(clock=SystemClock()))
        warn = [r for r in results if r.warning]
        assert [r.what for r in warn] == ["insecure: true"] and "clear text" in warn[0].detail
        settings = Settings(messaging=Messaging(email=Email(smtp=url, **{"from": "shop@example.com"})))
        [result] = ADAPTER.check(settings, Context(clock=SystemClock()))
        assert not result.ok and "STARTTLS" in result.detail
    finally:
        server.stop()


def test_a_dripping_smtp_server_ends_in_a_clear_timeout_within_the_deadline() -> None:
    drip = DripServer(b"220 " + b"x" * 60 + b"\r\n", interval=0.1, http=False)
    try:
        client = SmtpClient(f"smtp://127.0.0.1:{drip.port}", "shop@example.com", Context(clock=SystemClock()),
                            timeout=1.0, ca_file=CA_FILE)
        with pytest.raises(TransientError, match="no complete answer within 1 s"):
            client.send(to="client@example.org", subject="s", text="t", action_key="k:0")
        assert drip.completed == 0
    finally:
        drip.stop()
