"""What people read comes in the config's language: every rule type's reasons, clear reasons, default
task, comment and notification texts, the plan as printed, and template objects rendered as text."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from babel.messages.pofile import read_po
from rich.console import Console

from connector import domain as d
from connector import i18n, report
from connector.calendar import BusinessCalendar
from connector.journal import Journal
from connector.plan import Planner
from connector.rules import evaluate
from connector.store import links
from connector.templates import Amount, Text, When, render, variables_for
from tests.unit.builders import NOW, k, world
from tests.unit.test_i18n import _msgids

RULES = """
- name: r1
  type: forgotten
  inactive_days: 60
  actions:
    - task: {title: "Т", deadline: 3 workdays}
    - notify: [supervisor]
- name: r2
  type: release
  after: r1
  grace_days: 14
  reassign: {to: [7, 9]}
  actions:
    - notify: [supervisor, previous_responsible]
- name: r3
  type: lost
  min_purchases: 2
  after_days: 180
  actions: [{task: {title: "Т", deadline: 1 workdays}}]
- name: r4
  type: unpaid
  overdue_days: 3
  actions: [{task: {title: "Т", deadline: 1 workdays}}]
- name: r5
  type: debtors
  min_amount: 1000
  overdue_days: 7
  actions: [{task: {title: "Т", deadline: 1 workdays}}]
- name: r6
  type: missed_call
  callback_within_minutes: 15
  actions: [{task: {title: "Т", deadline: 2 hours}}]
"""

CYRILLIC = re.compile(r"[А-Яа-яІіЇїЄєҐґЁё]")
ASCII_WORD = re.compile(r"(?<![\w.-])[A-Za-z][A-Za-z'’]{2,}(?![\w.-])")
MARKER = re.compile(r"\[cn-[0-9a-f]+\]")
# codes and names that stay as they are in every language
TECHNICAL = {"SMS", "API", "CRM", "OK", "Binotel", "connector", "loopback", "Ctrl", "FILE", "plan", "run", "once", "now", "all",
             "out", "json", "force", "rule", "config", "demo", "yaml", "status", "safety", "max_share", "max_actions_per_run", "ISO", "report", "journal",
             "explain", "healthz", "metrics", "debug", "enabled", "false", "where", "clients", "PID", "SIGTERM", "scopes",
             "turbosms", "rates"}  # config keys, literals, protocol names
RULE_TYPES = {"forgotten", "release", "lost", "unpaid", "debtors", "missed_call"}


def _english_words() -> set[str]:
    """Every word of every English msgid (placeholders and technical names left out)."""
    words: set[str] = set()
    for m in _msgids():
        for text in (m if isinstance(m, tuple) else (m,)):
            words |= {w.lower() for w in ASCII_WORD.findall(re.sub(r"\{[a-z_]+\}|`[^`]*`|--[a-z]+|\S+\.yaml", " ", text))}
    return words - {w.lower() for w in TECHNICAL}


ENGLISH = _english_words()


def _english_left(text: str, allowed: set[str] = frozenset()) -> list[str]:
    return [w for w in ASCII_WORD.findall(MARKER.sub("", text)) if w.lower() in ENGLISH and w not in allowed]


def _scenario(tmp_path, language: str):
    """One subject for every rule type, all names Cyrillic, so any English left is the connector's."""
    w = world(tmp_path, RULES, extra=f"language: {language}\n")
    for i, name in ((1, "Олена Коваль"), (2, "Черговий Менеджер"), (3, "Іван Петренко"), (4, "Звільнений Працівник"),
                    (7, "Марія Шевченко"), (9, "Петро Бондар")):
        w.manager(i, name, active=i != 4)
    sleepy = w.company(1, "ТОВ Сонний", responsible=3)
    w.activity(sleepy, 90)
    back = w.company(2, "ТОВ Повернеться", responsible=3)
    w.activity(back, 80, kind="email")
    lost = w.company(3, "ТОВ Загублений", responsible=3)
    w.deal(lost, 400)
    w.deal(lost, 200)
    payer = w.company(4, "ТОВ Платник", responsible=3)
    w.activity(payer, 1)
    w.store.write([d.Invoice(k("invoice", 17), "bitrix24", "17", "Рахунок №17", client_key=payer, amount=18500.0, currency="UAH",
                             issued_at=NOW - timedelta(days=24), due_date=(NOW - timedelta(days=10)).date(),
                             responsible_key=k("user", 3))])
    debtor = w.company(5, "ТОВ Боржник", responsible=3)
    w.activity(debtor, 1)
    w.store.write([d.Client("onec:counterparty:a", "onec", "a", d.ClientKind.COMPANY, "Боржник 1С"),
                   d.Debt("onec:debt:a", "onec", "onec:counterparty:a", 42000.0, "UAH", NOW, overdue_amount=12000.0,
                          overdue_since=(NOW - timedelta(days=20)).date(),
                          documents=({"number": "РН-000017", "date": "2026-10-01", "amount": 30000.0, "unpaid": 12000.0,
                                      "due": "2026-10-15"},))])
    with w.store.tx() as conn:
        w.store._upsert(conn, links, [{"foreign_key": "onec:counterparty:a", "client_key": debtor, "method": "tax_id",
                                       "candidates": None, "updated_at": NOW}], ["foreign_key"])
    caller = w.company(6, "ТОВ Дзвонить", responsible=3, phones=("0671112233",))
    w.activity(caller, 1)
    w.call("0671112233", 40)
    w.call("0931234567", 60)  # an unknown number
    return w, {"sleepy": sleepy, "back": back, "lost": lost, "payer": payer, "debtor": debtor}


