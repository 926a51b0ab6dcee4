"""Config mistakes an admin makes, each reported at the line to fix, with the path, the value and a suggestion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from connector.config import Settings, load_settings
from connector.errors import ConfigError

HEAD = """\
bitrix24:
  webhook_url: "https://x.bitrix24.ua/rest/1/abcdef123/"
people: {supervisor: 1}
"""
# line 4 onwards
FORGOTTEN = """\
rules:
  - name: forgotten
    type: forgotten
    inactive_days: 60
"""


def problems(tmp_path: Path, body: str) -> tuple[Path, list[str]]:
    p = tmp_path / "config.yaml"
    p.write_text(HEAD + body, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    return p, e.value.problems


def test_unknown_rule_type_is_reported_at_the_type_line_with_a_suggestion(tmp_path):
    p, probs = problems(tmp_path, FORGOTTEN.replace("type: forgotten", "type: forgoten"))
    assert probs == [f"{p}:6: rules[0].type: unknown type `forgoten`; did you mean `forgotten`? "
                     "(one of: forgotten, release, lost, unpaid, debtors, missed_call, greetings, rfm, replenish, recurring, invoice_sync, order_status)"]


def test_a_bad_after_reference_is_reported_at_the_after_line(tmp_path):
    p, probs = problems(tmp_path, FORGOTTEN + """\
  - name: release
    type: release
    after: forgoten
    grace_days: 14
    reassign: {to: [7]}
""")
    assert probs == [f"{p}:10: rules[1].after: `forgoten` names no rule; after must name a forgotten rule; did you mean `forgotten`?"]


def test_after_naming_a_rule_of_another_type_says_which_type_it_is(tmp_path):
    p, probs = problems(tmp_path, FORGOTTEN + """\
  - {name: lost, type: lost}
  - {name: release, type: release, after: lost, grace_days: 14, reassign: {to: [7]}}
""")
    assert probs == [f"{p}:9: rules[2].after: `lost` is a lost rule; after must name a forgotten rule (forgotten rules: forgotten)"]


def test_a_duplicate_rule_name_is_reported_at_the_second_occurrence(tmp_path):
    p, probs = problems(tmp_path, FORGOTTEN + """\
  - name: lost
    type: lost
  - name: forgotten
    type: lost
""")
    assert probs == [f"{p}:10: rules[2].name: rule name `forgotten` is already used by rules[0]"]


def test_a_bad_deadline_names_the_deadline_path_not_task_task(tmp_path):
    p, probs = problems(tmp_path, FORGOTTEN + """\
    actions:
      - task:
          title: "Call {{ client.title }}"
          deadline: 3 weekdays
