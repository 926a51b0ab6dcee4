"""The YAML config: pydantic models are the schema, errors point at the file and line.

Loading keeps ruamel's node positions, substitutes ``${VAR}`` from the environment (and a
``.env`` file beside the config, via pydantic-settings' dotenv reader), validates everything,
and reports *every* problem as ``FILE:LINE: dotted.path: message`` in one :class:`ConfigError`.
Unknown keys are errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from connector.errors import ConfigError
from connector.redact import add_secret


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def parse_hours(text: str) -> tuple[time, time]:
    m = _HOURS.match(text.strip())
    if not m:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = map(int, m.groups())
    if not (0 <= h1 <= 24 and 0 <= h2 <= 24 and m1 < 60 and m2 < 60):
        raise ValueError(f"hours out of range in {text!r}")
    return time(h1 % 24, m1), time(h2 % 24, m2)


class Calendar(Model):
    country: str | None = "UA"
    subdivision: str | None = None
    workdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = ["mon", "tue", "wed", "thu", "fri"]
    hours: str = "09:00-18:00"
    extra_holidays: list[str] = Field(default_factory=list, description="ISO dates off work")

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        start, end = parse_hours(v)
        if start >= end:
            raise ValueError("working hours must end after they start (HH:MM-HH:MM)")
        return v

    @field_validator("country")
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import holidays

        if v.upper() not in holidays.list_supported_countries():
            raise ValueError(f"unknown country {v!r} for public holidays")
        return v.upper()


class OAuth(Model):
    domain: str
    client_id: str
    client_secret: str
    refresh_token: str
    access_token: str | None = None
    token_url: str = "https://oauth.bitrix.info/oauth/token/"


class Bitrix24(Model):
    webhook_url: str | None = None
    oauth: OAuth | None = None
    fields: list[str] = Field(default_factory=list, description="custom UF_* fields to pull")
    plan: Literal["standard", "enterprise"] = "standard"
    overlap_seconds: int = 300
    sweep_every_hours: float = 24
    guid_field: str | None = Field(None, description="UF_* field holding the 1C counterparty GUID")
    segment_field: str | None = None
    opt_out_field: str | None = None
    timeout: float = 60

    @model_validator(mode="after")
    def _one_auth(self) -> "Bitrix24":
        if bool(self.webhook_url) == bool(self.oauth):
            raise ValueError("set exactly one of webhook_url or oauth")
        return self


class OneCOData(Model):
    url: str
    user: str
    password: str
    page_size: int = 500
    timeout: float = 120


class OneCSoap(Model):
    wsdl: str
    endpoint: str | None = None
    user: str | None = None
    password: str | None = None
    operations: dict[str, str] = Field(default_factory=dict)


class OneC(Model):
    odata: OneCOData | None = None
    soap: OneCSoap | None = None
    preset: Literal["ut11", "unf", "utp"] = "ut11"
    objects: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, str] = Field(default_factory=dict)
    match: list[Literal["tax_id", "guid_field", "phone"]] = ["tax_id", "guid_field", "phone"]
    overlap_days: int = 3
    sweep_every_hours: float = Field(6, gt=0, description="full key+DataVersion re-read of catalogs")
    write_back: Literal["auto", "odata", "soap", "none"] = "auto"

    @model_validator(mode="after")
    def _some_channel(self) -> "OneC":
        if not self.odata and not self.soap:
            raise ValueError("set odata, soap or both")
        return self


class BinotelPush(Model):
    listen: str = "127.0.0.1:8085"
    token: str
    allow_from: list[str] = Field(default_factory=list)
    max_body_bytes: int = 65536


class Binotel(Model):
    key: str
    secret: str
    url: str = "https://api.binotel.com/api/4.0"
    push: BinotelPush | None = None
    min_interval_seconds: float = 1.0
    overlap_seconds: int = 4 * 3600
    lookback_days: int = Field(30, ge=1, description="first sync reads this many days of calls")
    settle_seconds: int = Field(60, ge=0, description="poll windows end this long before now")
    duty_manager: int | str | None = None


class Sms(Model):
    provider: Literal["turbosms", "bitrix24", "log"]
    token: str | None = None
    sender: str | None = None
    url: str = "https://api.turbosms.ua"
    trigger_code: str | None = Field(None, description="bitrix24 provider: automation trigger code")

    @model_validator(mode="after")
    def _provider_needs(self) -> "Sms":
        if self.provider == "turbosms" and (not self.token or not self.sender):
            raise ValueError("turbosms needs token and sender")
        if self.provider == "bitrix24" and not self.trigger_code:
            raise ValueError("bitrix24 provider needs trigger_code (a crm.automation.trigger code)")
        return self


class Email(Model):
    smtp: str
    from_: str = Field(alias="from")


class Messaging(Model):
    sms: Sms | None = None
    email: Email | None = None
    quiet_hours: str | None = "21:00-09:00"
    workdays_only: bool = True
    max_per_client_days: int = 0
    opt_out_field: str | None = None

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hours(v)
        return v


class People(Model):
    supervisor: int | str | None = None
    duty_manager: int | str | None = None


class Safety(Model):
    max_actions_per_run: int = Field(500, ge=0)
    max_share: float = Field(0.25, gt=0, le=1)
    min_clients_for_share: int = Field(20, ge=0)


class Schedule(Model):
    every_minutes: float | None = 15
    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            from croniter import croniter

            fields = v.split()
            if len(fields) != 5:
                raise ValueError(f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                                 f"{v!r} has {len(fields)}")
            if not croniter.is_valid(v):
                raise ValueError(f"invalid cron expression {v!r}")
        return v


# ---------------------------------------------------------------- rules and actions

_DURATION = re.compile(r"^\s*(\d+)\s*(workdays?|days?|hours?|minutes?|work ?hours?)\s*$")


def parse_duration(text: str | int) -> tuple[int, str]:
    """``"3 workdays"`` -> ``(3, "workdays")``; units: workdays, days, hours, workhours, minutes."""
    if isinstance(text, int):
        return text, "days"
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"expected e.g. '3 workdays', '2 days', '2 hours', '30 minutes'; got {text!r}")
    n, unit = int(m.group(1)), m.group(2).replace(" ", "")
    unit = {"workday": "workdays", "day": "days", "hour": "hours", "minute": "minutes", "workhour": "workhours"}.get(
        unit.rstrip("s"), unit if unit.endswith("s") else unit + "s"
    )
    return n, unit


PersonRef = int | str  # user id, or responsible | previous_responsible | supervisor | duty_manager
PERSON_WORDS = {"responsible", "previous_responsible", "supervisor", "duty_manager"}


class TaskSpec(Model):
    title: str
    description: str | None = None
    deadline: str = "1 workdays"
    responsible: PersonRef = "responsible"
    bind_to: Literal["client", "deal"] = "client"

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: str) -> str:
        parse_duration(v)
        return v


class SmsSpec(Model):
    text: str | None = None
    variants: list[str] | None = None
    marketing: bool = False
    to: Literal["client", "caller"] = "client"

    @model_validator(mode="after")
    def _text(self) -> "SmsSpec":
        if not self.text and not self.variants:
            raise ValueError("set text or variants")
        return self


class EmailSpec(Model):
    subject: str
    text: str | None = None
    variants: list[str] | None = None
    to: Literal["client", "responsible", "supervisor"] = "client"

    @model_validator(mode="after")
    def _text(self) -> "EmailSpec":
        if not self.text and not self.variants:
            raise ValueError("set text or variants")
        return self


class WorkflowSpec(Model):
    template_id: int
    parameters: dict[str, Any] = Field(default_factory=dict)


class NotifySpec(Model):
    to: list[PersonRef]
    text: str | None = None


def _person_list(v: Any) -> Any:
    if isinstance(v, (str, int)):
        return [v]
    return v


class TaskAction(Model):
    task: TaskSpec


class FieldAction(Model):
    field: dict[str, Any]


class CommentAction(Model):
    comment: str


class NotifyAction(Model):
    notify: list[PersonRef] | NotifySpec

    @field_validator("notify", mode="before")
    @classmethod
    def _n(cls, v: Any) -> Any:
        return _person_list(v)

    @field_validator("notify")
    @classmethod
    def _people(cls, v: Any) -> Any:
        people, at = (v.to, ("to",)) if isinstance(v, NotifySpec) else (v, ())
        problems = [((*at, i), f"unknown person {_show(p)}{_did_you_mean(p, sorted(PERSON_WORDS))} "
                               f"(a user id or one of: {', '.join(sorted(PERSON_WORDS))})")
                    for i, p in enumerate(people) if isinstance(p, str) and p not in PERSON_WORDS]
        if problems:
            raise Problems(problems)
        return v


class TriggerAction(Model):
    trigger: str


class WorkflowAction(Model):
    workflow: int | WorkflowSpec


class SmsAction(Model):
    sms: SmsSpec


class EmailAction(Model):
    email: EmailSpec


ACTION_KEYS = {"task", "field", "comment", "notify", "trigger", "workflow", "sms", "email"}


def _action_tag(v: Any) -> str | None:
    if isinstance(v, dict):
        keys = [k for k in v if k in ACTION_KEYS]
        return keys[0] if len(keys) == 1 and len(v) == 1 else None
    for key in ACTION_KEYS:
        if hasattr(v, key) and isinstance(v, BaseModel):
            return key
    return None


Action = Annotated[
    Annotated[TaskAction, Tag("task")] | Annotated[FieldAction, Tag("field")] | Annotated[CommentAction, Tag("comment")] | Annotated[NotifyAction, Tag("notify")] | Annotated[TriggerAction, Tag("trigger")] | Annotated[WorkflowAction, Tag("workflow")] | Annotated[SmsAction, Tag("sms")] | Annotated[EmailAction, Tag("email")],
    Discriminator(
        _action_tag,
        custom_error_type="invalid_action",
        custom_error_message="an action is exactly one of: " + ", ".join(sorted(ACTION_KEYS)),
    ),
]


class EscalationStep(Model):
    after_days: int = Field(ge=0)
    actions: list[Action]


ContactKind = Literal["call", "email", "meeting", "task", "comment", "document", "deal", "invoice", "other"]
DEFAULT_CONTACT: list[str] = ["call", "email", "meeting", "task", "comment", "document", "deal", "invoice"]


class Where(Model):
    segment: list[str] | None = None
    responsible: list[int | str] | None = None
    not_responsible: list[int | str] | None = None
    field: dict[str, Any] | None = None


class RuleBase(Model):
    name: str = Field(pattern=r"^[a-z0-9_\-]+$")
    mode: Literal["live", "dry_run"] = "live"
    where: Where | None = None
    actions: list[Action] = Field(default_factory=list)
    escalate: list[EscalationStep] = Field(default_factory=list)
    enabled: bool = True


class ForgottenRule(RuleBase):
    type: Literal["forgotten"]
    clients: Literal["companies", "contacts"] = "companies"
    inactive_days: int = Field(gt=0)
    keep_while_future_task: bool = True
    contact_kinds: list[ContactKind] = Field(default_factory=lambda: list(DEFAULT_CONTACT))


class Reassign(Model):
    to: list[int | str] = Field(min_length=1)
    strategy: Literal["round_robin", "least_loaded"] = "round_robin"
    move_deals: bool = True
    move_contacts: bool = True
    comment: str | None = "Client released from {{ previous_manager.name }} to {{ manager.name }}: no contact for {{ days }} days."


class ReleaseRule(RuleBase):
    type: Literal["release"]
    after: str
    grace_days: int = Field(ge=0)
    reassign: Reassign
    contact_kinds: list[ContactKind] | None = None


class Cadence(Model):
    field: str | None = None
    days: dict[str, int] = Field(default_factory=lambda: {"warm": 14, "cold": 30})
    default_days: int = 30


class LostRule(RuleBase):
    type: Literal["lost"]
    clients: Literal["companies", "contacts"] = "companies"
    min_purchases: int = Field(1, ge=1)
    after_days: int | Literal["auto"] = 180
    auto_factor: float = 2.0
    auto_min_days: int = 30
    auto_max_days: int = 365
    cadence: Cadence = Field(default_factory=Cadence)


class UnpaidRule(RuleBase):
    type: Literal["unpaid"]
    overdue_days: int = Field(ge=0)
    min_amount: float = 0


class DebtorsRule(RuleBase):
    type: Literal["debtors"]
    min_amount: float = 0
    overdue_days: int = Field(0, ge=0)


class MissedCallRule(RuleBase):
    type: Literal["missed_call"]
    callback_within_minutes: int = Field(15, ge=0)
    lookback_hours: int = 24


Rule = Annotated[
    ForgottenRule | ReleaseRule | LostRule | UnpaidRule | DebtorsRule | MissedCallRule,
    Field(discriminator="type"),
]


class Settings(Model):
    timezone: str = "Europe/Kyiv"
    store: str = "sqlite:///connector.db"
    calendar: Calendar = Field(default_factory=Calendar)
    phone_region: str = "UA"
    bitrix24: Bitrix24 | None = None
    onec: OneC | None = None
    binotel: Binotel | None = None
    messaging: Messaging | None = None
    people: People = Field(default_factory=People)
    safety: Safety = Field(default_factory=Safety)
    schedule: Schedule = Field(default_factory=Schedule)
    rules: list[Rule] = Field(default_factory=list)

    _origin: tuple[str, Callable[[tuple], int]] | None = PrivateAttr(default=None)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}") from None
        return v

    @field_validator("phone_region")
    @classmethod
    def _region(cls, v: str) -> str:
        import phonenumbers

        if v.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {v!r}")
        return v.upper()

    @model_validator(mode="after")
    def _rules(self) -> "Settings":
        problems: list[tuple[tuple, str]] = []
        first: dict[str, int] = {}
        for i, r in enumerate(self.rules):
            if r.name in first:
                problems.append((("rules", i, "name"), f"rule name {_show(r.name)} is already used by rules[{first[r.name]}]"))
            first.setdefault(r.name, i)
        forgotten = [x.name for x in self.rules if isinstance(x, ForgottenRule)]
        for i, r in enumerate(self.rules):
            if isinstance(r, ReleaseRule) and r.after not in forgotten:
                target = next((x for x in self.rules if x.name == r.after), None)
                why = f"is a {target.type} rule" if target is not None else "names no rule"
                hint = difflib.get_close_matches(r.after, forgotten, n=1, cutoff=0.6)
                problems.append((("rules", i, "after"), f"{_show(r.after)} {why}; after must name a forgotten rule"
                                 + (f"; did you mean `{hint[0]}`?" if hint else f" (forgotten rules: {', '.join(forgotten) or 'none'})")))
        if not (self.bitrix24 or self.onec) and self.rules:
            problems.append((("rules",), "configure bitrix24 or onec: rules need a CRM to read clients from"))
        if problems:
            raise Problems(problems)
        return self

    def where(self, *path: str | int) -> str:
        """``FILE:LINE: dotted.path`` of a config value, so problems found after loading (``check``)
        name the line to fix; just the dotted path for settings not loaded from a file."""
        if self._origin is None:
            return _fmt_loc(path)
        file, line_for = self._origin
        return f"{file}:{line_for(path)}: {_fmt_loc(path)}"


# ---------------------------------------------------------------- loading

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# `${VAR}` is not valid inside a YAML flow mapping (`{token: ${X}}`: braces are flow indicators),
# yet admins write it there. Before parsing, each reference becomes a token of plain-scalar-safe
# characters on the same line (so error lines stay right); it is decoded after parsing.
_TOKEN = re.compile(r"zzENV([0-9a-f]+)zz")


def _protect_env_refs(text: str) -> str:
    return _ENV.sub(lambda m: "zzENV" + m.group(0).encode("utf-8").hex() + "zz", text)
SECRET_KEYS = {"webhook_url", "password", "secret", "token", "client_secret", "refresh_token", "access_token", "key", "smtp"}


class _Located:
    """Positions of YAML nodes by dotted path, to map pydantic's ``loc`` back to lines."""

    def __init__(self) -> None:
        self.lines: dict[tuple, int] = {}

    def walk(self, node: Any, path: tuple = ()) -> None:
        if isinstance(node, CommentedMap):
            for k in node:
                try:
                    line = node.lc.key(k)[0] + 1
                except Exception:  # noqa: BLE001
                    line = node.lc.line + 1
                self.lines[path + (k,)] = line
                self.walk(node[k], path + (k,))
        elif isinstance(node, CommentedSeq):
            for i, item in enumerate(node):
                try:
                    line = node.lc.item(i)[0] + 1
                except Exception:  # noqa: BLE001
                    line = node.lc.line + 1
                self.lines[path + (i,)] = line
                self.walk(item, path + (i,))

    def line_for(self, loc: tuple) -> int:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return 1


