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
from datetime import date, time
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
    country: str | None = Field("UA", description="Country whose public holidays are days off (ISO 3166 code, "
                                "`holidays` package); null for none.", examples=["UA", "PL"])
    subdivision: str | None = Field(None, description="Region of the country, for regional holidays (ISO 3166-2 code).",
                                    examples=["BY"])
    workdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        ["mon", "tue", "wed", "thu", "fri"], description="Working days of the week.", examples=[["mon", "tue", "wed", "thu", "fri", "sat"]])
    hours: str = Field("09:00-18:00", description="Working hours, HH:MM-HH:MM; `workhours` deadlines count only these.",
                       examples=["09:00-18:00"])
    extra_holidays: list[str] = Field(default_factory=list, description="More days off, ISO dates (company holidays).",
                                      examples=[["2026-12-31", "2027-01-02"]])

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
    domain: str = Field(description="The portal's domain.", examples=["mycompany.bitrix24.ua"])
    client_id: str = Field(description="The local application's client id (`local.…`).", examples=["local.65f1c0a2b3d4e5.12345678"])
    client_secret: str = Field(description="The local application's client secret.", examples=["${BITRIX24_CLIENT_SECRET}"])
    refresh_token: str = Field(description="The first refresh token; rotated tokens are kept in the store.",
                               examples=["${BITRIX24_REFRESH_TOKEN}"])
    access_token: str | None = Field(None, description="A current access token, if you have one (refreshed when it expires).",
                                     examples=["${BITRIX24_ACCESS_TOKEN}"])
    token_url: str = Field("https://oauth.bitrix.info/oauth/token/", description="Bitrix24's OAuth token endpoint.",
                           examples=["https://oauth.bitrix.info/oauth/token/"])


class Bitrix24App(Model):
    """The connector as a local server-side application of the portal (``connector app serve``)."""

    client_id: str = Field(description="The local application's client id (`local.…`), shown when the application is "
                           "saved in the portal.", examples=["local.65f1c0a2b3d4e5.12345678"])
    client_secret: str = Field(description="The local application's client secret (a secret: keep it in .env).",
                               examples=["${BITRIX24_CLIENT_SECRET}"])
    public_url: str = Field(description="The HTTPS address at which the portal reaches the application endpoint (your "
                            "reverse proxy in front of `listen`); every handler URL is built from it.",
                            examples=["https://connector.example.com"])
    listen: str = Field("127.0.0.1:8086", description="host:port the application endpoint listens on (behind the reverse "
                        "proxy); the same as binotel.push.listen shares one listener.", examples=["127.0.0.1:8086"])
    allow_from: list[str] = Field(default_factory=list, description="Addresses or networks allowed to connect (empty: "
                                  "loopback only, i.e. a reverse proxy on this host).", examples=[["10.0.0.5/32"]])
    token_url: str = Field("https://oauth.bitrix.info/oauth/token/", description="Bitrix24's OAuth token endpoint.",
                           examples=["https://oauth.bitrix.info/oauth/token/"])
    events: Literal["online", "offline", "none"] = Field(
        "online", description="How the portal reports edits: online (it calls the endpoint), offline (queued in the "
        "portal, fetched with event.offline.get each cycle: for an endpoint the portal cannot reach) or none (polling only).",
        examples=["online"])
    poll_every_minutes: float = Field(60, gt=0, description="With events bound, a full change poll (the ground truth) runs "
                                      "this often; cycles in between read only the records events named.", examples=[60])
    debounce_seconds: float = Field(5, ge=0, description="The daemon runs a cycle this many seconds after an event "
                                    "arrives (events that arrive meanwhile join it).", examples=[5])
    log_calls: bool = Field(True, description="Show every PBX call (binotel) on the client card "
                            "(telephony.externalCall.register/finish, with the record link).", examples=[True])
    call_lookback_hours: int = Field(24, ge=1, description="Calls older than this (or made before the installation) are "
                                     "not put on the card.", examples=[24])
    create_leads: bool = Field(False, description="A call from a number no client has creates a lead (CRM_CREATE).",
                               examples=[False])
    state_field: str | None = Field(None, description="Custom client field the robot \"Connector: mark client state\" "
                                    "writes (list it in bitrix24.fields to let rules read it).",
                                    examples=["UF_CRM_CONNECTOR_STATE"])
    sms_sender: bool = Field(True, description="Register the connector as the portal's SMS provider "
                             "(messageservice.sender.add), sending through messaging.sms.", examples=[True])
    max_body_bytes: int = Field(262144, description="Larger requests to the endpoint are refused.", examples=[262144])

    @field_validator("public_url")
    @classmethod
    def _public(cls, v: str) -> str:
        from urllib.parse import urlsplit

        u = urlsplit(v.strip())
        loopback = u.hostname in ("127.0.0.1", "localhost", "::1")
        if u.scheme != "https" and not (u.scheme == "http" and loopback):
            raise ValueError("the portal calls handlers over HTTPS: public_url must start with https:// "
                             "(plain http only for a loopback sandbox)")
        if not u.hostname or u.query or u.fragment:
            raise ValueError("public_url is a base address such as https://connector.example.com")
        return v.strip().rstrip("/")


class Bitrix24(Model):
    webhook_url: str | None = Field(None, description="Incoming webhook URL (a secret: keep it in .env). Set this or oauth.",
                                    examples=["${BITRIX24_WEBHOOK_URL}"])
    oauth: OAuth | None = Field(None, description="A local application's OAuth credentials instead of a webhook.",
                                examples=[{"domain": "mycompany.bitrix24.ua", "client_id": "local.65f1c0a2b3d4e5.12345678",
                                           "client_secret": "${BITRIX24_CLIENT_SECRET}", "refresh_token": "${BITRIX24_REFRESH_TOKEN}"}])
    fields: list[str] = Field(default_factory=list, description="Custom fields (UF_*) of companies and contacts to pull; "
                              "rules read them (cadence.field, where.field).", examples=[["UF_CRM_TEMPERATURE"]])
    plan: Literal["standard", "enterprise"] = Field("standard", description="The portal's plan, for its rate limits: "
                                                    "standard (2 requests/s) or enterprise (5 requests/s).", examples=["standard"])
    overlap_seconds: int = Field(300, description="Incremental reads ask again for this many seconds before the cursor "
                                 "(clock skew between the portal and us).", examples=[300])
    sweep_every_hours: float = Field(24, description="Hours between id sweeps that find records deleted in the portal.",
                                     examples=[24])
    guid_field: str | None = Field(None, description="Custom field holding the 1C counterparty GUID (links CRM clients to 1C).",
                                   examples=["UF_CRM_1C_GUID"])
    segment_field: str | None = Field(None, description="Custom field holding the client's segment (for where.segment).",
                                      examples=["UF_CRM_SEGMENT"])
    opt_out_field: str | None = Field(None, description="Custom field that, when Y/1/true, stops messages to the client.",
                                      examples=["UF_CRM_NO_SMS"])
    timeout: float = Field(60, description="Seconds to wait for one answer of the portal.", examples=[60])
    app: Bitrix24App | None = Field(None, description="Application mode instead of webhook_url or oauth: the connector as the "
                                    "portal's local application (`connector app serve`; tokens arrive when it is installed).",
                                    examples=[{"client_id": "local.65f1c0a2b3d4e5.12345678", "client_secret": "${BITRIX24_CLIENT_SECRET}",
                                               "public_url": "https://connector.example.com", "listen": "127.0.0.1:8086"}])

    _read_by_rules: list[str] = PrivateAttr(default_factory=list)
    _deal_fields: list[str] = PrivateAttr(default_factory=list)  # custom deal fields a rule reads (recurring)
    _product_rows: bool = PrivateAttr(default=False)  # a rule reads what was sold (replenish, recurring)
    _invoice_fields: list[str] = PrivateAttr(default_factory=list)

    def pulled_fields(self) -> list[str]:
        """Custom fields to pull: those listed, and those a rule or channel reads (listed once is enough)."""
        return [*self.fields, *self._read_by_rules]

    def invoice_fields(self) -> list[str]:
        """Smart-invoice fields a rule reads (invoice_sync: the 1C number and GUID), pulled with the invoices."""
        return list(self._invoice_fields)

    @model_validator(mode="after")
    def _one_auth(self) -> "Bitrix24":
        if self.app is not None:
            if self.webhook_url or self.oauth:
                raise ValueError("app replaces webhook_url and oauth (its tokens arrive when the application is installed): "
                                 "set only one of them")
        elif bool(self.webhook_url) == bool(self.oauth):
            raise ValueError("set exactly one of webhook_url or oauth")
        return self