def _texts_of(plan) -> list[str]:
    out = []
    for a in plan.actions:
        out.append(a.reason)
        p = a.payload
        out += [p[x] for x in ("description", "text") if isinstance(p.get(x), str)]
    out += [c.reason for c in plan.cleared] + [why for _, why in plan.cancel]
    out += [x for r in plan.rules for x in r.refusals + r.notes + r.errors]
    return out


def _printed(plan) -> str:
    buf = io.StringIO()
    saved = report.console
    report.console = Console(file=buf, width=400, highlight=False)
    try:
        report.print_plan(plan)
    finally:
        report.console = saved
    return buf.getvalue()


@pytest.mark.parametrize("language", ["uk", "ru"])
def test_every_rule_types_texts_are_in_the_configs_language(tmp_path, language):
    w, c = _scenario(tmp_path, language)
    plan, _ = w.run(NOW)
    assert {a.rule for a in plan.actions} == {"r1", "r3", "r4", "r5", "r6"}
    texts = _texts_of(plan)
    printed = [_printed(plan)]

    # the conditions clear: a call-back, a payment, a paid debt, a new purchase, a contact
    w.call("+380671112233", -30, direction="out", answered=True, talk_s=60)
    w.store.write([d.Invoice(k("invoice", 17), "bitrix24", "17", "Рахунок №17", client_key=c["payer"], amount=18500.0, currency="UAH",
                             outcome=d.Outcome.WON, issued_at=NOW - timedelta(days=24), due_date=(NOW - timedelta(days=10)).date(),
                             responsible_key=k("user", 3))])
    w.store.write([d.Debt("onec:debt:a", "onec", "onec:counterparty:a", 0.0, "UAH", NOW + timedelta(hours=1))])
    w.deal(c["lost"], -0.02)
    w.activity(c["back"], -0.02, kind="meeting")
    later, _ = w.run(NOW + timedelta(hours=2))
    assert {x.rule for x in later.cleared} >= {"r1", "r3", "r4", "r5", "r6"}
    texts += _texts_of(later)

    released, _ = w.run(NOW + timedelta(days=15))
    assert {a.type for a in released.actions if a.rule == "r2"} == {"reassign", "comment", "notify"}
    texts += _texts_of(released)
    printed.append(_printed(released))

    for text in texts:
        assert CYRILLIC.search(text), text
        assert not _english_left(text), (text, _english_left(text))
    for out in printed:
        assert not _english_left(out, RULE_TYPES), _english_left(out, RULE_TYPES)
    joined = "\n".join(texts).replace("\xa0", " ").replace("\u202f", " ")
    assert "42 000,00 ₴" in joined and "18 500,00 ₴" in joined  # money by the locale, never 18500.00 UAH
    assert "UAH" not in joined and not re.search(r"\d{4}-\d\d-\d\d", MARKER.sub("", joined))  # dates as 12.11.2026


def test_every_translation_is_cyrillic_and_keeps_no_english_word():
    for lang in ("uk", "ru"):
        with (i18n.CATALOGS / lang / "LC_MESSAGES" / "connector.po").open("rb") as f:
            cat = read_po(f, locale=lang)
        for m in cat:
            if not m.id:
                continue
            ids = m.id if isinstance(m.id, tuple) else (m.id,)
            strings = m.string if isinstance(m.string, tuple) else (m.string,)
            if not any(w.lower() in ENGLISH for x in ids for w in ASCII_WORD.findall(re.sub(r"\{[a-z_]+\}", " ", x))):
                continue  # no words to translate: "{what} {n}", "SMS"
            for s in strings:
                assert CYRILLIC.search(s), (lang, m.id, s)
                assert not _english_left(re.sub(r"\{[a-z_]+\}", " ", s)), (lang, m.id, s)


def test_last_contact_renders_as_its_kind_and_date_in_the_configs_language(tmp_path):
    rules = """
    - name: forgotten
      type: forgotten
      inactive_days: 60
      actions:
        - task: {title: "{{ last_contact }}", description: "{{ last_contact.kind }} {{ last_contact.date.iso }} / {{ last_contact.name }}", deadline: 3 workdays}
    """
    for language, title, name in (("uk", "дзвінок 25.08.2026", "дзвінок"), ("ru", "звонок 25.08.2026", "звонок"),
                                  ("en", "call on 25.08.2026", "call")):
        (tmp_path / language).mkdir()
        w = world(tmp_path / language, rules, extra=f"language: {language}\n")
        old = w.company(1, "Old Co")
        w.activity(old, 90)
        w.company(2, "Never", created_days=100)
        acts = {a.subject_key: a for a in w.plan().actions}
        a = acts[old]
        assert a.payload["title"] == title, language
        assert a.payload["description"].startswith(f"call 2026-08-25 / {name}")
        never = acts[k("company", 2)]
        assert never.payload["title"] == {"uk": "контактів ще не було", "ru": "контактов ещё не было", "en": "no contact yet"}[language]
        assert never.payload["description"].startswith("none  / ")


