"""The YAML config: pydantic models are the schema, errors point at the file and line.

Loading keeps ruamel's node positions, substitutes ``${VAR}`` from the environment (and a
``.env`` file beside the config, via pydantic-settings' dotenv reader), validates everything,
and reports *every* problem as ``FILE:LINE: dotted.path: message`` in one :class:`ConfigError`.
Unknown keys are errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
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
    wsdl: str = Field("reference", description="WSDL URL, a local file, or `reference` (the bundled WSDL)")
    endpoint: str | None = Field(None, description="the service address; default: the WSDL URL without its query")
    user: str | None = None
    password: str | None = None
    operations: dict[str, str] = Field(default_factory=dict)
    allow_hosts: list[str] = Field(default_factory=list, description="other hosts (or file:///folders/) the WSDL may "
                                   "import from; fetched without credentials")

    @model_validator(mode="after")
    def _endpoint(self) -> "OneCSoap":
        remote = self.wsdl.lower().startswith(("http://", "https://"))
        if not self.endpoint and not remote:
            raise ValueError("endpoint is required with wsdl: reference or a local WSDL file "
                             "(the service address; the WSDL's own soap:address is never used)")
        if self.endpoint and not self.endpoint.lower().startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http:// or https:// URL")
        return self


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
    token: str = Field(description="the secret part of the push URL, at least 16 characters")
    allow_from: list[str] = Field(default_factory=list)
    max_body_bytes: int = 65536

    @field_validator("token")
    @classmethod
    def _token(cls, v: str) -> str:
        if len(v.strip()) < 16:
            raise ValueError("the push token must be at least 16 characters: it is the only secret in the push URL "
                             "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
        return v


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
    provider: Literal["turbosms", "bitrix24", "log"] = "log"
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
    insecure: bool = Field(False, description="allow plain text when the server offers no STARTTLS (a trusted local "
                           "relay only); `connector check` warns")
    ca_file: str | None = Field(None, description="PEM file of the CA that signed the server's certificate "
                                "(an internal CA); the system's CAs otherwise")


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
        people = v.to if isinstance(v, NotifySpec) else v
        for p in people:
            if isinstance(p, str) and p not in PERSON_WORDS:
                raise ValueError(f"unknown person {p!r}; use a user id or one of {sorted(PERSON_WORDS)}")
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
        names = [r.name for r in self.rules]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"rule names must be unique: {sorted(dupes)}")
        for r in self.rules:
            if isinstance(r, ReleaseRule):
                target = next((x for x in self.rules if x.name == r.after), None)
                if target is None or not isinstance(target, ForgottenRule):
                    raise ValueError(f"rule {r.name!r}: after={r.after!r} must name a forgotten rule")
        if not (self.bitrix24 or self.onec):
            if self.rules:
                raise ValueError("configure bitrix24 or onec: rules need a CRM to read clients from")
        return self


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


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Drop pydantic's union/discriminator tags (``function-after[...]``, ``TaskAction``, ``forgotten``)."""
    clean: list = []
    node = data
    for part in loc:
        if isinstance(part, int):
            if isinstance(node, list) and part < len(node):
                clean.append(part)
                node = node[part]
            continue
        if isinstance(node, dict) and part in node:
            clean.append(part)
            node = node[part]
        elif isinstance(node, dict) and part == "from_" and "from" in node:
            clean.append("from")
            node = node["from"]
        elif isinstance(node, dict) and part not in node and not any(c in part for c in "[]-") and part[:1].islower() and part in _ALL_FIELD_NAMES:
            clean.append(part)  # a missing required key: keep it in the path
            node = None
    return tuple(clean)


def _all_field_names() -> set[str]:
    names: set[str] = set()
    stack: list[type[BaseModel]] = [Settings]
    seen: set[type] = set()

    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        for name, f in m.model_fields.items():
            names.add(name)
            for t in _flatten(f.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    stack.append(t)
    return names


def _flatten(tp: Any) -> list:
    args = get_args(tp)
    if not args:
        return [tp]
    out = []
    for a in args:
        out.extend(_flatten(a))
    return out


_ALL_FIELD_NAMES = _all_field_names()


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
        mark = e.problem_mark or e.context_mark
        line = (mark.line + 1) if mark else 1
        raise ConfigError([f"{file}:{line}: (syntax): {e.problem or e}"]) from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ConfigError([f"{file}:1: (top): the config must be a mapping of keys"])
    located = _Located()
    located.walk(doc)
    env_problems: list[tuple[tuple, str]] = []
    _substitute(doc, _env_values(path), (), env_problems)
    problems = [f"{file}:{located.line_for(loc)}: {_fmt_loc(loc)}: {msg}" for loc, msg in env_problems]
    data = _plain(doc)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        seen: set[str] = set()
        for err in e.errors():
            loc = _clean_loc(err["loc"], data)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (typo?)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            line = located.line_for(loc)
            text_ = f"{file}:{line}: {_fmt_loc(loc)}: {msg}"
            if text_ not in seen:
                seen.add(text_)
                problems.append(text_)
    if settings is not None and not problems:
        from connector.templates import check_templates

        problems += [f"{file}:{located.line_for(loc)}: {_fmt_loc(loc)}: {msg}" for loc, msg in check_templates(settings)]
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings


def json_schema() -> dict:
    """JSON Schema of the config, for editor autocompletion."""
    schema = Settings.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "connector config"
    return schema