class OneCOData(Model):
    url: str = Field(description="The base's standard OData address: http(s)://HOST/<publication>/odata/standard.odata.",
                     examples=["${ONEC_ODATA_URL}"])
    user: str = Field(description="1C user with read rights (and write rights for 1C write-back); Cyrillic is fine.",
                      examples=["${ONEC_USER}"])
    password: str = Field(description="That user's password.", examples=["${ONEC_PASSWORD}"])
    page_size: int = Field(500, description="Rows per OData request.", examples=[500])
    timeout: float = Field(120, description="Seconds to wait for one answer of 1C.", examples=[120])


class OneCSoap(Model):
    wsdl: str = Field("reference", description="WSDL address of the 1C web service, a local file, or `reference` for the "
                      "bundled one.", examples=["${ONEC_WSDL_URL}", "reference"])
    endpoint: str | None = Field(None, description="The service address (the WSDL's own soap:address is never used); default: "
                                 "the WSDL URL without its query.", examples=["${ONEC_SOAP_ENDPOINT}"])
    user: str | None = Field(None, description="1C user for the web service.", examples=["${ONEC_USER}"])
    password: str | None = Field(None, description="That user's password.", examples=["${ONEC_PASSWORD}"])
    operations: dict[str, str] = Field(default_factory=dict, description="The service's operation names, when the integrator "
                                       "named them differently from the reference WSDL.", examples=[{"GetDebts": "ПолучитьДолги"}])
    allow_hosts: list[str] = Field(default_factory=list, description="Other hosts (or file:///folders/) the WSDL may import "
                                   "from; fetched without credentials.", examples=[["schemas.example.com"]])

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
    odata: OneCOData | None = Field(None, description="Read (and write back) through the standard OData interface.",
                                    examples=[{"url": "${ONEC_ODATA_URL}", "user": "${ONEC_USER}", "password": "${ONEC_PASSWORD}"}])
    soap: OneCSoap | None = Field(None, description="A 1C web service instead of, or besides, OData.",
                                  examples=[{"wsdl": "reference", "endpoint": "${ONEC_SOAP_ENDPOINT}"}])
    preset: Literal["ut11", "unf", "utp"] = Field("ut11", description="The configuration's object names: ut11 (also ERP, "
                                                  "КА 2, BAS УТ 3), unf, utp (УТ 10.3, УПП).", examples=["ut11"])
    objects: dict[str, str] = Field(default_factory=dict, description="Override object names of the preset.",
                                    examples=[{"counterparties": "Catalog_Контрагенты", "task": "Document_Событие"}])
    fields: dict[str, str] = Field(default_factory=dict, description="Override field names of the preset "
                                   "(object.field: name, or several names separated by commas).",
                                   examples=[{"counterparty.tax_id": "КодПоЕДРПОУ,ИНН", "invoice.due": "СрокОплаты"}])
    match: list[Literal["tax_id", "guid_field", "phone"]] = Field(
        ["tax_id", "guid_field", "phone"], description="How 1C counterparties are linked to CRM clients, in order.",
        examples=[["tax_id", "phone"]])
    overlap_days: int = Field(3, description="Document windows are read again this many days back.", examples=[3])
    sweep_every_hours: float = Field(6, gt=0, description="Hours between full key and DataVersion re-reads of catalogs "
                                     "(finds edited and deleted counterparties).", examples=[6])
    write_back: Literal["auto", "odata", "soap", "none"] = Field("auto", description="How tasks and reassignments go back "
                                                                 "into 1C (1C-only companies).", examples=["odata"])
    payment_terms_days: int = Field(14, ge=0, description="Days to pay a shipment when its contract names no term (debt ageing).",
                                    examples=[14])
    ageing_window_days: int = Field(365, ge=1, description="Shipments this many days back are aged against a receivable.",
                                    examples=[365])
    overdue_from: Literal["auto", "register", "shipments"] = Field(
        "auto", description="auto: the terms register where the preset has one, else ageing of shipments.", examples=["auto"])
    metadata_every_hours: float = Field(24, gt=0, description="Scheduled re-read of the base's $metadata.", examples=[24])
    create_missing: bool = Field(False, description="Create a Bitrix24 company (with its tax id requisite and the 1C GUID in "
                                 "bitrix24.guid_field) for every unmatched 1C counterparty that has a document; through the "
                                 "safety brake like any action.", examples=[True])
    create_missing_preset: int = Field(1, ge=1, description="Requisite template (crm.requisite.preset.list) of the tax id "
                                       "requisites of created companies; 1 is Organization on most portals.", examples=[1])

    _product_lines: bool = PrivateAttr(default=False)  # a rule reads the goods of documents (replenish)

    @model_validator(mode="after")
    def _some_channel(self) -> "OneC":
        if not self.odata and not self.soap:
            raise ValueError("set odata, soap or both")
        return self


