"""The application side of the emulated portal: what a local server-side application meets.

Wire shapes follow the official docs (b24restdocs):

* installation (``settings/app-installation/local-apps/installation-callback.md``,
  ``api-reference/common/events/on-app-install.md``): saving the local application POSTs ``ONAPPINSTALL``
  to its install URL, form-encoded with PHP brackets (``event``, ``data[VERSION]``, ``ts``,
  ``auth[access_token]``, ``auth[refresh_token]``, ``auth[member_id]``, ``auth[application_token]``...).
  Uninstalling POSTs ``ONAPPUNINSTALL`` (no tokens, ``data[CLEAN]``) to the handlers bound to it, then
  revokes the tokens and drops everything the application registered (robots, triggers, handlers,
  senders: ``event-bind.md`` "when an application is deleted its actions are removed");
* robots (``bizproc/bizproc-robot/*.md``): ``bizproc.robot.add/update/list/delete`` (admin; the
  handler on the application's domain; ``ERROR_ACTIVITY_ALREADY_INSTALLED``), a run POSTs ``code``,
  ``document_id[]``, ``document_type[]``, ``properties[...]``, ``event_token`` and ``auth[...]`` to the
  handler, and ``bizproc.event.send`` answers it once (a spent or unknown token: 403 ``ACCESS_DENIED``);
* application triggers (``crm/automation/triggers/*.md``): ``add`` updates the name of an existing
  code, ``execute`` works on documents with automation (leads, deals, quotes, smart invoices, SPAs)
  and starts the robots an admin put on that trigger (:meth:`AppMethods.on_trigger`);
* events (``events/*.md``): ``event.bind/unbind/get``; a change POSTs ``event``, ``event_handler_id``,
  ``data[FIELDS][ID]`` (+ ``ENTITY_TYPE_ID`` for dynamic items), ``ts``, ``auth[...]`` to online
  handlers, once, never retried; offline bindings keep the latest state per object in a queue read by
  ``event.offline.get`` (``clear`` 1 deletes, 0 reserves under a ``process_id``);
* external calls (``telephony/*.md``): ``register`` (deduplicated for 30 minutes on phone, type, user,
  line and ``EXTERNAL_CALL_ID``), ``finish`` (the call activity appears on the bound client's card),
  ``attachRecord``, ``searchCrmEntities``, ``voximplant.statistic.get``;
* the SMS provider (``messageservice/*.md``): ``sender.add/list/update/delete``, a message sent from
  a card or a robot POSTs ``message_id``/``message_to``/``message_body`` to the sender's handler, and
  ``message.status.update`` records the statuses.

Deliveries go through one outbox thread (the portal's queue server); :meth:`AppMethods.drain` waits
until it is empty. Nothing here holds the portal lock while it calls out.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from bitrix.emulator.tables import ApiError, as_list, intval, iso, parse_dt, truthy

if TYPE_CHECKING:
    from bitrix.emulator.methods import Out, Params
    from bitrix.emulator.portal import Caller

log = logging.getLogger("bitrix.emulator.apps")

OWNER_WORD = {1: "LEAD", 2: "DEAL", 3: "CONTACT", 4: "COMPANY", 7: "QUOTE", 31: "SMART_INVOICE"}
DOC_CLASS = {1: "CCrmDocumentLead", 2: "CCrmDocumentDeal", 3: "CCrmDocumentContact", 4: "CCrmDocumentCompany",
             31: "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice"}
AUTOMATION_TYPES = {1, 2, 7, 31}  # triggers and robots exist in leads, deals, quotes, smart invoices (and SPAs >= 128)
ENTITY_EVENT = {"company": "ONCRMCOMPANY", "contact": "ONCRMCONTACT", "deal": "ONCRMDEAL", "activity": "ONCRMACTIVITY"}
KNOWN_EVENTS = {f"{p}{op}" for p in ENTITY_EVENT.values() for op in ("ADD", "UPDATE", "DELETE")} | {
    "ONCRMDYNAMICITEMADD", "ONCRMDYNAMICITEMUPDATE", "ONCRMDYNAMICITEMDELETE", "ONAPPUNINSTALL", "ONAPPINSTALL",
    "ONOFFLINEEVENT", "ONCRMLEADADD", "ONCRMLEADUPDATE", "ONCRMLEADDELETE", "ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE"}
CODE_RE = re.compile(r"^[A-Za-z0-9.\-_]+$")
TRIGGER_CODE_RE = re.compile(r"^[a-z0-9.\-_]+$")
STATUS_CODES = {"200", "304", "603", "603-S", "403", "404", "486", "484", "503", "480", "402", "423", "OTHER"}
SMS_STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")
DEDUP_SECONDS = 30 * 60


@dataclass
class App:
    """One installed application: its token for safe handlers and everything it registered."""

    client_id: str
    application_token: str
    user_id: int
    install_url: str | None = None
    robots: dict[str, dict] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)
    bindings: list[dict] = field(default_factory=list)
    senders: dict[str, dict] = field(default_factory=dict)
    offline: dict[tuple[str, str], dict] = field(default_factory=dict)  # (EVENT_NAME, object id) -> latest record
    reserved: dict[str, list[dict]] = field(default_factory=dict)  # process_id -> records taken with clear=0


@dataclass
class Delivery:
    url: str
    kind: str  # the event name, "robot:<code>" or "sms:<code>"
    status: int | None = None  # the handler's HTTP status (None: no answer)
    body: bytes = b""


def php_pairs(prefix: str, value: Any) -> list[tuple[str, str]]:
    """``auth[domain]=...`` pairs, the way PHP's ``http_build_query`` flattens nested arrays."""
    if isinstance(value, dict):
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            out += php_pairs(f"{prefix}[{k}]" if prefix else str(k), v)
        return out
    if isinstance(value, (list, tuple)):
        out = []
        for i, v in enumerate(value):
            out += php_pairs(f"{prefix}[{i}]", v)
        return out
    if value is None:
        return [(prefix, "")]
    if isinstance(value, bool):
        return [(prefix, "1" if value else "0")]
    return [(prefix, str(value))]


