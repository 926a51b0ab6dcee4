"""Write-back to Bitrix24: tasks, field changes, reassignment, comments, notifications,
automation triggers and workflows.

Exactly-once support: a task or a comment carries ``action.marker`` in its text, so
:meth:`BitrixSink.reconcile` can find it after a crash; reassignment and field changes are
idempotent and reconciled by reading the entity back. Notifications, triggers and workflows
leave nothing to search for, so they cannot be reconciled: the core then reports them and
never resends. A create that fails ambiguously (5xx, timeout: the portal may have done it) is
looked up by its marker before the error goes back to the executor, so a retry never doubles it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from bitrix import mapping as m
from bitrix.client import SYSTEM, BitrixClient
from connector.config import Bitrix24
from connector.errors import (
    NotFound,
    PermanentError,
    RateLimited,
    Rejected,
    TransientError,
)
from connector.ports import ActionResult, Context, PlannedAction

log = logging.getLogger("bitrix.sink")

TYPES = frozenset({"task", "field", "reassign", "comment", "notify", "trigger", "workflow"})
RECONCILE_PAGES = 10  # newest 500 tasks/comments of one binding are searched for a marker


def _manager_id(manager_key: Any) -> int:
    """``bitrix24:user:15`` -> 15 (a manager of another system cannot be assigned here)."""
    system, kind, sid = str(manager_key).split(":", 2)
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


class BitrixSink:
    """``connector.ports.Sink`` for Bitrix24."""

    system = SYSTEM

    def __init__(self, settings: Bitrix24, ctx: Context, client: BitrixClient | None = None):
        self.cfg = settings
        self.client = client or BitrixClient(settings, ctx)

    def supports(self, action_type: str) -> bool:
        return action_type in TYPES

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------ execute

    def execute(self, action: PlannedAction) -> ActionResult:
        handler = getattr(self, f"_do_{action.type}", None)
        if handler is None:
            raise Rejected(f"action type {action.type} is not supported", system=SYSTEM)
        return handler(action, action.payload)

    def _create(self, action: PlannedAction, method: str, params: dict) -> Any:
        """A non-idempotent create: on an ambiguous failure, look for the marker first."""
        try:
            return self.client.result(method, params, idempotent=False)
        except TransientError as e:
            if isinstance(e, RateLimited):
                raise
            found = self.reconcile(action)
            if found is not None:
                return found
            raise

    def _do_task(self, action: PlannedAction, p: Mapping[str, Any]) -> ActionResult:
        description = str(p.get("description") or "")
        if action.marker not in description:
            description = f"{description.rstrip()}\n\n{action.marker}".lstrip()
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
        res = self._create(action, "tasks.task.add", {"fields": fields})
        if isinstance(res, ActionResult):
            return res
        task = (res or {}).get("task") if isinstance(res, Mapping) else None
        tid = (task or {}).get("id", (task or {}).get("ID"))
        return ActionResult(remote_id=str(tid) if tid is not None else None, detail="task created")

    def _do_field(self, action: PlannedAction, p: Mapping[str, Any]) -> ActionResult:
        kind, eid = _entity(p.get("entity"), m.LEGACY_KINDS)
        fields = dict(p.get("fields") or {})
        if not fields:
            raise Rejected("no fields to set", system=SYSTEM, obj=f"crm.{kind}.update id={eid}")
        self.client.result(f"crm.{kind}.update", {"id": eid, "fields": fields,
                                                   "params": {"REGISTER_SONET_EVENT": "N"}})
        return ActionResult(remote_id=str(eid), detail=f"{kind} {eid}: {', '.join(sorted(fields))} set")

    def _do_reassign(self, action: PlannedAction, p: Mapping[str, Any]) -> ActionResult:
        """Every entity in one ``batch``; an entity deleted meanwhile is skipped, not fatal."""
        to = _manager_id(p.get("to"))
        entities = [_entity(k, m.LEGACY_KINDS) for k in p.get("entities") or []]
        if not entities:
            raise Rejected("nothing to reassign", system=SYSTEM)
        moved, missing = [], []
        for i in range(0, len(entities), 50):
            chunk = entities[i:i + 50]
            cmds = {f"e{j}": (f"crm.{kind}.update", {"id": eid, "fields": {"ASSIGNED_BY_ID": to},
                                                      "params": {"REGISTER_SONET_EVENT": "N"}})
                    for j, (kind, eid) in enumerate(chunk)}
            reply = self.client.batch(cmds)
            for j, (kind, eid) in enumerate(chunk):
                err = reply.errors.get(f"e{j}")
                if err is None:
                    moved.append(f"{kind} {eid}")
                elif isinstance(err, NotFound):
                    missing.append(f"{kind} {eid}")
                else:
                    raise err
        if not moved:
            raise NotFound(f"none of the entities exist: {', '.join(missing)}", system=SYSTEM, obj="reassign")
        detail = f"assigned to user {to}: {', '.join(moved)}"
        if missing:
            detail += f"; not found: {', '.join(missing)}"
        return ActionResult(remote_id=str(to), detail=detail)

    def _do_comment(self, action: PlannedAction, p: Mapping[str, Any]) -> ActionResult:
        kind, eid = _entity(p.get("entity"), m.LEGACY_KINDS)
        text = str(p.get("text") or "").strip()
        if not text:
            raise Rejected("empty comment", system=SYSTEM, obj=f"crm.timeline.comment.add {kind}={eid}")
        res = self._create(action, "crm.timeline.comment.add", {
            "fields": {"ENTITY_ID": eid, "ENTITY_TYPE": kind, "COMMENT": comment_text(text, action.marker)}})
        if isinstance(res, ActionResult):
            return res
        return ActionResult(remote_id=str(res), detail=f"comment on {kind} {eid}")

    def _do_notify(self, action: PlannedAction, p: Mapping[str, Any]) -> ActionResult:
        uid = _manager_id(p.get("user"))
        res = self._at_most_once("im.notify.system.add", {"USER_ID": uid, "MESSAGE": str(p.get("text") or "")})
        if res is False:
            raise Rejected("notification refused", system=SYSTEM, obj=f"im.notify.system.add user={uid}")
        return ActionResult(remote_id=str(res), status="sent", detail=f"notified user {uid}")

    def _do_trigger(self, action: PlannedAction, p: Mapping[str, Any]) -> ActionResult:
        kind, eid = _entity(p.get("entity"))
        target = f"{m.KIND_WORD[kind]}_{eid}"
        self._at_most_once("crm.automation.trigger", {"target": target, "code": str(p.get("code") or "")})
        return ActionResult(remote_id=target, detail=f"trigger {p.get('code')} fired on {target}")

    def _do_workflow(self, action: PlannedAction, p: Mapping[str, Any]) -> ActionResult:
        kind, eid = _entity(p.get("entity"))
        doc = ["crm", m.BIZPROC_DOCUMENT[kind], f"{m.KIND_WORD[kind]}_{eid}"]
        params: dict[str, Any] = {"TEMPLATE_ID": int(p.get("template_id") or 0), "DOCUMENT_ID": doc}
        if p.get("parameters"):
            params["PARAMETERS"] = dict(p["parameters"])
        res = self._at_most_once("bizproc.workflow.start", params)
        return ActionResult(remote_id=str(res), detail=f"workflow {params['TEMPLATE_ID']} started on {doc[2]}")

    def _at_most_once(self, method: str, params: dict) -> Any:
        """Calls that leave no searchable trace: a failure that may have run is not retried."""
        try:
            return self.client.result(method, params, idempotent=False)
        except RateLimited:
            raise
        except TransientError as e:
            raise PermanentError(f"outcome unknown, not resent: {e.message}", system=SYSTEM, obj=e.obj,
                                 code=e.code, status=e.status) from None

    # ------------------------------------------------------------ reconcile

    def reconcile(self, action: PlannedAction) -> ActionResult | None:
        if action.type == "task":
            return self._find_task(action)
        if action.type == "comment":
            return self._find_comment(action)
        if action.type == "reassign":
            return self._check_assigned(action)
        if action.type == "field":
            return self._check_fields(action)
        raise PermanentError(f"cannot reconcile a {action.type} action (it leaves no marker)", system=SYSTEM,
                             obj=action.key)

    def _find_task(self, action: PlannedAction) -> ActionResult | None:
        p = action.payload
        bindings = _bindings(p.get("bindings"))
        # by binding when there is one (the task may have been delegated since), else by person + title
        if bindings:
            filt: dict[str, Any] = {"UF_CRM_TASK": bindings[0]}
        else:
            filt = {"RESPONSIBLE_ID": _manager_id(p.get("responsible")), "TITLE": str(p.get("title") or "")}
        for rows in self._newest_first("tasks.task.list", filt, ["ID", "TITLE", "DESCRIPTION", "UF_CRM_TASK"],
                                       wrap="tasks", rid="id"):
            for r in rows:
                if action.marker in str(r.get("description", r.get("DESCRIPTION")) or ""):
                    tid = r.get("id", r.get("ID"))
                    return ActionResult(remote_id=str(tid), detail="task found by marker")
        return None

    def _find_comment(self, action: PlannedAction) -> ActionResult | None:
        kind, eid = _entity(action.payload.get("entity"), m.LEGACY_KINDS)
        filt = {"ENTITY_ID": eid, "ENTITY_TYPE": kind}
        start = 0
        for _ in range(RECONCILE_PAGES):
            env = self.client.call("crm.timeline.comment.list", {
                "filter": filt, "select": ["ID", "COMMENT"], "order": {"ID": "DESC"}, "start": start})
            rows = env.get("result") or []
            for r in rows:
                if action.marker in str(r.get("COMMENT") or ""):
                    return ActionResult(remote_id=str(r.get("ID")), detail="comment found by marker")
            if len(rows) < 50 or "next" not in env:
                return None
            start = int(env["next"])
        raise PermanentError("marker not within the newest comments; cannot tell", system=SYSTEM,
                             obj=f"crm.timeline.comment.list {kind}={eid}")

    def _newest_first(self, method: str, filt: dict, select: list[str], *, wrap: str | None,
                      rid: str) -> Iterator[list[dict]]:
        """Keyset pages newest first (``order ID DESC`` + ``<ID``), at most RECONCILE_PAGES."""
        last: int | None = None
        for _ in range(RECONCILE_PAGES):
            f = dict(filt)
            if last is not None:
                f["<ID"] = last
            res = self.client.result(method, {"order": {"ID": "DESC"}, "filter": f, "select": select, "start": -1})
            rows = (res or {}).get(wrap) if wrap and isinstance(res, Mapping) else res
            rows = [r for r in rows or [] if isinstance(r, Mapping)]
            yield rows
            if len(rows) < 50:
                return
            last = min(int(r.get(rid, r.get(rid.upper()))) for r in rows)
        raise PermanentError("marker not within the newest tasks; cannot tell", system=SYSTEM, obj=method)

    def _read(self, entities: list[tuple[str, int]]) -> dict[tuple[str, int], Mapping[str, Any] | None]:
        out: dict[tuple[str, int], Mapping[str, Any] | None] = {}
        for i in range(0, len(entities), 50):
            chunk = entities[i:i + 50]
            reply = self.client.batch({f"e{j}": (f"crm.{k}.get", {"id": eid}) for j, (k, eid) in enumerate(chunk)})
            for j, ent in enumerate(chunk):
                err = reply.errors.get(f"e{j}")
                if err is not None and not isinstance(err, NotFound):
                    raise err
                res = reply.results.get(f"e{j}")
                out[ent] = res if isinstance(res, Mapping) else None
        return out

    def _check_assigned(self, action: PlannedAction) -> ActionResult | None:
        to = _manager_id(action.payload.get("to"))
        entities = [_entity(k, m.LEGACY_KINDS) for k in action.payload.get("entities") or []]
        rows = self._read(entities)
        if all(r is None or m.to_int(r.get("ASSIGNED_BY_ID")) == to for r in rows.values()):
            return ActionResult(remote_id=str(to), detail="already assigned")
        return None

    def _check_fields(self, action: PlannedAction) -> ActionResult | None:
        kind, eid = _entity(action.payload.get("entity"), m.LEGACY_KINDS)
        row = self._read([(kind, eid)]).get((kind, eid))
        if row is None:
            raise NotFound("entity is gone", system=SYSTEM, obj=f"crm.{kind}.get id={eid}")
        want = dict(action.payload.get("fields") or {})
        if all(_same(row.get(k), v) for k, v in want.items()):
            return ActionResult(remote_id=str(eid), detail="fields already set")
        return None


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