class BinotelPush(Model):
    listen: str = Field("127.0.0.1:8085", description="host:port the push receiver listens on.", examples=["0.0.0.0:8085"])
    token: str = Field(description="Secret path part of the push URL http://HOST:PORT/binotel/<token>, at least 16 "
                       "characters.",
                       examples=["${BINOTEL_PUSH_TOKEN}"])
    allow_from: list[str] = Field(default_factory=list, description="Addresses or networks allowed to push (empty: any).",
                                  examples=[["194.88.218.0/24"]])
    max_body_bytes: int = Field(65536, description="Larger push requests are refused.", examples=[65536])

    @field_validator("token")
    @classmethod
    def _token(cls, v: str) -> str:
        if len(v.strip()) < 16:
            raise ValueError("the push token must be at least 16 characters: it is the only secret in the push URL "
                             "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
        return v


class Binotel(Model):
    key: str = Field(description="API key from Binotel support.", examples=["${BINOTEL_KEY}"])
    secret: str = Field(description="API secret from Binotel support.", examples=["${BINOTEL_SECRET}"])
    url: str = Field("https://api.binotel.com/api/4.0", description="API address (overridable for sandboxes).",
                     examples=["https://api.binotel.com/api/4.0"])
    push: BinotelPush | None = Field(None, description="Receive calls as Binotel pushes them, besides polling.",
                                     examples=[{"listen": "127.0.0.1:8085", "token": "${BINOTEL_PUSH_TOKEN}"}])
    min_interval_seconds: float = Field(1.0, description="Seconds between requests (Binotel answers 106 when too frequent).",
                                        examples=[1.0])
    overlap_seconds: int = Field(4 * 3600, description="Incremental polls ask again for this many seconds before the cursor.",
                                 examples=[14400])
    lookback_days: int = Field(30, ge=1, description="The first sync reads this many days of calls.", examples=[30])
    settle_seconds: int = Field(60, ge=0, description="Poll windows end this many seconds before now (calls still settling).",
                                examples=[60])
    duty_manager: int | str | None = Field(None, description="Who calls back unknown numbers when people.duty_manager is not set "
                                           "(a user id).", examples=[2])


class Sms(Model):
    provider: Literal["turbosms", "bitrix24", "log"] = Field(
        description="turbosms (TurboSMS API), bitrix24 (the portal's own \"Send SMS\" robot, fired by trigger_code) "
                    "or log (written to the log, never sent: sandboxes).", examples=["turbosms"])
    token: str | None = Field(None, description="turbosms: the API token.", examples=["${TURBOSMS_TOKEN}"])
    sender: str | None = Field(None, description="turbosms: the registered sender name.", examples=["MyShop"])
    url: str = Field("https://api.turbosms.ua", description="turbosms: API address (overridable for sandboxes).",
                     examples=["https://api.turbosms.ua"])
    trigger_code: str | None = Field(None, description="bitrix24: code of the automation trigger whose robot sends the SMS.",
                                     examples=["smsrb1"])

    @model_validator(mode="after")
    def _provider_needs(self) -> "Sms":
        if self.provider == "turbosms" and (not self.token or not self.sender):
            raise ValueError("turbosms needs token and sender")
        if self.provider == "bitrix24" and not self.trigger_code:
            raise ValueError("bitrix24 provider needs trigger_code (a crm.automation.trigger code)")
        return self


class Email(Model):
    smtp: str = Field(description="SMTP server as a URL: smtp://user:pass@host:587 (STARTTLS when offered) or smtps://host:465.",
                      examples=["${SMTP_URL}"])
    from_: str = Field(alias="from", description="Sender address of client e-mails.", examples=["shop@example.com"])
    insecure: bool = Field(False, description="Allow plain text when the server offers no STARTTLS (a trusted local relay "
                           "only); `connector check` warns.", examples=[False])
    ca_file: str | None = Field(None, description="PEM file of the CA that signed the server's certificate (an internal CA); "
                                "the system's CAs otherwise.", examples=["/etc/ssl/internal-ca.pem"])


class Messaging(Model):
    sms: Sms | None = Field(None, description="How `sms` actions are sent.",
                            examples=[{"provider": "turbosms", "token": "${TURBOSMS_TOKEN}", "sender": "MyShop"}])
    email: Email | None = Field(None, description="How `email` actions are sent.",
                                examples=[{"smtp": "${SMTP_URL}", "from": "shop@example.com"}])
    quiet_hours: str | None = Field("21:00-09:00", description="Client messages wait outside these hours (HH:MM-HH:MM); "
                                    "null: any time.", examples=["21:00-09:00"])
    workdays_only: bool = Field(True, description="Client messages wait over weekends and public holidays.", examples=[True])
    max_per_client_days: int = Field(0, description="At most one `marketing: true` message per client in this many days "
                                     "(0: no limit).", examples=[7])
    opt_out_field: str | None = Field(None, description="Custom field that, when Y/1/true, stops messages to the client "
                                      "(list it in bitrix24.fields).", examples=["UF_CRM_NO_SMS"])

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hours(v)
        return v


class Absence(Model):
    user: int | str = Field(description="The manager's user id.", examples=[5])
    from_: date = Field(alias="from", description="First day away (ISO date).", examples=["2026-12-01"])
    to: date = Field(description="Last day away (ISO date).", examples=["2026-12-14"])

    @model_validator(mode="after")
    def _order(self) -> "Absence":
        if self.to < self.from_:
            raise ValueError("an absence must end on or after its first day (from <= to)")
        return self


class People(Model):
    supervisor: int | str | None = Field(None, description="The head of sales: user id in the CRM (or 1C user Ref_Key "
                                         "for 1C-only companies); `supervisor` in actions.", examples=[1])
    duty_manager: int | str | None = Field(None, description="Who calls back unknown numbers; `duty_manager` in actions "
                                           "(default: the supervisor).", examples=[2])
    absences: list[Absence] = Field(default_factory=list, description="Managers' days away (vacations, sick leave): a "
                                    "greeting call task due then moves to the last working day before.",
                                    examples=[[{"user": 5, "from": "2026-12-01", "to": "2026-12-14"}]])


class Safety(Model):
    max_actions_per_run: int = Field(500, ge=0, description="A run with more new actions is refused (--force overrides).",
                                     examples=[500])
    max_share: float = Field(0.25, gt=0, le=1, description="A rule acting on more than this share of its clients is refused "
                             "(--force overrides).", examples=[0.25])
    min_clients_for_share: int = Field(20, ge=0, description="max_share applies only to rules with at least this many clients "
                                       "in scope.", examples=[20])


class Schedule(Model):
    every_minutes: float | None = Field(15, description="The daemon runs a cycle this often.", examples=[15])
    cron: str | None = Field(None, description="Or a 5-field cron expression (minute hour day month weekday) instead.",
                             examples=["*/10 8-20 * * mon-fri"])

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


class Metrics(Model):
    listen: str = Field("127.0.0.1:9108", description="HOST:PORT where the daemon serves Prometheus metrics (/metrics) and "
                        "its health (/healthz); 0.0.0.0 in a container.", examples=["127.0.0.1:9108"])

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not HOST:PORT (e.g. 127.0.0.1:9108)")
        return v

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


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
    title: str = Field(description="Task title (a template).", examples=["No contact: {{ client.title }}"])
    description: str | None = Field(None, description="Task description (a template).",
                                    examples=["Last contact: {{ last_contact }}. Call or write today."])
    deadline: str = Field("1 workdays", description="Time to the deadline in workdays, days, hours, workhours or minutes.",
                          examples=["3 workdays", "2 hours"])
    responsible: PersonRef = Field("responsible", description="Who gets the task: a user id or responsible, "
                                   "previous_responsible, supervisor, duty_manager.", examples=["responsible", 7])
    bind_to: Literal["client", "deal"] = Field("client", description="Bind the task to the client, or to its open deal.",
                                               examples=["client"])

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: str) -> str:
        parse_duration(v)
        return v


class SmsSpec(Model):
    text: str | None = Field(None, description="Message text (a template). Set text or variants.",
                             examples=["Sorry we missed your call. {{ manager.name }} will call you back today."])
    variants: list[str] | None = Field(None, description="Texts to pick from, one per client and year (templates).",
                                       examples=[["Hello {{ client.greeting_name }}! …", "Good day, {{ client.greeting_name }}! …"]])
    marketing: bool = Field(False, description="A marketing message: counts against messaging.max_per_client_days.",
                            examples=[False])
    to: Literal["client", "caller"] = Field("client", description="The client's phone, or the number that called "
                                            "(missed_call).", examples=["caller"])

    @model_validator(mode="after")
    def _text(self) -> "SmsSpec":
        if not self.text and not self.variants:
            raise ValueError("set text or variants")
        return self


class EmailSpec(Model):
    subject: str = Field(description="Subject (a template).", examples=["Invoice {{ invoice.number }} is overdue"])
    text: str | None = Field(None, description="Body (a template). Set text or variants.",
                             examples=["Dear {{ client.greeting_name }}, …"])
    variants: list[str] | None = Field(None, description="Bodies to pick from, one per client and year (templates).",
                                       examples=[["Dear {{ client.greeting_name }}, …", "Good day, {{ client.greeting_name }}, …"]])
    to: Literal["client", "responsible", "supervisor"] = Field("client", description="Who receives it.", examples=["client"])

    @model_validator(mode="after")
    def _text(self) -> "EmailSpec":
        if not self.text and not self.variants:
            raise ValueError("set text or variants")
        return self


class WorkflowSpec(Model):
    template_id: int = Field(description="Business-process template id in the portal.", examples=[42])
    parameters: dict[str, Any] = Field(default_factory=dict, description="Template parameters (text values are templates).",
                                       examples=[{"resp_employee": "user_15"}])


class NotifySpec(Model):
    to: list[PersonRef] = Field(description="Who is notified: user ids or responsible, previous_responsible, supervisor, "
                                "duty_manager.", examples=[["supervisor", 7]])
    text: str | None = Field(None, description="Notification text (a template); default: the rule's reason.",
                             examples=["{{ client.title }}: {{ reason }}"])


def _person_list(v: Any) -> Any:
    if isinstance(v, (str, int)):
        return [v]
    return v


class TaskAction(Model):
    task: TaskSpec = Field(description="Create a task for a person.",
                           examples=[{"title": "No contact: {{ client.title }}", "deadline": "3 workdays"}])


class FieldAction(Model):
    field: dict[str, Any] = Field(description="Set fields of the client (field: value; text values are templates).",
                                  examples=[{"UF_CRM_STATUS": "forgotten"}])


class CommentAction(Model):
    comment: str = Field(description="Add a timeline comment to the client (a template).",
                         examples=["No contact for {{ days }} days."])


class NotifyAction(Model):
    notify: list[PersonRef] | NotifySpec = Field(description="Notify people in the portal: a list of people, or to and text.",
                                                 examples=[["supervisor", "previous_responsible"]])

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
    trigger: str = Field(description="Fire an automation trigger (the code of an \"incoming webhook\" trigger) on the "
                                     "client, to start the portal's own robots.", examples=["nwly5"])


class WorkflowAction(Model):
    workflow: int | WorkflowSpec = Field(description="Start a business process on the client: a template id, or "
                                         "template_id and parameters.", examples=[42])


class SmsAction(Model):
    sms: SmsSpec = Field(description="Send an SMS (messaging.sms).",
                         examples=[{"text": "Sorry we missed your call. {{ manager.name }} will call you back today."}])


