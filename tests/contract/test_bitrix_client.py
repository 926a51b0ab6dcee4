"""bitrix.client against the emulated portal over loopback: auth, limits, retries, errors."""

from __future__ import annotations

import pytest

from bitrix.client import BitrixClient
from bitrix.emulator import EmulatorServer, Portal
from connector.config import Bitrix24, OAuth
from connector.errors import AuthError, NotFound, RateLimited, TransientError
from connector.ports import Context, SystemClock
from connector.sandbox import generate
from tests.contract.conftest import CODE


@pytest.fixture(scope="module")
def company():
    return generate(companies=30, activities_per_company=2)




class Sleeps(list):
    """Records the back-off waits instead of sleeping (no sleeps in tests)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(portal, *, webhook: str | None = None, oauth: OAuth | None = None, kv: dict | None = None, **kw):
    kv = {} if kv is None else kv
    ctx = Context(clock=SystemClock(), kv_get=kv.get, kv_set=kv.__setitem__)
    sleeps = Sleeps()
    cfg = Bitrix24(oauth=oauth) if oauth else Bitrix24(webhook_url=webhook or portal.server.webhook_url)
    client = BitrixClient(cfg, ctx, sleep=sleeps, **kw)
    return client, ctx, sleeps


def test_call_and_batch_are_one_counted_request_each(portal):
    client, ctx, _ = make(portal)
    with client:
        assert client.result("crm.company.get", {"id": 1})["ID"] == "1"
        reply = client.batch({"a": ("crm.company.get", {"id": 1}), "b": ("crm.deal.list", {"select": ["ID"], "start": -1}),
                              "c": ("user.get", {"ID": 1})})
    assert reply.results["a"]["ID"] == "1" and isinstance(reply.results["b"], list) and not reply.errors
    counter = ctx.counter("bitrix24")
    assert counter.requests == 2 == portal.stats.requests
    assert counter.by_method == {"crm.company.get": 1, "batch": 1}


def test_query_limit_503_backs_off_and_retries(portal):
    portal.inject_fault("crm.company.list", 503, "QUERY_LIMIT_EXCEEDED", "Too many requests", times=2)
    client, ctx, sleeps = make(portal, backoff=1.0)
    with client:
        rows = client.result("crm.company.list", {"select": ["ID"], "start": -1})
    assert len(rows) == len(portal.table("company"))
    assert sleeps == [1.0, 2.0]  # exponential, no server hint on a 503
    assert ctx.counter("bitrix24").requests == 3


def test_operation_time_limit_429_waits_until_operating_reset_at(portal):
    client, _, sleeps = make(portal, max_wait=900)
    with client:
        env = client.call("crm.deal.list", {"select": ["ID"], "start": -1})
        reset_at = env["time"]["operating_reset_at"]
        portal.inject_fault("crm.deal.list", 429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
        client.call("crm.deal.list", {"select": ["ID"], "start": -1})
        wanted = reset_at - client.server_now()
    assert len(sleeps) == 1
    assert sleeps[0] == pytest.approx(wanted, abs=2.0) and sleeps[0] > 500  # the 10-minute window, not a guess


def test_429_inside_a_batch_retries_the_batch(portal):
    client, ctx, sleeps = make(portal)
    portal.inject_fault("crm.activity.list", 429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
    with client:
        reply = client.batch({"a": ("crm.activity.list", {"select": ["ID"], "start": -1}),
                              "c": ("crm.company.get", {"id": 2})})
    assert not reply.errors and len(reply.results["a"]) == 50
    assert len(sleeps) == 1 and ctx.counter("bitrix24").by_method == {"batch": 2}


def test_method_near_its_operating_budget_pauses_before_calling(portal):
    client, ctx, sleeps = make(portal, operating_limit=0.001)  # any call uses the whole budget
    with client:
        client.call("crm.company.list", {"select": ["ID"], "start": -1})
        client.call("crm.company.list", {"select": ["ID"], "start": -1})
    assert len(sleeps) == 1 and 500 < sleeps[0] <= 600  # waited for operating_reset_at, no 429 collected
    assert portal.stats.rejected.get("OPERATION_TIME_LIMIT", 0) == 0


def test_wrong_webhook_is_an_auth_error_that_never_shows_the_code(portal):
    bad = portal.server.webhook_url.replace(CODE, "wrongsecret9876")
    client, ctx, sleeps = make(portal, webhook=bad)
    with client, pytest.raises(AuthError) as ei:
        client.call("crm.company.list", {"start": -1})
    text = str(ei.value)
    assert "wrongsecret9876" not in text and CODE not in text
    assert "crm.company.list" in text and "NO_AUTH_FOUND" in text
    assert ctx.counter("bitrix24").requests == 1 and not sleeps  # not retried


def test_server_errors_are_retried_then_raised_as_transient(portal):
    portal.inject_fault("crm.deal.list", 500, "INTERNAL_SERVER_ERROR", "Internal server error", times=10)
    client, ctx, sleeps = make(portal, attempts=3)
    with client, pytest.raises(TransientError) as ei:
        client.call("crm.deal.list", {"start": -1})
    assert not isinstance(ei.value, RateLimited)
    assert ctx.counter("bitrix24").requests == 3 and len(sleeps) == 2
    assert "crm.deal.list" in str(ei.value) and "HTTP 500" in str(ei.value)


def test_one_server_error_then_success(portal):
    portal.inject_fault("crm.deal.list", 502, "", "Bad gateway")
    client, ctx, _ = make(portal)
    with client:
        assert len(client.result("crm.deal.list", {"select": ["ID"], "start": -1})) > 0
    assert ctx.counter("bitrix24").requests == 2


def test_not_found_names_the_method_and_the_object(portal):
    client, _, sleeps = make(portal)
    with client, pytest.raises(NotFound) as ei:
        client.call("crm.company.update", {"id": 987654, "fields": {"TITLE": "x"}})
    assert str(ei.value).startswith("bitrix24 crm.company.update id=987654: Company is not found")
    assert not sleeps


def test_missing_scope_is_an_auth_error(company):
    p = Portal.from_company(company, webhook_code=CODE, scopes=("crm", "user"))
    with EmulatorServer(p) as srv:
        client, _, _ = make(p, webhook=srv.webhook_url)
        with client:
            assert set(client.scopes()) == {"crm", "user"}
            with pytest.raises(AuthError, match="insufficient_scope"):
                client.call("tasks.task.list", {"start": -1})


def _oauth(portal, refresh: str, access: str | None) -> OAuth:
    base = portal.server.base_url
    return OAuth(domain=base, client_id="local.app", client_secret="appsecret-123456", refresh_token=refresh,
                 access_token=access, token_url=f"{base}/oauth/token/")


def test_oauth_expired_token_is_refreshed_once_and_the_rotated_token_persisted(portal):
    access, refresh = portal.issue_oauth("local.app", "appsecret-123456")
    kv: dict = {}
    client, ctx, _ = make(portal, oauth=_oauth(portal, refresh, access), kv=kv)
    with client:
        assert client.result("crm.company.get", {"id": 1})["ID"] == "1"
        assert "oauth.token" not in ctx.counter("bitrix24").by_method  # the stored token was good
        portal.expire_tokens()
        assert client.result("crm.company.get", {"id": 2})["ID"] == "2"
    assert ctx.counter("bitrix24").by_method["oauth.token"] == 1
    assert kv["bitrix24.refresh_token"] not in (refresh, None)
    # A restarted connector: the config still holds the first (now dead) refresh token; the
    # rotated one from the kv store is used instead.
    portal.expire_tokens()
    again, ctx2, _ = make(portal, oauth=_oauth(portal, refresh, access), kv=kv)
    with again:
        assert again.result("crm.company.get", {"id": 3})["ID"] == "3"
    assert ctx2.counter("bitrix24").by_method["oauth.token"] == 1


def test_a_spent_stored_refresh_token_gives_way_to_a_new_one_in_the_config(portal, caplog):
    """The remedy after a kill between the token server's answer and the store's write: the admin
    issues a new pair and puts its refresh token in the config; the store's spent one is not kept."""
    access, refresh = portal.issue_oauth("local.app", "appsecret-123456")
    kv = {"bitrix24.refresh_token": "spentrefreshtoken7"}  # what the killed process left behind
    portal.expire_tokens()
    stuck, _, _ = make(portal, oauth=_oauth(portal, "spentrefreshtoken7", None), kv=kv)
    with stuck, pytest.raises(AuthError, match="invalid_grant"):
        stuck.call("crm.company.get", {"id": 1})  # the config still holds the spent one: a clear auth error
    fixed, ctx, _ = make(portal, oauth=_oauth(portal, refresh, None), kv=kv)
    with fixed:
        assert fixed.result("crm.company.get", {"id": 1})["ID"] == "1"
    assert ctx.counter("bitrix24").by_method["oauth.token"] == 2  # the stored one refused, then the config's
    assert kv["bitrix24.refresh_token"] not in ("spentrefreshtoken7", refresh)  # the new rotation is kept
    assert "trying the one in the config" in caplog.text and "spentrefreshtoken7" not in caplog.text