def _env_values(config_path: Path) -> dict[str, str]:
    """The process environment over a ``.env`` file beside the config (pydantic-settings' reader)."""
    from pydantic_settings import BaseSettings
    from pydantic_settings.sources import DotEnvSettingsSource

    values: dict[str, str] = {}
    for candidate in (config_path.parent / ".env", Path.cwd() / ".env"):
        if candidate.is_file():
            class _Env(BaseSettings):
                pass

            src = DotEnvSettingsSource(_Env, env_file=candidate)
            for k, v in src.env_vars.items():
                if v is not None:
                    values.setdefault(k.upper(), v)
                    values.setdefault(k, v)
    values.update(os.environ)
    return values


def _substitute(node: Any, env: dict[str, str], path: tuple, problems: list[tuple[tuple, str]]) -> Any:
    if isinstance(node, CommentedMap):
        for k in list(node):
            node[k] = _substitute(node[k], env, path + (k,), problems)
        return node
    if isinstance(node, CommentedSeq):
        for i in range(len(node)):
            node[i] = _substitute(node[i], env, path + (i,), problems)
        return node
    if isinstance(node, str) and "zzENV" in node:
        node = _TOKEN.sub(lambda m: bytes.fromhex(m.group(1)).decode("utf-8"), node)
    if isinstance(node, str) and "${" in node:
        def repl(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append((path, f"environment variable {name} is not set"))
            return ""

        value = _ENV.sub(repl, node)
        if path and path[-1] in SECRET_KEYS:
            add_secret(value)
        return value
    if isinstance(node, str) and path and path[-1] in SECRET_KEYS:
        add_secret(node)
    return node


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, (int, bool)) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top)"


