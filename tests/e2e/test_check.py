"""``connector check`` as an admin runs it: every mistake in the names of people and fields at its config line."""

from __future__ import annotations

from tests.e2e.conftest import DEMO


def test_check_names_a_missing_supervisor_and_a_misspelled_field_at_their_lines(sandbox):
    text = DEMO.read_text(encoding="utf-8")
    assert "people: {supervisor: 1, duty_manager: 2}" in text and "fields: [UF_CRM_TEMPERATURE]" in text
    config = sandbox.tmp / "config.yaml"
    config.write_text(text.replace("people: {supervisor: 1, duty_manager: 2}", "people: {supervisor: 99, duty_manager: 2}")
                      .replace("fields: [UF_CRM_TEMPERATURE]", "fields: [UF_CRM_TEMPERATUR]"), encoding="utf-8")
    lines = config.read_text(encoding="utf-8").splitlines()
    people_line = next(i for i, line in enumerate(lines, 1) if line.startswith("people:"))
    fields_line = next(i for i, line in enumerate(lines, 1) if "UF_CRM_TEMPERATUR]" in line)

    r = sandbox.cli("check", str(config), extra_env={"COLUMNS": "80"})
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert f"FAIL  bitrix24  people: {config}:{people_line}: people.supervisor: user 99 does not exist" in out
    assert (f"FAIL  bitrix24  custom fields: {config}:{fields_line}: bitrix24.fields[0]: field UF_CRM_TEMPERATUR does not "
            'exist on companies or contacts; did you mean UF_CRM_TEMPERATURE ("Temperature")?') in out
    assert out[-1] == "2 перевірки не пройшли."
    assert "sandboxsecret0001" not in r.stdout + r.stderr


def test_check_of_the_demo_config_passes_and_says_what_it_could_not_verify(sandbox):
    r = sandbox.cli("check", str(DEMO))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert any(line.startswith("ok    bitrix24  people: all ") for line in out)
    assert any(line.startswith("skip  turbosms  sender: ") for line in out)
    assert out[-1] == "Усі перевірки пройдено."


def test_check_names_an_invoice_field_and_a_requisite_template_the_portal_lacks(sandbox):
    text = DEMO.read_text(encoding="utf-8")
    assert "  match: [tax_id, guid_field, phone]\n" in text and "    match: [number, basis, amount]" in text
    config = sandbox.tmp / "config.yaml"
    config.write_text(text.replace("  match: [tax_id, guid_field, phone]\n",
                                   "  match: [tax_id, guid_field, phone]\n  create_missing: true\n  create_missing_preset: 7\n")
                      .replace("    match: [number, basis, amount]", "    match: [number, basis, amount]\n    number_field: acountNumber"),
                      encoding="utf-8")
    lines = config.read_text(encoding="utf-8").splitlines()
    preset_line = next(i for i, line in enumerate(lines, 1) if "create_missing_preset" in line)
    number_line = next(i for i, line in enumerate(lines, 1) if "acountNumber" in line)

    r = sandbox.cli("check", str(config), extra_env={"COLUMNS": "80"})
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert any(line.startswith(f"FAIL  bitrix24  invoice fields: {config}:{number_line}: rules[")
               and line.endswith("number_field: invoices have no field acountNumber (did you mean accountNumber?)") for line in out), out
    assert (f"FAIL  bitrix24  requisite template: {config}:{preset_line}: onec.create_missing_preset: the portal has no "
            "requisite template 7 (it has: 1 Organization, 3 Sole Proprietorship, 5 Individual)") in out
    assert not any("invoice fields" in line and line.startswith("ok") for line in out)


def test_check_of_the_demo_config_confirms_the_invoice_fields_and_the_template(sandbox):
    text = DEMO.read_text(encoding="utf-8")
    config = sandbox.tmp / "config.yaml"
    config.write_text(text.replace("  match: [tax_id, guid_field, phone]\n", "  match: [tax_id, guid_field, phone]\n  create_missing: true\n"),
                      encoding="utf-8")
    r = sandbox.cli("check", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    assert "ok    bitrix24  invoice fields: accountNumber, xmlId exist on invoices" in out
    assert "ok    bitrix24  requisite template: 1 (Organization) for created companies" in out