class EmailAction(Model):
    email: EmailSpec = Field(description="Send an e-mail (messaging.email).",
                             examples=[{"subject": "Invoice {{ invoice.number }}", "text": "Dear {{ client.greeting_name }}, …"}])


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
    after_days: int | None = Field(None, ge=0, description="Days after the episode's first action was done.", examples=[7])
    when: Literal["task_overdue"] | None = Field(None, description="task_overdue: when the connector's task of the episode is "
                                                 "past its deadline and still open.", examples=["task_overdue"])
    actions: list[Action] = Field(description="What to do then.", examples=[[{"notify": ["supervisor"]}]])

    @model_validator(mode="after")
    def _trigger(self) -> "EscalationStep":
        if (self.after_days is None) == (self.when is None):
            raise ValueError("set exactly one of after_days or when")
        return self


class OnClear(Model):
    """What happens when an episode's condition clears (contact, purchase, payment, call-back)."""

    close_tasks: bool = Field(True, description="Complete the connector's still-open tasks of the episode, with a result comment.",
                              examples=[True])
    field: dict[str, Any] | None = Field(None, description="Reset the labels the rule set.", examples=[{"UF_CRM_STATE": "ACTIVE"}])


ContactKind = Literal["call", "email", "meeting", "task", "comment", "document", "deal", "invoice", "other"]
DEFAULT_CONTACT: list[str] = ["call", "email", "meeting", "task", "comment", "document", "deal", "invoice"]


class Where(Model):
    segment: list[str] | None = Field(None, description="Only clients in these segments (bitrix24.segment_field).",
                                      examples=[["VIP", "wholesale"]])
    responsible: list[int | str] | None = Field(None, description="Only clients of these managers (user ids).", examples=[[5, 7]])
    not_responsible: list[int | str] | None = Field(None, description="Not clients of these managers (user ids).",
                                                    examples=[[1]])
    field: dict[str, Any] | None = Field(None, description="Only clients whose custom fields have these values (a list: any of).",
                                         examples=[{"UF_CRM_TEMPERATURE": ["warm", "hot"]}])
    rfm: list[str] | None = Field(None, description="Only clients the rfm rule puts in these segments in this very cycle "
                                  "(computed from purchases, not read back from the CRM field).",
                                  examples=[["champions", "loyal"]])


class RuleBase(Model):
    name: str = Field(pattern=r"^[a-z0-9_\-]+$", description="Unique rule name (lower case, digits, _ and -); part of "
                      "every action's key.", examples=["forgotten"])
    mode: Literal["live", "dry_run"] = Field("live", description="dry_run: actions are planned and shown, never executed.",
                                             examples=["dry_run"])
    where: Where | None = Field(None, description="Narrow the clients the rule looks at.", examples=[{"segment": ["VIP"]}])
    actions: list[Action] = Field(default_factory=list, description="What to do, in order, when the rule fires.",
                                  examples=[[{"task": {"title": "No contact: {{ client.title }}", "deadline": "3 workdays"}}]])
    escalate: list[EscalationStep] = Field(default_factory=list, description="More actions while the condition holds, "
                                           "counted from the first action; stops when it clears.",
                                           examples=[[{"after_days": 7, "actions": [{"notify": ["supervisor"]}]}]])
    on_clear: OnClear = Field(default_factory=OnClear, description="When the condition clears: complete the connector's "
                              "open tasks of the episode and reset the labels it set.",
                              examples=[{"close_tasks": True, "field": {"UF_CRM_STATE": "ACTIVE"}}])
    enabled: bool = Field(True, description="false: the rule is not evaluated.", examples=[True])


class ForgottenRule(RuleBase):
    type: Literal["forgotten"] = Field(description="No contact with a client for inactive_days.", examples=["forgotten"])
    clients: Literal["companies", "contacts"] = Field("companies", description="Which CRM clients the rule looks at.",
                                                      examples=["companies"])
    inactive_days: int = Field(gt=0, description="No contact for longer than this: forgotten.", examples=[60])
    keep_while_future_task: bool = Field(True, description="An open task or planned activity with a future deadline keeps "
                                         "the client from being forgotten.", examples=[True])
    contact_kinds: list[ContactKind] = Field(default_factory=lambda: list(DEFAULT_CONTACT), description="What counts as contact.",
                                             examples=[["call", "email", "meeting"]])


class Reassign(Model):
    to: list[int | str] = Field(min_length=1, description="The pool of managers (user ids) that released clients go to.",
                                examples=[[7, 9]])
    strategy: Literal["round_robin", "least_loaded"] = Field("round_robin", description="How a manager of the pool is chosen.",
                                                             examples=["least_loaded"])
    move_deals: bool = Field(True, description="Move the client's open deals too.", examples=[True])
    move_contacts: bool = Field(True, description="Move the company's contacts too.", examples=[True])
    comment: str | None = Field(
        "Client released from {{ previous_manager.name }} to {{ manager.name }}: no contact for {{ days }} days.",
        description="Timeline comment on the client (a template); null for none. The default is written in the config's `language`.",
        examples=["Released: no contact for {{ days }} days."])


class ReleaseRule(RuleBase):
    type: Literal["release"] = Field(description="Reassign a forgotten client whose manager ignored the reminder.",
                                     examples=["release"])
    after: str = Field(description="Name of the forgotten rule whose clients this rule releases.", examples=["forgotten"])
    grace_days: int = Field(ge=0, description="Days after that rule's reminder with still no contact.", examples=[14])
    reassign: Reassign = Field(description="Where released clients go.", examples=[{"to": [7, 9], "strategy": "round_robin"}])
    contact_kinds: list[ContactKind] | None = Field(None, description="What counts as contact (default: the forgotten rule's).",
                                                    examples=[["call", "meeting"]])


class Cadence(Model):
    field: str | None = Field(None, description="Custom field with the client's temperature (list it in bitrix24.fields).",
                              examples=["UF_CRM_TEMPERATURE"])
    days: dict[str, int] = Field(default_factory=lambda: {"warm": 14, "cold": 30}, description="Days between call-backs "
                                 "per value of that field.", examples=[{"hot": 7, "warm": 14, "cold": 30}])
    default_days: int = Field(30, description="Days between call-backs for other values.", examples=[30])


class LostRule(RuleBase):
    type: Literal["lost"] = Field(description="A client who bought and stopped: call-backs until they buy again.",
                                  examples=["lost"])
    clients: Literal["companies", "contacts"] = Field("companies", description="Which CRM clients the rule looks at.",
                                                      examples=["companies"])
    min_purchases: int = Field(1, ge=1, description="Purchases (won deals, paid invoices, 1C sales; one a day) at least.",
                               examples=[2])
    after_days: int | Literal["auto"] = Field(180, description="Days without a purchase, or auto: the client's median interval "
                                              "times auto_factor.", examples=[180, "auto"])
    auto_factor: float = Field(2.0, description="auto: multiple of the median interval between purchases.", examples=[2.0])
    auto_min_days: int = Field(30, description="auto: at least this many days.", examples=[30])
    auto_max_days: int = Field(365, description="auto: at most this many days.", examples=[365])
    cadence: Cadence = Field(default_factory=Cadence, description="How often to call back.",
                             examples=[{"field": "UF_CRM_TEMPERATURE", "days": {"warm": 14, "cold": 30}}])
    reason_field: str | None = Field(None, description="Custom field where managers record why the client stopped buying; "
                                     "the control report groups lost clients by it (pulled automatically).",
                                     examples=["UF_CRM_LOST_REASON"])


class UnpaidRule(RuleBase):
    type: Literal["unpaid"] = Field(description="An invoice still unpaid after its due date.", examples=["unpaid"])
    overdue_days: int = Field(ge=0, description="Days after the due date.", examples=[3])
    min_amount: float = Field(0, description="Invoices of at least this amount.", examples=[500])


class DebtorsRule(RuleBase):
    type: Literal["debtors"] = Field(description="A 1C receivable over min_amount and overdue.", examples=["debtors"])
    min_amount: float = Field(0, description="Receivable balances of at least this amount.", examples=[1000])
    overdue_days: int = Field(0, ge=0, description="Days the debt is overdue at least.", examples=[7])


class MissedCallRule(RuleBase):
    type: Literal["missed_call"] = Field(description="An inbound call nobody answered or called back in time.",
                                         examples=["missed_call"])
    callback_within_minutes: int = Field(15, ge=0, description="Minutes to call back before the rule fires.", examples=[15])
    lookback_hours: int = Field(24, description="Only calls of the last this many hours.", examples=[24])