def test_oauth_token_still_rejected_after_refresh_is_an_auth_error(portal):
    access, refresh = portal.issue_oauth("local.app", "appsecret-123456")
    portal.token_ttl = -1.0  # every token the portal issues is born expired
    portal.expire_tokens()
    client, ctx, _ = make(portal, oauth=_oauth(portal, refresh, access))
    with client, pytest.raises(AuthError, match="after a refresh"):
        client.call("crm.company.get", {"id": 1})
    assert ctx.counter("bitrix24").by_method["oauth.token"] == 1  # refreshed once, not in a loop


def test_dead_refresh_token_is_an_auth_error_without_secrets(portal):
    portal.issue_oauth("local.app", "appsecret-123456")
    client, _, _ = make(portal, oauth=_oauth(portal, "deadrefreshtoken42", None))
    with client:
        with pytest.raises(AuthError) as ei:
            client.call("crm.company.get", {"id": 1})
        with pytest.raises(AuthError):  # and again: a failed refresh must not wedge the client
            client.call("crm.company.get", {"id": 1})
    text = str(ei.value)
    assert "invalid_grant" in text and "deadrefreshtoken42" not in text and "appsecret-123456" not in text


def test_adapter_check_reports_scopes_and_read_access_without_the_secret(company):
    from bitrix.adapter import ADAPTER
    from connector.config import Settings

    p = Portal.from_company(company, webhook_code=CODE, scopes=("crm", "user", "im"))
    with EmulatorServer(p) as srv:
        settings = Settings(bitrix24=Bitrix24(webhook_url=srv.webhook_url))
        rows = {r.what: r for r in ADAPTER.check(settings, Context(clock=SystemClock()))}
        assert rows["reach portal"].ok
        assert rows["scope crm"].ok and rows["scope user"].ok
        assert not rows["scope task"].ok and "tasks" in rows["scope task"].detail
        assert not rows["scope bizproc"].ok and not rows["scope department"].ok
        assert rows["read companies"].ok and not rows["read tasks"].ok
        assert "insufficient_scope" in rows["read tasks"].detail
        assert rows["administrator"].detail == "yes"
        bad = Settings(bitrix24=Bitrix24(webhook_url=srv.webhook_url.replace(CODE, "notthecode77")))
        (reach,) = ADAPTER.check(bad, Context(clock=SystemClock()))
    assert not reach.ok and "NO_AUTH_FOUND" in reach.detail
    assert all(CODE not in r.detail and "notthecode77" not in r.detail for r in [*rows.values(), reach])