class Problems(ValueError):
    """Raised by a validator for problems *below* the value it validates, each with its own path.

    ``raise Problems([(("rules", 2, "after"), "...")])`` from a :class:`Settings` validator lands on
    the line of ``rules[2].after`` instead of the top of the file.
    """

    def __init__(self, problems: list[tuple[tuple, str]]):
        self.problems = problems
        super().__init__("; ".join(msg for _, msg in problems))


def _show(value: Any) -> str:
    text = str(value)
    return f"`{text[:57] + '...' if len(text) > 60 else text}`"


def _did_you_mean(value: Any, options: Any) -> str:
    match = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean `{match[0]}`?" if match else ""


def _bare(tp: Any) -> tuple[Any, str | None]:
    """``tp`` without ``Annotated`` wrappers and ``None``, and the union's discriminator field if declared."""
    disc = None
    while True:
        if get_origin(tp) is Annotated:
            base, *meta = get_args(tp)
            disc = next((m.discriminator for m in meta if isinstance(getattr(m, "discriminator", None), str)), disc)
            tp = base
        elif get_origin(tp) in (Union, UnionType) and len([a for a in get_args(tp) if a is not NoneType]) == 1:
            tp = next(a for a in get_args(tp) if a is not NoneType)
        else:
            return tp, disc


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _member(union: Any, disc: str | None, tag: Any) -> Any:
    """The member of ``union`` that pydantic names ``tag`` in an error's ``loc`` (None if unknown)."""
    for m in (a for a in get_args(union) if a is not NoneType):
        tags = {t.tag for t in get_args(m)[1:] if isinstance(t, Tag)} if get_origin(m) is Annotated else set()
        bare, _ = _bare(m)
        if _is_model(bare):
            tags.add(bare.__name__)
            if disc and disc in bare.model_fields:
                tags.update(get_args(bare.model_fields[disc].annotation))
        elif isinstance(bare, type):
            tags.add(bare.__name__)
        prefix = {list: "list[", dict: "dict[", Literal: "literal["}.get(get_origin(bare))
        if tag in tags or (prefix and isinstance(tag, str) and tag.startswith(prefix)):
            return bare
    return None