_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$")
OCCASION_DATES = {"new_year": "01-01", "womens_day": "03-08"}


class GreetingChannel(Model):
    """One way to greet: an SMS, an e-mail, or a task for the responsible manager to call."""

    where: Where | None = Field(None, description="The segment this channel is for (default: everyone left).",
                                examples=[{"segment": ["VIP"]}])
    sms: SmsSpec | None = Field(None, description="Send an SMS (messaging.sms).",
                                examples=[{"variants": ["Happy birthday, {{ client.greeting_name }}! {{ manager.name }}"]}])
    email: EmailSpec | None = Field(None, description="Send an e-mail (messaging.email).",
                                    examples=[{"subject": "Happy birthday!", "text": "Dear {{ client.greeting_name }}, …"}])
    task: TaskSpec | None = Field(None, description="A task for the responsible manager to call; due at the end of the "
                                  "occasion's day, or of the last working day before it when that day is off or the manager "
                                  "is away (the deadline key is not used).",
                                  examples=[{"title": "Call {{ client.name }}: {{ occasion.title }}"}])

    @model_validator(mode="after")
    def _one(self) -> "GreetingChannel":
        if sum(x is not None for x in (self.sms, self.email, self.task)) != 1:
            raise ValueError("a channel is exactly one of: sms, email, task")
        return self


class GreetingOffer(Model):
    days_before: int = Field(ge=1, le=60, description="Days before the occasion the offer goes out.", examples=[5])
    channels: list[GreetingChannel] = Field(min_length=1, description="How the offer is sent, per segment (the first "
                                            "that fits and reaches the client).",
                                            examples=[[{"sms": {"text": "{{ client.greeting_name }}, -10% for your birthday week"}}]])


class GreetingsRule(RuleBase):
    type: Literal["greetings"] = Field(description="Birthday, company-day and holiday greetings.", examples=["greetings"])
    occasion: Literal["birthday", "company_day", "new_year", "womens_day", "holiday"] = Field(
        description="birthday (the contact's birth date, or field), company_day (a date field of the client), new_year "
                    "(1 January), womens_day (8 March) or holiday (date).", examples=["birthday"])
    field: str | None = Field(None, description="birthday: a custom date field instead of the contact's birth date; "
                              "company_day: the custom date field (required).", examples=["UF_CRM_FOUNDED"])
    date: str | None = Field(None, description="holiday: the day, MM-DD (a company holiday).", examples=["06-15"])
    title: str | None = Field(None, description="How texts name the occasion ({{ occasion.title }}); default: the "
                              "occasion's name in the config's language.", examples=["Company day"])
    clients: Literal["companies", "contacts"] = Field("contacts", description="Which CRM clients are greeted.",
                                                      examples=["contacts"])
    at: str = Field("09:00", description="Local time of day the greetings go out (not before it), HH:MM.", examples=["09:00"])
    channels: list[GreetingChannel] = Field(min_length=1, description="Per segment, the channel: the first whose where "
                                            "fits and that reaches the client (a mobile phone, an e-mail, a manager).",
                                            examples=[[{"where": {"segment": ["VIP"]}, "task": {"title": "Call {{ client.name }}"}},
                                                       {"sms": {"variants": ["Happy birthday!", "All the best!"]}}]])
    offer: GreetingOffer | None = Field(None, description="An offer sent days before the occasion, with its own text.",
                                        examples=[{"days_before": 5, "channels": [{"sms": {"text": "-10% for your birthday"}}]}])
    on_clear: OnClear = Field(default_factory=lambda: OnClear(close_tasks=False), description="A greeting's day is over: "
                              "its call task is left as it is (an unfinished one counts as missed in the report).",
                              examples=[{"close_tasks": False}])

    @field_validator("at")
    @classmethod
    def _at(cls, v: str) -> str:
        m = re.match(r"^(\d{1,2}):(\d{2})$", v.strip())
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise ValueError(f"expected HH:MM, got {v!r}")
        return v.strip()

    @model_validator(mode="after")
    def _occasion(self) -> "GreetingsRule":
        problems: list[tuple[tuple, str]] = []
        if self.occasion == "company_day" and not self.field:
            problems.append((("field",), "company_day needs field: the custom date field of the client"))
        if self.occasion == "holiday":
            m = _MONTH_DAY.match(self.date or "")
            if not m:
                problems.append((("date",), "holiday needs date: MM-DD"))
            else:
                try:
                    date(2024, int(m.group(1)), int(m.group(2)))
                except ValueError:
                    problems.append((("date",), f"no such day: {self.date}"))
        elif self.date is not None:
            problems.append((("date",), "date is for occasion: holiday"))
        if self.actions or self.escalate:
            problems.append((("actions",), "greetings send through channels (and offer.channels), not actions or escalate"))
        if problems:
            raise Problems(problems)
        return self

    def month_day(self) -> str | None:
        """The fixed MM-DD of a calendar occasion (None for dates read from clients)."""
        return OCCASION_DATES.get(self.occasion) or (self.date if self.occasion == "holiday" else None)

    def all_channels(self) -> list[tuple[str, GreetingChannel]]:
        return [("channels", c) for c in self.channels] + [("offer", c) for c in (self.offer.channels if self.offer else [])]


def _scores(v: Any) -> Any:
    """``4``, ``[4, 5]``, ``"4-5"`` or ``"*"`` -> the scores 1-5 they name, sorted."""
    if v == "*" or v is None:
        return [1, 2, 3, 4, 5]
    items = v if isinstance(v, list) else [v]
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        m = re.fullmatch(r"([1-5])\s*-\s*([1-5])", text)
        if m:
            lo, hi = sorted((int(m.group(1)), int(m.group(2))))
            out.update(range(lo, hi + 1))
        elif text in ("1", "2", "3", "4", "5"):
            out.add(int(text))
        else:
            raise ValueError(f"a score is 1-5, a list of them or a range like \"4-5\"; got {item!r}")
    return sorted(out)


class RfmSegment(Model):
    name: str = Field(pattern=r"^[^:\n]+$", description="The segment's name, written into the segment field (no `:`).",
                      examples=["champions"])
    r: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="Recency scores (1-5, a list or a range "
                         "like \"4-5\"); any when left out.", examples=[[4, 5], "4-5"])
    f: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="Frequency scores.", examples=[[4, 5]])
    m: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="Monetary scores.", examples=[[1, 2, 3, 4, 5]])

    @field_validator("r", "f", "m", mode="before")
    @classmethod
    def _set(cls, v: Any) -> Any:
        return _scores(v)


# the first pattern that matches names the segment; together they cover all 125 scores
DEFAULT_RFM_SEGMENTS: list[dict[str, Any]] = [
    {"name": "champions", "r": "4-5", "f": "4-5"},
    {"name": "can't lose", "r": "1-2", "f": "4-5", "m": "4-5"},
    {"name": "loyal", "r": "3-5", "f": "3-5"},
    {"name": "at risk", "r": "1-2", "f": "3-5"},
    {"name": "new", "r": "4-5", "f": "1-2"},
    {"name": "hibernating", "r": "2-3", "f": "1-2"},
    {"name": "lost", "r": "1", "f": "1-2"},
]


class RfmThresholds(Model):
    recency_days: list[int] | None = Field(None, min_length=4, max_length=4, description="Four ascending day counts: a last "
                                           "purchase at most this many days ago scores 5, 4, 3, 2; older scores 1.",
                                           examples=[[30, 60, 120, 240]])
    frequency: list[float] | None = Field(None, min_length=4, max_length=4, description="Four ascending purchase counts in the "
                                          "window: at least the first scores 2, the second 3, the third 4, the fourth 5.",
                                          examples=[[2, 3, 6, 12]])
    monetary: list[float] | None = Field(None, min_length=4, max_length=4, description="Four ascending sums in the base currency, "
                                         "read like frequency.", examples=[[5000, 20000, 50000, 100000]])

    @model_validator(mode="after")
    def _ascending(self) -> "RfmThresholds":
        for name in ("recency_days", "frequency", "monetary"):
            v = getattr(self, name)
            if v is not None and list(v) != sorted(v):
                raise ValueError(f"{name} must be ascending")
        return self


