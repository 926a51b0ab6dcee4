"""Templates are sandboxed (immutable) and bounded in time, output and memory, at validate and at run time."""

from __future__ import annotations

import pytest
from jinja2 import TemplateError

from connector.config import load_settings
from connector.errors import ConfigError
from connector.templates import render
from tests.unit.test_config import GOOD, write


def rule_with_title(title: str) -> str:
    return GOOD + f"""\
rules:
  - name: forgotten
    type: forgotten
    inactive_days: 60
    actions:
      - task:
          title: '{title}'
"""


@pytest.fixture(autouse=True)
def _webhook(monkeypatch):
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "https://x/rest/1/abcdef123/")


def problems_for(tmp_path, title: str) -> list[str]:
    p = write(tmp_path, rule_with_title(title))
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    return [x.replace(str(p), "c.yaml") for x in e.value.problems]


def test_a_template_cannot_change_its_variables(tmp_path):
    [problem] = problems_for(tmp_path, '{{ client.update({"title": "x"}) }}{{ client.title }}')
    assert problem.startswith("c.yaml:14: rules[0].actions[0].task.title: template error:") and "unsafe" in problem


def test_output_larger_than_the_limit_fails_validate(tmp_path):
    [problem] = problems_for(tmp_path, "{% for i in range(10000) %}{% for j in range(100) %}xxxxxxxxxx{% endfor %}{% endfor %}")
    assert problem.startswith("c.yaml:14: rules[0].actions[0].task.title:") and "longer than 65536 characters" in problem


def test_nested_loops_that_run_too_long_fail_validate(tmp_path):
    loops = "{% for i in range(2000) %}{% for j in range(2000) %}{% for k in range(2000) %}{% endfor %}{% endfor %}{% endfor %}"
    [problem] = problems_for(tmp_path, loops)  # 8e9 empty iterations: minutes, even on a fast machine
    assert problem.startswith("c.yaml:14: rules[0].actions[0].task.title:") and "took longer than" in problem


def test_huge_ranges_and_huge_strings_are_refused(tmp_path):
    [problem] = problems_for(tmp_path, "{% for i in range(100000) %}{% endfor %}")  # nested, it would never end
    assert "range() of 100000 items is over the limit" in problem
    [problem] = problems_for(tmp_path, '{{ "x" * 1000000000 }}')
    assert "memory" in problem


def test_at_run_time_a_render_that_data_makes_slow_is_stopped_and_the_next_one_works():
    slow = "{% for a in t %}{% for b in t %}{% for c in t %}{% for d in t %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match="took longer than"):
        render(slow, {"t": "x" * 300})  # 8e9 iterations
    assert render("Hello {{ name }}", {"name": "Chernihiv [/] Grain"}) == "Hello Chernihiv [/] Grain"


def test_object_variables_read_their_keys_as_attributes_as_jinja_would():
    from connector.templates import Text

    client = Text("Acme", title="Acme LLC", items="a key named like a dict method")
    assert render("{{ client }} / {{ client.title }} / {{ client['title'] }}", {"client": client}) == "Acme / Acme LLC / Acme LLC"
    assert render("{{ client.items is callable }}", {"client": client}) == "True"  # the method wins over the key, as in jinja
    with pytest.raises(TemplateError):
        render("{{ client.nope }}", {"client": client})
    with pytest.raises(TemplateError):  # private attributes stay unsafe
        render("{{ client._text }}", {"client": client})