""")
    assert probs == [f"{p}:11: rules[0].actions[0].task.deadline: expected e.g. '3 workdays', '2 days', '2 hours', "
                     "'30 minutes'; got '3 weekdays'"]


@pytest.mark.parametrize(("body", "line", "expected"), [
    (FORGOTTEN + "    clients: companys\n", 8,
     "rules[0].clients: `companys` is not one of: companies, contacts; did you mean `companies`?"),
    ("calendar:\n  workdays: [mon, tue, fry]\n", 5,
     "calendar.workdays[2]: `fry` is not one of: mon, tue, wed, thu, fri, sat, sun; did you mean `fri`?"),
    (FORGOTTEN + "    inactve_days: 30\n", 8, "rules[0].inactve_days: unknown key `inactve_days`; did you mean `inactive_days`?"),
    ("safety: {max_actions_per_run: 10, max_shar: 0.5}\n", 4, "safety.max_shar: unknown key `max_shar`; did you mean `max_share`?"),
    (FORGOTTEN + "    actions:\n      - notfy: [supervisor]\n", 9,
     "rules[0].actions[0].notfy: unknown action `notfy`; did you mean `notify`? "
     "(one of: comment, email, field, notify, sms, task, trigger, workflow)"),
    (FORGOTTEN + "    actions:\n      - notify: [supervisr]\n", 9,
     "rules[0].actions[0].notify[0]: unknown person `supervisr`; did you mean `supervisor`? "
     "(a user id or one of: duty_manager, previous_responsible, responsible, supervisor)"),
    (FORGOTTEN.replace("inactive_days: 60", "inactive_days: sixty"), 7, "rules[0].inactive_days: expected a whole number, got `sixty`"),
    (FORGOTTEN + "  - {name: lost, type: lost, after_days: sometimes}\n", 8,
     "rules[1].after_days: expected a whole number or `auto`, got `sometimes`"),
])
def test_wrong_values_and_keys_name_the_value_and_a_suggestion(tmp_path, body, line, expected):
    p, probs = problems(tmp_path, body)
    assert probs == [f"{p}:{line}: {expected}"]


def test_a_six_field_cron_is_an_error(tmp_path):
    p, probs = problems(tmp_path, 'schedule: {cron: "*/10 8-20 * * mon-fri *"}\n')
    assert probs == [f"{p}:4: schedule.cron: a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                     "'*/10 8-20 * * mon-fri *' has 6"]


def test_five_field_cron_is_fine(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(HEAD + 'schedule: {cron: "*/10 8-20 * * mon-fri"}\n', encoding="utf-8")
    assert load_settings(p).schedule.cron == "*/10 8-20 * * mon-fri"


def test_sms_without_provider_is_an_error_not_a_silent_log(tmp_path):
    p, probs = problems(tmp_path, "messaging:\n  sms:\n    sender: MyShop\n")
    assert probs == [f"{p}:5: messaging.sms.provider: required key `provider` is missing (one of: turbosms, bitrix24, log)"]


@pytest.mark.parametrize(("body", "line", "expected"), [
    # a key indented one space deeper than its siblings
    ("safety:\n  max_share: 0.2\n   min_clients_for_share: 3\n", 6,
     "wrong indentation: `min_clients_for_share: 3` is indented deeper than line 5, so YAML reads it as the rest of that "
     "line's value; start it in column 3 like the keys above"),
    # a key of a list item that slid back one space
    (FORGOTTEN + "   keep_while_future_task: false\n", 8,
     "wrong indentation: `keep_while_future_task: false` starts in column 4, between line 4 (column 1) and line 7 "
     "(column 5); line it up with one of them"),
    # a key lined up with the list's dash instead of the item's keys
    (FORGOTTEN + "  keep_while_future_task: false\n", 8,
     "wrong indentation: `keep_while_future_task: false` starts in the column of the `-` on line 5; a key of that "
     "list item starts in column 5, a new item starts with `- `"),
    ("safety:\n  max_share: 0.2\n  min_clients_for_share\n  x: 2\n", 6,
     "expected `key: value`, but `min_clients_for_share` has no `:` (or it belongs to the value above)"),
    ("safety:\n\tmax_share: 0.2\n", 5, "a tab in the indentation: YAML indents with spaces only"),
    (FORGOTTEN + "    actions:\n      - task: {title: Debt: {{ client.title }}}\n", 9,
     "YAML syntax: expected ',' or '}', but got ':' (while parsing a flow mapping on line 9)"),
    (FORGOTTEN + "    actions:\n      - comment: Debt: overdue\n", 9,
     'a value that contains `: ` must be quoted, e.g. title: "Debt: {{ client.title }}"'),
])
def test_syntax_and_indentation_errors_point_at_the_line_to_fix_in_words(tmp_path, body, line, expected):
    p, probs = problems(tmp_path, body)
    assert probs == [f"{p}:{line}: (syntax): {expected}"]


def test_env_references_work_quoted_which_is_standard_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("B24_HOOK", "https://x.bitrix24.ua/rest/1/quoted123/")
    monkeypatch.setenv("SUPERVISOR_ID", "17")
    p = tmp_path / "c.yaml"
    p.write_text('bitrix24: {webhook_url: "${B24_HOOK}"}\npeople:\n  supervisor: "${SUPERVISOR_ID}"\n'
                 "  duty_manager: '${DUTY:-3}'\n", encoding="utf-8")
    s = load_settings(p)
    assert s.bitrix24.webhook_url.endswith("/quoted123/") and str(s.people.supervisor) == "17" and str(s.people.duty_manager) == "3"


def test_settings_know_the_line_of_each_value_for_later_checks(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(HEAD + FORGOTTEN + "    where: {responsible: [5, 7]}\n", encoding="utf-8")
    s = load_settings(p)
    assert s.where("people", "supervisor") == f"{p}:3: people.supervisor"
    assert s.where("rules", 0, "where", "responsible", 1) == f"{p}:8: rules[0].where.responsible[1]"
    assert Settings().where("people", "supervisor") == "people.supervisor"  # not loaded from a file


def test_validate_prints_one_problem_per_line_when_piped(tmp_path):
    """Long problems must not wrap at 80 columns when stderr is not a terminal."""
    p = tmp_path / "c.yaml"
    p.write_text(HEAD + FORGOTTEN.replace("type: forgotten", "type: forgoten") + "    clients: companys\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "connector.cli", "validate", str(p)], capture_output=True, text=True,
                       env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"}, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"{p}:6: rules[0].type: unknown type `forgoten`") and lines[0].endswith("recurring, invoice_sync, order_status)")
    assert len(lines[0]) > 80 and len(lines) == 2 and lines[1] == f"1 проблема у {p}; нічого не запущено."


def test_cross_references_are_reported_with_every_other_problem_at_once(tmp_path):
    p, probs = problems(tmp_path, FORGOTTEN + """\
  - name: vip
    type: forgotten
    clients: companys
  - name: release
    type: release
    after: forgoten
    grace_days: 14
    reassign: {to: [7]}
  - name: vip
    type: lost
""")
    assert probs == [
        f"{p}:8: rules[1].inactive_days: required key `inactive_days` is missing",
        f"{p}:10: rules[1].clients: `companys` is not one of: companies, contacts; did you mean `companies`?",
        f"{p}:13: rules[2].after: `forgoten` names no rule; after must name a forgotten rule; did you mean `forgotten`?",
        f"{p}:16: rules[3].name: rule name `vip` is already used by rules[1]",
    ]