def test_objects_render_as_text_and_keep_their_attributes():
    i18n.use("uk")
    text = ("{{ client }} | {{ manager }} | {{ debt }} | {{ debt.amount }} {{ debt.currency }} | {{ debt.documents }} | "
            "{{ debt.documents[0].number }} | {{ debt.overdue_since }} {{ debt.overdue_since.iso }} | {{ debt.amount > 1000 }}")
    out = render(text, variables_for("debtors"))
    assert out == ("Acme LLC | Ivan Petrenko | 1 500,00 ₴, прострочено з 01.01.2026 | 1 500,00 UAH | "
                   "РН-000123 від 18.12.2025: не сплачено 1 500,00 ₴, строк оплати 01.01.2026 | РН-000123 | "
                   "01.01.2026 2026-01-01 | True")
    assert render("{{ invoice }}", variables_for("unpaid")) == "Invoice #17 на суму 1 250,50 ₴, сплатити до 01.01.2026"
    assert render("{{ call }}", variables_for("missed_call")) == "дзвінок з номера +380501234567, 01.01.2026 10:00"
    assert render("{{ last_purchase }}", variables_for("lost")) == "успішна угода від 01.01.2026 на суму 100,00"
    assert render("{{ last_purchase.amount | money('UAH') }}", variables_for("lost")) == "100,00 ₴"


@pytest.mark.parametrize("rule_type", sorted(RULE_TYPES))
def test_validate_time_samples_have_exactly_the_variables_the_planner_provides(tmp_path, rule_type):
    w, _ = _scenario(tmp_path, "uk")
    if rule_type == "release":
        w.run(NOW)  # the reminder the release counts from
    rule = next(r for r in w.settings.rules if r.type == rule_type)
    now = NOW + timedelta(days=15) if rule_type == "release" else NOW
    cal = BusinessCalendar(w.settings.calendar, w.settings.timezone)
    with w.snapshot(now) as snap:
        planner = Planner(w.settings, snap, cal, journal=Journal(w.store))
        findings = evaluate(rule, snap, cal, w.settings).findings
        assert findings, rule_type
        ctx = planner._context(rule, findings[0], every=True)
    sample = variables_for(rule_type)
    assert set(ctx) == set(sample)
    for name, value in ctx.items():
        assert type(value) is type(sample[name]) or isinstance(value, int | float | str) and isinstance(sample[name], int | float | str), name
        if isinstance(value, Text):
            assert set(value) == set(sample[name]), name
            for attr, v in value.items():
                for kind in (Text, When, Amount):
                    assert isinstance(v, kind) == isinstance(sample[name][attr], kind), (name, attr)


def test_the_readme_documents_every_template_variable_and_attribute():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Template variables", 1)[1].split("**Contact** is", 1)[0]
    for rule_type in sorted(RULE_TYPES):
        for name, value in variables_for(rule_type).items():
            assert f"`{name}`" in section, name
            if isinstance(value, Text):
                row = next(line for line in section.splitlines() if line.startswith(f"| `{name}` |"))
                if "as `manager`" in row:  # supervisor, previous_manager: the same attributes
                    row = next(line for line in section.splitlines() if line.startswith("| `manager` |"))
                for attr in value:
                    assert f"`{attr}`" in row, (name, attr)


def test_a_config_that_does_not_load_is_summed_up_in_its_own_language(tmp_path):
    from click.testing import CliRunner

    from connector.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("language: ru\nrules: [{name: x, type: nope}]\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["validate", str(bad)])
    assert r.exit_code == 2
    assert f"1 проблема в {bad}; ничего не запущено." in r.output
    assert "rules[0].type: unknown type `nope`" in r.output  # the problem line itself stays English (see README, Language)


def test_objects_survive_a_trip_to_another_process_and_the_immutable_sandbox():
    """Renders may happen in a worker process (pickled context) under ImmutableSandboxedEnvironment."""
    import pickle

    from jinja2 import StrictUndefined
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from connector.templates import LANGUAGE, money

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    env.filters["money"] = money
    ctx = pickle.loads(pickle.dumps({**variables_for("debtors"), LANGUAGE: "ru"}))
    out = env.from_string("{{ debt }} | {{ debt.amount | money(debt.currency) }} | {{ today }} {{ today.iso }}").render(**ctx)
    assert out == "1 500,00 ₴, прострочено з 01.01.2026 | 1 500,00 ₴ | 01.01.2026 2026-01-01"  # texts made in uk; the filter in ru
    with pytest.raises(SecurityError):
        env.from_string("{{ debt.update({}) }}").render(**ctx)
    with pytest.raises(SecurityError):
        env.from_string("{{ debt._text }}").render(**ctx)
