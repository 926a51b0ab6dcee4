"""The Bitrix24 application's HTTP handlers, mounted on the connector's shared :class:`HttpServer`.

The server checks the socket peer at accept (``bitrix24.app.allow_from``; loopback only when empty,
i.e. a reverse proxy on this host terminates HTTPS), caps connections and cuts slow peers. Here:

* ``POST /bitrix24/install`` — ``ONAPPINSTALL``: the tokens are proven with the OAuth server (a
  ``refresh_token`` exchange with this application's ``client_secret``: only the genuine portal holds
  one) and must name the same ``member_id``; a portal already installed is never replaced by another.
* ``POST /bitrix24/event`` — edits of companies, contacts, deals, activities and smart invoices mark the
  record for the next sync (:meth:`Store.mark_dirty`) and ask the daemon for an early cycle;
  ``ONAPPUNINSTALL`` forgets the tokens.
* ``POST /bitrix24/robot/<code>`` — the application's robots, answered through ``bizproc.event.send``
  exactly once per ``event_token`` (journal key ``robot:<code>:<token hash>``, claimed before the call).
* ``POST /bitrix24/sms`` — the portal's SMS provider: the message is journaled for the SMS channel
  (quiet hours, opt-out) under ``sms-provider:<message_id>``; its statuses go back each cycle.
* ``GET /bitrix24/record/<call>/<signature>.mp3`` — a stable link to a call's recording: redirects to a
  fresh link from the PBX.

Every call but the install must carry the stored ``application_token`` and ``member_id``
(``auth[...]``), compared in constant time; anything else is answered 401 and changes nothing.
Bodies are form-encoded with PHP brackets (as the portal sends them) or JSON.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bitrix import app as A
from bitrix import mapping as m
from bitrix.client import SYSTEM
from bitrix.source import ENTITY_EVENTS, SMART_INVOICE
from connector.errors import AuthError, ConnectorError, TransientError, UpstreamError
from connector.httpserver import FormError, HttpRequest, HttpResponse, parse_php_form
from connector.i18n import _
from connector.journal import Change, Journal, State
from connector.ports import ActionResult, Context, PlannedAction

if TYPE_CHECKING:
    from connector.config import Settings
    from connector.store import Store

log = logging.getLogger("bitrix.app")

MAX_FIELDS = 2000
MAX_DEPTH = 6
OK = HttpResponse(200, b'{"status":"success"}')


class BadRequest(Exception):
    """The body cannot be read as the portal's request."""


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """A form body with PHP brackets (``auth[member_id]=...``, ``document_id[0]=crm``) or JSON -> a tree;
    maps keyed ``0..n-1`` become lists, as PHP sees them."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    if "json" in content_type.lower() or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise BadRequest("body is not JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("JSON body is not an object")
        return data
    try:
        return parse_php_form(text, max_fields=MAX_FIELDS, max_depth=MAX_DEPTH)
    except FormError as e:
        raise BadRequest(str(e)) from None


def _same(given: Any, stored: str | None) -> bool:
    """Constant-time equality of a presented secret and the stored one (absent never matches)."""
    if not stored:
        return False
    return hmac.compare_digest(str(given or "").encode("utf-8", "replace"), stored.encode("utf-8"))


class BitrixAppEndpoint:
    """The handlers (``connector.ports.AppEndpoint``); ``start`` re-registers robots, triggers and handlers."""

    def __init__(self, settings: "Settings", ctx: Context, store: "Store", *, wake: Callable[[float], None] | None = None,
                 recordings: Callable[[str], str | None] | None = None):
        cfg = settings.bitrix24
        assert cfg is not None and cfg.app is not None
        self.settings = settings
        self.cfg = cfg
        self.app = cfg.app
        self.ctx = ctx
        self.store = store
        self.wake = wake
        self.recordings = recordings
        self.listen = self.app.listen
        self.allow_from = list(self.app.allow_from)
        self.max_body_bytes = self.app.max_body_bytes
        self.counts: Counter = Counter()  # what arrived, by kind; "refused" for 401s
        self._lock = threading.Lock()  # one robot answer or install at a time (round robin must not pick twice)
        self._sink: Any = None
        self.owner = f"app-endpoint/{os.getpid()}"

    # ------------------------------------------------------------ lifecycle

    def mount(self, server: Any) -> None:
        server.add_route("POST", A.INSTALL_PATH, self.install)
        server.add_route("GET", A.APP_PATH, self.landing)
        server.add_route("POST", A.APP_PATH, self.landing)
        server.add_route("POST", A.EVENT_PATH, self.event)
        server.add_route("POST", A.ROBOT_PATH + "/{code}", self.robot)
        server.add_route("POST", A.SMS_PATH, self.sms)
        server.add_route("GET", A.RECORD_PATH + "/{call}/{sig}", self.record)

    def start(self) -> None:
        if not A.AppState.load(self.ctx).installed:
            try:
                portal = A.promote_pending(self.settings, self.ctx, self._now())
            except TransientError as e:
                portal = None
                log.error("bitrix24 application: cannot reach the OAuth server to complete the installation: %s", e)
            if portal is None:
                log.warning("bitrix24 application: not installed yet; waiting for the portal's ONAPPINSTALL")
                return
            log.warning("bitrix24 application installed on %s", portal.split("/")[2])
        try:
            for line in A.register(self.settings, self.ctx):
                log.warning("bitrix24 application: %s", line)
        except ConnectorError as e:
            log.error("bitrix24 application: registration failed (%s); it is retried on the next start", e)

    def stop(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    # ------------------------------------------------------------ helpers

    def _refuse(self, req: HttpRequest, status: int, why: str) -> HttpResponse:
        self.counts["refused"] += 1
        log.warning("bitrix24 application: %s %s refused from %s: %s (HTTP %d)", req.method, req.path.split("/")[2:3],
                    req.peer, why, status)
        return HttpResponse(status, json.dumps({"status": "error", "message": why}).encode(), close=True)

    def _parse(self, req: HttpRequest) -> dict[str, Any]:
        return parse_body(req.body, str(req.headers.get("Content-Type") or ""))

    def _verified(self, data: Mapping[str, Any]) -> bool:
        auth = data.get("auth")
        if not isinstance(auth, Mapping):
            return False
        state = A.AppState.load(self.ctx)
        ok_token = _same(auth.get("application_token"), state.application_token)
        ok_member = _same(auth.get("member_id"), state.member_id)
        return state.installed and ok_token and ok_member

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def sink(self) -> Any:
        if self._sink is None:
            from bitrix.sink import BitrixSink

            self._sink = BitrixSink(self.cfg, self.ctx)
        return self._sink

    def _act(self, actions: list[PlannedAction], run: list[str]) -> dict[str, ActionResult | UpstreamError | None]:
        """Journal ``actions`` (a key already there is left alone), then run the keys in ``run`` now:
        claimed in_flight first (compare-and-set: only one process ever sends them), recorded after."""
        journal = Journal(self.store)
        now = self._now()
        journal.record(actions, now, None)
        got = journal.claim(run, self.owner, now)
        todo = [a for a in actions if a.key in got]
        if not todo:
            return {}
        try:
            outcomes = self.sink().execute_batch(todo)
        except ConnectorError as e:  # not even sent: leave them for the daemon's executor
            outcomes = {a.key: UpstreamError(str(e), system=SYSTEM, ambiguous=True) for a in todo}
        changes = []
        for a in todo:
            out = outcomes.get(a.key)
            if isinstance(out, ActionResult):
                to = State(out.status) if out.status in ("done", "sent", "delivered") else State.DONE
                changes.append(Change(a.key, to, (State.IN_FLIGHT,), result=out))
            elif isinstance(out, UpstreamError) and not out.ambiguous:
                if isinstance(out, TransientError):  # refused before it ran: the daemon's executor retries it
                    changes.append(Change(a.key, State.RETRY_WAIT, (State.IN_FLIGHT,), detail=str(out)))
                else:
                    changes.append(Change(a.key, State.FAILED, (State.IN_FLIGHT,), detail=str(out)))
            elif a.type == "robot_reply":  # leaves nothing to look for: never resent
                why = str(out) if out is not None else "no answer"
                changes.append(Change(a.key, State.UNCERTAIN, (State.IN_FLIGHT,), detail=f"outcome unknown, not resent: {why}"))
            else:  # the daemon's executor looks for its effect before anything is resent
                changes.append(Change(a.key, State.RETRY_WAIT, (State.IN_FLIGHT,), detail=str(out or "no answer"), ambiguous=True))
        journal.apply(changes, self._now())
        return dict(outcomes)

    # ------------------------------------------------------------ the handler path (opened by nobody: API only)

    def landing(self, req: HttpRequest) -> HttpResponse:
        return HttpResponse(200, _("The connector's Bitrix24 application endpoint is running.").encode(), content_type="text/plain; charset=utf-8")

    # ------------------------------------------------------------ install

    def install(self, req: HttpRequest) -> HttpResponse:
        try:
            data = self._parse(req)
        except BadRequest as e:
            return self._refuse(req, 400, f"malformed: {e}")
        auth = data.get("auth") if isinstance(data.get("auth"), Mapping) else {}
        if str(data.get("event") or "").upper() != "ONAPPINSTALL":
            return self._refuse(req, 400, "not an ONAPPINSTALL request")
        refresh, member, token = (str(auth.get(k) or "") for k in ("refresh_token", "member_id", "application_token"))
        if not (refresh and member and token):
            return self._refuse(req, 401, "no tokens")
        with self._lock:
            state = A.AppState.load(self.ctx)
            if state.member_id and not _same(member, state.member_id):
                return self._refuse(req, 401, "another portal is installed")
            try:
                proof = A.exchange(self.app, refresh, timeout=min(30.0, self.cfg.timeout))
            except AuthError as e:
                if (e.code or "").lower() == "invalid_client" and not state.installed:
                    # saved in the portal before its client_id/client_secret reached the config: wait for them
                    A.keep_pending(self.ctx, refresh=refresh, member_id=member, application_token=token, now=self._now())
                    self.counts["pending"] += 1
                    log.warning("bitrix24 application: installation received, but bitrix24.app.client_id/client_secret "
                                "are not this application's yet; put the values the portal shows into the config and "
                                "restart: the installation is then completed")
                    return OK
                return self._refuse(req, 401, f"the tokens are not this application's: {e.code or e.message}")
            except TransientError as e:
                log.error("bitrix24 application: cannot reach the OAuth server to check the installation: %s", e)
                return HttpResponse(503, b'{"status":"error"}', close=True)
            if not _same(proof.get("member_id"), member) or not proof.get("client_endpoint"):
                return self._refuse(req, 401, "the OAuth server names another portal")
            A.save_install(self.ctx, member_id=member, application_token=token, endpoint=str(proof["client_endpoint"]),
                           access=str(proof["access_token"]), refresh=str(proof.get("refresh_token") or refresh),
                           user_id=m.to_int(proof.get("user_id")), now=self._now())
            self.counts["install"] += 1
            log.warning("bitrix24 application installed on %s", str(proof.get("client_endpoint")).split("/")[2])
            try:
                for line in A.register(self.settings, self.ctx):
                    log.warning("bitrix24 application: %s", line)
            except ConnectorError as e:
                log.error("bitrix24 application: registration failed (%s); it is retried on the next start", e)
        return OK

    # ------------------------------------------------------------ events

    def event(self, req: HttpRequest) -> HttpResponse:
        try:
            data = self._parse(req)
        except BadRequest as e:
            return self._refuse(req, 400, f"malformed: {e}")
        if not self._verified(data):
            return self._refuse(req, 401, "application_token or member_id does not match")
        name = str(data.get("event") or "").upper()
        if name == "ONAPPUNINSTALL":
            with self._lock:
                A.forget_install(self.ctx)
                self.stop()  # its client's tokens are revoked
            self.counts["uninstall"] += 1
            log.warning("bitrix24 application uninstalled: tokens forgotten")
            return OK
        if name == "ONOFFLINEEVENT":
            self._wake()
            return OK
        kind = ENTITY_EVENTS.get(name)
        payload = data.get("data") if isinstance(data.get("data"), Mapping) else {}
        fields = payload.get("FIELDS") if isinstance(payload.get("FIELDS"), Mapping) else {}
        rid = m.to_int(fields.get("ID"))
        if kind == "invoice" and m.to_int(fields.get("ENTITY_TYPE_ID")) not in (None, SMART_INVOICE):
            kind = None  # another smart process
        if kind is None or rid is None:
            self.counts["ignored"] += 1
            return OK
        self.store.mark_dirty(SYSTEM, [(kind, str(rid))], self._now())
        self.counts["event"] += 1
        self._wake()
        return OK

    def _wake(self) -> None:
        if self.wake is not None:
            self.wake(self.app.debounce_seconds)

    # ------------------------------------------------------------ robots

    def robot(self, req: HttpRequest) -> HttpResponse:
        code = req.params.get("code", "")
        try:
            data = self._parse(req)
        except BadRequest as e:
            return self._refuse(req, 400, f"malformed: {e}")
        if not self._verified(data):
            return self._refuse(req, 401, "application_token or member_id does not match")
        if code not in A.ROBOT_CODES or str(data.get("code") or code) != code:
            return self._refuse(req, 404, "unknown robot")
        token = str(data.get("event_token") or "")
        if not token:
            return self._refuse(req, 400, "no event_token")
        key = A.robot_key(code, token)
        journal = Journal(self.store)
        with self._lock:
            if key in journal.states_for([key]):
                self.counts["robot_repeat"] += 1
                return OK  # this event_token was handled (or is being handled): nothing twice
            document = data.get("document_id")
            entity = _document_key(document)
            props = data.get("properties") if isinstance(data.get("properties"), Mapping) else {}
            self.counts[f"robot:{code}"] += 1
            try:
                actions = getattr(self, f"_robot_{code.removeprefix('connector_')}")(key, token, entity, props)
            except ConnectorError as e:
                log.error("bitrix24 application: robot %s failed before answering: %s", code, e)
                return HttpResponse(500, b'{"status":"error"}', close=True)
            self._act(actions, [a.key for a in actions if a.system == SYSTEM])
        return OK

    def _reply(self, key: str, code: str, token: str, entity: str | None, values: dict, log_message: str,
               extra: dict | None = None, depends: list[str] | None = None) -> PlannedAction:
        return PlannedAction(key=key, rule=A.ROBOT_RULE, type="robot_reply", system=SYSTEM, subject_key=entity or key,
                             client_key=None, payload={"code": code, "event_token": token, "return_values": values,
                                                       "log_message": log_message, **(extra or {})},
                             reason=_("an answer to the portal's robot"), depends_on=depends or [])

    def _snapshot(self) -> Any:
        from connector.snapshot import load_snapshot

        return load_snapshot(self.settings, self.store, self._now())

    def _robot_pick_manager(self, key: str, token: str, entity: str | None, props: Mapping) -> list[PlannedAction]:
        from connector.rules.base import person_key

        code = "connector_pick_manager"
        releases = [r for r in self.settings.rules if r.type == "release"]
        wanted = str(props.get("rule") or "").strip()
        rule = next((r for r in releases if r.name == wanted), None) if wanted else (releases[0] if releases else None)
        with self._snapshot() as snap:
            if rule is None:
                msg = _("No release rule {name} in the connector's config: nobody was picked.").format(name=wanted or "")
                return [self._reply(key, code, token, entity, {}, msg)]
            client = snap.client(_client_of(snap, entity))
            pool = [person_key(snap, p) for p in rule.reassign.to]
            active = [p for p in pool if (mv := snap.managers.get(p)) is not None and mv.active]
            others = [p for p in active if client is None or p != client.responsible_key]
            candidates = others or active
            if not candidates:
                msg = _("No active manager in the pool of {rule}: nobody was picked.").format(rule=rule.name)
                return [self._reply(key, code, token, entity, {}, msg)]
            if rule.reassign.strategy == "least_loaded":
                load = snap.load
                picked = min(candidates, key=lambda p: (load.get(p, 0), pool.index(p)))
            else:
                count: Counter = Counter()
                for entries in snap.journal_for(A.ROBOT_RULE).values():
                    for e in entries:
                        if e.payload and e.payload.get("picked"):
                            count[e.payload["picked"]] += 1
                for entries in snap.journal_for(rule.name).values():
                    for e in entries:
                        if e.type == "reassign" and e.payload:
                            count[e.payload.get("to")] += 1
                picked = min(candidates, key=lambda p: (count[p], pool.index(p)))
            uid = picked.rsplit(":", 1)[-1]
            name = snap.managers[picked].name
        msg = _("Picked {name} from the pool of {rule}.").format(name=name, rule=rule.name)
        values = {"manager": f"user_{uid}", "manager_id": int(uid)}
        return [self._reply(key, code, token, entity, values, msg, {"picked": picked})]

    def _robot_mark_state(self, key: str, token: str, entity: str | None, props: Mapping) -> list[PlannedAction]:
        code = "connector_mark_state"
        state = str(props.get("state") or "").strip()
        with self._snapshot() as snap:
            client = _client_of(snap, entity)
        if not self.app.state_field:
            msg = _("bitrix24.app.state_field is not set in the connector's config: nothing was written.")
            return [self._reply(key, code, token, entity, {}, msg)]
        if client is None or not state:
            msg = _("No client and state to write: nothing was written.")
            return [self._reply(key, code, token, entity, {}, msg)]
        write = PlannedAction(key=f"{key}:field", rule=A.ROBOT_RULE, type="field", system=SYSTEM, subject_key=client,
                              client_key=client, payload={"entity": client, "fields": {self.app.state_field: state}},
                              reason=_("the portal's robot marked the client's state"))
        # the field first (a repeated delivery finds it journaled and does not write again), then the answer
        self._act([write], [write.key])
        if Journal(self.store).states_for([write.key]).get(write.key) in ("done", "in_flight"):
            msg = _("State {state} written to {client}.").format(state=state, client=client)
            return [self._reply(key, code, token, entity, {"client": client}, msg)]
        msg = _("State {state} could not be written to {client}; see the connector's journal.").format(state=state, client=client)
        return [self._reply(key, code, token, entity, {}, msg)]

    def _robot_send_sms(self, key: str, token: str, entity: str | None, props: Mapping) -> list[PlannedAction]:
        code = "connector_send_sms"
        text = str(props.get("text") or "").strip()
        with self._snapshot() as snap:
            client = snap.client(_client_of(snap, entity))
            phone = str(props.get("phone") or "").strip() or _mobile(client)
            blocked = _opted_out(self.settings, client)
        marketing = str(props.get("marketing") or "").upper() in ("Y", "1", "TRUE")
        if not text or not phone:
            return [self._reply(key, code, token, entity, {"status": "no_phone" if text else "no_text"},
                                _("Nothing sent: no phone or no text."))]
        if blocked:
            return [self._reply(key, code, token, entity, {"status": "opted_out"},
                                _("Nothing sent: the client opted out of messages."))]
        when = _allowed_time(self.settings, self._now())
        sms = PlannedAction(key=f"{key}:sms", rule=A.ROBOT_RULE, type="sms", system="sms", subject_key=client.key if client else phone,
                            client_key=client.key if client else None,
                            payload={"phone": phone, "text": text, "client_key": client.key if client else None, "marketing": marketing},
                            reason=_("the portal's robot asked for an SMS"), not_before=when if when > self._now() else None)
        values = {"status": "queued", "send_at": when.isoformat(timespec="seconds")}
        msg = _("SMS queued for {when}.").format(when=when.isoformat(timespec="minutes"))
        return [sms, self._reply(key, code, token, entity, values, msg)]

    # ------------------------------------------------------------ the SMS provider

    def sms(self, req: HttpRequest) -> HttpResponse:
        try:
            data = self._parse(req)
        except BadRequest as e:
            return self._refuse(req, 400, f"malformed: {e}")
        if not self._verified(data):
            return self._refuse(req, 401, "application_token or member_id does not match")
        mid = str(data.get("message_id") or "")
        props = data.get("properties") if isinstance(data.get("properties"), Mapping) else {}
        phone = str(data.get("message_to") or props.get("phone_number") or "").strip()
        text = str(data.get("message_body") or props.get("message_text") or "").strip()
        if not mid or not phone or not text:
            return self._refuse(req, 400, "no message_id, recipient or text")
        key = f"{A.SMS_RULE}:{mid}"
        journal = Journal(self.store)
        with self._lock:
            if key in journal.states_for([key]):
                return OK
            with self._snapshot() as snap:
                client = snap.client(_client_by_phone(snap, phone, self.settings.phone_region))
                blocked = _opted_out(self.settings, client)
            when = _allowed_time(self.settings, self._now())
            action = PlannedAction(key=key, rule=A.SMS_RULE, type="sms", system="sms", subject_key=client.key if client else phone,
                                   client_key=client.key if client else None,
                                   payload={"phone": phone, "text": text, "client_key": client.key if client else None, "marketing": False},
                                   reason=_("a message sent from the portal through the connector"),
                                   not_before=when if when > self._now() else None)
            journal.record([action], self._now(), None)
            if blocked:
                journal.cancel([key], self._now(), _("the client opted out of messages"))
        self.counts["sms"] += 1
        self._wake()
        return OK

    # ------------------------------------------------------------ recordings

    def record(self, req: HttpRequest) -> HttpResponse:
        call = req.params.get("call", "")
        sig = req.params.get("sig", "").removesuffix(".mp3")
        if not _same(sig, A.record_signature(self.app, call)):
            return self._refuse(req, 404, "unknown record")
        url = self.recordings(call) if self.recordings is not None else None
        if not url:
            return HttpResponse(404, b'{"status":"error","message":"no recording"}', close=True)
        return HttpResponse(302, b"", content_type="text/plain", headers={"Location": url, "Cache-Control": "no-store"})


# ---------------------------------------------------------------- lookups in the store


def _document_key(document: Any) -> str | None:
    """``["crm", "CCrmDocumentDeal", "DEAL_5"]`` -> ``bitrix24:deal:5``."""
    parts = [str(x) for x in document] if isinstance(document, list) else []
    if len(parts) != 3:
        return None
    word, _sep, num = parts[2].rpartition("_")
    kind = A.DOCUMENT_KINDS.get(word)
    return m.key(kind, num) if kind and num.isdigit() else None


def _client_of(snap: Any, entity: str | None) -> str | None:
    """The client a document belongs to: itself, or a deal's or invoice's client."""
    from connector.store import clients, deal_clients, invoices

    if not entity:
        return None
    kind = entity.split(":")[1]
    if kind in ("company", "contact"):
        return entity
    if kind == "deal":
        rows = snap.conn.execute(select(deal_clients.c.client_key, clients.c.kind)
                                 .join(clients, clients.c.key == deal_clients.c.client_key)
                                 .where(deal_clients.c.deal_key == entity)).all()
        rows = sorted(rows, key=lambda r: (r.kind != "company", r.client_key))
        return rows[0].client_key if rows else None
    if kind == "invoice":
        return snap.conn.execute(select(invoices.c.client_key).where(invoices.c.key == entity)).scalar()
    return None


def _client_by_phone(snap: Any, phone: str, region: str) -> str | None:
    from connector.phones import normalize
    from connector.store import client_phones, clients

    e164 = normalize(phone, region)
    if not e164:
        return None
    rows = snap.conn.execute(select(clients.c.key, clients.c.kind).join(client_phones, client_phones.c.client_key == clients.c.key)
                             .where(client_phones.c.phone == e164, clients.c.system == SYSTEM, clients.c.deleted.is_(False))).all()
    rows = sorted(rows, key=lambda r: (r.kind != "contact", r.key))
    return rows[0].key if rows else None


def _mobile(client: Any) -> str:
    from connector.phones import is_mobile

    if client is None or not client.phones:
        return ""
    return next((p for p in client.phones if is_mobile(p)), client.phones[0])


def _opted_out(settings: "Settings", client: Any) -> bool:
    msg = settings.messaging
    field = (msg.opt_out_field if msg else None) or (settings.bitrix24.opt_out_field if settings.bitrix24 else None)
    if not field or client is None:
        return False
    return str(client.fields.get(field, "")).strip().lower() in ("y", "yes", "1", "true", "on")


def _allowed_time(settings: "Settings", now: datetime) -> datetime:
    from connector.calendar import BusinessCalendar

    msg = settings.messaging
    cal = BusinessCalendar(settings.calendar, settings.timezone)
    return cal.next_allowed(now, msg.quiet_hours if msg else "21:00-09:00", msg.workdays_only if msg else True)
