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


def test_store_urls_are_redacted_by_parsing():
    from connector.redact import redact_url

    assert redact_url("postgresql+psycopg://app:s3cr@t/pw@db.example:5432/connector") == \
        "postgresql+psycopg://app:***@db.example:5432/connector"
    assert redact_url("postgresql://app:a/b@h/db?sslpassword=zz&application_name=x") == \
        "postgresql://app:***@h/db?sslpassword=***&application_name=x"
    assert redact_url("sqlite:////home/user@host/connector.db") == "sqlite:////home/user@host/connector.db"
    assert redact_url("no url at all: secret") == "***"


def test_log_records_lose_control_characters():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "title \x1b[2J\x07evil\r\nnext\tline", None, None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "title [2Jevil\nnext\tline"