def _fits(tp: Any, value: Any) -> bool:
    """Could ``value``'s YAML shape (mapping, list, scalar) ever be a ``tp``?"""
    if _is_model(tp) or get_origin(tp) is dict:
        return isinstance(value, dict)
    if get_origin(tp) is list:
        return isinstance(value, list)
    return not isinstance(value, (dict, list))


def _kind(tp: Any) -> str:
    """What a person should write for ``tp``, in words."""
    if get_origin(tp) is Literal:
        return " or ".join(_show(a) for a in get_args(tp))
    if _is_model(tp) or get_origin(tp) is dict:
        return "a mapping (key: value)"
    if get_origin(tp) is list:
        return "a list"
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false"}.get(tp, str(tp))


@dataclass
class _Where:
    """An error's ``loc`` walked through the models: the config path, and what is expected there."""

    path: tuple
    tp: Any = None  # the annotation at the end of the path (None when unknown)
    model: Any = None  # the model whose key ends the path (for "did you mean")
    union: tuple | None = None  # the path of the first plain (non-discriminated) union passed through ...
    union_tp: Any = None
    fits: bool = True  # ... and whether the member this error came from fits the value's shape


def _walk(loc: tuple, data: Any) -> _Where:
    """Map pydantic's ``loc`` to the config path: keep keys and indexes, drop union member tags.

    Tags are recognised from the models, not guessed from the data, so an action ``task:`` whose
    tag is also ``task`` yields ``actions[0].task.deadline``, never ``task.task``.
    """
    w = _Where(path=())
    path: list = []
    tp: Any = Settings
    node = data
    for part in loc:
        bare, disc = _bare(tp)
        if _is_union(bare):
            member = _member(bare, disc, part)
            if disc is None and w.union is None and get_args(bare) and not any(get_origin(a) is Annotated for a in get_args(bare)):
                w.union, w.union_tp = tuple(path), bare
                w.fits = member is not None and _fits(member, node)
            tp = member
            continue
        if _is_model(bare):
            field = bare.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                field = next((f for f in bare.model_fields.values() if f.alias == part), None)
            key = (field.alias or part) if field is not None else part
            if field is None and isinstance(part, str) and part not in (node or {}) and "[" in part:
                continue  # an unrecognised tag
            w.model = bare
            path.append(key)
            tp = field.annotation if field is not None else None
            node = node.get(key) if isinstance(node, dict) else None
            continue
        origin = get_origin(bare)
        if origin is list and isinstance(part, int):
            tp, node = get_args(bare)[0], (node[part] if isinstance(node, list) and part < len(node) else None)
        elif origin is dict:
            tp, node = get_args(bare)[1], (node.get(part) if isinstance(node, dict) else None)
        elif isinstance(node, dict) and part in node:
            tp, node = None, node[part]
        elif isinstance(node, list) and isinstance(part, int):
            tp, node = None, (node[part] if part < len(node) else None)
        else:
            continue  # a tag inside a type we cannot see into
        path.append(part)
    w.path, w.tp = tuple(path), _bare(tp)[0]
    return w


