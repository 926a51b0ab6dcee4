import json

import pytest

from connector.config import json_schema, load_settings
from connector.errors import ConfigError

GOOD = """\
timezone: Europe/Kyiv
store: sqlite:///connector.db
calendar: {country: UA, workdays: [mon, tue, wed, thu, fri], hours: "09:00-18:00"}
bitrix24:
  webhook_url: ${BITRIX24_WEBHOOK_URL}   # or oauth: {domain, client_id, client_secret, refresh_token}
people: {supervisor: 1}
safety: {max_actions_per_run: 500, max_share: 0.25}
"""


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_issue_header_validates(tmp_path, monkeypatch):
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "https://x.bitrix24.ua/rest/1/abcdef123/")
    s = load_settings(write(tmp_path, GOOD))
    assert s.bitrix24.webhook_url.endswith("/abcdef123/") and s.safety.max_share == 0.25


def test_missing_env_var_names_it_with_file_and_line(tmp_path, monkeypatch):
    monkeypatch.delenv("BITRIX24_WEBHOOK_URL", raising=False)
    p = write(tmp_path, GOOD)
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert f"{p}:5: bitrix24.webhook_url: environment variable BITRIX24_WEBHOOK_URL is not set" in e.value.problems


def test_dotenv_beside_config_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv("BITRIX24_WEBHOOK_URL", raising=False)
    write(tmp_path, "BITRIX24_WEBHOOK_URL=https://y.bitrix24.ua/rest/1/fromdotenv/\n", ".env")
    assert load_settings(write(tmp_path, GOOD)).bitrix24.webhook_url.endswith("fromdotenv/")


def test_every_problem_at_once_with_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "https://x/rest/1/abcdef123/")
    text = GOOD.replace("max_share: 0.25", "max_shar: 0.25") + """\
rules:
  - name: forgotten
    type: forgotten
    inactive_days: sixty
    actions:
      - task: {title: "No contact: {{ client.titel }}"}
      - notfy: [supervisor]
  - name: release
    type: release
    after: nothing
    grace_days: 14
    reassign: {to: [7]}
"""
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    probs = e.value.problems
    assert f"{p}:7: safety.max_shar: unknown key `max_shar`; did you mean `max_share`?" in probs
    assert f"{p}:11: rules[0].inactive_days: expected a whole number, got `sixty`" in probs
    assert any(x.startswith(f"{p}:14: rules[0].actions[1].notfy: unknown action `notfy`; did you mean `notify`?") for x in probs)
    assert probs == sorted(probs, key=lambda x: int(x.split(":")[1]))  # in the order of the file


def test_unknown_template_variable_is_a_validate_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "https://x/rest/1/abcdef123/")
    p = write(tmp_path, GOOD + """\
rules:
  - name: forgotten
    type: forgotten
    inactive_days: 60
    actions:
      - task: {title: "No contact: {{ client.titel }}"}
""")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    (msg,) = e.value.problems
    assert msg.startswith(f"{p}:13: rules[0].actions[0].task.title: template error") and "titel" in msg


def test_release_must_follow_a_forgotten_rule_and_exactly_one_auth(tmp_path):
    p = write(tmp_path, """\
bitrix24: {webhook_url: "https://x/rest/1/abcdef123/", oauth: {domain: x, client_id: a, client_secret: b, refresh_token: c}}
rules:
  - {name: release, type: release, after: nope, grace_days: 1, reassign: {to: [7]}}
""")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    text = "\n".join(e.value.problems)
    assert "set exactly one of webhook_url or oauth" in text


def test_secrets_never_appear_in_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "https://x/rest/1/verysecretcode42/")
    p = write(tmp_path, GOOD.replace("timezone: Europe/Kyiv", "timezone: Mars/Olympus"))
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    from connector.errors import UpstreamError

    err = UpstreamError("failed calling https://x/rest/1/verysecretcode42/crm.company.list", system="bitrix24", obj="crm.company.list")
    assert "verysecretcode42" not in str(err) and "verysecretcode42" not in str(e.value)


