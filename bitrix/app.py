"""Bitrix24 application mode: the connector as the portal's local server-side application.

An incoming webhook cannot register robots, application triggers, event handlers, external calls or
an SMS provider (reference §7); a local application can. The admin adds a local application with
"Application uses API only", gives it the scopes of :data:`SCOPES`, enters the URLs that
``connector app install-info`` prints, and saves: the portal POSTs ``ONAPPINSTALL`` with the first
OAuth tokens to the install URL (:mod:`bitrix.app_handlers`), which checks them with the OAuth server
(only a genuine portal holds a refresh token for this ``client_id``), keeps them in the store's kv
(encrypted with ``CONNECTOR_SECRET_KEY``; rotated on every refresh by :class:`bitrix.client.BitrixClient`
as in OAuth mode), and registers what this module defines:

* robots (:data:`ROBOT_CODES`), answering through ``bizproc.event.send`` once per ``event_token``;
* triggers (:data:`TRIGGERS`), which the rules' ``trigger: CODE`` fires with ``crm.automation.trigger.execute``;
* event handlers for companies, contacts, deals, activities and smart invoices (online, or offline
  for ``event.offline.get``), plus ``ONAPPUNINSTALL``;
* the SMS provider (``messageservice.sender.add``).

Registration is idempotent (it lists what exists first) and runs again on every start. What the
application puts on the card follows from synced data (:func:`own_actions`): every PBX call
(``telephony:<generalCallID>``) and the statuses of messages it sent as the portal's SMS provider.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bitrix import mapping as m
from bitrix.client import ACCESS_TOKEN_KV, APP_ENDPOINT_KV, REFRESH_TOKEN_KV, SYSTEM, BitrixClient
from bitrix.source import ENTITY_EVENTS, REGISTERED_KV
from connector import i18n
from connector.errors import AuthError, TransientError
from connector.i18n import _
from connector.ports import Context, PlannedAction
from connector.redact import add_secret

if TYPE_CHECKING:
    from connector.config import Bitrix24App, Settings

# Scopes the application needs, and what each is for.
SCOPES = {
    "crm": "companies, contacts, deals, activities, invoices, comments, triggers",
    "task": "tasks",
    "user": "managers",
    "department": "department names",
    "im": "notifications",
    "bizproc": "robots and workflows",
    "telephony": "calls on the client card",
    "messageservice": "the SMS provider",
}

INSTALL_PATH = "/bitrix24/install"
APP_PATH = "/bitrix24/app"
EVENT_PATH = "/bitrix24/event"
ROBOT_PATH = "/bitrix24/robot"  # + /<code>
SMS_PATH = "/bitrix24/sms"
RECORD_PATH = "/bitrix24/record"  # + /<call id>/<signature>

KV = "bitrix24.app."
MEMBER_KV = KV + "member_id"
TOKEN_KV = KV + "application_token"
ENDPOINT_KV = APP_ENDPOINT_KV
USER_KV = KV + "user_id"
INSTALLED_KV = KV + "installed_at"

SENDER_CODE = "connector_sms"
ROBOT_RULE = "robot"  # journal rule of robot answers: robot:<code>:<token hash>
SMS_RULE = "sms-provider"  # journal rule of messages sent as the portal's provider
CALL_RULE = "telephony"

# The document a robot runs on (``document_id[2]`` = ``DEAL_5``) -> record kind.
DOCUMENT_KINDS = {"COMPANY": "company", "CONTACT": "contact", "DEAL": "deal", "SMART_INVOICE": "invoice", "LEAD": "lead"}


def _trigger_names() -> dict[str, str]:
    return {
        "client_forgotten": _("Client forgotten"),
        "client_lost": _("Client lost"),
        "invoice_overdue": _("Invoice overdue"),
        "debt_overdue": _("Debt overdue"),
        "missed_call": _("Missed call"),
    }


TRIGGERS = tuple(_trigger_names())
ROBOT_CODES = ("connector_mark_state", "connector_send_sms", "connector_pick_manager")


def _robots() -> dict[str, dict[str, Any]]:
    """NAME, PROPERTIES and RETURN_PROPERTIES of each robot in the current language."""
    return {
        "connector_mark_state": {
            "NAME": _("Connector: mark client state"),
            "DESCRIPTION": _("Writes a state into the client's state field, where the connector's rules read it."),
            "PROPERTIES": {"state": {"Name": _("State"), "Type": "string", "Required": "Y", "Multiple": "N"}},
            "RETURN_PROPERTIES": {"client": {"Name": _("Client"), "Type": "string", "Multiple": "N"}},
        },
        "connector_send_sms": {
            "NAME": _("Connector: send SMS via the connector's gateway"),
            "DESCRIPTION": _("Sends an SMS to the client through the connector's gateway, respecting quiet hours and "
                             "the client's opt-out."),
            "PROPERTIES": {
                "text": {"Name": _("Text"), "Type": "text", "Required": "Y", "Multiple": "N"},
                "phone": {"Name": _("Phone (empty: the client's mobile)"), "Type": "string", "Required": "N", "Multiple": "N"},
                "marketing": {"Name": _("Marketing message"), "Type": "bool", "Required": "N", "Multiple": "N", "Default": "N"},
            },
            "RETURN_PROPERTIES": {
                "status": {"Name": _("Status"), "Type": "string", "Multiple": "N"},
                "send_at": {"Name": _("Sent at"), "Type": "datetime", "Multiple": "N"},
            },
        },
        "connector_pick_manager": {
            "NAME": _("Connector: pick the next manager"),
            "DESCRIPTION": _("Picks an active manager from the release pool by its strategy."),
            "PROPERTIES": {"rule": {"Name": _("Release rule (empty: the first)"), "Type": "string", "Required": "N",
                                    "Multiple": "N"}},
            "RETURN_PROPERTIES": {
                "manager": {"Name": _("Manager"), "Type": "user", "Multiple": "N"},
                "manager_id": {"Name": _("Manager id"), "Type": "int", "Multiple": "N"},
            },
        },
    }


# Bitrix24's language ids for the names of robots (Ukrainian is "ua" there).
PORTAL_LANGUAGES = {"ua": "uk", "ru": "ru", "en": "en"}


def localized(build: Callable[[], Any]) -> dict[str, Any]:
    """``build()`` evaluated in every language the portal shows: ``{"ua": ..., "ru": ..., "en": ...}``."""
    before = i18n.current()
    try:
        out = {}
        for portal_lang, lang in PORTAL_LANGUAGES.items():
            i18n.use(lang)
            out[portal_lang] = build()
        return out
    finally:
        i18n.use(before)


# ---------------------------------------------------------------- state kept in the store


@dataclass
class AppState:
    """What the installation left in the store's kv (secrets sealed there when a key is set)."""

    member_id: str | None = None
    application_token: str | None = None
    endpoint: str | None = None
    user_id: int | None = None
    installed_at: datetime | None = None
    registered: dict[str, Any] = field(default_factory=dict)

    @property
    def installed(self) -> bool:
        return bool(self.application_token and self.endpoint and self.member_id)

    @classmethod
    def load(cls, ctx: Context) -> "AppState":
        get = ctx.kv_get or (lambda _name: None)
        token = get(TOKEN_KV)
        add_secret(token)
        at = get(INSTALLED_KV)
        reg = get(REGISTERED_KV)
        try:
            registered = json.loads(reg) if reg else {}
        except ValueError:
            registered = {}
        uid = get(USER_KV)
        return cls(member_id=get(MEMBER_KV) or None, application_token=token or None, endpoint=get(ENDPOINT_KV) or None,
                   user_id=int(uid) if uid and str(uid).isdigit() else None,
                   installed_at=datetime.fromisoformat(at) if at else None, registered=registered if isinstance(registered, dict) else {})