# ---------------------------------------------------------------- redirects carry nothing away


def test_a_redirected_rest_call_is_not_followed_and_its_target_receives_nothing(portal):
    from connector.errors import PermanentError
    from tests.contract.hostile import Recorder, Redirector

    target = Recorder("127.0.0.2")
    redirect = Redirector(target.origin)
    try:
        webhook = f"{redirect.origin}/rest/1/{CODE}/"
        client, _, _ = make(portal, webhook=webhook)
        with client, pytest.raises(PermanentError, match="redirected the request to 127.0.0.2") as e:
            client.result("crm.company.get", {"id": 1})
        assert CODE not in str(e.value)
        # an OAuth application: the token endpoint redirects; the secret and refresh token stay home
        oauth = OAuth(domain=redirect.origin, client_id="local.app", client_secret="appsecret-123456",
                      refresh_token="refresh-token-1234", token_url=f"{redirect.origin}/oauth/token/")
        client, _, _ = make(portal, oauth=oauth)
        with client, pytest.raises(PermanentError, match="redirected the request to 127.0.0.2"):
            client.result("crm.company.get", {"id": 1})
        assert redirect.hits >= 2 and target.requests == []
    finally:
        redirect.stop()
        target.stop()


def test_a_back_off_ends_at_once_when_the_process_is_told_to_stop(portal):
    """The daemon's SIGTERM must not wait out a minute-long back-off: the client sleeps through ctx.sleep."""
    from connector.errors import Stopped

    portal.inject_fault("crm.company.list", 503, "QUERY_LIMIT_EXCEEDED", "Too many requests", times=100)
    ctx = Context(clock=SystemClock(), should_stop=lambda: portal.stats.requests >= 1)
    client = BitrixClient(Bitrix24(webhook_url=portal.server.webhook_url), ctx, backoff=300.0)
    with client, pytest.raises(Stopped):
        client.result("crm.company.list", {"select": ["ID"], "start": -1})
    assert portal.stats.requests == 1  # no second attempt after the stop