def test_schema_is_json_schema_with_rules(tmp_path):
    s = json_schema()
    assert s["title"] == "connector config" and "rules" in s["properties"]
    json.dumps(s)


def _schema_properties(schema: dict):
    for where, node in [("(root)", schema), *schema["definitions"].items()]:
        for name, prop in node.get("properties", {}).items():
            yield f"{where}.{name}", prop


def test_schema_is_draft_07_which_editors_support():
    from jsonschema import Draft7Validator

    s = json_schema()
    Draft7Validator.check_schema(s)
    text = json.dumps(s)
    assert s["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert "$defs" not in text and '"#/definitions/' in text and '"discriminator"' not in text
    # draft-07 ignores keywords beside $ref, so a described $ref must be wrapped
    assert all(set(p) == {"$ref"} for p in _refs(s))


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_every_schema_property_has_a_description_and_an_example():
    props = dict(_schema_properties(json_schema()))
    assert len(props) > 150
    assert [name for name, p in props.items() if not p.get("description")] == []
    assert [name for name, p in props.items() if not p.get("examples")] == []


def _substituted(text: str) -> str:
    """${VAR} and ${VAR:-default} replaced by dummy values, as the environment would."""
    import re

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}",
                  lambda m: m.group(2) if m.group(2) is not None else ("https://example.test/x" if "URL" in m.group(1) else "value1234"),
                  text)


def test_the_schema_validates_every_example_config():
    from pathlib import Path

    from jsonschema import Draft7Validator
    from ruamel.yaml import YAML

    validator = Draft7Validator(json_schema())
    configs = sorted((Path(__file__).parents[2] / "config").glob("*.yaml"))
    assert configs
    for c in configs:
        data = YAML(typ="safe").load(_substituted(c.read_text(encoding="utf-8")))
        assert [e.message for e in validator.iter_errors(data)] == [], c
        data["rules"][0]["type"] = "forgoten"  # and it does catch a mistake
        assert list(validator.iter_errors(data)), c


def test_example_configs_validate(monkeypatch):
    from pathlib import Path

    for name in ("BITRIX24_WEBHOOK_URL", "ONEC_ODATA_URL", "ONEC_USER", "ONEC_PASSWORD", "ONEC_WSDL_URL", "BINOTEL_KEY", "BINOTEL_SECRET",
                 "BINOTEL_URL", "ONEC_SUPERVISOR", "ONEC_DUTY_MANAGER", "TURBOSMS_TOKEN", "TURBOSMS_URL", "SMTP_URL", "BINOTEL_PUSH_TOKEN"):
        monkeypatch.setenv(name, "https://example.test/rest/1/abcd1234/" if "URL" in name else "value1234")
    configs = sorted((Path(__file__).parents[2] / "config").glob("*.yaml"))
    assert configs
    for c in configs:
        load_settings(c)


def test_money_filter_formats_by_the_configs_language():
    from connector import i18n
    from connector.templates import render

    text = "{{ a | money }} / {{ b | money(0) }} / {{ a | money('UAH') }} / {{ a | money('UAH', 0) }}"
    assert render(text, {"a": 42000, "b": 1234567.891}) == "42 000,00 / 1 234 568 / 42 000,00 ₴ / 42 000 ₴"
    i18n.use("en")
    assert render(text, {"a": 42000, "b": 1234567.891}) == "42,000.00 / 1,234,568 / UAH42,000.00 / UAH42,000"


