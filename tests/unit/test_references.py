"""The people, fields and trigger codes a config names, each with the path ``check`` reports it at."""

from __future__ import annotations

from connector import references
from connector.config import load_settings

CONFIG = """\
bitrix24:
  webhook_url: "https://x.bitrix24.ua/rest/1/abcdef123/"
  fields: [UF_CRM_A]
  opt_out_field: UF_CRM_NO_SMS
people: {supervisor: 1, duty_manager: "bitrix24:user:2"}
binotel: {key: k, secret: s, duty_manager: 3}
messaging:
  sms: {provider: bitrix24, trigger_code: smsrb1}
rules:
  - name: f
    type: forgotten
    clients: contacts
    inactive_days: 60
    where: {responsible: [4], not_responsible: [5], field: {UF_CRM_B: x}}
    actions:
      - task: {title: t, responsible: 6}
      - field: {UF_CRM_C: y}
    escalate:
      - after_days: 7
        actions: [{notify: {to: [supervisor, 8]}}, {trigger: abc12}]
  - name: r
    type: release
    after: f
    grace_days: 3
    reassign: {to: [7]}
  - name: lost
    type: lost
    cadence: {field: UF_CRM_T}
  - name: debts
    type: debtors
    actions: [{field: {UF_CRM_D: z}}]
"""


def test_references_name_every_person_field_and_code_with_its_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(CONFIG, encoding="utf-8")
    s = load_settings(p)
    people = {(x.path, x.system, x.id, x.must_be_active) for x in references.people(s)}
    assert people == {
        (("people", "supervisor"), "bitrix24", "1", True),
        (("people", "duty_manager"), "bitrix24", "2", True),
        (("binotel", "duty_manager"), "bitrix24", "3", True),
        (("rules", 0, "where", "responsible", 0), "bitrix24", "4", False),
        (("rules", 0, "where", "not_responsible", 0), "bitrix24", "5", False),
        (("rules", 0, "actions", 0, "task", "responsible"), "bitrix24", "6", True),
        (("rules", 0, "escalate", 0, "actions", 0, "notify", "to", 1), "bitrix24", "8", True),
        (("rules", 1, "reassign", "to", 0), "bitrix24", "7", True),
    }
    fields = {(f.path, f.name, f.entity) for f in references.custom_fields(s)}
    assert fields == {
        (("bitrix24", "fields", 0), "UF_CRM_A", None),
        (("bitrix24", "opt_out_field"), "UF_CRM_NO_SMS", None),
        (("rules", 0, "where", "field", "UF_CRM_B"), "UF_CRM_B", "contact"),
        (("rules", 0, "actions", 1, "field", "UF_CRM_C"), "UF_CRM_C", "contact"),
        (("rules", 2, "cadence", "field"), "UF_CRM_T", "company"),
        (("rules", 3, "actions", 0, "field", "UF_CRM_D"), "UF_CRM_D", None),  # debtors: companies or contacts
    }
    codes = {(t.path, t.code) for t in references.trigger_codes(s)}
    assert codes == {(("messaging", "sms", "trigger_code"), "smsrb1"),
                     (("rules", 0, "escalate", 0, "actions", 1, "trigger"), "abc12")}
    assert s.where("rules", 0, "escalate", 0, "actions", 0, "notify", "to", 1) == f"{p}:20: rules[0].escalate[0].actions[0].notify.to[1]"
