"""The README is part of the product: every command and option it names exists."""

import re
from pathlib import Path

from click.testing import CliRunner

from connector.cli import main

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_command_in_the_readme_exists():
    named = set(re.findall(r"connector (validate|schema|check|sync|status|plan|run|sandbox|demo)\b", README))
    assert named >= {"validate", "schema", "check", "sync", "status", "plan", "run", "sandbox", "demo"}
    for cmd in named:
        assert cmd in main.commands


def test_every_option_in_the_command_table_exists():
    for cmd, opts in re.findall(r"\| `connector (\w+) [^`]*?((?:\[--[\w-]+[^\]]*\]\s*)+)`", README):
        for opt in re.findall(r"--[\w-]+", opts):
            names = {o for p in main.commands[cmd].params for o in getattr(p, "opts", [])}
            assert opt in names, (cmd, opt)


def test_readme_has_exactly_the_two_quick_start_commands():
    block = README.split("## Quick start", 1)[1].split("## Commands", 1)[0]
    cmds = re.findall(r"```bash\n(.+?)\n```", block)
    assert len(cmds) == 2 and "connector demo" in cmds[0] and "pytest" in cmds[1]


def test_schema_command_prints_json():
    r = CliRunner().invoke(main, ["schema"])
    assert r.exit_code == 0 and '"rules"' in r.output


def test_the_configuration_reference_validates(tmp_path, monkeypatch):
    from connector.config import load_settings

    section = README.split("## Configuration reference", 1)[1]
    header, rules = re.findall(r"```yaml\n(.+?)\n```", section, flags=re.S)[:2]
    for name in set(re.findall(r"\$\{([A-Z0-9_]+)", header + rules)):
        monkeypatch.setenv(name, "https://example.test/rest/1/abcd1234/" if "URL" in name or "ENDPOINT" in name
                           else "value1234-value1234")
    text = header.replace("rules: [...]", rules)
    p = tmp_path / "reference.yaml"
    p.write_text(text, encoding="utf-8")
    s = load_settings(p)
    assert {r.type for r in s.rules} == {"forgotten", "release", "lost", "unpaid", "debtors", "missed_call"}