def save_install(ctx: Context, *, member_id: str, application_token: str, endpoint: str, access: str, refresh: str,
                 user_id: int | None, now: datetime) -> None:
    """Keep the installation: the tokens go where the OAuth layer reads and rotates them."""
    assert ctx.kv_set is not None
    for secret in (application_token, access, refresh):
        add_secret(secret)
    ctx.kv_set(REFRESH_TOKEN_KV, refresh)
    ctx.kv_set(ACCESS_TOKEN_KV, access)
    ctx.kv_set(TOKEN_KV, application_token)
    ctx.kv_set(MEMBER_KV, member_id)
    ctx.kv_set(ENDPOINT_KV, endpoint)
    ctx.kv_set(USER_KV, str(user_id or ""))
    ctx.kv_set(INSTALLED_KV, now.astimezone(UTC).isoformat())
    ctx.kv_set(REGISTERED_KV, "{}")


PENDING_KV = KV + "pending"
MAX_PENDING = 5


def keep_pending(ctx: Context, *, refresh: str, member_id: str, application_token: str, now: datetime) -> None:
    """An install whose tokens this config could not prove: the portal calls the install path the
    moment the application is saved, which is also when it first shows client_id and client_secret.
    The tokens wait here (sealed like the others) until the config names the application, then
    :func:`promote_pending` proves them with the OAuth server or drops them."""
    assert ctx.kv_get is not None and ctx.kv_set is not None
    for secret in (refresh, application_token):
        add_secret(secret)
    try:
        pending = json.loads(ctx.kv_get(PENDING_KV) or "[]")
    except ValueError:
        pending = []
    pending = [p for p in pending if isinstance(p, dict) and p.get("refresh") != refresh][-(MAX_PENDING - 1):]
    pending.append({"refresh": refresh, "member_id": member_id, "application_token": application_token,
                    "at": now.astimezone(UTC).isoformat()})
    ctx.kv_set(PENDING_KV, json.dumps(pending))


