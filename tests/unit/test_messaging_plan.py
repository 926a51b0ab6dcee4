"""Client messages: opt-out, per-client caps, variants, the Bitrix24 SMS provider."""

from datetime import timedelta

from connector.templates import pick_variant
from tests.unit.builders import NOW, world

DEBT = """
- name: debtors
  type: debtors
  min_amount: 1
  actions:
    - sms: {variants: ["Hello {{ client.greeting_name }}, v1", "Hello {{ client.greeting_name }}, v2", "v3 {{ manager.name }}"], marketing: true}
"""


def _debtor(w, i: int, **kw):
    from tests.unit.test_rule_unpaid_debtors import _debt, _link

    c = w.company(i, phones=(f"+380501234{i:03d}",), **kw)
    _link(w, f"cp{i}", c)
    _debt(w, f"cp{i}", 5000, 10)
    return c


def test_opt_out_field_suppresses_client_messages(tmp_path):
    w = world(tmp_path, DEBT, extra="messaging: {sms: {provider: log}, opt_out_field: UF_CRM_NO_SMS, quiet_hours: null}\n")
    _debtor(w, 1, fields={"UF_CRM_NO_SMS": "Y"})
    keep = _debtor(w, 2, fields={"UF_CRM_NO_SMS": "N"})
    assert [a.client_key for a in w.plan().actions] == [keep]


def test_marketing_sms_at_most_once_per_client_per_n_days(tmp_path):
    w = world(tmp_path, DEBT + """
- name: debtors2
  type: debtors
  min_amount: 1
  actions:
    - sms: {text: "second campaign", marketing: true}
""", extra="messaging: {sms: {provider: log}, max_per_client_days: 7, quiet_hours: null}\n")
    _debtor(w, 1)
    plan, _ = w.run()
    sent = [a for a in plan.actions if a.type == "sms"]
    assert len(sent) == 1  # the first campaign; the second is capped
    plan, _ = w.run(NOW + timedelta(days=8))
    assert any(a.rule == "debtors2" for a in plan.actions if a.type == "sms")


def test_variants_rotate_so_a_client_never_gets_the_same_text_twice_in_a_row():
    v = ["a", "b", "c"]
    seq = [pick_variant(v, "bitrix24:company:1", n) for n in range(7)]
    assert all(x != y for x, y in zip(seq, seq[1:], strict=False)) and set(seq) == set(v)
    assert pick_variant(v, "bitrix24:company:1", 0) == pick_variant(v, "bitrix24:company:1", 0)  # deterministic


def test_bitrix24_sms_provider_fires_the_portals_trigger(tmp_path):
    w = world(tmp_path, DEBT, extra="messaging: {sms: {provider: bitrix24, trigger_code: smsrb1}, quiet_hours: null}\n")
    c = _debtor(w, 1)
    (a,) = w.plan().actions
    assert a.type == "trigger" and a.system == "bitrix24" and a.payload["code"] == "smsrb1" and a.payload["entity"] == c
    assert a.payload["sms"]["text"].startswith(("Hello шановний клієнте", "v3"))
