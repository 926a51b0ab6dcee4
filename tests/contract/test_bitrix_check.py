"""``check`` looks up every user, custom field and trigger code a config names, in the emulated portal."""

from __future__ import annotations

import pytest

from bitrix.adapter import ADAPTER
from bitrix.emulator import EmulatorServer, Portal
from connector.config import load_settings
from connector.ports import Context, SystemClock
from connector.sandbox import generate
from tests.contract.conftest import CODE


@pytest.fixture(scope="module")
def company():
    return generate(companies=20, activities_per_company=1)


@pytest.fixture
def server(company):
    with EmulatorServer(Portal.from_company(company, webhook_code=CODE)) as srv:
        yield srv


CONFIG = """\
bitrix24:
  webhook_url: "{url}"
  fields: [UF_CRM_TEMPERATUR, UF_CRM_1C_GUID]
people:
  supervisor: 99
  duty_manager: "bitrix24:user:2"
rules:
  - name: forgotten
    type: forgotten
    clients: contacts
    inactive_days: 60
    where: {{responsible: [4, 3], field: {{UF_CRM_1C_GUID: x}}}}
    actions:
      - task: {{title: "Call {{{{ client.title }}}}", responsible: 5}}
      - trigger: nwly5
  - name: release
    type: release
    after: forgotten
    grace_days: 14
    reassign: {{to: [7, 4, 123]}}
    actions:
      - notify: [supervisor, 77]
"""


def check(server, tmp_path, text):
    p = tmp_path / "config.yaml"
    p.write_text(text.format(url=server.webhook_url), encoding="utf-8")
    settings = load_settings(p)
    return p, ADAPTER.check(settings, Context(clock=SystemClock()))


def test_check_names_missing_and_dismissed_people_and_misspelled_fields_with_their_lines(server, tmp_path):
    p, results = check(server, tmp_path, CONFIG)
    failed = [r.detail for r in results if not r.ok]
    assert f"{p}:5: people.supervisor: user 99 does not exist" in failed
    assert any(d.startswith(f"{p}:20: rules[1].reassign.to[1]: user 4 (") and d.endswith(") is dismissed (not active)") for d in failed)
    assert f"{p}:20: rules[1].reassign.to[2]: user 123 does not exist" in failed
    assert f"{p}:22: rules[1].actions[0].notify[1]: user 77 does not exist" in failed
    assert f'{p}:3: bitrix24.fields[0]: field UF_CRM_TEMPERATUR does not exist on companies or contacts; ' \
           f'did you mean UF_CRM_TEMPERATURE ("Temperature")?' in failed
    # the rule acts on contacts, and the portal has that field on companies only
    assert f"{p}:12: rules[0].where.field.UF_CRM_1C_GUID: field UF_CRM_1C_GUID does not exist on contacts " \
           "(only on companies; the rule's clients are contacts)" in failed
    # a dismissed manager may be a filter (whose clients to look at), never a recipient of work
    assert not any("where.responsible" in d for d in failed)
    assert not any("duty_manager" in d or "task.responsible" in d for d in failed)
    assert len(failed) == 6, failed
    (trigger,) = [r for r in results if r.what == "trigger"]
    assert trigger.ok and not trigger.checked
    assert trigger.detail.startswith(f"{p}:15: rules[0].actions[1].trigger: `nwly5` not verifiable through the REST API")


def test_check_passes_a_config_whose_names_all_exist(server, tmp_path):
    good = CONFIG.replace("UF_CRM_TEMPERATUR,", "UF_CRM_TEMPERATURE,").replace("supervisor: 99", "supervisor: 1") \
        .replace("clients: contacts", "clients: companies").replace("[7, 4, 123]", "[7, 9]").replace(", 77]", "]")
    _, results = check(server, tmp_path, good)
    rows = {r.what: r for r in results}
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    assert rows["people"].detail == "all 7 users named in the config exist and are active"
    assert rows["custom fields"].detail == "all 2 fields named in the config exist"


def test_a_field_defined_on_contacts_satisfies_a_contacts_rule(server, tmp_path, company):
    portal = Portal.from_company(company, webhook_code=CODE)
    portal.define_uf("contact", "UF_CRM_1C_GUID", label="1C GUID")
    with EmulatorServer(portal) as srv:
        _, results = check(srv, tmp_path, CONFIG)
    assert not any("UF_CRM_1C_GUID" in r.detail for r in results if not r.ok)


def test_emulated_user_get_filters_ids_and_keeps_dismissed_users(server):
    from bitrix.client import BitrixClient
    from connector.config import Bitrix24

    with BitrixClient(Bitrix24(webhook_url=server.webhook_url), Context(clock=SystemClock())) as client:
        users = client.result("user.get", {"FILTER": {"@ID": [1, 4, 99]}})
        active = client.result("user.get", {"FILTER": {"@ID": [1, 4], "ACTIVE": True}})
        fields = client.result("crm.company.fields")
    assert sorted(u["ID"] for u in users) == ["1", "4"] and {u["ID"]: u["ACTIVE"] for u in users} == {"1": True, "4": False}
    assert [u["ID"] for u in active] == ["1"]
    assert fields["UF_CRM_TEMPERATURE"]["isDynamic"] and fields["UF_CRM_TEMPERATURE"]["listLabel"] == "Temperature"
    assert fields["ASSIGNED_BY_ID"]["type"] == "user" and fields["TITLE"]["isRequired"]