def promote_pending(settings: "Settings", ctx: Context, now: datetime) -> str | None:
    """Prove a waiting install with the configured client_id/client_secret; the newest that passes
    becomes the installation. Returns the portal's address, or None."""
    app = settings.bitrix24.app  # type: ignore[union-attr]
    assert ctx.kv_get is not None and ctx.kv_set is not None
    try:
        pending = json.loads(ctx.kv_get(PENDING_KV) or "[]")
    except ValueError:
        pending = []
    keep: list[dict] = []
    promoted: str | None = None
    for p in reversed([p for p in pending if isinstance(p, dict)]):
        if promoted is not None:
            continue
        try:
            proof = exchange(app, str(p.get("refresh") or ""))
        except AuthError as e:
            if (e.code or "").lower() == "invalid_client":
                keep.append(p)  # the config still does not name this application: wait
            continue  # anything else: the tokens are not genuine or are spent; drop them
        if str(proof.get("member_id") or "") != str(p.get("member_id") or "") or not proof.get("client_endpoint"):
            continue
        save_install(ctx, member_id=str(p["member_id"]), application_token=str(p["application_token"]),
                     endpoint=str(proof["client_endpoint"]), access=str(proof["access_token"]),
                     refresh=str(proof.get("refresh_token") or p["refresh"]), user_id=m.to_int(proof.get("user_id")), now=now)
        promoted = str(proof["client_endpoint"])
    ctx.kv_set(PENDING_KV, json.dumps([] if promoted else list(reversed(keep))))
    return promoted


def forget_install(ctx: Context) -> None:
    """The portal uninstalled the application: its tokens are revoked there, so drop them here."""
    assert ctx.kv_set is not None
    for name in (REFRESH_TOKEN_KV, ACCESS_TOKEN_KV, TOKEN_KV, MEMBER_KV, ENDPOINT_KV, USER_KV, INSTALLED_KV):
        ctx.kv_set(name, "")
    ctx.kv_set(REGISTERED_KV, "{}")


