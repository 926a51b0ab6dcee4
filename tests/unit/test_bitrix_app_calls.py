"""Which PBX calls the Bitrix24 application puts on a client card, for whom, and how (pure store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bitrix import app as A
from connector import domain as d
from connector.config import Settings
from connector.ports import Context
from connector.snapshot import load_snapshot
from connector.store import Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
INSTALLED = NOW - timedelta(hours=3)


def world(tmp_path, **app) -> tuple[Settings, Store]:
    s = Settings.model_validate({
        "store": f"sqlite:///{tmp_path / 'calls.db'}",
        "bitrix24": {"app": {"client_id": "local.x", "client_secret": "app-secret-42", "public_url": "https://c.example", **app}},
        "binotel": {"key": "k", "secret": "s"},
        "people": {"supervisor": 1, "duty_manager": 2},
    })
    store = Store(s.store)
    ctx = Context(clock=None, kv_get=store.kv_get, kv_set=store.kv_set)
    A.save_install(ctx, member_id="m1", application_token="t1", endpoint="https://p.example/rest/", access="a", refresh="r",
                   user_id=1, now=INSTALLED)
    store.write([
        d.Manager("bitrix24:user:1", "bitrix24", "1", "Boss", email="boss@shop.example", extension="901"),
        d.Manager("bitrix24:user:2", "bitrix24", "2", "Duty", email="duty@shop.example", extension="902"),
        d.Manager("bitrix24:user:6", "bitrix24", "6", "Roman", email="roman@shop.example", extension="906"),
        d.Manager("bitrix24:user:7", "bitrix24", "7", "Gone", active=False, email="gone@shop.example", extension="907"),
        d.Manager("binotel:employee:roman@shop.example", "binotel", "roman@shop.example", "Roman", email="Roman@Shop.example"),
        d.Client("bitrix24:company:5", "bitrix24", "5", d.ClientKind.COMPANY, "Acme", responsible_key="bitrix24:user:2",
                 phones=("+380501112233",)),
        d.Client("bitrix24:contact:8", "bitrix24", "8", d.ClientKind.CONTACT, "Olena", responsible_key="bitrix24:user:1",
                 company_key="bitrix24:company:5", phones=("0501112233",)),
    ])
    return s, store


def call(gid: str, *, at: datetime, phone: str = "0501112233", manager: str | None = "binotel:employee:roman@shop.example",
         internal: str = "906", talk: int = 30, answered: bool = True, disposition: str = "ANSWER", direction: str = "in",
         final: bool = True) -> d.Call:
    return d.Call(f"binotel:call:{gid}", "binotel", gid, direction, phone, at, wait_s=3, talk_s=talk, disposition=disposition,
                  answered=answered, internal_number=internal, manager_key=manager, final=final)


def actions(s: Settings, store: Store) -> list:
    with load_snapshot(s, store, NOW) as snap:
        return A.own_actions(s, snap)["telephony"]


def test_calls_since_the_installation_land_on_the_card_of_the_person_holding_the_number(tmp_path):
    s, store = world(tmp_path)
    store.write([call("1", at=NOW - timedelta(hours=1)), call("0", at=INSTALLED - timedelta(minutes=1)),
                 call("2", at=NOW - timedelta(minutes=5), final=False)])
    (a,) = actions(s, store)
    assert a.key == "telephony:1" and a.type == "call_log" and a.system == "bitrix24"
    p = a.payload
    assert p["entity"] == "bitrix24:contact:8"  # the contact holding the number, before its company
    assert p["user"] == 6  # the PBX employee's e-mail, case-insensitive
    assert (p["type"], p["status"], p["duration"], p["external_id"]) == (2, "200", 30, "1")
    assert p["record"] == A.record_link(s.bitrix24.app, "1") and p["create"] is False


def test_missed_and_unknown_calls_and_who_they_belong_to(tmp_path):
    s, store = world(tmp_path, create_leads=True)
    store.write([
        call("3", at=NOW - timedelta(hours=1), talk=0, answered=False, disposition="NOANSWER", manager=None, internal="902"),
        call("4", at=NOW - timedelta(hours=1), phone="0671234567", talk=0, answered=False, disposition="BUSY", manager=None,
             internal="", direction="out"),
        call("5", at=NOW - timedelta(hours=1), manager=None, internal="907"),  # a dismissed manager's extension
    ])
    got = {a.key: a.payload for a in actions(s, store)}
    missed, unknown, dismissed = got["telephony:3"], got["telephony:4"], got["telephony:5"]
    assert (missed["status"], missed["record"], missed["user"]) == ("304", None, 2)  # the extension's user
    assert (unknown["type"], unknown["status"], unknown["entity"], unknown["create"]) == (1, "486", None, True)
    assert unknown["user"] == 2  # nobody's number: the duty manager
    assert dismissed["user"] == 1  # never a dismissed user: the client's manager instead


def test_nothing_before_installation_or_when_calls_are_not_logged(tmp_path):
    s, store = world(tmp_path, log_calls=False)
    store.write([call("1", at=NOW - timedelta(hours=1))])
    with load_snapshot(s, store, NOW) as snap:
        assert "telephony" not in A.own_actions(s, snap)