class Outbox:
    """The queue server: deliveries (and the robot runs automation starts) one at a time, in order,
    on a thread of its own."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self.log: list[Delivery] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def post_now(self, url: str, kind: str, pairs: list[tuple[str, str]]) -> Delivery:
        d = Delivery(url, kind)
        self._post(d, urlencode(pairs).encode())
        return d

    def enqueue(self, url: str, kind: str, pairs: list[tuple[str, str]]) -> Delivery:
        d = Delivery(url, kind)
        body = urlencode(pairs).encode()
        self.later(lambda: self._post(d, body))
        return d

    def later(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bitrix-emulator-outbox", daemon=True)
                self._thread.start()
        self.queue.put(job)

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            try:
                job()
            except Exception as e:  # a job of the emulator must not stop the queue  # noqa: BLE001
                log.debug("outbox job failed: %s", e)
            finally:
                self.queue.task_done()

    def _post(self, d: Delivery, body: bytes) -> None:
        import requests

        self.log.append(d)
        try:
            r = requests.post(d.url, data=body, timeout=30, allow_redirects=False,
                              headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Bitrix24 Webhook Engine"})
            d.status, d.body = r.status_code, r.content
        except requests.RequestException as e:  # no retries: the portal's queue server drops it
            log.debug("delivery to %s failed: %s", d.url, type(e).__name__)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every queued job ran (tests); raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                raise TimeoutError("emulator deliveries still pending")
            time.sleep(0.01)


class AppMethods:
    """Mixin of :class:`bitrix.emulator.portal.Portal`: installed applications and their methods."""

    # set by Portal.__init__ / EmulatorServer
    lock: Any
    tables: dict
    domain: str
    member_id: str
    scopes: tuple[str, ...]
    admins: set[int]
    apps: dict[str, str]
    tokens: dict
    token_ttl: float
    base_url: str

    def _init_apps(self) -> None:
        self.installed: dict[str, App] = {}
        self.outbox = Outbox()
        self.robot_runs: dict[str, dict] = {}  # event_token -> run
        self.trigger_fires: list[dict] = []
        self.automation: dict[str, list[tuple[str, dict]]] = {}  # trigger code -> [(robot code, properties)]
        self.external_calls: dict[str, dict] = {}  # CALL_ID -> registration (+ finish, record)
        self.call_stats: list[dict] = []  # voximplant statistics rows
        self.sms_messages: dict[str, dict] = {}  # message_id -> message and its statuses
        self.leads: dict[int, dict] = {}
        self._offline_seq = 0
        self._bind_seq = 0

    # ------------------------------------------------------------ helpers for tests and the sandbox

    def install_app(self, client_id: str, client_secret: str, *, install_url: str, user_id: int | None = None,
                    language: str = "ua") -> Delivery:
        """An admin saves the local application: tokens are issued and ONAPPINSTALL is POSTed to ``install_url``."""
        with self.lock:
            self.apps[client_id] = client_secret
            uid = user_id or min(self.admins)
            app = App(client_id, secrets.token_hex(16), uid, install_url)
            self.installed[client_id] = app
            access, refresh = self._issue(client_id, uid)  # type: ignore[attr-defined]
            pairs = [("event", "ONAPPINSTALL"), *php_pairs("data", {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y",
                                                                        "LANGUAGE_ID": language}),
                     ("ts", str(int(time.time()))),
                     *php_pairs("auth", {**self._auth_block(app), "access_token": access, "refresh_token": refresh,
                                         "expires_in": int(self.token_ttl), "scope": ",".join(self.scopes)})]
        return self.outbox.post_now(install_url, "ONAPPINSTALL", pairs)

    def uninstall_app(self, client_id: str, *, clean: bool = True) -> list[Delivery]:
        """The admin deletes the application: ONAPPUNINSTALL to its handlers, then its tokens and
        registrations are gone."""
        with self.lock:
            app = self.installed.pop(client_id, None)
            if app is None:
                return []
            targets = [b for b in app.bindings if b["event"] == "ONAPPUNINSTALL" and not b["offline"]]
            for access in [a for a, t in self.tokens.items() if t.client_id == client_id]:
                tok = self.tokens.pop(access)
                self.refresh_tokens.pop(tok.refresh, None)  # type: ignore[attr-defined]
            self.apps.pop(client_id, None)
            pairs = [("event", "ONAPPUNINSTALL"), *php_pairs("data", {"LANGUAGE_ID": "ua", "CLEAN": 1 if clean else 0}),
                     ("ts", str(int(time.time()))), *php_pairs("auth", self._auth_block(app))]
        return [self.outbox.post_now(b["handler"], "ONAPPUNINSTALL", [*pairs, ("event_handler_id", str(b["id"]))])
                for b in targets]

    def app_of(self, client_id: str) -> App:
        return self.installed[client_id]

    def on_trigger(self, code: str, robot: str, properties: dict | None = None) -> None:
        """An admin's automation rule: when trigger ``code`` fires on a document, run ``robot`` on it."""
        self.automation.setdefault(code, []).append((robot, dict(properties or {})))

    def run_robot(self, code: str, owner_type: int, owner_id: int, properties: dict | None = None) -> str:
        """The portal runs an application robot on a document; returns the run's event token."""
        with self.lock:
            app, robot = self._find_robot(code)
            token = (f"{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}|A{secrets.randbelow(10**5)}_"
                     f"{secrets.randbelow(10**5)}|{secrets.token_hex(16)}")
            word = OWNER_WORD.get(owner_type, f"DYNAMIC_{owner_type}")
            cls = DOC_CLASS.get(owner_type, "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic")
            props = {**{k: (v.get("Default") if isinstance(v, dict) else None) for k, v in (robot.get("PROPERTIES") or {}).items()},
                     **(properties or {})}
            run = {"code": code, "client_id": app.client_id, "token": token, "document_id": ["crm", cls, f"{word}_{owner_id}"],
                   "document_type": ["crm", cls, word], "properties": props, "workflow_id": f"{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}",
                   "sends": 0, "return_values": None, "log": [], "handler": robot["HANDLER"], "user_id": intval(robot.get("AUTH_USER_ID")) or app.user_id}
            self.robot_runs[token] = run
        self._deliver_robot(run)
        return token

    def redeliver_robot(self, token: str) -> None:
        """The queue server delivers the same robot call again (same event token)."""
        self._deliver_robot(self.robot_runs[token])

    def send_sms(self, sender: str, phone: str, text: str, *, owner: tuple[int, int] | None = None) -> str:
        """A manager presses the SMS button on a card (or a "Send SMS" robot runs): the provider is called."""
        with self.lock:
            app = next((a for a in self.installed.values() if sender in a.senders), None)
            if app is None:
                raise KeyError(f"no installed sender {sender}")
            mid = secrets.token_hex(16)
            self.sms_messages[mid] = {"code": sender, "to": phone, "text": text, "statuses": [], "client_id": app.client_id}
            handler = app.senders[sender]["HANDLER"]
            pairs = [("module_id", "crm"), ("type", "SMS"), ("code", sender), ("message_id", mid), ("message_to", phone),
                     ("message_body", text), *php_pairs("properties", {"phone_number": phone, "message_text": text}),
                     ("ts", str(int(time.time()))), *php_pairs("auth", self._auth_block(app, with_tokens=True))]
            if owner:
                pairs += php_pairs("bindings", [{"OWNER_TYPE_ID": owner[0], "OWNER_ID": owner[1]}])
        self.outbox.enqueue(handler, f"sms:{sender}", pairs)
        return mid

    def drain(self, timeout: float = 30.0) -> None:
        self.outbox.drain(timeout)

    def call_activities(self) -> list[dict]:
        """CRM call activities the telephony methods made (what a client card shows)."""
        return [a for a in self.tables["activity"].rows.values() if str(a.get("ORIGIN_ID") or "").startswith("VI_")]

    # ------------------------------------------------------------ internals

    def _auth_block(self, app: App, *, with_tokens: bool = False) -> dict:
        block = {"domain": self.domain, "client_endpoint": self.base_url + "/rest/",
                 "server_endpoint": self.base_url + "/oauth/rest/", "member_id": self.member_id, "status": "L",
                 "application_token": app.application_token}
        if with_tokens:
            access, refresh = self._issue(app.client_id, app.user_id)  # type: ignore[attr-defined]
            block = {"access_token": access, "expires_in": int(self.token_ttl), "scope": ",".join(self.scopes), **block,
                     "refresh_token": refresh}
        return block

    def _app(self, caller: "Caller") -> App:
        if caller.kind != "oauth" or not caller.client_id:
            raise ApiError(400, "ACCESS_DENIED", "Application context required")
        app = self.installed.get(caller.client_id)
        if app is None:  # an application authorised without the install callback (issue_oauth)
            app = self.installed[caller.client_id] = App(caller.client_id, secrets.token_hex(16), caller.user_id)
        return app

    def _admin(self, caller: "Caller", text: str = "Access denied!") -> None:
        if caller.user_id not in self.admins:
            raise ApiError(403, "ACCESS_DENIED", text)

    def _find_robot(self, code: str) -> tuple[App, dict]:
        for app in self.installed.values():
            if code in app.robots:
                return app, app.robots[code]
        raise KeyError(f"no installed robot {code}")

    def _deliver_robot(self, run: dict) -> None:
        with self.lock:
            app = self.installed.get(run["client_id"])
            if app is None:
                return
            pairs = [("workflow_id", run["workflow_id"]), ("code", run["code"]), *php_pairs("document_id", run["document_id"]),
                     *php_pairs("document_type", run["document_type"]), ("event_token", run["token"]),
                     *php_pairs("properties", run["properties"]), ("use_subscription", "Y"), ("timeout_duration", "0"),
                     ("ts", str(int(time.time()))), *php_pairs("auth", self._auth_block(app, with_tokens=True))]
        self.outbox.enqueue(run["handler"], f"robot:{run['code']}", pairs)

    def _same_domain(self, app: App, url: str) -> bool:
        if not app.install_url:
            return True
        return urlsplit(url).hostname == urlsplit(app.install_url).hostname

    def emit(self, entity: str, op: str, rid: Any, *, entity_type_id: int | None = None) -> None:
        """A record changed: deliver the event to online handlers, queue it for offline ones."""
        if entity == "invoice":
            name, fields = f"ONCRMDYNAMICITEM{op}", {"ID": str(rid), "ENTITY_TYPE_ID": str(entity_type_id or 31)}
        elif entity in ENTITY_EVENT:
            name, fields = f"{ENTITY_EVENT[entity]}{op}", {"ID": str(rid)}
        else:
            return
        with self.lock:
            for app in list(self.installed.values()):
                for b in app.bindings:
                    if b["event"] != name:
                        continue
                    if b["offline"]:
                        self._offline_seq += 1
                        key = (name if op != "DELETE" else name, str(rid))
                        # the queue keeps only the latest state per object (offline-events.md)
                        for k in [k for k in app.offline if k[1] == str(rid) and k[0].startswith(name[: -len(op)])]:
                            app.offline.pop(k)
                        app.offline[key] = {"ID": str(self._offline_seq), "TIMESTAMP_X": iso(self.now()),  # type: ignore[attr-defined]
                                            "EVENT_NAME": name, "EVENT_DATA": {"FIELDS": fields}, "EVENT_ADDITIONAL": [],
                                            "MESSAGE_ID": hashlib.md5(f"{name}{rid}{self._offline_seq}".encode()).hexdigest()}
                    else:
                        pairs = [("event", name), ("event_handler_id", str(b["id"])), *php_pairs("data", {"FIELDS": fields}),
                                 ("ts", str(int(time.time()))), *php_pairs("auth", self._auth_block(app, with_tokens=True))]
                        self.outbox.enqueue(b["handler"], name, pairs)

    def emit_for_call(self, method: str, p: "Params", result: Any) -> None:
        """The event a successful REST write raises (a portal notifies applications of REST changes too)."""
        m = re.match(r"^crm\.(company|contact|deal)\.(add|update|delete)$", method)
        if m:
            rid = result if m.group(2) == "add" else intval(p.get("id"))
            self.emit(m.group(1), m.group(2).upper(), rid)
            return
        m = re.match(r"^crm\.item\.(add|update|delete)$", method)
        if m:
            etid = intval(p.get("entityTypeId"))
            entity = {2: "deal", 3: "contact", 4: "company", 31: "invoice"}.get(etid)
            rid = ((result or {}).get("item") or {}).get("id") if m.group(1) == "add" and isinstance(result, dict) else intval(p.get("id"))
            if entity:
                self.emit(entity, m.group(1).upper(), rid, entity_type_id=etid)
            return
        if method == "crm.activity.todo.add" and isinstance(result, dict):
            self.emit("activity", "ADD", result.get("id"))

    # ------------------------------------------------------------ application triggers

    def m_crm_automation_trigger_add(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller, "Access denied! Admin permissions required")
        code, name = str(p.get("CODE") or ""), str(p.get("NAME") or "")
        if not code:
            raise ApiError(400, "", "Empty trigger code!")
        if not TRIGGER_CODE_RE.match(code):
            raise ApiError(400, "", "Wrong trigger code!")
        if not name:
            raise ApiError(400, "", "Empty trigger name!")
        with self.lock:
            app.triggers[code] = name  # an existing code only gets the new name
        return Out(True)

    def m_crm_automation_trigger_list(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller, "Access denied! Admin permissions required")
        return Out([{"NAME": n, "CODE": c} for c, n in app.triggers.items()])

    def m_crm_automation_trigger_delete(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller, "Access denied! Admin permissions required")
        code = str(p.get("CODE") or "")
        if not code:
            raise ApiError(400, "", "Empty trigger code!")
        if app.triggers.pop(code, None) is None:
            raise ApiError(400, "", "Trigger not found")
        return Out(True)

    def m_crm_automation_trigger_execute(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import OWNER_TABLE, Out

        app = self._app(caller)
        self._admin(caller, "Access denied! Admin permissions required")
        code = str(p.get("CODE") or "")
        if not code:
            raise ApiError(400, "", "Empty trigger code!")
        if not TRIGGER_CODE_RE.match(code):
            raise ApiError(400, "", "Wrong trigger code!")
        if code not in app.triggers:
            raise ApiError(400, "", f"Trigger with code {code} is not registered.")
        otype, oid = intval(p.get("OWNER_TYPE_ID")), intval(p.get("OWNER_ID"))
        if otype not in AUTOMATION_TYPES and otype < 128:
            raise ApiError(400, "", "Incorrect parameter OWNER_TYPE_ID.")
        if oid <= 0:
            raise ApiError(400, "", "Incorrect parameter OWNER_ID.")
        table = self.tables.get(OWNER_TABLE.get(otype, ""))
        if table is not None and oid not in table.rows:
            raise ApiError(400, "", "Access denied.")
        self.trigger_fires.append({"code": code, "owner_type": otype, "owner_id": oid, "client_id": app.client_id,
                                   "at": self.now()})  # type: ignore[attr-defined]
        for robot, props in self.automation.get(code, []):  # the portal's automation runs them after this call
            self.outbox.later(lambda r=robot, pr=props: self._run_later(r, otype, oid, pr))
        return Out(True)

    def _run_later(self, robot: str, otype: int, oid: int, props: dict) -> None:
        try:
            self.run_robot(robot, otype, oid, props)
        except KeyError:
            log.debug("automation rule names robot %s, which is not installed", robot)

    # ------------------------------------------------------------ robots

    def m_bizproc_robot_add(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        if not p.data:
            raise ApiError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty data!")
        code = str(p.get("CODE") or "")
        if not code:
            raise ApiError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty activity code!")
        if not CODE_RE.match(code):
            raise ApiError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Wrong activity code!")
        self._check_robot(app, p.data)
        if not p.get("NAME"):
            raise ApiError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty activity name!")
        with self.lock:
            if code in app.robots:
                raise ApiError(400, "ERROR_ACTIVITY_ALREADY_INSTALLED", "Activity or Automation rule already installed!")
            app.robots[code] = {k.upper(): v for k, v in p.data.items()}
        return Out(True)

    def _check_robot(self, app: App, data: dict) -> None:
        handler = str({k.upper(): v for k, v in data.items()}.get("HANDLER") or "")
        if not handler:
            raise ApiError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty handler!")
        if urlsplit(handler).scheme not in ("http", "https"):
            raise ApiError(400, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol")
        if not self._same_domain(app, handler):
            raise ApiError(400, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL")

    def m_bizproc_robot_update(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        code = str(p.get("CODE") or "")
        fields = p.get("FIELDS")
        if not code:
            raise ApiError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty activity code!")
        if code not in app.robots:
            raise ApiError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
        if not isinstance(fields, dict) or not fields:
            raise ApiError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "No fields to update.")
        if any(str(k).upper() == "HANDLER" for k in fields):
            self._check_robot(app, fields)
        with self.lock:
            app.robots[code].update({str(k).upper(): v for k, v in fields.items()})
        return Out(True)

    def m_bizproc_robot_list(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        return Out(list(app.robots))

    def m_bizproc_robot_delete(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        code = str(p.get("CODE") or "")
        if not code:
            raise ApiError(400, "ERROR_ACTIVITY_VALIDATION_FAILURE", "Empty activity code!")
        if app.robots.pop(code, None) is None:
            raise ApiError(400, "ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
        return Out(True)

    def m_bizproc_event_send(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        token = str(p.get("EVENT_TOKEN") or "")
        with self.lock:
            run = self.robot_runs.get(token)
            if run is None or run["sends"] > 0:  # unknown, or the workflow already went on
                raise ApiError(403, "ACCESS_DENIED", "Access denied!")
            run["sends"] += 1
            values = p.get("RETURN_VALUES")
            run["return_values"] = dict(values) if isinstance(values, dict) else {}
            if p.get("LOG_MESSAGE"):
                run["log"].append(str(p.get("LOG_MESSAGE")))
        return Out(True)

    # ------------------------------------------------------------ events

    def m_event_bind(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        name = str(p.get("event") or "").upper()
        offline = str(p.get("event_type") or "online").lower() == "offline"
        if name not in KNOWN_EVENTS:
            raise ApiError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
        if offline:
            self._admin(caller, "Access denied! Offline events binding requires administrator access rights")
        handler = "" if offline else str(p.get("handler") or "")
        if not offline and not handler:
            raise ApiError(400, "ERROR_HANDLER_URL_MISMATCH", "Handler URL host doesn't match application url")
        if handler and not self._same_domain(app, handler):
            raise ApiError(400, "ERROR_HANDLER_URL_MISMATCH", "Handler URL host doesn't match application url")
        with self.lock:
            if any(b["event"] == name and b["handler"] == handler and b["offline"] == offline for b in app.bindings):
                raise ApiError(400, "ERROR_CORE", "Handler already binded")
            self._bind_seq += 1
            app.bindings.append({"id": self._bind_seq, "event": name, "handler": handler, "offline": offline,
                                 "auth_type": str(intval(p.get("auth_type")))})
        return Out(True)

    def m_event_unbind(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        name = str(p.get("event") or "").upper()
        handler = p.get("handler")
        offline = str(p.get("event_type") or "online").lower() == "offline"
        with self.lock:
            keep = [b for b in app.bindings if not ((not name or b["event"] == name) and b["offline"] == offline
                                                    and (handler in (None, "") or b["handler"] == handler))]
            count = len(app.bindings) - len(keep)
            app.bindings = keep
        return Out({"count": count})

    def m_event_get(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        return Out([{"event": b["event"], "handler": b["handler"], "auth_type": b["auth_type"], "offline": 1 if b["offline"] else 0}
                    for b in app.bindings])

    def m_event_offline_get(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        limit = intval(p.get("limit")) or 50
        clear = truthy(p.get("clear", 1))
        with self.lock:
            pid = p.get("process_id")
            if pid and str(pid) in app.reserved:
                events = list(app.reserved[str(pid)])
            else:
                events = sorted(app.offline.values(), key=lambda r: (r["TIMESTAMP_X"], int(r["ID"])))[:limit]
                for r in events:
                    app.offline.pop((r["EVENT_NAME"], r["EVENT_DATA"]["FIELDS"]["ID"]), None)
                pid = None
                if not clear and events:
                    pid = secrets.token_hex(16)
                    app.reserved[pid] = events
        return Out({"process_id": pid, "events": events})

    def m_event_offline_clear(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        pid = str(p.get("process_id") or "")
        ids = {str(x) for x in as_list(p.get("message_id"))} if p.get("message_id") else None
        with self.lock:
            if ids is None:
                app.reserved.pop(pid, None)
            else:
                app.reserved[pid] = [r for r in app.reserved.get(pid, []) if r["MESSAGE_ID"] not in ids]
        return Out(True)

    # ------------------------------------------------------------ external calls

    def _user_ok(self, p: "Params") -> int:
        users = self.tables["user"].rows
        uid = intval(p.get("USER_ID"))
        if not uid and p.get("USER_PHONE_INNER"):
            inner = str(p.get("USER_PHONE_INNER"))
            uid = next((u["ID"] for u in users.values() if str(u.get("UF_PHONE_INNER") or "") == inner), 0)
            if not uid:
                raise ApiError(400, "ERROR_CORE", "User is not found or is not active.")
        if not uid:
            raise ApiError(400, "ERROR_CORE", "USER_ID or USER_PHONE_INNER should be set.")
        u = users.get(uid)
        if u is None or u.get("ACTIVE") is not True:
            raise ApiError(400, "ERROR_CORE", "User is not found or is not active.")
        return uid

    @staticmethod
    def _digits(phone: Any) -> str:
        d = re.sub(r"\D", "", str(phone or ""))
        return d[-9:]

    def _find_by_phone(self, phone: str) -> list[tuple[str, int, dict]]:
        want = self._digits(phone)
        out = []
        for entity, word in (("contact", "CONTACT"), ("company", "COMPANY")):
            for row in self.tables[entity].rows.values():
                if any(self._digits(x.get("VALUE")) == want for x in row.get("PHONE") or []) and want:
                    out.append((word, row["ID"], row))
        return out

    def m_telephony_externalcall_register(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        uid = self._user_ok(p)
        kind = intval(p.get("TYPE"))
        if kind not in (1, 2, 3, 4, 5):
            raise ApiError(400, "ERROR_CORE", "Unknown TYPE.")
        phone = str(p.get("PHONE_NUMBER") or "")
        if not self._digits(phone):
            raise ApiError(400, "ERROR_CORE", "Unsupported phone number format.")
        start = p.get("CALL_START_DATE")
        started = parse_dt(start) if start else self.now()  # type: ignore[attr-defined]
        if started is None:
            raise ApiError(400, "ERROR_CORE", "CALL_START_DATE should be in the ISO-8601 format.")
        now = time.time()
        ext = str(p.get("EXTERNAL_CALL_ID") or "")
        line = str(p.get("LINE_NUMBER") or "")
        with self.lock:
            for c in self.external_calls.values():  # a registration of the last 30 minutes is returned again
                if (c["client_id"] == app.client_id and c["PHONE_NUMBER"] == phone and c["TYPE"] == kind and c["USER_ID"] == uid
                        and c["LINE_NUMBER"] == line and c["EXTERNAL_CALL_ID"] == ext and now - c["registered"] < DEDUP_SECONDS):
                    return Out(self._register_result(c))
            etype, eid = str(p.get("CRM_ENTITY_TYPE") or "").upper(), intval(p.get("CRM_ENTITY_ID"))
            created: list[dict] = []
            lead = None
            if not (etype and eid):
                found = self._find_by_phone(phone)
                if found:
                    etype, eid = found[0][0], found[0][1]
                elif truthy(p.get("CRM_CREATE")):
                    lead = max(self.leads, default=0) + 1
                    self.leads[lead] = {"ID": lead, "TITLE": phone, "PHONE": phone, "SOURCE_ID": p.get("CRM_SOURCE") or "CALL",
                                        "ASSIGNED_BY_ID": uid, "DATE_CREATE": self.now()}  # type: ignore[attr-defined]
                    etype, eid = "LEAD", lead
                    created.append({"ENTITY_TYPE": "LEAD", "ENTITY_ID": lead})
            call_id = f"externalCall.{secrets.token_hex(16)}.{int(now)}"
            self.external_calls[call_id] = {
                "CALL_ID": call_id, "client_id": app.client_id, "registered": now, "PHONE_NUMBER": phone, "TYPE": kind,
                "USER_ID": uid, "LINE_NUMBER": line, "EXTERNAL_CALL_ID": ext, "CALL_START_DATE": started,
                "CRM_ENTITY_TYPE": etype or None, "CRM_ENTITY_ID": eid or None, "CRM_CREATED_LEAD": lead,
                "CRM_CREATED_ENTITIES": created, "finished": None, "record_url": None}
            return Out(self._register_result(self.external_calls[call_id]))

    @staticmethod
    def _register_result(c: dict) -> dict:
        return {"CALL_ID": c["CALL_ID"], "CRM_CREATED_LEAD": c["CRM_CREATED_LEAD"], "CRM_CREATED_ENTITIES": c["CRM_CREATED_ENTITIES"],
                "CRM_ENTITY_TYPE": c["CRM_ENTITY_TYPE"], "CRM_ENTITY_ID": c["CRM_ENTITY_ID"]}

    def m_telephony_externalcall_finish(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        call_id = p.get("CALL_ID")
        if not isinstance(call_id, str):
            raise ApiError(400, "INVALID_ARGUMENT", "CALL_ID must be a string")
        uid = self._user_ok(p)
        with self.lock:
            c = self.external_calls.get(call_id)
            if c is None or c["client_id"] != app.client_id:
                raise ApiError(400, "ERROR_CORE", "Call is not found (call should be registered prior to finishing)")
            if c["finished"] is not None:  # finishing twice: the statistics row is there already
                return Out(c["finished"])
            duration = intval(p.get("DURATION"))
            status = str(p.get("STATUS_CODE") or ("200" if duration > 0 else "304"))
            if status not in STATUS_CODES:
                status = "OTHER"
            activity = None
            if c["CRM_ENTITY_TYPE"] in ("CONTACT", "COMPANY") and c["CRM_ENTITY_ID"]:
                activity = self._call_activity(c, uid, duration, status)
            row = {"ID": len(self.call_stats) + 1, "CALL_ID": call_id, "EXTERNAL_CALL_ID": c["EXTERNAL_CALL_ID"] or None,
                   "PORTAL_USER_ID": uid, "PHONE_NUMBER": c["PHONE_NUMBER"], "PORTAL_NUMBER": c["LINE_NUMBER"],
                   "INCOMING": str(c["TYPE"]), "CALL_DURATION": duration, "CALL_START_DATE": iso(c["CALL_START_DATE"]),
                   "CALL_STATUS": 1 if status == "200" else 0, "CALL_VOTE": intval(p.get("VOTE")) or None,
                   "COST": float(p.get("COST") or 0), "COST_CURRENCY": str(p.get("COST_CURRENCY") or ""),
                   "CALL_FAILED_CODE": status, "CALL_FAILED_REASON": str(p.get("FAILED_REASON") or ""),
                   "REST_APP_ID": "1", "REST_APP_NAME": app.client_id, "CRM_ACTIVITY_ID": activity,
                   "COMMENT": None, "CRM_ENTITY_TYPE": c["CRM_ENTITY_TYPE"], "CRM_ENTITY_ID": c["CRM_ENTITY_ID"],
                   "CALL_RECORD_URL": str(p.get("RECORD_URL") or "") or None}
            c["finished"] = row
            self.call_stats.append(row)
        if activity:
            self.emit("activity", "ADD", activity)
        return Out(row)

    def _call_activity(self, c: dict, uid: int, duration: int, status: str) -> int:
        from datetime import timedelta

        owner = 3 if c["CRM_ENTITY_TYPE"] == "CONTACT" else 4
        incoming = c["TYPE"] in (2, 3)
        answered = status == "200"
        start = c["CALL_START_DATE"]
        now = self.now()  # type: ignore[attr-defined]
        subject = ("Incoming call" if incoming else "Outgoing call") + ("" if answered or not incoming else " (missed)")
        row = {"OWNER_ID": c["CRM_ENTITY_ID"], "OWNER_TYPE_ID": owner, "TYPE_ID": 2, "PROVIDER_ID": "VOXIMPLANT_CALL",
               "PROVIDER_TYPE_ID": "CALL", "ASSOCIATED_ENTITY_ID": 0, "SUBJECT": f"{subject} {c['PHONE_NUMBER']}",
               "DESCRIPTION": "", "DESCRIPTION_TYPE": 1, "CREATED": now, "LAST_UPDATED": now, "START_TIME": start,
               "END_TIME": start + timedelta(seconds=duration), "DEADLINE": start,
               "COMPLETED": "Y" if answered or not incoming else "N", "STATUS": 2 if answered or not incoming else 1,
               "RESPONSIBLE_ID": uid, "PRIORITY": 2, "DIRECTION": 1 if incoming else 2, "ORIGIN_ID": f"VI_{c['CALL_ID']}",
               "AUTHOR_ID": uid, "EDITOR_ID": uid, "SETTINGS": {}, "PROVIDER_PARAMS": {}, "FILES": [],
               "BINDINGS": [(owner, c["CRM_ENTITY_ID"])]}
        rid = self.tables["activity"].insert(row)
        self._bump_owner(owner, c["CRM_ENTITY_ID"], now, uid)  # type: ignore[attr-defined]
        return rid

    def m_telephony_externalcall_attachrecord(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        call_id = str(p.get("CALL_ID") or "")
        url, name = str(p.get("RECORD_URL") or ""), str(p.get("FILENAME") or "")
        if not url and not name:
            raise ApiError(400, "ERROR_CORE", "Required parameters are not set. Request should contain either URL or FILENAME parameter")
        with self.lock:
            c = self.external_calls.get(call_id)
            if c is None or c["client_id"] != app.client_id or c["finished"] is None:
                raise ApiError(400, "ERROR_CORE", "Call is not found in the statistic table. It looks like it is not finished yet.")
            name = name or urlsplit(url).path.rsplit("/", 1)[-1]
            if not name.lower().endswith((".mp3", ".wav")):
                raise ApiError(400, "ERROR_CORE", "Wrong file extension. Only wav and mp3 are allowed")
            c["record_url"] = url  # a real portal downloads it now; the emulator keeps the link
            c["finished"]["CALL_RECORD_URL"] = url
            fid = 9000 + len(self.call_stats) * 10 + len([x for x in self.external_calls.values() if x["record_url"]])
            c["finished"]["RECORD_FILE_ID"] = fid
            act = self.tables["activity"].rows.get(c["finished"].get("CRM_ACTIVITY_ID") or 0)
            if act is not None:
                act["FILES"] = [{"id": fid, "url": url}]
                self.tables["activity"].touched()
        return Out({"FILE_ID": fid})

    def m_telephony_externalcall_searchcrmentities(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        self._app(caller)
        phone = str(p.get("PHONE_NUMBER") or "")
        if not phone:
            raise ApiError(400, "ERROR_CORE", "PHONE_NUMBER is empty")
        out = []
        for word, rid, row in self._find_by_phone(phone):
            name = row.get("TITLE") or " ".join(str(row.get(k) or "") for k in ("NAME", "LAST_NAME")).strip()
            out.append({"CRM_ENTITY_TYPE": word, "CRM_ENTITY_ID": rid, "ASSIGNED_BY_ID": row.get("ASSIGNED_BY_ID"), "NAME": name,
                        "ASSIGNED_BY": {"ID": str(row.get("ASSIGNED_BY_ID")), "TIMEMAN_STATUS": "UNAVAILABLE",
                                        "USER_PHONE_INNER": None, "WORK_PHONE": None, "PERSONAL_PHONE": None, "PERSONAL_MOBILE": None}})
        return Out(out)

    def m_voximplant_statistic_get(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        flt = p.get("FILTER") or {}
        rows = list(self.call_stats)
        for k, v in (flt.items() if isinstance(flt, dict) else []):
            key = str(k).lstrip("=")
            rows = [r for r in rows if str(r.get(key)) == str(v)]
        start = max(intval(p.get("start")), 0)
        page = rows[start:start + 50]
        rendered = [{k: (None if v is None else str(v)) if k not in ("RECORD_FILE_ID",) else v for k, v in r.items()} for r in page]
        return Out(rendered, total=len(rows), next=start + 50 if start + 50 < len(rows) else None, returned=len(page))

    # ------------------------------------------------------------ the SMS provider

    def m_messageservice_sender_add(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        if not p.data:
            raise ApiError(400, "ERROR_SENDER_VALIDATION_FAILURE", "Empty data!")
        code = str(p.get("CODE") or "")
        if not code:
            raise ApiError(400, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!")
        if not CODE_RE.match(code):
            raise ApiError(400, "ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!")
        if not p.get("NAME"):
            raise ApiError(400, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender NAME!")
        if not p.get("TYPE"):
            raise ApiError(400, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender message TYPE!")
        if str(p.get("TYPE")).upper() != "SMS":
            raise ApiError(400, "ERROR_SENDER_VALIDATION_FAILURE", "Unknown sender message TYPE!")
        handler = str(p.get("HANDLER") or "")
        if not handler or not self._same_domain(app, handler):
            raise ApiError(400, "ERROR_HANDLER_URL_MISMATCH", "Handler URL host doesn't match application url")
        with self.lock:
            if code in app.senders:
                raise ApiError(400, "ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!")
            app.senders[code] = {k.upper(): v for k, v in p.data.items()}
        return Out(True)

    def m_messageservice_sender_list(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        return Out(list(app.senders))

    def m_messageservice_sender_update(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        code = str(p.get("CODE") or "")
        if code not in app.senders:
            raise ApiError(400, "ERROR_SENDER_NOT_FOUND", "Sender not found!")
        with self.lock:
            for k in ("HANDLER", "NAME", "DESCRIPTION"):
                if p.get(k) is not None:
                    app.senders[code][k] = p.get(k)
        return Out(True)

    def m_messageservice_sender_delete(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        self._admin(caller)
        if app.senders.pop(str(p.get("CODE") or ""), None) is None:
            raise ApiError(400, "ERROR_SENDER_NOT_FOUND", "Sender not found!")
        return Out(True)

    def m_messageservice_message_status_update(self, p: "Params", caller: "Caller") -> "Out":
        from bitrix.emulator.methods import Out

        app = self._app(caller)
        code, mid = str(p.get("CODE") or ""), str(p.get("MESSAGE_ID") or "")
        status = str(p.get("STATUS") or "").lower()
        if code not in app.senders:
            raise ApiError(400, "ERROR_SENDER_VALIDATION_FAILURE", "Sender not found!")
        if status not in SMS_STATUSES:
            raise ApiError(400, "ERROR_MESSAGE_STATUS_INCORRECT", "Message status incorrect!")
        with self.lock:
            msg = self.sms_messages.get(mid)
            if msg is None or msg["code"] != code:
                raise ApiError(400, "ERROR_MESSAGE_NOT_FOUND", "Message not found!")
            msg["statuses"].append(status)
        return Out(True)


def owner_of(document_id: Iterable[Any]) -> tuple[int, int] | None:
    """``["crm", "CCrmDocumentDeal", "DEAL_5"]`` -> ``(2, 5)``."""
    parts = [str(x) for x in document_id]
    if len(parts) != 3:
        return None
    m = re.match(r"^([A-Z_]+?)_(\d+)$", parts[2])
    if not m:
        return None
    word = {v: k for k, v in OWNER_WORD.items()}.get(m.group(1))
    return (word, int(m.group(2))) if word else None