class RfmFields(Model):
    score: str | None = Field(None, description="CRM field (a string) that gets the score, e.g. R4F5M3.",
                              examples=["UF_CRM_RFM_SCORE"])
    segment: str | None = Field(None, description="CRM field (a string) that gets the segment's name.",
                                examples=["UF_CRM_RFM_SEGMENT"])

    @model_validator(mode="after")
    def _one(self) -> "RfmFields":
        if not self.score and not self.segment:
            raise ValueError("set score, segment or both")
        return self


class RfmRule(RuleBase):
    type: Literal["rfm"] = Field(description="Recency, frequency and monetary value of every client's purchases: "
                                 "a score and a segment written to CRM fields.", examples=["rfm"])
    clients: Literal["companies", "contacts"] = Field("companies", description="Which CRM clients the rule looks at.",
                                                      examples=["companies"])
    fields: RfmFields = Field(description="Where the score and the segment are written (list the fields in the CRM as strings).",
                              examples=[{"score": "UF_CRM_RFM_SCORE", "segment": "UF_CRM_RFM_SEGMENT"}])
    window_days: int = Field(365, ge=1, description="Frequency and monetary value count purchases of this many last days.",
                             examples=[365])
    currency: str = Field("UAH", description="The base currency of monetary value; purchases in it (or with none) count as they are.",
                          examples=["UAH"])
    rates: dict[str, float] = Field(default_factory=dict, description="Other currencies in the base currency (one unit = rate); "
                                    "a purchase in a currency without a rate counts for recency and frequency only.",
                                    examples=[{"USD": 41.5, "EUR": 45.0}])
    thresholds: RfmThresholds | None = Field(None, description="Fixed cut points per score; a score without them is a quintile "
                                             "of the clients in scope.", examples=[{"recency_days": [30, 60, 120, 240]}])
    segments: list[RfmSegment] = Field(default_factory=lambda: [RfmSegment(**s) for s in DEFAULT_RFM_SEGMENTS],
                                       description="Segments by score pattern, in order: the first that matches names the client.",
                                       examples=[DEFAULT_RFM_SEGMENTS[:2]])
    other_segment: str = Field("other", pattern=r"^[^:\n]+$", description="The segment of a score no pattern matches.",
                               examples=["other"])
    no_purchase_segment: str | None = Field("prospects", pattern=r"^[^:\n]+$", description="The segment of a client who never "
                                            "bought (its score is left empty); null leaves such clients' fields alone.",
                                            examples=["prospects"])

    @model_validator(mode="after")
    def _own_fields(self) -> "RfmRule":
        if self.on_clear.field:
            raise ValueError("on_clear.field would undo the rule's own writes: leave it out of an rfm rule")
        if self.where is not None and self.where.rfm is not None:
            raise ValueError("where.rfm selects by this rule's own segments: an rfm rule cannot use it")
        return self


class ConsumableMatch(Model):
    guid: list[str] = Field(default_factory=list, description="1C Номенклатура Ref_Keys (or Bitrix24 catalog product ids).",
                            examples=[["6f2d0b4e-51c3-11ee-9d3a-00155d012a01"]])
    article: list[str] = Field(default_factory=list, description="Articles (1C Артикул), compared ignoring case.",
                               examples=[["W-19"]])
    name: list[str] = Field(default_factory=list, description="Product names, compared whole and ignoring case.",
                            examples=[["Water 19 l"]])
    name_contains: list[str] = Field(default_factory=list, description="Parts of product names, ignoring case.",
                                     examples=[["water"]])
    group: list[str] = Field(default_factory=list, description="Product groups (1C: the parent folder's name), ignoring case.",
                             examples=[["Filters"]])

    @model_validator(mode="after")
    def _some(self) -> "ConsumableMatch":
        if not (self.guid or self.article or self.name or self.name_contains or self.group):
            raise ValueError("name at least one of guid, article, name, name_contains or group")
        return self


class Consumable(Model):
    id: str = Field(pattern=r"^[a-z0-9_\-]+$", description="A short name for the product or group (part of the episode key).",
                    examples=["water"])
    title: str | None = Field(None, description="What people read in texts ({{ product.title }}); default: the id.",
                              examples=["Drinking water 19 l"])
    match: ConsumableMatch = Field(description="Which purchase lines are this product: by 1C GUID, article, name or group.",
                                   examples=[{"article": ["W-19"], "name_contains": ["water 19"]}])
    days_per_unit: float = Field(gt=0, description="Days one unit lasts a client.", examples=[3, 90])


class ReplenishRule(RuleBase):
    type: Literal["replenish"] = Field(description="A consumable a client bought is about to run out: remind before it does.",
                                       examples=["replenish"])
    clients: Literal["companies", "contacts"] = Field("companies", description="Which CRM clients the rule looks at.",
                                                      examples=["contacts"])
    products: list[Consumable] = Field(min_length=1, description="Consumables and how long a unit lasts.",
                                       examples=[[{"id": "water", "match": {"group": ["Water"]}, "days_per_unit": 3}]])
    remind_days_before: int = Field(2, ge=0, description="Remind this many days before the expected run-out date.", examples=[2])
    expire_days: int = Field(14, ge=0, description="Stop reminding this many days after the run-out date without a new purchase.",
                             examples=[14])
    lookback_days: int = Field(365, ge=1, description="Only purchases of this many last days are read.", examples=[365])


class InvoiceSpec(Model):
    title: str = Field("{{ deal.title }}: {{ period.label }}", description="Invoice title (a template).",
                       examples=["Subscription {{ deal.title }}, {{ period.label }}"])
    comment: str | None = Field(None, description="Invoice comment (a template); the connector's marker is added to it.",
                                examples=["Issued automatically for {{ period.label }}."])
    payment_days: int = Field(10, ge=0, description="Days to pay: the invoice's due date after its issue date.", examples=[10])
    stage: str | None = Field(None, description="Stage of the new invoice (default: the funnel's first).", examples=["DT31_1:S"])
    products: bool = Field(True, description="Copy the deal's product rows into the invoice.", examples=[True])


class RecurringRule(RuleBase):
    type: Literal["recurring"] = Field(description="Deals marked regular get an invoice every period.", examples=["recurring"])
    period_field: str = Field(description="Deal field holding the period: monthly, quarterly, yearly, weekly, \"N days\" or "
                              "\"N months\" (list the field in the CRM).", examples=["UF_CRM_RECURRING"])
    start_field: str | None = Field(None, description="Deal date field the schedule counts from (default: the deal's close date, "
                                    "else its creation).", examples=["UF_CRM_RECURRING_START"])
    periods: dict[str, str] = Field(default_factory=dict, description="Values of a list field mapped to periods.",
                                    examples=[{"45": "monthly", "46": "quarterly"}])
    invoice: InvoiceSpec = Field(default_factory=InvoiceSpec, description="What the invoice says.",
                                 examples=[{"title": "{{ deal.title }}: {{ period.label }}", "payment_days": 10}])
    previous_unpaid: Literal["task", "invoice", "skip"] = Field(
        "task", description="When the previous invoice the connector issued is still unpaid: a task for the manager instead of "
        "the next invoice, the invoice anyway, or nothing.", examples=["task"])
    unpaid_task: TaskSpec = Field(
        default_factory=lambda: TaskSpec(title="Previous invoice unpaid: {{ deal.title }}", deadline="1 workdays"),
        description="The task made instead of a second invoice.",
        examples=[{"title": "Previous invoice unpaid: {{ deal.title }}", "deadline": "1 workdays"}])
    max_catch_up: int = Field(3, ge=0, description="After a pause, periods missed since the last invoice the connector issued "
                              "are issued too, at most this many.", examples=[3])


