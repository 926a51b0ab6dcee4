"""The README is part of the product: every command and option it names exists."""

import re
from pathlib import Path

from click.testing import CliRunner

from connector.cli import main

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_command_in_the_readme_exists():
    named = set(re.findall(r"connector (validate|schema|check|sync|status|journal|explain|plan|run|sandbox|demo)\b", README))
    assert named >= {"validate", "schema", "check", "sync", "status", "journal", "explain", "plan", "run", "sandbox", "demo"}
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
    assert {r.type for r in s.rules} == {"forgotten", "release", "lost", "unpaid", "debtors", "missed_call", "invoice_sync",
                                         "order_status"}


def _yaml_blocks_and_example_configs() -> list[tuple[str, str]]:
    blocks = [("README.md", b) for b in re.findall(r"```yaml\n(.+?)\n```", README, flags=re.S)]
    return blocks + [(p.name, p.read_text(encoding="utf-8")) for p in sorted((Path(__file__).parents[2] / "config").glob("*.yaml"))]


def test_env_references_in_the_readme_and_example_configs_are_quoted():
    """A quoted "${VAR}" is standard YAML; editors and schema checkers flag a bare one inside {...}."""
    bare = []
    for name, text in _yaml_blocks_and_example_configs():
        for line in text.splitlines():
            code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
            for m in re.finditer(r"\$\{", code):
                before = code[:m.start()]
                if before.count('"') % 2 == 0 and before.count("'") % 2 == 0:
                    bare.append(f"{name}: {line.strip()}")
    assert bare == []


def test_the_readme_shows_the_schema_line_and_how_to_write_the_schema_file():
    assert "# yaml-language-server: $schema=./connector-schema.json" in README
    assert "connector schema > connector-schema.json" in README


def test_the_configuration_reference_passes_the_schema():
    from jsonschema import Draft7Validator
    from ruamel.yaml import YAML

    from connector.config import json_schema

    section = README.split("## Configuration reference", 1)[1]
    header, rules = re.findall(r"```yaml\n(.+?)\n```", section, flags=re.S)[:2]
    data = YAML(typ="safe").load(re.sub(r"\$\{[A-Z0-9_]+\}", "value1234", header.replace("rules: [...]", rules)))
    assert [e.message for e in Draft7Validator(json_schema()).iter_errors(data)] == []
