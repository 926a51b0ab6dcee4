import logging

from connector.errors import AuthError
from connector.redact import RedactingFilter, add_secret, redact


def test_webhook_secret_is_masked_even_if_never_registered():
    assert redact("POST https://shop.bitrix24.ua/rest/7/q1w2e3r4t5y6/crm.deal.update.json") == \
        "POST https://shop.bitrix24.ua/rest/7/***/crm.deal.update.json"


def test_registered_secrets_userinfo_and_query_tokens_are_masked():
    add_secret("s3cr3t-pass")
    text = redact("login failed for s3cr3t-pass at smtp://u:pw123@host:25 and ?token=abc&x=1")
    assert "s3cr3t-pass" not in text and "pw123" not in text and "abc" not in text


def test_errors_and_log_records_are_masked(caplog):
    add_secret("binotel-secret-xyz")
    e = AuthError("key or secret binotel-secret-xyz is wrong", system="binotel", obj="stats/call-details", code=121)
    assert "binotel-secret-xyz" not in str(e) and "binotel stats/call-details" in str(e) and "[121]" in str(e)
    rec = logging.LogRecord("x", logging.INFO, "f", 1, "calling %s", ("https://p/rest/1/hookcode123/x",), None)
    RedactingFilter().filter(rec)
    assert "hookcode123" not in rec.getMessage()