class InvoiceSyncRule(RuleBase):
    type: Literal["invoice_sync"] = Field(description="A 1C payment closes the matching Bitrix24 invoice (its paid stage) "
                                          "and, optionally, the deal whose invoices are all paid.", examples=["invoice_sync"])
    match: list[Literal["number", "basis", "amount"]] = Field(
        ["number", "basis", "amount"], min_length=1, description="How a Bitrix24 invoice finds its 1C counterpart, in order: "
        "number (the 1C invoice or order number kept in number_field), basis (the 1C document GUID kept in basis_field, "
        "paid by payments based on it), amount (a payment of the same client for the same amount within amount_window_days). "
        "The first method that finds a counterpart decides.", examples=[["number", "amount"]])
    number_field: str = Field("accountNumber", description="Invoice field holding the 1C document number (crm.item name: "
                              "accountNumber, or a custom field such as ufCrm_SmartInvoice_1712345678).",
                              examples=["accountNumber"])
    basis_field: str = Field("xmlId", description="Invoice field holding the GUID of the 1C document it was made from "
                             "(xmlId, the external code the 1C exchange fills).", examples=["xmlId"])
    amount_window_days: int = Field(30, ge=0, description="amount: a payment dated this many days after the invoice at most.",
                                    examples=[30])
    tolerance: float = Field(0.01, ge=0, description="Amounts within this much are equal (kopecks of rounding).",
                             examples=[0.01])
    paid_stage: str | None = Field(None, description="Stage to move a paid invoice to; default: the success stage of its "
                                   "own funnel.", examples=["DT31_1:P"])
    deal_stage: str | dict[int, str] | None = Field(None, description="Move the invoice's deal to this stage once all its "
                                                    "invoices are paid: a stage id (C<funnel>:… for other funnels) or a stage "
                                                    "per funnel id.", examples=["WON", {0: "WON", 3: "C3:WON"}])


class OrderStatusRule(RuleBase):
    type: Literal["order_status"] = Field(description="A message to the client when a 1C order or shipment, or a Bitrix24 "
                                          "deal, reaches a state: once per document and state.", examples=["order_status"])
    document: Literal["order", "sale", "deal"] = Field("order", description="What is followed: 1C customer orders, 1C "
                                                       "shipments, or Bitrix24 deals.", examples=["order"])
    states: list[str] = Field(min_length=1, description="order: created, paid, shipped, or values of the order's 1C status "
                              "(onec.fields order.status); sale: shipped; deal: stage ids.",
                              examples=[["shipped"], ["КОтгрузке", "shipped"], ["WON", "C1:EXECUTING"]])
    within_days: int = Field(3, ge=0, description="Only states reached this many days back at most (the shipment's or the "
                                                  "completing payment's date; the order's date for created and 1C statuses; "
                                                  "the deal's last change for deals), so old history is never messaged.",
                             examples=[3])

    @model_validator(mode="after")
    def _states(self) -> "OrderStatusRule":
        if self.document == "sale" and any(s != "shipped" for s in self.states):
            raise Problems([(("states",), "a shipment has one state: shipped")])
        return self


class CreateMissingRule(RuleBase):
    """Not written by people: ``onec.create_missing: true`` adds it, so its actions go through the
    planner, the journal and the safety brake like every rule's."""

    type: Literal["create_missing"] = Field(description="Create Bitrix24 companies for unmatched 1C counterparties.",
                                            examples=["create_missing"])


CREATE_MISSING = "create_missing"  # the built-in rule's name (reserved)


Rule = Annotated[
    ForgottenRule | ReleaseRule | LostRule | UnpaidRule | DebtorsRule | MissedCallRule | GreetingsRule | RfmRule
    | ReplenishRule | RecurringRule | InvoiceSyncRule | OrderStatusRule,
    Field(discriminator="type"),
]


_RULE_TYPES = {t for m in get_args(get_args(Rule)[0]) for t in get_args(m.model_fields["type"].annotation)}


def _rule_references(rules: list[tuple[Any, Any, Any]]) -> list[tuple[tuple, str]]:
    """Duplicate rule names and release rules' ``after`` references, from each rule's (name, type, after).

    Run on the validated rules and, when other problems stop validation, on the raw ones, so these
    are reported with everything else at once."""
    problems: list[tuple[tuple, str]] = []
    first: dict[str, int] = {}
    for i, (name, _, _) in enumerate(rules):
        if isinstance(name, str) and name in first:
            problems.append((("rules", i, "name"), f"rule name {_show(name)} is already used by rules[{first[name]}]"))
        if isinstance(name, str):
            first.setdefault(name, i)
    forgotten = [name for name, kind, _ in rules if kind == "forgotten" and isinstance(name, str)]
    for i, (_, kind, after) in enumerate(rules):
        if kind == "release" and isinstance(after, str) and after not in forgotten:
            target = next((k for n, k, _ in rules if n == after), None)
            if target is not None and target not in _RULE_TYPES:
                continue  # that rule's own unknown type is the problem to report
            why = f"is a {target} rule" if target is not None else "names no rule"
            hint = difflib.get_close_matches(after, forgotten, n=1, cutoff=0.6)
            problems.append((("rules", i, "after"), f"{_show(after)} {why}; after must name a forgotten rule"
                             + (f"; did you mean `{hint[0]}`?" if hint else f" (forgotten rules: {', '.join(forgotten) or 'none'})")))
    return problems


class ReportSchedule(Model):
    cron: str = Field(description="When the report goes out: a 5-field cron expression in the company's time zone.",
                      examples=["0 9 * * mon"])

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return Schedule._cron(v) or v


class ReportSpec(Model):
    name: str = Field("control", pattern=r"^[a-z0-9_\-]+$", description="The report's name; part of its deliveries' keys.",
                      examples=["weekly"])
    schedule: ReportSchedule = Field(description="When it is sent.", examples=[{"cron": "0 9 * * mon"}])
    period: Literal["week", "month", "7d"] = Field("week", description="What it covers: the last full week (Mon-Sun), "
                                                   "the last full month, or the 7 days before it is sent.", examples=["week"])
    to: list[PersonRef] = Field(default_factory=lambda: ["supervisor"], description="Who receives it: supervisor or user ids.",
                                examples=[["supervisor", 7]])
    via: list[Literal["email", "bitrix24"]] = Field(default_factory=lambda: ["email"], min_length=1, description="email (HTML "
                                                    "with the charts inline, messaging.email), bitrix24 (a notification with the "
                                                    "summary and the HTML file on the person's Bitrix24 Drive).",
                                                    examples=[["email", "bitrix24"]])

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, v: Any) -> Any:
        return _person_list(v)


def _rfm_references(rules: list[Any]) -> list[tuple[tuple, str]]:
    """``where.rfm`` reads the segments of the config's one rfm rule, and names only segments it has."""
    rfm = [r for r in rules if isinstance(r, RfmRule)]
    problems: list[tuple[tuple, str]] = []
    for i, r in enumerate(rules):
        wanted = r.where.rfm if r.where is not None else None
        if wanted is None:
            continue
        if len(rfm) != 1:
            problems.append((("rules", i, "where", "rfm"), f"where.rfm needs exactly one rfm rule in the config, found {len(rfm)}"))
            continue
        known = [s.name for s in rfm[0].segments] + [rfm[0].other_segment] + ([rfm[0].no_purchase_segment] if rfm[0].no_purchase_segment else [])
        for j, name in enumerate(wanted):
            if name not in known:
                problems.append((("rules", i, "where", "rfm", j), f"{_show(name)} is not a segment of rule {_show(rfm[0].name)}"
                                 f"{_did_you_mean(name, known)} (segments: {', '.join(known)})"))
    return problems


