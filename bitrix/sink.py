"""Write-back to Bitrix24: tasks, field changes, reassignment, comments, notifications,
automation triggers, workflows, closing the connector's own tasks, invoice and deal stages and
companies created from 1C, up to 50 commands a request; and files (the control report) uploaded to a
user's Drive, one request each.

The executor hands over every due action of a wave; they are packed into ``batch`` requests
(one command per action, one per entity for a reassignment), and each action's own outcome is
read from ``result`` / ``result_error``. A rejected command fails alone.

Exactly once: a task or a comment carries ``action.marker`` in its text, so it can be found
again (``reconcile_batch``, also batched) after a crash or an ambiguous failure (a timeout or a
5xx, after which the portal may still apply the write). Reassignment, field changes and closing
a task are idempotent and reconciled by reading the entity back. Notifications, triggers and
workflows leave nothing to search for: when their outcome is unknown they are reported, never
resent.

Stages move forward only: the invoices and deals of a batch are read just before it (one read
request per 50), and one already paid, declined or closed — by a person since the sync — is left
alone (its action is done, nothing written). An invoice's paid stage is the success stage (``S``)
of its own funnel (``crm.status.list`` ``SMART_INVOICE_STAGE_<funnel>``), unless the rule names
one. A company created from 1C carries its 1C GUID in the configured field and is found by it again
(``crm.company.list``); its tax id requisite is chained to it in the same batch (``$result``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bitrix import mapping as m
from bitrix.client import SYSTEM, BatchReply, BitrixClient
from connector.config import Bitrix24
from connector.errors import (
    NotFound,
    PermanentError,
    RateLimited,
    Rejected,
    TransientError,
    UpstreamError,
)
from connector.i18n import _
from connector.ports import ActionResult, Context, Outcome, PlannedAction

log = logging.getLogger("bitrix.sink")

TYPES = frozenset({"task", "field", "reassign", "comment", "notify", "trigger", "workflow", "close_task", "disk_upload", "invoice",
                   "invoice_stage", "deal_stage", "create_company"})
APP_TYPES = frozenset({"call_log", "robot_reply", "sms_status"})  # application mode only (bitrix.app)
CMD0 = "{cmd0}"  # in a command's parameters: the batch label of the action's first command (for $result references)
SMART_INVOICE = 31  # crm.item entityTypeId of (new) invoices
STAGE_TYPES = frozenset({"invoice_stage", "deal_stage"})
BATCH = 50  # commands per batch request (the portal's limit)
RATE_RETRIES = 3  # a command refused for load inside a batch is resent this many times before the executor waits
RECONCILE_PAGES = 10  # newest 500 tasks/comments of one binding are searched for a marker
TASK_DONE = 5


def _manager_id(manager_key: Any) -> int:
    """``bitrix24:user:15`` -> 15 (a manager of another system cannot be assigned here)."""
    system, kind, sid = str(manager_key).split(":", 2) if str(manager_key).count(":") >= 2 else ("", "", "")
    if system != SYSTEM or kind != "user" or not sid.isdigit():
        raise Rejected(f"not a Bitrix24 user: {manager_key}", system=SYSTEM)
    return int(sid)


def _entity(entity_key: Any, kinds: tuple[str, ...] = tuple(m.KIND_PREFIX)) -> tuple[str, int]:
    """``bitrix24:company:12`` -> ("company", 12); a key this action cannot target is Rejected."""
    try:
        kind, sid = m.entity_parts(str(entity_key))
    except ValueError as e:
        raise Rejected(str(e), system=SYSTEM) from None
    if kind not in kinds:
        raise Rejected(f"{kind} is not supported here: {entity_key}", system=SYSTEM)
    return kind, int(sid)


def _bindings(keys: Any) -> list[str]:
    """``UF_CRM_TASK`` values of the Bitrix24 keys among ``keys`` (other systems' keys skipped)."""
    out: list[str] = []
    for k in keys or []:
        if str(k).startswith(SYSTEM + ":"):
            _entity(k)
            b = m.binding_of(str(k))
            if b not in out:
                out.append(b)
    return out


def comment_text(text: str, marker: str) -> str:
    """The comment as posted: the text, then the marker on a quiet last line."""
    return text if marker in text else f"{text.rstrip()}\n\n· {marker}"


def _task_id(key: Any) -> int:
    parts = str(key).split(":", 2)
    if len(parts) != 3 or parts[0] != SYSTEM or parts[1] != "task" or not parts[2].isdigit():
        raise Rejected(f"not a Bitrix24 task: {key}", system=SYSTEM)
    return int(parts[2])


@dataclass(frozen=True)
class _Ref:
    """A value a later command of the same action takes from an earlier one's result, resolved by
    the portal inside the batch (``$result[<label>][item][id]``)."""

    command: int
    path: tuple[str, ...]


def _resolve(value: Any, ref: Callable[[_Ref], str]) -> Any:
    if isinstance(value, _Ref):
        return ref(value)
    if isinstance(value, Mapping):
        return {k: _resolve(v, ref) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, ref) for v in value]
    return value


@dataclass
class _Plan:
    """The commands of one action and how to turn their replies into its outcome."""

    action: PlannedAction
    commands: list[tuple[str, dict]] = field(default_factory=list)
    finish: Callable[[list[Any]], ActionResult] | None = None  # results of the commands, in order -> result
    tolerate_missing: bool = False  # a command on an entity deleted meanwhile is skipped (reassign)
    at_most_once: bool = False  # leaves no trace: an unknown outcome is never resent
    error: UpstreamError | None = None  # refused before any call (bad payload)
    optional: frozenset[int] = frozenset()  # commands whose error is handed to finish instead of failing the action
    refs: bool = False  # its parameters name the first command's label as {cmd0} ($result chaining)
    soft_tail: bool = False  # once the first command succeeded, a later one's error is passed to finish, never a failure


