"""The Bitrix24 application mode against the emulated portal over loopback: installation, robots,
triggers, events, calls on the card, the SMS provider, uninstallation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select

from bitrix import app as A
from bitrix.app_handlers import BitrixAppEndpoint, parse_body
from bitrix.client import ACCESS_TOKEN_KV, REFRESH_TOKEN_KV, BitrixClient
from bitrix.emulator import EmulatorServer, Portal
from bitrix.sink import BitrixSink
from connector.config import Settings
from connector.httpserver import HttpServer
from connector.journal import Change, Journal, State
from connector.ports import ActionResult, Context, PlannedAction
from connector.sandbox import generate
from connector.store import Store, journal
from connector.sync import sync_all
from tests.contract.conftest import CODE, portal_clock

CLIENT_ID = "local.65f1c0a2b3d4e5.12345678"
SECRET = "appsecret-0123456789"


@pytest.fixture(scope="module")
def company():
    return generate(companies=40)


class PortalClock:
    """The connector's clock in step with the emulated portal's (events are judged against the last poll)."""

    def __init__(self, portal: Portal):
        self.portal = portal
        self.shift = timedelta(0)

    def now(self):
        return self.portal.now() + self.shift


@dataclass
class AppEnv:
    portal: Portal
    srv: EmulatorServer
    http: HttpServer
    settings: Settings
    store: Store
    ctx: Context
    endpoint: BitrixAppEndpoint
    woke: list

    @property
    def base(self) -> str:
        host, port = self.http.address
        return f"http://{host}:{port}"

    def install(self) -> Any:
        d = self.portal.install_app(CLIENT_ID, SECRET, install_url=self.base + A.INSTALL_PATH)
        assert d.status == 200, d.body
        return d

    def sync(self) -> Any:
        return sync_all(self.settings, self.store, self.ctx)

    def requests_made(self) -> int:
        return self.ctx.counter("bitrix24").requests


def make_env(tmp_path, company, *, events: str = "online", rules: list | None = None, extra: dict | None = None) -> AppEnv:
    portal = Portal.from_company(company, webhook_code=CODE, rate_limit=False)
    portal.clock = portal_clock(company)
    srv = EmulatorServer(portal).start()
    http = HttpServer("127.0.0.1:0", max_body_bytes=262144)
    http.start()
    host, port = http.address
    cfg = {
        "store": f"sqlite:///{tmp_path / 'app.db'}",
        "bitrix24": {"fields": ["UF_CRM_TEMPERATURE"], "app": {
            "client_id": CLIENT_ID, "client_secret": SECRET, "public_url": f"http://{host}:{port}",
            "listen": f"{host}:{port}", "token_url": srv.base_url + "/oauth/token/", "events": events,
            "state_field": "UF_CRM_TEMPERATURE", **(extra or {})}},
        "messaging": {"sms": {"provider": "log"}, "quiet_hours": None, "workdays_only": False},
        "people": {"supervisor": 1},
        "rules": rules if rules is not None else [
            {"name": "forgotten", "type": "forgotten", "inactive_days": 60, "actions": [{"trigger": "client_forgotten"}]},
            {"name": "release", "type": "release", "after": "forgotten", "grace_days": 14, "reassign": {"to": [7, 9]}},
        ],
    }
    settings = Settings.model_validate(cfg)
    store = Store(settings.store)
    ctx = Context(clock=PortalClock(portal), kv_get=store.kv_get, kv_set=store.kv_set)
    woke: list = []
    endpoint = BitrixAppEndpoint(settings, ctx, store, wake=woke.append, recordings=lambda call: f"{srv.base_url}/records/{call}.mp3")
    endpoint.mount(http)
    return AppEnv(portal, srv, http, settings, store, ctx, endpoint, woke)


@pytest.fixture
def english():
    """Texts people read are translated (uk by default): the assertions below read the English msgids."""
    from connector import i18n

    before = i18n.current()
    i18n.use("en")
    yield
    i18n.use(before)


@pytest.fixture
def env(tmp_path, company):
    e = make_env(tmp_path, company)
    try:
        yield e
    finally:
        e.endpoint.stop()
        e.http.stop()
        e.srv.stop()


def post(env: AppEnv, path: str, pairs: list[tuple[str, str]]) -> requests.Response:
    return requests.post(env.base + path, data=pairs, timeout=30)


# ---------------------------------------------------------------- installation


def test_install_keeps_the_tokens_and_registers_robots_triggers_events_and_the_sms_provider(env):
    env.install()
    state = A.AppState.load(env.ctx)
    app = env.portal.app_of(CLIENT_ID)
    assert state.installed and state.member_id == env.portal.member_id and state.application_token == app.application_token
    assert state.endpoint == env.srv.base_url + "/rest/"
    # the install's tokens were proven at the OAuth server, which rotated them: the kept pair is the new one
    assert env.store.kv_get(REFRESH_TOKEN_KV) in env.portal.refresh_tokens
    assert set(app.robots) == set(A.ROBOT_CODES)
    assert app.robots["connector_pick_manager"]["HANDLER"] == env.base + A.ROBOT_PATH + "/connector_pick_manager"
    assert app.robots["connector_pick_manager"]["NAME"]["ua"] == "Конектор: вибрати наступного менеджера"
    assert set(app.triggers) == set(A.TRIGGERS)
    bound = {(b["event"], b["handler"]) for b in app.bindings}
    assert ("ONCRMCOMPANYUPDATE", env.base + A.EVENT_PATH) in bound and ("ONAPPUNINSTALL", env.base + A.EVENT_PATH) in bound
    assert len(app.bindings) == len(A.ENTITY_EVENTS) + 1
    assert list(app.senders) == [A.SENDER_CODE]


def test_registration_is_idempotent_and_robots_follow_a_moved_endpoint(env):
    env.install()
    app = env.portal.app_of(CLIENT_ID)
    before = (len(app.bindings), dict(app.triggers), list(app.senders))
    lines = A.register(env.settings, env.ctx)
    assert not [x for x in lines if "Could not" in x], lines
    assert (len(app.bindings), dict(app.triggers), list(app.senders)) == before
    app.robots["connector_send_sms"]["HANDLER"] = env.base + "/old"
    A.register(env.settings, env.ctx)
    assert app.robots["connector_send_sms"]["HANDLER"].endswith("/robot/connector_send_sms")


def test_a_forged_install_is_refused_and_stores_nothing(env):
    env.portal.issue_oauth(CLIENT_ID, SECRET)  # the application exists; the forger does not hold its tokens
    forged = [("event", "ONAPPINSTALL"), ("auth[access_token]", "x" * 32), ("auth[refresh_token]", "not-a-refresh-token"),
              ("auth[member_id]", env.portal.member_id), ("auth[application_token]", "f" * 32),
              ("auth[client_endpoint]", "https://evil.example/rest/")]
    r = post(env, A.INSTALL_PATH, forged)
    assert r.status_code == 401
    assert not A.AppState.load(env.ctx).installed and env.store.kv_get(A.ENDPOINT_KV) is None
    assert env.store.kv_get(A.PENDING_KV) is None


def test_an_install_before_the_config_names_the_application_completes_when_it_does(tmp_path, company):
    e = make_env(tmp_path, company, extra={"client_id": "local.placeholder", "client_secret": "placeholder-secret"})
    try:
        e.install()  # the portal calls the install path the moment the admin saves the form
        assert not A.AppState.load(e.ctx).installed and e.endpoint.counts["pending"] == 1
        # a forged install waiting beside it is never promoted
        post(e, A.INSTALL_PATH, [("event", "ONAPPINSTALL"), ("auth[refresh_token]", "forged-refresh-token"),
                                 ("auth[member_id]", e.portal.member_id), ("auth[application_token]", "f" * 32)])
        assert len(json.loads(e.store.kv_get(A.PENDING_KV))) == 2
        right = Settings.model_validate({**e.settings.model_dump(by_alias=True), "bitrix24": {
            **e.settings.bitrix24.model_dump(by_alias=True), "app": {**e.settings.bitrix24.app.model_dump(),
                                                                     "client_id": CLIENT_ID, "client_secret": SECRET}}})
        restarted = BitrixAppEndpoint(right, e.ctx, e.store)
        restarted.start()
        state = A.AppState.load(e.ctx)
        assert state.installed and state.application_token == e.portal.app_of(CLIENT_ID).application_token
        assert json.loads(e.store.kv_get(A.PENDING_KV)) == []
        assert set(e.portal.app_of(CLIENT_ID).robots) == set(A.ROBOT_CODES)
    finally:
        e.endpoint.stop()
        e.http.stop()
        e.srv.stop()


def test_another_portal_cannot_replace_an_installed_one(env):
    env.install()
    other = Portal(domain="other.bitrix24.ua", rate_limit=False)
    with EmulatorServer(other):
        access, refresh = other.issue_oauth(CLIENT_ID, SECRET)
        r = post(env, A.INSTALL_PATH, [("event", "ONAPPINSTALL"), ("auth[refresh_token]", refresh),
                                       ("auth[member_id]", other.member_id), ("auth[application_token]", "a" * 32)])
    assert r.status_code == 401
    assert A.AppState.load(env.ctx).member_id == env.portal.member_id


def test_an_event_with_a_wrong_application_token_is_refused_and_changes_nothing(env):
    env.install()
    pairs = [("event", "ONCRMCOMPANYUPDATE"), ("data[FIELDS][ID]", "5"), ("auth[member_id]", env.portal.member_id),
             ("auth[application_token]", "0" * 32)]
    for path in (A.EVENT_PATH, A.ROBOT_PATH + "/connector_pick_manager", A.SMS_PATH):
        r = post(env, path, pairs + [("event_token", "t1"), ("message_id", "m1"), ("message_to", "+380501112233"),
                                     ("message_body", "hi")])
        assert r.status_code == 401, path
    wrong_member = [("event", "ONAPPUNINSTALL"), ("auth[member_id]", "0" * 32),
                    ("auth[application_token]", env.portal.app_of(CLIENT_ID).application_token)]
    assert post(env, A.EVENT_PATH, wrong_member).status_code == 401
    assert env.store.dirty("bitrix24") == {} and env.woke == []
    assert A.AppState.load(env.ctx).installed
    with env.store.tx() as conn:
        assert conn.execute(select(journal.c.key)).all() == []
    assert env.endpoint.counts["refused"] == 4


def test_uninstall_forgets_the_tokens_and_the_portal_drops_the_registrations(env):
    env.install()
    out = env.portal.uninstall_app(CLIENT_ID)
    assert [d.status for d in out] == [200]
    assert not A.AppState.load(env.ctx).installed and not env.store.kv_get(REFRESH_TOKEN_KV)
    assert CLIENT_ID not in env.portal.installed


def test_app_mode_tokens_expire_and_rotate_through_the_store(env):
    env.install()
    first = env.store.kv_get(REFRESH_TOKEN_KV)
    env.portal.expire_tokens()
    with BitrixClient(env.settings.bitrix24, env.ctx) as client:
        assert client.result("crm.company.get", {"id": 1})["ID"] == "1"
    assert env.ctx.counter("bitrix24").by_method["oauth.token"] == 1
    assert env.store.kv_get(REFRESH_TOKEN_KV) not in (first, None)
    assert env.store.kv_get(ACCESS_TOKEN_KV) in env.portal.tokens


# ---------------------------------------------------------------- robots and triggers


def _open_deal(portal: Portal) -> tuple[int, int]:
    deal = next(d for d in portal.table("deal").values() if d.get("STAGE_SEMANTIC_ID") not in ("S", "F") and d.get("COMPANY_ID"))
    return deal["ID"], deal["COMPANY_ID"]


def test_a_trigger_starts_the_portals_robot_which_gets_a_pool_manager_once_per_event_token(env):
    env.install()
    assert env.sync().ok
    env.portal.on_trigger("client_forgotten", "connector_pick_manager")
    deal, company_id = _open_deal(env.portal)
    action = PlannedAction(key=f"forgotten:bitrix24:company:{company_id}:p:0", rule="forgotten", type="trigger", system="bitrix24",
                           subject_key=f"bitrix24:company:{company_id}", client_key=f"bitrix24:company:{company_id}",
                           payload={"entity": f"bitrix24:company:{company_id}", "code": "client_forgotten",
                                    "subject": f"bitrix24:company:{company_id}", "deals": [f"bitrix24:deal:{deal}"]}, reason="test")
    sink = BitrixSink(env.settings.bitrix24, env.ctx)
    out = sink.execute(action)
    assert out.remote_id == f"DEAL_{deal}"
    assert env.portal.trigger_fires[-1] | {"at": None} == {"code": "client_forgotten", "owner_type": 2, "owner_id": deal,
                                                          "client_id": CLIENT_ID, "at": None}
    env.portal.drain()
    (token, run), = env.portal.robot_runs.items()
    assert run["sends"] == 1
    picked = int(run["return_values"]["manager_id"])  # values travel as strings (a batch command's query string)
    assert picked in (7, 9) and run["return_values"]["manager"] == f"user_{picked}"
    owner = env.portal.table("company")[company_id]["ASSIGNED_BY_ID"]
    assert picked != owner or owner not in (7, 9)
    # the queue server delivers the same call again: nothing is sent twice, nobody else is picked
    env.portal.redeliver_robot(token)
    env.portal.drain()
    assert run["sends"] == 1 and int(run["return_values"]["manager_id"]) == picked
    states = Journal(env.store).states()
    assert [k for k in states if k.startswith("robot:")] == [A.robot_key("connector_pick_manager", token)]
    assert env.endpoint.counts["robot_repeat"] == 1
    # the next call picks the next manager of the pool (round robin)
    second = env.portal.run_robot("connector_pick_manager", 2, deal)
    env.portal.drain()
    assert int(env.portal.robot_runs[second]["return_values"]["manager_id"]) in (7, 9)
    assert int(env.portal.robot_runs[second]["return_values"]["manager_id"]) != picked or owner in (7, 9)


def test_a_trigger_on_a_client_without_a_deal_is_refused_with_the_reason(env, english):
    env.install()
    action = PlannedAction(key="forgotten:x:p:0", rule="forgotten", type="trigger", system="bitrix24", subject_key="bitrix24:company:1",
                           client_key="bitrix24:company:1", payload={"entity": "bitrix24:company:1", "code": "client_forgotten"},
                           reason="test")
    out = BitrixSink(env.settings.bitrix24, env.ctx).execute_batch([action])[action.key]
    assert "no open deal or invoice" in str(out)


def test_the_mark_state_robot_writes_the_clients_field_and_the_sms_robot_queues_a_message(env):
    env.install()
    assert env.sync().ok
    deal, company_id = _open_deal(env.portal)
    t1 = env.portal.run_robot("connector_mark_state", 2, deal, {"state": "vip"})
    env.portal.drain()
    assert env.portal.table("company")[company_id]["UF_CRM_TEMPERATURE"] == "vip"
    assert env.portal.robot_runs[t1]["return_values"] == {"client": f"bitrix24:company:{company_id}"}
    t2 = env.portal.run_robot("connector_send_sms", 2, deal, {"text": "Hello!", "phone": "+380501234567"})
    env.portal.drain()
    assert env.portal.robot_runs[t2]["return_values"]["status"] == "queued"
    sms = Journal(env.store).rows(states=("planned",))
    assert [(r["system"], r["type"], r["payload"]["text"]) for r in sms] == [("sms", "sms", "Hello!")]


# ---------------------------------------------------------------- events


def test_an_edit_event_makes_the_next_cycle_read_only_that_record(env):
    env.install()
    assert env.sync().ok  # the first (full) read
    assert env.sync().ok  # an incremental poll: the cursor now says when the last poll was
    env.portal.drain()
    env.store.clear_dirty("bitrix24", env.store.dirty("bitrix24"))  # edits of the syncs themselves
    before_requests, before_calls = env.requests_made(), dict(env.portal.stats.by_method)
    env.portal.touch("company", 12, TITLE="Renamed by a manager")
    env.portal.drain()
    assert env.store.dirty("bitrix24").keys() == {"company"} and "12" in env.store.dirty("bitrix24")["company"]
    assert env.woke == [env.settings.bitrix24.app.debounce_seconds]
    rep = env.sync()
    assert rep.ok
    calls = {k: v - before_calls.get(k, 0) for k, v in env.portal.stats.by_method.items() if v != before_calls.get(k, 0)}
    assert env.requests_made() - before_requests == 1  # ONE request
    assert calls == {"batch": 1, "crm.company.list": 1, "crm.requisite.list": 1}  # that company and its tax id, nothing else
    with env.store.tx() as conn:
        from connector.store import clients

        assert conn.execute(select(clients.c.title).where(clients.c.key == "bitrix24:company:12")).scalar() == "Renamed by a manager"
    assert env.store.dirty("bitrix24") == {}


def test_without_events_a_poll_finds_the_edit_at_a_higher_cost(tmp_path, company):
    e = make_env(tmp_path, company, events="none")
    try:
        e.install()
        assert e.sync().ok and e.sync().ok
        before_requests, before_cmds = e.requests_made(), sum(e.portal.stats.by_method.values())
        e.portal.touch("company", 12, TITLE="Renamed by a manager")
        assert e.sync().ok
        assert e.requests_made() - before_requests >= 2
        assert sum(e.portal.stats.by_method.values()) - before_cmds > 10
    finally:
        e.endpoint.stop()
        e.http.stop()
        e.srv.stop()


def test_a_deleted_record_reported_by_an_event_is_marked_deleted(env):
    env.install()
    assert env.sync().ok and env.sync().ok
    env.portal.drain()
    env.store.clear_dirty("bitrix24", env.store.dirty("bitrix24"))
    env.portal.delete("deal", 3)
    env.portal.drain()
    assert env.sync().ok
    from connector.store import deals

    with env.store.tx() as conn:
        assert conn.execute(select(deals.c.deleted).where(deals.c.key == "bitrix24:deal:3")).scalar() is True


def test_a_due_poll_reads_the_changes_and_the_reported_record_it_did_not_see(env):
    env.install()
    assert env.sync().ok and env.sync().ok
    env.portal.drain()
    env.store.clear_dirty("bitrix24", env.store.dirty("bitrix24"))
    env.portal.delete("company", 30)  # the change filter of a poll never returns a deleted record
    env.portal.drain()
    env.ctx.clock.shift = timedelta(minutes=61)  # the poll is due
    assert env.sync().ok
    from connector.store import clients

    with env.store.tx() as conn:
        assert conn.execute(select(clients.c.deleted).where(clients.c.key == "bitrix24:company:30")).scalar() is True
    assert env.store.dirty("bitrix24") == {}


def test_offline_events_are_fetched_with_clear_and_read_alone(tmp_path, company):
    e = make_env(tmp_path, company, events="offline")
    try:
        e.install()
        app = e.portal.app_of(CLIENT_ID)
        assert {b["offline"] for b in app.bindings if b["event"] != "ONAPPUNINSTALL"} == {True}
        assert e.sync().ok and e.sync().ok
        app.offline.clear()
        e.portal.touch("company", 12, TITLE="one")
        e.portal.touch("company", 12, TITLE="two")  # the queue keeps the latest state per record
        assert len(app.offline) == 1
        before = dict(e.portal.stats.by_method)
        assert e.sync().ok
        calls = {k: v - before.get(k, 0) for k, v in e.portal.stats.by_method.items() if v != before.get(k, 0)}
        assert calls == {"event.offline.get": 1, "batch": 1, "crm.company.list": 1, "crm.requisite.list": 1}
        assert app.offline == {}
    finally:
        e.endpoint.stop()
        e.http.stop()
        e.srv.stop()


# ---------------------------------------------------------------- calls on the client card


def _call_action(gid: str, phone: str, *, company: int | None, user: int = 6, record: bool = True) -> PlannedAction:
    payload = {"external_id": gid, "phone": phone, "type": 2, "start": "2026-11-23T10:00:00+02:00", "duration": 95,
               "status": "200", "user": user, "entity": f"bitrix24:company:{company}" if company else None, "create": False,
               "record": f"https://connector.example/bitrix24/record/{gid}/sig.mp3" if record else None}
    return PlannedAction(key=f"telephony:{gid}", rule="telephony", type="call_log", system="bitrix24", subject_key=f"binotel:call:{gid}",
                         client_key=None, payload=payload, reason="test")


def test_a_call_is_registered_finished_and_its_record_attached_in_one_request(env, english):
    env.install()
    sink = BitrixSink(env.settings.bitrix24, env.ctx)
    before = env.requests_made()
    res = sink.execute(_call_action("4683310794", "0501234567", company=5))
    assert env.requests_made() - before == 1
    acts = env.portal.call_activities()
    assert len(acts) == 1 and acts[0]["OWNER_TYPE_ID"] == 4 and acts[0]["OWNER_ID"] == 5 and acts[0]["RESPONSIBLE_ID"] == 6
    assert acts[0]["FILES"][0]["url"].endswith("/4683310794/sig.mp3")
    assert res.remote_id.startswith("externalCall.") and "record not attached" not in res.detail
    # a reconcile after a crash finds it by EXTERNAL_CALL_ID and never registers it again
    found = sink.reconcile_batch([_call_action("4683310794", "0501234567", company=5)])
    assert isinstance(found["telephony:4683310794"], ActionResult)
    assert sink.reconcile_batch([_call_action("999", "0501234567", company=5)])["telephony:999"] is None


def test_a_record_that_cannot_be_attached_leaves_the_call_on_the_card(env, english):
    env.install()
    act = _call_action("4683310795", "0501234567", company=5)
    env.portal.inject_fault("telephony.externalcall.attachrecord", 400, "ERROR_CORE", "Server returns HTTP error code 404")
    res = BitrixSink(env.settings.bitrix24, env.ctx).execute(act)
    assert "record not attached" in res.detail and len(env.portal.call_activities()) == 1


def test_the_record_link_redirects_to_a_fresh_pbx_link_and_a_wrong_signature_is_refused(env):
    app = env.settings.bitrix24.app
    link = A.record_link(app, "4683310794")
    r = requests.get(link, allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"] == env.srv.base_url + "/records/4683310794.mp3"
    assert requests.get(link.replace("4683310794/", "4683310795/"), allow_redirects=False, timeout=10).status_code == 404


# ---------------------------------------------------------------- the SMS provider


def test_a_message_from_the_card_goes_to_the_sms_channel_and_its_statuses_go_back(env):
    env.install()
    assert env.sync().ok
    mid = env.portal.send_sms(A.SENDER_CODE, "+380501234567", "Your order is ready")
    env.portal.drain()
    j = Journal(env.store)
    assert j.states()[f"sms-provider:{mid}"] == "planned"
    j.apply([Change(f"sms-provider:{mid}", State.IN_FLIGHT, (State.PLANNED,))], env.portal.now())
    j.apply([Change(f"sms-provider:{mid}", State.SENT, (State.IN_FLIGHT,), result=ActionResult(remote_id="t1", status="sent"))],
            env.portal.now())
    from connector.snapshot import load_snapshot

    with load_snapshot(env.settings, env.store, env.portal.now()) as snap:
        actions = A.sms_status_actions(snap)
    assert [a.payload["status"] for a in actions] == ["queued", "sent"] and actions[1].depends_on == [actions[0].key]
    sink = BitrixSink(env.settings.bitrix24, env.ctx)
    out = sink.execute_batch(actions)
    assert all(isinstance(o, ActionResult) for o in out.values())
    assert env.portal.sms_messages[mid]["statuses"] == ["queued", "sent"]


def test_the_body_parser_reads_php_brackets_and_json():
    form = b"event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=759&document_id%5B0%5D=crm&document_id%5B1%5D=CCrmDocumentDeal&auth%5Bmember_id%5D=a1"
    assert parse_body(form, "application/x-www-form-urlencoded") == {
        "event": "ONCRMDEALUPDATE", "data": {"FIELDS": {"ID": "759"}}, "document_id": ["crm", "CCrmDocumentDeal"],
        "auth": {"member_id": "a1"}}
    assert parse_body(json.dumps({"event": "x"}).encode(), "application/json") == {"event": "x"}


# ---------------------------------------------------------------- one listener for every endpoint


def _endpoint_settings(tmp_path, app_listen: str, push_listen: str) -> Settings:
    return Settings.model_validate({
        "store": f"sqlite:///{tmp_path / 'ep.db'}",
        "bitrix24": {"app": {"client_id": CLIENT_ID, "client_secret": SECRET, "public_url": "https://connector.example",
                             "listen": app_listen}},
        "binotel": {"key": "k", "secret": "s", "url": "http://127.0.0.1:9/api/4.0",
                    "push": {"listen": push_listen, "token": "pushtoken-1234567890"}},
    })


def test_the_push_receiver_and_the_application_share_one_listener_when_both_listen_on_one_address(tmp_path):
    from connector.daemon import Endpoints

    s = _endpoint_settings(tmp_path, "127.0.0.1:0", "127.0.0.1:0")
    store = Store(s.store)
    eps = Endpoints(s, store, Context(clock=PortalClock(Portal(rate_limit=False)), kv_get=store.kv_get, kv_set=store.kv_set))
    eps.start()
    try:
        assert len(eps.servers) == 1 and eps.push is not None and eps.push.address == eps.servers[0].address
        host, port = eps.servers[0].address
        assert requests.get(f"http://{host}:{port}{A.APP_PATH}", timeout=10).status_code == 200
        r = requests.post(f"http://{host}:{port}/binotel/pushtoken-1234567890", data={"requestType": "apiCallSettings"}, timeout=10)
        assert r.status_code == 200
    finally:
        eps.stop()


def test_different_addresses_get_a_listener_each(tmp_path):
    from connector.daemon import Endpoints

    s = _endpoint_settings(tmp_path, "127.0.0.1:0", "127.0.0.2:0")
    store = Store(s.store)
    eps = Endpoints(s, store, Context(clock=PortalClock(Portal(rate_limit=False)), kv_get=store.kv_get, kv_set=store.kv_set))
    eps.start()
    try:
        assert len(eps.servers) == 1 and eps.push is not None and eps.push.address[0] == "127.0.0.2"
        host, port = eps.servers[0].address
        assert requests.post(f"http://{host}:{port}/binotel/pushtoken-1234567890", data={"requestType": "apiCallSettings"},
                             timeout=10).status_code == 404
    finally:
        eps.stop()


def test_check_in_app_mode_wants_the_application_scopes_and_knows_its_trigger_codes(tmp_path, company, english):
    from bitrix.adapter import ADAPTER

    rules = [{"name": "forgotten", "type": "forgotten", "inactive_days": 60,
              "actions": [{"trigger": "client_forgotten"}, {"trigger": "nwly5"}]}]
    e = make_env(tmp_path, company, rules=rules)
    try:
        before = {r.what: r for r in ADAPTER.check(e.settings, e.ctx)}
        assert not before["reach portal"].ok and "not installed yet" in before["reach portal"].detail
        e.install()
        got = ADAPTER.check(e.settings, e.ctx)
        by = {r.what: r for r in got}
        assert by["reach portal"].ok and "local application" in by["reach portal"].detail
        assert by["scope telephony"].ok and by["scope messageservice"].ok
        triggers = {r.detail.split("`")[1]: r for r in got if r.what == "trigger"}
        assert triggers["client_forgotten"].ok and triggers["client_forgotten"].checked
        assert not triggers["nwly5"].ok and "not one of the application's triggers" in triggers["nwly5"].detail
    finally:
        e.endpoint.stop()
        e.http.stop()
        e.srv.stop()