_TYPE_WORDS = {
    "int_parsing": int, "int_type": int, "int_from_float": int, "float_parsing": float, "float_type": float,
    "bool_parsing": bool, "bool_type": bool, "string_type": str, "list_type": list[Any], "dict_type": dict[str, Any],
    "model_type": dict[str, Any], "model_attributes_type": dict[str, Any],
}


def _message(err: dict, w: _Where) -> tuple[tuple, str]:
    """One readable sentence for a pydantic error: the value itself, what was expected, a suggestion."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    secret = bool(w.path) and w.path[-1] in SECRET_KEYS
    got = "" if secret or isinstance(value, (dict, list)) else f", got {_show(value)}"
    if kind == "extra_forbidden":
        key = w.path[-1] if w.path else ""
        known = [f.alias or n for n, f in w.model.model_fields.items()] if w.model is not None else []
        hint = _did_you_mean(key, known) or (f" (keys here: {', '.join(known)})" if known else "")
        return w.path, f"unknown key {_show(key)}{hint}"
    if kind == "missing":
        choices = f" (one of: {', '.join(map(str, get_args(w.tp)))})" if get_origin(w.tp) is Literal else ""
        return w.path, f"required key {_show(w.path[-1] if w.path else '')} is missing{choices}"
    if kind == "literal_error" and get_origin(w.tp) is Literal:
        options = get_args(w.tp)
        return w.path, f"{_show(value)} is not one of: {', '.join(map(str, options))}{_did_you_mean(value, options)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        disc = str(ctx.get("discriminator", "type")).strip("'\"")
        tags = [str(t) for m in get_args(w.tp) if _is_model(_bare(m)[0]) and disc in _bare(m)[0].model_fields
                for t in get_args(_bare(m)[0].model_fields[disc].annotation)]
        if kind == "union_tag_not_found":
            return (*w.path, disc), f"required key {_show(disc)} is missing (one of: {', '.join(tags)})"
        tag = ctx.get("tag", "")
        return (*w.path, disc), f"unknown {disc} {_show(tag)}{_did_you_mean(tag, tags)} (one of: {', '.join(tags)})"
    if kind == "invalid_action" and isinstance(value, dict):
        keys = [str(k) for k in value]
        known = ", ".join(sorted(ACTION_KEYS))
        if len(keys) == 1:
            return (*w.path, keys[0]), f"unknown action {_show(keys[0])}{_did_you_mean(keys[0], sorted(ACTION_KEYS))} (one of: {known})"
        return w.path, f"an action has exactly one key, one of: {known}; this one has {len(keys)}: {', '.join(keys)}"
    if kind in _TYPE_WORDS:
        return w.path, f"expected {_kind(_TYPE_WORDS[kind])}{got}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if got and repr(value) not in msg and str(value) not in msg:
        msg += got
    return w.path, msg


def _problems(e: ValidationError, data: Any) -> list[tuple[tuple, str]]:
    """Every validation error as ``(config path, message)``, one per offending value."""
    out: list[tuple[tuple, str]] = []
    unions: dict[tuple, list[tuple[_Where, dict]]] = {}
    for err in e.errors():
        found = (err.get("ctx") or {}).get("error")
        if err["type"] == "value_error" and isinstance(found, Problems):
            base = _walk(tuple(err["loc"]), data).path
            out.extend(((*base, *rel), msg) for rel, msg in found.problems)
            continue
        w = _walk(tuple(err["loc"]), data)
        if w.union is not None:
            unions.setdefault(w.union, []).append((w, err))
            continue
        out.append(_message(err, w))
    # A value that may be one of several shapes (``int | Literal["auto"]``, ``list | NotifySpec``):
    # report what was wrong for the shape that was written, or, if none fits, what could be written.
    for at, errs in unions.items():
        fitting = [(w, err) for w, err in errs if w.fits]
        members = [a for a in get_args(errs[0][0].union_tp) if a is not NoneType]
        value = _node(data, at)
        got = "" if isinstance(value, (dict, list)) or (at and at[-1] in SECRET_KEYS) else f", got {_show(value)}"
        if not fitting or all(w.path == at for w, _ in fitting):
            shapes = [_bare(m)[0] for m in members if not fitting or _fits(_bare(m)[0], value)]
            out.append((at, f"expected {' or '.join(dict.fromkeys(_kind(s) for s in shapes))}{got}"))
        else:
            out.extend(_message(err, w) for w, err in fitting if w.path != at)
    return out


def _node(data: Any, path: tuple) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _syntax(e: MarkedYAMLError, text: str) -> tuple[int, str]:
    """A YAML parser error as ``(line, sentence)``: the line a person has to fix, in words."""
    lines = text.splitlines()
    problem, context = str(e.problem or ""), str(e.context or "")
    pm, cm = e.problem_mark, e.context_mark
    line = (pm.line + 1) if pm else (cm.line + 1 if cm else 1)

    def src(n: int) -> str:
        return lines[n - 1] if 0 < n <= len(lines) else ""

    def indent(s: str) -> int:
        return len(s) - len(s.lstrip(" "))

    def previous(n: int) -> int:
        """The nearest line above ``n`` with content (not blank, not a comment)."""
        n -= 1
        while n > 0 and (not src(n).strip() or src(n).lstrip().startswith("#")):
            n -= 1
        return n

    here = src(line).strip()
    if "\t" in problem or "'\\t'" in problem:
        return line, "a tab in the indentation: YAML indents with spaces only"
    if problem.startswith("expected <block end>"):
        return line, _misaligned(line, src, previous)
    if problem.startswith("mapping values are not allowed"):
        prev = previous(line)
        if prev and indent(src(line)) > indent(src(prev)) and re.match(r"^\s*[\w\-\"'.]+\s*:(\s|$)", src(line)):
            return line, (f"wrong indentation: {_show(here)} is indented deeper than line {prev}, so YAML reads it as "
                          f"the rest of that line's value; start it in column {indent(src(prev)) + 1} like the keys above")
        return line, "a value that contains `: ` must be quoted, e.g. title: \"Debt: {{ client.title }}\""
    if problem.startswith("could not find expected ':'") and cm is not None:
        line = cm.line + 1
        return line, f"expected `key: value`, but {_show(src(line).strip())} has no `:` (or it belongs to the value above)"
    where = f" ({context} on line {cm.line + 1})" if context and cm is not None else ""
    return line, f"YAML syntax: {problem}{where}"


def _misaligned(line: int, src: Callable[[int], str], previous: Callable[[int], int]) -> str:
    """Say which column a misaligned line should start in, from the lines above it."""
    here, col = src(line).strip(), len(src(line)) - len(src(line).lstrip(" "))

    def key_col(n: int) -> int:
        """Where line n's keys start (after a list item's `- `), or its `-` when lining up a list item."""
        m = re.match(r"^(\s*)(-\s+)?", src(n))
        if not m:
            return 0
        return len(m.group(1)) if here.startswith("-") and m.group(2) else len(m.group(0))

    inner = outer = dash = 0
    n = previous(line)
    while n:
        indent = len(src(n)) - len(src(n).lstrip(" "))
        if indent == col and src(n).lstrip().startswith("-") and not here.startswith("-") and not dash:
            dash = n
        if key_col(n) < col:
            outer = n
            break
        if key_col(n) > col and (not inner or key_col(n) < key_col(inner)):
            inner = n
        n = previous(n)
    if dash:
        return (f"wrong indentation: {_show(here)} starts in the column of the `-` on line {dash}; a key of that list "
                f"item starts in column {key_col(dash) + 1}, a new item starts with `- `")
    if inner and outer:
        return (f"wrong indentation: {_show(here)} starts in column {col + 1}, between line {outer} (column "
                f"{key_col(outer) + 1}) and line {inner} (column {key_col(inner) + 1}); line it up with one of them")
    if outer:
        return (f"wrong indentation: {_show(here)} starts in column {col + 1}, deeper than line {outer} (column "
                f"{key_col(outer) + 1}), which is not a key ending with `:`; line it up with line {outer}")
    return f"wrong indentation: {_show(here)} starts in column {col + 1}; keys of one mapping must start in the same column"


def load_settings(path: str | Path) -> Settings:
    """Read, substitute, validate; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{file}:1: (file): cannot read: {e.strerror}"]) from None
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(_protect_env_refs(text))
    except MarkedYAMLError as e:
        line, msg = _syntax(e, text)
        raise ConfigError([f"{file}:{line}: (syntax): {msg}"]) from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ConfigError([f"{file}:1: (top): the config must be a mapping of keys"])
    located = _Located()
    located.walk(doc)
    env_problems: list[tuple[tuple, str]] = []
    _substitute(doc, _env_values(path), (), env_problems)
    found = list(env_problems)
    data = _plain(doc)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        found += _problems(e, data)
    if settings is not None and not found:
        from connector.templates import check_templates

        found += check_templates(settings)
    problems = list(dict.fromkeys(
        (located.line_for(loc), f"{file}:{located.line_for(loc)}: {_fmt_loc(loc)}: {msg}") for loc, msg in found))
    if problems:
        raise ConfigError([text_ for _, text_ in sorted(problems, key=lambda p: p[0])])
    assert settings is not None
    settings._origin = (file, located.line_for)
    return settings


def json_schema() -> dict:
    """JSON Schema of the config, for editor autocompletion."""
    schema = Settings.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "connector config"
    return schema