class BitrixSink:
    """``connector.ports.Sink`` for Bitrix24."""

    system = SYSTEM
    batch_size = BATCH

    def __init__(self, settings: Bitrix24, ctx: Context, client: BitrixClient | None = None):
        self.cfg = settings
        self.app_mode = settings.app is not None
        self.client = client or BitrixClient(settings, ctx)
        self._stages: dict[int, dict[str, str]] = {}  # invoice funnel -> {stage id: P|S|F}
        self._current: dict[str, Mapping[str, Any]] = {}  # invoice/deal key -> its row, read just before the write

    def supports(self, action_type: str) -> bool:
        return action_type in TYPES or (self.app_mode and action_type in APP_TYPES)

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------ execute

    def execute(self, action: PlannedAction) -> ActionResult:
        """One action (tests, tools): its outcome, raised when it is an error."""
        out = self.execute_batch([action])[action.key]
        if isinstance(out, UpstreamError):
            raise out
        return out

    def execute_batch(self, actions: list[PlannedAction]) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        plans: list[_Plan] = []
        for a in [a for a in actions if a.type == "disk_upload"]:  # a file is no batch command: its own request
            try:
                out[a.key] = self._upload(a)
            except UpstreamError as e:
                out[a.key] = e
        try:
            self._read_current([a for a in actions if a.type in STAGE_TYPES])
        except UpstreamError as e:  # nothing known about them: none of them is written
            out.update({a.key: e for a in actions if a.type in STAGE_TYPES})
            actions = [a for a in actions if a.type not in STAGE_TYPES]
        for a in [a for a in actions if a.type != "disk_upload"]:
            plan = self._plan(a)
            if plan.error is not None:
                out[a.key] = plan.error
            else:
                plans.append(plan)
        for attempt in range(RATE_RETRIES + 1):
            waits: list[float] = []
            for group in self._pack(plans):
                out.update(self._send(group))
            # a command the portal refused for load (503 request limit, 429 operating time) did not run: resend it
            again = [p for p in plans if isinstance(out.get(p.action.key), RateLimited) and not out[p.action.key].ambiguous]
            if not again or attempt == RATE_RETRIES:
                break
            waits = [out[p.action.key].retry_after or 1.0 for p in again]
            self.client.pause(max(waits))
            plans = again
        return out

    def _pack(self, plans: list[_Plan]) -> list[list[_Plan]]:
        """Whole actions per request, at most 50 commands; an action of more commands gets its own requests."""
        groups: list[list[_Plan]] = []
        cur: list[_Plan] = []
        size = 0
        for p in plans:
            n = len(p.commands)
            if cur and size + n > BATCH:
                groups.append(cur)
                cur, size = [], 0
            cur.append(p)
            size += n
        if cur:
            groups.append(cur)
        return groups

    def _send(self, group: list[_Plan]) -> dict[str, Outcome]:
        cmds: dict[str, tuple[str, dict]] = {}
        labels: dict[str, list[str]] = {}
        for i, p in enumerate(group):
            labels[p.action.key] = []
            for j, (method, params) in enumerate(p.commands):
                label = f"a{i}_{j}"
                params = _resolve(params, lambda r, i=i: f"$result[a{i}_{r.command}]" + "".join(f"[{x}]" for x in r.path))
                cmds[label] = (method, _with_label(params, f"a{i}_0") if p.refs else params)
                labels[p.action.key].append(label)
        replies: list[BatchReply] = []
        try:
            items = list(cmds.items())
            for k in range(0, len(items), BATCH):  # one action of more than 50 commands spans requests
                replies.append(self.client.write_batch(dict(items[k : k + BATCH])))
        except UpstreamError as e:
            if not replies:
                return {p.action.key: self._whole_failure(p, e) for p in group}
            # a later part of a long action failed: that action is half-applied, others are whole
            replies.append(BatchReply(errors={lab: e for lab in cmds if not any(lab in r.results or lab in r.errors for r in replies)}))
        reply = BatchReply()
        for r in replies:
            reply.results.update(r.results)
            reply.errors.update(r.errors)
        return {p.action.key: self._outcome(p, [(lab, reply) for lab in labels[p.action.key]]) for p in group}

    def _whole_failure(self, p: _Plan, e: UpstreamError) -> UpstreamError:
        if p.at_most_once and e.ambiguous:
            return PermanentError(f"outcome unknown, not resent: {e.message}", system=SYSTEM, obj=e.obj, code=e.code,
                                  status=e.status, ambiguous=True)
        return e

    def _outcome(self, p: _Plan, parts: list[tuple[str, BatchReply]]) -> Outcome:
        results: list[Any] = []
        missing: list[str] = []
        for n, (label, reply) in enumerate(parts):
            err = reply.errors.get(label)
            if err is not None and n in p.optional:
                results.append(err)
                continue
            if err is None:
                if label not in reply.results:
                    err = TransientError("no result for this command in the batch reply", system=SYSTEM,
                                         obj=p.commands[int(label.split("_")[1])][0], ambiguous=True)
                else:
                    results.append(reply.results[label])
                    continue
            if isinstance(err, NotFound) and p.tolerate_missing:
                missing.append(label)
                results.append(None)
                continue
            if p.soft_tail and n > 0:  # the record exists: a detail it lacks must not make a retry create it twice
                results.append(err)
                continue
            return self._whole_failure(p, err)
        if p.tolerate_missing and len(missing) == len(parts):
            return NotFound("none of the entities exist any more", system=SYSTEM, obj=p.action.key)
        assert p.finish is not None
        try:
            return p.finish(results)
        except UpstreamError as e:
            return e

    # ------------------------------------------------------------ one action -> commands

    def _plan(self, a: PlannedAction) -> _Plan:
        try:
            builder = getattr(self, f"_cmd_{a.type}", None)
            if builder is None:
                raise Rejected(f"action type {a.type} is not supported", system=SYSTEM)
            return builder(a, a.payload)
        except UpstreamError as e:
            return _Plan(a, error=e)

    def _cmd_task(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        description = str(p.get("description") or "")
        if a.marker not in description:
            description = f"{description.rstrip()}\n\n{a.marker}".lstrip()
        fields: dict[str, Any] = {
            "TITLE": str(p.get("title") or "").strip() or "Follow up",
            "DESCRIPTION": description,
            "RESPONSIBLE_ID": _manager_id(p.get("responsible")),
        }
        if p.get("deadline"):
            fields["DEADLINE"] = str(p["deadline"])
        bindings = _bindings(p.get("bindings"))
        if bindings:
            fields["UF_CRM_TASK"] = bindings

        def finish(res: list[Any]) -> ActionResult:
            task = res[0].get("task") if isinstance(res[0], Mapping) else None
            tid = (task or {}).get("id", (task or {}).get("ID"))
            return ActionResult(remote_id=str(tid) if tid is not None else None, detail="task created",
                                remote_key=m.key("task", tid) if tid is not None else None)

        return _Plan(a, [("tasks.task.add", {"fields": fields})], finish)

    def _cmd_field(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        kind, eid = _entity(p.get("entity"), m.LEGACY_KINDS)
        fields = dict(p.get("fields") or {})
        if not fields:
            raise Rejected("no fields to set", system=SYSTEM, obj=f"crm.{kind}.update id={eid}")
        cmd = (f"crm.{kind}.update", {"id": eid, "fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}})
        return _Plan(a, [cmd], lambda res: ActionResult(remote_id=str(eid), detail=f"{kind} {eid}: {', '.join(sorted(fields))} set"))

    def _cmd_reassign(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        """Every entity in one request; an entity deleted meanwhile is skipped, not fatal. A
        reassignment that half-applied (a command failed) is retried as a whole: it is idempotent."""
        to = _manager_id(p.get("to"))
        entities = [_entity(k, m.LEGACY_KINDS) for k in p.get("entities") or []]
        if not entities:
            raise Rejected("nothing to reassign", system=SYSTEM)
        cmds = [(f"crm.{kind}.update", {"id": eid, "fields": {"ASSIGNED_BY_ID": to}, "params": {"REGISTER_SONET_EVENT": "N"}})
                for kind, eid in entities]

        def finish(res: list[Any]) -> ActionResult:
            moved = [f"{k} {e}" for (k, e), r in zip(entities, res, strict=True) if r is not None]
            gone = [f"{k} {e}" for (k, e), r in zip(entities, res, strict=True) if r is None]
            detail = f"assigned to user {to}: {', '.join(moved)}" + (f"; not found: {', '.join(gone)}" if gone else "")
            return ActionResult(remote_id=str(to), detail=detail)

        return _Plan(a, cmds, finish, tolerate_missing=True)

    def _cmd_comment(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        kind, eid = _entity(p.get("entity"), m.LEGACY_KINDS)
        text = str(p.get("text") or "").strip()
        if not text:
            raise Rejected("empty comment", system=SYSTEM, obj=f"crm.timeline.comment.add {kind}={eid}")
        cmd = ("crm.timeline.comment.add", {"fields": {"ENTITY_ID": eid, "ENTITY_TYPE": kind, "COMMENT": comment_text(text, a.marker)}})
        return _Plan(a, [cmd], lambda res: ActionResult(remote_id=str(res[0]), detail=f"comment on {kind} {eid}",
                                                         remote_key=m.key("comment", res[0])))

    def _cmd_notify(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        uid = _manager_id(p.get("user"))
        text = str(p.get("text") or "").strip()
        if not text:
            raise Rejected("empty notification", system=SYSTEM, obj=f"im.notify.system.add user={uid}")

        def finish(res: list[Any]) -> ActionResult:
            if res[0] is False:
                raise Rejected("notification refused", system=SYSTEM, obj=f"im.notify.system.add user={uid}")
            return ActionResult(remote_id=str(res[0]), status="sent", detail=f"notified user {uid}")

        return _Plan(a, [("im.notify.system.add", {"USER_ID": uid, "MESSAGE": text})], finish, at_most_once=True)

    def _cmd_trigger(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        if self.app_mode:
            return self._app_trigger(a, p)
        kind, eid = _entity(p.get("entity"))
        target = f"{m.KIND_WORD[kind]}_{eid}"
        code = str(p.get("code") or "")
        return _Plan(a, [("crm.automation.trigger", {"target": target, "code": code})],
                     lambda res: ActionResult(remote_id=target, detail=f"trigger {code} fired on {target}"), at_most_once=True)

    def _app_trigger(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        """The application's own trigger (``crm.automation.trigger.execute``). Automation exists on
        deals, smart invoices, leads, quotes and SPAs, not on companies or contacts: a client's trigger
        fires on the finding's own deal or invoice, else on the client's open deal."""
        code = str(p.get("code") or "")
        targets = [str(k) for k in [p.get("subject"), *(p.get("deals") or []), p.get("entity")] if k]
        for k in targets:
            try:
                kind, eid = m.entity_parts(k)
            except ValueError:
                continue
            owner_type = AUTOMATION_OWNER_TYPES.get(kind)
            if owner_type is not None:
                target = f"{m.KIND_WORD[kind]}_{eid}"
                return _Plan(a, [("crm.automation.trigger.execute", {"CODE": code, "OWNER_TYPE_ID": owner_type, "OWNER_ID": int(eid)})],
                             lambda res, t=target: ActionResult(remote_id=t, detail=_("trigger {code} fired on {target}").format(code=code, target=t)),
                             at_most_once=True)
        raise Rejected(_("trigger {code}: the client has no open deal or invoice to fire it on (the portal's automation "
                         "exists on deals, smart invoices, leads and quotes, not on companies or contacts)").format(code=code),
                       system=SYSTEM, obj=str(p.get("entity")))

    def _cmd_call_log(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        """A PBX call on the client card: register, finish (duration, status, the manager) and attach
        the record link, in one batch chained by ``$result``. ``EXTERNAL_CALL_ID`` is the PBX's call id:
        the portal answers a repeated registration with the same ``CALL_ID`` for 30 minutes, and
        ``voximplant.statistic.get`` finds the finished call by it (reconcile)."""
        user = int(p.get("user") or 0)
        if not user:
            raise Rejected(_("no portal user to register the call for"), system=SYSTEM, obj="telephony.externalcall.register")
        reg: dict[str, Any] = {"USER_ID": user, "PHONE_NUMBER": str(p.get("phone") or ""), "TYPE": int(p.get("type") or 2),
                               "CALL_START_DATE": str(p.get("start") or ""), "SHOW": 0, "ADD_TO_CHAT": 0,
                               "EXTERNAL_CALL_ID": str(p.get("external_id") or "")}
        if p.get("entity"):
            kind, eid = _entity(p.get("entity"), ("company", "contact"))
            reg |= {"CRM_ENTITY_TYPE": kind.upper(), "CRM_ENTITY_ID": eid}
        elif p.get("create"):
            reg["CRM_CREATE"] = 1
        ref = f"$result[{CMD0}][CALL_ID]"
        cmds = [("telephony.externalcall.register", reg),
                ("telephony.externalcall.finish", {"CALL_ID": ref, "USER_ID": user, "DURATION": int(p.get("duration") or 0),
                                                   "STATUS_CODE": str(p.get("status") or "200"), "ADD_TO_CHAT": 0})]
        if p.get("record"):
            cmds.append(("telephony.externalcall.attachRecord", {"CALL_ID": ref, "RECORD_URL": str(p["record"]),
                                                                 "FILENAME": f"{reg['EXTERNAL_CALL_ID']}.mp3"}))

        def finish(res: list[Any]) -> ActionResult:
            call_id = str((res[0] or {}).get("CALL_ID") or "") if isinstance(res[0], Mapping) else ""
            fin = res[1] if isinstance(res[1], Mapping) else {}
            where = f"{reg.get('CRM_ENTITY_TYPE', '').lower()} {reg.get('CRM_ENTITY_ID', '')}".strip() or "-"
            detail = _("call {call} on the card of {client} (activity {activity})").format(
                call=reg["EXTERNAL_CALL_ID"], client=where, activity=fin.get("CRM_ACTIVITY_ID"))
            if len(res) > 2 and isinstance(res[2], UpstreamError):
                detail += "; " + _("record not attached: {error}").format(error=res[2].message)
            return ActionResult(remote_id=call_id or None, detail=detail)

        return _Plan(a, cmds, finish, optional=frozenset({2}), refs=True)

    def _cmd_robot_reply(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        """A robot's answer to the workflow waiting for it: at most once per ``event_token``."""
        params: dict[str, Any] = {"EVENT_TOKEN": str(p.get("event_token") or "")}
        if p.get("return_values"):
            params["RETURN_VALUES"] = dict(p["return_values"])
        if p.get("log_message"):
            params["LOG_MESSAGE"] = str(p["log_message"])
        code = str(p.get("code") or "")
        return _Plan(a, [("bizproc.event.send", params)],
                     lambda res: ActionResult(remote_id=code, detail=_("robot {code} answered").format(code=code)), at_most_once=True)

    def _cmd_sms_status(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        status = str(p.get("status") or "")
        params = {"CODE": str(p.get("code") or ""), "MESSAGE_ID": str(p.get("message_id") or ""), "STATUS": status}
        return _Plan(a, [("messageservice.message.status.update", params)],
                     lambda res: ActionResult(remote_id=params["MESSAGE_ID"], detail=_("message status {status} reported").format(status=status)))

    def _cmd_workflow(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        kind, eid = _entity(p.get("entity"))
        doc = ["crm", m.BIZPROC_DOCUMENT[kind], f"{m.KIND_WORD[kind]}_{eid}"]
        params: dict[str, Any] = {"TEMPLATE_ID": int(p.get("template_id") or 0), "DOCUMENT_ID": doc}
        if p.get("parameters"):
            params["PARAMETERS"] = dict(p["parameters"])
        return _Plan(a, [("bizproc.workflow.start", params)],
                     lambda res: ActionResult(remote_id=str(res[0]), detail=f"workflow {params['TEMPLATE_ID']} started on {doc[2]}"),
                     at_most_once=True)

    def _cmd_invoice(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        """A smart invoice (``crm.item.add``, entityTypeId 31) with the action's marker in its comments,
        then its product rows (``crm.item.productrow.set`` on the new invoice, ``ownerType`` SI) in the
        same batch. Once the invoice exists the action is done: rows that fail are reported, not retried."""
        fields: dict[str, Any] = {
            "title": str(p.get("title") or "").strip() or "Invoice",
            "opportunity": round(float(p.get("amount") or 0.0), 2),
            "isManualOpportunity": "Y",
            "comments": comment_text(str(p.get("comment") or "").strip(), a.marker).strip(),
        }
        for name, value in (("currencyId", p.get("currency")), ("begindate", p.get("issued")), ("closedate", p.get("due")),
                            ("stageId", p.get("stage"))):
            if value:
                fields[name] = value
        if p.get("responsible"):
            fields["assignedById"] = _manager_id(p.get("responsible"))
        for key_name, field_name, kind in (("company", "companyId", "company"), ("contact", "contactId", "contact"),
                                           ("deal", "parentId2", "deal")):
            if p.get(key_name) and str(p[key_name]).startswith(SYSTEM + ":"):
                fields[field_name] = _entity(p[key_name], (kind,))[1]
        if "companyId" not in fields and "contactId" not in fields:
            raise Rejected("an invoice needs a Bitrix24 company or contact", system=SYSTEM, obj="crm.item.add entityTypeId=31")
        cmds: list[tuple[str, dict]] = [("crm.item.add", {"entityTypeId": SMART_INVOICE, "fields": fields})]
        rows = []
        for n, r in enumerate(p.get("rows") or [], start=1):
            row: dict[str, Any] = {"productName": str(r.get("name") or ""), "price": float(r.get("price") or 0.0),
                                   "quantity": float(r.get("quantity") or 1.0), "sort": n * 10}
            if r.get("product_id") and str(r.get("system") or SYSTEM) == SYSTEM and str(r["product_id"]).isdigit():
                row["productId"] = int(r["product_id"])
            rows.append(row)
        if rows:
            cmds.append(("crm.item.productrow.set", {"ownerType": "SI", "ownerId": _Ref(0, ("item", "id")), "productRows": rows}))

        def finish(res: list[Any]) -> ActionResult:
            item = (res[0] or {}).get("item") if isinstance(res[0], Mapping) else None
            iid = (item or {}).get("id")
            if iid is None:
                raise TransientError("crm.item.add returned no item id", system=SYSTEM, obj="crm.item.add entityTypeId=31",
                                     ambiguous=True)
            detail = f"invoice {iid} created"
            if len(res) > 1 and isinstance(res[1], UpstreamError):
                detail += f"; its product rows were not set: {res[1].message}"
            elif len(res) > 1:
                detail += f" with {len(rows)} product row(s)"
            return ActionResult(remote_id=str(iid), detail=detail, remote_key=m.key("invoice", iid))

        return _Plan(a, cmds, finish, soft_tail=True)

    def _cmd_close_task(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        """The episode ended: a result comment on the connector's own task, then the task completed."""
        tid = _task_id(p.get("task"))
        cmds = []
        text = str(p.get("text") or "").strip()
        if text:
            cmds.append(("task.commentitem.add", {"TASKID": tid, "FIELDS": {"POST_MESSAGE": comment_text(text, a.marker)}}))
        cmds.append(("tasks.task.complete", {"taskId": tid}))
        return _Plan(a, cmds, lambda res: ActionResult(remote_id=str(tid), detail=f"task {tid} completed: the episode ended"),
                     tolerate_missing=True)

    # ------------------------------------------------------------ a file on a user's Drive

    def _drive_root(self, a: PlannedAction) -> tuple[int, int]:
        """The root folder of the user's Drive (``disk.storage.getlist`` filtered to that user's storage)."""
        uid = _manager_id(a.payload.get("user"))
        rows = self.client.result("disk.storage.getlist", {"filter": {"ENTITY_TYPE": "user", "ENTITY_ID": str(uid)}})
        row = next((r for r in rows or [] if isinstance(r, Mapping) and str(r.get("ENTITY_ID")) == str(uid)), None)
        if row is None:
            raise Rejected(f"the Bitrix24 Drive of user {uid} is not visible to the webhook's user (use that user's or an "
                           "administrator's webhook, with the disk scope)", system=SYSTEM, obj=f"disk.storage.getlist user={uid}")
        return uid, int(row["ROOT_OBJECT_ID"])

    def _find_file(self, folder: int, name: str) -> Mapping | None:
        rows = self.client.result("disk.folder.getchildren", {"id": folder, "filter": {"NAME": name}})
        return next((r for r in rows or [] if isinstance(r, Mapping) and r.get("NAME") == name), None)

    def _upload(self, a: PlannedAction) -> ActionResult:
        """Upload the file under its own deterministic name; a file of that name already there is the
        earlier upload of this very action (from a crash, or another store): adopted, not doubled."""
        name = str(a.payload.get("name") or "").strip()
        content = a.payload.get("content")
        if not name or content is None:
            raise Rejected("no file name or content", system=SYSTEM, obj=a.key)
        uid, root = self._drive_root(a)
        have = self._find_file(root, name)
        if have is not None:
            return ActionResult(remote_id=str(have.get("ID")), detail=f"already on the Drive of user {uid}: {name}")
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        res = self.client.result("disk.folder.uploadfile", {"id": root, "data": {"NAME": name},
                                                            "fileContent": [name, base64.b64encode(data).decode("ascii")],
                                                            "generateUniqueName": False}, idempotent=False)
        fid = (res or {}).get("ID") if isinstance(res, Mapping) else None
        return ActionResult(remote_id=str(fid) if fid is not None else None,
                            detail=f"uploaded to the Drive of user {uid}: {(res or {}).get('DETAIL_URL') or name}")
    def _cmd_invoice_stage(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        """To the paid stage, forward only: an invoice paid or declined since the sync is left alone."""
        _, iid = _entity(p.get("invoice"), ("invoice",))
        obj = f"crm.item.update entityTypeId={SMART_INVOICE} id={iid}"
        row = self._current.get(str(p.get("invoice")))
        if row is None:
            raise NotFound(f"invoice {iid} does not exist", system=SYSTEM, obj=obj)
        stage, funnel = str(row.get("stageId") or ""), self._funnel(row)
        now = m.invoice_outcome(stage, self._stages.get(funnel, {}))
        if now is not m.Outcome.OPEN:
            word = "paid" if now is m.Outcome.WON else "declined"
            return _Plan(a, [], lambda res: ActionResult(remote_id=str(iid), detail=f"invoice {iid} already {word} ({stage}): left alone"))
        target = str(p.get("to") or "") or next((sid for sid, sem in self._stages.get(funnel, {}).items() if sem == "S"), "")
        if not target:
            raise Rejected(f"invoice funnel {funnel} has no success stage (crm.status.list SMART_INVOICE_STAGE_{funnel})",
                           system=SYSTEM, obj=obj)

        def finish(res: list[Any]) -> ActionResult:
            item = (res[0] or {}).get("item") if isinstance(res[0], Mapping) else None
            moved = str((item or {}).get("stageId") or target)
            return ActionResult(remote_id=str(iid), detail=f"invoice {iid} moved from {stage} to {moved}")

        return _Plan(a, [("crm.item.update", {"entityTypeId": SMART_INVOICE, "id": iid, "fields": {"stageId": target}})], finish)

    def _cmd_deal_stage(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        """To the configured stage, forward only: a deal closed since the sync is left alone."""
        _, did = _entity(p.get("deal"), ("deal",))
        target = str(p.get("to") or "")
        row = self._current.get(str(p.get("deal")))
        if row is None:
            raise NotFound(f"deal {did} does not exist", system=SYSTEM, obj=f"crm.deal.update id={did}")
        stage, sem = str(row.get("STAGE_ID") or ""), str(row.get("STAGE_SEMANTIC_ID") or "P").upper()
        if stage == target or sem in ("S", "F"):
            return _Plan(a, [], lambda res: ActionResult(remote_id=str(did), detail=f"deal {did} already in {stage}: left alone"))
        cmd = ("crm.deal.update", {"id": did, "fields": {"STAGE_ID": target}, "params": {"REGISTER_SONET_EVENT": "N"}})
        return _Plan(a, [cmd], lambda res: ActionResult(remote_id=str(did), detail=f"deal {did} moved from {stage} to {target}"))

    def _cmd_create_company(self, a: PlannedAction, p: Mapping[str, Any]) -> _Plan:
        """The company with its 1C GUID, then its tax id requisite chained to it in the same batch. A
        refused requisite does not undo the company (it is reported in the result)."""
        guid_field, guid, title = str(p.get("guid_field") or ""), str(p.get("guid") or ""), str(p.get("title") or "").strip()
        if not guid_field or not guid or not title:
            raise Rejected("a company from 1C needs a title, its 1C GUID and bitrix24.guid_field", system=SYSTEM, obj="crm.company.add")
        comment = str(p.get("comment") or "").strip()
        fields: dict[str, Any] = {"TITLE": title, guid_field: guid, "OPENED": "Y",
                                  "COMMENTS": f"{comment} [{a.marker}]".strip()}
        if p.get("responsible"):
            fields["ASSIGNED_BY_ID"] = _manager_id(p["responsible"])
        if p.get("phones"):
            fields["PHONE"] = [{"VALUE": str(v), "VALUE_TYPE": "WORK"} for v in p["phones"]]
        if p.get("emails"):
            fields["EMAIL"] = [{"VALUE": str(v), "VALUE_TYPE": "WORK"} for v in p["emails"]]
        cmds: list[tuple[str, dict]] = [("crm.company.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}})]
        tax = m.digits(p.get("tax_id"))
        if tax:
            cmds.append(("crm.requisite.add", {"fields": {
                "ENTITY_TYPE_ID": m.TYPE_IDS["company"], "ENTITY_ID": _Ref(0, ()), "PRESET_ID": int(p.get("preset") or 1),
                "NAME": title[:150], "RQ_COMPANY_NAME": title, requisite_field(tax): tax}}))

        def finish(res: list[Any]) -> ActionResult:
            cid = m.to_int(res[0])
            if cid is None:
                raise TransientError("crm.company.add returned no id", system=SYSTEM, obj="crm.company.add", ambiguous=True)
            detail = f"company {cid} created from 1C counterparty {guid}"
            if len(res) > 1 and isinstance(res[1], UpstreamError):
                log.warning("bitrix24: company %s was created, its tax id requisite was refused: %s", cid, res[1])
                detail += f"; its tax id requisite was refused: {res[1].message}"
            elif len(res) > 1:
                detail += f" with tax id requisite {res[1]}"
            return ActionResult(remote_id=str(cid), detail=detail, remote_key=m.key("company", cid))

        return _Plan(a, cmds, finish, optional=frozenset({1}))

    # ------------------------------------------------------------ what stages are, and where things are now

    def _funnel(self, row: Mapping[str, Any]) -> int:
        cat = m.to_int(row.get("categoryId"))
        if cat is None:
            head = str(row.get("stageId") or "").split(":", 1)[0]
            cat = m.to_int(head.rsplit("_", 1)[-1]) if head.startswith("DT31_") else None
        return cat or 0

    def _read_current(self, actions: list[PlannedAction]) -> None:
        """Where the invoices and deals of ``actions`` are now, and their funnels' stages: one read
        batch (a second one only for funnels first seen in the rows)."""
        self._current = {}
        if not actions:
            return
        invoices = sorted({_entity(a.payload.get("invoice"), ("invoice",))[1] for a in actions if a.type == "invoice_stage"
                           and _ok_entity(a.payload.get("invoice"), "invoice")})
        deals = sorted({_entity(a.payload.get("deal"), ("deal",))[1] for a in actions if a.type == "deal_stage"
                        and _ok_entity(a.payload.get("deal"), "deal")})
        funnels = {m.to_int(a.payload.get("funnel")) for a in actions if a.type == "invoice_stage"} - {None}
        cmds: dict[str, tuple[str, dict]] = {}
        for n in range(0, len(invoices), BATCH):
            cmds[f"i{n}"] = ("crm.item.list", {"entityTypeId": SMART_INVOICE, "filter": {"@id": invoices[n:n + BATCH]},
                                               "select": ["id", "stageId", "categoryId"], "start": -1})
        for n in range(0, len(deals), BATCH):
            cmds[f"d{n}"] = ("crm.deal.list", {"filter": {"@ID": deals[n:n + BATCH]},
                                               "select": ["ID", "STAGE_ID", "STAGE_SEMANTIC_ID", "CATEGORY_ID"], "start": -1})
        cmds.update(self._stage_commands(funnels))
        rows = self._read(cmds)
        for label, result in rows.items():
            if label.startswith("i"):
                for r in (result or {}).get("items") or [] if isinstance(result, Mapping) else []:
                    self._current[m.key("invoice", r.get("id"))] = r
            elif label.startswith("d"):
                for r in result or []:
                    if isinstance(r, Mapping):
                        self._current[m.key("deal", r.get("ID"))] = r
        more = self._stage_commands({self._funnel(r) for k, r in self._current.items() if ":invoice:" in k})
        if more:
            self._read(more)

    def _stage_commands(self, funnels: set) -> dict[str, tuple[str, dict]]:
        return {f"s{f}": ("crm.status.list", {"filter": {"ENTITY_ID": f"SMART_INVOICE_STAGE_{f}"}, "order": {"SORT": "ASC"}})
                for f in sorted(funnels) if f is not None and f not in self._stages}

    def _read(self, cmds: dict[str, tuple[str, dict]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        items = list(cmds.items())
        for k in range(0, len(items), BATCH):
            reply = self.client.batch(dict(items[k:k + BATCH]))
            for label, err in reply.errors.items():
                if label.startswith("s"):
                    log.warning("bitrix24: invoice stages of funnel %s unavailable: %s", label[1:], err)
                else:
                    raise err
            for label, result in reply.results.items():
                if label.startswith("s"):
                    self._stages[int(label[1:])] = m.stage_semantics(r for r in result or [] if isinstance(r, Mapping))
                else:
                    out[label] = result
        return out

    # ------------------------------------------------------------ reconcile

    def reconcile(self, action: PlannedAction) -> ActionResult | None:
        out = self.reconcile_batch([action])[action.key]
        if isinstance(out, UpstreamError):
            raise out
        return out

    def reconcile_batch(self, actions: list[PlannedAction]) -> dict[str, ActionResult | None | UpstreamError]:
        out: dict[str, ActionResult | None | UpstreamError] = {}
        probes: list[_Probe] = []
        for a in [a for a in actions if a.type == "disk_upload"]:  # the file is found by its name
            try:
                _uid, root = self._drive_root(a)
                have = self._find_file(root, str(a.payload.get("name") or ""))
                out[a.key] = ActionResult(remote_id=str(have.get("ID")), detail="file found on the Drive") if have else None
            except UpstreamError as e:
                out[a.key] = e
        funnels = {m.to_int(a.payload.get("funnel")) for a in actions if a.type == "invoice_stage"} - {None}
        try:
            self._read(self._stage_commands(funnels))
        except UpstreamError as e:  # an invoice's stage cannot be judged without its funnel's stages
            out.update({a.key: e for a in actions if a.type == "invoice_stage"})
            actions = [a for a in actions if a.type != "invoice_stage"]
        for a in [a for a in actions if a.type != "disk_upload"]:
            try:
                probe = self._probe(a)
            except UpstreamError as e:
                out[a.key] = e
                continue
            probes.append(probe)
        rounds = 0
        while probes:
            rounds += 1
            cmds: dict[str, tuple[str, dict]] = {}
            owners: dict[str, tuple[_Probe, int]] = {}
            for i, pr in enumerate(probes):
                for j, cmd in enumerate(pr.next_commands()):
                    cmds[f"r{i}_{j}"] = cmd
                    owners[f"r{i}_{j}"] = (pr, j)
            replies: dict[int, list[Any]] = {}
            errors: dict[int, UpstreamError] = {}
            items = list(cmds.items())
            for k in range(0, len(items), BATCH):
                try:
                    reply = self.client.batch(dict(items[k : k + BATCH]))
                except UpstreamError as e:
                    for label, _ in items[k : k + BATCH]:
                        errors[id(owners[label][0])] = e
                    continue
                for label, _ in items[k : k + BATCH]:
                    pr, j = owners[label]
                    err = reply.errors.get(label)
                    if err is not None and not isinstance(err, NotFound):
                        errors[id(pr)] = err
                    replies.setdefault(id(pr), []).append((j, None if err is not None else reply.results.get(label), reply))
            still = []
            for pr in probes:
                if id(pr) in errors:
                    out[pr.action.key] = errors[id(pr)]
                    continue
                parts = sorted(replies.get(id(pr), []), key=lambda t: t[0])
                verdict = pr.feed([r for _, r, _ in parts])
                if verdict is _MORE:
                    if rounds >= RECONCILE_PAGES:
                        out[pr.action.key] = PermanentError("marker not within the newest records; cannot tell",
                                                            system=SYSTEM, obj=pr.action.key)
                    else:
                        still.append(pr)
                else:
                    out[pr.action.key] = verdict
            probes = still
        return out

    def _probe(self, a: PlannedAction) -> _Probe:
        p = a.payload
        if a.type == "task":
            bindings = _bindings(p.get("bindings"))
            filt = {"UF_CRM_TASK": bindings[0]} if bindings else {"RESPONSIBLE_ID": _manager_id(p.get("responsible")),
                                                                   "TITLE": str(p.get("title") or "")}
            return _ListProbe(a, "tasks.task.list", filt, ["ID", "TITLE", "DESCRIPTION", "UF_CRM_TASK"], wrap="tasks", rid="id",
                              text=("description", "DESCRIPTION"), kind="task")
        if a.type == "comment":
            kind, eid = _entity(p.get("entity"), m.LEGACY_KINDS)
            return _ListProbe(a, "crm.timeline.comment.list", {"ENTITY_ID": eid, "ENTITY_TYPE": kind}, ["ID", "COMMENT"],
                              wrap=None, rid="ID", text=("COMMENT",), kind="comment")
        if a.type == "reassign":
            to = _manager_id(p.get("to"))
            entities = [_entity(k, m.LEGACY_KINDS) for k in p.get("entities") or []]
            return _ReadProbe(a, [(f"crm.{k}.get", {"id": e}) for k, e in entities],
                              lambda rows: all(r is None or m.to_int(r.get("ASSIGNED_BY_ID")) == to for r in rows),
                              ActionResult(remote_id=str(to), detail="already assigned"))
        if a.type == "field":
            kind, eid = _entity(p.get("entity"), m.LEGACY_KINDS)
            want = dict(p.get("fields") or {})
            return _ReadProbe(a, [(f"crm.{kind}.get", {"id": eid})],
                              lambda rows: rows[0] is None or all(_same(rows[0].get(k), v) for k, v in want.items()),
                              ActionResult(remote_id=str(eid), detail="fields already set"))
        if a.type == "invoice":
            filt: dict[str, Any] = {}
            if p.get("deal") and str(p["deal"]).startswith(SYSTEM + ":"):
                filt["parentId2"] = _entity(p["deal"], ("deal",))[1]
            elif p.get("company") and str(p["company"]).startswith(SYSTEM + ":"):
                filt["companyId"] = _entity(p["company"], ("company",))[1]
            return _ListProbe(a, "crm.item.list", filt, ["id", "comments"], wrap="items", rid="id", text=("comments",),
                              kind="invoice", fid="id", params={"entityTypeId": SMART_INVOICE})
        if a.type == "close_task":
            tid = _task_id(p.get("task"))
            return _ReadProbe(a, [("tasks.task.get", {"taskId": tid, "select": ["ID", "STATUS"]})],
                              lambda rows: rows[0] is None or m.to_int(((rows[0] or {}).get("task") or {}).get("status")) == TASK_DONE,
                              ActionResult(remote_id=str(tid), detail="task already completed"))
        if a.type == "call_log":
            return _CallProbe(a, str(p.get("external_id") or ""))
        if a.type == "sms_status":
            return _NeverDone(a)
        if a.type == "invoice_stage":
            _, iid = _entity(p.get("invoice"), ("invoice",))
            return _ReadProbe(a, [("crm.item.get", {"entityTypeId": SMART_INVOICE, "id": iid})], self._invoice_moved(p),
                              ActionResult(remote_id=str(iid), detail="invoice already in a paid or final stage"))
        if a.type == "deal_stage":
            _, did = _entity(p.get("deal"), ("deal",))
            target = str(p.get("to") or "")
            return _ReadProbe(a, [("crm.deal.get", {"id": did})],
                              lambda rows: rows[0] is None or rows[0].get("STAGE_ID") == target
                              or str(rows[0].get("STAGE_SEMANTIC_ID") or "P").upper() in ("S", "F"),
                              ActionResult(remote_id=str(did), detail="deal already in its stage or closed"))
        if a.type == "create_company":
            field_name, guid = str(p.get("guid_field") or ""), str(p.get("guid") or "")
            if not field_name or not guid:
                raise PermanentError("a company from 1C without its GUID cannot be looked up", system=SYSTEM, obj=a.key)
            return _FoundProbe(a, "crm.company.list", {field_name: guid}, "company")
        raise PermanentError(f"cannot reconcile a {a.type} action (it leaves no marker)", system=SYSTEM, obj=a.key)

    def _invoice_moved(self, p: Mapping[str, Any]) -> Callable[[list[Any]], bool]:
        """Done when the invoice is gone, in the stage asked for, or in a final stage of its funnel."""
        def done(rows: list[Any]) -> bool:
            item = (rows[0] or {}).get("item") if rows and isinstance(rows[0], Mapping) else None
            if item is None:
                return rows[0] is None
            stage = str(item.get("stageId") or "")
            if p.get("to") and stage == p["to"]:
                return True
            return m.invoice_outcome(stage, self._stages.get(self._funnel(item), {})) is not m.Outcome.OPEN
        return done


_MORE = object()


class _Probe:
    action: PlannedAction

    def next_commands(self) -> list[tuple[str, dict]]:  # pragma: no cover - interface
        raise NotImplementedError

    def feed(self, results: list[Any]) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class _ListProbe(_Probe):
    """Newest first (``order ID DESC`` + keyset ``<ID``), looking for the marker in a text field."""

    def __init__(self, a: PlannedAction, method: str, filt: dict, select: list[str], *, wrap: str | None, rid: str,
                 text: tuple[str, ...], kind: str, fid: str = "ID", params: dict | None = None):
        self.action, self.method, self.filt, self.select = a, method, filt, select
        self.wrap, self.rid, self.text, self.kind = wrap, rid, text, kind
        self.fid, self.params = fid, dict(params or {})  # crm.item.* name the ID ``id`` and need entityTypeId
        self.last: int | None = None

    def next_commands(self) -> list[tuple[str, dict]]:
        f = dict(self.filt)
        if self.last is not None:
            f[f"<{self.fid}"] = self.last
        params: dict[str, Any] = {**self.params, "order": {self.fid: "DESC"}, "filter": f, "select": self.select}
        params["start"] = -1
        return [(self.method, params)]

    def feed(self, results: list[Any]) -> Any:
        res = results[0] if results else None
        rows = (res or {}).get(self.wrap) if self.wrap and isinstance(res, Mapping) else res
        rows = [r for r in rows or [] if isinstance(r, Mapping)]
        for r in rows:
            body = next((str(r.get(t)) for t in self.text if r.get(t) is not None), "")
            if self.action.marker in body:
                rid = r.get(self.rid, r.get(self.rid.upper(), r.get(self.rid.lower())))
                return ActionResult(remote_id=str(rid), detail=f"{self.kind} found by marker", remote_key=m.key(self.kind, rid))
        if len(rows) < 50:
            return None
        self.last = min(int(r.get(self.rid, r.get(self.rid.upper(), r.get(self.rid.lower())))) for r in rows)
        return _MORE


class _FoundProbe(_Probe):
    """A record the action creates, found by a field it carries (a company by its 1C GUID)."""

    def __init__(self, a: PlannedAction, method: str, filt: dict, kind: str):
        self.action, self.method, self.filt, self.kind = a, method, filt, kind

    def next_commands(self) -> list[tuple[str, dict]]:
        return [(self.method, {"filter": self.filt, "select": ["ID"], "order": {"ID": "ASC"}, "start": -1})]

    def feed(self, results: list[Any]) -> Any:
        rows = [r for r in (results[0] if results and isinstance(results[0], list) else []) if isinstance(r, Mapping)]
        if not rows:
            return None
        rid = rows[0].get("ID")
        return ActionResult(remote_id=str(rid), detail=f"{self.kind} {rid} found by its 1C GUID", remote_key=m.key(self.kind, rid))


class _ReadProbe(_Probe):
    """Read the entities back; ``done(rows)`` says whether the action's effect is already there."""

    def __init__(self, a: PlannedAction, commands: list[tuple[str, dict]], done: Callable[[list[Any]], bool], result: ActionResult):
        self.action, self.commands, self.done, self.result = a, commands, done, result

    def next_commands(self) -> list[tuple[str, dict]]:
        return self.commands

    def feed(self, results: list[Any]) -> Any:
        rows = [r if isinstance(r, Mapping) else None for r in results]
        return self.result if self.done(rows) else None


class _CallProbe(_Probe):
    """A registered-and-finished call is in the telephony statistics under its ``EXTERNAL_CALL_ID``."""

    def __init__(self, a: PlannedAction, external_id: str):
        self.action, self.external_id = a, external_id

    def next_commands(self) -> list[tuple[str, dict]]:
        return [("voximplant.statistic.get", {"FILTER": {"EXTERNAL_CALL_ID": self.external_id}})]

    def feed(self, results: list[Any]) -> Any:
        rows = results[0] if results and isinstance(results[0], list) else []
        row = next((r for r in rows if isinstance(r, Mapping) and str(r.get("EXTERNAL_CALL_ID")) == self.external_id), None)
        if row is None:
            return None
        return ActionResult(remote_id=str(row.get("CALL_ID") or ""), detail=_("call {call} already on the card (activity {activity})")
                            .format(call=self.external_id, activity=row.get("CRM_ACTIVITY_ID")))


class _NeverDone(_Probe):
    """Repeating it is harmless (a message status set again to the same value): resend."""

    def __init__(self, a: PlannedAction):
        self.action = a

    def next_commands(self) -> list[tuple[str, dict]]:
        return []

    def feed(self, results: list[Any]) -> Any:
        return None


def _with_label(params: Any, label: str) -> Any:
    """``{cmd0}`` in string values -> the batch label of the action's first command."""
    if isinstance(params, dict):
        return {k: _with_label(v, label) for k, v in params.items()}
    if isinstance(params, list):
        return [_with_label(v, label) for v in params]
    if isinstance(params, str) and CMD0 in params:
        return params.replace(CMD0, label)
    return params


AUTOMATION_OWNER_TYPES = {"deal": 2, "invoice": 31}


def requisite_field(tax_id: str) -> str:
    """Where a tax id goes: an 8-digit code is a Ukrainian EDRPOU, anything else an INN (ІПН, ИНН)."""
    return "RQ_EDRPOU" if len(tax_id) == 8 else "RQ_INN"


def _ok_entity(key: Any, kind: str) -> bool:
    try:
        return m.entity_parts(str(key))[0] == kind
    except ValueError:
        return False


def _same(have: Any, want: Any) -> bool:
    """Compare a wire value (strings everywhere) with the value we wrote."""
    if isinstance(want, (list, tuple)):
        have_l = have if isinstance(have, list) else ([] if m.empty(have) else [have])
        return sorted(map(str, have_l)) == sorted(map(str, want))
    if isinstance(want, bool):
        return m.to_bool(have) == want
    if want is None or want == "":
        return m.empty(have)
    return str(have) == str(want)