class Settings(Model):
    language: Literal["uk", "ru", "en"] = Field("uk", description="Language of every built-in text people read: reasons, default "
                                                "task and notification texts, messages, command output, reports.",
                                                examples=["uk"])
    timezone: str = Field("Europe/Kyiv", description="The company's time zone (IANA name).", examples=["Europe/Kyiv"])
    store: str = Field("sqlite:///connector.db", description="Where the connector keeps its data: an SQLAlchemy URL "
                       "(SQLite file, or PostgreSQL with the postgres extra).",
                       examples=["sqlite:///connector.db", "postgresql+psycopg://connector:${PG_PASSWORD}@db/connector"])
    calendar: Calendar = Field(default_factory=Calendar, description="Working days and hours, for deadlines and quiet days.",
                               examples=[{"country": "UA", "workdays": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-18:00"}])
    phone_region: str = Field("UA", description="Region for phone numbers written without a country code.", examples=["UA"])
    bitrix24: Bitrix24 | None = Field(None, description="The Bitrix24 portal (CRM).",
                                      examples=[{"webhook_url": "${BITRIX24_WEBHOOK_URL}", "fields": ["UF_CRM_TEMPERATURE"]}])
    onec: OneC | None = Field(None, description="The 1C:Enterprise / BAS base (orders, invoices, payments, receivables).",
                              examples=[{"odata": {"url": "${ONEC_ODATA_URL}", "user": "${ONEC_USER}",
                                                   "password": "${ONEC_PASSWORD}"}, "preset": "ut11"}])
    binotel: Binotel | None = Field(None, description="The Binotel cloud PBX (calls).",
                                    examples=[{"key": "${BINOTEL_KEY}", "secret": "${BINOTEL_SECRET}"}])
    messaging: Messaging | None = Field(None, description="How messages to clients are sent, and when they may be.",
                                        examples=[{"sms": {"provider": "turbosms", "token": "${TURBOSMS_TOKEN}",
                                                           "sender": "MyShop"}, "quiet_hours": "21:00-09:00"}])
    people: People = Field(default_factory=People, description="People that actions name by role.",
                           examples=[{"supervisor": 1, "duty_manager": 2}])
    safety: Safety = Field(default_factory=Safety, description="Brakes against acting on too many clients at once.",
                           examples=[{"max_actions_per_run": 500, "max_share": 0.25}])
    schedule: Schedule = Field(default_factory=Schedule, description="When the daemon runs a cycle.",
                               examples=[{"every_minutes": 15}, {"cron": "*/10 8-20 * * mon-fri"}])
    metrics: Metrics | None = Field(None, description="The daemon's Prometheus metrics and /healthz endpoint (off when absent).",
                                    examples=[{"listen": "127.0.0.1:9108"}])
    lease_seconds: float = Field(60, gt=0, description="The store lease (one runner per store) expires this long after its "
                                 "holder's last heartbeat; another process may then take over.", examples=[60])
    reports: list[ReportSpec] = Field(default_factory=list, description="Control reports the daemon sends on a schedule, "
                                      "each exactly once per period.",
                                      examples=[[{"schedule": {"cron": "0 9 * * mon"}, "period": "week", "to": ["supervisor"],
                                                  "via": ["email", "bitrix24"]}]])
    rules: list[Rule] = Field(default_factory=list, description="The follow-up rules.",
                              examples=[[{"name": "forgotten", "type": "forgotten", "inactive_days": 60,
                                          "actions": [{"task": {"title": "No contact: {{ client.title }}"}}]}]])

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
        problems = _rule_references([(r.name, r.type, getattr(r, "after", None)) for r in self.rules])
        problems += _rfm_references(self.rules)
        if not (self.bitrix24 or self.onec) and self.rules:
            problems.append((("rules",), "configure bitrix24 or onec: rules need a CRM to read clients from"))
        problems += self._sync_problems()
        if problems:
            raise Problems(problems)
        if self.bitrix24 is not None:  # fields the rules read are pulled without being listed twice
            self.bitrix24._read_by_rules = [n for n in self.fields_read() if n not in self.bitrix24.fields]
            self.bitrix24._deal_fields = self.deal_fields_read()
            self.bitrix24._invoice_fields = self.invoice_fields_read()
            self.bitrix24._product_rows = any(isinstance(r, (ReplenishRule, RecurringRule)) for r in self.rules)
        if self.onec is not None:
            self.onec._product_lines = any(isinstance(r, ReplenishRule) for r in self.rules)
        return self

    def _sync_problems(self) -> list[tuple[tuple, str]]:
        """What the 1C <-> Bitrix24 sync features need besides their own keys."""
        problems: list[tuple[tuple, str]] = []
        for i, r in enumerate(self.rules):
            if isinstance(r, InvoiceSyncRule) and not (self.bitrix24 and self.onec):
                problems.append((("rules", i, "type"), "invoice_sync needs both bitrix24 and onec"))
            if isinstance(r, OrderStatusRule) and r.document == "deal" and not self.bitrix24:
                problems.append((("rules", i, "document"), "deal states need bitrix24"))
            if isinstance(r, OrderStatusRule) and r.document != "deal" and not self.onec:
                problems.append((("rules", i, "document"), f"{r.document} states need onec"))
            if r.name == CREATE_MISSING and self.onec is not None and self.onec.create_missing:
                problems.append((("rules", i, "name"), f"`{CREATE_MISSING}` is the name of onec.create_missing; rename this rule"))
        if self.onec is not None and self.onec.create_missing:
            if self.bitrix24 is None or not self.bitrix24.guid_field:
                problems.append((("onec", "create_missing"), "create_missing needs bitrix24.guid_field: a created company "
                                                             "carries the 1C GUID there and is found by it"))
            elif "guid_field" not in self.onec.match:
                problems.append((("onec", "match"), "create_missing needs guid_field in onec.match: a created company is "
                                                    "linked by the 1C GUID it carries"))
        return problems

    def all_rules(self) -> list[Any]:
        """The configured rules and the built-in ones the config switches on (``onec.create_missing``)."""
        out: list[Any] = list(self.rules)
        if self.onec is not None and self.onec.create_missing and self.bitrix24 is not None:
            out.append(CreateMissingRule(name=CREATE_MISSING, type="create_missing"))
        return out

    def invoice_fields_read(self) -> list[str]:
        """Bitrix24 invoice fields the rules read besides the standard ones (the 1C number, the 1C GUID)."""
        names = [f for r in self.rules if isinstance(r, InvoiceSyncRule) for f in (r.number_field, r.basis_field)]
        return list(dict.fromkeys(names))

    def deal_fields_read(self) -> list[str]:
        """Custom deal fields the rules read: a regular deal's period and start."""
        names: list[str] = []
        for r in self.rules:
            if isinstance(r, RecurringRule):
                names += [n for n in (r.period_field, r.start_field) if n]
        return list(dict.fromkeys(names))

    def fields_read(self) -> list[str]:
        """Custom CRM fields the rules and channels read: cadence, where filters, opt-out."""
        names: list[str] = []
        for r in self.rules:
            if isinstance(r, LostRule) and r.cadence.field:
                names.append(r.cadence.field)
            if isinstance(r, LostRule) and r.reason_field:
                names.append(r.reason_field)
            if isinstance(r, GreetingsRule):
                names.extend([r.field] if r.field else [])
                names.extend(n for _, ch in r.all_channels() if ch.where is not None and ch.where.field for n in ch.where.field)
            if r.where is not None and r.where.field:
                names.extend(r.where.field)
            if isinstance(r, RfmRule):  # compared with what the rule computes: only changes are written
                names += [n for n in (r.fields.score, r.fields.segment) if n]
        for opt in (self.messaging.opt_out_field if self.messaging else None,
                    self.bitrix24.opt_out_field if self.bitrix24 else None):
            if opt:
                names.append(opt)
        return list(dict.fromkeys(names))

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
    # alternatives of a nested union (a person is ``int | str``) come one per member: one line for them
    expected: dict[tuple, list[re.Match]] = {}
    for path, msg in out:
        m = re.match(r"^expected (.+?)(, got .*)?$", msg)
        if m:
            expected.setdefault(path, []).append(m)
    merged = {path: f"expected {' or '.join(dict.fromkeys(m.group(1) for m in ms))}{ms[0].group(2) or ''}"
              for path, ms in expected.items() if len(ms) > 1}
    return list(dict.fromkeys((path, merged.get(path, msg)) for path, msg in out))


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
        raw = data.get("rules") if isinstance(data, dict) else None
        if isinstance(raw, list):
            found += _rule_references([(r.get("name"), r.get("type"), r.get("after")) if isinstance(r, dict) else (None, None, None)
                                       for r in raw])
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


DRAFT_07 = "http://json-schema.org/draft-07/schema#"


def json_schema() -> dict:
    """JSON Schema of the config for editors' autocompletion, in draft-07: the newest draft the YAML
    plugins of VS Code and JetBrains fully support (pydantic writes 2020-12)."""
    schema = Settings.model_json_schema(by_alias=True, ref_template="#/definitions/{model}")
    definitions = schema.pop("$defs", {})

    def draft7(node: Any) -> Any:
        if isinstance(node, list):
            return [draft7(v) for v in node]
        if not isinstance(node, dict):
            return node
        # an OpenAPI `discriminator` is no JSON Schema keyword; `oneOf` with each rule's `type` const does its job
        out = {k: draft7(v) for k, v in node.items() if not (k == "discriminator" and isinstance(v, dict) and "propertyName" in v)}
        if "$ref" in out and len(out) > 1:  # draft-07 ignores every keyword beside $ref: keep descriptions visible
            out = {**{k: v for k, v in out.items() if k != "$ref"}, "allOf": [{"$ref": out["$ref"]}]}
        return out

    return {"$schema": DRAFT_07, **draft7(schema), "title": "connector config", "definitions": draft7(definitions)}