def test_env_references_inside_flow_mappings_as_the_issues_write_them(tmp_path, monkeypatch):
    monkeypatch.setenv("BINOTEL_PUSH_TOKEN", "tok{en}:#x-16-chars-or-more")
    monkeypatch.setenv("SMTP_URL", "smtp://u:p@127.0.0.1:2525")
    monkeypatch.setenv("BINOTEL_KEY", "k123")
    monkeypatch.setenv("BINOTEL_SECRET", "s123")
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "https://x/rest/1/abcdef123/")
    p = write(tmp_path, GOOD + """\
binotel:
  key: ${BINOTEL_KEY}
  secret: ${BINOTEL_SECRET}
  push: {listen: "127.0.0.1:8085", token: ${BINOTEL_PUSH_TOKEN}, allow_from: []}   # optional
messaging:
  email: {smtp: ${SMTP_URL}, from: "shop@example.com"}
store2: ${NOT_SET_ANYWHERE}
""")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert any(x.startswith(f"{p}:14: store2: environment variable NOT_SET_ANYWHERE is not set") for x in e.value.problems)
    p.write_text(p.read_text().replace("store2: ${NOT_SET_ANYWHERE}\n", ""), encoding="utf-8")
    s = load_settings(p)
    assert s.binotel.push.token == "tok{en}:#x-16-chars-or-more" and s.messaging.email.smtp == "smtp://u:p@127.0.0.1:2525"


ISSUE_5_AND_6 = """\
phone_region: UA                  # default region for numbers without a country code
binotel:
  key: ${BINOTEL_KEY}
  secret: ${BINOTEL_SECRET}
  url: https://api.binotel.com/api/4.0    # the default; overridable for sandboxes
  push: {listen: "127.0.0.1:8085", token: ${BINOTEL_PUSH_TOKEN}, allow_from: []}   # optional
messaging:
  sms:
    provider: turbosms            # turbosms | bitrix24 | log
    token: ${TURBOSMS_TOKEN}
    sender: MyShop
    url: https://api.turbosms.ua  # the default; overridable for sandboxes
  email: {smtp: ${SMTP_URL}, from: "shop@example.com"}
  quiet_hours: "21:00-09:00"      # client messages wait outside allowed hours and non-workdays
onec:
  odata:
    url: ${ONEC_ODATA_URL}        # .../<base>/odata/standard.odata
    user: ${ONEC_USER}
    password: ${ONEC_PASSWORD}
  soap:                           # optional
    wsdl: ${ONEC_WSDL_URL}        # .../<base>/ws/<name>.1cws?wsdl
  preset: ut11                    # ut11 | unf | utp; any object or field name can be overridden:
  objects: {}                     # e.g. {counterparties: Catalog_Контрагенты, receivables: ...}
  match: [tax_id, guid_field, phone]
rules:
  - name: missed_call
    type: missed_call
    callback_within_minutes: 15
    actions:
      - sms: {text: "Sorry we missed your call. {{ manager.name }} will call you back today."}
      - task: {title: "Call back {{ call.phone }}", deadline: 2 hours}
  - name: debtors
    type: debtors
    min_amount: 1000              # receivable balance at least this
    overdue_days: 7
    actions:
      - task: {title: "Debt {{ debt.amount }} {{ debt.currency }}: {{ client.title }}", deadline: 1 workdays}
    escalate:
      - after_days: 7
        actions: [{notify: [supervisor]}]
"""


def test_the_contracts_of_issues_5_and_6_validate_verbatim(tmp_path, monkeypatch):
    for name in ("BITRIX24_WEBHOOK_URL", "BINOTEL_KEY", "BINOTEL_SECRET", "BINOTEL_PUSH_TOKEN", "TURBOSMS_TOKEN", "SMTP_URL",
                 "ONEC_ODATA_URL", "ONEC_USER", "ONEC_PASSWORD", "ONEC_WSDL_URL"):
        monkeypatch.setenv(name, "https://x/rest/1/abcdef123/" if "URL" in name else "value1234-value1234")
    s = load_settings(write(tmp_path, GOOD + ISSUE_5_AND_6))
    assert s.binotel.push.token == "value1234-value1234" and s.onec.preset == "ut11" and [r.type for r in s.rules] == ["missed_call", "debtors"]