def exchange(app: "Bitrix24App", refresh_token: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """``grant_type=refresh_token`` at the OAuth server: proves the token was issued to this
    ``client_id`` (a forged install cannot pass) and returns the rotated pair with the portal's
    ``member_id`` and ``client_endpoint``."""
    import requests

    params = {"grant_type": "refresh_token", "client_id": app.client_id, "client_secret": app.client_secret,
              "refresh_token": refresh_token}
    try:
        r = requests.get(app.token_url, params=params, timeout=timeout, allow_redirects=False)
    except requests.RequestException as e:
        raise TransientError(f"token check failed ({type(e).__name__})", system=SYSTEM, obj="oauth.token") from None
    try:
        data = r.json()
    except ValueError:
        data = {}
    if r.status_code >= 400 or not isinstance(data, dict) or data.get("error") or not data.get("access_token"):
        code = str(data.get("error") or "") if isinstance(data, dict) else ""
        raise AuthError(str((data or {}).get("error_description") or code or f"HTTP {r.status_code}"), system=SYSTEM,
                        obj="oauth.token", code=code or None, status=r.status_code)
    for k in ("access_token", "refresh_token"):
        add_secret(str(data.get(k) or ""))
    return data


# ---------------------------------------------------------------- registration


def handler_urls(app: "Bitrix24App") -> dict[str, str]:
    base = app.public_url.rstrip("/")
    return {"install": base + INSTALL_PATH, "app": base + APP_PATH, "event": base + EVENT_PATH,
            "robot": base + ROBOT_PATH, "sms": base + SMS_PATH, "record": base + RECORD_PATH}


def wanted_events(app: "Bitrix24App") -> list[str]:
    return list(ENTITY_EVENTS) if app.events != "none" else []


def register(settings: "Settings", ctx: Context, client: BitrixClient | None = None) -> list[str]:
    """Robots, triggers, event handlers and the SMS provider, each only if missing (robots are
    updated in place so a moved endpoint follows): two requests. Returns lines for people."""
    cfg = settings.bitrix24
    assert cfg is not None and cfg.app is not None
    app = cfg.app
    state = AppState.load(ctx)
    if not state.installed:
        return [_("The application is not installed yet: nothing was registered.")]
    urls = handler_urls(app)
    own = client is None
    client = client or BitrixClient(cfg, ctx)
    try:
        have = client.batch({"robots": ("bizproc.robot.list", {}), "events": ("event.get", {}),
                             "senders": ("messageservice.sender.list", {})})
        have.raise_first()
        robots_have = {str(x) for x in (have.results.get("robots") or [])}
        bound = {(str(b.get("event", "")).upper(), str(b.get("handler") or ""), int(b.get("offline") or 0))
                 for b in have.results.get("events") or [] if isinstance(b, Mapping)}
        senders_have = {str(x) for x in (have.results.get("senders") or [])}
        defs = localized(_robots)
        cmds: dict[str, tuple[str, dict]] = {}
        for code in ROBOT_CODES:
            fields = {"HANDLER": f"{urls['robot']}/{code}", "AUTH_USER_ID": state.user_id or 1, "USE_SUBSCRIPTION": "Y",
                      "NAME": {lang: d[code]["NAME"] for lang, d in defs.items()},
                      "DESCRIPTION": {lang: d[code]["DESCRIPTION"] for lang, d in defs.items()},
                      "PROPERTIES": _localized_props(defs, code, "PROPERTIES"),
                      "RETURN_PROPERTIES": _localized_props(defs, code, "RETURN_PROPERTIES")}
            if code in robots_have:
                cmds[f"robot_{code}"] = ("bizproc.robot.update", {"CODE": code, "FIELDS": fields})
            else:
                cmds[f"robot_{code}"] = ("bizproc.robot.add", {"CODE": code, **fields})
        for code, name in _trigger_names().items():  # add updates the name of an existing code
            cmds[f"trigger_{code}"] = ("crm.automation.trigger.add", {"CODE": code, "NAME": name})
        offline = app.events == "offline"
        for event in wanted_events(app):
            handler = "" if offline else urls["event"]
            if (event, handler, int(offline)) not in bound:
                params = {"event": event, "event_type": "offline"} if offline else {"event": event, "handler": handler}
                cmds[f"event_{event}"] = ("event.bind", params)
        if ("ONAPPUNINSTALL", urls["event"], 0) not in bound:
            cmds["event_ONAPPUNINSTALL"] = ("event.bind", {"event": "ONAPPUNINSTALL", "handler": urls["event"]})
        sms_ok = settings.messaging is not None and settings.messaging.sms is not None and settings.messaging.sms.provider != "bitrix24"
        lines: list[str] = []
        if app.sms_sender and sms_ok and SENDER_CODE not in senders_have:
            cmds["sender"] = ("messageservice.sender.add", {
                "CODE": SENDER_CODE, "TYPE": "SMS", "HANDLER": urls["sms"], "NAME": localized(lambda: _("Connector SMS")),
                "DESCRIPTION": localized(lambda: _("Messages go through the connector's SMS gateway."))})
        elif app.sms_sender and not sms_ok:
            lines.append(_("The SMS provider was not registered: messaging.sms must use turbosms or log."))
        done = client.write_batch(dict(list(cmds.items())[:50]))
        failed = {label: err for label, err in done.errors.items()}
        for label, err in failed.items():
            lines.append(_("Could not register {what}: {error}").format(what=label, error=err))
        registered = {"robots": [c for c in ROBOT_CODES if f"robot_{c}" not in failed],
                      "triggers": [c for c in TRIGGERS if f"trigger_{c}" not in failed],
                      "events": app.events if not any(k.startswith("event_ONCRM") for k in failed) else "none",
                      "sender": app.sms_sender and sms_ok and "sender" not in failed,
                      "at": datetime.now(UTC).isoformat(timespec="seconds")}
        assert ctx.kv_set is not None
        ctx.kv_set(REGISTERED_KV, json.dumps(registered, sort_keys=True))
        lines.append(_("Registered {robots} robot(s), {triggers} trigger(s), events: {events}.").format(
            robots=len(registered["robots"]), triggers=len(registered["triggers"]), events=registered["events"]))
        return lines
    finally:
        if own:
            client.close()


def _localized_props(defs: dict[str, dict], code: str, key: str) -> dict[str, Any]:
    """PROPERTIES with each ``Name`` in every language (the type and flags are the same in all)."""
    first = next(iter(defs.values()))[code][key]
    out: dict[str, Any] = {}
    for name, prop in first.items():
        out[name] = {**prop, "Name": {lang: d[code][key][name]["Name"] for lang, d in defs.items()}}
    return out


def unregister(settings: "Settings", ctx: Context) -> list[str]:
    """Remove robots, triggers, handlers and the SMS provider while the application still has access
    (after the portal deletes the application it has none: Bitrix24 drops them itself then)."""
    cfg = settings.bitrix24
    assert cfg is not None and cfg.app is not None
    state = AppState.load(ctx)
    if not state.installed:
        return [_("The application is not installed: nothing to remove.")]
    urls = handler_urls(cfg.app)
    with BitrixClient(cfg, ctx) as client:
        have = client.batch({"robots": ("bizproc.robot.list", {}), "senders": ("messageservice.sender.list", {}),
                             "triggers": ("crm.automation.trigger.list", {})})
        cmds: dict[str, tuple[str, dict]] = {}
        for code in have.results.get("robots") or []:
            if str(code) in ROBOT_CODES:
                cmds[f"robot_{code}"] = ("bizproc.robot.delete", {"CODE": code})
        for t in have.results.get("triggers") or []:
            if isinstance(t, Mapping) and t.get("CODE") in TRIGGERS:
                cmds[f"trigger_{t['CODE']}"] = ("crm.automation.trigger.delete", {"CODE": t["CODE"]})
        if SENDER_CODE in [str(x) for x in have.results.get("senders") or []]:
            cmds["sender"] = ("messageservice.sender.delete", {"CODE": SENDER_CODE})
        for event in [*ENTITY_EVENTS, "ONAPPUNINSTALL"]:
            cmds[f"event_{event}"] = ("event.unbind", {"event": event, "handler": urls["event"]})
            if cfg.app.events == "offline" and event != "ONAPPUNINSTALL":
                cmds[f"offline_{event}"] = ("event.unbind", {"event": event, "event_type": "offline"})
        done = client.write_batch(dict(list(cmds.items())[:50]))
    lines = [_("Could not remove {what}: {error}").format(what=k, error=e) for k, e in done.errors.items()]
    lines.append(_("Removed {n} registration(s); now delete the application in the portal.").format(n=len(cmds) - len(done.errors)))
    assert ctx.kv_set is not None
    ctx.kv_set(REGISTERED_KV, "{}")
    return lines


def install_info(settings: "Settings") -> list[tuple[str, str]]:
    cfg = settings.bitrix24
    assert cfg is not None and cfg.app is not None
    urls = handler_urls(cfg.app)
    return [
        (_("Where"), _("Applications > Developer resources > Other > Local application")),
        (_("Application uses API only"), _("yes (no user interface)")),
        (_("Your handler path"), urls["app"]),
        (_("Initial installation path"), urls["install"]),
        (_("Permissions (scopes)"), ", ".join(SCOPES)),
        (_("Then"), _("save; put the client_id and client_secret the portal then shows into bitrix24.app and restart "
                      "`connector app serve`: the installation completes (keep it, or `connector run`, running so the "
                      "portal reaches the endpoint).")),
    ]


# ---------------------------------------------------------------- the record link


def record_signature(app: "Bitrix24App", call_id: str) -> str:
    return hmac.new(app.client_secret.encode(), f"record:{call_id}".encode(), hashlib.sha256).hexdigest()[:32]


def record_link(app: "Bitrix24App", call_id: str) -> str:
    """A stable link to a call's recording, served by the endpoint (the PBX's own links expire in
    15 minutes): the portal downloads it when the record is attached."""
    return f"{app.public_url.rstrip('/')}{RECORD_PATH}/{call_id}/{record_signature(app, call_id)}.mp3"


# ---------------------------------------------------------------- actions that follow from synced data

STATUS_CODES = {"BUSY": "486", "NOANSWER": "304", "CANCEL": "603-S", "CONGESTION": "503", "CHANUNAVAIL": "480"}


def own_actions(settings: "Settings", snap: Any) -> dict[str, list[PlannedAction]]:
    cfg = settings.bitrix24
    if cfg is None or cfg.app is None:
        return {}
    store = snap.store
    state = AppState.load(Context(clock=None, kv_get=store.kv_get, kv_set=store.kv_set))
    if not state.installed:
        return {}
    out: dict[str, list[PlannedAction]] = {}
    if cfg.app.log_calls:
        out[CALL_RULE] = call_actions(settings, snap, state)
    registered = state.registered.get("sender")
    if registered or snap.journal_for(SMS_RULE):
        out[SMS_RULE] = sms_status_actions(snap)
    return out


def _bitrix_user(snap: Any, row: Any, users_by_email: dict[str, str], users_by_ext: dict[str, str],
                 client_owner: str | None) -> int | None:
    """The portal user a PBX call belongs to: the PBX employee's e-mail, extension or the call's
    internal number; else the client's manager, then the duty manager and the supervisor."""
    candidates: list[str | None] = []
    pbx = snap.managers.get(row.manager_key) if row.manager_key else None
    if pbx is not None and pbx.email:
        candidates.append(users_by_email.get(pbx.email.strip().lower()))
    ext = (row.ext or "").strip() if hasattr(row, "ext") else ""
    if ext:
        candidates.append(users_by_ext.get(ext))
    internal = (row.internal_number or "").split(">")[-1].strip()
    if internal:
        candidates.append(users_by_ext.get(internal))
    candidates.append(client_owner)
    for person in (settings_person(snap, "duty_manager"), settings_person(snap, "supervisor")):
        candidates.append(person)
    for key in candidates:
        mv = snap.managers.get(key) if key else None
        if mv is not None and mv.active and key and key.startswith(SYSTEM + ":user:"):
            return int(key.rsplit(":", 1)[-1])
    return None


def settings_person(snap: Any, role: str) -> str | None:
    value = getattr(snap.settings.people, role, None)
    if value is None:
        return None
    return m.key("user", value) if str(value).isdigit() else None


def call_actions(settings: "Settings", snap: Any, state: AppState) -> list[PlannedAction]:
    """Every final PBX call since the installation (and within ``call_lookback_hours``) on the card
    of the client holding the number: ``telephony:<generalCallID>``."""
    from connector.store import calls, client_phones, clients, managers

    app = settings.bitrix24.app  # type: ignore[union-attr]
    since = snap.now - timedelta(hours=app.call_lookback_hours)
    if state.installed_at is not None:
        since = max(since, state.installed_at)
    conn = snap.conn
    rows = conn.execute(
        select(calls.c.key, calls.c.system, calls.c.source_id, calls.c.direction, calls.c.phone, calls.c.phone_e164,
               calls.c.started_at, calls.c.talk_s, calls.c.disposition, calls.c.answered, calls.c.internal_number,
               calls.c.manager_key, managers.c.extension.label("ext"))
        .select_from(calls.outerjoin(managers, managers.c.key == calls.c.manager_key))
        .where(calls.c.started_at >= since, calls.c.started_at <= snap.now, calls.c.deleted.is_(False),
               calls.c.final.is_(True), calls.c.system != SYSTEM)
        .order_by(calls.c.started_at, calls.c.key)).all()
    if not rows:
        return []
    phones = sorted({r.phone_e164 for r in rows if r.phone_e164})
    holders: dict[str, list[tuple[str, str, str | None]]] = {}
    for i in range(0, len(phones), 500):
        q = (select(client_phones.c.phone, clients.c.key, clients.c.kind, clients.c.responsible_key)
             .join(clients, clients.c.key == client_phones.c.client_key)
             .where(client_phones.c.phone.in_(phones[i:i + 500]), clients.c.system == SYSTEM, clients.c.deleted.is_(False)))
        for phone, key, kind, owner in conn.execute(q):
            holders.setdefault(phone, []).append((key, str(kind), owner))
    users = [mv for k, mv in snap.managers.items() if k.startswith(SYSTEM + ":user:") and mv.active]
    by_email = {mv.email.strip().lower(): mv.key for mv in users if mv.email}
    by_ext: dict[str, str] = {}
    for key, ext in conn.execute(select(managers.c.key, managers.c.extension).where(
            managers.c.system == SYSTEM, managers.c.deleted.is_(False), managers.c.extension.is_not(None))):
        by_ext.setdefault(str(ext).strip(), key)
    out: list[PlannedAction] = []
    for r in rows:
        found = sorted(holders.get(r.phone_e164 or "", []), key=lambda h: (h[1] != "contact", h[0]))  # the person first
        client = found[0] if found else None
        uid = _bitrix_user(snap, r, by_email, by_ext, client[2] if client else None)
        if uid is None:
            continue  # nobody to register it for: USER_ID is required
        incoming = r.direction == "in"
        talk = int(r.talk_s or 0)
        status = "200" if r.answered and talk > 0 else STATUS_CODES.get(str(r.disposition or "").upper(), "304")
        payload = {"external_id": str(r.source_id), "phone": r.phone or r.phone_e164 or "", "type": 2 if incoming else 1,
                   "start": _aware(r.started_at).isoformat(timespec="seconds"), "duration": talk, "status": status,
                   "user": uid, "entity": client[0] if client else None,
                   "create": bool(app.create_leads and client is None),
                   "record": record_link(app, str(r.source_id)) if status == "200" else None}
        title = client[0] if client else (r.phone or "")
        out.append(PlannedAction(
            key=f"{CALL_RULE}:{r.source_id}", rule=CALL_RULE, type="call_log", system=SYSTEM, subject_key=r.key,
            client_key=client[0] if client else None, payload=payload,
            reason=_("a PBX call, shown on the client card"), client_title=str(title)))
    return out


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


SMS_STEPS = {"planned": ["queued"], "retry_wait": ["queued"], "in_flight": ["queued"], "sent": ["queued", "sent"],
             "delivered": ["queued", "sent", "delivered"], "done": ["queued", "sent"], "failed": ["queued", "failed"],
             "dead": ["queued", "failed"], "uncertain": ["queued", "failed"], "cancelled": ["queued", "failed"],
             "skipped": ["queued", "failed"]}


def sms_status_actions(snap: Any) -> list[PlannedAction]:
    """The portal learns each status of a message it handed to the connector, once each:
    ``sms-provider:<message id>:status-<status>``, every step after the one before it."""
    out: list[PlannedAction] = []
    recent = snap.now - timedelta(days=7)
    for entries in snap.journal_for(SMS_RULE).values():
        for e in entries:
            if e.type != "sms" or (e.created_at and _aware(e.created_at) < recent):
                continue
            mid = e.key.split(":", 2)[1]
            previous: list[str] = []
            for status in SMS_STEPS.get(e.state, []):
                key = f"{SMS_RULE}:{mid}:status-{status}"
                out.append(PlannedAction(
                    key=key, rule=SMS_RULE, type="sms_status", system=SYSTEM, subject_key=e.subject, client_key=e.client_key,
                    payload={"code": SENDER_CODE, "message_id": mid, "status": status},
                    reason=_("the portal is told the status of a message it sent through the connector"),
                    depends_on=list(previous[-1:])))
                previous.append(key)
    return out


def token_hash(event_token: str) -> str:
    return hashlib.sha256(event_token.encode()).hexdigest()[:20]


def robot_key(code: str, event_token: str) -> str:
    return f"{ROBOT_RULE}:{code}:{token_hash(event_token)}"

